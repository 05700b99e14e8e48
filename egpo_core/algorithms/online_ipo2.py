"""Online IPO 2: the IPO loss on pairs drawn from the current policy.

Calandriello et al. (ICML 2024), the second online IPO variant.

    L(θ) = Σ_{y,y'} π_t(y) π_t(y') (Δ(y,y') − (P(y ≻ y') − ½)/β)²,
    Δ(y,y') = log π_θ(y)/π_ref(y) − log π_θ(y')/π_ref(y')          (sampled: y, y' ~ π_t)

One SGD step with rate lr = ηβN/4 (so that η matches the Online IPO 1 convention):

    θ_{t+1} = θ_t − 4·lr · π_t ⊙ (D − π_tᵀD − (Pπ_t − ½)/β),   D = log π_t − log π_ref.

Not a mirror-descent step: the pair weights π_t(y)π_t(y') shrink the update of unlikely responses.
"""

import numpy as np
from scipy.special import log_softmax

from .base import Algorithm, center, preference_vector


def closed_form(theta: np.ndarray, ref_logits: np.ndarray, P: np.ndarray, eta: float, beta: float) -> np.ndarray:
    """One exact SGD step on the Online IPO 2 loss, with lr = ηβN/4."""
    n = theta.shape[-1]
    lr = eta * beta * n / 4.0
    log_pi = log_softmax(theta, axis=-1)
    pi = np.exp(log_pi)
    d = log_pi - log_softmax(ref_logits, axis=-1)
    d_mean = np.sum(pi * d, axis=-1, keepdims=True)
    grad = 4.0 * pi * (d - d_mean - (preference_vector(P, pi) - 0.5) / beta)
    return center(theta - lr * grad)


ALGORITHM = Algorithm(
    name="oipo2",
    label="Online IPO 2",
    aliases=("online_ipo2",),
    color="#ff7f0e",
    loss="ipo2",
    opponent="pairwise",
    anchor="reference",
    scheme="single",
    closed_form=closed_form,
    reference="Calandriello et al. 2024",
)
