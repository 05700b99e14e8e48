"""What the training entry points share around the Trainer: the output folder, resuming,
the DeepSpeed optimizer warning, and the ``__main__`` wrapper that turns user errors into one line.

Output folder (:func:`prepare_output_dir`, called before any model loads):

* ``--output_dir`` is required; a path that is a file is refused;
* a folder that is not empty (a previous run: ``checkpoint-N``, ``epochs/``, a final model, logs) is
  refused unless the run resumes from it (``--resume_from_checkpoint``) or replaces it
  (``--overwrite_output_dir true``: :func:`clear_previous_run` deletes the previous run's entries, listed
  in the log, when training starts — never mixed with the new run's);
* ``--resume_from_checkpoint true`` is the Hugging Face convention for the newest checkpoint in
  ``output_dir``: the newest *complete* one (:func:`lm_runs.checkpoints.latest_checkpoint`); a named
  folder that does not exist is "no such checkpoint folder", one that is not a complete checkpoint is
  refused as such.

:func:`run_entry_point` is every entry point's ``if __name__ == "__main__"``. Bad input is one line,
``error: <what is wrong>``, on stderr and exit status 2; a bug keeps its traceback:

* a :class:`UsageError` (a check's refusal: :class:`~lm_runs.models.ModelRoleError`, the evaluation's
  ``EvaluationError``, …) or a ``JudgeError`` is one line wherever it is raised;
* a plain ``ValueError`` (options refused while parsing, a malformed ``--config``, data errors) is one line
  while the command checks and loads its inputs, and a bug once the long computation has started
  (:func:`inputs_checked`; :func:`train_from` says so when training starts);
* a save that could not write (a full disk, a quota, the file-size limit:
  :class:`~lm_runs.checkpoints.SaveError`, naming the folder and the cause), a missing file or a refused
  permission is one line;
* Ctrl-C is ``interrupted`` and exit status 130.

Nothing here imports transformers, so a tool's start-up stays fast.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lm_runs.checkpoints import PARTIAL_PREFIX, WRITE_FAILURES, SaveError, is_model_file, latest_checkpoint, write_failure

__all__ = [
    "UsageError",
    "inputs_checked",
    "warn_deepspeed_optimizer",
    "resume_argument",
    "prepare_output_dir",
    "previous_run_entries",
    "clear_previous_run",
    "train_from",
    "supervised_main",
    "run_entry_point",
    "one_line",
]

logger = logging.getLogger(__name__)


class UsageError(ValueError):
    """Bad input found by a check: :func:`run_entry_point` prints its message as one line and exits with
    status 2, wherever it is raised (also after :func:`inputs_checked`). Raise it, not ``ValueError``,
    for a refusal that can come once the long computation has started."""


#: Whether the running command has checked its inputs (see :func:`inputs_checked`).
_state = {"inputs_checked": False}


def inputs_checked() -> None:
    """Say that the running command has checked and loaded its inputs and starts its long computation:
    from here on :func:`run_entry_point` treats a plain ``ValueError`` as a bug (traceback), not as bad
    input. (:class:`UsageError` and ``JudgeError`` stay one line.)"""
    _state["inputs_checked"] = True


def warn_deepspeed_optimizer(config: Any) -> bool:
    """Warn (and return True) when the DeepSpeed config has an ``optimizer`` block.

    Without one, DeepSpeed wraps the Trainer's AdamW, whose parameter groups apply ``weight_decay``
    to weights and not to biases/norms; a DeepSpeed optimizer replaces it and treats all parameters
    alike. Nothing else is needed for weight decay to take effect.
    """
    spec = getattr(config, "deepspeed", None)
    if not spec:
        return False
    if isinstance(spec, Mapping):
        ds = dict(spec)
    else:
        text = str(spec)
        try:
            ds = json.loads(Path(text).read_text()) if Path(text).is_file() else json.loads(text)
        except (OSError, ValueError):
            return False  # the Trainer reports unreadable DeepSpeed configs itself
    if "optimizer" in ds:
        logger.warning(
            "The DeepSpeed config has an 'optimizer' block: it replaces the Trainer's AdamW (whose groups exempt "
            "biases and norms from weight decay). Drop the block; --weight_decay %s is applied without it.",
            getattr(config, "weight_decay", None),
        )
        return True
    return False


def resume_argument(value: str | bool | None, output_dir: str | os.PathLike[str] | None) -> str | None:
    """The checkpoint folder ``--resume_from_checkpoint value`` names, for ``Trainer.train``; None for a
    fresh run (unset, ``""``, ``false``, ``none``).

    ``true`` (any case) is the newest complete checkpoint in ``output_dir``; :class:`UsageError` when there
    is none. A path must be an existing complete checkpoint folder (``trainer_state.json`` inside):
    UsageError ``no such checkpoint folder: PATH`` otherwise, or naming what is missing.
    """
    if value is None or value is False:
        return None
    text = str(value).strip()
    if text.lower() in ("", "false", "none"):
        return None
    if text.lower() == "true":
        latest = latest_checkpoint(output_dir) if output_dir else None
        if latest is None:
            hint = " (start afresh with --overwrite_output_dir true)" if output_dir and Path(output_dir).is_dir() else ""
            raise UsageError(f"--resume_from_checkpoint true: no complete checkpoint-N folder in {output_dir}{hint}")
        return latest
    path = Path(text).expanduser()
    if not path.exists():
        raise UsageError(f"--resume_from_checkpoint: no such checkpoint folder: {text}")
    if not path.is_dir() or not (path / "trainer_state.json").is_file():
        raise UsageError(f"--resume_from_checkpoint {text}: not a complete checkpoint folder (no trainer_state.json)")
    if path.name.startswith(PARTIAL_PREFIX) or path.parent.name.startswith(PARTIAL_PREFIX):
        raise UsageError(f"--resume_from_checkpoint {text}: a partial save left by an interrupted run, not a checkpoint")
    return str(path)


#: The metrics files a run writes beside its model (the Trainer's ``save_metrics`` names).
RESULT_FILES = ("eval_results.json", "train_results.json", "all_results.json")


def previous_run_entries(output_dir: str | os.PathLike[str]) -> list[str]:
    """The entries of ``output_dir`` a training run writes: ``checkpoint-N`` folders, ``epochs/``,
    TensorBoard's ``runs/``, the final model's files, the metrics files (:data:`RESULT_FILES`) and
    partial saves (sorted names)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    names = []
    for entry in folder.iterdir():
        name = entry.name
        if (
            (entry.is_dir() and (name.startswith("checkpoint-") or name in ("epochs", "runs")))
            or name.startswith((PARTIAL_PREFIX, ".replaced-"))
            or (entry.is_file() and (is_model_file(name) or name in RESULT_FILES))
        ):
            names.append(name)
    return sorted(names)


