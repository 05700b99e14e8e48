"""Equilibria of the preference game: the regularized equilibrium π*_β and a Nash equilibrium (β = 0).

Regularized (β > 0): π*_β is the unique fixed point

    π = softmax(θ_ref + Pπ/β),   i.e. in centered logits θ:   F(θ) = center(θ − θ_ref − P softmax(θ)/β) = 0.

It is found by damped Newton on F. With π = softmax θ and Σ = diag π − ππᵀ, the Jacobian of the
uncentered map is J = I − PΣ/β. Writing P = ½11ᵀ + S with S skew-symmetric and using Σ1 = 0,
PΣ = SΣ, whose eigenvalues are those of the skew matrix Σ^{1/2} S Σ^{1/2}, i.e. purely imaginary;
hence every eigenvalue of J is 1 − iλ ≠ 0 and J is nonsingular. Because J1 = 1, the centered Newton
step is center(J⁻¹(−F)). A backtracking line search on ‖F‖₂ makes the iteration globally
convergent (the Newton direction is a descent direction of ½‖F‖², whose only stationary points are
zeros of F).

Original game (β = 0): a Nash equilibrium solves the linear program of the symmetric zero-sum game
P − ½ (value ½):  minimize v  s.t.  Pπ ≤ v1,  1ᵀπ = 1,  π ≥ 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.special import softmax

from .metrics import duality_gap
from .validation import check_beta, check_count, check_logits, check_positive, validate_preference_matrix

__all__ = [
    "RegularizedEquilibrium",
    "NashEquilibrium",
    "regularized_equilibrium",
    "nash_equilibrium",
]


@dataclass(frozen=True, eq=False)
class RegularizedEquilibrium:
    """π*_β for a batch of games.

    Attributes:
        logits: (runs, N) centered logits θ* of π*_β.
        policy: (runs, N) π*_β = softmax θ*.
        gap: (runs,) duality gap Gap_β(π*_β) (``metrics.duality_gap``), a certificate: ≥ 0, = 0 only at
            π*_β, and gap/(2β) ≥ KL(π‖π*_β) for the returned π.
        residual: (runs,) ‖center(θ* − θ_ref − Pπ*_β/β)‖_∞.
        iterations: Newton iterations taken, summed over continuation stages (the maximum over runs
            in each stage).
    """

    logits: np.ndarray
    policy: np.ndarray
    gap: np.ndarray
    residual: np.ndarray
    iterations: int


@dataclass(frozen=True, eq=False)
class NashEquilibrium:
    """A Nash equilibrium of the original (β = 0) game for a batch of games.

    Attributes:
        policy: (runs, N) the equilibrium policy π (non-negative, sums to 1).
        exploitability: (runs,) max_y (Pπ)_y − ½ (≥ 0 up to rounding; 0 at an exact equilibrium).
    """

    policy: np.ndarray
    exploitability: np.ndarray


# Below this β the fixed point's logits (of size 1/β) exceed what damped Newton resolves in float64
# (measured on random games, N ≤ 100: β = 1e-7 reaches KL(π‖BR_β(π)) ≈ 1e-11–1e-9 in < 300
# iterations; β = 3e-8 runs out of iterations).
SMALLEST_REACHABLE_BETA = 1e-7


def _above(value: float) -> str:
    """The smallest number of two significant digits strictly above ``value`` (finite, > 0), as
    text: a tolerance quoted from it is met by ``value`` itself (``.1e`` alone may round down)."""
    mantissa, exponent = (float(part) for part in f"{value:.1e}".split("e"))
    while float(f"{mantissa:.1f}e{exponent:+03.0f}") <= value:
        mantissa = round(mantissa + 0.1, 1)
    return f"{mantissa:.1f}e{exponent:+03.0f}"


def _center(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=-1, keepdims=True)


def _residual(P: np.ndarray, theta: np.ndarray, ref: np.ndarray, beta: float) -> np.ndarray:
    """F(θ) = center(θ − θ_ref − P softmax(θ)/β), batched."""
    pi = softmax(theta, axis=-1)
    return _center(theta - ref - np.einsum("rij,rj->ri", P, pi) / beta)


def _beta_schedule(beta: float, start: float = 0.1, ratio: float = 10.0) -> list[float]:
    """Continuation path: geometric from ``start`` down to β, consecutive values at most ``ratio``
    apart (just [β] when β ≥ start)."""
    if beta >= start:
        return [beta]
    count = int(np.ceil(np.log(start / beta) / np.log(ratio) - 1e-9))
    return list(start * (beta / start) ** (np.arange(count + 1) / count))


def _damped_newton(
    P: np.ndarray, ref: np.ndarray, beta: float, theta: np.ndarray, max_iter: int
) -> tuple[np.ndarray, int]:
    """Damped Newton on F(θ) = center(θ − θ_ref − P softmax(θ)/β) from ``theta``, batched over runs.

    Returns the final θ and the number of iterations (the maximum over runs). A run stops when
    ‖F‖_∞ reaches the rounding floor 16 ε (1 + ‖θ‖_∞ + ‖θ_ref‖_∞ + √N/β), when the line search finds
    no decrease, or when a step fails to halve ‖F‖ although ‖F‖_∞ is within 10³ of that floor.
    """
    n = P.shape[-1]
    eps = np.finfo(np.float64).eps
    theta = theta.copy()
    F = _residual(P, theta, ref, beta)
    norm = np.linalg.norm(F, axis=-1)
    active = norm > 0
    eye = np.eye(n)
    iterations = 0
    while active.any() and iterations < max_iter:
        iterations += 1
        idx = np.flatnonzero(active)
        th, Fa, Pa, ra = theta[idx], F[idx], P[idx], ref[idx]
        pi = softmax(th, axis=-1)
        sigma = pi[:, :, None] * eye - pi[:, :, None] * pi[:, None, :]
        J = eye - np.matmul(Pa, sigma) / beta
        step = _center(np.linalg.solve(J, -Fa[..., None])[..., 0])
        t = np.ones(idx.size)
        pending = np.ones(idx.size, dtype=bool)
        new_theta = th.copy()
        new_F = Fa.copy()
        old_norm = norm[idx]
        for _ in range(60):
            p = np.flatnonzero(pending)
            if p.size == 0:
                break
            trial = th[p] + t[p, None] * step[p]
            F_trial = _residual(Pa[p], trial, ra[p], beta)
            n_trial = np.linalg.norm(F_trial, axis=-1)
            ok = np.isfinite(n_trial) & (n_trial <= (1.0 - 1e-4 * t[p]) * old_norm[p])
            accepted = p[ok]
            new_theta[accepted] = trial[ok]
            new_F[accepted] = F_trial[ok]
            pending[accepted] = False
            t[p[~ok]] *= 0.5
        improved = ~pending
        new_norm = np.where(improved, np.linalg.norm(new_F, axis=-1), old_norm)
        theta[idx], F[idx], norm[idx] = new_theta, new_F, new_norm
        scale = 1.0 + np.max(np.abs(new_theta), axis=-1) + np.max(np.abs(ra), axis=-1) + np.sqrt(n) / beta
        floor = 16.0 * eps * scale
        size = np.max(np.abs(new_F), axis=-1)
        stalled = (new_norm > 0.5 * old_norm) & (size <= 1e3 * floor)
        active[idx] = improved & (size > floor) & ~stalled
    return theta, iterations


def regularized_equilibrium(
    P: np.ndarray,
    ref_logits: np.ndarray,
    beta: float,
    tol: float = 1e-12,
    max_iter: int = 1000,
) -> RegularizedEquilibrium:
    """The regularized equilibrium π*_β(y) ∝ π_ref(y) exp((Pπ*_β)_y / β) of each game.

    Damped Newton on F(θ) = center(θ − θ_ref − P softmax(θ)/β), starting from θ_0 = center(θ_ref):

        δ = center(J⁻¹(−F(θ))),  J = I − PΣ/β,  Σ = diag π − ππᵀ,   θ ← θ + tδ,

    t ∈ {1, ½, ¼, …} the first with ‖F(θ + tδ)‖₂ ≤ (1 − 10⁻⁴ t)‖F(θ)‖₂. A run stops when
    ‖F‖_∞ ≤ 16 ε (1 + ‖θ‖_∞ + ‖θ_ref‖_∞ + √N/β) (the rounding floor of F, ε the float64 machine epsilon)
    or when the line search finds no decrease. For β < 0.1 the solve follows a continuation path
    β_0 = 0.1 > β_1 > … > β (ratio ≤ 10), each stage warm-started at the previous solution: from θ_ref
    directly, damped Newton needs hundreds of iterations once β ≲ 10⁻⁴ (softmax saturates), along the
    path it needs a few dozen per decade.

    Certificate (in π, not only in the gap). For any π, Gap_β(π) ≥ J_β(π*_β, π) − J_β(π, π*_β)
    = 2β KL(π‖π*_β), and Gap_β(π) = 2β KL(π‖BR_β(π)), so

        KL(π‖π*_β) ≤ KL(π‖BR_β(π)) = Gap_β(π)/(2β)        and   ‖π − π*_β‖₁ ≤ √(2 KL(π‖π*_β)).

    A run has converged when Gap_β(π)/(2β) < ``tol``: the tolerance bounds the distance to π*_β
    whatever β (a fixed bound on the gap alone would allow KL(π‖π*_β) up to tol/(2β)).

    Args:
        P: (runs, N, N) or (N, N) preference matrices.
        ref_logits: (runs, N) or (N,) finite logits of π_ref (a single (N,) is shared by all runs).
        beta: regularization β > 0 (finite). With the default ``tol``, β ≥ 10⁻⁵ solves (measured on
            random games up to N = 100); for 10⁻⁷ ≤ β < 10⁻⁵ float64 may only reach a looser ``tol``
            (the error names one); below about 10⁻⁷ the fixed point is beyond float64 (BR_β's logits
            are of size 1/β): use ``nash_equilibrium`` for the β → 0 limit.
        tol: required KL(π‖BR_β(π)) = Gap_β(π)/(2β), an upper bound on KL(π‖π*_β) (positive).
        max_iter: maximum total number of Newton iterations over all continuation stages
            (a positive integer).

    Returns a :class:`RegularizedEquilibrium` with (runs, ·) arrays ((N,)-shaped fields if both P and
    ref_logits were unbatched). Raises ValueError on invalid arguments (before solving) and
    RuntimeError naming the worst run whose certificate is ≥ ``tol`` and what to change (the solve
    does not depend on ``tol``: a tolerance it advises holds for every run of the batch).
    """
    beta = check_beta(beta)
    tol = check_positive(tol, "tol")
    max_iter = check_count(max_iter, "max_iter")
    P_in = validate_preference_matrix(P)
    P3 = P_in[None] if P_in.ndim == 2 else P_in
    runs, n = P3.shape[0], P3.shape[-1]
    ref_in = check_logits(ref_logits, "ref_logits", n)
    single = P_in.ndim == 2 and ref_in.ndim == 1
    if ref_in.ndim == 1:
        ref_in = np.broadcast_to(ref_in, (runs, n))
    if P_in.ndim == 2 and ref_in.ndim == 2:
        runs = ref_in.shape[0]
        P3 = np.broadcast_to(P3, (runs, n, n))
    if ref_in.shape != (runs, n):
        raise ValueError(
            f"ref_logits has shape {np.shape(ref_logits)}, which does not match P with shape {np.shape(P)}"
        )

    ref = _center(np.array(ref_in, dtype=np.float64))
    theta = ref.copy()
    iterations = 0
    for stage_beta in _beta_schedule(beta):  # continuation: each stage starts from the last solution
        theta, used = _damped_newton(P3, ref, stage_beta, theta, max_iter - iterations)
        iterations += used

    theta = _center(theta)
    residual = np.max(np.abs(_residual(P3, theta, ref, beta)), axis=-1)
    gap = duality_gap(P3, theta, ref, beta)
    kl_to_best_response = gap / (2.0 * beta)
    bad = np.flatnonzero(~(kl_to_best_response < tol))
    if bad.size:
        # the worst run (NaN first): advice that makes it pass makes every run of the batch pass
        r = int(bad[np.argmax(np.nan_to_num(kl_to_best_response[bad], nan=np.inf))])
        if beta < SMALLEST_REACHABLE_BETA:
            advice = (
                f"beta={beta:g} is below the range float64 resolves (about beta ≥ {SMALLEST_REACHABLE_BETA:g}: "
                "the best response's logits are of size 1/beta); use a larger beta, or nash_equilibrium(P) "
                "for the beta → 0 limit"
            )
        elif iterations >= max_iter:
            advice = f"raise max_iter (all {max_iter} iterations were used)"
        elif not np.isfinite(kl_to_best_response[r]):
            advice = "the solve overflowed (softmax saturated); use a larger beta"
        else:
            advice = (f"the solver reached float64's rounding floor; use tol > "
                      f"{_above(kl_to_best_response[r])} (the largest KL reached, run {r}'s)")
        raise RuntimeError(
            f"regularized_equilibrium did not converge for run {r} (the worst of the {bad.size} of {runs} runs "
            f"that miss tol): KL(π‖BR_β(π)) = gap/(2β) = "
            f"{kl_to_best_response[r]:.3e} ≥ tol={tol:g} (gap {gap[r]:.3e}, residual {residual[r]:.3e}, "
            f"beta={beta:g}, {iterations} iterations): {advice}"
        )
    pi = softmax(theta, axis=-1)
    if single:
        return RegularizedEquilibrium(theta[0], pi[0], gap[0], residual[0], iterations)
    return RegularizedEquilibrium(theta, pi, gap, residual, iterations)


def nash_equilibrium(P: np.ndarray) -> NashEquilibrium:
    """A Nash equilibrium of the original game of each P, by linear programming (scipy HiGHS):

        minimize v   subject to   Pπ ≤ v1,   1ᵀπ = 1,   π ≥ 0     (optimal value ½).

    The returned π is clipped at 0 and renormalized; exploitability = max_y (Pπ)_y − ½.
    Accepts (runs, N, N) or (N, N) (then the fields are unbatched). Raises RuntimeError if the LP fails.
    """
    P_in = validate_preference_matrix(P)
    P3 = P_in[None] if P_in.ndim == 2 else P_in
    runs, n = P3.shape[0], P3.shape[-1]
    c = np.zeros(n + 1)
    c[-1] = 1.0
    A_eq = np.ones((1, n + 1))
    A_eq[0, -1] = 0.0
    bounds = [(0.0, None)] * n + [(None, None)]
    policy = np.empty((runs, n))
    for r in range(runs):
        A_ub = np.hstack([P3[r], -np.ones((n, 1))])
        result = linprog(c, A_ub=A_ub, b_ub=np.zeros(n), A_eq=A_eq, b_eq=[1.0], bounds=bounds, method="highs")
        if result.status != 0:
            raise RuntimeError(f"nash_equilibrium: the LP failed for run {r}: {result.message}")
        pi = np.clip(result.x[:n], 0.0, None)
        policy[r] = pi / pi.sum()
    exploitability = np.max(np.einsum("rij,rj->ri", P3, policy), axis=-1) - 0.5
    if P_in.ndim == 2:
        return NashEquilibrium(policy[0], exploitability[0])
    return NashEquilibrium(policy, exploitability)
