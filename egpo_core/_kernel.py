"""The simulator's compiled inner loop (numba).

This is the fast path of the algorithm definitions in ``egpo_core.algorithms`` and
``egpo_core.losses``: the same losses, differentiated by hand with respect to the logits, chosen by
an algorithm's declared fields (never its name). Tests check that one kernel step equals each
algorithm's ``closed_form`` (exact gradients), that the sampled gradients are those of
``losses.sampled_loss`` in expectation, and that every accepted combination of the fields and of
the pair distribution gives the torch losses' gradients, exact and on the same draws
(tests/test_field_combinations.py).

Layout. A *trajectory* is one (algorithm, hyper-parameters, game) triple and owns a flat parameter
vector: the logits (tabular) or the network [v, (W, b) × hidden layers, W_out, b_out] (neural).
Trajectories are processed in *groups* that advance in lockstep; a group is one trajectory, except
under the reference implementation's conventions, where all runs of an algorithm form a group
because they share the network weights or normalize the Nash-MD mixture over runs.

Interface. :func:`run_chunk` takes the steps of a chunk, the named tuples of :class:`KernelInputs`
(Games, Trajectories, Groups, Policy, Gradient, Recording, State, Outputs; each field's dtype, shape
and meaning are documented where the tuple is defined; ``egpo_core._kernel_inputs`` builds them) and the
caller's thread count.

Speed. :func:`run_chunk`'s threads claim groups (or, where there are few, slices of a group's steps);
:func:`_run_group` allocates a group's work arrays (:class:`_Scratch`) and hands it to :func:`_advance_group`.
That function and everything it calls are compiled without numba's reference counting (``_nrt=False``; only
the sampled minimiser's solve allocates, and keeps it, ``_nrt=True``), so the array views taken at every step
cost no atomic increments and decrements. The products Pσ stream the transposed games (vector instructions
across the entries of Pσ); sampled gradients read their single entries P(y ≻ y′) from the same array (at
[y′, y]: no second copy of the games, half the cache). The draws keep the splitmix64 state in a local
variable and index with unsigned integers (numba adds no negative-index fix-up for those).

For every trajectory the kernel computes the gradient g = ∂L/∂z of the algorithm's loss with
respect to the logits z (closed form for exact expectations, sample averages otherwise) and
back-propagates it into the parameters; then plain SGD with rate lr. With exact gradients, with
ℓ = log π − log π_anchor, T = P(· ≻ σ) (optimistic: 2Pσ − Pπ_{t−1}) and w the loss weight:

    regression, uniform pairs (ipo): g = w·(4/N)·center(ℓ − T/β)
    regression, pairs ~ π (ipo2, or ipo with policy pairs): g = 4w·π ⊙ (ℓ − πᵀℓ − (T − πᵀT)/β)
    pg: g = −w·π ⊙ (A − πᵀA),   A = T − β ℓ

(both regression gradients are 4w·μ ⊙ (a − μᵀa), a = ℓ − T/β, for the pair weights μ; the
derivative through log-softmax adds nothing since Σ_y g_y = 0). The "pairwise" opponent's target
(P(y ≻ y′) − ½)/β has the gradient of σ = μ itself: T = Pμ, whose μ-mean is ½ exactly (P + Pᵀ = 1).

The "minimize" scheme (INPO; tabular only) replaces the step by the minimiser of the ordered-pair
loss (``Scheme`` in algorithms/base.py). Exact: the uniform-pair "ipo" step with weight 1, which lands on
it, log π_{t+1} ≐ (1 − ηβ) log π_t + ηβ log π_anchor + η Pπ_t (whatever the pair option). Sampled: the
logits become (1 − ηβ) log π_t + ηβ log π_anchor + f, f the minimum-norm solution of the pair graph's
normal equations (:func:`_ordered_pair_solve`) on the step's S ordered pairs (:func:`_ordered_pair_logits`).
With a history of H > 1 policies (MNPO, ``Algorithm.history_length``) log π_t in both is replaced by the
mixture Σ_j λ_j log π_{t−j} of the H last policies (π_t first; before π_0, π_0), kept per trajectory in a
ring (``State.history_logp``, slot t mod H holds log π_t), and the exact update is computed directly:
log π_{t+1} ≐ (1 − ηβ) Σ_j λ_j log π_{t−j} + ηβ log π_anchor + η Pπ_t (:func:`_history_logits`). H = 1 runs
the code above unchanged.

Arithmetic. Every CPU computes the same bits: no function is compiled with fast-math flags, so each
operation is rounded as written, in the order written, without fused multiply-adds (but for the float32
path's explicit ones below, each rounded once as IEEE 754 defines it); the long sums (the matrix–vector
products Pσ) add their terms in index order (:func:`_matvec`; the games are stored transposed
so that this order still runs as vector instructions, across the entries of Pσ); the minimiser's linear
solve is a fixed-order Cholesky solve, not LAPACK. What the kernel does not control: ``np.exp``/``np.log``
call the C library's exp/log, which glibc picks per CPU at load time (its FMA variant on every x86-64 CPU
with FMA, another on older ones, which gives other last bits). Its inputs are computed the same way outside
it: log π_ref by ``_kernel_inputs.log_softmax_rows`` (the C library's exp/log, a fixed summation order),
the network's forward pass element by element in a fixed order; the paper presets' draws are stored data
(``egpo_core/reference_data``), while other torch draws depend on torch's per-CPU ``normal_`` path. With
``SimulationConfig.dtype`` 'float32': exact gradients store each game as float32 panels of its antisymmetric
part A = P − ½ (upper triangle only: a quarter of float64's bytes per product) and compute
Pσ = ½(Σσ)·1 + Aσ with σ rounded to float32, float32 fused multiply-adds and short float32 sums (at most 32
terms) accumulated in float64, in a fixed order written as explicit 8-wide vector operations
(:func:`_panel_product`; a fused multiply-add is exactly rounded, so its bits are the same with or without FMA
hardware: LLVM calls the C library's fmaf where the CPU lacks it, far slower but the same bits),
and the softmaxes of the policies and the duality gap's normaliser take their exponentials from
:func:`_exp_shifted` (the kernel's own, 4-wide, IEEE operations and fused multiply-adds only; measured within
1 ulp of np.exp) instead of the C library: the same bits on every CPU, other bits than float64's; sampled
gradients read the games' entries in float32. Logits, gradients and metrics stay float64.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit_cache import CACHE
from .algorithms.base import Anchor, LossFamily, Opponent, Scheme

# Integer codes of the Algorithm fields: each member's position in its vocabulary (algorithms/base.py).
LOSS_CODES = {member: code for code, member in enumerate(LossFamily)}
OPPONENT_CODES = {member: code for code, member in enumerate(Opponent)}
ANCHOR_CODES = {member: code for code, member in enumerate(Anchor)}
SCHEME_CODES = {member: code for code, member in enumerate(Scheme)}

# numba reads these module globals as compile-time constants
_LOSS_IPO, _LOSS_IPO2, _LOSS_PG = (LOSS_CODES[f] for f in (LossFamily.IPO, LossFamily.IPO2, LossFamily.PG))
_OPP_MIXTURE, _OPP_OPTIMISTIC, _OPP_PAIRWISE = (OPPONENT_CODES[o] for o in (Opponent.MIXTURE, Opponent.OPTIMISTIC, Opponent.PAIRWISE))
_ANCHOR_REF, _ANCHOR_CURRENT = (ANCHOR_CODES[a] for a in (Anchor.REFERENCE, Anchor.CURRENT))
_SCHEME_EXTRAGRADIENT, _SCHEME_MINIMIZE = SCHEME_CODES[Scheme.EXTRAGRADIENT], SCHEME_CODES[Scheme.MINIMIZE]


# ---------------------------------------------------------------- the kernel's inputs
# run_chunk takes these named tuples (numba compiles a function of tuples like one of their fields):
# each value is set once by name where the inputs are built (egpo_core._kernel_inputs) and read once by
# name here, so no two arrays of the same type can trade places unseen. K trajectories, N actions,
# G games, R recorded steps; an unused output or metric input is a (1, 1) placeholder.


class Games(NamedTuple):
    """The preference games the trajectories play."""

    P: np.ndarray
    """float64 (G, N, N): each game's transpose, P[g, j, i] = P(i ≻ j) in game g, whose rows the products Pσ
    stream (:func:`_matvec`) and whose single entries the sampled gradients' draws read (float32 with
    ``SimulationConfig.dtype`` 'float32' and sampled gradients); with ``panels`` float32 (G, 1, S), each game's
    :func:`panel_layout` (exact gradients only)."""
    logp_ref: np.ndarray
    """float64 (G, N): log π_ref of game g."""
    panels: bool
    """``P`` holds each game's antisymmetric part A = P − ½ as float32 panels (:func:`panel_layout`), whose
    products are :func:`_panel_product`; set with exact gradients and ``SimulationConfig.dtype`` 'float32'."""


class Trajectories(NamedTuple):
    """What each trajectory runs: its game, its algorithm's codes and its hyper-parameters (length K each)."""

    game: np.ndarray
    """int64: the game (row of Games.P) trajectory k plays."""
    loss: np.ndarray
    """int64: the loss family, LOSS_CODES."""
    opponent: np.ndarray
    """int64: the opponent, OPPONENT_CODES."""
    anchor: np.ndarray
    """int64: the KL anchor, ANCHOR_CODES."""
    scheme: np.ndarray
    """int64: the update scheme, SCHEME_CODES."""
    beta: np.ndarray
    """float64: the regularization β."""
    lr: np.ndarray
    """float64: the SGD learning rate."""
    eta: np.ndarray
    """float64: the mirror-descent step η = 4·lr/(Nβ) (the "minimize" scheme's target η/2)."""
    mixture: np.ndarray
    """float64: the Nash-MD mixture coefficient c (used by the mixture opponent only)."""
    weight: np.ndarray
    """float64: the loss weight w = loss_weight(ηβ)."""
    magnet_period: np.ndarray
    """int64: the magnet reset period (0: the magnet stays π_ref)."""
    mixture_over_runs: np.ndarray
    """bool: the mixture opponent is normalized over the group's runs instead of the actions."""
    history_length: np.ndarray
    """int64: H, the past policies in the "minimize" scheme's anchor (1: π_t alone)."""
    history_weights: np.ndarray
    """float64 (K, H_max): λ_j = w_j/Σw of π_{t−j}, j < H (the rest unused)."""


