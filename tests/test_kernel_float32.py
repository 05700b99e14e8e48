"""The opt-in float32 games (``SimulationConfig.dtype='float32'``).

Only the games are stored in float32 (half the bytes of every product Pσ); products, logits and sums
stay float64, so the deviation from float64 is that of rounding P to float32 (relative 6e-8 per entry).
Measured here: the gap curves agree with float64's to a relative 1e-4 wherever the gap exceeds 1e-6
(observed about 3e-7), and differ (the option acts).
"""

from __future__ import annotations

import numpy as np
import pytest

from egpo_core import simulate
from egpo_core.config import SimulationConfig
from egpo_core.games import random_games


def test_dtype_is_validated_and_stored():
    config = SimulationConfig(beta=0.1, lr=0.1, iterations=2, dtype="float32")
    assert config.to_dict()["dtype"] == "float32"
    assert SimulationConfig.from_dict(config.to_dict()) == config
    assert SimulationConfig(beta=0.1, lr=0.1, iterations=2).dtype == "float64"
    with pytest.raises(ValueError, match=r"dtype must be one of \('float64', 'float32'\), got dtype='float16'"):
        SimulationConfig(beta=0.1, lr=0.1, iterations=2, dtype="float16")


@pytest.mark.slow  # compiles the kernel's float32 specialization once (about a minute), then seconds
def test_float32_gap_curves_agree_with_float64_to_1e_4():
    rng = np.random.default_rng(3)
    runs, n = 3, 40
    P, ref = random_games(runs, n, rng), rng.normal(size=(runs, n))
    options = dict(algorithms=["egpo", "oipo1", "nash_md"], beta=0.01, lr=0.02, iterations=3000, progress=False)
    single = simulate(P, ref, dtype="float32", **options)
    double = simulate(P, ref, **options)
    for name in options["algorithms"]:
        g32, g64 = single.duality_gap[name], double.duality_gap[name]
        assert np.isfinite(g32).all()
        assert g64[:, -1].max() < 0.1 * g64[:, 0].min()  # the runs converged a long way
        shown = g64 > 1e-6
        assert shown.mean() > 0.9
        np.testing.assert_allclose(g32[shown], g64[shown], rtol=1e-4, atol=0)
        assert not np.array_equal(g32, g64)  # float32 games were used
