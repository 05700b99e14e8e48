"""The judges' shared interface: CheckedJudge.judge_or_missing, kind / shuffles_order / identity, the
loader's spec checks (a causal LM is refused), the --judge* flags, the wire protocol's refusals and the
HTTP client's total deadline."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from lm_runs.judges import (
    JUDGE_SPEC_HELP,
    CallableJudge,
    CheckedJudge,
    JudgeError,
    Judgement,
    JudgeUnavailable,
    check_judge_spec,
    load_judge,
)
from lm_runs.judges.arguments import JudgeArguments
from lm_runs.judges.http import HTTPJudge
from lm_runs.judges.protocol import ProtocolError, parse_classification_request

# ----------------------------------------------------------------------------- judge_or_missing


def test_judge_or_missing_reasks_a_failing_batch_pair_by_pair():
    calls = []

    def picky(prompts, completions):
        calls.append(len(prompts))
        if "bad" in prompts:
            raise JudgeError("cannot judge 'bad'")
        return [0.25] * len(prompts)

    judge = CheckedJudge(CallableJudge(picky, name="picky"))
    got = judge.judge_or_missing(["a", "bad", "c"], [["x", "y"]] * 3)
    assert got == [Judgement(0.25, None), Judgement(None, "JudgeError: cannot judge 'bad'"), Judgement(0.25, None)]
    assert calls == [3, 1, 1, 1]
    assert judge.judge_or_missing([], []) == [] and calls == [3, 1, 1, 1]


def test_a_callable_that_raises_gives_missing_pairs_not_a_crash():
    def broken(prompts, completions):
        raise RuntimeError("model server down")

    judge = CheckedJudge(CallableJudge(broken, name="broken"))
    got = judge.judge_or_missing(["p", "q"], [["a", "b"], ["c", "d"]])
    assert [g.value for g in got] == [None, None]
    assert all("judge broken raised RuntimeError: model server down" in g.error for g in got)
    with pytest.raises(JudgeError, match="judge broken raised RuntimeError"):
        judge(["p"], [["a", "b"]])


@pytest.mark.parametrize(
    "answer, reason",
    [(None, "judge returned None"), (float("nan"), "NaN"), (1.5, "1.5, outside [0, 1]"), ("0.5", "non-number"), (True, "non-number")],
)
def test_judge_or_missing_marks_bad_values_missing_and_keeps_the_rest(answer, reason):
    judge = CheckedJudge(lambda prompts, completions: [0.75, answer])
    first, second = judge.judge_or_missing(["p", "q"], [["a", "b"], ["c", "d"]])
    assert first == Judgement(0.75, None) and second.value is None and reason in second.error


def test_judge_or_missing_lets_interrupts_and_bugs_through():
    def interrupted(prompts, completions):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        CheckedJudge(CallableJudge(interrupted)).judge_or_missing(["p"], [["a", "b"]])
    with pytest.raises(ValueError, match="exactly 2"):  # the caller's bug: bad input
        CheckedJudge(lambda p, c: [0.5]).judge_or_missing(["p"], [["a", "b", "c"]])


def test_judge_or_missing_reasks_when_the_count_is_wrong():
    judge = CheckedJudge(lambda prompts, completions: [0.5])  # right only for one pair
    assert judge.judge_or_missing(["p", "q"], [["a", "b"], ["c", "d"]]) == [Judgement(0.5, None)] * 2


def test_shuffle_order_reaches_only_judges_that_take_it():
    seen = []

    def aware(prompts, completions, shuffle_order=True):
        seen.append(shuffle_order)
        return [0.5] * len(prompts)

    aware_judge = CheckedJudge(CallableJudge(aware))
    plain_judge = CheckedJudge(CallableJudge(lambda p, c: [0.5] * len(p)))
    assert aware_judge.shuffles_order and not plain_judge.shuffles_order
    aware_judge.judge_or_missing(["p"], [["a", "b"]], shuffle_order=False)
    plain_judge.judge_or_missing(["p"], [["a", "b"]], shuffle_order=False)
    assert seen == [False]


# ------------------------------------------------------------------------------------- identity


def test_callable_identity_is_module_name_and_source_digest():
    judge = load_judge("lm_runs.judges.toy:prefer_shorter")
    identity = judge.identity()
    assert judge.kind == "callable" and identity["module"] == "lm_runs.judges.toy" and identity["qualname"] == "prefer_shorter"
    import hashlib

    import lm_runs.judges.toy as toy

    with open(toy.__file__, "rb") as handle:
        assert identity["source_sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert json.loads(json.dumps(identity)) == identity


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from lm_runs.tiny import build_tiny_lm

    root = tmp_path_factory.mktemp("judge_models")
    return {
        "pm": build_tiny_lm(root / "pm", num_labels=2, n_layer=1, n_embd=16, seed=3),
        "pm_other": build_tiny_lm(root / "pm_other", num_labels=2, n_layer=1, n_embd=16, seed=4),
        "causal": build_tiny_lm(root / "causal", n_layer=1, n_embd=16, seed=3),
    }


def test_preference_model_identity_follows_content_not_path(tiny_models, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_models["pm"], copy)
    original, moved = load_judge(str(tiny_models["pm"])), load_judge(str(copy))
    other = load_judge(str(tiny_models["pm_other"]))
    assert original.kind == "preference_model" and original.shuffles_order
    assert original.identity() == moved.identity()
    assert "config.json" in original.identity()["files"] and "model.safetensors" in original.identity()["files"]
    assert str(tiny_models["pm"]) not in json.dumps(original.identity())
    assert other.identity()["files"]["model.safetensors"] != original.identity()["files"]["model.safetensors"]


def test_a_causal_lm_is_refused_as_a_judge_in_one_line(tiny_models):
    path = str(tiny_models["causal"])
    for refuse in (check_judge_spec, load_judge):
        with pytest.raises(ValueError) as info:
            refuse(path)
        assert path in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="causal"):
        JudgeArguments(judge=path)


def test_http_and_openai_kinds_and_identities(monkeypatch, tmp_path):
    http = load_judge("http://127.0.0.1:9/", timeout=3.5, retries=2)
    assert http.kind == "http" and http.identity() == {"kind": "http", "url": "http://127.0.0.1:9"}
    assert http.inner.timeout == 3.5 and http.inner.retry.max_retries == 2
    http.close()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    openai = load_judge("openai:some-model", retries=0)
    assert openai.kind == "openai" and openai.inner.retry.max_retries == 0
    with pytest.raises(JudgeUnavailable, match=r"openai:some-model@http://127\.0\.0\.1:9/v1 \(GET models/some-model\) failed after 1 attempts"):
        openai.identity()  # nothing listens: what the endpoint serves cannot be told


@pytest.mark.parametrize(
    "spec, fragment",
    [("openai:", "names no model"), ("http://:80", "names no host"), ("http://h:99999", "port"), ("no_such_module_qq:f", "cannot import module"), ("x y", "four forms")],
)
def test_check_judge_spec_refuses_cheaply(spec, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_judge_spec(spec)


def test_check_judge_spec_refuses_a_file(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        check_judge_spec(str(path))


# -------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"judge_batch_size": 0}, "--judge_batch_size must be an integer >= 1, got 0"),
        ({"judge_timeout": 0.0}, "--judge_timeout must be a number of seconds > 0"),
        ({"judge_timeout": float("inf")}, "--judge_timeout"),
        ({"judge_retries": -1}, "--judge_retries must be an integer >= 0"),
        ({"judge": ""}, "is empty"),
    ],
)
def test_judge_arguments_name_the_bad_flag(fields, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[")):
        JudgeArguments(**fields)


def test_judge_arguments_parse_alone_and_as_a_mixin():
    from transformers import HfArgumentParser

    (alone,) = HfArgumentParser(JudgeArguments).parse_args_into_dataclasses(
        ["--judge", "lm_runs.judges.toy:prefer_shorter", "--judge_timeout", "2.5", "--judge_retries", "3"]
    )
    assert alone.judge_kwargs() == {"batch_size": 16, "timeout": 2.5, "retries": 3}
    assert HfArgumentParser(JudgeArguments)._actions[1].help == JUDGE_SPEC_HELP  # noqa: SLF001

    calls = []

    @dataclass
    class Parent:
        def __post_init__(self) -> None:
            calls.append("parent")

    @dataclass
    class Mixed(JudgeArguments, Parent):
        pass

    assert Mixed(judge_batch_size=4).judge_kwargs()["batch_size"] == 4
    assert calls == ["parent"]
    with pytest.raises(ValueError, match="--judge_batch_size must be an integer >= 1, got 0"):
        Mixed(judge_batch_size=0)  # the mixin still checks its own flags


# -------------------------------------------------------------------------------------- protocol


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"prompts": [' + b"7" * 5000 + b'], "completions": [["a", "b"]]}', "integer of 5000 digits"),
        (json.dumps({"prompts": ["\ud800"], "completions": [["a", "b"]]}).encode(), "'prompts[0]' is not valid Unicode"),
        (json.dumps({"prompts": ["p"], "completions": [["a", "\udfff"]]}).encode(), "'completions[0][1]' is not valid Unicode"),
    ],
)
def test_protocol_refuses_hostile_bodies_with_400(body, fragment):
    with pytest.raises(ProtocolError) as info:
        parse_classification_request(body)
    assert info.value.status == 400 and fragment in info.value.message


def test_http_client_refuses_a_lone_surrogate_before_sending():
    sent = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200, json={"results": [0.5]}))
    client = HTTPJudge("http://127.0.0.1:1", transport=transport, max_retries=0)
    with pytest.raises(JudgeError, match=r"completions\[0\]\[0\] is not valid Unicode"):
        client(["p"], [["\ud800", "b"]])
    assert sent == []


# --------------------------------------------------------------------------------------- deadline


class SlowServer:
    """A loopback TCP server that reads the request and then either says nothing or trickles a valid
    HTTP answer one byte every ``interval`` seconds."""

    def __init__(self, mode: str, interval: float = 0.2) -> None:
        self.mode = mode
        self.interval = interval
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        body = b'{"results": [0.5]}'
        answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        with conn:
            try:
                conn.recv(65536)
                for byte in answer if self.mode == "trickle" else []:
                    if self.stop.wait(self.interval):
                        return
                    conn.sendall(bytes([byte]))
                self.stop.wait(60)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("mode", ["silent", "trickle"])
def test_http_client_gives_each_request_a_total_deadline(mode):
    """A server that never answers, or trickles a byte every 0.2 s (each read succeeds, so a per-read
    timeout never fires), fails each attempt after the deadline: 2 attempts of 1 s end within 3 s."""
    server = SlowServer(mode)
    try:
        client = HTTPJudge(server.url, timeout=1.0, max_retries=1, backoff_base=0.01, backoff_max=0.01)
        started = time.monotonic()
        with pytest.raises(JudgeError) as info:
            client(["p"], [["a", "b"]])
        elapsed = time.monotonic() - started
        assert 2.0 <= elapsed < 3.0, elapsed
        assert "after 2 attempts" in str(info.value) and "deadline of 1 s" in str(info.value)
        assert server.connections == 2
        client.close()
    finally:
        server.close()


def test_default_retry_window_outlasts_a_server_start():
    """The default policy waits at least Σ c_k / 2 = 17.75 s over its 7 retries (c_k = min(10, 0.5·2^k)),
    more than a judge server's ~13 s start-up, whatever the jitter draws."""
    from lm_runs.judges.retry import DEFAULT_RETRIES, RetryPolicy

    for seed in range(50):
        policy = RetryPolicy(seed=seed)
        waits = [policy.backoff(k) for k in range(DEFAULT_RETRIES)]
        assert 17.75 <= sum(waits) <= 35.5
        assert all(min(10.0, 0.5 * 2**k) / 2 <= w <= min(10.0, 0.5 * 2**k) for k, w in enumerate(waits))
    assert HTTPJudge("http://127.0.0.1:9").retry.max_retries == DEFAULT_RETRIES == 7


