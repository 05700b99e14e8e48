"""The judge server under slow, numerous and vanishing clients (real uvicorn on 127.0.0.1), and its
command line's help, token warning and refusal of a causal LM."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from lm_runs.judge_server import create_app, serve_in_thread
from lm_runs.judge_server.app import DISCONNECT_WATCH_AFTER, _DisconnectWatch

REPO = Path(__file__).resolve().parents[1]


def half(prompts, completions):
    return [0.5] * len(prompts)


def open_half_requests(url: str, count: int) -> list[socket.socket]:
    """``count`` connections that send a request line and one header, and then nothing."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(b"POST /v1/classifications HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (socket.timeout, BlockingIOError):
        return False


def health_time(url: str) -> float:
    """Seconds for a fresh connection to get ``GET /health`` answered (raw socket: no client set-up)."""
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer, answer[:200]
    return time.perf_counter() - started


def test_half_open_connections_neither_block_health_nor_stay_open(caplog):
    """250 connections sending only a request line and a header: /health answers within 0.25 s while
    they are held, and the server closes every one of them once the 1.5 s request timeout passes
    (today's server keeps them open for ever)."""
    caplog.set_level(logging.WARNING, logger="lm_runs.judge_server")
    with serve_in_thread(create_app(half, name="half"), request_timeout=1.5, max_connections=1000) as server:
        sockets = open_half_requests(server.url, 250)
        try:
            assert max(health_time(server.url) for _ in range(5)) < 0.25
            time.sleep(0.5)
            assert not any(closed_by_server(s) for s in sockets[-10:])  # not before the timeout
            deadline = time.monotonic() + 5.0
            while not all(closed_by_server(s) for s in sockets) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert all(closed_by_server(s) for s in sockets)
            assert server.guard.counts["timed_out"] == 250
            assert health_time(server.url) < 0.25
        finally:
            for s in sockets:
                s.close()
    pressure = [r for r in caplog.records if "connection pressure" in r.getMessage()]
    assert len(pressure) == 1  # one line for 250 timeouts, not one each


def test_connections_beyond_the_cap_evict_the_oldest_waiting_one(caplog):
    """With a cap of 50 and 200 half-open connections held (request timeout 60 s), /health still answers
    at once: each new connection evicts the oldest one still waiting for its request; one log line."""
    caplog.set_level(logging.WARNING, logger="lm_runs.judge_server")
    with serve_in_thread(create_app(half, name="half"), request_timeout=60, max_connections=50) as server:
        sockets = open_half_requests(server.url, 200)
        try:
            times = [health_time(server.url) for _ in range(5)]
            assert max(times) < 0.25, times
            time.sleep(0.2)
            assert sum(closed_by_server(s) for s in sockets[:150]) == 150  # the oldest ones were evicted
            assert len(server.guard.open) <= 50
            assert server.guard.counts["evicted"] >= 150
            with httpx.Client(base_url=server.url) as client:  # a real request still gets through
                response = client.post("/v1/classifications", json={"prompts": ["p"], "completions": [["a", "b"]]})
                assert response.status_code == 200 and response.json()["results"] == [0.5]
        finally:
            for s in sockets:
                s.close()
    assert len([r for r in caplog.records if "connection pressure" in r.getMessage()]) == 1


def test_a_request_whose_body_trickles_is_cut_at_the_request_timeout():
    with serve_in_thread(create_app(half, name="half"), request_timeout=1.0) as server:
        host, port = server.url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=5)
        try:
            sock.sendall(b"POST /v1/classifications HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{")
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 4.0 and not closed:
                try:
                    sock.sendall(b" ")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                closed = closed_by_server(sock)
                time.sleep(0.2)
            assert closed and 0.9 <= time.monotonic() - started < 2.5
        finally:
            sock.close()
        m = httpx.get(server.url + "/metrics").text
        assert 'egpo_judge_requests_total{outcome="ok"} 0.0' in m


@pytest.mark.parametrize("leave_after", [0.4 * DISCONNECT_WATCH_AFTER, 1.6 * DISCONNECT_WATCH_AFTER], ids=["before-the-watch", "while-watched"])
def test_a_request_whose_client_left_is_not_judged_nor_counted_ok(leave_after):
    """A queued request whose client leaves, before its disconnect watch starts or after, is withdrawn."""
    release = threading.Event()
    calls = []

    def slow(prompts, completions):
        calls.append(list(prompts))
        release.wait(10)
        return [0.5] * len(prompts)

    with serve_in_thread(create_app(slow, name="slow", max_wait_ms=0)) as server:
        first = threading.Thread(target=lambda: httpx.post(server.url + "/v1/classifications", json={"prompts": ["first"], "completions": [["a", "b"]]}, timeout=20))
        first.start()
        while not calls:
            time.sleep(0.01)
        host, port = server.url.removeprefix("http://").split(":")
        body = b'{"prompts": ["gone"], "completions": [["a", "b"]]}'
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /v1/classifications HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(leave_after)  # queued behind the first request
        sock.close()
        deadline = time.monotonic() + 5
        while 'kind="client_gone"' not in httpx.get(server.url + "/metrics").text and time.monotonic() < deadline:
            time.sleep(0.05)
        release.set()
        first.join()
        time.sleep(0.2)
        metrics = httpx.get(server.url + "/metrics").text
    assert calls == [["first"]]  # the withdrawn request never reached the judge
    assert 'egpo_judge_requests_total{outcome="ok"} 1.0' in metrics
    assert 'egpo_judge_errors_total{kind="client_gone"} 1.0' in metrics
    assert "egpo_judge_pairs_total 1.0" in metrics


