"""The simulator kernel computes the same bits on every CPU.

* No kernel function is compiled with fast-math flags (reassociation would let the compiler pick a
  summation order by the CPU's vector width, contraction a fused multiply-add where the CPU has one).
* The matrix-vector products (``_matvec`` on the transposed games, float64 or float32)
  equal a pure-Python float64 sum in index order bit for bit (Python's floats round every product
  and sum, no FMA, no reordering), on random inputs of several lengths, odd ones too.
* The pieces that used to call BLAS/LAPACK are fixed-order too: the network's numpy forward pass
  equals the kernel's forward pass bit for bit, the Cholesky solve replaces LAPACK's.
* (slow) A whole simulation compiled for a generic x86-64 CPU (no AVX, no FMA) equals the one
  compiled for this CPU bit for bit, float64 and float32 games (whose products are explicit 8-wide vector
  code, lowered to SSE2 pairs there).
* The numpy code that feeds the dynamics is fixed-order too: log π_ref (``log_softmax_rows``) equals
  a pure-Python float computation bit for bit and is what the simulation starts from; a tabular and a
  neural simulation from numpy-drawn games and a non-uniform π_ref give the same bytes with numpy's
  highest SIMD features switched off (``NPY_DISABLE_CPU_FEATURES``). On a CPU without AVX-512,
  numpy's float64 exp/log already are the C library's, so there that comparison cannot tell the
  old scipy ``log_softmax`` from the new code; on an AVX-512 one it can.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from egpo_core import SimulationConfig, _kernel, simulate
from egpo_core._kernel_inputs import log_softmax_rows
from egpo_core.games import random_games
from egpo_core.network import network_logits, network_parameters, neural_init

LENGTHS = [1, 2, 7, 8, 9, 15, 16, 17, 31, 100, 257]


def _dispatchers() -> dict[str, numba.core.registry.CPUDispatcher]:
    return {name: obj for name, obj in vars(_kernel).items() if isinstance(obj, numba.core.registry.CPUDispatcher)}


def _python_matvec(P, x) -> list[float]:
    """out_i = Σ_j P_ij x_j added in index order, in Python floats."""
    out = []
    for row in P:
        acc = 0.0
        for p, y in zip(row.tolist(), x.tolist()):
            acc += float(p) * y
        out.append(acc)
    return out


def _awkward(rng: np.random.Generator, size) -> np.ndarray:
    """Values whose sums depend on the order: signs mixed, magnitudes over 12 decades."""
    return rng.normal(size=size) * 10.0 ** rng.uniform(-6, 6, size=size)


def test_no_kernel_function_is_compiled_with_fast_math():
    dispatchers = _dispatchers()
    assert len(dispatchers) >= 20  # the module's compiled functions were found
    flagged = {name: d.targetoptions["fastmath"] for name, d in dispatchers.items() if d.targetoptions.get("fastmath")}
    assert flagged == {}


def test_the_steps_run_without_reference_counting():
    """_advance_group and every function outside run_chunk take views of their arrays at every step:
    compiled without numba's reference counting (``_nrt=False``) those cost no atomic increments. Only the
    sampled minimiser's solve and _run_group (a group's work arrays, once per chunk) allocate, and say so
    (``_nrt=True``; the flag is inherited from the caller otherwise); the functions inlined into their callers
    (``inline="always"``) take the callers'."""
    flags = {name: d.targetoptions.get("_nrt") for name, d in _dispatchers().items()
             if d.targetoptions.get("inline", "never") != "always"}
    counted = sorted(name for name, nrt in flags.items() if nrt is not False)
    assert counted == ["_cholesky_solve", "_ordered_pair_logits", "_ordered_pair_solve", "_run_group", "run_chunk"]
    assert [name for name in counted if name != "run_chunk" and flags[name] is not True] == []
    assert len(flags) >= 20


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matvec_is_the_index_order_sum_bit_for_bit(n, dtype):
    rng = np.random.default_rng(n)
    for _ in range(5):
        P, x = _awkward(rng, (n, n)).astype(dtype), _awkward(rng, n)
        expected = _python_matvec(P, x)  # a float32 P is widened exactly
        out = np.empty(n)
        _kernel._matvec(np.ascontiguousarray(P.T), x, out)  # the kernel stores Pᵀ
        assert out.tolist() == expected


def test_the_summation_order_matters_on_these_inputs():
    """The bit-for-bit comparisons above could fail: on these inputs other orders give other bits."""
    rng = np.random.default_rng(0)
    P, x = _awkward(rng, (257, 257)), _awkward(rng, 257)
    expected = np.array(_python_matvec(P, x))
    assert np.count_nonzero(expected != P @ x) > 50  # BLAS's order
    pairwise = np.array([np.sum(P[i] * x) for i in range(257)])  # numpy's pairwise summation
    assert np.count_nonzero(expected != pairwise) > 50


