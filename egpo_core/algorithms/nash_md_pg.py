"""Nash-MD-PG: softmax policy gradient against the Nash-MD mixture.

Munos et al., "Nash Learning from Human Feedback" (ICML 2024), policy-gradient variant.

    L(θ) = −Σ_y π_t(y) [P(y ≻ π_t^c) − β log(π_t/π_ref)(y)] log π_θ(y)    (coefficients detached)
    sampled: y ~ π_t, y' ~ π_t^c, advantage P(y ≻ y') − β log(π_t/π_ref)(y)

One SGD step with rate lr = ηβN/4 (the Online IPO 1 convention):

    θ_{t+1} = θ_t + lr · π_t ⊙ (A − π_tᵀA),   A = Pπ_t^c − β (log π_t − log π_ref).
"""

import numpy as np
from scipy.special import log_softmax, softmax

from .base import Algorithm, center, geometric_mixture_logits, preference_vector


def closed_form(
    theta: np.ndarray, ref_logits: np.ndarray, P: np.ndarray, eta: float, beta: float, mixture: float | None = None
) -> np.ndarray:
    """One exact SGD step on the Nash-MD-PG loss, with lr = ηβN/4 and c = ``mixture`` (default ηβ)."""
    n = theta.shape[-1]
    lr = eta * beta * n / 4.0
    c = eta * beta if mixture is None else mixture
    log_pi = log_softmax(theta, axis=-1)
    pi = np.exp(log_pi)
    sigma = softmax(geometric_mixture_logits(theta, ref_logits, c), axis=-1)
    advantage = preference_vector(P, sigma) - beta * (log_pi - log_softmax(ref_logits, axis=-1))
    baseline = np.sum(pi * advantage, axis=-1, keepdims=True)
    return center(theta + lr * pi * (advantage - baseline))


ALGORITHM = Algorithm(
    name="nash_md_pg",
    label="Nash-MD-PG",
    aliases=("nashmdpg", "nmdpg"),
    color="#d62728",
    loss="pg",
    opponent="mixture",
    anchor="reference",
    scheme="single",
    closed_form=closed_form,
    reference="Munos et al. 2024",
)
