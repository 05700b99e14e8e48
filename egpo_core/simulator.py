"""Batched simulation of NLHF algorithms on preference games.

    >>> from egpo_core import simulate, sweep, SimulationConfig
    >>> res = simulate(P, ref_logits, ["egpo", "oipo1"], beta=0.01, lr=0.02, iterations=5000, seed=0)
    >>> res.duality_gap["egpo"].shape        # (runs, iterations + 1); entry t is Gap_β(π_t)
    >>> config = SimulationConfig(beta=0.01, lr=0.02, iterations=5000)
    >>> grid = sweep(P, ref_logits, config, betas=[0.1, 0.01], seeds=[0, 1])
    >>> grid.duality_gap["egpo"].shape       # (configs, runs, iterations + 1), whatever the grid's size

A run is configured by one :class:`~egpo_core.config.SimulationConfig` (passed, or built from the
keyword options); the data (games, π_ref, an optional π_0 and network) are arguments. Every
(setting × algorithm × game) trajectory runs in one compiled loop (``egpo_core._kernel``, its
inputs built by ``egpo_core._kernel_inputs``), in parallel over trajectories. ``lr`` is the
reference implementation's SGD learning rate; the mirror-descent step it implies is
η = 4·lr/(Nβ) (``egpo_core.stepsizes``); whichever is given is stored exactly and the other derived.

Conventions (``conventions=``):
    "default"   — the correct behaviour: Nash-MD mixture c = ηβ, mixtures normalized over actions,
                  one independent network per run.
    "reference" — the paper's reference implementation: c = 2·lr/N; its sampled Nash-MD normalizes
                  the mixture over the runs axis instead of the actions; its neural runs share one
                  network (only the learned input differs per run), so the runs of an algorithm are
                  coupled through the summed gradient.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import numba
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import _kernel
from ._kernel_inputs import build_kernel_inputs, log_softmax_rows, trajectory_seed
from .algorithms import Algorithm, ConventionSwitches, LossFamily, MixtureRule
from .config import METRICS, SimulationConfig
from .executors import Chunk, check_executor, default_chunk_size, grid_key, kernel_threads, run_chunks, worker_threads
from .network import network_logits, network_parameters, neural_init
from .results import SimulationResult, load_result
from .stepsizes import eta_from_lr, lr_from_eta, mixture_coefficient
from .validation import check_count, check_logits, validate_preference_matrix

__all__ = ["simulate", "sweep", "SimulationConfig", "SimulationResult", "load_result", "METRICS"]

COMPILE_MESSAGE = "compiling the simulator kernel, ~20 s, once per machine"


def _logits(name: str, logits: Any, shape: tuple[int, int]) -> np.ndarray:
    """(runs, N) float64 finite logits; a (N,) vector stands for every run."""
    given = check_logits(logits, name)
    if given.shape == shape[1:]:
        return np.broadcast_to(given, shape).copy()
    if given.shape != shape:
        raise ValueError(f"{name} has shape {given.shape}, expected (runs, N) = {shape} (or (N,)) to match P")
    return given


def _validate_games(P: np.ndarray, ref_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    P = validate_preference_matrix(P)
    if P.ndim == 2:
        P = P[None]
    return P, _logits("ref_logits", ref_logits, P.shape[:2])


def _kernel_needs_compiling() -> bool:
    """True before the first call of a process when numba's on-disk cache holds no compiled kernel."""
    if _kernel.run_chunk.signatures:
        return False
    try:  # numba's cache index (private API); its loader returns {} when the source changed
        return not _kernel.run_chunk._cache._cache_file._load_index()
    except (AttributeError, OSError):
        return True


def _git(*args: str) -> str | None:
    """Output of a git command run in egpo_core's folder, or None outside a checkout (or without git)."""
    import subprocess
    from pathlib import Path

    try:
        done = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache  # once per process: simulations in a loop do not each start git or read package metadata
def _environment() -> dict[str, Any]:
    """egpo, Python, numpy, numba, torch versions (torch not imported), the git commit of a checkout
    and whether tracked files differ from it."""
    from importlib import metadata

    from .version import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    commit = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "egpo_version": __version__, "git_commit": commit, "git_modified": None if changes is None else bool(changes),
        "python": sys.version.split()[0], "numpy": np.__version__, "numba": numba.__version__, "torch": torch_version,
    }


