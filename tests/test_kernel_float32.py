"""The opt-in float32 games (``SimulationConfig.dtype='float32'``).

With exact gradients the games are stored as float32 panels of A = P − ½'s upper triangle
(``_kernel.panel_layout``) and each product is ½Σσ + Aσ with σ rounded to float32, float32 fused multiply-adds
and short float32 sums accumulated in float64 (``_kernel._panel_product``); the policies' softmaxes and the gap
take their exponentials from the kernel's own ``_exp_shifted``; logits, gradients and metrics stay float64.
Asserted here:

* the product is its documented order bit for bit (a numpy replica of it, float32/float64 element-wise
  operations and an exact float32 fused multiply-add built from float64 ones, itself checked on cases where
  fusing changes the rounding) and within 16·2⁻²⁴·Σ_j |A_ij| σ_j of the float64 product P σ;
* the layout holds A's upper triangle once (nothing else non-zero);
* ``_exp_shifted`` is within 2 ulps of np.exp on [−708, 709] (observed: 1 ulp, 0.1 ulp on average), 0 below
  −708 and at −inf, NaN at NaN, and returns its terms' sum in its documented lane order bit for bit;
* (slow) gap curves agree with float64's to a relative 1e-4 wherever the gap exceeds 1e-6 (EGPO, OIPO1,
  Nash-MD; observed 4.1e-5, 2.3e-5, 2.4e-5 at N = 40, β = 0.01, 3000 steps), and differ (the option acts).
  Online IPO 2 deviates up to 1.6e-4 (9 entries over 1e-4, all in the run whose gap oscillates, falling up to
  18 % per step), and that is the game's rounding to float32, not the arithmetic: float64 arithmetic on the
  game the panels hold (P − ½ rounded to float32) deviates up to 2.1e-4 at the same steps (asserted > 1e-4), and
  float32 agrees with that run to 5.3e-5 (asserted < 1e-4); the other algorithms barely feel the game's
  rounding (≤ 1.1e-6), their deviation is the arithmetic's.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from egpo_core import _kernel, simulate
from egpo_core.config import SimulationConfig
from egpo_core.games import random_games


def test_dtype_is_validated_and_stored():
    config = SimulationConfig(beta=0.1, lr=0.1, iterations=2, dtype="float32")
    assert config.to_dict()["dtype"] == "float32"
    assert SimulationConfig.from_dict(config.to_dict()) == config
    assert SimulationConfig(beta=0.1, lr=0.1, iterations=2).dtype == "float64"
    with pytest.raises(ValueError, match=r"dtype must be one of \('float64', 'float32'\), got dtype='float16'"):
        SimulationConfig(beta=0.1, lr=0.1, iterations=2, dtype="float16")


def _float32_game(P: np.ndarray) -> np.ndarray:
    """The game the float32 panels hold: ½ + A − Aᵀ, A = P − ½'s strict upper triangle rounded to float32."""
    A = np.triu((P - 0.5).astype(np.float32).astype(np.float64), 1)
    return 0.5 + A - A.transpose(0, 2, 1)


@pytest.mark.slow  # compiles the kernel's float32 specialization once (about a minute), then seconds
def test_float32_gap_curves_agree_with_float64_to_1e_4():
    rng = np.random.default_rng(3)
    runs, n = 3, 40
    P, ref = random_games(runs, n, rng), rng.normal(size=(runs, n))
    options = dict(algorithms=["egpo", "oipo1", "nash_md", "oipo2"], beta=0.01, lr=0.02, iterations=3000,
                   progress=False)
    single = simulate(P, ref, dtype="float32", **options)
    double = simulate(P, ref, **options)
    rounded = simulate(_float32_game(P), ref, **{**options, "algorithms": ["oipo2"]})  # float64, the float32 game

    def deviation(gap, exact):
        shown = exact > 1e-6
        return np.max(np.abs(gap[shown] - exact[shown]) / exact[shown])

    for name in options["algorithms"]:
        g32, g64 = single.duality_gap[name], double.duality_gap[name]
        assert np.isfinite(g32).all()
        assert g64[:, -1].max() < 0.1 * g64[:, 0].min()  # the runs converged a long way
        assert (g64 > 1e-6).mean() > 0.9
        assert not np.array_equal(g32, g64)  # float32 games were used
        if name != "oipo2":
            assert deviation(g32, g64) < 1e-4
    # Online IPO 2: its gap, oscillating, is sensitive to the game itself at one step; float64 arithmetic on the
    # game rounded to float32 moves as far from the float64 curve (observed 2.1e-4) as float32 does (1.6e-4),
    # and float32 agrees with that float64 run (observed 5.3e-5): the rounding of the input, not the arithmetic
    g32, g64, g64_rounded = single.duality_gap["oipo2"], double.duality_gap["oipo2"], rounded.duality_gap["oipo2"]
    assert deviation(g32, g64_rounded) < 1e-4
    assert deviation(g64_rounded, g64) > 1e-4


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 a·b + c rounded once (IEEE 754 fusedMultiplyAdd, round to nearest even), from float64 operations:
    a·b is exact in float64 (24 + 24 bits), s = a·b + c rounded and its error e (two-sum, exact) give the exact
    value s + e; s rounded to float32 is the answer unless s lies halfway between two float32 numbers, where
    the sign of e picks the side (no float32 midpoint lies strictly between s + e and s)."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = np.broadcast_to(c, p.shape).astype(np.float64)
    s = p + c64
    back = s - p
    e = (p - (s - back)) + (c64 - back)
    r = s.astype(np.float32)
    d = s - r.astype(np.float64)
    other = np.nextafter(r, np.where(d > 0, np.float32(np.inf), np.float32(-np.inf)))
    tie = (d != 0) & ((r.astype(np.float64) + other.astype(np.float64)) * 0.5 == s) & (e != 0)
    return np.where(tie & ((e > 0) == (d > 0)), other, r)


