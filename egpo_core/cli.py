"""Command line: ``python -m egpo_core {presets,simulate,sweep,reproduce} ...`` (in the venv:
``.venv/bin/python -m egpo_core``).

    python -m egpo_core presets
    python -m egpo_core simulate --preset exact-tabular-beta0.01 --out runs/eb001
    python -m egpo_core simulate --games games.txt --beta 0.01 --lr 0.02 --iterations 5000 --out runs/mine
    python -m egpo_core sweep --preset exact-tabular-beta0.01 --betas 0.1,0.01 --lrs 0.02,0.05 --seeds 0,1 --out runs/grid
    python -m egpo_core reproduce --out runs/paper [--fast] [--conventions reference]

The options of ``simulate`` and ``sweep`` are generated from the fields of
:class:`~egpo_core.config.SimulationConfig` (their help is each field's documentation); ``sweep``
takes the axes ``--betas``, ``--lrs`` or ``--etas``, ``--seeds`` instead of ``--beta``, ``--lr``,
``--eta``, ``--seed``. With ``--preset``, every option given overrides the preset (recorded in
``run.json``: ``provenance.overrides``); its policy is fixed by its games. Bad input is one line on
stderr and exit status 2, before anything is computed or written; so is a failed write (a full disk),
which leaves the previous run in ``--out`` as it was (:mod:`egpo_core.run_folder`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import shlex
import sys
import time
import typing
import warnings
from pathlib import Path
from typing import Any, Callable, NoReturn

from .algorithms import ALGORITHMS, SIMULATOR_MODES
from .config import METRICS, SimulationConfig, field_docs

#: About this many recorded steps per curve unless --record-every is given.
CLI_RECORDS = 1000
_AXES = {"beta": "betas", "lr": "lrs", "eta": "etas", "seed": "seeds"}


class _Refused(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (argparse prints the usage and the error on two)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _list_of(convert: Callable[[str], Any], what: str) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [convert(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    return parse


def _default_text(f: dataclasses.Field) -> str:
    """What an option defaults to, for its help."""
    if f.name in ("beta", "iterations"):
        return "required with --games; with --preset: the preset's"
    if f.name in ("lr", "eta"):
        return "default: none; with --games give lr or eta; with --preset: the preset's lr"
    if f.name == "seed":
        return "default: 0; with --preset: the preset's"
    if f.name == "record_every":
        return f"default: ⌈iterations/{CLI_RECORDS}⌉, about {CLI_RECORDS} records per curve; 1 keeps every step"
    if f.name == "algorithms":
        known = [a.name if a.simulated == SIMULATOR_MODES else f"{a.name} ({', '.join(a.simulated)} only)"
                 for a in ALGORITHMS.values() if a.simulated]
        return f"default: {','.join(f.default)}; known: {', '.join(known)}"
    if f.name == "metrics":
        return f"default: {','.join(f.default)}; from {','.join(METRICS)}"
    return f"default: {f.default}"


def _add_config_options(parser: argparse.ArgumentParser, axes: bool) -> None:
    """One option per SimulationConfig field (``axes``: the sweep's lists instead of beta, lr, eta, seed).
    Options not given stay absent from the namespace, so that a preset's value is kept."""
    hints = typing.get_type_hints(SimulationConfig)
    docs = field_docs()
    for f in dataclasses.fields(SimulationConfig):
        hint = hints[f.name]
        if axes and f.name in _AXES:
            number = int if f.name == "seed" else float
            parser.add_argument(f"--{_AXES[f.name]}", type=_list_of(number, "numbers"), default=argparse.SUPPRESS,
                                metavar="X,Y,...", help=f"sweep axis, comma-separated values of {f.name}: "
                                                        f"{docs[f.name]} ({_default_text(f)})")
            continue
        options: dict[str, Any] = {}
        number = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]  # float | None → float
        if typing.get_origin(hint) is typing.Literal:
            options["choices"] = typing.get_args(hint)
        elif typing.get_origin(hint) is tuple:
            options.update(type=_list_of(str, "names"), metavar="A,B,...")
        elif number[0] in (float, int):
            options["type"] = number[0]
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS,
                            help=f"{docs[f.name]} ({_default_text(f)})", **options)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a paper setting (see `presets`)")
    source.add_argument("--games", help="a games file: egpo_core.game_io.save_games text, a plain np.savetxt matrix, .npy or .npz; "
                                        "π_ref is uniform when the file has no ref_logits")
    parser.add_argument("--out", required=True, help="output folder: new, empty, or a previous run's with --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files a previous run wrote into --out, once the new run is complete (the new "
                             "files are written aside first; other files stay) (default: refuse a non-empty --out)")
    parser.add_argument("--fast", action="store_true", help="with --preset: its short horizon (quick looks, tests) "
                                                            "(default: off)")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                        help="format of the tidy metrics file (default: parquet)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")
    parser.add_argument("--no-figures", action="store_true",
                        help="skip the gap figures, the slowest output (default: write duality_gap*.png/.pdf)")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line (axes excluded)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(SimulationConfig) if hasattr(args, f.name)}


