"""The benchmark's own figures: ``gap_curves``, ``simulation``, ``length_normalized`` and ``verdicts``
(PNG + PDF each), from the run's tidy frames (:func:`benchmark_figures`) or from a finished run's folder
(:func:`redraw`).

Curves are the median over seeds with the min–max band (``lm_runs.plots.seed_bands`` and
``draw_band``), each algorithm in the colour, under the display name and with the hollow marker
``lm_runs.plots`` gives it (colours and names from ``egpo_core.algorithms``, as in every figure of the
project); curves that coincide are named on the figure; updates are integer ticks, log axes carry
labelled minor ticks. ``verdicts`` shows every seed's final β-gap and exploitability and the pair matrix
of :mod:`.verdicts`, with what the run's number of seeds can decide written on it. Files are written by
``egpo_core.plotting.save_figure`` (atomic).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from egpo_core.plotting import add_title, save_figure
from lm_runs.plots import (
    EQUILIBRIUM_LABEL,
    REFERENCE_LABEL,
    coinciding,
    coinciding_note,
    colour,
    draw_band,
    format_log_axis,
    integer_ticks,
    label,
    marker,
    ordered,
    seed_bands,
)

from .settings import BenchmarkSettings, at_eta, split_eta

__all__ = ["benchmark_figures", "verdict_figure", "decided_line", "rising_note", "redraw"]

_METRIC_TITLES = {
    "duality_gap": r"class-level duality gap Gap$_\beta$",
    "exploitability": "exploitability (β = 0): distance to the\nunregularized Nash equilibrium",
    "kl_to_equilibrium": rf"KL({EQUILIBRIUM_LABEL} ‖ $\pi_t$) on classes",
}
_SHORT_TITLES = {"duality_gap": r"final Gap$_\beta$", "exploitability": "final exploitability (β = 0)"}
#: Fewer updates than this stop while the gaps still rise (they rise over the first ~5 updates and are
#: back under π_ref's by update 10 in the 80-update settings).
_SETTLING_UPDATES = 10


def _draw(ax, metrics: pd.DataFrame, metric: str, algorithms, *, style: str = "-", label_suffix: str = "") -> None:
    """Every algorithm's median over seeds of ``metric`` (band: min–max, solid lines only)."""
    bands = seed_bands(metrics, (metric,))
    for a in algorithms:
        draw_band(ax, bands[bands["algorithm"] == a], a, style=style, label_suffix=label_suffix, band=style == "-")


def _legend(fig, ax, algorithms, fontsize: int = 8) -> None:
    """``ax``'s legend: inside the panel for up to 5 algorithms, below the panels for more (eleven curves stay
    visible, the legend covers none of them)."""
    if len(algorithms) <= 5:
        ax.legend(fontsize=fontsize)
    else:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=6, fontsize=fontsize)


def _finish(ax, ylabel: str | None = None) -> None:
    """Log y axis with readable labels, integer update ticks."""
    ax.set_yscale("log")
    format_log_axis(ax)
    integer_ticks(ax)
    ax.set_xlabel("update")
    if ylabel:
        ax.set_ylabel(ylabel)


def rising_note(metrics: pd.DataFrame, updates: int) -> str:
    """A sentence for the figure when some algorithm's final median gap is above π_ref's (update 0):
    which ones, and, under ``_SETTLING_UPDATES`` updates, why (the gaps rise over the first updates in
    every setting, and this run stopped before they fall). Empty otherwise."""
    gap = seed_bands(metrics, ("duality_gap",))
    start = gap[gap["update"] == 0].set_index("algorithm")["median"]
    last = gap[gap["update"] == gap["update"].max()].set_index("algorithm")["median"]
    rising = [a for a in ordered(last.index) if a in start.index and last[a] > start[a]]
    if not rising:
        return ""
    text = f"{', '.join(label(a) for a in rising)}: final median gap above {REFERENCE_LABEL}'s."
    if updates < _SETTLING_UPDATES:
        text += (" The gaps rise over the first updates in every setting and fall later (in the 80-update settings "
                 f"they are below {REFERENCE_LABEL}'s by update 10); this run stops after {updates} updates, before they "
                 "fall: it checks the pipeline, not the algorithms.")
    return text


