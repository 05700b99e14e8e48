"""The command line: presets listing, simulate/sweep outputs, and clean errors on bad input."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from egpo_core.game_io import save_games
from egpo_core.games import random_games
from egpo_core.presets import PRESETS


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "egpo_core", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_presets_lists_every_paper_setting():
    out = _cli("presets")
    assert out.returncode == 0, out.stderr
    for name, preset in PRESETS.items():
        line = next(l for l in out.stdout.splitlines() if l.strip().startswith(name))
        assert f"{preset.iterations}" in line


def test_simulate_preset_writes_tidy_data_summary_and_figures(tmp_path):
    out = _cli("simulate", "--preset", "exact-tabular-beta0.1", "--fast", "--format", "csv",
               "--out", str(tmp_path), "--no-progress")
    assert out.returncode == 0, out.stderr
    frame = pd.read_csv(tmp_path / "metrics.csv")
    preset = PRESETS["exact-tabular-beta0.1"]
    assert set(frame["algorithm"]) == {"oipo1", "oipo2", "nash_md", "nash_md_pg", "egpo"}
    assert frame["run"].nunique() == preset.runs
    assert sorted(frame["step"].unique()) == list(range(preset.fast_iterations + 1))
    assert (frame["value"] >= 0).all()
    summary = pd.read_csv(tmp_path / "summary.csv")
    egpo = summary[summary.algorithm == "egpo"]["median_final"].item()
    pg = summary[summary.algorithm == "nash_md_pg"]["median_final"].item()
    assert egpo < 1e-6 < pg  # β = 0.1: EGPO converges within 200 steps, Nash-MD-PG does not
    for name in ("duality_gap.png", "duality_gap.pdf", "run.json"):
        assert (tmp_path / name).stat().st_size > 0


def test_sweep_on_a_games_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "games.txt"
    save_games(path, random_games(3, 5, rng), ref_logits=rng.normal(size=(3, 5)))
    out = _cli("sweep", "--games", str(path), "--betas", "0.1,0.05", "--lrs", "0.02", "--seeds", "0,1",
               "--iterations", "30", "--algorithms", "egpo,oipo1", "--out", str(tmp_path / "grid"), "--no-progress")
    assert out.returncode == 0, out.stderr
    frame = pd.read_parquet(tmp_path / "grid" / "metrics.parquet")
    assert frame.groupby(["beta", "seed"]).ngroups == 4
    assert len(frame) == 4 * 2 * 3 * 31


@pytest.mark.parametrize(
    "args, message",
    [
        (["simulate", "--preset", "nope", "--out", "x"], "unknown preset 'nope'"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--algorithms", "egpo,bogus", "--out", "x"], "unknown algorithm"),
        (["simulate", "--preset", "exact-tabular-beta0.1", "--beta", "-1", "--out", "x"], "beta must be positive"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, args, message):
    out = _cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
