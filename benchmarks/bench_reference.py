"""egpo's simulator against the EGPO paper's reference implementation, timed side by side.

    python benchmarks/bench_reference.py --reference-code /path/to/EGPO/simulations \\
        --reference-python /path/to/reference-venv/bin/python
    python benchmarks/bench_reference.py ... --settings exact-tabular-beta0.01

The reference implementation is the ``simulations/`` folder of the paper's repository (PyTorch; its
main script takes ``--alg exact|empirical --type tabular|neural`` and runs every β of that pair that
its ``configs.EXP_CONFIG`` lists). It is not part of egpo: give a checkout of it and the Python of a
virtual environment where it runs (torch, numpy, scipy, matplotlib, tqdm; its ``utils.py`` imports
``torchvision.transforms`` and never uses it, so where torchvision is missing the harness puts an
empty stand-in module in its place, and says so). The public checkout (github.com/zhourunlong/EGPO_public)
has ``run.py`` instead, whose settings are module constants (``ALG``, ``TYPE``, ``FILES``) and which reads
its games from ``data/<type>/``: with ``--reference-main run.py`` the harness draws the games as the paper's
main script does (the setting's seed, the reference policy's initialisation, then ``torch.rand`` for P, as
``egpo_core.reference_draws`` documents), writes them there and runs the script with those constants set,
its figure of one picked run per setting left out.

For each setting (an ``egpo_core.presets`` name), the reference's run of that one β and then egpo's
(``preset.run`` with ``conventions="reference"``, all five paper algorithms, 10 runs), each in a fresh
process, one after the other on this machine, so that both meet the same load. The reference's
time is its main script's run from the seed to its saved figures, torch already imported; its
plotting is timed apart (the harness wraps its ``utils.plot_multi_exps``), and the speed-up is
given without it (compute) and with it (as the reference runs). egpo's time is one
``preset.run`` after a 2-step warm-up in the same process (loading the compiled kernel, reported
apart), with numba's default threads (one per core). The reference uses torch's default threads
unless ``--reference-threads`` says otherwise: on tensors this small (N = 10 or 100) torch's
intra-op threads do no useful work, and on a machine shared with other jobs their OpenMP waits
slow the reference up to tenfold (2 threads: 23 ms per exact EGPO step, 1 thread: 1.9 ms, at
load 4 on 2 cores), so ``--reference-threads 1`` is the fair choice there.

Then the results: the median over the runs of the final duality gap, per algorithm, of the
reference's run, of egpo's, and as recorded in ``egpo_core.presets.REFERENCE_MEDIANS``. Exact
settings compute the same thing and should agree to ``--rtol`` (gaps below 1e-6 count as ~0 on both
sides: the reference computes in float32, egpo in float64). In the exact neural setting the online
IPO variants' gap curves follow the reference's to float32 precision (3e-6) for a few hundred
steps and then part from them, their oscillation amplifying the last bits, so their final medians
can differ by a factor 2-3 (the reference's own re-runs differ as much from the recorded values).
Sampled settings draw their samples from other random streams, so their medians agree in
distribution only and are shown, not judged.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from egpo_core.algorithms import PAPER_ALGORITHMS  # noqa: E402
from egpo_core.cli import OneLineArgumentParser  # noqa: E402
from egpo_core.presets import PRESETS, REFERENCE_MEDIANS, Preset  # noqa: E402

#: Modules the reference's main script imports from its own folder.
REFERENCE_MODULES = ("configs.py", "loss_funcs.py", "policies.py", "utils.py")
#: The reference's algorithm names (its ``loss_funcs.LOSS_FUNCS``, less " Empirical") → egpo's.
REFERENCE_ALGORITHMS = {"Online IPO 1 (OMD)": "oipo1", "Online IPO 2": "oipo2", "Nash-MD": "nash_md",
                        "Nash-MD-PG": "nash_md_pg", "EGPO": "egpo"}
#: Gaps below this count as ~0 in the agreement check (the reference's float32 noise is far below).
GAP_FLOOR = 1e-6

# Runs in the reference's Python: argv = folder, main script, alg, type, beta, output json, torch
# threads ("default": torch's own choice), then the preset's seed, runs, N, hidden width and depth. It keeps
# only the β asked for in EXP_CONFIG, wraps plot_multi_exps to time it and to read the final gaps it is handed
# (one entry per run: {algorithm: {"Dual Gap": curve}}), and runs the main script as __main__ with
# --alg/--type, or, a script whose settings are constants (the public checkout's run.py), with them set.
_REFERENCE_DRIVER = r"""
import json, os, re, runpy, sys, time, types
code, main, alg, kind, beta, out, threads, seed, runs, n, hidden, depth = sys.argv[1:13]
beta = float(beta)
sys.path.insert(0, code)
try:
    import torchvision
    stand_in = False