def test_network_forward_pass_equals_the_kernels_bit_for_bit():
    runs, n, width, depth = 3, 11, 5, 3
    network = neural_init(runs, n, width, depth, seed=4)
    logits = network_logits(network)
    params, d, n_hidden = network_parameters(network, runs, n)
    for r in range(runs):
        z = np.empty(n)
        _kernel._forward(params[r], True, d, n_hidden, n, np.zeros((n_hidden + 1, d)), np.zeros((n_hidden, d)), z)
        assert z.tolist() == logits[r].tolist()


def test_network_forward_pass_is_the_formula():
    network = neural_init(2, 6, 4, 2, seed=5)
    v, (W1, W2), (b1, b2) = network["input"], network["weights"], network["biases"]
    b1, b2 = b1 + 0.1, b2 - 0.2
    network["biases"] = [b1, b2]
    expected = np.einsum("roi,ri->ro", W2, np.maximum(np.einsum("roi,ri->ro", W1, v) + b1, 0.0)) + b2
    np.testing.assert_allclose(network_logits(network), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("n", [1, 4, 25])
def test_cholesky_solve_solves_positive_definite_systems(n):
    rng = np.random.default_rng(300 + n)
    B = rng.normal(size=(n, n))
    A = B @ B.T + n * np.eye(n)
    b = rng.normal(size=n)
    x = _kernel._cholesky_solve(A.copy(), b)
    np.testing.assert_allclose(A @ x, b, rtol=0, atol=1e-12 * np.abs(b).max() * n)


_RUN = textwrap.dedent("""
    import sys, numpy as np
    from egpo_core.presets import PRESETS
    out = {}
    for name, conventions, iterations in (("exact-neural-beta0.01", "reference", 300),
                                          ("exact-neural-beta0.01", "default", 300),
                                          ("sampled-neural-beta0.1", "reference", 50),
                                          ("sampled-tabular-beta0.01", "reference", 200)):
        result = PRESETS[name].run(conventions=conventions, iterations=iterations, progress=False)
        out[name + "/" + conventions] = result.values["duality_gap"]
    for name in ("exact-tabular-beta0.01", "sampled-tabular-beta0.01"):  # float32 games: the panels' vector code
        result = PRESETS[name].run(iterations=300, dtype="float32", progress=False,
                                   algorithms=["egpo", "oipo1", "oipo2", "nash_md", "nash_md_pg"])
        out[name + "/float32"] = result.values["duality_gap"]
    from egpo_core import simulate
    from egpo_core.games import random_games
    rng = np.random.default_rng(7)  # N = 37: panels padded; the pairwise opponent's uniform target
    result = simulate(random_games(2, 37, rng), rng.normal(size=(2, 37)), ["egpo", "nash_md_pg", "oipo2"],
                      beta=0.01, lr=0.02, iterations=300, dtype="float32", progress=False)
    out["random-37/float32"] = result.values["duality_gap"]
    np.savez(sys.argv[1], **out)
""")


@pytest.mark.slow
def test_a_simulation_compiled_for_a_generic_cpu_gives_the_same_bits(tmp_path):
    """The paper's neural settings (where last bits grow) with the kernel compiled for this CPU and
    for a generic x86-64 one (NUMBA_CPU_NAME=generic: SSE2 vectors, no FMA), numpy's AVX code paths
    off: identical gap curves. (glibc's exp/log keep this CPU's variant; see the kernel's docstring.)"""
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    base = {**os.environ, "OMP_NUM_THREADS": "1"}
    variants = {
        "native": {"NUMBA_CACHE_DIR": str(tmp_path / "cache-native")},
        "generic": {"NUMBA_CACHE_DIR": str(tmp_path / "cache-generic"), "NUMBA_CPU_NAME": "generic",
                    "NPY_DISABLE_CPU_FEATURES": ",".join(_dispatched_numpy_features())},
    }
    results = {}
    for name, env in variants.items():
        subprocess.run([sys.executable, str(script), str(tmp_path / f"{name}.npz")], env={**base, **env}, check=True,
                       timeout=900)
        results[name] = np.load(tmp_path / f"{name}.npz")
    for key in results["native"].files:
        native, generic = results["native"][key], results["generic"][key]
        assert np.isfinite(native).all() and native.shape == generic.shape, key
        assert native.tobytes() == generic.tobytes(), key


def _python_pairwise(values: list[float]) -> float:
    """numpy's pairwise summation order (its C code, ``np.sum``), in Python floats."""
    n = len(values)
    if n > 128:
        half = n // 2 - (n // 2) % 8
        return _python_pairwise(values[:half]) + _python_pairwise(values[half:])
    if n < 8:
        total = 0.0
        for v in values:
            total += v
        return total
    blocked = n - n % 8
    r = [sum(values[j:blocked:8][1:], values[j]) for j in range(8)]  # sum() adds left to right
    total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for v in values[blocked:]:
        total += v
    return total


def _python_log_softmax(row: list[float]) -> list[float]:
    """log π_i = (z_i − m) − log Σ_j exp(z_j − m), m = max z, with the C library's exp/log."""
    m = max(row)
    shifted = [z - m for z in row]
    log_total = math.log(_python_pairwise([math.exp(z) for z in shifted]))
    return [z - log_total for z in shifted]


@pytest.mark.parametrize("n", LENGTHS + [128, 129, 1000])
def test_log_softmax_rows_is_the_python_computation_bit_for_bit(n):
    rng = np.random.default_rng(700 + n)
    logits = rng.normal(size=(4, n)) * 10.0 ** rng.uniform(-3, 1.5, size=(4, 1))
    got = log_softmax_rows(logits)
    assert got.shape == logits.shape and got.dtype == np.float64
    for row, expected in zip(got.tolist(), logits.tolist()):
        assert row == _python_log_softmax(expected)
    np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0, rtol=0, atol=1e-13 * n)


