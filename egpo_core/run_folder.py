"""A run folder is replaced only once the new run is complete: written aside, then moved in.

A folder holding a saved run (``run.json`` listing the run's files, beside which the user may keep
files of their own) is rewritten in three steps:

1. :func:`begin_replacement` makes an empty hidden folder ``<folder>/.egpo-new-run`` (same file
   system, so moving out of it is a rename); the new run's files are written there, each atomically,
   ``run.json`` last. Until that ``run.json`` exists the new run does not exist: a kill or a full
   disk leaves the previous run as it was, and the incomplete folder is removed by the next
   :func:`finish_replacement`.
2. Once the aside folder holds its ``run.json``, the new run is the folder's run.
   :func:`run_path` (through which :func:`egpo_core.results.load_result` reads) then takes each
   listed file from the aside folder while it is still there, from the folder once moved, so a reader
   sees the new run whole at every moment of step 3 and never a mix of two runs.
3. :func:`finish_replacement` moves the new files into the folder, removes the previous run's files
   that the new run does not have, moves ``run.json`` last and removes the aside folder. It is
   idempotent: run again after a kill at any point of it, it completes the same replacement (the
   command line does so before it checks an output folder, so a half-replaced folder is accepted as
   the run it holds).

Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .files import fsync_directory

__all__ = ["RUN_FILE", "ASIDE", "run_files", "run_path", "begin_replacement", "finish_replacement",
           "discard_replacement"]

#: The file that marks a folder as a saved run and lists the run's files (``files``).
RUN_FILE = "run.json"

#: The hidden folder a new run is written into before it replaces the previous one.
ASIDE = ".egpo-new-run"


def run_files(stamp: str | os.PathLike[str]) -> list[str]:
    """The names listed as the run's files by the ``run.json`` at ``stamp`` (names inside its folder
    only: anything with a path separator is ignored). Raises ``ValueError`` when the file is not a
    run.json that lists its files."""
    try:
        listed = json.loads(Path(stamp).read_text())["files"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{stamp} does not list the files of its run") from None
    if not isinstance(listed, list):
        raise ValueError(f"{stamp} does not list the files of its run")
    return [name for name in listed if isinstance(name, str) and name and Path(name).name == name]


def run_path(folder: str | os.PathLike[str], name: str) -> Path:
    """Where the file ``name`` of the run in ``folder`` is: in the aside folder when a complete new
    run is there and the file not yet moved (step 2 above), else in ``folder``."""
    folder = Path(folder)
    aside = folder / ASIDE
    if (aside / RUN_FILE).is_file() and (aside / name).exists():
        return aside / name
    return folder / name


def begin_replacement(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` if needed and an empty aside folder in it (a leftover one is first finished
    or discarded, :func:`finish_replacement`); returns the aside folder to write the new run into."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    finish_replacement(folder)
    aside = folder / ASIDE
    aside.mkdir()
    return aside


def discard_replacement(folder: str | os.PathLike[str]) -> None:
    """Remove an aside folder whose run is not complete (no-op without one); the previous run stays."""
    aside = Path(folder) / ASIDE
    if aside.is_dir() and not (aside / RUN_FILE).is_file():
        shutil.rmtree(aside, ignore_errors=True)


def finish_replacement(folder: str | os.PathLike[str]) -> None:
    """Complete a replacement begun in ``folder``: a complete new run (its ``run.json`` written)
    replaces the previous one; an incomplete one is removed. No-op when there is none."""
    folder = Path(folder)
    aside = folder / ASIDE
    if not aside.is_dir():
        return
    stamp = aside / RUN_FILE
    if not stamp.is_file():
        shutil.rmtree(aside)
        return
    new = run_files(stamp)
    try:
        old = run_files(folder / RUN_FILE) if (folder / RUN_FILE).is_file() else []
    except ValueError:  # a previous run.json without its list: nothing of it is known to remove
        old = []
    for name in new:
        if name != RUN_FILE and (aside / name).exists():
            os.replace(aside / name, folder / name)
    for name in old:
        if name not in new:
            (folder / name).unlink(missing_ok=True)
    fsync_directory(folder)  # the moved files are in place before run.json says they are
    os.replace(stamp, folder / RUN_FILE)
    fsync_directory(folder)
    shutil.rmtree(aside)
