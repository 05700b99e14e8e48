"""Analysis of simulation results: measured rates, convergence classes, comparisons, timings.

The notebooks stay thin; everything they compute beyond ``simulate``/``sweep`` lives here.

Measured rate. For a trajectory of duality gaps g_0 … g_T recorded at steps s_0 … s_T, the measured
log-gap slope is the least-squares slope of log g against s over a fit window (see
:func:`log_gap_slope`); ``exp(slope)`` is the measured per-step contraction of the gap. SPEC §2 states
the theory rate (1 − ηβ)^t; since the gap is quadratic in the distance to π*_β
(Gap_β = 2β KL(π‖BR_β(π))), a distance contracting like ρ^t makes the gap contract like ρ^{2t}. The
local (asymptotic) prediction is the spectral radius ρ of the Jacobian of one exact update at π*_β
(:func:`linearized_rate`), giving slope 2·log ρ.

Convergence classes (:func:`classify_trajectories`), from the initial gap g_0, the tail median
g_end (median of the last 10 % of the records) and the measured slope:

    converges   the gap fell below the floor (1e-12), or g_end ≤ g_0/100 and it is still falling
    plateaus    g_end ≤ g_0/100 but no longer falling: stuck at a biased fixed point above the floor
    slow        g_end > g_0/100 but still falling: converging, too slowly for the horizon
    oscillates  neither falling nor diverging: the gap cycles or stalls (or falls too slowly to tell)
    diverges    a non-finite value (overflow) anywhere, or g_end ≥ 10·g_0

"Still falling" means the fitted log-gap line drops by at least a factor 2 over the second half of
the horizon: slope · (s_T − s_{T/2}) ≤ −log 2, with the slope of :func:`log_gap_slope`.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .algorithms import PAPER_ALGORITHMS, get_algorithm
from .simulate import SimulationResult, simulate, sweep

__all__ = [
    "CLASSES",
    "run_preset",
    "thin",
    "log_gap_slope",
    "classify_trajectories",
    "rate_table",
    "rate_map",
    "rate_sweep",
    "linearized_rate",
    "final_metrics_vs_beta",
    "horizon_tuned_exploitability",
    "summary_vs_reference",
    "conventions_table",
    "median_curves",
    "time_call",
    "time_presets",
    "time_scaling",
]

#: Convergence classes, from best to worst.
CLASSES = ("converges", "plateaus", "slow", "oscillates", "diverges")

FLOOR = 1e-12  # below this a float64 gap is rounding noise


# ----------------------------------------------------------------------------------------------------
# results


def run_preset(
    name: str,
    *,
    conventions: str = "default",
    fast: bool = False,
    iterations: int | None = None,
    runs: int | None = None,
    seed: int | None = None,
    algorithms: Sequence[str] = PAPER_ALGORITHMS,
    **options,
) -> SimulationResult:
    """Run the paper preset ``name`` (:mod:`egpo_core.presets`) with optional overrides: ``iterations``
    (else the preset's horizon, or its short one when ``fast``), ``runs`` and ``seed`` (else the
    paper's 10 games from seed 2018011309; other values draw other games, so the reference medians no
    longer apply). ``options`` go to :func:`egpo_core.simulate.simulate` (progress defaults to off)."""
    import dataclasses

    from .presets import get_preset

    preset = get_preset(name)
    changes = {k: v for k, v in (("runs", runs), ("seed", seed)) if v is not None}
    if changes:
        preset = dataclasses.replace(preset, **changes)
    options.setdefault("progress", False)
    return preset.run(algorithms, conventions=conventions, fast=fast, iterations=iterations, **options)


def thin(result: SimulationResult, max_steps: int = 1000) -> SimulationResult:
    """A copy of ``result`` keeping at most ``max_steps`` + 1 recorded steps, evenly spaced in index,
    always including the first (t = 0) and the last (t = T). Values are not averaged: each kept step
    holds the recorded value at that step (for compact tidy data files)."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    n = result.steps.size
    if n <= max_steps + 1:
        keep = np.arange(n)
    else:
        keep = np.unique(np.round(np.linspace(0, n - 1, max_steps + 1)).astype(int))
    values = {name: data[..., keep] for name, data in result.values.items()}
    settings = dict(result.settings, thinned_from=int(n))
    return SimulationResult(result.algorithms, result.configs.copy(), result.steps[keep], values, settings)


# ----------------------------------------------------------------------------------------------------
# measured rates and classes


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