def test_the_summation_order_of_log_softmax_matters_on_these_inputs():
    """The bit-for-bit check above could fail: summed in index order, log π differs on these inputs."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(50, 257)) * 3.0
    mismatched = 0
    for row, got in zip(logits.tolist(), log_softmax_rows(logits).tolist()):
        m = max(row)
        total = 0.0
        for z in row:
            total += math.exp(z - m)
        mismatched += [z - m - math.log(total) for z in row] != got
    assert mismatched > 5


def test_log_softmax_rows_keeps_leading_axes():
    logits = np.random.default_rng(4).normal(size=(2, 3, 5))
    assert log_softmax_rows(logits).tolist() == log_softmax_rows(logits.reshape(6, 5)).reshape(2, 3, 5).tolist()


def test_the_simulation_starts_from_log_softmax_rows(monkeypatch):
    """The kernel's log π_ref is log_softmax_rows(θ_ref), bit for bit (not scipy's log_softmax)."""
    from egpo_core import simulator

    seen = []

    def spy(P, logp_ref, *args, **kwargs):
        seen.append(logp_ref.copy())
        return simulator.build_kernel_inputs.__wrapped__(P, logp_ref, *args, **kwargs)

    spy.__wrapped__ = simulator.build_kernel_inputs
    monkeypatch.setattr(simulator, "build_kernel_inputs", spy)
    P = random_games(2, 6, 1)
    ref = np.random.default_rng(2).normal(size=(2, 6)) * 2.0
    config = SimulationConfig(algorithms=("online_ipo1",), beta=0.1, lr=0.5, iterations=2)
    for policy in ("tabular", "neural"):
        result = simulate(P, ref, dataclasses.replace(config, policy=policy), progress=False)
        assert np.isfinite(result.values["duality_gap"]).all()
        assert seen[-1].tobytes() == log_softmax_rows(ref).tobytes(), policy


_INPUTS_RUN = textwrap.dedent("""
    import sys, numpy as np
    from egpo_core import SimulationConfig, simulate
    from egpo_core.games import random_games
    P = random_games(3, 10, 11)
    ref = np.random.default_rng(12).normal(size=(3, 10)) * 2.0  # a non-uniform π_ref
    out = {}
    for policy, iterations in (("tabular", 200), ("neural", 150)):
        config = SimulationConfig(algorithms=("online_ipo1", "nash_md", "egpo"), beta=0.01, lr=0.01,
                                  iterations=iterations, policy=policy)
        out[policy] = simulate(P, ref, config, progress=False).values["duality_gap"]
    from numpy._core._multiarray_umath import __cpu_features__
    out["features_on"] = np.array(sorted(name for name, on in __cpu_features__.items() if on))
    np.savez(sys.argv[1], **out)
""")


def _dispatched_numpy_features() -> list[str]:
    """The SIMD targets numpy dispatches on (above its baseline) that this CPU has, the names
    ``NPY_DISABLE_CPU_FEATURES`` accepts (numpy 2.4: X86_V3, X86_V4, AVX512_ICL, AVX512_SPR; it
    ignores, with a warning, the single features AVX2, FMA3, … that these groups contain)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def test_simulations_do_not_depend_on_numpy_simd_dispatch(tmp_path):
    """Same bytes with numpy's dispatched SIMD targets on and off (checked off in the child)."""
    features = _dispatched_numpy_features()
    if not features:
        pytest.skip("numpy dispatches on no SIMD target above its baseline on this CPU: nothing to switch off")
    script = tmp_path / "run.py"
    script.write_text(_INPUTS_RUN)
    base = {**os.environ, "OMP_NUM_THREADS": "1"}
    base.pop("NPY_DISABLE_CPU_FEATURES", None)
    results = {}
    for name, extra in (("all", {}), ("fewer", {"NPY_DISABLE_CPU_FEATURES": ",".join(features)})):
        subprocess.run([sys.executable, str(script), str(tmp_path / f"{name}.npz")], env={**base, **extra},
                       check=True, timeout=300)
        results[name] = np.load(tmp_path / f"{name}.npz")
    assert set(features) <= set(results["all"]["features_on"].tolist())
    assert not set(features) & set(results["fewer"]["features_on"].tolist())  # switched off indeed
    for key in ("tabular", "neural"):
        full, fewer = results["all"][key], results["fewer"][key]
        assert np.isfinite(full).all() and full.shape == fewer.shape, key
        assert full.tobytes() == fewer.tobytes(), key