except ImportError:
    stand_in = True
    module = types.ModuleType("torchvision")
    module.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": module, "torchvision.transforms": module.transforms})
import torch
if threads != "default":
    torch.set_num_threads(int(threads))
import configs, utils
chosen = [c for c in configs.EXP_CONFIG[alg][kind] if abs(c["beta"] - beta) <= 1e-9 * beta]
if len(chosen) != 1:
    sys.exit(f"configs.EXP_CONFIG[{alg!r}][{kind!r}] has no single entry with beta={beta}")
configs.EXP_CONFIG[alg][kind] = chosen
finals, plotting = {}, [0.0]
plot = utils.plot_multi_exps
def timed_plot(experiments, *args, **kwargs):
    start = time.perf_counter()
    for curves in experiments.values():
        for name, data in curves.items():
            if isinstance(data, dict):
                finals.setdefault(name, []).append(float(data["Dual Gap"][-1]))
    plot(experiments, *args, **kwargs)
    plotting[0] += time.perf_counter() - start
utils.plot_multi_exps = timed_plot
source = open(main).read()
constants = re.search(r"^ALG = ", source, re.M) is not None  # the public checkout's run.py
if constants:
    # Its settings are module constants and it reads its games from data/<type>/<file>: draw them as the
    # paper's main script does (the seed, the reference policy's initialisation, then torch.rand for P),
    # write them there and run the script with ALG, TYPE, FILES and the seed set.
    import policies
    runs, n, hidden, depth = map(int, (runs, n, hidden, depth))
    utils.set_random_seed(int(seed))
    drawn = (policies.TabularPolicy(runs, n, "cpu") if kind == "tabular"
             else policies.NeuralPolicy(runs, n, depth, hidden, "cpu"))
    drawn.random_init()
    games = utils.gen_preference_matrix(runs, n, "random").double().numpy()
    os.makedirs(f"data/{kind}", exist_ok=True)
    utils.write_data(games, beta, f"data/{kind}/beta_{beta}.txt")
    for pattern, value in ((r"^ALG = [^\n]*", f'ALG = "{alg}"'), (r"^TYPE = [^\n]*", f'TYPE = "{kind}"'),
                           (r"^FILES = \[.*?\]", f'FILES = ["beta_{beta}.txt"]'),
                           (r"run\(file, \d+\)", f"run(file, {int(seed)})")):
        source, found = re.subn(pattern, value, source, count=1, flags=re.S | re.M)
        if not found:  # a script of another shape would run other settings than the ones timed
            sys.exit(f"{main}: no line matching {pattern!r} to set")
    titled = utils.plot_multi_exps
    def plot_with_titles(experiments, *args, **kwargs):
        if kwargs.get("name_suffix") == "picked":  # one run per setting again (and it fails for one setting)
            return None
        # this version's plot_multi_exps wants each experiment's title as its first entry
        return titled({key: {"latex_key": key, **curves} for key, curves in experiments.items()}, *args, **kwargs)
    utils.plot_multi_exps = plot_with_titles
sys.argv = [main, "--alg", alg, "--type", kind]
start = time.perf_counter()
if constants:
    exec(compile(source, main, "exec"), {"__name__": "__main__", "__file__": main})
else:
    runpy.run_path(main, run_name="__main__")
