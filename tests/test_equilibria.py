"""Tests of egpo_core.equilibria: the regularized equilibrium π*_β and the Nash equilibrium by LP."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp, softmax

from egpo_core import equilibria, metrics
from egpo_core.equilibria import nash_equilibrium, regularized_equilibrium
from egpo_core.games import (
    bradley_terry_games,
    cyclic_games,
    lower_win_games,
    random_games,
    rock_paper_scissors,
    tie_games,
)

BETAS = [1.0, 0.1, 0.01, 0.001]


#: Rounding allowance for O(1) float64 quantities computed along different paths (sums of up to 100
#: terms, BLAS/LAPACK products, SIMD exp): about 450 ε, so no assertion sits at the rounding floor of
#: one CPU or BLAS kernel and fails on another.
ROUNDING = 1e-13


@pytest.fixture(scope="module", params=[10, 100], ids=["N10", "N100"])
def instance(request):
    n = request.param
    P = random_games(10, n, 2018011309)
    ref = np.random.default_rng(n).standard_normal((10, n))
    return P, ref


# ----------------------------------------------------------------------------------------------------
# π*_β


@pytest.mark.parametrize("beta", BETAS)
def test_fixed_point_and_gap(instance, beta):
    P, ref = instance
    eq = regularized_equilibrium(P, ref, beta)
    runs, n = ref.shape
    assert eq.logits.shape == eq.policy.shape == (runs, n)
    assert eq.gap.shape == eq.residual.shape == (runs,)
    # Gap_β ≥ 0; computed as 2[β lse + β KL] − 1, O(1) terms that cancel, it may round below 0 by a few ε
    assert np.all(eq.gap < 1e-12) and np.all(eq.gap > -ROUNDING)
    assert np.all(eq.residual < 1e-10)
    np.testing.assert_allclose(eq.logits.mean(axis=-1), 0.0, atol=1e-12 / beta)
    np.testing.assert_allclose(eq.policy.sum(axis=-1), 1.0, atol=ROUNDING)
    # the fixed point π = softmax(θ_ref + Pπ/β), checked independently of the solver's residual
    br = softmax(ref + np.einsum("rij,rj->ri", P, eq.policy) / beta, axis=-1)
    np.testing.assert_allclose(br, eq.policy, rtol=1e-8, atol=1e-14)
    lhs = log_softmax(eq.logits, axis=-1) - log_softmax(ref, axis=-1) - np.einsum("rij,rj->ri", P, eq.policy) / beta
    np.testing.assert_allclose(lhs - lhs.mean(axis=-1, keepdims=True), 0.0, atol=1e-10)
    # the gap certificate reported equals metrics.duality_gap, and the brute-force gap is also ~0
    # (the solver evaluates it at the centered ref, this call at ref itself: equal up to rounding)
    np.testing.assert_allclose(eq.gap, metrics.duality_gap(P, eq.logits, ref, beta), rtol=0, atol=ROUNDING)
    assert np.all(np.abs(metrics.duality_gap_brute_force(P, eq.logits, ref, beta)) < 1e-10)


@pytest.mark.parametrize("beta", BETAS)
def test_gap_formula_matches_brute_force_at_random_policies(instance, beta):
    P, ref = instance
    rng = np.random.default_rng(int(1 / beta))
    logits = 2.0 * rng.standard_normal(ref.shape)
    gap = metrics.duality_gap(P, logits, ref, beta)
    brute = metrics.duality_gap_brute_force(P, logits, ref, beta)
    np.testing.assert_allclose(gap, brute, rtol=0, atol=1e-12)
    assert np.all(gap >= 0.0)
    assert np.all(gap > 1e-6)  # a random policy is not the equilibrium
    # and the closed form of the regularized game: 2[β log Σ π_ref e^{(Pπ)/β} + β KL(π‖π_ref)] − 1
    payoff = np.einsum("rij,rj->ri", P, softmax(logits, axis=-1))
    lse = logsumexp(payoff / beta, b=softmax(ref, axis=-1), axis=-1)
    formula = 2.0 * (beta * lse + beta * metrics.kl_divergence(logits, ref)) - 1.0
    np.testing.assert_allclose(gap, formula, rtol=0, atol=1e-12)


def test_equilibrium_is_unique_minimizer_of_the_gap():
    P = random_games(3, 6, 0)
    ref = np.random.default_rng(1).standard_normal((3, 6))
    eq = regularized_equilibrium(P, ref, 0.05)
    rng = np.random.default_rng(2)
    for scale in [1e-1, 1e-3]:
        moved = eq.logits + scale * rng.standard_normal(eq.logits.shape)
        assert np.all(metrics.duality_gap(P, moved, ref, 0.05) > eq.gap + 1e-12 * scale)


def test_exploitability_bound():
    """At π*_β, (Pπ)_y = β log(π/π_ref)(y) + c, so max_y (Pπ)_y − ½ = β[max_y log(π/π_ref)(y) − KL(π‖π_ref)]
    ≤ β max_y log(1/π_ref(y)): π*_β approaches a Nash equilibrium as β → 0."""
    P = random_games(10, 10, 7)
    ref = np.random.default_rng(3).standard_normal((10, 10))
    bound_const = np.max(-log_softmax(ref, axis=-1), axis=-1)
    for beta in [0.1, 0.01, 0.001, 1e-4]:
        eq = regularized_equilibrium(P, ref, beta)
        expl = metrics.exploitability(P, eq.logits)
        assert np.all(expl >= -1e-12)
        assert np.all(expl <= beta * bound_const + 1e-12)
        identity = beta * (np.max(log_softmax(eq.logits, axis=-1) - log_softmax(ref, axis=-1), axis=-1)
                           - metrics.kl_divergence(eq.logits, ref))
        np.testing.assert_allclose(expl, identity, rtol=0, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rock_paper_scissors_limit(seed):
    """π*_β → uniform (the LP's NE) as β → 0, at rate β: π*_β = u + β d + O(β²), where d is the
    centered solution of S d = −center(θ_ref) with S = P − ½ (first order of the fixed-point equation)."""
    P = rock_paper_scissors()[0]
    ref = np.random.default_rng(seed).standard_normal(3)
    S = P - 0.5
    rhs = -(ref - ref.mean())
    d = np.linalg.lstsq(S, rhs, rcond=None)[0]
    d -= d.mean()
    np.testing.assert_allclose(S @ d, rhs, atol=ROUNDING)
    nash = nash_equilibrium(P).policy
    distances = []
    for beta in [1e-1, 1e-2, 1e-3, 1e-4]:
        pi = regularized_equilibrium(P, ref, beta).policy
        distances.append(np.max(np.abs(pi - nash)))
        if beta <= 1e-2:
            assert np.max(np.abs(pi - 1 / 3 - beta * d)) <= 20 * beta**2
    assert all(b < 0.2 * a for a, b in zip(distances, distances[1:]))  # shrinks ≥ 5× per decade
    assert distances[-1] < 1e-3
    assert distances[-1] == pytest.approx(1e-4 * np.max(np.abs(d)), rel=0.01)


def test_small_beta_and_large_beta():
    P = random_games(4, 20, 5)
    ref = np.random.default_rng(5).standard_normal((4, 20))
    tiny = regularized_equilibrium(P, ref, 1e-5)
    assert np.all(tiny.gap < 1e-12) and np.all(tiny.residual < 1e-7)
    big = regularized_equilibrium(P, ref, 100.0)  # π*_β → π_ref as β → ∞
    assert np.all(big.gap < 1e-12)
    assert np.max(np.abs(big.policy - softmax(ref, axis=-1))) < 1e-2


def test_trivial_games():
    ref = np.random.default_rng(0).standard_normal((2, 5))
    tie = regularized_equilibrium(tie_games(2, 5), ref, 0.01)  # constant payoffs: π*_β = π_ref
    np.testing.assert_allclose(tie.policy, softmax(ref, axis=-1), rtol=0, atol=ROUNDING)
    assert tie.iterations == 0
    low = regularized_equilibrium(lower_win_games(2, 5), ref, 0.001)
    assert np.all(low.policy[:, -1] > 0.99)  # the dominant action


def test_single_game_and_broadcasting():
    P = random_games(3, 6, 4)
    ref = np.random.default_rng(4).standard_normal((3, 6))
    batch = regularized_equilibrium(P, ref, 0.1)
    one = regularized_equilibrium(P[1], ref[1], 0.1)
    assert one.policy.shape == (6,) and np.ndim(one.gap) == 0
    # the same fixed point, solved in another batch (the solver stops at its floor ~1e-13 in θ)
    np.testing.assert_allclose(one.policy, batch.policy[1], rtol=0, atol=1e-12)
    shared_ref = regularized_equilibrium(P, ref[1], 0.1)  # one π_ref for all games
    np.testing.assert_allclose(shared_ref.policy[1], batch.policy[1], rtol=0, atol=1e-12)
    shared_P = regularized_equilibrium(P[1], ref, 0.1)  # one game, several π_ref
    assert shared_P.policy.shape == (3, 6)
    np.testing.assert_allclose(shared_P.policy[1], batch.policy[1], rtol=0, atol=1e-12)


P_ERR = random_games(2, 4, 0)
REF_ERR = np.zeros((2, 4))
MISMATCH = "ref_logits has shape {}, which does not match P with shape (2, 4, 4)"
BAD_P = P_ERR.copy()
BAD_P[1, 0, 2] = 1.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beta=0), "beta must be positive and finite, got beta=0"),
        (dict(beta=-0.1), "beta must be positive and finite, got beta=-0.1"),
        (dict(beta=np.inf), "beta must be positive and finite, got beta=inf"),
        (dict(beta="0.1"), "beta must be a positive finite number, got beta='0.1'"),
        (dict(beta=None), "beta must be a positive finite number, got beta=None"),
        (dict(ref_logits=np.zeros((2, 5))), "ref_logits has 5 entries on its last axis (shape (2, 5)), but the game has N = 4"),
        (dict(ref_logits=np.zeros((3, 4))), MISMATCH.format((3, 4))),
        (dict(ref_logits=np.zeros((1, 2, 4))), MISMATCH.format((1, 2, 4))),
        (dict(ref_logits=np.array([[0, 0, np.nan, 0], [0, 0, 0, 0]])), "ref_logits[0, 2] = nan is not finite"),
        (dict(P=BAD_P), "P[run 1, 0, 2] = 1.5 is outside [0, 1]"),
        (dict(max_iter=0), "max_iter must be at least 1, got max_iter=0"),
        (dict(max_iter=10.5), "max_iter must be an integer, got max_iter=10.5"),
        (dict(max_iter=True), "max_iter must be an integer, got max_iter=True"),
        (dict(tol=0.0), "tol must be positive and finite, got tol=0"),
        (dict(tol=-1e-9), "tol must be positive and finite, got tol=-1e-9"),
    ],
)
def test_bad_arguments_are_refused_before_solving(kwargs, message):
    arguments = dict(P=P_ERR, ref_logits=REF_ERR, beta=0.1) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        regularized_equilibrium(**arguments)


def test_failure_messages_say_what_to_do():
    P = random_games(10, 10, 0)
    ref = np.random.default_rng(0).standard_normal((10, 10))
    with pytest.raises(RuntimeError, match=r"did not converge for run \d+ \(the worst of the \d+ of 10 runs that miss "
                       r"tol\): KL\(π‖BR_β\(π\)\) = gap/\(2β\) = \S+ ≥ tol=1e-12 .*raise max_iter \(all 2 iterations "
                       r"were used\)"):
        regularized_equilibrium(P, ref, 0.001, max_iter=2)
    # β = 1e-8: the logits of BR_β are of size 1e8, beyond float64's resolution for this solver
    with pytest.raises(RuntimeError, match=r"beta=1e-08 is below the range float64 resolves.*nash_equilibrium\(P\)"):
        regularized_equilibrium(P, ref, 1e-8)
    # β = 1e-7 reaches KL ≈ 1e-9 only, a floor that differs from run to run and from one CPU/BLAS to
    # another; the message names a tolerance that every run of the batch meets, and following it as
    # written (no safety factor) succeeds on whatever machine the message was produced
    with pytest.raises(RuntimeError, match=r"did not converge for run (\d+) .*rounding floor; use tol > (\S+) "
                       r"\(the largest KL reached, run (\d+)'s\)") as info:
        regularized_equilibrium(P, ref, 1e-7)
    named, advised, worst_named = re.search(r"for run (\d+) .*use tol > (\S+) .*run (\d+)'s", str(info.value)).groups()
    advised = float(advised)
    eq = regularized_equilibrium(P, ref, 1e-7, tol=advised)
    kl = eq.gap / 2e-7
    assert np.all(kl < advised)
    assert int(named) == int(worst_named) == int(np.argmax(kl))  # the run named is the worst one
    assert advised < 1.2 * kl.max()  # and the advice is not looser than the two digits it quotes


def test_advised_tolerance_is_strictly_above_the_value_it_quotes():
    for value in (3.84e-9, 3.8e-9, 9.9e-9, 9.99e-9, 1e-9, 2.35e-12, 9.95e-5):
        text = equilibria._above(value)
        assert float(text) > value and float(text) < 1.2 * value, (value, text)
        assert re.fullmatch(r"\d+\.\de[+-]\d\d", text)


def test_certificate_is_in_pi_for_small_beta():
    """tol bounds KL(π‖BR_β(π)) = Gap_β(π)/(2β) ≥ KL(π‖π*_β), not the gap: stopped after k iterations,
    the solver either raises or returns a π with KL(π‖π*_β) < tol. With tol = 1e-8 and β = 1e-3 a
    gap-only rule would accept iterates whose gap is below tol although KL(π‖BR_β(π)) is ~100× larger."""
    beta, tol = 1e-3, 1e-8
    P = random_games(1, 50, 0)
    ref = np.random.default_rng(0).standard_normal((1, 50))
    star = regularized_equilibrium(P, ref, beta)
    refused_with_small_gap = 0
    for max_iter in range(1, 30):
        try:
            eq = regularized_equilibrium(P, ref, beta, tol=tol, max_iter=max_iter)
        except RuntimeError:
            early = regularized_equilibrium(P, ref, beta, tol=1e3, max_iter=max_iter)  # the same iterate
            refused_with_small_gap += int(np.all(early.gap < tol))
            continue
        assert np.all(eq.gap / (2 * beta) < tol)
        assert np.all(metrics.kl_divergence(eq.logits, star.logits) < tol)
        assert np.all(np.abs(eq.policy - star.policy).sum(axis=-1) <= np.sqrt(2 * tol))  # Pinsker
    assert refused_with_small_gap >= 1


# ----------------------------------------------------------------------------------------------------
# Nash equilibrium of the original game


def test_nash_rock_paper_scissors_is_uniform():
    for strength in [1.0, 0.3]:
        ne = nash_equilibrium(rock_paper_scissors(runs=2, strength=strength))
        np.testing.assert_allclose(ne.policy, 1 / 3, rtol=0, atol=1e-8)
        assert np.all(np.abs(ne.exploitability) < 1e-9)


@pytest.mark.parametrize("n", [5, 7, 9])
def test_nash_cyclic_odd_is_uniform(n):
    ne = nash_equilibrium(cyclic_games(1, n))
    np.testing.assert_allclose(ne.policy, 1 / n, rtol=0, atol=1e-8)


def test_nash_random_games():
    P = random_games(10, 30, 2018011309)
    ne = nash_equilibrium(P)
    assert ne.policy.shape == (10, 30) and ne.exploitability.shape == (10,)
    assert np.all(ne.policy >= 0.0)
    np.testing.assert_allclose(ne.policy.sum(axis=-1), 1.0, atol=ROUNDING)
    assert np.all(ne.exploitability < 1e-9) and np.all(ne.exploitability > -1e-12)
    np.testing.assert_allclose(ne.exploitability, np.max(np.einsum("rij,rj->ri", P, ne.policy), -1) - 0.5)
    # no action does better than ½ against it, and it does no worse than ½ against any action
    assert np.all(np.einsum("rij,rj->ri", P, ne.policy) <= 0.5 + 1e-9)
    assert np.all(np.einsum("ri,rij->rj", ne.policy, P) >= 0.5 - 1e-9)
    # π*_β approaches the Nash equilibrium's exploitability of 0 (bound β·max log 1/π_ref)
    pi_beta = regularized_equilibrium(P, np.zeros(30), 1e-4).logits
    assert np.all(metrics.exploitability(P, pi_beta) <= 1e-4 * np.log(30) + 1e-12)


def test_nash_lower_win_is_last_action():
    ne = nash_equilibrium(lower_win_games(3, 6))
    np.testing.assert_allclose(ne.policy, np.tile(np.eye(6)[-1], (3, 1)), rtol=0, atol=1e-9)
    assert np.all(np.abs(ne.exploitability) < 1e-9)


def test_nash_bradley_terry_is_best_item_and_single_game():
    scores = np.array([0.3, -1.0, 2.0, 0.5])
    ne = nash_equilibrium(bradley_terry_games(scores)[0])
    assert ne.policy.shape == (4,)
    np.testing.assert_allclose(ne.policy, np.eye(4)[2], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=re.escape("P[0, 1] + P[1, 0]")):
        nash_equilibrium([[0.5, 0.6], [0.6, 0.5]])
