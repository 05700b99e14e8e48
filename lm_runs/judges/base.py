"""The judge interface: a callable from (prompt, [a, b]) pairs to P(a ≻ b), plus its validation.

A *judge* is any callable

    judge(prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> list[float]

where ``completions[i] == [a, b]`` are two responses to ``prompts[i]`` and result ``i`` is
P(a ≻ b) ∈ [0, 1]. A judge may also accept a keyword ``shuffle_order: bool`` (whether it may
present each pair in a random order to cancel position bias); :class:`CheckedJudge` passes it on
only to judges whose signature takes it.

:class:`CheckedJudge` is the one interface the trainer, the evaluation and the judge server call: it
validates the inputs (:func:`check_pairs`) and the outputs (:func:`check_judgements`) of every call,
and :meth:`CheckedJudge.judge_or_missing` turns what the judge cannot judge into a missing
:class:`Judgement` instead of failing the batch. This module knows no concrete judge kind (they
import it); :mod:`lm_runs.judges.loader` builds judges from spec strings.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import random
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

from lm_runs.launcher import one_line

__all__ = [
    "Judge",
    "JudgeError",
    "InvalidJudgement",
    "JudgeUnavailable",
    "JudgeChanged",
    "Judgement",
    "CallableJudge",
    "CheckedJudge",
    "check_judgements",
    "check_pairs",
    "accepts_shuffle_order",
    "judge_name",
    "shown_flipped",
    "source_identity",
    "judge_identity",
    "identity_changes",
]

@runtime_checkable
class Judge(Protocol):
    """P(a ≻ b) for each (prompt, [a, b]) pair: ``judge(prompts, completions) -> list[float]``."""

    def __call__(self, prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> list[float]: ...


class JudgeError(RuntimeError):
    """A judge failed or answered something that is not one probability in [0, 1] per pair."""


class InvalidJudgement(JudgeError):
    """The judge answered, but not one probability in [0, 1] per pair (raised by :func:`check_judgements`)."""


class JudgeUnavailable(JudgeError):
    """A remote judge could not be reached or kept failing (connection errors, deadlines, 429, 5xx)
    through its whole retry budget: no pair of the call was judged, and asking again pair by pair
    would only repeat the wait."""


class JudgeChanged(JudgeError):
    """The judge behind a remote endpoint is no longer the one a run started with (a judge server swapped
    for another mid-run): answers from the two must not mix, so this is never a missing pair but stops
    the run (:meth:`CheckedJudge.judge_or_missing` lets it through; the commands exit with status 2)."""


class Judgement(NamedTuple):
    """One pair's outcome from :meth:`CheckedJudge.judge_or_missing`: ``value`` = P(a ≻ b) ∈ [0, 1], or
    ``None`` with ``error`` saying why the pair is missing."""

    value: float | None
    error: str | None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_judgements(values: Any, expected_count: int, source: str) -> list[float]:
    """Validate a judge's answer and return it as a list of Python floats.

    ``values`` must hold exactly ``expected_count`` numbers, each in [0, 1] (NaN, strings, booleans
    and other non-numbers are rejected). Raises :class:`InvalidJudgement` (a :class:`JudgeError`)
    naming ``source`` and, for a bad value, the first bad value and its index; for a bad length, both counts.
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InvalidJudgement(
            f"judge {source} returned {type(values).__name__} {_short(values)}, "
            f"expected a list of {expected_count} probabilities"
        )
    values = list(values)
    if len(values) != expected_count:
        raise InvalidJudgement(f"judge {source} returned {len(values)} values for {expected_count} pairs")
    out: list[float] = []
    for index, value in enumerate(values):
        if isinstance(value, (str, bytes, bool)) or not hasattr(value, "__float__"):
            raise InvalidJudgement(f"judge {source} returned a non-number at index {index}: {_short(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidJudgement(f"judge {source} returned a non-number at index {index}: {_short(value)}") from None
        if math.isnan(number):
            raise InvalidJudgement(f"judge {source} returned NaN at index {index}")
        if not 0.0 <= number <= 1.0:
            raise InvalidJudgement(f"judge {source} returned {number!r} at index {index}, outside [0, 1]")
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
        # lists and tuples first: the abstract Sequence check costs microseconds per pair
        if type(pair) not in (list, tuple) and (isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence)):
            raise ValueError(f"completions[{index}] must be a pair [a, b] of strings, got {type(pair).__name__}")
        if len(pair) != 2:
            raise ValueError(f"completions[{index}] must hold exactly 2 responses, got {len(pair)}")
        first, second = pair
        if not (isinstance(first, str) and isinstance(second, str)):
            side, text = (0, first) if not isinstance(first, str) else (1, second)
            raise ValueError(f"completions[{index}][{side}] must be a string, got {type(text).__name__}")
        out_prompts.append(prompt)
        out_pairs.append([first, second])
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


