"""Command line: ``python -m egpo_core {presets,simulate,sweep,reproduce} ...``.

    python -m egpo_core presets
    python -m egpo_core simulate --preset exact-tabular-beta0.01 --out runs/eb001
    python -m egpo_core simulate --games games.txt --beta 0.01 --lr 0.02 --iterations 5000 --out runs/mine
    python -m egpo_core sweep --preset exact-tabular-beta0.01 --betas 0.1,0.01 --lrs 0.02,0.05 --seeds 0,1 --out runs/grid
    python -m egpo_core reproduce --out runs/paper [--fast] [--conventions reference]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .algorithms import ALGORITHMS, PAPER_ALGORITHMS
from .simulate import METRICS, SimulationResult, simulate, sweep


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in ALGORITHMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown algorithm(s) {', '.join(unknown)}; known: {', '.join(ALGORITHMS)}")
    return names


def _common(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a paper setting (see `presets`)")
    source.add_argument("--games", help="a games file written by egpo_core.games.save_games (text or .npz)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--algorithms", type=_names, default=list(PAPER_ALGORITHMS), help="comma-separated names")
    parser.add_argument("--conventions", choices=["default", "reference"], default="default")
    parser.add_argument("--iterations", type=int, help="override the number of updates")
    parser.add_argument("--fast", action="store_true", help="the preset's short horizon (quick looks, tests)")
    parser.add_argument("--policy", choices=["tabular", "neural"], default="tabular", help="with --games")
    parser.add_argument("--gradient", choices=["exact", "sampled"], default="exact", help="with --games")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--record-every", type=int, default=1)
    parser.add_argument("--metrics", type=lambda s: s.split(","), default=["duality_gap"],
                        help=f"comma-separated subset of {','.join(METRICS)}")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--no-progress", action="store_true")


def _instances(args):
    """(P, ref_logits, network, defaults) from --preset or --games."""
    from .games import load_games
    from .presets import get_preset

    if args.preset:
        preset = get_preset(args.preset)
        inst = preset.instances()
        defaults = {
            "beta": preset.beta, "lr": preset.lr, "policy": preset.policy, "gradient": preset.gradient,
            "iterations": preset.fast_iterations if args.fast else preset.iterations,
            "num_samples": preset.num_samples, "seed": preset.seed,
        }
        return inst.P, inst.ref_logits, inst.network, defaults
    P, ref_logits, _ = load_games(args.games)
    if ref_logits is None:
        raise SystemExit(f"error: {args.games} has no ref_logits section; save it with save_games(..., ref_logits=...)")
    defaults = {"policy": args.policy, "gradient": args.gradient, "num_samples": args.num_samples, "seed": 0}
    return P, ref_logits, None, defaults


def _write_outputs(result: SimulationResult, out: Path, fmt: str, title: str) -> None:
    from .plotting import plot_gap_panels, save_figure

    result.save(out, fmt)
    result.summary().to_csv(out / "summary.csv", index=False)
    for c in range(len(result.configs)):
        fig = plot_gap_panels(result, config=c)
        fig.suptitle(title, y=1.0)
        save_figure(fig, out / (f"duality_gap_config{c}" if len(result.configs) > 1 else "duality_gap"))


def cmd_presets(args) -> int:
    from .presets import presets_table

    print(presets_table().to_string(index=False))
    return 0


def cmd_simulate(args) -> int:
    P, ref_logits, network, defaults = _instances(args)
    beta = args.beta if args.beta is not None else defaults.get("beta")
    lr = args.lr if args.lr is not None else (None if args.eta is not None else defaults.get("lr"))
    iterations = args.iterations or defaults.get("iterations")
    if beta is None or (lr is None and args.eta is None) or iterations is None:
        raise SystemExit("error: with --games give --beta, --lr (or --eta) and --iterations")
    result = simulate(
        P, ref_logits, args.algorithms, beta=beta, lr=lr, eta=args.eta, iterations=iterations,
        policy=defaults["policy"], gradient=defaults["gradient"], num_samples=defaults["num_samples"],
        conventions=args.conventions, seed=args.seed if args.seed is not None else defaults["seed"],
        network=network, record_every=args.record_every, metrics=args.metrics, progress=not args.no_progress,
    )
    out = Path(args.out)
    _write_outputs(result, out, args.format, args.preset or args.games)
    print(result.summary()[["algorithm", "beta", "lr", "median_final", "reached"]].to_string(index=False))
    print(f"wrote {out}/")
    return 0


def cmd_sweep(args) -> int:
    P, ref_logits, network, defaults = _instances(args)
    betas = args.betas or [defaults.get("beta")]
    lrs = args.lrs if args.lrs or args.etas else [defaults.get("lr")]
    if None in betas or (lrs is None and not args.etas) or (lrs is not None and None in lrs):
        raise SystemExit("error: with --games give --betas and --lrs (or --etas)")
    iterations = args.iterations or defaults.get("iterations")
    if iterations is None:
        raise SystemExit("error: give --iterations")
    result = sweep(
        P, ref_logits, args.algorithms, betas=betas, lrs=lrs if not args.etas else None, etas=args.etas,
        seeds=args.seeds, iterations=iterations, policy=defaults["policy"], gradient=defaults["gradient"],
        num_samples=defaults["num_samples"], conventions=args.conventions, network=network,
        record_every=args.record_every, metrics=args.metrics, progress=not args.no_progress,
    )
    out = Path(args.out)
    result.save(out, args.format)
    result.summary().to_csv(out / "summary.csv", index=False)
    print(result.summary()[["algorithm", "beta", "lr", "seed", "median_final", "reached"]].to_string(index=False))
    print(f"wrote {out}/")
    return 0


def cmd_reproduce(args) -> int:
    """Every paper preset, its figures, and a table of medians beside the reference implementation's."""
    from .plotting import plot_picked, save_figure
    from .presets import PRESETS, REFERENCE_MEDIANS

    out = Path(args.out)
    started = time.perf_counter()
    rows, picked = [], {}
    for name, preset in PRESETS.items():
        folder = out / name
        stamp = folder / "run.json"
        horizon = preset.fast_iterations if args.fast else preset.iterations
        if stamp.exists() and not args.force:
            meta = json.loads(stamp.read_text())
            if meta["settings"].get("iterations") == horizon and meta["settings"].get("conventions") == args.conventions:
                print(f"[skip] {name}: already in {folder} (use --force to recompute)")
                result = _load(folder)
            else:
                result = None
        else:
            result = None
        if result is None:
            print(f"[run ] {name}: {preset.policy}/{preset.gradient}, beta={preset.beta}, {horizon} updates")
            result = preset.run(conventions=args.conventions, fast=args.fast, progress=not args.no_progress)
            _write_outputs(result, folder, "parquet", name)
        if preset.policy == "tabular" and preset.gradient == "exact":
            picked[rf"$\beta={preset.beta:g}$"] = result
        for _, row in result.summary().iterrows():
            rows.append({"preset": name, "algorithm": row["algorithm"], "median_final": row["median_final"],
                         "reached_1e-6": row["reached"], "reference_median": REFERENCE_MEDIANS[name].get(row["algorithm"])})
    if picked:
        save_figure(plot_picked(picked), out / "duality_gap_exact_tabular_picked")
    table = pd.DataFrame(rows)
    table.to_csv(out / "summary.csv", index=False)
    wide = table.pivot(index="preset", columns="algorithm", values="median_final")[list(PAPER_ALGORITHMS)]
    print("\nmedian final duality gap over runs (this run):")
    print(wide.map(lambda v: f"{v:.2g}").to_string())
    print(f"\nwrote {out}/ in {time.perf_counter() - started:.1f} s")
    return 0


