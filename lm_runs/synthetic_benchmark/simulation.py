"""The LM beside egpo_core's simulation of the same class games.

How the simulation is compared (the LM's step is not η): egpo_core simulates every algorithm on
the class games from q₀ = r with exact expected updates and tabular (softmax) policies over a grid of
mirror-descent steps η; the mixture coefficient of Nash-MD is the LM's. An "effective" η is fitted
per algorithm (least squares between log gaps at the evaluation points), and one common η for all
algorithms; the comparison reports the orderings of the final gaps and the fitted steps, not a
claim that the curves coincide.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .game import ClassGame
from .settings import BenchmarkSettings, core_name, online_algorithms

__all__ = ["simulate_class_games", "compare_with_simulation"]


def simulate_class_games(game: ClassGame, s: BenchmarkSettings, mixture: float):
    """egpo_core's exact tabular simulation of the class games over the η grid ``s.sim_etas`` for
    ``s.updates`` updates, recorded every ``s.eval_every``, averaged over prompts, for the online algorithms
    of ``s.algorithms`` (the round methods have no simulated counterpart here): a tidy frame
    (algorithm as the settings name it, eta, update, metric, value)."""
    from egpo_core import sweep

    online = online_algorithms(s.algorithms)
    names = [core_name(a) for a in online]
    result = sweep(
        game.P, game.ref_logp, names, betas=[game.beta], etas=list(s.sim_etas), iterations=s.updates,
        record_every=s.eval_every, metrics=("duality_gap", "exploitability", "kl_to_equilibrium"),
        mixture=mixture, progress=False,
    )
    frame = result.to_dataframe()
    frame = frame.groupby(["algorithm", "eta", "step", "metric"], observed=True)["value"].mean().reset_index()
    back = dict(zip(names, online))
    frame["algorithm"] = frame["algorithm"].astype(str).map(back)
    frame = frame.rename(columns={"step": "update"})
    return frame[["algorithm", "eta", "update", "metric", "value"]]


def _log_error(lm: np.ndarray, sim: np.ndarray) -> float:
    """Mean squared difference of the logs, mean((log lm − log sim)²), both floored at 1e-12."""
    floor = 1e-12
    return float(np.mean((np.log(np.maximum(lm, floor)) - np.log(np.maximum(sim, floor))) ** 2))


def compare_with_simulation(metrics, sim, algorithms: Sequence[str]):
    """Fit η per algorithm and one common η (least squares on log duality gaps over the evaluation
    points, LM median over seeds against the simulation's prompt mean); returns (comparison frame, fits)."""
    import pandas as pd

    gap = metrics[metrics.metric == "duality_gap"]
    lm_median = gap.groupby(["algorithm", "update"])["value"].median()
    sgap = sim[sim.metric == "duality_gap"]
    etas = np.sort(sgap.eta.unique())
    errors = {}
    for a in algorithms:
        lm_curve = lm_median.loc[a]
        for eta in etas:
            curve = sgap[(sgap.algorithm == a) & np.isclose(sgap.eta, eta)].set_index("update")["value"]
            common = lm_curve.index.intersection(curve.index)
            errors[(a, eta)] = _log_error(lm_curve.loc[common].to_numpy(), curve.loc[common].to_numpy())
    common_eta = float(min(etas, key=lambda e: sum(errors[(a, e)] for a in algorithms)))
    rows = []
    last = int(gap["update"].max())
    for a in algorithms:
        fit = float(min(etas, key=lambda e: errors[(a, e)]))
        finals = gap[(gap.algorithm == a) & (gap["update"] == last)]["value"]
        at = lambda e: float(sgap[(sgap.algorithm == a) & np.isclose(sgap.eta, e) & (sgap["update"] == last)]["value"].iloc[0])  # noqa: E731
        rows.append({
            "algorithm": a, "lm_final_gap_median": float(finals.median()), "lm_final_gap_min": float(finals.min()),
            "lm_final_gap_max": float(finals.max()), "eta_fit": fit, "sim_final_gap_at_eta_fit": at(fit),
            "log_rmse_at_eta_fit": math.sqrt(errors[(a, fit)]), "common_eta": common_eta,
            "sim_final_gap_at_common_eta": at(common_eta), "log_rmse_at_common_eta": math.sqrt(errors[(a, common_eta)]),
        })
    frame = pd.DataFrame(rows)
    frame["lm_rank"] = frame["lm_final_gap_median"].rank(method="min").astype(int)
    frame["sim_rank_at_common_eta"] = frame["sim_final_gap_at_common_eta"].rank(method="min").astype(int)
    return frame, {"common_eta": common_eta}
