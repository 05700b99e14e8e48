"""Each algorithm measured on what it converges to (egpo_core.rates.target_metric): π*_β on the duality gap,
the original game's Nash equilibrium on the exploitability; the linearized prediction only where it applies."""

import math

import numpy as np
import pytest

from egpo_core import plotting, rates, simulate
from egpo_core.games import random_games


def _games(runs: int = 3, n: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    return random_games(runs, n, rng), rng.normal(size=(runs, n))


@pytest.mark.parametrize("name,period,expected", [
    ("oipo1", 0, "duality_gap"), ("egpo", 0, "duality_gap"), ("inpo", 0, "duality_gap"),
    ("mnpo", 0, "duality_gap"), ("nash_mp", 0, "duality_gap"), ("mpo", 0, "duality_gap"),
    ("comal", 0, "duality_gap"), ("omwu", 0, "duality_gap"), ("inpo", 50, "duality_gap"),
    ("comal", 50, "exploitability"), ("mpo", 50, "exploitability"), ("onpo", 0, "exploitability"),
    ("sppo", 0, "exploitability"),
])
def test_target_metric_follows_the_declared_anchor(name, period, expected):
    assert rates.target_metric(name, period) == expected


def test_onpo_and_comal_converge_on_the_exploitability_while_their_gap_plateaus():
    # η = 3 (ONPO), η = 1, β = 0.03, anchor refreshed every 50 updates (COMAL): both reach the original game's
    # Nash equilibrium, which is not π*_β, so the β-gap stalls at Gap_β(NE) > 0
    P, ref = _games()
    for name, eta, beta, period in (("onpo", 3.0, 0.03, 0), ("comal", 1.0, 0.03, 50)):
        res = simulate(P, ref, [name], beta=beta, eta=eta, iterations=2000, magnet_period=period,
                       metrics=("duality_gap", "exploitability"), progress=False)
        own = rates.rate_table(res, metric=None)
        gap = rates.rate_table(res, metric="duality_gap")
        assert set(own["metric"]) == {"exploitability"} and set(gap["metric"]) == {"duality_gap"}
        assert list(own["class"]) == ["converges"] * 3, (name, list(own["class"]))
        # the gap stalls ("oscillates": neither falling nor 100× down; "plateaus": 100× down, not falling)
        assert set(gap["class"]) <= {"plateaus", "oscillates"}, (name, list(gap["class"]))
        assert (own["final"] < own["initial"] / 100).all()
        assert (gap["final"] / gap["initial"] > 100 * own["final"] / own["initial"]).all(), name
        assert own["theory_slope"].isna().all()  # log(1 − ηβ) is a rate to π*_β: no ratio on the exploitability


def test_rate_table_refuses_a_metric_that_was_not_recorded():
    P, ref = _games()
    res = simulate(P, ref, ["onpo"], beta=0.1, eta=1.0, iterations=5, progress=False)
    with pytest.raises(ValueError, match="'exploitability' was not recorded"):
        rates.rate_table(res, metric=None)


def test_rate_sweep_inpo_rows_equal_online_ipo1_and_predictions_only_where_they_apply():
    P, ref = _games()
    etas, betas = [0.3, 3.0, 30.0], [0.3, 0.03]
    table = rates.rate_sweep(P, ref, ["oipo1", "inpo", "mnpo", "onpo", "sppo", "comal"], etas=etas, betas=betas,
                             iterations=300, magnet_period=20)
    by = {name: part.reset_index(drop=True) for name, part in table.groupby("algorithm")}
    same = ["beta", "eta", "run", "metric", "initial", "final", "slope", "class", "predicted_slope"]
    assert by["inpo"][same].equals(by["oipo1"][same])  # the same exact update, the same kernel code
    assert (by["inpo"]["class"] == "converges").sum() >= 3  # not vacuous: some cells do converge
    for name in ("onpo", "sppo", "comal"):  # no fixed point at π*_β, or not one stationary map (refreshes)
        assert set(by[name]["metric"]) == {"exploitability"}
        assert by[name]["predicted_slope"].isna().all(), name
    mnpo = by["mnpo"]
    assert mnpo.loc[mnpo["eta"] * mnpo["beta"] > 1, "predicted_slope"].isna().all()  # anchor ratio ηβ > 1
    # the history-stack linearization predicts MNPO's measured slope where it converges
    conv = mnpo[(mnpo["class"] == "converges") & (mnpo["predicted_slope"] < 0)]
    assert len(conv) >= 3
    np.testing.assert_allclose(conv["slope"], conv["predicted_slope"], rtol=0.05)


def test_linearized_rate_nan_for_refreshed_anchors_and_exploitability_targets():
    P, ref = _games(seed=3)
    for name, period in (("comal", 50), ("mpo", 50), ("onpo", 0), ("sppo", 0)):
        assert np.isnan(rates.linearized_rate(P, ref, name, eta=1.0, beta=0.1, magnet_period=period)).all(), name
    # COMAL never refreshed is INPO's update: the same ρ; MNPO's (history H = 2) is a different, finite ρ < 1
    inpo = rates.linearized_rate(P, ref, "inpo", eta=1.0, beta=0.1)
    np.testing.assert_array_equal(rates.linearized_rate(P, ref, "comal", eta=1.0, beta=0.1), inpo)
    mnpo = rates.linearized_rate(P, ref, "mnpo", eta=1.0, beta=0.1)
    assert np.all((mnpo > 0) & (mnpo < 1)) and np.all(np.abs(mnpo - inpo) > 1e-3)
    assert np.isnan(rates.linearized_rate(P, ref, "mnpo", eta=20.0, beta=0.1)).all()


def test_onpo_rows_differ_only_by_rounding_across_beta():
    P, ref = _games()
    table = rates.rate_sweep(P, ref, ["onpo"], etas=[3.0], betas=[0.3, 0.03, 0.003], iterations=1000, predict=False)
    finals = table.pivot(index="run", columns="beta", values="final").to_numpy()
    assert (table["class"] == "converges").all()
    np.testing.assert_allclose(finals, finals[:, :1].repeat(3, axis=1), rtol=1e-6)
    assert rates.ignores_beta("onpo", "exploitability") and rates.ignores_beta("sppo", "exploitability")
    assert not rates.ignores_beta("comal", "exploitability") and not rates.ignores_beta("onpo", "duality_gap")


def test_plot_rate_map_names_the_metric_of_each_panel():
    P, ref = _games(runs=2, n=4, seed=5)
    cells = rates.rate_map(rates.rate_sweep(P, ref, ["inpo", "comal", "onpo"], etas=[0.5, 3.0], betas=[0.3, 0.03],
                                            iterations=100, magnet_period=20))
    fig = plotting.plot_rate_map(cells, ncols=3)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["INPO", "COMAL (exploitability)", "ONPO (exploitability; β-free)"]
    caption = fig.legends[0].get_title().get_text()
    assert "exploitability" in caption and "β-free" in caption and "Gap_β" in caption
    gap_only = plotting.plot_rate_map(cells[cells["algorithm"] == "inpo"], ncols=1)
    assert "β-free" not in gap_only.legends[0].get_title().get_text()