def decided_line(verdicts: pd.DataFrame) -> str:
    """"Decided: k of m pairs (metric), …" from :func:`.verdicts.pair_verdicts`'s table."""
    parts = [f"{int(g['decided'].sum())} of {len(g)} pairs ({_SHORT_TITLES.get(m, m).replace('final ', '')})"
             for m, g in verdicts.groupby("metric", sort=False)]
    return "Decided: " + ", ".join(parts) + "."


def verdict_figure(final: pd.DataFrame, verdicts: pd.DataFrame, content: Mapping[str, Any],
                   reference: Mapping[str, float] | None = None) -> plt.Figure:
    """Top: every seed's final value per algorithm (hollow markers, a seed's values joined across the
    algorithms: the test is paired), the median as a black bar, π_ref's value dotted; one panel per metric.
    Bottom: the pair matrix per metric, row A against column B: "lower" / "higher" (decided, Holm-adjusted
    p ≤ α) or "undecided", the adjusted p, the mean difference row − column and its bootstrap interval.
    Above: n, the test and what n can decide (``content``: :func:`.verdicts.write_verdicts`'s JSON). The
    panels grow with the number of algorithms K beyond 5 (1.3 in a column, 0.62 in a row of the matrix)."""
    metrics = list(dict.fromkeys(final["metric"]))
    algs = ordered(final["algorithm"])
    width, matrix = max(6.4, 1.3 * len(algs)), max(5.33, 0.62 * len(algs))
    fig, axes = plt.subplots(2, len(metrics), figsize=(width * len(metrics), 4.27 + matrix), squeeze=False,
                             layout="constrained", gridspec_kw={"height_ratios": [4.27, matrix]})
    for col, metric in enumerate(metrics):
        ax = axes[0, col]
        wide = final[final["metric"] == metric].pivot(index="seed", columns="algorithm", values="value")[algs]
        for _, row in wide.iterrows():
            ax.plot(range(len(algs)), row.to_numpy(), color="0.8", lw=0.6, zorder=1)
        for k, a in enumerate(algs):
            ax.plot(np.full(len(wide), k), wide[a], linestyle="none", marker=marker(a), mfc="none", color=colour(a),
                    ms=6, zorder=3)
            ax.hlines(np.median(wide[a].dropna()), k - 0.25, k + 0.25, color="black", lw=2, zorder=4)
        if reference and metric in reference:
            ax.axhline(reference[metric], color="0.5", lw=0.8, ls=":", label=f"{REFERENCE_LABEL} (update 0)")
            ax.legend(fontsize=8, loc="upper left")
        ax.set_xticks(range(len(algs)), [label(a) for a in algs], fontsize=8, rotation=0 if len(algs) <= 5 else 20)
        for tick, a in zip(ax.get_xticklabels(), algs):
            tick.set_color(colour(a))
        ax.set_yscale("log")
        format_log_axis(ax)
        ax.set_title(f"{_SHORT_TITLES.get(metric, metric)}: every seed (grey: one seed), median (bar)", fontsize=10)

        ax = axes[1, col]
        K = len(algs)
        colours = np.ones((K, K, 3))
        part = verdicts[verdicts["metric"] == metric]
        for i, a in enumerate(algs):
            for j, b in enumerate(algs):
                if i == j:
                    colours[i, j] = (1, 1, 1)
                    continue
                hit = part[(part["a"] == a) & (part["b"] == b)]
                sign = 1.0
                if hit.empty:
                    hit, sign = part[(part["a"] == b) & (part["b"] == a)], -1.0
                if hit.empty:
                    continue
                r = hit.iloc[0]
                if r["decided"]:
                    word = "lower" if r["lower"] == a else "higher"
                    colours[i, j] = (0.78, 0.92, 0.78) if word == "lower" else (0.96, 0.80, 0.80)
                else:
                    word = "undecided"
                    colours[i, j] = (0.92, 0.92, 0.92)
                low, high = sorted((sign * r["ci_low"] + 0.0, sign * r["ci_high"] + 0.0))  # + 0.0: no "-0.000"
                ax.text(j, i, f"{word}\np = {r['p_holm']:.2g}\nΔ = {sign * r['mean_diff'] + 0.0:+.3f}\n[{low:+.3f}, {high:+.3f}]",
                        ha="center", va="center", fontsize=7)
        ax.imshow(colours, aspect="auto")
        names = [label(a) for a in algs]
        ax.set_xticks(range(K), names, fontsize=8, rotation=20)
        ax.set_yticks(range(K), names, fontsize=8)
        for tick, a in zip(ax.get_xticklabels() + ax.get_yticklabels(), algs + algs):
            tick.set_color(colour(a))
        ax.set_title(f"{_SHORT_TITLES.get(metric, metric)}, row vs column:\nΔ = row − column, Holm-adjusted p", fontsize=10)
    add_title(fig, f"Final values after {content['update']} updates, n = {content['n_seeds']} training seeds. "
                   f"Test: {content['test']}, α = {content['alpha']:g}; Δ: the mean paired difference, [its {content['interval']}].\n"
                   f"{content['what_n_decides']}. {decided_line(verdicts)}", fontsize=10)
    return fig


