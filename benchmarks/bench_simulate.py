"""Speed of the batched simulator: every paper setting, the whole suite, and scaling.

    python benchmarks/bench_simulate.py                     # suite + scaling (a few minutes)
    python benchmarks/bench_simulate.py --skip-scaling
    python benchmarks/bench_simulate.py --full-n1000        # also run N=1000 x 100 runs x 10k steps for real

Prints seconds per setting (6 settings × 5 algorithms × 10 runs, the paper's work) and, for the
scaling table, seconds per step and the time extrapolated to the requested runs × steps. The
reference implementation needs about 15 minutes on this 2-core machine for the suite.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from egpo_core import simulate
from egpo_core.algorithms import PAPER_ALGORITHMS
from egpo_core.games import random_games
from egpo_core.presets import PRESETS


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_suite(conventions: str) -> float:
    print(f"paper suite (conventions={conventions!r}): 5 algorithms x 10 runs per setting")
    # Load (or compile, on a fresh checkout) the kernel once, outside the timings.
    warm = _time(lambda: PRESETS["exact-tabular-beta0.1"].run(iterations=2, progress=False))
    warm += _time(lambda: PRESETS["exact-neural-beta0.01"].run(iterations=2, progress=False))
    print(f"  kernel load/compile: {warm:.1f} s (once per machine; numba caches it)")
    total = 0.0
    for name, preset in PRESETS.items():
        seconds = _time(lambda: preset.run(PAPER_ALGORITHMS, conventions=conventions, progress=False))
        total += seconds
        steps = preset.iterations * len(PAPER_ALGORITHMS) * preset.runs
        print(f"  {name:26s} {preset.iterations:>7d} steps  {seconds:7.2f} s  ({seconds / steps * 1e6:6.2f} µs per trajectory-step)")
    print(f"  whole suite: {total:.1f} s   (reference implementation: ~900 s, so {900 / total:.0f}x faster)")
    return total


def bench_scaling(full_runs: int, full_steps: int) -> None:
    print("\nscaling, exact tabular, EGPO (2 preference evaluations per step) and all 5 paper algorithms")
    print(f"  {'N':>5s} {'runs':>5s} {'steps':>6s} {'algs':>4s} {'seconds':>8s} {'µs/traj-step':>13s}")
    rng = np.random.default_rng(0)
    for n, runs, steps, algs in [
        (10, 100, 10_000, ("egpo",)),
        (100, 100, 2_000, ("egpo",)),
        (1000, 10, 200, ("egpo",)),
        (10, 100, 10_000, PAPER_ALGORITHMS),
    ]:
        P, ref = random_games(runs, n, rng), rng.normal(size=(runs, n))
        seconds = _time(lambda: simulate(P, ref, algs, beta=0.01, lr=0.02, iterations=steps, progress=False))
        per = seconds / (runs * steps * len(algs))
        print(f"  {n:>5d} {runs:>5d} {steps:>6d} {len(algs):>4d} {seconds:8.2f} {per * 1e6:13.2f}")
        if n == 1000:
            print(f"  -> N=1000, {full_runs} runs x {full_steps} steps, EGPO: about {per * full_runs * full_steps:.0f} s "
                  f"(memory-bound: each step reads the {n}x{n} float64 matrix twice)")


def bench_full_n1000(runs: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    P, ref = random_games(runs, 1000, rng), rng.normal(size=(runs, 1000))
    seconds = _time(lambda: simulate(P, ref, ["egpo"], beta=0.01, lr=0.02, iterations=steps, progress=True))
    print(f"\nN=1000, {runs} runs x {steps} steps, EGPO, measured: {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conventions", default="reference", choices=["default", "reference"])
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--scaling-runs", type=int, default=100)
    parser.add_argument("--scaling-steps", type=int, default=10_000)
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
