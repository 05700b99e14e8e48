"""Atomic file writes: a reader sees either the old file or the complete new one, never a partial one.

Every file egpo writes (results, figures, games, caches) goes through :func:`atomic_path` or
:func:`atomic_write` (:func:`write_jsonl` for JSON-lines files):

1. a temporary file is created next to the target (same folder, hence same file system, so the
   final rename is atomic) with ``os.open(..., 0o666)``, so the kernel applies the user's umask
   exactly as a plain ``open(path, "w")`` would (``tempfile.mkstemp`` would leave it 0600);
   when the target already exists its permission bits are kept, again as ``open`` keeps them;
2. the content is written and flushed to disk (``fsync``);
3. ``os.replace`` moves it over the target, and the folder entry is flushed as well.

If writing fails, the temporary file is removed and the previous target is left untouched.
Standard library only, so importing it costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

__all__ = ["atomic_path", "atomic_write", "write_jsonl", "fsync_directory"]

# 0o666 is what open() asks for; the kernel removes the umask's bits from it.
_PLAIN_OPEN_MODE = 0o666


def _create_temporary(target: Path) -> Path:
    """Create an empty file beside ``target``, named ``.<stem>.<random>.tmp<suffix>`` (the suffix
    kept last so that writers choosing a format by extension, like ``savefig``, still do)."""
    while True:
        candidate = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PLAIN_OPEN_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """Make renames into ``folder`` durable (POSIX; Windows cannot open a folder as a file). Some file
    systems (network mounts) refuse to fsync a folder: the file is in place by then, so that is not
    an error of the write."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on a clean exit it replaces ``path``.

    For writers that want a file name rather than a file object::

        with atomic_path(out / "metrics.parquet") as tmp:
            frame.to_parquet(tmp)
        with atomic_path(out / "gap.pdf") as tmp:
            fig.savefig(tmp)          # the format still follows the ".pdf" suffix

    The temporary file already exists (empty) when yielded, so its mode is the one a plain
    ``open`` gives: ``0o666 & ~umask`` for a new file, the old file's permission bits when
    ``path`` exists. On an exception inside the block the temporary file is deleted, ``path`` is
    unchanged and the exception propagates (an ``OSError`` that names no file, as a full disk's
    ``ENOSPC`` on write, is given ``path`` as its ``filename``). The folder of ``path`` must exist.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: the folder {target.parent} does not exist")
    temporary = _create_temporary(target)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, target)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(err, OSError) and err.filename is None:  # a full disk names no file: name the target
            err.filename = str(target)
        raise
    fsync_directory(target.parent)


def atomic_write(
    path: str | os.PathLike[str],
    content: str | bytes | Callable[[BinaryIO], object],
    *,
    encoding: str = "utf-8",
) -> Path:
    """Write ``content`` to ``path`` atomically (see :func:`atomic_path`) and return ``path`` as a Path.

    ``content`` is text (encoded with ``encoding``, newlines written as given), bytes, or a
    callable receiving the open binary file, for writers that take a file object::

        atomic_write(out / "run.json", json.dumps(settings, indent=2) + "\\n")
        atomic_write(out / "games.npz", lambda f: np.savez(f, P=P))
        atomic_write(out / "gap.png", lambda f: fig.savefig(f, format="png"))
    """
    if not isinstance(content, (str, bytes)) and not callable(content):
        raise TypeError(f"atomic_write: content must be str, bytes or a callable(file), got {type(content).__name__}")
    target = Path(path)
    with atomic_path(target) as temporary, open(temporary, "wb") as handle:
        if isinstance(content, str):
            handle.write(content.encode(encoding))
        elif isinstance(content, bytes):
            handle.write(content)
        else:
            content(handle)
    return target


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines (one ``json.dumps(row)`` per line, UTF-8, non-ASCII characters
    kept as they are) to ``path`` atomically (:func:`atomic_write`): a reader sees the previous file
    or all the rows, never a part. ``rows`` is consumed before anything is written, so a row that is
    not JSON-serializable raises ``TypeError`` and leaves ``path`` untouched. Returns ``path``."""
    text = "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows)
    return atomic_write(path, text)