def _games_file(path: str) -> tuple[Any, Any, dict[str, Any]]:
    """(P, ref_logits, provenance of the games) from a games file; π_ref uniform when absent."""
    import numpy as np

    from .game_io import load_games

    file = Path(path)
    if not file.is_file():
        raise _Refused(f"games file {path} does not exist" if not file.exists() else f"games file {path} is not a file")
    try:
        P, ref_logits, _ = load_games(file)
    except OSError as err:  # unreadable (permissions, a folder, ...): named in one line like any bad input
        raise _Refused(f"cannot read games file {path}: {err.strerror or err}") from None
    source = {"source": "file", "path": str(file.resolve()), "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    if ref_logits is None:
        ref_logits = np.zeros(P.shape[:2])
        source["ref_logits"] = "uniform (the file has none)"
    return P, ref_logits, source


def _setup(args: argparse.Namespace, given: dict[str, Any], sweep_axes: dict[str, list] | None):
    """(config, P, ref_logits, network, games provenance) from --preset or --games and the options given."""
    if args.preset:
        from .presets import get_preset

        preset = get_preset(args.preset)
        config = preset.configure(fast=args.fast, **given)
        if "record_every" not in given:
            config = config.replace(record_every=max(1, math.ceil(config.iterations / CLI_RECORDS)))
        inst = preset.instances()
        games = {"source": "preset", "preset": preset.name, "seed": preset.seed}
        return config, inst.P, inst.ref_logits, inst.network, games
    if args.fast:
        raise _Refused("--fast needs --preset (it selects the preset's short horizon)")
    step_given = any(k in given for k in ("lr", "eta")) or any(k in (sweep_axes or {}) for k in ("lr", "eta"))
    missing = [f"--{k}" for k in ("beta", "iterations") if k not in given and k not in (sweep_axes or {})]
    if not step_given:
        missing.append("--lrs or --etas" if sweep_axes is not None else "--lr or --eta")
    if missing and sweep_axes is not None:
        missing = [m.replace("--beta", "--betas") for m in missing]
    if missing:
        raise _Refused(f"with --games give {', '.join(missing)}")
    if "record_every" not in given and "iterations" in given:
        given = {**given, "record_every": max(1, math.ceil(given["iterations"] / CLI_RECORDS))}
    first = {k: v[0] for k, v in (sweep_axes or {}).items() if v}
    config = SimulationConfig(**{**first, **given})  # bad values are named before the file is read
    P, ref_logits, games = _games_file(args.games)
    return config, P, ref_logits, None, games


def _check_folder(out: Path) -> None:
    """``out`` is a writable folder, or can be created (its nearest existing parent is a writable folder)."""
    if out.exists():
        if not out.is_dir():
            raise _Refused(f"--out {out} exists and is not a folder")
        if not os.access(out, os.W_OK | os.X_OK):
            raise _Refused(f"--out {out} is not writable")
        return
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise _Refused(f"cannot create --out {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _Refused(f"cannot create --out {out}: {parent} is not writable")


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an unusable output folder before computing. A replacement that a previous command
    left half done (killed, disk full) is first completed or discarded
    (:func:`egpo_core.run_folder.finish_replacement`), so the folder holds one run or none."""
    from .run_folder import RUN_FILE, finish_replacement, run_files

    _check_folder(out)
    if not out.exists():
        return
    _writing(finish_replacement, out)
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise _Refused(f"--out {out} is not empty; give --overwrite to replace the run in it, or another folder")
    stamp = out / RUN_FILE
    if not stamp.is_file():
        raise _Refused(f"--out {out} is not empty and holds no {RUN_FILE} of a previous run: refusing to clear it")
    try:
        run_files(stamp)
    except ValueError:
        raise _Refused(f"--out {out}: {RUN_FILE} does not list the files of its run; clear the folder yourself") from None


def _writing(write: Callable[..., Any], out: Path, *args: Any) -> Any:
    """``write(out, *args)``, an ``OSError`` (a full disk, a quota, a folder made read-only) turned
    into one line naming the path."""
    try:
        return write(out, *args)
    except OSError as err:
        path = err.filename or out
        reason = err.strerror or type(err).__name__
        raise _Refused(f"cannot write {path}: {reason}; the run in {out} is the previous one (or none), complete "
                       "(--overwrite completes or removes what this left)") from None


def _write_outputs(result, out: Path, fmt: str, title: str | None) -> None:
    """Write the figures (unless ``title`` is None), tidy data, summary and run.json (last) aside,
    then replace the previous run's files with them (:meth:`SimulationResult.save`)."""

    def figures(folder: Path) -> list[str]:
        if title is None:
            return []
        from .plotting import plot_gap_panels, save_figure

        names = []
        for c in range(len(result.configs)):
            stem = folder / (f"duality_gap_config{c}" if len(result.configs) > 1 else "duality_gap")
            names += [p.name for p in save_figure(plot_gap_panels(result, config=c, title=title), stem)]
        return names

    _writing(result.save, out, fmt, figures)


def _run_and_write(args: argparse.Namespace, argv: list[str], axes: dict[str, list] | None) -> int:
    from .simulator import simulate, sweep

    started = time.perf_counter()
    given = _given(args)
    config, P, ref_logits, network, games = _setup(args, given, axes)
    out = Path(args.out)
    _check_out(out, args.overwrite)
    if axes is None:
        result = simulate(P, ref_logits, config, network=network, progress=not args.no_progress)
    else:
        result = sweep(P, ref_logits, config, network=network, progress=not args.no_progress,
                       **{_AXES[k]: v for k, v in axes.items()})
    flags = {**given, **{_AXES[k]: v for k, v in (axes or {}).items()}}
    result.provenance.update(call=shlex.join([Path(sys.executable).name, "-m", "egpo_core", *argv]), games=games,
                             overrides=flags if args.preset else {})
    result.provenance["wall_seconds"] = round(time.perf_counter() - started, 3)
    _write_outputs(result, out, args.format, None if args.no_figures else args.preset or Path(args.games).name)
    columns = ["algorithm", "beta", "lr", "eta", "seed", "median_final", "reached", "diverged"]
    print(result.summary()[columns].to_string(index=False))
    print(f"wrote {out}/")
    return 0


def cmd_presets(args: argparse.Namespace, argv: list[str]) -> int:
    from .presets import presets_table

    print(presets_table().to_string(index=False))
    return 0


def cmd_simulate(args: argparse.Namespace, argv: list[str]) -> int:
    return _run_and_write(args, argv, None)


def cmd_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    if hasattr(args, "lrs") and hasattr(args, "etas"):
        raise _Refused("give --lrs or --etas, not both")
    axes = {field: getattr(args, name) for field, name in _AXES.items() if hasattr(args, name)}
    empty = [f"--{_AXES[k]}" for k, v in axes.items() if not v]
    if empty:
        raise _Refused(f"{empty[0]} is empty: a sweep needs at least one value per axis")
    return _run_and_write(args, argv, axes)


def cmd_reproduce(args: argparse.Namespace, argv: list[str]) -> int:
    """Every paper preset, its figures, and a table of medians beside the reference implementation's."""
    import json

    import pandas as pd

    from .algorithms import PAPER_ALGORITHMS
    from .files import atomic_path
    from .plotting import plot_picked, save_figure
    from .presets import PRESETS, REFERENCE_MEDIANS
    from .results import RUN_FILE, load_result

    out = Path(args.out)
    _check_folder(out)
    started = time.perf_counter()
    rows, picked = [], {}
    for name, preset in PRESETS.items():
        folder = out / name
        horizon = preset.fast_iterations if args.fast else preset.iterations
        changes = dict(conventions=args.conventions, record_every=max(1, math.ceil(horizon / CLI_RECORDS)))
        config = preset.configure(fast=args.fast, **changes)
        result = None
        _check_out(folder, overwrite=True)  # completes a replacement a killed command left half done
        if (folder / RUN_FILE).exists() and not args.force:
            saved = json.loads((folder / RUN_FILE).read_text()).get("config", {})
            if all(saved.get(k) == v for k, v in config.to_dict().items()):
                print(f"[skip] {name}: already in {folder} (use --force to recompute)")
                result = load_result(folder)
        if result is None:
            print(f"[run ] {name}: {preset.policy}/{preset.gradient}, beta={preset.beta}, {config.iterations} updates")
            result = preset.run(fast=args.fast, progress=not args.no_progress, **changes)
            _write_outputs(result, folder, "parquet", name)
        if preset.policy == "tabular" and preset.gradient == "exact":
            picked[rf"$\beta={preset.beta:g}$"] = result
        for _, row in result.summary().iterrows():
            rows.append({"preset": name, "conventions": args.conventions, "algorithm": row["algorithm"],
                         "median_final": row["median_final"], "reached_1e-6": row["reached"],
                         "reference_median": REFERENCE_MEDIANS[name].get(row["algorithm"])})
    table = pd.DataFrame(rows)

    def write_overview(folder: Path) -> None:
        if picked:
            save_figure(plot_picked(picked), folder / "duality_gap_exact_tabular_picked")
        with atomic_path(folder / "summary.csv") as tmp:
            table.to_csv(tmp, index=False)

    _writing(write_overview, out)
    wide = table.pivot(index="preset", columns="algorithm", values="median_final")[list(PAPER_ALGORITHMS)]
    print(f"\nmedian final duality gap over runs (this run, conventions={args.conventions!r}; the reference "
          "medians in summary.csv compare under conventions='reference'):")
    print(wide.map(lambda v: f"{v:.2g}").to_string())
    print(f"\nwrote {out}/ in {time.perf_counter() - started:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m egpo_core``."""
    from .version import __version__

    parser = _Parser(prog="python -m egpo_core", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"egpo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the paper settings").set_defaults(func=cmd_presets)

    p = sub.add_parser("simulate", help="run one setting, write tidy data, summary, run.json and figures")
    _add_run_options(p)
    _add_config_options(p, axes=False)
    p.set_defaults(func=cmd_simulate)

    s = sub.add_parser("sweep", help="a grid of (beta, lr or eta) x seeds in one batched run")
    _add_run_options(s)
    _add_config_options(s, axes=True)
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser("reproduce", help="every paper preset, figures and the medians table")
    r.add_argument("--out", default="runs/paper", help="output folder (default: runs/paper)")
    r.add_argument("--fast", action="store_true", help="the presets' short horizons (default: off)")
    r.add_argument("--force", action="store_true", help="recompute presets already in --out (default: reuse them)")
    r.add_argument("--conventions", choices=["default", "reference"], default="default",
                   help="conventions of every preset (default: default)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    r.set_defaults(func=cmd_reproduce)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: bad input, reported in one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return args.func(args, argv)
    except (ValueError, _Refused) as err:  # bad input: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 0
