"""The simulation API around the kernel: configs and sweep axes, shapes that do not depend on the
grid size, values stored as given, divergence reports, saving and load_result, file modes and
provenance."""

import json
import os
import stat
import subprocess
import warnings
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from egpo_core import simulate, sweep
from egpo_core.config import SimulationConfig
from egpo_core.games import random_games
from egpo_core.results import load_result
from egpo_core.stepsizes import lr_from_eta

KW = dict(beta=0.1, lr=0.05, iterations=6, progress=False)


@pytest.fixture(scope="module")
def games():
    rng = np.random.default_rng(4)
    return random_games(3, 5, rng), rng.normal(size=(3, 5))


def test_config_object_and_keyword_calls_agree(games):
    P, ref = games
    config = SimulationConfig(algorithms=["egpo", "oipo1"], beta=0.1, lr=0.05, iterations=6)
    by_config = simulate(P, ref, config, progress=False)
    by_keywords = simulate(P, ref, ["egpo", "oipo1"], **KW)
    np.testing.assert_array_equal(by_config.values["duality_gap"], by_keywords.values["duality_gap"])
    overridden = simulate(P, ref, config, iterations=3, progress=False)
    assert overridden.steps.tolist() == [0, 1, 2, 3] and overridden.settings["iterations"] == 3
    with pytest.raises(ValueError, match="unknown option.*betas"):
        simulate(P, ref, ["egpo"], betas=[0.1], lr=0.05, iterations=3, progress=False)
    with pytest.raises(ValueError, match="missing required option.*iterations"):
        simulate(P, ref, ["egpo"], beta=0.1, lr=0.05, progress=False)


def test_array_shapes_do_not_depend_on_the_grid_size(games):
    P, ref = games
    one = sweep(P, ref, ["egpo"], betas=[0.1], lrs=[0.05], iterations=6, progress=False)
    two = sweep(P, ref, ["egpo"], betas=[0.1, 0.2], lrs=[0.05], iterations=6, progress=False)
    single = simulate(P, ref, ["egpo"], **KW)
    assert one.duality_gap["egpo"].shape == (1, 3, 7)
    assert two.duality_gap["egpo"].shape == (2, 3, 7)
    assert single.duality_gap["egpo"].shape == (3, 7)
    assert repr(two) == ("SimulationResult(2 setting(s) x 1 algorithm(s) ['egpo'] x 3 runs, steps 0..6 (7 recorded), "
                         "metrics ['duality_gap'])")
    np.testing.assert_array_equal(one.duality_gap["egpo"][0], single.duality_gap["egpo"])


def test_sweep_axes_replace_config_fields_and_scalars_are_one_point_axes(games):
    P, ref = games
    config = SimulationConfig(algorithms=["egpo"], beta=0.1, lr=0.05, iterations=4, seed=9)
    grid = sweep(P, ref, config, betas=0.2, etas=[0.3, 0.6], progress=False)
    assert grid.configs["beta"].tolist() == [0.2, 0.2]
    assert grid.configs["eta"].tolist() == [0.3, 0.6]  # as given, not recomputed from lr
    np.testing.assert_allclose(grid.configs["lr"], [lr_from_eta(e, 0.2, 5) for e in (0.3, 0.6)], rtol=1e-13)
    assert grid.configs["seed"].tolist() == [9, 9]  # the config's seed: no seeds axis given
    assert grid.settings["axes"] == {"beta": [0.2], "eta": [0.3, 0.6]}
    assert list(grid.to_dataframe().query("eta == 0.3")["config"].unique()) == [0]


@pytest.mark.parametrize(
    "axes, message",
    [
        (dict(betas=[]), "betas is empty"),
        (dict(seeds=[]), "seeds is empty"),
        (dict(betas="0.1"), "betas must be a list of numbers"),
        (dict(lrs=[0.1], etas=[0.2]), "at most one of lrs"),
        (dict(betas=[0.1, 0.0]), "beta must be positive"),
        (dict(seeds=[0, -2]), "seed must be at least 0, got seed=-2"),
        (dict(beta=0.1, betas=[0.2]), "give beta or betas, not both"),
    ],
)
def test_bad_sweep_axes_are_refused(games, axes, message):
    P, ref = games
    call = dict(lr=0.05, iterations=3, progress=False)
    if "beta" not in axes and "betas" not in axes:
        call["beta"] = 0.1
    with pytest.raises(ValueError, match=message):
        sweep(P, ref, ["egpo"], **{**call, **axes})


def test_init_logits_of_shape_n_and_non_finite_logits(games):
    P, ref = games
    pi0 = np.linspace(-1.0, 1.0, 5)
    vector = simulate(P, ref, ["egpo"], init_logits=pi0, **KW)
    tiled = simulate(P, ref, ["egpo"], init_logits=np.tile(pi0, (3, 1)), **KW)
    np.testing.assert_array_equal(vector.values["duality_gap"], tiled.values["duality_gap"])
    bad = ref.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"ref_logits\[1, 2\] = nan is not finite"):
        simulate(P, bad, ["egpo"], **KW)
    with pytest.raises(ValueError, match=r"init_logits\[1, 2\] = nan is not finite"):
        simulate(P, ref, ["egpo"], init_logits=bad, **KW)


