"""Real faults: ``python -m lm_runs.train_nlhf --save_steps 1`` SIGKILLed at varied moments (while a
checkpoint is being written, while an ``epochs/epoch-k`` model is being written, between saves), then
resumed with ``--resume_from_checkpoint true`` until it finishes; the final model and every epoch model
must equal, bit for bit, those of the same run left alone.

After every kill the run folder must hold only complete results: each visible ``checkpoint-N`` has its
``trainer_state.json`` (and, for EGPO, its snapshot file), each visible ``epochs/epoch-k`` a non-empty
``config.json`` beside its weights. Before atomic saving, 6 of 10 kills of an EGPO run and 4 of 5 of an
Online IPO 1 run left a partial newest checkpoint that the resume then failed on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lm_runs.checkpoints import latest_checkpoint
from lm_runs.tiny import build_tiny_lm

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WORDS = "cat dog bird fish sun moon star tree rock water fire stone".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("kills")
    model = build_tiny_lm(root / "model")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"tell me about the {w}"}) + "\n" for w in WORDS))
    return {"model": str(model), "prompts": str(prompts)}


def command(tiny, alg: str, out: Path) -> list[str]:
    """12 prompts, 4 per step, 2 epochs of updates, a checkpoint after every update: EGPO takes 12 optimizer
    steps (epoch-1 after 6; checkpoint-2, -4, …, -12), Online IPO 1 takes 6 (epoch-1 after 3; checkpoint-1, …, -6)."""
    return [sys.executable, "-m", "lm_runs.train_nlhf", "--alg", alg, "--model_name_or_path", tiny["model"],
            "--prompts", tiny["prompts"], "--judge", "lm_runs.judges.toy:prefer_vowels", "--output_dir", str(out),
            "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--seed", "5",
            "--per_device_train_batch_size", "4", "--num_train_epochs", "2", "--max_new_tokens", "5",
            "--learning_rate", "1e-2", "--save_steps", "1"]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


def assert_only_complete_results(out: Path, alg: str) -> None:
    """Visible checkpoints and epoch folders are complete (hidden .partial-* leftovers may remain)."""
    for checkpoint in out.glob("checkpoint-*"):
        assert (checkpoint / "trainer_state.json").is_file(), f"partial visible {checkpoint.name}"
        if alg == "egpo":
            assert (checkpoint / "extragradient_state_rank0.pt").is_file(), f"{checkpoint.name} without its snapshot"
    for epoch in (out / "epochs").glob("epoch-*"):
        config = epoch / "config.json"
        assert config.is_file() and config.stat().st_size > 0, f"{epoch.name} without a complete config.json"
        assert (epoch / "model.safetensors").is_file(), f"{epoch.name} without weights"


def partial(out: Path, pattern: str) -> bool:
    return any(out.glob(pattern))


def after_update(out: Path, alg: str, update: int) -> bool:
    """Whether the checkpoint of ``update`` is visible (checkpoint folders count optimizer steps: EGPO's
    update u is checkpoint-2u)."""
    return (out / f"checkpoint-{update * (2 if alg == 'egpo' else 1)}").is_dir()


# When to kill: a hidden checkpoint being written, an epoch model being written, a moment between saves.
MOMENTS = {
    "mid checkpoint save": lambda out, alg: partial(out, ".partial-checkpoint-*"),
    "mid epoch-model save": lambda out, alg: partial(out / "epochs", ".partial-epoch-*"),
    "after update 3's checkpoint, mid step": lambda out, alg: after_update(out, alg, 3),
    "after update 5's checkpoint + 0.15 s": lambda out, alg: after_update(out, alg, 5) and (time.sleep(0.15) or True),
}


def run_killed_at(tiny, alg: str, out: Path, moment: str) -> str:
    """Start (or resume) the run and SIGKILL it at ``moment``; returns what happened."""
    if latest_checkpoint(out):
        extra = ["--resume_from_checkpoint", "true"]
    elif out.is_dir() and any(out.iterdir()):
        extra = ["--overwrite_output_dir", "true"]  # killed before its first complete checkpoint
    else:
        extra = []
    process = subprocess.Popen(command(tiny, alg, out) + extra, cwd=ROOT, env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if MOMENTS[moment](out, alg):
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return f"killed {moment}"
        time.sleep(0.002)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    return "finished before the moment"


@pytest.mark.parametrize("alg", ["egpo", "oipo1"])
def test_sigkilled_runs_resume_to_the_uninterrupted_result(tiny, tmp_path, alg):
    straight = tmp_path / "straight"
    done = subprocess.run(command(tiny, alg, straight), cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "killed"
    outcomes = []
    for moment in ["after update 3's checkpoint, mid step", "mid checkpoint save", "mid epoch-model save", "mid checkpoint save",
                   "after update 5's checkpoint + 0.15 s"]:
        outcomes.append(run_killed_at(tiny, alg, out, moment))
        assert_only_complete_results(out, alg)
    assert sum(o.startswith("killed") for o in outcomes) >= 3, outcomes
    resumed = subprocess.run(command(tiny, alg, out) + ["--resume_from_checkpoint", "true"], cwd=ROOT, env=environment(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_only_complete_results(out, alg)

    final, expected = weights(out), weights(straight)
    assert final.keys() == expected.keys() and all((final[k] == expected[k]).all() for k in final), outcomes
    for k in (1, 2):
        a, b = weights(out / "epochs" / f"epoch-{k}"), weights(straight / "epochs" / f"epoch-{k}")
        assert all((a[n] == b[n]).all() for n in a), f"epoch-{k} differs; {outcomes}"
    print(alg, outcomes)
