"""The SFT and preference-model commands as a user meets them: --help, bad input refused in one line with
exit status 2 before any model loads, and a save-heavy run SIGKILLed at varied moments that resumes from
the latest complete checkpoint and ends bit for bit where the uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

from safetensors.torch import load_file  # noqa: E402

from lm_runs import sft  # noqa: E402
from lm_runs import train_preference_model as tpm  # noqa: E402
from lm_runs.checkpoints import is_complete_checkpoint, latest_checkpoint  # noqa: E402
from lm_runs.launcher import run_entry_point  # noqa: E402
from lm_runs.tiny import build_tiny_lm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--logging_steps", "1000",
          "--seed", "0", "--dataloader_num_workers", "0", "--per_device_train_batch_size", "4",
          "--learning_rate", "1e-3", "--warmup_steps", "0"]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("entry")
    words = "the cat dog sleeps runs red blue big small".split()
    return {
        "lm": str(build_tiny_lm(root / "lm")),
        "classifier3": str(build_tiny_lm(root / "c3", num_labels=3)),
        "pm": str(build_tiny_lm(root / "pm", num_labels=2)),
        "sft": write_jsonl(root / "sft.jsonl", [{"prompt": f"tell me about the {words[i % 9]} {i}",
                                                 "completion": f" the {words[(i * 5) % 9]} sleeps"} for i in range(24)]),
        "pairs": write_jsonl(root / "pairs.jsonl", [{"prompt": f"p {i}", "chosen": "yes yes", "rejected": "no"}
                                                    for i in range(8)]),
        "root": root,
    }


# --------------------------------------------------------------------------------------------- --help


HELP_EXPECTED = {"lm_runs.sft": ("--config FILE.yaml",), "lm_runs.train_preference_model": ("--config FILE.yaml",),
                 "lm_runs.train_reward_model": ("--eval_size",), "lm_runs.tiny": ("--num_labels",),
                 "lm_runs.evaluate": ("--both_orders", "95-percent", "--judge_timeout"),
                 "lm_runs.calibrate_judge": ("--both_orders", "--pairs")}
TRAINER_ENTRY_POINTS = ("lm_runs.sft", "lm_runs.train_preference_model", "lm_runs.train_reward_model")
# One interpreter runs every module as `python -m MODULE --help` would (runpy, __main__), each help text
# between markers: four interpreter starts (≈ 7 s apiece) cost one.
HELP_SCRIPT = """
import contextlib, io, runpy, sys
for module in sys.argv[1:]:
    sys.argv = [module, "--help"]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = None
        except SystemExit as done:
            code = done.code
    print(f"=== {module} exit={code}")
    print(text.getvalue())