def _shown(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", … ({len(names)} entries)" if len(names) > limit else "")


def prepare_output_dir(args: Any) -> str | None:
    """Check ``args.output_dir`` against ``args.resume_from_checkpoint`` and ``args.overwrite_output_dir``
    (see the module docstring) and return the checkpoint to resume from (None for a fresh run). Raises
    :class:`UsageError` with one line; changes nothing on disk (:func:`clear_previous_run` does, later)."""
    output_dir = getattr(args, "output_dir", None)
    if not output_dir:
        raise UsageError("--output_dir is required: the folder for checkpoints and the final model")
    folder = Path(output_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output_dir {output_dir}: a file, not a folder")
    resume = resume_argument(getattr(args, "resume_from_checkpoint", None), folder)
    overwrite = bool(getattr(args, "overwrite_output_dir", False))
    if resume is not None and overwrite:
        raise UsageError("--resume_from_checkpoint and --overwrite_output_dir contradict each other: give one")
    if resume is None and not overwrite and folder.is_dir():
        entries = sorted(entry.name for entry in folder.iterdir())
        if entries:
            run = previous_run_entries(folder)
            what = f"holds a previous run ({_shown(run)})" if run else f"is not empty ({_shown(entries)})"
            raise UsageError(
                f"--output_dir {output_dir} {what}: resume it with --resume_from_checkpoint true, replace it with "
                "--overwrite_output_dir true, or choose another folder"
            )
    return resume


def clear_previous_run(output_dir: str | os.PathLike[str]) -> list[str]:
    """Delete the previous run's entries (:func:`previous_run_entries`) from ``output_dir`` and log them;
    other files are left. Call it when training starts with ``--overwrite_output_dir``, on the saving
    process only. Returns the names removed."""
    import shutil

    names = previous_run_entries(output_dir)
    for name in names:
        path = Path(output_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if names:
        logger.warning("--overwrite_output_dir: removed the previous run from %s: %s", output_dir, ", ".join(names))
    return names


def train_from(trainer: Any, resume: str | None) -> None:
    """Train, as every training entry point does once its trainer is built: the inputs are checked
    (:func:`inputs_checked`: a ``ValueError`` from here on is a bug); with ``--overwrite_output_dir`` and
    no checkpoint to resume, the previous run's entries are cleared first (on the saving process:
    :func:`clear_previous_run`); then ``trainer.train(resume_from_checkpoint=resume)`` (``resume`` as
    :func:`prepare_output_dir` returned it)."""
    inputs_checked()
    args = trainer.args
    if getattr(args, "overwrite_output_dir", False) and resume is None and args.should_save:
        clear_previous_run(args.output_dir)
    trainer.train(resume_from_checkpoint=resume)


def supervised_main(config_type: type, build_trainer: Callable[[Any], Any], argv: Sequence[str] | None) -> str:
    """The whole run of a supervised entry point (SFT, the preference model): parse ``argv`` into
    ``config_type`` (flags and ``--config``), check the output folder, build the trainer, train
    (:func:`train_from`) and save the final model (LoRA merged) to ``output_dir``; returns it."""
    from lm_runs.checkpoints import save_final_model
    from lm_runs.cli import parse_config

    (config,) = parse_config([config_type], argv)
    logging.basicConfig(level=logging.INFO if config.should_log else logging.WARNING)
    resume = prepare_output_dir(config)
    trainer = build_trainer(config)
    train_from(trainer, resume)
    save_final_model(trainer, config.output_dir, config.use_peft)
    return config.output_dir


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """An error's text on one line (whitespace runs collapsed; the type's name when it has no text), cut
    to ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _say(line: str) -> None:
    """Print ``line`` on stderr in ONE write: the ranks of a distributed run share the stream, and
    ``print`` writes the text and its newline separately, so two ranks' lines could interleave."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _is_user_error(error: BaseException) -> bool:
    if isinstance(error, UsageError):
        return True
    if isinstance(error, ValueError):
        return not _state["inputs_checked"]
    # lm_runs.judges' JudgeError (and its subclasses), matched by name: importing the judges here would
    # slow every command's start.
    return any(cls.__name__ == "JudgeError" for cls in type(error).__mro__)


def run_entry_point(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run ``main(argv)`` as a command (see the module docstring): bad input prints ``error: <one line>``
    on stderr and exits with status 2 — a :class:`UsageError` or ``JudgeError`` anywhere, a ``ValueError``
    before :func:`inputs_checked`, a :class:`~lm_runs.checkpoints.SaveError`, a full disk, quota or
    file-size limit (naming the path), a missing file or a permission refused —; Ctrl-C prints
    ``interrupted`` and exits 130; anything else (a bug) keeps its traceback. ``SystemExit``
    (``--help``, argparse errors) passes."""
    _state["inputs_checked"] = False
    try:
        main(argv)
    except KeyboardInterrupt:
        _say("interrupted")
        raise SystemExit(130) from None
    except SaveError as error:
        _say(f"error: {one_line(error, limit=2000)}")
        raise SystemExit(2) from None
    except OSError as error:
        if error.errno in WRITE_FAILURES:
            where = f" while writing {error.filename}" if error.filename else ""
            _say(f"error: {WRITE_FAILURES[error.errno]}{where}")
        elif isinstance(error, (FileNotFoundError, PermissionError)):
            _say(f"error: {one_line(error, limit=2000)}")
        else:
            raise
        raise SystemExit(2) from None
    except Exception as error:  # noqa: BLE001 - user errors become one line, the rest is re-raised
        if not _is_user_error(error):
            failure = write_failure(error)
            if failure is None:
                raise
            _say(f"error: a write failed: {failure[1]}")
            raise SystemExit(2) from None
        _say(f"error: {one_line(error, limit=2000)}")
        raise SystemExit(2) from None
