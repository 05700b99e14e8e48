"""Online IPO 1 = online mirror descent (OMD) on the regularized preference game.

Calandriello et al., "Human Alignment of Large Language Models through Online Preference
Optimisation" (ICML 2024).

    π_{t+1} = MD(π_t; π_t):  log π_{t+1} ≐ (1 − ηβ) log π_t + ηβ log π_ref + η P(· ≻ π_t)

As a loss: E_{y,y'} (Δ(y,y') − [P(y ≻ π_t) − P(y' ≻ π_t)]/β)², y, y' uniform (or sampled), the
opponent's preferences detached. Converges for β large enough; oscillates when β is small.
"""

import numpy as np
from scipy.special import softmax

from .base import Algorithm, mirror_descent_step, preference_vector


def closed_form(theta: np.ndarray, ref_logits: np.ndarray, P: np.ndarray, eta: float, beta: float) -> np.ndarray:
    """One exact OMD step: MD(π_t; π_t)."""
    return mirror_descent_step(theta, ref_logits, preference_vector(P, softmax(theta, axis=-1)), eta, beta)


ALGORITHM = Algorithm(
    name="oipo1",
    label="Online IPO 1 (OMD)",
    aliases=("online_ipo1",),
    color="#1f77b4",
    loss="ipo",
    opponent="current",
    anchor="reference",
    scheme="single",
    closed_form=closed_form,
    reference="Calandriello et al. 2024",
)
