"""Tests of egpo_core.validation (the validators shared by games, metrics, equilibria, step sizes and
the simulator) and of egpo_core.stepsizes, whose conversions are closed forms."""

from __future__ import annotations

import re

import numpy as np
import pytest

from egpo_core.stepsizes import eta_from_lr, lr_from_eta, mixture_coefficient
from egpo_core.validation import check_beta, check_count, check_distribution, check_logits, check_positive


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_beta(0), "beta must be positive and finite, got beta=0"),
        (lambda: check_beta(-1e-3), "beta must be positive and finite, got beta=-0.001"),
        (lambda: check_beta(np.float64("nan")), "beta must be positive and finite, got beta=nan"),
        (lambda: check_beta("0.1"), "beta must be a positive finite number, got beta='0.1'"),
        (lambda: check_beta(np.array([0.1])), "beta must be a positive finite number, got beta=array([0.1])"),
        (lambda: check_beta(-1.0, allow_zero=True), "beta must be non-negative and finite, got beta=-1"),
        (lambda: check_positive(-2, "lr"), "lr must be positive and finite, got lr=-2"),
        (lambda: check_positive(None, "tol"), "tol must be a positive finite number, got tol=None"),
        (lambda: check_count(3.0, "runs"), "runs must be an integer, got runs=3.0"),
        (lambda: check_count(np.True_, "runs"), "runs must be an integer, got runs=np.True_"),
        (lambda: check_count(1, "depth", minimum=2), "depth must be at least 2, got depth=1"),
        (lambda: check_logits(np.zeros((2, 0)), "init_logits"), "init_logits must have shape (..., N) with N ≥ 1, got shape (2, 0)"),
        (lambda: check_logits(np.zeros((2, 3)), "ref_logits", 4), "ref_logits has 3 entries on its last axis (shape (2, 3)), but the game has N = 4"),
        (lambda: check_logits([[0.0, 1.0], [np.nan, 0.0]], "x"), "x[1, 0] = nan is not finite"),
        (lambda: check_distribution([0.5, 0.5], "w", 3), "w must be a list of 3 numbers, got shape (2,)"),
        (lambda: check_distribution([[0.5, 0.5]], "w", 2), "w must be a list of 2 numbers, got shape (1, 2)"),
        (lambda: check_distribution([1.2, -0.2], "w", 2), "w[1] = -0.2 must be finite and non-negative"),
        (lambda: check_distribution([0.5, 0.5 + 1e-11], "w", 2), "w must sum to 1, got sum(w) = 1.00000000001"),
        (lambda: eta_from_lr(0.1, 0.0, 10), "beta must be positive and finite, got beta=0"),
        (lambda: eta_from_lr(-0.1, 0.1, 10), "lr must be positive and finite, got lr=-0.1"),
        (lambda: eta_from_lr(0.1, 0.1, 0), "num_actions must be at least 1, got num_actions=0"),
        (lambda: lr_from_eta(np.inf, 0.1, 10), "eta must be positive and finite, got eta=inf"),
    ],
)
def test_bad_values_are_named(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_valid_values_come_back_in_the_form_the_math_uses():
    assert check_beta(np.float32(0.5)) == 0.5 and type(check_beta(1)) is float
    assert check_beta(0, allow_zero=True) == 0.0
    assert check_count(np.int64(4), "runs") == 4 and type(check_count(np.int64(4), "runs")) is int
    logits = check_logits([[1, 2, 3]], "logits", 3)
    assert logits.dtype == np.float64 and logits.shape == (1, 3)
    np.testing.assert_array_equal(check_distribution([0.25, 0.75], "w", 2), [0.25, 0.75])


@pytest.mark.parametrize("lr, beta, n", [(0.02, 0.01, 10), (2e-4, 0.001, 10), (0.1, 0.1, 100), (1e-3, 0.1, 7)])
def test_step_size_conversions_are_the_closed_forms(lr, beta, n):
    """ηβ = 4·lr/N both ways; Nash-MD's c = ηβ (default) or 2·lr/N (reference)."""
    eta = eta_from_lr(lr, beta, n)
    assert eta == pytest.approx(4 * lr / (n * beta), rel=1e-13)
    assert lr_from_eta(eta, beta, n) == pytest.approx(lr, rel=1e-13)
    assert mixture_coefficient(lr, beta, n) == pytest.approx(4 * lr / n, rel=1e-13)
    assert mixture_coefficient(lr, beta, n, "reference") == pytest.approx(2 * lr / n, rel=1e-13)


def test_a_diagonal_other_than_one_half_is_named_as_such():
    from egpo_core.validation import validate_preference_matrix

    P = np.full((2, 3, 3), 0.5)
    P[1, 2, 2] = 0.6
    with pytest.raises(ValueError, match=re.escape("P[run 1, 2, 2] = 0.6 is on the diagonal and must be 0.5 "
                                                   "(a response ties with itself; within 5e-10)")):
        validate_preference_matrix(P)
    P[1, 2, 2], P[0, 0, 1] = 0.5, 0.7  # off the diagonal: the pair's sum is named
    with pytest.raises(ValueError, match=re.escape("P[run 0, 0, 1] + P[run 0, 1, 0] = 1.2, must be 1")):
        validate_preference_matrix(P)
