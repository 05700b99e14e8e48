"""A judge server swapped for another mid-evaluation (two real uvicorn servers on one loopback port):
``python -m lm_runs.evaluate`` stops with one line and exit status 2 instead of mixing two judges' answers,
keeps only the first judge's judgements, and a rerun against the first judge completes from them."""

from __future__ import annotations

import json
import math
import threading

import pytest

from lm_runs.evaluate import main
from lm_runs.judge_server import create_app, serve_in_thread
from lm_runs.tiny import build_tiny_lm

PROMPTS = ["tell me about the cat", "why is the sun big", "write a poem", "how fast is the dog", "the moon", "a star"]
A_ANSWER, B_ANSWER = 0.25, 0.75  # every pair, either order: whose answer a saved judgement is shows at once


class JudgeA:
    """Judge A: ``value`` for every pair, counting its calls; its ``swap_after``-th call sets ``swap``, and every
    later call fails (the server answers 500, which the client retries), so no answer of A's can follow the
    swap however slowly the test's thread stops A and starts B. Served, its identity is its class's (qualname
    ``JudgeA``, the module's source digest)."""

    def __init__(self, value: float, swap_after: int | None = None) -> None:
        self.value, self.swap_after, self.calls = value, swap_after, 0
        self.swap = threading.Event()

    def __call__(self, prompts, completions):
        self.calls += 1
        if self.swap_after is not None and self.calls > self.swap_after:
            raise RuntimeError("judge A is being replaced")
        if self.calls == self.swap_after:
            self.swap.set()
        return [self.value] * len(completions)


class JudgeB(JudgeA):
    """Judge B: another class, so another identity (qualname ``JudgeB``)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("swap")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return {"ref": build_tiny_lm(root / "ref"), "other": build_tiny_lm(root / "other", seed=1), "prompts": prompts}


@pytest.mark.slow
def test_a_judge_server_swapped_mid_evaluation_is_refused_in_one_line_and_the_rerun_completes(models, tmp_path, capsys):
    """Server A answers 0.25, server B 0.75 (another callable: another identity). After A's second call the
    test stops A and starts B on the same port (requests meanwhile fail, A's later calls too, and are retried:
    without that the rest of the run could be answered by A before the swap, as happened once under load); the client's
    identity check after a call reaches B and raises: exit 2, one stderr line naming the URL
    and the change (qualname JudgeA → JudgeB); every saved judgement is A's (0.25 in both orders), none
    is B's (0.75). Served A again, the same command completes (exit 0) from the saved judgements, every one
    of them A's."""
    out = tmp_path / "eval"
    judge_a, judge_b = JudgeA(A_ANSWER, swap_after=2), JudgeB(B_ANSWER)
    first = serve_in_thread(create_app(judge_a, name="a", max_wait_ms=0))
    url, port = first.url, first.port
    holder = {}

    def swap() -> None:
        if judge_a.swap.wait(300):
            first.stop()
            holder["b"] = serve_in_thread(create_app(judge_b, name="b", max_wait_ms=0), port=port)

    swapper = threading.Thread(target=swap)
    swapper.start()
    argv = ["--reference", str(models["ref"]), "--models", f"other={models['other']}", "--prompts", str(models["prompts"]),
            "--judge", url, "--judge_batch_size", "2", "--judge_retries", "20", "--output_dir", str(out),
            "--num_prompts", "6", "--samples_per_prompt", "2", "--max_new_tokens", "6", "--prompts_per_batch", "2",
            "--bootstrap", "20", "--device", "cpu", "--progress", "false"]
    try:
        capsys.readouterr()
        code = main(argv)
    finally:
        judge_a.swap.set()
        swapper.join()
        first.stop()
        if "b" in holder:
            holder["b"].stop()
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = [text for text in err.splitlines() if text.startswith("error: ")]
    assert line.startswith(f"error: judge server {url} now serves another judge than the one this run started with ("), line
    assert "qualname: 'JudgeA' → 'JudgeB'" in line and "not kept" in line
    assert judge_a.calls >= 2 and "b" in holder  # the swap happened mid-run (B's judge may not be asked:
    # the check after A's last answered call may already reach B)
    saved = [json.loads(row) for f in (out / "judgements").glob("*.jsonl") for row in f.read_text().splitlines()]
    judged = [r for r in saved if not r.get("same")]
    assert len(judged) >= 4  # A's two calls: two pairs each, both orders in one call
    assert all(r["p_ab"] == A_ANSWER and r["p_ba"] == A_ANSWER for r in judged), judged

    with serve_in_thread(create_app(JudgeA(A_ANSWER), name="a", max_wait_ms=0), port=port):
        assert main(argv) == 0
    saved = [json.loads(row) for f in (out / "judgements").glob("*.jsonl") for row in f.read_text().splitlines()]
    assert len(saved) == 12 and all(r["p_ab"] == A_ANSWER for r in saved if not r.get("same"))