class Groups(NamedTuple):
    """Trajectories that advance in lockstep: group i is members[group_ptr[i]:group_ptr[i + 1]]."""

    group_ptr: np.ndarray
    """int64 (groups + 1,): the start of each group in ``members``, then K."""
    members: np.ndarray
    """int64 (K,): trajectory indices, group after group (a group holds one algorithm)."""


class Policy(NamedTuple):
    """The parametrization of the policies."""

    neural: bool
    """The parameters are the MLP [v, (W, b) × hidden layers, W_out, b_out]; else the logits."""
    width: int
    """Width d of the network's input and hidden layers (1 for tabular)."""
    n_hidden: int
    """Number of hidden layers (0 for tabular)."""
    shared: bool
    """A group's runs share the network weights (summed gradients; the input v stays per run)."""


class Gradient(NamedTuple):
    """How the losses' gradients are estimated."""

    sampled: bool
    """Sample averages (else exact expectations)."""
    num_samples: int
    """Draws per step when ``sampled`` (ordered pairs per step for the "minimize" scheme)."""
    pair_from_policy: bool
    """The ipo loss draws its pairs from π_t (else uniformly); the "minimize" scheme ignores it (its
    exact minimiser does not depend on the pair weights, its sampled pairs are π_t's by definition)."""


class Recording(NamedTuple):
    """Which metrics are recorded, and when."""

    record_every: int
    """Record π_t when t % record_every == 0 (and always the final policy)."""
    total_steps: int
    """T, the run's last step (recorded in the last column)."""
    with_extra: bool
    """Record exploitability and KL(π*_β ‖ π) besides the duality gap."""
    star_logp: np.ndarray
    """float64 (K, N): log π*_β of trajectory k's game and β (with ``with_extra``)."""
    with_average: bool
    """Record the duality gap and exploitability of the average iterate."""


class State(NamedTuple):
    """What carries over from one step (and one chunk) to the next; updated in place."""

    params: np.ndarray
    """float64 (K, parameters): each trajectory's parameter vector."""
    prev_logp: np.ndarray
    """float64 (K, N): log π_{t−1} (the optimistic opponent's)."""
    magnet_logp: np.ndarray
    """float64 (K, N): the magnet's log-probabilities (anchor "magnet")."""
    rng: np.ndarray
    """uint64 (K,): each trajectory's splitmix64 state."""
    avg_sum: np.ndarray
    """float64 (K, N): Σ_{s≤t} π_s (with Recording.with_average)."""
    history_logp: np.ndarray
    """float64 (K, H_max, N): the ring of the last H log-policies, log π_s in slot s mod H (all slots
    log π_0 at t = 0); H_max = 0 (empty) when every H is 1."""


class Outputs(NamedTuple):
    """The recorded metrics, float64 (K, R) each, written in place."""

    gap: np.ndarray
    """Gap_β(π_t)."""
    exploitability: np.ndarray
    """max Pπ_t − ½ (with Recording.with_extra)."""
    kl_to_equilibrium: np.ndarray
    """KL(π*_β ‖ π_t) (with Recording.with_extra)."""
    average_gap: np.ndarray
    """Gap_β(π̄_t) of the average iterate (with Recording.with_average)."""
    average_exploitability: np.ndarray
    """max Pπ̄_t − ½ (with Recording.with_average)."""


class KernelInputs(NamedTuple):
    """Everything :func:`run_chunk` needs besides the chunk's steps, in its parameter order."""

    games: Games
    trajectories: Trajectories
    groups: Groups
    policy: Policy
    gradient: Gradient
    recording: Recording
    state: State
    outputs: Outputs


# ---------------------------------------------------------------- random numbers (splitmix64)
@njit(cache=CACHE, inline="always")
def _splitmix64(s):
    """One step of splitmix64 from the state s: (the next state, its 64-bit output). Each trajectory owns a
    stream (deterministic, thread-independent); hot loops keep the state in a local and store it back once."""
    s = s + np.uint64(0x9E3779B97F4A7C15)
    z = s
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return s, z ^ (z >> np.uint64(31))


@njit(cache=CACHE, inline="always")
def _uniform(z):
    """Uniform in [0, 1) from a 64-bit draw z: its top 53 bits."""
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=CACHE, inline="always")
def _index_pair(z, n):
    """Two independent uniform integers in [0, n) from one 64-bit draw z (multiply-shift on its 32-bit halves),
    as uint64 indices (:func:`_sample`)."""
    hi = ((z >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)
    lo = ((z & np.uint64(0xFFFFFFFF)) * np.uint64(n)) >> np.uint64(32)
    return hi, lo


@njit(cache=CACHE, _nrt=False)
def _next_uniform(state, k):
    """:func:`_uniform` of the next draw of trajectory k's stream (``state[k]`` advanced in place)."""
    state[k], z = _splitmix64(state[k])
    return _uniform(z)


# Below this many actions a branch-free scan of the cumulative sum beats building an alias table.
_SCAN_MAX = 32


@njit(cache=CACHE, _nrt=False)
def _build_sampler(w, table, stack):
    """Prepare ``table`` (2, N) for drawing from the distribution ∝ w.

    N ≤ 32: table[0] is the cumulative sum of w. Larger N: Walker's alias table (Vose's O(N)
    construction): table[0, i] is the probability of keeping column i, table[1, i] the column it
    otherwise yields; ``stack`` is int64 scratch of length N (small entries grow from the front,
    large ones from the back).
    """
    n = w.shape[0]
    total = 0.0
    for i in range(n):
        total += w[i]
        table[0, i] = total
    if n <= _SCAN_MAX:
        return
    n_small, n_large = 0, n
    for i in range(n):
        q = w[i] * n / total
        table[0, i] = q
        table[1, i] = i
        # without a branch: i goes to both free slots (n_small ≤ n_large − 1), the counts decide which is kept
        small = np.int64(q < 1.0)
        stack[n_large - 1] = i
        stack[n_small] = i
        n_small += small
        n_large -= 1 - small
    while n_small > 0 and n_large < n:
        n_small -= 1
        small = stack[n_small]
        large = stack[n_large]
        table[1, small] = large
        table[0, large] += table[0, small] - 1.0
        if table[0, large] < 1.0:
            n_large += 1
            stack[n_small] = large
            n_small += 1
    for j in range(n_large, n):  # left over from rounding: keep them
        table[0, stack[j]] = 1.0
    for j in range(n_small):
        table[0, stack[j]] = 1.0


@njit(cache=CACHE, _nrt=False)
def _sample(table, u):
    """One draw with a uniform u ∈ [0, 1) from a table of :func:`_build_sampler`, as a uint64 index
    (numba indexes with unsigned integers without its negative-index fix-up)."""
    n = table.shape[1]
    if n <= _SCAN_MAX:
        # The index of the first cumulative sum above u·total, capped at N − 1: the count of those at or below it
        # among the first N − 1 (the sums never decrease, so the last one adds to the count only if all do).
        target = u * table[0, n - 1]
        count = 0
        for i in range(n - 1):
            count += np.int64(table[0, i] <= target)
        return np.uint64(count)
    x = u * n
    i = min(np.int64(x), n - 1)
    alias = np.uint64(np.int64(table[1, i]))  # through int64: x86-64 converts a double to int64 in one instruction
    keep = np.uint64(x - i < table[0, i])
    return alias + (np.uint64(i) - alias) * keep  # i if kept, else its alias, without a branch


@njit(cache=CACHE, _nrt=False)
def _max(x):
    """max(x) as numpy (and numba's ``ndarray.max``) defines it: the first NaN if any, else the first largest entry."""
    m = x[0]
    if np.isnan(m):
        return m
    for i in range(1, x.shape[0]):
        v = x[i]
        if np.isnan(v):
            return v
        if v > m:
            m = v
    return m


# ---------------------------------------------------------------- the float32 path's exponential
# exp(d) = 2^k · p(r), with fma(a, b, c) = a·b + c rounded once (IEEE 754 fusedMultiplyAdd): k = d·log₂e
# rounded to the nearest integer (fma(d, log₂e, 1.5·2⁵²) − 1.5·2⁵², which also leaves k in the low bits),
# r = fma(−k, ln2_lo, fma(−k, ln2_hi, d)) (Cody–Waite: k·ln2_hi is exact, |r| ≤ ½ln2 + ε),
# p = 1 + fma(r², q(r), r), q the rest of e^r's degree-13 Taylor polynomial by Estrin's scheme (pairs
# fma(c_{i+1}, r, c_i), then fma(upper, r^(2^j), lower) in r², r⁴, r⁸; truncation below 2⁻⁵⁷ relative), 2^k
# built from its bits; 0 below EXP_FLOOR, NaN gives NaN.
_EXP_LANES = 4
_EXP_LOG2E = 1.4426950408889634
_EXP_SHIFTER = 6755399441055744.0  # 1.5·2⁵²
_EXP_LN2_HI = 6.93147180369123816490e-01  # ln 2 to 32 bits (its low 21 bits zero): k·ln2_hi exact for |k| < 2²¹
_EXP_LN2_LO = 1.90821492927058770002e-10  # ln 2 − ln2_hi
_EXP_TAYLOR = [1.0 / float(np.prod(np.arange(1, i + 1))) for i in range(14)]  # 1/i!, i = 0 … 13
EXP_FLOOR = -708.0
""":func:`_exp_shifted` gives 0 below this (np.exp: a subnormal ≤ 3.3e-308, or 0)."""


def _emit_exp(builder, d, kind, lanes):
    """LLVM IR for exp(d), d of ``kind`` (double or a vector of ``lanes`` doubles): IEEE operations and fused
    multiply-adds only (each exactly rounded: the C library's fma where the CPU has no FMA instruction), in the
    order of the comment above, so every CPU gives the same bits."""
    i64 = ir.IntType(64)
    int_kind = ir.VectorType(i64, lanes) if lanes else i64
    fused = cgutils.get_or_insert_function(builder.module, ir.FunctionType(kind, [kind] * 3),
                                           f"llvm.fma.v{lanes}f64" if lanes else "llvm.fma.f64")

    def const(value, of=kind):
        return ir.Constant(of, [value] * lanes if lanes else value)

    def fma(a, b, c):
        return builder.call(fused, [a, b, c])

    shifted = fma(d, const(_EXP_LOG2E), const(_EXP_SHIFTER))
    k = builder.fsub(shifted, const(_EXP_SHIFTER))
    r = fma(k, const(-_EXP_LN2_LO), fma(k, const(-_EXP_LN2_HI), d))
    r2 = builder.fmul(r, r)
    terms = [fma(const(_EXP_TAYLOR[i + 1]), r, const(_EXP_TAYLOR[i])) for i in range(2, 14, 2)]
    power = r2
    while len(terms) > 1:  # Estrin on c_2 … c_13: pairs of terms in powers r^2, r^4, r^8
        terms = [fma(terms[i + 1], power, terms[i]) if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
        power = builder.fmul(power, power)
    poly = builder.fadd(const(1.0), fma(r2, terms[0], r))
    shifter_bits = int(np.float64(_EXP_SHIFTER).view(np.int64))
    k_int = builder.sub(builder.bitcast(shifted, int_kind), const(shifter_bits, int_kind))
    scale = builder.bitcast(builder.shl(builder.add(k_int, const(1023, int_kind)), const(52, int_kind)), kind)
    below = builder.fcmp_ordered("<", d, const(EXP_FLOOR))
    return builder.select(below, const(0.0), builder.fmul(poly, scale))


def _exp_codegen(store):
    """The code of :func:`_exp_shifted` (``store``: also write the terms) or :func:`_exp_shifted_sum`."""

    def codegen(context, builder, signature, args):
        x = context.make_array(signature.args[0])(context, builder, args[0])
        shift = args[1]
        out = context.make_array(signature.args[2])(context, builder, args[2]) if store else None
        intp = context.get_value_type(types.intp)
        f64 = ir.DoubleType()
        vec = ir.VectorType(f64, _EXP_LANES)
        n = builder.extract_value(x.shape, 0)
        whole = builder.mul(builder.sdiv(n, ir.Constant(intp, _EXP_LANES)), ir.Constant(intp, _EXP_LANES))

        def pointer(arr, index, kind):
            return builder.bitcast(builder.gep(arr.data, [index]), kind.as_pointer())

        i32 = ir.IntType(32)
        one = builder.insert_element(ir.Constant(vec, ir.Undefined), shift, ir.Constant(i32, 0))
        splat = builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                       ir.Constant(ir.VectorType(i32, _EXP_LANES), [0] * _EXP_LANES))
        lanes = cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * _EXP_LANES))
        with cgutils.for_range_slice(builder, ir.Constant(intp, 0), whole, ir.Constant(intp, _EXP_LANES)) as (i, _):
            e = _emit_exp(builder, builder.fsub(builder.load(pointer(x, i, vec), align=8), splat), vec, _EXP_LANES)
            if store:
                builder.store(e, pointer(out, i, vec), align=8)
            builder.store(builder.fadd(builder.load(lanes), e), lanes)
        total4 = builder.load(lanes)
        lane = [builder.extract_element(total4, ir.Constant(i32, j)) for j in range(_EXP_LANES)]  # 4 lanes
        total = cgutils.alloca_once_value(builder, builder.fadd(builder.fadd(lane[0], lane[1]),
                                                                builder.fadd(lane[2], lane[3])))
        with cgutils.for_range_slice(builder, whole, n, ir.Constant(intp, 1)) as (i, _):
            e = _emit_exp(builder, builder.fsub(builder.load(pointer(x, i, f64)), shift), f64, 0)
            if store:
                builder.store(e, pointer(out, i, f64))
            builder.store(builder.fadd(builder.load(total), e), total)
        return builder.load(total)

    return codegen


