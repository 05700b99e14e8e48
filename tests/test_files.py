"""egpo_core.files: content, permission bits under the umask, and nothing half-written on failure."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from egpo_core.files import atomic_path, atomic_write


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore the previous one afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def test_text_bytes_and_file_callback_contents(tmp_path):
    text = "β = 0.01\nline two\n"
    assert atomic_write(tmp_path / "a.txt", text) == tmp_path / "a.txt"
    assert (tmp_path / "a.txt").read_bytes() == text.encode("utf-8")
    atomic_write(tmp_path / "b.txt", text, encoding="utf-16")
    assert (tmp_path / "b.txt").read_text(encoding="utf-16") == text
    atomic_write(tmp_path / "c.bin", bytes(range(256)))
    assert (tmp_path / "c.bin").read_bytes() == bytes(range(256))
    P = np.array([[0.5, 0.25], [0.75, 0.5]])
    atomic_write(tmp_path / "d.npz", lambda f: np.savez(f, P=P))
    np.testing.assert_array_equal(np.load(tmp_path / "d.npz")["P"], P)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "c.bin", "d.npz"]


def test_atomic_path_keeps_the_suffix_for_writers_choosing_a_format_by_name(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    with atomic_path(tmp_path / "fig.pdf") as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".pdf" and temporary.exists()
        fig.savefig(temporary)
    plt.close(fig)
    assert (tmp_path / "fig.pdf").read_bytes().startswith(b"%PDF")
    assert [p.name for p in tmp_path.iterdir()] == ["fig.pdf"]


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_gets_plain_open_mode_under_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write(tmp_path / "atomic.txt", "x")
    with atomic_path(tmp_path / "via_path.txt") as temporary:
        temporary.write_text("x")
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    assert _mode(tmp_path / "plain.txt") == expected  # what open() gives: 0o666 & ~umask
    assert _mode(tmp_path / "atomic.txt") == expected
    assert _mode(tmp_path / "via_path.txt") == expected


def test_replacing_keeps_the_old_files_permission_bits(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "shared.csv"
    target.write_text("old")
    os.chmod(target, 0o640)
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert _mode(target) == 0o640  # open(target, "w") would keep 0o640 too


def test_failure_midway_leaves_old_file_intact_and_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.write_text('{"old": true}')

    def write_half_then_fail(handle):
        handle.write(b'{"new": ')
        raise RuntimeError("disk full, say")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, write_half_then_fail)
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]

    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temporary:
            temporary.write_text("partial")
            raise KeyboardInterrupt
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_failure_on_a_new_target_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        atomic_write(tmp_path / "new.txt", lambda handle: (handle.write(b"abc"), int("not a number")))
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_and_bad_content_are_named(tmp_path):
    missing = tmp_path / "nowhere" / "file.txt"
    with pytest.raises(FileNotFoundError, match=str(missing.parent)):
        atomic_write(missing, "x")
    with pytest.raises(TypeError, match="got int"):
        atomic_write(tmp_path / "x.txt", 3)
    assert list(tmp_path.iterdir()) == []


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, egpo_core.files; print(sorted({'numpy', 'torch', 'pandas'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_write_jsonl_writes_one_object_per_line_keeping_unicode(tmp_path):
    from egpo_core.files import write_jsonl

    path = write_jsonl(tmp_path / "rows.jsonl", ({"prompt": p, "i": i} for i, p in enumerate(["héllo", "x"])))
    assert path.read_bytes() == '{"prompt": "héllo", "i": 0}\n{"prompt": "x", "i": 1}\n'.encode()
    assert os.listdir(tmp_path) == ["rows.jsonl"]


def test_write_jsonl_leaves_the_old_file_when_a_row_is_not_json(tmp_path):
    from egpo_core.files import write_jsonl

    path = write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
    with pytest.raises(TypeError):
        write_jsonl(path, [{"a": 2}, {"b": object()}])
    assert path.read_text() == '{"a": 1}\n' and os.listdir(tmp_path) == ["rows.jsonl"]
