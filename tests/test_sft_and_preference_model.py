"""lm_runs.sft and lm_runs.train_preference_model on tiny local models (CPU, a few seconds each)."""

from __future__ import annotations

import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments  # noqa: E402

from lm_runs import sft  # noqa: E402
from lm_runs.cli import parse_config  # noqa: E402
from lm_runs.data import encode_prompt, render_prompt  # noqa: E402
from lm_runs.tiny import build_tiny_lm  # noqa: E402

PROMPTS = [
    "tell me about the cat", "why is the sun red", "write a poem about water", "who eats the fish",
    "how big is the moon", "explain the tree please", "what is a star", "tell me a story about the dog",
]
ANSWER = " the cat sleeps"
COMMON = ["--report_to", "none", "--use_cpu", "true", "--save_strategy", "no", "--disable_tqdm", "true",
          "--logging_steps", "1000", "--seed", "0", "--dataloader_num_workers", "0"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def tiny_lm_pad_is_eos(tmp_path_factory):
    """The tiny LM with a tokenizer whose pad token IS the EOS token (as for many hub models)."""
    path = build_tiny_lm(tmp_path_factory.mktemp("tiny_lm_pad_eos"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(path)
    reloaded = AutoTokenizer.from_pretrained(path)
    assert reloaded.pad_token_id == reloaded.eos_token_id
    return path


def completion_logprobs(model, tokenizer, prompt, completion):
    """Per-token log-probabilities of ``completion`` + EOS after the rendered prompt."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    target = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + target])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    positions = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
    return logp[positions, torch.tensor(target)]


# ------------------------------------------------------------------------------------------ SFT


def test_lora_arguments_alone_and_their_checks():
    """LoraArguments works as a dataclass of its own (HfArgumentParser with several dataclasses) and
    refuses a bad rank, α or dropout with one message naming the flag."""
    from lm_runs.lora import LoraArguments, lora_config

    (lora,) = parse_config([LoraArguments], ["--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "all-linear"])
    assert (lora.use_peft, lora.lora_r, lora.lora_alpha) == (True, 4, 32)
    peft_config = lora_config(lora, "CAUSAL_LM")
    assert (peft_config.r, peft_config.lora_alpha, peft_config.target_modules) == (4, 32, "all-linear")
    for flags, message in [({"lora_r": 0}, "--lora_r"), ({"lora_alpha": 0}, "--lora_alpha"), ({"lora_dropout": 1.0}, "--lora_dropout")]:
        with pytest.raises(ValueError, match=message):
            LoraArguments(**flags)


REQUIRED = ["--output_dir", "x", "--model_name_or_path", "m", "--dataset", "d.jsonl"]


def test_sft_config_defaults_and_help():
    (config,) = parse_config([sft.SFTConfig], REQUIRED)
    assert config.learning_rate == 1e-5 and config.num_train_epochs == 5
    assert config.weight_decay == 0.1 and config.warmup_steps == 100 and config.max_length == 512
    assert config.use_peft is False and config.lora_target_modules is None
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = [f for f in dataclasses.fields(sft.SFTConfig) if f.name not in base]
    assert {f.name for f in own} >= {"model_name_or_path", "dataset", "max_length", "use_peft", "lora_r",
                                     "lora_alpha", "lora_dropout", "lora_target_modules"}
    for f in dataclasses.fields(sft.SFTConfig):
        if f.name not in base or f.name in ("learning_rate", "num_train_epochs", "weight_decay", "warmup_steps"):
            assert f.metadata.get("help"), f.name
    (config,) = parse_config([sft.SFTConfig], [*REQUIRED, "--lora_target_modules", "q_proj", "v_proj"])
    assert config.lora_target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_sft_labels_mask_prompt_and_padding_by_position(tiny_lm, tiny_lm_pad_is_eos, pad_is_eos):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_pad_is_eos if pad_is_eos else tiny_lm)
    assert (tokenizer.pad_token_id == tokenizer.eos_token_id) is pad_is_eos
    eos = tokenizer.eos_token_id
    examples = [("cat", " the cat sleeps"), ("tell me a long story about the big red dog", " no")]
    rows = [sft.sft_example(tokenizer, p, c, max_length=None) for p, c in examples]
    batch = sft.SFTCollator(tokenizer.pad_token_id)(rows)
    width = batch["input_ids"].shape[1]
    for i, (prompt, completion) in enumerate(examples):
        prompt_ids = encode_prompt(tokenizer, prompt)
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [eos]
        n = len(prompt_ids) + len(completion_ids)
        pad = width - n
        assert batch["input_ids"][i].tolist() == prompt_ids + completion_ids + [tokenizer.pad_token_id] * pad
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * pad
        assert batch["labels"][i].tolist() == [-100] * len(prompt_ids) + completion_ids + [-100] * pad
        assert batch["labels"][i, n - 1] == eos  # the EOS is learned, even when it is also the pad id
    assert tokenizer.decode(rows[0]["input_ids"]) == render_prompt(tokenizer, "cat") + ANSWER + tokenizer.eos_token
    # Right truncation keeps the prompt and the start of the completion; a prompt filling max_length is dropped.
    n_prompt = len(encode_prompt(tokenizer, "cat"))
    cut = sft.sft_example(tokenizer, "cat", " the cat sleeps", max_length=n_prompt + 1)
    assert len(cut["input_ids"]) == n_prompt + 1 and cut["labels"][:n_prompt] == [-100] * n_prompt
    assert cut["labels"][-1] != -100 and cut["labels"][-1] != eos
    assert sft.sft_example(tokenizer, "cat", " the cat sleeps", max_length=n_prompt) is None


def test_sft_dataset_from_messages_and_errors(tiny_lm, tmp_path):
    import datasets

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    conversations = [
        [{"role": "user", "content": "cat"}, {"role": "assistant", "content": ANSWER}],
        [{"role": "system", "content": "be happy"}, {"role": "user", "content": "dog"},
         {"role": "assistant", "content": " yes"}],
    ]
    built = sft.build_sft_dataset(datasets.Dataset.from_dict({"messages": conversations}), tokenizer, 512)
    expected = sft.sft_example(tokenizer, conversations[1][:2], " yes")
    assert built[1]["input_ids"] == expected["input_ids"] and built[1]["labels"] == expected["labels"]
    with pytest.raises(ValueError, match=r"columns: \['text'\]"):
        sft.build_sft_dataset(datasets.Dataset.from_dict({"text": ["x"]}), tokenizer, 512)
    with pytest.raises(ValueError, match="row 1: a conversation .* must end with an assistant message"):
        sft.build_sft_dataset(datasets.Dataset.from_dict({"messages": [conversations[0], conversations[1][:2]]}),
                              tokenizer, 512)
    with pytest.raises(ValueError, match="row 1: empty completion"):
        sft.build_sft_dataset(datasets.Dataset.from_dict({"prompt": ["a", "b"], "completion": ["x", ""]}),
                              tokenizer, 512)
    with pytest.raises(ValueError, match="row 0: empty prompt string"):
        sft.build_sft_dataset(datasets.Dataset.from_dict({"prompt": [""], "completion": ["x"]}), tokenizer, 512)


def test_sft_weight_decay_in_optimizer_groups(tiny_lm, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": p, "completion": ANSWER} for p in PROMPTS])
    (config,) = parse_config([sft.SFTConfig], ["--model_name_or_path", str(tiny_lm), "--dataset", data,
                                               "--output_dir", str(tmp_path / "out"), *COMMON])
    trainer = sft.build_trainer(config)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    no_decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert decay and no_decay and decay | no_decay == set(names.values())
    assert "transformer.h.0.attn.c_attn.weight" in decay and "transformer.h.1.mlp.c_fc.weight" in decay
    assert all(not n.endswith(".bias") and "ln_" not in n for n in decay)
    assert "transformer.h.0.attn.c_attn.bias" in no_decay and "transformer.ln_f.weight" in no_decay


def test_sft_warns_about_deepspeed_optimizer_block(tmp_path, caplog):
    from lm_runs.launcher import warn_deepspeed_optimizer

    args = TrainingArguments(output_dir=str(tmp_path), weight_decay=0.1)
    assert warn_deepspeed_optimizer(args) is False
    args.deepspeed = {"optimizer": {"type": "AdamW", "params": {"weight_decay": 0.1}}, "zero_optimization": {}}
    with caplog.at_level("WARNING", logger="lm_runs.launcher"):
        assert warn_deepspeed_optimizer(args) is True
    assert "optimizer" in caplog.text
    args.deepspeed = {"zero_optimization": {"stage": 2}}
    assert warn_deepspeed_optimizer(args) is False


def test_sft_run_teaches_the_completion_and_its_eos(tiny_lm_pad_is_eos, tmp_path):
    """pad = EOS: the trained model must still learn to emit EOS after the answer."""
    data = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": p, "completion": ANSWER} for p in PROMPTS])
    out = tmp_path / "sft_out"
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_pad_is_eos)
    held_out = "what does the bird eat"
    before_model = AutoModelForCausalLM.from_pretrained(tiny_lm_pad_is_eos)
    before = completion_logprobs(before_model, tokenizer, held_out, ANSWER)
    sft.main(["--model_name_or_path", str(tiny_lm_pad_is_eos), "--dataset", data, "--output_dir", str(out),
              "--learning_rate", "3e-3", "--max_steps", "40", "--warmup_steps", "0", "--weight_decay", "0.0",
              "--per_device_train_batch_size", "8", "--lr_scheduler_type", "constant", *COMMON])
    assert (out / "model.safetensors").is_file()
    trained = AutoModelForCausalLM.from_pretrained(out)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out)
    assert reloaded_tokenizer.pad_token_id == reloaded_tokenizer.eos_token_id
    after = completion_logprobs(trained, reloaded_tokenizer, held_out, ANSWER)
    assert after.sum() > before.sum() + 10.0
    assert after[-1] > before[-1] + 2.0
    assert after[-1].exp() > 0.5, f"P(EOS after the answer) = {after[-1].exp():.3f}"
    assert after.exp().min() > 0.5


def test_sft_lora_run_saves_a_merged_model(tiny_lm, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": p, "completion": ANSWER} for p in PROMPTS])
    out = tmp_path / "lora_out"
    sft.main(["--model_name_or_path", str(tiny_lm), "--dataset", data, "--output_dir", str(out),
              "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.0",
              "--learning_rate", "1e-2", "--max_steps", "3", "--warmup_steps", "0",
              "--per_device_train_batch_size", "4", *COMMON])
    assert not (out / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    merged = AutoModelForCausalLM.from_pretrained(out)
    w0 = base.transformer.h[0].attn.c_attn.weight
    w1 = merged.transformer.h[0].attn.c_attn.weight
    assert not torch.allclose(w0, w1)                 # the adapter was merged into c_attn
    assert torch.equal(base.transformer.wte.weight, merged.transformer.wte.weight)  # nothing else trained


# ------------------------------------------------------------------------------- preference model

from lm_runs import train_preference_model as tpm  # noqa: E402
from lm_runs.judges.pair_format import render_pair  # noqa: E402


def preference_rows(count, seed, chosen="yes yes yes", rejected="no no no"):
    import random

    rng = random.Random(seed)
    words = "the a cat dog bird fish runs jumps sleeps eats red blue green small big fast slow".split()
    return [{"prompt": " ".join(rng.choice(words) for _ in range(rng.randint(2, 6))), "chosen": chosen,
             "rejected": rejected} for _ in range(count)]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_pm"), num_labels=2)


def test_preference_config_defaults():
    (config,) = parse_config([tpm.PreferenceModelConfig], REQUIRED)
    assert config.learning_rate == 1e-5 and config.num_train_epochs == 3 and config.weight_decay == 0.1
    assert config.warmup_steps == 1000 and config.max_length == 1024 and config.use_peft is False
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    for f in dataclasses.fields(tpm.PreferenceModelConfig):
        if f.name not in base:
            assert f.metadata.get("help"), f.name


def test_pair_dataset_has_both_orders_with_labels():
    import datasets

    table = datasets.Dataset.from_dict({
        "prompt": ["why is the sun red", "p2", "tell me about the cat"],
        "chosen": ["because", "same", "it sleeps"],
        "rejected": ["no idea", "same", "it is a dog"],  # row 1 is a tie: left out
        "extra": [1, 2, 3],
    })
    pairs = tpm.build_pair_dataset(table)
    assert len(pairs) == 4
    assert pairs["label"] == [0, 1, 0, 1]
    assert pairs["text"] == [
        render_pair("why is the sun red", "because", "no idea"),
        render_pair("why is the sun red", "no idea", "because"),
        render_pair("tell me about the cat", "it sleeps", "it is a dog"),
        render_pair("tell me about the cat", "it is a dog", "it sleeps"),
    ]
    assert pairs["text"][0].index("Response 0: because") < pairs["text"][0].index("Response 1: no idea")
    # A message-list prompt is shown to the model as the judge's prompt text.
    chat = datasets.Dataset.from_dict({"prompt": [[{"role": "system", "content": "be brief"},
                                                   {"role": "user", "content": "tell me about the cat"}]],
                                       "chosen": ["it sleeps"], "rejected": ["it is a dog"]})
    assert tpm.build_pair_dataset(chat)["text"] == [
        render_pair("be brief\ntell me about the cat", "it sleeps", "it is a dog"),
        render_pair("be brief\ntell me about the cat", "it is a dog", "it sleeps"),
    ]


def test_pair_dataset_errors_and_length_filter(tiny_classifier):
    import datasets

    with pytest.raises(ValueError, match=r"missing column\(s\) \['rejected'\]; columns: \['prompt', 'chosen'\]"):
        tpm.build_pair_dataset(datasets.Dataset.from_dict({"prompt": ["p"], "chosen": ["a"]}))
    with pytest.raises(ValueError, match=r"row 1: 'rejected' must be a non-empty string"):
        tpm.build_pair_dataset(datasets.Dataset.from_dict({"prompt": ["p", "q"], "chosen": ["a", "b"],
                                                           "rejected": ["c", " "]}))
    with pytest.raises(ValueError, match=r"row 0: empty prompt string"):
        tpm.build_pair_dataset(datasets.Dataset.from_dict({"prompt": [""], "chosen": ["a"], "rejected": ["b"]}))
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier)
    pairs = tpm.build_pair_dataset(datasets.Dataset.from_dict({
        "prompt": ["cat", "cat"], "chosen": ["yes", "yes " * 60], "rejected": ["no", "no"]}))
    short = len(tokenizer(pairs["text"][0])["input_ids"])
    tokenized = tpm.tokenize_pairs(pairs, tokenizer, max_length=short + 2)
    assert tokenized["labels"] == [0, 1]  # the long pair is left out in both orders
    assert tokenized["input_ids"][0] == tokenizer(pairs["text"][0])["input_ids"]
    batch = tpm.PairCollator(tokenizer.pad_token_id)([tokenized[0], tokenized[1]])
    assert batch["labels"].tolist() == [0, 1]
    assert batch["attention_mask"].sum(dim=1).tolist() == [len(ids) for ids in tokenized["input_ids"]]
    with pytest.raises(ValueError, match="no pair text fits in max_length=3"):
        tpm.tokenize_pairs(pairs, tokenizer, max_length=3)


def test_preference_model_learns_the_preference_in_both_orders(tiny_classifier, tmp_path):
    from lm_runs.judges import PreferenceModelJudge

    data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(256, seed=0))
    out = tmp_path / "pm_out"
    tpm.main(["--model_name_or_path", str(tiny_classifier), "--dataset", data, "--output_dir", str(out),
              "--learning_rate", "2e-3", "--max_steps", "100", "--warmup_steps", "0", "--weight_decay", "0.0",
              "--per_device_train_batch_size", "16", "--lr_scheduler_type", "constant", *COMMON])
    assert (out / "model.safetensors").is_file()
    judge = PreferenceModelJudge(out, device="cpu", shuffle_order=False)
    assert judge.model.config.num_labels == 2 and judge.model.config.pad_token_id == judge.tokenizer.pad_token_id
    held_out = preference_rows(50, seed=1)  # prompts unseen in training
    prompts = [r["prompt"] for r in held_out]
    first_chosen = judge(prompts, [(r["chosen"], r["rejected"]) for r in held_out])
    second_chosen = judge(prompts, [(r["rejected"], r["chosen"]) for r in held_out])
    # The tiny model gets a stray held-out prompt wrong now and then (about 1 in 100): judge by the
    # share of correct calls in each order — a position bias or swapped labels would fail one order outright.
    assert sum(p > 0.5 for p in first_chosen) >= 45, first_chosen
    assert sum(p < 0.5 for p in second_chosen) >= 45, second_chosen
    assert sum(first_chosen) / 50 > 0.85 and sum(second_chosen) / 50 < 0.15


def test_preference_model_lora_run_saves_a_plain_classifier(tiny_classifier, tmp_path):
    from transformers import AutoModelForSequenceClassification

    data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(16, seed=0))
    out = tmp_path / "pm_lora"
    tpm.main(["--model_name_or_path", str(tiny_classifier), "--dataset", data, "--output_dir", str(out),
              "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.0",
              "--learning_rate", "1e-2", "--max_steps", "3", "--warmup_steps", "0",
              "--per_device_train_batch_size", "8", *COMMON])
    assert not (out / "adapter_config.json").exists()
    base = AutoModelForSequenceClassification.from_pretrained(tiny_classifier)
    merged = AutoModelForSequenceClassification.from_pretrained(out)
    assert merged.config.num_labels == 2
    assert not torch.allclose(base.score.weight, merged.score.weight)  # the head is trained with LoRA
    assert not torch.allclose(base.transformer.h[0].attn.c_attn.weight, merged.transformer.h[0].attn.c_attn.weight)
    assert torch.equal(base.transformer.wte.weight, merged.transformer.wte.weight)


def test_preference_model_held_out_report_is_the_judges_calibration(tiny_classifier, tmp_path):
    """eval_results.json's calibration keys equal the calibration computed by hand from the saved judge's
    P on the held-out pairs (the pairs --eval_size splits off, asked in both orders), to 1e-6."""
    import datasets
    import math

    from lm_runs.data import split_prompts
    from lm_runs.judges import PreferenceModelJudge

    rows = preference_rows(32, seed=0)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "pm_eval"
    tpm.main(["--model_name_or_path", str(tiny_classifier), "--dataset", data, "--output_dir", str(out),
              "--eval_size", "8", "--learning_rate", "2e-3", "--max_steps", "4", "--warmup_steps", "0",
              "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "3", *COMMON])
    results = json.loads((out / "eval_results.json").read_text())
    _, held_out = split_prompts(datasets.Dataset.from_list(rows), 8, seed=0)
    judge = PreferenceModelJudge(out, device="cpu", shuffle_order=False)
    p = judge(held_out["prompt"], list(zip(held_out["chosen"], held_out["rejected"])))
    q = judge(held_out["prompt"], list(zip(held_out["rejected"], held_out["chosen"])))
    assert results["eval_pairs"] == 8
    assert results["eval_mean_p_chosen"] == pytest.approx(sum(p) / 8, abs=1e-6)
    assert results["eval_brier"] == pytest.approx(sum((1 - v) ** 2 for v in p) / 8, abs=1e-6)
    assert results["eval_position_bias"] == pytest.approx(sum(a + b - 1 for a, b in zip(p, q)) / 8, abs=1e-6)
    assert results["eval_pair_accuracy"] == sum(1.0 if v > 0.5 else 0.5 if v == 0.5 else 0.0 for v in p) / 8
    loss = -sum(math.log(a) + math.log(1 - b) for a, b in zip(p, q)) / 16
    assert results["eval_loss"] == pytest.approx(loss, abs=1e-6)
    assert 0.0 < results["eval_brier"] < 1.0 and abs(results["eval_position_bias"]) > 1e-9  # not degenerate


@pytest.mark.parametrize(
    "extra, words",
    [(["--eval_size", "2.5"], "--eval_size must be a whole number"),
     (["--eval_size", "3", "--eval_dataset", "x.jsonl"], "contradict each other"),
     (["--eval_strategy", "steps"], "needs held-out pairs")],
)
def test_preference_model_bad_held_out_options_are_one_line(tmp_path, capsys, extra, words):
    from lm_runs.launcher import run_entry_point

    argv = ["--model_name_or_path", "nowhere", "--dataset", "d.jsonl", "--output_dir", str(tmp_path / "o"), *extra]
    with pytest.raises(SystemExit) as caught:
        run_entry_point(tpm.main, argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err