def rate_table(result: SimulationResult, metric: str = "duality_gap", floor: float = FLOOR) -> pd.DataFrame:
    """One row per (config, algorithm, run): the measured slope and class of its ``metric`` curve.

    Columns: config, beta, eta, lr, mixture, seed, algorithm, run, initial, final (last record),
    slope (:func:`log_gap_slope`), rate = exp(slope) (measured per-step contraction of the gap),
    theory_slope = log(1 − ηβ) (NaN where ηβ ≥ 1), slope_ratio = slope / theory_slope (≈ 2 means the
    gap contracts like (1 − ηβ)^{2t}), class (:func:`classify_trajectories`).
    """
    data = result.values[metric]
    slopes = log_gap_slope(result.steps, data, floor)
    classes = classify_trajectories(data, result.steps, floor)
    rows = []
    for c, cfg in result.configs.iterrows():
        eta = float(f"{cfg['eta']:.12g}")  # η recomputed from lr carries rounding noise: keep grid values equal
        eta_beta = eta * float(cfg["beta"])
        theory = math.log1p(-eta_beta) if eta_beta < 1 else math.nan
        for a, alg in enumerate(result.algorithms):
            for r in range(data.shape[2]):
                slope = float(slopes[c, a, r])
                rows.append(
                    {
                        "config": int(c), "beta": float(cfg["beta"]), "eta": eta, "lr": float(cfg["lr"]),
                        "mixture": float(cfg["mixture"]), "seed": int(cfg["seed"]), "algorithm": alg, "run": r,
                        "initial": float(data[c, a, r, 0]), "final": float(data[c, a, r, -1]),
                        "slope": slope, "rate": math.exp(slope) if math.isfinite(slope) else math.nan,
                        "theory_slope": theory,
                        "slope_ratio": slope / theory if math.isfinite(theory) and theory != 0 else math.nan,
                        "class": str(classes[c, a, r]),
                    }
                )
    return pd.DataFrame(rows)


def rate_map(table: pd.DataFrame) -> pd.DataFrame:
    """Aggregate a :func:`rate_table` per (algorithm, β, η): median slope, slope_ratio and
    predicted_slope (if present), the majority class (ties go to the worse class), the fraction of
    runs in each class and the median final gap."""
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
    predict: bool = True,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`rate_table` over the grid betas × etas (exact tabular, one :func:`~egpo_core.sweep` call
    per β and side of ηβ = 1), plus the local prediction ``predicted_slope`` = 2·log ρ of
    :func:`linearized_rate` per (algorithm, β, η, run) when ``predict``.

    The Nash-MD mixture coefficient c = ηβ must lie in [0, 1]; cells with ηβ > 1 run with c = 1
    (the mixture is then π_ref itself). Runs that overflow give NaN gaps and are classed "diverges".
    """
    frames = []
    for beta in betas:
        low = [e for e in etas if e * beta <= 1.0]
        high = [e for e in etas if e * beta > 1.0]
        for group, mixture in ((low, None), (high, 1.0)):
            if not group:
                continue
            with np.errstate(all="ignore"):
                res = sweep(
                    P, ref_logits, algorithms, betas=[beta], etas=group, iterations=iterations,
                    mixture=mixture, progress=progress,
                )
            frames.append(rate_table(res))
    table = pd.concat(frames, ignore_index=True)
    if predict:
        P3 = P if P.ndim == 3 else P[None]
        ref = ref_logits if ref_logits.ndim == 2 else ref_logits[None]
        predicted = np.full(len(table), np.nan)
        for (alg, beta, eta), idx in table.groupby(["algorithm", "beta", "eta"], sort=False).groups.items():
            mixture = float(table.loc[idx[0], "mixture"])
            rho = linearized_rate(P3, ref, alg, eta=eta, beta=beta, mixture=mixture)
            runs = table.loc[idx, "run"].to_numpy()
            with np.errstate(divide="ignore"):
                predicted[np.asarray(idx)] = 2.0 * np.log(rho[runs])
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
    step: float = 1e-5,
    fixed_point_tol: float = 1e-7,
) -> np.ndarray:
    """Spectral radius ρ of the Jacobian of one exact tabular update at π*_β, per game.

    With f the algorithm's closed-form update on centered logits and θ* the logits of π*_β
    (:func:`egpo_core.equilibria.regularized_equilibrium`), J = ∂f/∂θ at θ* by central differences
    (step ``step``); ρ = max |eig J|. Near π*_β the distance contracts like ρ^t, so the log-gap slope
    tends to 2·log ρ. OMWU, whose update reads (θ_t, θ_{t−1}), is linearized on the pair:
    (θ_t, θ_{t−1}) ↦ (f(θ_t, θ_{t−1}), θ_t). MPO uses the magnet π_ref (no reset).

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
    star = regularized_equilibrium(P, ref, beta).logits
    kwargs = {}
    if alg.name in ("nash_md", "nash_md_pg") and mixture is not None:
        kwargs["mixture"] = mixture
    n = P.shape[-1]
    out = np.full(P.shape[0], np.nan)
    for r in range(P.shape[0]):
        theta = star[r] - star[r].mean()
        if alg.name == "omwu":
            def f(z, r=r):
                cur, prev = z[..., :n], z[..., n:]
                new = alg.closed_form(cur, ref[r], P[r], eta, beta, previous_logits=prev)
                return np.concatenate([new, cur - cur.mean(axis=-1, keepdims=True)], axis=-1)

            z0 = np.concatenate([theta, theta])
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