def _load(folder: Path) -> SimulationResult:
    """Read a saved result back (metrics.parquet + run.json)."""
    meta = json.loads((folder / "run.json").read_text())
    frame = pd.read_parquet(folder / "metrics.parquet")
    algorithms = tuple(meta["algorithms"])
    configs = pd.DataFrame(meta["configs"])
    steps = np.sort(frame["step"].unique())
    values = {}
    for metric, part in frame.groupby("metric", observed=True):
        part = part.sort_values(["config", "algorithm", "run", "step"])
        values[str(metric)] = part["value"].to_numpy().reshape(len(configs), len(algorithms), -1, len(steps))
    return SimulationResult(algorithms, configs, steps, values, meta["settings"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m egpo_core", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the paper settings").set_defaults(func=cmd_presets)

    p = sub.add_parser("simulate", help="run one setting, write tidy data and figures")
    _common(p)
    p.add_argument("--beta", type=float)
    p.add_argument("--lr", type=float, help="SGD learning rate of the reference implementation")
    p.add_argument("--eta", type=float, help="mirror-descent step (instead of --lr)")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_simulate)

    s = sub.add_parser("sweep", help="a grid of (beta, lr or eta) x seeds in one batched run")
    _common(s)
    s.add_argument("--betas", type=_floats)
    s.add_argument("--lrs", type=_floats)
    s.add_argument("--etas", type=_floats)
    s.add_argument("--seeds", type=_ints, default=[0])
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser("reproduce", help="every paper preset, figures and the medians table")
    r.add_argument("--out", default="runs/paper")
    r.add_argument("--fast", action="store_true")
    r.add_argument("--force", action="store_true", help="recompute presets already in --out")
    r.add_argument("--conventions", choices=["default", "reference"], default="default")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_reproduce)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
