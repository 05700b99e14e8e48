"""Judges: callables from (prompt, [a, b]) pairs to P(a ≻ b) ∈ [0, 1].

    >>> from lm_runs.judges import load_judge
    >>> judge = load_judge("my_module:my_judge")        # or "http://127.0.0.1:8000", or a model dir
    >>> judge(["2+2?"], [["4", "5"]])                    # [P("4" ≻ "5")]

``PreferenceModelJudge`` and ``HTTPJudge`` are imported on first use (torch / httpx stay unloaded
until needed).
"""

from __future__ import annotations

from typing import Any

from .base import (
    CallableJudge,
    CheckedJudge,
    Judge,
    JudgeError,
    accepts_shuffle_order,
    check_judgements,
    check_pairs,
    judge_name,
    load_judge,
)

__all__ = [
    "Judge",
    "JudgeError",
    "CallableJudge",
    "CheckedJudge",
    "HTTPJudge",
    "PreferenceModelJudge",
    "accepts_shuffle_order",
    "check_judgements",
    "check_pairs",
    "judge_name",
    "load_judge",
]


def __getattr__(name: str) -> Any:
    if name == "PreferenceModelJudge":
        from .preference_model import PreferenceModelJudge

        return PreferenceModelJudge
    if name == "HTTPJudge":
        from .http import HTTPJudge

        return HTTPJudge
    raise AttributeError(f"module 'lm_runs.judges' has no attribute {name!r}")