# ------------------------------------------------------------------------------------------------
# The OpenAI-compatible judge: the endpoint's model record re-read after every call
# ------------------------------------------------------------------------------------------------


class SwappingEndpoint:
    """A loopback OpenAI-compatible endpoint (FastAPI + uvicorn) serving judge A — ``GET /v1/models/{model}``
    with root /weights/a, every chat completion the letter B with log-probabilities giving P(first ≻ second)
    = 0.25 — until its ``swap_after``-th chat completion; from then on judge B: root /weights/b, 0.75 (a vLLM
    server restarted on other weights under the same served name). ``restore()`` serves A again."""

    def __init__(self, swap_after: int | None) -> None:
        from fastapi import FastAPI

        self.lock = threading.Lock()
        self.swap_after, self.completions, self.record_asks = swap_after, 0, 0
        self.app = FastAPI()

        @self.app.get("/v1/models/{model}")
        async def model(model: str) -> dict:
            with self.lock:
                self.record_asks += 1
                root = "/weights/b" if self.swapped() else "/weights/a"
            return {"id": model, "object": "model", "owned_by": "vllm", "root": root, "max_model_len": 2048}

        @self.app.post("/v1/chat/completions")
        async def chat(body: dict) -> dict:
            with self.lock:
                self.completions += 1
                p = B_ANSWER if self.swapped() else A_ANSWER
            letter = "A" if p >= 0.5 else "B"
            tops = [{"token": "A", "logprob": math.log(p)}, {"token": "B", "logprob": math.log1p(-p)}]
            return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "length",
                                 "message": {"role": "assistant", "content": letter},
                                 "logprobs": {"content": [{"token": letter, "logprob": dict((t["token"], t["logprob"]) for t in tops)[letter],
                                                           "top_logprobs": tops}]}}]}

    def swapped(self) -> bool:
        """Whether B answers (the lock held)."""
        return self.swap_after is not None and self.completions >= self.swap_after

    def restore(self) -> None:
        """Serve judge A again, for good."""
        with self.lock:
            self.swap_after = None


