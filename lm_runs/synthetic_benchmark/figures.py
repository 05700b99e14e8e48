"""The benchmark's own figures: ``gap_curves``, ``simulation`` and ``length_normalized`` (PNG + PDF each).

Curves are the median over seeds with the min–max band (``lm_runs.plots.seed_bands`` and
``draw_band``), each algorithm in the colour and under the display name ``egpo_core.algorithms``
declares for it, as in every other figure of the project; files are written by
``egpo_core.plotting.save_figure`` (atomic).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from egpo_core.algorithms import algorithm_color
from egpo_core.plotting import save_figure
from lm_runs.plots import draw_band, seed_bands

from .game import ClassGame
from .settings import BenchmarkSettings

__all__ = ["benchmark_figures"]

_METRIC_TITLES = {
    "duality_gap": "class-level duality gap",
    "exploitability": "exploitability (β = 0)",
    "kl_to_equilibrium": "KL(π*_β ‖ π_t) on classes",
}


def _draw(ax, metrics: pd.DataFrame, metric: str, algorithms, *, style: str = "-", label_suffix: str = "") -> None:
    """Every algorithm's median over seeds of ``metric`` (band: min–max, solid lines only)."""
    bands = seed_bands(metrics, (metric,))
    for a in algorithms:
        draw_band(ax, bands[bands["algorithm"] == a], a, style=style, label_suffix=label_suffix, band=style == "-")


def benchmark_figures(out: Path, metrics: pd.DataFrame, metrics_ln: pd.DataFrame | None, sim: pd.DataFrame,
                      comparison: pd.DataFrame, s: BenchmarkSettings, game: ClassGame) -> None:
    """Write into ``out``: ``gap_curves`` (gap, exploitability and KL to π*_β per algorithm over the
    updates), ``simulation`` (the LM's gap beside egpo_core's simulation at the common fitted η and at
    each algorithm's fitted η, dashed) and, when length-normalized runs exist, ``length_normalized``
    (their gap and KL beside the summed runs of the same seeds)."""
    algs = list(s.algorithms)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    for ax, (metric, title) in zip(axes, _METRIC_TITLES.items()):
        _draw(ax, metrics, metric, algs)
        ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Tiny GPT-2, K = {s.num_classes} classes, β = {s.beta}: median and min–max over {len(s.seeds)} seeds "
                 f"(mean over {len(game.prompts)} evaluation prompts; update 0 = π_ref)", fontsize=9)
    save_figure(fig, out / "gap_curves")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), layout="constrained")
    gap = sim[sim.metric == "duality_gap"]
    for ax, mode in zip(axes, ("common", "fit")):
        _draw(ax, metrics, "duality_gap", algs)
        for _, row in comparison.iterrows():
            eta = row["common_eta"] if mode == "common" else row["eta_fit"]
            curve = gap[(gap.algorithm == row["algorithm"]) & np.isclose(gap.eta, eta)]
            ax.plot(curve["update"], curve["value"], "--", color=algorithm_color(row["algorithm"]), lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.set_title("simulation (dashed) at the common fitted η = %.3g" % comparison["common_eta"].iloc[0]
                     if mode == "common" else "simulation (dashed) at each algorithm's fitted η", fontsize=9)
    axes[0].legend(fontsize=8)
    axes[0].set_ylabel("class-level duality gap")
    save_figure(fig, out / "simulation")

    if metrics_ln is not None and len(metrics_ln):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), layout="constrained")
        ln_algs = [a for a in algs if a in set(metrics_ln.algorithm)]
        summed = metrics[metrics.seed.isin(metrics_ln.seed.unique())]
        for ax, metric in zip(axes, ("duality_gap", "kl_to_equilibrium")):
            _draw(ax, summed, metric, ln_algs, label_suffix=" summed")
            _draw(ax, metrics_ln, metric, ln_algs, style="--", label_suffix=" length-normalized")
            ax.set_yscale("log")
            ax.set_xlabel("update")
            ax.set_title(metric.replace("_", " "))
        axes[0].legend(fontsize=7)
        save_figure(fig, out / "length_normalized")
