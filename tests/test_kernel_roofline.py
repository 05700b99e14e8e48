"""``benchmarks/bench_simulate.py --roofline``: the exact EGPO step's bytes and flops against the rates
this machine sustains (issue 19).

* The table's arithmetic, on a small N: bytes per step twice the stored game (float64: 8N²; float32: the
  panels of P − ½, 32 bytes per panel row-block of 8 columns), flops 4N²,
  totals × runs × steps, bounds = totals over the cores' rates, product_bound_s = 2·runs·steps·(seconds
  per product on both cores)/cores; every rate positive and finite.
* The product it times is the kernel's: each thread's output equals P x (float64 games: to 1e-12
  relative, the fixed-order sum is not numpy's; float32 panels: to 1e-6 absolute).
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from egpo_core.games import random_games
from test_analysis import BENCH  # benchmarks/bench_simulate.py, loaded once


@pytest.mark.slow  # compiles the benchmark's parallel loops for both dtypes (about 10 s)
def test_roofline_table_arithmetic():
    n, runs, steps = 16, 3, 7
    table = BENCH.roofline(num_actions=n, runs=runs, steps=steps, memory_megabytes=8).set_index("dtype")
    cores = min(2, numba.config.NUMBA_NUM_THREADS)
    # N = 16: float32 panels of rows 0-3, 4-7 from column 0 (2 blocks each), 8-11, 12-15 from 8 (1 block)
    for dtype, game_bytes in (("float64", 8 * n * n), ("float32", 4 * 32 * (2 + 2 + 1 + 1))):
        row = table.loc[dtype]
        assert row.bytes_per_step == 2 * game_bytes
        assert row.flops_per_step == 4 * n * n
        assert row.total_bytes == row.bytes_per_step * runs * steps
        assert row.total_flops == 4 * n * n * runs * steps
        rates = row[["memory_GBps_1core", "read_GBps_1core", "read_GBps_2cores", "product_us_1core",
                     "product_us_2cores", "product_GBps"]].to_numpy(dtype=float)
        assert np.isfinite(rates).all() and (rates > 0).all()
        np.testing.assert_allclose(row.memory_bound_s, row.total_bytes / (2 * row.memory_GBps_1core * 1e9), rtol=1e-12)
        np.testing.assert_allclose(row.read_bound_s, row.total_bytes / (cores * row.read_GBps_2cores * 1e9), rtol=1e-12)
        np.testing.assert_allclose(row.product_bound_s, 2 * runs * steps * row.product_us_2cores * 1e-6 / cores,
                                   rtol=1e-12)
        np.testing.assert_allclose(row.product_GBps, game_bytes / (row.product_us_2cores * 1e-6) / 1e9, rtol=1e-12)


@pytest.mark.parametrize("dtype, tolerance", [("float64", dict(rtol=1e-12, atol=0)), ("float32", dict(rtol=0, atol=1e-6))])
def test_timed_product_is_the_kernels(dtype, tolerance):
    rng = np.random.default_rng(5)
    P = random_games(2, 37, rng)
    x = rng.dirichlet(np.ones(37), size=2)
    out = np.full((2, 37), np.nan)
    BENCH._products(BENCH.exact_games(P, dtype), x, out, dtype == "float32", 2)
    np.testing.assert_allclose(out, np.einsum("gij,gj->gi", P, x), **tolerance)
