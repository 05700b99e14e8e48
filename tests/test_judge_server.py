"""The judge server (real uvicorn on 127.0.0.1) and its client: batching, errors, retries, tokens."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from lm_runs.judge_server import ApiError, BatchingWorker, create_app, serve_in_thread
from lm_runs.judges import CallableJudge, JudgeError
from lm_runs.judges.http import HTTPJudge

REPO = Path(__file__).resolve().parents[1]


def crc_judge(prompts, completions):
    """Deterministic and row-specific: P = crc32(prompt, a, b) mapped into [0, 1]."""
    return [(zlib.crc32(f"{p}\x00{a}\x00{b}".encode()) % 10007) / 10006 for p, (a, b) in zip(prompts, completions)]


def boom_judge(prompts, completions):
    """Raises on the prompt 'boom', else crc_judge."""
    if "boom" in prompts:
        raise RuntimeError("kaboom on purpose")
    return crc_judge(prompts, completions)


def metrics_of(url: str, token: str | None = None) -> dict:
    """{(sample name, frozenset(labels)): value} from /metrics."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url + "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def sample(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_request(n: int, tag: str):
    prompts = [f"{tag} prompt {i}" for i in range(n)]
    completions = [[f"{tag} a{i} " + "x" * (i % 7), f"{tag} b{i} " + "y" * (i % 5)] for i in range(n)]
    return prompts, completions


def post(url: str, prompts, completions, **extra):
    return httpx.post(url + "/v1/classifications", json={"prompts": prompts, "completions": completions, **extra})


# --------------------------------------------------------------------------------------- the worker


class Recorder:
    """crc_judge that records each call's size and shuffle flag."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, completions, shuffle_order=True):
        self.calls.append((len(prompts), shuffle_order))
        return crc_judge(prompts, completions)


@pytest.mark.parametrize("max_wait_ms, expected_calls", [(600, [(21, True)]), (0, [(5, True), (7, True), (9, True)])])
def test_worker_merges_requests_within_the_wait_window(max_wait_ms, expected_calls):
    judge = Recorder()
    worker = BatchingWorker(judge, name="rec", max_batch_size=64, max_wait_ms=max_wait_ms)
    worker.start()
    try:
        requests = [make_request(n, f"r{n}") for n in (5, 7, 9)]
        futures = []
        for p, c in requests:  # spaced arrivals: merged only if the worker waits for them
            futures.append(worker.submit(p, c, True))
            time.sleep(0.1)
        for (p, c), future in zip(requests, futures):
            assert future.result(timeout=10) == crc_judge(p, c)
        assert judge.calls == expected_calls
    finally:
        worker.stop()


def test_worker_splits_long_requests_and_keeps_shuffle_groups_apart():
    judge = Recorder()
    worker = BatchingWorker(judge, name="rec", max_batch_size=8, max_wait_ms=300)
    worker.start()
    try:
        p1, c1 = make_request(20, "long")
        p2, c2 = make_request(3, "noshuffle")
        f1 = worker.submit(p1, c1, True)
        f2 = worker.submit(p2, c2, False)
        assert f1.result(timeout=10) == crc_judge(p1, c1)
        assert f2.result(timeout=10) == crc_judge(p2, c2)
        assert sorted(judge.calls) == sorted([(8, True), (8, True), (4, True), (3, False)])
    finally:
        worker.stop()


def test_worker_isolates_a_failing_request_from_the_batch(caplog):
    worker = BatchingWorker(boom_judge, name="boomer", max_batch_size=64, max_wait_ms=300)
    worker.start()
    try:
        good1, good2 = make_request(4, "g1"), make_request(6, "g2")
        f1 = worker.submit(*good1, True, "req-good-1")
        fb = worker.submit(["boom", "x"], [["a", "b"], ["c", "d"]], True, "req-boom")
        f2 = worker.submit(*good2, True, "req-good-2")
        assert f1.result(timeout=10) == crc_judge(*good1)
        assert f2.result(timeout=10) == crc_judge(*good2)
        with pytest.raises(ApiError) as info:
            fb.result(timeout=10)
        assert info.value.status == 500 and "boomer" in info.value.message and "kaboom" not in info.value.message
    finally:
        worker.stop()
    logged = [r for r in caplog.records if r.name == "lm_runs.judge_server"]
    assert len(logged) == 1 and "req-boom" in logged[0].getMessage() and "kaboom on purpose" in logged[0].getMessage()


def test_worker_answers_429_when_the_queue_is_full_and_503_after_stop():
    release = threading.Event()

    def slow(prompts, completions):
        release.wait(10)
        return crc_judge(prompts, completions)

    worker = BatchingWorker(slow, name="slow", max_batch_size=2, max_wait_ms=0, max_queued_pairs=5)
    worker.start()
    try:
        first = worker.submit(*make_request(2, "a"), True)
        time.sleep(0.2)  # the worker is now blocked inside the judge with those 2 pairs
        second = worker.submit(*make_request(4, "b"), True)
        with pytest.raises(ApiError) as info:
            worker.submit(*make_request(2, "c"), True)
        assert info.value.status == 429 and "4 pairs queued, limit 5" in info.value.message
        release.set()
        assert first.result(timeout=10) == crc_judge(*make_request(2, "a"))
        assert second.result(timeout=10) == crc_judge(*make_request(4, "b"))
    finally:
        release.set()
        worker.stop()
    with pytest.raises(ApiError) as info:
        worker.submit(*make_request(1, "d"), True)
    assert info.value.status == 503


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8),
    max_batch_size=st.integers(1, 10),
    shuffles=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_worker_routing_property(sizes, max_batch_size, shuffles):
    """Any mix of sizes, batch limits and shuffle flags: every request gets exactly its own answers."""
    judge = Recorder()
    worker = BatchingWorker(judge, name="rec", max_batch_size=max_batch_size, max_wait_ms=2)
    worker.start()
    try:
        requests = [make_request(n, f"h{i}") for i, n in enumerate(sizes)]
        futures = [worker.submit(p, c, shuffles[i]) for i, (p, c) in enumerate(requests)]
        for (p, c), future in zip(requests, futures):
            assert future.result(timeout=10) == crc_judge(p, c)
    finally:
        worker.stop()
    assert all(n <= max_batch_size for n, _ in judge.calls)
    for flag in (True, False):
        assert sum(n for n, s in judge.calls if s is flag) == sum(n for i, n in enumerate(sizes) if shuffles[i] is flag)


# ------------------------------------------------------------------------------- load, end to end


def test_concurrent_load_every_answer_goes_to_its_request():
    app = create_app(crc_judge, name="crc", max_batch_size=128, max_wait_ms=20)
    threads, per_thread = 8, 30
    with serve_in_thread(app) as server:
        url = server.url

        def client(t: int):
            rng = random.Random(t)
            seen = []
            with httpx.Client(base_url=url, timeout=30) as session:
                for r in range(per_thread):
                    n = rng.randint(1, 50)
                    prompts, completions = make_request(n, f"t{t}r{r}")
                    response = session.post("/v1/classifications", json={"prompts": prompts, "completions": completions})
                    assert response.status_code == 200, response.text
                    body = response.json()
                    assert body["object"] == "classification" and body["model"] == "crc"
                    assert body["results"] == crc_judge(prompts, completions), (t, r)
                    seen.append((body["id"], n))
            return seen

        with ThreadPoolExecutor(threads) as pool:
            answers = [a for part in pool.map(client, range(threads)) for a in part]
        assert len(answers) == threads * per_thread
        ids = [i for i, _ in answers]
        assert len(set(ids)) == len(ids) and all(re.fullmatch(r"classification-[0-9a-f-]{36}", i) for i in ids)
        total_pairs = sum(n for _, n in answers)

        assert httpx.get(url + "/health").json() == {"status": "ok", "model": "crc", "judge_kind": "callable", "temperature": None,
                                                    "identity": CallableJudge(crc_judge).identity()}
        m = metrics_of(url)
        assert sample(m, "egpo_judge_requests_total", outcome="ok") == threads * per_thread
        assert sample(m, "egpo_judge_requests_total", outcome="client_error") == 0
        assert sample(m, "egpo_judge_pairs_total") == total_pairs
        assert sample(m, "egpo_judge_batch_size_sum") == total_pairs
        assert sample(m, "egpo_judge_request_latency_seconds_count") == threads * per_thread
        calls = sample(m, "egpo_judge_batch_size_count")
        assert calls < threads * per_thread  # fewer judge calls than requests: requests were merged
        # some batch held more than 64 pairs, more than any single request (≤ 50): merging happened
        assert calls - sample(m, "egpo_judge_batch_size_bucket", le="64.0") > 0
        assert calls - sample(m, "egpo_judge_batch_requests_bucket", le="1.0") > 0
        assert sample(m, "egpo_judge_queue_wait_seconds_count") >= threads * per_thread


# ------------------------------------------------------------------------------ malformed requests


@pytest.fixture(scope="module")
def strict_server():
    app = create_app(boom_judge, name="boomer", max_batch_size=16, max_wait_ms=1, max_pairs_per_request=100, max_body_bytes=65536)
    with serve_in_thread(app) as server:
        yield server.url


GOOD = {"prompts": ["p", "q"], "completions": [["a", "b"], ["c", "d"]]}

MALFORMED = [
    ("invalid-json", dict(content=b'{"prompts": [', headers={"content-type": "application/json"}), 400, "invalid JSON"),
    ("empty-body", dict(content=b"", headers={"content-type": "application/json"}), 400, "empty request body"),
    ("not-utf8", dict(content=b'{"prompts": ["\xff"]}', headers={"content-type": "application/json"}), 400, "not UTF-8"),
    ("deep-json", dict(content=b"[" * 60_000, headers={"content-type": "application/json"}), 400, "nested too deeply"),
    ("huge-integer", dict(content=b'{"prompts": [' + b"9" * 5000 + b'], "completions": [["a", "b"]]}', headers={"content-type": "application/json"}), 400, "integer of 5000 digits"),
    ("lone-surrogate", dict(content=b'{"prompts": ["\\ud800"], "completions": [["a", "b"]]}', headers={"content-type": "application/json"}), 400, "'prompts[0]' is not valid Unicode"),
    ("text-plain", dict(content=json.dumps(GOOD).encode(), headers={"content-type": "text/plain"}), 415, "must be application/json, got 'text/plain'"),
    ("no-content-type", dict(content=json.dumps(GOOD).encode()), 415, "got 'none'"),
    ("array-body", dict(json=[1, 2]), 400, "must be a JSON object, got array"),
    ("missing-prompts", dict(json={"completions": [["a", "b"]]}), 400, "missing field 'prompts'"),
    ("missing-completions", dict(json={"prompts": ["p"]}), 400, "missing field 'completions'"),
    ("prompts-string", dict(json={"prompts": "p", "completions": [["a", "b"]]}), 400, "'prompts' must be an array of strings, got string"),
    ("completions-object", dict(json={"prompts": ["p"], "completions": {"a": "b"}}), 400, "'completions' must be an array"),
    ("prompt-number", dict(json={"prompts": ["p", 3], "completions": [["a", "b"], ["c", "d"]]}), 400, "'prompts[1]' must be a string, got number"),
    ("pair-string", dict(json={"prompts": ["p"], "completions": ["ab"]}), 400, "'completions[0]' must be a pair [a, b] of strings, got string"),
    ("pair-of-three", dict(json={"prompts": ["p"], "completions": [["a", "b", "c"]]}), 400, "'completions[0]' must hold exactly 2 responses, got 3"),
    ("pair-of-one", dict(json={"prompts": ["p", "q"], "completions": [["a", "b"], ["c"]]}), 400, "'completions[1]' must hold exactly 2 responses, got 1"),
    ("response-null", dict(json={"prompts": ["p"], "completions": [["a", None]]}), 400, "'completions[0][1]' must be a string, got null"),
    ("length-mismatch", dict(json={"prompts": ["p", "q"], "completions": [["a", "b"]]}), 400, "'prompts' has 2 items but 'completions' has 1"),
    ("empty-lists", dict(json={"prompts": [], "completions": []}), 400, "empty"),
    ("shuffle-not-bool", dict(json={**GOOD, "shuffle_order": "yes"}), 400, "'shuffle_order' must be true or false, got string"),
    ("pair-numbers", dict(json={"prompts": ["p"], "completions": [[1, 2]]}), 400, "'completions[0][0]' must be a string, got number"),
    ("too-many-pairs", dict(json={"prompts": ["p"] * 101, "completions": [["a", "b"]] * 101}), 413, "too many pairs: 101 > limit 100"),
    ("body-too-large", dict(json={"prompts": ["x" * 70000], "completions": [["a", "b"]]}), 413, "request body too large"),
    ("wrong-method", dict(method="GET"), 405, "method GET not allowed"),
    ("unknown-route", dict(path="/v1/nothing"), 404, "no route '/v1/nothing'"),
]


@pytest.mark.parametrize("case, request_kwargs, status, fragment", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_request_is_rejected_and_server_keeps_serving(strict_server, case, request_kwargs, status, fragment):
    kwargs = dict(request_kwargs)
    method = kwargs.pop("method", "POST")
    path = kwargs.pop("path", "/v1/classifications")
    before = metrics_of(strict_server)
    response = httpx.request(method, strict_server + path, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    if path == "/v1/classifications" and method == "POST":
        assert re.fullmatch(r"[0-9a-f]{20}", response.json()["request_id"])
    after = metrics_of(strict_server)
    errors = lambda m: sum(v for (name, _), v in m.items() if name == "egpo_judge_errors_total")  # noqa: E731
    assert errors(after) == errors(before) + 1
    ok = post(strict_server, GOOD["prompts"], GOOD["completions"])
    assert ok.status_code == 200 and ok.json()["results"] == crc_judge(GOOD["prompts"], GOOD["completions"])


def test_a_judge_that_raises_answers_500_without_its_text_and_the_next_request_succeeds(strict_server, caplog):
    response = post(strict_server, ["fine", "boom"], [["a", "b"], ["c", "d"]])
    assert response.status_code == 500
    body = response.json()
    assert "boomer" in body["error"] and "server's log" in body["error"] and "kaboom" not in response.text
    logged = [r.getMessage() for r in caplog.records if r.name == "lm_runs.judge_server"]
    assert any(body["request_id"] in line and "RuntimeError: kaboom on purpose" in line for line in logged)
    ok = post(strict_server, ["fine"], [["a", "b"]])
    assert ok.status_code == 200 and ok.json()["results"] == crc_judge(["fine"], [["a", "b"]])


@pytest.mark.parametrize(
    "bad_judge, fragment",
    [
        (lambda p, c: [1.5] * len(p), "1.5 at index 0, outside [0, 1]"),
        (lambda p, c: [0.5], "returned 1 values for 3 pairs"),
        (lambda p, c: [0.5, float("nan"), 0.5][: len(p)], "NaN at index 1"),
    ],
)
def test_a_judge_with_bad_answers_gives_502_naming_it(bad_judge, fragment):
    with serve_in_thread(create_app(bad_judge, name="liar", max_wait_ms=0)) as server:
        response = post(server.url, ["p", "q", "r"], [["a", "b"]] * 3)
        assert response.status_code == 502
        assert "liar" in response.json()["error"] and fragment in response.json()["error"]
        m = metrics_of(server.url)
        assert sample(m, "egpo_judge_requests_total", outcome="server_error") == 1
        assert sample(m, "egpo_judge_errors_total", kind="judge_invalid_output") == 1
        assert httpx.get(server.url + "/health").status_code == 200


def test_shuffle_order_false_reaches_the_judge():
    def aware(prompts, completions, shuffle_order=True):
        return [0.25 if shuffle_order else 0.75] * len(prompts)

    with serve_in_thread(create_app(aware, name="aware", max_wait_ms=0)) as server:
        assert post(server.url, ["p"], [["a", "b"]]).json()["results"] == [0.25]
        assert post(server.url, ["p"], [["a", "b"]], shuffle_order=False).json()["results"] == [0.75]
        assert post(server.url, ["p"], [["a", "b"]], shuffle_order=True).json()["results"] == [0.25]
        with HTTPJudge(server.url) as client:
            assert client(["p"], [["a", "b"]], shuffle_order=False) == [0.75]


# ------------------------------------------------------------------------------------------ client


class Sleeps:
    """A sleep that records its durations (and really sleeps them)."""

    def __init__(self):
        self.durations = []

    def __call__(self, seconds):
        self.durations.append(seconds)
        time.sleep(seconds)


def test_client_gives_up_after_its_retries_when_nothing_listens():
    port = free_port()
    sleeps = Sleeps()
    client = HTTPJudge(f"http://127.0.0.1:{port}", max_retries=3, backoff_base=0.01, backoff_max=0.05, timeout=2, seed=0, sleep=sleeps)
    with pytest.raises(JudgeError) as info:
        client(["p"], [["a", "b"]])
    message = str(info.value)
    assert f"http://127.0.0.1:{port}" in message and "after 4 attempts" in message and "ConnectError" in message
    assert len(sleeps.durations) == 3
    assert all(0 <= d <= min(0.05, 0.01 * 2**i) for i, d in enumerate(sleeps.durations))


def test_client_succeeds_when_the_server_comes_up_within_the_retry_window():
    port = free_port()
    app = create_app(crc_judge, name="late", max_wait_ms=0)
    holder = {}

    def start_later():
        time.sleep(0.6)
        holder["server"] = serve_in_thread(app, port=port)

    starter = threading.Thread(target=start_later)
    starter.start()
    sleeps = Sleeps()
    try:
        client = HTTPJudge(f"http://127.0.0.1:{port}", max_retries=30, backoff_base=0.05, backoff_max=0.2, timeout=5, seed=1, sleep=sleeps)
        prompts, completions = make_request(5, "late")
        assert client(prompts, completions) == crc_judge(prompts, completions)
        assert len(sleeps.durations) >= 1  # the first attempts failed and were retried
        assert client.model == "late"
    finally:
        starter.join()
        holder["server"].stop()


@pytest.fixture(scope="module")
def small_server():
    app = create_app(crc_judge, name="small", max_wait_ms=0, max_pairs_per_request=4)
    with serve_in_thread(app) as server:
        yield server.url


def test_client_never_retries_a_4xx(small_server):
    sleeps = Sleeps()
    client = HTTPJudge(small_server, chunk_size=10, max_retries=5, backoff_base=0.01, sleep=sleeps)
    before = metrics_of(small_server)
    with pytest.raises(JudgeError) as info:
        client(*make_request(5, "big"))
    assert "HTTP 413" in str(info.value) and "too many pairs: 5 > limit 4" in str(info.value)
    after = metrics_of(small_server)
    key = ("egpo_judge_requests_total", frozenset({("outcome", "client_error")}))
    assert after[key] - before[key] == 1  # exactly one request reached the server
    assert sleeps.durations == []


def test_client_splits_long_calls_into_chunks(small_server):
    client = HTTPJudge(small_server, chunk_size=4)
    before = metrics_of(small_server)
    prompts, completions = make_request(10, "chunks")
    assert client(prompts, completions) == crc_judge(prompts, completions)
    after = metrics_of(small_server)
    key = ("egpo_judge_requests_total", frozenset({("outcome", "ok")}))
    assert after[key] - before[key] == 3  # 4 + 4 + 2


def test_client_retries_5xx_until_the_judge_recovers():
    failures = {"left": 2}

    def flaky(prompts, completions):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("temporarily down")
        return crc_judge(prompts, completions)

    with serve_in_thread(create_app(flaky, name="flaky", max_wait_ms=0)) as server:
        sleeps = Sleeps()
        client = HTTPJudge(server.url, max_retries=4, backoff_base=0.01, sleep=sleeps)
        prompts, completions = make_request(3, "flaky")
        assert client(prompts, completions) == crc_judge(prompts, completions)
        assert len(sleeps.durations) == 2
        m = metrics_of(server.url)
        assert sample(m, "egpo_judge_requests_total", outcome="server_error") == 2
        assert sample(m, "egpo_judge_requests_total", outcome="ok") == 1


def test_client_reports_the_last_5xx_after_its_retries(strict_server):
    client = HTTPJudge(strict_server, max_retries=2, backoff_base=0.01)
    with pytest.raises(JudgeError) as info:
        client(["boom"], [["a", "b"]])
    message = str(info.value)
    assert "after 3 attempts" in message and "HTTP 500" in message and "judge boomer failed" in message
    assert "kaboom" not in message


@pytest.mark.parametrize(
    "answer, fragment",
    [
        ({"results": [0.5, 1.5]}, "1.5 at index 1"),
        ({"results": [0.5]}, "returned 1 values for 2 pairs"),
        ({"nothing": 1}, "without a 'results' field"),
    ],
)
def test_client_validates_the_answer(answer, fragment):
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answer))
    client = HTTPJudge("http://127.0.0.1:1", transport=transport, max_retries=0)
    with pytest.raises(JudgeError, match=re.escape(fragment)):
        client(["p", "q"], [["a", "b"], ["c", "d"]])


def test_client_retries_429_honouring_retry_after():
    answers = iter([httpx.Response(429, json={"error": "busy"}, headers={"Retry-After": "0.02"}), httpx.Response(200, json={"results": [0.5]})])
    sleeps = Sleeps()
    client = HTTPJudge("http://127.0.0.1:1", transport=httpx.MockTransport(lambda r: next(answers)), sleep=sleeps)
    assert client(["p"], [["a", "b"]]) == [0.5]
    assert sleeps.durations == [0.02]


# ------------------------------------------------------------------------------------------- tokens


@pytest.fixture(scope="module")
def token_server():
    app = create_app(crc_judge, name="secret", max_wait_ms=0, token="s3cret")
    with serve_in_thread(app) as server:
        yield server.url


@pytest.mark.parametrize("token, fragment", [(None, "missing bearer token"), ("wrong", "invalid bearer token")])
def test_token_missing_or_wrong_is_401_and_not_retried(token_server, monkeypatch, token, fragment):
    monkeypatch.delenv("EGPO_JUDGE_TOKEN", raising=False)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    raw = httpx.post(token_server + "/v1/classifications", json=GOOD, headers=headers)
    assert raw.status_code == 401 and fragment in raw.json()["error"]
    assert raw.headers["www-authenticate"] == "Bearer"
    before = metrics_of(token_server, "s3cret")
    sleeps = Sleeps()
    client = HTTPJudge(token_server, token=token, max_retries=5, backoff_base=0.01, sleep=sleeps)
    with pytest.raises(JudgeError, match=rf"HTTP 401.*{fragment}"):
        client(GOOD["prompts"], GOOD["completions"])
    assert sleeps.durations == []
    after = metrics_of(token_server, "s3cret")
    key = ("egpo_judge_errors_total", frozenset({("kind", "unauthorized")}))
    assert after[key] - before.get(key, 0) == 1
    assert httpx.get(token_server + "/metrics").status_code == 401
    assert httpx.get(token_server + "/health").json()["status"] == "ok"  # health needs no token


def test_right_token_from_argument_or_environment(token_server, monkeypatch):
    assert HTTPJudge(token_server, token="s3cret")(GOOD["prompts"], GOOD["completions"]) == crc_judge(GOOD["prompts"], GOOD["completions"])
    monkeypatch.setenv("EGPO_JUDGE_TOKEN", "s3cret")
    assert HTTPJudge(token_server)(GOOD["prompts"], GOOD["completions"]) == crc_judge(GOOD["prompts"], GOOD["completions"])


# ------------------------------------------------------------------------------------ command line


def _cli_env(extra_path: Path | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("EGPO_JUDGE_TOKEN", None)
    paths = [str(REPO)] + ([str(extra_path)] if extra_path else []) + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def test_cli_serves_a_callable_on_a_printed_free_port(tmp_path):
    (tmp_path / "egpo_cli_judge_mod.py").write_text("def half(prompts, completions):\n    return [0.5] * len(prompts)\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lm_runs.judge_server", "--judge", "egpo_cli_judge_mod:half", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = match.group(1)
        for _ in range(200):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        module = (tmp_path / "egpo_cli_judge_mod.py").read_bytes()
        assert httpx.get(url + "/health").json() == {
            "status": "ok", "model": "egpo_cli_judge_mod:half", "judge_kind": "callable", "temperature": None,
            "identity": {"kind": "callable", "module": "egpo_cli_judge_mod", "qualname": "half",
                         "source_sha256": hashlib.sha256(module).hexdigest()}}
        assert post(url, ["p", "q"], [["a", "b"], ["c", "d"]]).json()["results"] == [0.5, 0.5]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--judge", "x:y", "--host", "0.0.0.0"], "--allow_remote"),
        (["--judge", "http://127.0.0.1:9"], "HTTP judge cannot be served"),
        (["--judge", "no_such_mod_q:fn", "--port", "0"], "cannot import module 'no_such_mod_q'"),
        (["--judge", "x:y", "--max-batch-size", "0"], "--max_batch_size must be >= 1"),
        (["--judge", "x:y", "--max_batch_size", "0"], "--max_batch_size must be >= 1"),
        (["--judge", "lm_runs.judges.toy:prefer_shorter", "--judge_batch_size", "0"], "--judge_batch_size must be an integer >= 1, got 0"),
        (["--judge", "lm_runs.judges.toy:prefer_shorter", "--request_timeout", "0"], "--request_timeout must be > 0"),
        (["--port", "0"], "--judge is required"),
    ],
)
def test_cli_rejects_bad_flags(flags, fragment):
    out = subprocess.run(
        [sys.executable, "-m", "lm_runs.judge_server", *flags], capture_output=True, text=True, env=_cli_env(), timeout=60
    )
    assert out.returncode == 2 and fragment in out.stderr, out.stderr


def test_small_requests_are_answered_without_nagle_delays():
    """Regression: the pre-bound socket must be TCP-typed so asyncio sets TCP_NODELAY (else ~40 ms each)."""
    with serve_in_thread(create_app(crc_judge, name="fast", max_wait_ms=0)) as server:
        with httpx.Client(base_url=server.url) as session:
            session.get("/health")
            times = []
            for _ in range(21):
                t0 = time.perf_counter()
                assert session.post("/v1/classifications", json=GOOD).status_code == 200
                times.append(time.perf_counter() - t0)
    assert sorted(times)[10] < 0.025, sorted(times)


def test_requests_merge_whatever_their_shuffle_flag_when_the_judge_cannot_shuffle():
    """A judge without ``shuffle_order`` (a reward model, a plain callable) answers the same whatever the
    flag: two requests with different flags are judged in ONE call (they were split into two before)."""
    calls: list[int] = []

    def plain(prompts, completions):
        calls.append(len(prompts))
        return crc_judge(prompts, completions)

    worker = BatchingWorker(plain, name="plain", max_batch_size=64, max_wait_ms=300)
    try:
        p1, c1 = make_request(2, "shuffled")
        p2, c2 = make_request(3, "in order")
        first, second = worker.submit(p1, c1, True), worker.submit(p2, c2, False)
        assert first.result(timeout=30) == crc_judge(p1, c1) and second.result(timeout=30) == crc_judge(p2, c2)
    finally:
        worker.stop()
    assert calls == [5]


def test_health_reports_the_served_judges_identity_as_the_in_process_judge_has_it():
    """crc_judge served, then boom_judge, then crc_judge again on another server: the client's ``identity()``
    is exactly the in-process judge's (kind, module, name, source digest), so the same judge behind another
    URL is the same judge and another judge is another. (A reward model's τ: tests/test_evaluate.py.)"""
    seen = []
    for fn in (crc_judge, boom_judge, crc_judge):
        judge = CallableJudge(fn)
        with serve_in_thread(create_app(judge, max_wait_ms=0)) as server, HTTPJudge(server.url) as client:
            identity = client.identity()
            assert identity == judge.identity() == httpx.get(server.url + "/health").json()["identity"]
            seen.append(identity)
    crc, boom, crc_again = seen
    assert crc["kind"] == boom["kind"] == "callable" and (crc["qualname"], boom["qualname"]) == ("crc_judge", "boom_judge")
    assert crc["source_sha256"] == boom["source_sha256"] and crc != boom and crc_again == crc


def test_a_judge_that_cannot_tell_its_identity_is_served_and_known_by_the_url(caplog):
    """A judge whose ``identity()`` raises (its folder gone): the server still judges, logs the failure,
    /health reports ``identity: null``, and the client falls back to the server's URL."""

    class Forgetful:
        kind = "callable"

        def __call__(self, prompts, completions):
            return crc_judge(prompts, completions)

        def identity(self):
            raise FileNotFoundError("model folder gone")

    with caplog.at_level("WARNING"), serve_in_thread(create_app(Forgetful(), name="forgetful", max_wait_ms=0)) as server, \
            HTTPJudge(server.url) as client:
        assert httpx.get(server.url + "/health").json()["identity"] is None
        assert client.identity() == {"kind": "http", "url": server.url}
        assert client(["p"], [["a", "b"]]) == crc_judge(["p"], [["a", "b"]])
    logged = [r.getMessage() for r in caplog.records]
    assert any("identity() raised FileNotFoundError" in m for m in logged) and any("URL only" in m for m in logged)
