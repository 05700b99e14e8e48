"""The notebooks: each run (a notebook with its parameters, ``run_all.RUNS``) executes under papermill with
fast=True and writes its figures and tidy data; the data hold the expected algorithms, runs and steps and
agree with each other; no import cell prints a warning; every notebook source (a jupytext percent-format
``notebooks/<name>.py``) has a parameters cell, writes by default into the ignored scratch folder
runs/notebooks/<run>/, and is run by make reproduce, which alone writes figures/<run>/; committed
``.ipynb`` files carry no outputs (and, in notebooks/, match their source); notebooks/run_all.py (make
reproduce) stops with the failing run's name.

Each run executes once per session, as ``python notebooks/run_all.py --fast --only <run>`` into pytest's
tmp folder (the committed figures are never touched), the session's runs several at once before the first
test that reads one (each test names its runs with the ``notebook_runs`` marker). make test executes one
run of every notebook source but benchmarks; that one (it times the simulator and the LM updates) and the
two other settings of sim_setting are marked slow (make test-slow), so every run still executes in CI.

Tolerances: medians recomputed from the tidy data match the summary tables to 1e-12 (relative); measured
slopes within [0.8, 1.4]× the linearized prediction for β ≥ 0.03 in the fast grid (300 steps still hold
some transient); a duality gap may round below 0 by 1e-12 at most.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from PIL import Image
import numpy as np
import pandas as pd
import pytest

from egpo_core.algorithms import PAPER_ALGORITHMS
from egpo_core.rates import CLASSES
from egpo_core.presets import PRESETS, REFERENCE_MEDIANS

pytest.importorskip("papermill")  # notebooks/run_all.py executes the notebooks with it
jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
ALL_ALGORITHMS = list(PAPER_ALGORITHMS) + ["mpo", "sppo", "omwu"]
#: theory_checks' rate map: the eight above and the methods published since, each on its target metric
MAPPED_ALGORITHMS = ALL_ALGORITHMS + ["comal", "inpo", "mnpo", "nash_mp", "onpo"]
TABULAR = [name for name, p in PRESETS.items() if p.policy == "tabular"]


def _load_run_all():
    spec = importlib.util.spec_from_file_location("run_all", NOTEBOOK_DIR / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUN_ALL = _load_run_all()


#: Runs that read another run's outputs start after it: lm_winrates evaluates lm_synthetic_benchmark's checkpoints.
NEEDS = {"lm_winrates": ("lm_synthetic_benchmark",)}


def _workers(count: int) -> int:
    """How many runs execute at once: one per CPU this process may use, at most 4 (each kernel holds a few
    hundred MB) and at most ``count``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4, count))


