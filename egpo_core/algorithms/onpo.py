"""ONPO: optimistic Nash policy optimization — optimistic multiplicative weights on the original game.

Zhang et al., "Improving LLM General Preference Alignment via Optimistic Online Mirror Descent"
(arXiv 2502.16852).

Tabular (no KL term, β = 0 in the paper's game), with an auxiliary policy π′:

    π′_{t+1} ∝ π′_t · e^{η P(· ≻ π_t)},      π_{t+1} ∝ π′_{t+1} · e^{η P(· ≻ π_t)}

(the prediction of the next loss is the last one). Eliminating π′ (log π′_t ≐ log π_t − η P(· ≻ π_{t−1})):

    log π_{t+1} ≐ log π_t + η [2 P(· ≻ π_t) − P(· ≻ π_{t−1})],

OMWU's optimistic target with the current policy as anchor. So ONPO is not egpo's ``omwu``, which
also pulls toward π_ref (log π_{t+1} ≐ (1 − ηβ) log π_t + ηβ log π_ref + η[…]) and needs β > 0: ONPO
is to OMWU what SPPO is to Online IPO 1 (anchor π_t; β only scales the step, η = 4·lr/(Nβ)).
First step: the simulator's optimistic opponent takes π_{−1} = π_0, log π_1 ≐ log π_0 + η P(· ≻ π_0),
which is the recursion above started from π′_0 ∝ π_0 e^{−η P(· ≻ π_0)}; started from π′_0 = π_0 it
gives log π_1 ≐ log π_0 + 2η P(· ≻ π_0) instead, the only difference. As a loss: the Online IPO loss
with anchor π_t and OMWU's target [2(P(y,y″) − P(y′,y″)) − (P(y,y‴) − P(y′,y‴))]/β, y″ ~ π_t,
y‴ ~ π_{t−1}.

Language-model form (``python -m lm_runs.train_nlhf --alg onpo --rounds R``, :mod:`lm_runs.rounds`), the
paper's two-sequence recursion learned from ordered pairs as INPO learns its step
(:mod:`egpo_core.algorithms.inpo`): each round draws one dataset of pairs y, y′ ~ π_t ordered by a
Bernoulli(P(y ≻ y′)) judgement into (y_w, y_l), and minimises two regressions with the constant target η/2,

    auxiliary:  E(Δ_θ′ − Δ_{π′_t} − η/2)²       → π′_{t+1},
    policy:     E(Δ_θ − Δ_{π′_{t+1}} − η/2)²    → π_{t+1},          Δ_q = log q(y_w) − log q(y_l),

the first anchored at the auxiliary policy π′_t, the second at its update π′_{t+1}, from π′_0 = π_0. By
INPO's Proposition 6 their minimisers over policies are π′_{t+1} ∝ π′_t e^{η P(·≻π_t)} and
π_{t+1} ∝ π′_{t+1} e^{η P(·≻π_t)}: the recursion above, so for t ≥ 1 the policy's step is
:func:`closed_form` with ``previous_logits`` = π_{t−1} (round 0: log π_1 ≐ log π_0 + 2η P(· ≻ π_0)).
β plays no part (the original game). No public code of the paper's procedure was found; the auxiliary
policy is kept as a second set of trainable parameters, saved with every round's end.
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
    previous_logits: np.ndarray | None = None,
) -> np.ndarray:
    """One exact optimistic step log π_t + η[2P(·≻π_t) − P(·≻π_{t−1})]; ``previous_logits`` are
    π_{t−1}'s (default: π_t's, the first step)."""
    previous = theta if previous_logits is None else previous_logits
    s_now = preference_vector(P, softmax(theta, axis=-1))
    s_before = preference_vector(P, softmax(previous, axis=-1))
    return center(log_softmax(theta, axis=-1) + eta * (2.0 * s_now - s_before))


ALGORITHM = Algorithm(
    name="onpo",
    label="ONPO",
    aliases=("optimistic_nash",),
    color="#393b79",
    loss="ipo",
    opponent="optimistic",
    anchor="current",
    scheme="single",
    closed_form=closed_form,
    reference="Zhang et al. 2025 (arXiv 2502.16852)",
)
