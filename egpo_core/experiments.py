"""Experiment drivers: a paper preset with overrides, the β → 0 experiments (the last iterate
against the original game's Nash equilibrium), and the last-iterate runs behind the claims of the
newer methods' papers (INPO, COMAL, ONPO, MPO, MNPO: :func:`last_iterate_curves`)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .algorithms import PAPER_ALGORITHMS
from .simulator import SimulationResult, sweep

__all__ = ["run_preset", "final_metrics_vs_beta", "horizon_tuned_exploitability", "LastIterateRun",
           "log_spaced_steps", "last_iterate_curves"]

#: The metrics of :func:`last_iterate_curves`, each recorded at every step of every run.
LAST_ITERATE_METRICS = ("duality_gap", "exploitability", "kl_to_equilibrium")

def run_preset(
    name: str,
    *,
    conventions: str = "default",
    fast: bool = False,
    iterations: int | None = None,
    runs: int | None = None,
    seed: int | None = None,
    algorithms: Sequence[str] = PAPER_ALGORITHMS,
    **options,
) -> SimulationResult:
    """Run the paper preset ``name`` (:mod:`egpo_core.presets`) with optional overrides: ``iterations``
    (else the preset's horizon, or its short one when ``fast``), ``runs`` and ``seed`` (else the
    paper's 10 games from seed 2018011309; other values draw other games, so the reference medians no
    longer apply). ``options`` are further config fields for :meth:`egpo_core.presets.Preset.run`
    (progress defaults to off)."""
    from .presets import get_preset

    preset = get_preset(name)
    if runs is not None:
        preset = dataclasses.replace(preset, runs=runs)
    if seed is not None:  # the preset draws its games from its config's seed: another seed, other games
        preset = dataclasses.replace(preset, config=preset.config.replace(seed=seed))
    options.setdefault("progress", False)
    return preset.run(algorithms, conventions=conventions, fast=fast, iterations=iterations, **options)


def _nash_and_bias(P: np.ndarray, ref_logits: np.ndarray, betas: Iterable[float]) -> tuple[pd.DataFrame, np.ndarray]:
    """Exploitability of π*_β per (β, run) and the LP Nash equilibria."""
    from .equilibria import nash_equilibrium, regularized_equilibrium
    from .metrics import exploitability

    nash = nash_equilibrium(P)
    rows = []
    for beta in betas:
        eq = regularized_equilibrium(P, ref_logits, beta)
        expl = exploitability(P, eq.logits)
        dist = np.abs(eq.policy - nash.policy).sum(axis=-1)
        for r in range(P.shape[0]):
            rows.append({"beta": float(beta), "run": r, "equilibrium_exploitability": float(expl[r]),
                         "equilibrium_l1_to_nash": float(dist[r]), "nash_exploitability": float(nash.exploitability[r])})
    return pd.DataFrame(rows), nash.policy


def final_metrics_vs_beta(
    P: np.ndarray,
    ref_logits: np.ndarray,
    algorithms: Sequence[str] = PAPER_ALGORITHMS,
    *,
    betas: Sequence[float],
    eta: float,
    iterations: int,
    progress: bool = False,
) -> pd.DataFrame:
    """Final exploitability and duality gap after ``iterations`` exact tabular steps with step ``eta``,
    for each β (one :func:`~egpo_core.sweep` call), beside the exploitability of π*_β itself (the bias
    that remains at β > 0) and of the LP Nash equilibrium (≈ 0).

    Exploitability(π) = max_y (Pπ)_y − ½ (0 exactly at a Nash equilibrium of the original game).
    Columns: beta, eta, iterations, algorithm, run, exploitability, duality_gap,
    equilibrium_exploitability, equilibrium_l1_to_nash (‖π*_β − π_NE‖₁), nash_exploitability.
    """
    # large steps at large β may overflow; their rows hold the non-finite values, without a warning
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*diverged", category=RuntimeWarning)
        res = sweep(
            P, ref_logits, algorithms, betas=betas, etas=[eta], iterations=iterations,
            metrics=("duality_gap", "exploitability"), progress=progress,
        )
    rows = []
    expl, gap = res.values["exploitability"], res.values["duality_gap"]
    for c, cfg in res.configs.iterrows():
        for a, alg in enumerate(res.algorithms):
            for r in range(expl.shape[2]):
                rows.append({"beta": float(cfg["beta"]), "eta": float(cfg["eta"]), "iterations": int(iterations),
                             "algorithm": alg, "run": r, "exploitability": float(expl[c, a, r, -1]),
                             "duality_gap": float(gap[c, a, r, -1])})
    frame = pd.DataFrame(rows)
    bias, _ = _nash_and_bias(np.asarray(P, dtype=np.float64), np.asarray(ref_logits, dtype=np.float64), betas)
    return frame.merge(bias, on=["beta", "run"], how="left")


def horizon_tuned_exploitability(
    P: np.ndarray,
    ref_logits: np.ndarray,
    algorithms: Sequence[str] = PAPER_ALGORITHMS,
    *,
    horizons: Sequence[int],
    eta: float,
    beta_horizon: float,
    progress: bool = False,
) -> pd.DataFrame:
    """β tuned to the horizon: for each T in ``horizons`` run T exact tabular steps with
    β_T = ``beta_horizon``/T and step ``eta`` (so ηβ_T·T = η·beta_horizon: the (1 − ηβ)^T contraction
    is the same e^{−η·beta_horizon} at every T), and record the final exploitability in the original
    game. The bias of π*_{β_T} shrinks with β_T, so the exploitability should fall polynomially in T.

    Columns as :func:`final_metrics_vs_beta` plus ``horizon``.
    """
    frames = []
    for horizon in horizons:
        beta = beta_horizon / horizon
        frame = final_metrics_vs_beta(P, ref_logits, algorithms, betas=[beta], eta=eta, iterations=int(horizon),
                                      progress=progress)
        frame["horizon"] = int(horizon)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@dataclasses.dataclass(frozen=True)
class LastIterateRun:
    """One series of :func:`last_iterate_curves`: an algorithm at step η and regularization β, exact
    tabular updates from π_0 = π_ref.

    Attributes:
        algorithm: a registered name (every one runs in the simulator's exact tabular mode).
        eta, beta: the mirror-descent step and β (β also defines the duality gap and π*_β measured).
        magnet_period: K of the refreshed anchor (COMAL, MPO; 0: never refreshed).
        history: MNPO's number of past policies H (equal weights, ratio ηβ; 1 is INPO; its declaration's
            default is 2, the authors' trainer's, so give it here).
        label: the series' name in tables and legends (default: the algorithm's display name with η).
    """

    algorithm: str
    eta: float
    beta: float
    magnet_period: int = 0
    history: int = 1
    label: str = ""

    def __post_init__(self) -> None:
        from .algorithms import display_name, get_algorithm

        object.__setattr__(self, "algorithm", get_algorithm(self.algorithm).name)
        for name in ("eta", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {name}={value!r}")
        if self.history < 1 or (self.history > 1 and self.algorithm != "mnpo"):
            raise ValueError(f"history must be 1, or more for mnpo only, got history={self.history!r} "
                             f"for {self.algorithm}")
        if not self.label:
            object.__setattr__(self, "label", f"{display_name(self.algorithm)} (η = {self.eta:g})")


def log_spaced_steps(iterations: int, points: int = 200) -> np.ndarray:
    """Step 0 and about ``points`` integer steps spaced evenly in log scale from 1 to ``iterations``
    (both included): what a log-scaled step axis needs."""
    return np.unique(np.concatenate([[0], np.round(np.geomspace(1, iterations, points)).astype(np.int64)]))


def last_iterate_curves(
    P: np.ndarray,
    ref_logits: np.ndarray,
    series: Sequence[LastIterateRun],
    *,
    iterations: int,
    points: int = 200,
    floor: float = 1e-12,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The last iterate of each series on each game, exact tabular updates from π_0 = π_ref for
    ``iterations`` steps: the duality gap Gap_β(π_t), the exploitability max_y (Pπ_t)_y − ½ of the original
    game and KL(π*_β ‖ π_t) at every step.

    Returns ``(curves, rates)``. ``curves``: the values at the recorded steps — :func:`log_spaced_steps`
    (``points``) and ``points`` evenly spaced ones — columns label, algorithm, eta, beta, magnet_period,
    history, run, step and the three metrics. ``rates``: one row per (series, run) with each metric's
    initial and final value and its measured log-slope per step over the recorded steps
    (:func:`egpo_core.rates.log_gap_slope` with ``floor``: the second half of the decay to the floor, or the
    second half of the records), columns ``<metric>_initial``, ``<metric>_final`` and ``<metric>_slope``. Each series is one
    call of the simulator (MNPO with ``history`` past policies: :func:`egpo_core.algorithms.mnpo.with_history`).
    """
    from .algorithms import get_algorithm, mnpo
    from .rates import log_gap_slope
    from .simulator import simulate

    P = np.asarray(P, dtype=np.float64)
    ref_logits = np.asarray(ref_logits, dtype=np.float64)
    keep = np.union1d(log_spaced_steps(iterations, points), np.round(np.linspace(0, iterations, points)).astype(np.int64))
    curves, rates = [], []
    for run in series:
        algorithm = get_algorithm(run.algorithm)
        if algorithm.name == "mnpo":
            algorithm = mnpo.with_history(run.history)
        res = simulate(P, ref_logits, [algorithm], beta=run.beta, eta=run.eta, iterations=iterations,
                       magnet_period=run.magnet_period, metrics=LAST_ITERATE_METRICS, progress=False)
        values = {m: res.metric(m)[run.algorithm][:, keep] for m in LAST_ITERATE_METRICS}
        ids = {"label": run.label, "algorithm": run.algorithm, "eta": run.eta, "beta": run.beta,
               "magnet_period": run.magnet_period, "history": run.history}
        for r in range(P.shape[0]):
            curves.append(pd.DataFrame({**ids, "run": r, "step": keep, **{m: values[m][r] for m in LAST_ITERATE_METRICS}}))
            row = dict(ids, run=r)
            for m in LAST_ITERATE_METRICS:
                row[f"{m}_initial"] = float(values[m][r, 0])
                row[f"{m}_final"] = float(values[m][r, -1])
                with np.errstate(invalid="ignore"):  # a value rounded below 0 is below the floor, as 0 is
                    row[f"{m}_slope"] = float(log_gap_slope(keep, values[m][r], floor=floor))
            rates.append(row)
    return pd.concat(curves, ignore_index=True), pd.DataFrame(rates)