"""


def test_help_runs():
    done = subprocess.run([sys.executable, "-c", HELP_SCRIPT, *HELP_EXPECTED], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    sections = done.stdout.split("=== ")[1:]
    assert [s.split(" ", 1)[0] for s in sections] == list(HELP_EXPECTED)
    for section, (module, expected) in zip(sections, HELP_EXPECTED.items()):
        header, text = section.split("\n", 1)
        assert header == f"{module} exit=0", header
        assert text.startswith("usage:") and all(e in text for e in expected), module
        if module in TRAINER_ENTRY_POINTS:
            flat = " ".join(text.split())
            assert "--overwrite_output_dir" in flat and "newest complete checkpoint-N" in flat, module


@pytest.mark.parametrize("source", ["lm_runs/sft.py", "lm_runs/train_preference_model.py", "lm_runs/train_reward_model.py",
                                    "lm_runs/cli.py",
                                    "lm_runs/configs/sft_qwen_paper.yaml",
                                    "lm_runs/configs/preference_model_gemma_paper.yaml"])
def test_config_files_named_in_docs_exist(source):
    """A preset or DeepSpeed file named in a docstring or a preset's comment exists (sft.py named a
    missing one)."""
    import re

    named = re.findall(r"lm_runs/configs/[\w.-]+\.(?:yaml|json)", (ROOT / source).read_text())
    for path in named:
        assert (ROOT / path).is_file(), f"{source} names {path}, which does not exist"


# ------------------------------------------------------------------------------------------ refusals


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any weight load fails the test: refusals must come before it."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    for name in ("AutoModelForCausalLM", "AutoModelForSequenceClassification"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", refuse)


def refusal(main, argv, capsys) -> str:
    started = time.perf_counter()
    with pytest.raises(SystemExit) as caught:
        run_entry_point(main, argv)
    assert time.perf_counter() - started < 20.0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert caught.value.code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def sft_cases(tiny, tmp_path):
    (tmp_path / "a_file").write_text("x")
    run = tmp_path / "previous"
    (run / "checkpoint-3").mkdir(parents=True)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("max_length: 64\nmax_lenght: 32\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n')
    empty = write_jsonl(tmp_path / "empty_completion.jsonl", [{"prompt": "a", "completion": "b"},
                                                                 {"prompt": "c", "completion": ""}])
    columns = write_jsonl(tmp_path / "columns.jsonl", [{"text": "a"}])
    out = str(tmp_path / "out")
    base = ["--model_name_or_path", tiny["lm"], "--dataset", tiny["sft"], *COMMON]
    return [
        (["--model_name_or_path", "/nonexistent", "--dataset", tiny["sft"], "--output_dir", out, *COMMON],
         "error: /nonexistent: no such model folder"),
        (["--model_name_or_path", tiny["pm"], "--dataset", tiny["sft"], "--output_dir", out, *COMMON],
         "is a sequence classifier with 2 labels (GPT2ForSequenceClassification); a policy must be"),
        ([*base, "--output_dir", str(tmp_path / "a_file")], "a_file: a file, not a folder"),
        ([*base, "--output_dir", str(run)], "holds a previous run (checkpoint-3)"),
        ([*base, "--output_dir", out, "--per_device_train_batch_size", "0"],
         "error: --per_device_train_batch_size must be a positive integer, got 0"),
        ([*base, "--output_dir", out, "--gradient_accumulation_steps", "0"],
         "error: --gradient_accumulation_steps must be a positive integer, got 0"),
        ([*base, "--output_dir", out, "--learning_rate=-1e-5"], "error: --learning_rate must be a positive number"),
        ([*base], "error: --output_dir is required"),
        ([*base, "--output_dir", out, "--config", str(bad_yaml)], "bad.yaml: unknown option 'max_lenght'"),
        ([*base, "--output_dir", out, "--resume_from_checkpoint", "/nonexistent/checkpoint-9"],
         "error: --resume_from_checkpoint: no such checkpoint folder: /nonexistent/checkpoint-9"),
        ([*base, "--output_dir", out, "--resume_from_checkpoint", "true"], "no complete checkpoint-N folder in"),
        (["--model_name_or_path", tiny["lm"], "--dataset", str(broken), "--output_dir", out, *COMMON],
         "broken.jsonl: line 2: not valid JSON"),
        (["--model_name_or_path", tiny["lm"], "--dataset", empty, "--output_dir", out, *COMMON],
         "empty_completion.jsonl: row 1: empty completion"),
        (["--model_name_or_path", tiny["lm"], "--dataset", columns, "--output_dir", out, *COMMON],
         "expected 'prompt' + 'completion' columns or a 'messages' column"),
        (["--model_name_or_path", tiny["lm"], "--dataset", str(tmp_path / "none.jsonl"), "--output_dir", out, *COMMON],
         "none.jsonl: no such file or directory"),
    ]


def test_sft_refusals_are_one_line_before_any_model_loads(tiny, tmp_path, capsys, no_model_loads):
    for argv, expected in sft_cases(tiny, tmp_path):
        line = refusal(sft.main, argv, capsys)
        assert expected in line, (argv, line)
    assert not (tmp_path / "out").exists()  # nothing was written for a refused command


def test_preference_model_refusals(tiny, tmp_path, capsys, no_model_loads):
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"prompt": "p", "chosen": "a"}])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n{"prompt": "p" "chosen": "a"}\n')
    out = str(tmp_path / "out")
    cases = [
        (["--model_name_or_path", tiny["classifier3"], "--dataset", tiny["pairs"]],
         "is a sequence classifier with 3 labels (GPT2ForSequenceClassification); a preference model base must be"),
        (["--model_name_or_path", tiny["lm"], "--dataset", missing], "missing column(s) ['rejected']"),
        (["--model_name_or_path", tiny["lm"], "--dataset", str(broken)], "broken.jsonl: line 3: not valid JSON"),
        (["--model_name_or_path", "./nope", "--dataset", tiny["pairs"]], "error: ./nope: no such model folder"),
    ]
    for flags, expected in cases:
        line = refusal(tpm.main, [*flags, "--output_dir", out, *COMMON], capsys)
        assert expected in line, (flags, line)


def test_command_line_refusal_exit_status(tiny, tmp_path):
    """The real command: exit status 2, one error line, no traceback, no hub retries for a local path."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lm_runs.sft", "--model_name_or_path", "/nonexistent", "--dataset", tiny["sft"],
         "--output_dir", str(tmp_path / "out")],
        cwd=ROOT, env={**environment(), "HF_HUB_OFFLINE": "0"}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: /nonexistent: no such model folder"]
    assert "Traceback" not in done.stderr and "Retrying" not in done.stderr
    assert time.perf_counter() - started < 120


