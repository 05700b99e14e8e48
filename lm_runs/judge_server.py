"""An HTTP judge server with cross-request batching: ``python -m lm_runs.judge_server --judge SPEC``.

Protocol (that of the EGPO paper's reference client):

* ``POST /v1/classifications`` with ``{"prompts": [str, ...], "completions": [[a, b], ...],
  "shuffle_order": true}`` (``shuffle_order`` optional, default true) answers 200
  ``{"id": "classification-<uuid>", "object": "classification", "model": <name>,
  "results": [P(a ≻ b), ...]}``.
* ``GET /health`` answers ``{"status": "ok", "model": <name>}`` (never needs the token).
* ``GET /metrics``: Prometheus text (needs the token when one is set).
* Every error answers ``{"error": "<message>"}``: 400 malformed payload or JSON, 401 missing or
  wrong bearer token, 404/405 unknown route or method, 413 too many pairs or body too large,
  422 (FastAPI's own validation, reshaped), 429 queue full, 500 the judge raised, 502 the judge
  answered something other than one probability in [0, 1] per pair, 503 shutting down.

Batching: one worker thread owns the judge, so there is never more than one forward pass at a
time. Requests are queued as slices ``(request, start, stop)``; the worker takes the oldest
pending slice, waits until ``max_wait_ms`` after that request arrived for more pairs (or until it has
``max_batch_size``), then judges up to ``max_batch_size`` pairs drawn in arrival order from every
pending request with the same ``shuffle_order``, splitting a request that does not fit. Each
slice of the answer is written back to ``results[start:stop]`` of its own request object, so
answers cannot cross between requests. When a merged batch fails, each request in it is rerun
alone, so one bad request does not fail the others.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hmac
import ipaddress
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from lm_runs.judges.base import CheckedJudge, JudgeError, accepts_shuffle_order, check_judgements, judge_name
from lm_runs.judges.protocol import TOKEN_ENV

__all__ = [
    "ApiError",
    "BatchingWorker",
    "ServerMetrics",
    "ServerThread",
    "create_app",
    "parse_payload",
    "serve_in_thread",
    "main",
    "DEFAULT_MAX_BODY_BYTES",
]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_HOST = "127.0.0.1"


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status``; ``kind`` labels the metric."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


# --------------------------------------------------------------------------------------- metrics


class ServerMetrics:
    """The server's Prometheus metrics, in a registry of their own (several apps per process are fine).

    ``egpo_judge_requests_total{outcome}`` (ok / client_error / server_error), ``egpo_judge_pairs_total``,
    ``egpo_judge_batch_size`` (pairs per judge call), ``egpo_judge_batch_requests`` (requests merged per
    judge call), ``egpo_judge_queue_wait_seconds`` (enqueue → judge call, per slice),
    ``egpo_judge_request_latency_seconds``, ``egpo_judge_errors_total{kind}``, ``egpo_judge_queued_pairs``.
    """

    OUTCOMES = ("ok", "client_error", "server_error")

    def __init__(self, max_batch_size: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "egpo_judge_requests", "Classification requests, by outcome", ["outcome"], registry=self.registry
        )
        for outcome in self.OUTCOMES:
            self.requests.labels(outcome=outcome)
        self.pairs = Counter("egpo_judge_pairs", "Pairs judged and answered", registry=self.registry)
        sizes = sorted({2**k for k in range(max_batch_size.bit_length()) if 2**k <= max_batch_size} | {max_batch_size})
        self.batch_size = Histogram(
            "egpo_judge_batch_size", "Pairs per judge call", buckets=[float(s) for s in sizes], registry=self.registry
        )
        self.batch_requests = Histogram(
            "egpo_judge_batch_requests",
            "Requests merged into one judge call",
            buckets=[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "egpo_judge_queue_wait_seconds",
            "Seconds from a request's arrival in the queue to the judge call that takes (a slice of) it",
            buckets=[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            registry=self.registry,
        )
        self.latency = Histogram(
            "egpo_judge_request_latency_seconds",
            "Seconds from receiving a classification request to answering it",
            buckets=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            registry=self.registry,
        )
        self.errors = Counter("egpo_judge_errors", "Errors answered, by kind", ["kind"], registry=self.registry)
        self.queued = Gauge("egpo_judge_queued_pairs", "Pairs waiting for the judge", registry=self.registry)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# ---------------------------------------------------------------------------------------- worker


class _Job:
    """One request's pairs, its answer being filled in, and the future its handler awaits."""

    __slots__ = ("prompts", "completions", "shuffle", "results", "remaining", "future", "enqueued", "failed")

    def __init__(self, prompts: list[str], completions: list[list[str]], shuffle: bool) -> None:
        self.prompts = prompts
        self.completions = completions
        self.shuffle = shuffle
        self.results: list[float | None] = [None] * len(prompts)
        self.remaining = len(prompts)
        self.future: concurrent.futures.Future[list[float]] = concurrent.futures.Future()
        self.enqueued = time.monotonic()
        self.failed = False

    def dead(self) -> bool:
        return self.failed or self.future.done()


