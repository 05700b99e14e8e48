"""The FastAPI app: routes, the checks that guard them (token, content type, body limit, the
request's id), the watch for clients that leave, and the error handlers.

A request to ``POST /v1/classifications`` passes, in order: its id and start time
(:func:`request_context`), the bearer token (:func:`require_token`, 401), the content type
(:func:`require_json`, 415: a browser page can POST ``text/plain`` to a loopback server without a
CORS preflight, never ``application/json``), the body limit and the protocol's checks
(:func:`classification_request`, 413 / 400), and only then reaches the batching worker. One still
waiting for its answer after :data:`DISCONNECT_WATCH_AFTER` seconds is withdrawn from the queue if its
client leaves (:class:`_DisconnectWatch`, answered 499 and counted, never judged). Every error
is answered as :class:`~lm_runs.judges.protocol.ErrorResponse` with the request's id; a judge's own
exception is logged under that id and never sent.

``POST /v1/scores`` passes the same checks (:func:`score_request`) and, when the judge is a reward model,
reaches the worker's scoring queue (one score per response, merged across requests); any other judge
answers 404 naming its kind. ``GET /health`` says the judge's kind, a reward model's τ and the judge's
identity by content (:func:`judge_identity`: computed once, when the app starts, as the in-process
judge's :meth:`~lm_runs.judges.base.CheckedJudge.identity`).

The classification route is the hot path (a one-pair request to a small judge costs a few hundred
microseconds of the event loop's time), so it is a plain Starlette route calling its checks itself:
FastAPI's dependency solving and its request handler cost about 0.1 ms per request. The other routes
are FastAPI routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import time
import uuid
from typing import Any, AsyncIterator, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from lm_runs.judges.base import CallableJudge, CheckedJudge
from lm_runs.judges.protocol import (
    CLASSIFICATIONS_PATH,
    DEFAULT_MAX_BODY_BYTES,
    SCORES_PATH,
    DEFAULT_MAX_PAIRS_PER_REQUEST,
    ClassificationRequest,
    ClassificationResponse,
    ErrorResponse,
    HealthResponse,
    ProtocolError,
    ScoreRequest,
    ScoreResponse,
    parse_classification_request,
    parse_score_request,
)

from .batching import BatchingWorker
from .errors import ApiError
from .metrics import ServerMetrics

__all__ = [
    "DISCONNECT_WATCH_AFTER",
    "create_app",
    "classification_request",
    "judge_identity",
    "score_request",
    "request_context",
    "require_json",
    "require_token",
]

# ------------------------------------------------------------------------------------ dependencies


async def request_context(request: Request) -> str:
    """Give the request an id (answered with errors, named in the log: the app's random prefix and a
    counter, cheaper than a UUID per request) and note when it arrived."""
    app_state = request.app.state
    request_id = f"{app_state.id_prefix}{next(app_state.request_numbers):08x}"
    state = request.state
    state.request_id = request_id
    state.started = time.perf_counter()
    return request_id


async def require_token(request: Request) -> None:
    """401 unless the ``Authorization`` header carries the server's bearer token (when it has one)."""
    expected = request.app.state.expected_auth
    if expected is None:
        return
    given = request.headers.get("authorization")
    if not given:
        raise ApiError(401, "unauthorized", "missing bearer token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected):
        raise ApiError(401, "unauthorized", "invalid bearer token")


async def require_json(request: Request) -> None:
    """415 unless the body is declared ``application/json``."""
    declared = request.headers.get("content-type", "")
    if declared.split(";", 1)[0].strip().lower() != "application/json":
        shown = declared[:60] if declared else "none"
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be application/json, got {shown!r}")


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "bad_request", f"invalid Content-Length header {length[:40]!r}") from None
        if declared > limit:
            raise ApiError(413, "too_large", f"request body too large: {declared} bytes > limit {limit}")
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, "too_large", f"request body too large: over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(499, "client_gone", "the client left before sending its whole request") from None
    return b"".join(chunks)


async def _checked_body(request: Request) -> bytes:
    """The request's id (:func:`request_context`), its token (:func:`require_token`), content type
    (:func:`require_json`) and the body read up to the limit (413), in that order."""
    await request_context(request)
    await require_token(request)
    await require_json(request)
    return await _read_body(request, request.app.state.max_body_bytes)


async def classification_request(request: Request) -> ClassificationRequest:
    """The classification route's checks: :func:`_checked_body`, then the protocol's (400)."""
    body = await _checked_body(request)
    try:
        return parse_classification_request(body, request.app.state.max_pairs_per_request)
    except ProtocolError as error:
        raise ApiError(error.status, error.kind, error.message) from None


