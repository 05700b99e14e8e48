"""The batching worker: one thread owns the judge and merges queued pairs across requests.

Requests are queued as slices ``(request, start, stop)``; the worker takes the oldest pending slice,
waits until ``max_wait_ms`` after that request arrived for more pairs (or until it has
``max_batch_size``), then judges up to ``max_batch_size`` pairs drawn in arrival order from every
pending request of the same queue, splitting a request that does not fit. Pair requests share a queue
when they must get the same answers in one call: by ``shuffle_order`` for a judge that shuffles the
order it shows, and all in one queue for a judge that does not (a reward model, a callable without
``shuffle_order``: the flag cannot change its answers). Scoring requests of a reward-model judge
(``responses`` to score, :meth:`BatchingWorker.submit_scores`) have their own queue: a batch of them is
one ``rewards`` call, each distinct response scored once. Each slice of
the answer is written back to ``results[start:stop]`` of its own request object, so answers cannot
cross between requests. When a merged batch fails, each request in it is rerun alone, so one bad
request does not fail the others. A request whose future was cancelled (its client left) is dropped
from the queue and not answered or counted.

The judge is called through :class:`~lm_runs.judges.base.CheckedJudge`, which validates its answers;
an invalid answer is a 502 naming what was wrong, any other failure a 500 whose details (the judge's
exception and traceback) go to the server's log under the request's id, never to the client.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable

from lm_runs.judges.base import CallableJudge, CheckedJudge, InvalidJudgement
from lm_runs.judges.reward_model import scorer_of

from .errors import ApiError
from .metrics import ServerMetrics

__all__ = ["BatchingWorker"]

logger = logging.getLogger("lm_runs.judge_server")

#: The queue of scoring requests (the pair queues are keyed by the shuffle flag they are judged with).
SCORES = "scores"


class _Job:
    """One request's pairs (or responses to score), its queue (the shuffle flag its pairs are judged with,
    or :data:`SCORES`), its answer being filled in, and the future its handler awaits."""

    __slots__ = ("prompts", "completions", "queue", "results", "remaining", "future", "enqueued", "failed", "request_id")

    def __init__(self, prompts: list[str], completions: list[Any], queue: bool | str, request_id: str) -> None:
        self.request_id = request_id
        self.prompts = prompts
        self.completions = completions
        self.queue = queue
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
    in order, or an :class:`ApiError` (500 judge failed, 502 invalid answer, 429 queue full,
    503 stopped); cancelling the future withdraws the request. ``submit_scores`` likewise for the rewards
    of a reward-model judge (``scorer``: its reward model, else None). ``judge``: a
    :class:`~lm_runs.judges.base.CheckedJudge`, or a plain judge callable (wrapped in one).
    See the module docstring for the batching rule.
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
        self._judge = judge if isinstance(judge, CheckedJudge) else CheckedJudge(CallableJudge(judge, name=name), name=name)
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued_pairs = max_queued_pairs
        self.metrics = metrics or ServerMetrics(max_batch_size)
        self._cond = threading.Condition()
        self.scorer = scorer_of(self._judge)
        self._queues: dict[bool | str, deque[_Slice]] = {True: deque(), False: deque(), SCORES: deque()}
        self._counts: dict[bool | str, int] = {key: 0 for key in self._queues}
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
    def submit(
        self, prompts: list[str], completions: list[list[str]], shuffle_order: bool = True, request_id: str = "-"
    ) -> concurrent.futures.Future:
        """Queue one request's (already validated) pairs; the future resolves to its probabilities.
        ``request_id`` names the request in the server's log."""
        key = bool(shuffle_order) if self._judge.shuffles_order else False  # the flag cannot change the answers
        return self._enqueue(_Job(prompts, completions, key, request_id))

    def submit_scores(self, prompts: list[str], responses: list[str], request_id: str = "-") -> concurrent.futures.Future:
        """Queue one request's (already validated) responses to score; the future resolves to their rewards.
        ``ValueError`` when the judge is not a reward model (``scorer`` is None)."""
        if self.scorer is None:
            raise ValueError(f"judge {self.name} ({self._judge.kind}) does not score responses")
        return self._enqueue(_Job(prompts, responses, SCORES, request_id))

    def _enqueue(self, job: _Job) -> concurrent.futures.Future:
        prompts = job.prompts
        if not prompts:
            job.future.set_result([])
            return job.future
        if self._thread is None:
            self.start()
        with self._cond:
            if self._stopping:
                raise ApiError(503, "shutting_down", "server is shutting down")
            queued = sum(self._counts.values())
            if queued + len(prompts) > self.max_queued_pairs:
                raise ApiError(429, "queue_full", f"server busy: {queued} pairs queued, limit {self.max_queued_pairs}")
            self._queues[job.queue].append(_Slice(job, 0, len(prompts)))
            self._counts[job.queue] += len(prompts)
            self.metrics.queued.set(queued + len(prompts))
            self._cond.notify_all()
        return job.future

    # -- worker side
    def _oldest_key(self) -> bool | str | None:
        heads = [(q[0].job.enqueued, key) for key, q in self._queues.items() if q]
        return min(heads, key=lambda head: head[0])[1] if heads else None  # keys of two types: compare times only

    def _take(self, key: bool | str) -> list[_Slice]:
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
        self.metrics.queued.set(sum(self._counts.values()))
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not any(self._queues.values()):
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
                    jobs = list({id(s.job): s.job for s in batch}.values())
                    for job in jobs:
                        failure = ApiError(500, "internal", "judge server internal error; the details are in the server's log")
                        failure.__cause__ = error
                        self._fail(job, failure)
        with self._cond:
            leftovers = [s for q in self._queues.values() for s in q]
            for q in self._queues.values():
                q.clear()
            self._counts = {key: 0 for key in self._queues}
        for s in leftovers:
            self._fail(s.job, ApiError(503, "shutting_down", "server is shutting down"))

    def _call(self, key: bool | str, slices: list[_Slice]) -> list[float]:
        prompts: list[str] = []
        completions: list[list[str]] = []
        for s in slices:
            prompts += s.job.prompts[s.start : s.stop]
            completions += s.job.completions[s.start : s.stop]
        self.metrics.batch_size.observe(len(prompts))
        self.metrics.batch_requests.observe(len({id(s.job) for s in slices}))
        try:
            if key == SCORES:
                return self._score(prompts, completions)
            return self._judge(prompts, completions, shuffle_order=key)
        except InvalidJudgement as error:
            raise ApiError(502, "judge_invalid_output", str(error)) from None
        except Exception as error:  # the details go to the log (by _fail), not to the client
            raise ApiError(500, "judge_exception", f"judge {self.name} failed; the details are in the server's log") from error

    def _score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """The reward model's scores, checked: one finite number per response (else 502)."""
        scores = self.scorer.rewards(prompts, responses)
        if len(scores) != len(prompts) or not all(math.isfinite(v) for v in scores):
            raise InvalidJudgement(f"reward model {self.name} answered {len(prompts)} responses with scores that are not one finite number each")
        return [float(v) for v in scores]

    def _execute(self, key: bool | str, batch: list[_Slice]) -> None:
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
            if job.dead():  # failed, or withdrawn by a client that left
                continue
            if job.queue != SCORES:  # pairs judged; a scoring request's responses are not pairs
                self.metrics.pairs.inc(n)
            if job.remaining == 0:
                try:
                    job.future.set_result(list(job.results))  # type: ignore[arg-type]
                except concurrent.futures.InvalidStateError:
                    pass
        assert offset == len(values)

    @staticmethod
    def _fail(job: _Job, failure: ApiError) -> None:
        """Resolve ``job`` with ``failure``; a judge's own exception is logged here, under the request id."""
        cause = failure.__cause__
        if cause is not None:
            logger.error("request %s failed (%d): %s: %s", job.request_id, failure.status, type(cause).__name__, cause, exc_info=cause)
        job.failed = True
        if not job.future.done():
            try:
                job.future.set_exception(failure)
            except concurrent.futures.InvalidStateError:
                pass
