"""What every figure of egpo_core shares: each algorithm in the colour and under the display name its
module declares (:func:`egpo_core.algorithms.algorithm_color`, :func:`~egpo_core.algorithms.display_name`),
EGPO, the paper's algorithm, drawn last and thicker with sparse markers, the gap axis from 1e-6 to 1
with its "≤ 1e-6" line, legends in the algorithms' order, wrapped titles, and :func:`save_figure`,
the one routine that writes a figure (PNG and PDF, atomically).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.lines import Line2D

from ..algorithms import ALGORITHMS, algorithm_color, display_name
from ..files import atomic_path

__all__ = ["HIGHLIGHT", "GAP_CUTOFF", "algorithm_colors", "format_gap_axis", "save_figure", "figure_dir", "add_title"]

#: The paper's algorithm: drawn last (on top), thicker, with markers.
HIGHLIGHT = "egpo"

#: Gaps below this are drawn as "≤ 1e-6" (the paper's threshold of a converged run).
GAP_CUTOFF = 1e-6

_GAP_TOP = 1.0
_MARKERS_PER_CURVE = 6


def algorithm_colors() -> dict[str, str]:
    """Registry name → the colour its module declares (:func:`egpo_core.algorithms.algorithm_color`),
    for every registered algorithm."""
    return {name: algorithm_color(name) for name in ALGORITHMS}


def format_gap_axis(ax, cutoff: float = GAP_CUTOFF, top: float = _GAP_TOP) -> None:
    """The gap axis of every figure here: log scale from ``cutoff`` to ``top`` (rounded up to a decade),
    the bottom tick labelled "≤ cutoff" (a curve ending there fell below it)."""
    ax.set_yscale("log")
    low = int(np.floor(np.log10(cutoff)))
    high = int(np.ceil(np.log10(top)))
    ax.set_ylim(cutoff, 10.0**high)
    ticks = [10.0**k for k in range(low, high + 1, 2 if high - low > 4 else 1)]
    labels = [rf"$10^{{{int(round(np.log10(t)))}}}$" for t in ticks]
    labels[0] = rf"$\leq 10^{{{low}}}$"
    ax.set_yticks(ticks, labels)
    ax.yaxis.set_minor_formatter(plt.NullFormatter())


def _draw_series(ax, x, y, low, high, *, color, style: str, label: str, highlight: bool) -> None:
    """One curve with its band; the highlighted one on top, thicker, with sparse hollow markers."""
    if len(x) == 0:
        return
    zorder = 5 if highlight else 2
    if np.any(high > low):
        ax.fill_between(x, low, high, color=color, alpha=0.14, linewidth=0, zorder=zorder - 1)
    options = dict(color=color, label=label, zorder=zorder, linewidth=2.0 if highlight else 1.2)
    if highlight:
        options.update(marker="o", markersize=4.5, markerfacecolor="white", markeredgewidth=1.2,
                       markevery=max(1, len(x) // _MARKERS_PER_CURVE))
    ax.plot(x, y, style, **options)


def _ordered(names: Sequence[str]) -> list[int]:
    """Indices of ``names`` with the highlighted algorithm last (drawn on top)."""
    return sorted(range(len(names)), key=lambda k: names[k] == HIGHLIGHT)


def _style_handles(gradients: Sequence[str]) -> list[Line2D]:
    """Legend entries for the line styles present: dashed = exact, solid = sampled gradients."""
    styles = {"exact": "--", "sampled": "-"}
    return [Line2D([], [], color="0.35", linestyle=styles[g], label=f"{g} gradients")
            for g in ("exact", "sampled") if g in gradients]


def _legend_order(labels: Sequence[str], names: Sequence[str]) -> list[int]:
    """Legend entries in the order of ``names`` (the drawing order puts EGPO last)."""
    rank = {_series_label(n): k for k, n in enumerate(names)}
    return sorted(range(len(labels)), key=lambda k: rank.get(labels[k], len(rank)))


def _series_color(name: str, fallback: dict) -> str | tuple:
    """An algorithm's declared colour; a series that is no algorithm takes the next colour of
    seaborn's "dark" palette, remembered in ``fallback`` for the rest of the figure."""
    color = algorithm_color(name, default=None)
    if color is not None:
        return color
    if name not in fallback:
        fallback[name] = sns.color_palette("dark", 10)[len(fallback) % 10]
    return fallback[name]


def _series_label(name: str) -> str:
    """An algorithm's display name; any other series name unchanged."""
    return display_name(name, default=name)


def save_figure(fig: plt.Figure, path: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150, *, bbox_inches: str | None = None) -> list[Path]:
    """The one figure-saving routine of the project: write the figure as PNG and PDF (``formats``) side
    by side at ``dpi``, each through :func:`egpo_core.files.atomic_path` (complete files or none, the
    user's umask), close the figure, and return the paths written.

    ``path`` is either the PNG's path (``out/gap.png`` → ``out/gap.png`` and ``out/gap.pdf``) or a
    stem without extension, whose dots are kept (``gap_beta0.1`` → ``gap_beta0.1.png``): a final
    suffix is dropped only when it names one of ``formats``. The folder is created if missing.
    ``bbox_inches="tight"`` crops the figure to its drawn content (``Figure.savefig``'s option). PDFs
    carry no creation date, so a re-run writes the same bytes."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower().lstrip(".") in formats else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = stem.parent / f"{stem.name}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata, bbox_inches=bbox_inches)
        written.append(target)
    plt.close(fig)
    return written




def figure_dir(notebook: str, out_dir: str | os.PathLike | None = None) -> Path:
    """Folder for a notebook's figures and tidy data: ``out_dir`` if given (relative to the current
    directory), else the scratch folder ``<repository>/runs/notebooks/<notebook>`` (ignored by git), the
    repository being the folder that holds the ``egpo_core`` package when it also has a ``notebooks/``
    folder (an editable install), the current directory otherwise. Only ``make reproduce``
    (``notebooks/run_all.py``) passes ``out_dir = figures/<notebook>``, the committed gallery. Created if
    missing."""
    if out_dir is not None:
        folder = Path(out_dir)
    else:
        root = Path(__file__).resolve().parents[2]  # <repository>/egpo_core/plotting/style.py
        if not (root / "notebooks").is_dir():
            root = Path.cwd()
        folder = root / "runs" / "notebooks" / notebook
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def add_title(fig: plt.Figure, title: str, fontsize: float = 12) -> plt.Figure:
    """A figure-wide title above the panels, each line wrapped to the figure's width (a character is
    taken as 0.55 of the font size wide). Under a layout engine (the figures of this module use
    matplotlib's constrained layout) the panels make room for it; otherwise tight_layout is re-run."""
    width = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")), fontsize=fontsize)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return fig
