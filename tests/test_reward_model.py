"""Scalar Bradley–Terry reward models as judges (lm_runs.judges.reward_model) and their trainer
(lm_runs.train_reward_model); the NLHF trainer scoring each rollout's responses once with one; the judge
server's score route; calibration on held-out pairs (lm_runs.calibrate_judge). Tiny GPT-2 models built
locally, loaded with from_pretrained; nothing downloads."""

from __future__ import annotations

import json
import logging
import math
import random
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lm_runs.judges.base import CheckedJudge  # noqa: E402
from lm_runs.judges.loader import check_judge_spec, load_judge  # noqa: E402
from lm_runs.judges.reward_model import RewardModelJudge, bradley_terry  # noqa: E402
from lm_runs.launcher import run_entry_point  # noqa: E402
from lm_runs.models import ModelRoleError, judge_model_role  # noqa: E402
from lm_runs.tiny import build_tiny_lm  # noqa: E402
from lm_runs.train_reward_model import main as train_main  # noqa: E402

_FILLER = "the a cat dog bird fish runs jumps sleeps eats red blue green small big fast slow".split()


def _pairs(count: int, seed: int) -> list[dict[str, str]]:
    """Pairs whose chosen response holds the word 'happy' and whose rejected one holds 'sad', each at a
    random place among random filler words: learnable, but not from the last token alone."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        prompt = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(2, 5)))
        responses = {}
        for key, word in (("chosen", "happy"), ("rejected", "sad")):
            words = [rng.choice(_FILLER) for _ in range(rng.randint(2, 6))]
            words.insert(rng.randint(0, len(words)), word)
            responses[key] = " ".join(words)
        rows.append({"prompt": prompt, **responses})
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny reward model trained by ``python -m lm_runs.train_reward_model`` (in-process) on 240 pairs,
    40 of them held out; returns (output folder, eval_results.json contents)."""
    root = tmp_path_factory.mktemp("rm")
    base = build_tiny_lm(root / "base", seed=0)
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _pairs(240, seed=1)))
    out = root / "out"
    train_main([
        "--model_name_or_path", str(base), "--dataset", str(data), "--eval_size", "40", "--output_dir", str(out),
        "--num_train_epochs", "4", "--per_device_train_batch_size", "16", "--learning_rate", "3e-3",
        "--warmup_steps", "0", "--weight_decay", "0", "--logging_steps", "100", "--save_strategy", "no",
        "--report_to", "none", "--seed", "0", "--use_cpu", "true",
    ])
    results = json.loads((out / "eval_results.json").read_text())
    print("trained tiny reward model:", results)
    return out, results


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("judges")
    return {"pm": build_tiny_lm(root / "pm", num_labels=2), "three": build_tiny_lm(root / "three", num_labels=3),
            "lm": build_tiny_lm(root / "lm")}


def test_training_beats_chance_on_held_out_pairs(trained):
    out, results = trained
    # chance is 0.5; the stated margin: at least 0.3 above it on the 40 held-out pairs
    assert results["eval_pairs"] == 40
    assert results["eval_pair_accuracy"] >= 0.8, results
    assert results["eval_loss"] < math.log(2), results  # below the loss of a constant reward
    # calibration at τ = 1 (lm_runs.judges.calibration): sure where right, so far from ½ and from the Brier of a coin
    assert 0.7 < results["eval_mean_p_chosen"] <= 1.0 and results["eval_brier"] < 0.1, results
    config = json.loads((out / "config.json").read_text())
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    assert judge_model_role(out) == "reward_model"


