"""The command line: ``python -m lm_runs.synthetic_benchmark --out DIR [--short | --fast] [--reuse DIR …] [options]``.

Every option but ``--reuse``, ``--against`` and ``--jobs`` (runs trained at once) overrides one field of the preset (``DEFAULT``, the full setting; ``SHORT``
with ``--short``; ``FAST`` with ``--fast``); ``--reuse`` names previous runs whose runs with these settings
are taken over (:mod:`.reuse`); ``--against`` names a finished run at another ``--round_eta`` whose round-method
runs join this run's verdicts (:func:`.reuse.load_against`). Bad values, an unusable ``--out`` and a ``--reuse`` folder that is no source
for these settings are one ``error:`` line with exit status 2, before anything is built. The command line
is recorded in ``summary.json`` (``command``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from typing import Any, Sequence

from egpo_core.cli import OneLineArgumentParser
from lm_runs.launcher import inputs_checked

from .pipeline import check_out, run_benchmark
from .reuse import load_against, load_sources
from .settings import DEFAULT, FAST, ONLINE, ROUND_METHODS, SHORT

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="python -m lm_runs.synthetic_benchmark",
        description="Tiny-LM NLHF benchmark with an exactly known (class-level) Nash equilibrium.",
    )
    p.add_argument("--out", required=True, help="Output directory: absent, empty, or (with --overwrite) a previous run's; "
                   "the run appears there only once complete.")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--short", action="store_true", help="The five online algorithms on the first 3 seeds (under 10 "
                        "minutes; decides no pair of algorithms, its figures say so).")
    preset.add_argument("--fast", action="store_true", help="A seconds-long version (for tests; checks the pipeline, not the algorithms).")
    p.add_argument("--reuse", nargs="+", metavar="DIR", default=[],
                   help="Previous benchmark runs: a run (algorithm, seed, variant) one of them holds complete, with the "
                   "settings a run reads equal to these and the same π_ref, is copied from the first that holds it "
                   "instead of trained again (a folder whose settings differ is refused).")
    p.add_argument("--against", metavar="DIR",
                   help="A finished run with these settings but another --round_eta (the same π_ref): each round method "
                   "of this run is compared, seed by seed, with that run's runs of it (named like onpo@eta=1) in the "
                   "verdicts, with the same exact paired test (a folder that differs in anything else is refused).")
    p.add_argument("--jobs", type=int, default=1, help="Runs trained at once, each in a process of its own with "
                   "OMP_NUM_THREADS threads (default 1; the results do not depend on it).")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace the previous run in --out, once the new one is complete (a folder holding "
                   "anything else is refused).")
    p.add_argument("--num_classes", type=int, help="K, 3 to 5.")
    p.add_argument("--beta", type=float, help="β of the game.")
    p.add_argument("--seeds", type=int, nargs="+", help="Training seeds.")
    p.add_argument("--algorithms", nargs="+", help=f"The algorithms (default: the paper's five, {' '.join(ONLINE)}, and "
                   f"the round methods {' '.join(ROUND_METHODS)}, lm_runs.rounds, on the same number of optimizer steps "
                   "on batches of the same size; --short and --fast: the five): any of them, a round method beside at "
                   "least one online algorithm.")
    p.add_argument("--round_eta", type=float, help="The round methods' step η (lm_runs.rounds' --eta; default 1.0), "
                   "> 0; refused when no round method is chosen.")
    p.add_argument("--updates", type=int, help="Updates per run (every algorithm gets the same number).")
    p.add_argument("--eval_every", type=int, help="Evaluate every n updates.")
    p.add_argument("--learning_rate", type=float, help="AdamW learning rate of the NLHF runs.")
    p.add_argument("--lr_scheduler", help="Learning-rate schedule of the NLHF runs (a TrainingArguments lr_scheduler_type).")
    p.add_argument("--adam_beta1", type=float, help="Adam's first-moment coefficient (0: no momentum, the default).")
    p.add_argument("--length_bonus", type=float, help="ε of the within-class length term (default 0: off).")
    p.add_argument("--length_normalized_seeds", type=int, nargs="*", help="Seeds of the length-normalized runs (none: skip).")
    p.add_argument("--keep_checkpoints", action="store_true", help="Keep every run's epochs/epoch-k checkpoints.")
    p.add_argument("--no_progress", action="store_true", help="No progress bar.")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, run the benchmark, print where the results are; one ``error:`` line (exit 2)
    for a bad option or a non-empty ``--out``."""
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    base = FAST if args.fast else SHORT if args.short else DEFAULT
    overrides = {}
    for name in ("num_classes", "beta", "updates", "eval_every", "learning_rate", "lr_scheduler", "adam_beta1", "length_bonus",
                 "round_eta"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.seeds is not None:
        overrides["seeds"] = tuple(args.seeds)
    if args.algorithms is not None:
        overrides["algorithms"] = tuple(args.algorithms)
    if args.length_normalized_seeds is not None:
        overrides["length_normalized_seeds"] = tuple(args.length_normalized_seeds)
    if args.keep_checkpoints:
        overrides["keep_checkpoints"] = True
    settings = replace(base, **overrides)
    try:
        settings.check()
        if args.round_eta is not None and not settings.round_methods():
            raise ValueError(f"--round_eta {args.round_eta}: no round method is chosen (--algorithms names none of "
                             f"{' '.join(ROUND_METHODS)})")
        check_out(args.out, args.overwrite)
        sources = load_sources(args.reuse, settings)
        if args.against is not None:
            load_against(args.against, settings, sources)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    except ValueError as error:
        parser.error(str(error))
    inputs_checked()  # from here a ValueError is a bug and keeps its traceback
    summary = run_benchmark(args.out, settings, overwrite=args.overwrite, progress=not args.no_progress, reuse=args.reuse,
                            against=args.against, jobs=args.jobs, command=shlex.join(["python", "-m", "lm_runs.synthetic_benchmark", *argv]))
    print(f"results in {args.out}: metrics.csv, gap_curves.png, verdicts.csv, verdicts.png ({summary['timings']['total_s']:.0f} s)")
    print(summary["verdicts"]["what_n_decides"])
    for metric in ("duality_gap", "exploitability"):
        print(f"{metric}: " + "; ".join(summary["verdicts"][metric]))
    return summary

