"""MNPO: multiplayer Nash preference optimization — INPO's ordered-pair regression anchored at a
mixture of the reference and a history of past policies.

Wu et al., "Multiplayer Nash Preference Optimization" (arXiv 2509.23102); the loss as in the authors'
trainer (``mnpo_trainer.py`` of smiles724/MNPO). On ordered pairs (y_w, y_l) of π_t (as INPO's):

    h_θ = Δ_θ − r Δ_ref − (1 − r) Σ_{j=0}^{H−1} λ_j Δ_{t−j},      Δ_q = log q(y_w) − log q(y_l),
    L_t(θ) = E[(h_θ − 1/(2·eta))²],                               λ_j = w_j / Σ_i w_i,

with H past policies π_t, π_{t−1}, …, π_{t−H+1} (π_t first; the trainer's default weights are equal)
and the ratio r. By INPO's Proposition 6 argument its minimiser over policies is

    log π_{t+1} ≐ r log π_ref + (1 − r) Σ_j λ_j log π_{t−j} + η P(· ≻ π_t),      η = 1/eta.

In egpo's parameters (η, β) the default ratio is r = ηβ, and with one history element (H = 1) the
update is INPO's (= the OMD step of Online IPO 1). Policies before π_0 are π_0 (as the optimistic
opponent's π_{−1}).

Simulator (tabular modes, as INPO): the declaration is INPO's (scheme "minimize") with the history
fields :attr:`~egpo_core.algorithms.base.Algorithm.history_length` H = 2 and equal weights (the
authors' trainer's defaults: ``max_history_t`` 2, weights 1 each unless ``history_weights`` is given);
:func:`with_history` gives another H or other weights, e.g. ``simulate(P, ref, [mnpo.with_history(3)], ...)``. The kernel keeps a ring of the H last log-policies
per trajectory; its exact update is :func:`closed_form` with that history, its sampled update
:func:`sampled_step`'s least-squares minimiser on the step's S ordered pairs of π_t, drawn as INPO's.
With H = 1 it runs INPO's code, bit for bit.

Language-model form (``lm_runs.rounds``, ``--alg mnpo --history_length H --history_weights w_0 … w_{H−1}``):
the loss above on each round's ordered pairs, with r = ηβ and π_{t−j} the saved policy at the start of round
t − j (π_0 before the first; the log-probabilities under each are computed once, when the round's dataset is
built). The authors' trainer averages per-token log-probabilities: ``--length_normalize true``.
"""

import dataclasses
from typing import Sequence

import numpy as np
from scipy.special import log_softmax, softmax

from .base import Algorithm, center, preference_vector
from .inpo import ordered_pair_minimiser


def history_anchor_logits(
    history_logits: Sequence[np.ndarray],
    ref_logits: np.ndarray,
    ratio: float,
    history_weights: Sequence[float] | None = None,
) -> np.ndarray:
    """log π_A = r log π_ref + (1 − r) Σ_j λ_j log π_{t−j} (unnormalized), λ_j = w_j/Σw (default equal
    weights); ``history_logits`` = (π_t, π_{t−1}, …)'s logits, most recent first. ValueError (one line)
    for an empty history, weights of another length, negative weights or weights summing to 0, or r ∉ [0, 1]."""
    history = [np.asarray(h, dtype=np.float64) for h in history_logits]
    if not history:
        raise ValueError("history_logits is empty: MNPO needs at least π_t")
    weights = np.ones(len(history)) if history_weights is None else np.asarray(history_weights, dtype=np.float64)
    if weights.shape != (len(history),) or np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"history_weights must be {len(history)} non-negative numbers with a positive sum "
                         f"(one per history policy), got history_weights={history_weights!r}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must lie in [0, 1], got ratio={ratio!r}")
    lambdas = weights / weights.sum()
    mixed = sum(lam * log_softmax(h, axis=-1) for lam, h in zip(lambdas, history))
    return ratio * log_softmax(ref_logits, axis=-1) + (1.0 - ratio) * mixed


def closed_form(
    theta: np.ndarray,
    ref_logits: np.ndarray,
    P: np.ndarray,
    eta: float,
    beta: float,
    history_logits: Sequence[np.ndarray] | None = None,
    history_weights: Sequence[float] | None = None,
    ratio: float | None = None,
) -> np.ndarray:
    """One exact MNPO update, the minimiser of L_t: r log π_ref + (1 − r) Σ_j λ_j log π_{t−j} + η P(·≻π_t).
    ``history_logits``: (π_t, π_{t−1}, …) (default (π_t,): INPO); ``ratio`` r (default ηβ)."""
    history = [theta] if history_logits is None else list(history_logits)
    r = eta * beta if ratio is None else float(ratio)
    anchor = history_anchor_logits(history, ref_logits, r, history_weights)
    return center(anchor + eta * preference_vector(P, softmax(theta, axis=-1)))


def sampled_step(
    theta: np.ndarray,
    ref_logits: np.ndarray,
    P: np.ndarray,
    eta: float,
    beta: float,
    num_samples: int,
    rng: np.random.Generator,
    history_logits: Sequence[np.ndarray] | None = None,
    history_weights: Sequence[float] | None = None,
    ratio: float | None = None,
) -> np.ndarray:
    """One sampled tabular MNPO update: the minimiser of the empirical loss over ``num_samples`` ordered
    pairs of π_t (:func:`~egpo_core.algorithms.inpo.ordered_pair_minimiser`); tends to :func:`closed_form`."""
    history = [theta] if history_logits is None else list(history_logits)
    r = eta * beta if ratio is None else float(ratio)
    anchor = history_anchor_logits(history, ref_logits, r, history_weights)
    return ordered_pair_minimiser(theta, anchor, P, eta, num_samples, rng)


ALGORITHM = Algorithm(
    name="mnpo",
    label="MNPO",
    aliases=("multiplayer_nash",),
    color="#637939",
    loss="ipo",
    opponent="current",
    anchor="reference",
    scheme="minimize",
    closed_form=closed_form,
    reference="Wu et al. 2025 (arXiv 2509.23102)",
    simulated=("tabular/exact", "tabular/sampled"),
    history_length=2,
)


def with_history(history_length: int, history_weights: Sequence[float] | None = None) -> Algorithm:
    """MNPO with H = ``history_length`` past policies and weights w_j (most recent first; ``None``: equal),
    λ_j = w_j/Σw, under the same name (its draws and its results' key stay "mnpo"). ValueError (one line)
    for H < 1 or weights that are not H non-negative numbers with a positive sum."""
    return dataclasses.replace(ALGORITHM, history_length=history_length, history_weights=history_weights)
