"""The command line: presets listing, simulate/sweep outputs and run.json, options generated from
SimulationConfig, preset overrides, output-folder safety, and misuse as one line with exit status 2
and nothing written."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.slow
def test_simulate_preset_writes_tidy_data_summary_figures_and_run_json(tmp_path):
    """The whole preset, its figures, through a real interpreter (about 10 s; the in-process test below
    checks the same files, fields and modes without figures)."""
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


def test_simulate_writes_tidy_data_summary_and_run_json_listing_its_files(tmp_path, monkeypatch):
    """In-process, two algorithms, no figures: the fast form of the test above."""
    folder = tmp_path / "run"
    argv = ["simulate", "--preset", "exact-tabular-beta0.1", "--fast", "--algorithms", "nash_md_pg,egpo", "--format",
            "csv", "--out", str(folder), "--no-progress", "--no-figures"]
    previous = os.umask(0o027)
    try:
        assert _main(*argv) == 0
    finally:
        os.umask(previous)
    preset = PRESETS["exact-tabular-beta0.1"]
    frame = pd.read_csv(folder / "metrics.csv")
    assert set(frame["algorithm"]) == {"nash_md_pg", "egpo"} and frame["run"].nunique() == preset.runs
    assert sorted(frame["step"].unique()) == list(range(preset.fast_iterations + 1))
    assert (frame["value"] >= 0).all()
    summary = pd.read_csv(folder / "summary.csv").set_index("algorithm")
    assert summary.loc["egpo", "median_final"] < 1e-6 < summary.loc["nash_md_pg", "median_final"]
    assert summary["seed"].dtype == np.int64 and (summary["seed"] == PAPER_SEED).all()
    meta = json.loads((folder / "run.json").read_text())
    assert meta["config"]["iterations"] == preset.fast_iterations and meta["config"]["lr"] == preset.lr
    assert meta["provenance"]["games"] == {"source": "preset", "preset": "exact-tabular-beta0.1", "seed": PAPER_SEED}
    assert meta["provenance"]["call"].endswith("-m egpo_core " + " ".join(argv))
    assert {"egpo_version", "git_commit", "python", "numpy", "numba", "torch", "started", "wall_seconds"} <= set(meta["provenance"])
    assert set(meta["files"]) == set(_files(folder))
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
        (["sweep", "--preset", "exact-tabular-beta0.1", "--seeds", "1,x", "--out", "x"], "comma-separated integers"),
        (["sweep", "--preset", "exact-tabular-beta0.1", "--seeds", "1.5", "--out", "x"],
         "expected comma-separated integers, got '1.5'"),
        (["sweep", "--preset", "exact-tabular-beta0.1", "--betas", "x", "--out", "x"], "comma-separated numbers, got 'x'"),
        (["sweep", "--preset", "exact-tabular-beta0.1", "--bet", "0.1", "--out", "x"], "unrecognized arguments: --bet"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--iter", "5", "--out", "x"], "unrecognized arguments: --iter"),
        (["sweep", "--preset", "exact-tabular-beta0.1", "--workers", "0", "--out", "x"], "--workers must be at least 1"),
        (["sweep", "--preset", "exact-tabular-beta0.1", "--chunk-size", "0", "--out", "x"], "--chunk-size must be at least 1"),
        (["sweep", "--preset", "exact-tabular-beta0.1", "--chunk-size", "2.5", "--out", "x"], "invalid int value: '2.5'"),
        (["sweep", "--preset", "exact-tabular-beta0.1", "--workers", "2", "--scheduler", "tcp://h:1", "--out", "x"],
         "argument --scheduler: not allowed with argument --workers"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--workers", "2", "--out", "x"], "unrecognized arguments: --workers"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--pair-sampling", "policy", "--algorithms", "oipo2,nash_md_pg",
          "--out", "x"], "pair_sampling='policy' has no effect on the algorithms run (oipo2: its pairs are drawn from"),
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
    [("file", "exists and is not a folder"), ("nonempty", "not empty"), ("readonly", "is not writable"),
     ("proc", "cannot create --out /proc/egpo_out: /proc is not writable")],
)
def test_output_folder_is_checked_before_computing(tmp_path, monkeypatch, capsys, setup, message):
    """The full 100k-step preset would run for a long time: the simulator must not even be called."""
    import importlib

    def must_not_run(*args, **kwargs):
        raise AssertionError("simulated before checking --out")

    monkeypatch.setattr(importlib.import_module("egpo_core.simulator"), "simulate", must_not_run)
    out = tmp_path / "out"
    if setup == "proc":  # root may write anywhere by its permission bits, yet nothing can be created under /proc
        out = Path("/proc/egpo_out")
    elif setup == "file":
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


def test_the_top_level_help_describes_every_command_in_whole_sentences():
    text = " ".join(cli.build_parser().format_help().split())
    assert cli.DESCRIPTION in text and cli.DESCRIPTION.endswith("lists its options.")
    for command in ("presets", "simulate", "sweep", "reproduce"):
        assert f"({command})" in cli.DESCRIPTION


def test_reproduce_help_states_its_out_rules():
    reproduce = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["reproduce"]
    text = " ".join(reproduce.format_help().split())
    for rule in ("--out itself is not a run (it has no run.json of its own) and is never cleared",
                 "is reused as it is (printed [skip]); --force recomputes it", "load_result('OUT/<preset>')"):
        assert rule in text


def test_reproduce_summary_states_the_horizon_of_each_median(tmp_path, monkeypatch, capsys):
    """--fast medians (200 updates) beside the reference's full-horizon ones: both horizons are columns."""
    from egpo_core import plotting, presets

    monkeypatch.setattr(presets, "PRESETS", {"exact-tabular-beta0.1": PRESETS["exact-tabular-beta0.1"]})
    write = cli._write_outputs  # no figures (the slowest output; tested elsewhere)
    monkeypatch.setattr(cli, "_write_outputs", lambda result, out, fmt, title: write(result, out, fmt, None))
    monkeypatch.setattr(plotting, "plot_picked", lambda picked: None)
    monkeypatch.setattr(plotting, "save_figure", lambda figure, stem: [])
    assert _main("reproduce", "--fast", "--out", str(tmp_path), "--no-progress") == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    preset = PRESETS["exact-tabular-beta0.1"]
    assert (summary["horizon"] == preset.fast_iterations).all() and (summary["reference_horizon"] == preset.iterations).all()
    assert list(summary.columns[:6]) == ["preset", "conventions", "algorithm", "horizon", "median_final", "reached_1e-6"]
    assert "each preset's short horizon (--fast;" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match=r"run folders \(exact-tabular-beta0.1\): load one of them"):
        egpo_core.load_result(tmp_path)


