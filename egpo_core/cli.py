"""Command line: ``python -m egpo_core {presets,simulate,sweep,reproduce} ...`` (in the venv:
``.venv/bin/python -m egpo_core``).

    python -m egpo_core presets
    python -m egpo_core simulate --preset exact-tabular-beta0.01 --out runs/eb001
    python -m egpo_core simulate --games games.txt --beta 0.01 --lr 0.02 --iterations 5000 --out runs/mine
    python -m egpo_core sweep --preset exact-tabular-beta0.01 --betas 0.1,0.01 --lrs 0.02,0.05 --seeds 0,1 --out runs/grid
    python -m egpo_core sweep ... --scheduler tcp://host:8786 --chunk-size 10 --out runs/grid   # on a dask cluster
    python -m egpo_core reproduce --out runs/paper [--fast] [--conventions reference]

The options of ``simulate`` and ``sweep`` are generated from the fields of
:class:`~egpo_core.config.SimulationConfig` (their help is each field's documentation); ``sweep``
takes the axes ``--betas``, ``--lrs`` or ``--etas``, ``--seeds`` instead of ``--beta``, ``--lr``,
``--eta``, ``--seed``. With ``--preset``, every option given overrides the preset (recorded in
``run.json``: ``provenance.overrides``); its policy is fixed by its games. ``sweep`` runs in chunks,
here or on a dask cluster, with ``--chunk-size``, ``--workers`` or ``--scheduler``
(:mod:`egpo_core.executors`). Bad input is one line on
stderr and exit status 2, before anything is computed or written; so is a failed write (a full disk),
which leaves the previous run in ``--out`` as it was (:mod:`egpo_core.run_folder`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import hashlib
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
import typing
import warnings
from pathlib import Path
from typing import Any, Callable, NoReturn

from .algorithms import ALGORITHMS, SIMULATOR_MODES
from .config import METRICS, SimulationConfig, field_docs
from .executors import ChunksFailed

#: The folder in a sweep's --out that keeps its finished chunks until the sweep is written.
PARTIAL = ".sweep-chunks"
#: The top-level --help's description.
DESCRIPTION = ("Simulate NLHF algorithms on preference games: list the paper's settings (presets), run one setting "
               "(simulate), a grid of settings here or on a dask cluster (sweep), or every paper setting with its "
               "figures and the reference medians (reproduce). Each command's --help lists its options.")
#: reproduce's --help: its --out is a folder of run folders, not one run, and is resumed, not replaced.
REPRODUCE_OUT_RULES = (
    "Run every paper preset and write each as a run folder --out/<preset> (metrics, summary.csv, run.json, figures: "
    "the files of `simulate`, read back by egpo_core.load_result('OUT/<preset>')), then --out/summary.csv (the "
    "median final gaps beside the reference implementation's, each with its horizon) and the picked exact-tabular "
    "figure. --out itself is not a run (it has no run.json of its own) and is never cleared: unlike simulate's, it "
    "may be non-empty without --overwrite. A preset folder already holding a run with the same settings (fast or "
    "not, conventions) is reused as it is (printed [skip]); --force recomputes it. A preset folder holding another "
    "run (other settings) is replaced, whole, once the new run is complete; files of your own are left alone.")
#: Seconds to wait for the dask scheduler of --scheduler before refusing it.
SCHEDULER_TIMEOUT = 10
#: About this many recorded steps per curve unless --record-every is given.
CLI_RECORDS = 1000
_AXES = {"beta": "betas", "lr": "lrs", "eta": "etas", "seed": "seeds"}


class _Refused(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose usage errors are one line on stderr,
    ``error: MESSAGE (see PROG --help)``, and exit status 2 (argparse prints the usage and the error on
    two lines); no abbreviated options (``--bet`` is refused, not taken for ``--betas``). Sub-commands'
    parsers are of this class too. The parser of ``python -m egpo_core`` and of the benchmarks' scripts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line and exit with status 2."""
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
            number, what = (int, "integers") if f.name == "seed" else (float, "numbers")
            parser.add_argument(f"--{_AXES[f.name]}", type=_list_of(number, what), default=argparse.SUPPRESS,
                                metavar="X,Y,...", help=f"sweep axis, comma-separated values of {f.name}: "
                                                        f"{docs[f.name]} ({_default_text(f)})")
            continue
        options: dict[str, Any] = {}
        number = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]  # float | None → float
        if typing.get_origin(hint) is typing.Literal:
            options["choices"] = typing.get_args(hint)
        elif typing.get_origin(hint) is tuple:
            options.update(type=_list_of(str, "names"), metavar="A,B,...")
        elif typing.get_origin(number[0]) is tuple:  # tuple[float, ...] | None
            options.update(type=_list_of(float, "numbers"), metavar="X,Y,...")
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


