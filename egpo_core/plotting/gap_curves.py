"""The paper's figures of a simulation result: the duality gap of each run against the number of
updates, smoothed, cut at 1e-6 and binned (:func:`gap_curve`), one panel per run (:func:`plot_gap_panels`)
or one run per setting side by side (:func:`plot_picked`).
"""

from __future__ import annotations

import warnings
from typing import Mapping, NamedTuple, Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..algorithms import algorithm_color, display_name
from ..results import SimulationResult
from ..summaries import bin_curve, moving_average, records_per_window
from .style import (
    _GAP_TOP,
    GAP_CUTOFF,
    HIGHLIGHT,
    _draw_series,
    _legend_order,
    _ordered,
    _style_handles,
    add_title,
    format_gap_axis,
)

__all__ = ["GapCurve", "gap_curve", "plot_gap_panels", "plot_picked"]
_MAX_POINTS = 250  # bins per curve: fine enough for a panel, coarse enough to average an oscillation


class GapCurve(NamedTuple):
    """A plotted curve: ``value`` at ``steps``, with the min–max envelope ``low``–``high`` of each bin."""

    steps: np.ndarray
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray


def gap_curve(
    steps: np.ndarray, values: np.ndarray, window: int = 10, cutoff: float = GAP_CUTOFF, max_points: int = _MAX_POINTS
) -> GapCurve:
    """The plotted curve of one run.

    1. Trailing moving average over ``window`` steps (:func:`egpo_core.summaries.moving_average` over
       round(window / record spacing) records; the curve starts at t = s_0).
    2. Cut at the first smoothed value below ``cutoff`` (or non-finite): that point is kept, drawn at
       ``cutoff`` itself when it is a finite value below it, and nothing after it is drawn.
    3. Bins of consecutive records, at most ``max_points`` (250) (:func:`egpo_core.summaries.bin_curve`): each
       bin's mean step and mean value, and its minimum and maximum (the envelope).
    """
    smoothed = moving_average(values, records_per_window(steps, window))
    return _cut_and_bin(steps, smoothed, smoothed, smoothed, cutoff, max_points)


def _cut_and_bin(steps, value, low, high, cutoff: float, max_points: int) -> GapCurve:
    """Steps 2 and 3 of :func:`gap_curve` for a curve ``value`` with a band ``low``–``high`` (the band's
    bins take the lowest ``low`` and the highest ``high``; it is clipped at ``cutoff``)."""
    x = np.asarray(steps, dtype=np.float64)
    value, low, high = (np.asarray(v, dtype=np.float64) for v in (value, low, high))
    below = np.flatnonzero(~(value >= cutoff) | ~np.isfinite(value))
    if below.size:
        end = below[0]
        if np.isfinite(value[end]):  # a converged run ends on the cutoff line
            end += 1
            value = np.append(value[: end - 1], cutoff)
        x, value, low, high = x[:end], value[:end], low[:end], high[:end]
    low, high = np.clip(low, cutoff, None), np.clip(high, cutoff, None)
    bx, bvalue, _, _ = bin_curve(x, value, max_points)
    _, _, blow, _ = bin_curve(x, low, max_points)
    _, _, _, bhigh = bin_curve(x, high, max_points)
    return GapCurve(bx, bvalue, blow, bhigh)


def _band_note(window: int, cutoff: float) -> str:
    return (f"curves: {window}-step moving average, cut at the first value below {cutoff:g}; "
            "bands: min–max within each plotted bin")


def _config_text(result: SimulationResult, config: int) -> str:
    cfg = result.configs.iloc[config]
    return rf"$\beta$ = {cfg['beta']:g}, $\eta$ = {cfg['eta']:.3g} (SGD lr {cfg['lr']:g})"