@intrinsic
def _exp_shifted(typingctx, x, shift, out):
    """out_i = exp(x_i − shift) for every i (:func:`_emit_exp`; measured within 1 ulp of np.exp for x_i − shift ∈
    [−708, 709], 0 below: tests/test_kernel_float32.py) and returns Σ_i out_i: lane j of 4 adds the terms
    i ≡ j (mod 4) in index order up to the last multiple of 4, then ((l_0 + l_1) + (l_2 + l_3)), then the rest in
    index order. ``x``, ``out`` contiguous float64 of the same length. The float32 path's exponential: about a
    third of np.exp's time at N = 1000."""
    if not (x.layout == out.layout == "C" and x.dtype == out.dtype == types.float64):
        return None
    return types.float64(x, types.float64, out), _exp_codegen(True)


@intrinsic
def _exp_shifted_sum(typingctx, x, shift):
    """Σ_i exp(x_i − shift), the terms and the order of :func:`_exp_shifted` (nothing stored)."""
    if not (x.layout == "C" and x.dtype == types.float64):
        return None
    return types.float64(x, types.float64), _exp_codegen(False)


# ---------------------------------------------------------------- small dense helpers
@njit(cache=CACHE, _nrt=False)
def _softmax_pair(z, logp, p, own_exp=False):
    """log_softmax(z) into ``logp`` and softmax(z) into ``p`` with one exponential per entry: np.exp, the terms
    added in index order, or with ``own_exp`` :func:`_exp_shifted` and its order (the float32 path)."""
    m = _max(z)
    if own_exp:
        acc = _exp_shifted(z, m, p)
    else:
        acc = 0.0
        for i in range(z.shape[0]):
            p[i] = np.exp(z[i] - m)
            acc += p[i]
    lse = m + np.log(acc)
    inv = 1.0 / acc
    for i in range(z.shape[0]):
        logp[i] = z[i] - lse
        p[i] *= inv


@njit(cache=CACHE, _nrt=False)
def _matvec(PT, x, out):
    """out = P x from the transpose ``PT`` = Pᵀ, with every entry summed in one fixed order, the same on every CPU:

        out_i = (…((P_i0 x_0 + P_i1 x_1) + P_i2 x_2) + …) + P_{i,N−1} x_{N−1},

    each product rounded before it is added (no fused multiply-add, no reordering): the sums run as
    out += (Pᵀ)_j· x_j for j = 0, 1, … (rows streamed four at a time, every out_i in the order above,
    vectorized across i). A float32 ``PT`` is widened exactly (float64 products and sums)."""
    n = out.shape[0]
    for i in range(n):
        out[i] = 0.0
    j = 0
    while j + 4 <= n:  # four rows of Pᵀ per pass over out (a quarter of its loads and stores), same order
        r0, r1, r2, r3 = PT[j], PT[j + 1], PT[j + 2], PT[j + 3]
        x0, x1, x2, x3 = x[j], x[j + 1], x[j + 2], x[j + 3]
        for i in range(n):
            out[i] = (((out[i] + r0[i] * x0) + r1[i] * x1) + r2[i] * x2) + r3[i] * x3
        j += 4
    for r in range(j, n):
        row = PT[r]
        xr = x[r]
        for i in range(n):
            out[i] += row[i] * xr


# Panels: the float32 product through P = ½·1 1ᵀ + A, A = P − ½ antisymmetric (P + Pᵀ = 1), reading A's upper
# triangle only (half the bytes of P). Rows are taken four at a time (a panel); each panel's columns from the
# multiple of 8 at or below its first row on, in blocks of 8 columns, stored block after block, the four rows'
# 8 entries of a block one after another, zeros below the diagonal and past N: one stream, read once.
PANEL_ROWS = 4
PANEL_GROUP = 8
"""Panels whose column sums are added in float32 before they are widened into the float64 product (8: one
widening pass over the columns per 32 rows, 7 % less time per product at N = 1000 than 4)."""
_LANES = 8
_FLUSH = 8  # blocks summed in float32 before a lane is widened into its float64 sum
TINY = 2.0 ** -100
"""σ entries below this enter the float32 products as 0 (no subnormal products; an error ≤ N·2⁻¹⁰⁰)."""


