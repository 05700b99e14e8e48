"""What a simulation returns, how it is written to a folder, and how it is read back.

    >>> res = simulate(P, ref_logits, ["egpo"], beta=0.01, lr=0.02, iterations=5000)
    >>> res.save("runs/mine")                  # metrics.parquet, summary.csv, run.json
    >>> back = load_result("runs/mine")        # the same arrays, settings and provenance

A folder holds ``metrics.<parquet|csv>`` (tidy: one row per config, algorithm, run, step, metric),
``summary.csv`` (:meth:`SimulationResult.summary`) and ``run.json``: the configuration's fields
(``config``), the sweep axes if any, one row per setting (``configs``), the provenance (versions,
git commit, call, games source, times) and the list of files the run wrote (``files``), which is
what ``--overwrite`` removes. Every file is written atomically with the user's umask, and a run
saved over a previous one replaces it only once complete (:mod:`egpo_core.run_folder`): a reader
sees the previous run or the new one, never a mix.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np
import pandas as pd

from .files import atomic_path, atomic_write
from .run_folder import RUN_FILE, begin_replacement, discard_replacement, finish_replacement, run_path

__all__ = ["SimulationResult", "load_result", "RUN_FILE"]
_CONFIG_COLUMNS = ("beta", "lr", "eta", "mixture", "seed")


@dataclass
class SimulationResult:
    """Recorded metrics of a batch of simulations.

    Attributes:
        algorithms: algorithm names, in the order of the second axis of ``values``.
        configs: one row per hyper-parameter setting: beta, lr, eta (the one given stored exactly,
            the other derived by η = 4·lr/(Nβ)), mixture, seed (an integer).
        steps: the recorded update counts t (0 … iterations).
        values: metric name → array (n_configs, n_algorithms, runs, n_steps).
        settings: the configuration's fields (``SimulationConfig.to_dict()``) plus ``runs`` and
            ``num_actions``; a sweep adds ``axes`` (field → the values varied).
        provenance: versions, git commit, call, games source, start and wall time.
    """

    algorithms: tuple[str, ...]
    configs: pd.DataFrame
    steps: np.ndarray
    values: dict[str, np.ndarray]
    settings: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # the arrays' own repr would fill a notebook cell
        return (f"SimulationResult({len(self.configs)} setting(s) x {len(self.algorithms)} algorithm(s) "
                f"{list(self.algorithms)} x {self.runs} runs, steps 0..{int(self.steps[-1])} "
                f"({self.steps.size} recorded), metrics {list(self.values)})")

    @property
    def runs(self) -> int:
        """Number of games (runs) per setting and algorithm."""
        return next(iter(self.values.values())).shape[2]

    @property
    def is_sweep(self) -> bool:
        """Whether the result is a grid (from ``sweep``): its curves then keep the configs axis."""
        return "axes" in self.settings

    def metric(self, name: str) -> dict[str, np.ndarray]:
        """Algorithm → array (runs, n_steps) for :func:`simulate`, (n_configs, runs, n_steps) for
        :func:`sweep` whatever the grid's size."""
        if name not in self.values:
            raise KeyError(f"metric {name!r} was not recorded; recorded: {', '.join(self.values)} "
                           f"(ask for it with metrics=(..., {name!r}))")
        data = self.values[name]
        return {alg: (data[:, a] if self.is_sweep else data[0, a]) for a, alg in enumerate(self.algorithms)}

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

    @property
    def average_exploitability(self) -> dict[str, np.ndarray]:
        """max_y (Pπ̄_t)_y − ½ of the average iterate."""
        return self.metric("average_exploitability")

    def _config_row(self, c: int) -> dict[str, Any]:
        """Row ``c`` of ``configs`` with each column's own type (a seed stays an int)."""
        return {column: self.configs[column].iloc[c].item() for column in self.configs.columns}

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
            for column in _CONFIG_COLUMNS:
                frame[column] = self.configs[column].to_numpy()[idx_cfg.ravel()]
            frames.append(frame)
        out = pd.concat(frames, ignore_index=True)
        out["metric"] = out["metric"].astype("category")
        return out

    def summary(self, metric: str = "duality_gap", threshold: float = 1e-6) -> pd.DataFrame:
        """One row per (config, algorithm): ``median_final``, the median over the runs that did not
        diverge of the last recorded value (NaN when every run diverged), so that one diverged run does
        not hide the others; ``reached``, the number of runs whose metric fell below ``threshold`` at
        any recorded step; ``diverged``, the number of runs whose metric became non-finite (NaN/inf)
        at some recorded step; ``runs``, all of them."""
        if metric not in self.values:
            raise KeyError(f"metric {metric!r} was not recorded; recorded: {', '.join(self.values)} "
                           f"(ask for it with metrics=(..., {metric!r}))")
        data = self.values[metric]
        rows = []
        for c, a in itertools.product(range(data.shape[0]), range(data.shape[1])):
            curves = data[c, a]
            finite = np.all(np.isfinite(curves), axis=1)
            rows.append(
                {
                    **self._config_row(c),
                    "algorithm": self.algorithms[a],
                    "median_final": float(np.median(curves[finite, -1])) if finite.any() else float("nan"),
                    "reached": int(np.sum(np.any(curves < threshold, axis=1))),
                    "diverged": int(np.sum(~finite)),
                    "runs": curves.shape[0],
                }
            )
        return pd.DataFrame(rows)

    def save(self, directory: str | os.PathLike, fmt: Literal["parquet", "csv"] = "parquet",
             extra: Callable[[Path], Iterable[str]] | None = None) -> Path:
        """Write ``metrics.<fmt>``, ``summary.csv`` and ``run.json`` into ``directory`` (created if
        needed) and return the metrics file's path there.

        The files are written aside (:func:`egpo_core.run_folder.begin_replacement`), ``run.json``
        last, and replace a run already in ``directory`` only once all are written; the previous
        run's files that this one does not write are removed then, other files are left alone. On an
        error while writing (e.g. ``OSError`` for a full disk) the previous run is left as it was and
        the error propagates. ``extra(folder)`` writes further files of the run (figures) into the
        folder being written and returns their names, listed in ``run.json`` with the others."""
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"fmt must be 'parquet' or 'csv', got fmt={fmt!r}")
        directory = Path(directory)
        aside = begin_replacement(directory)
        try:
            extra_files = list(extra(aside)) if extra is not None else []
            self._write(aside, fmt, extra_files)
        except BaseException:
            discard_replacement(directory)
            raise
        finish_replacement(directory)
        return directory / f"metrics.{fmt}"

    def _write(self, folder: Path, fmt: str, extra_files: list[str]) -> None:
        """The run's files into ``folder``, each atomically, ``run.json`` (listing them) last."""
        frame = self.to_dataframe()
        target = folder / f"metrics.{fmt}"
        with atomic_path(target) as tmp:
            if fmt == "parquet":
                frame.to_parquet(tmp, index=False)
            else:
                frame.to_csv(tmp, index=False)
        with atomic_path(folder / "summary.csv") as tmp:
            self.summary().to_csv(tmp, index=False)
        meta = {
            "algorithms": list(self.algorithms),
            "config": self.settings,
            # a value not shown (the mixture of a run without Nash-MD: NaN) is JSON's null
            "configs": [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in self._config_row(c).items()}
                        for c in range(len(self.configs))],
            "provenance": self.provenance,
            "metrics_file": target.name,
            "files": [target.name, "summary.csv", *extra_files, RUN_FILE],
        }
        atomic_write(folder / RUN_FILE, json.dumps(meta, indent=2, default=str) + "\n")


