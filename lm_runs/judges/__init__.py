"""Judges: callables from (prompt, [a, b]) pairs to P(a ≻ b) ∈ [0, 1].

    >>> from lm_runs.judges import load_judge
    >>> judge = load_judge("my_module:my_judge")        # or "http://127.0.0.1:8000", a model dir, "openai:MODEL"
    >>> judge(["2+2?"], [["4", "5"]])                    # [P("4" ≻ "5")]

``PreferenceModelJudge``, ``HTTPJudge`` and ``OpenAIJudge`` are imported on first use (torch / httpx /
openai stay unloaded until needed).
"""

from __future__ import annotations

from typing import Any

from .gathering import GatheringJudge
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
    "GatheringJudge",
    "HTTPJudge",
    "OpenAIJudge",
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
    if name == "OpenAIJudge":
        from .openai_judge import OpenAIJudge

        return OpenAIJudge
    raise AttributeError(f"module 'lm_runs.judges' has no attribute {name!r}")
