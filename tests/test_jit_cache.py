"""A user without a writable home or package folder can run the simulator (egpo_core._jit_cache).

The package is copied into a temporary folder that is then made read-only, and so is HOME: as an
ordinary user by permission bits, as root (whom permission bits do not stop) by read-only bind
mounts in a private mount namespace. Before the fallback, ``python -m egpo_core presets`` died there
with numba's "cannot cache function '_next_uniform'".
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import egpo_core

PACKAGE = Path(egpo_core.__file__).parent


def _read_only_run(tmp_path: Path, args: list[str], *, writable_tmp: bool) -> subprocess.CompletedProcess:
    """``python -m egpo_core *args`` with the package and HOME (and TMPDIR unless ``writable_tmp``)
    read-only, XDG_CACHE_HOME and NUMBA_CACHE_DIR unset."""
    root, home, tmp = tmp_path / "site", tmp_path / "home", tmp_path / "tmp"
    shutil.copytree(PACKAGE, root / "egpo_core", ignore=shutil.ignore_patterns("__pycache__"))
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(root), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    locked = [root, home] + ([] if writable_tmp else [tmp])
    python = [sys.executable, "-m", "egpo_core", *args]
    if os.geteuid() != 0:
        for folder in locked:
            for path in [folder, *folder.rglob("*")]:
                path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
        command = python
    else:
        if shutil.which("unshare") is None:
            pytest.skip("root without unshare: cannot make a folder read-only for this test")
        mounts = " && ".join(f"mount --bind {f} {f} && mount -o remount,bind,ro {f} {f}" for f in locked)
        probe = f"if touch {root}/egpo_core/probe 2>/dev/null; then exit 99; fi"
        command = ["unshare", "-m", "sh", "-c", f'{mounts} && {probe} && exec "$0" "$@"', *python]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    finally:
        if os.geteuid() != 0:
            for folder in locked:
                for path in [folder, *folder.rglob("*")]:
                    path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)
    if os.geteuid() == 0 and done.returncode == 1 and "unshare" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    assert done.returncode != 99, "the package folder is still writable: the test would prove nothing"
    return done


@pytest.mark.parametrize("writable_tmp", [True, False], ids=["temporary-cache", "no-cache"])
def test_presets_runs_without_a_writable_home_or_package_folder(tmp_path, writable_tmp):
    done = _read_only_run(tmp_path, ["presets"], writable_tmp=writable_tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exact-tabular-beta0.01" in done.stdout and done.stderr == ""
    cache = tmp_path / "tmp" / f"egpo-numba-cache-{os.getuid()}"
    assert cache.is_dir() == writable_tmp
    if writable_tmp:
        assert stat.S_IMODE(cache.stat().st_mode) == 0o700  # a compiled cache is code: this user's alone


@pytest.mark.slow
def test_a_simulation_compiles_into_the_temporary_cache(tmp_path):
    out = tmp_path / "run"
    done = _read_only_run(tmp_path, ["simulate", "--preset", "exact-tabular-beta0.1", "--iterations", "3",
                                     "--no-figures", "--no-progress", "--out", str(out)], writable_tmp=True)
    assert done.returncode == 0, done.stderr[-3000:]
    cache = tmp_path / "tmp" / f"egpo-numba-cache-{os.getuid()}"
    assert any(p.suffix == ".nbi" for p in cache.rglob("*"))  # numba's cache index: the next run loads it


def test_a_cache_folder_someone_else_can_write_is_not_used(tmp_path, monkeypatch):
    from egpo_core import _jit_cache

    monkeypatch.setattr(_jit_cache.tempfile, "gettempdir", lambda: str(tmp_path))
    shared = tmp_path / f"egpo-numba-cache-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    assert _jit_cache._private_temporary() is None
    shared.chmod(0o700)
    assert _jit_cache._private_temporary() == shared