# ----------------------------------------------------------------------------------------------------
# β → 0: the original game's Nash equilibrium


def _nash_and_bias(P: np.ndarray, ref_logits: np.ndarray, betas: Iterable[float]) -> tuple[pd.DataFrame, np.ndarray]:
    """Exploitability of π*_β per (β, run) and the LP Nash equilibria."""
    from .equilibria import nash_equilibrium, regularized_equilibrium
    from .metrics import exploitability

    nash = nash_equilibrium(P)
    rows = []
    for beta in betas:
        eq = regularized_equilibrium(P, ref_logits, beta)
        expl = exploitability(P, eq.logits)
        dist = np.abs(eq.policy - nash.policy).sum(axis=-1)
        for r in range(P.shape[0]):
            rows.append({"beta": float(beta), "run": r, "equilibrium_exploitability": float(expl[r]),
                         "equilibrium_l1_to_nash": float(dist[r]), "nash_exploitability": float(nash.exploitability[r])})
    return pd.DataFrame(rows), nash.policy


def final_metrics_vs_beta(
    P: np.ndarray,
    ref_logits: np.ndarray,
    algorithms: Sequence[str] = PAPER_ALGORITHMS,
    *,
    betas: Sequence[float],
    eta: float,
    iterations: int,
    progress: bool = False,
) -> pd.DataFrame:
    """Final exploitability and duality gap after ``iterations`` exact tabular steps with step ``eta``,
    for each β (one :func:`~egpo_core.sweep` call), beside the exploitability of π*_β itself (the bias
    that remains at β > 0) and of the LP Nash equilibrium (≈ 0).

    Exploitability(π) = max_y (Pπ)_y − ½ (0 exactly at a Nash equilibrium of the original game).
    Columns: beta, eta, iterations, algorithm, run, exploitability, duality_gap,
    equilibrium_exploitability, equilibrium_l1_to_nash (‖π*_β − π_NE‖₁), nash_exploitability.
    """
    with np.errstate(all="ignore"):
        res = sweep(
            P, ref_logits, algorithms, betas=betas, etas=[eta], iterations=iterations,
            metrics=("duality_gap", "exploitability"), progress=progress,
        )
    rows = []
    expl, gap = res.values["exploitability"], res.values["duality_gap"]
    for c, cfg in res.configs.iterrows():
        for a, alg in enumerate(res.algorithms):
            for r in range(expl.shape[2]):
                rows.append({"beta": float(cfg["beta"]), "eta": float(cfg["eta"]), "iterations": int(iterations),
                             "algorithm": alg, "run": r, "exploitability": float(expl[c, a, r, -1]),
                             "duality_gap": float(gap[c, a, r, -1])})
    frame = pd.DataFrame(rows)
    bias, _ = _nash_and_bias(np.asarray(P, dtype=np.float64), np.asarray(ref_logits, dtype=np.float64), betas)
    return frame.merge(bias, on=["beta", "run"], how="left")


