"""Games files: save preference matrices (with optional π_ref logits and run names) and read them back.

Formats, chosen by the file's content (not its suffix) when reading:

* text, written by :func:`save_games` (any suffix but ``.npz``/``.npy``)::

      <runs> <N>
      run <name>            ┐
      <N numbers>  × N rows ┘ once per run
      ref_logits            (optional section)
      <N numbers>  × runs rows

* a plain N × N matrix of numbers, one row per line (``np.savetxt(path, P)``): one run;
* ``.npy`` (``np.save(path, P)``): P of shape (N, N) or (runs, N, N);
* ``.npz``: array ``P`` ((N, N) or (runs, N, N)), optional ``ref_logits`` ((runs, N)) and ``names``.

Blank lines and lines starting with ``#`` are ignored in text files. Without ``ref_logits`` the
reader returns None: π_ref is then uniform (``ref_logits = 0``).
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Sequence

import numpy as np

from .files import atomic_write
from .validation import check_logits, validate_preference_matrix

__all__ = ["save_games", "load_games"]




EXPECTED_FORMATS = (
    "expected save_games' text format (a header '<runs> <N>', then 'run <name>' and N rows per run), "
    "a plain N × N matrix (np.savetxt), a .npy array (N, N) or (runs, N, N), "
    "or an .npz with 'P' and optional 'ref_logits', 'names'"
)
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with entries / an empty zip


def _check_names(names: Sequence[str] | None, runs: int) -> list[str]:
    if names is None:
        return [str(r) for r in range(runs)]
    names = list(names)
    if len(names) != runs:
        raise ValueError(f"names must have one entry per run ({runs}), got {len(names)}")
    for r, name in enumerate(names):
        if not isinstance(name, str) or not name or name != name.strip() or any(c in name for c in "\r\n"):
            raise ValueError(
                f"names[{r}] = {name!r} must be a non-empty string without line breaks "
                "or leading/trailing whitespace"
            )
    return names


def _check_ref_logits(ref_logits: np.ndarray | None, runs: int, n: int) -> np.ndarray | None:
    """(runs, N) finite logits, or None; a single (N,) row is accepted for one run."""
    if ref_logits is None:
        return None
    ref = check_logits(ref_logits, "ref_logits", n)
    if ref.ndim == 1 and runs == 1:
        ref = ref[None]
    if ref.shape != (runs, n):
        raise ValueError(f"ref_logits has shape {ref.shape}, but P has shape ({runs}, {n}, {n})")
    return ref


def _as_batch(P: np.ndarray) -> np.ndarray:
    return P[None] if P.ndim == 2 else P


def save_games(
    path: str | os.PathLike,
    P: np.ndarray,
    ref_logits: np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> None:
    """Save games P ((N, N) or (runs, N, N)), optionally π_ref logits ((runs, N)) and run names,
    atomically (a reader never sees a partial file; the mode follows the user's umask).

    The format follows the suffix: ``.npz`` (``np.savez``: ``P``, ``names`` and, if given,
    ``ref_logits``), ``.npy`` (``np.save`` of P alone, so ``ref_logits`` and ``names`` are refused),
    anything else the text format of the module docstring, numbers written with ``repr`` so that
    float64 round-trips exactly. Names default to "0", "1", …; they may contain spaces but not line
    breaks. Everything is validated before the file is touched.
    """
    path = os.fspath(path)
    P = _as_batch(validate_preference_matrix(P))
    runs, n = P.shape[0], P.shape[-1]
    ref = _check_ref_logits(ref_logits, runs, n)
    if path.endswith(".npy"):
        if ref is not None or names is not None:
            raise ValueError(f"{path}: a .npy file holds P only; save ref_logits and names in an .npz or text file")
        atomic_write(path, lambda f: np.save(f, P))
        return
    names = _check_names(names, runs)

    if path.endswith(".npz"):
        arrays = {"P": P, "names": np.array(names, dtype=str)}
        if ref is not None:
            arrays["ref_logits"] = ref
        atomic_write(path, lambda f: np.savez(f, **arrays))
        return

    lines = [f"{runs} {n}"]
    for r in range(runs):
        lines.append(f"run {names[r]}")
        lines.extend(" ".join(repr(float(x)) for x in row) for row in P[r])
    if ref is not None:
        lines.append("ref_logits")
        lines.extend(" ".join(repr(float(x)) for x in row) for row in ref)
    atomic_write(path, "\n".join(lines) + "\n")


def load_games(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read a games file in any format of the module docstring (recognized by its content).

    Returns (P of shape (runs, N, N), ref_logits of shape (runs, N) or None when the file has none,
    meaning π_ref uniform, names). The content is validated; a malformed file raises one ValueError
    that names the file (and, for text, the line) and the expected format.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(_NPY_MAGIC):
        return _load_npy(path, data)
    if data.startswith(_ZIP_MAGIC):
        return _load_npz(path, data)
    if path.endswith((".npy", ".npz")):
        raise ValueError(f"{path}: not a readable {path[-4:]} file (its first bytes are {data[:6]!r}); {EXPECTED_FORMATS}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: neither text nor a numpy file; {EXPECTED_FORMATS}") from None
    return _load_text(path, text)


def _validated(path: str, P: np.ndarray, ref: np.ndarray | None, names: list[str] | None, what: str):
    """(P as a batch, ref, names) after validation; errors are prefixed with the file and its kind."""
    try:
        if P.ndim not in (2, 3):
            raise ValueError(f"P must have shape (N, N) or (runs, N, N), got shape {P.shape}")
        P = _as_batch(validate_preference_matrix(P))
        ref = _check_ref_logits(ref, P.shape[0], P.shape[-1])
        names = _check_names(names, P.shape[0])
    except ValueError as exc:
        raise ValueError(f"{path} ({what}): {exc}") from None
    return P, ref, names


def _load_npy(path: str, data: bytes):
    try:
        P = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc}); {EXPECTED_FORMATS}") from None
    if not np.issubdtype(P.dtype, np.number) or np.issubdtype(P.dtype, np.complexfloating):
        raise ValueError(f"{path} (.npy): P must be a real numeric array, got dtype {P.dtype}")
    return _validated(path, P.astype(np.float64), None, None, ".npy")


def _load_npz(path: str, data: bytes):
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: np.asarray(archive[key]) for key in archive.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc}); {EXPECTED_FORMATS}") from None
    if "P" not in arrays:
        raise ValueError(f"{path}: missing array 'P' (found {sorted(arrays)}); {EXPECTED_FORMATS}")
    unexpected = sorted(set(arrays) - {"P", "ref_logits", "names"})
    if unexpected:
        raise ValueError(f"{path}: unexpected arrays {unexpected}; an .npz holds 'P', 'ref_logits' and 'names' only")
    try:
        P = arrays["P"].astype(np.float64)
        ref = arrays["ref_logits"].astype(np.float64) if "ref_logits" in arrays else None
    except ValueError as exc:
        raise ValueError(f"{path} (.npz): P and ref_logits must be numeric: {exc}") from None
    names = [str(x) for x in arrays["names"]] if "names" in arrays else None
    return _validated(path, P, ref, names, ".npz")


def _parse_row(path: str, lineno: int, line: str, n: int, what: str) -> list[float]:
    parts = line.split()
    if len(parts) != n:
        raise ValueError(f"{path}, line {lineno}: expected {n} numbers ({what}), got {len(parts)}: {line!r}")
    try:
        return [float(x) for x in parts]
    except ValueError:
        raise ValueError(f"{path}, line {lineno}: not a row of numbers ({what}): {line!r}") from None


def _is_header(line: str) -> bool:
    """'<runs> <N>': two integers. A plain matrix cannot start so: its first entry P_00 is ½."""
    parts = line.split()
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def _load_text(path: str, text: str):
    lines = [(k + 1, line.strip()) for k, line in enumerate(text.split("\n"))]
    lines = [(k, line) for k, line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(f"{path}: empty file; {EXPECTED_FORMATS}")
    commas = [(k, line) for k, line in lines if "," in line and not line.startswith("run ")]
    if commas:
        lineno, line = commas[0]
        raise ValueError(f"{path}, line {lineno}: comma-separated numbers ({line!r}): a CSV file; the text formats "
                         f"separate numbers by spaces, as np.savetxt writes them: convert it with "
                         f"np.savetxt('games.txt', np.loadtxt({path!r}, delimiter=','))")
    if not _is_header(lines[0][1]):
        return _load_plain_matrix(path, lines)
    return _load_save_games_text(path, lines)


def _load_plain_matrix(path: str, lines: list[tuple[int, str]]):
    """N lines of N numbers (``np.savetxt``): one run, no ref_logits, name "0"."""
    first_lineno, first = lines[0]
    n = len(first.split())
    if len(lines) != n:
        raise ValueError(
            f"{path}: read as a plain matrix (line {first_lineno} is not a header '<runs> <N>'), it must have "
            f"N = {n} rows of {n} numbers, got {len(lines)} rows; {EXPECTED_FORMATS}"
        )
    P = np.array([_parse_row(path, lineno, line, n, f"row {i} of a plain {n} × {n} matrix")
                  for i, (lineno, line) in enumerate(lines)])
    return _validated(path, P, None, None, f"a plain {n} × {n} matrix")


def _load_save_games_text(path: str, lines: list[tuple[int, str]]):
    pos = 0

    def take(what: str) -> tuple[int, str]:
        nonlocal pos
        if pos >= len(lines):
            raise ValueError(f"{path}, line {lines[-1][0] + 1}: unexpected end of file, expected {what}")
        item = lines[pos]
        pos += 1
        return item

    lineno, header = take("a header line '<runs> <N>'")
    runs, n = (int(p) for p in header.split())
    if min(runs, n) < 1:
        raise ValueError(f"{path}, line {lineno}: expected a header '<runs> <N>' of positive integers, got {header!r}")

    P = np.empty((runs, n, n))
    names: list[str] = []
    for r in range(runs):
        lineno, line = take(f"'run <name>' for run {r}")
        if not line.startswith("run ") or not line[4:].strip():
            raise ValueError(f"{path}, line {lineno}: expected 'run <name>' for run {r}, got {line!r}")
        names.append(line[4:].strip())
        for i in range(n):
            lineno, line = take(f"row {i} of run {r}")
            P[r, i] = _parse_row(path, lineno, line, n, f"row {i} of run {r}")
        try:
            validate_preference_matrix(P[r])
        except ValueError as exc:
            raise ValueError(f"{path}, lines {lineno - n + 1}-{lineno} (run {r}): {exc}") from None

    ref = None
    if pos < len(lines):
        lineno, line = take("'ref_logits'")
        if line != "ref_logits":
            raise ValueError(f"{path}, line {lineno}: expected 'ref_logits' or end of file, got {line!r}")
        ref = np.empty((runs, n))
        for r in range(runs):
            lineno, line = take(f"ref_logits row {r}")
            ref[r] = _parse_row(path, lineno, line, n, f"ref_logits row {r}")
            if not np.isfinite(ref[r]).all():
                raise ValueError(f"{path}, line {lineno}: ref_logits must be finite, got {line!r}")
    if pos < len(lines):
        lineno, line = lines[pos]
        raise ValueError(f"{path}, line {lineno}: unexpected content after the last section: {line!r}")
    return _validated(path, P, ref, names, "save_games' text format")
