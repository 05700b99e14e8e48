"""The judgements: each pair of responses judged (in one or both orders), failures kept as missing.

:func:`judge_pairs` asks the judge in batches and records ``p_ab`` / ``p_ba`` / ``error`` per pair;
:func:`preferences` turns the records into the matrix P_ij, :func:`position_bias` measures the judge's
preference for the response shown first (formulas in the package docstring).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..judges import CheckedJudge, JudgeError, accepts_shuffle_order, judge_name
from .settings import EvaluationError, one_line

__all__ = ["judge_pairs", "preferences", "position_bias"]


class _TolerantJudge:
    """Calls a judge and turns what it cannot judge into missing items instead of failing the batch.

    Returns ``(value, error)`` per pair: ``value`` a probability, or None with ``error`` saying why
    (the judge raised :class:`JudgeError` on that pair alone, or answered None, NaN, a non-number or
    a number outside [0, 1]). A batch raising ``JudgeError`` is re-asked pair by pair. Any other
    exception (an interrupt, a bug) propagates. A judge with ``judge_with_missing`` (the OpenAI judge)
    is asked through it, so its unparseable answers arrive as None.
    """

    def __init__(self, judge: Callable[..., Any], max_consecutive_errors: int = 16) -> None:
        self.inner = judge.inner if isinstance(judge, CheckedJudge) else judge
        self.name = judge_name(judge)
        self.fn = getattr(self.inner, "judge_with_missing", None) or self.inner
        self.takes_shuffle = accepts_shuffle_order(self.fn)
        self.max_consecutive_errors = max_consecutive_errors
        self.consecutive_errors = 0
        self.calls = 0

    def _ask(self, prompts: list[str], pairs: list[list[str]], shuffle_order: bool | None) -> list[Any]:
        self.calls += 1
        if shuffle_order is not None and self.takes_shuffle:
            values = self.fn(prompts, pairs, shuffle_order=shuffle_order)
        else:
            values = self.fn(prompts, pairs)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise JudgeError(f"judge {self.name} returned {type(values).__name__}, expected a list of {len(pairs)} values")
        values = list(values)
        if len(values) != len(pairs):
            raise JudgeError(f"judge {self.name} returned {len(values)} values for {len(pairs)} pairs")
        return values

    @staticmethod
    def _value(value: Any) -> tuple[float | None, str | None]:
        if value is None:
            return None, "judge returned None"
        if isinstance(value, (str, bytes, bool)) or not hasattr(value, "__float__"):
            return None, f"judge returned a non-number {value!r:.40}"
        number = float(value)
        if math.isnan(number):
            return None, "judge returned NaN"
        if not 0.0 <= number <= 1.0:
            return None, f"judge returned {number!r}, outside [0, 1]"
        return number, None

    def __call__(self, prompts: list[str], pairs: list[list[str]], shuffle_order: bool | None = None) -> list[tuple[float | None, str | None]]:
        if not pairs:
            return []
        try:
            values = self._ask(prompts, pairs, shuffle_order)
        except JudgeError as error:
            if len(pairs) > 1:
                out = []
                for k in range(len(pairs)):
                    out += self(prompts[k : k + 1], pairs[k : k + 1], shuffle_order)
                return out
            self.consecutive_errors += 1
            if self.consecutive_errors >= self.max_consecutive_errors:
                raise EvaluationError(
                    f"judge {self.name} failed on {self.consecutive_errors} pairs in a row (last: {one_line(error)}); "
                    "is it working? Fix it and rerun: the judgements made so far are kept"
                ) from None
            return [(None, f"JudgeError: {one_line(error)}")]
        self.consecutive_errors = 0
        return [self._value(v) for v in values]


def judge_pairs(
    judge: Callable[..., Any],
    prompt_texts: Sequence[str],
    first: Mapping[tuple[int, int], str],
    second: Mapping[tuple[int, int], str],
    keys: Sequence[tuple[int, int]],
    *,
    both_orders: bool = False,
    batch_size: int = 64,
    done: Mapping[tuple[int, int], Mapping[str, Any]] | None = None,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = False,
    desc: str = "judge",
    max_consecutive_errors: int = 16,
) -> list[dict[str, Any]]:
    """Judge pair (i, j) = (first[(i, j)], second[(i, j)]) on ``prompt_texts[i]`` for every key not in ``done``.

    Records ``{"prompt": i, "sample": j, "p_ab": P(a ≻ b) | None, "p_ba": P(b ≻ a) | None, "error": str | None}``
    (``p_ba`` only with ``both_orders``, which also asks the judge not to shuffle), ordered by key.
    ``judge`` is any judge callable (a :class:`~lm_runs.judges.CheckedJudge` is unwrapped so that
    one bad item does not fail its batch). ``on_batch`` gets all records so far after each call.
    """
    from tqdm.auto import tqdm

    tolerant = judge if isinstance(judge, _TolerantJudge) else _TolerantJudge(judge, max_consecutive_errors)
    records: dict[tuple[int, int], dict[str, Any]] = {k: dict(v) for k, v in (done or {}).items()}
    todo = [k for k in keys if k not in records]
    per_call = max(1, batch_size // 2) if both_orders else batch_size
    batches = [todo[s : s + per_call] for s in range(0, len(todo), per_call)]
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        prompts = [prompt_texts[i] for i, _ in batch]
        pairs = [[first[k], second[k]] for k in batch]
        if both_orders:
            answers = tolerant(prompts + prompts, pairs + [[b, a] for a, b in pairs], shuffle_order=False)
            forward, backward = answers[: len(batch)], answers[len(batch) :]
        else:
            forward, backward = tolerant(prompts, pairs), [(None, None)] * len(batch)
        for (i, j), (p_ab, e_ab), (p_ba, e_ba) in zip(batch, forward, backward):
            errors = [e for e in (e_ab, e_ba) if e]
            records[(i, j)] = {
                "prompt": i,
                "sample": j,
                "p_ab": p_ab,
                "p_ba": p_ba if both_orders else None,
                "error": "; ".join(errors) if errors else None,
            }
        if on_batch is not None:
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
    NaN with 0 pairs (single-order judging)."""
    keep = None if prompts is None else set(int(i) for i in prompts)
    values = [
        0.5 * (r["p_ab"] + r["p_ba"]) - 0.5
        for r in records
        if r.get("p_ab") is not None and r.get("p_ba") is not None and (keep is None or r["prompt"] in keep)
    ]
    return (float(np.mean(values)) if values else float("nan")), len(values)