class _Receiver:
    """A request's ``receive``: counts its calls and answers ``http.disconnect`` once ``gone`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.gone = asyncio.Event()

    async def receive(self) -> dict:
        self.calls += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_the_disconnect_watch_is_only_a_timer_until_the_request_has_waited():
    """Answered before the delay: no task, no ``receive``, the timer cancelled. Waited longer: the
    watch calls ``receive``; the client's leaving then cancels the job's future; an answer first
    stops the watch without cancelling anything."""

    async def scenario() -> None:
        quick, future = _Receiver(), concurrent.futures.Future()
        watch = _DisconnectWatch(quick, future, delay=10.0)
        await asyncio.sleep(0.01)
        watch.stop()
        assert watch.task is None and watch.timer.cancelled() and quick.calls == 0
        assert not future.cancelled() and not watch.client_left()

        leaving, future = _Receiver(), concurrent.futures.Future()
        watch = _DisconnectWatch(leaving, future, delay=0.01)
        await asyncio.sleep(0.05)
        assert watch.task is not None and leaving.calls == 1 and not future.cancelled()
        leaving.gone.set()
        await asyncio.sleep(0.01)
        assert future.cancelled() and watch.client_left()
        watch.stop()

        staying, future = _Receiver(), concurrent.futures.Future()
        watch = _DisconnectWatch(staying, future, delay=0.01)
        await asyncio.sleep(0.05)
        future.set_result([0.5])
        watch.stop()
        await asyncio.sleep(0.01)
        assert staying.calls == 1 and watch.task.cancelled() and not watch.client_left() and future.result() == [0.5]

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------ command line


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("EGPO_JUDGE_TOKEN", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def test_help_lists_every_judge_form_the_token_variable_and_both_flag_spellings():
    out = subprocess.run([sys.executable, "-m", "lm_runs.judge_server", "--help"], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for fragment in ("openai:MODEL", "http://host:port", "a model folder", "module:function", "EGPO_JUDGE_TOKEN",
                     "--max_batch_size", "--max-batch-size", "--request_timeout", "--max_connections", "--judge_timeout"):
        assert fragment in text, fragment
    assert "process list" in text


def test_flags_are_parsed_by_transformers_parser_without_importing_transformers():
    """The server's parser is transformers' HfArgumentParser (the same help, the same flags) loaded
    without the transformers package, which neither ``--help`` nor a callable judge needs."""
    from transformers import HfArgumentParser

    from lm_runs.judge_server.command import JudgeServerArguments, hf_argument_parser

    standalone = hf_argument_parser()
    assert standalone is not HfArgumentParser and standalone.__name__ == "HfArgumentParser"
    assert standalone(JudgeServerArguments).format_help() == HfArgumentParser(JudgeServerArguments).format_help()
    code = (
        "import sys; from lm_runs.judge_server.command import build_parser; "
        "(a,) = build_parser().parse_args_into_dataclasses(['--judge', 'lm_runs.judges.toy:prefer_shorter', "
        "'--max-wait-ms', '0', '--allow_remote', '--max_batch_size', '3']); "
        "print(a.max_wait_ms, a.allow_remote, a.max_batch_size, a.judge_batch_size, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.stdout.split() == ["0.0", "True", "3", "3", "False"], out.stderr


def test_token_flag_is_accepted_with_a_warning(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "lm_runs.judge_server", "--judge", "lm_runs.judges.toy:prefer_shorter", "--port", "0", "--token", "s3cret", "--log_level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
    )
    try:
        line = proc.stdout.readline()
        url = line.split("listening on ")[1].strip()
        for _ in range(200):
            try:
                httpx.get(url + "/health")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        ok = httpx.post(url + "/v1/classifications", json={"prompts": ["p"], "completions": [["a", "bb"]]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.post(url + "/v1/classifications", json={"prompts": ["p"], "completions": [["a", "b"]]}).status_code == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "--token is visible to other users in the process list" in err and "EGPO_JUDGE_TOKEN" in err


def test_a_causal_lm_is_refused_as_the_served_judge(tmp_path):
    from lm_runs.tiny import build_tiny_lm

    path = build_tiny_lm(tmp_path / "causal", n_layer=1, n_embd=16)
    out = subprocess.run(
        [sys.executable, "-m", "lm_runs.judge_server", "--judge", str(path), "--port", "0"],
        capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert out.returncode == 2 and str(path) in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""  # refused before listening


@pytest.mark.parametrize("flag", ["--max_wait_ms", "--max-wait-ms"])
def test_underscore_and_dash_flags_both_work(flag, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "lm_runs.judge_server", "--judge", "x:y", flag, "-1"],
        capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert out.returncode == 2 and "--max_wait_ms must be >= 0, got -1" in out.stderr