def horizon_tuned_exploitability(
    P: np.ndarray,
    ref_logits: np.ndarray,
    algorithms: Sequence[str] = PAPER_ALGORITHMS,
    *,
    horizons: Sequence[int],
    eta: float,
    beta_horizon: float,
    progress: bool = False,
) -> pd.DataFrame:
    """β tuned to the horizon: for each T in ``horizons`` run T exact tabular steps with
    β_T = ``beta_horizon``/T and step ``eta`` (so ηβ_T·T = η·beta_horizon: the (1 − ηβ)^T contraction
    is the same e^{−η·beta_horizon} at every T), and record the final exploitability in the original
    game. The bias of π*_{β_T} shrinks with β_T, so the exploitability should fall polynomially in T.

    Columns as :func:`final_metrics_vs_beta` plus ``horizon``.
    """
    frames = []
    for horizon in horizons:
        beta = beta_horizon / horizon
        frame = final_metrics_vs_beta(P, ref_logits, algorithms, betas=[beta], eta=eta, iterations=int(horizon),
                                      progress=progress)
        frame["horizon"] = int(horizon)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------------
# tables and curves


def summary_vs_reference(result: SimulationResult, preset: str, threshold: float = 1e-6) -> pd.DataFrame:
    """``result.summary()`` (median final gap over runs, runs reaching ``threshold``) beside the
    reference implementation's numbers of SPEC §4 (``presets.REFERENCE_MEDIANS`` / ``REFERENCE_REACHED``;
    a reached count missing there means 0 of 10 when the median is reported, e.g. "1.5e-5").

    Columns: preset, algorithm, median_final, reached, runs, reference_median, reference_reached,
    conventions, iterations.
    """
    from .presets import REFERENCE_MEDIANS, REFERENCE_REACHED

    summary = result.summary(threshold=threshold)
    ref_med = REFERENCE_MEDIANS.get(preset, {})
    ref_reached = REFERENCE_REACHED.get(preset, {})
    frame = pd.DataFrame({
        "preset": preset,
        "algorithm": summary["algorithm"],
        "median_final": summary["median_final"],
        "reached": summary["reached"],
        "runs": summary["runs"],
    })
    frame["reference_median"] = [ref_med.get(a, np.nan) for a in frame["algorithm"]]
    frame["reference_reached"] = [ref_reached.get(a, 0) if a in ref_med else np.nan for a in frame["algorithm"]]
    frame["conventions"] = result.settings.get("conventions")
    frame["iterations"] = result.settings.get("iterations")
    return frame


def conventions_table(results: Mapping[str, Mapping[str, SimulationResult]]) -> pd.DataFrame:
    """Median final gap per (setting, algorithm) under each conventions value, side by side.

    ``results[setting][conventions]`` is a :class:`SimulationResult`. Columns: setting, algorithm,
    median_<conventions> for each, reached_<conventions> for each, and ratio = median of the first
    conventions / median of the second (e.g. reference / default).
    """
    rows = []
    for setting, by_conv in results.items():
        names = list(by_conv)
        summaries = {conv: res.summary().set_index("algorithm") for conv, res in by_conv.items()}
        for alg in summaries[names[0]].index:
            row = {"setting": setting, "algorithm": alg}
            for conv in names:
                row[f"median_{conv}"] = float(summaries[conv].loc[alg, "median_final"])
                row[f"reached_{conv}"] = int(summaries[conv].loc[alg, "reached"])
            if len(names) >= 2:
                den = row[f"median_{names[1]}"]
                row["ratio"] = row[f"median_{names[0]}"] / den if den > 0 else np.inf
            rows.append(row)
    return pd.DataFrame(rows)