def panel_layout(P: np.ndarray) -> np.ndarray:
    """float32 (G, 1, S): the panels of A = P − ½ of each game of ``P`` (G, N, N), read by :func:`_panel_product`.

    Panel p holds rows 4p … 4p + 3 of A's strict upper triangle (rows past N zero) from column
    c_p = ⌊4p/8⌋·8 to N̄ = ⌈N/8⌉·8 (entries on or below the diagonal and past N zero), as blocks of 8 columns,
    block after block, each block the 4 rows' 8 entries in row order: S = Σ_p 32·(N̄ − c_p)/8 ≈ 2N² bytes / 4.
    Uses only A's upper triangle (P + Pᵀ = 1 gives the rest)."""
    games, n = P.shape[0], P.shape[1]
    rows, cols = -(-n // PANEL_ROWS) * PANEL_ROWS, -(-n // _LANES) * _LANES
    row_of, column_of = [], []  # the (row, column) of A behind each stored entry, in storage order
    for row in range(0, rows, PANEL_ROWS):
        first = row // _LANES * _LANES
        shape = ((cols - first) // _LANES, PANEL_ROWS, _LANES)  # blocks, rows, columns in a block
        row_of.append(np.broadcast_to(row + np.arange(PANEL_ROWS)[:, None], shape).ravel())
        columns = first + np.arange(shape[0] * _LANES).reshape(shape[0], 1, _LANES)
        column_of.append(np.broadcast_to(columns, shape).ravel())
    r, c = np.concatenate(row_of), np.concatenate(column_of)
    upper = (r < c) & (c < n)  # strict upper triangle, inside the game
    flat = np.where(upper, r * n + c, 0)
    out = np.empty((games, 1, r.size), dtype=np.float32)
    for g in range(games):
        out[g, 0] = np.where(upper, np.asarray(P[g], dtype=np.float64).reshape(-1)[flat] - 0.5, 0.0)
    return out


@intrinsic
def _panel_rows(typingctx, F, offset, row, first, blocks, x32, out, phase, widen):
    """One panel (rows ``row`` … ``row`` + 3, its ``blocks`` blocks at ``offset`` in ``F``, columns from
    ``first``), with y_r = x32[row + r], C = x32[N̄:] (N̄ = len(x32)/2) the group's float32 column sums and every
    column c of the panel:

        t_c = fma(A_{row+1,c}, y_1, A_{row,c}·y_0) + fma(A_{row+3,c}, y_3, A_{row+2,c}·y_2)   (float32 ops)
        C_c = t_c (``phase`` 0, the group's first panel) or C_c + t_c (float32)

    (fma(a, b, c) = a·b + c rounded once to float32), then out[c] −= f64(C_c) for c from ``widen`` to N̄ (the
    group's last panel: ``widen`` its first column; else N̄, nothing), and returns (d_0, …, d_3),
    d_r = Σ_c A_{row+r,c}·x32[c]: column c goes to lane (c − first) mod 8; each lane accumulates in float32 over
    runs of 8 blocks (column order), s ← fma(A_{row+r,c}, x32[c], s) from s = 0, each run's sum widened and
    added to the lane's float64 sum; then ((l_0 + l_1) + (l_2 + l_3)) + ((l_4 + l_5) + (l_6 + l_7)). Written as
    explicit 8-wide vector operations (LLVM IR, no fast-math flags): every lane is rounded as IEEE arithmetic
    says, whatever vector width the CPU has, so the bits do not depend on it.
    ``F``, ``x32`` float32, ``out`` float64, all contiguous; (another dtype of ``F`` compiles to zeros, never run)."""
    sig = types.UniTuple(types.float64, PANEL_ROWS)(F, types.intp, types.intp, types.intp, types.intp, x32, out,
                                                    types.intp, types.intp)

    def codegen(context, builder, signature, args):
        zero64 = ir.Constant(ir.DoubleType(), 0.0)
        if signature.args[0].dtype != types.float32:
            return context.make_tuple(builder, signature.return_type, [zero64] * PANEL_ROWS)
        kinds = (signature.args[0], signature.args[5], signature.args[6])
        arrays = [context.make_array(kind)(context, builder, value) for kind, value in zip(kinds, (args[0], args[5], args[6]))]
        offset, row, first, blocks, phase, widen = args[1:5] + args[7:9]
        intp = context.get_value_type(types.intp)
        i32, f32, f64 = ir.IntType(32), ir.FloatType(), ir.DoubleType()
        vec32, vec64 = ir.VectorType(f32, _LANES), ir.VectorType(f64, _LANES)

        def const(value):
            return ir.Constant(intp, value)

        def address(which, index, kind):
            arr = arrays[which]
            item = cgutils.get_item_pointer2(context, builder, arr.data, cgutils.unpack_tuple(builder, arr.shape),
                                             cgutils.unpack_tuple(builder, arr.strides), kinds[which].layout, [index])
            return builder.bitcast(item, kind.as_pointer())

        cols = builder.sdiv(builder.extract_value(arrays[1].shape, 0), const(2))
        ys = []
        for r in range(PANEL_ROWS):
            y = builder.load(address(1, builder.add(row, const(r)), f32))
            one = builder.insert_element(ir.Constant(vec32, ir.Undefined), y, ir.Constant(i32, 0))
            ys.append(builder.shuffle_vector(one, ir.Constant(vec32, ir.Undefined),
                                             ir.Constant(ir.VectorType(i32, _LANES), [0] * _LANES)))
        fused = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec32, [vec32] * 3),
                                               f"llvm.fma.v{_LANES}f32")

        def fma(a, b, c):  # a·b + c rounded once (IEEE 754 fusedMultiplyAdd; libm's fmaf on CPUs without FMA)
            return builder.call(fused, [a, b, c])

        wide = [cgutils.alloca_once_value(builder, ir.Constant(vec64, [0.0] * _LANES)) for _ in range(PANEL_ROWS)]
        part = [cgutils.alloca_once_value(builder, ir.Constant(vec32, [0.0] * _LANES)) for _ in range(PANEL_ROWS)]

        def run(start, count, opens):  # blocks start … start + count − 1, summed in float32, then widened
            for r in range(PANEL_ROWS):
                builder.store(ir.Constant(vec32, [0.0] * _LANES), part[r])
            with cgutils.for_range(builder, count) as loop:
                block = builder.add(start, loop.index)
                column = builder.add(first, builder.mul(block, const(_LANES)))
                at = builder.add(offset, builder.mul(block, const(PANEL_ROWS * _LANES)))
                xs = builder.load(address(1, column, vec32), align=4)
                a = [builder.load(address(0, builder.add(at, const(_LANES * r)), vec32), align=4)
                     for r in range(PANEL_ROWS)]
                for r in range(PANEL_ROWS):
                    builder.store(fma(a[r], xs, builder.load(part[r])), part[r])
                lower = builder.fadd(fma(a[1], ys[1], builder.fmul(a[0], ys[0])),
                                     fma(a[3], ys[3], builder.fmul(a[2], ys[2])))
                sums = address(1, builder.add(cols, column), vec32)
                builder.store(lower if opens else builder.fadd(builder.load(sums, align=4), lower), sums, align=4)
            for r in range(PANEL_ROWS):
                builder.store(builder.fadd(builder.load(wide[r]), builder.fpext(builder.load(part[r]), vec64)), wide[r])

        runs = builder.sdiv(blocks, const(_FLUSH))
        with builder.if_else(builder.icmp_signed("==", phase, const(0))) as (opening, adding):
            for opens, branch in ((True, opening), (False, adding)):
                with branch:
                    with cgutils.for_range(builder, runs) as outer:
                        run(builder.mul(outer.index, const(_FLUSH)), const(_FLUSH), opens)
                    run(builder.mul(runs, const(_FLUSH)), builder.srem(blocks, const(_FLUSH)), opens)
        with cgutils.for_range_slice(builder, widen, cols, const(_LANES)) as (column, _):
            target = address(2, column, vec64)
            sums = builder.fpext(builder.load(address(1, builder.add(cols, column), vec32), align=4), vec64)
            builder.store(builder.fsub(builder.load(target, align=8), sums), target, align=8)
        dots = []
        for r in range(PANEL_ROWS):
            total = builder.load(wide[r])
            lane = [builder.extract_element(total, ir.Constant(i32, i)) for i in range(_LANES)]
            dots.append(builder.fadd(builder.fadd(builder.fadd(lane[0], lane[1]), builder.fadd(lane[2], lane[3])),
                                     builder.fadd(builder.fadd(lane[4], lane[5]), builder.fadd(lane[6], lane[7]))))
        return context.make_tuple(builder, signature.return_type, dots)

    return sig, codegen


