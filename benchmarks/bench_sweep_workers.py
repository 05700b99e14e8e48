"""Wall time of one sweep run by 1, 2, … dask workers, beside the plain single-process sweep.

    python benchmarks/bench_sweep_workers.py                          # 4 β × 2 lr, 10,000 steps, 1 and 2 workers
    python benchmarks/bench_sweep_workers.py --iterations 20000 --workers 1 2 4 --chunk-sizes 5 10

Each worker is a process with one thread (a ``LocalCluster``); the plain sweep runs here with numba on
1 thread and on as many threads as the largest cluster has workers, so that the same cores are compared.
Every cluster is warmed up with a short sweep (workers import egpo_core and load the compiled kernel)
before it is timed, and every chunked result is checked bit for bit against the plain one. Prints one row
per setup: seconds (best of ``--repeats``) and the speed-up over the plain 1-thread sweep.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egpo_core.cli import OneLineArgumentParser  # noqa: E402

GRID = dict(betas=[0.01, 0.02, 0.05, 0.1], lrs=[0.01, 0.02])


def best_seconds(run, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls of ``run`` and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(prog="bench_sweep_workers.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="exact-tabular-beta0.01", help="the paper setting whose games are swept")
    parser.add_argument("--iterations", type=int, default=10_000, help="steps per trajectory (default 10000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="cluster sizes to time (default 1 2)")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[5, 10],
                        help="(setting, algorithm) pairs per chunk (default 5 10; the grid has 8 settings x 5 algorithms)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per setup, best reported (default 2)")
    args = parser.parse_args(argv)
    for name in ("iterations", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if min(args.workers) < 1 or min(args.chunk_sizes) < 1:
        parser.error(f"--workers and --chunk-sizes must be at least 1, got {args.workers} and {args.chunk_sizes}")

    import distributed  # the dask extra: pip install "egpo[dask]"
    import numba

    from egpo_core import sweep
    from egpo_core.presets import get_preset

    preset = get_preset(args.preset)
    games = preset.instances()
    config = preset.configure(iterations=args.iterations)
    warm = config.replace(iterations=5)
    sweep(games.P, games.ref_logits, warm, progress=False, **GRID)

    rows = []
    plain = None
    for threads in sorted({1, max(args.workers)}):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        seconds, plain = best_seconds(lambda: sweep(games.P, games.ref_logits, config, progress=False, **GRID), args.repeats)
        rows.append((f"plain sweep, numba {threads} thread(s)", seconds))
    numba.set_num_threads(1)
    for workers in args.workers:
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
            sweep(games.P, games.ref_logits, warm, executor=client, progress=False, **GRID)
            for chunk_size in args.chunk_sizes:
                seconds, result = best_seconds(
                    lambda: sweep(games.P, games.ref_logits, config, executor=client, chunk_size=chunk_size,
                                  progress=False, **GRID), args.repeats)
                same = all(np.array_equal(result.values[k], plain.values[k], equal_nan=True) for k in plain.values)
                if not same:
                    raise SystemExit(f"error: {workers} worker(s), chunk size {chunk_size}: not bit for bit the plain sweep")
                rows.append((f"{workers} worker(s), chunk size {chunk_size}", seconds))

    base = rows[0][1]
    print(f"{args.preset}: {len(GRID['betas']) * len(GRID['lrs'])} settings x {len(config.algorithms)} algorithms x "
          f"{games.P.shape[0]} runs x {args.iterations} steps; every chunked result bit for bit the plain sweep")
    for name, seconds in rows:
        print(f"{name:<36} {seconds:8.2f} s   x{base / seconds:5.2f}")


if __name__ == "__main__":
    main()
