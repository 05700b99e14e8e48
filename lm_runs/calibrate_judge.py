"""How well a judge agrees with held-out preference pairs: ``python -m lm_runs.calibrate_judge``.

    python -m lm_runs.calibrate_judge --judge runs/reward_model --pairs held_out.jsonl --out report.json
    python -m lm_runs.calibrate_judge --judge runs/preference_model --pairs held_out.jsonl --both_orders --out report.json

``--pairs`` is the pairs format of ``lm_runs.train_preference_model`` and ``lm_runs.train_reward_model``
(columns ``prompt``, ``chosen``, ``rejected``; a chat message list in ``prompt`` is given to the judge as
:func:`lm_runs.data.prompt_text`, as in training; pairs with ``chosen == rejected`` are left out and
counted). ``--judge`` takes every spec ``--judge`` of ``lm_runs.train_nlhf`` takes (a model folder — a
reward model with ``?temperature=`` —, ``module:function``, ``http://…``, ``openai:MODEL``). The report
(:mod:`lm_runs.judges.calibration`: mean P(chosen ≻ rejected), accuracy, Brier score, a reliability
table, and with ``--both_orders`` the position bias (1/n) Σ (P(a≻b) + P(b≻a) − 1)) is printed and written
to ``--out`` as JSON, complete or not at all, with the judge's identity and the pair counts.

Bad input — a bad judge spec, a missing or malformed pairs file, an output path in a missing folder —
is one line on stderr with exit status 2, before any model loads.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

__all__ = ["load_pairs", "main"]

logger = logging.getLogger(__name__)


def load_pairs(spec: str) -> tuple[list[str], list[str], list[str], int]:
    """``(prompts, chosen, rejected, ties)`` of a pairs table (see the module docstring): prompts as
    :func:`~lm_runs.data.prompt_text`, responses checked non-empty strings, ``ties`` the rows left out for
    ``chosen == rejected``. ``ValueError`` (one line) naming a missing column, a bad row or no pairs."""
    from lm_runs.data import check_prompt, load_table, prompt_text
    from lm_runs.train_preference_model import response_text

    table = load_table(spec)
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in table.column_names]
    if missing:
        raise ValueError(f"--pairs {spec}: missing column(s) {missing}; columns: {table.column_names}")
    prompts: list[str] = []
    chosen: list[str] = []
    rejected: list[str] = []
    ties = 0
    for index, (prompt, good, bad) in enumerate(zip(table["prompt"], table["chosen"], table["rejected"])):
        where = f"--pairs {spec}: row {index}"
        check_prompt(prompt, where)
        good, bad = response_text(good, "chosen", where), response_text(bad, "rejected", where)
        if good == bad:
            ties += 1
            continue
        prompts.append(prompt_text(prompt))
        chosen.append(good)
        rejected.append(bad)
    if not prompts:
        raise ValueError(f"--pairs {spec}: no pairs to judge ({ties} with chosen == rejected left out)")
    return prompts, chosen, rejected, ties


def _parser() -> argparse.ArgumentParser:
    from lm_runs.judges.loader import JUDGE_SPEC_HELP

    parser = argparse.ArgumentParser(
        prog="python -m lm_runs.calibrate_judge",
        description="A judge's calibration on held-out preference pairs: mean P(chosen > rejected), accuracy, "
        "Brier score, reliability table, and with --both_orders the position bias.",
    )
    parser.add_argument("--judge", required=True, help=JUDGE_SPEC_HELP)
    parser.add_argument("--pairs", required=True, help="held-out pairs: a .jsonl/.json, .csv, .parquet file or a save_to_disk "
                        "folder with columns prompt, chosen, rejected (the format of train_preference_model / train_reward_model)")
    parser.add_argument("--out", required=True, help="the report, JSON (written complete or not at all)")
    parser.add_argument("--both_orders", action="store_true",
                        help="also ask every pair as (rejected, chosen) and report the position bias mean(P(a>b) + P(b>a) - 1)")
    parser.add_argument("--judge_batch_size", type=int, default=16, help="pairs per forward pass of a model judge (default 16)")
    parser.add_argument("--device", default=None, help="a model judge's device (default: cuda when available, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a judge's order coins and retry jitter (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the command (see the module docstring); return the report."""
    from egpo_core.files import atomic_write
    from lm_runs.judges.calibration import judge_calibration
    from lm_runs.judges.loader import check_judge_spec, load_judge
    from lm_runs.launcher import inputs_checked

    args = _parser().parse_args(argv)
    spec = check_judge_spec(args.judge)
    if args.judge_batch_size < 1:
        raise ValueError(f"--judge_batch_size must be >= 1, got {args.judge_batch_size}")
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file path")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    prompts, chosen, rejected, ties = load_pairs(args.pairs)
    judge = load_judge(spec, seed=args.seed, device=args.device, batch_size=args.judge_batch_size)
    inputs_checked()
    try:
        report = judge_calibration(judge, prompts, chosen, rejected, both_orders=args.both_orders)
        identity = judge.identity()
    finally:
        judge.close()
    report = {"judge": spec, "judge_kind": judge.kind, "judge_identity": identity, "pairs_file": str(args.pairs),
              "left_out_ties": ties, **report}
    atomic_write(out, json.dumps(report, indent=2) + "\n")
    line = f"{judge.kind} judge on {report['pairs']} pairs: mean P(chosen) {report['mean_p_chosen']:.4f}, accuracy {report['accuracy']:.4f}"
    if "both_orders" in report:
        both = report["both_orders"]
        line += f", position bias {both['position_bias']:+.4f} ± {both['position_bias_se']:.4f}, order flips {both['order_flips']:.3f}"
    print(line)
    return report


if __name__ == "__main__":
    from lm_runs.launcher import run_entry_point

    run_entry_point(main)
