"""lm_runs.launcher and lm_runs.cli: output folders, resume conventions, the one-line error wrapper, the
--config file checks and --save_steps."""

from __future__ import annotations

import errno
import types

import pytest

from lm_runs.checkpoints import SaveError
from lm_runs.launcher import (
    UsageError,
    clear_previous_run,
    inputs_checked,
    prepare_output_dir,
    previous_run_entries,
    resume_argument,
    run_entry_point,
)


def args(output_dir, resume=None, overwrite=False):
    return types.SimpleNamespace(output_dir=None if output_dir is None else str(output_dir),
                                 resume_from_checkpoint=resume, overwrite_output_dir=overwrite)


def checkpoint(folder, step, complete=True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w")
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


# ------------------------------------------------------------------------------------- output folder


def test_output_dir_required_file_refused_empty_or_new_accepted(tmp_path):
    with pytest.raises(ValueError, match="--output_dir is required"):
        prepare_output_dir(args(None))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--output_dir .*file: a file, not a folder"):
        prepare_output_dir(args(tmp_path / "file"))
    assert prepare_output_dir(args(tmp_path / "new")) is None
    (tmp_path / "empty").mkdir()
    assert prepare_output_dir(args(tmp_path / "empty")) is None


def test_previous_run_refused_unless_resumed_or_overwritten(tmp_path):
    run = tmp_path / "run"
    checkpoint(run, 2)
    checkpoint(run, 4)
    (run / "epochs" / "epoch-1").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds a previous run \(checkpoint-2, checkpoint-4, config.json, epochs\)"):
        prepare_output_dir(args(run))
    assert prepare_output_dir(args(run, resume="true")) == str(run / "checkpoint-4")
    assert prepare_output_dir(args(run, overwrite=True)) is None
    with pytest.raises(ValueError, match="contradict"):
        prepare_output_dir(args(run, resume="true", overwrite=True))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"is not empty \(notes.txt\)"):
        prepare_output_dir(args(tmp_path / "other"))
    # --overwrite_output_dir clears the run's entries (its metrics files too: a stale eval_results.json
    # would pass for the new run's) and leaves the user's own files.
    (run / "eval_results.json").write_text("{}")
    entries = ["checkpoint-2", "checkpoint-4", "config.json", "epochs", "eval_results.json"]
    assert previous_run_entries(run) == entries
    assert clear_previous_run(run) == entries
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_resume_conventions(tmp_path):
    assert resume_argument(None, tmp_path) is None
    for off in ("", "false", "False", "none"):
        assert resume_argument(off, tmp_path) is None
    with pytest.raises(ValueError, match="--resume_from_checkpoint true: no complete checkpoint-N folder in"):
        resume_argument("true", tmp_path)
    checkpoint(tmp_path, 3)
    checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 12, complete=False)  # killed before trainer_state.json: never picked
    (tmp_path / ".partial-checkpoint-14" / "checkpoint-14").mkdir(parents=True)
    (tmp_path / ".partial-checkpoint-14" / "checkpoint-14" / "trainer_state.json").write_text("{}")
    assert resume_argument("true", tmp_path) == str(tmp_path / "checkpoint-10")  # numeric, not lexical, order
    assert resume_argument("TRUE", tmp_path) == str(tmp_path / "checkpoint-10")
    assert resume_argument(str(tmp_path / "checkpoint-3"), tmp_path) == str(tmp_path / "checkpoint-3")
    with pytest.raises(ValueError, match="no such checkpoint folder: /nonexistent/checkpoint-5$"):
        resume_argument("/nonexistent/checkpoint-5", tmp_path)
    with pytest.raises(ValueError, match="not a complete checkpoint folder"):
        resume_argument(str(tmp_path / "checkpoint-12"), tmp_path)
    with pytest.raises(ValueError, match="partial save"):
        resume_argument(str(tmp_path / ".partial-checkpoint-14" / "checkpoint-14"), tmp_path)


# -------------------------------------------------------------------------------------- entry point