class _Slice:
    """Pairs ``start:stop`` of one job."""

    __slots__ = ("job", "start", "stop")

    def __init__(self, job: _Job, start: int, stop: int) -> None:
        self.job = job
        self.start = start
        self.stop = stop

    def __len__(self) -> int:
        return self.stop - self.start


class BatchingWorker:
    """The single thread that owns the judge and merges queued pairs across requests into batches.

    ``submit`` (any thread) returns a ``concurrent.futures.Future`` of the request's probabilities,
    in order, or an :class:`ApiError` (500 judge raised, 502 invalid answer, 429 queue full,
    503 stopped). See the module docstring for the batching rule.
    """

    def __init__(
        self,
        judge: Callable[..., Any],
        *,
        name: str,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        max_queued_pairs: int = 1 << 20,
        metrics: ServerMetrics | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._judge = judge.inner if isinstance(judge, CheckedJudge) else judge
        self._takes_shuffle = accepts_shuffle_order(self._judge)
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued_pairs = max_queued_pairs
        self.metrics = metrics or ServerMetrics(max_batch_size)
        self._cond = threading.Condition()
        self._queues: dict[bool, deque[_Slice]] = {True: deque(), False: deque()}
        self._counts = {True: 0, False: 0}
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- life cycle
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=f"judge-worker-{self.name}", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in progress, fail what is still queued (503) and join the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- producer side
    def submit(self, prompts: list[str], completions: list[list[str]], shuffle_order: bool = True) -> concurrent.futures.Future:
        """Queue one request's (already validated) pairs; the future resolves to its probabilities."""
        job = _Job(prompts, completions, bool(shuffle_order))
        if not prompts:
            job.future.set_result([])
            return job.future
        if self._thread is None:
            self.start()
        with self._cond:
            if self._stopping:
                raise ApiError(503, "shutting_down", "server is shutting down")
            queued = self._counts[True] + self._counts[False]
            if queued + len(prompts) > self.max_queued_pairs:
                raise ApiError(429, "queue_full", f"server busy: {queued} pairs queued, limit {self.max_queued_pairs}")
            self._queues[job.shuffle].append(_Slice(job, 0, len(prompts)))
            self._counts[job.shuffle] += len(prompts)
            self.metrics.queued.set(queued + len(prompts))
            self._cond.notify_all()
        return job.future

    # -- worker side
    def _oldest_key(self) -> bool | None:
        heads = [(q[0].job.enqueued, key) for key, q in self._queues.items() if q]
        return min(heads)[1] if heads else None

    def _take(self, key: bool) -> list[_Slice]:
        """Pop up to ``max_batch_size`` pairs of ``key`` in arrival order (lock held)."""
        queue = self._queues[key]
        batch: list[_Slice] = []
        room = self.max_batch_size
        while queue and room > 0:
            head = queue[0]
            if head.job.dead():  # its request already failed or was abandoned
                queue.popleft()
                self._counts[key] -= len(head)
                continue
            if len(head) <= room:
                queue.popleft()
                batch.append(head)
                room -= len(head)
                self._counts[key] -= len(head)
            else:  # split: take the front, leave the rest at the head of the queue
                batch.append(_Slice(head.job, head.start, head.start + room))
                head.start += room
                self._counts[key] -= room
                room = 0
        self.metrics.queued.set(self._counts[True] + self._counts[False])
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not (self._queues[True] or self._queues[False]):
                    self._cond.wait()
                if self._stopping:
                    break
                key = self._oldest_key()
                assert key is not None
                deadline = self._queues[key][0].job.enqueued + self.max_wait
                while self._counts[key] < self.max_batch_size and not self._stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._take(key)
            if batch:
                try:
                    self._execute(key, batch)
                except BaseException as error:  # a bug here must not kill the worker
                    failure = ApiError(500, "internal", f"judge server internal error: {type(error).__name__}: {error}")
                    for job in {id(s.job): s.job for s in batch}.values():
                        self._fail(job, failure)
        with self._cond:
            leftovers = [s for q in self._queues.values() for s in q]
            for q in self._queues.values():
                q.clear()
            self._counts = {True: 0, False: 0}
        for s in leftovers:
            self._fail(s.job, ApiError(503, "shutting_down", "server is shutting down"))

    def _call(self, key: bool, slices: list[_Slice]) -> list[float]:
        prompts: list[str] = []
        completions: list[list[str]] = []
        for s in slices:
            prompts += s.job.prompts[s.start : s.stop]
            completions += s.job.completions[s.start : s.stop]
        self.metrics.batch_size.observe(len(prompts))
        self.metrics.batch_requests.observe(len({id(s.job) for s in slices}))
        try:
            if self._takes_shuffle:
                values = self._judge(prompts, completions, shuffle_order=key)
            else:
                values = self._judge(prompts, completions)
        except Exception as error:
            raise ApiError(500, "judge_exception", f"judge {self.name} raised {type(error).__name__}: {error}") from None
        try:
            return check_judgements(values, len(prompts), self.name)
        except JudgeError as error:
            raise ApiError(502, "judge_invalid_output", str(error)) from None

    def _execute(self, key: bool, batch: list[_Slice]) -> None:
        now = time.monotonic()
        for s in batch:
            self.metrics.queue_wait.observe(now - s.job.enqueued)
        try:
            values = self._call(key, batch)
        except ApiError as failure:
            jobs = list({id(s.job): s.job for s in batch}.values())
            if len(jobs) == 1:
                self._fail(jobs[0], failure)
                return
            for job in jobs:  # isolate the request(s) that make the judge fail
                part = [s for s in batch if s.job is job]
                try:
                    self._deliver(part, self._call(key, part))
                except ApiError as own_failure:
                    self._fail(job, own_failure)
            return
        self._deliver(batch, values)

    def _deliver(self, slices: list[_Slice], values: list[float]) -> None:
        offset = 0
        for s in slices:
            n = len(s)
            job = s.job
            job.results[s.start : s.stop] = values[offset : offset + n]
            offset += n
            job.remaining -= n
            self.metrics.pairs.inc(n)
            if job.remaining == 0 and not job.failed and not job.future.done():
                try:
                    job.future.set_result(list(job.results))  # type: ignore[arg-type]
                except concurrent.futures.InvalidStateError:
                    pass
        assert offset == len(values)

    @staticmethod
    def _fail(job: _Job, failure: ApiError) -> None:
        job.failed = True
        if not job.future.done():
            try:
                job.future.set_exception(failure)
            except concurrent.futures.InvalidStateError:
                pass


# ---------------------------------------------------------------------------------------- parsing


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_payload(body: bytes, max_pairs: int) -> tuple[list[str], list[list[str]], bool]:
    """Decode and validate a classification request body → ``(prompts, completions, shuffle_order)``.

    Raises :class:`ApiError` (400, or 413 for more than ``max_pairs`` pairs) naming the problem.
    Unknown fields are ignored; ``shuffle_order`` may be absent or null (true).
    """
    if not body.strip():
        raise ApiError(400, "invalid_json", "empty request body: expected a JSON object")
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "request body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ApiError(400, "invalid_json", f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", f"request body must be a JSON object, got {_json_type(data)}")
    for key in ("prompts", "completions"):
        if key not in data:
            raise ApiError(400, "bad_request", f"missing field '{key}'")
    prompts, completions = data["prompts"], data["completions"]
    if not isinstance(prompts, list):
        raise ApiError(400, "bad_request", f"'prompts' must be an array of strings, got {_json_type(prompts)}")
    if not isinstance(completions, list):
        raise ApiError(400, "bad_request", f"'completions' must be an array of [a, b] pairs, got {_json_type(completions)}")
    if len(prompts) != len(completions):
        raise ApiError(400, "bad_request", f"'prompts' has {len(prompts)} items but 'completions' has {len(completions)}")
    if not prompts:
        raise ApiError(400, "bad_request", "'prompts' and 'completions' are empty: send at least one pair")
    if len(prompts) > max_pairs:
        raise ApiError(413, "too_large", f"too many pairs: {len(prompts)} > limit {max_pairs} per request")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ApiError(400, "bad_request", f"'prompts[{i}]' must be a string, got {_json_type(prompt)}")
    for i, pair in enumerate(completions):
        if not isinstance(pair, list):
            raise ApiError(400, "bad_request", f"'completions[{i}]' must be a pair [a, b] of strings, got {_json_type(pair)}")
        if len(pair) != 2:
            raise ApiError(400, "bad_request", f"'completions[{i}]' must hold exactly 2 responses, got {len(pair)}")
        for side, response in enumerate(pair):
            if not isinstance(response, str):
                raise ApiError(400, "bad_request", f"'completions[{i}][{side}]' must be a string, got {_json_type(response)}")
    shuffle = data.get("shuffle_order")
    if shuffle is None:
        shuffle = True
    elif not isinstance(shuffle, bool):
        raise ApiError(400, "bad_request", f"'shuffle_order' must be true or false, got {_json_type(shuffle)} {json.dumps(shuffle)[:40]}")
    return prompts, completions, shuffle