def _unwritable(folder: Path) -> str | None:
    """Why no file can be created in ``folder``, or None when one can: a file is created there and
    removed (permission bits do not tell, e.g. for root under /proc)."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".egpo-probe-")
    except OSError as err:
        return err.strerror or type(err).__name__
    os.close(handle)
    os.unlink(name)
    return None


def _check_folder(out: Path) -> None:
    """``out`` is a writable folder, or can be created (its nearest existing parent is a writable folder)."""
    if out.exists():
        if not out.is_dir():
            raise _Refused(f"--out {out} exists and is not a folder")
        reason = _unwritable(out)
        if reason:
            raise _Refused(f"--out {out} is not writable ({reason})")
        return
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise _Refused(f"cannot create --out {out}: {parent} is not a folder")
    reason = _unwritable(parent)
    if reason:
        raise _Refused(f"cannot create --out {out}: {parent} is not writable ({reason})")


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an unusable output folder before computing. A replacement that a previous command
    left half done (killed, disk full) is first completed or discarded
    (:func:`egpo_core.run_folder.finish_replacement`), so the folder holds one run or none."""
    from .run_folder import RUN_FILE, finish_replacement, run_files

    _check_folder(out)
    if not out.exists():
        return
    _writing(finish_replacement, out)
    if not any(p.name != PARTIAL for p in out.iterdir()):  # empty, or a sweep's finished chunks to resume
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


def _chunked(args: argparse.Namespace) -> bool:
    """Whether a sweep runs in chunks (--scheduler, --workers or --chunk-size given)."""
    return any(getattr(args, name, None) is not None for name in ("scheduler", "workers", "chunk_size"))


def _check_chunk_options(args: argparse.Namespace) -> None:
    """Refuse --workers or --chunk-size below 1, and --scheduler or --workers without dask (argparse
    refuses --scheduler with --workers)."""
    for flag, value in (("--workers", args.workers), ("--chunk-size", args.chunk_size)):
        if value is not None and value < 1:
            raise _Refused(f"{flag} must be at least 1, got {flag} {value}")
    if (args.scheduler is not None or args.workers is not None) and importlib.util.find_spec("distributed") is None:
        flag = "--scheduler" if args.scheduler is not None else "--workers"
        raise _Refused(f"{flag} needs dask's distributed package: pip install 'egpo[dask]' "
                       "(or pip install 'dask[distributed]')")