def _by_hand(judge: RewardModelJudge, prompt: str, response: str) -> float:
    """r(prompt, response): the chat template applied here, the text run alone (no padding)."""
    tokenizer = judge.tokenizer
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
    )
    assert text.startswith(f"User: {prompt}\nAssistant: {response}")
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return float(judge.model(input_ids=ids).logits[0, 0])


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_answers_are_bradley_terry_of_the_models_own_scores(trained, temperature):
    out, _ = trained
    spec = str(out) if temperature == 1.0 else f"{out}?temperature={temperature}"
    judge = load_judge(spec, batch_size=3)
    assert judge.kind == "reward_model" and judge.inner.temperature == temperature
    assert judge.inner.batch_size == 6  # --judge_batch_size counts pairs: two response texts each
    rows = _pairs(6, seed=99)
    prompts = [row["prompt"] for row in rows]
    pairs = [[row["chosen"], row["rejected"]] for row in rows]
    answers = judge(prompts, pairs)
    for prompt, (a, b), answer in zip(prompts, pairs, answers):
        expected = 1.0 / (1.0 + math.exp(-(_by_hand(judge.inner, prompt, a) - _by_hand(judge.inner, prompt, b)) / temperature))
        assert answer == pytest.approx(expected, abs=1e-6)
    assert max(abs(p - 0.5) for p in answers) > 0.1  # the scores differ: the comparison means something
    assert judge.identity()["temperature"] == temperature


def test_no_position_bias(trained):
    judge = load_judge(str(trained[0]))
    rows = _pairs(8, seed=5)
    prompts = [row["prompt"] for row in rows]
    forward = judge(prompts, [[row["chosen"], row["rejected"]] for row in rows])
    backward = judge(prompts, [[row["rejected"], row["chosen"]] for row in rows])
    assert max(abs(p - 0.5) for p in forward) > 0.1
    for p, q in zip(forward, backward):
        assert p + q == pytest.approx(1.0, abs=1e-6)
    assert judge.shuffles_order is False


