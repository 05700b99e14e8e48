"""The simulator kernel computes the same bits on every CPU.

* No kernel function is compiled with fast-math flags (reassociation would let the compiler pick a
  summation order by the CPU's vector width, contraction a fused multiply-add where the CPU has one).
* The matrix-vector products (``_matvec``, rows or transposed layout, float64 or float32 games)
  equal a pure-Python float64 sum in index order bit for bit (Python's floats round every product
  and sum, no FMA, no reordering), on random inputs of several lengths, odd ones too.
* The pieces that used to call BLAS/LAPACK are fixed-order too: the network's numpy forward pass
  equals the kernel's forward pass bit for bit, the Cholesky solve replaces LAPACK's.
* (slow) A whole simulation compiled for a generic x86-64 CPU (no AVX, no FMA) equals the one
  compiled for this CPU bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from egpo_core import _kernel
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


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matvec_is_the_index_order_sum_bit_for_bit_in_both_layouts(n, dtype):
    rng = np.random.default_rng(n)
    for _ in range(5):
        P, x = _awkward(rng, (n, n)).astype(dtype), _awkward(rng, n)
        expected = _python_matvec(P, x)  # a float32 P is widened exactly
        rows, columns = np.empty(n), np.empty(n)
        _kernel._matvec(P, x, rows, False)
        _kernel._matvec(np.ascontiguousarray(P.T), x, columns, True)
        assert rows.tolist() == expected
        assert columns.tolist() == expected


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
                    "NPY_DISABLE_CPU_FEATURES": "AVX512F,AVX512_SKX,AVX2,FMA3,F16C,AVX"},
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
