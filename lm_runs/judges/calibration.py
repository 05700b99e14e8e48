"""How well a judge agrees with held-out preference pairs: the one home of the calibration report.

For n held-out pairs (x_i, chosen_i, rejected_i) the judge is asked p_i = P(chosen_i ≻ rejected_i | x_i),
the pair shown in that order (``shuffle_order=False``: the order shown is the order given). The report:

* ``mean_p_chosen`` = (1/n) Σ p_i — a judge as sure as it is right has ``mean_p_chosen`` ≈ ``accuracy``;
* ``accuracy`` = (1/n) Σ [1(p_i > ½) + ½·1(p_i = ½)] — a tie counts half;
* ``brier`` = (1/n) Σ (1 − p_i)², the squared error of p_i against the label "chosen wins";
* ``reliability``: the pairs binned by the judge's confidence c_i = max(p_i, 1 − p_i) into
  [½, 0.6), [0.6, 0.7), [0.7, 0.8), [0.8, 0.9), [0.9, 1]; per bin the count, the mean confidence and
  the fraction the judge got right (a calibrated judge has the two equal).

With both orders the judge is also asked q_i = P(rejected_i ≻ chosen_i | x_i) and the report adds

* ``position_bias`` = (1/n) Σ (p_i + q_i − 1) — how much more the judge gives the response shown
  first: 0 for a judge blind to the order (a Bradley–Terry reward model: p + q = 1 exactly, by
  construction), > 0 for one that favours the first position, < 0 for the second; with its standard
  error sd(p + q − 1)/√n;
* ``order_flips`` = the fraction of pairs whose verdict changes with the order, sign(p_i − ½) ≠ sign(½ − q_i)
  (chosen, tie or rejected read from each order);
* ``order_averaged``: ``mean_p_chosen`` and ``accuracy`` of p̄_i = (p_i + 1 − q_i)/2, what an evaluation
  asking both orders (or a judge shuffling the order) sees.

:func:`calibration_report` computes it from the answers (no judge needed: tests and other reports reuse
it); :func:`judge_calibration` asks a judge. ``python -m lm_runs.calibrate_judge`` is the command.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["RELIABILITY_EDGES", "calibration_report", "judge_calibration"]

#: Lower edges of the confidence bins of the reliability table (the last bin is closed at 1).
RELIABILITY_EDGES = (0.5, 0.6, 0.7, 0.8, 0.9)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def _accuracy(p: Sequence[float]) -> float:
    return _mean([1.0 if v > 0.5 else 0.5 if v == 0.5 else 0.0 for v in p])


def _reliability(p: Sequence[float]) -> list[dict[str, Any]]:
    bins: list[dict[str, Any]] = []
    for k, low in enumerate(RELIABILITY_EDGES):
        high = RELIABILITY_EDGES[k + 1] if k + 1 < len(RELIABILITY_EDGES) else 1.0
        last = k + 1 == len(RELIABILITY_EDGES)
        inside = [v for v in p if low <= max(v, 1.0 - v) < high or (last and max(v, 1.0 - v) == 1.0)]
        row: dict[str, Any] = {"confidence_from": low, "confidence_to": high, "pairs": len(inside)}
        if inside:
            row["mean_confidence"] = _mean([max(v, 1.0 - v) for v in inside])
            row["accuracy"] = _accuracy(inside)
        bins.append(row)
    return bins


def calibration_report(p_chosen_first: Sequence[float], p_rejected_first: Sequence[float] | None = None) -> dict[str, Any]:
    """The report of the module docstring from the judge's answers: ``p_chosen_first[i]`` = P(chosen ≻
    rejected) asked in that order, ``p_rejected_first[i]`` = P(rejected ≻ chosen) asked in that order
    (``None``: one order only). ``ValueError`` for no pairs or lists of different lengths."""
    p = [float(v) for v in p_chosen_first]
    if not p:
        raise ValueError("calibration needs at least one pair")
    report: dict[str, Any] = {
        "pairs": len(p),
        "mean_p_chosen": _mean(p),
        "accuracy": _accuracy(p),
        "brier": _mean([(1.0 - v) ** 2 for v in p]),
        "reliability": _reliability(p),
    }
    if p_rejected_first is not None:
        q = [float(v) for v in p_rejected_first]
        if len(q) != len(p):
            raise ValueError(f"both orders need one answer per pair each: {len(p)} and {len(q)}")
        bias = [a + b - 1.0 for a, b in zip(p, q)]
        mean_bias = _mean(bias)
        sd = math.sqrt(math.fsum((b - mean_bias) ** 2 for b in bias) / (len(bias) - 1)) if len(bias) > 1 else 0.0
        averaged = [(a + 1.0 - b) / 2.0 for a, b in zip(p, q)]
        report["both_orders"] = {
            "position_bias": mean_bias,
            "position_bias_se": sd / math.sqrt(len(bias)),
            "order_flips": _mean([1.0 if _sign(a - 0.5) != _sign(0.5 - b) else 0.0 for a, b in zip(p, q)]),
            "order_averaged": {"mean_p_chosen": _mean(averaged), "accuracy": _accuracy(averaged)},
        }
    return report


def judge_calibration(
    judge: Any, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], *, both_orders: bool = False
) -> dict[str, Any]:
    """Ask ``judge`` (a :class:`~lm_runs.judges.base.CheckedJudge`) every pair as (chosen, rejected) — and,
    with ``both_orders``, as (rejected, chosen) — each order in one call with ``shuffle_order=False``,
    and return :func:`calibration_report` of the answers. A judge failure raises its ``JudgeError``."""
    p = judge(list(prompts), [[a, b] for a, b in zip(chosen, rejected)], shuffle_order=False)
    q = judge(list(prompts), [[b, a] for a, b in zip(chosen, rejected)], shuffle_order=False) if both_orders else None
    return calibration_report(p, q)
