"""Summaries of simulation results for tables and figures: thinned copies, medians beside the reference
implementation's, the two conventions side by side, median-over-runs curves, and rounding of
committed tables to the digits that do not depend on the machine."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .simulator import SimulationResult

__all__ = [
    "thin",
    "summary_vs_reference",
    "conventions_table",
    "records_per_window",
    "moving_average",
    "bin_curve",
    "median_curves",
    "round_significant",
    "short_label",
    "gap_finding",
]


def thin(result: SimulationResult, max_steps: int = 1000) -> SimulationResult:
    """A copy of ``result`` keeping at most ``max_steps`` + 1 recorded steps, evenly spaced in index,
    always including the first (t = 0) and the last (t = T). Values are not averaged: each kept step
    holds the recorded value at that step (for compact tidy data files)."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    n = result.steps.size
    if n <= max_steps + 1:
        keep = np.arange(n)
    else:
        keep = np.unique(np.round(np.linspace(0, n - 1, max_steps + 1)).astype(int))
    values = {name: data[..., keep] for name, data in result.values.items()}
    return dataclasses.replace(result, configs=result.configs.copy(), steps=result.steps[keep], values=values,
                               settings=dict(result.settings, thinned_from=int(n)))


def summary_vs_reference(result: SimulationResult, preset: str, threshold: float = 1e-6) -> pd.DataFrame:
    """``result.summary()`` (median final gap over runs, runs reaching ``threshold``) beside the
    reference implementation's numbers (the paper's code re-run on CPU: ``presets.REFERENCE_MEDIANS`` / ``REFERENCE_REACHED``;
    a reached count missing there means 0 of 10 when the median is reported, e.g. "1.5e-5").

    Columns: preset, algorithm, median_final, reached, runs, reference_median, reference_reached,
    conventions, iterations.
    """
    from .presets import REFERENCE_MEDIANS, REFERENCE_REACHED

    summary = result.summary(threshold=threshold)
    ref_med = REFERENCE_MEDIANS.get(preset, {})
    ref_reached = REFERENCE_REACHED.get(preset, {})
    frame = pd.DataFrame({
        "preset": preset,
        "algorithm": summary["algorithm"],
        "median_final": summary["median_final"],
        "reached": summary["reached"],
        "runs": summary["runs"],
    })
    frame["reference_median"] = [ref_med.get(a, np.nan) for a in frame["algorithm"]]
    frame["reference_reached"] = [ref_reached.get(a, 0) if a in ref_med else np.nan for a in frame["algorithm"]]
    frame["conventions"] = result.settings.get("conventions")
    frame["iterations"] = result.settings.get("iterations")
    return frame


def conventions_table(results: Mapping[str, Mapping[str, SimulationResult]]) -> pd.DataFrame:
    """Median final gap per (setting, algorithm) under each conventions value, side by side.

    ``results[setting][conventions]`` is a :class:`SimulationResult`. Columns: setting, algorithm,
    median_<conventions> for each, reached_<conventions> for each, and ratio = median of the first
    conventions / median of the second (e.g. reference / default).
    """
    rows = []
    for setting, by_conv in results.items():
        names = list(by_conv)
        summaries = {conv: res.summary().set_index("algorithm") for conv, res in by_conv.items()}
        for alg in summaries[names[0]].index:
            row = {"setting": setting, "algorithm": alg}
            for conv in names:
                row[f"median_{conv}"] = float(summaries[conv].loc[alg, "median_final"])
                row[f"reached_{conv}"] = int(summaries[conv].loc[alg, "reached"])
            if len(names) >= 2:
                den = row[f"median_{names[1]}"]
                row["ratio"] = row[f"median_{names[0]}"] / den if den > 0 else np.inf
            rows.append(row)
    return pd.DataFrame(rows)


def records_per_window(steps: np.ndarray, window: int) -> int:
    """How many records a moving average over ``window`` steps spans, for records every
    s_1 − s_0 steps (``record_every``): max(1, round(window / (s_1 − s_0)))."""
    steps = np.asarray(steps)
    spacing = float(steps[1] - steps[0]) if steps.size > 1 else 1.0
    return max(1, int(round(window / spacing)))