def _executor(args: argparse.Namespace, stack: contextlib.ExitStack) -> Any:
    """The sweep's executor: a Client of the dask scheduler at --scheduler, of a LocalCluster of
    --workers processes (one thread each), or None (chunks run here); closed with ``stack``."""
    if args.scheduler is None and args.workers is None:
        return None
    import logging

    import distributed

    if args.workers is not None:
        cluster = stack.enter_context(distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.ERROR))
        return stack.enter_context(distributed.Client(cluster))
    try:
        return stack.enter_context(distributed.Client(args.scheduler, timeout=SCHEDULER_TIMEOUT))
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise _Refused(f"cannot reach the dask scheduler at --scheduler {args.scheduler}: {reason}") from None


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
        with contextlib.ExitStack() as stack:
            chunks = {}
            if _chunked(args):
                chunks = {"executor": _executor(args, stack), "chunk_size": args.chunk_size, "partial_dir": out / PARTIAL}
            result = sweep(P, ref_logits, config, network=network, progress=not args.no_progress,
                           **{_AXES[k]: v for k, v in axes.items()}, **chunks)
    flags = {**given, **{_AXES[k]: v for k, v in (axes or {}).items()}}
    result.provenance.update(call=shlex.join([Path(sys.executable).name, "-m", "egpo_core", *argv]), games=games,
                             overrides=flags if args.preset else {})
    result.provenance["wall_seconds"] = round(time.perf_counter() - started, 3)
    _write_outputs(result, out, args.format, None if args.no_figures else args.preset or Path(args.games).name)
    columns = ["algorithm", "beta", "lr", "eta", "seed", "median_final", "reached", "diverged"]
    if (out / PARTIAL).is_dir():  # the sweep is written: its chunks are no longer needed
        shutil.rmtree(out / PARTIAL)
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
    _check_chunk_options(args)
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
                         "horizon": config.iterations, "median_final": row["median_final"],
                         "reached_1e-6": row["reached"], "reference_horizon": preset.iterations,
                         "reference_median": REFERENCE_MEDIANS[name].get(row["algorithm"])})
    table = pd.DataFrame(rows)

    def write_overview(folder: Path) -> None:
        if picked:
            save_figure(plot_picked(picked), folder / "duality_gap_exact_tabular_picked")
        with atomic_path(folder / "summary.csv") as tmp:
            table.to_csv(tmp, index=False)

    _writing(write_overview, out)
    wide = table.pivot(index="preset", columns="algorithm", values="median_final")[list(PAPER_ALGORITHMS)]
    horizons = ("each preset's short horizon (--fast; summary.csv's reference medians are at the full horizon, "
                "its column reference_horizon)" if args.fast else "each preset's full horizon")
    print(f"\nmedian final duality gap over runs (this run, conventions={args.conventions!r}, {horizons}; the "
          "reference medians in summary.csv compare under conventions='reference'):")
    print(wide.map(lambda v: f"{v:.2g}").to_string())
    print(f"\nwrote {out}/ in {time.perf_counter() - started:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m egpo_core``."""
    from .version import __version__

    parser = OneLineArgumentParser(prog="python -m egpo_core", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"egpo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the paper settings").set_defaults(func=cmd_presets)

    p = sub.add_parser("simulate", help="run one setting, write tidy data, summary, run.json and figures")
    _add_run_options(p)
    _add_config_options(p, axes=False)
    p.set_defaults(func=cmd_simulate)

    s = sub.add_parser("sweep", help="a grid of (beta, lr or eta) x seeds in one batched run, or in chunks on a dask cluster")
    _add_run_options(s)
    _add_config_options(s, axes=True)
    cluster = s.add_argument_group(
        "chunks (egpo_core.executors)",
        "With any of these the grid's (setting, algorithm) pairs run in chunks, with the same numbers bit for bit; "
        f"finished chunks are kept in --out/{PARTIAL} until the sweep is written, so the same command run again "
        "after a failure or a kill computes only the missing ones. A chunk that fails is computed once more, then "
        "reported (exit status 1).")
    where = cluster.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="address of a running dask scheduler (tcp://host:8786) whose workers compute the chunks "
                            "(needs pip install 'egpo[dask]') (default: none)")
    where.add_argument("--workers", type=int, metavar="N", default=None,
                       help="a dask LocalCluster of N worker processes on this machine, one thread each "
                            "(needs pip install 'egpo[dask]') (default: none)")
    cluster.add_argument("--chunk-size", type=int, metavar="K", default=None,
                         help="at most K (setting, algorithm) pairs per chunk; alone, chunks run here one after "
                              "another (default: one setting, every algorithm, per chunk)")
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser(
        "reproduce", help="every paper preset, figures and the medians table", description=REPRODUCE_OUT_RULES)
    r.add_argument("--out", default="runs/paper", help="output folder, one run folder per preset in it, see above "
                                                        "(default: runs/paper)")
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
    except ChunksFailed as err:  # chunks of a sweep failed twice: one line each; the others are kept
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader left (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 0
