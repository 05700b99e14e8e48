"""EGPO: extragradient preference optimization.

Zhou, Fazel, Du, "Extragradient Preference Optimization (EGPO): Beyond Last-Iterate Convergence for
Nash Learning from Human Feedback" (COLM 2025, arXiv 2503.08942).

    π_{t+½} = MD(π_t; π_t)
    π_{t+1} = MD(π_t; π_{t+½})          (both steps start from π_t)

As a loss: the Online IPO 1 loss twice. A half step at θ_t against σ = π_t gives θ_{t+½}; then
return to θ_t and step against σ = π_{t+½} (fresh samples, y'' ~ π_{t+½}). Converges linearly in the
last iterate to π*_β, at a rate about (1 − ηβ) per step for η small enough.
"""

import numpy as np
from scipy.special import softmax

from .base import Algorithm, mirror_descent_step, preference_vector


def closed_form(theta: np.ndarray, ref_logits: np.ndarray, P: np.ndarray, eta: float, beta: float) -> np.ndarray:
    """One exact extragradient step: π_{t+½} = MD(π_t; π_t), then π_{t+1} = MD(π_t; π_{t+½})."""
    half = mirror_descent_step(theta, ref_logits, preference_vector(P, softmax(theta, axis=-1)), eta, beta)
    return mirror_descent_step(theta, ref_logits, preference_vector(P, softmax(half, axis=-1)), eta, beta)


ALGORITHM = Algorithm(
    name="egpo",
    label="EGPO",
    aliases=("eg",),
    color="#9467bd",
    loss="ipo",
    opponent="current",
    anchor="reference",
    scheme="extragradient",
    closed_form=closed_form,
    reference="Zhou, Fazel, Du 2025",
)
