"""The judge server's Prometheus metrics (``GET /metrics``)."""

from __future__ import annotations

__all__ = ["ServerMetrics"]


class ServerMetrics:
    """The server's Prometheus metrics, in a registry of their own (several apps per process are fine).

    ``egpo_judge_requests_total{outcome}`` (ok / client_error / server_error; a request whose client
    left before its answer counts as client_error, with ``errors_total{kind="client_gone"}``),
    ``egpo_judge_pairs_total`` (pairs judged and answered to a waiting client),
    ``egpo_judge_batch_size`` (pairs per judge call), ``egpo_judge_batch_requests`` (requests merged per
    judge call), ``egpo_judge_queue_wait_seconds`` (enqueue → judge call, per slice),
    ``egpo_judge_request_latency_seconds``, ``egpo_judge_errors_total{kind}``, ``egpo_judge_queued_pairs``,
    and ``egpo_judge_info{judge_kind}`` = 1: which kind of judge is served (``reward_model``,
    ``preference_model``, ``callable``, ``openai``; :attr:`lm_runs.judges.base.CheckedJudge.kind`).
    """

    OUTCOMES = ("ok", "client_error", "server_error")

    def __init__(self, max_batch_size: int, judge_kind: str = "callable") -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "egpo_judge_requests", "Classification requests, by outcome", ["outcome"], registry=self.registry
        )
        #: the counter of each outcome, looked up once (``labels`` takes a lock and builds a key)
        self.outcomes = {outcome: self.requests.labels(outcome=outcome) for outcome in self.OUTCOMES}
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
        info = Gauge("egpo_judge_info", "The judge served: 1, labelled with its kind", ["judge_kind"], registry=self.registry)
        info.labels(judge_kind=judge_kind).set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
