"""Checkpoints and model folders that appear complete or not at all, and finding the latest complete one.

A run killed while it writes (a SIGKILL, a preempted node, a full disk) must leave behind only folders a
resume can trust. Everything here follows one rule — write into a hidden sibling, make it durable,
rename it into place:

* :class:`AtomicCheckpoints` (a ``transformers.Trainer`` mixin): ``checkpoint-N`` is written by the
  Trainer's own ``_save_checkpoint`` into ``output_dir/.partial-checkpoint-N/checkpoint-N`` (the Trainer is
  told that this staging folder is its run folder, the one hook through which it builds the checkpoint
  path), every file is fsync'ed, and the folder is renamed to ``output_dir/checkpoint-N`` by the saving
  process once all ranks have written; then old checkpoints are rotated (``--save_total_limit``) among
  the complete ones. A subclass adds its own files to a checkpoint in :meth:`save_checkpoint_extras`,
  inside the staging folder, so they are part of the same rename.
* :func:`latest_checkpoint` is the newest complete ``checkpoint-N`` (a visible folder with
  ``trainer_state.json``, written last by the Trainer); leftover ``.partial-*`` folders are never picked,
  and :func:`remove_partial_saves` deletes them when a run starts.
* :func:`save_model_atomically` writes a model folder (``epochs/epoch-k``, a final model) the same way:
  into the hidden sibling ``.partial-<name>``, then renamed (an older folder of the same name is renamed
  aside first and deleted after). Into a folder that already holds other things (the run's
  ``output_dir`` with its checkpoints) the model is written to ``output_dir/.partial-model`` and its files
  are moved in one by one, the old ``config.json`` / ``adapter_config.json`` (:data:`MODEL_MARKERS`)
  removed first and the new ones moved in last, so a folder with a ``config.json`` always holds a
  complete model.

A save that cannot write — a full disk, a quota, the file-size limit, a refused write; inside
``torch.save`` and safetensors these surface as ``RuntimeError`` / ``SafetensorError``, not ``OSError`` —
is :class:`SaveError`: one line naming the folder and the cause (:func:`write_failure` reads it off the
error), with the hidden staging folder removed, so the space it took is freed and no output of that name
appears; the checkpoints published before stay complete for ``--resume_from_checkpoint true``.

Bit-exact resume is untouched: nothing here reads or changes a random state, and the Trainer writes the
same files it always does, only under another name until they are complete.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

from egpo_core.files import fsync_directory

__all__ = [
    "PARTIAL_PREFIX",
    "MODEL_MARKERS",
    "AtomicCheckpoints",
    "is_complete_checkpoint",
    "latest_checkpoint",
    "remove_partial_saves",
    "save_model_atomically",
    "save_final_model",
    "is_model_file",
    "SaveError",
    "WRITE_FAILURES",
    "write_failure",
    "saving",
]

logger = logging.getLogger(__name__)

#: Hidden folders being written (``.partial-<name>``) or replaced (``.replaced-<name>``): never a result.
PARTIAL_PREFIX = ".partial-"
_REPLACED_PREFIX = ".replaced-"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TRAINER_STATE = "trainer_state.json"
#: Files whose presence says "a complete model is here": moved into a folder last, removed from it first.
MODEL_MARKERS = ("config.json", "adapter_config.json")
_MODEL_FILE = re.compile(
    r"^(config\.json|generation_config\.json|adapter_config\.json|adapter_model\..*|model.*\.safetensors(\.index\.json)?|"
    r"pytorch_model.*\.bin(\.index\.json)?|training_args\.bin|tokenizer.*|special_tokens_map\.json|added_tokens\.json|"
    r"vocab\..*|merges\.txt|chat_template\..*|spiece\.model|README\.md)$"
)


def is_model_file(name: str) -> bool:
    """Whether a file name is one ``save_pretrained`` (model, tokenizer, PEFT adapter) or
    ``Trainer.save_model`` writes."""
    return bool(_MODEL_FILE.match(name))


# ------------------------------------------------------------------------------- failed writes

#: The errors of a write that ran out of room, by errno, as one line says them.
WRITE_FAILURES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "a file grew past the file-size limit (ulimit -f) or the file system's largest file",
}
# What torch.save's C++ writer says when a write fails (it gives no errno).
_TORCH_WRITE = re.compile(r"PytorchStreamWriter failed|unexpected pos \d+ vs \d+|file write failed|iostream error")
# How Rust's std::io::Error (safetensors) gives the errno.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class SaveError(OSError):
    """A save that could not write ``filename`` (the folder or file being saved): ``strerror`` is the
    cause, ``errno`` its number when known; ``str()`` is one line, with ``hint`` (what is kept, how to
    go on) after it."""

    def __init__(self, target: str | os.PathLike[str], cause: str, code: int | None = None, hint: str = "") -> None:
        super().__init__(code, cause, str(target))
        self.hint = hint

    def __str__(self) -> str:
        return f"could not save {self.filename}: {self.strerror}" + (f"; {self.hint}" if self.hint else "")


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from (``raise … from``), once each. Not the errors it was
    raised while handling: a bug in an ``except FileNotFoundError`` block is no failed write."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__


def _unknown_cause(folder: Path | None) -> tuple[int | None, str]:
    """The likely cause of a write failure that gave no errno (torch.save's): a nearly full disk under
    ``folder``, else a finite file-size limit, else unknown."""
    if folder is not None:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and shutil.disk_usage(existing).free < (1 << 20):
            return errno.ENOSPC, WRITE_FAILURES[errno.ENOSPC]
    if os.name == "posix":
        import resource

        if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
            return errno.EFBIG, WRITE_FAILURES[errno.EFBIG]
    return None, "the reason is unknown (torch.save gives none: is the disk full?)"


def write_failure(error: BaseException, folder: str | os.PathLike[str] | None = None) -> tuple[int | None, str] | None:
    """``(errno or None, cause)`` when ``error`` — or an error it was raised from — is a failed write: an
    ``OSError``, safetensors' ``SafetensorError`` with an ``(os error N)``, or torch.save's writer
    ``RuntimeError`` (whose cause is guessed from the free space under ``folder`` and the file-size
    limit); None for anything else (a bug keeps its traceback)."""
    for link in _causes(error):
        if isinstance(link, OSError) and not isinstance(link, SaveError):
            code = link.errno
            if code in WRITE_FAILURES:
                return code, WRITE_FAILURES[code]
            return code, " ".join((link.strerror or str(link) or type(link).__name__).split()).lower()
        match = _RUST_OS_ERROR.search(str(link))
        if match and type(link).__name__ == "SafetensorError":
            code = int(match.group(1))
            return code, WRITE_FAILURES.get(code) or os.strerror(code).lower()
        if isinstance(link, RuntimeError) and _TORCH_WRITE.search(str(link)):
            return _unknown_cause(None if folder is None else Path(folder))
    return None


@contextlib.contextmanager
def saving(target: str | os.PathLike[str], staging: Path | None = None, hint: str = "") -> Iterator[None]:
    """Run the save of ``target`` inside: a failed write (:func:`write_failure`) becomes :class:`SaveError`
    naming ``target``, its cause and ``hint``; on any exception but Ctrl-C the hidden ``staging`` folder
    (when given) is removed, freeing its space. Other errors pass unchanged."""
    try:
        yield
    except Exception as error:  # Ctrl-C passes untouched, as a kill would (the next run removes the staging)
        failure = None if isinstance(error, SaveError) else write_failure(error, Path(target).parent)
        if staging is not None:
            _remove(staging)
        if failure is None:
            raise
        raise SaveError(target, failure[1], failure[0], hint) from error


_RESUME_HINT = "the checkpoints saved before it are complete: make room and resume with --resume_from_checkpoint true"


# ----------------------------------------------------------------------------------- durability


def _fsync(path: Path) -> None:
    """fsync a file, or a folder's entries (POSIX only; a file system refusing to fsync a folder, as some
    network mounts do, is not an error of the save)."""
    if path.is_dir():
        fsync_directory(path)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Make every file under ``root`` and every folder entry durable before ``root`` is renamed."""
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                _fsync(path)
        _fsync(Path(folder))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _holds_only_model_files(folder: Path) -> bool:
    return all(entry.is_file() and is_model_file(entry.name) for entry in folder.iterdir())


