"""benchmarks/bench_reference.py without the reference code: its --help, its refusals of bad paths and
values (one line on stderr, exit status 2, before anything runs) and its agreement helpers."""

from __future__ import annotations

import importlib.util
import math
import sys
import textwrap
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


# A stand-in for the public checkout's layout: run.py with its settings as constants, reading its games from
# data/<type>/; its "algorithms" report an entry of each game and its first reference logit as final gaps, so that
# the harness's drawn games can be checked against egpo_core.reference_draws.
_STAND_IN = {
    "configs.py": 'EXP_CONFIG = {"exact": {"tabular": [{"beta": 0.1, "iters": 3, "lr": 0.1}]}}\n',
    "loss_funcs.py": "",
    "policies.py": textwrap.dedent("""
        import torch
        class TabularPolicy(torch.nn.Module):
            def __init__(self, runs, num_actions, device):
                super().__init__()
                self.thetas = torch.nn.Parameter(torch.zeros((runs, num_actions, 1)))
            def random_init(self):
                torch.nn.init.normal_(self.thetas, 0, 1)
        """),
    "utils.py": textwrap.dedent("""
        import numpy as np, torch
        def set_random_seed(seed):
            torch.manual_seed(seed)
        def gen_preference_matrix(runs, n, type):
            P = 0.5 * torch.stack([torch.eye(n) for _ in range(runs)])
            lower = torch.rand((runs, n, n))
            for i in range(1, n):
                P[:, i, :i] = lower[:, i, :i]
                P[:, :i, i] = 1 - lower[:, i, :i]
            return P
        def write_data(P, beta, file_name):
            with open(file_name, "w") as f:
                f.write(f"{P.shape[0]} {P.shape[1]} {beta}\\n")
                for run in P:
                    f.write("Run\\n" + "\\n".join(" ".join(str(v) for v in row) for row in run) + "\\n")
        def read_data(file_name):
            with open(file_name) as f:
                runs, n, beta = f.readline().split()
                rows = [line for line in f.read().splitlines() if line != "Run"]
            P = np.array([[float(v) for v in row.split()] for row in rows]).reshape(int(runs), int(n), int(n))
            return P, float(beta)
        def plot_multi_exps(experiments, path, name_suffix=""):
            assert all(list(e)[0] == "latex_key" for e in experiments.values())  # this version's titles
        """),
    "run.py": textwrap.dedent("""
        import torch, utils
        from configs import EXP_CONFIG
        from policies import TabularPolicy
        ALG = "empirical"
        TYPE = "tabular"
        FILES = [
            # "beta_0.01.txt",
            "beta_0.5.txt",
        ]
        def run(file, seed):
            P, beta = utils.read_data(f"data/{TYPE}/{file}")
            assert EXP_CONFIG[ALG][TYPE][0]["beta"] == beta
            torch.manual_seed(seed)
            ref = TabularPolicy(P.shape[0], P.shape[1], "cpu")
            ref.random_init()
            experiments = {f"run {r}": {"Online IPO 2": {"Dual Gap": [0.0, P[r, 1, 0]]},
                                        "EGPO": {"Dual Gap": [0.0, float(ref.thetas[r, 0, 0])]}}
                           for r in range(P.shape[0])}
            utils.plot_multi_exps(experiments, path="figures", name_suffix=file)
            utils.plot_multi_exps(experiments, path="figures", one_row=True, name_suffix="picked")
        if __name__ == "__main__":
            for file in FILES:
                run(file, 42)
        """),
}


def test_the_public_checkouts_run_script_gets_the_presets_games(bench: ModuleType, tmp_path: Path) -> None:
    """--reference-main run.py (settings as constants, games read from data/<type>/): the harness draws the
    games with the setting's seed as egpo_core.reference_draws documents them, writes them where the script
    reads them, sets ALG/TYPE/FILES and the seed, and reads the final gaps from its plots (the picked-run
    figure left out): the games' entries and the reference logits it sees are egpo's preset's."""
    pytest.importorskip("torch")
    import numpy as np

    for name, text in _STAND_IN.items():
        (tmp_path / name).write_text(text)
    timing = bench.time_setting("exact-tabular-beta0.1", tmp_path, "run.py", sys.executable, threads=1)
    instances = bench.PRESETS["exact-tabular-beta0.1"].instances()
    assert timing.reference_setting == (3, 0.1)
    # the median over runs of P(1 ≻ 0), a torch.rand draw (the same on every CPU)
    assert timing.reference_medians["oipo2"] == pytest.approx(float(np.median(instances.P[:, 1, 0])), abs=1e-7)
    # tabular: π_ref's logits are the drawn θ_ref (torch's normal_ path may move them by ~1e-6 on another CPU)
    assert timing.reference_medians["egpo"] == pytest.approx(float(np.median(instances.ref_logits[:, 0])), abs=1e-5)


def test_a_run_script_without_a_constant_to_set_is_refused(bench: ModuleType, tmp_path: Path) -> None:
    """A script of another shape (here without its TYPE line) would run other settings than the ones timed:
    the harness stops, naming the script and the line it did not find."""
    pytest.importorskip("torch")
    for name, text in _STAND_IN.items():
        (tmp_path / name).write_text(text.replace('TYPE = "tabular"', 'KIND = "tabular"') if name == "run.py" else text)
    with pytest.raises(SystemExit) as stop:
        bench.time_setting("exact-tabular-beta0.1", tmp_path, "run.py", sys.executable, threads=1)
    assert f"{tmp_path / 'run.py'}: no line matching '^TYPE = " in str(stop.value)