async def score_request(request: Request) -> ScoreRequest:
    """The score route's checks: :func:`_checked_body`, then the protocol's (400; 413 above the limit on
    pairs per request, counted in responses)."""
    body = await _checked_body(request)
    try:
        return parse_score_request(body, request.app.state.max_pairs_per_request)
    except ProtocolError as error:
        raise ApiError(error.status, error.kind, error.message) from None


#: Seconds a classification request waits for its answer before the server starts watching for its
#: client's disconnect (see :class:`_DisconnectWatch`).
DISCONNECT_WATCH_AFTER = 0.5


async def _client_gone(request: Request) -> None:
    """Return once the client has disconnected (the body is already read: only a disconnect is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _DisconnectWatch:
    """Withdraws a queued request (cancels its ``future``) when its client disconnects.

    ASGI reports a disconnect only to a pending ``receive()``, which needs a task of its own; creating,
    running and cancelling it costs about 40 µs here, a tenth of the event loop's time for a one-pair
    request. So the task starts only when the request has waited ``delay`` seconds: until then the
    watch is one timer. A request answered sooner is never watched (little judge work is left to save
    by then); one that waits longer (a long queue, a slow judge, a client that gives up) is withdrawn
    within an event-loop turn of its client's leaving, or at ``delay`` if it left earlier.
    """

    __slots__ = ("request", "future", "timer", "task")

    def __init__(self, request: Request, future: Any, delay: float) -> None:
        self.request = request
        self.future = future
        self.task: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self.timer = None
        self.task = asyncio.ensure_future(_client_gone(self.request))
        self.task.add_done_callback(self._withdraw)

    def _withdraw(self, task: asyncio.Task) -> None:
        if not task.cancelled():
            self.future.cancel()

    def client_left(self) -> bool:
        """Whether the client disconnected (and the request was withdrawn)."""
        return self.task is not None and self.task.done() and not self.task.cancelled()

    def stop(self) -> None:
        """Stop watching (the request is answered or failed)."""
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:
            self.task.cancel()


# ------------------------------------------------------------------------------------------ routes


async def _answer(request: Request, future: Any) -> list[float]:
    """The worker's answer to a queued request; withdrawn (499) if its client leaves first."""
    watch = _DisconnectWatch(request, future, DISCONNECT_WATCH_AFTER)
    try:
        results = await asyncio.wrap_future(future)  # an ApiError from the worker goes to the handler
    except asyncio.CancelledError:
        if watch.client_left():
            raise ApiError(499, "client_gone", "the client left before its answer") from None
        raise
    finally:
        watch.stop()
    _count(request, "ok")
    return results


async def classify(request: Request) -> JSONResponse:
    """Judge the request's pairs in the shared batches; a request whose client leaves is withdrawn."""
    payload = await classification_request(request)
    state = request.app.state
    shuffle = True if payload.shuffle_order is None else payload.shuffle_order
    future = state.worker.submit(payload.prompts, payload.completions, shuffle, request.state.request_id)
    results = await _answer(request, future)
    body = ClassificationResponse(id=f"classification-{uuid.uuid4()}", model=state.model_name, results=results)
    return JSONResponse(body.model_dump())


async def score(request: Request) -> JSONResponse:
    """Score the request's responses with the reward model, in the shared scoring batches; 404 for
    another judge kind."""
    payload = await score_request(request)
    state = request.app.state
    worker = state.worker
    if worker.scorer is None:
        raise ApiError(404, "not_a_reward_model", f"the judge served here ({state.judge_kind}) does not score responses: "
                       f"only a reward model does; ask pairs at POST {CLASSIFICATIONS_PATH}")
    future = worker.submit_scores(payload.prompts, payload.responses, request.state.request_id)
    scores = await _answer(request, future)
    body = ScoreResponse(id=f"score-{uuid.uuid4()}", model=state.model_name, scores=scores, temperature=worker.scorer.temperature)
    return JSONResponse(body.model_dump())


_UNKNOWN = object()


async def judge_identity(app: FastAPI) -> dict[str, Any] | None:
    """The served judge by content, :meth:`~lm_runs.judges.base.CheckedJudge.identity` (hashing a model
    folder's files: computed once per app, off the event loop, and kept); None, logged once, when the
    judge cannot tell it (its ``identity()`` raised)."""
    state = app.state
    if state.identity is _UNKNOWN:
        try:
            identity = await asyncio.get_running_loop().run_in_executor(None, state.judge.identity)
        except Exception as error:  # noqa: BLE001 - a judge that cannot tell its identity still serves
            logging.getLogger("lm_runs.judge_server").warning(
                "the judge's identity() raised %s: /health reports none, and clients fall back to this server's URL",
                type(error).__name__, exc_info=error)
            identity = None
        state.identity = identity
    return state.identity


