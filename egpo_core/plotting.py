"""Paper-style figures of simulation results (SPEC §4 "Plots").

Duality gap on a log axis against the number of updates t; a 10-step moving average; each curve cut
at its first value below 1e-6; one panel per (β, run); one colour per algorithm, dashed for exact
and solid for sampled gradients.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from .algorithms import ALGORITHMS, get_algorithm  # noqa: E402
from .simulate import SimulationResult  # noqa: E402

__all__ = ["algorithm_colors", "gap_curve", "plot_gap_panels", "plot_picked", "save_figure"]


def algorithm_colors() -> dict[str, tuple]:
    """A fixed colour per algorithm name, the same in every figure."""
    palette = sns.color_palette("tab10", len(ALGORITHMS))
    return dict(zip(ALGORITHMS, palette))


def gap_curve(
    steps: np.ndarray, values: np.ndarray, window: int = 10, cutoff: float = 1e-6, max_points: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """The plotted curve of one run: moving average over ``window`` records, cut before the first
    value below ``cutoff``, thinned to at most ``max_points`` points. Returns (steps, values)."""
    values = np.asarray(values, dtype=np.float64)
    steps = np.asarray(steps)
    if window > 1 and values.size >= window:
        values = np.convolve(values, np.ones(window) / window, mode="valid")
        steps = steps[window - 1 :]
    below = np.flatnonzero(values < cutoff)
    if below.size:
        values, steps = values[: below[0]], steps[: below[0]]
    if values.size > max_points:
        keep = np.linspace(0, values.size - 1, max_points).astype(int)
        values, steps = values[keep], steps[keep]
    return steps, values


def _draw(ax, result: SimulationResult, config: int, run: int, metric: str, window: int, cutoff: float) -> None:
    colors = algorithm_colors()
    style = "-" if result.settings.get("gradient") == "sampled" else "--"
    data = result.values[metric]
    for a, name in enumerate(result.algorithms):
        x, y = gap_curve(result.steps, data[config, a, run], window, cutoff)
        ax.plot(x, y, style, color=colors.get(name), label=get_algorithm(name).label, linewidth=1.4)
    ax.set_yscale("log")
    ax.set_xlabel("# updates $t$")
    ax.set_ylabel(metric.replace("_", " "))
    beta = result.configs["beta"].iloc[config]
    lr = result.configs["lr"].iloc[config]
    ax.set_title(rf"$\beta={beta:g}$, lr$={lr:g}$, run {run}")


def plot_gap_panels(
    result: SimulationResult,
    runs: Sequence[int] | None = None,
    *,
    config: int = 0,
    metric: str = "duality_gap",
    ncols: int = 2,
    window: int = 10,
    cutoff: float = 1e-6,
) -> plt.Figure:
    """One panel per run of one configuration (the paper's per-β figure)."""
    runs = list(range(result.runs)) if runs is None else list(runs)
    nrows = -(-len(runs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.2 * nrows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        _draw(ax, result, config, run, metric, window, cutoff)
    for ax in list(axes.flat)[len(runs) :]:
        ax.remove()
    axes.flat[0].legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_picked(
    results: Mapping[str, SimulationResult],
    run: int = 0,
    *,
    metric: str = "duality_gap",
    window: int = 10,
    cutoff: float = 1e-6,
) -> plt.Figure:
    """The paper's one-row "picked" figure: run ``run`` of each result (e.g. each β), side by side."""
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.5), squeeze=False)
    for ax, (title, result) in zip(axes.flat, results.items()):
        _draw(ax, result, 0, run, metric, window, cutoff)
        ax.set_title(title)
    axes.flat[0].legend(fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, stem: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"), dpi: int = 110) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically (temp file + rename); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = stem.with_suffix(f".{fmt}")
        with tempfile.NamedTemporaryFile(dir=stem.parent, suffix=f".{fmt}", delete=False) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        os.replace(tmp.name, target)
        written.append(target)
    plt.close(fig)
    return written
