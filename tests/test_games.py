"""Tests of egpo_core.games: validation of preference matrices and the generators."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from egpo_core.games import (
    GAME_KINDS,
    bradley_terry_games,
    cyclic_games,
    lower_win_games,
    make_games,
    mix_games,
    random_games,
    rock_paper_scissors,
    tie_games,
    validate_preference_matrix,
)


#: Rounding allowance for O(1) values computed along different paths (BLAS products, einsum's
#: summation order, SIMD exp/log): about 450 ε, far from any CPU's rounding floor.
ROUNDING = 1e-13


def assert_constant_sum(P: np.ndarray, atol: float = 0.0) -> None:
    """P + Pᵀ = 1 (exactly by default), entries in [0, 1], diagonal ½."""
    assert P.dtype == np.float64
    assert np.max(np.abs(P + np.swapaxes(P, -1, -2) - 1.0)) <= atol
    assert P.min() >= 0.0 and P.max() <= 1.0
    assert np.all(np.diagonal(P, axis1=-2, axis2=-1) == 0.5)


# ----------------------------------------------------------------------------------------------------
# validation


class TestValidation:
    def test_returns_float64_same_shape(self):
        single = [[0.5, 1], [0, 0.5]]
        out = validate_preference_matrix(single)
        assert out.dtype == np.float64 and out.shape == (2, 2)
        np.testing.assert_array_equal(out, np.array(single, dtype=float))
        batch = lower_win_games(3, 4).astype(np.float32)  # exactly representable: converted as is
        out = validate_preference_matrix(batch)
        assert out.dtype == np.float64 and out.shape == (3, 4, 4)
        np.testing.assert_array_equal(out, lower_win_games(3, 4))

    def test_atol(self):
        P = random_games(1, 4, 0)
        P[0, 1, 0] += 1e-10
        validate_preference_matrix(P)  # within the default 1e-9
        P[0, 1, 0] += 1e-8
        with pytest.raises(ValueError, match=re.escape("P[run 0, 0, 1] + P[run 0, 1, 0]")):
            validate_preference_matrix(P)
        validate_preference_matrix(P, atol=1e-7)
        P[0, 1, 0] -= 2e-8  # now below 1 by 1e-8 − 1e-10
        with pytest.raises(ValueError, match=re.escape("P[run 0, 0, 1] + P[run 0, 1, 0]")):
            validate_preference_matrix(P)


def _edited(P: np.ndarray, **entries: float) -> np.ndarray:
    """A copy of P with entries set, named like "r0_4_2" (run 0, row 4, column 2) or "4_2" for (N, N)."""
    P = P.copy()
    for name, value in entries.items():
        P[tuple(int(i) for i in name.lstrip("r").split("_"))] = value
    return P


BATCH = random_games(3, 5, 0)
RANGE_ERROR = _edited(BATCH, r0_4_2=1.7, r0_2_4=-0.7)  # P + Pᵀ = 1 still holds; the range check fires

INVALID_MATRICES = [
    (np.full(3, 0.5), "P must have shape (N, N) or (runs, N, N), got shape (3,)"),
    (np.full((2, 2, 2, 2), 0.5), "P must have shape (N, N) or (runs, N, N), got shape (2, 2, 2, 2)"),
    (np.full((2, 3), 0.5), "P must be square in its last two axes, got shape (2, 3)"),
    (np.full((0, 2, 2), 0.5), "P must have at least one run and one action, got shape (0, 2, 2)"),
    ([["a", "b"], ["c", "d"]], "P must be a numeric array, got list"),
    (_edited(BATCH, r1_2_0=np.nan), "P[run 1, 2, 0] = nan is not finite"),
    (_edited(BATCH, r2_0_0=np.inf), "P[run 2, 0, 0] = inf is not finite"),
    (RANGE_ERROR, "P[run 0, 2, 4] = -0.7 is outside [0, 1]"),
    (_edited(RANGE_ERROR[0], **{"2_4": 0.3}), "P[4, 2] = 1.7 is outside [0, 1]"),
    # sums above 1 and below 1; the first violation in C order is named
    (_edited(BATCH, r2_3_1=0.9, r2_1_3=0.3), "P[run 2, 1, 3] + P[run 2, 3, 1] = 1.2, must be 1 (within 1e-9)"),
    (_edited(BATCH, r1_3_1=0.1, r1_1_3=0.3), "P[run 1, 1, 3] + P[run 1, 3, 1] = 0.4, must be 1 (within 1e-9)"),
    (np.zeros((2, 2)), "P[0, 0] = 0 is on the diagonal and must be 0.5"),
    (_edited(np.full((3, 3), 0.5), **{"1_1": 0.6}), "P[1, 1] = 0.6 is on the diagonal and must be 0.5"),
    (_edited(np.full((3, 3), 0.5), **{"2_2": 0.4}), "P[2, 2] = 0.4 is on the diagonal and must be 0.5"),
]


@pytest.mark.parametrize("P, message", INVALID_MATRICES)
def test_invalid_matrix_is_refused_naming_the_entry(P, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_preference_matrix(P)


@pytest.mark.parametrize("atol", [-1e-9, np.nan, "1e-9", True])
def test_invalid_atol_is_refused(atol):
    with pytest.raises(ValueError, match=re.escape("atol must be a finite non-negative number")):
        validate_preference_matrix(np.full((2, 2), 0.5), atol=atol)


# ----------------------------------------------------------------------------------------------------
# generators


class TestGenerators:
    @pytest.mark.parametrize("kind", GAME_KINDS)
    def test_every_kind_is_a_preference_matrix(self, kind):
        P = make_games(kind, runs=4, num_actions=7, seed=3)
        assert P.shape == (4, 7, 7)
        assert_constant_sum(P)

    @pytest.mark.parametrize("kind", GAME_KINDS)
    def test_deterministic_for_a_seed(self, kind):
        np.testing.assert_array_equal(make_games(kind, 3, 6, seed=11), make_games(kind, 3, 6, seed=11))

    @pytest.mark.parametrize("kind", ["random", "bradley_terry"])
    def test_seed_matters(self, kind):
        assert not np.array_equal(make_games(kind, 3, 6, seed=1), make_games(kind, 3, 6, seed=2))

    def test_random_games_accepts_generator(self):
        a = random_games(2, 5, np.random.default_rng(7))
        np.testing.assert_array_equal(a, random_games(2, 5, 7))
        rng = np.random.default_rng(7)
        first, second = random_games(2, 5, rng), random_games(2, 5, rng)
        assert not np.array_equal(first, second)  # the generator advances

    def test_random_lower_triangle_is_uniform(self):
        P = random_games(200, 50, 2018011309)
        rows, cols = np.tril_indices(50, k=-1)
        lower = P[:, rows, cols].ravel()  # 245,000 draws
        assert abs(lower.mean() - 0.5) < 3e-3  # std of the mean: 5.8e-4
        assert abs(lower.var() - 1 / 12) < 2e-3
        assert stats.kstest(lower, "uniform").pvalue > 1e-3
        np.testing.assert_array_equal(P[:, cols, rows].ravel(), 1.0 - lower)
        # runs are independent draws
        assert abs(np.corrcoef(P[0, rows, cols], P[1, rows, cols])[0, 1]) < 0.15

    def test_random_games_draw_order(self):
        """Run r's k-th uniform draw of rng.random((runs, N(N−1)/2)) goes to the k-th entry below the
        diagonal in row-major order, (1,0), (2,0), (2,1), (3,0), …; the entry above is its complement."""
        runs, n, seed = 3, 5, 42
        draws = np.random.default_rng(seed).random((runs, n * (n - 1) // 2))
        P = random_games(runs, n, seed)
        for r in range(runs):
            k = 0
            for i in range(n):
                for j in range(i):
                    assert P[r, i, j] == draws[r, k], (r, i, j)
                    assert P[r, j, i] == 1.0 - draws[r, k]
                    k += 1
            assert np.all(np.diag(P[r]) == 0.5)

    def test_tie_and_lower_win(self):
        np.testing.assert_array_equal(tie_games(2, 4), np.full((2, 4, 4), 0.5))
        L = lower_win_games(2, 4)
        expected = np.array([[0.5, 0, 0, 0], [1, 0.5, 0, 0], [1, 1, 0.5, 0], [1, 1, 1, 0.5]])
        np.testing.assert_array_equal(L, np.stack([expected, expected]))

    def test_rock_paper_scissors(self):
        P = rock_paper_scissors(runs=2)
        assert P.shape == (2, 3, 3)
        rock, paper, scissors = 0, 1, 2
        assert P[0, rock, scissors] == 1.0 and P[0, paper, rock] == 1.0 and P[0, scissors, paper] == 1.0
        assert P[0, scissors, rock] == 0.0
        np.testing.assert_array_equal(P @ np.full(3, 1 / 3), np.full((2, 3), 0.5))
        half = rock_paper_scissors(strength=0.5)
        assert half[0, rock, scissors] == 0.75 and half[0, scissors, rock] == 0.25
        np.testing.assert_array_equal(rock_paper_scissors(strength=0.0), tie_games(1, 3))

    @pytest.mark.parametrize("n", [3, 4, 5, 8, 9])
    def test_cyclic(self, n):
        P = cyclic_games(2, n, strength=0.8)
        assert_constant_sum(P)
        k = (n - 1) // 2
        for i in range(n):
            for d in range(1, k + 1):
                assert P[0, i, (i + d) % n] == pytest.approx(0.9, abs=1e-12)
        # every column of P − ½ sums to 0: the uniform policy gets ½ against everything
        np.testing.assert_allclose(P @ np.full(n, 1 / n), 0.5, atol=ROUNDING)
        if n % 2 == 0:
            assert P[0, 0, n // 2] == 0.5
        if n == 3:
            np.testing.assert_array_equal(cyclic_games(1, 3), np.swapaxes(rock_paper_scissors(), 1, 2))

    def test_bradley_terry_is_sigmoid_and_transitive(self):
        rng = np.random.default_rng(0)
        scores = rng.standard_normal((5, 8))
        P = bradley_terry_games(scores)
        assert_constant_sum(P)
        np.testing.assert_allclose(P, expit(scores[:, :, None] - scores[:, None, :]), rtol=0, atol=ROUNDING)
        # P_ij > ½ exactly when s_i > s_j, and strong stochastic transitivity:
        # P_ij ≥ ½ and P_jk ≥ ½  ⇒  P_ik ≥ max(P_ij, P_jk)
        assert np.array_equal(P > 0.5, scores[:, :, None] > scores[:, None, :])
        ij, jk, ik = P[:, :, :, None], P[:, None, :, :], P[:, :, None, :]
        ij, jk, ik = np.broadcast_arrays(ij, jk, ik)
        premise = (ij >= 0.5) & (jk >= 0.5)
        assert premise.sum() > 100
        assert np.all(ik[premise] >= np.maximum(ij, jk)[premise] - ROUNDING)
        assert bradley_terry_games(scores[0]).shape == (1, 8, 8)

    def test_mix_games(self):
        A, B = random_games(3, 4, 0), lower_win_games(3, 4)
        M = mix_games([A, B], [0.25, 0.75])
        np.testing.assert_allclose(M, 0.25 * A + 0.75 * B, rtol=0, atol=ROUNDING)
        assert_constant_sum(M, atol=ROUNDING)
        np.testing.assert_array_equal(mix_games([A], [1.0]), A)

    def test_bradley_terry_is_the_c_library_formula_bit_for_bit(self):
        """P_ij = 1/(1 + exp(−(s_i − s_j))) below the diagonal with the C library's exp (scipy's expit is
        a scalar loop over it, not one of numpy's CPU-dispatched ones): the same bits as Python's math."""
        s = np.random.default_rng(5).normal(size=(2, 9)) * 3.0
        P = bradley_terry_games(s)
        for r in range(2):
            for i in range(9):
                for j in range(i):
                    assert P[r, i, j] == 1.0 / (1.0 + math.exp(-(s[r, i] - s[r, j])))
                    assert P[r, j, i] == 1.0 - P[r, i, j]

    def test_mix_games_sums_in_index_order_bit_for_bit(self):
        """Σ_k w_k P_k added k = 0, 1, … with each product rounded (Python floats): the same bits on
        every CPU; another order gives other bits on these inputs, so the check can fail."""
        games = [random_games(2, 5, seed) for seed in range(7)]
        w = np.random.default_rng(9).dirichlet(np.ones(7))
        M = mix_games(games, w)
        expected, reversed_order = [], []
        for entries in zip(*(g.ravel().tolist() for g in games)):
            total = 0.0
            for weight, p in zip(w.tolist(), entries):
                total += weight * p
            expected.append(total)
            total = 0.0
            for weight, p in reversed(list(zip(w.tolist(), entries))):
                total += weight * p
            reversed_order.append(total)
        assert M.ravel().tolist() == expected
        assert expected != reversed_order

    def test_make_games_dispatch(self):
        np.testing.assert_array_equal(make_games("random", 2, 5, 4), random_games(2, 5, 4))
        np.testing.assert_array_equal(make_games("tie", 2, 5), tie_games(2, 5))
        np.testing.assert_array_equal(make_games("lower_win", 2, 5), lower_win_games(2, 5))
        np.testing.assert_array_equal(make_games("cyclic", 2, 5), cyclic_games(2, 5))


A_GAMES, B_GAMES = random_games(3, 4, 0), lower_win_games(3, 4)
OUT_OF_RANGE = _edited(A_GAMES, r1_2_3=2.0)

GENERATOR_ERRORS = [
    (lambda: random_games(0, 5, 1), "runs must be at least 1, got runs=0"),
    (lambda: random_games(2, 2.5, 1), "num_actions must be an integer, got num_actions=2.5"),
    (lambda: random_games(2, True, 1), "num_actions must be an integer, got num_actions=True"),
    (lambda: random_games(2, 5, "x"), "seed_or_rng must be an int seed or a numpy Generator"),
    (lambda: random_games(2, 5, None), "seed_or_rng must be an int seed or a numpy Generator"),
    (lambda: random_games(2, 5, -3), "seed must be non-negative, got seed=-3"),
    (lambda: tie_games(2, 0), "num_actions must be at least 1, got num_actions=0"),
    (lambda: lower_win_games(-1, 3), "runs must be at least 1, got runs=-1"),
    (lambda: rock_paper_scissors(strength=2), "strength must be in [0, 1], got strength=2"),
    (lambda: rock_paper_scissors(strength="1"), "strength must be a number in [0, 1], got strength='1'"),
    (lambda: cyclic_games(2, 5, strength=-0.1), "strength must be in [0, 1], got strength=-0.1"),
    (lambda: bradley_terry_games([[0.0, np.inf]]), "scores[0, 1] = inf is not finite"),
    (lambda: bradley_terry_games(np.zeros((2, 2, 2))), "scores must have shape (runs, N) or (N,), got shape (2, 2, 2)"),
    (lambda: mix_games([], []), "mix_games needs at least one game, got an empty list"),
    (lambda: mix_games([A_GAMES, B_GAMES], [1.5, -0.5]), "weights[1] = -0.5 must be finite and non-negative"),
    (lambda: mix_games([A_GAMES, B_GAMES], [0.5, np.nan]), "weights[1] = nan must be finite and non-negative"),
    (lambda: mix_games([A_GAMES, B_GAMES], [0.5, 0.6]), "weights must sum to 1, got sum(weights) = 1.1"),
    (lambda: mix_games([A_GAMES, B_GAMES], [1.0]), "weights must be a list of 2 numbers, got shape (1,)"),
    (lambda: mix_games([A_GAMES, B_GAMES[:2]], [0.5, 0.5]), "games[1] has shape (2, 4, 4), but games[0] has shape (3, 4, 4)"),
    (lambda: mix_games([A_GAMES, OUT_OF_RANGE], [0.5, 0.5]), "games[1]: P[run 1, 2, 3] = 2 is outside [0, 1]"),
    (lambda: make_games("rps", 2, 5, 0), "unknown game kind 'rps'; expected one of random, tie"),
    (lambda: make_games("random", 2, 5), "make_games(kind='random') needs a seed, got seed=None"),
    (lambda: make_games("bradley_terry", 2, 5), "make_games(kind='bradley_terry') needs a seed, got seed=None"),
]


@pytest.mark.parametrize("call, message", GENERATOR_ERRORS, ids=[m[:40] for _, m in GENERATOR_ERRORS])
def test_generator_refuses_bad_arguments(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_import_stays_light():
    """The game modules import torch lazily (inside reference_instances only): with torch made
    unimportable, they still load and the numpy generators and file I/O work."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from egpo_core import games, game_io, reference_draws\n"
        "assert games.random_games(2, 3, 0).shape == (2, 3, 3)\n"
        "try:\n"
        "    reference_draws.reference_instances(0)\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "lazy"