def benchmark_figures(out: Path, metrics: pd.DataFrame, metrics_ln: pd.DataFrame | None, sim: pd.DataFrame,
                      comparison: pd.DataFrame, s: BenchmarkSettings, *, n_prompts: int,
                      reference: Mapping[str, float] | None = None,
                      verdicts: tuple[pd.DataFrame, pd.DataFrame, Mapping[str, Any]] | None = None) -> None:
    """Write into ``out``: ``gap_curves`` (gap, exploitability and KL to π*_β per algorithm over the
    updates; π_ref's values dotted), ``simulation`` (the LM's gap beside egpo_core's simulation at the
    common fitted η and at each algorithm's fitted η, dashed), when length-normalized runs exist
    ``length_normalized`` (their gap and KL beside the summed runs of the same seeds), and with
    ``verdicts`` (final values, pair verdicts, their JSON: :func:`.verdicts.write_verdicts`) ``verdicts``
    (:func:`verdict_figure`). ``n_prompts``: the evaluation prompts the metrics average over."""
    out = Path(out)
    algs = list(s.algorithms)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), layout="constrained")
    for ax, (metric, title) in zip(axes, _METRIC_TITLES.items()):
        _draw(ax, metrics, metric, algs)
        if reference and metric in reference:
            ax.axhline(reference[metric], color="0.5", lw=0.8, ls=":", label=f"{REFERENCE_LABEL} (update 0)")
        _finish(ax)
        ax.set_title(title, fontsize=10)
    _legend(fig, axes[0], algs)
    notes = [coinciding_note(coinciding(seed_bands(metrics, ("duality_gap",)))), rising_note(metrics, s.updates)]
    if verdicts is not None:
        notes.append(f"Which algorithm ends lower: the verdicts figure ({verdicts[2]['what_n_decides']}). "
                     f"{decided_line(verdicts[1])}")
    add_title(fig, "\n".join([f"Tiny GPT-2, K = {s.num_classes} classes, β = {s.beta}, {s.updates} updates: median and min–max "
                              f"over {len(s.seeds)} seeds (mean over {n_prompts} evaluation prompts; update 0 = {REFERENCE_LABEL})"]
                             + [n for n in notes if n]), fontsize=9)
    save_figure(fig, out / "gap_curves")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    gap = sim[sim.metric == "duality_gap"]
    for ax, mode in zip(axes, ("common", "fit")):
        _draw(ax, metrics, "duality_gap", algs)
        for _, row in comparison.iterrows():
            eta = row["common_eta"] if mode == "common" else row["eta_fit"]
            curve = gap[(gap.algorithm == row["algorithm"]) & np.isclose(gap.eta, eta)]
            ax.plot(curve["update"], curve["value"], "--", color=colour(row["algorithm"]), lw=1)
        _finish(ax)
        covered = " (the online algorithms)" if s.round_methods() else ""
        ax.set_title(f"simulation{covered} (dashed) at the common fitted η = {comparison['common_eta'].iloc[0]:.3g}"
                     if mode == "common" else f"simulation{covered} (dashed) at each algorithm's fitted η", fontsize=9)
    _legend(fig, axes[0], algs)
    axes[0].set_ylabel(r"class-level duality gap Gap$_\beta$")
    note = coinciding_note(coinciding(seed_bands(metrics, ("duality_gap",))))
    if note:
        add_title(fig, note, fontsize=8)
    save_figure(fig, out / "simulation")

    if metrics_ln is not None and len(metrics_ln):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
        ln_algs = [a for a in algs if a in set(metrics_ln.algorithm)]
        summed = metrics[metrics.seed.isin(metrics_ln.seed.unique())]
        for ax, metric in zip(axes, ("duality_gap", "kl_to_equilibrium")):
            _draw(ax, summed, metric, ln_algs, label_suffix=" summed")
            _draw(ax, metrics_ln, metric, ln_algs, style="--", label_suffix=" length-normalized")
            _finish(ax)
            ax.set_title(_METRIC_TITLES[metric], fontsize=10)
        _legend(fig, axes[0], ln_algs, fontsize=7)
        note = coinciding_note(coinciding(seed_bands(metrics_ln, ("duality_gap",))))
        if note:
            add_title(fig, f"length-normalized: {note}", fontsize=8)
        save_figure(fig, out / "length_normalized")

    if verdicts is not None:
        final, table, content = verdicts
        fig = verdict_figure(*_named_with_eta(final, table, s), content, reference)
        save_figure(fig, out / "verdicts")
    plt.close("all")


