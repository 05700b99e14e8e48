"""Decided verdicts: for every pair of algorithms, which one ends lower, with an exact test over seeds.

Floating point differs between CPUs, so the sampled tokens, and with them every run, differ from one
machine to another after the first updates: what holds on any machine is a statement about the
distribution over training seeds, decided by a test whose error rate is known. Per metric
m ∈ {``duality_gap`` (Gap_β), ``exploitability`` (distance to the unregularized Nash equilibrium,
β = 0)} and training seed s, the final value is x_{a,s} = m(π_θ) after the last update of algorithm a.

For a pair (A, B), on the seeds both ran, the paired differences are d_s = x_{A,s} − x_{B,s}, and:

* **interval** — the percentile bootstrap of the mean difference: the (1 − level)/2 and (1 + level)/2
  quantiles of mean_s d_s over ``resamples`` draws of the seeds with replacement
  (:func:`lm_runs.evaluate.statistics.bootstrap_indices`); also the median difference;
* **test** — the two-sided exact Wilcoxon signed-rank test of "d is symmetric about 0"
  (:func:`signed_rank_test`): zero differences dropped, n' the others, r_s the rank of |d_s| among
  them (mid-ranks for ties), W⁺ = Σ_{d_s > 0} r_s; under the null the signs are independent fair
  coins given the ranks, so P(W⁺ = w) = #{ε ∈ {0, 1}^{n'} : Σ ε_s r_s = w} / 2^{n'} is counted
  exactly (any n', ties included) and p = min(1, 2·min(P(W⁺ ≤ w), P(W⁺ ≥ w))). The smallest p it can
  give is 2/2^{n'} (:func:`smallest_p`): 0.25 at 3 seeds, 0.002 at 10;
* **Holm** — over the pairs of one metric (m = K(K − 1)/2 tests): with p sorted ascending,
  p̃_(k) = max_{j ≤ k} min(1, (m − j + 1)·p_(j)) (:func:`holm`), which keeps the chance of any false
  verdict among the m at most α whatever the dependence between the pairs;
* **verdict** — "A lower than B (p = p̃)" when p̃ ≤ α and W⁺ < W⁻ (B lower when W⁺ > W⁻), otherwise
  "undecided at n = …".

Outputs (:func:`write_verdicts`): ``final_per_seed.csv`` (tidy: metric, algorithm, seed, value),
``verdicts.csv`` (one row per metric and pair) and ``verdicts.json`` (the test, α, the level, n, what
n can decide, every row).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from egpo_core.files import atomic_write
from lm_runs.evaluate.statistics import bootstrap_indices

__all__ = [
    "VERDICT_METRICS",
    "TEST_NAME",
    "final_values",
    "signed_rank_test",
    "smallest_p",
    "holm",
    "pair_verdicts",
    "decidable",
    "verdict_inputs",
    "write_verdicts",
]

#: The metrics a verdict is given for: the β-gap and the distance to the unregularized equilibrium.
VERDICT_METRICS = ("duality_gap", "exploitability")
TEST_NAME = "two-sided exact Wilcoxon signed-rank test on the per-seed paired differences, Holm-corrected over the pairs"


def final_values(metrics: pd.DataFrame, names: Sequence[str] = VERDICT_METRICS, update: int | None = None) -> pd.DataFrame:
    """Tidy (metric, algorithm, seed, value): every run's value of each metric in ``names`` at ``update``
    (default: the last update in ``metrics``, the benchmark's tidy ``metrics.csv``)."""
    update = int(metrics["update"].max()) if update is None else int(update)
    part = metrics[(metrics["update"] == update) & metrics["metric"].isin(names)]
    out = part[["metric", "algorithm", "seed", "value"]].sort_values(["metric", "algorithm", "seed"], kind="stable")
    return out.reset_index(drop=True)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def signed_rank_test(differences: Sequence[float]) -> dict[str, float | int]:
    """The two-sided exact Wilcoxon signed-rank test of ``differences`` (module docstring): zeros dropped,
    mid-ranks for ties, the null distribution of W⁺ counted over all 2^{n'} sign vectors by dynamic
    programming on the doubled ranks (integers). Returns n_nonzero, w_plus, w_minus and p (1.0 when
    every difference is 0)."""
    d = np.asarray(differences, dtype=float)
    if not np.all(np.isfinite(d)):
        raise ValueError(f"differences must be finite, got {d.tolist()}")
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return {"n_nonzero": 0, "w_plus": 0.0, "w_minus": 0.0, "p": 1.0}
    doubled = np.rint(2 * _ranks(np.abs(d))).astype(np.int64)  # mid-ranks are halves: 2r is an integer
    total = int(doubled.sum())
    counts = np.zeros(total + 1, dtype=object)  # exact integers (2^n overflows int64 only past n = 62)
    counts[0] = 1
    for r in doubled:
        shifted = np.zeros_like(counts)
        shifted[r:] = counts[: total + 1 - r]
        counts = counts + shifted
    w2 = int(doubled[d > 0].sum())
    lower, upper = int(counts[: w2 + 1].sum()), int(counts[w2:].sum())
    p = min(1.0, 2 * min(lower, upper) / 2**n)
    return {"n_nonzero": n, "w_plus": w2 / 2, "w_minus": (total - w2) / 2, "p": float(p)}


def smallest_p(n: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give on ``n`` non-zero differences: 2/2^n
    (every difference of one sign), capped at 1."""
    return min(1.0, 2.0 / 2**n)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order: with p sorted ascending,
    p̃_(k) = max_{j ≤ k} min(1, (m − j + 1)·p_(j))."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(adjusted)
    return out


def decidable(n: int, pairs: int, alpha: float) -> str:
    """One sentence: what ``n`` seeds can decide among ``pairs`` Holm-corrected pairs at level ``alpha``."""
    best = smallest_p(n)
    if best * pairs > alpha:
        return (f"n = {n} seeds cannot decide any pair: the exact test's smallest two-sided p, 2/2^{n} = {best:.3g}, "
                f"exceeds Holm's first threshold α/{pairs} = {alpha / pairs:.3g}; the curves and intervals are suggestive only")
    return (f"n = {n} seeds can decide a pair whose Holm-adjusted p is at most α = {alpha:g} (smallest possible p "
            f"2/2^{n} = {best:.3g}, Holm's first threshold α/{pairs} = {alpha / pairs:.3g}); an undecided pair is no evidence of equality")


def pair_verdicts(
    final: pd.DataFrame,
    algorithms: Sequence[str] | None = None,
    *,
    alpha: float = 0.05,
    level: float = 0.95,
    resamples: int = 10000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per metric of ``final`` (:func:`final_values`) and pair (A, B) of ``algorithms`` (default:
    those in ``final``, in its order), A before B: n_seeds (the seeds both ran), a_lower / b_lower / ties
    (seed counts), mean_diff and median_diff of d = x_A − x_B, ci_low / ci_high (bootstrap of the mean),
    w_plus, w_minus, p, p_holm (Holm over the metric's pairs), decided, lower (A, B or empty) and
    verdict (module docstring). ``ValueError`` for α or the level outside (0, 1)."""
    if not (0 < alpha < 1 and 0 < level < 1):
        raise ValueError(f"alpha and level must be in (0, 1), got {alpha} and {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    algorithms = list(dict.fromkeys(final["algorithm"])) if algorithms is None else list(algorithms)
    tail = (1 - level) / 2
    rows: list[dict[str, Any]] = []
    for metric in dict.fromkeys(final["metric"]):
        wide = final[final["metric"] == metric].pivot(index="seed", columns="algorithm", values="value")
        block = []
        for a, b in itertools.combinations(algorithms, 2):
            both = wide[[a, b]].dropna() if a in wide and b in wide else pd.DataFrame(columns=[a, b])
            d = (both[a] - both[b]).to_numpy(dtype=float)
            test = signed_rank_test(d)
            row: dict[str, Any] = {
                "metric": metric, "a": a, "b": b, "n_seeds": len(d),
                "a_lower": int((d < 0).sum()), "b_lower": int((d > 0).sum()), "ties": int((d == 0).sum()),
                "mean_diff": float(d.mean()) if len(d) else math.nan,
                "median_diff": float(np.median(d)) if len(d) else math.nan,
                "ci_low": math.nan, "ci_high": math.nan, **{k: test[k] for k in ("w_plus", "w_minus", "p")},
            }
            if len(d):
                means = d[bootstrap_indices(len(d), resamples, seed)].mean(axis=1)
                row["ci_low"], row["ci_high"] = (float(q) for q in np.quantile(means, [tail, 1 - tail]))
            block.append(row)
        for row, adjusted in zip(block, holm([r["p"] for r in block])):
            row["p_holm"] = float(adjusted)
            row["decided"] = bool(adjusted <= alpha and row["w_plus"] != row["w_minus"])
            row["lower"] = (row["a"] if row["w_plus"] < row["w_minus"] else row["b"]) if row["decided"] else ""
            if row["decided"]:
                higher = row["b"] if row["lower"] == row["a"] else row["a"]
                row["verdict"] = f"{row['lower']} lower than {higher} (p = {adjusted:.2g})"
            else:
                row["verdict"] = f"undecided at n = {row['n_seeds']} (p = {adjusted:.2g})"
        rows += block
    columns = ["metric", "a", "b", "n_seeds", "a_lower", "b_lower", "ties", "mean_diff", "median_diff", "ci_low", "ci_high",
               "w_plus", "w_minus", "p", "p_holm", "decided", "lower", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def verdict_inputs(metrics: pd.DataFrame, algorithms: Sequence[str], against: pd.DataFrame | None = None
                   ) -> tuple[pd.DataFrame, list[str]]:
    """The tidy records and the algorithms a run's verdicts are given for: its own, and with ``against``
    (another run's records at another step η, ``metrics_against.csv``: :func:`.reuse.against_metrics`) those
    too, their algorithms after the run's — one table, so every pair, within the run or across the two, is
    tested and Holm-corrected alike."""
    if against is None or not len(against):
        return metrics, list(algorithms)
    return pd.concat([metrics, against[metrics.columns]], ignore_index=True), [*algorithms, *dict.fromkeys(against["algorithm"])]


def write_verdicts(out: str | Path, metrics: pd.DataFrame, algorithms: Sequence[str], *, alpha: float = 0.05,
                   level: float = 0.95, resamples: int = 10000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Write ``final_per_seed.csv``, ``verdicts.csv`` and ``verdicts.json`` into ``out`` (each atomically)
    from the benchmark's tidy ``metrics``; returns (final values, verdicts, the JSON's content)."""
    out = Path(out)
    final = final_values(metrics)
    verdicts = pair_verdicts(final, algorithms, alpha=alpha, level=level, resamples=resamples, seed=seed)
    n = int(final.groupby("algorithm")["seed"].nunique().min()) if len(final) else 0
    pairs = len(algorithms) * (len(algorithms) - 1) // 2
    content = {
        "test": TEST_NAME, "alpha": alpha, "interval": f"{level:.0%} percentile bootstrap interval over seeds ({resamples} resamples)", "n_seeds": n, "pairs_per_metric": pairs,
        "update": int(metrics["update"].max()), "what_n_decides": decidable(n, pairs, alpha),
        "verdicts": {m: verdicts[verdicts.metric == m]["verdict"].tolist() for m in dict.fromkeys(verdicts["metric"])},
        "rows": json.loads(verdicts.to_json(orient="records")),
    }
    atomic_write(out / "final_per_seed.csv", final.to_csv(index=False))
    atomic_write(out / "verdicts.csv", verdicts.to_csv(index=False))
    atomic_write(out / "verdicts.json", json.dumps(content, indent=1))
    return final, verdicts, content
