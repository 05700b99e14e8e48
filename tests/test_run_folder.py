"""A run folder is replaced only once the new run is complete (egpo_core.run_folder).

Oracles: the previous run and the new one are computed apart first; after a failure or a kill at
any moment, the folder must load as exactly one of them (the same arrays, bit for bit, the same
summary.csv), and a rerun of ``simulate --overwrite`` must succeed and leave exactly the new run's
files beside the user's own. Kills are real SIGKILLs of a ``simulate --overwrite`` process at the
k-th rename of the write (a file written aside, a file moved in, run.json last; every k in the
slow test) and, in another slow test, after varied delays.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from egpo_core import cli
from egpo_core.results import load_result
from egpo_core.run_folder import ASIDE, RUN_FILE, begin_replacement, finish_replacement, run_path

BASE = ["simulate", "--preset", "exact-tabular-beta0.1", "--iterations", "30", "--no-progress"]
OLD = ["--algorithms", "egpo"]  # parquet, figures: the previous run
NEW = ["--algorithms", "oipo1,nash_md", "--format", "csv", "--no-figures"]  # the old metrics and figures must go


def _main(*args) -> int:
    try:
        return cli.main(list(args))
    except SystemExit as exit_:
        return exit_.code


def _fingerprint(folder: Path) -> tuple:
    """What a reader of the folder gets: the loaded arrays and the summary of the same run."""
    res = load_result(folder)
    summary = pd.read_csv(run_path(folder, "summary.csv"))
    return (res.algorithms, res.steps.tolist(), {k: v.tobytes() for k, v in res.values.items()},
            summary["algorithm"].tolist(), summary["median_final"].tolist())


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The previous and the new run, each written alone once: (fingerprint, files) of each."""
    found = {}
    for name, extra in (("old", OLD), ("new", NEW)):
        folder = tmp_path_factory.mktemp(name) / "run"
        assert _main(*BASE, *extra, "--out", str(folder)) == 0
        found[name] = (_fingerprint(folder), _files(folder))
    assert found["old"][0] != found["new"][0]
    return found


def _previous_run(folder: Path) -> None:
    assert _main(*BASE, *OLD, "--out", str(folder)) == 0
    (folder / "my_notes.txt").write_text("mine")


def _assert_one_run_then_rerun(folder: Path, runs) -> str:
    """The folder loads as the old or the new run, whole; a rerun with --overwrite gives the new one
    with exactly its files. Returns which run the folder held."""
    seen = _fingerprint(folder)
    held = next((name for name, (fingerprint, _) in runs.items() if seen == fingerprint), None)
    assert held is not None, f"the folder loads as neither run: {seen[0]}"
    assert _main(*BASE, *NEW, "--out", str(folder), "--overwrite") == 0
    assert _fingerprint(folder) == runs["new"][0]
    assert _files(folder) == sorted([*runs["new"][1], "my_notes.txt"])  # no aside folder, no old file
    assert (folder / "my_notes.txt").read_text() == "mine"
    return held


# ----------------------------------------------------------------------------------------------------
# a full disk


@pytest.mark.parametrize("name", ["metrics.csv", pytest.param("summary.csv", marks=pytest.mark.slow),
                                  pytest.param("run.json", marks=pytest.mark.slow)])  # one in make test