# --------------------------------------------------------------------------------------------- app


def create_app(
    judge: Callable[..., Any],
    *,
    name: str | None = None,
    max_batch_size: int = 64,
    max_wait_ms: float = 5.0,
    token: str | None = None,
    max_pairs_per_request: int = 4096,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_queued_pairs: int = 1 << 20,
) -> FastAPI:
    """The FastAPI app serving ``judge`` (see the module docstring for the protocol and errors).

    ``token``: required bearer token (``None`` or empty: no authentication). The batching worker
    starts with the app's lifespan (or on the first request) and stops with it. ``app.state`` holds
    ``worker``, ``metrics`` and ``model_name``.
    """
    if max_pairs_per_request < 1:
        raise ValueError(f"max_pairs_per_request must be >= 1, got {max_pairs_per_request}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
    model_name = name or judge_name(judge)
    metrics = ServerMetrics(max_batch_size)
    worker = BatchingWorker(
        judge,
        name=model_name,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queued_pairs=max_queued_pairs,
        metrics=metrics,
    )
    expected_auth = f"Bearer {token}".encode() if token else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, worker.stop)

    app = FastAPI(title="egpo judge server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    app.state.metrics = metrics
    app.state.model_name = model_name

    def error_response(error: ApiError) -> JSONResponse:
        metrics.errors.labels(kind=error.kind).inc()
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    def check_token(request: Request) -> None:
        if expected_auth is None:
            return
        given = request.headers.get("authorization")
        if not given:
            raise ApiError(401, "unauthorized", "missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected_auth):
            raise ApiError(401, "unauthorized", "invalid bearer token")

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ApiError(400, "bad_request", f"invalid Content-Length header {length!r}") from None
            if declared > max_body_bytes:
                raise ApiError(413, "too_large", f"request body too large: {declared} bytes > limit {max_body_bytes}")
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body_bytes:
                raise ApiError(413, "too_large", f"request body too large: over the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.url.path!r}: use POST /v1/classifications, GET /health or GET /metrics"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path!r}"
        metrics.errors.labels(kind=f"http_{exc.status_code}").inc()
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()]
        metrics.errors.labels(kind="validation").inc()
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=422)

    @app.post("/v1/classifications")
    async def classify(request: Request) -> Response:
        started = time.perf_counter()
        outcome = "server_error"
        try:
            check_token(request)
            body = await read_body(request)
            prompts, completions, shuffle = parse_payload(body, max_pairs_per_request)
            results = await asyncio.wrap_future(worker.submit(prompts, completions, shuffle))
            outcome = "ok"
            return JSONResponse(
                {
                    "id": f"classification-{uuid.uuid4()}",
                    "object": "classification",
                    "model": model_name,
                    "results": results,
                }
            )
        except ApiError as error:
            outcome = "client_error" if 400 <= error.status < 500 else "server_error"
            return error_response(error)
        except Exception as error:  # noqa: BLE001 - answer, count, keep serving
            return error_response(ApiError(500, "internal", f"judge server internal error: {type(error).__name__}: {error}"))
        finally:
            metrics.requests.labels(outcome=outcome).inc()
            metrics.latency.observe(time.perf_counter() - started)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name}

    @app.get("/metrics")
    async def metrics_endpoint(request: Request) -> Response:
        try:
            check_token(request)
        except ApiError as error:
            return error_response(error)
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