seconds = time.perf_counter() - start
with open(out, "w") as f:
    json.dump({"seconds": seconds, "plotting": plotting[0], "final_gaps": finals, "iters": chosen[0]["iters"],
               "lr": chosen[0]["lr"], "torch": torch.__version__, "threads": torch.get_num_threads(),
               "torchvision_stand_in": stand_in}, f)
"""

# Runs in this Python: argv = egpo's root, preset name, output json.
_EGPO_DRIVER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from egpo_core.algorithms import PAPER_ALGORITHMS
from egpo_core.presets import PRESETS
preset = PRESETS[sys.argv[2]]
start = time.perf_counter()
preset.run(PAPER_ALGORITHMS, conventions="reference", iterations=2, progress=False)
warm = time.perf_counter() - start
start = time.perf_counter()
result = preset.run(PAPER_ALGORITHMS, conventions="reference", progress=False)
seconds = time.perf_counter() - start
summary = result.summary()
with open(sys.argv[3], "w") as f:
    json.dump({"seconds": seconds, "warm": warm,
               "median_final": dict(zip(summary["algorithm"], map(float, summary["median_final"])))}, f)
"""


@dataclass(frozen=True)
class Timing:
    """One setting measured on both sides.

    Attributes:
        setting: the egpo preset's name.
        reference_s: the reference's run of the setting, plots included (seconds).
        plotting_s: the part of ``reference_s`` spent in its ``plot_multi_exps``.
        egpo_s: egpo's ``preset.run`` (seconds), kernel already loaded.
        egpo_load_s: egpo's 2-step warm-up (kernel load) in the same process, not in ``egpo_s``.
        reference_medians: median final duality gap per egpo algorithm name, reference's run.
        egpo_medians: the same, egpo's run.
        reference_setting: the reference's (iterations, lr) for this β.
        torch_threads: torch's intra-op threads in the reference's process.
        stand_in: whether the reference ran with the torchvision stand-in.
    """

    setting: str
    reference_s: float
    plotting_s: float
    egpo_s: float
    egpo_load_s: float
    reference_medians: dict[str, float]
    egpo_medians: dict[str, float]
    reference_setting: tuple[int, float]
    torch_threads: int
    stand_in: bool

    @property
    def compute_ratio(self) -> float:
        """Speed-up without the reference's plotting: (reference_s − plotting_s) / egpo_s."""
        return (self.reference_s - self.plotting_s) / self.egpo_s

    @property
    def as_run_ratio(self) -> float:
        """Speed-up against the reference as it runs (with its plots): reference_s / egpo_s."""
        return self.reference_s / self.egpo_s


def reference_arguments(preset: Preset) -> tuple[str, str, float]:
    """The reference main script's ``--alg`` and ``--type`` and the β of its config for ``preset``."""
    return ("exact" if preset.gradient == "exact" else "empirical"), preset.policy, preset.beta


def median_final(gaps: Sequence[float]) -> float:
    """Median of the finite final gaps (egpo's ``summary()`` convention: diverged runs left out);
    NaN when none is finite."""
    finite = [g for g in gaps if math.isfinite(g)]
    return float(np.median(finite)) if finite else float("nan")


