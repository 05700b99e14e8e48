"""Tidy frames and figures of the language-model notebooks (``notebooks/benchmarks.py``,
``notebooks/lm_synthetic_benchmark.py``, ``notebooks/lm_winrates.py``).

Only reshaping and drawing: the numbers come from ``benchmarks/bench_lm.py``'s JSON,
``lm_runs.synthetic_benchmark``'s ``metrics.csv`` / ``simulation.csv`` / ``comparison.csv`` and
``lm_runs.evaluate``'s ``winrates.csv``. Algorithms are named as on the command line (``egpo``,
``oipo1``, ``oipo2``, ``nashmd``, ``nashmdpg``), shown by the display names and drawn in the colours
``egpo_core.algorithms`` declares (the same colour for an algorithm in every figure of the project).
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from egpo_core.algorithms import PAPER_ALGORITHMS, algorithm_color, display_name, get_algorithm

__all__ = [
    "REFERENCE_LABEL",
    "label",
    "colour",
    "EQUILIBRIUM_LABEL",
    "ordered",
    "marker",
    "draw_band",
    "coinciding",
    "coinciding_note",
    "format_log_axis",
    "integer_ticks",
    "bench_frame",
    "plot_bench",
    "seed_bands",
    "plot_seed_bands",
    "vs_reference_percent",
    "plot_winrates_by_epoch",
]

#: bench_lm phases, bottom to top of a stacked bar.
PHASES = ("generation", "judging", "forward_backward", "other")
_PHASE_LABELS = {"generation": "generation", "judging": "judging", "forward_backward": "forward + backward",
                 "other": "other (optimizer, snapshot, loop)"}
#: The anchors' keys in benchmarks/lm_anchors.json and how they are labelled.
ANCHOR_SOURCES = {"reference_trainer": "reference trainer", "trl": "TRL"}
OURS = "this repository"
#: The colour of a series that is no algorithm of ``egpo_core.algorithms``.
_OTHER_COLOR = "#808080"
#: Hollow markers, one per algorithm of the paper (in ``PAPER_ALGORITHMS`` order), then one per round
#: method (``lm_runs.rounds``, by registry name): eleven algorithms, eleven shapes, so curves that coincide stay
#: visible as overlapping distinct shapes.
_MARKERS = ("s", "^", "D", "v", "o")
_ROUND_MARKERS = {"inpo": "P", "comal": "<", "mpo": ">", "mnpo": "h", "sppo": "*", "onpo": "X"}
#: π_ref and π*_β as rendered in every label (mathtext: subscripts, no literal underscores).
REFERENCE_LABEL = r"$\pi_{\mathrm{ref}}$"
EQUILIBRIUM_LABEL = r"$\pi^*_\beta$"


def _resolved(alg: str) -> tuple[str, str]:
    """The name ``egpo_core.algorithms`` knows ``alg`` by, and a label suffix: the synthetic benchmark's
    ``sppo_rounds`` (SPPO trained in rounds, beside the online SPPO) → (``sppo``, " (rounds)"), a round method
    at another step η (``onpo@eta=1``, ``--against``) → (``onpo``, " (η = 1)"), an alias → (its registry name,
    ""), any other name → (itself, "")."""
    from lm_runs.synthetic_benchmark.settings import core_name, round_alg, split_eta  # here: that package imports this module

    base, eta = split_eta(alg)
    try:
        core = core_name(base)
    except ValueError:
        return alg, ""
    suffix = " (rounds)" if base != core and round_alg(base) == "sppo" else ""
    return core, suffix + (f" (η = {eta:g})" if eta is not None else "")


def label(alg: str) -> str:
    """The display name ``egpo_core.algorithms`` declares (``nashmdpg`` → ``Nash-MD-PG``, ``sppo_rounds`` →
    ``SPPO (rounds)``); other names unchanged."""
    core, suffix = _resolved(alg)
    return display_name(core, default=alg) + suffix


def colour(alg: str) -> str:
    """The colour ``egpo_core.algorithms`` declares for the algorithm (``sppo_rounds``: SPPO's; grey for any other name)."""
    return algorithm_color(_resolved(alg)[0], default=_OTHER_COLOR)


def ordered(names) -> list[str]:
    """``names`` without repeats, the paper's algorithms first in the paper's order
    (``egpo_core.algorithms.PAPER_ALGORITHMS``, any name or alias), then the round methods (inpo, comal, mpo,
    mnpo, sppo, onpo), then the others as given."""
    names = list(dict.fromkeys(names))
    order = list(PAPER_ALGORITHMS) + list(_ROUND_MARKERS)

    def rank(name: str) -> int:
        try:
            return order.index(get_algorithm(_resolved(name)[0]).name)
        except ValueError:  # an unknown name, or an algorithm of neither kind
            return len(order)

    return sorted(names, key=rank)  # stable: the others keep their order


def marker(alg: str) -> str:
    """The algorithm's hollow marker, by any name or alias (``x`` for a name outside the paper's algorithms
    and the round methods)."""
    try:
        name = get_algorithm(_resolved(alg)[0]).name
    except ValueError:
        return "x"
    return _MARKERS[PAPER_ALGORITHMS.index(name)] if name in PAPER_ALGORITHMS else _ROUND_MARKERS.get(name, "x")


def draw_band(ax, curve: pd.DataFrame, alg: str, *, style: str = "-", label_suffix: str = "", band: bool = True) -> None:
    """One algorithm's curve from :func:`seed_bands` rows (update, median, low, high): the median as a
    line in the algorithm's colour with its hollow :func:`marker` (at most about 12 per curve, at the same
    updates for every algorithm, so curves that coincide show every shape), labelled with its display name
    + ``label_suffix``, and with ``band`` the min–max over seeds as a shaded band."""
    x = curve["update"].to_numpy()
    every = max(1, len(x) // 12)
    ax.plot(x, curve["median"], style, color=colour(alg), label=label(alg) + label_suffix, marker=marker(alg),
            markersize=5, markerfacecolor="none", markeredgewidth=1.0, markevery=every)
    if band:
        ax.fill_between(x, curve["low"], curve["high"], color=colour(alg), alpha=0.15, lw=0)


def coinciding(curves: pd.DataFrame, key: str = "algorithm", x: str = "update", columns: Sequence[str] = ("median", "low", "high")) -> list[list[str]]:
    """Groups (at least two, in :func:`ordered` order) of ``key`` values whose curves are equal at every
    ``x``: the same ``x`` values and the same ``columns`` there (exactly). Such curves are drawn on top of
    each other; a figure names them (:func:`coinciding_note`)."""
    signature: dict[bytes, list[str]] = {}
    for name in ordered(curves[key]):
        part = curves[curves[key] == name].sort_values(x)
        values = part[[x, *columns]].to_numpy(dtype=float)
        signature.setdefault(values.tobytes(), []).append(name)
    return [group for group in signature.values() if len(group) > 1]


def coinciding_note(groups: Sequence[Sequence[str]]) -> str:
    """One sentence naming each group of :func:`coinciding` (empty when there is none)."""
    if not groups:
        return ""
    named = "; ".join(" = ".join(label(a) for a in group) for group in groups)
    return f"identical curves, drawn on top of each other (their markers overlap): {named}"


def format_log_axis(ax, axis: str = "y") -> None:
    """A log axis readable without counting decades, every label a plain number of one size: under one
    decade about five evenly spaced ticks; else the decades and the 2, 3 and 5 between them (the 2 and 5
    only from three decades on)."""
    from matplotlib.ticker import NullFormatter

    scale = ax.yaxis if axis == "y" else ax.xaxis
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    scale.set_major_formatter(plain)
    if high < 10 * low:
        scale.set_major_locator(MaxNLocator(nbins=5))
        scale.set_minor_formatter(NullFormatter())
    else:
        scale.set_major_locator(LogLocator(base=10.0))
        scale.set_minor_locator(LogLocator(base=10.0, subs=(2.0, 3.0, 5.0) if high < 1000 * low else (2.0, 5.0)))
        scale.set_minor_formatter(plain)
    ax.tick_params(axis=axis, which="both", labelsize=8)


def integer_ticks(ax, axis: str = "x") -> None:
    """Integer tick positions only (updates and epochs are counts)."""
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


# --------------------------------------------------------------------------------------------------
# bench_lm: seconds per update beside the anchors
# --------------------------------------------------------------------------------------------------


def bench_frame(results: Mapping[str, Mapping], anchors: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Tidy: one row per (algorithm, source, phase) — source ``this repository`` with bench_lm's four
    phases (their medians) and ``total`` (the median seconds per update), each anchor source with its
    ``total`` only; ``seconds`` and, for our rows, ``peak_rss_mib``.

    ``results``: bench_lm's ``--json`` (algorithm → seconds_per_update, peak_rss_mib, breakdown);
    ``anchors``: ``lm_anchors.json``'s ``seconds_per_update`` (algorithm → source → seconds)."""
    rows = []
    for alg in ordered(list(results) + list(anchors)):
        if alg in results:
            r = results[alg]
            rows.append(dict(algorithm=alg, source=OURS, phase="total", seconds=float(r["seconds_per_update"]),
                             peak_rss_mib=float(r["peak_rss_mib"])))
            rows += [dict(algorithm=alg, source=OURS, phase=p, seconds=float(r["breakdown"][p]),
                          peak_rss_mib=float(r["peak_rss_mib"])) for p in PHASES]
        for key, source in ANCHOR_SOURCES.items():
            if key in anchors.get(alg, {}):
                rows.append(dict(algorithm=alg, source=source, phase="total", seconds=float(anchors[alg][key]),
                                 peak_rss_mib=np.nan))
    return pd.DataFrame(rows, columns=["algorithm", "source", "phase", "seconds", "peak_rss_mib"])


def plot_bench(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per algorithm: our seconds per update as a bar stacked by phase, the anchors' bars beside it
    (hatched, labelled with their value); the peak RSS above our bar; ``title`` (the finding) above the
    panel, wrapped to the figure's width."""
    algs = ordered(frame["algorithm"])
    sources = [OURS] + [s for s in ANCHOR_SOURCES.values() if s in set(frame["source"])]
    width = 0.8 / len(sources)
    phase_colors = dict(zip(PHASES, plt.get_cmap("tab20c")([0, 4, 8, 12])))
    fig, ax = plt.subplots(figsize=(2.0 + 1.5 * len(algs), 4.4), layout="constrained")
    ours = frame[frame["source"] == OURS]
    for j, source in enumerate(sources):
        offset = (j - (len(sources) - 1) / 2) * width
        for i, alg in enumerate(algs):
            x = i + offset
            if source == OURS:
                part = ours[ours["algorithm"] == alg].set_index("phase")
                if part.empty:
                    continue
                bottom = 0.0
                for p in PHASES:
                    value = float(part.loc[p, "seconds"])
                    ax.bar(x, value, width, bottom=bottom, color=phase_colors[p], edgecolor=colour(alg), linewidth=1.2,
                           label=_PHASE_LABELS[p] if i == 0 else None)
                    bottom += value
                total, rss = float(part.loc["total", "seconds"]), float(part.loc["total", "peak_rss_mib"])
                ax.text(x, max(total, bottom), f"{total:.3f}\n{rss:.0f} MiB", ha="center", va="bottom", fontsize=7)
            else:
                hit = frame[(frame["source"] == source) & (frame["algorithm"] == alg) & (frame["phase"] == "total")]
                if hit.empty:
                    continue
                value = float(hit["seconds"].iloc[0])
                ax.bar(x, value, width, color="white", edgecolor="0.35", hatch="//" if j == 1 else "..",
                       label=source if not ax.get_legend_handles_labels()[1].count(source) else None)
                ax.text(x, value, f"{value:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(algs)), [label(a) for a in algs])
    for tick, alg in zip(ax.get_xticklabels(), algs):
        tick.set_color(colour(alg))
    ax.set_ylabel("seconds per update")
    ax.set_ylim(0, frame["seconds"].max() * 1.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.set_title(f"seconds per NLHF update: {OURS} (left, by phase) beside the anchors", fontsize=10)
    if title:
        from egpo_core.plotting import add_title  # wrapped to the figure's width

        add_title(fig, title, fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------------
# synthetic benchmark: curves per algorithm over seeds
# --------------------------------------------------------------------------------------------------


def seed_bands(metrics: pd.DataFrame, names: Sequence[str] = ("duality_gap", "exploitability")) -> pd.DataFrame:
    """From the benchmark's tidy ``metrics.csv`` (algorithm, seed, update, metric, value): per
    (metric, algorithm, update) the median, minimum and maximum over seeds and the number of seeds."""
    part = metrics[metrics["metric"].isin(names)]
    grouped = part.groupby(["metric", "algorithm", "update"])["value"]
    out = grouped.agg(median="median", low="min", high="max", seeds="count").reset_index()
    order = {a: k for k, a in enumerate(ordered(out["algorithm"]))}
    out = out.sort_values(["metric", "algorithm", "update"], key=lambda s: s.map(order) if s.name == "algorithm" else s)
    return out.reset_index(drop=True)


def plot_seed_bands(bands: pd.DataFrame, simulation: pd.DataFrame | None = None, eta: float | None = None,
                    reference: Mapping[str, float] | None = None, title: str = "") -> plt.Figure:
    """One panel per metric of ``bands`` (log axis): median over seeds (line) and min–max (band) per
    algorithm; with ``simulation`` (the benchmark's simulation.csv) and ``eta``, the simulated curve of
    the same class games at the grid's η nearest to ``eta`` (on a log scale), dashed; ``reference``:
    metric → π_ref's value (grey line). The legend: in the first panel for up to 5 algorithms, below the panels for more."""
    metrics = list(dict.fromkeys(bands["metric"]))
    if simulation is not None and eta is not None:
        grid = np.unique(simulation["eta"].to_numpy(dtype=float))
        eta = float(grid[np.argmin(np.abs(np.log(grid) - np.log(eta)))])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.6 * len(metrics), 4.4), squeeze=False, layout="constrained")
    for ax, metric in zip(axes[0], metrics):
        part = bands[bands["metric"] == metric]
        for alg in ordered(part["algorithm"]):
            draw_band(ax, part[part["algorithm"] == alg], alg)
            if simulation is not None and eta is not None:
                sim = simulation[(simulation["metric"] == metric) & (simulation["algorithm"] == alg)
                                 & np.isclose(simulation["eta"], eta)]
                ax.plot(sim["update"], sim["value"], "--", color=colour(alg), lw=1)
        if reference and metric in reference:
            ax.axhline(reference[metric], color="0.5", lw=0.8, ls=":", label=REFERENCE_LABEL)
        ax.set_yscale("log")
        format_log_axis(ax)
        integer_ticks(ax)
        ax.set_xlabel("update")
        ax.set_title(metric.replace("_", " ") + (f" (dashed: simulation, η = {eta:.3g})" if eta is not None
                                                  and simulation is not None else ""), fontsize=10)
    if bands["algorithm"].nunique() <= 5:
        axes[0, 0].legend(fontsize=8)
    else:  # ten curves: the legend below the panels, over none of them
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=6, fontsize=8)
    seeds = int(bands["seeds"].max()) if len(bands) else 0
    note = coinciding_note(coinciding(bands[bands["metric"] == metrics[0]])) if metrics else ""
    from egpo_core.plotting import add_title  # wrapped to the figure's width; the constrained layout makes room

    add_title(fig, (title or f"class-level metrics, median and min–max over {seeds} seeds") + (f"\n{note}" if note else ""),
              fontsize=11 if not (note or title) else 9)
    return fig


# --------------------------------------------------------------------------------------------------
# win rates against π_ref by epoch, beside the paper's
# --------------------------------------------------------------------------------------------------


def vs_reference_percent(winrates: pd.DataFrame, source: str, split: str = "all") -> pd.DataFrame:
    """Tidy rows of ``lm_runs.evaluate``'s ``winrates.csv`` against π_ref on ``split``: algorithm, epoch,
    win_rate_percent, ci_low_percent, ci_high_percent, n_pairs, n_prompts, few_prompts (the evaluation's
    flag: an interval over fewer than ``MIN_INTERVAL_PROMPTS`` prompts understates the uncertainty), source."""
    part = winrates[(winrates["comparison"] == "vs_reference") & (winrates["split"] == split)]
    out = pd.DataFrame({
        "algorithm": part["algorithm"], "epoch": part["epoch"].astype(int),
        "win_rate_percent": 100 * part["win_rate"], "ci_low_percent": 100 * part["ci_low"],
        "ci_high_percent": 100 * part["ci_high"], "n_pairs": part["n_pairs"], "n_prompts": part["n_prompts"],
        "few_prompts": part["few_prompts"].astype(bool), "source": source,
    })
    return out.sort_values(["algorithm", "epoch"]).reset_index(drop=True)


def plot_winrates_by_epoch(frame: pd.DataFrame, sources: Sequence[str] | None = None) -> plt.Figure:
    """One panel per ``source`` of a tidy frame (algorithm, epoch, win_rate_percent, optional
    ci_low_percent / ci_high_percent / few_prompts / n_prompts, source): win rate against π_ref by epoch
    per algorithm, with the bootstrap interval as a band where given; 50 % dashed. Intervals the
    evaluation flags (``few_prompts``: fewer than 30 prompts, where the percentile bootstrap is too
    narrow) are drawn as hatched outlines, not filled bands, and the panel says that such an interval
    excluding 50 % is no evidence of a difference; curves that coincide are named."""
    sources = list(sources or dict.fromkeys(frame["source"]))
    fig, axes = plt.subplots(1, len(sources), figsize=(5.8 * len(sources), 4.0), squeeze=False)
    for ax, source in zip(axes[0], sources):
        part = frame[frame["source"] == source]
        for alg in ordered(part["algorithm"]):
            d = part[part["algorithm"] == alg].sort_values("epoch")
            ax.plot(d["epoch"], d["win_rate_percent"], "-", marker=marker(alg), ms=5, mfc="none", color=colour(alg),
                    label=label(alg))
            if "ci_low_percent" in d and d["ci_low_percent"].notna().any():
                if "few_prompts" in d and d["few_prompts"].any():
                    ax.fill_between(d["epoch"], d["ci_low_percent"], d["ci_high_percent"], facecolor="none",
                                    edgecolor=colour(alg), alpha=0.35, hatch="////", lw=0)
                else:
                    ax.fill_between(d["epoch"], d["ci_low_percent"], d["ci_high_percent"], color=colour(alg), alpha=0.12, lw=0)
        ax.axhline(50, color="0.5", lw=0.8, ls="--")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"win rate against {REFERENCE_LABEL} (%)")
        notes = [coinciding_note(coinciding(part, x="epoch", columns=("win_rate_percent",)))]
        if "few_prompts" in part and part["few_prompts"].any():
            prompts = f" ({int(part['n_prompts'].max())} here)" if "n_prompts" in part else ""
            notes.append(f"hatched: 95 % bootstrap intervals over fewer than 30 prompts{prompts}, too narrow: "
                         "one that excludes 50 % is no evidence of a difference")
        note = "\n".join(textwrap.fill(n, 75) for n in notes if n)
        ax.set_title(source + (f"\n{note}" if note else ""), fontsize=10 if not note else 8)
        epochs = sorted(part["epoch"].unique())
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
