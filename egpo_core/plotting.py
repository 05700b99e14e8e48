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

__all__ = [
    "algorithm_colors",
    "gap_curve",
    "plot_gap_panels",
    "plot_picked",
    "save_figure",
    "figure_dir",
    "add_title",
    "CLASS_COLORS",
    "plot_median_grid",
    "plot_rate_map",
    "plot_slope_comparison",
    "plot_final_metric",
    "plot_conventions_dumbbell",
    "plot_benchmarks",
]


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
    """Write ``stem.png`` and ``stem.pdf`` atomically (temp file + rename); returns the paths.

    ``stem`` is a path without extension; dots in it are kept (``gap_beta0.1`` → ``gap_beta0.1.png``)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = stem.parent / f"{stem.name}.{fmt}"
        with tempfile.NamedTemporaryFile(dir=stem.parent, suffix=f".{fmt}", delete=False) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        os.replace(tmp.name, target)
        written.append(target)
    plt.close(fig)
    return written


# ----------------------------------------------------------------------------------------------------
# figures of the notebooks (analysis results; see egpo_core.analysis)


def figure_dir(notebook: str, out_dir: str | os.PathLike | None = None) -> Path:
    """Folder for a notebook's figures and tidy data: ``out_dir`` if given (relative to the current
    directory), else ``<repository>/figures/<notebook>``, the repository being the folder that holds the
    ``egpo_core`` package when it also has a ``notebooks/`` folder (an editable install), the current
    directory otherwise. Created if missing."""
    if out_dir is not None:
        folder = Path(out_dir)
    else:
        root = Path(__file__).resolve().parent.parent
        if not (root / "notebooks").is_dir():
            root = Path.cwd()
        folder = root / "figures" / notebook
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def add_title(fig: plt.Figure, title: str, fontsize: float = 13) -> plt.Figure:
    """A figure-wide title above the panels (re-runs tight_layout, which makes room for it)."""
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    return fig


def _series_color(name: str, fallback: dict) -> tuple:
    colors = algorithm_colors()
    if name in colors:
        return colors[name]
    if name not in fallback:
        fallback[name] = sns.color_palette("dark", 10)[len(fallback) % 10]
    return fallback[name]


def _series_label(name: str) -> str:
    return get_algorithm(name).label if name in ALGORITHMS else name


def plot_median_grid(
    curves,
    *,
    col: str = "label",
    row: str | None = None,
    series: str = "algorithm",
    logy: bool = True,
    ylabel: str = "duality gap",
    panel_width: float = 5.0,
    panel_height: float = 3.6,
    sharey: str | bool = "row",
    floor: float = 1e-16,
) -> plt.Figure:
    """Median-over-runs curves with their inter-quartile band (a frame from
    :func:`egpo_core.analysis.median_curves`), one panel per value of ``col`` (and of ``row``), one colour
    per value of ``series`` (the algorithm's colour when it is an algorithm name); dashed for exact and
    solid for sampled gradients (``gradient`` column). On a log axis a curve ends where its median falls
    below ``floor`` (float64 rounding level of the gap) and the band is clipped at ``floor``."""
    cols = list(dict.fromkeys(curves[col]))
    rows = [None] if row is None else list(dict.fromkeys(curves[row]))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(panel_width * len(cols), panel_height * len(rows)),
                             squeeze=False, sharey=sharey)
    fallback: dict = {}
    for i, rv in enumerate(rows):
        for j, cv in enumerate(cols):
            ax = axes[i, j]
            part = curves[curves[col] == cv] if rv is None else curves[(curves[col] == cv) & (curves[row] == rv)]
            for name, sub in part.groupby(series, sort=False, observed=True):
                sub = sub.sort_values("step")
                y, lo, hi = (sub[k].to_numpy(dtype=float) for k in ("median", "q25", "q75"))
                x = sub["step"].to_numpy()
                if logy:
                    below = np.flatnonzero(~(y >= floor))  # NaN counts as below: the curve ends there
                    end = below[0] if below.size else y.size
                    x, y, lo, hi = x[:end], y[:end], np.clip(lo[:end], floor, None), np.clip(hi[:end], floor, None)
                color = _series_color(str(name), fallback)
                style = "-" if "gradient" in sub and (sub["gradient"] == "sampled").all() else "--"
                ax.plot(x, y, style, color=color, label=_series_label(str(name)), linewidth=1.4)
                ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)
            if logy:
                ax.set_yscale("log")
            title = str(cv) if rv is None else f"{rv} — {cv}"
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("# updates $t$")
            if j == 0:
                ax.set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


#: One colour per convergence class of :data:`egpo_core.analysis.CLASSES`.
CLASS_COLORS = {
    "converges": "#2ca02c",
    "plateaus": "#9ecae1",
    "slow": "#d9d26a",
    "oscillates": "#fd8d3c",
    "diverges": "#67000d",
}


def plot_rate_map(rate_map, algorithms: Sequence[str] | None = None, ncols: int = 4) -> plt.Figure:
    """Where each algorithm converges, plateaus, oscillates or diverges over the (η, β) plane.

    ``rate_map`` is a frame from :func:`egpo_core.analysis.rate_map`. Each cell is coloured by its
    majority class (:data:`CLASS_COLORS`) and, where it converges, annotated with the measured log-gap
    slope divided by the theory's log(1 − ηβ) (2.0: the gap contracts like (1 − ηβ)^{2t}). The black
    line is ηβ = 1 (right of it the theory's step makes no sense and Nash-MD's mixture is capped at 1).
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from .analysis import CLASSES

    algorithms = list(dict.fromkeys(rate_map["algorithm"])) if algorithms is None else list(algorithms)
    etas = np.sort(rate_map["eta"].unique())
    betas = np.sort(rate_map["beta"].unique())
    cmap = ListedColormap([CLASS_COLORS[c] for c in CLASSES])
    nrows = -(-len(algorithms) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.55 * len(etas) * ncols + 1.5, 0.5 * len(betas) * nrows + 1.6),
                             squeeze=False)
    for ax, alg in zip(axes.flat, algorithms):
        part = rate_map[rate_map["algorithm"] == alg]
        codes = np.full((len(betas), len(etas)), np.nan)
        for _, cell in part.iterrows():
            i, j = np.searchsorted(betas, cell["beta"]), np.searchsorted(etas, cell["eta"])
            codes[i, j] = CLASSES.index(cell["class"])
            ratio = cell["slope_ratio"]
            if cell["class"] == "converges" and np.isfinite(ratio):
                ax.text(j, i, f"{ratio:.1f}", ha="center", va="center", fontsize=6.5, color="white")
        ax.imshow(np.ma.masked_invalid(codes), cmap=cmap, vmin=-0.5, vmax=len(CLASSES) - 0.5, origin="lower",
                  aspect="auto")
        # the staircase ηβ = 1 between cells
        xs, ys = [], []
        for i, beta in enumerate(betas):
            j = np.searchsorted(etas * beta, 1.0 + 1e-9, side="right")  # cells with ηβ ≤ 1 are left of j
            xs += [j - 0.5, j - 0.5]
            ys += [i - 0.5, i + 0.5]
        ax.plot(xs, ys, color="black", linewidth=1.2)
        ax.set_xticks(range(len(etas)), [f"{e:g}" for e in etas], fontsize=7, rotation=90)
        ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas], fontsize=7)
        ax.set_xlabel(r"step $\eta$")
        ax.set_ylabel(r"$\beta$")
        ax.set_title(_series_label(alg), fontsize=10)
    for ax in list(axes.flat)[len(algorithms):]:
        ax.remove()
    handles = [Patch(color=CLASS_COLORS[c], label=c) for c in CLASSES]
    fig.legend(handles=handles, loc="lower center", ncol=len(CLASSES), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_slope_comparison(rate_map) -> plt.Figure:
    """Measured log-gap slopes (cells of :func:`egpo_core.analysis.rate_map` whose majority converges)
    against the theory's log(1 − ηβ) (left; the lines are 1× and 2×) and against the local prediction
    2·log ρ of the linearized update (right; the line is equality). Axes show the decay per step, −slope."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    fallback: dict = {}
    ok = (rate_map["class"] == "converges") & (rate_map["slope"] < 0)
    part = rate_map[ok]
    for alg, sub in part.groupby("algorithm", sort=False):
        color = _series_color(alg, fallback)
        theory = sub[np.isfinite(sub["theory_slope"])]
        axes[0].scatter(-theory["theory_slope"], -theory["slope"], s=18, color=color, label=_series_label(alg))
        if "predicted_slope" in sub:
            pred = sub[np.isfinite(sub["predicted_slope"]) & (sub["predicted_slope"] < 0)]
            axes[1].scatter(-pred["predicted_slope"], -pred["slope"], s=18, color=color, label=_series_label(alg))
    for ax, title in zip(axes, [r"vs theory: $-\log(1-\eta\beta)$", r"vs linearization: $-2\log\rho$"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo, hi = ax.get_xlim()
        grid = np.geomspace(lo, hi, 50)
        ax.plot(grid, grid, "k-", linewidth=0.8, label="equal")
        if ax is axes[0]:
            ax.plot(grid, 2 * grid, "k:", linewidth=0.8, label="2×")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("predicted decay of log gap per step")
        ax.set_ylabel("measured decay of log gap per step")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_final_metric(
    frame,
    x: str = "beta",
    y: str = "exploitability",
    *,
    reference: str | None = "equilibrium_exploitability",
    reference_label: str = r"$\pi^*_\beta$ itself",
    power: float | None = None,
    ax=None,
    title: str | None = None,
) -> plt.Figure:
    """Median over runs of ``y`` against ``x`` per algorithm, log–log, with the median of ``reference``
    (e.g. the exploitability of π*_β, the bias left at β > 0) in black and, if ``power`` is given, a
    grey guide ∝ x^power. Non-positive values are dropped."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
    else:
        fig = ax.figure
    fallback: dict = {}
    for alg, sub in frame.groupby("algorithm", sort=False):
        med = sub.groupby(x)[y].median()
        med = med[med > 0]
        ax.plot(med.index, med.values, "o-", color=_series_color(alg, fallback), label=_series_label(alg),
                markersize=3.5, linewidth=1.2)
    if reference is not None and reference in frame:
        ref = frame.groupby(x)[reference].median()
        ref = ref[ref > 0]
        ax.plot(ref.index, ref.values, "k--", linewidth=1.6, label=reference_label)
    if power is not None:
        xs = np.sort(frame[x].unique()).astype(float)
        anchor = frame.groupby(x)[reference or y].median().iloc[0]
        ax.plot(xs, anchor * (xs / xs[0]) ** power, color="grey", linewidth=0.8, label=rf"$\propto$ {x}$^{{{power:g}}}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"final {y}")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_conventions_dumbbell(table, conventions: Sequence[str] = ("reference", "default"), ncols: int = 3,
                              floor: float = 1e-17) -> plt.Figure:
    """Median final gap per algorithm under two conventions, one panel per setting (a frame from
    :func:`egpo_core.analysis.conventions_table`): circle = first conventions, square = second, joined
    by a line. Medians below ``floor`` (e.g. exactly 0) are drawn at ``floor``."""
    settings = list(dict.fromkeys(table["setting"]))
    nrows = -(-len(settings) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 2.9 * nrows), squeeze=False, sharex=True)
    first, second = conventions
    for ax, setting in zip(axes.flat, settings):
        part = table[table["setting"] == setting].reset_index(drop=True)
        for k, row in part.iterrows():
            a = max(row[f"median_{first}"], floor)
            b = max(row[f"median_{second}"], floor)
            color = algorithm_colors().get(row["algorithm"])
            ax.plot([a, b], [k, k], color=color, linewidth=1.5)
            ax.plot(a, k, "o", color=color, markersize=6, label=first if k == 0 else None)
            ax.plot(b, k, "s", color=color, markersize=6, mfc="white", label=second if k == 0 else None)
        ax.set_yticks(range(len(part)), [_series_label(a) for a in part["algorithm"]], fontsize=8)
        ax.set_xscale("log")
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel("median final duality gap")
        ax.invert_yaxis()
    for ax in list(axes.flat)[len(settings):]:
        ax.remove()
    axes.flat[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_benchmarks(presets_table, scaling_table) -> plt.Figure:
    """Simulator speed: seconds per paper preset (bars, annotated with µs per trajectory-step) and the
    scaling of the wall time with N, runs and steps (one panel per ``vary`` value of ``scaling_table``,
    log–log, with grey guides of slope 1 (and 2 for N) through the largest case)."""
    varies = list(dict.fromkeys(scaling_table["vary"])) if "vary" in scaling_table else []
    fig, axes = plt.subplots(1, 1 + len(varies), figsize=(5.2 * (1 + len(varies)), 4.2), squeeze=False)
    ax = axes[0, 0]
    names = list(presets_table["preset"])
    ax.barh(range(len(names)), presets_table["seconds"], color="#4c72b0")
    for k, (sec, per) in enumerate(zip(presets_table["seconds"], presets_table["us_per_trajectory_step"])):
        ax.text(sec, k, f" {sec:.2f} s ({per:.2g} µs/step)", va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (5 algorithms × all runs)")
    ax.set_xlim(0, presets_table["seconds"].max() * 1.6)
    ax.set_title("paper presets", fontsize=10)
    column = {"N": "num_actions", "runs": "runs", "steps": "iterations"}
    for ax, vary in zip(axes[0, 1:], varies):
        part = scaling_table[scaling_table["vary"] == vary].sort_values(column.get(vary, vary))
        xs = part[column.get(vary, vary)].to_numpy(dtype=float)
        ax.plot(xs, part["seconds"], "o-", color="#c44e52")
        last = part["seconds"].iloc[-1]  # guides through the largest case, where overheads matter least
        ax.plot(xs, last * xs / xs[-1], color="grey", linewidth=0.8, label="∝ size")
        if vary == "N":
            ax.plot(xs, last * (xs / xs[-1]) ** 2, color="grey", linestyle=":", linewidth=0.8, label="∝ N²")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(vary)
        ax.set_ylabel("seconds")
        ax.set_title(f"scaling with {vary}", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