def test_a_full_disk_is_one_line_naming_the_path_and_keeps_the_previous_run(tmp_path, monkeypatch, capsys, runs,
                                                                              name):
    """ENOSPC as the kernel reports it (no file name, on flushing the written data) while one of the
    new run's files is written aside."""
    folder = tmp_path / "run"
    _previous_run(folder)
    before = {f: (folder / f).read_bytes() for f in _files(folder)}
    import egpo_core.files as files

    real_fsync = files._fsync_file
    stem, suffix = os.path.splitext(name)

    def full_disk(path):
        if Path(path).name.startswith(f".{stem}.") and Path(path).name.endswith(suffix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(path)

    monkeypatch.setattr(files, "_fsync_file", full_disk)
    capsys.readouterr()
    assert _main(*BASE, *NEW, "--out", str(folder), "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: cannot write {folder / ASIDE / name}: No space left on device;"), err
    assert {f: (folder / f).read_bytes() for f in _files(folder)} == before  # untouched, no aside folder left
    monkeypatch.undo()
    assert _assert_one_run_then_rerun(folder, runs) == "old"


@pytest.mark.parametrize("code", [errno.EDQUOT, errno.EROFS])
def test_any_oserror_while_writing_is_one_line(tmp_path, monkeypatch, capsys, code):
    import egpo_core.results as results

    def failing(self, folder, fmt, extra_files):
        raise OSError(code, os.strerror(code), str(folder / "metrics.parquet"))

    monkeypatch.setattr(results.SimulationResult, "_write", failing)
    assert _main(*BASE, *OLD, "--no-figures", "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and os.strerror(code) in err and "metrics.parquet" in err
    assert _files(tmp_path / "run") == []  # the aside folder is gone: nothing half written


# ----------------------------------------------------------------------------------------------------
# kills

# Runs the command line in a fresh process that SIGKILLs itself at the k-th os.replace of the write
# (egpo_core.files' and egpo_core.run_folder's: a file written aside, a file moved in, run.json last).
_KILLER = """
import os, signal, sys
import egpo_core.files, egpo_core.run_folder
k, calls = int(sys.argv[1]), [0]
class Os:
    def __getattr__(self, name):
        return getattr(os, name)
    def replace(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return os.replace(*args, **kwargs)
egpo_core.files.os = egpo_core.run_folder.os = Os()
from egpo_core.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _killed_run(folder: Path, k: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _KILLER, str(k), *BASE, *NEW, "--out", str(folder),
                           "--overwrite"], capture_output=True, text=True, timeout=300)


# The new run writes metrics, summary and run.json aside (renames 1–3), then moves metrics and summary
# in (4–5) and run.json last (6): killed at renames 1–3 the folder holds the old run, from 4 on the new.
RENAMES = 6


def _kill_at(tmp_path: Path, runs, k: int) -> str:
    folder = tmp_path / f"k{k}"
    _previous_run(folder)
    out = _killed_run(folder, k)
    if k <= RENAMES:
        assert out.returncode == -signal.SIGKILL, (k, out.returncode, out.stderr[-2000:])
        if k > 3:  # killed mid-replacement: a half-replaced folder, the previous run.json still on top
            assert (folder / ASIDE / RUN_FILE).is_file()
            # the previous run's own files (metrics.parquet, figures) go just before run.json moves in
            assert (folder / "metrics.parquet").exists() == (k < RENAMES)
    else:
        assert out.returncode == 0, out.stderr  # there are exactly RENAMES renames
    return _assert_one_run_then_rerun(folder, runs)


@pytest.mark.parametrize("k,held", [(2, "old"), pytest.param(5, "new", marks=pytest.mark.slow)])
def test_sigkill_while_writing_aside_or_moving_in_leaves_one_whole_run(tmp_path, runs, k, held):
    assert _kill_at(tmp_path, runs, k) == held


@pytest.mark.slow
def test_sigkill_at_every_rename_leaves_one_whole_run_and_a_rerun_replaces_it(tmp_path, runs):
    held = {k: _kill_at(tmp_path, runs, k) for k in range(1, RENAMES + 2)}
    assert held == {k: "old" if k <= 3 else "new" for k in held}


def test_a_first_run_killed_before_it_is_complete_leaves_a_folder_that_is_reused(tmp_path, runs):
    folder = tmp_path / "run"
    out = subprocess.run([sys.executable, "-c", _KILLER, "2", *BASE, *NEW, "--out", str(folder)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == -signal.SIGKILL
    assert _files(folder) == [ASIDE]
    with pytest.raises(FileNotFoundError, match="holds no run.json"):
        load_result(folder)
    assert _main(*BASE, *NEW, "--out", str(folder)) == 0  # no --overwrite needed: there was no run
    assert _fingerprint(folder) == runs["new"][0]


@pytest.mark.slow
def test_sigkill_after_varied_delays(tmp_path, runs):
    """Kills by the clock, whatever the write is doing then (computing, plotting, writing, moving)."""
    outcomes = []
    for delay in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.5):
        folder = tmp_path / f"d{delay}"
        _previous_run(folder)
        process = subprocess.Popen([sys.executable, "-m", "egpo_core", *BASE, *NEW, "--out", str(folder),
                                    "--overwrite"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        outcomes.append(_assert_one_run_then_rerun(folder, runs))
    assert "old" in outcomes  # the early kills at least interrupted a run


# ----------------------------------------------------------------------------------------------------
# the protocol itself


def _stamp(folder: Path, files: list[str], tag: str) -> None:
    for name in files:
        if name != RUN_FILE:
            (folder / name).write_text(f"{tag} {name}")
    (folder / RUN_FILE).write_text(json.dumps({"files": files, "tag": tag}))


def test_finish_replacement_is_idempotent_and_removes_only_listed_old_files(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    _stamp(folder, ["a.csv", "old_only.png", RUN_FILE], "old")
    (folder / "notes.txt").write_text("mine")
    aside = begin_replacement(folder)
    _stamp(aside, ["a.csv", "b.csv", RUN_FILE], "new")
    # a reader already sees the new run, whole, before anything is moved
    assert run_path(folder, "a.csv").read_text() == "new a.csv"
    assert json.loads(run_path(folder, RUN_FILE).read_text())["tag"] == "new"
    os.replace(aside / "a.csv", folder / "a.csv")  # as if killed after the first move
    assert run_path(folder, "a.csv").read_text() == "new a.csv" and run_path(folder, "b.csv").read_text() == "new b.csv"
    finish_replacement(folder)
    finish_replacement(folder)
    assert _files(folder) == ["a.csv", "b.csv", "notes.txt", RUN_FILE]
    assert json.loads((folder / RUN_FILE).read_text())["tag"] == "new"


def test_an_incomplete_aside_folder_is_discarded(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    _stamp(folder, ["a.csv", RUN_FILE], "old")
    aside = begin_replacement(folder)
    (aside / "a.csv").write_text("half")
    assert run_path(folder, "a.csv").read_text() == "old a.csv"
    finish_replacement(folder)
    assert _files(folder) == ["a.csv", RUN_FILE] and (folder / "a.csv").read_text() == "old a.csv"


def test_saving_over_a_run_through_the_api_replaces_it_whole(tmp_path, runs):
    folder = tmp_path / "run"
    _previous_run(folder)
    res = load_result(folder)
    res.save(folder, "csv")
    assert _files(folder) == ["metrics.csv", "my_notes.txt", RUN_FILE, "summary.csv"]
    np.testing.assert_array_equal(load_result(folder).values["duality_gap"], res.values["duality_gap"])