def _provenance(call: str, games: dict[str, Any]) -> dict[str, Any]:
    """What produced a result: :func:`_environment`, the call (a command line or a Python call), the
    games' source, the start time (UTC, ISO 8601); ``wall_seconds`` is added when the run ends."""
    return {**_environment(), "call": call, "games": games,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _array_sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a, dtype=np.float64))  # its buffer itself: no copy of the bytes
    return digest.hexdigest()


def _config_table(points: list[SimulationConfig], num_actions: int, algorithms: list[Algorithm]) -> pd.DataFrame:
    """One row per setting: beta, lr, eta (the given one as given, the other derived), mixture, seed.
    The kernel's step is ``lr`` (the given one, or lr_from_eta of the given η)."""
    uses_mixture = any(a.opponent == "mixture" for a in algorithms)
    rows = []
    for p in points:
        lr = p.lr if p.lr is not None else lr_from_eta(p.eta, p.beta, num_actions)
        eta = p.eta if p.eta is not None else eta_from_lr(p.lr, p.beta, num_actions)
        c = mixture_coefficient(lr, p.beta, num_actions, p.conventions) if p.mixture is None else p.mixture
        if uses_mixture and not 0.0 <= c <= 1.0:
            rule = "ηβ" if ConventionSwitches.decode(p.conventions).mixture_rule is MixtureRule.ETA_BETA else "2·lr/N"
            raise ValueError(f"the Nash-MD mixture coefficient c = {rule} = {c:.4g} at beta={p.beta!r}, "
                             f"{'lr' if p.lr is not None else 'eta'}={p.lr if p.lr is not None else p.eta!r} is outside "
                             "[0, 1]: give a smaller step or mixture=")
        rows.append({"beta": p.beta, "lr": float(lr), "eta": float(eta), "mixture": float(c), "seed": p.seed})
    return pd.DataFrame(rows).astype({"seed": "int64"})


def _warn_divergence(values: np.ndarray, steps: np.ndarray, algorithms: Sequence[str], configs: pd.DataFrame) -> None:
    """One warning for the whole call, naming the first (setting, algorithm) whose gap became non-finite."""
    bad = ~np.isfinite(values)  # (configs, algorithms, runs, steps)
    if not bad.any():
        return
    where = np.argwhere(bad)
    c, a, r, s = where[np.argmin(where[:, 3])]  # the earliest recorded step
    others = int(np.any(bad, axis=(2, 3)).sum()) - 1
    row = configs.iloc[c]
    warnings.warn(
        f"{algorithms[a]} diverged (non-finite duality gap by step {int(steps[s])}, run {r}, beta={row['beta']:g}, "
        f"eta={row['eta']:g})" + (f" and {others} other (setting, algorithm) pair(s)" if others else "")
        + "; summary() counts the runs in 'diverged'",
        RuntimeWarning, stacklevel=4,  # the caller of simulate or sweep
    )


@dataclasses.dataclass(frozen=True)
class _GridData:
    """What every chunk of a grid shares: games, log π_ref, initial parameters per run, the settings
    table (its index: each setting's position in the whole grid), the configuration and the network's shape."""

    P: np.ndarray
    logp_ref: np.ndarray
    params0: np.ndarray
    configs: pd.DataFrame
    base: SimulationConfig
    width: int
    n_hidden: int
    shared: bool
    steps: np.ndarray

    def key(self) -> str:
        """What the numbers depend on, hashed (partial results of one grid are never read by another)."""
        env = _environment()
        return grid_key(self.P.tobytes(), self.logp_ref.tobytes(), self.params0.tobytes(), self.steps.tobytes(),
                        ",".join(self.configs.columns), self.configs.to_numpy(dtype=np.float64).tobytes(), json.dumps(self.base.to_dict(), default=str),
                        str(env["egpo_version"]), str(env["git_commit"]), f"{self.width},{self.n_hidden},{self.shared}")

    def describe(self, chunk: Chunk) -> str:
        """A chunk's settings (β, step, seed) and algorithms, for a failure's line."""
        step = "lr" if self.base.lr is not None else "eta"
        rows = self.configs.iloc[slice(*chunk.configs)]
        settings = [f"beta={r.beta:g} {step}={getattr(r, step):g} seed={r.seed}" for r in rows.itertuples()]
        if len(settings) > 3:
            settings = [settings[0], f"... ({len(settings)} settings)", settings[-1]]
        names = [a.name for a in self.base.algorithm_objects()[slice(*chunk.algorithms)]]
        return f"[{'; '.join(settings)}] x {','.join(names)}"


