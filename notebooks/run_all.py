"""Execute the notebooks of this folder with papermill (what `make reproduce` runs).

Each notebook is kept as a jupytext percent-format source, ``notebooks/<name>.py`` (``# %%`` code
cells, ``# %% [markdown]`` text cells, ``# %% tags=["parameters"]`` the papermill parameters); the
``.ipynb`` that papermill runs is generated from it into the executed folder and executed in place.

    python notebooks/run_all.py                      # every notebook, default parameters
    python notebooks/run_all.py --fast               # fast=True: seconds per notebook
    python notebooks/run_all.py --only theory_checks --only benchmarks
    python notebooks/run_all.py --only sim_setting     # its three runs (one per setting)
    python notebooks/run_all.py --out-dir /tmp/executed --figures-dir /tmp/figures

A run is one execution of a notebook with its parameters (``RUNS``: ``sim_setting`` runs once per paper
setting). Executed notebooks go to --out-dir (default notebooks/_executed/, ignored by git), one
``<run>.ipynb`` each. This script passes every run its ``out_dir``: figures/<run>/ (the committed gallery)
at full size; with --fast (and no --figures-dir) <out-dir>/figures/<run>/, so a quick run never
overwrites the committed figures. A notebook opened in JupyterLab keeps its default ``out_dir = None``,
the ignored scratch folder runs/notebooks/<run>/. One line per run with its time; the first failure
stops with the run's name and the path of its partly executed copy (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from egpo_core.cli import OneLineArgumentParser

HERE = Path(__file__).resolve().parent

#: Execution order, run name → (notebook source, parameters): the paper settings first, then the comparisons,
#: theory and timings, then the language model. Each run writes to figures/<run name>/. No progress widgets
#: under papermill: nobody watches them, and a kernel shut down with one open logs a KeyboardInterrupt.
RUNS: dict[str, tuple[str, dict]] = {
    "sim_exact_tabular": ("sim_exact_tabular", {"progress": False}),
    "sim_exact_neural": ("sim_setting", {"preset": "exact-neural-beta0.01", "progress": False}),
    "sim_sampled_tabular": ("sim_setting", {"preset": "sampled-tabular-beta0.01", "progress": False}),
    "sim_sampled_neural": ("sim_setting", {"preset": "sampled-neural-beta0.1", "progress": False}),
    "sim_reference_vs_correct": ("sim_reference_vs_correct", {"progress": False}),
    "theory_checks": ("theory_checks", {}),
    "benchmarks": ("benchmarks", {}),
    "lm_synthetic_benchmark": ("lm_synthetic_benchmark", {}),  # before lm_winrates, which evaluates its checkpoints
    "lm_winrates": ("lm_winrates", {}),
}

#: The notebook sources, in order of first use.
NOTEBOOKS = tuple(dict.fromkeys(source for source, _ in RUNS.values()))

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def source_path(name: str) -> Path:
    """The percent-format source of notebook ``name``."""
    return HERE / f"{name}.py"


def write_notebook(source: Path, target: Path) -> Path:
    """Write the notebook of a jupytext percent-format source (no outputs) to ``target`` (.ipynb)."""
    import jupytext  # imported late: --help works without them
    import nbformat

    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata.setdefault("kernelspec", dict(KERNELSPEC))
    nb.metadata.pop("jupytext", None)  # the generated copy is not paired with its source
    nbformat.validate(nb)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog="run_all.py", description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="pass fast=True to every notebook")
    names = tuple(dict.fromkeys(list(RUNS) + list(NOTEBOOKS)))
    parser.add_argument("--only", action="append", metavar="NAME", choices=names,
                        help="run only this run, or every run of this notebook (repeatable); names: " + ", ".join(names))
    parser.add_argument("--out-dir", type=Path, default=HERE / "_executed", help="folder of the executed copies")
    parser.add_argument("--figures-dir", type=Path, default=None,
                        help="base folder of the figures (each run writes to <figures-dir>/<run>; default: "
                             "figures/, or <out-dir>/figures with --fast)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import papermill as pm  # imported late: --help works without it

    from traitlets.config import Config

    # Talk to the kernels over local sockets in a private folder (the TCP default makes every kernel
    # print an encryption warning, and its connection files would land in the current directory).
    sockets = tempfile.TemporaryDirectory(prefix="egpo-kernels-")
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = str(Path(sockets.name) / "kernel")

    names = [n for n, (source, _) in RUNS.items() if not args.only or n in args.only or source in args.only]
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.figures_dir:
        figures = args.figures_dir.resolve()
    else:
        figures = out_dir / "figures" if args.fast else HERE.parent / "figures"
    mode = "fast" if args.fast else "full"
    print(f"executing {len(names)} notebook run(s) ({mode}) into {out_dir}, figures into {figures}", flush=True)
    started = time.perf_counter()
    for k, name in enumerate(names, 1):
        source, fixed = RUNS[name]
        parameters = {**fixed, "out_dir": str(figures / name)}
        if args.fast:
            parameters["fast"] = True
        target = out_dir / f"{name}.ipynb"
        t0 = time.perf_counter()
        print(f"[{k}/{len(names)}] {name} ...", end=" ", flush=True)
        try:
            write_notebook(source_path(source), target)  # executed in place below
            # in this folder (cwd), as JupyterLab runs them: the notebooks import their shared start, _setup.py
            pm.execute_notebook(
                str(target), str(target), parameters=parameters, kernel_name=args.kernel, cwd=str(HERE),
                progress_bar=False, log_output=False, config=config,
            )
        except Exception as err:  # PapermillExecutionError for a failing cell
            print(f"FAILED after {time.perf_counter() - t0:.1f} s", flush=True)
            print(f"\nnotebook {name} failed: {type(err).__name__}: {str(err).strip()[:2000]}", file=sys.stderr)
            print(f"the partly executed copy is {target}", file=sys.stderr)
            print(f"stopped after {time.perf_counter() - started:.1f} s", file=sys.stderr)
            return 1
        print(f"ok ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"all {len(names)} notebook run(s) ran in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