def _staging_for(target: Path) -> Path:
    """Where a model folder for ``target`` is written first: the hidden sibling ``.partial-<name>``, or,
    when ``target`` already holds more than a model (a run's output_dir), ``target/.partial-model``."""
    if target.is_dir() and any(target.iterdir()) and not _holds_only_model_files(target):
        return target / f"{PARTIAL_PREFIX}model"
    return target.parent / f"{PARTIAL_PREFIX}{target.name}"


def _publish(staging: Path, target: Path) -> None:
    """Move the complete folder ``staging`` to ``target``: renamed when ``target`` does not exist;
    swapped with it (old one renamed aside, new one in, old one deleted) when ``target`` is a sibling
    folder to replace whole; when ``staging`` lies inside ``target``, its files are moved in one by one,
    the old model's marker files (config.json, adapter_config.json) removed first and the new ones moved
    in last, so a folder with a config.json always holds a complete model."""
    _fsync_tree(staging)
    parent = target.parent
    if staging.parent == target:
        new = {entry.name for entry in staging.iterdir()}
        for name in MODEL_MARKERS:
            _remove(target / name)
        _fsync(target)
        for entry in target.iterdir():  # the old model's files that the new one does not overwrite
            if entry.is_file() and is_model_file(entry.name) and entry.name not in new:
                entry.unlink()
        for name in sorted(new, key=lambda name: name in MODEL_MARKERS):
            if (target / name).is_dir():
                _remove(target / name)
            os.replace(staging / name, target / name)
        staging.rmdir()
        _fsync(target)
        return
    if target.exists():
        aside = parent / f"{_REPLACED_PREFIX}{target.name}"
        _remove(aside)
        os.rename(target, aside)
        os.rename(staging, target)
        _fsync(parent)
        _remove(aside)
    else:
        os.rename(staging, target)
    _fsync(parent)


