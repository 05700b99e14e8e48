"""OpenAIJudge against a loopback chat-completions server (FastAPI + uvicorn on 127.0.0.1).

The fake server reads the pair out of the user message and answers by a rule the tests know:
P(first ≻ second) = σ((len(second) − len(first)) / 4) (it prefers the shorter response), as the
answer letter plus log-probabilities of "A" and "B". Directives in the question text switch on
other behaviours (no log-probabilities, malformed answers, 429 / 5xx / 400, slowness, bias).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_runs.judge_server import serve_in_thread
from lm_runs.judges import CheckedJudge, JudgeError, OpenAIJudge, load_judge
from lm_runs.judges import openai_judge as oj

_SHOWN = re.compile(
    r"<question>\n(?P<q>.*)\n</question>\n\n<response_a>\n(?P<first>.*)\n</response_a>\n\n"
    r"<response_b>\n(?P<second>.*)\n</response_b>\n\n",
    re.DOTALL,
)


def rule(first: str, second: str) -> float:
    """The fake judge's P(first ≻ second): it prefers the shorter response."""
    return 1.0 / (1.0 + math.exp((len(first) - len(second)) / 4.0))


class FakeChatServer:
    """State and FastAPI app of the fake endpoint; ``reset()`` between tests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()
        self.app = self._build_app()

    def reset(self) -> None:
        with self.lock:
            self.bodies: list[dict] = []
            self.headers: list[dict] = []
            self.seen_per_question: dict[str, int] = {}
            self.in_flight = 0
            self.max_in_flight = 0
            self.model_record: dict | None = None  # GET /v1/models/{model}'s answer; None: 404
            self.model_asks = 0

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            with self.lock:
                self.bodies.append(body)
                self.headers.append(dict(request.headers))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self._answer(body)
            finally:
                with self.lock:
                    self.in_flight -= 1

        @app.get("/v1/models/{model}")
        async def model(model: str) -> Any:
            with self.lock:
                self.model_asks += 1
                record = self.model_record
            if record is None:
                return JSONResponse({"error": {"message": f"no model {model}"}}, status_code=404)
            return {"id": model, "object": "model", "created": int(time.time() * 1e6), **record}  # created: vLLM's, the time of the request

        return app

    async def _answer(self, body: dict) -> Any:
        user = body["messages"][-1]["content"]
        match = _SHOWN.match(user)
        if match is None:
            return JSONResponse({"error": {"message": "cannot parse the user message"}}, status_code=400)
        question, first, second = match["q"], match["first"], match["second"]
        with self.lock:
            seen = self.seen_per_question.get(question, 0)
            self.seen_per_question[question] = seen + 1
        sleep = re.search(r"\[sleep=([\d.]+)\]", question)
        if sleep:
            await asyncio.sleep(float(sleep[1]))
        if "[400]" in question:
            return JSONResponse(
                {"error": {"message": "model 'nope' does not exist", "type": "invalid_request_error"}}, status_code=400
            )
        if "[503]" in question:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if "[429once]" in question and seen == 0:
            retry = re.search(r"\[retry-after=([\d.]+)\]", question)
            headers = {"Retry-After": retry[1]} if retry else {}
            return JSONResponse({"error": {"message": "rate limited"}}, status_code=429, headers=headers)
        if "[nochoices]" in question:
            return self._completion(body, None)
        if "[malformed]" in question or ("[malformed_once]" in question and seen == 0):
            return self._completion(body, "C")
        if "[empty]" in question:
            return self._completion(body, "")
        p = 0.8 if "[biased]" in question else rule(first, second)
        letter = "A" if p >= 0.5 else "B"
        if "[nologprobs]" in question or not body.get("logprobs"):
            return self._completion(body, letter)
        tops = [("A", math.log(p)), ("B", math.log1p(-p)), ("C", math.log(1e-7))]
        if "[variants]" in question:  # split A's mass over "A" and " A", B's over "B" and "B "
            tops = [
                ("A", math.log(0.6 * p)),
                (" A", math.log(0.4 * p)),
                ("B", math.log(0.7 * (1 - p))),
                ("B ", math.log(0.3 * (1 - p))),
            ]
        tops.sort(key=lambda t: -t[1])
        tops = tops[: body.get("top_logprobs", 0)]
        chosen = dict(tops).get(letter, math.log(p if letter == "A" else 1 - p))
        logprobs = {
            "content": [
                {
                    "token": letter,
                    "logprob": chosen,
                    "bytes": list(letter.encode()),
                    "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tops],
                }
            ],
            "refusal": None,
        }
        return self._completion(body, letter, logprobs)

    @staticmethod
    def _completion(body: dict, content: str | None, logprobs: dict | None = None) -> dict:
        choices = (
            []
            if content is None
            else [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": logprobs,
                    "finish_reason": "length",
                }
            ]
        )
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "?"),
            "choices": choices,
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        }


@pytest.fixture(scope="module")
def server():
    fake = FakeChatServer()
    thread = serve_in_thread(fake.app)
    fake.url = thread.url + "/v1"
    yield fake
    thread.stop()


@pytest.fixture
def fake(server):
    server.reset()
    return server


def make_judge(fake: FakeChatServer, tmp_path: Path, **kwargs: Any) -> tuple[OpenAIJudge, list[float]]:
    sleeps: list[float] = []
    options = dict(base_url=fake.url, api_key="sk-test", cache_path=tmp_path / "cache.jsonl", sleep=sleeps.append)
    options.update(kwargs)
    return OpenAIJudge("fake-model", **options), sleeps


def pairs(n: int, tag: str = "") -> tuple[list[str], list[list[str]]]:
    """n pairs of distinct lengths (never a tie), so the rule's letter is always decided."""
    prompts = [f"{tag} question {i}?" for i in range(n)]
    completions = [["x" * (3 + (i * 7) % 11), "y" * (9 + (i * 5) % 13) + "!"] for i in range(n)]
    for pair in completions:
        if len(pair[0]) == len(pair[1]):
            pair[1] += "?"
    return prompts, completions


