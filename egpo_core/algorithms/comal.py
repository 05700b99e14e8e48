"""COMAL: a convergent meta-algorithm — INPO (OMD) steps inside a proximal-point outer loop.

Liu et al., "COMAL: A Convergent Meta-Algorithm for Aligning LLMs with General Preferences"
(arXiv 2410.23223).

Inner steps: the OMD step of INPO / Online IPO 1 with the reference replaced by an anchor π_A,

    log π_{t+1} ≐ (1 − ηβ) log π_t + ηβ log π_A + η P(· ≻ π_t);

outer loop: every K updates the anchor is replaced by the current policy (π_A ← π_t at t > 0 with
t % K = 0; π_A = π_ref before the first refresh). Each outer round solves, approximately, the game
regularized toward the previous round's policy — a proximal-point step on the original game — so the
last iterate converges to a Nash equilibrium of the UNREGULARISED game, not to π*_β.

The refreshed anchor is the "magnet" anchor (:class:`~egpo_core.algorithms.base.Anchor`) with
K = ``magnet_period``, the same vocabulary as MPO's magnet; COMAL differs from MPO only in its
loss weight (1: the OMD step; MPO's 1/(1 + ηβ): the proximal MMD step). Reductions: K = 0 (never
refreshed) is INPO = Online IPO 1 (bit for bit in the simulator); K = 1 (refreshed every update)
is log π_{t+1} ≐ log π_t + η P(· ≻ π_t), SPPO's step (the first update still anchors at π_ref, so the
runs coincide from π_0 = π_ref). MPO's step is COMAL's with η/(1 + ηβ). As a loss: the Online IPO
loss with anchor π_A.

Language-model form (``lm_runs.rounds``, ``--alg comal --magnet_period K``): one update is one round —
sample from the frozen π_t, judge, train epochs on INPO's ordered-pair loss

    (Δ_θ − ηβ Δ_M − (1 − ηβ) Δ_t − η/2)²,   Δ_q = log q(y_w) − log q(y_l),

with π_ref replaced by the magnet π_M: π_ref before round K, then the policy at the start of the latest round
r′ > 0 that K divides (the saved end of round r′ − 1). By INPO's Proposition 6 its minimiser is the inner step
above with t = the round; the paper's practice refreshes after a fixed number of inner iterations in the same
way.
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
    magnet_logits: np.ndarray | None = None,
) -> np.ndarray:
    """One exact inner step MD(π_t; π_t) toward the anchor ``magnet_logits`` (default π_ref)."""
    anchor = ref_logits if magnet_logits is None else magnet_logits
    return mirror_descent_step(theta, anchor, preference_vector(P, softmax(theta, axis=-1)), eta, beta)


ALGORITHM = Algorithm(
    name="comal",
    label="COMAL",
    aliases=("comal_inpo",),
    color="#17becf",
    loss="ipo",
    opponent="current",
    anchor="magnet",
    scheme="single",
    closed_form=closed_form,
    reference="Liu et al. 2024 (arXiv 2410.23223)",
)
