"""Nash-MD: mirror descent against a geometric mixture of the current and reference policies.

Munos et al., "Nash Learning from Human Feedback" (ICML 2024).

    π_t^c ∝ π_t^{1−c} π_ref^{c}                   (c = ηβ in theory)
    π_{t+1} = MD(π_t; π_t^c)

As a loss: the Online IPO 1 loss with σ = π_t^c (y'' ~ π_t^c when sampled). With a constant step
its fixed point is biased away from π*_β.
"""

import numpy as np
from scipy.special import softmax

from .base import Algorithm, geometric_mixture_logits, mirror_descent_step, preference_vector


def closed_form(
    theta: np.ndarray, ref_logits: np.ndarray, P: np.ndarray, eta: float, beta: float, mixture: float | None = None
) -> np.ndarray:
    """One exact Nash-MD step: MD(π_t; π_t^c) with c = ``mixture`` (default ηβ)."""
    c = eta * beta if mixture is None else mixture
    sigma = softmax(geometric_mixture_logits(theta, ref_logits, c), axis=-1)
    return mirror_descent_step(theta, ref_logits, preference_vector(P, sigma), eta, beta)


ALGORITHM = Algorithm(
    name="nash_md",
    label="Nash-MD",
    aliases=("nashmd", "nmd"),
    color="#2ca02c",
    loss="ipo",
    opponent="mixture",
    anchor="reference",
    scheme="single",
    closed_form=closed_form,
    reference="Munos et al. 2024",
)
