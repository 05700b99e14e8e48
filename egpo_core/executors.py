"""A sweep cut into chunks and run by an executor: a ``concurrent.futures`` pool or a dask cluster.

    >>> from dask.distributed import Client
    >>> client = Client("tcp://scheduler:8786")          # or Client(LocalCluster(n_workers=4))
    >>> grid = sweep(P, ref_logits, config, betas=[0.1, 0.01], seeds=range(100), executor=client, chunk_size=10)

Chunks. The grid's (setting, algorithm) pairs, in the result's order (setting-major), are cut into
chunks of at most ``chunk_size`` pairs, each a rectangle: with ``chunk_size`` ≥ A (the number of
algorithms), ⌊chunk_size / A⌋ consecutive settings × every algorithm; below A, one setting ×
``chunk_size`` consecutive algorithms. A chunk runs the compiled kernel on its own trajectories (every
run of its pairs). A trajectory's arithmetic and its random stream depend only on its own setting
(keyed by the setting's index in the whole grid), algorithm and run, so the gathered arrays are the
single-process sweep's, bit for bit, whatever the chunk size or the number of workers.

Failures. A chunk whose computation raises is computed once more after the first pass; a second
failure is reported, once every other chunk has finished, by :class:`ChunksFailed`: one line per failed
chunk naming its settings (β, step, seed) and algorithms, and the error.

Partial results. With ``partial_dir``, each finished chunk is written there atomically
(``<partial_dir>/sweep-<key>/chunk-c<first>-<end>-a<first>-<end>.npz``, the key a SHA-256 of everything
the numbers depend on: games, π_ref, initial parameters, the settings table, the configuration, the
egpo version and git commit); a rerun of the same sweep loads them and computes only the chunks
missing. Another sweep has another key, so it never reads them.

Executors. Any object with ``submit(fn, *args)`` returning ``concurrent.futures`` futures: a
``ThreadPoolExecutor`` (the same numbers, but the compiled kernel holds the GIL, so its chunks run one
at a time, each on numba's threads), a ``ProcessPoolExecutor`` that spawns its processes
(``mp_context=multiprocessing.get_context("spawn")``; one that forks is refused, see
:func:`check_executor`), a dask ``Client``.

dask is optional: this module never imports it. A dask ``Client`` is recognised by its ``scatter`` and
``get_executor`` methods: the shared data are scattered to the workers once (not sent with every chunk,
under a key of their own)
and chunks are submitted through ``client.get_executor(pure=False)`` (``pure=False``: a retry is
computed again, not answered from the failed task's key), whose futures are ``concurrent.futures``
ones. Inside a dask worker the kernel uses the worker's thread count (``threads_per_worker``), so that
workers sharing a machine do not oversubscribe its cores.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from .files import atomic_write
from .validation import check_count

__all__ = ["Chunk", "ChunksFailed", "plan_chunks", "run_chunks", "check_executor", "default_chunk_size", "grid_key",
           "kernel_threads", "worker_threads"]

_CHUNK_FILE = re.compile(r"chunk-c(\d+)-(\d+)-a(\d+)-(\d+)\.npz")


@dataclass(frozen=True)
class Chunk:
    """Settings ``configs[0]:configs[1]`` × algorithms ``algorithms[0]:algorithms[1]`` of a grid."""

    configs: tuple[int, int]
    algorithms: tuple[int, int]

    @property
    def file_name(self) -> str:
        """The chunk's file in a partial-results folder."""
        return f"chunk-c{self.configs[0]}-{self.configs[1]}-a{self.algorithms[0]}-{self.algorithms[1]}.npz"


class ChunksFailed(RuntimeError):
    """Chunks of a sweep failed twice; the message has one line per chunk (settings, algorithms, error)."""


def plan_chunks(n_configs: int, n_algorithms: int, chunk_size: int) -> list[Chunk]:
    """The grid's chunks of at most ``chunk_size`` (setting, algorithm) pairs, in result order:
    ⌊chunk_size / A⌋ settings × all A algorithms when chunk_size ≥ A, else one setting × chunk_size
    consecutive algorithms."""
    chunk_size = check_count(chunk_size, "chunk_size", 1)
    if chunk_size >= n_algorithms:
        per = chunk_size // n_algorithms
        return [Chunk((c, min(n_configs, c + per)), (0, n_algorithms)) for c in range(0, n_configs, per)]
    return [Chunk((c, c + 1), (a, min(n_algorithms, a + chunk_size)))
            for c in range(n_configs) for a in range(0, n_algorithms, chunk_size)]


