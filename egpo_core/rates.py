"""Measured convergence rates of simulated trajectories, their classes, and the theory's predictions.

Measured rate. For a trajectory of duality gaps g_0 … g_T recorded at steps s_0 … s_T, the measured
log-gap slope is the least-squares slope of log g against s over a fit window (see
:func:`log_gap_slope`); ``exp(slope)`` is the measured per-step contraction of the gap. The theory's
rate for EGPO is (1 − ηβ)^t in the distance to π*_β (Zhou, Fazel, Du 2025, arXiv 2503.08942); since
the gap is quadratic in that distance (Gap_β = 2β KL(π‖BR_β(π))), a distance contracting like ρ^t
makes the gap contract like ρ^{2t}. The local (asymptotic) prediction is the spectral radius ρ of the
Jacobian of one exact update at π*_β (:func:`linearized_rate`), giving slope 2·log ρ.

What is measured (:func:`target_metric`): the curve of what the algorithm converges to. An algorithm that
keeps a KL pull toward π_ref converges (if at all) to π*_β and is measured on Gap_β; one with no fixed pull
toward π_ref — its anchor the current policy (SPPO, ONPO), or a magnet refreshed every K > 0 updates (COMAL,
MPO with resets) — aims at a Nash equilibrium of the original game and is measured on its exploitability
max_y P(y ≻ π_t) − ½ (:func:`egpo_core.metrics.exploitability`). The classes and slopes below read either
curve the same way ("gap" stands for the measured curve).

Convergence classes (:func:`classify_trajectories`), from the initial gap g_0, the tail median
g_end (median of the last 10 % of the records) and the measured slope:

    converges   the gap fell below the floor (1e-12), or g_end ≤ g_0/100 and it is still falling
    plateaus    g_end ≤ g_0/100 but no longer falling: stuck at a biased fixed point above the floor
    slow        g_end > g_0/100 but still falling: converging, too slowly for the horizon
    oscillates  neither falling nor diverging: the gap cycles or stalls (or falls too slowly to tell)
    diverges    a non-finite gap (overflow) anywhere, or g_end ≥ 10·g_0 (the gap grew tenfold)

"Still falling" means the fitted log-gap line drops by at least a factor 2 over the second half of
the horizon: slope · (s_T − s_{T/2}) ≤ −log 2, with the slope of :func:`log_gap_slope`.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from .algorithms import PAPER_ALGORITHMS, Algorithm, Anchor, Opponent, get_algorithm
from .simulator import SimulationResult, sweep

__all__ = [
    "CLASSES",
    "FLOOR",
    "target_metric",
    "ignores_beta",
    "DIVERGES_DEFINITION",
    "log_gap_slope",
    "classify_trajectories",
    "rate_table",
    "rate_map",
    "rate_sweep",
    "linearized_rate",
]

#: Convergence classes, from best to worst.
CLASSES = ("converges", "plateaus", "slow", "oscillates", "diverges")

#: Below this a float64 gap is rounding noise.
FLOOR = 1e-12

#: The one definition of "diverges" (figures and notebooks quote it).
DIVERGES_DEFINITION = "a non-finite gap (overflow), or a final gap at least 10× the initial one"

def target_metric(algorithm: str | Algorithm, magnet_period: int = 0) -> str:
    """The recorded metric that measures convergence to what ``algorithm`` converges to, from its declaration:
    ``"exploitability"`` (a Nash equilibrium of the original game) when its anchor is the current policy
    (log π_{t+1} ≐ log π_t + η·(opponent term): SPPO, ONPO) or a magnet refreshed every ``magnet_period`` = K > 0
    updates (a proximal-point loop on the original game: COMAL, MPO with resets); ``"duality_gap"`` (π*_β, the
    fixed point of every update that keeps the pull ηβ log π_ref: the others, MPO and COMAL with K = 0)."""
    alg = get_algorithm(algorithm)
    if alg.anchor is Anchor.CURRENT or (alg.anchor is Anchor.MAGNET and magnet_period > 0):
        return "exploitability"
    return "duality_gap"


def ignores_beta(algorithm: str | Algorithm, metric: str) -> bool:
    """True when neither the exact tabular update at a step η nor ``metric`` depends on β: the anchor is
    the current policy (log π_{t+1} ≐ log π_t + η·(opponent term), no π_ref, no β; in the simulator β
    only converts η to lr = ηβN/4) and the metric is the exploitability (β-free). A rate map's rows of
    such an algorithm then differ only by the rounding of η = 4·lr/(Nβ)."""
    return get_algorithm(algorithm).anchor is Anchor.CURRENT and metric == "exploitability"


def _fit_window(log_g: np.ndarray, floor_index: int | None, log_floor: float, min_points: int) -> slice:
    """Records to fit: the second half (in log g) of a decay that reaches the floor at record
    ``floor_index``; the second half in time when it never does; at least ``min_points`` records."""
    if floor_index is None:
        end = log_g.size
        start = end // 2
    else:
        end = floor_index
        middle = 0.5 * (log_g[0] + log_floor)
        hits = np.flatnonzero(log_g[:end] <= middle)
        start = int(hits[0]) if hits.size else end // 2
    if end - start < min_points:
        start = max(0, end - min_points)
    return slice(start, end)


def log_gap_slope(steps: np.ndarray, values: np.ndarray, floor: float = FLOOR, min_points: int = 5) -> np.ndarray:
    """Measured log-gap slope per step of each trajectory (last axis of ``values``).

    Least-squares slope of log g_i against the step s_i over a fit window meant to catch the
    asymptotic rate: with e the first record whose gap is below ``floor``, the window is the second
    half of the decay in log scale (from the first record with log g ≤ (log g_0 + log floor)/2 up to
    e); when the gap never reaches the floor, the second half of the records in time. The window is
    widened backwards to at least ``min_points`` records where possible. Returns NaN for a trajectory
    with a non-finite value anywhere (a diverged run) or fewer than 2 usable records.

    Returns an array of shape ``values.shape[:-1]``.
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(-1, values.shape[-1])
    out = np.full(flat.shape[0], np.nan)
    for k, g in enumerate(flat):
        if not np.all(np.isfinite(g)):
            continue
        below = np.flatnonzero(g < floor)
        with np.errstate(divide="ignore"):
            log_g = np.log(g)
        window = _fit_window(log_g, int(below[0]) if below.size else None, math.log(floor), min_points)
        x, y = steps[window], log_g[window]
        if x.size < 2:
            continue
        x = x - x.mean()
        out[k] = float(np.dot(x, y - y.mean()) / np.dot(x, x))
    return out.reshape(values.shape[:-1])


