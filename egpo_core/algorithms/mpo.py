"""MPO: magnetic preference optimization (magnetic mirror descent with a periodically reset magnet).

Wang et al., "Magnetic Preference Optimization: Achieving Last-iterate Convergence for Language
Model Alignment" (ICLR 2025).

    π_{t+1} ∝ [π_t · π_mag^{ηβ} · e^{η P(· ≻ π_t)}]^{1/(1+ηβ)}
    ⇔ log π_{t+1} ≐ (log π_t + ηβ log π_mag + η P(· ≻ π_t)) / (1 + ηβ)

The magnet starts at π_ref and is reset to π_t every ``magnet_period`` steps (0: never), which
moves the limit from π*_β toward a Nash equilibrium of the original game. As a loss: the Online IPO
loss with anchor π_mag, weighted by 1/(1 + ηβ) so that one SGD step is exactly the proximal step.
"""

import numpy as np
from scipy.special import log_softmax, softmax

from .base import Algorithm, center, preference_vector


def closed_form(
    theta: np.ndarray,
    ref_logits: np.ndarray,
    P: np.ndarray,
    eta: float,
    beta: float,
    magnet_logits: np.ndarray | None = None,
) -> np.ndarray:
    """One exact magnetic mirror-descent step toward ``magnet_logits`` (default π_ref)."""
    magnet = ref_logits if magnet_logits is None else magnet_logits
    s = preference_vector(P, softmax(theta, axis=-1))
    log_pi = log_softmax(theta, axis=-1)
    return center((log_pi + eta * beta * log_softmax(magnet, axis=-1) + eta * s) / (1.0 + eta * beta))


ALGORITHM = Algorithm(
    name="mpo",
    label="MPO",
    color="#8c564b",
    loss="ipo",
    opponent="current",
    anchor="magnet",
    scheme="single",
    closed_form=closed_form,
    loss_weight=lambda eta_beta: 1.0 / (1.0 + eta_beta),
    reference="Wang et al. 2025",
)
