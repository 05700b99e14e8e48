"""From judgements to results: the tidy win-rate rows, the per-comparison counts and ``summary.json``.

:class:`Results` takes each comparison's judgement records as the evaluation makes them
(:meth:`Results.add`: its win rate with its bootstrap interval on each split, the position bias, the
missing judgements and why), then gives the tidy table (:meth:`Results.winrates`, the ``winrates.csv``
columns) and the summary (:meth:`Results.summary`). Formulas: the package docstring.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .judging import position_bias, preferences
from .settings import REFERENCE, EvaluationSettings, ModelSpec, derive_seed
from .statistics import MIN_INTERVAL_PROMPTS, bootstrap_indices, win_rate_ci
from .tables import table_notes

__all__ = ["WINRATE_COLUMNS", "Results"]

#: The columns of the tidy win-rate table (``winrates.csv`` / ``.parquet``), in order.
WINRATE_COLUMNS = [
    "model", "opponent", "algorithm", "epoch", "win_rate", "ci_low", "ci_high", "n_pairs", "n_missing",
    "split", "comparison", "opponent_algorithm", "opponent_epoch", "n_prompts", "position_bias", "n_bias_pairs",
    "few_prompts",
]


class Results:
    """The rows and comparisons of one evaluation of ``models`` (π_ref first) on ``n`` prompts × ``K``
    samples; ``splits`` maps ``all`` / ``selection`` / ``report`` to their prompts, each split drawing
    its bootstrap resamples once (seeded by ``settings.seed`` and the split's name), so the entries of a
    split are paired."""

    def __init__(self, models: Sequence[ModelSpec], splits: Mapping[str, Sequence[int]], settings: EvaluationSettings,
                 n: int, K: int) -> None:
        self.by_name = {m.name: m for m in models}
        self.splits = splits
        self.settings = settings
        self.n, self.K = n, K
        self.draws = {
            name: bootstrap_indices(len(idx), settings.bootstrap, derive_seed(settings.seed, "bootstrap", name))
            for name, idx in splits.items()
        }
        self.rows: list[dict[str, Any]] = []
        self.comparisons: list[dict[str, Any]] = []

    def add(self, a: str, b: str, kind: str, records: list[dict[str, Any]], split_names: Sequence[str],
            both_ways: bool) -> dict[str, dict]:
        """Record comparison ``kind`` of a against b on ``split_names`` (and of b against a, the win rate
        and interval mirrored, when ``both_ways``); returns the statistics of a against b per split."""
        s = self.settings
        P = preferences(records, self.n, self.K, both_orders=s.both_orders)
        stats = {}
        for split in split_names:
            st = win_rate_ci(P, self.splits[split], indices=self.draws[split])
            bias, n_bias = position_bias(records, self.splits[split])
            stats[split] = st
            for model, opponent, flip in [(a, b, False)] + ([(b, a, True)] if both_ways else []):
                mm, oo = self.by_name[model], self.by_name[opponent]
                self.rows.append({
                    "model": model,
                    "opponent": opponent,
                    "algorithm": mm.algorithm or mm.name,
                    "epoch": mm.epoch,
                    "win_rate": 1.0 - st["win_rate"] if flip else st["win_rate"],
                    "ci_low": 1.0 - st["ci_high"] if flip else st["ci_low"],
                    "ci_high": 1.0 - st["ci_low"] if flip else st["ci_high"],
                    "n_pairs": st["n_pairs"],
                    "n_missing": st["n_missing"],
                    "split": split,
                    "comparison": kind,
                    "opponent_algorithm": oo.algorithm or oo.name if oo.name != REFERENCE else REFERENCE,
                    "opponent_epoch": oo.epoch,
                    "n_prompts": len(self.splits[split]),
                    "position_bias": bias,
                    "n_bias_pairs": n_bias,
                    "few_prompts": len(self.splits[split]) < MIN_INTERVAL_PROMPTS,
                })
        reasons = Counter(r["error"] for r in records if r.get("error"))
        self.comparisons.append({
            "model": a, "opponent": b, "comparison": kind,
            "n_missing": {k: v["n_missing"] for k, v in stats.items()},
            "position_bias": position_bias(records)[0] if s.both_orders else None,
            "identical_pairs": sum(1 for r in records if r.get("same")),
            "missing_reasons": dict(reasons),
        })
        return stats

    def winrates(self) -> Any:
        """The tidy table (a pandas DataFrame of :data:`WINRATE_COLUMNS`; epochs as nullable integers)."""
        import pandas as pd

        winrates = pd.DataFrame(self.rows, columns=WINRATE_COLUMNS)
        for column in ("epoch", "opponent_epoch"):
            winrates[column] = winrates[column].astype("Int64")
        return winrates

    def summary(
        self,
        winrates: Any,
        fingerprint: Mapping[str, Any],
        generations: Mapping[str, Mapping[tuple[int, int], Mapping[str, Any]]],
        selected: Mapping[str, list[str]],
        judge: Any,
    ) -> dict[str, Any]:
        """What ``summary.json`` holds: the settings, every model with its response counts, the splits,
        the selection, the comparisons, the judge and its mean position bias, the intervals' flags,
        the missing judgements and the tables' captions and notes."""
        s = self.settings
        selection, report = self.splits["selection"], self.splits["report"]
        vs_rows = winrates[(winrates["comparison"] == "vs_reference") & (winrates["split"] == "all")]
        pw_rows = winrates[(winrates["comparison"] == "pairwise") & (winrates["split"] == "report")]
        all_bias = [
            c["position_bias"] for c in self.comparisons
            if c["position_bias"] is not None and not math.isnan(c["position_bias"])
        ]
        return {
            "settings": {"fingerprint": fingerprint, "analysis": {
                "selection_fraction": s.selection_fraction, "best_per_algorithm": s.best_per_algorithm, "bootstrap": s.bootstrap,
            }},
            "models": [
                {
                    "name": m.name,
                    "source": str(m.source) if isinstance(m.source, (str, Path)) else type(m.source).__name__,
                    "algorithm": m.algorithm or m.name if m.name != REFERENCE else REFERENCE,
                    "epoch": m.epoch,
                    "run": m.run,
                    "responses": len(generations[m.name]),
                    "empty": sum(1 for r in generations[m.name].values() if r["text"] == ""),
                    "blank": sum(1 for r in generations[m.name].values() if not r["text"].strip()),
                    "truncated": sum(1 for r in generations[m.name].values() if r["truncated"]),
                    "mean_tokens": float(np.mean([r["num_tokens"] for r in generations[m.name].values()])),
                }
                for m in self.by_name.values()
            ],
            "splits": {"selection": selection, "report": report},
            "selected": selected,
            "comparisons": self.comparisons,
            "judge": {"name": judge.name, "kind": judge.kind, "identity": fingerprint["judge"]},
            "position_bias": float(np.mean(all_bias)) if all_bias else None,
            "intervals": {
                "level": 0.95,
                "bootstrap": s.bootstrap,
                "min_prompts": MIN_INTERVAL_PROMPTS,
                "flagged_entries": int(winrates["few_prompts"].sum()),
                "note": f"entries from fewer than {MIN_INTERVAL_PROMPTS} prompts are flagged (few_prompts, a dagger "
                "in the tables, never bold): a bootstrap over so few prompts understates the uncertainty",
            },
            "missing": int(sum(c["n_missing"].get("all", c["n_missing"].get("report", 0)) for c in self.comparisons)),
            "tables": {
                "vs_reference": f"win rate (%) against {REFERENCE}, all {self.n} prompts × {self.K} samples",
                "pairwise": f"row beats column (%), the {len(report)} report prompts × {self.K} samples; "
                f"models chosen on the {len(selection)} selection prompts",
                "notes": {
                    "vs_reference": table_notes(vs_rows, both_orders=s.both_orders, latex=False),
                    "pairwise": table_notes(pw_rows, both_orders=s.both_orders, latex=False),
                },
            },
        }