def plot_gap_panels(
    result: SimulationResult,
    runs: Sequence[int] | None = None,
    *,
    config: int = 0,
    metric: str = "duality_gap",
    ncols: int = 4,
    window: int = 10,
    cutoff: float = GAP_CUTOFF,
    max_points: int = _MAX_POINTS,
    title: str | None = None,
) -> plt.Figure:
    """The paper's per-setting figure: a panel with the median over runs (its band: the runs'
    inter-quartile range), then one panel per run of configuration ``config``, all on one y-axis
    [``cutoff``, 1] (:func:`gap_curve` for each curve), axis labels once per row and column, and the
    legend (algorithms, line styles) in the last panel slot. ``title`` (e.g. the finding) goes above
    the panels, with the configuration and the smoothing stated below it."""
    runs = list(range(result.runs)) if runs is None else list(runs)
    used = len(runs) + 1  # the median panel and the runs; the legend takes the next slot
    nrows = -(-(used + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.5 * nrows + 0.6), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    gradient = result.settings.get("gradient", "exact")
    style = "-" if gradient == "sampled" else "--"
    data = result.values[metric][config]
    records = records_per_window(result.steps, window)
    for a in _ordered(result.algorithms):
        name = result.algorithms[a]
        options = dict(color=algorithm_color(name), style=style, label=display_name(name),
                       highlight=name == HIGHLIGHT)
        smoothed = moving_average(data[a], records)
        with warnings.catch_warnings():  # a record where every run diverged stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            q25, median, q75 = np.nanquantile(np.where(np.isfinite(smoothed), smoothed, np.nan),
                                              [0.25, 0.5, 0.75], axis=0)
        _draw_series(axes.flat[0], *_cut_and_bin(result.steps, median, q25, q75, cutoff, max_points), **options)
        for ax, run in zip(axes.flat[1:], runs):
            _draw_series(ax, *_cut_and_bin(result.steps, smoothed[run], smoothed[run], smoothed[run], cutoff,
                                           max_points), **options)
    axes.flat[0].set_title(f"median of {result.runs} runs (band: quartiles)", fontsize=9, fontweight="bold")
    for ax, run in zip(axes.flat[1:], runs):
        ax.set_title(f"run {run}", fontsize=9)
    finite = data[np.isfinite(data)]
    top = max(_GAP_TOP, float(finite.max()) if finite.size else _GAP_TOP)
    for k, ax in enumerate(axes.flat[:used]):
        format_gap_axis(ax, cutoff, top)
        ax.tick_params(labelsize=8, labelleft=k % ncols == 0, labelbottom=k + ncols >= used)
        if k % ncols == 0:
            ax.set_ylabel(metric.replace("_", " "), fontsize=9)
        if k + ncols >= used:  # no run panel below it: label its x axis
            ax.set_xlabel("# updates $t$", fontsize=9)
    legend_ax = axes.flat[used]
    legend_ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    order = _legend_order(labels, result.algorithms)
    styles = _style_handles([gradient])
    legend_ax.legend([handles[k] for k in order] + styles, [labels[k] for k in order] + [h.get_label() for h in styles],
                     loc="center", fontsize=8.5, frameon=False)
    for ax in list(axes.flat)[used + 1:]:
        ax.remove()
    subtitle = f"{_config_text(result, config)}, {gradient} gradients; {_band_note(window, cutoff)}"
    add_title(fig, subtitle if title is None else f"{title}\n{subtitle}", fontsize=10)
    return fig


def plot_picked(
    results: Mapping[str, SimulationResult],
    run: int = 0,
    *,
    metric: str = "duality_gap",
    window: int = 10,
    cutoff: float = GAP_CUTOFF,
    max_points: int = _MAX_POINTS,
    title: str | None = None,
) -> plt.Figure:
    """The paper's one-row "picked" figure: run ``run`` of each result (e.g. each β), side by side, on
    one y-axis [``cutoff``, 1]; panel titles are the mapping's keys, each with β and η."""
    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 3.8), squeeze=False, sharey=True,
                             layout="constrained")
    gradients = set()
    for ax, (label, result) in zip(axes.flat, results.items()):
        gradient = result.settings.get("gradient", "exact")
        gradients.add(gradient)
        data = result.values[metric][0]
        for a in _ordered(result.algorithms):
            name = result.algorithms[a]
            c = gap_curve(result.steps, data[a, run], window, cutoff, max_points)
            _draw_series(ax, *c, color=algorithm_color(name), style="-" if gradient == "sampled" else "--",
                         label=display_name(name), highlight=name == HIGHLIGHT)
        format_gap_axis(ax, cutoff)
        ax.set_title(f"{label}\n{_config_text(result, 0)}", fontsize=10)
        ax.set_xlabel("# updates $t$")
    axes[0, 0].set_ylabel(metric.replace("_", " "))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    order = _legend_order(labels, next(iter(results.values())).algorithms)
    fig.legend([handles[k] for k in order] + _style_handles(sorted(gradients)),
               [labels[k] for k in order] + [h.get_label() for h in _style_handles(sorted(gradients))],
               loc="outside lower center", ncol=len(labels) + len(gradients), fontsize=9, frameon=False)
    note = f"run {run}; {_band_note(window, cutoff)}"
    add_title(fig, note if title is None else f"{title}\n{note}", fontsize=10)
    return fig