def test_the_mixture_range_is_checked_only_for_mixture_algorithms(games):
    P, ref = games
    big = dict(beta=1.0, eta=2.0, iterations=2, progress=False)  # c = ηβ = 2
    assert simulate(P, ref, ["egpo", "oipo1"], **big).duality_gap["egpo"].shape == (3, 3)
    with pytest.raises(ValueError, match=r"Nash-MD mixture coefficient c = ηβ = 2 .* outside \[0, 1\]"):
        simulate(P, ref, ["egpo", "nash_md"], **big)


def test_summary_of_a_metric_not_recorded_says_what_was(games):
    P, ref = games
    res = simulate(P, ref, ["egpo"], **KW)
    with pytest.raises(KeyError, match="'exploitability' was not recorded; recorded: duality_gap"):
        res.summary("exploitability")
    with pytest.raises(KeyError, match="recorded: duality_gap"):
        res.exploitability


def test_a_diverging_run_warns_once_and_summary_counts_it(games):
    """β = 1, η = 10: log π_t is multiplied by 1 − ηβ = −9 per step and overflows after ~320 steps."""
    P, ref = games
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = simulate(P, ref, ["mpo", "oipo1"], beta=1.0, eta=10.0, iterations=400, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    first = int(np.argmax((~np.isfinite(res.duality_gap["oipo1"])).any(axis=0)))
    assert f"oipo1 diverged (non-finite duality gap by step {first}" in messages[0]
    summary = res.summary().set_index("algorithm")
    assert summary.loc["oipo1", "diverged"] == 3 and summary.loc["mpo", "diverged"] == 0


def test_save_and_load_result_round_trip_with_integer_seed(games, tmp_path):
    P, ref = games
    res = sweep(P, ref, ["egpo", "oipo1"], betas=[0.1], etas=[0.1, 0.4], seeds=[2018011309], iterations=5,
                metrics=("duality_gap", "exploitability"), progress=False)
    res.save(tmp_path, "csv")
    back = load_result(tmp_path)
    assert back.algorithms == res.algorithms
    np.testing.assert_array_equal(back.steps, res.steps)
    for name, data in res.values.items():
        np.testing.assert_array_equal(back.values[name], data)
    pd.testing.assert_frame_equal(back.configs, res.configs)
    assert back.settings == json.loads(json.dumps(res.settings))
    assert back.duality_gap["egpo"].shape == (2, 3, 6)  # still a grid once loaded
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert summary[0].split(",")[:5] == ["beta", "lr", "eta", "mixture", "seed"]
    assert summary[1].split(",")[2] == "0.1" and summary[1].split(",")[4] == "2018011309"
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'elsewhere'} does not exist$"):
        load_result(tmp_path / "elsewhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty holds no run.json: not a saved simulation result"):
        load_result(tmp_path / "empty")


def test_load_result_of_a_folder_of_runs_names_them(games, tmp_path):
    """`reproduce --out` holds one run folder per preset, no run.json of its own."""
    P, ref = games
    simulate(P, ref, ["egpo"], **KW).save(tmp_path / "exact-tabular-beta0.1")
    with pytest.raises(FileNotFoundError, match=r"holds no run.json but run folders \(exact-tabular-beta0.1\): load one "
                                                r"of them, e.g. load_result\('.*/exact-tabular-beta0.1'\)"):
        load_result(tmp_path)


def test_one_diverged_run_does_not_hide_the_median_of_the_others():
    from egpo_core.results import SimulationResult

    curves = np.array([[0.5, 0.01], [0.5, np.nan], [0.5, 0.03], [0.5, np.inf]])[None, None]  # (config, alg, runs, steps)
    configs = pd.DataFrame({"beta": [0.1], "lr": [0.1], "eta": [0.4], "mixture": [np.nan], "seed": [0]})
    res = SimulationResult(("egpo",), configs, np.array([0, 1]), {"duality_gap": curves})
    row = res.summary().iloc[0]
    assert (row["median_final"], row["diverged"], row["runs"]) == (0.02, 2, 4)
    every = SimulationResult(("egpo",), configs, np.array([0, 1]), {"duality_gap": np.full((1, 1, 2, 2), np.nan)})
    assert np.isnan(every.summary().iloc[0]["median_final"]) and every.summary().iloc[0]["diverged"] == 2


