"""SPPO: self-play preference optimization (multiplicative weights on the unregularized game).

Wu et al., "Self-Play Preference Optimization for Language Model Alignment" (ICLR 2025).

    π_{t+1} ∝ π_t · e^{η P(· ≻ π_t)}

As a loss: the Online IPO loss with anchor π_t (so ℓ_θ = log π_θ/π_t) and target
[P(y ≻ π_t) − P(y' ≻ π_t)]/β, whose SGD step with ηβ = 4·lr/N is the update above; β only scales
the step. The last iterate cycles on non-transitive games; the average iterate converges to a Nash
equilibrium of the original game.

The paper's language-model loss (arXiv 2405.00675), in the round mode (``lm_runs.rounds``, ``--alg sppo
--rounds R``): sample K responses per prompt from the frozen π_t, judge all pairs, and regress each response

    L(θ) = E_{y~π_t} (log π_θ(y) − log π_t(y) − η (P̂(y ≻ π_t) − ½))²,

P̂(y_i ≻ π_t) = mean_{j≠i} P(y_i ≻ y_j) over the prompt's other samples (unbiased). Its minimiser over
policies satisfies log π_θ − log π_t = η(P(· ≻ π_t) − ½) + (E_{π_t}[log π_θ/π_t]) π_θ/π_t: the step above up to
the log-partition the paper approximates by η/2 — a difference of order η³ in the logits. The online form
(``train_nlhf --alg sppo`` without rounds) is the Online IPO regression above, one rollout per update.
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
    reference="Wu et al. 2025 (arXiv 2405.00675)",
)
