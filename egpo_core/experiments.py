"""Experiment drivers: a paper preset with overrides, and the β → 0 experiments (the last iterate
against the original game's Nash equilibrium)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .algorithms import PAPER_ALGORITHMS
from .simulator import SimulationResult, sweep

__all__ = ["run_preset", "final_metrics_vs_beta", "horizon_tuned_exploitability"]

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
