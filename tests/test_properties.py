"""Property-based tests (hypothesis) of game validation, mixtures of games and of strategies, the
metrics and the equilibria, beside the pinned values of the other test files: each property holds
for every preference matrix, so hypothesis draws the games (and policies) and shrinks failures."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from egpo_core import metrics
from egpo_core.equilibria import nash_equilibrium, regularized_equilibrium
from egpo_core.games import mix_games, validate_preference_matrix

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)
unit = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def games(draw, max_actions: int = 6, max_runs: int = 3, shape: tuple[int, int] | None = None) -> np.ndarray:
    """(runs, N, N) preference matrices (of the given (runs, N) when ``shape`` is given): any lower
    triangle in [0, 1], P_ji = 1 − P_ij, P_ii = ½."""
    runs, n = shape if shape else (draw(st.integers(1, max_runs)), draw(st.integers(1, max_actions)))
    rows, cols = np.tril_indices(n, k=-1)
    lower = draw(hnp.arrays(np.float64, (runs, rows.size), elements=unit))
    P = np.full((runs, n, n), 0.5)
    P[:, rows, cols] = lower
    P[:, cols, rows] = 1.0 - lower
    return P


def logits_for(draw, shape: tuple[int, ...]) -> np.ndarray:
    return draw(hnp.arrays(np.float64, shape, elements=st.floats(-8.0, 8.0, allow_nan=False)))


@PROPERTY_SETTINGS
@given(games())
def test_every_constructed_game_is_valid_and_returned_unchanged(P):
    np.testing.assert_array_equal(validate_preference_matrix(P), P)


@PROPERTY_SETTINGS
@given(games(), st.data(), st.floats(2e-9, 0.5), st.booleans())
def test_breaking_the_constant_sum_is_refused_naming_the_pair(P, data, delta, below):
    """Moving one entry by δ > atol (its mirror kept) breaks P_ij + P_ji = 1 (above or below 1), or
    leaves [0, 1], or (i = j) moves a diagonal entry off ½; each way the entry or its mirror is named."""
    runs, n = P.shape[0], P.shape[-1]
    r = data.draw(st.integers(0, runs - 1))
    i, j = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, n - 1))
    bad = P.copy()
    bad[r, i, j] += -delta if below else delta
    with pytest.raises(ValueError) as info:
        validate_preference_matrix(bad)
    message = str(info.value)
    lo, hi = sorted([(i, j), (j, i)])
    named_sum = f"P[run {r}, {lo[0]}, {lo[1]}] + P[run {r}, {hi[0]}, {hi[1]}]" in message
    named_range = f"P[run {r}, {i}, {j}] = " in message and "outside [0, 1]" in message
    named_diagonal = i == j and f"P[run {r}, {i}, {i}] = " in message and "on the diagonal and must be 0.5" in message
    assert named_sum or named_range or named_diagonal, message


@PROPERTY_SETTINGS
@given(st.data(), st.integers(1, 4))
def test_mixtures_of_games_are_games_and_linear(data, count):
    """Σ_k w_k P_k is a preference matrix, and (Σ_k w_k P_k)π = Σ_k w_k (P_k π) for every π."""
    shape = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 5)))
    parts = [data.draw(games(shape=shape)) for _ in range(count)]
    raw = data.draw(hnp.arrays(np.float64, count, elements=st.floats(0.0, 1.0)))
    assume(raw.sum() > 1e-3)
    weights = raw / raw.sum()
    assume(abs(weights.sum() - 1.0) <= 1e-12)
    mixed = mix_games(parts, weights)
    # constant sum up to the weights' and the einsum's rounding (a few ε per term), not bit for bit
    np.testing.assert_array_equal(validate_preference_matrix(mixed, atol=1e-13), mixed)
    pi = metrics.policy(logits_for(data.draw, shape))
    expected = sum(w * np.einsum("rij,rj->ri", G, pi) for w, G in zip(weights, parts))
    np.testing.assert_allclose(np.einsum("rij,rj->ri", mixed, pi), expected, rtol=0, atol=1e-13)


@PROPERTY_SETTINGS
@given(games(), st.data())
def test_every_mixed_strategy_gets_half_against_itself(P, data):
    """πᵀPπ = ½ (P + Pᵀ = 1), so the exploitability max_y (Pπ)_y − ½ ≥ 0 for every π, with equality
    exactly when every action in π's support is a best response to π."""
    logits = logits_for(data.draw, P.shape[:2])
    pi = metrics.policy(logits)
    np.testing.assert_allclose(np.einsum("ri,rij,rj->r", pi, P, pi), 0.5, rtol=0, atol=1e-13)
    assert np.all(metrics.exploitability(P, logits) >= -1e-13)


@PROPERTY_SETTINGS
@given(games(), st.data(), st.sampled_from([1.0, 0.1, 0.01]))
def test_gap_is_nonnegative_and_matches_brute_force(P, data, beta):
    logits = logits_for(data.draw, P.shape[:2])
    ref = logits_for(data.draw, P.shape[:2])
    gap = metrics.duality_gap(P, logits, ref, beta)
    assert np.all(gap >= -1e-15)
    brute = metrics.duality_gap_brute_force(P, logits, ref, beta)
    np.testing.assert_allclose(gap, brute, rtol=0, atol=1e-11 * (1 + np.abs(gap).max()))


@PROPERTY_SETTINGS
@given(games(), st.data(), st.sampled_from([0.3, 0.03, 0.003]))
def test_gap_bounds_the_distance_to_the_regularized_equilibrium(P, data, beta):
    """Gap_β(π) ≥ 2β KL(π‖π*_β): the certificate regularized_equilibrium uses."""
    ref = logits_for(data.draw, P.shape[:2])
    star = regularized_equilibrium(P, ref, beta)
    logits = logits_for(data.draw, P.shape[:2])
    gap = metrics.duality_gap(P, logits, ref, beta)
    kl = metrics.kl_divergence(logits, star.logits)
    assert np.all(gap >= 2 * beta * kl - 1e-12)
    assert np.all(star.gap / (2 * beta) < 1e-12)


@PROPERTY_SETTINGS
@given(games(max_actions=7))
def test_nash_equilibrium_best_response_conditions(P):
    """Nashpy's check of a symmetric equilibrium: no action earns more than the value ½ against π,
    and every action of π's support earns it (within the LP's tolerance)."""
    ne = nash_equilibrium(P)
    payoff = np.einsum("rij,rj->ri", P, ne.policy)
    assert np.all(payoff <= 0.5 + 1e-9)
    support = ne.policy > 1e-9
    assert np.all(np.abs(payoff[support] - 0.5) <= 1e-7)
    np.testing.assert_allclose(ne.policy.sum(axis=-1), 1.0, atol=1e-12)


@PROPERTY_SETTINGS
@given(games(), st.floats(-1e3, 1e3).filter(lambda b: b <= 0) | st.just(float("nan")))
def test_non_positive_beta_is_refused_by_every_beta_function(P, beta):
    zeros = np.zeros(P.shape[:2])
    for call in (metrics.duality_gap, metrics.duality_gap_brute_force, metrics.best_response_logits,
                 regularized_equilibrium):
        with pytest.raises(ValueError, match=re.escape("beta must be positive and finite")):
            call(P, zeros, zeros, beta) if call is not regularized_equilibrium else call(P, zeros, beta)
