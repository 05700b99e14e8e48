"""A judge behind HTTP: the client of ``python -m lm_runs.judge_server`` (and of compatible servers).

Protocol: :mod:`lm_runs.judges.protocol` (``POST {url}/v1/classifications``, JSON both ways).

Deadline: each request (one attempt) has a *total* deadline of ``timeout`` seconds, connecting,
sending the body and reading the answer together: every socket operation may wait only for what is
left of it, so a server that never answers, or trickles its answer a byte at a time, fails the
attempt after ``timeout`` seconds.

Retries: connection errors, deadlines, 429 and 5xx are retried up to ``max_retries`` times
(:class:`~lm_runs.judges.retry.RetryPolicy`); a 4xx other than 429 is never retried. So one call of
``n`` pairs takes at most ``ceil(n / chunk_size) · ((max_retries + 1) · timeout + Σ backoffs)``.
Texts that are not valid Unicode (a lone surrogate) raise :class:`JudgeError` before anything is sent.

A server serving a scalar reward model (``GET /health`` says ``judge_kind: reward_model`` and its τ) also
scores responses (``POST {url}/v1/scores``): :meth:`HTTPJudge.rewards` asks one score per response, so the
evaluation (:func:`~lm_runs.judges.reward_model.scorer_of`) scores each response once through the server
too, and forms every pair from the scores as the server would answer it.

Identity: ``GET /health`` also reports the served judge by content (its kind, a model folder's file
digests, a reward model's τ, a callable's source digest: the in-process judge's ``identity()``), and
:meth:`HTTPJudge.identity` returns it, so what pins a judge (an evaluation's ``settings.json``) tells a
server restarted with another judge at the same URL, and accepts the same judge served at another URL.
A server that does not report one (an older server, one whose ``/health`` is not answered) is known by
its URL only, with one warning.

Swapped servers: the first ``/health`` answer pins the served judge; once it reported an identity, every
call (:meth:`HTTPJudge.__call__`, :meth:`HTTPJudge.rewards`) asks ``/health`` again after its answers came
(one more GET per call, retried as the judging requests are) and raises
:class:`~lm_runs.judges.base.JudgeChanged` — the call's answers discarded — when the server now reports
another judge, or none: a server stopped and another started at the same URL mid-run is refused instead
of mixing two judges' answers. What this cannot see: a swap and a swap back between two calls' checks,
and a server known by its URL only (nothing to compare).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Callable, Sequence

from .base import JudgeChanged, JudgeError, check_judgements, check_pairs, identity_changes
from .deadline import Deadlines, deadline_transport
from .protocol import CLASSIFICATIONS_PATH, SCORES_PATH, TOKEN_ENV, invalid_text
from .retry import DEFAULT_RETRIES, RetryPolicy, TransientFailure, retry_after_seconds

__all__ = ["HTTPJudge", "DEFAULT_TIMEOUT"]

logger = logging.getLogger(__name__)

#: Default total seconds per request.
DEFAULT_TIMEOUT = 60.0


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
    * ``timeout``: total seconds per HTTP request (see the module docstring), default 60.
    * ``max_retries``: retries after the first attempt (so at most ``max_retries + 1`` attempts).
    * ``backoff_base`` / ``backoff_max``: exponential backoff with jitter, in seconds.
    * ``chunk_size``: pairs per HTTP request; longer calls are split and the answers concatenated.
    * ``shuffle_order``: default sent to the server when a call does not pass one.
    * ``seed``: seeds the jitter generator (reproducible sleeps in tests).
    * ``transport``: an ``httpx`` transport to use instead of the network (tests); the deadline then
      bounds each operation only.

    One ``httpx.Client`` is kept for connection reuse; it is thread-safe. Raises :class:`JudgeError`.
    """

    kind = "http"

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_RETRIES,
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
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        base = url.rstrip("/")
        self.endpoint = base if base.endswith(CLASSIFICATIONS_PATH) else base + CLASSIFICATIONS_PATH
        self.url = base[: -len(CLASSIFICATIONS_PATH)] if base.endswith(CLASSIFICATIONS_PATH) else base
        self.name = self.url
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.chunk_size = chunk_size
        self.shuffle_order = shuffle_order
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max, seed=seed, sleep=sleep)
        token = os.environ.get(TOKEN_ENV) if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._deadlines = Deadlines()
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            headers=headers,
            transport=transport if transport is not None else deadline_transport(self._deadlines),
        )
        self.model: str | None = None  # the server's model name, after the first answer
        self._health: dict | None = None  # GET /health's answer, asked once (_server_health)
        self._health_failure: str | None = None  # why /health gave no answer, if so
        self._url_identity_warned = False

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry ``attempt`` (see :class:`~lm_runs.judges.retry.RetryPolicy`)."""
        return self.retry.backoff(attempt)

    def _post(self, payload: dict, path: str = CLASSIFICATIONS_PATH, field: str = "results") -> list:
        return self.retry.run(lambda: self._post_once(payload, path, field), f"judge server {self.url}")

    def _post_once(self, payload: dict, path: str = CLASSIFICATIONS_PATH, field: str = "results") -> list:
        """One POST to ``path`` within the deadline: the answer's ``field``, a :class:`TransientFailure` to
        retry, or a :class:`JudgeError`."""
        import httpx

        started = time.monotonic()
        self._deadlines.set(started + self.timeout)
        try:
            response = self._client.post(self.url + path, json=payload)
        except httpx.TransportError as error:  # connection refused/reset, deadlines, protocol errors
            if time.monotonic() - started >= self.timeout:
                raise TransientFailure(f"no complete answer within the deadline of {self.timeout:g} s ({type(error).__name__})") from None
            raise TransientFailure(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__) from None
        finally:
            self._deadlines.set(None)
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                raise JudgeError(f"judge server {self.url} answered 200 with a body that is not JSON") from None
            if not isinstance(body, dict) or field not in body:
                raise JudgeError(f"judge server {self.url} answered 200 without a '{field}' field")
            if isinstance(body.get("model"), str):
                self.model = body["model"]
            return body[field]
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
        where = invalid_text(prompts, completions)
        if where is not None:
            raise JudgeError(f"judge server {self.url}: {where} is not valid Unicode (a lone surrogate); nothing was sent")
        shuffle = self.shuffle_order if shuffle_order is None else bool(shuffle_order)
        out: list[float] = []
        for start in range(0, len(prompts), self.chunk_size):
            stop = start + self.chunk_size
            payload = {"prompts": prompts[start:stop], "completions": completions[start:stop], "shuffle_order": shuffle}
            out += check_judgements(self._post(payload), len(payload["prompts"]), f"server {self.url}")
        self.check_same_judge()
        return out

    def _server_health(self) -> dict[str, Any]:
        """``GET /health``'s JSON object, asked once per client (one attempt, within ``timeout``); ``{}`` for
        a server that did not answer one (unreachable, an error status, not JSON), the reason kept."""
        if self._health is None:
            body: Any = {}
            try:
                response = self._client.get(self.url + "/health", timeout=self.timeout)
                if response.status_code == 200:
                    body = response.json()
                else:
                    self._health_failure = f"HTTP {response.status_code}"
            except Exception as error:  # noqa: BLE001 - any failure means: nothing known about the judge
                self._health_failure = f"not answered: {type(error).__name__}"
                logger.warning("judge server %s: /health not answered (%s); judging pair by pair", self.url, type(error).__name__)
            self._health = body if isinstance(body, dict) else {}
        return self._health

    def scores_responses(self) -> bool:
        """Whether the server serves a scalar reward model (and so its score route), from ``GET /health``
        (asked once per client). A server that cannot be asked (unreachable, an older server, an error)
        counts as not scoring — pairs are then asked pair by pair, with the same answers — with a warning."""
        health = self._server_health()
        temperature = health.get("temperature")
        return (health.get("judge_kind") == "reward_model" and isinstance(temperature, (int, float))
                and not isinstance(temperature, bool) and math.isfinite(temperature) and temperature > 0)

    @property
    def temperature(self) -> float:
        """τ of the server's reward model (see :meth:`scores_responses`); ``ValueError`` for another judge."""
        if not self.scores_responses():
            raise ValueError(f"judge server {self.url} does not serve a reward model")
        return float(self._health["temperature"])

    @property
    def batch_size(self) -> int:
        """Responses per scoring request: ``chunk_size``."""
        return self.chunk_size

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """r(prompts[i], responses[i]) from the server's reward model (``POST /v1/scores``), ``chunk_size``
        responses per request; :class:`JudgeError` for a server that does not score or a bad answer."""
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"prompts has {len(prompts)} items but responses has {len(responses)}")
        where = invalid_text(prompts, []) or next((f"responses[{i}]" for i, r in enumerate(responses) if invalid_text([r], [])), None)
        if where is not None:
            raise JudgeError(f"judge server {self.url}: {where} is not valid Unicode (a lone surrogate); nothing was sent")
        out: list[float] = []
        for start in range(0, len(prompts), self.chunk_size):
            payload = {"prompts": prompts[start : start + self.chunk_size], "responses": responses[start : start + self.chunk_size]}
            scores = self._post(payload, SCORES_PATH, "scores")
            if (not isinstance(scores, list) or len(scores) != len(payload["prompts"])
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scores)):
                raise JudgeError(f"judge server {self.url} answered {len(payload['prompts'])} responses with scores that are not "
                                 f"one finite number each")
            out += [float(v) for v in scores]
        self.check_same_judge()
        return out

    def identity(self) -> dict[str, Any]:
        """The judge the server serves, by content: ``GET /health``'s ``identity`` (asked once per client),
        equal to the served judge's in-process ``identity()`` — so the same judge behind any URL is the
        same judge, and a server restarted with another model, τ or kind is another. A server that reports
        none (an older server; ``/health`` not answered) is known by its URL, ``{"kind": "http", "url"}``,
        with one warning: a restart with another judge at that URL then goes unnoticed."""
        reported = self._server_health().get("identity")
        if isinstance(reported, dict) and isinstance(reported.get("kind"), str):
            return dict(reported)
        if not self._url_identity_warned:
            self._url_identity_warned = True
            why = self._health_failure or "/health reports no identity: an older server, or a judge that cannot tell it"
            logger.warning("judge server %s: the judge it serves is unknown (%s); it is known by its URL only, so a "
                           "restart with another judge at this URL goes unnoticed", self.url, why)
        return {"kind": self.kind, "url": self.url}

    def check_same_judge(self) -> None:
        """Raise :class:`~lm_runs.judges.base.JudgeChanged` (one line) when the server's ``GET /health`` now
        reports another judge than the identity its first answer pinned (or reports none any more); nothing
        to check for a server known by its URL only, or before the first ``/health`` (:meth:`identity`).
        Asked with the retry policy: a ``/health`` that stays unreachable raises ``JudgeUnavailable``."""
        pinned = (self._health or {}).get("identity")
        if not (isinstance(pinned, dict) and isinstance(pinned.get("kind"), str)):
            return
        now = self.retry.run(self._reported_identity, f"judge server {self.url} (GET /health)")
        if now != pinned:
            changes = identity_changes(pinned, now) if isinstance(now, dict) else ["it reports no identity now"]
            shown = "; ".join(changes[:3]) + ("; …" if len(changes) > 3 else "")
            raise JudgeChanged(f"judge server {self.url} now serves another judge than the one this run started with "
                               f"({shown}); its answers would mix two judges' and are not kept: serve the run's judge "
                               "again and rerun, or start a new run with the new judge")

    def _reported_identity(self) -> Any:
        """One ``GET /health`` within the deadline: its ``identity`` (None when it reports none: an error
        status, a body that is not a JSON object); :class:`TransientFailure` for a transport error, 429 or 5xx."""
        import httpx

        started = time.monotonic()
        self._deadlines.set(started + self.timeout)
        try:
            response = self._client.get(self.url + "/health")
        except httpx.TransportError as error:
            raise TransientFailure(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__) from None
        finally:
            self._deadlines.set(None)
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientFailure(f"HTTP {response.status_code}: {_error_message(response)}")
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        return body.get("identity") if isinstance(body, dict) else None

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self) -> "HTTPJudge":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HTTPJudge({self.url!r})"
