"""Batched simulation of NLHF algorithms on preference games.

    >>> from egpo_core import simulate
    >>> res = simulate(P, ref_logits, algorithms=["egpo", "oipo1"], beta=0.01, lr=0.02,
    ...                iterations=5000, policy="tabular", gradient="exact", seed=0)
    >>> res.duality_gap["egpo"].shape        # (runs, iterations + 1); entry t is Gap_β(π_t)

Every (hyper-parameter setting × algorithm × game) trajectory runs in one compiled loop
(``egpo_core._kernel``), in parallel over trajectories. ``sweep`` runs a grid of (β, lr or η) × seeds
the same way. ``lr`` is the reference implementation's SGD learning rate; the mirror-descent step it
implies is η = 4·lr/(Nβ) (``egpo_core.stepsizes``).

Conventions (``conventions=``):
    "default"   — the correct behaviour: Nash-MD mixture c = ηβ, mixtures normalized over actions,
                  one independent network per run.
    "reference" — the paper's reference implementation: c = 2·lr/N; its sampled Nash-MD normalizes
                  the mixture over the runs axis instead of the actions; its neural runs share one
                  network (only the learned input differs per run), so the runs of an algorithm are
                  coupled through the summed gradient.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numba
import numpy as np
import pandas as pd
from scipy.special import log_softmax
from tqdm.auto import tqdm

from . import _kernel
from .algorithms import PAPER_ALGORITHMS, Algorithm, get_algorithm
from .games import network_logits, validate_preference_matrix
from .stepsizes import check_conventions, eta_from_lr, lr_from_eta, mixture_coefficient

METRICS = ("duality_gap", "exploitability", "kl_to_equilibrium", "average_duality_gap", "average_exploitability")

__all__ = ["simulate", "sweep", "SimulationResult", "METRICS", "neural_init"]


@dataclass
class SimulationResult:
    """Recorded metrics of a batch of simulations.

    Attributes:
        algorithms: algorithm names, in the order of the second axis of ``values``.
        configs: one row per hyper-parameter setting (beta, lr, eta, mixture, seed).
        steps: the recorded update counts t (0 … iterations).
        values: metric name → array (n_configs, n_algorithms, runs, n_steps).
        settings: the call's other options (policy, gradient, conventions, …), for provenance.
    """

    algorithms: tuple[str, ...]
    configs: pd.DataFrame
    steps: np.ndarray
    values: dict[str, np.ndarray]
    settings: dict = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return next(iter(self.values.values())).shape[2]

    def metric(self, name: str) -> dict[str, np.ndarray]:
        """Algorithm → array (runs, n_steps) for a single config, (n_configs, runs, n_steps) otherwise."""
        if name not in self.values:
            raise KeyError(f"metric {name!r} was not recorded; recorded: {', '.join(self.values)}")
        data = self.values[name]
        single = data.shape[0] == 1
        return {alg: (data[0, a] if single else data[:, a]) for a, alg in enumerate(self.algorithms)}

    @property
    def duality_gap(self) -> dict[str, np.ndarray]:
        """Gap_β(π_t) for each algorithm (see :meth:`metric` for the shape)."""
        return self.metric("duality_gap")

    @property
    def exploitability(self) -> dict[str, np.ndarray]:
        """max_y (Pπ_t)_y − ½, the exploitability in the original game."""
        return self.metric("exploitability")

    @property
    def kl_to_equilibrium(self) -> dict[str, np.ndarray]:
        """KL(π*_β ‖ π_t)."""
        return self.metric("kl_to_equilibrium")

    @property
    def average_duality_gap(self) -> dict[str, np.ndarray]:
        """Gap_β(π̄_t) of the average iterate π̄_t = Σ_{s≤t} π_s / (t + 1)."""
        return self.metric("average_duality_gap")

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy data: one row per (config, algorithm, run, step, metric) with columns
        algorithm, run, step, metric, value, config (index into ``configs``), beta, lr, eta, mixture, seed."""
        frames = []
        n_cfg, n_alg, runs, n_steps = next(iter(self.values.values())).shape
        idx_cfg, idx_alg, idx_run, idx_step = np.meshgrid(
            np.arange(n_cfg), np.arange(n_alg), np.arange(runs), np.arange(n_steps), indexing="ij"
        )
        base = {
            "algorithm": pd.Categorical.from_codes(idx_alg.ravel(), categories=list(self.algorithms)),
            "run": idx_run.ravel(),
            "step": self.steps[idx_step.ravel()],
        }
        for name, data in self.values.items():
            frame = pd.DataFrame(base)
            frame["metric"] = name
            frame["value"] = data.ravel()
            frame["config"] = idx_cfg.ravel()
            for column in ("beta", "lr", "eta", "mixture", "seed"):
                frame[column] = self.configs[column].to_numpy()[idx_cfg.ravel()]
            frames.append(frame)
        out = pd.concat(frames, ignore_index=True)
        out["metric"] = out["metric"].astype("category")
        return out

    def summary(self, metric: str = "duality_gap", threshold: float = 1e-6) -> pd.DataFrame:
        """Median final value over runs and the number of runs whose metric fell below ``threshold``
        (the form of SPEC §4's reference table), one row per (config, algorithm)."""
        data = self.values[metric]
        rows = []
        for c, a in itertools.product(range(data.shape[0]), range(data.shape[1])):
            curves = data[c, a]
            rows.append(
                {
                    **self.configs.iloc[c].to_dict(),
                    "algorithm": self.algorithms[a],
                    "median_final": float(np.median(curves[:, -1])),
                    "reached": int(np.sum(np.any(curves < threshold, axis=1))),
                    "runs": curves.shape[0],
                }
            )
        return pd.DataFrame(rows)

    def save(self, directory: str | os.PathLike, fmt: Literal["parquet", "csv"] = "parquet") -> Path:
        """Write ``metrics.<fmt>`` (tidy data) and ``run.json`` (settings, configs) atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        frame = self.to_dataframe()
        target = directory / f"metrics.{fmt}"
        with tempfile.NamedTemporaryFile(dir=directory, suffix=f".{fmt}.tmp", delete=False) as tmp:
            tmp_path = Path(tmp.name)
        if fmt == "parquet":
            frame.to_parquet(tmp_path, index=False)
        elif fmt == "csv":
            frame.to_csv(tmp_path, index=False)
        else:
            tmp_path.unlink()
            raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
        os.replace(tmp_path, target)
        meta = {
            "algorithms": list(self.algorithms),
            "configs": self.configs.to_dict(orient="records"),
            "settings": self.settings,
        }
        meta_tmp = directory / "run.json.tmp"
        meta_tmp.write_text(json.dumps(meta, indent=2, default=str))
        os.replace(meta_tmp, directory / "run.json")
        return target


def neural_init(
    runs: int, num_actions: int, hidden_dim: int = 10, depth: int = 3, seed: int = 0
) -> dict:
    """A random network per run in the format of ``games.reference_instances(...).network`` but with
    a leading runs axis: input v ~ N(0, 1), Xavier-normal weights, zero biases."""
    rng = np.random.default_rng(seed)
    dims = [hidden_dim] * depth + [num_actions]
    weights = [
        rng.normal(0.0, math.sqrt(2.0 / (dims[i] + dims[i + 1])), size=(runs, dims[i + 1], dims[i]))
        for i in range(depth)
    ]
    return {
        "input": rng.normal(size=(runs, hidden_dim)),
        "weights": weights,
        "biases": [np.zeros((runs, w.shape[1])) for w in weights],
    }


def _network_params(network: dict, runs: int, num_actions: int) -> tuple[np.ndarray, int, int]:
    """Flatten a network (shared: weights without runs axis; or per run) into (runs, npar)."""
    v = np.asarray(network["input"], dtype=np.float64)
    weights = [np.asarray(w, dtype=np.float64) for w in network["weights"]]
    biases = [np.asarray(b, dtype=np.float64) for b in network["biases"]]
    if v.shape[0] != runs:
        raise ValueError(f"network input has {v.shape[0]} runs, the games have {runs}")
    d = v.shape[1]
    if weights[-1].shape[-2] != num_actions:
        raise ValueError(f"network output size {weights[-1].shape[-2]} != number of actions {num_actions}")
    pieces = [v]
    for w, b in zip(weights, biases):
        w = np.broadcast_to(w, (runs,) + w.shape[-2:])
        b = np.broadcast_to(b, (runs,) + b.shape[-1:])
        pieces += [w.reshape(runs, -1), b]
    return np.concatenate(pieces, axis=1), d, len(weights) - 1


def _validate_games(P: np.ndarray, ref_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    P = validate_preference_matrix(P)
    if P.ndim == 2:
        P = P[None]
    given = np.asarray(ref_logits, dtype=np.float64)
    ref_logits = given[None] if given.ndim == 1 else given
    if ref_logits.shape != P.shape[:2]:
        raise ValueError(f"ref_logits has shape {given.shape}, expected (runs, N) = {P.shape[:2]} to match P")
    if not np.all(np.isfinite(ref_logits)):
        raise ValueError("ref_logits contains non-finite values")
    return P, ref_logits


def _trajectory_seed(seed: int, algorithm: str, run: int, config: int) -> np.uint64:
    """A stream per (seed, algorithm, run, config) that does not depend on what else is simulated."""
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(algorithm.encode()), run, config))
    return np.uint64(sequence.generate_state(1, dtype=np.uint64)[0])


def _run(
    P: np.ndarray,
    ref_logits: np.ndarray,
    algorithms: Sequence[Algorithm],
    configs: pd.DataFrame,
    *,
    iterations: int,
    policy: str,
    gradient: str,
    num_samples: int,
    conventions: str,
    init_logits: np.ndarray | None,
    network: dict | None,
    hidden_dim: int,
    depth: int,
    pair_sampling: str,
    magnet_period: int,
    record_every: int,
    metrics: Sequence[str],
    progress: bool,
) -> SimulationResult:
    runs, n = ref_logits.shape
    neural = policy == "neural"
    sampled = gradient == "sampled"
    reference = conventions == "reference"
    logp_ref = log_softmax(ref_logits, axis=-1)

    # --- initial parameters per run
    shared = False
    if neural:
        shared = reference
        if network is None:
            if shared:
                raise ValueError(
                    "conventions='reference' with policy='neural' needs the reference network (its runs share "
                    "one network): pass network=reference_instances(seed, policy='neural').network"
                )
            network = neural_init(runs, n, hidden_dim, depth, seed=int(configs["seed"].iloc[0]))
        params0, d, n_hidden = _network_params(network, runs, n)
        output = network_logits(network)
        if shared:
            if init_logits is not None:
                raise ValueError("init_logits cannot be used with a shared network: π_0 is the network's output")
            if not np.allclose(log_softmax(output, axis=-1), logp_ref, atol=1e-5):
                raise ValueError("with a shared network, ref_logits must be the network's output")
            logp_ref = log_softmax(output, axis=-1)
        else:
            # Start exactly at π_0 (= π_ref unless init_logits): shift the output bias per run.
            params0[:, -n:] += (ref_logits if init_logits is None else init_logits) - output
    else:
        d, n_hidden = 1, 0
        params0 = np.array(ref_logits if init_logits is None else init_logits, dtype=np.float64)
    if params0.shape[0] != runs or (not neural and params0.shape != (runs, n)):
        raise ValueError(f"init_logits has shape {params0.shape}, expected {(runs, n)}")

    # --- trajectories: config-major, then algorithm, then run
    rows = []
    for c, cfg in configs.iterrows():
        for alg in algorithms:
            for r in range(runs):
                rows.append((c, alg, r, cfg))
    K = len(rows)
    game = np.array([r for _, _, r, _ in rows], dtype=np.int64)
    params = np.ascontiguousarray(params0[game])
    loss = np.array([_kernel.LOSS_CODES[a.loss] for _, a, _, _ in rows], dtype=np.int64)
    opponent = np.array([_kernel.OPPONENT_CODES[a.opponent] for _, a, _, _ in rows], dtype=np.int64)
    anchor = np.array([_kernel.ANCHOR_CODES[a.anchor] for _, a, _, _ in rows], dtype=np.int64)
    scheme = np.array([_kernel.SCHEME_CODES[a.scheme] for _, a, _, _ in rows], dtype=np.int64)
    beta = np.array([cfg["beta"] for *_, cfg in rows], dtype=np.float64)
    lr = np.array([cfg["lr"] for *_, cfg in rows], dtype=np.float64)
    mixture = np.array([cfg["mixture"] for *_, cfg in rows], dtype=np.float64)
    weight = np.array([a.loss_weight(cfg["eta"] * cfg["beta"]) for _, a, _, cfg in rows], dtype=np.float64)
    period = np.full(K, magnet_period, dtype=np.int64)
    over_runs = np.array(
        [reference and sampled and a.loss == "ipo" and a.opponent == "mixture" for _, a, _, _ in rows], dtype=np.bool_
    )
    rng = np.array([_trajectory_seed(int(cfg["seed"]), a.name, r, c) for c, a, r, cfg in rows], dtype=np.uint64)

    # --- groups: coupled runs (shared network, mixture over runs) advance in lockstep
    # Threads take groups one at a time (chunk size 1), costliest first (extragradient steps twice).
    blocks = [list(range(b, b + runs)) for b in range(0, K, runs)]
    groups = [ks for ks in blocks if shared or over_runs[ks[0]]]
    groups += [[k] for ks in blocks if not (shared or over_runs[ks[0]]) for k in ks]
    groups.sort(key=lambda ks: -len(ks) * (1 + scheme[ks[0]]))
    members, group_ptr = [], [0]
    for group in groups:
        members += group
        group_ptr.append(len(members))
    members_arr = np.array(members, dtype=np.int64)
    group_ptr_arr = np.array(group_ptr, dtype=np.int64)

    # --- outputs
    steps = np.unique(np.append(np.arange(0, iterations, record_every), iterations))
    n_rec = steps.size
    with_extra = "exploitability" in metrics or "kl_to_equilibrium" in metrics
    out_gap = np.full((K, n_rec), np.nan)
    out_expl = np.full((K, n_rec) if with_extra else (1, 1), np.nan)
    out_kl = np.full((K, n_rec) if with_extra else (1, 1), np.nan)
    star = np.zeros((K, n) if with_extra else (1, 1))
    with_average = "average_duality_gap" in metrics or "average_exploitability" in metrics
    avg_sum = np.zeros((K, n) if with_average else (1, 1))
    out_avg_gap = np.full((K, n_rec) if with_average else (1, 1), np.nan)
    out_avg_expl = np.full((K, n_rec) if with_average else (1, 1), np.nan)
    if with_extra:
        from .equilibria import regularized_equilibrium

        for c, cfg in configs.iterrows():
            eq = regularized_equilibrium(P, logp_ref, float(cfg["beta"]))
            logp_star = log_softmax(eq.logits, axis=-1)
            for k, (ck, _, r, _) in enumerate(rows):
                if ck == c:
                    star[k] = logp_star[r]

    prev = np.zeros((K, n))
    magnet = np.ascontiguousarray(logp_ref[game])
    chunk = max(1, math.ceil(iterations / 100))
    with tqdm(total=iterations, disable=not progress, desc=f"{policy}/{gradient}", unit="step") as bar:
        for t0 in range(0, iterations, chunk):
            t1 = min(iterations, t0 + chunk)
            with numba.parallel_chunksize(1):
                _kernel.run_chunk(
                    t0, t1, record_every, iterations,
                    P, logp_ref, game, params, prev, magnet, rng,
                    loss, opponent, anchor, scheme, beta, lr, mixture, weight, period,
                    group_ptr_arr, members_arr, neural, d, n_hidden, shared, over_runs,
                    sampled, num_samples, pair_sampling == "policy",
                    star, with_extra, out_gap, out_expl, out_kl,
                    avg_sum, with_average, out_avg_gap, out_avg_expl,
                )
            bar.update(t1 - t0)

    values = {}
    shape = (len(configs), len(algorithms), runs, n_rec)
    recorded = {
        "duality_gap": out_gap, "exploitability": out_expl, "kl_to_equilibrium": out_kl,
        "average_duality_gap": out_avg_gap, "average_exploitability": out_avg_expl,
    }
    for name, data in recorded.items():
        if name in metrics:
            values[name] = data.reshape(shape)
    settings = {
        "iterations": iterations, "policy": policy, "gradient": gradient, "num_samples": num_samples,
        "conventions": conventions, "pair_sampling": pair_sampling, "magnet_period": magnet_period,
        "record_every": record_every, "runs": runs, "num_actions": n,
    }
    return SimulationResult(tuple(a.name for a in algorithms), configs.reset_index(drop=True), steps, values, settings)


def _configs(
    betas: Iterable[float], lrs: Iterable[float] | None, etas: Iterable[float] | None, seeds: Iterable[int],
    num_actions: int, conventions: str, mixture: float | None,
) -> pd.DataFrame:
    rows = []
    for beta in betas:
        if not beta > 0:
            raise ValueError(f"beta must be positive, got beta={beta!r}")
        steps = [("lr", x) for x in lrs] if lrs is not None else [("eta", x) for x in etas]
        for kind, value in steps:
            lr = value if kind == "lr" else lr_from_eta(value, beta, num_actions)
            eta = eta_from_lr(lr, beta, num_actions)
            c = mixture_coefficient(lr, beta, num_actions, conventions) if mixture is None else mixture
            if not 0.0 <= c <= 1.0:
                raise ValueError(f"the Nash-MD mixture coefficient must be in [0, 1], got {c!r}")
            for seed in seeds:
                rows.append({"beta": float(beta), "lr": float(lr), "eta": float(eta), "mixture": float(c), "seed": int(seed)})
    return pd.DataFrame(rows)


def _check_options(policy, gradient, iterations, num_samples, record_every, metrics, pair_sampling, magnet_period):
    if policy not in ("tabular", "neural"):
        raise ValueError(f"policy must be 'tabular' or 'neural', got {policy!r}")
    if gradient not in ("exact", "sampled"):
        raise ValueError(f"gradient must be 'exact' or 'sampled', got {gradient!r}")
    if not (isinstance(iterations, (int, np.integer)) and iterations >= 1):
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    if not (isinstance(num_samples, (int, np.integer)) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if not (isinstance(record_every, (int, np.integer)) and record_every >= 1):
        raise ValueError(f"record_every must be a positive integer, got {record_every!r}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or "duality_gap" not in metrics:
        raise ValueError(f"metrics must include 'duality_gap' and come from {METRICS}, got {tuple(metrics)!r}")
    if pair_sampling not in ("uniform", "policy"):
        raise ValueError(f"pair_sampling must be 'uniform' or 'policy', got {pair_sampling!r}")
    if magnet_period < 0:
        raise ValueError(f"magnet_period must be ≥ 0 (0: never reset), got {magnet_period!r}")


def sweep(
    P: np.ndarray,
    ref_logits: np.ndarray,
    algorithms: Sequence[str | Algorithm] = PAPER_ALGORITHMS,
    *,
    betas: Sequence[float],
    lrs: Sequence[float] | None = None,
    etas: Sequence[float] | None = None,
    seeds: Sequence[int] = (0,),
    iterations: int,
    policy: Literal["tabular", "neural"] = "tabular",
    gradient: Literal["exact", "sampled"] = "exact",
    num_samples: int = 100,
    conventions: str = "default",
    mixture: float | None = None,
    init_logits: np.ndarray | None = None,
    network: dict | None = None,
    hidden_dim: int = 10,
    depth: int = 3,
    pair_sampling: Literal["uniform", "policy"] = "uniform",
    magnet_period: int = 0,
    record_every: int = 1,
    metrics: Sequence[str] = ("duality_gap",),
    progress: bool = True,
) -> SimulationResult:
    """Run the grid betas × (lrs or etas) × seeds × algorithms × games as one batched computation.

    Exactly one of ``lrs`` (SGD rates of the reference implementation) and ``etas`` (mirror-descent
    steps; lr = ηβN/4) must be given. Other arguments as in :func:`simulate`.
    """
    if (lrs is None) == (etas is None):
        raise ValueError("give exactly one of lr/lrs (SGD learning rate) and eta/etas (mirror-descent step)")
    check_conventions(conventions)
    _check_options(policy, gradient, iterations, num_samples, record_every, metrics, pair_sampling, magnet_period)
    algs = [get_algorithm(a) for a in algorithms]
    if not algs:
        raise ValueError("algorithms is empty")
    P, ref_logits = _validate_games(P, ref_logits)
    configs = _configs(betas, lrs, etas, seeds, P.shape[1], conventions, mixture)
    return _run(
        P, ref_logits, algs, configs, iterations=int(iterations), policy=policy, gradient=gradient,
        num_samples=int(num_samples), conventions=conventions, init_logits=init_logits, network=network,
        hidden_dim=hidden_dim, depth=depth, pair_sampling=pair_sampling, magnet_period=int(magnet_period),
        record_every=int(record_every), metrics=tuple(metrics), progress=progress,
    )


def simulate(
    P: np.ndarray,
    ref_logits: np.ndarray,
    algorithms: Sequence[str | Algorithm] = PAPER_ALGORITHMS,
    *,
    beta: float,
    lr: float | None = None,
    eta: float | None = None,
    iterations: int,
    policy: Literal["tabular", "neural"] = "tabular",
    gradient: Literal["exact", "sampled"] = "exact",
    num_samples: int = 100,
    conventions: str = "default",
    seed: int = 0,
    mixture: float | None = None,
    init_logits: np.ndarray | None = None,
    network: dict | None = None,
    hidden_dim: int = 10,
    depth: int = 3,
    pair_sampling: Literal["uniform", "policy"] = "uniform",
    magnet_period: int = 0,
    record_every: int = 1,
    metrics: Sequence[str] = ("duality_gap",),
    progress: bool = True,
) -> SimulationResult:
    """Simulate ``algorithms`` on the games ``P`` (runs, N, N) from π_0 = π_ref (or ``init_logits``).

    Args:
        P: preference tensors, P[r, i, j] = P(i ≻ j) in game r (validated).
        ref_logits: logits of π_ref per game, (runs, N).
        algorithms: names from ``egpo_core.algorithms.ALGORITHMS`` (or Algorithm objects).
        beta: KL-regularization β > 0.
        lr: the reference implementation's SGD learning rate (η = 4·lr/(Nβ)); or give ``eta``.
        iterations: number of updates T; metrics are recorded for π_0 … π_T.
        policy: "tabular" (logits are the parameters) or "neural" (SPEC §4 network).
        gradient: "exact" (expectations over all pairs) or "sampled" (``num_samples`` draws per step).
        conventions: "default" or "reference" (see module docstring).
        seed: seeds the sampling streams (and a random network's initialization).
        mixture: Nash-MD mixture coefficient c; default ηβ ("default") or 2·lr/N ("reference").
        network: initial network weights for ``policy="neural"`` (e.g. ``reference_instances(...).network``).
        pair_sampling: sampled ipo-family pairs y, y' "uniform" or from π_t ("policy").
        magnet_period: MPO's magnet reset period (0: the magnet stays π_ref).
        record_every: record every k-th step (and always the last).
        metrics: subset of ``METRICS``: "duality_gap" (always), "exploitability", "kl_to_equilibrium",
            and the average iterate's "average_duality_gap", "average_exploitability".
        progress: show a tqdm progress bar.
    """
    if (lr is None) == (eta is None):
        raise ValueError("give exactly one of lr (SGD learning rate) and eta (mirror-descent step)")
    return sweep(
        P, ref_logits, algorithms, betas=[beta], lrs=None if lr is None else [lr], etas=None if eta is None else [eta],
        seeds=[seed], iterations=iterations, policy=policy, gradient=gradient, num_samples=num_samples,
        conventions=conventions, mixture=mixture, init_logits=init_logits, network=network, hidden_dim=hidden_dim,
        depth=depth, pair_sampling=pair_sampling, magnet_period=magnet_period, record_every=record_every,
        metrics=metrics, progress=progress,
    )
