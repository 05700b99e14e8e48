"""Tests of egpo_core.game_io: every accepted format round-trips exactly, atomically, and every
malformed file is refused with one ValueError naming the file (and line) and the expected format."""

from __future__ import annotations

import os
import re
import stat

import numpy as np
import pytest

from egpo_core.game_io import load_games, save_games
from egpo_core.games import random_games, rock_paper_scissors


def test_text_round_trip_exact(tmp_path):
    P = random_games(3, 5, 1)
    ref = np.random.default_rng(0).standard_normal((3, 5)) * 1e-3
    names = ["a", "seed 2 run 1", "c"]
    path = tmp_path / "games.txt"
    save_games(path, P, ref, names)
    P2, ref2, names2 = load_games(path)
    np.testing.assert_array_equal(P2, P)
    np.testing.assert_array_equal(ref2, ref)
    assert names2 == names
    lines = path.read_text().splitlines()
    assert lines[0] == "3 5" and lines[1] == "run a" and lines[7] == "run seed 2 run 1"
    assert lines[-4] == "ref_logits" and len(lines) == 1 + 3 * 6 + 1 + 3
    assert os.listdir(tmp_path) == ["games.txt"]  # no temporary file left behind


def test_text_without_ref_and_default_names(tmp_path):
    P = rock_paper_scissors()[0]  # a single (N, N) matrix is one run
    save_games(tmp_path / "g.txt", P)
    P2, ref2, names2 = load_games(str(tmp_path / "g.txt"))
    np.testing.assert_array_equal(P2, P[None])
    assert ref2 is None and names2 == ["0"]  # no ref_logits: π_ref uniform


def test_comments_and_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("# two actions\n\n1 2\nrun only\n0.5 0.25\n\n0.75 0.5\n# end\n")
    P, ref, names = load_games(path)
    np.testing.assert_array_equal(P, [[[0.5, 0.25], [0.75, 0.5]]])
    assert ref is None and names == ["only"]


def test_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        for name in ["g.txt", "g.npz", "g.npy"]:
            save_games(tmp_path / name, random_games(1, 3, 0))
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
    finally:
        os.umask(old)


def test_overwrite_is_atomic_replacement(tmp_path):
    path = tmp_path / "g.txt"
    save_games(path, random_games(2, 3, 0))
    save_games(path, random_games(1, 4, 1))
    assert load_games(path)[0].shape == (1, 4, 4)
    with pytest.raises(ValueError):
        save_games(path, np.full((2, 3), 0.5))  # invalid: nothing written
    assert load_games(path)[0].shape == (1, 4, 4)
    assert os.listdir(tmp_path) == ["g.txt"]


def test_npz_round_trip_exact(tmp_path):
    P = random_games(4, 6, 2)
    ref = np.random.default_rng(1).standard_normal((4, 6))
    path = tmp_path / "games.npz"
    save_games(path, P, ref, ["w", "x", "y", "z"])
    P2, ref2, names2 = load_games(path)
    np.testing.assert_array_equal(P2, P)
    np.testing.assert_array_equal(ref2, ref)
    assert names2 == ["w", "x", "y", "z"]
    with np.load(path) as data:
        assert set(data.files) == {"P", "ref_logits", "names"}
    save_games(path, P)
    assert load_games(path)[1] is None
    assert os.listdir(tmp_path) == ["games.npz"]


def test_plain_matrix_from_savetxt(tmp_path):
    P = random_games(1, 5, 3)[0]
    path = tmp_path / "matrix.txt"
    np.savetxt(path, P)  # "%.18e": float64 round-trips
    P2, ref, names = load_games(path)
    np.testing.assert_array_equal(P2, P[None])
    assert ref is None and names == ["0"]


@pytest.mark.parametrize("shape", [(5, 5), (3, 5, 5)])
def test_npy_from_np_save(tmp_path, shape):
    P = random_games(3, 5, 4)[: shape[0]] if len(shape) == 3 else random_games(1, 5, 4)[0]
    path = tmp_path / "P.npy"
    np.save(path, P)
    P2, ref, names = load_games(path)
    np.testing.assert_array_equal(P2, P.reshape((-1, 5, 5)))
    assert ref is None and names == [str(r) for r in range(P2.shape[0])]
    save_games(path, P)  # and save_games writes the same format
    np.testing.assert_array_equal(np.load(path), P.reshape((-1, 5, 5)))


