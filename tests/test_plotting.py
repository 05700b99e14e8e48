"""Paper-style curves and figure files."""

import numpy as np

from egpo_core.plotting import gap_curve, plot_gap_panels, save_figure
from egpo_core import simulate
from egpo_core.games import random_games


def test_gap_curve_averages_cuts_and_thins():
    steps = np.arange(5000)
    values = np.exp(-steps / 200.0)  # crosses 1e-6 at t ≈ 2763
    x, y = gap_curve(steps, values, window=10, cutoff=1e-6, max_points=1000)
    expected = np.convolve(values, np.ones(10) / 10, mode="valid")
    first_below = np.flatnonzero(expected < 1e-6)[0]
    assert y.size == 1000 and x[0] == 9
    assert np.all(y >= 1e-6)
    assert x[-1] == first_below - 1 + 9
    np.testing.assert_allclose(y, expected[x - 9], rtol=1e-12)


def test_save_figure_keeps_dots_and_writes_both_formats(tmp_path):
    rng = np.random.default_rng(0)
    res = simulate(random_games(2, 4, rng), rng.normal(size=(2, 4)), ["egpo"], beta=0.1, lr=0.05, iterations=20, progress=False)
    written = save_figure(plot_gap_panels(res), tmp_path / "gap_beta0.1")
    assert sorted(p.name for p in written) == ["gap_beta0.1.pdf", "gap_beta0.1.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert not list(tmp_path.glob("*.tmp")) and len(list(tmp_path.iterdir())) == 2
