"""The command line: presets listing, simulate/sweep outputs and run.json, options generated from
SimulationConfig, preset overrides, output-folder safety, and misuse as one line with exit status 2
and nothing written."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import egpo_core
from egpo_core import cli
from egpo_core.game_io import save_games
from egpo_core.games import random_games
from egpo_core.presets import PAPER_SEED, PRESETS


def _cli(*args, cwd=None, umask=None):
    return subprocess.run([sys.executable, "-m", "egpo_core", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def _main(*args):
    """The command line in-process (one import for many calls): its exit status."""
    try:
        return cli.main(list(args))
    except SystemExit as exit_:  # argparse's own errors
        return exit_.code


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def games_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "games.txt"
    save_games(path, random_games(3, 5, rng), ref_logits=rng.normal(size=(3, 5)))
    return path


def test_presets_lists_every_paper_setting():
    out = _cli("presets")
    assert out.returncode == 0, out.stderr
    for name, preset in PRESETS.items():
        line = next(l for l in out.stdout.splitlines() if l.strip().startswith(name))
        assert f"{preset.iterations}" in line


def test_version():
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"egpo {egpo_core.__version__}"


def test_simulate_preset_writes_tidy_data_summary_figures_and_run_json(tmp_path):
    out = _cli("simulate", "--preset", "exact-tabular-beta0.1", "--fast", "--format", "csv",
               "--out", str(tmp_path / "run"), "--no-progress", umask=0o027)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "run"
    frame = pd.read_csv(folder / "metrics.csv")
    preset = PRESETS["exact-tabular-beta0.1"]
    assert set(frame["algorithm"]) == {"oipo1", "oipo2", "nash_md", "nash_md_pg", "egpo"}
    assert frame["run"].nunique() == preset.runs
    assert sorted(frame["step"].unique()) == list(range(preset.fast_iterations + 1))  # 200 steps: all recorded
    assert (frame["value"] >= 0).all()
    summary = pd.read_csv(folder / "summary.csv")
    egpo = summary[summary.algorithm == "egpo"]["median_final"].item()
    pg = summary[summary.algorithm == "nash_md_pg"]["median_final"].item()
    assert egpo < 1e-6 < pg  # β = 0.1: EGPO converges within 200 steps, Nash-MD-PG does not
    assert summary["seed"].dtype == np.int64 and (summary["seed"] == PAPER_SEED).all()
    meta = json.loads((folder / "run.json").read_text())
    assert meta["config"]["iterations"] == preset.fast_iterations and meta["config"]["seed"] == PAPER_SEED
    assert meta["config"]["lr"] == preset.lr and meta["config"]["eta"] is None
    prov = meta["provenance"]
    assert prov["games"] == {"source": "preset", "preset": "exact-tabular-beta0.1", "seed": PAPER_SEED}
    assert prov["call"].endswith("-m egpo_core simulate --preset exact-tabular-beta0.1 --fast --format csv "
                                 f"--out {folder} --no-progress")
    assert {"egpo_version", "git_commit", "python", "numpy", "numba", "torch", "started", "wall_seconds"} <= set(prov)
    assert set(meta["files"]) == set(_files(folder))  # what --overwrite would remove: exactly this run's files
    for name in meta["files"]:
        assert (folder / name).stat().st_size > 0
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o640, name  # umask 027


def test_flags_override_the_preset_and_are_recorded(tmp_path):
    assert _main("simulate", "--preset", "exact-tabular-beta0.1", "--iterations", "30", "--gradient", "sampled",
                 "--num-samples", "7", "--algorithms", "egpo", "--eta", "0.3", "--out", str(tmp_path), "--no-progress",
                 "--no-figures") == 0
    meta = json.loads((tmp_path / "run.json").read_text())
    config = meta["config"]
    assert (config["iterations"], config["gradient"], config["num_samples"]) == (30, "sampled", 7)
    assert (config["eta"], config["lr"], config["beta"]) == (0.3, None, 0.1)  # eta as given; the preset's beta
    assert meta["configs"][0]["eta"] == 0.3
    assert meta["provenance"]["overrides"] == {"algorithms": ["egpo"], "eta": 0.3, "iterations": 30,
                                               "gradient": "sampled", "num_samples": 7}


def test_record_every_defaults_to_about_a_thousand_records(tmp_path):
    base = ["simulate", "--preset", "exact-tabular-beta0.01", "--algorithms", "egpo", "--iterations", "3000",
            "--no-progress", "--no-figures"]
    assert _main(*base, "--out", str(tmp_path / "default")) == 0
    assert _main(*base, "--record-every", "1", "--out", str(tmp_path / "all")) == 0
    steps = pd.read_parquet(tmp_path / "default" / "metrics.parquet")["step"].unique()
    assert steps.tolist() == list(range(0, 3001, 3))  # ⌈3000/1000⌉ = 3
    assert pd.read_parquet(tmp_path / "all" / "metrics.parquet")["step"].nunique() == 3001


def test_sweep_on_a_games_file_writes_figures(tmp_path, games_file):
    assert _main("sweep", "--games", str(games_file), "--betas", "0.1,0.05", "--lrs", "0.02", "--seeds", "3",
                 "--iterations", "30", "--algorithms", "egpo,oipo1", "--out", str(tmp_path / "grid"), "--no-progress") == 0
    frame = pd.read_parquet(tmp_path / "grid" / "metrics.parquet")
    assert frame.groupby(["beta", "seed"]).ngroups == 2
    assert len(frame) == 2 * 2 * 3 * 31
    for c in range(2):
        for suffix in ("png", "pdf"):
            assert (tmp_path / "grid" / f"duality_gap_config{c}.{suffix}").stat().st_size > 0
    meta = json.loads((tmp_path / "grid" / "run.json").read_text())
    assert meta["config"]["axes"] == {"beta": [0.1, 0.05], "lr": [0.02], "seed": [3]}
    assert meta["provenance"]["games"]["path"] == str(games_file.resolve())
    import hashlib

    assert meta["provenance"]["games"]["sha256"] == hashlib.sha256(games_file.read_bytes()).hexdigest()


def test_sweep_with_a_preset_keeps_its_seed(tmp_path):
    assert _main("sweep", "--preset", "exact-tabular-beta0.1", "--fast", "--algorithms", "egpo", "--betas", "0.1,0.2",
                 "--out", str(tmp_path), "--no-progress", "--no-figures") == 0
    configs = json.loads((tmp_path / "run.json").read_text())["configs"]
    assert [c["seed"] for c in configs] == [PAPER_SEED, PAPER_SEED]
    assert [c["beta"] for c in configs] == [0.1, 0.2] and {c["lr"] for c in configs} == {0.1}


def test_games_file_without_ref_logits_uses_a_uniform_reference(tmp_path):
    path = tmp_path / "plain.txt"
    save_games(path, random_games(2, 4, np.random.default_rng(1)))
    assert _main("simulate", "--games", str(path), "--beta", "0.1", "--lr", "0.05", "--iterations", "5",
                 "--algorithms", "egpo", "--out", str(tmp_path / "run"), "--no-progress", "--no-figures") == 0
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["provenance"]["games"]["ref_logits"] == "uniform (the file has none)"
    from egpo_core.metrics import duality_gap

    P = random_games(2, 4, np.random.default_rng(1))
    gap0 = pd.read_parquet(tmp_path / "run" / "metrics.parquet").query("step == 0").sort_values("run")["value"]
    np.testing.assert_allclose(gap0, duality_gap(P, np.zeros((2, 4)), np.zeros((2, 4)), 0.1), rtol=1e-12)


def test_overwrite_replaces_the_previous_run_and_keeps_other_files(tmp_path, capsys):
    folder = tmp_path / "run"
    base = ["simulate", "--preset", "exact-tabular-beta0.1", "--iterations", "5", "--out", str(folder), "--no-progress",
            "--no-figures"]
    assert _main(*base, "--algorithms", "egpo") == 0
    (folder / "my_notes.txt").write_text("mine")
    capsys.readouterr()
    assert _main(*base, "--algorithms", "oipo1") == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert _main(*base, "--algorithms", "oipo1", "--format", "csv", "--overwrite") == 0
    assert not (folder / "metrics.parquet").exists()  # the previous run's file is gone, not mixed in
    assert set(pd.read_csv(folder / "summary.csv")["algorithm"]) == {"oipo1"}
    assert (folder / "my_notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("precious")
    assert _main("simulate", "--preset", "exact-tabular-beta0.1", "--fast", "--out", str(tmp_path), "--overwrite") == 2
    assert "holds no run.json" in capsys.readouterr().err
    assert _files(tmp_path) == ["data.csv"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["simulate", "--preset", "nope", "--out", "x"], "unknown preset 'nope'"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--algorithms", "egpo,bogus", "--out", "x"], "unknown algorithm"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--algorithms", "egpo,egpo", "--out", "x"], "'egpo' more than once"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--beta", "-1", "--out", "x"], "beta must be positive"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--beta", "x", "--out", "x"], "invalid float value: 'x'"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--iterations", "0", "--out", "x"], "iterations must be at least 1"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--fast", "--iterations", "9", "--out", "x"], "fast or iterations"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--policy", "neural", "--out", "x"], "policy='tabular'"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--seed", "-3", "--out", "x"], "seed must be at least 0"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--algorithms", "nash_md", "--eta", "20", "--out", "x"],
         "Nash-MD mixture coefficient"),
        (["simulate", "--games", "missing.txt", "--beta", "0.1", "--lr", "0.1", "--iterations", "5", "--out", "x"],
         "games file missing.txt does not exist"),
        (["simulate", "--games", "GAMES", "--beta", "0.1", "--lr", "0.1", "--iterations", "0", "--out", "x"],
         "iterations must be at least 1, got iterations=0"),
        (["simulate", "--games", "GAMES", "--lr", "0.1", "--out", "x"], "with --games give --beta, --iterations"),
        (["simulate", "--games", "GAMES", "--beta", "0.1", "--iterations", "3", "--out", "x"], "give --lr or --eta"),
        (["simulate", "--games", "GAMES", "--fast", "--beta", "0.1", "--lr", "0.1", "--iterations", "3", "--out", "x"],
         "--fast needs --preset"),
        (["sweep", "--preset", "exact-tabular-beta0.1", "--betas", "", "--out", "x"], "--betas is empty"),
        (["sweep", "--preset", "exact-tabular-beta0.1", "--lrs", "0.1", "--etas", "0.2", "--out", "x"], "--lrs or --etas"),
        (["sweep", "--preset", "exact-tabular-beta0.1", "--seeds", "1,x", "--out", "x"], "comma-separated numbers"),
        (["sweep", "--games", "GAMES", "--lrs", "0.1", "--iterations", "3", "--out", "x"], "give --betas"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--out", "FILE"], "exists and is not a folder"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--out", "FILE/sub"], "is not a folder"),
        (["simulate", "--out", "x"], "one of the arguments --preset --games is required"),
    ],
)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, games_file, args, message):
    """In-process (one import for all cases); the subprocess test below checks the real exit path."""
    (tmp_path / "FILE").write_text("a file")
    monkeypatch.chdir(tmp_path)
    args = [str(games_file) if a == "GAMES" else a for a in args]
    before = _files(tmp_path)
    code = _main(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert _files(tmp_path) == before


def test_bad_input_from_a_shell_has_no_traceback(tmp_path):
    out = _cli("simulate", "--preset", "exact-tabular-beta0.1", "--beta", "-1", "--out", "x", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("error: beta must be positive") and len(out.stderr.splitlines()) == 1
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    "setup, message",
    [("file", "exists and is not a folder"), ("nonempty", "not empty"), ("readonly", "is not writable")],
)
def test_output_folder_is_checked_before_computing(tmp_path, monkeypatch, capsys, setup, message):
    """The full 100k-step preset would run for a long time: the simulator must not even be called."""
    import importlib

    def must_not_run(*args, **kwargs):
        raise AssertionError("simulated before checking --out")

    monkeypatch.setattr(importlib.import_module("egpo_core.simulator"), "simulate", must_not_run)
    out = tmp_path / "out"
    if setup == "file":
        out.write_text("x")
    else:
        out.mkdir()
        if setup == "nonempty":
            (out / "old.txt").write_text("x")
        else:
            out.chmod(0o500)
            if os.access(out, os.W_OK):
                pytest.skip("running as a user who can write anywhere (root)")
    code = cli.main(["simulate", "--preset", "sampled-tabular-beta0.01", "--out", str(out), "--no-progress"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_every_option_has_help_that_states_its_default():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("simulate", "sweep", "reproduce"):
        for action in subparsers[name]._actions:
            if action.dest in ("help", "preset", "games", "out"):
                continue
            assert action.help and ("default" in action.help or "required" in action.help), (name, action.dest)


def test_a_closed_pipe_exits_quietly():
    """`python -m egpo_core presets | head -0`: the reader is gone before anything is printed."""
    process = subprocess.Popen([sys.executable, "-m", "egpo_core", "presets"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0
    assert stderr == ""