# ---------------------------------------------------------------------------------- checkpoints


def is_complete_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a complete Trainer checkpoint: a visible ``checkpoint-N`` folder holding
    ``trainer_state.json`` (the Trainer writes it after the model, optimizer and random states)."""
    path = Path(path)
    return bool(_CHECKPOINT.match(path.name)) and path.is_dir() and (path / _TRAINER_STATE).is_file()


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """The newest complete checkpoint in ``output_dir`` (highest N of ``checkpoint-N`` among those that
    :func:`is_complete_checkpoint` accepts), as a path string; None when there is none. Partial folders,
    hidden or left by a writer without atomic saving, are skipped."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), entry) for entry in folder.iterdir() if (m := _CHECKPOINT.match(entry.name))]
    for _, entry in sorted(found, reverse=True):
        if is_complete_checkpoint(entry):
            return str(entry)
    return None


def remove_partial_saves(output_dir: str | os.PathLike[str], subfolders: Iterable[str] = ("epochs",)) -> list[Path]:
    """Delete the ``.partial-*`` / ``.replaced-*`` leftovers of killed saves in ``output_dir`` and its
    ``subfolders``; returns what was removed."""
    removed: list[Path] = []
    for folder in [Path(output_dir), *(Path(output_dir) / name for name in subfolders)]:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith((PARTIAL_PREFIX, _REPLACED_PREFIX)):
                _remove(entry)
                removed.append(entry)
    if removed:
        logger.info("removed %d partial save(s) left by an interrupted run: %s", len(removed),
                    ", ".join(str(p) for p in removed))
    return removed


