"""lm_runs.train_nlhf.build_trainer: the one place an NLHFTrainer is built. The command line and an
in-process caller (the synthetic benchmark, bench_lm) get the same trainer from the same options: the
same losses and the same weights, bit for bit (the same computation on the same machine; issue 16's
"results unchanged")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import toy_judges
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from lm_runs.cli import parse_config
from lm_runs.config import NLHFConfig
from lm_runs.judges import CheckedJudge
from lm_runs.launcher import run_entry_point
from lm_runs.tiny import build_tiny_lm
from lm_runs.train_nlhf import build_trainer, main
from lm_runs.trainer import NLHFTrainer

WORDS = "cat dog bird fish sun moon star tree rock water fire stone".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_nlhf")
    model = build_tiny_lm(root / "model")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"tell me about the {w}"}) + "\n" for w in WORDS))
    return {"model": str(model), "prompts": str(prompts)}


def flags(tiny, out: Path, alg: str) -> list[str]:
    """Two updates of ``alg``, a loss logged every update and one checkpoint at the end (its
    ``trainer_state.json`` holds the logged losses)."""
    steps = 2 * (2 if alg == "egpo" else 1)  # optimizer steps of two updates
    return ["--alg", alg, "--model_name_or_path", tiny["model"], "--prompts", tiny["prompts"], "--output_dir", str(out),
            "--use_cpu", "true", "--report_to", "none", "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--max_new_tokens", "4", "--learning_rate", "1e-2", "--seed", "3", "--logging_steps", "1",
            "--save_strategy", "steps", "--save_steps", str(steps), "--disable_tqdm", "true"]


def logged_losses(log_history: list[dict]) -> list[float]:
    return [row["loss"] for row in log_history if "loss" in row]


@pytest.mark.parametrize("alg", ["egpo", "nashmd"])
def test_build_trainer_trains_as_the_command_line_does(tiny, tmp_path, alg):
    """``python -m lm_runs.train_nlhf --judge toy_judges:prefer_shorter`` against ``build_trainer`` with
    the same options and the judge as an in-process object: the same loss at every update (the first
    included) and the same final weights, and those weights moved away from the initial model."""
    cli_out = tmp_path / "cli"
    run_entry_point(main, flags(tiny, cli_out, alg) + ["--judge", "toy_judges:prefer_shorter"])
    (checkpoint,) = cli_out.glob("checkpoint-*")
    cli_losses = logged_losses(json.loads((checkpoint / "trainer_state.json").read_text())["log_history"])

    (config,) = parse_config([NLHFConfig], flags(tiny, tmp_path / "in_process", alg))
    trainer = build_trainer(config, judge=toy_judges.prefer_shorter)
    trainer.train()
    losses = logged_losses(trainer.state.log_history)

    assert len(cli_losses) == 2 and all(0.0 < loss < 1e3 for loss in cli_losses), cli_losses
    assert losses == cli_losses  # the first update's loss, then the second's
    cli_weights = load_file(cli_out / "model.safetensors")
    weights = {name: p.detach() for name, p in trainer.model.state_dict().items() if name in cli_weights}
    assert set(weights) == set(cli_weights) and all(torch.equal(weights[n], cli_weights[n]) for n in cli_weights)
    initial = load_file(Path(tiny["model"]) / "model.safetensors")
    moved = max(float((cli_weights[n] - initial[n]).abs().max()) for n in initial if n in cli_weights)
    assert moved > 1e-4  # training changed the weights (at lr 1e-2 Adam moves each by about that much)


def test_build_trainer_options(tiny, tmp_path):
    """An in-process judge is wrapped in CheckedJudge (kept when it is one already); callbacks reach the
    trainer; trainer_class is built instead of NLHFTrainer; the tokenizer pads on the left; π_ref is a
    separate frozen copy."""

    class Subclass(NLHFTrainer):
        pass

    class Marker(TrainerCallback):
        pass

    (config,) = parse_config([NLHFConfig], flags(tiny, tmp_path / "out", "oipo1"))
    marker = Marker()
    trainer = build_trainer(config, judge=toy_judges.prefer_shorter, callbacks=[marker], trainer_class=Subclass)
    assert type(trainer) is Subclass and marker in trainer.callback_handler.callbacks
    assert isinstance(trainer.judge, CheckedJudge) and trainer.judge.inner is toy_judges.prefer_shorter
    assert trainer.processing_class.padding_side == "left"
    frozen = trainer.reference.frozen
    assert frozen is not None and frozen is not trainer.model and not any(p.requires_grad for p in frozen.parameters())
    checked = CheckedJudge(toy_judges.prefer_shorter)
    assert build_trainer(config, judge=checked).judge is checked


def test_build_trainer_needs_exactly_one_judge(tiny, tmp_path):
    """No judge, or both a spec and an object: one ValueError line naming the problem."""
    (config,) = parse_config([NLHFConfig], flags(tiny, tmp_path / "out", "oipo1"))
    with pytest.raises(ValueError, match="--judge is required"):
        build_trainer(config)
    (with_spec,) = parse_config([NLHFConfig], flags(tiny, tmp_path / "out", "oipo1") + ["--judge", "toy_judges:prefer_shorter"])
    with pytest.raises(ValueError, match="both given: name one judge"):
        build_trainer(with_spec, judge=toy_judges.prefer_shorter)