def test_openai_judge_gives_each_request_a_total_deadline(tmp_path):
    """The OpenAI judge's client goes through the same deadline transport: a trickling endpoint fails
    each attempt after 1 s."""
    from lm_runs.judges.openai_judge import OpenAIJudge

    server = SlowServer("trickle")
    try:
        judge = OpenAIJudge("m", base_url=server.url + "/v1", api_key="k", timeout=1.0, max_retries=1,
                            backoff_base=0.01, backoff_max=0.01, cache_path=tmp_path / "cache.jsonl")
        started = time.monotonic()
        with pytest.raises(JudgeError, match="after 2 attempts"):
            judge(["p"], [["a", "b"]])
        assert 2.0 <= time.monotonic() - started < 3.0
        judge.close()
    finally:
        server.close()


def test_only_the_loader_knows_the_judge_kinds():
    """No import circle: base imports no concrete judge, no concrete judge imports the loader, and the
    server reaches judges only through the loader and the checked interface."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "lm_runs"

    def imports(path: Path) -> set[str]:
        """The absolute names of the modules ``path`` imports (relative imports resolved, and for
        ``from package import name`` also package.name, which may be a module)."""
        package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(part for part in (base, node.module or "") if part)
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        return found

    judges = "lm_runs.judges."
    concrete = {judges + "preference_model", judges + "http", judges + "openai_judge"}
    assert concrete | {judges + "base"} <= imports(root / "judges" / "loader.py")  # the loader does import them
    assert not imports(root / "judges" / "base.py") & (concrete | {judges + "loader"})
    for name in ("preference_model", "http", "openai_judge", "gathering", "deadline", "retry", "protocol"):
        assert not {judges + "loader", judges + "arguments"} & imports(root / "judges" / f"{name}.py"), name
    server = sorted((root / "judge_server").glob("*.py"))
    assert len(server) >= 2, server  # the server's modules were found
    for path in server:
        assert not concrete & imports(path), path


def test_an_unreachable_remote_judge_makes_the_batch_missing_after_one_retry_budget():
    """A server that refuses every connection: judge_or_missing spends one retry budget for the whole
    call (3 attempts), not one per pair, and returns every pair missing with the reason."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    sleeps = []
    client = HTTPJudge(f"http://127.0.0.1:{port}", max_retries=2, backoff_base=0.01, backoff_max=0.01, timeout=2, sleep=sleeps.append)
    got = CheckedJudge(client).judge_or_missing(["p", "q", "r"], [["a", "b"]] * 3)
    assert [g.value for g in got] == [None, None, None]
    assert all(g.error.startswith("JudgeUnavailable:") and "after 3 attempts" in g.error for g in got)
    assert len(sleeps) == 2  # one budget: 2 retries in all
    client.close()
