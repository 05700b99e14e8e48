"""The judge interface: a callable from (prompt, [a, b]) pairs to P(a ≻ b), plus its validation.

A *judge* is any callable

    judge(prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> list[float]

where ``completions[i] == [a, b]`` are two responses to ``prompts[i]`` and result ``i`` is
P(a ≻ b) ∈ [0, 1]. A judge may also accept a keyword ``shuffle_order: bool`` (whether it may
present each pair in a random order to cancel position bias); :class:`CheckedJudge` passes it on
only to judges whose signature takes it.

:func:`load_judge` turns a spec string into a judge, always wrapped in :class:`CheckedJudge`, which
validates the inputs (:func:`check_pairs`) and the outputs (:func:`check_judgements`) of every call.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import os
import random
import re
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

__all__ = [
    "Judge",
    "JudgeError",
    "CallableJudge",
    "CheckedJudge",
    "check_judgements",
    "check_pairs",
    "load_judge",
    "accepts_shuffle_order",
    "judge_name",
    "shown_flipped",
]

_CALLABLE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

ACCEPTED_SPECS = (
    "'openai:MODEL' (a chat model behind an OpenAI-compatible endpoint, from OPENAI_BASE_URL / OPENAI_API_KEY), "
    "'module:function' (a Python callable judge), "
    "'http://host:port' or 'https://...' (a judge server), "
    "or an existing directory (a 2-label sequence-classification preference model)"
)


@runtime_checkable
class Judge(Protocol):
    """P(a ≻ b) for each (prompt, [a, b]) pair: ``judge(prompts, completions) -> list[float]``."""

    def __call__(self, prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> list[float]: ...


class JudgeError(RuntimeError):
    """A judge failed or answered something that is not one probability in [0, 1] per pair."""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_judgements(values: Any, expected_count: int, source: str) -> list[float]:
    """Validate a judge's answer and return it as a list of Python floats.

    ``values`` must hold exactly ``expected_count`` numbers, each in [0, 1] (NaN, strings, booleans
    and other non-numbers are rejected). Raises :class:`JudgeError` naming ``source`` and, for a bad
    value, the first bad value and its index; for a bad length, both counts.
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise JudgeError(
            f"judge {source} returned {type(values).__name__} {_short(values)}, "
            f"expected a list of {expected_count} probabilities"
        )
    values = list(values)
    if len(values) != expected_count:
        raise JudgeError(f"judge {source} returned {len(values)} values for {expected_count} pairs")
    out: list[float] = []
    for index, value in enumerate(values):
        if isinstance(value, (str, bytes, bool)) or not hasattr(value, "__float__"):
            raise JudgeError(f"judge {source} returned a non-number at index {index}: {_short(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise JudgeError(f"judge {source} returned a non-number at index {index}: {_short(value)}") from None
        if math.isnan(number):
            raise JudgeError(f"judge {source} returned NaN at index {index}")
        if not 0.0 <= number <= 1.0:
            raise JudgeError(f"judge {source} returned {number!r} at index {index}, outside [0, 1]")
        out.append(number)
    return out


def check_pairs(prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """Validate judge inputs; return them as ``(list of prompts, list of [a, b] lists)``.

    Raises ``ValueError`` naming the index when the two sequences differ in length, a prompt is not
    a string, or a completion is not exactly two strings. Empty inputs are valid (no pairs).
    """
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise ValueError(f"prompts must be a sequence of strings, got {type(prompts).__name__}")
    if isinstance(completions, (str, bytes)) or not isinstance(completions, Sequence):
        raise ValueError(f"completions must be a sequence of [a, b] pairs, got {type(completions).__name__}")
    if len(prompts) != len(completions):
        raise ValueError(f"prompts has {len(prompts)} items but completions has {len(completions)}")
    out_prompts: list[str] = []
    out_pairs: list[list[str]] = []
    for index, (prompt, pair) in enumerate(zip(prompts, completions)):
        if not isinstance(prompt, str):
            raise ValueError(f"prompts[{index}] must be a string, got {type(prompt).__name__}")
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence):
            raise ValueError(f"completions[{index}] must be a pair [a, b] of strings, got {type(pair).__name__}")
        if len(pair) != 2:
            raise ValueError(f"completions[{index}] must hold exactly 2 responses, got {len(pair)}")
        for side in (0, 1):
            if not isinstance(pair[side], str):
                raise ValueError(f"completions[{index}][{side}] must be a string, got {type(pair[side]).__name__}")
        out_prompts.append(prompt)
        out_pairs.append([pair[0], pair[1]])
    return out_prompts, out_pairs


def shown_flipped(seed: int, prompt: str, a: str, b: str) -> bool:
    """Whether a judge that shuffles the order shows the pair (a, b) as (b, a): a fair coin from
    ``random.Random`` seeded with ``seed`` and the SHA-256 of (prompt, a, b).

    The coin depends on the pair alone, not on a stream: the same pair gets the same order on every
    call, whatever else is in the call, on any rank, in a resumed run and in a retried request.
    """
    digest = hashlib.sha256(json.dumps([prompt, a, b]).encode("utf-8")).hexdigest()
    return random.Random(f"{seed}:{digest}").random() < 0.5


def accepts_shuffle_order(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a ``shuffle_order`` keyword (by name or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == "shuffle_order" and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )


def judge_name(judge: Any) -> str:
    """A human-readable name: the judge's ``name`` attribute, else its qualified name, else its type."""
    name = getattr(judge, "name", None)
    if isinstance(name, str) and name:
        return name
    qualname = getattr(judge, "__qualname__", None)
    module = getattr(judge, "__module__", None)
    if qualname:
        return f"{module}:{qualname}" if module else qualname
    return type(judge).__name__


class CallableJudge:
    """A plain Python callable used as a judge (``shuffle_order`` is passed only if it takes it)."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"CallableJudge needs a callable, got {type(fn).__name__} {_short(fn)}")
        self.fn = fn
        self.name = name or judge_name(fn)
        self._takes_shuffle = accepts_shuffle_order(fn)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], *, shuffle_order: bool | None = None
    ) -> list[float]:
        """``fn(prompts, completions)`` (plus ``shuffle_order=`` when given and ``fn`` takes it)."""
        if shuffle_order is not None and self._takes_shuffle:
            return self.fn(prompts, completions, shuffle_order=shuffle_order)
        return self.fn(prompts, completions)

    def __repr__(self) -> str:
        return f"CallableJudge({self.name!r})"


class CheckedJudge:
    """Wraps a judge: validates inputs with :func:`check_pairs` and outputs with :func:`check_judgements`.

    ``shuffle_order`` (when not ``None``) reaches the inner judge only if its signature takes it;
    otherwise it is ignored. An exception raised by the inner judge propagates unchanged.
    """

    def __init__(self, judge: Callable[..., Any], name: str | None = None) -> None:
        if not callable(judge):
            raise TypeError(f"CheckedJudge needs a callable judge, got {type(judge).__name__}")
        self.inner = judge
        self.name = name or judge_name(judge)
        self.takes_shuffle_order = accepts_shuffle_order(judge)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], *, shuffle_order: bool | None = None
    ) -> list[float]:
        """P(a ≻ b) per pair, validated; ``[]`` for no pairs (the inner judge is not called)."""
        prompts, completions = check_pairs(prompts, completions)
        if not prompts:
            return []
        if shuffle_order is not None and self.takes_shuffle_order:
            values = self.inner(prompts, completions, shuffle_order=shuffle_order)
        else:
            values = self.inner(prompts, completions)
        return check_judgements(values, len(prompts), self.name)

    def close(self) -> None:
        """Close the inner judge if it has a ``close`` method (an HTTP client's connections)."""
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"CheckedJudge({self.inner!r})"


def _import_callable(spec: str) -> Callable[..., Any]:
    module_name, _, attr_path = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ValueError(f"judge spec {spec!r}: cannot import module {module_name!r} ({error})") from None
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"judge spec {spec!r}: module {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"judge spec {spec!r}: {attr_path!r} is a {type(obj).__name__}, not callable")
    return obj


def load_judge(spec: str, *, seed: int = 0, device: str | None = None, batch_size: int = 16) -> CheckedJudge:
    """Build the judge a spec names, wrapped in :class:`CheckedJudge`.

    * ``"openai:MODEL"`` → :class:`~lm_runs.judges.openai_judge.OpenAIJudge` (an LLM-as-judge; base URL
      and key from ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``; ``seed`` seeds the order flips and jitter);
    * ``"http://host:port"`` / ``"https://..."`` → :class:`~lm_runs.judges.http.HTTPJudge`
      (bearer token from ``EGPO_JUDGE_TOKEN`` when set; ``seed`` seeds the retry jitter);
    * an existing directory → :class:`~lm_runs.judges.preference_model.PreferenceModelJudge`
      (``seed``, ``device`` and ``batch_size`` are passed on);
    * ``"module:function"`` (or ``"module:obj.attr"``) → :class:`CallableJudge` of that attribute.

    Anything else raises ``ValueError`` naming the spec and listing the accepted forms.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"judge spec {spec!r} is empty; accepted forms: {ACCEPTED_SPECS}")
    spec = spec.strip()
    if spec.startswith("openai:"):
        from .openai_judge import OpenAIJudge

        model = spec[len("openai:") :].strip()
        if not model:
            raise ValueError(f"judge spec {spec!r} names no model; expected 'openai:MODEL'")
        return CheckedJudge(OpenAIJudge(model, seed=seed))
    if spec.startswith(("http://", "https://")):
        from .http import HTTPJudge

        return CheckedJudge(HTTPJudge(spec, seed=seed))
    if os.path.isdir(spec):
        from .preference_model import PreferenceModelJudge

        return CheckedJudge(PreferenceModelJudge(spec, seed=seed, device=device, batch_size=batch_size))
    if _CALLABLE_SPEC.match(spec):
        return CheckedJudge(CallableJudge(_import_callable(spec), name=spec))
    hint = " (not an existing directory)" if ":" not in spec else ""
    raise ValueError(f"judge spec {spec!r} not understood{hint}; accepted forms: {ACCEPTED_SPECS}")