def _named_with_eta(final: pd.DataFrame, table: pd.DataFrame, s: BenchmarkSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The verdicts' final values and table as the figure names them: when another run's round methods stand
    there at another η (``--against``: ``onpo@eta=1``), this run's round methods carry their η too
    (``onpo`` → ``onpo@eta=0.125``, drawn "ONPO (η = 0.125)"); otherwise unchanged."""
    if not any(split_eta(a)[1] is not None for a in final["algorithm"]):
        return final, table
    names = {a: at_eta(a, s.round_eta) for a in s.round_methods()}
    table = table.assign(**{c: table[c].replace(names) for c in ("a", "b", "lower")})
    return final.assign(algorithm=final["algorithm"].replace(names)), table


def _settings(values: Mapping[str, Any]) -> BenchmarkSettings:
    """:class:`BenchmarkSettings` from ``summary.json``'s ``settings`` (lists back to tuples; fields it
    lacks keep their defaults)."""
    names = {f.name for f in fields(BenchmarkSettings)}
    return BenchmarkSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})


def redraw(bench: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Recompute the verdicts (``final_per_seed.csv``, ``verdicts.csv``, ``verdicts.json``) and redraw every
    figure of a finished run folder ``bench`` from its tidy files (``summary.json``, ``game.json``,
    ``metrics*.csv`` — ``metrics_against.csv`` too, when the run had ``--against`` —, ``simulation.csv``, ``comparison.csv``) into ``out`` (default ``bench``); returns the
    verdicts' JSON content."""
    from .verdicts import verdict_inputs, write_verdicts

    bench = Path(bench)
    out = bench if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = json.loads((bench / "summary.json").read_text())
    game = json.loads((bench / "game.json").read_text())
    s = _settings(summary["settings"])
    metrics = pd.read_csv(bench / "metrics.csv")
    ln_path = bench / "metrics_length_normalized.csv"
    metrics_ln = pd.read_csv(ln_path) if ln_path.is_file() and ln_path.stat().st_size > 1 else None
    against_path = bench / "metrics_against.csv"
    against = pd.read_csv(against_path) if against_path.is_file() else None
    verdicts = write_verdicts(out, *verdict_inputs(metrics, s.algorithms, against))
    benchmark_figures(out, metrics, metrics_ln, pd.read_csv(bench / "simulation.csv"), pd.read_csv(bench / "comparison.csv"), s,
                      n_prompts=sum(p["split"] == "eval" for p in game["prompts"]), reference=summary["reference"],
                      verdicts=verdicts)
    return verdicts[2]