def test_npz_with_a_single_matrix_and_a_shared_reference_row(tmp_path):
    P = rock_paper_scissors()[0]
    path = tmp_path / "one.npz"
    np.savez(path, P=P, ref_logits=np.array([0.0, 1.0, 2.0]))
    P2, ref, names = load_games(path)
    np.testing.assert_array_equal(P2, P[None])
    np.testing.assert_array_equal(ref, [[0.0, 1.0, 2.0]])
    assert names == ["0"]


def test_format_follows_content_not_suffix(tmp_path):
    P = random_games(2, 3, 5)
    npz_named_txt = tmp_path / "games.txt"
    with open(npz_named_txt, "wb") as f:
        np.savez(f, P=P)
    np.testing.assert_array_equal(load_games(npz_named_txt)[0], P)
    npy_named_dat = tmp_path / "games.dat"
    with open(npy_named_dat, "wb") as f:
        np.save(f, P)
    np.testing.assert_array_equal(load_games(npy_named_dat)[0], P)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d, P: save_games(d / "g.txt", P, np.zeros((2, 4))),
         "ref_logits has 4 entries on its last axis (shape (2, 4)), but the game has N = 3"),
        (lambda d, P: save_games(d / "g.txt", P, np.zeros((3, 3))), "ref_logits has shape (3, 3), but P has shape (2, 3, 3)"),
        (lambda d, P: save_games(d / "g.txt", P, np.full((2, 3), np.nan)), "ref_logits[0, 0] = nan is not finite"),
        (lambda d, P: save_games(d / "g.txt", P, names=["a"]), "names must have one entry per run (2), got 1"),
        (lambda d, P: save_games(d / "g.txt", P, names=["a", "b\nc"]), "names[1] = 'b\\nc'"),
        (lambda d, P: save_games(d / "g.txt", P, names=["a", " b"]), "names[1] = ' b'"),
        (lambda d, P: save_games(d / "g.npy", P, np.zeros((2, 3))), "a .npy file holds P only"),
        (lambda d, P: save_games(d / "g.txt", P + 0.1), "is outside [0, 1]"),
    ],
    ids=["ref_length", "ref_runs", "ref_nan", "names_count", "names_newline", "names_space", "npy_with_ref", "bad_P"],
)
def test_save_rejects_bad_arguments_and_writes_nothing(tmp_path, call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(tmp_path, random_games(2, 3, 0))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty file; expected save_games' text format"),
        ("# only a comment\n", "empty file"),
        ("2\n", "(a plain 1 × 1 matrix): P[0, 0] = 2 is outside [0, 1]"),
        ("0 5\n", "line 1: expected a header '<runs> <N>' of positive integers"),
        ("1 2\nrun a\n0.5 0.5\n", "line 4: unexpected end of file, expected row 1 of run 0"),
        ("1 2\nrunner a\n0.5 0.5\n0.5 0.5\n", "line 2: expected 'run <name>' for run 0"),
        ("1 2\nrun a\n0.5 0.5 0.5\n0.5 0.5\n", "line 3: expected 2 numbers (row 0 of run 0), got 3"),
        ("1 2\nrun a\n0.5 x\n0.5 0.5\n", "line 3: not a row of numbers (row 0 of run 0)"),
        ("1 2\nrun a\n0.5 0.9\n0.5 0.5\n", "lines 3-4 (run 0): P[0, 1] + P[1, 0] = 1.4, must be 1"),
        ("1 2\nrun a\n0.5 0.4\n0.5 0.5\n", "lines 3-4 (run 0): P[0, 1] + P[1, 0] = 0.9, must be 1"),
        ("1 2\nrun a\n0.5 0.5\n0.5 0.5\nextra\n", "line 5: expected 'ref_logits' or end of file"),
        ("1 2\nrun a\n0.5 0.5\n0.5 0.5\nref_logits\n1 nan\n", "line 6: ref_logits must be finite"),
        ("1 2\nrun a\n0.5 0.5\n0.5 0.5\nref_logits\n1 2\n3 4\n", "line 7: unexpected content"),
        ("0.5 0.5\n0.5 0.5\n0.5 0.5\n", "read as a plain matrix (line 1 is not a header '<runs> <N>'), it must have N = 2 rows"),
        ("0.5 0.5\n0.5\n", "line 2: expected 2 numbers (row 1 of a plain 2 × 2 matrix), got 1"),
        ("0.5 0.3\n0.7 0.5 x\n", "line 2: expected 2 numbers (row 1 of a plain 2 × 2 matrix), got 3"),
        ("games 0.5\n0.5 0.5\n", "line 1: not a row of numbers (row 0 of a plain 2 × 2 matrix)"),
        ("0.5 0.3\n0.6 0.5\n", "(a plain 2 × 2 matrix): P[0, 1] + P[1, 0] = 0.9, must be 1"),
        ("0.5,0.3\n0.7,0.5\n", "line 1: comma-separated numbers ('0.5,0.3'): a CSV file; the text formats separate "
                               "numbers by spaces"),
        ("1 2\nrun a,b\n0.5 0.3\n0.7, 0.5\n", "line 4: comma-separated numbers ('0.7, 0.5')"),  # a name may hold one
        ("0.5 0.4\n0.6 0.6\n", "(a plain 2 × 2 matrix): P[1, 1] = 0.6 is on the diagonal and must be 0.5"),
    ],
)
def test_malformed_text_is_refused_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_games(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def _npz(path, **arrays):
    np.savez(path, **arrays)


P_BAD_SUM = random_games(1, 3, 0)
P_BAD_SUM[0, 0, 1] = 0.9


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: _npz(p, Q=np.zeros(3)), "missing array 'P' (found ['Q']); expected save_games' text format"),
        (lambda p: _npz(p, P=random_games(1, 3, 0), extra=np.zeros(2)), "unexpected arrays ['extra']"),
        (lambda p: _npz(p, P=P_BAD_SUM), "(.npz): P[run 0, 0, 1] + P[run 0, 1, 0]"),
        (lambda p: _npz(p, P=np.full((2, 2, 3), 0.5)), "(.npz): P must be square"),
        (lambda p: _npz(p, P=np.full(3, 0.5)), "(.npz): P must have shape (N, N) or (runs, N, N), got shape (3,)"),
        (lambda p: _npz(p, P=random_games(2, 3, 0), ref_logits=np.zeros((3, 3))),
         "(.npz): ref_logits has shape (3, 3), but P has shape (2, 3, 3)"),
        (lambda p: _npz(p, P=random_games(2, 3, 0), names=np.array(["a"])), "(.npz): names must have one entry per run"),
        (lambda p: p.write_bytes(b"PK\x03\x04 truncated"), "not a readable .npz file"),
        (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz file (its first bytes are b'not a '); expected"),
    ],
    ids=["no_P", "extra", "bad_sum", "not_square", "ndim", "ref_shape", "names", "truncated", "not_zip"],
)
def test_malformed_npz_is_refused(tmp_path, write, message):
    path = tmp_path / "bad.npz"
    write(path)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_games(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((2, 3), 0.5), "(.npy): P must be square in its last two axes, got shape (2, 3)"),
        (np.array(["a", "b"]), "(.npy): P must be a real numeric array, got dtype <U1"),
        (np.full((3, 3), 0.2), "(.npy): P[0, 0] = 0.2 is on the diagonal and must be 0.5"),
    ],
)
def test_malformed_npy_is_refused(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_games(path)


def test_binary_file_that_is_not_numpy_is_refused_in_one_line(tmp_path):
    path = tmp_path / "games.txt"
    path.write_bytes(b"\x93\x00\xff\xfe binary")
    with pytest.raises(ValueError, match=re.escape(f"{path}: neither text nor a numpy file; expected")):
        load_games(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent.txt"))):
        load_games(tmp_path / "absent.txt")