def moving_average(values: np.ndarray, records: int) -> np.ndarray:
    """Trailing moving average along the last axis over ``records`` records: entry i is the mean of
    records max(0, i − records + 1) … i (the first entries average the records there are, so the
    curve still starts at t = 0). Each mean is a direct sum, not a difference of running sums, so a
    gap of 1e-15 after gaps of order 1 keeps its digits. Same shape as ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if records <= 1:
        return values.copy()
    head = min(records - 1, values.shape[-1])
    partial = np.cumsum(values[..., :head], axis=-1) / np.arange(1, head + 1)
    if values.shape[-1] < records:
        return partial
    full = np.lib.stride_tricks.sliding_window_view(values, records, axis=-1).mean(axis=-1)
    return np.concatenate([partial, full], axis=-1)


def bin_curve(
    steps: np.ndarray, values: np.ndarray, max_points: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """At most ``max_points`` points of a curve without aliasing: the first and the last record are
    bins of their own (the curve starts at s_0 and ends at s_T exactly), the records between them are
    split into ``max_points`` − 2 consecutive bins of (nearly) equal size, and each bin gives its mean
    step, mean value, minimum and maximum (the min–max envelope of what the bin holds; a curve that
    oscillates faster than the bins shows as a band instead of a random subsample of its peaks and
    troughs). With at most ``max_points`` records every record is its own bin. Returns
    (steps, mean, low, high)."""
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.size <= max(max_points, 3):
        return steps, values, values.copy(), values.copy()
    inner = np.linspace(1, values.size - 1, max_points - 1).astype(int)[:-1]
    starts = np.unique(np.concatenate([[0], inner, [values.size - 1]]))
    counts = np.diff(np.append(starts, values.size))
    return (np.add.reduceat(steps, starts) / counts, np.add.reduceat(values, starts) / counts,
            np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts))


def median_curves(
    results: Mapping[str, SimulationResult],
    metric: str = "duality_gap",
    config: int = 0,
    window: int = 10,
    max_points: int = 200,
    algorithms: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Tidy median-over-runs curves with the inter-quartile band, for figures that compare results.

    For each ``label → result`` and algorithm: each run's metric is smoothed by a trailing moving
    average over ``window`` steps (:func:`moving_average`; ``window`` counts steps, so with
    ``record_every`` = k it spans window/k records), then the median, 25 % and 75 % quantiles over
    runs are taken at each record (non-finite runs are ignored; all-NaN records stay NaN). Long curves
    are reduced to ``max_points`` bins of consecutive records (:func:`bin_curve`): ``median`` is the
    bin's mean median, ``q25`` the lowest 25 % quantile in the bin and ``q75`` the highest 75 %
    quantile, so an oscillation faster than the bins widens the band instead of aliasing the line.
    Columns: label, algorithm, step, median, q25, q75, gradient (the result's "exact"/"sampled").
    """
    frames = []
    for label, result in results.items():
        data = result.values[metric][config]
        steps = result.steps
        records = records_per_window(steps, window)
        for a, alg in enumerate(result.algorithms):
            if algorithms is not None and alg not in algorithms:
                continue
            curves = moving_average(data[a], records)
            curves = np.where(np.isfinite(curves), curves, np.nan)
            with warnings.catch_warnings():  # all-NaN records (every run diverged) stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                q25, median, q75 = np.nanquantile(curves, [0.25, 0.5, 0.75], axis=0)
            x, median, _, _ = bin_curve(steps, median, max_points)
            _, _, q25, _ = bin_curve(steps, q25, max_points)
            _, _, _, q75 = bin_curve(steps, q75, max_points)
            frames.append(pd.DataFrame({"label": label, "algorithm": alg, "step": x,
                                        "median": median, "q25": q25, "q75": q75,
                                        "gradient": result.settings.get("gradient", "exact")}))
    return pd.concat(frames, ignore_index=True)


def round_significant(frame: pd.DataFrame, digits: int = 6) -> pd.DataFrame:
    """A copy of ``frame`` with every float column rounded to ``digits`` significant digits (NaN and
    ±inf kept). For committed tables: the equilibria (Newton, linear programming) and eigenvalues
    behind them agree between machines to ~1e-9 relative, not to the last bit, so storing six digits
    keeps a re-run on another machine from rewriting the file."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = [float(f"{v:.{digits}g}") for v in out[column].to_numpy()]
    return out



def short_label(name: str) -> str:
    """The figure label of an algorithm, "OMD" for Online IPO 1 (titles are short)."""
    from .algorithms import display_name

    if name == "oipo1":
        return "OMD"
    return display_name(name, default=name)


def gap_finding(summary: pd.DataFrame, threshold: float = 1e-6, highlight: str = "egpo") -> str:
    """A one-line finding for a figure title, from one configuration's ``result.summary()`` (columns
    algorithm, median_final, reached, runs): which algorithm ends lowest, and how many runs of each
    fell below ``threshold`` at some step, e.g. "EGPO ends lowest (median final gap 3e-05); below 1e-06:
    EGPO 10/10, OMD 4/10, Nash-MD 3/10 runs". An algorithm with no such run is left out of the list."""
    table = summary.reset_index(drop=True)
    best = table.loc[table["median_final"].idxmin()]
    text = f"{short_label(best['algorithm'])} ends lowest (median final gap {best['median_final']:.2g})"
    if best["algorithm"] != highlight and highlight in set(table["algorithm"]):
        mine = table.loc[table["algorithm"] == highlight, "median_final"].iloc[0]
        text += f", {short_label(highlight)} {mine:.2g}"
    reached = table[table["reached"] > 0].sort_values("reached", ascending=False, kind="stable")
    if reached.empty:
        return text + f"; no run falls below {threshold:g}"
    counts = ", ".join(f"{short_label(r.algorithm)} {r.reached}/{r.runs}" for r in reached.itertuples())
    return text + f"; below {threshold:g}: {counts} runs"
