"""lm_runs.evaluate with a scalar reward-model judge (lm_runs.evaluate.scoring): each response scored once,
every pair formed from the scores, the same tables as judging the pairs through the same judge, scores
resumed from the output folder. Tiny GPT-2 models built locally; nothing downloads."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from lm_runs.evaluate import EvaluationError, EvaluationSettings, evaluate  # noqa: E402
from lm_runs.evaluate.folder import file_stem  # noqa: E402
from lm_runs.judges import CheckedJudge  # noqa: E402
from lm_runs.judges.reward_model import RewardModelJudge  # noqa: E402
from lm_runs.tiny import build_tiny_lm  # noqa: E402

PROMPTS = ["tell me about the cat", "why is the sun big", "write a poem", "how fast is the dog", "the moon", "a star"]
K = 2
SETTINGS = EvaluationSettings(
    num_prompts=6, samples_per_prompt=K, max_new_tokens=6, prompts_per_batch=3, bootstrap=100, device="cpu",
    judge_batch_size=4, selection_fraction=0.5,
)
NAMES = ("a", "b", "c")


def _perturbed(ref: Path, out: Path, seed: int) -> Path:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ref)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=generator))
    model.save_pretrained(out)
    for f in ref.iterdir():
        if f.name not in ("model.safetensors", "config.json", "generation_config.json"):
            shutil.copy(f, out)
    return out


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    ref = build_tiny_lm(root / "ref", seed=0)
    models = {name: _perturbed(ref, root / name, seed=k) for k, name in enumerate(NAMES, 1)}
    return {"root": root, "ref": ref, "models": models, "rm": build_tiny_lm(root / "rm", num_labels=1, seed=3)}


class PairsOnly:
    """The reward-model judge seen as any judge: asked pair by pair (its answers, its identity)."""

    kind = "reward_model"
    shuffles_order = False

    def __init__(self, judge: RewardModelJudge) -> None:
        self.judge = judge
        self.name = judge.name

    def __call__(self, prompts, completions):
        return self.judge(prompts, completions)

    def identity(self):
        return self.judge.identity()


def _judge(zoo, **options) -> RewardModelJudge:
    # one text per forward pass: no padding, so a response's reward is the same float on either path
    return RewardModelJudge(zoo["rm"], device="cpu", batch_size=1, **options)


def _count_forwards(judge: RewardModelJudge) -> dict[str, int]:
    counted = {"rows": 0}
    inner = judge.model.forward

    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        counted["rows"] += int(ids.shape[0])
        return inner(*args, **kwargs)

    judge.model.forward = forward
    return counted


def _distinct(out: Path) -> int:
    """Σ over models of the number of distinct (prompt, response) they generated."""
    total = 0
    for path in (out / "generations").glob("*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        total += len({(r["prompt"], r["text"]) for r in rows})
    return total


@pytest.fixture(scope="module")
def both(zoo, tmp_path_factory):
    """The same evaluation through the scores (out_scores) and pair by pair (out_pairs)."""
    root = tmp_path_factory.mktemp("eval")
    scored = _judge(zoo)
    forwards = _count_forwards(scored)
    by_scores = evaluate(zoo["models"], zoo["ref"], PROMPTS, scored, SETTINGS, root / "scores")
    paired = _judge(zoo)
    # the same generations: copy them so that only the judging differs (they would be regenerated identically)
    shutil.copytree(root / "scores" / "generations", root / "pairs" / "generations")
    by_pairs = evaluate(zoo["models"], zoo["ref"], PROMPTS, CheckedJudge(PairsOnly(paired)), SETTINGS, root / "pairs")
    return {"root": root, "scores": by_scores, "pairs": by_pairs, "scored": scored, "paired": paired, "forwards": forwards}


def test_each_response_is_scored_once(both):
    models, n = len(NAMES) + 1, len(PROMPTS)
    distinct = _distinct(both["root"] / "scores")
    assert distinct > 0.75 * models * n * K  # the tiny models mostly answer differently: the count means something
    assert both["scored"].scored_texts == distinct  # M·K per prompt at most, each distinct response once
    assert both["forwards"]["rows"] == distinct  # the forward passes: one row per scored text
    # pair by pair: each pair asked (both orders in one call, which the judge scores once) costs its 2 texts,
    # over 3 comparisons against π_ref (all prompts) and 3 pairwise ones (the report split)
    asked = sum(1 for path in (both["root"] / "pairs" / "judgements").iterdir()
                for line in path.read_text().splitlines() if not json.loads(line).get("same"))
    assert asked > (3 * n + 3 * n // 2) * K * 0.75
    assert both["paired"].scored_texts == 2 * asked > 2 * distinct
    for name in ("reference",) + NAMES:
        rows = [json.loads(x) for x in (both["root"] / "scores" / "scores" / f"{file_stem(name)}.jsonl").read_text().splitlines()]
        assert sorted((r["prompt"], r["sample"]) for r in rows) == [(i, j) for i in range(n) for j in range(K)]
    assert not (both["root"] / "pairs" / "scores").exists()  # any other judge: no scores folder


def test_the_tables_equal_those_of_judging_the_pairs(both):
    a, b = both["scores"], both["pairs"]
    assert a.tables == b.tables
    numeric = ["win_rate", "ci_low", "ci_high", "position_bias"]
    left = a.winrates.sort_values(["split", "model", "opponent"]).reset_index(drop=True)
    right = b.winrates.sort_values(["split", "model", "opponent"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(left.drop(columns=numeric), right.drop(columns=numeric))
    for column in numeric:
        assert (left[column] - right[column]).abs().max() < 1e-9, column
    assert left["win_rate"].std() > 0.01  # the entries differ: the comparison means something
    # the records, both orders included: P(b ≻ a) = 1 − P(a ≻ b) by construction
    for path in sorted((both["root"] / "scores" / "judgements").iterdir()):
        mine = [json.loads(x) for x in path.read_text().splitlines()]
        theirs = [json.loads(x) for x in (both["root"] / "pairs" / "judgements" / path.name).read_text().splitlines()]
        assert [(r["prompt"], r["sample"], r.get("same")) for r in mine] == [(r["prompt"], r["sample"], r.get("same")) for r in theirs]
        for x, y in zip(mine, theirs):
            assert abs(x["p_ab"] - y["p_ab"]) < 1e-9 and abs(x["p_ba"] - y["p_ba"]) < 1e-9
            assert abs(x["p_ab"] + x["p_ba"] - 1) < 1e-9


class Killed(BaseException):
    """A kill: not an Exception."""


def test_a_killed_scoring_resumes_without_rescoring(zoo, both, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(both["root"] / "scores" / "generations", out / "generations")
    judge = _judge(zoo)
    real = judge.rewards
    calls = {"n": 0}

    def rewards(prompts, responses):
        if calls["n"] == 7:
            raise Killed()
        calls["n"] += 1
        return real(prompts, responses)

    judge.rewards = rewards
    with pytest.raises(Killed):
        evaluate(zoo["models"], zoo["ref"], PROMPTS, judge, SETTINGS, out)
    assert judge.scored_texts == 7 and not list((out / "judgements").iterdir())
    calls["n"] = -10**9
    result = evaluate(zoo["models"], zoo["ref"], PROMPTS, judge, SETTINGS, out)
    assert judge.scored_texts == _distinct(out)  # the 7 saved scores were not asked again
    assert result.tables == both["scores"].tables
    # a finished folder: nothing is scored again; a lost scores file is scored again, to the same tables
    again = _judge(zoo)
    assert evaluate(zoo["models"], zoo["ref"], PROMPTS, again, SETTINGS, out).tables == both["scores"].tables
    assert again.scored_texts == 0
    (out / "scores" / "a.jsonl").unlink()
    shutil.rmtree(out / "judgements")
    (out / "judgements").mkdir()
    assert evaluate(zoo["models"], zoo["ref"], PROMPTS, again, SETTINGS, out).tables == both["scores"].tables
    rows = [json.loads(x) for x in (out / "generations" / "a.jsonl").read_text().splitlines()]
    assert again.scored_texts == len({(r["prompt"], r["text"]) for r in rows})


def test_a_saved_score_of_another_response_is_not_reused(zoo, both, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(both["root"] / "scores", out)
    shutil.rmtree(out / "judgements")
    path = out / "scores" / "b.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["sha256"] = "0" * 64
    rows[0]["reward"] = 1e6  # reused, it would change the tables
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = _judge(zoo)
    assert evaluate(zoo["models"], zoo["ref"], PROMPTS, judge, SETTINGS, out).tables == both["scores"].tables
    assert judge.scored_texts == 1


def test_a_missing_judgement_on_disk_is_formed_again(zoo, both, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(both["root"] / "scores", out)
    path = out / "judgements" / "c__vs__reference.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for row in rows[:3]:
        row.update(p_ab=None, p_ba=None, error="the judge was down")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = _judge(zoo)
    assert evaluate(zoo["models"], zoo["ref"], PROMPTS, judge, SETTINGS, out).tables == both["scores"].tables
    assert judge.scored_texts == 0 and path.read_text() == (both["root"] / "scores" / "judgements" / path.name).read_text()


def test_another_temperature_is_another_judge(zoo, both, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(both["root"] / "scores", out)
    with pytest.raises(EvaluationError, match="judge"):
        evaluate(zoo["models"], zoo["ref"], PROMPTS, _judge(zoo, temperature=0.5), SETTINGS, out)
    sharp = _judge(zoo, temperature=0.5)
    result = evaluate(zoo["models"], zoo["ref"], PROMPTS, sharp, SETTINGS, out, overwrite=True)
    wide = both["scores"].winrates.set_index(["split", "model", "opponent"])["win_rate"]
    sharp_rates = result.winrates.set_index(["split", "model", "opponent"])["win_rate"]
    # τ = ½ doubles every reward gap: each win rate moves away from ½ (or stays at ½)
    assert ((sharp_rates - 0.5).abs() >= (wide - 0.5).abs() - 1e-12).all()
    assert ((sharp_rates - 0.5).abs() - (wide - 0.5).abs()).max() > 1e-3
    # each record is σ((r_a − r_b)/τ) of the saved rewards, in both orders
    rewards = {name: {(r["prompt"], r["sample"]): r["reward"] for r in map(json.loads, (out / "scores" / f"{name}.jsonl").read_text().splitlines())}
               for name in ("a", "reference")}
    records = [json.loads(x) for x in (out / "judgements" / "a__vs__reference.jsonl").read_text().splitlines()]
    for r in records:
        gap = rewards["a"][(r["prompt"], r["sample"])] - rewards["reference"][(r["prompt"], r["sample"])]
        assert r["p_ab"] == pytest.approx(1 / (1 + math.exp(-gap / 0.5)), abs=1e-12)
        assert r["p_ba"] == pytest.approx(1 / (1 + math.exp(gap / 0.5)), abs=1e-12)
    assert max(abs(r["p_ab"] - 0.5) for r in records) > 0.01


def test_one_order_is_formed_from_the_scores_too(zoo, both, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(both["root"] / "scores" / "generations", out / "generations")
    shutil.copytree(both["root"] / "scores" / "scores", out / "scores")
    judge = _judge(zoo)
    settings = EvaluationSettings(**{**SETTINGS.__dict__, "both_orders": False})
    result = evaluate(zoo["models"], zoo["ref"], PROMPTS, judge, settings, out)
    assert judge.scored_texts == 0  # the saved scores serve either setting (the judge is the same)
    rates = result.winrates.set_index(["split", "model", "opponent"])["win_rate"]
    both_rates = both["scores"].winrates.set_index(["split", "model", "opponent"])["win_rate"]
    assert (rates - both_rates).abs().max() < 1e-9  # a reward model has no position bias to average out


BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_evaluate_judges.py"


def test_benchmark_help_runs_and_bad_input_is_one_line():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--judge_batch_size" in done.stdout and "preference model" in " ".join(done.stdout.split())
    bad = subprocess.run([sys.executable, str(BENCH), "--models", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "argument --models: must be >= 1, got 0" in bad.stderr.strip().splitlines()[-1]


def test_a_served_reward_model_scores_each_response_once_through_the_server(zoo, both, tmp_path):
    """The evaluation with the reward model behind ``lm_runs.judge_server`` (an HTTP judge): every response
    scored once at the server's score route (the served model's forward rows = the distinct responses;
    no pair route call), and the tables equal those of the in-process reward model."""
    from lm_runs.judge_server import create_app, serve_in_thread
    from lm_runs.judges.http import HTTPJudge

    served = _judge(zoo)
    forwards = _count_forwards(served)
    out = tmp_path / "served"
    shutil.copytree(both["root"] / "scores" / "generations", out / "generations")
    app = create_app(CheckedJudge(served), max_batch_size=64, max_wait_ms=1)
    with serve_in_thread(app) as server, HTTPJudge(server.url, chunk_size=16) as client:
        result = evaluate(zoo["models"], zoo["ref"], PROMPTS, CheckedJudge(client), SETTINGS, out)
    distinct = _distinct(out)
    assert served.scored_texts == distinct and forwards["rows"] == distinct
    assert result.tables == both["scores"].tables
    assert len(list((out / "scores").glob("*.jsonl"))) == len(NAMES) + 1