def test_each_distinct_response_is_scored_once(trained):
    judge = RewardModelJudge(trained[0], batch_size=16)
    passes: list[int] = []
    handle = judge.model.register_forward_hook(lambda module, args, kwargs, output: passes.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        # 3 responses, 4 pairs among them, one repeated: 3 texts to score, not 8
        answers = judge(["p"] * 4, [["x y", "a b c"], ["x y", "red fish"], ["a b c", "red fish"], ["x y", "a b c"]])
        assert passes == [3]
        assert answers[0] == answers[3]
        assert answers[2] == pytest.approx(bradley_terry(*judge.rewards(["p", "p"], ["a b c", "red fish"])), abs=1e-12)
        passes.clear()
        judge.batch_size = 2
        judge(["p", "q"], [["one", "two"], ["one", "two"]])  # two prompts: 4 distinct texts, 2 passes of 2
        assert passes == [2, 2]
    finally:
        handle.remove()
    assert judge.scored_texts == 3 + 2 + 4  # the pairs, the two rewards asked directly, the two prompts


def test_loader_recognises_the_kinds_and_says_so(trained, zoo, caplog):
    with caplog.at_level(logging.INFO, logger="lm_runs.judges.loader"):
        judge = load_judge(str(trained[0]))
    assert isinstance(judge, CheckedJudge) and judge.kind == "reward_model"
    said = [r.getMessage() for r in caplog.records if "reward model" in r.getMessage()]
    assert len(said) == 1 and "τ = 1" in said[0]
    assert judge_model_role(zoo["pm"]) == "preference_model"
    assert load_judge(str(zoo["pm"])).kind == "preference_model"


@pytest.mark.parametrize("which, words", [("three", "3 labels"), ("lm", "causal language model")])
def test_other_models_are_refused_in_one_line(zoo, which, words):
    with pytest.raises(ModelRoleError) as caught:
        check_judge_spec(str(zoo[which]))
    message = str(caught.value)
    assert "\n" not in message and words in message and str(zoo[which]) in message
    assert "2 labels (a pairwise preference model) or 1 label (a scalar reward model)" in message


@pytest.mark.parametrize(
    "suffix, words",
    [("?temperature=0", "not a finite number > 0"), ("?temperature=nan", "not a finite number > 0"),
     ("?temp=2", "unknown model option 'temp=2'")],
)
def test_bad_temperature_is_refused(trained, suffix, words):
    with pytest.raises(ValueError, match=words):
        check_judge_spec(f"{trained[0]}{suffix}")


def test_temperature_is_refused_on_a_preference_model(zoo):
    with pytest.raises(ValueError, match="applies to a reward model"):
        check_judge_spec(f"{zoo['pm']}?temperature=2")


def test_judge_server_serves_the_reward_model(trained):
    import httpx

    from lm_runs.judge_server import create_app, serve_in_thread
    from lm_runs.judges.http import HTTPJudge

    local = load_judge(str(trained[0]))
    rows = _pairs(10, seed=7)
    prompts = [row["prompt"] for row in rows]
    pairs = [[row["chosen"], row["rejected"]] for row in rows]
    expected = local(prompts, pairs)
    served = load_judge(str(trained[0]))
    with serve_in_thread(create_app(served, max_batch_size=64, max_wait_ms=1)) as server:
        with HTTPJudge(server.url) as client:
            answers = client(prompts, pairs)
        metrics = httpx.get(f"{server.url}/metrics").text
    assert answers == pytest.approx(expected, abs=1e-6)
    assert 'egpo_judge_info{judge_kind="reward_model"} 1.0' in metrics


def test_train_reward_model_help_runs(capsys):
    """In this process (an interpreter start costs seconds; ``python -m`` runs the same ``main``)."""
    with pytest.raises(SystemExit) as caught:
        run_entry_point(train_main, ["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--eval_size", "--eval_dataset", "--dataset", "--use_peft", "--resume_from_checkpoint"):
        assert flag in out


@pytest.mark.parametrize(
    "extra, words",
    [(["--eval_size", "2.5"], "--eval_size must be a whole number"),
     (["--eval_size", "3", "--eval_dataset", "x.jsonl"], "contradict each other"),
     (["--eval_strategy", "steps"], "needs held-out pairs")],
)
def test_bad_options_are_one_line(tmp_path, capsys, extra, words):
    argv = ["--model_name_or_path", "nowhere", "--dataset", "d.jsonl", "--output_dir", str(tmp_path / "o"), *extra]
    with pytest.raises(SystemExit) as caught:
        run_entry_point(train_main, argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err


def test_a_three_label_base_is_refused_before_loading(zoo, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    argv = ["--model_name_or_path", str(zoo["three"]), "--dataset", str(data), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as caught:
        run_entry_point(train_main, argv)
    err = capsys.readouterr().err.strip()
    assert caught.value.code == 2 and "\n" not in err and "3 labels" in err and "reward model base" in err


def test_lora_run_resumes_and_saves_a_reward_model(tmp_path):
    """LoRA, checkpoints and --resume_from_checkpoint are the shared Trainer conventions: a LoRA run stopped
    at step 2 and resumed to step 4 saves a merged 1-label classifier the judge loader takes."""
    from transformers import AutoModelForSequenceClassification

    base = build_tiny_lm(tmp_path / "base", seed=0)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _pairs(32, seed=3)))
    out = tmp_path / "out"
    common = ["--model_name_or_path", str(base), "--dataset", str(data), "--output_dir", str(out),
              "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.0",
              "--learning_rate", "1e-2", "--warmup_steps", "0", "--per_device_train_batch_size", "8",
              "--save_steps", "2", "--report_to", "none", "--use_cpu", "true", "--seed", "0"]
    train_main([*common, "--max_steps", "2"])
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    train_main([*common, "--max_steps", "4", "--resume_from_checkpoint", "true"])
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForSequenceClassification.from_pretrained(out)
    assert merged.config.num_labels == 1 and merged.config.problem_type == "regression"
    assert load_judge(str(out)).kind == "reward_model"


def test_without_a_chat_template_the_preference_model_layout_is_used(trained, tmp_path):
    """A tokenizer with no chat template: the judge reads 'Prompt: …\\n\\nResponse: …' with the
    tokenizer's special tokens, as the preference model reads its pair text; training renders alike."""
    import shutil

    from transformers import AutoTokenizer

    from lm_runs.train_reward_model import tokenize_reward_pairs

    folder = tmp_path / "plain"
    shutil.copytree(trained[0], folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    judge = RewardModelJudge(folder)
    assert not judge.templated and not judge.tokenizer.chat_template
    ids = judge.tokenizer("Prompt: why\n\nResponse: red fish", add_special_tokens=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reward = float(judge.model(input_ids=ids).logits[0, 0])
    assert judge.rewards(["why"], ["red fish"])[0] == pytest.approx(reward, abs=1e-5)
    assert judge.identity()["files"] != RewardModelJudge(trained[0]).identity()["files"]
    # a message-list prompt is trained on as the judge will be asked: the text of its turns
    import datasets

    table = datasets.Dataset.from_list([{"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "why"}],
                                         "chosen": "red fish", "rejected": "blue"}])
    rows = tokenize_reward_pairs(table, AutoTokenizer.from_pretrained(trained[0]), None)
    assert rows[0]["chosen_input_ids"] == RewardModelJudge(trained[0]).tokenizer(
        "User: be brief\nwhy\nAssistant: red fish<|endoftext|>\n", add_special_tokens=False)["input_ids"]


def test_the_server_scores_responses_once_across_requests(trained):
    """Two requests merged by the server's batching worker into one judge call: the reward model scores
    the distinct responses of both in one forward pass (3 texts, not 3 + 2 in two passes)."""
    from lm_runs.judge_server import BatchingWorker

    judge = load_judge(str(trained[0]))
    rows: list[int] = []
    handle = judge.inner.model.register_forward_hook(lambda m, a, k, o: rows.append(k["input_ids"].shape[0]), with_kwargs=True)
    worker = BatchingWorker(judge, name="rm", max_batch_size=64, max_wait_ms=500)
    try:
        first = worker.submit(["p", "p"], [["x y", "a b c"], ["x y", "red fish"]], shuffle_order=True)
        second = worker.submit(["p"], [["a b c", "red fish"]], shuffle_order=True)
        answers = first.result(timeout=60) + second.result(timeout=60)
    finally:
        worker.stop()
        handle.remove()
    assert rows == [3]
    assert answers == pytest.approx(judge(["p"] * 3, [["x y", "a b c"], ["x y", "red fish"], ["a b c", "red fish"]]), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# the trainer with a reward-model judge: each rollout's responses scored once
# ---------------------------------------------------------------------------------------------

_TRAIN_WORDS = "cat dog bird fish sun moon".split()


def _seeing_trainer_class():
    """NLHFTrainer recording, per rollout, the texts judged (y, y′, z_k per prompt row, decoded as the
    trainer decodes them) and the wins it handed to the loss."""
    from lm_runs.trainer import NLHFTrainer

    class Seeing(NLHFTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen: list[dict] = []

        def _judge(self, samples):
            text = lambda c: self.processing_class.batch_decode(c.ids, skip_special_tokens=True)  # noqa: E731
            self.seen.append({"prompts": list(samples.prompts), "roles": [text(c) for c in samples.responses],
                              "opponents": {k: text(c) for k, c in samples.opponents.items()}})
            return super()._judge(samples)

        def _rollout(self, batch):
            rollout = super()._rollout(batch)
            self.seen[-1].update(wins_y=rollout["wins_y"].cpu().clone(), wins_yp=rollout["wins_yp"].cpu().clone())
            return rollout

    return Seeing


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"tell me about the {w}"}) + "\n" for w in _TRAIN_WORDS))
    return {"model": str(build_tiny_lm(root / "model", seed=3)), "prompts": str(prompts), "root": root}


def _train_with(policy, out, alg: str, judge, max_steps: int = 1):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_runs.config import NLHFConfig
    from lm_runs.data import load_prompts

    cfg = NLHFConfig(output_dir=str(out), model_name_or_path=policy["model"], prompts=policy["prompts"], alg=alg,
                     max_steps=max_steps, per_device_train_batch_size=3, samples_per_prompt=1, max_new_tokens=6,
                     learning_rate=1e-3, use_cpu=True, report_to="none", seed=0, save_strategy="no", disable_tqdm=True)
    trainer = _seeing_trainer_class()(
        model=AutoModelForCausalLM.from_pretrained(policy["model"]), args=cfg, judge=judge,
        train_dataset=load_prompts(policy["prompts"]), processing_class=AutoTokenizer.from_pretrained(policy["model"]),
        ref_model=AutoModelForCausalLM.from_pretrained(policy["model"]),
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize("alg", ["egpo", "oipo1", *(pytest.param(a, marks=pytest.mark.slow) for a in ("oipo2", "nashmd", "nashmdpg", "sppo"))])
def test_the_trainer_scores_each_rollouts_responses_once_and_forms_every_target_from_the_scores(trained, policy, tmp_path, alg):
    """One forward pass per rollout over its distinct responses — y, y′ and z per prompt (3 per prompt for
    EGPO, Online IPO 1, SPPO, Nash-MD; 2 for Online IPO 2's (y, y′) and Nash-MD-PG's (y, z)) — and every
    preference the loss receives is σ((r_a − r_b)/τ) of rewards computed here text by text (1e-6)."""
    from egpo_core.algorithms import get_algorithm
    from egpo_core.losses import regression_target

    tau = 0.5
    judge = load_judge(f"{trained[0]}?temperature={tau}", batch_size=64)  # 128 texts per pass: one pass a rollout
    rows: list[int] = []
    handle = judge.inner.model.register_forward_hook(lambda m, a, k, o: rows.append(k["input_ids"].shape[0]), with_kwargs=True)
    try:
        trainer = _train_with(policy, tmp_path, alg, judge)
    finally:
        handle.remove()
    algorithm = get_algorithm(alg)
    assert len(trainer.seen) == algorithm_rollouts(alg)
    reward = {}
    for seen in trainer.seen:
        n = len(seen["prompts"])
        texts = [*seen["roles"], *seen["opponents"].values()]
        distinct = {(p, t[i]) for t in texts for i, p in enumerate(seen["prompts"])}
        assert len(distinct) == len(texts) * n  # no two responses of a prompt coincide here
        for p, t in distinct:
            reward[(p, t)] = _by_hand(judge.inner, p, t)
    per_prompt = 2 if alg in ("oipo2", "nashmdpg") else 3
    assert rows == [per_prompt * 3] * len(trainer.seen)  # 3 prompts a rollout, each response once
    largest = 0.0
    for seen in trainer.seen:
        prompts, roles = seen["prompts"], seen["roles"]
        p = lambda i, a, b: 1.0 / (1.0 + math.exp(-(reward[(prompts[i], a)] - reward[(prompts[i], b)]) / tau))  # noqa: E731
        n = len(prompts)
        if algorithm.opponent_terms[0].source == "pair":
            hand_y = torch.tensor([[p(i, roles[0][i], roles[1][i])] for i in range(n)])
            hand_yp = torch.full((n, 1), 0.5)
        else:
            z = seen["opponents"][0]
            hand_y = torch.tensor([[p(i, roles[0][i], z[i])] for i in range(n)])
            hand_yp = torch.tensor([[p(i, roles[-1][i], z[i])] for i in range(n)]) if len(roles) > 1 else hand_y
        assert seen["wins_y"] == pytest.approx(hand_y, abs=1e-6)
        assert seen["wins_yp"] == pytest.approx(hand_yp, abs=1e-6)
        if algorithm.loss != "pg":
            target = regression_target(algorithm, seen["wins_y"], seen["wins_yp"], trainer.args.beta)
            assert target == pytest.approx(regression_target(algorithm, hand_y, hand_yp, trainer.args.beta), abs=1e-5)
        largest = max(largest, float((hand_y - 0.5).abs().max()))
    assert largest > 2e-3  # the rewards differ, far beyond the tolerance: the comparison means something


def algorithm_rollouts(alg: str) -> int:
    """Rollouts of one update: EGPO generates and judges twice (at θ_t and at θ_{t+½})."""
    return 2 if alg == "egpo" else 1


def test_a_preference_model_judge_keeps_its_pair_passes(zoo, policy, tmp_path):
    """The same trainer with a 2-label preference model: one pass row per judged pair (2 per prompt for
    EGPO: (y, z) and (y′, z)), where the reward model scores 3 responses."""
    judge = load_judge(str(zoo["pm"]), batch_size=64)
    rows: list[int] = []
    handle = judge.inner.model.register_forward_hook(lambda m, a, k, o: rows.append(k["input_ids"].shape[0]), with_kwargs=True)
    try:
        trainer = _train_with(policy, tmp_path, "egpo", judge)
    finally:
        handle.remove()
    assert len(trainer.seen) == 2 and rows == [2 * 3, 2 * 3]


# ---------------------------------------------------------------------------------------------
# calibration on held-out pairs: python -m lm_runs.calibrate_judge, lm_runs.judges.calibration
# ---------------------------------------------------------------------------------------------


def _write_pairs(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_calibration_of_the_reward_model_has_no_position_bias(trained, tmp_path):
    """The trained reward model on 40 fresh held-out pairs, both orders: accurate (≥ 0.8, as in training),
    mean P(chosen) above ½, and P(a≻b) + P(b≻a) − 1 = 0 for every pair (1e-6): no position bias, no
    verdict flipped by the order; the report on disk is the one returned."""
    from lm_runs.calibrate_judge import main as calibrate

    pairs = _write_pairs(tmp_path / "held_out.jsonl", _pairs(40, seed=123) + [{"prompt": "p", "chosen": "a b", "rejected": "a b"}])
    out = tmp_path / "report.json"
    report = calibrate(["--judge", str(trained[0]), "--pairs", str(pairs), "--out", str(out), "--both_orders"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["judge_kind"] == "reward_model" and report["pairs"] == 40 and report["left_out_ties"] == 1
    assert report["accuracy"] >= 0.8 and report["mean_p_chosen"] > 0.55
    both = report["both_orders"]
    assert abs(both["position_bias"]) < 1e-6 and both["position_bias_se"] < 1e-6 and both["order_flips"] == 0.0
    assert both["order_averaged"]["accuracy"] == report["accuracy"]
    assert both["order_averaged"]["mean_p_chosen"] == pytest.approx(report["mean_p_chosen"], abs=1e-6)
    assert sum(row["pairs"] for row in report["reliability"]) == 40
    softer = calibrate(["--judge", f"{trained[0]}?temperature=2", "--pairs", str(pairs), "--out", str(out)])
    assert softer["accuracy"] == report["accuracy"] and softer["mean_p_chosen"] < report["mean_p_chosen"] - 0.01
    assert "both_orders" not in softer


def test_calibration_finds_the_position_bias_of_a_biased_judge():
    """A judge that prefers the longer response (±¼) and adds ⅛ to whatever is shown first:
    P(a≻b) + P(b≻a) − 1 = ¼ on every pair; the pair of equal lengths flips its verdict with the order;
    the order-averaged answers lose the bias. (Binary fractions: every value below is exact.)"""
    from lm_runs.judges import CheckedJudge
    from lm_runs.judges.calibration import judge_calibration

    def longer_plus_first(prompts, completions):
        return [0.5 + 0.125 + 0.25 * ((len(a) > len(b)) - (len(a) < len(b))) for a, b in completions]

    chosen, rejected = ["long answer", "x", "ab"], ["short", "longer one", "cd"]
    report = judge_calibration(CheckedJudge(longer_plus_first), ["p"] * 3, chosen, rejected, both_orders=True)
    # p = 0.875, 0.375, 0.625 (chosen first); q = 0.375, 0.875, 0.625 (rejected first)
    assert report["both_orders"]["position_bias"] == pytest.approx(0.25, abs=1e-12)
    assert report["both_orders"]["position_bias_se"] == pytest.approx(0.0, abs=1e-12)
    assert report["mean_p_chosen"] == pytest.approx((0.875 + 0.375 + 0.625) / 3, abs=1e-12)
    assert report["accuracy"] == pytest.approx(2 / 3, abs=1e-12)
    assert report["both_orders"]["order_flips"] == pytest.approx(1 / 3, abs=1e-12)
    averaged = report["both_orders"]["order_averaged"]  # p̄ = 0.75, 0.25, 0.5
    assert averaged["mean_p_chosen"] == pytest.approx(0.5, abs=1e-12)
    assert averaged["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3, abs=1e-12)  # a tie at ½ counts half


def test_calibration_report_reliability_bins():
    from lm_runs.judges.calibration import calibration_report

    report = calibration_report([0.55, 0.45, 0.65, 0.95, 1.0, 0.0, 0.5])
    counts = [row["pairs"] for row in report["reliability"]]
    assert counts == [3, 1, 0, 0, 3]  # confidence max(p, 1 − p): .55 .55 .5 | .65 | — | — | .95 1 1
    assert report["reliability"][0]["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3, abs=1e-12)
    assert report["reliability"][4]["mean_confidence"] == pytest.approx((0.95 + 1 + 1) / 3, abs=1e-12)
    assert report["reliability"][4]["accuracy"] == pytest.approx(2 / 3, abs=1e-12)
    assert report["brier"] == pytest.approx(sum((1 - p) ** 2 for p in [0.55, 0.45, 0.65, 0.95, 1.0, 0.0, 0.5]) / 7, abs=1e-12)
    with pytest.raises(ValueError, match="one answer per pair"):
        calibration_report([0.5, 0.6], [0.5])


def test_calibrate_judge_with_a_callable_judge_spec(tmp_path, capsys):
    from lm_runs.calibrate_judge import main as calibrate

    pairs = _write_pairs(tmp_path / "p.jsonl", [{"prompt": [{"role": "user", "content": "q"}], "chosen": "ok", "rejected": "much longer"}])
    report = calibrate(["--judge", "lm_runs.judges.toy:prefer_shorter", "--pairs", str(pairs), "--out", str(tmp_path / "r.json")])
    assert report["judge_kind"] == "callable" and report["accuracy"] == 1.0
    assert report["mean_p_chosen"] == pytest.approx(0.5 + 9 / (2 * 14), abs=1e-12)
    assert "accuracy 1.0000" in capsys.readouterr().out


def test_calibrate_judge_help_runs(capsys):
    from lm_runs.calibrate_judge import main as calibrate

    with pytest.raises(SystemExit) as caught:
        calibrate(["--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--judge", "--pairs", "--out", "--both_orders", "temperature"):
        assert flag in text


@pytest.mark.parametrize(
    "change, words",
    [({"--judge": "no/such/folder"}, "not an existing directory"),
     ({"--pairs": "missing.jsonl"}, "missing.jsonl"),
     ({"--out": "no_folder/r.json"}, "does not exist"),
     ({"--judge_batch_size": "0"}, "--judge_batch_size must be >= 1, got 0"),
     ({"--pairs": "nocolumn.jsonl"}, "missing column(s) ['rejected']"),
     ({"--pairs": "empty_text.jsonl"}, "'chosen' must be a non-empty string")],
)
def test_calibrate_judge_bad_input_is_one_line_before_any_model_loads(zoo, tmp_path, monkeypatch, capsys, change, words):
    import lm_runs.judges.loader as loader
    from lm_runs.calibrate_judge import main as calibrate

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loader, "load_judge", lambda *a, **k: pytest.fail("a judge was loaded"))
    _write_pairs(tmp_path / "ok.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    _write_pairs(tmp_path / "nocolumn.jsonl", [{"prompt": "p", "chosen": "a"}])
    _write_pairs(tmp_path / "empty_text.jsonl", [{"prompt": "p", "chosen": " ", "rejected": "b"}])
    flags = {"--judge": str(zoo["pm"]), "--pairs": "ok.jsonl", "--out": "r.json", **change}
    with pytest.raises(SystemExit) as caught:
        run_entry_point(calibrate, [x for pair in flags.items() for x in pair])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Generating train split" not in line]  # datasets' bar
    assert caught.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------------------------
# the judge server's score route
# ---------------------------------------------------------------------------------------------


def test_the_server_scores_responses_as_the_in_process_judge(trained, zoo):
    """POST /v1/scores: the served reward model's scores equal the in-process judge's (1e-6), each distinct
    response scored once (forward rows counted), /health names the kind and τ, pairs formed from the scores
    equal the server's pair answers; a preference-model server refuses the route with 404 naming its kind."""
    import httpx

    from lm_runs.judge_server import create_app, serve_in_thread
    from lm_runs.judges.http import HTTPJudge
    from lm_runs.judges.reward_model import scorer_of

    local = load_judge(f"{trained[0]}?temperature=0.5")
    rows = _pairs(6, seed=11)
    prompts = [row["prompt"] for row in rows] * 2
    responses = [row["chosen"] for row in rows] + [row["rejected"] for row in rows]
    expected = local.inner.rewards(prompts, responses)
    served = load_judge(f"{trained[0]}?temperature=0.5")
    passes: list[int] = []
    handle = served.inner.model.register_forward_hook(lambda m, a, k, o: passes.append(k["input_ids"].shape[0]), with_kwargs=True)
    try:
        with serve_in_thread(create_app(served, max_batch_size=64, max_wait_ms=1)) as server:
            health = httpx.get(f"{server.url}/health").json()
            client = load_judge(server.url)
            scorer = scorer_of(client)
            scores = scorer.rewards(prompts + prompts[:3], responses + responses[:3])  # 3 repeated: scored once
            pairs = client(prompts[:6], [[a, b] for a, b in zip(responses[:6], responses[6:])])
            client.close()
    finally:
        handle.remove()
    assert health["judge_kind"] == "reward_model" and health["temperature"] == 0.5
    assert scorer is client.inner and scorer.temperature == 0.5
    assert scores == pytest.approx(expected + expected[:3], abs=1e-6)
    assert passes[0] == 12  # the score request: 12 distinct responses in one pass, the 3 repeats not rescored
    assert pairs == pytest.approx([bradley_terry(a, b, 0.5) for a, b in zip(scores[:6], scores[6:12])], abs=1e-6)
    with serve_in_thread(create_app(load_judge(str(zoo["pm"])), max_wait_ms=1)) as server:
        refused = httpx.post(f"{server.url}/v1/scores", json={"prompts": ["p"], "responses": ["a"]})
        with HTTPJudge(server.url) as other:
            assert not other.scores_responses() and scorer_of(CheckedJudge(other)) is None
    assert refused.status_code == 404 and "preference_model" in refused.json()["error"]


@pytest.mark.parametrize(
    "body, words",
    [({"prompts": ["p"], "responses": ["a", "b"]}, "'prompts' has 1 items but 'responses' has 2"),
     ({"prompts": ["p"], "responses": [1]}, "'responses[0]' must be a string, got number"),
     ({"prompts": ["p"]}, "missing field 'responses'"),
     ({"prompts": [], "responses": []}, "send at least one response")],
)
def test_bad_score_requests_are_refused(body, words):
    from lm_runs.judges.protocol import ProtocolError, parse_score_request

    with pytest.raises(ProtocolError, match=re.escape(words)) as caught:
        parse_score_request(json.dumps(body).encode())
    assert caught.value.status == 400


def test_training_and_judging_read_the_same_tokens_through_the_models_own_chat_template(trained):
    """The chat template is the base tokenizer's, saved with the trained model and read back by the judge;
    the token ids train_reward_model trains on equal, row for row, those the judge's forward pass reads
    (the judge used by the trainer, the evaluation and the server alike), for plain and message-list prompts."""
    import datasets
    from transformers import AutoTokenizer

    from lm_runs.train_reward_model import PAIR_COLUMNS, tokenize_reward_pairs

    base = AutoTokenizer.from_pretrained(trained[0].parent / "base")
    judge = RewardModelJudge(trained[0], batch_size=64)
    assert base.chat_template and judge.tokenizer.chat_template == base.chat_template and judge.templated
    rows = _pairs(3, seed=21)
    rows.append({"prompt": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "why"}],
                 "chosen": "happy fish", "rejected": "sad dog"})
    plain, chat = datasets.Dataset.from_list(rows[:3]), datasets.Dataset.from_list(rows[3:])  # one prompt type a table
    trained_on = [tokenize_reward_pairs(table, base, None) for table in (plain, chat)]
    read: list[list[int]] = []

    def hook(module, args, kwargs, output):
        for ids, mask in zip(kwargs["input_ids"], kwargs["attention_mask"]):
            read.append(ids[mask.bool()].tolist())

    handle = judge.model.register_forward_hook(hook, with_kwargs=True)
    try:
        from lm_runs.data import prompt_text

        prompts = [prompt_text(r["prompt"]) for r in rows]
        judge.rewards(prompts + prompts, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
    finally:
        handle.remove()
    expected = [ids for table in trained_on for column in PAIR_COLUMNS for ids in table[column]]
    assert sorted(read) == sorted(expected) and len(read) == 2 * len(rows)