# ------------------------------------------------------------------------------ values


def test_values_are_the_rule_unflipped(fake, tmp_path):
    judge, sleeps = make_judge(fake, tmp_path, seed=3)
    prompts, completions = pairs(12)
    details = judge.judge_detailed(prompts, completions)
    expected = [rule(a, b) for a, b in completions]
    assert [d.value for d in details] == pytest.approx(expected, abs=1e-9)
    assert {d.flipped for d in details} == {True, False}  # both orders really were shown
    assert all(d.source == "logprobs" and d.attempts == 1 for d in details)
    assert len(fake.bodies) == 12 and sleeps == []
    body = fake.bodies[0]
    assert body["model"] == "fake-model"
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == oj.SYSTEM_PROMPT
    assert fake.headers[0]["authorization"] == "Bearer sk-test"
    # the shown order matches the reported flip
    for d, (prompt, (a, b)) in zip(details, zip(prompts, completions)):
        sent = next(x for x in fake.bodies if f"<question>\n{prompt}\n" in x["messages"][1]["content"])
        shown = _SHOWN.match(sent["messages"][1]["content"])
        assert (shown["first"], shown["second"]) == ((b, a) if d.flipped else (a, b))
    assert judge(prompts, completions) == pytest.approx(expected, abs=1e-9)  # from the cache now


def test_position_bias_is_unflipped(fake, tmp_path):
    """A judge that always says P(first) = 0.8 gives 0.8 when shown (a, b) and 0.2 when shown (b, a)."""
    judge, _ = make_judge(fake, tmp_path, seed=1)
    prompts, completions = pairs(10, "[biased]")
    details = judge.judge_detailed(prompts, completions)
    assert {d.flipped for d in details} == {True, False}
    assert [d.value for d in details] == pytest.approx([0.2 if d.flipped else 0.8 for d in details], abs=1e-9)
    unshuffled = judge.judge_detailed(prompts, completions, shuffle_order=False)
    assert [d.value for d in unshuffled] == pytest.approx([0.8] * 10, abs=1e-9)
    assert not any(d.flipped for d in unshuffled)


def test_flips_are_deterministic_and_seeded(fake, tmp_path):
    prompts, completions = pairs(16)
    flips = {}
    for seed in (0, 0, 1):
        judge, _ = make_judge(fake, tmp_path, seed=seed, use_cache=False)
        got = [d.flipped for d in judge.judge_detailed(prompts, completions)]
        assert flips.setdefault(seed, got) == got
    assert flips[0] != flips[1]
    # the flip of a pair does not depend on what else is in the call
    judge, _ = make_judge(fake, tmp_path, seed=0, use_cache=False)
    assert [d.flipped for d in judge.judge_detailed(prompts[5:9], completions[5:9])] == flips[0][5:9]


def test_summed_token_variants(fake, tmp_path):
    judge, _ = make_judge(fake, tmp_path)
    prompts, completions = pairs(6, "[variants]")
    assert judge(prompts, completions) == pytest.approx([rule(a, b) for a, b in completions], abs=1e-9)


