"""The judgements: each pair of responses judged (in both orders by default), failures kept as missing.

:func:`judge_pairs` asks a :class:`~lm_runs.judges.CheckedJudge` in batches through its
``judge_or_missing`` (a pair the judge cannot judge comes back missing, with the reason) and records
``p_ab`` / ``p_ba`` / ``error`` per pair; a pair of identical responses is recorded as ½ without asking
(P(a ≻ a) = ½ for any judge that is consistent under swapping, so asking could only measure the
judge's position bias). :class:`FailureStreak` stops a judge that keeps failing.
:func:`preferences` turns the records into the matrix P_ij and :func:`position_bias` measures the
judge's preference for the response shown first (formulas in the package docstring).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..judges import CheckedJudge, Judgement
from .settings import EvaluationError

__all__ = ["judge_pairs", "preferences", "position_bias", "FailureStreak"]


class FailureStreak:
    """Counts pairs left without a judgement in a row, over every comparison of an evaluation, and
    stops the evaluation at ``limit``: a judge that fails on every pair (a server that is down) should
    not fill the tables with missing entries. Any judged pair resets the count."""

    def __init__(self, judge_name: str, limit: int = 16) -> None:
        self.judge_name = judge_name
        self.limit = limit
        self.count = 0

    def update(self, errors: Sequence[str | None]) -> None:
        """Count the pairs of a batch in order (``errors[k]``: why pair k is missing, None when judged);
        raise :class:`EvaluationError` when ``limit`` missing pairs follow each other."""
        for error in errors:
            if error is None:
                self.count = 0
                continue
            self.count += 1
            if self.count >= self.limit:
                raise EvaluationError(
                    f"judge {self.judge_name} failed on {self.count} pairs in a row (last: {error}); "
                    "is it working? Fix it and rerun: the judgements made so far are kept"
                )


def judge_pairs(
    judge: CheckedJudge,
    prompt_texts: Sequence[str],
    first: Mapping[tuple[int, int], str],
    second: Mapping[tuple[int, int], str],
    keys: Sequence[tuple[int, int]],
    *,
    both_orders: bool = True,
    batch_size: int = 16,
    done: Mapping[tuple[int, int], Mapping[str, Any]] | None = None,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = False,
    desc: str = "judge",
    streak: FailureStreak | None = None,
) -> list[dict[str, Any]]:
    """Judge pair (i, j) = (first[(i, j)], second[(i, j)]) on ``prompt_texts[i]`` for every key not in ``done``.

    Records ``{"prompt": i, "sample": j, "p_ab": P(a ≻ b) | None, "p_ba": P(b ≻ a) | None, "error": str | None}``
    (``p_ba`` only with ``both_orders``, which also asks the judge not to shuffle), ordered by key.
    A pair whose two responses are identical is not asked: it is recorded with ``p_ab`` (and ``p_ba``)
    ½ and ``"same": True``. ``batch_size`` pairs go into one call (twice as many judgements with
    ``both_orders``: the pairs, then the same pairs swapped); ``on_batch`` gets all records so far after
    each call; ``streak`` (default: a fresh one with limit 16) sees every judgement.
    """
    from tqdm.auto import tqdm

    streak = streak or FailureStreak(judge.name)
    records: dict[tuple[int, int], dict[str, Any]] = {k: dict(v) for k, v in (done or {}).items()}
    todo = []
    for key in keys:
        if key in records:
            continue
        if first[key] == second[key]:
            records[key] = {"prompt": key[0], "sample": key[1], "p_ab": 0.5, "p_ba": 0.5 if both_orders else None,
                            "error": None, "same": True}
        else:
            todo.append(key)
    batches = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        prompts = [prompt_texts[i] for i, _ in batch]
        pairs = [[first[k], second[k]] for k in batch]
        if both_orders:
            answers = judge.judge_or_missing(prompts + prompts, pairs + [[b, a] for a, b in pairs], shuffle_order=False)
            forward, backward = answers[: len(batch)], answers[len(batch) :]
        else:
            answers = judge.judge_or_missing(prompts, pairs)
            forward, backward = answers, [Judgement(None, None)] * len(batch)
        failures = []
        for (i, j), (p_ab, e_ab), (p_ba, e_ba) in zip(batch, forward, backward):
            errors = [e for e in (e_ab, e_ba) if e]
            records[(i, j)] = {
                "prompt": i,
                "sample": j,
                "p_ab": p_ab,
                "p_ba": p_ba if both_orders else None,
                "error": "; ".join(errors) if errors else None,
            }
            missing = p_ab is None or (both_orders and p_ba is None)
            failures.append((records[(i, j)]["error"] or "no answer") if missing else None)
        if on_batch is not None:
            on_batch([records[k] for k in sorted(records)])
        streak.update(failures)
    if on_batch is not None and not batches and len(records) > len(done or {}):
        on_batch([records[k] for k in sorted(records)])
    return [records[k] for k in sorted(records)]


def preferences(records: Iterable[Mapping[str, Any]], num_prompts: int, samples: int, *, both_orders: bool) -> np.ndarray:
    """(n, K) matrix of P_ij: P(a ≻ b), or ½(P(a ≻ b) + 1 − P(b ≻ a)) with ``both_orders``; NaN where
    missing (not judged, or either order missing)."""
    P = np.full((num_prompts, samples), np.nan)
    for r in records:
        p_ab, p_ba = r.get("p_ab"), r.get("p_ba")
        if p_ab is None or (both_orders and p_ba is None):
            continue
        P[r["prompt"], r["sample"]] = 0.5 * (p_ab + 1.0 - p_ba) if both_orders else p_ab
    return P


def position_bias(records: Iterable[Mapping[str, Any]], prompts: Iterable[int] | None = None) -> tuple[float, int]:
    """(mean over pairs judged in both orders of ½(P(a ≻ b) + P(b ≻ a)) − ½, number of such pairs).

    0 for a judge indifferent to order; +δ when the response shown first gets δ more probability.
    Pairs of identical responses (not asked) are left out. NaN with 0 pairs (single-order judging)."""
    keep = None if prompts is None else set(int(i) for i in prompts)
    values = [
        0.5 * (r["p_ab"] + r["p_ba"]) - 0.5
        for r in records
        if r.get("p_ab") is not None and r.get("p_ba") is not None and not r.get("same")
        and (keep is None or r["prompt"] in keep)
    ]
    return (float(np.mean(values)) if values else float("nan")), len(values)
