"""Judges that fail after a number of calls, importable as ``failing_judges:NAME`` (tests/ is on the path):
they answer as ``prefer_shorter`` until call number :data:`FAIL_AT` (counted from 1 in this process; the
entry point's probe is a call), then answer NaN or raise. Tests set ``FAIL_AT`` and reset ``calls``."""

from __future__ import annotations

from lm_runs.judges.base import judge_identity
from lm_runs.judges.toy import prefer_shorter

#: The first call that fails.
FAIL_AT = 4
calls = 0


def _count() -> bool:
    """Count a call; True when it must fail."""
    global calls
    calls += 1
    return calls >= FAIL_AT


def nan_later(prompts, completions):
    """prefer_shorter, then NaN for every pair from call FAIL_AT on."""
    if _count():
        return [float("nan") for _ in completions]
    return prefer_shorter(prompts, completions)


def raises_later(prompts, completions):
    """prefer_shorter, then ConnectionError (as a judge whose server went away) from call FAIL_AT on."""
    if _count():
        raise ConnectionError("judge server at 127.0.0.1:9 refused the connection")
    return prefer_shorter(prompts, completions)


def _identity() -> dict:
    """These judges stand for prefer_shorter behind a connection that fails, so they name themselves as it:
    a run they stopped resumes with prefer_shorter (the trainer pins its judge by identity)."""
    return judge_identity(prefer_shorter)


nan_later.identity = raises_later.identity = _identity
