"""A judge behind HTTP: the client of ``python -m lm_runs.judge_server`` (and of compatible servers).

Protocol: ``POST {url}/v1/classifications`` with ``{"prompts": [...], "completions": [[a, b], ...],
"shuffle_order": bool}`` answers ``{"results": [P(a ≻ b), ...], ...}``; errors answer
``{"error": "<message>"}`` with a 4xx/5xx status.

Retries: connection errors, timeouts, 429 and 5xx are retried up to ``max_retries`` times with
exponential backoff and full jitter (sleep ~ U(0, min(backoff_max, backoff_base · 2^attempt)));
a 4xx other than 429 is never retried.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

from .base import JudgeError, check_judgements, check_pairs
from .retry import RetryPolicy, TransientFailure, retry_after_seconds

__all__ = ["HTTPJudge", "TOKEN_ENV"]

#: Environment variable holding the bearer token (client and server).
TOKEN_ENV = "EGPO_JUDGE_TOKEN"

_ENDPOINT = "/v1/classifications"


def _error_message(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = response.text.strip()
    return text[:200] if text else response.reason_phrase


class HTTPJudge:
    """P(a ≻ b) from a judge server at ``url`` (``http://host:port``, with or without the endpoint path).

    * ``token``: bearer token; ``None`` reads ``EGPO_JUDGE_TOKEN`` (no header when unset or empty).
    * ``timeout``: seconds per HTTP request (connect, read, write and pool).
    * ``max_retries``: retries after the first attempt (so at most ``max_retries + 1`` attempts).
    * ``backoff_base`` / ``backoff_max``: full-jitter exponential backoff, in seconds.
    * ``chunk_size``: pairs per HTTP request; longer calls are split and the answers concatenated.
    * ``shuffle_order``: default sent to the server when a call does not pass one.
    * ``seed``: seeds the jitter generator (reproducible sleeps in tests).

    One ``httpx.Client`` is kept for connection reuse; it is thread-safe. Raises :class:`JudgeError`.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        chunk_size: int = 1024,
        shuffle_order: bool = True,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: Any = None,
    ) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"judge server URL must start with http:// or https://, got {url!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        base = url.rstrip("/")
        self.endpoint = base if base.endswith(_ENDPOINT) else base + _ENDPOINT
        self.url = base[: -len(_ENDPOINT)] if base.endswith(_ENDPOINT) else base
        self.name = self.url
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.chunk_size = chunk_size
        self.shuffle_order = shuffle_order
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max, seed=seed, sleep=sleep)
        token = os.environ.get(TOKEN_ENV) if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), headers=headers, transport=transport)
        self.model: str | None = None  # the server's model name, after the first answer

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry ``attempt`` (see :class:`~lm_runs.judges.retry.RetryPolicy`)."""
        return self.retry.backoff(attempt)

    def _post(self, payload: dict) -> list:
        return self.retry.run(lambda: self._post_once(payload), f"judge server {self.url}")

    def _post_once(self, payload: dict) -> list:
        """One POST: the results, a :class:`TransientFailure` to retry, or a :class:`JudgeError`."""
        import httpx

        try:
            response = self._client.post(self.endpoint, json=payload)
        except httpx.TransportError as error:  # connection refused/reset, timeouts, protocol errors
            raise TransientFailure(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__) from None
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                raise JudgeError(f"judge server {self.url} answered 200 with a body that is not JSON") from None
            if not isinstance(body, dict) or "results" not in body:
                raise JudgeError(f"judge server {self.url} answered 200 without a 'results' field")
            if isinstance(body.get("model"), str):
                self.model = body["model"]
            return body["results"]
        message = _error_message(response)
        if status == 429 or status >= 500:
            wait = retry_after_seconds(response.headers.get("Retry-After"), self.backoff_max) if status == 429 else None
            raise TransientFailure(f"HTTP {status}: {message}", retry_after=wait)
        raise JudgeError(f"judge server {self.url} rejected the request (HTTP {status}): {message}")

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], *, shuffle_order: bool | None = None
    ) -> list[float]:
        """P(a ≻ b) per pair from the server, in order; long calls go as several requests."""
        prompts, completions = check_pairs(prompts, completions)
        shuffle = self.shuffle_order if shuffle_order is None else bool(shuffle_order)
        out: list[float] = []
        for start in range(0, len(prompts), self.chunk_size):
            stop = start + self.chunk_size
            payload = {"prompts": prompts[start:stop], "completions": completions[start:stop], "shuffle_order": shuffle}
            out += check_judgements(self._post(payload), len(payload["prompts"]), f"server {self.url}")
        return out

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self) -> "HTTPJudge":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HTTPJudge({self.url!r})"
