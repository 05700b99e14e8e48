"""The retry policy of the remote judges (HTTP judge server, OpenAI-compatible endpoints).

A request is tried at most ``max_retries + 1`` times. Only transient failures are retried —
connection errors, timeouts, HTTP 429 and 5xx — each after an exponential backoff with jitter,

    sleep_k ~ U(c_k / 2, c_k),   c_k = min(backoff_max, backoff_base · 2^k)   (retry k = 0, 1, ...),

or a 429's ``Retry-After`` capped at ``backoff_max``. Anything else (a 4xx) fails at once. When the
tries are used up, one :class:`~lm_runs.judges.base.JudgeUnavailable` (a ``JudgeError``) names the
service and the last failure.

The half-width floor makes the retry window predictable: with the defaults (``max_retries`` =
:data:`DEFAULT_RETRIES` = 7, base 0.5 s, cap 10 s) a service that stays down is waited for at least
Σ c_k / 2 = 17.75 s (at most 35.5 s) plus the attempts themselves, longer than a judge server takes to
start (about 13 s for a preference model).
"""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Callable, TypeVar

from .base import JudgeUnavailable

__all__ = ["DEFAULT_RETRIES", "RetryPolicy", "TransientFailure", "retry_after_seconds"]

#: Retries after the first attempt, by default (see the module docstring for the window it gives).
DEFAULT_RETRIES = 7

T = TypeVar("T")


class TransientFailure(Exception):
    """A failure worth retrying; ``retry_after`` is the server's requested wait in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_seconds(header: str | None, cap: float) -> float | None:
    """A ``Retry-After`` header in seconds, clipped to [0, cap]; ``None`` when absent or not a number."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    return min(max(seconds, 0.0), cap) if math.isfinite(seconds) else None


class RetryPolicy:
    """Bounded retries with jittered exponential backoff (thread-safe; seeded jitter)."""

    def __init__(
        self,
        max_retries: int = DEFAULT_RETRIES,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        *,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry ``attempt`` (0-based): U(c / 2, c), c = min(max, base · 2^attempt)."""
        cap = min(self.backoff_max, self.backoff_base * (2.0**attempt))
        with self._lock:
            return self._rng.uniform(0.5 * cap, cap)

    def run(self, attempt: Callable[[], T], service: str) -> T:
        """``attempt()`` until it returns; it raises :class:`TransientFailure` for what may be retried
        (anything else propagates at once). ``service`` names what failed in the final error."""
        tries = self.max_retries + 1
        last_failure = "no attempt made"
        for index in range(tries):
            try:
                return attempt()
            except TransientFailure as failure:
                last_failure = str(failure)
                wait = failure.retry_after
            if index + 1 < tries:
                self.sleep(wait if wait is not None else self.backoff(index))
        raise JudgeUnavailable(f"{service} failed after {tries} attempts; last failure: {last_failure}")