def test_scheduler_without_dask_names_the_extra(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a))
    assert _main("sweep", "--preset", "exact-tabular-beta0.1", "--scheduler", "tcp://127.0.0.1:8786",
                 "--out", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err
    assert err == ("error: --scheduler needs dask's distributed package: pip install 'egpo[dask]' "
                   "(or pip install 'dask[distributed]')\n")


def test_an_unreachable_scheduler_is_one_line_before_computing(monkeypatch, capsys, tmp_path):
    pytest.importorskip("distributed")
    monkeypatch.setattr(cli, "SCHEDULER_TIMEOUT", 1)
    for address, reason in (("tcp://127.0.0.1:9", "Timed out trying to connect"), ("nonsense::", "invalid address")):
        assert _main("sweep", "--preset", "exact-tabular-beta0.1", "--scheduler", address, "--no-progress",
                     "--out", str(tmp_path / "x")) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot reach the dask scheduler at --scheduler {address}: ") and reason in err
        assert len(err.splitlines()) == 1 and not (tmp_path / "x").exists()


def test_a_sweep_in_chunks_resumes_after_a_failed_chunk_and_computes_only_it(tmp_path, monkeypatch, capsys, games_file):
    """A chunk fails twice: exit 1, one line naming it, the others kept in --out/.sweep-chunks; the same
    command again computes that chunk alone and writes the plain sweep's numbers."""
    from egpo_core import simulator

    argv = ["sweep", "--games", str(games_file), "--betas", "0.1,0.05", "--lrs", "0.02", "--seeds", "3,4",
            "--iterations", "20", "--algorithms", "egpo,oipo1", "--gradient", "sampled", "--no-progress", "--no-figures"]
    assert _main(*argv, "--out", str(tmp_path / "plain")) == 0
    computed = []
    compute = simulator._compute_chunk

    def failing(data, chunk):
        computed.append(chunk)
        if chunk.configs == (2, 3) and chunk.algorithms == (1, 2):
            raise MemoryError("the worker ran out of memory")
        return compute(data, chunk)

    monkeypatch.setattr(simulator, "_compute_chunk", failing)
    out = tmp_path / "grid"
    assert _main(*argv, "--chunk-size", "1", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: chunk [beta=0.05 lr=0.02 seed=3] x oipo1 failed twice: MemoryError: the worker ran "
                          "out of memory; the finished chunks are kept in ") and len(err.splitlines()) == 1
    assert len(computed) == 8 + 1 and not (out / "run.json").exists()
    assert len(list((out / cli.PARTIAL).rglob("chunk-*.npz"))) == 7
    computed.clear()
    monkeypatch.setattr(simulator, "_compute_chunk", lambda data, chunk: computed.append(chunk) or compute(data, chunk))
    assert _main(*argv, "--chunk-size", "1", "--out", str(out)) == 0
    assert [(c.configs, c.algorithms) for c in computed] == [((2, 3), (1, 2))]
    assert not (out / cli.PARTIAL).exists()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), pd.read_parquet(tmp_path / "plain" / "metrics.parquet"))


@pytest.mark.slow
def test_a_sweep_on_a_local_dask_cluster_writes_the_plain_sweep(tmp_path, games_file):
    """--workers 2 (about 20 s: a cluster starts and its workers import egpo_core); the executor path
    itself is tested in make test by tests/test_sweep_executor.py's LocalCluster."""
    pytest.importorskip("distributed")
    argv = ["sweep", "--games", str(games_file), "--betas", "0.1,0.05", "--lrs", "0.02", "--iterations", "20",
            "--algorithms", "egpo,oipo1", "--no-progress", "--no-figures"]
    assert _main(*argv, "--out", str(tmp_path / "plain")) == 0
    assert _main(*argv, "--workers", "2", "--chunk-size", "1", "--out", str(tmp_path / "dask")) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask" / "metrics.parquet"),
                                  pd.read_parquet(tmp_path / "plain" / "metrics.parquet"))
    assert json.loads((tmp_path / "dask" / "run.json").read_text())["provenance"]["chunks"] == {
        "chunk_size": 1, "executor": "Client"}
