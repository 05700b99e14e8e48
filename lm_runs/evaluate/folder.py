"""The output folder of an evaluation: what it holds, refusing one that belongs to something else, and
reading and writing its files.

:class:`EvaluationFolder` knows the layout (``settings.json``, ``generations/``, ``judgements/``,
``tables/``, ``scores/`` with a reward-model judge, the tidy win rates and ``summary.json``: the package
docstring lists them), refuses a folder
that is a file, holds files that are not an evaluation's, or holds results of other settings, another
judge, other prompts or other weights under a model's name (unless ``overwrite``), and pins the
settings in ``settings.json``. Every file is written atomically (``egpo_core.files.atomic_write``);
a write that fails (a full disk) is :class:`~lm_runs.checkpoints.SaveError`, one line naming the file
and the cause, and leaves the file as it was.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Callable, ContextManager, Iterable, Mapping, Sequence

import numpy as np

from egpo_core.files import atomic_write, write_jsonl

from ..checkpoints import saving
from ..judges.base import identity_changes
from .settings import EvaluationError, ModelSpec

__all__ = ["SEPARATOR", "OUTPUT_NAMES", "file_stem", "read_jsonl", "EvaluationFolder"]

#: Between the two model names of a judgement file (``A__vs__B.jsonl``); no model name may hold it.
SEPARATOR = "__vs__"
#: What an evaluation writes into its output folder (``--overwrite`` removes exactly these).
OUTPUT_DIRS = ("generations", "judgements", "tables", "scores")
#: The sub-folders every evaluation creates (``scores/`` only appears with a reward-model judge).
CREATED_DIRS = ("generations", "judgements", "tables")
OUTPUT_FILES = ("settings.json", "summary.json", "winrates.csv", "winrates.parquet")
OUTPUT_NAMES = OUTPUT_DIRS + OUTPUT_FILES


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (blank lines skipped); a bad line is an :class:`EvaluationError` naming it."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise EvaluationError(f"{path}: line {number} is not JSON; delete the file to redo it") from None
    return rows


def file_stem(name: str) -> str:
    """A file-name-safe form of a model name (``run/epoch-3`` → ``run+epoch-3``)."""
    return re.sub(r"[^A-Za-z0-9._=-]", "+", name)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


class EvaluationFolder:
    """The files of one evaluation under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def generations_path(self, name: str) -> Path:
        """Where a model's responses are saved."""
        return self.root / "generations" / f"{file_stem(name)}.jsonl"

    def meta_path(self, name: str) -> Path:
        """Which model (by its identity) made the responses of ``name``."""
        return self.generations_path(name).with_suffix(".meta.json")

    def judgements_path(self, a: str, b: str) -> Path:
        """Where the judgements of a's responses against b's are saved."""
        return self.root / "judgements" / f"{file_stem(a)}{SEPARATOR}{file_stem(b)}.jsonl"

    def scores_path(self, name: str) -> Path:
        """Where a reward-model judge's rewards of a model's responses are saved."""
        return self.root / "scores" / f"{file_stem(name)}.jsonl"

    # -- writing -------------------------------------------------------------------------------

    def _saving(self, path: Path) -> ContextManager[None]:
        hint = f"what was generated and judged before is kept in {self.root}: make room and run the same command again to resume"
        return saving(path, hint=hint)

    def write(self, path: Path, content: str | bytes | Callable[[BinaryIO], object]) -> None:
        """``atomic_write(path, content)``; a failed write is :class:`~lm_runs.checkpoints.SaveError`."""
        with self._saving(path):
            atomic_write(path, content)

    def write_rows(self, path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
        """``write_jsonl(path, rows)``, a failed write as in :meth:`write`."""
        with self._saving(path):
            write_jsonl(path, rows)

    def write_json(self, path: Path, value: Any) -> None:
        """``value`` as indented JSON (numpy numbers as numbers, anything else unknown as its text)."""
        self.write(path, json.dumps(value, indent=2, default=_json_default) + "\n")

    # -- preparing -----------------------------------------------------------------------------

    def prepare(
        self,
        fingerprint: Mapping[str, Any],
        analysis: Mapping[str, Any],
        models: Sequence[ModelSpec],
        identities: Mapping[str, Any],
        overwrite: bool,
    ) -> None:
        """Refuse a folder that is a file, that holds files that are not an evaluation's, whose
        ``settings.json`` pins another ``fingerprint``, or whose generations of a model came from other
        weights than ``identities[name]`` (after removing the earlier results with ``overwrite``); then
        create the sub-folders and pin ``fingerprint`` and ``analysis`` in ``settings.json``."""
        out = self.root
        settings_file = out / "settings.json"
        if out.exists() and not out.is_dir():
            raise EvaluationError(f"--output_dir {out} is a file; give a folder (new, or one of an earlier evaluation)")
        if out.is_dir() and not settings_file.is_file():
            foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_NAMES and not p.name.startswith("."))
            if foreign:
                raise EvaluationError(
                    f"--output_dir {out} holds files that are not an evaluation's ({', '.join(foreign[:3])}"
                    f"{', ...' if len(foreign) > 3 else ''}); give a new or empty folder"
                )
        if overwrite:
            for sub in OUTPUT_DIRS:
                shutil.rmtree(out / sub, ignore_errors=True)
            for name in OUTPUT_FILES:
                (out / name).unlink(missing_ok=True)
        if settings_file.is_file():
            try:
                old = json.loads(settings_file.read_text())
            except json.JSONDecodeError:
                raise EvaluationError(f"{settings_file} is not JSON; use a new --output_dir or --overwrite") from None
            changes = identity_changes(old.get("fingerprint"), fingerprint)
            if changes:
                raise EvaluationError(
                    f"{out} holds results made with other settings ({'; '.join(changes)}); "
                    "use a new --output_dir, or --overwrite to discard them"
                )
        for m in models:
            meta = self.meta_path(m.name)
            if meta.is_file():
                saved = json.loads(meta.read_text())
                if saved.get("identity") != identities[m.name]:
                    raise EvaluationError(
                        f"{self.generations_path(m.name)} was generated by another model than {m.name} = {m.source} "
                        "(its weight files differ); use a new --output_dir, another name, or --overwrite"
                    )
        for sub in CREATED_DIRS:
            (out / sub).mkdir(parents=True, exist_ok=True)
        self.write(settings_file, json.dumps({"fingerprint": fingerprint, "analysis": analysis}, indent=2) + "\n")

    # -- reading -------------------------------------------------------------------------------

    def generations(self, name: str, n: int, K: int) -> dict[tuple[int, int], dict[str, Any]]:
        """The saved responses of ``name`` to prompts 0..n−1, samples 0..K−1, by (prompt, sample)."""
        path = self.generations_path(name)
        if not path.is_file():
            return {}
        rows = {}
        for r in read_jsonl(path):
            if 0 <= r["prompt"] < n and 0 <= r["sample"] < K:
                rows[(r["prompt"], r["sample"])] = r
        return rows

    def judgements(self, a: str, b: str) -> dict[tuple[int, int], dict[str, Any]]:
        """The saved judgements of a's responses against b's, by (prompt, sample)."""
        path = self.judgements_path(a, b)
        return {(r["prompt"], r["sample"]): r for r in read_jsonl(path)} if path.is_file() else {}

    def scores(self, name: str) -> dict[tuple[int, int], dict[str, Any]]:
        """The saved rewards of ``name``'s responses, by (prompt, sample)."""
        path = self.scores_path(name)
        return {(r["prompt"], r["sample"]): r for r in read_jsonl(path)} if path.is_file() else {}