def load_result(folder: str | os.PathLike) -> SimulationResult:
    """Read a result written by :meth:`SimulationResult.save` (or the command line) back."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist" if not folder.exists() else f"{folder} is not a folder")
    stamp = run_path(folder, RUN_FILE)  # a folder being replaced reads as the new run, whole
    if not stamp.is_file():
        runs = sorted(p.name for p in folder.iterdir() if (p / RUN_FILE).is_file())
        if runs:  # `python -m egpo_core reproduce`'s --out: one run folder per preset
            raise FileNotFoundError(f"{folder} holds no {RUN_FILE} but run folders ({', '.join(runs)}): load one of "
                                    f"them, e.g. load_result({str(folder / runs[0])!r})")
        raise FileNotFoundError(f"{folder} holds no {RUN_FILE}: not a saved simulation result")
    meta = json.loads(stamp.read_text())
    metrics_file = run_path(folder, meta["metrics_file"])
    frame = pd.read_parquet(metrics_file) if metrics_file.suffix == ".parquet" else pd.read_csv(metrics_file)
    algorithms = tuple(meta["algorithms"])
    configs = pd.DataFrame(meta["configs"]).astype({"mixture": np.float64})  # null (not shown) → NaN
    steps = np.sort(frame["step"].unique())
    order = {name: i for i, name in enumerate(algorithms)}
    values = {}
    for metric, part in frame.groupby("metric", observed=True, sort=False):
        part = part.assign(_alg=part["algorithm"].astype(str).map(order)).sort_values(["config", "_alg", "run", "step"])
        values[str(metric)] = part["value"].to_numpy().reshape(len(configs), len(algorithms), -1, len(steps))
    return SimulationResult(algorithms, configs, steps, values, meta["config"], meta.get("provenance", {}))
