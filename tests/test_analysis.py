"""egpo_core.rates, .experiments and .summaries (and the plotting functions that draw their results), and
the timing helpers of benchmarks/bench_simulate.py.

Closed forms used as oracles:
- a geometric sequence g_t = g_0 r^t has log-gap slope log r;
- on rock–paper–scissors with strength s and uniform π_ref, π*_β is uniform, PΣ* = S/3 on the centered
  subspace (S = P − ½ is skew with eigenvalues ±i s√3/2), so with λ = ±i η s/(2√3) the Jacobians of one
  exact step have eigenvalues  OMD: (1 − ηβ) + λ;  EGPO: (1 − ηβ)(1 + λ) + λ²;  MPO: (1 + λ)/(1 + ηβ);
  OMWU: the roots μ of μ² − (1 − ηβ + 2λ)μ + λ = 0.
Tolerances: slopes of exact sequences 1e-10 (relative); finite-difference Jacobians 1e-6; measured
slopes of simulations against the linearization 3 % (the fit window still holds some transient).
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from egpo_core import experiments, plotting, rates, simulate, summaries
from egpo_core.algorithms import PAPER_ALGORITHMS
from egpo_core.games import random_games, rock_paper_scissors
from egpo_core.presets import REFERENCE_MEDIANS, REFERENCE_REACHED
from egpo_core.results import SimulationResult

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_simulate", ROOT / "benchmarks" / "bench_simulate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _load_bench()

# ----------------------------------------------------------------------------------------------------
# helpers


def _result(values: np.ndarray, steps: np.ndarray | None = None, algorithms=("egpo",), **settings) -> SimulationResult:
    """A SimulationResult holding ``values`` (n_configs, n_algorithms, runs, n_steps) as its duality gap."""
    n_cfg = values.shape[0]
    configs = pd.DataFrame({"beta": [0.1] * n_cfg, "lr": [0.01] * n_cfg, "eta": [0.4] * n_cfg,
                            "mixture": [0.04] * n_cfg, "seed": [0] * n_cfg})
    steps = np.arange(values.shape[-1]) if steps is None else steps
    return SimulationResult(tuple(algorithms), configs, steps, {"duality_gap": values}, dict(settings))


def _rps(strength: float = 1.0):
    P = rock_paper_scissors(1, strength)
    ref = np.zeros((1, 3))  # uniform π_ref: π*_β is uniform for every β
    return P, ref


def _rps_rates(eta: float, beta: float, strength: float) -> dict[str, float]:
    lam = 1j * eta * strength / (2 * math.sqrt(3))
    a = 1 - eta * beta
    omwu = np.roots([1.0, -(a + 2 * lam), lam])
    return {
        "oipo1": abs(a + lam),
        "egpo": abs(a * (1 + lam) + lam**2),
        "mpo": abs(1 + lam) / (1 + eta * beta),
        "omwu": float(np.max(np.abs(omwu))),
    }


# ----------------------------------------------------------------------------------------------------
# thin


def test_thin_keeps_first_last_and_exact_values():
    rng = np.random.default_rng(0)
    values = rng.random((2, 3, 4, 1001))
    res = _result(values, algorithms=("a", "b", "c"))
    small = summaries.thin(res, max_steps=100)
    assert small.steps[0] == 0 and small.steps[-1] == 1000
    assert small.steps.size <= 101
    assert np.all(np.diff(small.steps) > 0)
    np.testing.assert_array_equal(small.values["duality_gap"], values[..., small.steps])
    assert small.settings["thinned_from"] == 1001
    untouched = summaries.thin(res, max_steps=5000)
    np.testing.assert_array_equal(untouched.steps, res.steps)
    with pytest.raises(ValueError, match="max_steps"):
        summaries.thin(res, max_steps=0)


# ----------------------------------------------------------------------------------------------------
# slopes and classes


def test_log_gap_slope_of_geometric_sequences():
    t = np.arange(200)
    g = np.stack([2.0 * 0.95**t, 0.3 * 0.999**t])
    np.testing.assert_allclose(rates.log_gap_slope(t, g), np.log([0.95, 0.999]), rtol=1e-10)
    # recorded every 10th step: the slope is still per step
    steps = t * 10
    np.testing.assert_allclose(rates.log_gap_slope(steps, g), np.log([0.95, 0.999]) / 10, rtol=1e-10)


def test_log_gap_slope_stops_at_the_floor_and_handles_non_finite():
    t = np.arange(100)
    decay = 0.5**t  # below 1e-12 from t = 40 on, then pure rounding noise
    decay[45:] = np.abs(np.sin(t[45:])) * 1e-16
    bad = 0.9**t
    bad[50] = np.nan
    blowup = 0.9**t
    blowup[70:] = np.inf
    start_below = np.full(100, 1e-14)
    slopes = rates.log_gap_slope(t, np.stack([decay, bad, blowup, start_below]))
    assert slopes[0] == pytest.approx(math.log(0.5), rel=1e-10)
    assert np.isnan(slopes[1:]).all()
    assert rates.log_gap_slope(t, np.ones((2, 3, 100))).shape == (2, 3)


def test_classify_trajectories():
    t = np.arange(1000, dtype=float)
    cases = {
        "converges": 0.9**t,                               # hits the floor
        "plateaus": 1e-5 + 0.1 * 0.9**t,                   # 10⁴× down, then flat
        "slow": 0.5 * np.exp(-t / 300),                    # falling, only 30× down
        "oscillates": 0.3 + 0.1 * np.sin(t / 5),           # cycles
        "diverges": 0.01 * 1.01**t,                        # grows 10⁴×
    }
    nan = 0.9**t
    nan[500:] = np.nan
    values = np.stack(list(cases.values()) + [nan])
    got = rates.classify_trajectories(values, t)
    assert list(got) == list(cases) + ["diverges"]
    assert set(rates.CLASSES) == set(cases)


# ----------------------------------------------------------------------------------------------------
# linearization


@pytest.mark.parametrize("eta,beta,strength", [(1.0, 0.1, 1.0), (0.3, 0.5, 0.6), (2.0, 0.01, 1.0)])
def test_linearized_rate_matches_rock_paper_scissors_closed_forms(eta, beta, strength):
    P, ref = _rps(strength)
    expected = _rps_rates(eta, beta, strength)
    for name, rho in expected.items():
        got = rates.linearized_rate(P, ref, name, eta=eta, beta=beta)
        assert got.shape == (1,)
        assert got[0] == pytest.approx(rho, rel=1e-6), name


def test_linearized_rate_is_nan_where_pi_star_is_not_a_fixed_point():
    rng = np.random.default_rng(3)
    P, ref = random_games(4, 6, rng), rng.normal(size=(4, 6))
    for name in ("nash_md", "nash_md_pg", "sppo"):
        assert np.isnan(rates.linearized_rate(P, ref, name, eta=1.0, beta=0.1)).all(), name
    rho = rates.linearized_rate(P, ref, "egpo", eta=1.0, beta=0.1)
    assert np.all((rho > 0) & (rho < 1))


@pytest.mark.parametrize("name", ["oipo1", "egpo", "mpo", "omwu"])
def test_measured_slope_of_a_simulation_matches_the_linearization(name):
    P, ref = _rps(1.0)
    eta, beta = 1.0, 0.1
    start = np.array([[1.0, -0.5, 0.2]])  # π_0 ≠ π*_β = uniform
    res = simulate(P, ref, [name], beta=beta, eta=eta, iterations=400, init_logits=start, progress=False)
    measured = rates.log_gap_slope(res.steps, res.duality_gap[name])[0]
    predicted = 2 * math.log(_rps_rates(eta, beta, 1.0)[name])
    assert measured == pytest.approx(predicted, rel=0.03)


# ----------------------------------------------------------------------------------------------------
# rate tables and the sweep


def test_rate_sweep_classes_slopes_and_divergence():
    rng = np.random.default_rng(5)
    P, ref = random_games(3, 5, rng), rng.normal(size=(3, 5))
    table = rates.rate_sweep(P, ref, ["oipo1", "egpo"], etas=[0.5, 100.0], betas=[0.1], iterations=400)
    assert len(table) == 2 * 2 * 3
    assert set(table["eta"]) == {0.5, 100.0}  # grid values exactly, not η recomputed from lr
    small = table[table["eta"] == 0.5]
    np.testing.assert_allclose(small["theory_slope"], math.log(1 - 0.05), rtol=1e-12)
    egpo = small[small["algorithm"] == "egpo"]
    assert (egpo["class"] == "converges").all()
    np.testing.assert_allclose(egpo["slope"], egpo["predicted_slope"], rtol=0.1)
    np.testing.assert_allclose(egpo["slope_ratio"], egpo["slope"] / math.log(0.95), rtol=1e-12)
    big = table[table["eta"] == 100.0]  # ηβ = 10: the logits overflow
    assert (big["class"] == "diverges").all()
    assert big["theory_slope"].isna().all()
    assert big["mixture"].isna().all()  # no Nash-MD ran: no mixture shown
    capped = rates.rate_sweep(P, ref, ["nash_md"], etas=[100.0], betas=[0.1], iterations=5)
    assert capped["mixture"].eq(1.0).all()  # Nash-MD's c capped at 1 beyond ηβ = 1
    cells = rates.rate_map(table)
    assert len(cells) == 4
    row = cells[(cells["algorithm"] == "egpo") & (cells["eta"] == 0.5)].iloc[0]
    assert row["class"] == "converges" and row["frac_converges"] == 1.0 and row["runs"] == 3
    assert row["eta_beta"] == pytest.approx(0.05)


def test_rate_map_majority_prefers_the_worse_class_on_ties():
    table = pd.DataFrame({
        "algorithm": ["egpo"] * 4, "beta": [0.1] * 4, "eta": [1.0] * 4, "slope": [-1, -1, 0, 0],
        "slope_ratio": [1.0] * 4, "theory_slope": [-0.1] * 4, "final": [0.0] * 4,
        "class": ["converges", "converges", "oscillates", "oscillates"],
    })
    cells = rates.rate_map(table)
    assert cells["class"].iloc[0] == "oscillates"
    assert cells["frac_converges"].iloc[0] == 0.5


# ----------------------------------------------------------------------------------------------------
# β → 0


def test_final_metrics_vs_beta_reaches_the_bias_of_pi_star():
    rng = np.random.default_rng(11)
    P, ref = random_games(3, 6, rng), rng.normal(size=(3, 6))
    frame = experiments.final_metrics_vs_beta(P, ref, ["egpo", "oipo1"], betas=[0.3, 0.03], eta=1.0, iterations=3000)
    assert len(frame) == 2 * 2 * 3
    assert frame["nash_exploitability"].abs().max() < 1e-9
    egpo = frame[frame["algorithm"] == "egpo"]
    # converged: the last iterate is π*_β, whose exploitability is the bias
    np.testing.assert_allclose(egpo["exploitability"], egpo["equilibrium_exploitability"], atol=1e-8)
    bias = frame.drop_duplicates(["beta", "run"]).pivot(index="run", columns="beta", values="equilibrium_exploitability")
    assert (bias[0.03] < bias[0.3]).all()
    assert (frame["equilibrium_exploitability"] >= -1e-12).all()
    dist = frame.drop_duplicates(["beta", "run"]).pivot(index="run", columns="beta", values="equilibrium_l1_to_nash")
    assert (dist[0.03] < dist[0.3]).all()


def test_horizon_tuned_exploitability_falls_with_the_horizon():
    rng = np.random.default_rng(2)
    P, ref = random_games(3, 6, rng), rng.normal(size=(3, 6))
    frame = experiments.horizon_tuned_exploitability(P, ref, ["egpo"], horizons=[100, 1000], eta=1.0, beta_horizon=5.0)
    np.testing.assert_allclose(frame["beta"], 5.0 / frame["horizon"], rtol=1e-12)
    med = frame.groupby("horizon")["exploitability"].median()
    assert med[1000] < 0.5 * med[100]


# ----------------------------------------------------------------------------------------------------
# tables and curves


def test_run_preset_overrides_and_summary_vs_reference():
    res = experiments.run_preset("exact-tabular-beta0.01", conventions="reference", iterations=5, runs=3)
    assert res.runs == 3 and res.steps[-1] == 5
    other = experiments.run_preset("exact-tabular-beta0.01", iterations=5, runs=3, seed=1)
    assert not np.allclose(other.duality_gap["egpo"][:, 0], res.duality_gap["egpo"][:, 0])
    table = summaries.summary_vs_reference(res, "exact-tabular-beta0.01")
    assert list(table["algorithm"]) == list(PAPER_ALGORITHMS)
    for _, row in table.iterrows():
        alg = row["algorithm"]
        assert row["median_final"] == pytest.approx(float(np.median(res.duality_gap[alg][:, -1])), rel=1e-12)
        assert row["reference_median"] == REFERENCE_MEDIANS["exact-tabular-beta0.01"][alg]
        assert row["reference_reached"] == REFERENCE_REACHED["exact-tabular-beta0.01"].get(alg, 0)
    assert (table["conventions"] == "reference").all() and (table["iterations"] == 5).all()


def test_conventions_table_ratio():
    a = _result(np.full((1, 2, 3, 4), 2.0), algorithms=("egpo", "oipo1"))
    b = _result(np.full((1, 2, 3, 4), 0.5), algorithms=("egpo", "oipo1"))
    table = summaries.conventions_table({"s": {"reference": a, "default": b}})
    assert list(table.columns) == ["setting", "algorithm", "median_reference", "reached_reference",
                                   "median_default", "reached_default", "ratio"]
    np.testing.assert_allclose(table["ratio"], 4.0)


def test_median_curves_quantiles_smoothing_and_nan_runs():
    values = np.zeros((1, 1, 4, 30))
    values[0, 0, 0] = 1.0
    values[0, 0, 1] = 2.0
    values[0, 0, 2] = 3.0
    values[0, 0, 3] = np.nan  # a diverged run is ignored
    curves = summaries.median_curves({"x": _result(values, gradient="sampled")}, window=10, max_points=400)
    # a trailing average: the curve starts at t = 0 and keeps every record
    assert curves["step"].iloc[0] == 0 and curves["step"].iloc[-1] == 29 and len(curves) == 30
    np.testing.assert_allclose(curves["median"], 2.0)
    np.testing.assert_allclose(curves["q25"], 1.5)
    np.testing.assert_allclose(curves["q75"], 2.5)
    assert (curves["gradient"] == "sampled").all() and (curves["label"] == "x").all()


def test_time_scaling_rows_and_extra_keys():
    table = BENCH.time_scaling([{"num_actions": 4, "runs": 2, "iterations": 10, "vary": "N"}])
    row = table.iloc[0]
    assert row["vary"] == "N" and row["num_actions"] == 4 and row["trajectory_steps"] == 20
    assert row["seconds"] > 0
    assert row["us_per_trajectory_step"] == pytest.approx(row["seconds"] / 20 * 1e6)


# ----------------------------------------------------------------------------------------------------
# plotting of analysis results


def test_figure_dir(tmp_path):
    assert plotting.figure_dir("x", tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    # without out_dir: the ignored scratch folder, never the committed figures/
    default = plotting.figure_dir("_test_figure_dir")
    try:
        assert default == ROOT / "runs" / "notebooks" / "_test_figure_dir"
    finally:
        default.rmdir()


def test_plot_rate_map_and_slopes():
    rng = np.random.default_rng(5)
    P, ref = random_games(2, 4, rng), rng.normal(size=(2, 4))
    cells = rates.rate_map(rates.rate_sweep(P, ref, ["oipo1", "egpo", "nash_md"], etas=[0.5, 30.0],
                                                  betas=[0.3, 0.03], iterations=200))
    fig = plotting.plot_rate_map(cells, ncols=2)
    assert sum(1 for ax in fig.axes if ax.images) == 3
    # every cell shows the runs in its class, "k/2"
    for ax in fig.axes:
        if ax.images:
            counts = [t.get_text().split("\n")[-1] for t in ax.texts]
            assert len(counts) == 4 and all(re.fullmatch(r"[12]/2", c) for c in counts), counts
    caption = fig.legends[0].get_title().get_text()
    assert rates.DIVERGES_DEFINITION in caption  # the one definition of "diverges", on the figure
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(r"\eta\beta = 1" in label for label in legend), legend  # the staircase is explained
    fig = plotting.plot_slope_comparison(cells)
    assert len(fig.axes) == 2 and len(fig.axes[1].collections) >= 1


def test_plot_median_grid_ends_curves_on_the_cutoff_line():
    values = np.stack([np.logspace(0, -20, 41)] * 3)[None, None]
    values[..., -5:] = 0.0  # an exact zero is drawn as "≤ 1e-6", not at 1e-17
    curves = summaries.median_curves({"a": _result(values), "b": _result(values)}, window=1)
    fig = plotting.plot_median_grid(curves)
    assert len(fig.axes) == 2
    line = fig.axes[0].lines[0]
    y = np.asarray(line.get_ydata())
    # 10^(-k/2) for k = 0 … 12 are ≥ 1e-6; k = 13 is the first below it, drawn on the 1e-6 line
    assert len(y) == 14 and y[-1] == 1e-6 and np.min(y) == 1e-6
    np.testing.assert_allclose(y[:-1], 10.0 ** (-np.arange(13) / 2), rtol=1e-12)
    assert fig.axes[0].get_ylim() == (1e-6, 1.0)
    assert fig.axes[0].get_yticklabels()[0].get_text().startswith(r"$\leq")


def test_round_significant_keeps_six_digits_and_non_finite_values():
    frame = pd.DataFrame({"x": [1 / 3, -2.0e-9 / 3, np.nan, np.inf, 0.0], "n": [1, 2, 3, 4, 5], "s": list("abcde")})
    out = summaries.round_significant(frame)
    np.testing.assert_array_equal(out["x"].to_numpy(), [0.333333, -6.66667e-10, np.nan, np.inf, 0.0])
    assert out["n"].tolist() == [1, 2, 3, 4, 5] and out["s"].tolist() == list("abcde")
    # a perturbation in the 10th digit (another machine's LAPACK) gives the same stored value
    again = summaries.round_significant(frame.assign(x=frame["x"] * (1 + 1e-10)))
    np.testing.assert_array_equal(again["x"].to_numpy(), out["x"].to_numpy())


def test_predicted_slope_is_zero_where_no_horizon_could_measure_it():
    rng = np.random.default_rng(0)
    P, ref = random_games(10, 10, rng), rng.normal(size=(10, 10))
    # Online IPO 2 at β = 0.01: ρ within ~1e-10 of 1 (finite-difference noise); EGPO contracts clearly
    table = rates.rate_sweep(P, ref, ["oipo2", "egpo"], etas=[0.3], betas=[0.01], iterations=2000)
    oipo2 = table[table["algorithm"] == "oipo2"]["predicted_slope"]
    egpo = table[table["algorithm"] == "egpo"]["predicted_slope"]
    assert ((oipo2 == 0) | (oipo2.abs() * 2000 >= 0.01)).all()
    assert (oipo2 == 0).sum() >= 5
    assert (egpo < -1e-4).all()


def test_gap_finding_names_the_lowest_and_the_counts():
    summary = pd.DataFrame({"algorithm": ["oipo1", "egpo", "nash_md"], "median_final": [1e-4, 0.0, 3e-3],
                            "reached": [4, 10, 0], "runs": [10, 10, 10]})
    assert summaries.gap_finding(summary) == \
        "EGPO ends lowest (median final gap 0); below 1e-06: EGPO 10/10, OMD 4/10 runs"
    none = summary.assign(reached=0, median_final=[1e-4, 2e-4, 3e-3])
    assert summaries.gap_finding(none) == "OMD ends lowest (median final gap 0.0001), EGPO 0.0002; no run falls below 1e-06"
