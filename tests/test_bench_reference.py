"""benchmarks/bench_reference.py without the reference code: its --help, its refusals of bad paths and
values (one line on stderr, exit status 2, before anything runs) and its agreement helpers."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script, loaded as a module."""
    spec = importlib.util.spec_from_file_location("bench_reference", ROOT / "benchmarks" / "bench_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def reference_folder(tmp_path: Path) -> Path:
    """A folder with the files the harness looks for (empty: nothing may run them)."""
    for name in ("main.py", "configs.py", "loss_funcs.py", "policies.py", "utils.py"):
        (tmp_path / name).write_text("")
    return tmp_path


def refusal(bench: ModuleType, capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run main(argv), check that it exits with status 2 and printed one stderr line and nothing on
    stdout; return that line."""
    with pytest.raises(SystemExit) as stop:
        bench.main(argv)
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_help_runs(bench: ModuleType, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        bench.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for option in ("--reference-code", "--reference-python", "--reference-threads", "--settings"):
        assert option in out


def test_missing_folder_is_refused(bench: ModuleType, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    line = refusal(bench, capsys, ["--reference-code", str(missing), "--reference-python", sys.executable])
    assert f"--reference-code {missing}: no such folder" in line


def test_folder_without_the_reference_files_is_refused(bench: ModuleType, capsys: pytest.CaptureFixture,
                                                       reference_folder: Path) -> None:
    (reference_folder / "loss_funcs.py").unlink()
    (reference_folder / "main.py").unlink()
    line = refusal(bench, capsys, ["--reference-code", str(reference_folder), "--reference-python", sys.executable])
    assert "no main.py, loss_funcs.py there" in line
    line = refusal(bench, capsys, ["--reference-code", str(reference_folder), "--reference-main", "run.py",
                                   "--reference-python", sys.executable])
    assert "no run.py, loss_funcs.py there" in line


def test_bad_interpreter_is_refused(bench: ModuleType, capsys: pytest.CaptureFixture, reference_folder: Path) -> None:
    not_python = reference_folder / "configs.py"  # a file, not executable
    for python in (reference_folder / "bin" / "python", not_python):
        line = refusal(bench, capsys, ["--reference-code", str(reference_folder), "--reference-python", str(python)])
        assert f"--reference-python {python}: not an executable file" in line


@pytest.mark.parametrize("argv, named", [
    (["--reference-threads", "0"], "--reference-threads 0"),
    (["--rtol", "1.5"], "--rtol 1.5"),
    (["--settings", "exact-tabular-beta0.5"], "exact-tabular-beta0.5"),
    (["--reference-code"], "--reference-code"),
])
def test_bad_values_are_refused(bench: ModuleType, capsys: pytest.CaptureFixture, reference_folder: Path,
                                argv: list[str], named: str) -> None:
    base = ["--reference-code", str(reference_folder), "--reference-python", sys.executable]
    assert named in refusal(bench, capsys, base + argv)


def test_usage_errors_are_egpo_cores_one_line_format(bench: ModuleType, capsys: pytest.CaptureFixture,
                                                     reference_folder: Path) -> None:
    """The script's parser is egpo_core.cli's: a usage error reads ``error: MESSAGE (see PROG --help)`` and an
    abbreviated option (``--sett`` for ``--settings``) is refused, not expanded."""
    from egpo_core.cli import OneLineArgumentParser

    base = ["--reference-code", str(reference_folder), "--reference-python", sys.executable]
    line = refusal(bench, capsys, base + ["--rtol", "x"])
    assert line == "error: argument --rtol: invalid float value: 'x' (see bench_reference.py --help)"
    line = refusal(bench, capsys, base + ["--sett", "exact-tabular-beta0.1"])
    assert line == "error: unrecognized arguments: --sett exact-tabular-beta0.1 (see bench_reference.py --help)"
    assert bench.OneLineArgumentParser is OneLineArgumentParser


def test_agreement_verdicts(bench: ModuleType) -> None:
    assert bench.agreement(9.64e-5, 9.65e-5, 0.1) == "same"
    assert bench.agreement(0.13, 0.1349, 0.1) == "same"      # a recorded value with two digits
    assert bench.agreement(0.10, 0.12, 0.1) == "differs"     # 0.02 > 0.1 · 0.12
    assert bench.agreement(3e-7, 1.9e-17, 0.1) == "~0"       # both below the 1e-6 floor
    assert bench.agreement(2e-6, 1.9e-17, 0.1) == "differs"  # one above it
    assert bench.agreement(math.nan, 0.1, 0.1) == "differs"


def test_median_final_leaves_diverged_runs_out(bench: ModuleType) -> None:
    assert bench.median_final([1.0, math.nan, 3.0, math.inf]) == 2.0
    assert math.isnan(bench.median_final([math.nan]))


def test_reference_arguments_follow_the_presets(bench: ModuleType) -> None:
    assert bench.reference_arguments(bench.PRESETS["exact-tabular-beta0.01"]) == ("exact", "tabular", 0.01)
    assert bench.reference_arguments(bench.PRESETS["sampled-neural-beta0.1"]) == ("empirical", "neural", 0.1)