def test_letter_only_without_logprobs(fake, tmp_path):
    prompts, completions = pairs(8, "[nologprobs]")
    expected = [1.0 if rule(a, b) > 0.5 else 0.0 for a, b in completions]
    judge, _ = make_judge(fake, tmp_path)
    details = judge.judge_detailed(prompts, completions)
    assert [d.value for d in details] == expected and {d.source for d in details} == {"letter"}
    # and when the judge itself does not ask for them
    judge, _ = make_judge(fake, tmp_path, logprobs=False, use_cache=False)
    prompts, completions = pairs(8, "plain")
    assert judge(prompts, completions) == [1.0 if rule(a, b) > 0.5 else 0.0 for a, b in completions]
    assert "logprobs" not in fake.bodies[-1] and "top_logprobs" not in fake.bodies[-1]


# ------------------------------------------------------------------------------ malformed answers


@pytest.mark.parametrize("directive", ["[malformed]", "[empty]", "[nochoices]"])
def test_malformed_is_retried_then_missing(fake, tmp_path, directive):
    judge, sleeps = make_judge(fake, tmp_path, malformed_retries=2)
    prompts, completions = pairs(3)
    prompts[1] = f"{directive} bad one"
    judgements = CheckedJudge(judge).judge_or_missing(prompts, completions)  # asked through judge_or_missing
    values = [j.value for j in judgements]
    assert values[1] is None and "no valid answer after 3 attempts" in judgements[1].error
    assert judgements[0].error is None and judgements[2].error is None
    assert values[0] == pytest.approx(rule(*completions[0])) and values[2] == pytest.approx(rule(*completions[2]))
    assert fake.seen_per_question["[" + directive[1:-1] + "] bad one"] == 3  # 1 + 2 retries
    assert len(fake.bodies) == 5 and sleeps == []
    # the missing pair was not cached: the plain call asks again, then raises naming it
    with pytest.raises(JudgeError, match=r"pair 1 after 3 attempts"):
        judge(prompts, completions)
    assert len(fake.bodies) == 8
    # and a CheckedJudge (what training sees) also raises rather than returning a value
    with pytest.raises(JudgeError, match="pair 1"):
        CheckedJudge(judge)(prompts, completions)


def test_malformed_once_then_valid(fake, tmp_path):
    judge, _ = make_judge(fake, tmp_path)
    prompts, completions = ["[malformed_once] q"], [["short", "much longer answer"]]
    details = judge.judge_detailed(prompts, completions)
    assert details[0].value == pytest.approx(rule(*completions[0])) and details[0].attempts == 2
    assert len(fake.bodies) == 2


def test_read_answer_never_coerces():
    def response(content, tops=None, **choice):
        logprobs = None if tops is None else {"content": [{"token": content, "logprob": -0.1, "top_logprobs": tops}]}
        return {"choices": [{"message": {"content": content, **choice}, "logprobs": logprobs, **choice}]}

    a_and_b = [{"token": "A", "logprob": math.log(0.3)}, {"token": "B", "logprob": math.log(0.6)}]
    assert oj.read_answer(response("C", a_and_b))[0] is None  # A/B mass but a "C" answer: still malformed
    assert oj.read_answer(response("a"))[0] is None
    assert oj.read_answer(response("A."))[0] is None
    assert oj.read_answer(response(None))[0] is None
    assert oj.read_answer({"choices": []})[:2] == (None, "no choices")
    assert oj.read_answer(response("A", finish_reason="content_filter"))[0] is None
    assert oj.read_answer({"choices": [{"message": {"content": "A", "refusal": "no"}}]})[:2] == (None, "refusal")
    assert oj.read_answer(response(" A\n")) == (1.0, "letter", " A\n")
    assert oj.read_answer(response("B"))[:2] == (0.0, "letter")
    assert oj.read_answer(response("B", a_and_b))[0] == pytest.approx(1 / 3)
    only_a = [{"token": "A", "logprob": -0.01}, {"token": "Sure", "logprob": -5.0}]
    assert oj.read_answer(response("A", only_a))[:2] == (1.0, "logprobs")


@settings(max_examples=60, deadline=None)
@given(
    lp_a=st.floats(-30, 0),
    lp_b=st.floats(-30, 0),
    split=st.floats(0.05, 0.95),
    flipped=st.booleans(),
)
def test_logprob_formula_property(lp_a, lp_b, split, flipped):
    """P = Σ exp(A variants) / (Σ A + Σ B); the un-flip gives 1 − P for a flipped pair."""
    tops = [
        {"token": "A", "logprob": lp_a + math.log(split)},
        {"token": " A", "logprob": lp_a + math.log1p(-split)},
        {"token": "B", "logprob": lp_b},
    ]
    letter = "A" if lp_a >= lp_b else "B"
    resp = {"choices": [{"message": {"content": letter}, "logprobs": {"content": [{**tops[0], "top_logprobs": tops}]}}]}
    p, source, _ = oj.read_answer(resp)
    expected = 1.0 / (1.0 + math.exp(lp_b - lp_a))
    assert source == "logprobs" and p == pytest.approx(expected, abs=1e-9)
    assert OpenAIJudge._unflip(p, flipped) == pytest.approx(1 - expected if flipped else expected, abs=1e-9)


