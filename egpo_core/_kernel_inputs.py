"""The simulator kernel's inputs: from a run's settings to the named tuples of ``egpo_core._kernel``.

Trajectories are laid out config-major, then algorithm, then run (= game): trajectory
k = (c · algorithms + a) · runs + r. Each field of each tuple is set here once, by name.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from . import _kernel
from .algorithms import Algorithm, ConventionSwitches, MixtureNormalization, Scheme
from .config import SimulationConfig
from .stepsizes import eta_from_lr


def trajectory_seed(seed: int, algorithm: str, run: int, config: int) -> np.uint64:
    """A stream per (seed, algorithm, run, config) that does not depend on what else is simulated."""
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(algorithm.encode()), run, config))
    return np.uint64(sequence.generate_state(1, dtype=np.uint64)[0])


def _pairwise_sum(a: np.ndarray) -> np.ndarray:
    """Σ_i a[:, i] for each row of a (rows, n), in numpy's pairwise order (that of ``np.sum``, fixed
    in its C code): n < 8: a_0 + a_1 + … in index order; n ≤ 128: eight running sums
    r_j = a_j + a_{j+8} + a_{j+16} + … over the first n − n mod 8 terms, then
    ((r_0 + r_1) + (r_2 + r_3)) + ((r_4 + r_5) + (r_6 + r_7)), then the last n mod 8 terms in index
    order; n > 128: the sum of the first m = ⌊n/2⌋ − ⌊n/2⌋ mod 8 terms plus the sum of the rest.
    Elementwise float64 adds, each rounded: the same bits on every CPU."""
    n = a.shape[1]
    if n > 128:
        half = n // 2 - (n // 2) % 8
        return _pairwise_sum(a[:, :half]) + _pairwise_sum(a[:, half:])
    if n < 8:
        total = np.zeros(a.shape[0])
        for i in range(n):
            total = total + a[:, i]
        return total
    blocked = n - n % 8
    r = [a[:, j].copy() for j in range(8)]
    for start in range(8, blocked, 8):
        for j in range(8):
            r[j] = r[j] + a[:, start + j]
    total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for i in range(blocked, n):
        total = total + a[:, i]
    return total


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """log softmax along the last axis, the same bits on every CPU:

        m = max_i z_i,   s = Σ_i exp(z_i − m),   log π_i = (z_i − m) − log s,

    exp and log per entry by the C library (Python's ``math.exp``/``math.log``, the functions the
    kernel calls), not numpy's, which picks CPU-specific vector loops at run time (AVX-512 ones give
    other last bits); s in numpy's pairwise order (:func:`_pairwise_sum`). So the values equal
    ``scipy.special.log_softmax``'s bit for bit on CPUs where numpy's float64 exp/log are the C
    library's (all without AVX-512). ``logits`` (..., N) finite; returns float64 of the same shape.
    """
    z = np.asarray(logits, dtype=np.float64)
    rows = z.reshape(-1, z.shape[-1])
    shifted = rows - rows.max(axis=1, keepdims=True)
    exps = np.array([math.exp(v) for v in shifted.ravel().tolist()]).reshape(shifted.shape)
    log_total = np.array([math.log(v) for v in _pairwise_sum(exps).tolist()])
    return (shifted - log_total[:, None]).reshape(z.shape)


def _groups(runs: int, coupled: np.ndarray, scheme: np.ndarray) -> _kernel.Groups:
    """Coupled runs (shared network, mixture over runs) form one group per (config, algorithm) block,
    the others one group each. Threads take groups one at a time, costliest first (size × passes:
    extragradient steps twice)."""
    blocks = np.arange(coupled.size).reshape(-1, runs)
    groups = [list(ks) for ks in blocks if coupled[ks[0]]]
    groups += [[k] for ks in blocks if not coupled[ks[0]] for k in ks]
    extragradient = _kernel.SCHEME_CODES[Scheme.EXTRAGRADIENT]
    groups.sort(key=lambda ks: -len(ks) * (2 if scheme[ks[0]] == extragradient else 1))
    sizes = np.array([len(ks) for ks in groups], dtype=np.int64)
    return _kernel.Groups(
        group_ptr=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        members=np.array([k for ks in groups for k in ks], dtype=np.int64),
    )


def build_kernel_inputs(
    P: np.ndarray,
    logp_ref: np.ndarray,
    params0: np.ndarray,
    configs: pd.DataFrame,
    algorithms: list[Algorithm],
    config: SimulationConfig,
    *,
    width: int,
    n_hidden: int,
    shared: bool,
    n_recorded: int,
) -> _kernel.KernelInputs:
    """The kernel's inputs for every (setting × algorithm × game) trajectory, its state at step 0.

    Args:
        P: games (runs, N, N); logp_ref: log π_ref per game (runs, N).
        params0: initial parameter vector per run (runs, parameters).
        configs: one row per setting (beta, lr, eta, mixture, seed), as ``simulate`` tabulates them.
        algorithms: the algorithms, in result order.
        config: the run's configuration (policy, gradient, conventions, metrics, ...; its beta, lr and
            seed are those of ``configs``).
        width, n_hidden: the network's shape (1, 0 for tabular); shared: runs share the network weights.
        n_recorded: number of recorded steps R.
    """
    runs, n = logp_ref.shape
    n_cfg, n_alg = len(configs), len(algorithms)
    K = n_cfg * n_alg * runs
    cfg_of = np.repeat(np.arange(n_cfg), n_alg * runs)
    alg_of = np.tile(np.repeat(np.arange(n_alg), runs), n_cfg)
    game = np.tile(np.arange(runs, dtype=np.int64), n_cfg * n_alg)
    sampled = config.gradient == "sampled"
    single = config.dtype == "float32"
    switches = ConventionSwitches.decode(config.conventions)

    def per_algorithm(codes: dict, field: str) -> np.ndarray:
        return np.array([codes[getattr(a, field)] for a in algorithms], dtype=np.int64)[alg_of]

    beta = configs["beta"].to_numpy(dtype=np.float64)
    lr = configs["lr"].to_numpy(dtype=np.float64)
    # ηβ from lr (not from a given η), as in 0.1, so that the kernel's inputs stay bit for bit the same
    eta_beta = [eta_from_lr(r, b, n) * b for r, b in zip(lr.tolist(), beta.tolist())]
    weight = np.array([[a.loss_weight(eb) for a in algorithms] for eb in eta_beta], dtype=np.float64)
    # the history of the "minimize" scheme's anchor: H and λ per algorithm, a ring of H_max log-policies
    h_max = max(a.history_length for a in algorithms)
    lambdas = np.zeros((n_alg, h_max))
    for i, a in enumerate(algorithms):
        lambdas[i, :a.history_length] = a.history_lambdas
    over_runs = np.array([switches.normalization_for(a, sampled) is MixtureNormalization.RUNS for a in algorithms],
                         dtype=np.bool_)[alg_of]
    trajectories = _kernel.Trajectories(
        game=game,
        loss=per_algorithm(_kernel.LOSS_CODES, "loss"),
        opponent=per_algorithm(_kernel.OPPONENT_CODES, "opponent"),
        anchor=per_algorithm(_kernel.ANCHOR_CODES, "anchor"),
        scheme=per_algorithm(_kernel.SCHEME_CODES, "scheme"),
        beta=beta[cfg_of],
        lr=lr[cfg_of],
        eta=configs["eta"].to_numpy(dtype=np.float64)[cfg_of],
        mixture=configs["mixture"].to_numpy(dtype=np.float64)[cfg_of],
        weight=weight[cfg_of, alg_of],
        magnet_period=np.full(K, config.magnet_period, dtype=np.int64),
        mixture_over_runs=over_runs,
        history_length=np.array([a.history_length for a in algorithms], dtype=np.int64)[alg_of],
        history_weights=np.ascontiguousarray(lambdas[alg_of]),
    )

    seeds = configs["seed"].to_numpy()
    rng = np.array([trajectory_seed(int(seeds[c]), algorithms[a].name, int(r), int(c))
                    for c, a, r in zip(cfg_of, alg_of, game)], dtype=np.uint64)

    metrics = config.metrics
    with_extra = "exploitability" in metrics or "kl_to_equilibrium" in metrics
    with_average = "average_duality_gap" in metrics or "average_exploitability" in metrics
    star = np.zeros((K, n) if with_extra else (1, 1))
    if with_extra:
        from .equilibria import regularized_equilibrium

        for c, b in enumerate(configs["beta"]):
            eq = regularized_equilibrium(P, logp_ref, float(b))
            star[cfg_of == c] = log_softmax_rows(eq.logits)[game[cfg_of == c]]

    def recorded(needed: bool) -> np.ndarray:
        return np.full((K, n_recorded) if needed else (1, 1), np.nan)

    return _kernel.KernelInputs(
        games=_kernel.Games(P=_stored_games(P, sampled, single), logp_ref=logp_ref,
                            panels=single and not sampled),
        trajectories=trajectories,
        groups=_groups(runs, shared | over_runs, trajectories.scheme),
        policy=_kernel.Policy(neural=config.policy == "neural", width=width, n_hidden=n_hidden, shared=shared),
        gradient=_kernel.Gradient(sampled=sampled, num_samples=config.num_samples,
                                  pair_from_policy=config.pair_sampling == "policy"),
        recording=_kernel.Recording(record_every=config.record_every, total_steps=config.iterations,
                                    with_extra=with_extra, star_logp=star, with_average=with_average),
        state=_kernel.State(
            params=np.ascontiguousarray(params0[game]),
            prev_logp=np.zeros((K, n)),
            magnet_logp=np.ascontiguousarray(logp_ref[game]),
            rng=rng,
            avg_sum=np.zeros((K, n) if with_average else (1, 1)),
            history_logp=np.zeros((K, h_max if h_max > 1 else 0, n)),
        ),
        outputs=_kernel.Outputs(gap=np.full((K, n_recorded), np.nan), exploitability=recorded(with_extra),
                                kl_to_equilibrium=recorded(with_extra), average_gap=recorded(with_average),
                                average_exploitability=recorded(with_average)),
    )


def _stored_games(P: np.ndarray, sampled: bool, single: bool) -> np.ndarray:
    """The games as :attr:`~egpo_core._kernel.Games.P` holds them for the products Pσ: transposed (float32 with
    ``single`` and sampled gradients), or, with ``single`` and exact gradients, the float32 panels of A = P − ½
    (:func:`~egpo_core._kernel.panel_layout`)."""
    if single and not sampled:
        return _kernel.panel_layout(P)
    return np.ascontiguousarray(P.transpose(0, 2, 1), dtype=np.float32 if single else np.float64)
