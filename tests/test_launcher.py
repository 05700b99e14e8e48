"""lm_runs.launcher and lm_runs.cli: output folders, resume conventions, the one-line error wrapper, the
--config file checks and --save_steps."""

from __future__ import annotations

import errno
import types

import pytest

from lm_runs.launcher import (
    clear_previous_run,
    prepare_output_dir,
    previous_run_entries,
    require_options,
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
    # --overwrite_output_dir clears the run's entries and leaves the user's own files.
    assert previous_run_entries(run) == ["checkpoint-2", "checkpoint-4", "config.json", "epochs"]
    assert clear_previous_run(run) == ["checkpoint-2", "checkpoint-4", "config.json", "epochs"]
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


def test_require_options():
    require_options(types.SimpleNamespace(a=1, b="x"), "a", "b")
    with pytest.raises(ValueError, match="^--b is required$"):
        require_options(types.SimpleNamespace(a=1, b=None), "a", "b")


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
    class JudgeError(RuntimeError):
        pass

    class JudgeTimeout(JudgeError):
        pass

    def judge_fails(argv):
        raise JudgeTimeout("judge returned 3 values for 2 pairs")

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
    assert run_entry_point(lambda argv: argv, ["x"]) is None


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