def source_identity(fn: Callable[..., Any]) -> dict[str, Any]:
    """A Python callable by content: its module, qualified name and the SHA-256 of its module's source
    file (``None`` when the module has no readable source file, e.g. a built-in)."""
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    module_name = getattr(target, "__module__", None) or ""
    digest = None
    try:
        source = inspect.getsourcefile(target)
    except TypeError:
        source = None
    if source:
        try:
            with open(source, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            digest = None
    return {"module": module_name, "qualname": getattr(target, "__qualname__", type(fn).__name__), "source_sha256": digest}


def judge_identity(judge: Any, kind: str | None = None) -> dict[str, Any]:
    """A judge by content (JSON-serialisable): its own ``identity()`` when it has one (a
    :class:`CheckedJudge`, a model, HTTP or OpenAI judge), else ``{"kind": kind, **source_identity(judge)}``
    for a plain Python callable (``kind``: the judge's ``kind`` attribute, else ``"callable"``)."""
    own = getattr(judge, "identity", None)
    if callable(own):
        return own()
    return {"kind": kind or getattr(judge, "kind", None) or "callable", **source_identity(judge)}


def identity_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """What differs between two JSON-like records (nested dicts compared key by key), one
    ``"key.path: old → new"`` per differing leaf; ``[]`` when they are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += identity_changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} → {new!r}"]


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
    """A plain Python callable used as a judge (``shuffle_order`` is passed only if it takes it).

    An ``Exception`` raised by the callable is raised again as :class:`JudgeError` naming the judge
    (chained to the original), so a failing judge is reported like any other judge failure;
    ``KeyboardInterrupt`` and other ``BaseException`` pass through.
    """

    kind = "callable"

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"CallableJudge needs a callable, got {type(fn).__name__} {_short(fn)}")
        self.fn = fn
        self.name = name or judge_name(fn)
        self.shuffles_order = accepts_shuffle_order(fn)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], *, shuffle_order: bool | None = None
    ) -> list[float]:
        """``fn(prompts, completions)`` (plus ``shuffle_order=`` when given and ``fn`` takes it)."""
        try:
            if shuffle_order is not None and self.shuffles_order:
                return self.fn(prompts, completions, shuffle_order=shuffle_order)
            return self.fn(prompts, completions)
        except JudgeError:
            raise
        except Exception as error:
            raise JudgeError(f"judge {self.name} raised {type(error).__name__}: {one_line(error)}") from error

    def identity(self) -> dict[str, Any]:
        """The callable by content (:func:`judge_identity`): its own ``identity()`` if it has one, else
        :func:`source_identity` of ``fn``."""
        return judge_identity(self.fn, self.kind)

    def __repr__(self) -> str:
        return f"CallableJudge({self.name!r})"



def _judgement(value: Any) -> Judgement:
    """One answered value as a :class:`Judgement` (missing, with the reason, unless a number in [0, 1])."""
    if value is None:
        return Judgement(None, "judge returned None")
    if isinstance(value, (str, bytes, bool)) or not hasattr(value, "__float__"):
        return Judgement(None, f"judge returned a non-number {_short(value, 40)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return Judgement(None, f"judge returned a non-number {_short(value, 40)}")
    if math.isnan(number):
        return Judgement(None, "judge returned NaN")
    if not 0.0 <= number <= 1.0:
        return Judgement(None, f"judge returned {number!r}, outside [0, 1]")
    return Judgement(number, None)


class CheckedJudge:
    """The checked interface to a judge: what the trainer, the evaluation and the judge server call.

    * ``judge(prompts, completions, shuffle_order=None)`` → P(a ≻ b) per pair, inputs validated by
      :func:`check_pairs`, answers by :func:`check_judgements`; raises :class:`JudgeError`.
    * :meth:`judge_or_missing` → one :class:`Judgement` per pair, missing ones carrying the reason.
    * ``name``, ``kind`` (``"preference_model"``, ``"reward_model"``, ``"callable"``, ``"http"`` or ``"openai"``),
      ``shuffles_order`` (whether ``shuffle_order`` reaches the judge; otherwise it is ignored),
      :meth:`identity` (the judge by content) and :meth:`close`.

    ``inner`` is the wrapped judge, for inspection; callers go through this class.
    """

    def __init__(self, judge: Callable[..., Any], name: str | None = None, kind: str | None = None) -> None:
        if not callable(judge):
            raise TypeError(f"CheckedJudge needs a callable judge, got {type(judge).__name__}")
        self.inner = judge
        self.name = name or judge_name(judge)
        self.kind: str = kind or getattr(judge, "kind", None) or "callable"
        self._takes_shuffle = accepts_shuffle_order(judge)
        own = getattr(judge, "shuffles_order", None)
        self.shuffles_order: bool = own if isinstance(own, bool) else self._takes_shuffle
        native = getattr(judge, "judge_or_missing", None)
        self._native_missing = native if callable(native) else None

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], *, shuffle_order: bool | None = None
    ) -> list[float]:
        """P(a ≻ b) per pair, validated; ``[]`` for no pairs (the inner judge is not called)."""
        prompts, completions = check_pairs(prompts, completions)
        if not prompts:
            return []
        return check_judgements(self._ask(self.inner, prompts, completions, shuffle_order), len(prompts), self.name)

    def _ask(self, fn: Callable[..., Any], prompts: list[str], completions: list[list[str]], shuffle_order: bool | None) -> Any:
        if shuffle_order is not None and self._takes_shuffle:
            return fn(prompts, completions, shuffle_order=shuffle_order)
        return fn(prompts, completions)

    def judge_or_missing(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], *, shuffle_order: bool | None = None
    ) -> list[Judgement]:
        """One :class:`Judgement` per pair, in order, never failing the whole batch for a judge failure.

        A pair is missing when the judge answers None, NaN, a non-number or a number outside [0, 1]
        for it. A call that raises :class:`JudgeError` (or answers the wrong number of values) is
        asked again pair by pair, so only the pairs that fail alone are missing, each with the error;
        except :class:`JudgeUnavailable` (a remote judge that stayed unreachable through its retries),
        which makes every pair of the call missing at once instead of repeating the wait per pair, and
        :class:`JudgeChanged` (the judge behind a server was swapped), which propagates.
        A judge that reports missing pairs itself (a ``judge_or_missing`` method: the OpenAI judge) is
        asked through it. Any other exception (a bug, ``KeyboardInterrupt``) propagates.
        """
        prompts, completions = check_pairs(prompts, completions)
        if not prompts:
            return []
        try:
            if self._native_missing is not None:
                answers = self._ask(self._native_missing, prompts, completions, shuffle_order)
                if not isinstance(answers, list) or len(answers) != len(prompts):
                    raise JudgeError(f"judge {self.name} reported {_short(answers)} for {len(prompts)} pairs")
                return [a if isinstance(a, Judgement) else _judgement(a) for a in answers]
            values = self._ask(self.inner, prompts, completions, shuffle_order)
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                raise JudgeError(f"judge {self.name} returned {type(values).__name__}, expected a list of {len(prompts)} values")
            values = list(values)
            if len(values) != len(prompts):
                raise JudgeError(f"judge {self.name} returned {len(values)} values for {len(prompts)} pairs")
        except JudgeChanged:
            raise
        except JudgeUnavailable as error:
            return [Judgement(None, f"JudgeUnavailable: {one_line(error)}")] * len(prompts)
        except JudgeError as error:
            if len(prompts) == 1:
                return [Judgement(None, f"JudgeError: {one_line(error)}")]
            out: list[Judgement] = []
            for k in range(len(prompts)):
                out += self.judge_or_missing(prompts[k : k + 1], completions[k : k + 1], shuffle_order=shuffle_order)
            return out
        return [_judgement(v) for v in values]

    def identity(self) -> dict[str, Any]:
        """The judge by content (JSON-serialisable): the inner judge's ``identity()`` when it has one
        (a model folder: digests of its files; http: the served judge's own identity, as the server's
        ``/health`` reports it, or its URL from a server too old to report one; openai: base URL, model
        and what the endpoint reports of the model), else
        ``{"kind": "callable", **source_identity(inner)}``."""
        return judge_identity(self.inner, self.kind)

    def close(self) -> None:
        """Close the inner judge if it has a ``close`` method (an HTTP client's connections)."""
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"CheckedJudge({self.inner!r})"
