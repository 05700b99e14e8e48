"""Figures of simulation results, in the style of the EGPO paper (Zhou, Fazel, Du 2025).

The duality gap on a log axis from 1e-6 to 1 against the number of updates t: each run's gap is
smoothed by a trailing moving average over 10 steps (steps, not records: with ``record_every`` = k the
window spans 10/k records), cut where it first falls below 1e-6 (the last point is drawn on the 1e-6
line, labelled "≤ 1e-6", so a gap of exactly 0 is not drawn as 1e-17), and reduced to at most a
thousand points by bins of consecutive records whose min–max envelope is drawn as a light band (an
oscillation faster than the bins shows as a band, not as an aliased zigzag). One colour per
algorithm; dashed for exact and solid for sampled gradients; EGPO, the paper's algorithm, drawn on
top with sparse markers.

Three modules: :mod:`~egpo_core.plotting.style` (what every figure shares: the algorithms' colours
and display names from :mod:`egpo_core.algorithms`, EGPO on top, the gap axis, legends, titles, and
:func:`save_figure`, the project's one figure-saving routine), :mod:`~egpo_core.plotting.gap_curves`
(the paper's figures of a simulation result) and :mod:`~egpo_core.plotting.analysis` (the notebooks'
figures of rate maps, sweeps, conventions and benchmarks); every name is importable from
``egpo_core.plotting``.

Importing this package leaves matplotlib's backend alone: figures are made with pyplot under whatever
backend the caller has (inline in a notebook, Agg on a headless machine) and :func:`save_figure` writes
them with ``Figure.savefig``, which needs no display.
"""

from .analysis import (
    CLASS_COLORS,
    plot_benchmarks,
    plot_conventions_dumbbell,
    plot_final_metric,
    plot_median_grid,
    plot_rate_map,
    plot_slope_comparison,
)
from .gap_curves import GapCurve, gap_curve, plot_gap_panels, plot_picked
from .style import GAP_CUTOFF, HIGHLIGHT, add_title, algorithm_colors, figure_dir, format_gap_axis, save_figure

__all__ = [
    "HIGHLIGHT",
    "GAP_CUTOFF",
    "algorithm_colors",
    "GapCurve",
    "gap_curve",
    "format_gap_axis",
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
