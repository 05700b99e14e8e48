"""Where numba keeps the simulator kernel compiled on disk (``@njit(cache=CACHE)`` in ``_kernel``).

numba looks, in order, at ``NUMBA_CACHE_DIR``, the ``__pycache__`` folder beside the source, and the
user's cache folder (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``), and refuses to define a
``cache=True`` function when none is writable ("cannot cache function ..."): a user whose home and
package folder are read-only (a shared install, a container) could not import the simulator. Then
this module points numba at a private folder in the temporary directory,
``<tmp>/egpo-numba-cache-<uid>`` (created 0700 and used only when this user owns it and nobody else
can write it: a compiled cache is code), and failing that turns caching off (:data:`CACHE` False:
the kernel compiles in every process, ~20 s, and works). A ``NUMBA_CACHE_DIR`` the user set is
left alone.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import numba

__all__ = ["CACHE", "writable"]


def writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (made if missing), as numba itself checks it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _user_cache() -> Path:
    """numba's user-wide cache folder (appdirs' rule on Linux and macOS)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "numba"


def _private_temporary() -> Path | None:
    """``<tmp>/egpo-numba-cache-<uid>``, made 0700 if missing; None unless this user owns it, nobody
    else can write it, and it is writable."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = Path(tempfile.gettempdir()) / f"egpo-numba-cache-{uid}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None
    if (not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != uid)
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        return None
    return folder if writable(folder) else None


def _choose() -> bool:
    """Point numba at a writable cache folder when its own choices are all read-only; returns whether
    caching stays on."""
    if os.environ.get("NUMBA_CACHE_DIR") or numba.config.CACHE_DIR:
        return True
    if writable(Path(__file__).resolve().parent / "__pycache__") or writable(_user_cache()):
        return True
    folder = _private_temporary()
    if folder is None:
        return False
    numba.config.CACHE_DIR = str(folder)  # read when a cache=True function is defined
    return True


#: ``cache=`` of the kernel's functions: False only when no folder at all could hold the cache.
CACHE: bool = _choose()
