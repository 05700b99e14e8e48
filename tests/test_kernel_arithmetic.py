"""The simulator kernel computes the same bits on every CPU.

* No kernel function is compiled with fast-math flags (reassociation would let the compiler pick a
  summation order by the CPU's vector width, contraction a fused multiply-add where the CPU has one).
* The reductions are the documented fixed-order sums: ``_dot``, ``_matvec`` and ``_matvec_lower``
  equal a pure-Python float64 evaluation of the documented order bit for bit (Python's floats round
  every product and sum, no FMA, no reordering), on random inputs of several lengths, odd ones too.
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


def _python_dot(a, b, n: int) -> float:
    """The documented order of ``_kernel._dot``, in Python floats."""
    lanes = [0.0] * 8
    m = n - n % 8
    for j in range(0, m, 8):
        for lane in range(8):
            lanes[lane] += float(a[j + lane]) * float(b[j + lane])
    acc = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    for j in range(m, n):
        acc += float(a[j]) * float(b[j])
    return acc


def _awkward(rng: np.random.Generator, size) -> np.ndarray:
    """Values whose sums depend on the order: signs mixed, magnitudes over 12 decades."""
    return rng.normal(size=size) * 10.0 ** rng.uniform(-6, 6, size=size)


def _preference_matrix(rng: np.random.Generator, n: int) -> np.ndarray:
    P = np.full((n, n), 0.5)
    rows, cols = np.tril_indices(n, k=-1)
    P[rows, cols] = rng.random(rows.size)
    P[cols, rows] = 1.0 - P[rows, cols]
    return P


def test_no_kernel_function_is_compiled_with_fast_math():
    dispatchers = _dispatchers()
    assert len(dispatchers) >= 20  # the module's compiled functions were found
    flagged = {name: d.targetoptions["fastmath"] for name, d in dispatchers.items() if d.targetoptions.get("fastmath")}
    assert flagged == {}


@pytest.mark.parametrize("n", LENGTHS)
def test_dot_is_the_documented_fixed_order_sum_bit_for_bit(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        a, b = _awkward(rng, n), _awkward(rng, n)
        assert _kernel._dot(a, b, n) == _python_dot(a, b, n)
    # a float32 first argument is widened exactly (float64 products and sums)
    a32 = rng.random(n).astype(np.float32)
    b = rng.random(n)
    assert _kernel._dot(a32, b, n) == _python_dot(a32, b, n)


def test_the_dot_order_matters_on_these_inputs():
    """The bit-for-bit comparisons above could fail: on these inputs another order gives other bits."""
    rng = np.random.default_rng(0)
    differs = 0
    for _ in range(20):
        a, b = _awkward(rng, 257), _awkward(rng, 257)
        sequential = 0.0
        for x, y in zip(a.tolist(), b.tolist()):
            sequential += x * y
        differs += sequential != _kernel._dot(a, b, 257)
    assert differs >= 10


@pytest.mark.parametrize("n", [1, 3, 8, 10, 33, 100])
def test_matvec_rows_are_the_fixed_order_dot(n):
    rng = np.random.default_rng(100 + n)
    P, x, out = _awkward(rng, (n, n)), _awkward(rng, n), np.empty(n)
    _kernel._matvec(P, x, out)
    assert out.tolist() == [_python_dot(P[i], x, n) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 9, 10, 64, 101])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matvec_from_the_lower_triangle_is_its_documented_formula(n, dtype):
    rng = np.random.default_rng(200 + n)
    P = _preference_matrix(rng, n)
    x = rng.dirichlet(np.ones(n))
    Pd = P.astype(dtype)
    out, upper = np.empty(n), np.empty(n)
    _kernel._matvec_lower(Pd, x, out, upper)
    xs = x.tolist()
    low = [_python_dot(Pd[i], x, i) for i in range(n)]
    up = [0.0] * n
    for i in range(n):
        for j in range(i):
            up[j] += float(Pd[i, j]) * xs[i]
    expected, suffix = [0.0] * n, 0.0
    for i in range(n - 1, -1, -1):
        expected[i] = low[i] + 0.5 * xs[i] + suffix - up[i]
        suffix += xs[i]
    assert out.tolist() == expected
    # and it is P x for the game the triangle defines (P_ji = 1 − P_ij): x is a distribution, so
    # every entry is in [0, 1] and the float64 error is a few units of 1e-16
    game = np.tril(Pd.astype(np.float64), -1)
    game = game + np.triu(1.0 - game.T, 1) + 0.5 * np.eye(n)
    np.testing.assert_allclose(out, game @ x, rtol=0, atol=1e-14)


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
