"""A judge server swapped for another mid-evaluation (two real uvicorn servers on one loopback port):
``python -m lm_runs.evaluate`` stops with one line and exit status 2 instead of mixing two judges' answers,
keeps only the first judge's judgements, and a rerun against the first judge completes from them."""

from __future__ import annotations

import json
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