async def health(request: Request) -> dict[str, Any]:
    """Up, which model it serves, the judge's kind, a reward model's τ and the judge's identity by
    content (:func:`judge_identity`); never needs the token."""
    state = request.app.state
    scorer = state.worker.scorer
    return HealthResponse(model=state.model_name, judge_kind=state.judge_kind,
                          temperature=None if scorer is None else scorer.temperature,
                          identity=await judge_identity(request.app)).model_dump()


async def metrics_endpoint(request: Request) -> Response:
    """The Prometheus metrics (needs the token when one is set)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


# ------------------------------------------------------------------------------------------ errors


def _count(request: Request, outcome: str) -> None:
    """Count a classification request's outcome and latency (other routes are not counted)."""
    started = getattr(request.state, "started", None)
    if started is None or request.scope["path"] not in (CLASSIFICATIONS_PATH, SCORES_PATH):
        return
    metrics = request.app.state.metrics
    metrics.outcomes[outcome].inc()
    metrics.latency.observe(time.perf_counter() - started)


def _error(request: Request, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    request.app.state.metrics.errors.labels(kind=kind).inc()
    body = ErrorResponse(error=message, request_id=getattr(request.state, "request_id", None))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    _count(request, "client_error" if 400 <= error.status < 500 else "server_error")
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return _error(request, error.status, error.kind, error.message, headers)


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if error.status_code == 404:
        message = f"no route {request.url.path[:100]!r}: use POST {CLASSIFICATIONS_PATH}, POST {SCORES_PATH}, GET /health or GET /metrics"
    elif error.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path!r}"
    else:
        message = str(error.detail)
    return _error(request, error.status_code, f"http_{error.status_code}", message, getattr(error, "headers", None))


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    logging.getLogger("lm_runs.judge_server").error("request %s: internal error", request_id, exc_info=error)
    _count(request, "server_error")
    return _error(request, 500, "internal", "judge server internal error; the details are in the server's log")


# --------------------------------------------------------------------------------------------- app


def create_app(
    judge: Callable[..., Any],
    *,
    name: str | None = None,
    max_batch_size: int = 64,
    max_wait_ms: float = 5.0,
    token: str | None = None,
    max_pairs_per_request: int = DEFAULT_MAX_PAIRS_PER_REQUEST,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_queued_pairs: int = 1 << 20,
) -> FastAPI:
    """The FastAPI app serving ``judge`` (a :class:`~lm_runs.judges.base.CheckedJudge`; a judge object with
    its own ``identity()``, or a plain judge callable as a :class:`~lm_runs.judges.base.CallableJudge`,
    wrapped in one); see :mod:`lm_runs.judges.protocol` for the wire format.

    ``token``: required bearer token (``None`` or empty: no authentication). The batching worker
    starts with the app's lifespan (or on the first request) and stops with it. ``app.state`` holds
    ``worker``, ``metrics``, ``model_name``, ``judge`` (the :class:`~lm_runs.judges.base.CheckedJudge`),
    ``identity`` (see :func:`judge_identity`) and the limits.
    """
    if max_pairs_per_request < 1:
        raise ValueError(f"max_pairs_per_request must be >= 1, got {max_pairs_per_request}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
    if not isinstance(judge, CheckedJudge):  # a judge object with its own identity() keeps it; a plain callable is a CallableJudge
        judge = CheckedJudge(judge if callable(getattr(judge, "identity", None)) else CallableJudge(judge, name=name), name=name)
    model_name = name or judge.name
    metrics = ServerMetrics(max_batch_size, judge_kind=judge.kind)
    worker = BatchingWorker(
        judge,
        name=model_name,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queued_pairs=max_queued_pairs,
        metrics=metrics,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        await judge_identity(app)  # hashed once before the first request, not on the first /health
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, worker.stop)

    app = FastAPI(title="egpo judge server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    app.state.metrics = metrics
    app.state.model_name = model_name
    app.state.judge_kind = judge.kind
    app.state.judge = judge
    app.state.identity = _UNKNOWN
    app.state.id_prefix = uuid.uuid4().hex[:12]
    app.state.request_numbers = itertools.count(1)
    app.state.expected_auth = f"Bearer {token}".encode() if token else None
    app.state.max_pairs_per_request = max_pairs_per_request
    app.state.max_body_bytes = max_body_bytes
    # routes added to the app itself: an included APIRouter adds a dispatch layer to every request
    app.add_route(CLASSIFICATIONS_PATH, classify, methods=["POST"])
    app.add_route(SCORES_PATH, score, methods=["POST"])
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], dependencies=[Depends(require_token)])
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    return app
