"""OMWU: optimistic multiplicative weights (optimistic mirror descent) on the regularized game.

Daskalakis & Panageas (ITCS 2019) for matrix games; in NLHF see arXiv 2512.24818 (linear last-iterate
convergence to the original Nash equilibrium when a full-support equilibrium exists, β = 0).

    log π_{t+1} ≐ (1 − ηβ) log π_t + ηβ log π_ref + η [2 P(· ≻ π_t) − P(· ≻ π_{t−1})]

The optimistic target reuses last step's opponent as a prediction of the next one (π_{−1} = π_0).
As a loss: the Online IPO 1 loss with target [2(P(y,y'') − P(y',y'')) − (P(y,y''') − P(y',y'''))]/β,
y'' ~ π_t, y''' ~ π_{t−1}.
"""

import numpy as np
from scipy.special import softmax

from .base import Algorithm, mirror_descent_step, preference_vector


def closed_form(
    theta: np.ndarray,
    ref_logits: np.ndarray,
    P: np.ndarray,
    eta: float,
    beta: float,
    previous_logits: np.ndarray | None = None,
) -> np.ndarray:
    """One exact optimistic step; ``previous_logits`` are π_{t−1}'s (default: π_t's, the first step)."""
    previous = theta if previous_logits is None else previous_logits
    s_now = preference_vector(P, softmax(theta, axis=-1))
    s_before = preference_vector(P, softmax(previous, axis=-1))
    return mirror_descent_step(theta, ref_logits, 2.0 * s_now - s_before, eta, beta)


ALGORITHM = Algorithm(
    name="omwu",
    label="OMWU",
    color="#7f7f7f",
    loss="ipo",
    opponent="optimistic",
    anchor="reference",
    scheme="single",
    closed_form=closed_form,
    reference="Daskalakis & Panageas 2019",
)
