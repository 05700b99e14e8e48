"""The command lines of the benchmark scripts (benchmarks/bench_evaluate_judges.py, bench_judge_server.py,
bench_lm.py, bench_simulate.py, bench_sweep_workers.py): --help runs, a bad value is one line on stderr naming it with exit
status 2, and an abbreviated option is refused (egpo_core.cli.OneLineArgumentParser). Parsing only:
every refusal comes before anything is built or timed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load(name: str) -> ModuleType:
    """benchmarks/<name>.py, loaded as a module (not run)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def refusal(script: str, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the script's main(argv): it must exit with status 2 printing exactly one stderr line and
    nothing on stdout. Returns that line."""
    with pytest.raises(SystemExit) as stop:
        load(script).main(argv)
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


#: (script, an option its --help lists).
HELP = [("bench_evaluate_judges", "--judge_batch_size"), ("bench_judge_server", "--pairs-per-request"),
        ("bench_lm", "--memory-floor"), ("bench_simulate", "--full-n1000"), ("bench_sweep_workers", "--chunk-sizes")]


@pytest.mark.parametrize("script, option", HELP)
def test_help_runs(script: str, option: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        load(script).main(["--help"])
    assert stop.value.code == 0
    assert option in capsys.readouterr().out


@pytest.mark.parametrize("script, argv, named", [
    ("bench_evaluate_judges", ["--models", "0"], "argument --models: must be >= 1, got 0"),
    ("bench_evaluate_judges", ["--repeats", "three"], "argument --repeats: invalid positive value: 'three'"),
    ("bench_evaluate_judges", ["--judge_width", "63"], "--judge_width must be even (2 attention heads), got 63"),
    ("bench_judge_server", ["--clients", "8", "x"], "argument --clients: invalid int value: 'x'"),
    ("bench_judge_server", ["--clients", "0", "8"], "--clients must be at least 1, got 0"),
    ("bench_judge_server", ["--seconds", "0"], "--seconds must be > 0, got 0.0"),
    ("bench_judge_server", ["--modes", "fast"], "argument --modes: invalid choice: 'fast'"),
    ("bench_lm", ["--updates", "0"], "--updates must be at least 1, got 0"),
    ("bench_lm", ["--batch", "two"], "argument --batch: invalid int value: 'two'"),
    ("bench_lm", ["--judge-width", "63"], "--judge-width an even number >= 2, got 2 and 63"),
    ("bench_lm", ["--algorithms", "dpo"], "argument --algorithms: invalid choice: 'dpo'"),
    ("bench_simulate", ["--scaling-steps", "0"], "--scaling-steps must be at least 1, got 0"),
    ("bench_simulate", ["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    ("bench_simulate", ["--compare", "/nonexistent"], "--compare /nonexistent: no egpo_core folder there"),
    ("bench_sweep_workers", ["--repeats", "0"], "--repeats must be at least 1, got 0"),
    ("bench_sweep_workers", ["--workers", "1", "0"], "--workers and --chunk-sizes must be at least 1"),
    ("bench_sweep_workers", ["--iterations", "1e4"], "argument --iterations: invalid int value: '1e4'"),
])
def test_a_bad_value_is_one_line_naming_it(script: str, argv: list[str], named: str,
                                           capsys: pytest.CaptureFixture) -> None:
    line = refusal(script, argv, capsys)
    assert named in line, line
    assert line.endswith(f"(see {script}.py --help)"), line


@pytest.mark.parametrize("script, abbreviation, option", [
    ("bench_evaluate_judges", "--rep", "--repeats"),
    ("bench_judge_server", "--pairs", "--pairs-per-request"),
    ("bench_lm", "--new", "--new-tokens"),
    ("bench_simulate", "--rep", "--repeats"),
    ("bench_sweep_workers", "--rep", "--repeats"),
])
def test_an_abbreviation_is_refused(script: str, abbreviation: str, option: str,
                                    capsys: pytest.CaptureFixture) -> None:
    """``--rep 2`` is not taken for ``--repeats 2``: an unknown option, named in one line."""
    line = refusal(script, [abbreviation, "2"], capsys)
    assert f"unrecognized arguments: {abbreviation} 2" in line, line