def _advance(inputs: _kernel.KernelInputs, iterations: int, done: Callable[[int, int], None]) -> None:
    """Run the kernel from step 0 to ``iterations`` in about 100 calls, ``done(t0, t1)`` after each (the
    progress bar); the state carries over, so the numbers are those of one call from 0 to ``iterations``."""
    chunk = max(1, math.ceil(iterations / 100))
    for t0 in range(0, iterations, chunk):
        t1 = min(iterations, t0 + chunk)
        with numba.parallel_chunksize(1):
            _kernel.run_chunk(t0, t1, *inputs, numba.get_num_threads())
        done(t0, t1)


def _recorded(inputs: _kernel.KernelInputs, metrics: Sequence[str], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The kernel's recorded metrics as arrays ``shape`` = (settings, algorithms, runs, steps), clipped at
    0: every metric recorded is ≥ 0 in exact arithmetic (a gap, a KL, an exploitability), and a value a
    rounding below 0 (−2e-16) is 0 (NaN and ∞ of a diverged run are kept)."""
    out = inputs.outputs
    recorded = {
        "duality_gap": out.gap, "exploitability": out.exploitability, "kl_to_equilibrium": out.kl_to_equilibrium,
        "average_duality_gap": out.average_gap, "average_exploitability": out.average_exploitability,
    }
    return {name: np.maximum(data.reshape(shape), 0.0) for name, data in recorded.items() if name in metrics}


def _compute_chunk(data: _GridData, chunk: Chunk) -> dict[str, np.ndarray]:
    """The metrics of one chunk of a grid (its settings × its algorithms × every run), as the whole grid
    computes them: each trajectory's random stream is keyed by its setting's index in the grid."""
    configs = data.configs.iloc[slice(*chunk.configs)]
    algorithms = data.base.algorithm_objects()[slice(*chunk.algorithms)]
    runs = data.logp_ref.shape[0]
    inputs = build_kernel_inputs(data.P, data.logp_ref, data.params0, configs.reset_index(drop=True), algorithms,
                                 data.base, width=data.width, n_hidden=data.n_hidden, shared=data.shared,
                                 n_recorded=data.steps.size)
    # trajectories are laid out setting, algorithm, run (egpo_core._kernel_inputs); key by the grid's index
    inputs.state.rng[:] = [trajectory_seed(int(seed), a.name, r, int(index))
                           for index, seed in zip(configs.index, configs["seed"]) for a in algorithms for r in range(runs)]
    with kernel_threads(worker_threads()), numba.parallel_chunksize(1):  # one call: no progress bar to feed
        _kernel.run_chunk(0, data.base.iterations, *inputs, numba.get_num_threads())
    return _recorded(inputs, data.base.metrics, (len(configs), len(algorithms), runs, data.steps.size))


def _run(
    P: np.ndarray,
    ref_logits: np.ndarray,
    points: list[SimulationConfig],
    axes: dict[str, list] | None,
    *,
    init_logits: np.ndarray | None,
    network: dict | None,
    progress: bool,
    call: str,
    chunking: dict[str, Any] | None = None,
) -> SimulationResult:
    """Run the settings ``points``: in this process in one batch, or (``chunking``: executor,
    chunk_size, partial_dir) in chunks (:func:`egpo_core.executors.run_chunks`), with the same numbers."""
    base = points[0]
    started = time.perf_counter()
    runs, n = ref_logits.shape
    stamp = _provenance(call, {"source": "arrays", "sha256": _array_sha256(P, ref_logits)})
    algorithms = base.algorithm_objects()
    configs = _config_table(points, n, algorithms)
    logp_ref = log_softmax_rows(ref_logits)
    if init_logits is not None:
        init_logits = _logits("init_logits", init_logits, (runs, n))

    # --- initial parameters per run
    shared = False
    if base.policy == "neural":
        shared = ConventionSwitches.decode(base.conventions).shared_network
        if network is None:
            if shared:
                raise ValueError(
                    "conventions='reference' with policy='neural' needs the reference network (its runs share "
                    "one network): pass network=reference_instances(seed, policy='neural').network"
                )
            network = neural_init(runs, n, base.hidden_dim, base.depth, seed=int(configs["seed"].iloc[0]))
        params0, d, n_hidden = network_parameters(network, runs, n)
        output = network_logits(network)
        if shared:
            if init_logits is not None:
                raise ValueError("init_logits cannot be used with a shared network: π_0 is the network's output")
            if not np.allclose(log_softmax_rows(output), logp_ref, atol=1e-5):
                raise ValueError("with a shared network, ref_logits must be the network's output")
            logp_ref = log_softmax_rows(output)
        else:
            # Start exactly at π_0 (= π_ref unless init_logits): shift the output bias per run.
            params0[:, -n:] += (ref_logits if init_logits is None else init_logits) - output
    else:
        d, n_hidden = 1, 0
        params0 = np.array(ref_logits if init_logits is None else init_logits, dtype=np.float64)

    iterations, metrics = base.iterations, base.metrics
    steps = np.unique(np.append(np.arange(0, iterations, base.record_every), iterations))
    shape = (len(configs), len(algorithms), runs, steps.size)
    if chunking is not None:
        data = _GridData(P, logp_ref, params0, configs, base, d, n_hidden, shared, steps)
        if progress and _kernel_needs_compiling():
            print(COMPILE_MESSAGE + " (in every worker process)", file=sys.stderr, flush=True)
        values = run_chunks(_compute_chunk, data, grid=shape[:2], describe=data.describe, key=data.key(),
                            progress=progress, **chunking)
        executor = chunking["executor"]
        stamp["chunks"] = {"chunk_size": chunking["chunk_size"],
                           "executor": None if executor is None else type(executor).__name__}
    else:
        inputs = build_kernel_inputs(P, logp_ref, params0, configs, algorithms, base, width=d, n_hidden=n_hidden,
                                     shared=shared, n_recorded=steps.size)
        # A first call that compiles says so, and the bar starts after it, so its rate is the run's own.
        if progress and _kernel_needs_compiling():
            print(COMPILE_MESSAGE, file=sys.stderr, flush=True)
        bar = None

        def done(t0: int, t1: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=iterations, initial=t1, disable=not progress,
                           desc=f"{base.policy}/{base.gradient}", unit="step")
            else:
                bar.update(t1 - t0)

        _advance(inputs, iterations, done)
        if bar is not None:
            bar.close()
        values = _recorded(inputs, metrics, shape)

    names = tuple(a.name for a in algorithms)
    _warn_divergence(values["duality_gap"], steps, names, configs)
    settings = {**base.to_dict(), "runs": runs, "num_actions": n}
    if axes is not None:
        settings["axes"] = axes
    stamp["wall_seconds"] = round(time.perf_counter() - started, 3)
    return SimulationResult(names, _shown_configs(configs, algorithms), steps, values, settings, stamp)


def _shown_configs(configs: pd.DataFrame, algorithms: list[Algorithm]) -> pd.DataFrame:
    """The settings table of a result: the Nash-MD mixture c is NaN (not shown) when no algorithm run
    mixes (the kernel still receives the derived c, which only the mixture opponents read)."""
    if any(a.opponent == "mixture" for a in algorithms):
        return configs
    return configs.assign(mixture=np.nan)


def _base_config(config: SimulationConfig | Sequence[str | Algorithm] | str | None, options: dict[str, Any]) -> SimulationConfig:
    """``config`` with ``options`` applied, or a config built from ``options`` (``config`` then being
    the algorithms, the positional argument of earlier releases)."""
    if isinstance(config, SimulationConfig):
        return config.replace(**options) if options else config
    if config is not None:
        if "algorithms" in options:
            raise ValueError("algorithms given twice (positionally and as algorithms=)")
        options = {**options, "algorithms": config}
    known = {f.name: f for f in dataclasses.fields(SimulationConfig)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; options: {', '.join(known)}")
    missing = [name for name, f in known.items() if f.default is dataclasses.MISSING and name not in options]
    if missing:
        raise ValueError(f"missing required option(s) {', '.join(missing)}")
    return SimulationConfig(**options)


def _check_combination(config: SimulationConfig, network: dict | None) -> None:
    """Refuse the data and options that would have no effect: a network with ``policy='tabular'``;
    ``pair_sampling='policy'`` when every algorithm run has a loss that draws its pairs itself ("ipo2":
    y, y′ ~ π_t) or none ("pg"); with some, one warning names them. (The "minimize" scheme, whose exact
    minimiser does not depend on the pair weights, is documented at the field, not refused.)"""
    if network is not None and config.policy != "neural":
        raise ValueError(f"network= is read with policy='neural' only (the network's weights are the parameters), "
                         f"got policy={config.policy!r}: drop network= or give policy='neural'")
    if config.pair_sampling != "policy":
        return
    why = {}
    for a in config.algorithm_objects():
        if a.loss == LossFamily.IPO2:
            why[a.name] = "its pairs are drawn from π_t by definition"
        elif a.loss == LossFamily.PG:
            why[a.name] = "a policy gradient draws no pairs"
    if not why:
        return
    listed = "; ".join(f"{name}: {reason}" for name, reason in why.items())
    if len(why) == len(config.algorithms):
        raise ValueError(f"pair_sampling='policy' has no effect on the algorithms run ({listed}); it moves the "
                         "pairs of the uniform-pair ipo loss (oipo1, nash_md, egpo, ...) only")
    warnings.warn(f"pair_sampling='policy' has no effect on {listed}", UserWarning, stacklevel=3)


def _call(function: str, config: SimulationConfig, axes: dict[str, list] | None = None) -> str:
    """The Python call that reproduces a run given the same data."""
    fields = {k: v for k, v in config.to_dict().items() if v != getattr(SimulationConfig, k, dataclasses.MISSING)}
    args = ", ".join(f"{k}={v!r}" for k, v in {**fields, **{f"{k}s": v for k, v in (axes or {}).items()}}.items())
    return f"egpo_core.{function}(P, ref_logits, {args})"


def simulate(
    P: np.ndarray,
    ref_logits: np.ndarray,
    config: SimulationConfig | Sequence[str | Algorithm] | str | None = None,
    *,
    init_logits: np.ndarray | None = None,
    network: dict | None = None,
    progress: bool = True,
    **options: Any,
) -> SimulationResult:
    """Simulate the configured algorithms on the games ``P`` from π_0 = π_ref (or ``init_logits``).

    Args:
        P: preference tensors (runs, N, N), P[r, i, j] = P(i ≻ j) in game r (validated); (N, N) is one game.
        ref_logits: logits of π_ref per game, (runs, N), or (N,) for every game.
        config: a :class:`~egpo_core.config.SimulationConfig`, or the algorithms (names or objects).
        init_logits: logits of π_0, (runs, N) or (N,); default π_ref.
        network: initial network weights for ``policy="neural"`` (e.g. ``reference_instances(...).network``).
        progress: show a progress bar (a widget in notebooks) and announce a first kernel compilation.
        **options: fields of :class:`~egpo_core.config.SimulationConfig` (beta, lr or eta,
            iterations, policy, gradient, seed, metrics, ...), overriding those of ``config``.

    Returns a :class:`~egpo_core.results.SimulationResult` whose curves are (runs, n_steps) per
    algorithm. A run whose gap becomes non-finite warns once (algorithm and step) and is counted in
    ``summary()["diverged"]``.
    """
    base = _base_config(config, options)
    _check_combination(base, network)
    P, ref_logits = _validate_games(P, ref_logits)
    return _run(P, ref_logits, [base], None, init_logits=init_logits, network=network, progress=progress,
                call=_call("simulate", base))


def _axis(name: str, values: Any) -> list:
    """A sweep axis: a list of numbers; one number is a one-point axis."""
    if isinstance(values, (str, bytes)) or values is None:
        raise ValueError(f"{name} must be a list of numbers, got {name}={values!r}")
    values = [values] if np.ndim(values) == 0 else list(np.asarray(values).ravel().tolist())
    if not values:
        raise ValueError(f"{name} is empty: a sweep needs at least one value per axis")
    return values


def sweep(
    P: np.ndarray,
    ref_logits: np.ndarray,
    config: SimulationConfig | Sequence[str | Algorithm] | str | None = None,
    *,
    betas: Sequence[float] | float | None = None,
    lrs: Sequence[float] | float | None = None,
    etas: Sequence[float] | float | None = None,
    seeds: Sequence[int] | int | None = None,
    init_logits: np.ndarray | None = None,
    network: dict | None = None,
    progress: bool = True,
    executor: Any = None,
    chunk_size: int | None = None,
    partial_dir: str | os.PathLike | None = None,
    **options: Any,
) -> SimulationResult:
    """Run the grid betas × (lrs or etas) × seeds × algorithms × games as one batched computation.

    Each axis given replaces that field of ``config`` (a one-value axis may be a scalar); an axis not
    given keeps the config's value, so ``sweep(P, ref, config, betas=[0.1, 0.01])`` varies β alone.
    At most one of ``lrs`` (SGD rates of the reference implementation) and ``etas`` (mirror-descent
    steps; lr = ηβN/4). Other arguments as in :func:`simulate`. The curves are (n_configs, runs,
    n_steps) per algorithm, configs in the order β, then step, then seed.

    Chunks (:mod:`egpo_core.executors`): with ``executor`` (a ``concurrent.futures.Executor`` or a
    ``dask.distributed.Client``), ``chunk_size`` or ``partial_dir``, the grid's (setting, algorithm)
    pairs are cut into chunks of at most ``chunk_size`` pairs (default: one setting, every algorithm),
    each computed by ``executor.submit`` (None: here, one after another) and gathered into the same
    arrays as without chunks, bit for bit. A failing chunk is computed once more, then reported
    (:class:`~egpo_core.executors.ChunksFailed`, one line per chunk naming its settings); with
    ``partial_dir``, finished chunks are kept there and a rerun computes only the missing ones.
    """
    check_executor(executor)
    if chunk_size is not None:
        check_count(chunk_size, "chunk_size", 1)
    if lrs is not None and etas is not None:
        raise ValueError("give at most one of lrs (SGD learning rates) and etas (mirror-descent steps)")
    axes = {name: _axis(f"{name}s", values) for name, values in
            (("beta", betas), ("lr", lrs), ("eta", etas), ("seed", seeds)) if values is not None}
    twice = sorted(name for name in axes if name in options)
    if twice:
        raise ValueError(f"give {twice[0]} or {twice[0]}s, not both")
    base = _base_config(config, {**options, **{name: values[0] for name, values in axes.items()}})
    step_name = "lr" if "lr" in axes else "eta" if "eta" in axes else ("lr" if base.lr is not None else "eta")
    betas_ = axes.get("beta", [base.beta])
    step_values = axes.get(step_name, [getattr(base, step_name)])
    seeds_ = axes.get("seed", [base.seed])
    points = [base.replace(beta=b, **{step_name: s}, seed=seed) for b, s, seed in itertools.product(betas_, step_values, seeds_)]
    _check_combination(base, network)
    P, ref_logits = _validate_games(P, ref_logits)
    chunking = None
    if executor is not None or chunk_size is not None or partial_dir is not None:
        size = chunk_size if chunk_size is not None else default_chunk_size(len(base.algorithms))
        chunking = {"executor": executor, "chunk_size": size, "partial_dir": partial_dir}
    return _run(P, ref_logits, points, axes, init_logits=init_logits, network=network, progress=progress,
                call=_call("sweep", base, axes), chunking=chunking)
