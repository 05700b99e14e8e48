"""Tests of egpo_core.metrics: input validation (one clear ValueError per bad value) and values
against closed forms computed by hand."""

from __future__ import annotations

import re

import numpy as np
import pytest

from egpo_core import metrics
from egpo_core.games import random_games, rock_paper_scissors, tie_games

P = random_games(3, 4, 0)
LOGITS = np.random.default_rng(1).standard_normal((3, 4))
REF = np.random.default_rng(2).standard_normal((3, 4))
#: Rounding allowance for O(1) values computed along different paths (BLAS products, einsum's
#: summation order, SIMD exp/log): about 450 ε, far from any CPU's rounding floor.
ROUNDING = 1e-13


def _with(P_=P, logits=LOGITS, ref=REF, beta=0.1):
    """Every public metric called on (P, logits, ref, β), one lambda per function."""
    return {
        "duality_gap": lambda: metrics.duality_gap(P_, logits, ref, beta),
        "duality_gap_brute_force": lambda: metrics.duality_gap_brute_force(P_, logits, ref, beta),
        "best_response_logits": lambda: metrics.best_response_logits(P_, logits, ref, beta),
        "game_value": lambda: metrics.game_value(P_, logits, LOGITS[::-1], ref, beta),
        "exploitability": lambda: metrics.exploitability(P_, logits),
    }


BETA_FUNCTIONS = ["duality_gap", "duality_gap_brute_force", "best_response_logits", "game_value"]
ALL_FUNCTIONS = BETA_FUNCTIONS + ["exploitability"]

P_LOW = P.copy()
P_LOW[1, 2, 0] -= 0.2  # P_20 + P_02 = 0.8 < 1
P_HIGH = P.copy()
P_HIGH[0, 1, 3] += 0.1  # sum above 1
P_RANGE = P.copy()
P_RANGE[2, 3, 1], P_RANGE[2, 1, 3] = 1.25, -0.25  # constant sum kept, range violated