def test_no_mixture_is_shown_when_no_nash_md_ran(games, tmp_path):
    P, ref = games
    without = simulate(P, ref, ["egpo", "oipo1"], **KW)
    assert without.configs["mixture"].isna().all() and without.summary()["mixture"].isna().all()
    without.save(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "run.json").read_text())["configs"][0]["mixture"] is None
    pd.testing.assert_frame_equal(load_result(tmp_path / "a").configs, without.configs)
    with_md = simulate(P, ref, ["egpo", "nash_md"], **KW)
    assert with_md.configs["mixture"].tolist() == [pytest.approx(0.04, rel=1e-12)]  # c = ηβ, η = 4·0.05/(5·0.1)
    np.testing.assert_array_equal(with_md.duality_gap["egpo"], without.duality_gap["egpo"])  # the kernel's c unchanged


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_follow_the_umask(games, tmp_path, umask):
    P, ref = games
    res = simulate(P, ref, ["egpo"], **KW)
    previous = os.umask(umask)
    try:
        res.save(tmp_path)
    finally:
        os.umask(previous)
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_provenance_records_versions_commit_call_and_times(games):
    P, ref = games
    res = simulate(P, ref, ["egpo"], seed=3, **KW)
    prov = res.provenance
    import egpo_core
    import numba

    assert prov["egpo_version"] == egpo_core.__version__
    assert (prov["numpy"], prov["numba"], prov["torch"]) == (np.__version__, numba.__version__, metadata.version("torch"))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(egpo_core.__file__).parent, capture_output=True, text=True)
    if head.returncode != 0:
        assert prov["git_commit"] is None
    elif prov["git_commit"] != head.stdout.strip():  # a commit landed in between (a shared checkout): an ancestor
        ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", prov["git_commit"], "HEAD"],
                                  cwd=Path(egpo_core.__file__).parent)
        assert ancestor.returncode == 0, (prov["git_commit"], head.stdout)
    assert prov["git_modified"] in ((True, False) if head.returncode == 0 else (None,))
    assert prov["call"].startswith("egpo_core.simulate(P, ref_logits, ") and "seed=3" in prov["call"]
    assert prov["games"]["source"] == "arrays" and len(prov["games"]["sha256"]) == 64
    assert datetime.fromisoformat(prov["started"]).tzinfo is not None
    assert prov["wall_seconds"] > 0
    assert res.settings["seed"] == 3 and type(res.configs["seed"].iloc[0].item()) is int


def test_sampled_runs_on_the_same_game_draw_different_streams(games):
    """Two copies of one game in one batch: same start, same game, so only their random streams differ."""
    P, ref = games
    twin_P, twin_ref = np.stack([P[0], P[0]]), np.stack([ref[0], ref[0]])
    res = simulate(twin_P, twin_ref, ["egpo", "oipo2"], beta=0.1, lr=0.05, iterations=20, gradient="sampled",
                   num_samples=10, seed=1, progress=False)
    for name in ("egpo", "oipo2"):
        gap = res.duality_gap[name]
        assert gap[0, 0] == gap[1, 0]
        assert np.all(gap[0, 1:] != gap[1, 1:]), name


def test_a_compiling_first_call_is_announced_once_instead_of_a_bar(games, monkeypatch, capsys):
    import importlib

    module = importlib.import_module("egpo_core.simulator")
    P, ref = games
    monkeypatch.setattr(module, "_kernel_needs_compiling", lambda: True)
    simulate(P, ref, ["egpo"], beta=0.1, lr=0.05, iterations=6, progress=True)
    err = capsys.readouterr().err
    assert err.count(module.COMPILE_MESSAGE) == 1
    simulate(P, ref, ["egpo"], **KW)  # progress=False: silent
    assert capsys.readouterr().err == ""
    monkeypatch.undo()
    assert not module._kernel_needs_compiling()  # loaded in this process: nothing to announce


def test_options_without_effect_are_refused_or_named(games):
    P, ref = games
    from egpo_core.network import neural_init

    network = neural_init(3, 5, 4, 2, seed=0)
    with pytest.raises(ValueError, match=r"^network= is read with policy='neural' only .* got policy='tabular'"):
        simulate(P, ref, ["egpo"], network=network, **KW)
    with pytest.raises(ValueError, match=r"network= is read with policy='neural' only"):
        sweep(P, ref, ["egpo"], network=network, betas=[0.1, 0.2], lr=0.05, iterations=3, progress=False)
    with pytest.raises(ValueError, match=r"^pair_sampling='policy' has no effect on the algorithms run \(oipo2: its "
                                         r"pairs are drawn from π_t by definition; nash_md_pg: a policy gradient"):
        simulate(P, ref, ["oipo2", "nash_md_pg"], pair_sampling="policy", **KW)
    with warnings.catch_warnings(record=True) as caught:  # it moves oipo1's pairs: accepted, the others named
        warnings.simplefilter("always")
        mixed = simulate(P, ref, ["oipo1", "oipo2"], pair_sampling="policy", **KW)
    assert [str(w.message) for w in caught] == ["pair_sampling='policy' has no effect on oipo2: its pairs are drawn "
                                                "from π_t by definition"]
    uniform = simulate(P, ref, ["oipo1", "oipo2"], **KW)
    assert not np.array_equal(mixed.duality_gap["oipo1"], uniform.duality_gap["oipo1"])
    np.testing.assert_array_equal(mixed.duality_gap["oipo2"], uniform.duality_gap["oipo2"])