def worker_threads() -> int | None:
    """The thread count of the dask worker running the caller, or None outside a dask worker (dask
    is not imported for this: a process that never imported ``distributed`` is no worker)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        return int(distributed.get_worker().state.nthreads)
    except ValueError:  # "no worker found": a client process, not a worker
        return None


@contextlib.contextmanager
def kernel_threads(threads: int | None) -> Iterator[None]:
    """Run the enclosed kernel calls on at most ``threads`` numba threads (None: unchanged). numba's
    setting is per calling thread; it is restored on exit."""
    if threads is None:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _is_dask_client(executor: Any) -> bool:
    return callable(getattr(executor, "scatter", None)) and callable(getattr(executor, "get_executor", None))


def check_executor(executor: Any) -> None:
    """Refuse, in one line, an ``executor`` that is neither None nor something with ``submit``, and a
    ``ProcessPoolExecutor`` that forks: a process forked from one whose kernel ran (GNU OpenMP threads)
    terminates ("fork() called from a process already using GNU OpenMP"), breaking the pool."""
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise ValueError(f"executor must be a concurrent.futures.Executor or a dask.distributed.Client, "
                         f"got {type(executor).__name__}")
    context = getattr(executor, "_mp_context", None)  # the pool's multiprocessing context (no public accessor)
    if isinstance(executor, concurrent.futures.ProcessPoolExecutor) and context is not None \
            and context.get_start_method() == "fork":
        raise ValueError("a ProcessPoolExecutor that forks cannot run the kernel (its OpenMP threads do not survive "
                         "fork): give mp_context=multiprocessing.get_context('spawn') or 'forkserver'")


def _outcomes(executor: Any, compute: Callable[[Any, Chunk], dict], shared: Any,
              chunks: list[Chunk]) -> Iterator[tuple[Chunk, dict | Exception]]:
    """(chunk, its arrays or the exception it raised), in the order they finish (here: in order)."""
    if executor is None:
        for chunk in chunks:
            try:
                yield chunk, compute(shared, chunk)
            except Exception as err:  # reported with the chunk's settings, then retried once
                yield chunk, err
        return
    futures = {executor.submit(compute, shared, chunk): chunk for chunk in chunks}
    for future in concurrent.futures.as_completed(futures):
        try:
            error = future.exception()
        except concurrent.futures.CancelledError as cancelled:  # e.g. dask cancels the tasks of a lost worker
            error = cancelled
        yield futures[future], error if error is not None else future.result()


def _load_partial(folder: Path, covered: np.ndarray, values: dict[str, np.ndarray] | None
                  ) -> dict[str, np.ndarray] | None:
    """Fill ``values`` (allocated on the first file) and ``covered`` from the chunk files in ``folder``."""
    for path in sorted(folder.glob("chunk-*.npz")):
        match = _CHUNK_FILE.fullmatch(path.name)
        if match is None:
            continue
        c0, c1, a0, a1 = map(int, match.groups())
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
        values = _place(values, covered.shape, Chunk((c0, c1), (a0, a1)), arrays)
        covered[c0:c1, a0:a1] = True
    return values


def _place(values: dict[str, np.ndarray] | None, grid: tuple[int, int], chunk: Chunk,
           arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copy a chunk's arrays (settings, algorithms, runs, steps) into the grid's, allocated on first use."""
    if values is None:
        values = {name: np.full((*grid, *a.shape[2:]), np.nan, dtype=a.dtype) for name, a in arrays.items()}
    (c0, c1), (a0, a1) = chunk.configs, chunk.algorithms
    for name, a in arrays.items():
        values[name][c0:c1, a0:a1] = a
    return values


def run_chunks(
    compute: Callable[[Any, Chunk], dict[str, np.ndarray]],
    shared: Any,
    *,
    grid: tuple[int, int],
    chunk_size: int,
    describe: Callable[[Chunk], str],
    executor: Any = None,
    partial_dir: str | os.PathLike | None = None,
    key: str = "",
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Every chunk of the (settings, algorithms) ``grid``: ``compute(shared, chunk)`` → metric name →
    array (chunk settings, chunk algorithms, runs, steps), run by ``executor`` (None: here, one after
    another) and gathered into arrays (settings, algorithms, runs, steps).

    Chunks found in ``partial_dir`` under ``key`` are loaded, not computed; each chunk computed is
    written there as soon as it finishes. A chunk that raises is computed once more; chunks failing
    twice raise :class:`ChunksFailed` (one line each, ``describe(chunk)`` naming its settings) after the
    others have finished and been written. ``progress``: a bar over the chunks computed.
    """
    check_executor(executor)
    chunks = plan_chunks(*grid, chunk_size)
    covered = np.zeros(grid, dtype=bool)
    values = None
    folder = None
    if partial_dir is not None:
        folder = Path(partial_dir) / f"sweep-{key[:16]}"
        folder.mkdir(parents=True, exist_ok=True)
        values = _load_partial(folder, covered, values)
    todo = [chunk for chunk in chunks
            if not covered[slice(*chunk.configs), slice(*chunk.algorithms)].all()]
    if _is_dask_client(executor):
        # hash=False: a key of its own, so that an earlier sweep's release of the same data cannot remove it
        shared = executor.scatter(shared, broadcast=True, hash=False)
        executor = executor.get_executor(pure=False)
    failed: dict[Chunk, Exception] = {}
    with tqdm(total=len(todo), disable=not progress or not todo, desc="sweep chunks", unit="chunk") as bar:
        for attempt in (1, 2):
            for chunk, outcome in _outcomes(executor, compute, shared, todo):
                if isinstance(outcome, Exception):
                    failed[chunk] = outcome
                    if attempt == 2:
                        bar.update(1)
                    continue
                failed.pop(chunk, None)
                values = _place(values, grid, chunk, outcome)
                if folder is not None:
                    atomic_write(folder / chunk.file_name, lambda f, arrays=outcome: np.savez(f, **arrays))
                bar.update(1)
            todo = [chunk for chunk in chunks if chunk in failed]
            if not todo:
                break
    if failed:
        kept = f"; the finished chunks are kept in {folder}: run again to compute the missing ones" if folder else ""
        lines = [f"chunk {describe(chunk)} failed twice: {type(err).__name__}: {_one_line(err)}"
                 for chunk, err in failed.items()]
        raise ChunksFailed("\n".join(lines) + kept)
    assert values is not None  # the grid has at least one chunk
    return values


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or "(no message)"


def grid_key(*parts: bytes | str) -> str:
    """SHA-256 (hex) of ``parts``, each length-prefixed, so that no two part lists give one key."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def default_chunk_size(n_algorithms: int) -> int:
    """One setting (every algorithm) per chunk."""
    return max(1, n_algorithms)

