"""egpo_core.experiments.last_iterate_curves, behind the claims table of notebooks/theory_checks.py (d):
the series it accepts, the steps it records, MNPO's history reaching the simulator, and the measured rates
the verdicts read.

Tolerances: measured slopes against the theory's within the band the
notebook's rule uses (measured 1.93× log(1 − ηβ) for INPO's KL, the gap and KL being quadratic in the
distance to π*_β).
"""

from __future__ import annotations

import numpy as np
import pytest

from egpo_core.experiments import LastIterateRun, last_iterate_curves, log_spaced_steps
from egpo_core.games import random_games

ETA, BETA, T = 0.5, 0.1, 400


@pytest.fixture(scope="module")
def games():
    rng = np.random.default_rng(3)
    return random_games(2, 6, rng), rng.normal(size=(2, 6))


def test_series_settings_are_checked_in_one_line():
    with pytest.raises(ValueError, match="eta must be a positive number, got eta=0"):
        LastIterateRun("inpo", 0, BETA)
    with pytest.raises(ValueError, match="history must be 1, or more for mnpo only, got history=3 for comal"):
        LastIterateRun("comal", ETA, BETA, history=3)
    with pytest.raises(ValueError, match="unknown algorithm"):
        LastIterateRun("nope", ETA, BETA)
    assert LastIterateRun("online_ipo1", ETA, BETA).algorithm == "oipo1"  # aliases resolve
    assert LastIterateRun("onpo", 0.05, BETA).label == "ONPO (η = 0.05)"


def test_log_spaced_steps_cover_the_run_once_each():
    steps = log_spaced_steps(20_000, 200)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 20_000
    assert np.all(np.diff(steps) > 0)
    assert 150 < steps.size <= 201  # the first decade's integers coincide
    ratios = steps[60:] / steps[59:-1]
    assert ratios.max() < 1.1  # evenly spaced in log scale once the integers are apart


def test_mnpo_series_with_one_history_policy_is_inpo_and_three_differ(games):
    """An MNPO series with H = 1 is INPO bit for bit on every recorded step (the series' history reaches the
    simulator), and H = 3 is another run (the kernel's MNPO itself is checked against its closed form in
    tests/test_kernel_mnpo.py)."""
    P, ref = games
    curves, rates = last_iterate_curves(P, ref, [LastIterateRun("inpo", ETA, BETA),
                                                 LastIterateRun("mnpo", ETA, BETA, label="mnpo"),
                                                 LastIterateRun("mnpo", ETA, BETA, history=3, label="mnpo3")],
                                        iterations=T, points=50)
    inpo, mnpo, mnpo3 = (curves[curves["label"] == label] for label in ("INPO (η = 0.5)", "mnpo", "mnpo3"))
    assert list(inpo["step"]) == list(mnpo["step"]) and inpo["step"].iloc[0] == 0 and inpo["step"].max() == T
    early = inpo["step"].to_numpy() <= 100  # before INPO reaches the rounding floor
    for metric in ("duality_gap", "exploitability"):
        np.testing.assert_array_equal(mnpo[metric].to_numpy(), inpo[metric].to_numpy())
        gap = np.abs(mnpo3[metric].to_numpy()[early] - inpo[metric].to_numpy()[early]).max()
        assert gap > 1e-3 * inpo[metric].to_numpy()[early].max(), metric
    assert set(rates.columns) >= {f"{m}_{k}" for m in ("duality_gap", "exploitability", "kl_to_equilibrium")
                                  for k in ("initial", "final", "slope")}
    assert len(rates) == 3 * P.shape[0]


def test_measured_rates_are_those_the_claims_table_reads(games):
    """INPO's KL(π*_β‖π_t) falls at about twice log(1 − ηβ) per update (linear, as claimed); MNPO with three
    past policies at about log(1 − ηβ). After 2 000 updates ONPO at η = 1 is near the Nash equilibrium
    (measured exploitability 1e-7 and 2e-4) while ONPO at η = 0.05 is not (0.13 and 0.010: slow, not even
    monotone), and SPPO's last iterate cycles (0.38, 0.34)."""
    P, ref = games
    series = [LastIterateRun("inpo", ETA, BETA), LastIterateRun("mnpo", ETA, BETA, history=3, label="mnpo3")]
    _, rates = last_iterate_curves(P, ref, series, iterations=T, points=100)
    by = rates.set_index(["label", "run"])
    theory = np.log1p(-ETA * BETA)
    for r in range(P.shape[0]):
        assert 1.6 < by.loc[("INPO (η = 0.5)", r), "kl_to_equilibrium_slope"] / theory < 2.2
        assert 0.8 < by.loc[("mnpo3", r), "kl_to_equilibrium_slope"] / theory < 1.3
        assert by.loc[("INPO (η = 0.5)", r), "kl_to_equilibrium_final"] < 1e-12
    series = [LastIterateRun("onpo", 0.05, BETA), LastIterateRun("onpo", 1.0, BETA), LastIterateRun("sppo", 1.0, BETA)]
    _, rates = last_iterate_curves(P, ref, series, iterations=2_000, points=100)
    by = rates.set_index(["label", "run"])
    for r in range(P.shape[0]):
        slow, fast = by.loc[("ONPO (η = 0.05)", r)], by.loc[("ONPO (η = 1)", r)]
        assert fast["exploitability_final"] < 1e-3
        assert slow["exploitability_final"] > max(10 * fast["exploitability_final"], 5e-3)
        assert by.loc[("SPPO (η = 1)", r), "exploitability_final"] > 0.1