# ------------------------------------------------------------------------------ retries


def test_429_then_success_is_retried(fake, tmp_path):
    judge, sleeps = make_judge(fake, tmp_path, backoff_base=0.5, backoff_max=10.0)
    values = judge(["[429once] q"], [["short", "a longer one"]])
    assert values == pytest.approx([rule("short", "a longer one")], abs=1e-9)
    assert len(fake.bodies) == 2 and len(sleeps) == 1 and 0.0 <= sleeps[0] <= 0.5
    assert judge.requests_made == 2


def test_429_retry_after_is_honoured(fake, tmp_path):
    judge, sleeps = make_judge(fake, tmp_path, backoff_max=2.0)
    judge(["[429once][retry-after=0.25] q"], [["a", "bb"]])
    assert sleeps == [0.25] and len(fake.bodies) == 2


def test_5xx_retried_with_bounded_backoff_then_one_error(fake, tmp_path):
    judge, sleeps = make_judge(fake, tmp_path, max_retries=4, backoff_base=0.5, backoff_max=1.5)
    with pytest.raises(JudgeError) as info:
        judge(["[503] q"], [["a", "bb"]])
    message = str(info.value)
    assert fake.url in message and "5 attempts" in message and "HTTP 503" in message and "overloaded" in message
    assert len(fake.bodies) == 5 and len(sleeps) == 4
    for attempt, slept in enumerate(sleeps):
        assert 0.0 <= slept <= min(1.5, 0.5 * 2**attempt)


def test_400_is_not_retried(fake, tmp_path):
    judge, sleeps = make_judge(fake, tmp_path)
    with pytest.raises(JudgeError, match=r"HTTP 400.*model 'nope' does not exist"):
        judge(["[400] q"], [["a", "bb"]])
    assert len(fake.bodies) == 1 and sleeps == []


def test_timeout_is_retried(fake, tmp_path):
    judge, sleeps = make_judge(fake, tmp_path, timeout=0.3, max_retries=1)
    with pytest.raises(JudgeError, match=r"2 attempts.*APITimeoutError"):
        judge(["[sleep=1.5] q"], [["a", "bb"]])
    assert len(sleeps) == 1