# ------------------------------------------------------------------------------------------ serving


def _bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says it is TCP; without it, Nagle + delayed ACKs add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ServerThread:
    """A uvicorn server for ``app`` on a background thread; ``port`` is the bound port once started.

    ``port=0`` binds a free port. ``stop()`` (or leaving the ``with`` block) shuts it down gracefully.
    """

    def __init__(self, app: Any, *, host: str = DEFAULT_HOST, port: int = 0, log_level: str = "warning") -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.log_level = log_level
        self.port: int | None = None
        self.server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self.port is None:
            raise RuntimeError("server not started")
        return _url(self.host, self.port)

    def start(self, timeout: float = 30.0) -> "ServerThread":
        """Bind, start serving, and return once uvicorn reports it is up (``RuntimeError`` otherwise)."""
        import uvicorn

        sock = _bind_socket(self.host, self.requested_port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level=self.log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"judge server on {self.url} exited during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"judge server on {self.url} did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Ask uvicorn to exit and join its thread."""
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "ServerThread":
        if self.server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(app: Any, *, host: str = DEFAULT_HOST, port: int = 0, timeout: float = 30.0) -> ServerThread:
    """Start ``app`` on a background uvicorn thread (default 127.0.0.1, a free port); ``.port`` is bound."""
    return ServerThread(app, host=host, port=port).start(timeout=timeout)


# -------------------------------------------------------------------------------------------- CLI


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m lm_runs.judge_server``."""
    parser = argparse.ArgumentParser(
        prog="python -m lm_runs.judge_server",
        description="Serve a judge over HTTP (POST /v1/classifications) with cross-request batching.",
    )
    parser.add_argument("--judge", required=True, help="'module:function' or a preference-model directory")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback --host")
    parser.add_argument("--port", type=int, default=8000, help="port (0: pick a free one and print it; default %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="pairs per judge call (default %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long to wait for a batch to fill (default %(default)s)")
    parser.add_argument("--token", default=None, help=f"required bearer token (default: ${TOKEN_ENV} if set)")
    parser.add_argument("--max-pairs-per-request", type=int, default=4096, help="payload limit, 413 above (default %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="body limit, 413 above (default 16 MiB)")
    parser.add_argument("--max-queued-pairs", type=int, default=1 << 20, help="queue limit, 429 above (default %(default)s)")
    parser.add_argument("--device", default=None, help="preference model device (default: cuda if available, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the judge's order shuffling (default %(default)s)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags, load the judge, bind, print the URL, serve until interrupted."""
    import uvicorn

    from lm_runs.judges.loader import load_judge

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.judge.startswith(("http://", "https://")):
        parser.error(f"--judge {args.judge}: an HTTP judge cannot be served again; give 'module:function' or a model directory")
    if not _is_loopback(args.host) and not args.allow_remote:
        parser.error(f"--host {args.host} is not a loopback address: pass --allow-remote to listen on it")
    for flag, value, low in (
        ("--port", args.port, 0),
        ("--max-batch-size", args.max_batch_size, 1),
        ("--max-wait-ms", args.max_wait_ms, 0),
        ("--max-pairs-per-request", args.max_pairs_per_request, 1),
        ("--max-body-bytes", args.max_body_bytes, 1),
        ("--max-queued-pairs", args.max_queued_pairs, 1),
    ):
        if value < low:
            parser.error(f"{flag} must be >= {low}, got {value}")
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    if not _is_loopback(args.host) and not token:
        print(f"warning: listening on {args.host} without a bearer token (--token or ${TOKEN_ENV})", file=sys.stderr)
    try:
        judge = load_judge(args.judge, seed=args.seed, device=args.device, batch_size=args.max_batch_size)
    except (ValueError, OSError) as error:
        parser.error(f"--judge: {error}")
    app = create_app(
        judge,
        name=judge.name,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        token=token,
        max_pairs_per_request=args.max_pairs_per_request,
        max_body_bytes=args.max_body_bytes,
        max_queued_pairs=args.max_queued_pairs,
    )
    try:
        sock = _bind_socket(args.host, args.port)
    except OSError as error:
        parser.error(f"cannot listen on {args.host}:{args.port}: {error}")
    port = sock.getsockname()[1]
    print(f"judge server: model {judge.name!r} listening on {_url(args.host, port)}", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