def test_overwrite_output_dir_replaces_the_previous_run(tiny, tmp_path):
    out = tmp_path / "out"
    argv = ["--model_name_or_path", tiny["lm"], "--dataset", tiny["sft"], "--output_dir", str(out), *COMMON]
    sft.main([*argv, "--max_steps", "4", "--save_steps", "2"])
    (out / "epochs" / "epoch-3").mkdir(parents=True)  # as an older, longer run would have left
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds a previous run"):
        sft.main([*argv, "--max_steps", "2", "--save_strategy", "no"])
    sft.main([*argv, "--max_steps", "2", "--save_strategy", "no", "--overwrite_output_dir", "true"])
    names = sorted(p.name for p in out.iterdir())
    assert "epochs" not in names and not [n for n in names if n.startswith(("checkpoint-", "."))]
    assert {"config.json", "model.safetensors", "notes.txt"} <= set(names)


# ------------------------------------------------------------------------------------ kills and resume


def final_weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def assert_checkpoints_complete(out: Path) -> None:
    for entry in out.iterdir():
        if entry.name.startswith("checkpoint-"):
            assert is_complete_checkpoint(entry), f"{entry} is visible but incomplete"
            json.loads((entry / "trainer_state.json").read_text())
            load_file(str(entry / "model.safetensors"))


def partial_folders(out: Path) -> set[tuple[str, int]]:
    """The checkpoint folders being written in ``out``, by name and inode."""
    if not out.is_dir():
        return set()
    found = set()
    for entry in out.iterdir():
        if entry.name.startswith(".partial-checkpoint"):
            try:
                found.add((entry.name, entry.stat().st_ino))
            except FileNotFoundError:  # published or removed meanwhile
                pass
    return found


def wait_and_kill(process: subprocess.Popen, out: Path, trigger: str, delay: float) -> bool:
    """SIGKILL ``process`` ``delay`` s after ``trigger`` is seen in ``out``: ``"partial"`` (a checkpoint being
    written by this process, not a leftover of the previous kill) or ``"checkpoint"`` (one more complete
    checkpoint than at the start). Returns whether a checkpoint was being written at the kill; False when
    the run ended first."""
    start = {p.name for p in out.glob("checkpoint-*")} if out.is_dir() else set()
    leftovers = partial_folders(out)
    cleaned = not leftovers  # the run removes leftovers when it starts; only then is a partial folder its own
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        partial = partial_folders(out)
        cleaned = cleaned or not ({name for name, _ in leftovers} & {name for name, _ in partial})
        own = partial if cleaned else partial - leftovers
        new = {p.name for p in out.glob("checkpoint-*")} - start if out.is_dir() else set()
        if (trigger == "partial" and own and (start or new)) or (trigger == "checkpoint" and new):
            time.sleep(delay)
            mid_save = bool(partial_folders(out))
            process.send_signal(signal.SIGKILL)
            process.wait()
            return mid_save
        time.sleep(0.0005)
    process.wait()
    return False


@pytest.mark.slow
def test_sigkill_at_varied_moments_then_resume_ends_bit_for_bit(tiny, tmp_path):
    """A save-heavy SFT run (--save_steps 1) is SIGKILLed at varied moments — right after a checkpoint
    starts being written, a little later, just after one completed — and resumed each time with
    ``--resume_from_checkpoint true``. No visible checkpoint is ever incomplete, the resume never picks a
    partial folder, and the final weights equal the uninterrupted run's."""
    argv = ["--model_name_or_path", tiny["lm"], "--dataset", tiny["sft"], *COMMON, "--max_steps", "18",
            "--save_steps", "1"]
    # The uninterrupted run is a process like the killed ones: in the test process, state other tests
    # leave behind (thread counts, global torch settings) could change the last bits of the weights.
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "lm_runs.sft", *argv, "--output_dir", str(straight)], cwd=ROOT,
                   env=environment(), check=True, capture_output=True, timeout=300)

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "lm_runs.sft", *argv, "--output_dir", str(out)]
    plan = [("partial", 0.0), ("partial", 0.004), ("checkpoint", 0.0), ("partial", 0.015), ("checkpoint", 0.01)]
    mid_save = 0
    for index, (trigger, delay) in enumerate(plan):
        resume = ["--resume_from_checkpoint", "true"] if index else []
        process = subprocess.Popen([*command, *resume], cwd=ROOT, env=environment(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mid_save += wait_and_kill(process, out, trigger, delay)
        assert_checkpoints_complete(out)
        latest = latest_checkpoint(out)
        assert latest is not None and is_complete_checkpoint(latest)
    assert mid_save >= 2, "fewer than two kills landed while a checkpoint was being written"
    done = subprocess.run([*command, "--resume_from_checkpoint", "true"], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_checkpoints_complete(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    expected, got = final_weights(straight), final_weights(out)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
