"""Speed of the batched simulator: every paper setting, the whole suite, and scaling.

    python benchmarks/bench_simulate.py                     # suite + scaling (a few minutes)
    python benchmarks/bench_simulate.py --skip-scaling
    python benchmarks/bench_simulate.py --full-n1000        # also run N=1000 x 100 runs x 10k steps for real
    python benchmarks/bench_simulate.py --full-n1000 --dtype float32 --skip-suite --skip-scaling
    python benchmarks/bench_simulate.py --roofline          # stream bandwidth and the N=1000 step's bytes/flops
    python benchmarks/bench_simulate.py --profile           # where each setting's time goes
    python benchmarks/bench_simulate.py --compare /tmp/old --repeats 5   # suite, old tree vs this one
    NUMBA_NUM_THREADS=1 python benchmarks/bench_simulate.py --skip-scaling --compare /tmp/old   # ... one thread

Prints seconds per setting (6 settings × 5 algorithms × 10 runs, the paper's work) and, for the
scaling table, seconds per step and the time extrapolated to the requested runs × steps. The paper's
reference implementation is timed beside egpo by ``benchmarks/bench_reference.py``.
``--compare`` times the suite in fresh processes, the other tree (e.g. ``git worktree add /tmp/old
HEAD~1``) and this one alternately, and prints each setting's median and range over the repeats, wall
clock and CPU time.

The timing functions (:func:`time_call`, :func:`time_presets`, :func:`time_scaling`) are also what the
``benchmarks`` notebook imports from this file.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Iterable, Mapping, Sequence

import numba
import numpy as np
import pandas as pd

from egpo_core import _kernel, simulate
from egpo_core.algorithms import PAPER_ALGORITHMS
from egpo_core.cli import OneLineArgumentParser
from egpo_core.games import random_games
from egpo_core.presets import PRESETS


def time_call(fn: Callable[[], object], repeats: int = 1) -> float:
    """Best wall-clock time in seconds of ``repeats`` calls of ``fn`` (time.perf_counter)."""
    best = math.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_presets(
    names: Sequence[str] | None = None,
    *,
    fast: bool = False,
    conventions: str = "reference",
    algorithms: Sequence[str] = PAPER_ALGORITHMS,
    repeats: int = 1,
) -> pd.DataFrame:
    """Seconds to simulate each paper preset (all its runs and ``algorithms``), after one tiny warm-up
    call per policy kind so that loading the compiled kernel is not counted.

    Columns: preset, policy, gradient, iterations, runs, algorithms, seconds, trajectory_steps
    (= iterations × runs × algorithms) and us_per_trajectory_step.
    """
    names = list(PRESETS) if names is None else list(names)
    warmed = set()
    rows = []
    for name in names:
        preset = PRESETS[name]
        if preset.policy not in warmed:
            preset.run(algorithms, conventions=conventions, iterations=2, progress=False)
            warmed.add(preset.policy)
        horizon = preset.fast_iterations if fast else preset.iterations
        seconds = time_call(
            lambda: preset.run(algorithms, conventions=conventions, iterations=horizon, progress=False), repeats
        )
        work = horizon * preset.runs * len(algorithms)
        rows.append({"preset": name, "policy": preset.policy, "gradient": preset.gradient, "iterations": horizon,
                     "runs": preset.runs, "algorithms": len(algorithms), "seconds": seconds,
                     "trajectory_steps": work, "us_per_trajectory_step": seconds / work * 1e6})
    return pd.DataFrame(rows)


_SCALING_KEYS = ("num_actions", "runs", "iterations", "algorithms", "policy", "gradient", "dtype")


def time_scaling(
    grid: Iterable[Mapping[str, object]],
    *,
    beta: float = 0.01,
    lr: float = 0.02,
    seed: int = 0,
    repeats: int = 1,
) -> pd.DataFrame:
    """Seconds per simulation over a grid of sizes. Each grid entry is a mapping with keys
    ``num_actions`` (N), ``runs``, ``iterations`` and optionally ``algorithms`` (default ("egpo",)),
    ``policy`` ("tabular" or "neural"), ``gradient`` ("exact" or "sampled") and ``dtype`` ("float64" or
    "float32", the games' precision). Games are random
    (:func:`egpo_core.games.random_games`), π_ref logits N(0, 1); the first call of each
    (policy, gradient) is a 2-step warm-up, not timed.

    Other keys of an entry (e.g. a label of what the row varies) are copied into its row.
    Columns: those extra keys, num_actions, runs, iterations, algorithms, policy, gradient, dtype, seconds,
    trajectory_steps, us_per_trajectory_step.
    """
    rows = []
    warmed = set()
    for entry in grid:
        n, runs, iterations = int(entry["num_actions"]), int(entry["runs"]), int(entry["iterations"])
        algs = tuple(entry.get("algorithms", ("egpo",)))
        policy, gradient = str(entry.get("policy", "tabular")), str(entry.get("gradient", "exact"))
        dtype = str(entry.get("dtype", "float64"))
        rng = np.random.default_rng(seed)
        P, ref = random_games(runs, n, rng), rng.normal(size=(runs, n))

        def call(steps: int) -> None:
            simulate(P, ref, algs, beta=beta, lr=lr, iterations=steps, policy=policy, gradient=gradient,
                     seed=seed, progress=False, **({"dtype": dtype} if dtype != "float64" else {}))

        if (policy, gradient, dtype) not in warmed:
            call(2)
            warmed.add((policy, gradient, dtype))
        seconds = time_call(lambda: call(iterations), repeats)
        work = iterations * runs * len(algs)
        extra = {k: v for k, v in entry.items() if k not in _SCALING_KEYS}
        rows.append({**extra, "num_actions": n, "runs": runs, "iterations": iterations, "algorithms": len(algs),
                     "policy": policy, "gradient": gradient, "dtype": dtype, "seconds": seconds, "trajectory_steps": work,
                     "us_per_trajectory_step": seconds / work * 1e6})
    return pd.DataFrame(rows)


def bench_suite(conventions: str) -> float:
    """Print and return the seconds of the six paper presets (5 algorithms × 10 runs each)."""
    print(f"paper suite (conventions={conventions!r}): 5 algorithms x 10 runs per setting")
    # Load (or compile, on a fresh checkout) the kernel once, outside the timings.
    warm = time_call(lambda: PRESETS["exact-tabular-beta0.1"].run(iterations=2, progress=False))
    warm += time_call(lambda: PRESETS["exact-neural-beta0.01"].run(iterations=2, progress=False))
    print(f"  kernel load/compile: {warm:.1f} s (once per machine; numba caches it)")
    table = time_presets(conventions=conventions)
    for row in table.itertuples():
        print(f"  {row.preset:26s} {row.iterations:>7d} steps  {row.seconds:7.2f} s  "
              f"({row.us_per_trajectory_step:6.2f} µs per trajectory-step)")
    total = float(table["seconds"].sum())
    print(f"  whole suite: {total:.1f} s   (the reference implementation side by side: benchmarks/bench_reference.py)")
    return total


def bench_scaling(full_runs: int, full_steps: int) -> None:
    """Print the time per trajectory-step of a few sizes and the extrapolated N = 1000 run."""
    print("\nscaling, exact tabular, EGPO (2 preference evaluations per step) and all 5 paper algorithms")
    print(f"  {'N':>5s} {'runs':>5s} {'steps':>6s} {'algs':>4s} {'dtype':>8s} {'seconds':>8s} {'µs/traj-step':>13s}")
    grid = [
        {"num_actions": 10, "runs": 100, "iterations": 10_000},
        {"num_actions": 100, "runs": 100, "iterations": 2_000},
        {"num_actions": 1000, "runs": 10, "iterations": 200},
        {"num_actions": 1000, "runs": 10, "iterations": 200, "dtype": "float32"},
        {"num_actions": 10, "runs": 100, "iterations": 10_000, "algorithms": PAPER_ALGORITHMS},
    ]
    for row in time_scaling(grid).itertuples():
        print(f"  {row.num_actions:>5d} {row.runs:>5d} {row.iterations:>6d} {row.algorithms:>4d} {row.dtype:>8s} "
              f"{row.seconds:8.2f} {row.us_per_trajectory_step:13.2f}")
        if row.num_actions == 1000:
            estimate = row.us_per_trajectory_step * 1e-6 * full_runs * full_steps
            print(f"  -> N=1000, {full_runs} runs x {full_steps} steps, EGPO, {row.dtype}: about {estimate:.0f} s "
                  f"(each step streams the 1000x1000 matrix twice)")


def bench_full_n1000(runs: int, steps: int, dtype: str = "float64") -> float:
    """Run and time N = 1000 at the requested runs × steps (long); returns the seconds."""
    rng = np.random.default_rng(0)
    P, ref = random_games(runs, 1000, rng), rng.normal(size=(runs, 1000))
    simulate(P[:1], ref[:1], ["egpo"], beta=0.01, lr=0.02, iterations=2, progress=False, dtype=dtype)  # load
    seconds = time_call(lambda: simulate(P, ref, ["egpo"], beta=0.01, lr=0.02, iterations=steps, progress=True,
                                         dtype=dtype))
    print(f"\nN=1000, {runs} runs x {steps} steps, EGPO, {dtype}, measured: {seconds:.1f} s")
    return seconds


def stream_bandwidth(megabytes: int = 1024, repeats: int = 5) -> float:
    """Sustained memory bandwidth in GB/s: bytes read + written by ``np.copyto`` of a ``megabytes``
    float64 array (best of ``repeats``; one thread)."""
    source = np.ones(megabytes * (1 << 20) // 8)
    target = np.empty_like(source)
    seconds = time_call(lambda: np.copyto(target, source), repeats)
    return 2 * source.nbytes / seconds / 1e9


@numba.njit(parallel=True)
def _read_rows(blocks: np.ndarray, reps: int) -> np.ndarray:
    """Each thread reads its block (rows × columns) ``reps`` times, eight rows at a time, adding them into
    one row (the access pattern of the games' products with a minimum of arithmetic)."""
    sums = np.zeros((blocks.shape[0], blocks.shape[2]), dtype=blocks.dtype)
    for b in numba.prange(blocks.shape[0]):
        block, acc = blocks[b], sums[b]
        for _ in range(reps):
            j = 0
            while j + 8 <= block.shape[0]:
                r0, r1, r2, r3, r4, r5, r6, r7 = (block[j], block[j + 1], block[j + 2], block[j + 3], block[j + 4],
                                                  block[j + 5], block[j + 6], block[j + 7])
                for i in range(acc.shape[0]):
                    acc[i] += ((r0[i] + r1[i]) + (r2[i] + r3[i])) + ((r4[i] + r5[i]) + (r6[i] + r7[i]))
                j += 8
    return sums


@numba.njit(parallel=True)
def _products(games: np.ndarray, x: np.ndarray, out: np.ndarray, panels: bool, reps: int) -> None:
    """Thread g computes the kernel's product out[g] = P_g x[g] ``reps`` times, the games stored as the
    kernel stores them with exact gradients (float64: transposed; float32: ``panels``, :func:`_kernel.panel_layout`)."""
    padded = -(-x.shape[1] // 8) * 8
    for g in numba.prange(games.shape[0]):
        x32 = np.empty(2 * padded, dtype=np.float32)
        acc = np.empty(padded)
        for _ in range(reps):
            _kernel._product(games[g], x[g], out[g], panels, x32, acc)


def _with_threads(threads: int, fn: Callable[[], object], repeats: int) -> float:
    """Best seconds of ``fn`` over ``repeats`` calls with numba limited to ``threads`` threads."""
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        return time_call(fn, repeats)
    finally:
        numba.set_num_threads(previous)


def read_bandwidth(nbytes: int, threads: int, reps: int = 20, repeats: int = 5) -> float:
    """GB/s each of ``threads`` threads reads from its own ``nbytes`` array of 1000-float32 rows (held in
    L3 when a few MB: the bandwidth that bounds a product from a cached game)."""
    rows = max(8, nbytes // 4000 // 8 * 8)
    blocks = np.ones((threads, rows, 1000), dtype=np.float32)
    _read_rows(blocks, 1)
    seconds = _with_threads(threads, lambda: _read_rows(blocks, reps), repeats)
    return blocks[0].nbytes * reps / seconds / 1e9


def exact_games(P: np.ndarray, dtype: str) -> np.ndarray:
    """The games ``P`` (G, N, N) as the kernel stores them with exact gradients: float64 transposed, or the
    float32 panels of P − ½ (half the bytes)."""
    if dtype == "float32":
        return _kernel.panel_layout(P)
    return np.ascontiguousarray(P.transpose(0, 2, 1))


def product_seconds(num_actions: int, dtype: str, threads: int, reps: int = 50, repeats: int = 3) -> float:
    """Seconds of one product Pσ of the kernel at N = ``num_actions`` (``dtype`` games, as stored with exact
    gradients), each of ``threads`` threads computing products on its own game at once."""
    rng = np.random.default_rng(0)
    games = exact_games(random_games(threads, num_actions, rng), dtype)
    x = rng.dirichlet(np.ones(num_actions), size=threads)
    out = np.empty((threads, num_actions))
    panels = dtype == "float32"
    _products(games, x, out, panels, 1)
    return _with_threads(threads, lambda: _products(games, x, out, panels, reps), repeats) / reps


def roofline(num_actions: int = 1000, runs: int = 100, steps: int = 10_000, memory_megabytes: int = 1024
             ) -> pd.DataFrame:
    """The exact EGPO step's traffic and arithmetic at N actions, against what this machine sustains.

    Per step, two products Pσ each stream the game once (float64: the N×N matrix, 8N² bytes; float32: the
    panels of P − ½'s upper triangle, about 2N² bytes) and do N² multiplications and N² additions; the
    O(N) rest (softmaxes, gap: about 3N exp/log) is neglected. A game of a few MB stays in L3 while its trajectory runs (each thread advances one
    trajectory T/100 steps at a time) but not in L2, so each product reads it from L3.

    Columns: dtype, bytes_per_step, flops_per_step, total_bytes, total_flops (runs × steps);
    memory_GBps_1core (a copy of ``memory_megabytes``, read + write), read_GBps_1core and read_GBps_2cores (each core
    reading its own game-sized array from L3, alone and with the other core reading too);
    memory_bound_s and read_bound_s (total bytes over 2 cores at those rates); product_us_1core and
    product_us_2cores (the kernel's product, alone and on both cores at once), product_GBps (the game's
    bytes over product_us_2cores) and product_bound_s (2 products per step on 2 cores: the run's time
    if nothing but the products cost).
    """
    memory = stream_bandwidth(memory_megabytes)
    cores = min(2, numba.config.NUMBA_NUM_THREADS)
    rows = []
    for dtype in ("float64", "float32"):
        game = exact_games(np.full((1, num_actions, num_actions), 0.5), dtype).nbytes
        per_step = 2 * game
        total = per_step * runs * steps
        read_one, read_both = read_bandwidth(game, 1), read_bandwidth(game, cores)
        alone, both = product_seconds(num_actions, dtype, 1), product_seconds(num_actions, dtype, cores)
        rows.append({"dtype": dtype, "bytes_per_step": per_step, "flops_per_step": 4 * num_actions ** 2,
                     "total_bytes": total, "total_flops": 4 * num_actions ** 2 * runs * steps,
                     "memory_GBps_1core": memory, "read_GBps_1core": read_one, "read_GBps_2cores": read_both,
                     "memory_bound_s": total / (2 * memory * 1e9), "read_bound_s": total / (cores * read_both * 1e9),
                     "product_us_1core": alone * 1e6, "product_us_2cores": both * 1e6,
                     "product_GBps": game / both / 1e9, "product_bound_s": 2 * runs * steps * both / cores})
    return pd.DataFrame(rows)


def profile_presets(conventions: str = "reference", repeats: int = 1) -> pd.DataFrame:
    """Where each paper setting's time goes, by timing it whole and with parts removed:

    * ``recording_s``: computing the gap every step (full time minus the time with record_every = the
      horizon);
    * ``draws_s``: sampled settings, all draws but one per step (full time minus the time with
      num_samples = 1: sampling, splitmix64, the per-draw gradient terms);
    * ``rest_s``: the remaining per-step work (forward/backward passes, softmaxes, Pσ, samplers' tables).

    Columns: preset, seconds, recording_s, draws_s, rest_s.
    """
    rows = []
    for name, preset in PRESETS.items():
        preset.run(conventions=conventions, iterations=2, progress=False)
        horizon = preset.iterations

        def run(**changes: object) -> float:
            return time_call(lambda: preset.run(conventions=conventions, iterations=horizon, progress=False,
                                                **changes), repeats)

        full = run()
        quiet = run(record_every=horizon)
        draws = full - run(num_samples=1) if preset.gradient == "sampled" else 0.0
        rows.append({"preset": name, "seconds": full, "recording_s": full - quiet, "draws_s": draws,
                     "rest_s": full - (full - quiet) - draws})
    return pd.DataFrame(rows)


_TIME_TREE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from egpo_core.presets import PRESETS
conventions = sys.argv[2]
PRESETS["exact-tabular-beta0.1"].run(conventions=conventions, iterations=2, progress=False)
PRESETS["exact-neural-beta0.01"].run(conventions=conventions, iterations=2, progress=False)
seconds = {}
for name, preset in PRESETS.items():
    start, cpu = time.perf_counter(), time.process_time()
    preset.run(conventions=conventions, progress=False)
    seconds[name] = [time.perf_counter() - start, time.process_time() - cpu]
print(json.dumps(seconds))
"""


def compare_trees(trees: Sequence[str], conventions: str = "reference", repeats: int = 3) -> pd.DataFrame:
    """Seconds of each paper setting for each source tree (a folder holding ``egpo_core``), each
    measured in a fresh process, the trees taking turns ``repeats`` times (so that a busy period of a
    shared machine slows them alike). Columns: tree, repeat, preset, seconds (wall clock), cpu_seconds
    (the process's CPU time, all threads: with ``NUMBA_NUM_THREADS=1`` in the environment, a measure that
    other jobs on the machine disturb less); one row per measurement, the preset "whole suite" sums a
    repeat's settings."""
    import json
    import subprocess
    import sys

    rows = []
    for repeat in range(repeats):
        for tree in trees:
            done = subprocess.run([sys.executable, "-c", _TIME_TREE, str(tree), conventions], check=True,
                                  capture_output=True, text=True)
            seconds = json.loads(done.stdout.strip().splitlines()[-1])
            seconds["whole suite"] = [sum(wall for wall, _ in seconds.values()), sum(cpu for _, cpu in seconds.values())]
            rows += [{"tree": str(tree), "repeat": repeat, "preset": k, "seconds": wall, "cpu_seconds": cpu}
                     for k, (wall, cpu) in seconds.items()]
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(prog="bench_simulate.py", description=__doc__.split("\n")[0])
    parser.add_argument("--conventions", default="reference", choices=["default", "reference"],
                        help="conventions of the paper presets (default: %(default)s)")
    parser.add_argument("--skip-scaling", action="store_true", help="time the paper presets only")
    parser.add_argument("--scaling-runs", type=int, default=100,
                        help="runs of the extrapolated N = 1000 case (default: %(default)s)")
    parser.add_argument("--scaling-steps", type=int, default=10_000,
                        help="steps of the extrapolated N = 1000 case (default: %(default)s)")
    parser.add_argument("--full-n1000", action="store_true", help="run the N=1000 case at full size (long)")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                        help="precision of the games in --full-n1000 (default: %(default)s)")
    parser.add_argument("--skip-suite", action="store_true", help="do not time the paper presets")
    parser.add_argument("--roofline", action="store_true",
                        help="measure the bandwidths and print the N=1000 step's bytes and flops against them")
    parser.add_argument("--profile", action="store_true", help="split each preset's time (recording, draws, rest)")
    parser.add_argument("--compare", metavar="TREE", action="append", default=[],
                        help="time the suite in this source tree and in this one alternately (repeatable)")
    parser.add_argument("--repeats", type=int, default=3, help="turns of --compare (default: %(default)s)")
    args = parser.parse_args(argv)
    for flag in ("repeats", "scaling_runs", "scaling_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    for tree in args.compare:
        if not os.path.isdir(os.path.join(tree, "egpo_core")):
            parser.error(f"--compare {tree}: no egpo_core folder there")
    print(f"machine: {os.cpu_count()} cores; numba threads: {os.environ.get('NUMBA_NUM_THREADS', 'default')}")
    if not args.skip_suite:
        bench_suite(args.conventions)
    if not args.skip_scaling:
        bench_scaling(args.scaling_runs, args.scaling_steps)
    if args.full_n1000:
        bench_full_n1000(args.scaling_runs, args.scaling_steps, args.dtype)
    if args.roofline:
        table = roofline(runs=args.scaling_runs, steps=args.scaling_steps)
        print("\nroofline, N=1000 exact EGPO step (2 products Pσ):")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.profile:
        print(f"\nwhere the time goes (conventions={args.conventions!r}), seconds:")
        print(profile_presets(args.conventions).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.compare:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        table = compare_trees([*args.compare, here], args.conventions, args.repeats)
        for column, what in (("seconds", "wall-clock"), ("cpu_seconds", "CPU")):
            summary = table.groupby(["preset", "tree"], sort=False)[column].agg(["median", "min", "max"]).unstack("tree")
            print(f"\nsuite (conventions={args.conventions!r}), {args.repeats} alternating repeats, {what} seconds, "
                  "median [min, max]:")
            print(summary.to_string(float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
