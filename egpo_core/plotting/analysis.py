"""The notebooks' figures of analysis results (:mod:`egpo_core.rates`, :mod:`egpo_core.experiments`,
:mod:`egpo_core.summaries`): median curves on a grid of panels, the convergence-class map of a sweep,
measured against predicted rates, final metrics against β, the two conventions side by side, and
the simulator's timings.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from ..rates import CLASSES, DIVERGES_DEFINITION, ignores_beta
from .style import (
    _GAP_TOP,
    GAP_CUTOFF,
    HIGHLIGHT,
    _draw_series,
    _legend_order,
    _ordered,
    _series_color,
    _series_label,
    _style_handles,
    algorithm_color,
    format_gap_axis,
)

__all__ = ["CLASS_COLORS", "plot_median_grid", "plot_rate_map", "plot_slope_comparison", "plot_final_metric",
           "plot_conventions_dumbbell", "plot_benchmarks"]


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
    sharey: str | bool = True,
    floor: float = GAP_CUTOFF,
    ylim: tuple[float, float] | None = (GAP_CUTOFF, _GAP_TOP),
) -> plt.Figure:
    """Median-over-runs curves with their inter-quartile band (a frame from
    :func:`egpo_core.summaries.median_curves`), one panel per value of ``col`` (and of ``row``), one colour
    per value of ``series`` (the algorithm's colour when it is an algorithm name; EGPO on top); dashed
    for exact and solid for sampled gradients (``gradient`` column), both explained in the legend. On a
    log axis a curve ends at its first median below ``floor``, drawn on the ``floor`` line ("≤ floor"),
    and the band is clipped at ``floor``; ``ylim`` fixes the y-axis (None: matplotlib's choice)."""
    cols = list(dict.fromkeys(curves[col]))
    rows = [None] if row is None else list(dict.fromkeys(curves[row]))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(panel_width * len(cols), panel_height * len(rows) + 0.5),
                             squeeze=False, sharey=sharey, sharex="row", layout="constrained")
    fallback: dict = {}
    gradients: set[str] = set()
    entries: dict[str, object] = {}
    for i, rv in enumerate(rows):
        for j, cv in enumerate(cols):
            ax = axes[i, j]
            part = curves[curves[col] == cv] if rv is None else curves[(curves[col] == cv) & (curves[row] == rv)]
            names = list(dict.fromkeys(part[series]))
            for k in _ordered(names):
                name = str(names[k])
                sub = part[part[series] == names[k]].sort_values("step")
                y, lo, hi = (sub[c].to_numpy(dtype=float) for c in ("median", "q25", "q75"))
                x = sub["step"].to_numpy(dtype=float)
                if logy:
                    below = np.flatnonzero(~(y >= floor))
                    if below.size:
                        end = below[0]
                        keep = end + 1 if np.isfinite(y[end]) else end
                        x, y, lo, hi = x[:keep], y[:keep], lo[:keep], hi[:keep]
                        y = np.maximum(y, floor)
                    lo, hi = np.clip(lo, floor, None), np.clip(hi, floor, None)
                gradient = "sampled" if "gradient" in sub and (sub["gradient"] == "sampled").all() else "exact"
                gradients.add(gradient)
                _draw_series(ax, x, y, lo, hi, color=_series_color(name, fallback),
                             style="-" if gradient == "sampled" else "--", label=_series_label(name),
                             highlight=name == HIGHLIGHT)
            if logy and ylim is not None:
                format_gap_axis(ax, ylim[0], ylim[1])
            elif logy:
                ax.set_yscale("log")
            ax.set_title(str(cv) if rv is None else f"{rv} — {cv}", fontsize=10)
            if i == len(rows) - 1:
                ax.set_xlabel("# updates $t$")
            if j == 0:
                ax.set_ylabel(ylabel)
            for handle, label in zip(*ax.get_legend_handles_labels()):
                entries.setdefault(label, handle)
    styles = _style_handles(sorted(gradients))
    names = list(entries)
    labels = [names[k] for k in _legend_order(names, [str(n) for n in dict.fromkeys(curves[series])])]
    fig.legend([entries[k] for k in labels] + styles, labels + [h.get_label() for h in styles],
               loc="outside lower center", ncol=min(len(entries) + len(styles), 8), fontsize=9, frameon=False)
    return fig


#: One colour per convergence class of :data:`egpo_core.rates.CLASSES`.
CLASS_COLORS = {
    "converges": "#2ca02c",
    "plateaus": "#9ecae1",
    "slow": "#d9d26a",
    "oscillates": "#fd8d3c",
    "diverges": "#67000d",
}

_DARK_CLASSES = ("converges", "diverges")  # white text on these


def plot_rate_map(rate_map, algorithms: Sequence[str] | None = None, ncols: int = 4) -> plt.Figure:
    """Where each algorithm converges, plateaus, oscillates or diverges over the (η, β) plane.

    ``rate_map`` is a frame from :func:`egpo_core.rates.rate_map`. Each cell is coloured by the class
    of most of its runs (ties: the worse class) and shows how many runs are in that class ("7/10");
    a converging cell also shows the measured log-gap slope divided by the theory's log(1 − ηβ) above
    it (2.0: the gap contracts like (1 − ηβ)^{2t}). The black staircase is ηβ = 1 (right of it the
    theory's step makes no sense and Nash-MD's mixture is capped at 1). A panel whose cells were measured
    on another curve than Gap_β (the map's ``metric`` column, :func:`egpo_core.rates.target_metric`) names it
    in its title, "ONPO (exploitability)"; "β-free" is added where neither the update nor that curve depends
    on β (:func:`egpo_core.rates.ignores_beta`). The caption under the panels says all of this, and the one
    definition of "diverges".
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    algorithms = list(dict.fromkeys(rate_map["algorithm"])) if algorithms is None else list(algorithms)
    etas = np.sort(rate_map["eta"].unique())
    betas = np.sort(rate_map["beta"].unique())
    cmap = ListedColormap([CLASS_COLORS[c] for c in CLASSES])
    nrows = -(-len(algorithms) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.5 * len(etas) * ncols + 1.0, 0.5 * len(betas) * nrows + 2.2),
                             squeeze=False, layout="constrained")
    other_metrics, beta_free = set(), False
    for ax, alg in zip(axes.flat, algorithms):
        part = rate_map[rate_map["algorithm"] == alg]
        metric = str(part["metric"].iloc[0]) if "metric" in part and len(part) else "duality_gap"
        codes = np.full((len(betas), len(etas)), np.nan)
        for _, cell in part.iterrows():
            i, j = np.searchsorted(betas, cell["beta"]), np.searchsorted(etas, cell["eta"])
            cls = cell["class"]
            codes[i, j] = CLASSES.index(cls)
            count = int(round(cell[f"frac_{cls}"] * cell["runs"]))
            text = f"{count}/{int(cell['runs'])}"
            ratio = cell["slope_ratio"]
            if cls == "converges" and np.isfinite(ratio):
                text = f"{ratio:.1f}\n{text}"
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5, linespacing=1.0,
                    color="white" if cls in _DARK_CLASSES else "black")
        ax.imshow(np.ma.masked_invalid(codes), cmap=cmap, vmin=-0.5, vmax=len(CLASSES) - 0.5, origin="lower",
                  aspect="auto")
        xs, ys = [], []  # the staircase ηβ = 1 between cells
        for i, beta in enumerate(betas):
            j = np.searchsorted(etas * beta, 1.0 + 1e-9, side="right")  # cells with ηβ ≤ 1 are left of j
            xs += [j - 0.5, j - 0.5]
            ys += [i - 0.5, i + 0.5]
        ax.plot(xs, ys, color="black", linewidth=1.6)
        ax.set_xticks(range(len(etas)), [f"{e:g}" for e in etas], fontsize=7.5, rotation=90)
        ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas], fontsize=7.5)
        title = _series_label(alg)
        if metric != "duality_gap":
            other_metrics.add(metric.replace("_", " "))
            beta_free |= ignores_beta(alg, metric)
            title += f" ({metric.replace('_', ' ')}{'; β-free' if ignores_beta(alg, metric) else ''})"
        ax.set_title(title, fontsize=10, fontweight="bold" if alg == HIGHLIGHT else "normal")
    for k, ax in enumerate(axes.flat[: len(algorithms)]):
        if k // ncols == nrows - 1 or k + ncols >= len(algorithms):
            ax.set_xlabel(r"step $\eta$")
        if k % ncols == 0:
            ax.set_ylabel(r"$\beta$")
    for ax in list(axes.flat)[len(algorithms):]:
        ax.remove()
    runs = int(rate_map["runs"].max())
    handles = [Patch(color=CLASS_COLORS[c], label=c) for c in CLASSES]
    handles.append(Line2D([], [], color="black", linewidth=1.6, label=r"$\eta\beta = 1$ (right of it: $\eta\beta > 1$)"))
    measured = "Panels measure the duality gap Gap_β (convergence to π*_β)"
    if other_metrics:
        measured += (f"; those titled ({', '.join(sorted(other_metrics))}) the exploitability max_y P(y ≻ π_t) − ½ "
                     "(convergence to the original game's Nash equilibrium; no theory ratio)")
    if beta_free:
        measured += (".\nβ-free: neither the update at step η nor the exploitability depends on β; the rows differ "
                     "only by the rounding of η = 4·lr/(Nβ), which chaotic runs amplify")
    caption = (f"{measured}.\nColour: the class of most of the {runs} runs of a cell (ties: the worse class); "
               f"\"k/{runs}\": the runs in that class; above it, in converging cells: measured log-gap slope / log(1 − ηβ).\n"
               "converges: gap below 1e-12, or 100× down and still falling; plateaus: 100× down, no longer falling; "
               f"slow: still falling, less than 100× down; oscillates: neither; diverges: {DIVERGES_DEFINITION}.")
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False,
               title=caption, title_fontsize=8.5)
    return fig


def plot_slope_comparison(rate_map) -> plt.Figure:
    """Measured log-gap slopes (cells of :func:`egpo_core.rates.rate_map` whose majority converges)
    against the theory's log(1 − ηβ) (left; the lines are 1× and 2×) and against the local prediction
    2·log ρ of the linearized update (right; the line is equality; cells predicted 0 are left out). Axes
    show the decay per step, −slope; EGPO on top, hollow."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
    fallback: dict = {}
    ok = (rate_map["class"] == "converges") & (rate_map["slope"] < 0)
    part = rate_map[ok]
    names = list(dict.fromkeys(part["algorithm"]))
    for k in _ordered(names):
        alg = names[k]
        sub = part[part["algorithm"] == alg]
        color = _series_color(alg, fallback)
        style = dict(s=42, facecolors="none", edgecolors=[color], linewidths=1.4, zorder=5) if alg == HIGHLIGHT \
            else dict(s=16, color=color, zorder=2)
        theory = sub[np.isfinite(sub["theory_slope"])]
        axes[0].scatter(-theory["theory_slope"], -theory["slope"], label=_series_label(alg), **style)
        if "predicted_slope" in sub:
            pred = sub[np.isfinite(sub["predicted_slope"]) & (sub["predicted_slope"] < 0)]
            axes[1].scatter(-pred["predicted_slope"], -pred["slope"], label=_series_label(alg), **style)
    for ax, title in zip(axes, [r"vs theory: $-\log(1-\eta\beta)$", r"vs linearization at $\pi^*_\beta$: $-2\log\rho$"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo, hi = ax.get_xlim()
        grid = np.geomspace(lo, hi, 50)
        ax.plot(grid, grid, "k-", linewidth=0.8, label="equal")
        if ax is axes[0]:
            ax.plot(grid, 2 * grid, "k:", linewidth=0.8, label="2×")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("predicted decay of log gap per step")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("measured decay of log gap per step")
    axes[0].legend(fontsize=8)
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
    grey guide ∝ x^power through the first reference point. EGPO is drawn on top with hollow markers,
    so an algorithm it coincides with stays visible inside them. Non-positive values are dropped."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.2), layout="constrained")
    else:
        fig = ax.figure
    fallback: dict = {}
    names = list(dict.fromkeys(frame["algorithm"]))
    for k in _ordered(names):
        alg = names[k]
        med = frame[frame["algorithm"] == alg].groupby(x)[y].median()
        med = med[med > 0]
        highlight = alg == HIGHLIGHT
        ax.plot(med.index, med.values, "o-", color=_series_color(alg, fallback), label=_series_label(alg),
                markersize=7 if highlight else 3.5, linewidth=2.0 if highlight else 1.2,
                markerfacecolor="none" if highlight else None, markeredgewidth=1.5 if highlight else None,
                zorder=5 if highlight else 2)
    if reference is not None and reference in frame:
        ref = frame.groupby(x)[reference].median()
        ref = ref[ref > 0]
        ax.plot(ref.index, ref.values, "k--", linewidth=1.4, label=reference_label, zorder=6)  # visible on EGPO
    if power is not None:
        xs = np.sort(frame[x].unique()).astype(float)
        anchor = frame.groupby(x)[reference or y].median().iloc[0]
        ax.plot(xs, anchor * (xs / xs[0]) ** power, color="grey", linewidth=0.8,
                label=rf"guide $\propto$ {x}$^{{{power:g}}}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"final {y} (median of runs)")
    if title:
        ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    order = _legend_order(labels, names)
    ax.legend([handles[k] for k in order], [labels[k] for k in order], fontsize=7)
    return fig


def plot_conventions_dumbbell(table, conventions: Sequence[str] = ("reference", "default"), ncols: int = 3,
                              floor: float = GAP_CUTOFF) -> plt.Figure:
    """Median final gap per algorithm under two conventions, one panel per setting (a frame from
    :func:`egpo_core.summaries.conventions_table`): circle = first conventions, square = second, joined
    by a line (equal medians: a dot inside a square). Medians below ``floor`` (e.g. exactly 0) are drawn
    on the ``floor`` line, labelled "≤ floor"."""
    settings = list(dict.fromkeys(table["setting"]))
    nrows = -(-len(settings) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 2.8 * nrows + 0.5), squeeze=False, sharex=True,
                             layout="constrained")
    first, second = conventions
    low = int(np.floor(np.log10(floor)))
    for ax, setting in zip(axes.flat, settings):
        part = table[table["setting"] == setting].reset_index(drop=True)
        for k, row in part.iterrows():
            a = max(row[f"median_{first}"], floor)
            b = max(row[f"median_{second}"], floor)
            color = algorithm_color(row["algorithm"], default=None)
            ax.plot([a, b], [k, k], color=color, linewidth=1.5)
            # the square is larger and under the dot: equal medians show a dot inside a square
            ax.plot(b, k, "s", color=color, markersize=8, mfc="white")
            ax.plot(a, k, "o", color=color, markersize=4.5)
        ax.set_yticks(range(len(part)), [_series_label(a) for a in part["algorithm"]], fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(10.0 ** (low - 0.3), 1.5)
        ticks = [10.0**e for e in range(low, 1, 2)]
        ax.set_xticks(ticks, [rf"$\leq 10^{{{low}}}$"] + [rf"$10^{{{int(np.log10(t))}}}$" for t in ticks[1:]])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_title(setting, fontsize=10)
        ax.invert_yaxis()
    for ax in axes[-1, :]:
        ax.set_xlabel("median final duality gap")
    for ax in list(axes.flat)[len(settings):]:
        ax.remove()
    handles = [Line2D([], [], marker="o", color="0.3", markersize=4.5, linestyle="", label=f"{first} conventions"),
               Line2D([], [], marker="s", color="0.3", markersize=8, mfc="white", linestyle="",
                      label=f"{second} conventions (a dot inside a square: the same median)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    return fig


def plot_benchmarks(presets_table, scaling_table) -> plt.Figure:
    """Simulator speed: seconds per paper preset (bars, annotated with µs per trajectory-step) and the
    scaling of the wall time with N, runs and steps (one panel per ``vary`` value of ``scaling_table``,
    log–log). The grey guides pass through the largest case (where fixed overheads matter least):
    solid ∝ size (slope 1: time proportional to the varied size), dotted ∝ N² (slope 2, the O(N²)
    product Pπ of each step); the legend says so."""
    varies = list(dict.fromkeys(scaling_table["vary"])) if "vary" in scaling_table else []
    fig, axes = plt.subplots(1, 1 + len(varies), figsize=(4.8 * (1 + len(varies)), 4.0), squeeze=False,
                             layout="constrained")
    ax = axes[0, 0]
    names = list(presets_table["preset"])
    ax.barh(range(len(names)), presets_table["seconds"], color="#4c72b0")
    for k, (sec, per) in enumerate(zip(presets_table["seconds"], presets_table["us_per_trajectory_step"])):
        ax.text(sec, k, f" {sec:.2f} s ({per:.2g} µs/step)", va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (5 algorithms × all runs)")
    ax.set_xlim(0, presets_table["seconds"].max() * 1.7)
    ax.set_title("paper presets", fontsize=10)
    column = {"N": "num_actions", "runs": "runs", "steps": "iterations"}
    for ax, vary in zip(axes[0, 1:], varies):
        part = scaling_table[scaling_table["vary"] == vary].sort_values(column.get(vary, vary))
        xs = part[column.get(vary, vary)].to_numpy(dtype=float)
        ax.plot(xs, part["seconds"], "o-", color="#c44e52", label="measured")
        last = part["seconds"].iloc[-1]
        ax.plot(xs, last * xs / xs[-1], color="grey", linewidth=0.9, label=f"∝ {vary} (slope 1)")
        if vary == "N":
            ax.plot(xs, last * (xs / xs[-1]) ** 2, color="grey", linestyle=":", linewidth=0.9,
                    label="∝ N² (slope 2)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(vary)
        ax.set_title(f"scaling with {vary}", fontsize=10)
        ax.legend(fontsize=8, title="guides through the largest case", title_fontsize=7)
    if varies:
        axes[0, 1].set_ylabel("seconds")
    return fig
