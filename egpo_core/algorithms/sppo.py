"""SPPO: self-play preference optimization (multiplicative weights on the unregularized game).

Wu et al., "Self-Play Preference Optimization for Language Model Alignment" (ICLR 2025).

    π_{t+1} ∝ π_t · e^{η P(· ≻ π_t)}

As a loss: the Online IPO loss with anchor π_t (so ℓ_θ = log π_θ/π_t) and target
[P(y ≻ π_t) − P(y' ≻ π_t)]/β, whose SGD step with ηβ = 4·lr/N is the update above; β only scales
the step. The last iterate cycles on non-transitive games; the average iterate converges to a Nash
equilibrium of the original game.
"""

import numpy as np
from scipy.special import log_softmax, softmax

from .base import Algorithm, center, preference_vector


def closed_form(theta: np.ndarray, ref_logits: np.ndarray, P: np.ndarray, eta: float, beta: float) -> np.ndarray:
    """One exact multiplicative-weights step: log π_{t+1} ≐ log π_t + η P(· ≻ π_t)."""
    return center(log_softmax(theta, axis=-1) + eta * preference_vector(P, softmax(theta, axis=-1)))


ALGORITHM = Algorithm(
    name="sppo",
    label="SPPO",
    color="#e377c2",
    loss="ipo",
    opponent="current",
    anchor="current",
    scheme="single",
    closed_form=closed_form,
    reference="Wu et al. 2025",
)