def classify_trajectories(
    values: np.ndarray, steps: np.ndarray | None = None, floor: float = FLOOR, tail: float = 0.1
) -> np.ndarray:
    """Convergence class of each trajectory (last axis of ``values``), one of :data:`CLASSES` (see the
    module docstring for the rules; ``tail`` is the fraction of records whose median is g_end).
    ``steps`` (default 0, 1, …) give the time axis of the "still falling" test. Returns an array of
    strings of shape ``values.shape[:-1]``.
    """
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(-1, values.shape[-1])
    n = flat.shape[1]
    steps = np.arange(n, dtype=np.float64) if steps is None else np.asarray(steps, dtype=np.float64)
    slopes = log_gap_slope(steps, flat, floor).ravel()
    width = max(2, int(math.ceil(tail * n)))
    half_span = steps[-1] - steps[n // 2]  # span of the fit window of a run that never hits the floor
    out = np.empty(flat.shape[0], dtype=object)
    for k, g in enumerate(flat):
        if not np.all(np.isfinite(g)):
            out[k] = "diverges"
            continue
        g0, g_end = g[0], float(np.median(g[-width:]))
        falling = slopes[k] * half_span <= -math.log(2.0)
        if g_end >= 10.0 * g0:
            out[k] = "diverges"
        elif np.any(g < floor):
            out[k] = "converges"
        elif g_end <= g0 / 100.0:
            out[k] = "converges" if falling else "plateaus"
        else:
            out[k] = "slow" if falling else "oscillates"
    return out.reshape(values.shape[:-1]).astype(str)


def rate_table(result: SimulationResult, metric: str | None = "duality_gap", floor: float = FLOOR) -> pd.DataFrame:
    """One row per (config, algorithm, run): the measured slope and class of its ``metric`` curve
    (``None``: each algorithm's own, :func:`target_metric` at the result's ``magnet_period``).

    Columns: config, beta, eta, lr, mixture, seed, algorithm, metric, run, initial, final (last record),
    slope (:func:`log_gap_slope`), rate = exp(slope) (measured per-step contraction of the curve),
    theory_slope = log(1 − ηβ) (NaN where ηβ ≥ 1, and for a curve other than the duality gap: the theory's
    rate is about π*_β), slope_ratio = slope / theory_slope (≈ 2 means the gap contracts like
    (1 − ηβ)^{2t}), class (:func:`classify_trajectories`).
    """
    period = int(result.settings.get("magnet_period", 0) or 0)
    names = [metric if metric is not None else target_metric(alg, period) for alg in result.algorithms]
    missing = sorted(set(names) - set(result.values))
    if missing:
        raise ValueError(f"metric {missing[0]!r} was not recorded (recorded: {', '.join(result.values)}); "
                         f"simulate with metrics=(..., {missing[0]!r})")
    slopes, classes = {}, {}
    for name in set(names):
        slopes[name] = log_gap_slope(result.steps, result.values[name], floor)
        classes[name] = classify_trajectories(result.values[name], result.steps, floor)
    rows = []
    for c, cfg in result.configs.iterrows():
        eta = float(f"{cfg['eta']:.12g}")  # η recomputed from lr carries rounding noise: keep grid values equal
        eta_beta = eta * float(cfg["beta"])
        theory = math.log1p(-eta_beta) if eta_beta < 1 else math.nan
        for a, alg in enumerate(result.algorithms):
            name = names[a]
            data = result.values[name]
            alg_theory = theory if name == "duality_gap" else math.nan
            for r in range(data.shape[2]):
                slope = float(slopes[name][c, a, r])
                rows.append(
                    {
                        "config": int(c), "beta": float(cfg["beta"]), "eta": eta, "lr": float(cfg["lr"]),
                        "mixture": float(cfg["mixture"]), "seed": int(cfg["seed"]), "algorithm": alg,
                        "metric": name, "run": r,
                        "initial": float(data[c, a, r, 0]), "final": float(data[c, a, r, -1]),
                        "slope": slope, "rate": math.exp(slope) if math.isfinite(slope) else math.nan,
                        "theory_slope": alg_theory,
                        "slope_ratio": slope / alg_theory if math.isfinite(alg_theory) and alg_theory != 0 else math.nan,
                        "class": str(classes[name][c, a, r]),
                    }
                )
    return pd.DataFrame(rows)


def rate_map(table: pd.DataFrame) -> pd.DataFrame:
    """Aggregate a :func:`rate_table` per (algorithm, β, η): the metric measured (if present), median slope,
    slope_ratio and predicted_slope (if present), the majority class (ties go to the worse class), the
    fraction of runs in each class and the median final value."""
    rows = []
    for (alg, beta, eta), part in table.groupby(["algorithm", "beta", "eta"], sort=False):
        counts = part["class"].value_counts()
        top = counts.max()
        majority = [c for c in CLASSES if counts.get(c, 0) == top][-1]
        row = {
            "algorithm": alg, "beta": beta, "eta": eta, "eta_beta": beta * eta,
            "slope": float(part["slope"].median()), "slope_ratio": float(part["slope_ratio"].median()),
            "theory_slope": float(part["theory_slope"].iloc[0]), "final": float(part["final"].median()),
            "class": majority, "runs": len(part),
        }
        if "metric" in part:
            row["metric"] = str(part["metric"].iloc[0])
        if "predicted_slope" in part:
            row["predicted_slope"] = float(part["predicted_slope"].median())
        for c in CLASSES:
            row[f"frac_{c}"] = counts.get(c, 0) / len(part)
        rows.append(row)
    return pd.DataFrame(rows)


def rate_sweep(
    P: np.ndarray,
    ref_logits: np.ndarray,
    algorithms: Sequence[str] = PAPER_ALGORITHMS,
    *,
    etas: Sequence[float],
    betas: Sequence[float],
    iterations: int,
    magnet_period: int = 0,
    predict: bool = True,
    unmeasurable: float = 0.01,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`rate_table` over the grid betas × etas (exact tabular, one :func:`~egpo_core.sweep` call
    per β and side of ηβ = 1), each algorithm measured on its own :func:`target_metric` (column ``metric``),
    plus the local prediction ``predicted_slope`` = 2·log ρ of :func:`linearized_rate` per (algorithm, β, η,
    run) when ``predict`` (NaN where the linearization at π*_β does not apply, see there).
    ``magnet_period`` K refreshes the "magnet" anchor (MPO, COMAL) every K updates (0: never).

    A prediction with |2·log ρ|·``iterations`` < ``unmeasurable`` (the log gap would change by less
    than 1 % over the whole horizon) is reported as exactly 0: ρ is then within the finite-difference
    noise of 1 (where the Jacobian has a neutral direction its eigenvalue near 1 is ill-conditioned,
    and its last digits would differ between machines), and no horizon of this length could measure it.

    The Nash-MD mixture coefficient c = ηβ must lie in [0, 1]; cells with ηβ > 1 run with c = 1
    (the mixture is then π_ref itself). Runs that overflow give NaN gaps and are classed "diverges".
    """
    metrics = tuple(dict.fromkeys(["duality_gap"] + [target_metric(a, magnet_period) for a in algorithms]))
    frames = []
    for beta in betas:
        low = [e for e in etas if e * beta <= 1.0]
        high = [e for e in etas if e * beta > 1.0]
        for group, mixture in ((low, None), (high, 1.0)):
            if not group:
                continue
            # overflowing runs are expected here (they are classed "diverges"): no warning for them
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*diverged", category=RuntimeWarning)
                res = sweep(
                    P, ref_logits, algorithms, betas=[beta], etas=group, iterations=iterations,
                    mixture=mixture, progress=progress, metrics=metrics, magnet_period=magnet_period,
                )
            frames.append(rate_table(res, metric=None))
    table = pd.concat(frames, ignore_index=True)
    if predict:
        P3 = P if P.ndim == 3 else P[None]
        ref = ref_logits if ref_logits.ndim == 2 else ref_logits[None]
        predicted = np.full(len(table), np.nan)
        for (alg, beta, eta), idx in table.groupby(["algorithm", "beta", "eta"], sort=False).groups.items():
            mixture = float(table.loc[idx[0], "mixture"])
            rho = linearized_rate(P3, ref, alg, eta=eta, beta=beta, mixture=mixture, magnet_period=magnet_period)
            runs = table.loc[idx, "run"].to_numpy()
            with np.errstate(divide="ignore"):
                predicted[np.asarray(idx)] = 2.0 * np.log(rho[runs])
        predicted[np.abs(predicted) * iterations < unmeasurable] = 0.0
        table["predicted_slope"] = predicted
    return table


def linearized_rate(
    P: np.ndarray,
    ref_logits: np.ndarray,
    algorithm: str,
    *,
    eta: float,
    beta: float,
    mixture: float | None = None,
    magnet_period: int = 0,
    step: float = 1e-5,
    fixed_point_tol: float = 1e-7,
) -> np.ndarray:
    """Spectral radius ρ of the Jacobian of one exact tabular update at π*_β, per game.

    With f the algorithm's closed-form update on centered logits and θ* the logits of π*_β
    (:func:`egpo_core.equilibria.regularized_equilibrium`), J = ∂f/∂θ at θ* by central differences
    (step ``step``); ρ = max |eig J|. Near π*_β the distance contracts like ρ^t, so the log-gap slope
    tends to 2·log ρ. OMWU, whose update reads (θ_t, θ_{t−1}), is linearized on the pair:
    (θ_t, θ_{t−1}) ↦ (f(θ_t, θ_{t−1}), θ_t); so is every algorithm with the optimistic opponent (ONPO).
    MNPO, whose update reads its H last policies, is linearized on the stack (θ_t, …, θ_{t−H+1}) ↦
    (f(θ_t, …, θ_{t−H+1}), θ_t, …, θ_{t−H+2}) the same way (NaN where ηβ > 1: its anchor's ratio ηβ must lie
    in [0, 1]). The "magnet" anchor (MPO, COMAL) is π_ref
    when ``magnet_period`` is 0; with refreshes (K > 0) the update is not one stationary map, and the
    algorithm targets the original game's Nash equilibrium, not π*_β: all NaN, as for every algorithm
    whose :func:`target_metric` is not the duality gap (SPPO, ONPO).

    Returns NaN for a game where π*_β is not a fixed point of the update: ‖f(θ*) − θ*‖_∞/(ηβ) >
    ``fixed_point_tol`` (for the mirror-descent family (f(θ) − θ)/(ηβ) is the residual θ_ref + Pσ/β − θ
    of the fixed-point equation, whatever the step). So SPPO (fixed point: a Nash equilibrium of the
    original game) and Nash-MD / Nash-MD-PG (constant-step fixed point biased away from π*_β by the
    mixture) give NaN unless the bias is below the tolerance. Shape (runs,).
    """
    from .equilibria import regularized_equilibrium

    alg = get_algorithm(algorithm)
    P = np.asarray(P, dtype=np.float64)
    ref = np.asarray(ref_logits, dtype=np.float64)
    if P.ndim == 2:
        P, ref = P[None], ref[None]
    if target_metric(alg, magnet_period) != "duality_gap" or (alg.history_length > 1 and eta * beta > 1):
        return np.full(P.shape[0], np.nan)
    star = regularized_equilibrium(P, ref, beta).logits
    kwargs = {}
    if alg.opponent is Opponent.MIXTURE and mixture is not None:
        kwargs["mixture"] = mixture
    n = P.shape[-1]
    out = np.full(P.shape[0], np.nan)
    for r in range(P.shape[0]):
        theta = star[r] - star[r].mean()
        if alg.opponent is Opponent.OPTIMISTIC:
            def f(z, r=r):
                cur, prev = z[..., :n], z[..., n:]
                new = alg.closed_form(cur, ref[r], P[r], eta, beta, previous_logits=prev)
                return np.concatenate([new, cur - cur.mean(axis=-1, keepdims=True)], axis=-1)

            z0 = np.concatenate([theta, theta])
        elif alg.history_length > 1:
            def f(z, r=r, h=alg.history_length):
                past = [z[..., j * n:(j + 1) * n] for j in range(h)]
                new = alg.closed_form(past[0], ref[r], P[r], eta, beta, history_logits=past,
                                      history_weights=alg.history_weights)
                return np.concatenate([new] + [q - q.mean(axis=-1, keepdims=True) for q in past[:-1]], axis=-1)

            z0 = np.concatenate([theta] * alg.history_length)
        else:
            def f(z, r=r):
                return alg.closed_form(z, ref[r], P[r], eta, beta, **kwargs)

            z0 = theta
        with np.errstate(all="ignore"):
            moved = f(z0[None])[0]
        if not np.all(np.isfinite(moved)) or np.max(np.abs(moved - z0)) > fixed_point_tol * eta * beta:
            continue
        d = z0.size
        eye = np.eye(d) * step
        with np.errstate(all="ignore"):
            jac = (f(z0[None] + eye) - f(z0[None] - eye)).T / (2.0 * step)
        if np.all(np.isfinite(jac)):
            out[r] = float(np.max(np.abs(np.linalg.eigvals(jac))))
    return out