def test_connection_refused_is_retried(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    judge = OpenAIJudge(
        "m", base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=2, sleep=sleeps.append,
        cache_path=tmp_path / "c.jsonl",
    )
    with pytest.raises(JudgeError, match=rf"127.0.0.1:{port}.*3 attempts.*APIConnectionError"):
        judge(["q"], [["a", "b"]])
    assert len(sleeps) == 2 and judge.requests_made == 3


# ------------------------------------------------------------------------------ cache


def test_cache_second_call_makes_no_requests(fake, tmp_path):
    prompts, completions = pairs(10)
    first, _ = make_judge(fake, tmp_path)
    values = first(prompts, completions)
    assert len(fake.bodies) == 10
    again, _ = make_judge(fake, tmp_path)  # a new process would start like this
    details = again.judge_detailed(prompts, completions)
    assert [d.value for d in details] == values and {d.source for d in details} == {"cache"}
    assert len(fake.bodies) == 10 and again.requests_made == 0
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    assert len(lines) == 10 and all(json.loads(line)["model"] == "fake-model" for line in lines)
    # another model, or another prompt template, does not reuse these answers
    other = OpenAIJudge("other-model", base_url=fake.url, api_key="k", cache_path=tmp_path / "cache.jsonl")
    other(prompts[:2], completions[:2])
    templated = OpenAIJudge(
        "fake-model", base_url=fake.url, api_key="k", cache_path=tmp_path / "cache.jsonl",
        user_template=oj.USER_TEMPLATE + "\n",
    )
    templated(prompts[:2], completions[:2])
    assert len(fake.bodies) == 14


def test_cache_survives_a_torn_line_and_duplicates_in_a_call(fake, tmp_path):
    prompts, completions = pairs(4)
    judge, _ = make_judge(fake, tmp_path)
    judge(prompts[:2], completions[:2])
    with open(tmp_path / "cache.jsonl", "a") as handle:
        handle.write('{"key": "abc", "p_fi')  # an interrupted write
    resumed, _ = make_judge(fake, tmp_path)
    values = resumed(prompts + prompts, completions + completions)  # 4 new requests: 2 new pairs, each once
    assert values[:4] == values[4:] and len(fake.bodies) == 4
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    assert len(lines) == 5 and sum(1 for line in lines if line.endswith("}")) == 4
    assert len(make_judge(fake, tmp_path)[0].cache._load()) == 4


# ------------------------------------------------------------------------------ concurrency


def test_concurrency_bounded_and_results_in_order(fake, tmp_path):
    prompts, completions = pairs(24, "[sleep=0.1]")
    judge, _ = make_judge(fake, tmp_path, max_concurrency=6)
    start = time.monotonic()
    values = judge(prompts, completions)
    elapsed = time.monotonic() - start
    assert values == pytest.approx([rule(a, b) for a, b in completions], abs=1e-9)
    assert 2 <= fake.max_in_flight <= 6
    assert elapsed < 24 * 0.1  # not one at a time


def test_error_in_one_pair_aborts_the_call(fake, tmp_path):
    prompts, completions = pairs(6)
    prompts[3] = "[400] q"
    judge, _ = make_judge(fake, tmp_path)
    with pytest.raises(JudgeError, match="HTTP 400"):
        judge.judge_or_missing(prompts, completions)


# ------------------------------------------------------------------------------ load_judge, docs


def test_load_judge_reads_the_environment(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    judge = load_judge("openai:org/model-v1:latest", seed=7)
    assert isinstance(judge, CheckedJudge) and isinstance(judge.inner, OpenAIJudge)
    inner = judge.inner
    assert inner.model == "org/model-v1:latest" and inner.seed == 7 and inner.base_url == fake.url
    assert inner.cache.path == tmp_path / "xdg" / "egpo" / "openai_judge" / "cache.jsonl"
    assert judge(["q?"], [["ok", "a much longer answer"]]) == pytest.approx([rule("ok", "a much longer answer")])
    assert fake.headers[-1]["authorization"] == "Bearer sk-from-env"
    assert fake.bodies[-1]["model"] == "org/model-v1:latest"
    judge.close()
    with pytest.raises(ValueError, match="model"):
        load_judge("openai:")


def test_no_key_and_no_base_url_is_an_error(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIJudge("m", cache_path=tmp_path / "c.jsonl")


def test_docstring_shows_the_exact_prompt():
    doc = " ".join(oj.__doc__.split())
    assert " ".join(oj.SYSTEM_PROMPT.split()) in doc
    for line in oj.USER_TEMPLATE.splitlines():
        assert line in oj.__doc__
    assert "answer with exactly one letter, a or b" in oj.USER_TEMPLATE.lower()


def test_empty_call_makes_no_request(fake, tmp_path):
    judge, _ = make_judge(fake, tmp_path)
    assert judge([], []) == [] and judge.judge_or_missing([], []) == []
    assert fake.bodies == []


# ------------------------------------------------------------------------------ identity


def test_identity_holds_the_endpoints_stable_model_record_asked_once(fake, tmp_path):
    """identity()["served"] is GET /v1/models/{model}'s id, owned_by and (vLLM's) root / max_model_len,
    without ``created`` (stamped per request by vLLM: two asks differ), asked once per client; the same
    served name on weights from another root is another judge (identity_changes names served.root); an
    endpoint without the route (404) gives served None."""
    from lm_runs.judges.base import identity_changes

    fake.model_record = {"owned_by": "vllm", "root": "/weights/judge-a", "max_model_len": 4096}
    judge, _ = make_judge(fake, tmp_path)
    first = judge.identity()
    assert first["served"] == {"id": "fake-model", "owned_by": "vllm", "root": "/weights/judge-a", "max_model_len": 4096}
    assert judge.identity() == first and fake.model_asks == 1
    assert make_judge(fake, tmp_path)[0].identity() == first  # a new client, the same server: the same judge
    fake.model_record = {"owned_by": "vllm", "root": "/weights/judge-b", "max_model_len": 4096}
    other = make_judge(fake, tmp_path)[0].identity()
    assert identity_changes(first, other) == ["served.root: '/weights/judge-a' → '/weights/judge-b'"]
    fake.model_record = None
    assert make_judge(fake, tmp_path)[0].identity()["served"] is None
    assert {k: v for k, v in first.items() if k != "served"} == {
        "kind": "openai", "base_url": fake.url, "model": "fake-model", "templates": first["templates"], "seed": 0}