class AtomicCheckpoints:
    """``transformers.Trainer`` mixin (``class MyTrainer(AtomicCheckpoints, Trainer)``): checkpoints appear
    complete or not at all, and ``train(resume_from_checkpoint=True)`` resumes from the newest complete
    one. See the module docstring for how; :meth:`save_checkpoint_extras` is the hook for a subclass's own
    per-rank files."""

    _checkpoint_staging: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        # The Trainer builds every checkpoint path as _get_output_dir(trial)/checkpoint-N: while a
        # checkpoint is being written, that folder is the hidden staging one.
        if self._checkpoint_staging is not None:
            return self._checkpoint_staging
        return super()._get_output_dir(trial)

    def save_checkpoint_extras(self, folder: Path) -> None:
        """Write a subclass's own files into the checkpoint ``folder`` (still hidden; called on every rank
        after the Trainer's files, before the rename). Nothing by default."""

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        run_dir = Path(self._get_output_dir(trial))
        name = f"checkpoint-{self.state.global_step}"
        staging = run_dir / f"{PARTIAL_PREFIX}{name}"
        main = self.args.should_save
        if main:
            _remove(staging)
        self.accelerator.wait_for_everyone()
        with saving(run_dir / name, staging if main else None, _RESUME_HINT):
            self._checkpoint_staging = str(staging)
            try:
                super()._save_checkpoint(model, trial)
                self.save_checkpoint_extras(staging / name)
            finally:
                self._checkpoint_staging = None
            best = self.state.best_model_checkpoint
            if best is not None and Path(best).parent == staging:  # the Trainer saw the staging folder as the run's
                self.state.best_model_checkpoint = str(run_dir / Path(best).name)
                if main:
                    self.state.save_to_json(str(staging / name / _TRAINER_STATE))
            self.accelerator.wait_for_everyone()
            if main:
                _publish(staging / name, run_dir / name)  # renamed, or swapped with a checkpoint-N of an older try
                staging.rmdir()
                _fsync(run_dir)
        if main:
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        """``Trainer.train``; ``resume_from_checkpoint=True`` means :func:`latest_checkpoint` of
        ``output_dir`` (:class:`~lm_runs.launcher.UsageError` when there is none), and leftovers of killed
        saves are removed first."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = latest_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                from lm_runs.launcher import UsageError  # the launcher imports this module

                raise UsageError(f"--resume_from_checkpoint true: no complete checkpoint in {self.args.output_dir}")
        if self.args.should_save:
            remove_partial_saves(self.args.output_dir)
        self.accelerator.wait_for_everyone()
        return super().train(resume_from_checkpoint=resume_from_checkpoint or None, **kwargs)


# ---------------------------------------------------------------------------------- model folders


def _is_trainer(source: Any) -> bool:
    return hasattr(source, "save_model") and hasattr(source, "accelerator")


def save_model_atomically(source: Any, path: str | os.PathLike[str], *, tokenizer: Any = None) -> Path:
    """Save a model folder that appears complete or not at all.

    ``source`` is a ``transformers.Trainer`` (``source.save_model`` on every rank — it gathers ZeRO-3
    shards — and the saving process publishes; the Trainer's ``processing_class`` is saved with it) or a
    model with ``save_pretrained`` (this process alone). ``tokenizer``, when given, is saved into the
    folder too. The files go to the hidden sibling ``.partial-<name>`` and are then published to ``path``
    (see the module docstring). Returns ``path``; a failed write is :class:`SaveError` (:func:`saving`).
    """
    target = Path(path)
    staging = _staging_for(target)
    trainer = source if _is_trainer(source) else None
    main = trainer.args.should_save if trainer is not None else True
    with saving(target, staging if main else None, "nothing half-written is left under that name"):
        if main:
            target.parent.mkdir(parents=True, exist_ok=True)
            _remove(staging)
        if trainer is not None:
            trainer.accelerator.wait_for_everyone()
            trainer.save_model(str(staging))
        else:
            source.save_pretrained(str(staging))
        if main and tokenizer is not None:
            tokenizer.save_pretrained(str(staging))
        if trainer is not None:
            trainer.accelerator.wait_for_everyone()
        if main:
            _publish(staging, target)
    if trainer is not None:
        trainer.accelerator.wait_for_everyone()
    return target


def save_final_model(trainer: Any, output_dir: str | os.PathLike[str], use_peft: bool) -> Path:
    """Write the trained model and tokenizer to ``output_dir`` (safetensors, atomically as
    :func:`save_model_atomically`) so ``from_pretrained`` loads a plain model: LoRA adapters are merged
    first. Under DeepSpeed ZeRO-3 with LoRA the parameters are sharded and cannot be merged here, so the
    adapter is saved instead (with a warning)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if use_peft and not is_deepspeed_zero3_enabled():
        model = trainer.accelerator.unwrap_model(trainer.model)
        merged = model.merge_and_unload()
        if trainer.is_world_process_zero():
            save_model_atomically(merged, output_dir, tokenizer=trainer.processing_class)
        trainer.accelerator.wait_for_everyone()
        return Path(output_dir)
    if use_peft:
        logger.warning("LoRA under ZeRO-3: saving the adapter to %s; merge it with peft before from_pretrained", output_dir)
    return save_model_atomically(trainer, output_dir)