@pytest.mark.parametrize(
    "error, status, line",
    [
        (ValueError("--learning_rate must be a positive number, got 0.0"), 2,
         "error: --learning_rate must be a positive number, got 0.0"),
        (FileNotFoundError("data.jsonl: no such file or directory"), 2, "error: data.jsonl: no such file or directory"),
        (OSError(errno.ENOSPC, "No space left on device", "/runs/x/model.safetensors"), 2,
         "error: no space left on the device while writing /runs/x/model.safetensors"),
        (PermissionError(13, "Permission denied", "/root/out"), 2, "error: [Errno 13] Permission denied: '/root/out'"),
        (OSError(errno.EFBIG, "File too large", "/runs/x/optimizer.pt"), 2,
         "error: a file grew past the file-size limit (ulimit -f) or the file system's largest file while writing "
         "/runs/x/optimizer.pt"),
        (SaveError("/runs/x/checkpoint-4", "no space left on the device", errno.ENOSPC, "resume"), 2,
         "error: could not save /runs/x/checkpoint-4: no space left on the device; resume"),
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), 2,
         "error: a write failed: the reason is unknown (torch.save gives none: is the disk full?)"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_run_entry_point_one_line_and_status(error, status, line, capsys):
    def main(argv):
        raise error

    with pytest.raises(SystemExit) as caught:
        run_entry_point(main, [])
    assert caught.value.code == status
    assert capsys.readouterr().err == line + "\n"


def test_run_entry_point_keeps_bugs_and_judge_errors(capsys):
    """The real judge errors (the launcher matches them by class name, so a rename must fail here)."""
    from lm_runs.judges import JudgeError, JudgeUnavailable

    def judge_fails(argv):
        raise JudgeUnavailable("judge returned 3 values for 2 pairs")

    with pytest.raises(SystemExit) as caught:
        run_entry_point(judge_fails, [])
    assert caught.value.code == 2 and capsys.readouterr().err == "error: judge returned 3 values for 2 pairs\n"

    def bug(argv):
        raise TypeError("a bug")

    with pytest.raises(TypeError):  # a bug keeps its traceback
        run_entry_point(bug, [])

    def other_os_error(argv):
        raise IsADirectoryError(21, "Is a directory", "/tmp")

    with pytest.raises(IsADirectoryError):
        run_entry_point(other_os_error, [])

    def judge_error(argv):
        raise JudgeError("judge answered NaN")

    with pytest.raises(SystemExit) as caught:
        run_entry_point(judge_error, [])
    assert caught.value.code == 2 and capsys.readouterr().err == "error: judge answered NaN\n"

    received = []
    run_entry_point(received.append, ["x"])  # a command that succeeds: main gets argv, nothing is printed
    assert received == [["x"]] and capsys.readouterr().err == ""


def test_a_value_error_is_one_line_only_until_the_inputs_are_checked(capsys):
    """Bad input found while the command checks its inputs is one line (exit 2); once it has said
    inputs_checked() (the long computation starts), a ValueError is a bug and keeps its traceback, while a
    UsageError or a JudgeError stays one line."""
    from lm_runs.judges import JudgeError

    def command(error):
        def main(argv):
            inputs_checked()
            raise error

        return main

    def before(argv):
        raise ValueError("--beta must be positive")

    with pytest.raises(SystemExit) as caught:
        run_entry_point(before, [])
    assert caught.value.code == 2 and capsys.readouterr().err == "error: --beta must be positive\n"
    with pytest.raises(ValueError, match="^a bug deep in training$"):
        run_entry_point(command(ValueError("a bug deep in training")), [])
    for error in (UsageError("--resume_from_checkpoint true: no complete checkpoint"), JudgeError("judge down")):
        with pytest.raises(SystemExit) as caught:
            run_entry_point(command(error), [])
        assert caught.value.code == 2 and capsys.readouterr().err == f"error: {error}\n"
    with pytest.raises(SystemExit) as caught:  # each command starts unchecked
        run_entry_point(before, [])
    assert caught.value.code == 2


def test_a_bug_after_the_checks_exits_with_a_traceback_in_a_real_process(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "command.py"
    script.write_text(
        "from lm_runs.launcher import inputs_checked, run_entry_point\n"
        "def main(argv):\n"
        "    if argv == ['bad']:\n"
        "        raise ValueError('--n must be >= 1, got 0')\n"
        "    inputs_checked()\n"
        "    raise ValueError('shapes (3,) and (4,) do not match')\n"
        "run_entry_point(main, __import__('sys').argv[1:])\n")
    root = Path(__file__).resolve().parents[1]
    bad = subprocess.run([sys.executable, str(script), "bad"], cwd=root, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr == "error: --n must be >= 1, got 0\n"
    bug = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=120)
    assert bug.returncode == 1 and bug.stderr.startswith("Traceback")
    assert bug.stderr.rstrip().endswith("ValueError: shapes (3,) and (4,) do not match")


# ------------------------------------------------------------------------------------------- cli

transformers = pytest.importorskip("transformers")

from lm_runs.cli import ConfigFileError, parse_config  # noqa: E402
from lm_runs.sft import SFTConfig  # noqa: E402

REQUIRED = ["--output_dir", "out", "--model_name_or_path", "m", "--dataset", "d.jsonl", "--use_cpu", "true"]


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: [1\n")
    with pytest.raises(ConfigFileError, match=r"^--config .*bad.yaml: not valid YAML"):
        parse_config([SFTConfig], ["--config", str(bad), *REQUIRED])
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("learning_rate: 1.0e-5\nlearnig_rate: 2.0e-5\n")
    with pytest.raises(ConfigFileError, match=r"^--config .*unknown.yaml: unknown option 'learnig_rate'"):
        parse_config([SFTConfig], [f"--config={unknown}", *REQUIRED])
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigFileError, match="expected a mapping of option: value, got list"):
        parse_config([SFTConfig], ["--config", str(listed), *REQUIRED])
    with pytest.raises(ConfigFileError, match="no such file"):
        parse_config([SFTConfig], ["--config", str(tmp_path / "none.yaml"), *REQUIRED])
    with pytest.raises(ConfigFileError, match="--config needs a YAML file"):
        parse_config([SFTConfig], [*REQUIRED, "--config"])
    good = tmp_path / "good.yaml"
    good.write_text("learning_rate: 2.0e-5\nmax_length: 64\n")
    (config,) = parse_config([SFTConfig], ["--config", str(good), *REQUIRED, "--max_length", "32"])
    assert (config.learning_rate, config.max_length) == (2e-5, 32)  # the flag overrides the file


def test_config_in_help(capsys):
    with pytest.raises(SystemExit) as caught:
        parse_config([SFTConfig], ["--help"])
    assert caught.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--config FILE.yaml" in out and "flags given on the command line override" in out


def test_save_steps_alone_saves():
    (config,) = parse_config([SFTConfig], [*REQUIRED, "--save_strategy", "no"])
    assert config.save_strategy == "no"
    (config,) = parse_config([SFTConfig], [*REQUIRED, "--save_steps", "3"])
    assert config.save_strategy == "steps" and config.save_steps == 3
    (config,) = parse_config([SFTConfig], [*REQUIRED, "--save_steps=3", "--save_strategy=steps"])
    assert config.save_strategy == "steps" and config.save_steps == 3
    with pytest.raises(ValueError, match="--save_steps 3 has no effect with --save_strategy no"):
        parse_config([SFTConfig], [*REQUIRED, "--save_strategy", "no", "--save_steps", "3"])


def test_save_steps_on_the_command_line_wins_over_a_preset_strategy(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("save_strategy: epoch\n")
    (config,) = parse_config([SFTConfig], ["--config", str(preset), *REQUIRED])
    assert config.save_strategy == "epoch"
    (config,) = parse_config([SFTConfig], ["--config", str(preset), *REQUIRED, "--save_steps", "7"])
    assert config.save_strategy == "steps" and config.save_steps == 7
    preset.write_text("save_strategy: epoch\nsave_steps: 7\n")  # a preset whose steps would do nothing
    with pytest.raises(ValueError, match="--save_steps 7 has no effect with --save_strategy epoch"):
        parse_config([SFTConfig], ["--config", str(preset), *REQUIRED])
    preset.write_text("save_steps: 7\n")
    (config,) = parse_config([SFTConfig], ["--config", str(preset), *REQUIRED, "--save_strategy", "no"])
    assert config.save_strategy == "no"  # an explicit strategy on the command line is the user's word


def test_save_steps_alone_saves_whatever_the_default_strategy():
    """An entry point whose dataclass defaults to save_strategy "no" (as NLHF training does) still saves
    every N steps when the user passes --save_steps N alone (today: nothing is saved)."""
    import dataclasses

    from transformers import TrainingArguments

    @dataclasses.dataclass
    class NoSaveByDefault(TrainingArguments):
        save_strategy: str = "no"

    (config,) = parse_config([NoSaveByDefault], ["--output_dir", "x", "--use_cpu", "true"])
    assert config.save_strategy == "no"
    (config,) = parse_config([NoSaveByDefault], ["--output_dir", "x", "--use_cpu", "true", "--save_steps", "5"])
    assert config.save_strategy == "steps" and config.save_steps == 5


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be a positive integer, got 0"),
        (["--gradient_accumulation_steps", "-1"], "--gradient_accumulation_steps must be a positive integer, got -1"),
        (["--learning_rate", "0"], "--learning_rate must be a positive number, got 0.0"),
        (["--learning_rate", "nan"], "--learning_rate must be a positive number, got nan"),
        (["--num_train_epochs", "0"], "--num_train_epochs must be > 0 (or set --max_steps), got 0.0"),
        (["--max_length", "1"], "--max_length must be an integer >= 2, got 1"),
    ],
)
def test_run_numbers_refused(flags, message):
    with pytest.raises(ValueError) as caught:
        parse_config([SFTConfig], [*REQUIRED, *flags])
    assert str(caught.value) == message


@pytest.mark.parametrize("missing", ["--output_dir", "--model_name_or_path", "--dataset"])
def test_required_options(missing):
    flags = list(REQUIRED)
    index = flags.index(missing)
    del flags[index:index + 2]
    with pytest.raises(ValueError, match=f"^{missing} is required"):
        parse_config([SFTConfig], flags)


def test_training_entry_point_one_line_for_bad_input_traceback_for_a_bug(tmp_path, capsys, monkeypatch):
    """lm_runs.sft through run_entry_point: a refused option is one line and exit 2 before any model loads;
    a ValueError raised inside training (here planted in the Trainer's step) is a bug: it propagates with
    its traceback instead of becoming one line."""
    import json

    from transformers import Trainer

    from lm_runs import sft
    from lm_runs.tiny import build_tiny_lm

    model = build_tiny_lm(tmp_path / "lm")
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {i}", "completion": f" {i}"}) + "\n" for i in range(8)))
    argv = ["--model_name_or_path", str(model), "--dataset", str(data), "--output_dir", str(tmp_path / "out"),
            "--use_cpu", "true", "--report_to", "none", "--max_steps", "1", "--save_strategy", "no",
            "--per_device_train_batch_size", "4", "--disable_tqdm", "true"]
    loaded = []
    monkeypatch.setattr(sft, "build_trainer", lambda config, real=sft.build_trainer: (loaded.append(1), real(config))[1])
    with pytest.raises(SystemExit) as caught:
        run_entry_point(sft.main, [*argv, "--learning_rate", "0"])
    assert caught.value.code == 2 and not loaded
    assert capsys.readouterr().err.splitlines()[-1] == "error: --learning_rate must be a positive number, got 0.0"

    def planted(self, *args, **kwargs):
        raise ValueError("a bug deep in training")

    monkeypatch.setattr(Trainer, "training_step", planted)
    with pytest.raises(ValueError, match="^a bug deep in training$"):
        run_entry_point(sft.main, argv)
    assert loaded and "error:" not in capsys.readouterr().err