def test_an_openai_judge_whose_model_record_changes_after_a_call_raises_and_keeps_none_of_its_answers(tmp_path):
    """OpenAIJudge directly: the record pinned by identity(); a call of 4 pairs answered by A keeps them (cache:
    4 lines) and re-reads the record once; the endpoint swaps after its 6th completion, mid second call:
    that call raises JudgeChanged naming served.root /weights/a → /weights/b, and none of its answers (A's
    two, B's two) reaches the cache. A judge that never asked identity() pins the record at its first
    call's end (B's from then on) and raises at nothing; served A again, the first judge's next call raises
    too (the record differs from its pin)."""
    from lm_runs.judges import JudgeChanged, OpenAIJudge

    endpoint = SwappingEndpoint(swap_after=6)
    with serve_in_thread(endpoint.app) as served:
        options = dict(base_url=served.url + "/v1", api_key="k", cache_path=tmp_path / "cache.jsonl", max_concurrency=2)
        judge = OpenAIJudge("judge-model", **options)
        assert judge.identity()["served"]["root"] == "/weights/a" and endpoint.record_asks == 1
        pairs = [[f"a{i}", f"b{i}"] for i in range(4)]
        assert judge(["q"] * 4, pairs, shuffle_order=False) == [A_ANSWER] * 4
        assert endpoint.record_asks == 2 and len((tmp_path / "cache.jsonl").read_text().splitlines()) == 4
        with pytest.raises(JudgeChanged) as changed:
            judge(["r"] * 4, pairs, shuffle_order=False)
        message = str(changed.value)
        assert "\n" not in message and f"judge openai:judge-model@{served.url}/v1 now serves another model" in message
        assert "served.root: '/weights/a' → '/weights/b'" in message and "not kept" in message
        assert endpoint.completions == 8 and len((tmp_path / "cache.jsonl").read_text().splitlines()) == 4
        fresh = OpenAIJudge("judge-model", **{**options, "cache_path": tmp_path / "fresh.jsonl"})
        assert fresh(["s"], [["x", "y"]]) == [B_ANSWER] and fresh.served_model()["root"] == "/weights/b"
        endpoint.restore()
        with pytest.raises(JudgeChanged, match="served.root: '/weights/b' → '/weights/a'"):
            fresh(["t"], [["x", "y"]])


@pytest.mark.slow  # about 15 s (two tiny models, two evaluations); the test above checks the judge alone
def test_an_openai_judge_swapped_mid_evaluation_is_refused_in_one_line_and_the_rerun_completes(models, tmp_path, capsys, monkeypatch):
    """``python -m lm_runs.evaluate --judge openai:judge-model`` against a loopback endpoint that swaps from
    judge A to judge B (another served root) after its 6th chat completion, inside the second judge call
    (each call: 2 pairs, both orders, 4 completions): exit 2, one stderr line naming the endpoint and the
    change (served.root); the saved judgements are the first call's, every one A's (0.25 in both orders),
    and so is the answer cache. Served A again, the same command completes (exit 0), every judgement A's."""
    endpoint = SwappingEndpoint(swap_after=6)
    out = tmp_path / "eval"
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with serve_in_thread(endpoint.app) as served:
        monkeypatch.setenv("OPENAI_BASE_URL", served.url + "/v1")
        argv = ["--reference", str(models["ref"]), "--models", f"other={models['other']}", "--prompts", str(models["prompts"]),
                "--judge", "openai:judge-model", "--judge_batch_size", "2", "--output_dir", str(out),
                "--num_prompts", "6", "--samples_per_prompt", "2", "--max_new_tokens", "6", "--prompts_per_batch", "2",
                "--bootstrap", "20", "--device", "cpu", "--progress", "false"]
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, err
        (line,) = [text for text in err.splitlines() if text.startswith("error: ")]
        assert line.startswith(f"error: judge openai:judge-model@{served.url}/v1 now serves another model than the one this "
                               "run started with (served.root: '/weights/a' → '/weights/b')"), line
        assert endpoint.completions == 8  # the swap happened inside the second call, which was answered whole
        saved = [json.loads(row) for f in (out / "judgements").glob("*.jsonl") for row in f.read_text().splitlines()]
        judged = [r for r in saved if not r.get("same")]
        assert len(judged) == 2 and all(r["p_ab"] == A_ANSWER and r["p_ba"] == A_ANSWER for r in judged), judged
        cached = [json.loads(row) for row in (tmp_path / "xdg" / "egpo" / "openai_judge" / "cache.jsonl").read_text().splitlines()]
        assert len(cached) == 4 and all(r["p_first"] == pytest.approx(A_ANSWER, abs=1e-12) for r in cached)

        endpoint.restore()
        assert main(argv) == 0
    saved = [json.loads(row) for f in (out / "judgements").glob("*.jsonl") for row in f.read_text().splitlines()]
    assert len(saved) == 12 and all(r["p_ab"] == A_ANSWER and r["p_ba"] == A_ANSWER for r in saved if not r.get("same"))
