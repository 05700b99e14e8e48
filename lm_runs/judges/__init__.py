"""Judges: callables from (prompt, [a, b]) pairs to P(a ≻ b) ∈ [0, 1].

    >>> from lm_runs.judges import load_judge
    >>> judge = load_judge("my_module:my_judge")        # or "http://127.0.0.1:8000", a model dir, "openai:MODEL"
    >>> judge(["2+2?"], [["4", "5"]])                    # [P("4" ≻ "5")]
    >>> judge.judge_or_missing(["2+2?"], [["4", "5"]])   # [Judgement(value, error)]

Layout: ``base`` (the interface, :class:`CheckedJudge`, validation), ``loader`` (spec string → judge:
the one module knowing every kind), ``arguments`` (the ``--judge*`` flags), ``protocol`` (the judge
server's wire format), and one module per kind: ``preference_model``, ``reward_model`` (also
``scorer_of``: whether a judge answers pairs from one score per response, in process or served),
``http``, ``openai_judge`` (plus ``gathering``: rank 0 judges for all ranks; ``toy``: rule-based judges;
``retry`` and ``deadline``: the remote judges' retry policy and per-request deadline; ``pair_format``:
the preference model's text layout; ``calibration``: a judge's agreement with held-out pairs, for
``python -m lm_runs.calibrate_judge``).

``PreferenceModelJudge``, ``HTTPJudge`` and ``OpenAIJudge`` are imported on first use (torch / httpx /
openai stay unloaded until needed).
"""

from __future__ import annotations

from typing import Any

from .base import (
    CallableJudge,
    CheckedJudge,
    Judge,
    JudgeChanged,
    JudgeError,
    JudgeUnavailable,
    Judgement,
    accepts_shuffle_order,
    check_judgements,
    check_pairs,
    judge_name,
)
from .gathering import GatheringJudge
from .loader import JUDGE_SPEC_HELP, check_judge_spec, load_judge

__all__ = [
    "Judge",
    "JudgeError",
    "JudgeUnavailable",
    "JudgeChanged",
    "Judgement",
    "CallableJudge",
    "CheckedJudge",
    "GatheringJudge",
    "HTTPJudge",
    "JUDGE_SPEC_HELP",
    "OpenAIJudge",
    "PreferenceModelJudge",
    "accepts_shuffle_order",
    "check_judge_spec",
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
