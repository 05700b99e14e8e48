"""Speed of the batched simulator: every paper setting, the whole suite, and scaling.

    python benchmarks/bench_simulate.py                     # suite + scaling (a few minutes)
    python benchmarks/bench_simulate.py --skip-scaling
    python benchmarks/bench_simulate.py --full-n1000        # also run N=1000 x 100 runs x 10k steps for real

Prints seconds per setting (6 settings × 5 algorithms × 10 runs, the paper's work) and, for the
scaling table, seconds per step and the time extrapolated to the requested runs × steps. The
reference implementation needs about 15 minutes on this 2-core machine for the suite.

The timing functions (:func:`time_call`, :func:`time_presets`, :func:`time_scaling`) are also what the
``benchmarks`` notebook imports from this file.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from egpo_core import simulate
from egpo_core.algorithms import PAPER_ALGORITHMS
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


_SCALING_KEYS = ("num_actions", "runs", "iterations", "algorithms", "policy", "gradient")


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
    ``policy`` ("tabular" or "neural") and ``gradient`` ("exact" or "sampled"). Games are random
    (:func:`egpo_core.games.random_games`), π_ref logits N(0, 1); the first call of each
    (policy, gradient) is a 2-step warm-up, not timed.

    Other keys of an entry (e.g. a label of what the row varies) are copied into its row.
    Columns: those extra keys, num_actions, runs, iterations, algorithms, policy, gradient, seconds,
    trajectory_steps, us_per_trajectory_step.
    """
    rows = []
    warmed = set()
    for entry in grid:
        n, runs, iterations = int(entry["num_actions"]), int(entry["runs"]), int(entry["iterations"])
        algs = tuple(entry.get("algorithms", ("egpo",)))
        policy, gradient = str(entry.get("policy", "tabular")), str(entry.get("gradient", "exact"))
        rng = np.random.default_rng(seed)
        P, ref = random_games(runs, n, rng), rng.normal(size=(runs, n))

        def call(steps: int) -> None:
            simulate(P, ref, algs, beta=beta, lr=lr, iterations=steps, policy=policy, gradient=gradient,
                     seed=seed, progress=False)

        if (policy, gradient) not in warmed:
            call(2)
            warmed.add((policy, gradient))
        seconds = time_call(lambda: call(iterations), repeats)
        work = iterations * runs * len(algs)
        extra = {k: v for k, v in entry.items() if k not in _SCALING_KEYS}
        rows.append({**extra, "num_actions": n, "runs": runs, "iterations": iterations, "algorithms": len(algs),
                     "policy": policy, "gradient": gradient, "seconds": seconds, "trajectory_steps": work,
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
    print(f"  whole suite: {total:.1f} s   (reference implementation: ~900 s, so {900 / total:.0f}x faster)")
    return total


def bench_scaling(full_runs: int, full_steps: int) -> None:
    """Print the time per trajectory-step of a few sizes and the extrapolated N = 1000 run."""
    print("\nscaling, exact tabular, EGPO (2 preference evaluations per step) and all 5 paper algorithms")
    print(f"  {'N':>5s} {'runs':>5s} {'steps':>6s} {'algs':>4s} {'seconds':>8s} {'µs/traj-step':>13s}")
    grid = [
        {"num_actions": 10, "runs": 100, "iterations": 10_000},
        {"num_actions": 100, "runs": 100, "iterations": 2_000},
        {"num_actions": 1000, "runs": 10, "iterations": 200},
        {"num_actions": 10, "runs": 100, "iterations": 10_000, "algorithms": PAPER_ALGORITHMS},
    ]
    for row in time_scaling(grid).itertuples():
        print(f"  {row.num_actions:>5d} {row.runs:>5d} {row.iterations:>6d} {row.algorithms:>4d} {row.seconds:8.2f} "
              f"{row.us_per_trajectory_step:13.2f}")
        if row.num_actions == 1000:
            estimate = row.us_per_trajectory_step * 1e-6 * full_runs * full_steps
            print(f"  -> N=1000, {full_runs} runs x {full_steps} steps, EGPO: about {estimate:.0f} s "
                  f"(memory-bound: each step reads the 1000x1000 float64 matrix twice)")


def bench_full_n1000(runs: int, steps: int) -> None:
    """Run and time N = 1000 at the requested runs × steps (long)."""
    rng = np.random.default_rng(0)
    P, ref = random_games(runs, 1000, rng), rng.normal(size=(runs, 1000))
    seconds = time_call(lambda: simulate(P, ref, ["egpo"], beta=0.01, lr=0.02, iterations=steps, progress=True))
    print(f"\nN=1000, {runs} runs x {steps} steps, EGPO, measured: {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conventions", default="reference", choices=["default", "reference"],
                        help="conventions of the paper presets (default: %(default)s)")
    parser.add_argument("--skip-scaling", action="store_true", help="time the paper presets only")
    parser.add_argument("--scaling-runs", type=int, default=100,
                        help="runs of the extrapolated N = 1000 case (default: %(default)s)")
    parser.add_argument("--scaling-steps", type=int, default=10_000,
                        help="steps of the extrapolated N = 1000 case (default: %(default)s)")
    parser.add_argument("--full-n1000", action="store_true", help="run the N=1000 case at full size (long)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; numba threads: {os.environ.get('NUMBA_NUM_THREADS', 'default')}")
    bench_suite(args.conventions)
    if not args.skip_scaling:
        bench_scaling(args.scaling_runs, args.scaling_steps)
    if args.full_n1000:
        bench_full_n1000(args.scaling_runs, args.scaling_steps)


if __name__ == "__main__":
    main()