@njit(cache=CACHE, _nrt=False)
def _panel_product(F, x, out, x32, acc):
    """out = P x = ½(Σ_j x_j)·1 + A x from the panels ``F`` of A (:func:`panel_layout`), float32 (S,).

    x32[:N̄] = x rounded to float32 (entries below :data:`TINY` as 0), zero past N; acc_i starts at ½Σ_j x_j
    (Σ in four float64 sums over j ≡ 0, 1, 2, 3 mod 4 up to the last multiple of 4, ((s_0 + s_1) + (s_2 + s_3)),
    then the rest in index order); then panel after panel (p = 0, 1, …, rows 4p … 4p + 3; :func:`_panel_rows`):
    the lower-triangle products A_{r,c}·x32_r of a group of :data:`PANEL_GROUP` panels (rows 32q … 32q + 31)
    are summed per column c in float32 (panel after panel, with fused multiply-adds) and −f64 of that sum is
    added to acc_c after the blocks of the group's last panel; after each panel, row 4p + r gets + d_r, its
    upper-triangle dot product. A fixed order of IEEE operations: the same bits on every CPU. ``x32`` float32
    scratch of length 2N̄ (σ rounded, then the group's column sums), ``acc`` float64 scratch of length N̄,
    N̄ = ⌈N/8⌉·8."""
    n = out.shape[0]
    cols = acc.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    whole = n // 4 * 4
    for j in range(0, whole, 4):
        s0 += x[j]
        s1 += x[j + 1]
        s2 += x[j + 2]
        s3 += x[j + 3]
    total = (s0 + s1) + (s2 + s3)
    for j in range(whole, n):
        total += x[j]
    half = 0.5 * total
    for j in range(n):
        x32[j] = np.float32(x[j]) if x[j] >= TINY else np.float32(0.0)
        acc[j] = half
    for j in range(n, cols):
        x32[j] = np.float32(0.0)
        acc[j] = 0.0
    offset = 0
    rows = -(-n // PANEL_ROWS) * PANEL_ROWS
    for row in range(0, rows, PANEL_ROWS):
        first = row // _LANES * _LANES
        blocks = (cols - first) // _LANES
        phase = row // PANEL_ROWS % PANEL_GROUP
        last = phase == PANEL_GROUP - 1 or row + PANEL_ROWS == rows
        widen = (row - phase * PANEL_ROWS) // _LANES * _LANES if last else cols
        d0, d1, d2, d3 = _panel_rows(F, offset, row, first, blocks, x32, acc, phase, widen)
        acc[row] += d0
        acc[row + 1] += d1
        acc[row + 2] += d2
        acc[row + 3] += d3
        offset += PANEL_ROWS * _LANES * blocks
    for j in range(n):
        out[j] = acc[j]


@njit(cache=CACHE, _nrt=False)
def _product(P, x, out, panels, x32, acc):
    """out = P x for a game as :class:`Games` stores it: :func:`_panel_product` with ``panels`` (``P`` (1, S)),
    else :func:`_matvec` (``P`` holds Pᵀ)."""
    if panels:
        _panel_product(P[0], x, out, x32, acc)
    else:
        _matvec(P, x, out)


# ---------------------------------------------------------------- policy parametrizations
@njit(cache=CACHE, _nrt=False)
def _forward(params, neural, d, n_hidden, n, acts, pre, z):
    """Logits z of a parameter vector: the logits themselves, or the MLP's output (each unit's sum
    bias + Σ_i w_i a_i in index order; each weight row read as its own view, whose indices need no
    negative-index fix-up)."""
    if not neural:
        for y in range(n):
            z[y] = params[y]
        return
    for i in range(d):
        acts[0, i] = params[i]
    off = d
    for layer in range(n_hidden):
        a = acts[layer]
        for o in range(d):
            w = params[off + o * d:off + o * d + d]
            acc = params[off + d * d + o]
            for i in range(d):
                acc += w[i] * a[i]
            pre[layer, o] = acc
            acts[layer + 1, o] = acc if acc > 0.0 else 0.0
        off += d * d + d
    a = acts[n_hidden]
    for y in range(n):
        w = params[off + y * d:off + y * d + d]
        acc = params[off + n * d + y]
        for i in range(d):
            acc += w[i] * a[i]
        z[y] = acc


@njit(cache=CACHE, _nrt=False)
def _backward(params, neural, d, n_hidden, n, acts, pre, g, grad, delta, delta_next):
    """grad = (∂z/∂params)ᵀ g: back-propagation of the logit gradient g (every δ_i summed over the units
    in index order; weight rows as views, as in :func:`_forward`)."""
    if not neural:
        for y in range(n):
            grad[y] = g[y]
        return
    off = d + n_hidden * (d * d + d)
    for i in range(d):
        delta[i] = 0.0
    a = acts[n_hidden]
    for y in range(n):
        gy = g[y]
        grad[off + n * d + y] = gy
        w = params[off + y * d:off + y * d + d]
        gw = grad[off + y * d:off + y * d + d]
        for i in range(d):
            gw[i] = gy * a[i]
            delta[i] += w[i] * gy
    for layer in range(n_hidden - 1, -1, -1):
        off = d + layer * (d * d + d)
        for o in range(d):
            if pre[layer, o] <= 0.0:
                delta[o] = 0.0
        for i in range(d):
            delta_next[i] = 0.0
        a = acts[layer]
        for o in range(d):
            do = delta[o]
            grad[off + d * d + o] = do
            w = params[off + o * d:off + o * d + d]
            gw = grad[off + o * d:off + o * d + d]
            for i in range(d):
                gw[i] = do * a[i]
                delta_next[i] += w[i] * do
        for i in range(d):
            delta[i] = delta_next[i]
    for i in range(d):
        grad[i] = delta[i]


# ---------------------------------------------------------------- logit gradients of the losses
@njit(cache=CACHE, _nrt=False)
def _exact_gradient(loss, policy_pairs, logp, pi, logp_anchor, target, target_mean, beta, weight, g):
    """∂L/∂z of the exact loss against the target potential T = ``target`` (module docstring):
    the regression with uniform pairs or, with ``policy_pairs``, pairs ~ π (``target_mean`` = πᵀT),
    or the policy gradient (``loss`` pg)."""
    n = logp.shape[0]
    if loss == _LOSS_PG:
        base = 0.0
        for y in range(n):
            g[y] = target[y] - beta * (logp[y] - logp_anchor[y])
            base += pi[y] * g[y]
        for y in range(n):
            g[y] = -weight * pi[y] * (g[y] - base)
    elif policy_pairs:
        mean = 0.0
        for y in range(n):
            mean += pi[y] * (logp[y] - logp_anchor[y])
        for y in range(n):
            g[y] = weight * 4.0 * pi[y] * (logp[y] - logp_anchor[y] - mean - (target[y] - target_mean) / beta)
    else:
        mean = 0.0
        for y in range(n):
            g[y] = logp[y] - logp_anchor[y] - target[y] / beta
            mean += g[y]
        mean /= n
        for y in range(n):
            g[y] = weight * 4.0 / n * (g[y] - mean)


@njit(cache=CACHE, _nrt=False)
def _sampled_gradient(
    loss, pairwise, optimistic, policy_pairs, num_samples, PT, logp, pi, logp_anchor,
    table_pi, table_sigma, table_prev, beta, weight, rng, k, g, ell,
):
    """∂L/∂z of the sampled loss (mean over ``num_samples`` draws), an unbiased estimate of the exact one.

    Per draw, in this order from trajectory k's stream: pg: y ~ π, y′ ~ σ (then y″ ~ π_{t−1} when
    ``optimistic``), advantage [P(y,y′) (optimistic: 2P(y,y′) − P(y,y″))] − β ℓ(y). Regression: y, y′ ~ π
    (``policy_pairs``) or uniform (one draw); target (P(y,y′) − ½)/β when ``pairwise``, else y″ ~ σ (then y‴ ~
    π_{t−1} when ``optimistic``) and [P(y,y″) − P(y′,y″)]/β (optimistic: twice it minus [P(y,y‴) −
    P(y′,y‴)]/β). ℓ = log π − log π_anchor is computed once into ``ell`` (N, overwritten). ``PT`` is the game's
    transpose: P(y, y′) = PT[y′, y].
    """
    n = logp.shape[0]
    for i in range(n):
        g[i] = 0.0
        ell[i] = logp[i] - logp_anchor[i]
    scale = 1.0 / num_samples
    inv_beta = 1.0 / beta
    coef = 2.0 * weight * scale
    state = rng[k]
    if loss == _LOSS_PG:
        weighted_scale = weight * scale
        total = 0.0
        for _ in range(num_samples):
            state, z = _splitmix64(state)
            y = _sample(table_pi, _uniform(z))
            state, z = _splitmix64(state)
            yp = _sample(table_sigma, _uniform(z))
            wins = PT[yp, y]
            if optimistic:
                state, z = _splitmix64(state)
                ypp = _sample(table_prev, _uniform(z))
                wins = 2.0 * wins - PT[ypp, y]
            adv = wins - beta * ell[y]
            g[y] -= adv * weighted_scale
            total += adv * weighted_scale
        for i in range(n):
            g[i] += total * pi[i]
        rng[k] = state
        return
    for _ in range(num_samples):
        state, z = _splitmix64(state)
        if policy_pairs:
            y = _sample(table_pi, _uniform(z))
            state, z = _splitmix64(state)
            yp = _sample(table_pi, _uniform(z))
        else:
            y, yp = _index_pair(z, n)
        if pairwise:
            t = (PT[yp, y] - 0.5) * inv_beta
        else:
            state, z = _splitmix64(state)
            ypp = _sample(table_sigma, _uniform(z))
            t = (PT[ypp, y] - PT[ypp, yp]) * inv_beta
            if optimistic:
                state, z = _splitmix64(state)
                yppp = _sample(table_prev, _uniform(z))
                t = 2.0 * t - (PT[yppp, y] - PT[yppp, yp]) * inv_beta
        r = coef * (ell[y] - ell[yp] - t)
        g[y] += r
        g[yp] -= r
    rng[k] = state


# ---------------------------------------------------------------- the ordered-pair minimiser ("minimize")
@njit(cache=CACHE, _nrt=False)
def _component_root(parent, i):
    """The root of i in the union-find forest ``parent`` (paths halved on the way)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=CACHE, _nrt=True)
def _ordered_pair_solve(winners, losers, half_eta, n):
    """The minimum-norm f ∈ ℝ^N minimising Σ_s (f(w_s) − f(l_s) − η/2)² over the pairs (w_s, l_s).

    Normal equations L f = b, L = Σ_s (e_w − e_l)(e_w − e_l)ᵀ (the pair graph's Laplacian, a pair y = y′
    adds nothing), b = (η/2) Σ_s (e_w − e_l). b sums to 0 on every connected set c of responses, so
    M f = b with M = L + Σ_c 1_c 1_cᵀ/|c| (positive definite) gives 1_cᵀ f = 1_cᵀ b = 0 on each: f solves
    L f = b and is centred on each connected set, which is the minimum-norm solution; a response in no
    pair (its own set) gets f = 0. One Cholesky solve (:func:`_cholesky_solve`: fixed order, no LAPACK),
    no rank threshold.
    """
    parent = np.arange(n)
    matrix = np.zeros((n, n))
    rhs = np.zeros(n)
    for s in range(winners.shape[0]):
        w, l = winners[s], losers[s]
        if w == l:
            continue
        matrix[w, w] += 1.0
        matrix[l, l] += 1.0
        matrix[w, l] -= 1.0
        matrix[l, w] -= 1.0
        rhs[w] += half_eta
        rhs[l] -= half_eta
        rw, rl = _component_root(parent, w), _component_root(parent, l)
        if rw != rl:
            parent[rw] = rl
    root = np.empty(n, dtype=np.int64)
    size = np.zeros(n)
    for i in range(n):
        root[i] = _component_root(parent, i)
        size[root[i]] += 1.0
    for i in range(n):
        for j in range(n):
            if root[i] == root[j]:
                matrix[i, j] += 1.0 / size[root[i]]
    return _cholesky_solve(matrix, rhs)


@njit(cache=CACHE, _nrt=True)
def _cholesky_solve(A, b):
    """x = A⁻¹ b for a symmetric positive definite A, by Cholesky A = C Cᵀ (C lower triangular),

        C_jj = √(A_jj − Σ_{k<j} C_jk²),   C_ij = (A_ij − Σ_{k<j} C_ik C_jk) / C_jj   (i > j),

    then C y = b and Cᵀ x = y by substitution; every sum runs over k in increasing order (no LAPACK,
    whose kernels differ between CPUs). ``A`` is overwritten with C in its lower triangle."""
    n = b.shape[0]
    for j in range(n):
        acc = A[j, j]
        for k in range(j):
            acc -= A[j, k] * A[j, k]
        A[j, j] = np.sqrt(acc)
        for i in range(j + 1, n):
            acc = A[i, j]
            for k in range(j):
                acc -= A[i, k] * A[j, k]
            A[i, j] = acc / A[j, j]
    y = np.empty(n)
    for i in range(n):
        acc = b[i]
        for k in range(i):
            acc -= A[i, k] * y[k]
        y[i] = acc / A[i, i]
    x = np.empty(n)
    for i in range(n - 1, -1, -1):
        acc = y[i]
        for k in range(i + 1, n):
            acc -= A[k, i] * x[k]
        x[i] = acc / A[i, i]
    return x


@njit(cache=CACHE, _nrt=False)
def _history_mixture(ring, weights, length, t, out):
    """``out`` = Σ_{j<H} λ_j log π_{t−j}, j in increasing order, from the ring (slot s mod H holds log π_s)."""
    n = out.shape[0]
    for y in range(n):
        out[y] = 0.0
    for j in range(length):
        slot = (t - j + length) % length
        for y in range(n):
            out[y] += weights[j] * ring[slot, y]


@njit(cache=CACHE, _nrt=False)
def _history_logits(mixed, logp_anchor, s, eta, beta, out):
    """``out`` = centered (1 − ηβ) Σ_j λ_j log π_{t−j} + ηβ log π_anchor + η Pπ_t (``mixed`` the history
    mixture, ``s`` = Pπ_t): the exact "minimize" update with a history (MNPO's closed form)."""
    n = out.shape[0]
    eta_beta = eta * beta
    mean = 0.0
    for y in range(n):
        out[y] = (1.0 - eta_beta) * mixed[y] + eta_beta * logp_anchor[y] + eta * s[y]
        mean += out[y]
    mean /= n
    for y in range(n):
        out[y] -= mean


@njit(cache=CACHE, _nrt=True)
def _ordered_pair_logits(k, PT, logp, pi, logp_anchor, eta, beta, num_samples, table_pi, stack, rng, winners,
                         losers, out):
    """``out`` = centered logits of the sampled "minimize" update of trajectory k: S = ``num_samples``
    ordered pairs of π_t, drawn from k's stream in the order of ``algorithms.inpo.ordered_pairs`` (all y ~ π_t,
    all y′ ~ π_t, then one uniform u per pair, y wins when u < P(y ≻ y′)), then
    (1 − ηβ) log π_t + ηβ log π_anchor + f with f = :func:`_ordered_pair_solve`; ``logp`` is log π_t there, or
    the history mixture Σ_j λ_j log π_{t−j} (the pairs are π_t's, ``pi``); ``PT`` the game's transpose,
    P(y ≻ y′) = PT[y′, y]. ``winners``, ``losers``: int64
    scratch of length S. Allocates (the solve's arrays), so compiled with numba's reference counting."""
    n = logp.shape[0]
    _build_sampler(pi, table_pi, stack)
    for s in range(num_samples):
        winners[s] = _sample(table_pi, _next_uniform(rng, k))
    for s in range(num_samples):
        losers[s] = _sample(table_pi, _next_uniform(rng, k))
    for s in range(num_samples):
        if not _next_uniform(rng, k) < PT[losers[s], winners[s]]:  # y′ won: swap
            y = winners[s]
            winners[s] = losers[s]
            losers[s] = y
    f = _ordered_pair_solve(winners, losers, 0.5 * eta, n)
    eta_beta = eta * beta
    mean = 0.0
    for y in range(n):
        out[y] = (1.0 - eta_beta) * logp[y] + eta_beta * logp_anchor[y] + f[y]
        mean += out[y]
    mean /= n
    for y in range(n):
        out[y] -= mean


# ---------------------------------------------------------------- metrics
@njit(cache=CACHE, _nrt=False)
def _duality_gap(logp, pi, s, logp_ref, beta, work, own_exp=False):
    """Gap_β(π) = 2β KL(π ‖ BR_β(π)), BR_β(π) ∝ π_ref e^{Pπ/β}, given s = Pπ (its normaliser's
    exponentials as in :func:`_softmax_pair`)."""
    n = logp.shape[0]
    for y in range(n):
        work[y] = logp_ref[y] + s[y] / beta
    m = _max(work)
    if own_exp:
        acc = _exp_shifted_sum(work, m)
    else:
        acc = 0.0
        for y in range(n):
            acc += np.exp(work[y] - m)
    lse = m + np.log(acc)
    kl = 0.0
    for y in range(n):
        kl += pi[y] * (logp[y] - work[y] + lse)
    return max(2.0 * beta * kl, 0.0)  # ≥ 0 in exact arithmetic; clip rounding


@njit(cache=CACHE, _nrt=False)
def _record(logp, pi, s, logp_ref, beta, star_logp, with_extra, out_gap, out_expl, out_kl, k, r, work, own_exp=False):
    """The metrics of π_t: duality gap (``own_exp``: :func:`_duality_gap`'s); exploitability max Pπ − ½ and
    KL(π*_β‖π) with ``with_extra``."""
    out_gap[k, r] = _duality_gap(logp, pi, s, logp_ref, beta, work, own_exp)
    if with_extra:
        out_expl[k, r] = _max(s) - 0.5
        kl_star = 0.0
        for y in range(logp.shape[0]):
            kl_star += np.exp(star_logp[k, y]) * (star_logp[k, y] - logp[y])
        out_kl[k, r] = kl_star


# ---------------------------------------------------------------- the loop
@intrinsic
def _fetch_add(typingctx, counters, index, increment):
    """counters[index] += increment as one atomic operation; returns the value before. ``counters`` int64,
    shared by the threads of a prange. Ordered acquire-release: what a thread wrote before it adds is seen by
    a thread that reads the sum after it (a group's state between the slices of :func:`run_chunk`)."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64 and index == types.int64
            and increment == types.int64):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", builder.gep(array.data, [args[1]]), args[2], "acq_rel")

    return types.int64(counters, index, increment), codegen


SLICED_BELOW = 4
"""Groups per thread below which :func:`run_chunk` cuts each group's steps into slices that any thread can
take: a few groups of unequal cost (the reference conventions' shared networks: one group per algorithm,
extragradient's twice the others') otherwise leave a thread idle for the end of every chunk."""
SLICES = 8
"""Slices per group and chunk (fewer where a slice would have under :data:`MIN_SLICE_STEPS` steps)."""
MIN_SLICE_STEPS = 16
"""A slice recomputes π_t, Pπ_t and the metrics of its first step (the previous slice's last): at least this
many steps keep that below a few per cent."""


@njit(cache=CACHE, parallel=True)
def run_chunk(
    t_start: int, t_end: int, games: Games, trajectories: Trajectories, groups: Groups, policy: Policy,
    gradient: Gradient, recording: Recording, state: State, outputs: Outputs, threads: int,
) -> None:
    """Advance every trajectory from step ``t_start`` to ``t_end`` (``state`` and ``outputs`` are
    updated in place); the arguments after the steps are the fields of :class:`KernelInputs`, then the
    caller's ``numba.get_num_threads()`` (read there: a compiled function that reads it cannot be cached).

    Metrics of π_t are stored at column t // record_every when t % record_every == 0, and those of
    the final policy (t = total_steps) in the last column. With ``with_average``, ``avg_sum``
    accumulates Σ_{s≤t} π_s and the gap and exploitability of the average iterate
    π̄_t = Σ_{s≤t} π_s / (t + 1) are recorded too. (A chunk's last step is recorded again, complete,
    by the next chunk.)

    The threads claim work (:func:`_fetch_add`) until none is left. With at least :data:`SLICED_BELOW`
    groups per thread, a claim is a group: one thread from the front, the others from the back. With fewer,
    each group's steps are cut into slices (:data:`SLICES`, :data:`MIN_SLICE_STEPS`), claimed from the front
    slice after slice (the groups of slice s, costliest first, then those of slice s + 1); a thread that
    claims a group's slice while another thread still runs its previous one waits for it. Which thread runs
    a group or slice changes no number (a group's arithmetic and random streams are its own, and slices
    are run in order as chunks are).
    """
    n_groups = groups.group_ptr.shape[0] - 1
    steps = t_end - t_start
    claimed = np.zeros(1, dtype=np.int64)
    slices = 1
    if threads > 1 and 2 <= n_groups < SLICED_BELOW * threads:
        slices = max(1, min(SLICES, steps // MIN_SLICE_STEPS))
    if slices > 1:
        done = np.zeros(n_groups, dtype=np.int64)  # slices finished, per group
        items = slices * n_groups
        for w in prange(n_groups):
            while True:
                item = _fetch_add(claimed, np.int64(0), np.int64(1))
                if item >= items:
                    break
                piece, gi = item // n_groups, item % n_groups
                while _fetch_add(done, gi, np.int64(0)) < piece:  # its previous slice runs on another thread
                    pass
                _run_group(gi, t_start + steps * piece // slices, t_start + steps * (piece + 1) // slices, games,
                           trajectories, groups, policy, gradient, recording, state, outputs)
                _fetch_add(done, gi, np.int64(1))
        return
    # numba's OpenMP layer gives each thread a contiguous block of a prange, which, the groups coming costliest
    # first, gave one thread the costly groups. Here each thread's first iteration claims groups until none is
    # left (its other iterations find none): the thread of iteration 0 from the front (costliest first), the
    # others from the back, so that two threads work on distant trajectories (rows of the state that share a
    # cache line, written at every step by two threads at once, cost more than the imbalance did). One counter
    # holds both counts, the front's in its low 32 bits, the back's above: a claim is valid while their sum,
    # before it, is below the number of groups.
    for w in prange(n_groups):
        front = w == 0
        while True:
            before = _fetch_add(claimed, np.int64(0), np.int64(1) if front else np.int64(1) << 32)
            ahead, behind = before & 0xFFFFFFFF, before >> 32
            if ahead + behind >= n_groups:
                break
            _run_group(ahead if front else n_groups - 1 - behind, t_start, t_end, games, trajectories, groups,
                       policy, gradient, recording, state, outputs)


@njit(cache=CACHE, _nrt=True)
def _run_group(gi, t_start, t_end, games, trajectories, groups, policy, gradient, recording, state, outputs):
    """Group ``gi``'s steps ``t_start`` … ``t_end`` (:func:`_advance_group`), with work arrays allocated here.
    (The sizes are read here, not in :func:`run_chunk`'s parallel loop: numba (0.68 still) drops stores into an
    array reached through a named tuple in a prange body itself (numba/numba#5872); those in a function it
    calls are kept.)"""
    group_ptr = groups.group_ptr
    members = groups.members
    g0 = group_ptr[gi]
    size = group_ptr[gi + 1] - g0
    n = games.logp_ref.shape[1]
    npar = state.params.shape[1]
    d = policy.width
    n_hidden = policy.n_hidden
    lanes = -(-n // _LANES) * _LANES if games.panels else 0  # N̄: _panel_product's scratch x32 holds 2N̄, acc N̄
    weights = npar - d if policy.shared else 0
    layers = max(n_hidden, 1)
    minimize = trajectories.scheme[members[g0]] == _SCHEME_MINIMIZE  # a group holds one algorithm
    solve = minimize and gradient.sampled  # the sampled minimiser; the exact one is the uniform-pair step
    ring = minimize and trajectories.history_length[members[g0]] > 1  # a history of policies in the anchor (MNPO)
    ring_n = n if ring else 0
    pairs = gradient.num_samples if solve else 0
    scratch = _Scratch(
        z=np.empty((size, n)), logp=np.empty((size, n)), pi=np.empty((size, n)), s=np.empty((size, n)),
        target=np.empty((size, n)), sigma=np.empty((size, n)), table_pi=np.empty((size, 2, n)),
        table_sigma=np.empty((size, 2, n)), table_prev=np.empty((size, 2, n)),
        stack=np.empty(n, dtype=np.int64),
        logp_half=np.empty((size, n)), grad_logits=np.empty((size, n)), grads=np.empty((size, npar)),
        half=np.empty((size, npar)), shared_sum=np.empty(weights),
        acts=np.zeros((size, n_hidden + 1, d)), pre=np.zeros((size, layers, d)),
        acts_h=np.zeros((size, n_hidden + 1, d)), pre_h=np.zeros((size, layers, d)),
        delta=np.empty(d), delta_next=np.empty(d), work=np.empty(n), avg_pi=np.empty(n),
        avg_logp=np.empty(n), avg_s=np.empty(n), x32=np.empty(2 * lanes, dtype=np.float32),
        acc=np.empty(lanes),
        mixed=np.empty((size, ring_n)), winners=np.empty(pairs, dtype=np.int64),
        losers=np.empty(pairs, dtype=np.int64),
    )
    _advance_group(t_start, t_end, g0, size, minimize, solve, ring, members, games, trajectories, policy,
                   gradient, recording, state, outputs, scratch)


class _Scratch(NamedTuple):
    """A group's work arrays (``size`` members m, N actions, ``npar`` parameters), allocated by :func:`run_chunk`."""

    z: np.ndarray
    """(size, N) logits."""
    logp: np.ndarray
    """(size, N) log π_t."""
    pi: np.ndarray
    """(size, N) π_t."""
    s: np.ndarray
    """(size, N) Pπ_t."""
    target: np.ndarray
    """(size, N) the loss's target potential."""
    sigma: np.ndarray
    """(size, N) the opponent σ_t."""
    table_pi: np.ndarray
    """(size, 2, N) sampler of π_t."""
    table_sigma: np.ndarray
    """(size, 2, N) sampler of σ_t."""
    table_prev: np.ndarray
    """(size, 2, N) sampler of π_{t−1}."""
    stack: np.ndarray
    """int64 (N) the alias tables' scratch."""
    logp_half: np.ndarray
    """(size, N) log π_{t+½} (extragradient)."""
    grad_logits: np.ndarray
    """(size, N) ∂L/∂z, or the new logits of a direct update."""
    grads: np.ndarray
    """(size, npar) parameter gradients."""
    half: np.ndarray
    """(size, npar) θ_{t+½}."""
    shared_sum: np.ndarray
    """(npar − d) the summed weight gradients of a shared network (else empty)."""
    acts: np.ndarray
    """(size, hidden layers + 1, d) the network's activations."""
    pre: np.ndarray
    """(size, max(hidden layers, 1), d) its pre-activations."""
    acts_h: np.ndarray
    """``acts`` of θ_{t+½}."""
    pre_h: np.ndarray
    """``pre`` of θ_{t+½}."""
    delta: np.ndarray
    """(d) back-propagated gradient."""
    delta_next: np.ndarray
    """(d) back-propagated gradient."""
    work: np.ndarray
    """(N) scratch."""
    avg_pi: np.ndarray
    """(N) π̄_t."""
    avg_logp: np.ndarray
    """(N) log π̄_t."""
    avg_s: np.ndarray
    """(N) Pπ̄_t."""
    x32: np.ndarray
    """float32 (N̄) :func:`_panel_product`'s scratch (empty without panels)."""
    acc: np.ndarray
    """(N̄) :func:`_panel_product`'s scratch (empty without panels)."""
    mixed: np.ndarray
    """(size, N) the history mixture (MNPO; else (size, 0))."""
    winners: np.ndarray
    """int64 (S) the sampled minimiser's winners (else empty)."""
    losers: np.ndarray
    """int64 (S) the sampled minimiser's losers (else empty)."""


@njit(cache=CACHE, _nrt=False)
def _advance_group(t_start, t_end, g0, size, minimize, solve, ring, members, games, trajectories, policy, gradient,
                   recording, state, outputs, scratch):
    """:func:`run_chunk`'s steps for the group of ``size`` trajectories members[g0:g0 + size], in lockstep.

    ``minimize``: the group's algorithm has the "minimize" scheme, ``solve``: sampled (the minimiser of the
    drawn pairs), ``ring``: a history of policies (MNPO). Compiled without numba's reference counting (as
    every function it calls but the sampled minimiser's): the views it takes of its arrays cost nothing.
    """
    P = games.P
    logp_ref_games = games.logp_ref
    panels = games.panels
    game = trajectories.game
    loss = trajectories.loss
    opponent = trajectories.opponent
    anchor = trajectories.anchor
    scheme = trajectories.scheme
    beta = trajectories.beta
    lr = trajectories.lr
    eta = trajectories.eta
    mixture = trajectories.mixture
    weight = trajectories.weight
    magnet_period = trajectories.magnet_period
    mixture_over_runs = trajectories.mixture_over_runs
    history_length = trajectories.history_length
    history_weights = trajectories.history_weights
    neural = policy.neural
    d = policy.width
    n_hidden = policy.n_hidden
    shared = policy.shared
    sampled = gradient.sampled
    num_samples = gradient.num_samples
    pair_from_policy = gradient.pair_from_policy
    record_every = recording.record_every
    total_steps = recording.total_steps
    with_extra = recording.with_extra
    star_logp = recording.star_logp
    with_average = recording.with_average
    params = state.params
    prev_logp = state.prev_logp
    magnet_logp = state.magnet_logp
    rng = state.rng
    avg_sum = state.avg_sum
    history_logp = state.history_logp
    out_gap = outputs.gap
    out_expl = outputs.exploitability
    out_kl = outputs.kl_to_equilibrium
    out_avg_gap = outputs.average_gap
    out_avg_expl = outputs.average_exploitability
    z = scratch.z
    logp = scratch.logp
    pi = scratch.pi
    s = scratch.s
    target = scratch.target
    sigma = scratch.sigma
    table_pi = scratch.table_pi
    table_sigma = scratch.table_sigma
    table_prev = scratch.table_prev
    stack = scratch.stack
    logp_half = scratch.logp_half
    grad_logits = scratch.grad_logits
    grads = scratch.grads
    half = scratch.half
    shared_sum = scratch.shared_sum
    acts = scratch.acts
    pre = scratch.pre
    acts_h = scratch.acts_h
    pre_h = scratch.pre_h
    delta = scratch.delta
    delta_next = scratch.delta_next
    work = scratch.work
    avg_pi = scratch.avg_pi
    avg_logp = scratch.avg_logp
    avg_s = scratch.avg_s
    x32 = scratch.x32
    acc = scratch.acc
    mixed = scratch.mixed
    winners = scratch.winners
    losers = scratch.losers
    n = logp_ref_games.shape[1]
    npar = params.shape[1]
    direct = solve or ring  # the update writes the new logits themselves
    for t in range(t_start, t_end + 1):
        final = t == total_steps
        # --- π_t, P(· ≻ π_t) and the metrics
        for m in range(size):
            k = members[g0 + m]
            _forward(params[k], neural, d, n_hidden, n, acts[m], pre[m], z[m])
            _softmax_pair(z[m], logp[m], pi[m], panels)
            _product(P[game[k]], pi[m], s[m], panels, x32, acc)
            if with_average and (t < t_end or final):
                for y in range(n):
                    avg_sum[k, y] += pi[m, y]
            if t % record_every == 0 or final:
                col = out_gap.shape[1] - 1 if final else t // record_every
                _record(logp[m], pi[m], s[m], logp_ref_games[game[k]], beta[k], star_logp,
                        with_extra, out_gap, out_expl, out_kl, k, col, work, panels)
                if with_average:
                    for y in range(n):
                        avg_pi[y] = avg_sum[k, y] / (t + 1)
                        avg_logp[y] = np.log(avg_pi[y])
                    _product(P[game[k]], avg_pi, avg_s, panels, x32, acc)
                    out_avg_gap[k, col] = _duality_gap(avg_logp, avg_pi, avg_s, logp_ref_games[game[k]],
                                                       beta[k], work, panels)
                    out_avg_expl[k, col] = _max(avg_s) - 0.5
            if t == 0:
                for y in range(n):
                    prev_logp[k, y] = logp[m, y]
            if ring:  # log π_t into slot t mod H; at t = 0 into every slot (policies before π_0 are π_0)
                for slot in range(history_length[k]):
                    if t == 0 or slot == t % history_length[k]:
                        for y in range(n):
                            history_logp[k, slot, y] = logp[m, y]
            if magnet_period[k] > 0 and t > 0 and t % magnet_period[k] == 0:
                for y in range(n):
                    magnet_logp[k, y] = logp[m, y]
        if t == t_end:
            break
        # --- the opponent σ_t: π_t, or the geometric mixture π_t^{1−c} π_ref^c
        for m in range(size):
            k = members[g0 + m]
            if opponent[k] != _OPP_MIXTURE:
                for y in range(n):
                    sigma[m, y] = pi[m, y]
        if opponent[members[g0]] == _OPP_MIXTURE:  # a group holds one algorithm
            _mixture_opponents(g0, size, members, game, mixture, mixture_over_runs, logp, logp_ref_games, sigma,
                               target, work)
        # --- gradient step(s); a group holds one algorithm, so its members share the scheme.
        # Extragradient: θ_{t+½} = θ_t − lr·∇L(θ_t; σ(π_t)), then θ_{t+1} = θ_t − lr·∇L(θ_t; σ(π_{t+½})),
        # σ(·) the declared opponent of that policy (itself, its mixture, optimistic against π_{t−1}).
        passes = 2 if scheme[members[g0]] == _SCHEME_EXTRAGRADIENT else 1
        for step_pass in range(passes):
            final_pass = step_pass == passes - 1
            for m in range(size):
                k = members[g0 + m]
                if direct:  # the new logits themselves, in grad_logits
                    logp_anchor = _anchor_logp(anchor[k], logp[m], logp_ref_games[game[k]], magnet_logp[k])
                    if ring:
                        _history_mixture(history_logp[k], history_weights[k], history_length[k], t, mixed[m])
                    if solve:
                        _ordered_pair_logits(k, P[game[k]], mixed[m] if ring else logp[m], pi[m], logp_anchor,
                                             eta[k], beta[k], num_samples, table_pi[m], stack, rng, winners, losers,
                                             grad_logits[m])
                    else:
                        _history_logits(mixed[m], logp_anchor, s[m], eta[k], beta[k], grad_logits[m])
                    continue
                _step_gradient(
                    k, loss[k], opponent[k], anchor[k], P[game[k]],
                    logp[m], pi[m], s[m], logp_ref_games[game[k]], magnet_logp[k], prev_logp[k], sigma[m],
                    step_pass == 0 and opponent[k] != _OPP_MIXTURE, target[m], table_pi[m], table_sigma[m],
                    table_prev[m], stack, beta[k], 1.0 if minimize else weight[k], sampled, num_samples,
                    pair_from_policy and not minimize, rng, grad_logits[m], work, panels, x32, acc,
                )
                _backward(params[k], neural, d, n_hidden, n, acts[m], pre[m], grad_logits[m], grads[m],
                          delta, delta_next)
            _share(grads, size, shared, d, shared_sum)
            for m in range(size):
                k = members[g0 + m]
                if direct:
                    for p in range(npar):
                        params[k, p] = grad_logits[m, p]
                    for y in range(n):
                        prev_logp[k, y] = logp[m, y]
                elif final_pass:
                    theta, grad, rate = params[k], grads[m], lr[k]  # rows as views: a loop that vectorizes
                    for p in range(npar):
                        theta[p] -= rate * grad[p]
                    for y in range(n):
                        prev_logp[k, y] = logp[m, y]
                else:  # the half step; its policy (or that policy's mixture) is the next pass's opponent
                    theta, grad, rate, theta_half = params[k], grads[m], lr[k], half[m]
                    for p in range(npar):
                        theta_half[p] = theta[p] - rate * grad[p]
                    _forward(half[m], neural, d, n_hidden, n, acts_h[m], pre_h[m], z[m])
                    _softmax_pair(z[m], logp_half[m], sigma[m], panels)
            if not final_pass and opponent[members[g0]] == _OPP_MIXTURE:
                _mixture_opponents(g0, size, members, game, mixture, mixture_over_runs, logp_half, logp_ref_games,
                                   sigma, target, work)


@njit(cache=CACHE, inline="always")
def _mixture_opponents(g0, size, members, game, mixture, mixture_over_runs, logp_now, logp_ref_games, sigma,
                       scratch, work):
    """σ[m] = the geometric mixture π^c ∝ π^{1−c} π_ref^c of the policy with log-probabilities
    ``logp_now[m]``, for each member m of a group of an algorithm with the mixture opponent.
    Normalized over actions, or, with ``mixture_over_runs`` (the reference implementation's sampled
    Nash-MD), over the group's runs. ``scratch`` (size, N) and ``work`` (N) are overwritten."""
    n = sigma.shape[1]
    for m in range(size):
        k = members[g0 + m]
        lref = logp_ref_games[game[k]]
        for y in range(n):
            work[y] = (1.0 - mixture[k]) * logp_now[m, y] + mixture[k] * lref[y]
        if mixture_over_runs[k]:
            for y in range(n):
                sigma[m, y] = work[y]  # log-weights, normalized over runs below
        else:
            _softmax_pair(work, scratch[m], sigma[m])
    if mixture_over_runs[members[g0]]:
        # The reference implementation's softmax over the runs axis: σ[m, y] = e^{w[m, y]} / Σ_runs e^{w[·, y]}
        # (the sampler then renormalizes each run's row).
        for y in range(n):
            col_max = -np.inf
            for m in range(size):
                col_max = max(col_max, sigma[m, y])
            total = 0.0
            for m in range(size):
                sigma[m, y] = np.exp(sigma[m, y] - col_max)
                total += sigma[m, y]
            for m in range(size):
                sigma[m, y] /= total


@njit(cache=CACHE, _nrt=False)
def _share(grads, size, shared, d, total):
    """Shared network weights (reference conventions): every run gets the sum of the group's weight
    gradients, Σ_m grads[m, p] = ((0 + grads[0, p]) + grads[1, p]) + … in member order (accumulated in
    ``total`` (npar − d), vectorized across p); the per-run input v (the first d entries) keeps its own gradient."""
    if not shared or size == 1:
        return
    weights = total.shape[0]  # the npar − d shared entries, from 0 (loops that vectorize)
    for p in range(weights):
        total[p] = 0.0
    for m in range(size):
        row = grads[m, d:]
        for p in range(weights):
            total[p] += row[p]
    for m in range(size):
        row = grads[m, d:]
        for p in range(weights):
            row[p] = total[p]


@njit(cache=CACHE, inline="always")
def _anchor_logp(anchor, logp, logp_ref, magnet):
    """log π_anchor: π_ref, π_t itself, or the magnet."""
    if anchor == _ANCHOR_REF:
        return logp_ref
    if anchor == _ANCHOR_CURRENT:
        return logp
    return magnet


@njit(cache=CACHE, _nrt=False)
def _step_gradient(
    k, loss, opponent, anchor, P, logp, pi, s, logp_ref, magnet, prev, sigma, sigma_is_pi, target,
    table_pi, table_sigma, table_prev, stack, beta, weight, sampled, num_samples, pair_from_policy, rng, g, work,
    panels, x32, acc,
):
    """Logit gradient of trajectory k's loss against the opponent distribution ``sigma``
    (``sigma_is_pi``: σ = π_t, whose preference vector s = Pπ_t is already known). ``P`` holds the game's
    transpose Pᵀ (the sampled gradients read P(y ≻ y′) at [y′, y]), or with ``panels`` its float32 panels (exact
    gradients only, :func:`_product`; ``x32``, ``acc`` its scratch); ``work`` (N) is overwritten."""
    n = logp.shape[0]
    logp_anchor = _anchor_logp(anchor, logp, logp_ref, magnet)
    optimistic = opponent == _OPP_OPTIMISTIC
    # ipo2's pairs are y, y′ ~ π_t by definition; ipo's are uniform unless pair_from_policy
    policy_pairs = loss == _LOSS_IPO2 or (loss == _LOSS_IPO and pair_from_policy)
    # the regression's pairwise opponent is y′ itself; the policy gradient's is z ~ π_t (σ = π_t)
    pairwise = opponent == _OPP_PAIRWISE and loss != _LOSS_PG
    if not sampled:
        if pairwise and not policy_pairs:  # σ = the uniform pair weights: T = P·(1/N), the row means
            if panels:
                for y in range(n):
                    work[y] = 1.0 / n
                _panel_product(P[0], work, target, x32, acc)
            else:
                for y in range(n):  # row sums of P, in index order, over the rows of Pᵀ
                    target[y] = 0.0
                for j in range(n):
                    for y in range(n):
                        target[y] += P[j, y]
                for y in range(n):
                    target[y] /= n
        elif sigma_is_pi:
            for y in range(n):
                target[y] = s[y]
        else:
            _product(P, sigma, target, panels, x32, acc)
        if optimistic:
            for y in range(n):
                work[y] = np.exp(prev[y])
            _product(P, work, g, panels, x32, acc)
            for y in range(n):
                target[y] = 2.0 * target[y] - g[y]
        target_mean = 0.5  # πᵀPπ = ½ for the pairwise target T = Pπ (P + Pᵀ = 1)
        if policy_pairs and not pairwise:
            target_mean = 0.0
            for y in range(n):
                target_mean += pi[y] * target[y]
        _exact_gradient(loss, policy_pairs, logp, pi, logp_anchor, target, target_mean, beta, weight, g)
        return
    if loss == _LOSS_PG or policy_pairs:
        _build_sampler(pi, table_pi, stack)
    if not pairwise:
        _build_sampler(sigma, table_sigma, stack)
    if optimistic:
        for y in range(n):
            work[y] = np.exp(prev[y])
        _build_sampler(work, table_prev, stack)
    _sampled_gradient(loss, pairwise, optimistic, policy_pairs, num_samples, P, logp, pi, logp_anchor,
                      table_pi, table_sigma, table_prev, beta, weight, rng, k, g, work)