def test_fma32_replica_rounds_once():
    f = np.float32
    # (1 + 2⁻¹²)² − 1 = 2⁻¹¹ + 2⁻²⁴ exactly; rounding the product first (a tie, to even) would lose the 2⁻²⁴
    assert _fma32(f(1 + 2.0 ** -12), f(1 + 2.0 ** -12), f(-1.0)) == f(2.0 ** -11 + 2.0 ** -24)
    # (1 + 2⁻²³) + (2⁻²⁴ − 2⁻⁷⁰): just below the midpoint 1 + 3·2⁻²⁴, so down to 1 + 2⁻²³; float64 rounds the sum
    # onto the midpoint itself (ties to even would give 1 + 2⁻²²), the two-sum error decides
    assert _fma32(f(1 + 2.0 ** -23), f(2.0 ** -24 * (1 - 2.0 ** -23)), f(1 + 2.0 ** -23)) == f(1 + 2.0 ** -23)
    assert _fma32(f(2.0 ** -24), f(1.0), f(1.0)) == f(1.0)  # an exact tie: to even


def _numpy_panel_product(P: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The order of ``_kernel._panel_product`` written with numpy's float32 and float64 element-wise
    operations (each correctly rounded whatever numpy's SIMD) and :func:`_fma32`: acc = ½Σx (four sums over
    j mod 4, combined pairwise, then the rest); panel after panel (rows 4p … 4p + 3, columns from ⌊4p/8⌋·8): the
    column sums t = fma(a_1c, y_1, a_0c y_0) + fma(a_3c, y_3, a_2c y_2) in float32, set (the first panel of a group
    of PANEL_GROUP) or added in float32 into C; after the group's last panel acc_c −= f64(C_c) from the group's
    first column; then acc_{4p+r} += the lane tree of row r's dot product (float32 lanes s ← fma(a, x, s) over
    runs of 8 blocks, widened into float64 lanes)."""
    n = x.shape[0]
    rows, cols = -(-n // 4) * 4, -(-n // 8) * 8
    A = np.zeros((rows, cols), dtype=np.float32)
    A[:n, :n] = np.triu(P - 0.5, 1)
    x32 = np.zeros(cols, dtype=np.float32)
    x32[:n] = np.where(x >= _kernel.TINY, x, 0.0).astype(np.float32)
    whole = n // 4 * 4
    lanes = [0.0] * 4
    for j, value in enumerate(x[:whole].tolist()):
        lanes[j % 4] += value
    total = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    for value in x[whole:].tolist():
        total += value
    acc = np.zeros(cols)
    acc[:n] = 0.5 * total
    sums = np.zeros(cols, dtype=np.float32)
    group = _kernel.PANEL_GROUP
    for row in range(0, rows, 4):
        first, phase = row // 8 * 8, row // 4 % group
        a, y = A[row:row + 4, first:], x32[row:row + 4]
        lower = _fma32(a[1], y[1], a[0] * y[0]) + _fma32(a[3], y[3], a[2] * y[2])
        sums[first:] = lower if phase == 0 else sums[first:] + lower
        if phase == group - 1 or row + 4 == rows:
            start = (row - 4 * phase) // 8 * 8
            acc[start:] -= sums[start:].astype(np.float64)
        blocks, columns = a.reshape(4, -1, 8), x32[first:].reshape(-1, 8)
        wide = np.zeros((4, 8))
        for start in range(0, blocks.shape[1], 8):
            part = np.zeros((4, 8), dtype=np.float32)
            for block in range(start, min(start + 8, blocks.shape[1])):
                part = _fma32(blocks[:, block], columns[block], part)
            wide = wide + part.astype(np.float64)
        acc[row:row + 4] += ((wide[:, 0] + wide[:, 1]) + (wide[:, 2] + wide[:, 3])) + ((wide[:, 4] + wide[:, 5])
                                                                                      + (wide[:, 6] + wide[:, 7]))
    return acc[:n]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9, 13, 16, 17, 24, 45, 64, 65, 100, 257])
def test_panel_product_is_its_documented_order_bit_for_bit_and_near_float64(n):
    rng = np.random.default_rng(40 + n)
    P = random_games(1, n, rng)
    for concentration in (1.0, 0.02):  # spread and peaked policies (entries below TINY too)
        x = rng.dirichlet(np.full(n, concentration))
        padded = -(-n // 8) * 8
        out = np.empty(n)
        _kernel._panel_product(_kernel.panel_layout(P)[0, 0], x, out, np.full(2 * padded, np.nan, dtype=np.float32),
                               np.full(padded, np.nan))
        assert out.tolist() == _numpy_panel_product(P[0], x).tolist()
        # each term rounded a few times at float32's 2⁻²⁴: within 16·2⁻²⁴ Σ_j |A_ij| x_j of the float64 product
        bound = 16 * 2.0 ** -24 * (np.abs(P[0] - 0.5) @ x) + 1e-300
        assert (np.abs(out - P[0] @ x) <= bound).all()


def test_panel_layout_holds_the_upper_triangle_once():
    n = 13
    P = random_games(2, n, np.random.default_rng(9))
    panels = _kernel.panel_layout(P)
    # panels of rows 0-3 and 4-7 from column 0, of rows 8-11 and 12-15 from column 8: 2, 2, 1, 1 blocks
    assert panels.shape == (2, 1, 32 * (2 + 2 + 1 + 1)) and panels.dtype == np.float32
    upper = np.triu(P - 0.5, 1).astype(np.float32)
    # row 5, columns 0-7 are block 0 of panel 1 (offset 64), row 5 its second row; column 9 is in its block 1
    assert panels[0, 0, 64 + 8:64 + 16].tolist() == upper[0, 5, 0:8].tolist()
    assert panels[1, 0, 64 + 32 + 8 + 1] == upper[1, 5, 9]
    assert np.count_nonzero(panels[0]) == np.count_nonzero(upper[0])  # nothing else stored


@njit
def _exp_terms(x, shift, out):
    return _kernel._exp_shifted(x, shift, out)


@njit
def _exp_total(x, shift):
    return _kernel._exp_shifted_sum(x, shift)


def test_own_exp_is_within_two_ulps_of_numpy_and_flushes_below_its_floor():
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.uniform(-708.0, 709.0, 200_001), rng.uniform(-1.0, 1.0, 100_000),
                        (np.arange(-1021, 1023) + 0.5) * np.log(2.0)])  # the rounding of k flips here
    out = np.empty_like(x)
    _exp_terms(x, 0.0, out)
    ulps = np.abs(out - np.exp(x)) / np.spacing(np.exp(x))
    assert ulps.max() <= 2 and ulps.mean() < 0.2
    edges = np.array([-np.inf, -1000.0, np.nextafter(_kernel.EXP_FLOOR, -np.inf), _kernel.EXP_FLOOR, 0.0, np.nan])
    out = np.empty_like(edges)
    _exp_terms(edges, 0.0, out)
    assert out[:3].tolist() == [0.0, 0.0, 0.0] and out[4] == 1.0
    assert abs(out[3] - np.exp(_kernel.EXP_FLOOR)) <= 2 * np.spacing(np.exp(_kernel.EXP_FLOOR))
    assert np.isnan(out[5])


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 8, 11])
def test_own_exp_sum_is_its_documented_lane_order_bit_for_bit(n):
    x = np.random.default_rng(20 + n).normal(size=n) * 3.0
    out = np.full(n, np.nan)
    total = _exp_terms(x, 0.7, out)
    terms = out.tolist()
    whole = n // 4 * 4
    lanes = [0.0] * 4
    for i, term in enumerate(terms[:whole]):
        lanes[i % 4] += term
    expected = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    for term in terms[whole:]:
        expected += term
    assert total == expected and _exp_total(x, 0.7) == total
    np.testing.assert_allclose(out, np.exp(x - 0.7), rtol=4e-16, atol=0)