def median_curves(
    results: Mapping[str, SimulationResult],
    metric: str = "duality_gap",
    config: int = 0,
    window: int = 10,
    max_points: int = 400,
    algorithms: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Tidy median-over-runs curves with the inter-quartile band, for figures that compare results.

    For each ``label → result`` and algorithm: the metric is smoothed with a ``window``-record moving
    average per run, then the median, 25 % and 75 % quantiles over runs are taken at each record
    (non-finite runs are ignored; all-NaN records stay NaN) and thinned to ``max_points`` records.
    Columns: label, algorithm, step, median, q25, q75, gradient (the result's "exact"/"sampled").
    """
    frames = []
    for label, result in results.items():
        data = result.values[metric][config]
        steps = result.steps
        for a, alg in enumerate(result.algorithms):
            if algorithms is not None and alg not in algorithms:
                continue
            curves = data[a]
            x = steps
            if window > 1 and curves.shape[-1] >= window:
                kernel = np.ones(window) / window
                curves = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), -1, curves)
                x = steps[window - 1:]
            keep = np.unique(np.round(np.linspace(0, x.size - 1, min(max_points, x.size))).astype(int))
            sel = np.where(np.isfinite(curves[:, keep]), curves[:, keep], np.nan)
            with warnings.catch_warnings():  # all-NaN records (every run diverged) stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                q = np.nanquantile(sel, [0.25, 0.5, 0.75], axis=0)
            frames.append(pd.DataFrame({"label": label, "algorithm": alg, "step": x[keep],
                                        "median": q[1], "q25": q[0], "q75": q[2],
                                        "gradient": result.settings.get("gradient", "exact")}))
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------------
# timings


def time_call(fn: Callable[[], object], repeats: int = 1) -> float:
    """Best wall-clock time in seconds of ``repeats`` calls of ``fn`` (time.perf_counter)."""
    best = math.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_presets(
    names: Sequence[str] | None = None,
    *,
    fast: bool = False,
    conventions: str = "reference",
    algorithms: Sequence[str] = PAPER_ALGORITHMS,
    repeats: int = 1,
) -> pd.DataFrame:
    """Seconds to simulate each paper preset (all its runs and ``algorithms``), after one tiny warm-up
    call per policy kind so that loading the compiled kernel is not counted.

    Columns: preset, policy, gradient, iterations, runs, algorithms, seconds, trajectory_steps
    (= iterations × runs × algorithms) and us_per_trajectory_step.
    """
    from .presets import PRESETS

    names = list(PRESETS) if names is None else list(names)
    warmed = set()
    rows = []
    for name in names:
        preset = PRESETS[name]
        if preset.policy not in warmed:
            preset.run(algorithms, conventions=conventions, iterations=2, progress=False)
            warmed.add(preset.policy)
        horizon = preset.fast_iterations if fast else preset.iterations
        seconds = time_call(
            lambda: preset.run(algorithms, conventions=conventions, iterations=horizon, progress=False), repeats
        )
        work = horizon * preset.runs * len(algorithms)
        rows.append({"preset": name, "policy": preset.policy, "gradient": preset.gradient, "iterations": horizon,
                     "runs": preset.runs, "algorithms": len(algorithms), "seconds": seconds,
                     "trajectory_steps": work, "us_per_trajectory_step": seconds / work * 1e6})
    return pd.DataFrame(rows)


_SCALING_KEYS = ("num_actions", "runs", "iterations", "algorithms", "policy", "gradient")


def time_scaling(
    grid: Iterable[Mapping[str, object]],
    *,
    beta: float = 0.01,
    lr: float = 0.02,
    seed: int = 0,
    repeats: int = 1,
) -> pd.DataFrame:
    """Seconds per simulation over a grid of sizes. Each grid entry is a mapping with keys
    ``num_actions`` (N), ``runs``, ``iterations`` and optionally ``algorithms`` (default ("egpo",)),
    ``policy`` ("tabular" or "neural") and ``gradient`` ("exact" or "sampled"). Games are random
    (:func:`egpo_core.games.random_games`), π_ref logits N(0, 1).

    Other keys of an entry (e.g. a label of what the row varies) are copied into its row.
    Columns: those extra keys, num_actions, runs, iterations, algorithms, policy, gradient, seconds,
    trajectory_steps, us_per_trajectory_step.
    """
    from .games import random_games

    rows = []
    warmed = set()
    for entry in grid:
        n, runs, iterations = int(entry["num_actions"]), int(entry["runs"]), int(entry["iterations"])
        algs = tuple(entry.get("algorithms", ("egpo",)))
        policy, gradient = str(entry.get("policy", "tabular")), str(entry.get("gradient", "exact"))
        rng = np.random.default_rng(seed)
        P, ref = random_games(runs, n, rng), rng.normal(size=(runs, n))

        def call(steps: int) -> None:
            simulate(P, ref, algs, beta=beta, lr=lr, iterations=steps, policy=policy, gradient=gradient,
                     seed=seed, progress=False)

        if (policy, gradient) not in warmed:
            call(2)
            warmed.add((policy, gradient))
        seconds = time_call(lambda: call(iterations), repeats)
        work = iterations * runs * len(algs)
        extra = {k: v for k, v in entry.items() if k not in _SCALING_KEYS}
        rows.append({**extra, "num_actions": n, "runs": runs, "iterations": iterations, "algorithms": len(algs),
                     "policy": policy, "gradient": gradient, "seconds": seconds, "trajectory_steps": work,
                     "us_per_trajectory_step": seconds / work * 1e6})
    return pd.DataFrame(rows)
