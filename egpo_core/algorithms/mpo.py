"""MPO: magnetic preference optimization (magnetic mirror descent with a periodically reset magnet).

Wang et al., "Magnetic Preference Optimization: Achieving Last-iterate Convergence for Language
Model Alignment" (ICLR 2025).

    π_{t+1} ∝ [π_t · π_mag^{ηβ} · e^{η P(· ≻ π_t)}]^{1/(1+ηβ)}
    ⇔ log π_{t+1} ≐ (log π_t + ηβ log π_mag + η P(· ≻ π_t)) / (1 + ηβ)

The magnet starts at π_ref and is reset to π_t every ``magnet_period`` steps (0: never), which
moves the limit from π*_β toward a Nash equilibrium of the original game. As a loss: the Online IPO
loss with anchor π_mag, weighted by 1/(1 + ηβ) so that one SGD step is exactly the proximal step.

The step is COMAL's (the OMD step toward the magnet) at η′ = η/(1 + ηβ): 1 − η′β = 1/(1 + ηβ) and
η′β = ηβ/(1 + ηβ), so log π_{t+1} ≐ (1 − η′β) log π_t + η′β log π_mag + η′ P(· ≻ π_t) is the update above,
for any η > 0 (η′β < 1).

Language-model form (``lm_runs.rounds``, ``--alg mpo --magnet_period K``): a language model has no SGD step
that is a mirror-descent step, but INPO's ordered-pair loss has an explicit η. So one MPO update is one round
trained on COMAL's round loss at η′ — (Δ_θ − η′β Δ_mag − (1 − η′β) Δ_t − η′/2)² on pairs of π_t ordered by
a judged Bernoulli draw — whose minimiser (INPO's Proposition 6) is MPO's step; η′ = η · loss_weight(ηβ).
The loss is not multiplied by 1/(1 + ηβ) there: the round trains towards the minimiser, which a weight does
not move. This is egpo's LM form; the paper's own LM algorithm (a token-level policy gradient with KL terms to
the magnet and the previous policy) was not confirmed and is not implemented.
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
    reference="Wang et al. 2025 (arXiv 2410.16714)",
)