def _execute_runs(names: list[str], base: Path, done: dict[str, tuple[float, str | None]]) -> None:
    """Execute the runs ``names`` with fast=True, each as ``python notebooks/run_all.py --fast --only <run>``
    (what a user types), several at once (:func:`_workers`), a run after the runs it NEEDS, the longest
    first; executed copies in ``base``, figures in ``base/figures/<run>``. Adds run →
    (wall seconds, None or the failure) to ``done``; the runs still going when something fails are stopped."""
    for name in names:  # --only <run> picks that run alone
        assert [n for n, (source, _) in RUN_ALL.RUNS.items() if name in (n, source)] == [name], name
    jobs = _workers(len(names))
    env = dict(os.environ)
    # the kernels share the CPUs: one BLAS/OpenMP thread pool each, unless the caller chose a size
    env.setdefault("OMP_NUM_THREADS", str(max(1, _workers(64) // jobs)))
    needed = {d for n in names for d in NEEDS.get(n, ())}
    order = list(RUN_ALL.RUNS)
    # those others need first (the longest chain), then from RUNS' end: the language-model and timing runs,
    # the longest, come last there
    pending = sorted(names, key=lambda n: (n not in needed, -order.index(n)))
    running: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    try:
        while pending or running:
            for name in [n for n in pending if all(d in done for d in NEEDS.get(n, ()))]:
                if len(running) == jobs:
                    break
                pending.remove(name)
                failed = [d for d in NEEDS.get(name, ()) if done[d][1] is not None]
                if failed:
                    done[name] = (0.0, f"not executed: {failed[0]}, whose outputs it reads, failed")
                    continue
                log = base / f"{name}.log"
                command = [sys.executable, str(NOTEBOOK_DIR / "run_all.py"), "--fast", "--only", name,
                           "--out-dir", str(base), "--figures-dir", str(base / "figures")]
                with open(log, "w") as handle:
                    # its own process group: stopped below with its kernel
                    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                               start_new_session=True)
                running[name] = (process, time.perf_counter(), log)
            time.sleep(0.2)
            for name, (process, started, log) in list(running.items()):
                if process.poll() is not None:
                    del running[name]
                    error = None
                    if process.returncode != 0:
                        error = f"exit status {process.returncode}:\n{log.read_text()[-3000:]}"
                    done[name] = (time.perf_counter() - started, error)
    finally:  # interrupted (Ctrl-C, a timeout): no kernel outlives the session
        for process, _, _ in running.values():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def executed(request, tmp_path_factory):
    """run(name) -> the figures folder of run ``name`` executed with fast=True.

    At the first call every run that the session's selected tests name (their ``notebook_runs`` marker)
    executes, several at once (:func:`_execute_runs`); a run asked for later, or by a test without the
    marker, executes then. Each run executes once per session."""
    base = tmp_path_factory.mktemp("notebooks")
    wanted = [name for item in request.session.items
              for marker in item.iter_markers("notebook_runs") for name in marker.args]
    results: dict[str, tuple[float, str | None]] = {}

    def run(name: str) -> Path:
        if name not in results:
            batch = {name, *wanted}
            batch |= {d for n in batch for d in NEEDS.get(n, ())}
            _execute_runs([n for n in RUN_ALL.RUNS if n in batch and n not in results], base, results)
        seconds, error = results[name]
        if error is not None:
            pytest.fail(f"notebook run {name} failed under papermill ({seconds:.0f} s): {error}")
        executed_nb = nbformat.read(base / f"{name}.ipynb", as_version=4)
        injected = [c for c in executed_nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "fast = True" in injected[0].source
        return base / "figures" / name

    return run


def _assert_quiet_imports(out: Path, name: str) -> None:
    """The import cell (first code cell after the parameters) of an executed run printed no warning, and
    the shared start (``_setup.start``) said where this run's outputs go: the out_dir it was given."""
    nb = nbformat.read(out.parent.parent / f"{name}.ipynb", as_version=4)
    tags = ("parameters", "injected-parameters")
    cell = next(c for c in nb.cells if c.cell_type == "code" and not set(tags) & set(c.metadata.get("tags", [])))
    assert "import" in cell.source
    stderr = [o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
    warnings = [o for o in cell.outputs if "warn" in str(o.get("text", "")).lower()]
    assert not stderr and not warnings, f"{name}: the import cell printed {stderr or warnings}"
    stdout = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    assert f"writing figures and data to {out}\n" in stdout, f"{name}: {stdout!r}"


def _figures(folder: Path, stems: list[str], dpi: int = 150) -> None:
    for stem in stems:
        png, pdf = folder / f"{stem}.png", folder / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert pdf.read_bytes()[:5] == b"%PDF-", pdf
        assert png.stat().st_size > 10_000  # something was drawn
        with Image.open(png) as image:  # readable: at least 150 dots per inch
            assert min(image.info["dpi"]) >= dpi - 0.5, (png, image.info["dpi"])


def _check_tidy(folder: Path, preset: str) -> pd.DataFrame:
    """The thinned metrics of one preset: algorithms, runs, steps and values as expected."""
    p = PRESETS[preset]
    tidy = pd.read_parquet(folder / f"metrics_{preset}.parquet")
    assert list(tidy["algorithm"].cat.categories) == list(PAPER_ALGORITHMS)
    assert set(tidy["algorithm"]) == set(PAPER_ALGORITHMS)
    assert sorted(tidy["run"].unique()) == list(range(p.runs))
    steps = np.sort(tidy["step"].unique())
    assert steps[0] == 0 and steps[-1] == p.fast_iterations
    assert steps.size <= 501  # max_steps = 500 evenly spaced, plus t = 0
    assert len(tidy) == len(PAPER_ALGORITHMS) * p.runs * steps.size
    assert set(tidy["metric"]) == {"duality_gap"} and set(tidy["preset"]) == {preset}
    assert np.allclose(tidy["beta"], p.beta) and np.allclose(tidy["lr"], p.lr)
    # a duality gap is ≥ 0; computed as a difference of O(1) terms it may round below 0 by a few ε
    assert np.isfinite(tidy["value"]).all() and (tidy["value"] >= -1e-12).all()
    return tidy


def _check_summary(summary: pd.DataFrame, tidy: pd.DataFrame, preset: str) -> None:
    """Medians of the summary = medians over runs of the tidy data's last step; reference columns."""
    part = summary[summary["preset"] == preset].set_index("algorithm")
    assert list(part.index) == list(PAPER_ALGORITHMS)
    last = tidy[tidy["step"] == tidy["step"].max()]
    for alg in PAPER_ALGORITHMS:
        median = float(np.median(last.loc[last["algorithm"] == alg, "value"]))
        assert part.loc[alg, "median_final"] == pytest.approx(median, rel=1e-12, abs=1e-300)
        assert part.loc[alg, "reference_median"] == REFERENCE_MEDIANS[preset][alg]
        assert 0 <= part.loc[alg, "reached"] <= PRESETS[preset].runs
    assert (part["conventions"] == "reference").all()
    assert (part["iterations"] == PRESETS[preset].fast_iterations).all()


# ----------------------------------------------------------------------------------------------------
# the simulation notebooks


@pytest.mark.notebook_runs("sim_exact_tabular")
def test_sim_exact_tabular(executed):
    out = executed("sim_exact_tabular")
    _assert_quiet_imports(out, "sim_exact_tabular")
    presets = ["exact-tabular-beta0.1", "exact-tabular-beta0.01", "exact-tabular-beta0.001"]
    _figures(out, ["picked"] + [f"panels_{p}".replace(".", "_") for p in presets])
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["preset"].unique()) == presets
    for preset in presets:
        _check_summary(summary, _check_tidy(out, preset), preset)
        part = summary[summary["preset"] == preset].set_index("algorithm")["median_final"]
        # the paper's claim, already visible on the short horizons: EGPO ends lowest at every β
        assert part.idxmin() == "egpo", preset
    beta01 = summary[summary["preset"] == "exact-tabular-beta0.1"].set_index("algorithm")
    assert beta01.loc["egpo", "reached"] == 10  # linear convergence: all runs below 1e-6 in 200 steps


@pytest.mark.parametrize(
    "name,preset",
    [
        pytest.param("sim_exact_neural", "exact-neural-beta0.01", marks=pytest.mark.notebook_runs("sim_exact_neural")),
        # the same notebook source as sim_exact_neural with another preset: make test-slow runs them
        pytest.param("sim_sampled_tabular", "sampled-tabular-beta0.01",
                     marks=[pytest.mark.slow, pytest.mark.notebook_runs("sim_sampled_tabular")]),
        pytest.param("sim_sampled_neural", "sampled-neural-beta0.1",
                     marks=[pytest.mark.slow, pytest.mark.notebook_runs("sim_sampled_neural")]),
    ],
)
def test_setting_notebooks(executed, name, preset):
    assert RUN_ALL.RUNS[name] == ("sim_setting", {"preset": preset, "progress": False})  # one run per setting
    out = executed(name)
    _assert_quiet_imports(out, name)
    _figures(out, [f"panels_{preset}".replace(".", "_")])
    tidy = _check_tidy(out, preset)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["preset"]) == {preset}
    _check_summary(summary, tidy, preset)
    # every algorithm moved away from π_0 = π_ref
    first = tidy[tidy["step"] == 0].groupby("algorithm", observed=True)["value"].median()
    last = tidy[tidy["step"] == tidy["step"].max()].groupby("algorithm", observed=True)["value"].median()
    assert (last != first).all()


@pytest.mark.notebook_runs("sim_reference_vs_correct")
def test_sim_reference_vs_correct(executed):
    out = executed("sim_reference_vs_correct")
    _assert_quiet_imports(out, "sim_reference_vs_correct")
    _figures(out, ["median_gap_grid", "median_final_dumbbell"])
    table = pd.read_csv(out / "conventions_table.csv")
    assert list(table["setting"].unique()) == list(PRESETS)
    assert len(table) == len(PRESETS) * len(PAPER_ALGORITHMS)
    # the conventions touch only Nash-MD(-PG) in the tabular settings: the others are the same runs
    same = table[table["setting"].isin(TABULAR) & table["algorithm"].isin(["oipo1", "oipo2", "egpo"])]
    assert len(same) == 3 * len(TABULAR)
    assert (same["median_reference"] == same["median_default"]).all()
    np.testing.assert_allclose(table["ratio"], table["median_reference"] / table["median_default"], rtol=1e-12)
    # the neural runs differ (shared vs per-run networks)
    neural = table[~table["setting"].isin(TABULAR)]
    assert (neural["median_reference"] != neural["median_default"]).any()
    curves = pd.read_parquet(out / "median_curves.parquet")
    assert set(curves["label"]) == {"reference", "default"}
    assert set(curves["algorithm"]) == set(PAPER_ALGORITHMS)
    for setting, part in curves.groupby("setting"):
        assert part["step"].max() == PRESETS[setting].fast_iterations
        assert set(part["gradient"]) == {PRESETS[setting].gradient}
    assert (curves["q25"] <= curves["median"] + 1e-12).all() and (curves["median"] <= curves["q75"] + 1e-12).all()


@pytest.mark.notebook_runs("theory_checks")
def test_theory_checks(executed):
    out = executed("theory_checks")
    _assert_quiet_imports(out, "theory_checks")
    _figures(out, ["rate_map", "slopes_vs_theory", "beta_to_zero", "extra_algorithms"])
    rates = pd.read_parquet(out / "rate_table.parquet")
    assert set(rates["algorithm"]) == set(MAPPED_ALGORITHMS)
    assert sorted(rates["run"].unique()) == [0, 1, 2]
    assert set(rates["eta"]) == {0.3, 3.0, 30.0} and set(rates["beta"]) == {0.3, 0.03, 0.003}
    assert len(rates) == 3 * 3 * len(MAPPED_ALGORITHMS) * 3
    on_exploitability = {"sppo", "onpo", "comal"}  # anchored at π_t or at a magnet refreshed every K updates
    assert set(rates.loc[rates["metric"] == "exploitability", "algorithm"]) == on_exploitability
    assert rates.loc[rates["algorithm"].isin(on_exploitability), "predicted_slope"].isna().all()
    assert set(rates["class"]) <= set(CLASSES)
    assert rates.loc[rates["eta"] * rates["beta"] >= 1, "theory_slope"].isna().all()
    conv = rates[(rates["class"] == "converges") & rates["predicted_slope"].notna() & (rates["beta"] >= 0.03)]
    assert {"egpo", "oipo1", "omwu"} <= set(conv["algorithm"])
    ratio = conv["slope"] / conv["predicted_slope"]
    assert ratio.between(0.8, 1.4).all(), conv.assign(ratio=ratio)
    # predictions too small to measure on the horizon are exactly 0, the others are not
    tiny = rates["predicted_slope"].abs() * 300 < 0.01
    assert (rates.loc[tiny, "predicted_slope"] == 0).all()
    # committed tables keep 6 significant digits (machine-independent)
    floats = rates.select_dtypes("float").to_numpy().ravel()
    floats = floats[np.isfinite(floats)]
    np.testing.assert_array_equal(floats, [float(f"{v:.6g}") for v in floats])
    cells = pd.read_csv(out / "rate_map.csv")
    assert len(cells) == 3 * 3 * len(MAPPED_ALGORITHMS)
    # EGPO converges wherever OMD does on this grid
    by = cells.pivot_table(index=["beta", "eta"], columns="algorithm", values="class", aggfunc="first")
    assert (by.loc[by["oipo1"] == "converges", "egpo"] == "converges").all()

    by_beta = pd.read_csv(out / "exploitability_vs_beta.csv")
    assert set(by_beta["algorithm"]) == set(ALL_ALGORITHMS)
    assert by_beta["nash_exploitability"].abs().max() < 1e-9
    bias = by_beta.groupby("beta")["equilibrium_exploitability"].median().sort_index()
    assert (np.diff(bias.to_numpy()) > 0).all()  # the bias of π*_β grows with β
    by_horizon = pd.read_csv(out / "exploitability_vs_horizon.csv")
    assert sorted(by_horizon["horizon"].unique()) == [100, 300]
    # stored to 6 significant digits (the committed tables do not depend on the machine)
    np.testing.assert_allclose(by_horizon["beta"], 5.0 / by_horizon["horizon"], rtol=5e-6)
    egpo = by_horizon[by_horizon["algorithm"] == "egpo"].groupby("horizon")["exploitability"].median()
    assert egpo[300] < egpo[100]

    final = pd.read_csv(out / "extra_algorithms_final.csv").set_index("algorithm")
    assert set(final.index) == set(ALL_ALGORITHMS) | {"mpo (reset every 50)"}
    # MPO's magnet resets move it toward the original game's equilibrium, past the bias of π*_β
    others = final.drop(index="mpo (reset every 50)")["exploitability"]
    assert final.loc["mpo (reset every 50)", "exploitability"] < others.min()
    curves = pd.read_parquet(out / "extra_algorithms_curves.parquet")
    assert set(curves["metric"]) == {"duality gap", "exploitability"}
    assert curves["step"].max() == 200


@pytest.mark.slow  # the benchmarks notebook times the simulator and the LM updates (about a minute)
@pytest.mark.notebook_runs("benchmarks")
def test_benchmarks(executed):
    out = executed("benchmarks")
    _assert_quiet_imports(out, "benchmarks")
    _figures(out, ["benchmarks"])
    presets = pd.read_csv(out / "presets_timing.csv")
    assert list(presets["preset"]) == list(PRESETS)
    assert list(presets["iterations"]) == [p.fast_iterations for p in PRESETS.values()]
    assert (presets["seconds"] > 0).all()
    np.testing.assert_array_equal(presets["trajectory_steps"], presets["iterations"] * presets["runs"] * 5)
    scaling = pd.read_csv(out / "scaling.csv")
    assert list(scaling["vary"].unique()) == ["N", "runs", "steps"]
    assert (scaling.groupby("vary").size() == 3).all() and (scaling["seconds"] > 0).all()
    assert list(scaling.loc[scaling["vary"] == "N", "num_actions"]) == [10, 30, 100]


# ----------------------------------------------------------------------------------------------------
# notebook sources, committed notebooks and run_all.py


def _sources() -> list[Path]:
    """The notebook sources of notebooks/: the .py files in jupytext's percent format."""
    return sorted(p for p in NOTEBOOK_DIR.glob("*.py") if re.search(r"^# %%", p.read_text(), re.M))


def _committed_ipynb() -> list[Path]:
    """Every .ipynb that git tracks in the repository (none at all when git cannot tell)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "*.ipynb"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return sorted(ROOT / name for name in listed.split("\0") if name)


def _declared_runs() -> dict[str, bool]:
    """run → whether only slow tests of this module read it, from their ``notebook_runs`` markers (on the
    test function, or on one of its parametrize cases)."""
    slow: dict[str, bool] = {}
    for test in [obj for name, obj in globals().items() if name.startswith("test_") and callable(obj)]:
        cases = [(list(getattr(test, "pytestmark", [])), [])]
        for mark in getattr(test, "pytestmark", []):
            if mark.name == "parametrize":
                cases += [(cases[0][0], list(case.marks)) for case in mark.args[1] if hasattr(case, "marks")]
        for own, extra in cases:
            names = [n for m in own + extra if m.name == "notebook_runs" for n in m.args]
            is_slow = any(m.name == "slow" for m in own + extra)
            for name in names:
                slow[name] = slow.get(name, True) and is_slow
    return slow


def test_every_run_executes_in_make_test_or_make_test_slow():
    declared = _declared_runs()
    assert set(declared) == set(RUN_ALL.RUNS), set(RUN_ALL.RUNS) ^ set(declared)
    # make test (-m "not slow") executes at least one run of every notebook source
    fast_sources = {RUN_ALL.RUNS[name][0] for name, slow in declared.items() if not slow}
    assert fast_sources == set(RUN_ALL.NOTEBOOKS) - {"benchmarks"}, fast_sources
    assert declared["benchmarks"] and declared["sim_sampled_tabular"] and not declared["sim_exact_neural"]


def test_every_notebook_is_run_by_make_reproduce():
    assert sorted(p.stem for p in _sources()) == sorted(RUN_ALL.NOTEBOOKS)
    assert all(RUN_ALL.source_path(name).is_file() for name in RUN_ALL.NOTEBOOKS)
    assert {source for source, _ in RUN_ALL.RUNS.values()} == set(RUN_ALL.NOTEBOOKS)


def test_every_python_file_of_notebooks_is_a_notebook_or_a_named_helper():
    # a new module there must be listed here, or it would silently escape the notebook checks below
    helpers = {"run_all.py", "_setup.py"}
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.py") if p not in _sources()) == sorted(helpers)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.stem)
def test_notebook_starts_with_the_shared_setup(path):
    # one home for the start: no notebook keeps its own copy of what _setup.py does
    source = path.read_text()
    assert re.search(r"^from _setup import show, start$", source, re.M), path.name
    for own in ("def show(", "figure_dir(", "pd.set_option(", "writing figures and data"):
        assert own not in source, f"{path.name} has its own {own!r}"


def test_shared_setup_makes_the_folder_sets_pandas_and_shows_the_png(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("_setup", NOTEBOOK_DIR / "_setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    with pd.option_context("display.float_format", None):  # restored afterwards
        out = setup.start("any", tmp_path / "given" / "folder")
        assert pd.get_option("display.float_format")(1234.5678) == "1.23e+03"  # 3 significant digits
    assert out == tmp_path / "given" / "folder" and out.is_dir()
    assert capsys.readouterr().out == f"writing figures and data to {out}\n"
    png = tmp_path / "f.png"
    Image.new("RGB", (3, 2)).save(png)
    shown = []
    monkeypatch.setattr(setup, "display", shown.append)
    setup.show([png, tmp_path / "f.pdf"])  # what plotting.save_figure returns: the PNG first
    assert len(shown) == 1 and shown[0].data == png.read_bytes()


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.stem)
def test_notebook_header_names_the_kernel_as_installed(path):
    # the kernelspec JupyterLab writes back when it saves a notebook (autosave, after opening it) is the
    # running kernel's: a header that already holds it is saved byte for byte, leaving git clean
    assert jupytext.read(path, fmt="py:percent").metadata["kernelspec"] == RUN_ALL.KERNELSPEC, path.name


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.stem)
def test_notebook_writes_to_the_scratch_folder_by_default(path):
    # opened in JupyterLab (out_dir = None) a notebook writes into runs/notebooks/<name>/, ignored by git
    assert re.search(r"^out = start\(NOTEBOOK, out_dir\)$", path.read_text(), re.M), path.name
    from egpo_core.plotting import figure_dir

    folder = figure_dir(f"_test_default_{path.stem}")
    try:
        assert folder == ROOT / "runs" / "notebooks" / f"_test_default_{path.stem}"
    finally:
        folder.rmdir()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(folder)], cwd=ROOT)
    assert ignored.returncode == 0, f"{folder} is not ignored by git"


def _check_notebook(nb: nbformat.NotebookNode, name: str) -> None:
    """No outputs, a first code cell tagged ``parameters`` with fast = False and out_dir = None, text."""
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [], f"{name}: a code cell carries outputs"
        assert cell.execution_count is None, f"{name}: a code cell carries an execution count"
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []), f"{name}: the first code cell is not tagged parameters"
    assert re.search(r"^fast = False\b", first.source, re.M), name
    assert re.search(r"^out_dir = None\b", first.source, re.M), name
    assert nb.metadata["kernelspec"]["name"] == "python3", name
    assert any(c.cell_type == "markdown" for c in nb.cells), name


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.stem)
def test_notebook_source_has_a_parameters_cell(path, tmp_path):
    source = path.read_text()
    assert re.search(r'^# %% tags=\["parameters"\]$', source, re.M), f"{path.name}: no parameters cell"
    assert re.search(r"^# %% \[markdown\]$", source, re.M), f"{path.name}: no markdown cell"
    # the notebook run_all.py generates from it: one parameters cell, first among the code cells
    nb = nbformat.read(RUN_ALL.write_notebook(path, tmp_path / f"{path.stem}.ipynb"), as_version=4)
    _check_notebook(nb, path.name)
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1


def _check_committed_ipynb(path: Path) -> None:
    """A committed notebook carries no outputs; one in notebooks/ has the cells of its source."""
    nb = nbformat.read(path, as_version=4)
    _check_notebook(nb, path.name)
    if path.parent == NOTEBOOK_DIR:
        source = NOTEBOOK_DIR / f"{path.stem}.py"
        assert source.is_file(), f"{path.name}: committed without its source {source.name}"
        expected = jupytext.read(source, fmt="py:percent")
        assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in expected.cells], (
            f"{path.name} differs from {source.name}")


def test_committed_notebooks_have_no_outputs():
    for path in _committed_ipynb():
        _check_committed_ipynb(path)


def test_the_no_outputs_check_can_fail(tmp_path):
    good = RUN_ALL.write_notebook(_sources()[0], tmp_path / "good.ipynb")
    _check_committed_ipynb(good)  # outside notebooks/: no source to match
    nb = nbformat.read(good, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.execution_count = 1
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi")]
    bad = tmp_path / "bad.ipynb"
    nbformat.write(nb, bad)
    with pytest.raises(AssertionError, match="carries outputs"):
        _check_committed_ipynb(bad)


def _tiny_notebook(path: Path, source: str) -> None:
    """A two-cell percent-format source: the parameters, then ``source``."""
    path.write_text('# %% tags=["parameters"]\nfast = False\nout_dir = None\n\n# %%\n' + source + "\n")


def test_run_all_reports_progress_and_stops_at_a_failing_notebook(tmp_path, monkeypatch, capsys):
    source = tmp_path / "src"
    source.mkdir()
    _tiny_notebook(source / "sim_exact_tabular.py", "import json, pathlib\n"
                   "pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)\n"
                   "(pathlib.Path(out_dir) / 'p.json').write_text(json.dumps({'fast': fast}))")
    _tiny_notebook(source / "sim_setting.py", "1 / 0")
    monkeypatch.setattr(RUN_ALL, "HERE", source)
    executed_dir = tmp_path / "executed"
    code = RUN_ALL.main(["--fast", "--only", "sim_exact_tabular", "--only", "sim_exact_neural",
                         "--only", "sim_sampled_tabular", "--out-dir", str(executed_dir)])
    captured = capsys.readouterr()
    assert code == 1
    assert re.search(r"\[1/3\] sim_exact_tabular \.\.\. ok \(\d+\.\d s\)", captured.out)
    assert "[2/3] sim_exact_neural ... FAILED" in captured.out
    assert "sim_sampled_tabular" not in captured.out  # stopped at the failure
    assert "notebook sim_exact_neural failed" in captured.err and "ZeroDivisionError" in captured.err
    # with --fast and no --figures-dir the figures go under the executed folder, not figures/
    written = executed_dir / "figures" / "sim_exact_tabular" / "p.json"
    assert json.loads(written.read_text()) == {"fast": True}
    assert (executed_dir / "sim_exact_neural.ipynb").exists()


def test_run_all_full_run_writes_the_committed_figures_folder(tmp_path, monkeypatch, capsys):
    source = tmp_path / "notebooks"
    source.mkdir()
    _tiny_notebook(source / "sim_setting.py", "import json, pathlib\n"
                   "pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)\n"
                   "(pathlib.Path(out_dir) / 'p.json').write_text(json.dumps({'fast': fast, 'preset': preset}))")
    monkeypatch.setattr(RUN_ALL, "HERE", source)
    code = RUN_ALL.main(["--only", "sim_setting", "--out-dir", str(tmp_path / "executed")])
    assert code == 0, capsys.readouterr().err
    # without --fast every run writes to <repository>/figures/<run>, one run per setting
    for run in ("sim_exact_neural", "sim_sampled_tabular", "sim_sampled_neural"):
        written = json.loads((tmp_path / "figures" / run / "p.json").read_text())
        assert written == {"fast": False, "preset": RUN_ALL.RUNS[run][1]["preset"]}


# ----------------------------------------------------------------------------------------------------
# the language-model notebooks

LM_ALGORITHMS = {"egpo", "oipo1", "oipo2", "nashmd", "nashmdpg"}


@pytest.mark.slow  # shares the benchmarks notebook's run with test_benchmarks
@pytest.mark.notebook_runs("benchmarks")
def test_benchmarks_language_model_section(executed):
    out = executed("benchmarks")
    _figures(out, ["lm_seconds_per_update"])
    assert (out / "lm_seconds_per_update.png").stat().st_size < 450_000
    raw = json.loads((out / "lm_bench.json").read_text())
    assert set(raw) == LM_ALGORITHMS
    assert {r["updates_measured"] for r in raw.values()} == {2}  # fast: 2 timed updates
    frame = pd.read_csv(out / "lm_seconds_per_update.csv")
    ours = frame[frame["source"] == "this repository"]
    assert set(ours["algorithm"]) == LM_ALGORITHMS
    phases = ["forward_backward", "generation", "judging", "other", "total"]
    assert ours.groupby("algorithm")["phase"].apply(sorted).to_dict() == {a: phases for a in LM_ALGORITHMS}
    totals = ours[ours["phase"] == "total"].set_index("algorithm")
    for alg, r in raw.items():
        assert totals.loc[alg, "seconds"] == pytest.approx(r["seconds_per_update"], rel=1e-12)
        assert totals.loc[alg, "peak_rss_mib"] == pytest.approx(r["peak_rss_mib"], rel=1e-12)
    assert (ours["seconds"] >= 0).all() and (totals["seconds"] > 0).all()
    anchors = frame[frame["source"] != "this repository"].set_index(["algorithm", "source"])["seconds"]
    assert anchors.to_dict() == {("oipo1", "reference trainer"): 0.077, ("oipo1", "TRL"): 0.048,
                                 ("nashmd", "TRL"): 0.109, ("egpo", "reference trainer"): 0.152}


@pytest.mark.notebook_runs("lm_synthetic_benchmark")
def test_lm_synthetic_benchmark(executed):
    out = executed("lm_synthetic_benchmark")
    _figures(out, ["gap_exploitability", "vs_simulation"])
    for stem in ("gap_exploitability", "vs_simulation"):
        assert (out / f"{stem}.png").stat().st_size < 450_000
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["algorithm"]) == LM_ALGORITHMS
    assert set(curves["metric"]) == {"duality_gap", "exploitability"}
    assert sorted(curves["update"].unique()) == [0, 2, 4]  # FAST: 4 updates, evaluated every 2
    assert set(curves["seeds"]) == {2}
    assert (curves["low"] <= curves["median"] + 1e-12).all() and (curves["median"] <= curves["high"] + 1e-12).all()
    # the medians are those of the benchmark's own tidy metrics
    metrics = pd.read_csv(out / "run" / "metrics.csv")
    summary = json.loads((out / "run" / "summary.json").read_text())
    for (metric, alg, update), median in curves.set_index(["metric", "algorithm", "update"])["median"].items():
        rows = (metrics["metric"] == metric) & (metrics["algorithm"] == alg) & (metrics["update"] == update)
        assert rows.sum() == 2  # one per seed
        values = metrics.loc[rows, "value"]
        assert median == pytest.approx(float(np.median(values)), rel=1e-12)
    # update 0 is π_ref for every algorithm and seed (float32 forward passes: equal to 1e-6)
    start = curves[curves["update"] == 0]
    for metric in ("duality_gap", "exploitability"):
        part = start[start["metric"] == metric]
        np.testing.assert_allclose(part[["low", "median", "high"]], summary["reference"][metric], rtol=1e-6)
    final = pd.read_csv(out / "final.csv", index_col=0)
    assert set(final.index) == LM_ALGORITHMS | {"π_ref"}
    # with keep_checkpoints the benchmark also writes the win-rate tables (oracle judge, vs π_ref by epoch)
    assert summary["win_rates"] == "win_rates"
    winrates = pd.read_csv(out / "run" / "win_rates" / "winrates.csv")
    assert LM_ALGORITHMS <= set(winrates["algorithm"].dropna())
    assert ((winrates["win_rate"] >= 0) & (winrates["win_rate"] <= 1)).all()
    assert (out / "run" / "win_rates" / "tables" / "vs_reference.md").is_file()
    comparison = pd.read_csv(out / "comparison.csv")
    assert set(comparison["algorithm"]) == LM_ALGORITHMS
    # the checkpoints the lm_winrates notebook evaluates were kept
    assert sorted(p.name for p in (out / "run" / "runs" / "egpo_sum_seed0" / "epochs").iterdir()) == ["epoch-1", "epoch-2"]


def test_paper_lm_winrates_data():
    paper = pd.read_csv(NOTEBOOK_DIR / "data" / "paper_lm_winrates.csv")
    assert list(paper.columns) == ["algorithm", "epoch", "win_rate_percent", "source"]
    assert len(paper) == 50 and set(paper["algorithm"]) == LM_ALGORITHMS
    assert paper.groupby("algorithm")["epoch"].apply(sorted).to_dict() == {a: list(range(1, 11)) for a in LM_ALGORITHMS}
    by = paper.set_index(["algorithm", "epoch"])["win_rate_percent"]
    assert by["egpo", 10] == 55.0 and by["oipo1", 1] == 50.2 and by["nashmdpg", 10] == 48.5
    assert by.between(47, 56).all()


@pytest.mark.notebook_runs("lm_synthetic_benchmark", "lm_winrates")
def test_lm_winrates(executed):
    executed("lm_synthetic_benchmark")  # lm_winrates evaluates this notebook's run
    out = executed("lm_winrates")
    assert not (out / "benchmark").exists()  # it found the sibling run instead of training its own
    assert not (out / "eval").exists()  # and drew that run's own win-rate tables instead of evaluating again
    _figures(out, ["winrate_by_epoch"])
    assert (out / "winrate_by_epoch.png").stat().st_size < 450_000
    by_epoch = pd.read_csv(out / "winrate_by_epoch.csv")
    ours = by_epoch[by_epoch["source"] == "this repository: synthetic benchmark"]
    paper = by_epoch[by_epoch["source"] == "paper (Qwen run)"]
    assert len(ours) + len(paper) == len(by_epoch) and len(paper) == 50
    assert set(ours["algorithm"]) == LM_ALGORITHMS
    assert ours.groupby("algorithm")["epoch"].apply(sorted).to_dict() == {a: [1, 2] for a in LM_ALGORITHMS}
    assert ours["win_rate_percent"].between(0, 100).all()
    assert (ours["ci_low_percent"] <= ours["win_rate_percent"] + 1e-9).all()
    assert (ours["win_rate_percent"] <= ours["ci_high_percent"] + 1e-9).all()
    assert (ours["n_pairs"] == 2 * 2 * 4).all()  # FAST: 2 × 2 evaluation prompts, 4 samples each
    winrates = pd.read_csv(out / "winrates.csv")
    vs_ref = winrates[(winrates.comparison == "vs_reference") & (winrates.split == "all")]
    np.testing.assert_allclose(np.sort(vs_ref["win_rate"] * 100), np.sort(ours["win_rate_percent"]), rtol=1e-12)
    tables = {p.name: p.read_text() for p in (out / "tables").iterdir()}
    assert set(tables) == {"vs_reference.md", "vs_reference_ci.md", "pairwise.md", "pairwise_ci.md"}
    assert all(f"| {alg} |" in tables["vs_reference.md"] for alg in LM_ALGORITHMS)
    header = tables["pairwise.md"].splitlines()[0]
    assert all(f"{alg} (epoch {k})" in header for alg in LM_ALGORITHMS for k in (1, 2))  # best 2 of 2 epochs


def test_run_all_help_and_one_line_refusals():
    """``run_all.py --help`` runs; a bad run name and an abbreviated flag are each one error line naming
    the value, exit status 2, before any notebook starts."""
    script = str(NOTEBOOK_DIR / "run_all.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--only NAME" in shown.stdout
    for argv, named in ((["--only", "nope"], "'nope'"), (["--fa"], "--fa")):
        done = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith("error:") and named in lines[0] and not done.stdout