def agreement(a: float, b: float, rtol: float) -> str:
    """``"~0"`` when both gaps are below :data:`GAP_FLOOR`; ``"same"`` when |a − b| ≤ rtol·max(|a|, |b|);
    ``"differs"`` otherwise (a NaN differs)."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return "differs"
    if max(a, b) < GAP_FLOOR:
        return "~0"
    return "same" if abs(a - b) <= rtol * max(abs(a), abs(b)) else "differs"


def _run(command: list[str], folder: Path, what: str) -> dict:
    """Run ``command`` in ``folder`` (stdout/stderr to files there) and read the JSON it writes to
    ``folder/result.json``; a failure ends the benchmark with the tail of its stderr."""
    with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
        done = subprocess.run(command, cwd=folder, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = (folder / "stderr.txt").read_text(errors="replace").strip().splitlines()[-5:]
        sys.exit(f"{what} failed (exit status {done.returncode}):\n  " + "\n  ".join(tail))
    return json.loads((folder / "result.json").read_text())


def time_setting(name: str, code: Path, main: str, python: str, threads: int | None = None) -> Timing:
    """Run setting ``name`` with the reference (``python`` on ``code/main``, torch with ``threads``
    intra-op threads, its default when None) and then with egpo, each in a fresh process in its own
    temporary folder (the reference writes its figures and data there)."""
    alg, kind, beta = reference_arguments(PRESETS[name])
    with tempfile.TemporaryDirectory(prefix="bench_reference_") as tmp:
        ref_dir, egpo_dir = Path(tmp, "reference"), Path(tmp, "egpo")
        ref_dir.mkdir()
        egpo_dir.mkdir()
        torch_threads = "default" if threads is None else str(threads)
        preset = PRESETS[name]
        games = [str(v) for v in (preset.seed, preset.runs, preset.num_actions, preset.config.hidden_dim,
                                  preset.config.depth)]
        ref = _run([python, "-c", _REFERENCE_DRIVER, str(code), str(code / main), alg, kind, repr(beta),
                    str(ref_dir / "result.json"), torch_threads, *games], ref_dir, f"reference, {name}")
        ours = _run([sys.executable, "-c", _EGPO_DRIVER, str(ROOT), name, str(egpo_dir / "result.json")],
                    egpo_dir, f"egpo, {name}")
    medians = {REFERENCE_ALGORITHMS[k.removesuffix(" Empirical")]: median_final(v)
               for k, v in ref["final_gaps"].items()}
    return Timing(name, ref["seconds"], ref["plotting"], ours["seconds"], ours["warm"], medians,
                  ours["median_final"], (int(ref["iters"]), float(ref["lr"])), int(ref["threads"]),
                  bool(ref["torchvision_stand_in"]))


def print_timings(timings: Sequence[Timing]) -> None:
    """The table of seconds and speed-ups, one row per setting and one for all of them."""
    print(f"\n{'setting':26s} {'reference s':>11s} {'(its plots)':>11s} {'egpo s':>8s} "
          f"{'x compute':>9s} {'x as run':>8s}")
    for t in timings:
        print(f"{t.setting:26s} {t.reference_s:11.1f} {t.plotting_s:11.1f} {t.egpo_s:8.2f} "
              f"{t.compute_ratio:9.1f} {t.as_run_ratio:8.1f}")
    ref, plots, ours = (sum(getattr(t, f) for t in timings) for f in ("reference_s", "plotting_s", "egpo_s"))
    label = "whole suite" if len(timings) == len(PRESETS) else f"these {len(timings)}"
    print(f"{label:26s} {ref:11.1f} {plots:11.1f} {ours:8.2f} {(ref - plots) / ours:9.1f} {ref / ours:8.1f}")
    print(f"(egpo's kernel load, once per process, not counted: "
          f"{', '.join(f'{t.egpo_load_s:.1f}' for t in timings)} s)")


def print_agreement(timings: Sequence[Timing], rtol: float) -> int:
    """Per setting and algorithm: the reference's median final gap, egpo's, the recorded one and the
    verdicts (exact settings only). Returns the number of exact (setting, algorithm) pairs that differ."""
    differing = 0
    print(f"\nmedian final duality gap over the runs (verdicts: |a-b| <= {rtol:g}·max, or both < {GAP_FLOOR:g})")
    print(f"{'setting':26s} {'algorithm':11s} {'reference':>10s} {'egpo':>10s} {'recorded':>10s}  "
          f"{'egpo vs reference':17s} {'reference vs recorded'}")
    for t in timings:
        exact = PRESETS[t.setting].gradient == "exact"
        recorded = REFERENCE_MEDIANS.get(t.setting, {})
        for alg in PAPER_ALGORITHMS:
            a, b, r = t.reference_medians[alg], t.egpo_medians[alg], recorded.get(alg, float("nan"))
            if exact:
                verdicts = agreement(a, b, rtol), (agreement(a, r, rtol) if math.isfinite(r) else "-")
                differing += verdicts[0] == "differs"
            else:
                verdicts = "(other draws)", "(other draws)"
            print(f"{t.setting:26s} {alg:11s} {a:10.2e} {b:10.2e} {r:10.2e}  {verdicts[0]:17s} {verdicts[1]}")
    return differing


def _refuse(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_inputs(code: str, main: str, python: str) -> tuple[Path, str]:
    """The reference folder and interpreter, checked before anything long runs: the folder and its
    files exist, the interpreter is executable and imports what the reference needs. Returns the
    folder as an absolute path and the interpreter."""
    folder = Path(code).resolve()
    if not folder.is_dir():
        _refuse(f"--reference-code {code}: no such folder")
    missing = [f for f in (main, *REFERENCE_MODULES) if not (folder / f).is_file()]
    if missing:
        _refuse(f"--reference-code {code}: no {', '.join(missing)} there "
                "(a checkout of the paper's simulations/ folder?)")
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        _refuse(f"--reference-python {python}: not an executable file")
    probe = subprocess.run([python, "-c", "import torch, numpy, scipy, matplotlib, tqdm"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        _refuse(f"--reference-python {python}: cannot import the reference's packages ({last})")
    return folder, python


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, time the settings and print the tables."""
    parser = OneLineArgumentParser(prog="bench_reference.py", description=__doc__.split("\n")[0])
    parser.add_argument("--reference-code", required=True, metavar="DIR",
                        help="a checkout of the paper's simulations/ folder")
    parser.add_argument("--reference-python", required=True, metavar="PATH",
                        help="the Python of a virtual environment where the reference code runs")
    parser.add_argument("--reference-main", default="main.py", metavar="FILE",
                        help="its main script in DIR: one with --alg and --type, or one whose settings are "
                             "constants (ALG = ..., the public checkout's run.py: the games are then drawn "
                             "with the setting's seed and written where it reads them) (default: %(default)s)")
    parser.add_argument("--settings", nargs="+", choices=list(PRESETS), default=list(PRESETS), metavar="NAME",
                        help=f"settings to time, egpo preset names (default: all: {', '.join(PRESETS)})")
    parser.add_argument("--reference-threads", type=int, default=None, metavar="N",
                        help="torch intra-op threads of the reference (default: torch's own, one per core)")
    parser.add_argument("--rtol", type=float, default=0.1,
                        help="relative tolerance of the exact settings' agreement check (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 0 < args.rtol < 1:
        parser.error(f"--rtol {args.rtol}: must be in (0, 1)")
    if args.reference_threads is not None and args.reference_threads < 1:
        parser.error(f"--reference-threads {args.reference_threads}: must be a positive integer")
    folder, python = check_inputs(args.reference_code, args.reference_main, args.reference_python)
    timings = []
    for name in dict.fromkeys(args.settings):
        print(f"{name}: reference, then egpo ...", flush=True)
        t = time_setting(name, folder, args.reference_main, python, args.reference_threads)
        preset = PRESETS[name]
        if t.reference_setting != (preset.iterations, preset.lr):
            print(f"  note: the reference's setting is iterations={t.reference_setting[0]}, "
                  f"lr={t.reference_setting[1]}; egpo's preset has iterations={preset.iterations}, lr={preset.lr}")
        print(f"  reference {t.reference_s:.1f} s (plots {t.plotting_s:.1f} s), egpo {t.egpo_s:.2f} s", flush=True)
        timings.append(t)
    stand_in = " (torchvision: empty stand-in module)" if timings[0].stand_in else ""
    print(f"\nmachine: {os.cpu_count()} cores; reference: torch threads {timings[0].torch_threads}{stand_in}; "
          f"egpo numba threads: {os.environ.get('NUMBA_NUM_THREADS', 'default')}")
    print_timings(timings)
    differing = print_agreement(timings, args.rtol)
    print(f"\nexact settings: {'all agree' if differing == 0 else f'{differing} (setting, algorithm) pairs differ'}")


if __name__ == "__main__":
    main()