BAD_P = [
    (P_LOW, "P[run 1, 0, 2] + P[run 1, 2, 0] = 0.8"),
    (P_HIGH, "P[run 0, 1, 3] + P[run 0, 3, 1] = 1.1"),
    (P_RANGE, "P[run 2, 1, 3] = -0.25 is outside [0, 1]"),
    (np.full((3, 4, 5), 0.5), "P must be square in its last two axes"),
]


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
@pytest.mark.parametrize("bad, message", BAD_P, ids=["sum_below_1", "sum_above_1", "range", "not_square"])
def test_invalid_preference_matrix_is_refused(function, bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _with(P_=bad)[function]()


BAD_BETA = [
    (-0.1, "beta must be positive and finite, got beta=-0.1"),
    (0.0, "beta must be positive and finite, got beta=0"),
    (np.nan, "beta must be positive and finite, got beta=nan"),
    (np.inf, "beta must be positive and finite, got beta=inf"),
    ("0.1", "beta must be a positive finite number, got beta='0.1'"),
    (None, "beta must be a positive finite number, got beta=None"),
    (True, "beta must be a positive finite number, got beta=True"),
]


@pytest.mark.parametrize("function", ["duality_gap", "duality_gap_brute_force", "best_response_logits"])
@pytest.mark.parametrize("beta, message", BAD_BETA)
def test_invalid_beta_is_refused(function, beta, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _with(beta=beta)[function]()


@pytest.mark.parametrize("beta, message", [(-0.1, "beta must be non-negative and finite, got beta=-0.1"),
                                           (np.nan, "beta must be non-negative and finite, got beta=nan")])
def test_game_value_accepts_beta_zero_only(beta, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _with(beta=beta)["game_value"]()


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
@pytest.mark.parametrize(
    "logits, message",
    [
        (np.zeros((3, 5)), "logits has 5 entries on its last axis (shape (3, 5)), but the game has N = 4 actions"),
        (np.zeros((2, 4)), "the batch shapes do not broadcast: P (3,), logits (2,)"),
        (np.array([[0.0, np.inf, 0, 0]] * 3), "logits[0, 1] = inf is not finite"),
        (np.array([[0.0, 0, 0, np.nan]] * 3), "logits[0, 3] = nan is not finite"),
        (np.float64(0.3), "logits must have shape (..., N) with N ≥ 1, got shape ()"),
        ([["a", "b", "c", "d"]], "logits must be a numeric array"),
    ],
    ids=["length", "batch", "inf", "nan", "scalar", "text"],
)
def test_invalid_logits_are_refused(function, logits, message):
    if function == "game_value":  # its first policy is named logits_1
        message = message.replace("logits", "logits_1", 1)
    with pytest.raises(ValueError, match=re.escape(message)):
        _with(logits=logits)[function]()


@pytest.mark.parametrize("function", BETA_FUNCTIONS)
def test_invalid_ref_logits_are_refused(function):
    with pytest.raises(ValueError, match=re.escape("ref_logits has 3 entries on its last axis")):
        _with(ref=np.zeros((3, 3)))[function]()
    with pytest.raises(ValueError, match=re.escape("ref_logits[2, 0] = -inf is not finite")):
        _with(ref=np.where(np.arange(12).reshape(3, 4) == 8, -np.inf, 0.0))[function]()


def test_kl_and_policy_validation():
    with pytest.raises(ValueError, match=re.escape("logits_q has 3 entries on its last axis (shape (3,)), but the game has N = 4")):
        metrics.kl_divergence(np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match=re.escape("the batch shapes do not broadcast: logits_p (2,), logits_q (3,)")):
        metrics.kl_divergence(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=re.escape("logits_p[1] = nan is not finite")):
        metrics.kl_divergence([0.0, np.nan], [0.0, 0.0])
    with pytest.raises(ValueError, match=re.escape("logits[0] = inf is not finite")):
        metrics.policy([np.inf, 0.0])


# ----------------------------------------------------------------------------------------------------
# values (closed forms by hand)


def test_kl_divergence_by_hand():
    p, q = np.array([0.5, 0.25, 0.25]), np.array([0.25, 0.25, 0.5])
    expected = 0.5 * np.log(2) + 0.25 * np.log(0.5)  # Σ p log(p/q) = ¼ log 2
    assert metrics.kl_divergence(np.log(p), np.log(q) + 7.0) == pytest.approx(expected, abs=ROUNDING)
    np.testing.assert_allclose(metrics.policy(np.log(p) - 3.0), p, rtol=0, atol=ROUNDING)


@pytest.mark.parametrize("beta", [1.0, 0.1, 0.003])
def test_gap_of_the_tie_game_is_twice_beta_kl_to_reference(beta):
    """P = ½11ᵀ: Pπ = ½1 whatever π, so BR_β(π) = π_ref and Gap_β(π) = 2β KL(π‖π_ref)."""
    P_tie = tie_games(3, 4)
    expected = 2 * beta * metrics.kl_divergence(LOGITS, REF)
    # the gap is 2[β lse + β KL] − 1, O(1) terms that cancel: an absolute tolerance
    np.testing.assert_allclose(metrics.duality_gap(P_tie, LOGITS, REF, beta), expected, rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(metrics.best_response_logits(P_tie, LOGITS, REF, beta), REF + 0.5 / beta, rtol=ROUNDING)
    np.testing.assert_allclose(metrics.exploitability(P_tie, LOGITS), 0.0, atol=ROUNDING)  # ½ Σπ − ½


def test_rock_paper_scissors_by_hand():
    P_rps = rock_paper_scissors(strength=0.5)[0]  # P = ½ + ¼ C
    pi = np.array([0.5, 0.3, 0.2])  # rock, paper, scissors
    # (Pπ)_rock = ½ + ¼(−0.3 + 0.2), (Pπ)_paper = ½ + ¼(0.5 − 0.2), (Pπ)_scissors = ½ + ¼(−0.5 + 0.3)
    payoff = 0.5 + 0.25 * np.array([-0.1, 0.3, -0.2])
    assert metrics.exploitability(P_rps, np.log(pi)) == pytest.approx(0.25 * 0.3, abs=ROUNDING)
    beta, ref = 0.2, np.zeros(3)
    best = payoff / beta - np.log(np.sum(np.exp(payoff / beta)))
    gap = 2 * beta * np.sum(pi * (np.log(pi) - best))
    assert metrics.duality_gap(P_rps, np.log(pi), ref, beta) == pytest.approx(gap, abs=ROUNDING)
    assert metrics.duality_gap_brute_force(P_rps, np.log(pi), ref, beta) == pytest.approx(gap, abs=ROUNDING)
    # J_0(π, π') = πᵀPπ' (β = 0 is the original game)
    other = np.array([0.1, 0.1, 0.8])
    assert metrics.game_value(P_rps, np.log(pi), np.log(other), ref, 0.0) == pytest.approx(pi @ P_rps @ other, abs=ROUNDING)


def test_leading_axes_broadcast_against_the_games():
    """Logits of shape (T, runs, N) against P (runs, N, N): entry t is the metric of π_t."""
    stacked = np.stack([LOGITS, 2 * LOGITS, -LOGITS])
    gaps = metrics.duality_gap(P, stacked, REF, 0.05)
    assert gaps.shape == (3, 3)
    for t in range(3):
        # equal up to rounding: a stacked einsum may take another summation order than a single one
        np.testing.assert_allclose(gaps[t], metrics.duality_gap(P, stacked[t], REF, 0.05), rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(metrics.exploitability(P, stacked)[1], metrics.exploitability(P, 2 * LOGITS),
                               rtol=0, atol=ROUNDING)


def test_gaps_kls_and_exploitability_are_never_below_zero():
    """At p = q (logits shifted by a constant) and at π*_β the sums round to ±1e-16; the unclipped
    formulas give negatives here (checked), the public functions 0."""
    from scipy.special import log_softmax

    from egpo_core.equilibria import regularized_equilibrium

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 6))
    assert (metrics._kl(x, x + 3.7) < 0).any()  # the floating-point sum, unclipped
    kl = metrics.kl_divergence(x, x + 3.7)
    assert (kl >= 0).all() and kl.max() < 1e-15
    P, ref = random_games(50, 6, rng), rng.normal(size=(50, 6))
    star = regularized_equilibrium(P, log_softmax(ref, axis=-1), 0.1).logits
    gap = metrics.duality_gap(P, star, ref, 0.1)
    assert (gap >= 0).all() and gap.max() < 1e-12
    tie = np.full((4, 4), 0.5)  # every policy is an equilibrium of the tie game: max_y (Pπ)_y − ½ rounds to 0
    assert (metrics.exploitability(tie, rng.normal(size=(200, 4))) >= 0).all()
