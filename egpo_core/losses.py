"""Every NLHF algorithm as a loss on a parametrized policy: the one regression and the PG loss.

Notation (SPEC §3, DESIGN.md): log-probabilities ``logp`` of shape (runs, N) from a policy module
(with gradient), π_t = exp(logp) detached, an anchor policy π_A, preferences P (runs, N, N) with
P[r, y, y'] = P(y ≻ y'), and

    Δ_A(y, y') = [log π_θ(y) − log π_θ(y')] − [log π_A(y) − log π_A(y')].

**Regression (loss "ipo", "ipo2").**  L = E_{(y,y')~μ} (Δ_A(y, y') − target(y, y'))², with
    target = [T_y − T_{y'}]/β,  T = P(· ≻ σ) for an opponent σ (detached), or
    target = (P(y ≻ y') − ½)/β  for the "pairwise" opponent (σ = y' itself).
μ is uniform over all N² pairs for "ipo" (one SGD step of rate lr is then the mirror-descent step
MD(π_t; σ) with ηβ = 4·lr/N) and π_t ⊗ π_t for "ipo2".

**Policy gradient (loss "pg").**  L = −Σ_y π_t(y) [T_y − β (log π_t − log π_A)(y)] log π_θ(y), the
coefficients detached, so ∇_θ L = −E_{y~π_t}[A(y) ∇ log π_θ(y)].

The algorithm's declared fields pick the pieces (never its name):

* ``opponent``: "current" σ = π_t (or ``opponent_probs``, e.g. π_{t+½} in EGPO's full step);
  "mixture" σ = π_t^c ∝ π_t^{1−c} π_ref^c with c = ``mixture`` (default ηβ); "optimistic"
  T = 2 P π_t − P π_{t−1}; "pairwise" target (P(y ≻ y') − ½)/β.
* ``anchor``: "reference" π_ref; "current" π_t (detached log π_θ); "magnet" π_mag (``magnet_logp``,
  default π_ref).
* ``loss_weight(ηβ)`` multiplies the loss (MPO's 1/(1 + ηβ)).

Reduction everywhere: the sum over runs of each run's mean over pairs/samples, so the gradient of run
r's parameters is run r's own mean gradient (runs are independent games).

Per-pair building blocks (:func:`ipo_regression_loss`, :func:`policy_gradient_loss`) take
per-response or per-sequence log-probabilities and do not reduce; the tabular/neural losses
(:func:`exact_loss`, :func:`sampled_loss`) and the language-model trainer all use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.nn import functional as F

from .algorithms import Algorithm, get_algorithm
from .samplers import NormalizeOver, categorical_indices, geometric_mixture_log_probs, uniform_indices

__all__ = [
    "ipo_regression_loss",
    "policy_gradient_loss",
    "exact_loss",
    "sampled_loss",
    "PairDistribution",
]

PairDistribution = Literal["uniform", "policy"]
_LOSSES = ("ipo", "ipo2", "pg")
_OPPONENTS = ("current", "mixture", "optimistic", "pairwise")
_ANCHORS = ("reference", "current", "magnet")


# ---------------------------------------------------------------------------------------------
# Per-pair / per-sample building blocks (no reduction)
# ---------------------------------------------------------------------------------------------


def _broadcast_shape(**tensors: torch.Tensor) -> torch.Size:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    try:
        return torch.broadcast_shapes(*shapes.values())
    except RuntimeError:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shapes do not broadcast: {described}") from None


def ipo_regression_loss(
    logp_y: torch.Tensor,
    logp_yp: torch.Tensor,
    anchor_logp_y: torch.Tensor,
    anchor_logp_yp: torch.Tensor,
    target: torch.Tensor | float,
) -> torch.Tensor:
    """Per-pair squared regression error of the (Online) IPO family, not reduced:

        (log π_θ(y) − log π_θ(y') − log π_A(y) + log π_A(y') − target)².

    Inputs broadcast together (e.g. per-sequence log-probabilities of shape (batch,)); the anchor
    log-probabilities and the target are used as given (pass them detached). A shape mismatch
    raises ``ValueError`` naming the shapes.
    """
    target = torch.as_tensor(target, dtype=logp_y.dtype, device=logp_y.device)
    _broadcast_shape(
        logp_y=logp_y, logp_yp=logp_yp, anchor_logp_y=anchor_logp_y, anchor_logp_yp=anchor_logp_yp, target=target
    )
    return (logp_y - logp_yp - anchor_logp_y + anchor_logp_yp - target) ** 2


def policy_gradient_loss(logp_y: torch.Tensor, advantage: torch.Tensor | float) -> torch.Tensor:
    """Per-sample REINFORCE surrogate, not reduced: −advantage.detach() · log π_θ(y).

    Its gradient is −A(y) ∇_θ log π_θ(y); averaged over y ~ π_θ it is −∇_θ E_{y~π_θ}[A(y)] for a
    fixed advantage A.
    """
    advantage = torch.as_tensor(advantage, dtype=logp_y.dtype, device=logp_y.device)
    _broadcast_shape(logp_y=logp_y, advantage=advantage)
    return -advantage.detach() * logp_y


# ---------------------------------------------------------------------------------------------
# Validation and the pieces an algorithm declares
# ---------------------------------------------------------------------------------------------


def _check_positive(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {name}={value!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {name}={value!r}")
    return value


def _check_algorithm(algorithm: Algorithm | str) -> Algorithm:
    algorithm = get_algorithm(algorithm)
    if algorithm.loss not in _LOSSES:
        raise ValueError(f"unknown loss family {algorithm.loss!r} of algorithm {algorithm.name!r}; known: {_LOSSES}")
    if algorithm.opponent not in _OPPONENTS:
        raise ValueError(f"unknown opponent {algorithm.opponent!r} of algorithm {algorithm.name!r}; known: {_OPPONENTS}")
    if algorithm.anchor not in _ANCHORS:
        raise ValueError(f"unknown anchor {algorithm.anchor!r} of algorithm {algorithm.name!r}; known: {_ANCHORS}")
    return algorithm


def _as_log_probs(name: str, value, like: torch.Tensor) -> torch.Tensor:
    """Detached (runs, N) log-probabilities (logits are accepted: log_softmax is applied)."""
    tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device).detach()
    if tensor.shape != like.shape:
        raise ValueError(f"{name} shape {tuple(tensor.shape)} does not match logp shape {tuple(like.shape)}")
    return F.log_softmax(tensor, dim=-1)


def _as_probs(name: str, value, like: torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device).detach()
    if tensor.shape != like.shape:
        raise ValueError(f"{name} shape {tuple(tensor.shape)} does not match logp shape {tuple(like.shape)}")
    if not torch.isfinite(tensor).all() or (tensor < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    sums = tensor.sum(dim=-1, keepdim=True)
    if (sums <= 0).any():
        raise ValueError(f"every row of {name} needs a positive sum")
    return tensor / sums


def _as_preferences(P, like: torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(P, dtype=like.dtype, device=like.device).detach()
    runs, n = like.shape
    if tensor.shape == (n, n):
        tensor = tensor.expand(runs, n, n)
    if tensor.shape != (runs, n, n):
        raise ValueError(
            f"P shape {tuple(tensor.shape)} does not match logp shape {tuple(like.shape)} (expected ({runs}, {n}, {n}))"
        )
    return tensor


@dataclass
class _Setup:
    """Everything a loss needs at θ_t, all detached except ``logp``."""

    algorithm: Algorithm
    logp: torch.Tensor  # (runs, N), with gradient
    pi: torch.Tensor  # π_t, (runs, N)
    log_pi: torch.Tensor  # log π_t, (runs, N)
    anchor: torch.Tensor  # log π_A, (runs, N)
    P: torch.Tensor  # (runs, N, N)
    beta: float
    weight: float
    # opponent as a signed combination Σ_k coef_k · σ_k (σ_k distributions over actions); empty for pairwise
    opponents: list[tuple[float, torch.Tensor]]


def _loss_weight(algorithm: Algorithm, eta_beta: float | None) -> float:
    if eta_beta is not None:
        return float(algorithm.loss_weight(eta_beta))
    low, high = float(algorithm.loss_weight(0.25)), float(algorithm.loss_weight(0.5))
    if low != high:
        raise ValueError(f"algorithm {algorithm.name!r} weights its loss by a function of ηβ: pass eta_beta")
    return low


def _setup(
    algorithm: Algorithm | str,
    logp: torch.Tensor,
    ref_logp,
    P,
    beta: float,
    *,
    opponent_probs,
    mixture: float | None,
    eta_beta: float | None,
    magnet_logp,
    previous_probs,
    mixture_normalize_over: NormalizeOver,
) -> _Setup:
    algorithm = _check_algorithm(algorithm)
    beta = _check_positive("beta", beta)
    if eta_beta is not None:
        eta_beta = _check_positive("eta_beta", eta_beta)
    if not isinstance(logp, torch.Tensor) or logp.ndim != 2:
        shape = tuple(logp.shape) if isinstance(logp, torch.Tensor) else type(logp).__name__
        raise ValueError(f"logp must be a (runs, N) tensor of log-probabilities, got {shape}")
    if mixture_normalize_over not in ("actions", "runs"):
        raise ValueError(
            f"mixture_normalize_over must be 'actions' or 'runs', got mixture_normalize_over={mixture_normalize_over!r}"
        )
    log_pi = logp.detach()
    pi = log_pi.exp()
    ref = _as_log_probs("ref_logp", ref_logp, logp)
    preferences = _as_preferences(P, logp)

    if algorithm.anchor == "reference":
        anchor = ref
    elif algorithm.anchor == "current":
        anchor = log_pi
    else:  # magnet
        anchor = ref if magnet_logp is None else _as_log_probs("magnet_logp", magnet_logp, logp)

    if opponent_probs is not None and algorithm.opponent == "pairwise":
        raise ValueError(
            f"opponent_probs has no meaning for the 'pairwise' opponent of algorithm {algorithm.name!r} "
            "(its opponent is the pair's own y')"
        )
    if opponent_probs is None:
        now, log_now = pi, log_pi
    else:
        now = _as_probs("opponent_probs", opponent_probs, logp)
        log_now = now.log()
    if algorithm.opponent == "current":
        opponents = [(1.0, now)]
    elif algorithm.opponent == "mixture":
        if mixture is None and eta_beta is None:
            raise ValueError(f"algorithm {algorithm.name!r} mixes with π_ref: pass mixture=c or eta_beta")
        c = eta_beta if mixture is None else float(mixture)
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"mixture coefficient must lie in [0, 1], got mixture={c!r}")
        mix = geometric_mixture_log_probs(log_now, ref, c, normalize_over=mixture_normalize_over).exp()
        opponents = [(1.0, mix / mix.sum(dim=-1, keepdim=True))]
    elif algorithm.opponent == "optimistic":
        previous = now if previous_probs is None else _as_probs("previous_probs", previous_probs, logp)
        opponents = [(2.0, now), (-1.0, previous)]
    else:  # pairwise
        opponents = []
    return _Setup(
        algorithm=algorithm,
        logp=logp,
        pi=pi,
        log_pi=log_pi,
        anchor=anchor,
        P=preferences,
        beta=beta,
        weight=_loss_weight(algorithm, eta_beta),
        opponents=opponents,
    )


def _pair_distribution(setup: _Setup, pair_distribution: str | None) -> str:
    if setup.algorithm.loss == "pg":
        if pair_distribution is not None:
            raise ValueError(
                f"pair_distribution does not apply to the policy-gradient loss of {setup.algorithm.name!r}, "
                f"got pair_distribution={pair_distribution!r}"
            )
        return "policy"
    if pair_distribution is None:
        return "policy" if setup.algorithm.loss == "ipo2" else "uniform"
    if pair_distribution not in ("uniform", "policy"):
        raise ValueError(f"pair_distribution must be 'uniform' or 'policy', got pair_distribution={pair_distribution!r}")
    return pair_distribution


def _potential(setup: _Setup) -> torch.Tensor:
    """T = Σ_k coef_k · P σ_k, shape (runs, N); for "pairwise", T = P π_t (used by "pg" only)."""
    opponents = setup.opponents or [(1.0, setup.pi)]
    return sum(coef * torch.einsum("rij,rj->ri", setup.P, sigma) for coef, sigma in opponents)


# ---------------------------------------------------------------------------------------------
# Exact expectations
# ---------------------------------------------------------------------------------------------


def exact_loss(
    algorithm: Algorithm | str,
    logp: torch.Tensor,
    ref_logp: torch.Tensor | np.ndarray,
    P: torch.Tensor | np.ndarray,
    beta: float,
    *,
    opponent_probs: torch.Tensor | np.ndarray | None = None,
    mixture: float | None = None,
    eta_beta: float | None = None,
    magnet_logp: torch.Tensor | np.ndarray | None = None,
    previous_probs: torch.Tensor | np.ndarray | None = None,
    mixture_normalize_over: NormalizeOver = "actions",
    pair_distribution: PairDistribution | None = None,
) -> torch.Tensor:
    """The algorithm's loss as an exact expectation over all pairs/responses (a scalar).

    With π_t = exp(logp) detached, T the opponent's preference vector (detached) and w = loss_weight(ηβ):

    * loss "ipo":  w · Σ_r (1/N²) Σ_{y,y'} (Δ_A(y,y') − [T_y − T_{y'}]/β)²
      (``pair_distribution="policy"`` weights pairs by π_t(y)π_t(y') instead of 1/N²);
    * loss "ipo2": w · Σ_r Σ_{y,y'} π_t(y)π_t(y') (Δ_A(y,y') − target(y,y'))²,
      target (P_{yy'} − ½)/β for the "pairwise" opponent, else [T_y − T_{y'}]/β;
    * loss "pg":   −w · Σ_r Σ_y π_t(y) [T_y − β(log π_t − log π_A)_y] log π_θ(y).

    T by ``algorithm.opponent``: "current" Pσ with σ = ``opponent_probs`` or π_t; "mixture" Pσ with
    σ ∝ σ_now^{1−c} π_ref^c, c = ``mixture`` (default ``eta_beta``), normalized over actions (or, with
    ``mixture_normalize_over="runs"``, the reference implementation's runs-normalized sampling
    distribution, see :func:`egpo_core.samplers.geometric_mixture_log_probs`); "optimistic"
    2Pσ_now − Pπ_{t−1} with π_{t−1} = ``previous_probs`` (default σ_now). The anchor π_A by
    ``algorithm.anchor``: ``ref_logp``, π_t, or ``magnet_logp`` (default ``ref_logp``).

    One SGD step of rate lr on the "ipo" loss of a :class:`~egpo_core.policies.TabularPolicy` is
    ``algorithm.closed_form`` with ηβ = 4·lr/N: ∇_θ = (4/N)·w·center(log π_t − log π_A − T/β).

    Args:
        algorithm: an :class:`~egpo_core.algorithms.Algorithm` (or its registry name).
        logp: (runs, N) log-probabilities of the policy being trained (with gradient).
        ref_logp: (runs, N) log-probabilities (or logits) of π_ref.
        P: (runs, N, N) (or (N, N)) preferences, P[r, y, y'] = P(y ≻ y').
        beta: β > 0.
        opponent_probs, mixture, eta_beta, magnet_logp, previous_probs: see above; options the
            algorithm does not use are ignored (``opponent_probs`` with a "pairwise" opponent raises).
        pair_distribution: override the pair weights of the regression ("uniform" or "policy");
            default "uniform" for "ipo" and "policy" for "ipo2".

    Raises:
        ValueError: β ≤ 0, unknown algorithm or field, mismatched shapes, missing ηβ/mixture.
    """
    setup = _setup(
        algorithm,
        logp,
        ref_logp,
        P,
        beta,
        opponent_probs=opponent_probs,
        mixture=mixture,
        eta_beta=eta_beta,
        magnet_logp=magnet_logp,
        previous_probs=previous_probs,
        mixture_normalize_over=mixture_normalize_over,
    )
    pairs = _pair_distribution(setup, pair_distribution)
    if setup.algorithm.loss == "pg":
        advantage = _potential(setup) - setup.beta * (setup.log_pi - setup.anchor)
        per_response = policy_gradient_loss(logp, advantage)
        return setup.weight * (setup.pi * per_response).sum()

    if setup.algorithm.opponent == "pairwise":
        target = (setup.P - 0.5) / setup.beta
    else:
        potential = _potential(setup)
        target = (potential[:, :, None] - potential[:, None, :]) / setup.beta
    per_pair = ipo_regression_loss(
        logp[:, :, None], logp[:, None, :], setup.anchor[:, :, None], setup.anchor[:, None, :], target
    )
    if pairs == "uniform":
        n = logp.shape[-1]
        return setup.weight * per_pair.sum() / (n * n)
    pair_weights = setup.pi[:, :, None] * setup.pi[:, None, :]
    return setup.weight * (pair_weights * per_pair).sum()


# ---------------------------------------------------------------------------------------------
# Sampled estimates
# ---------------------------------------------------------------------------------------------


def _pick(P: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """P[r, rows[r, s], cols[r, s]] for every run r and sample s."""
    runs = torch.arange(P.shape[0], device=P.device)[:, None]
    return P[runs, rows, cols]


def sampled_loss(
    algorithm: Algorithm | str,
    logp: torch.Tensor,
    ref_logp: torch.Tensor | np.ndarray,
    P: torch.Tensor | np.ndarray,
    beta: float,
    num_samples: int,
    generator: torch.Generator | None = None,
    *,
    opponent_probs: torch.Tensor | np.ndarray | None = None,
    mixture: float | None = None,
    eta_beta: float | None = None,
    magnet_logp: torch.Tensor | np.ndarray | None = None,
    previous_probs: torch.Tensor | np.ndarray | None = None,
    mixture_normalize_over: NormalizeOver = "actions",
    pair_distribution: PairDistribution | None = None,
) -> torch.Tensor:
    """A one-sample-per-term Monte-Carlo estimate of :func:`exact_loss` (a scalar) whose gradient is
    unbiased for the exact gradient (the loss value itself is not: the target's variance adds in).

    S = ``num_samples`` independent draws per run, the loss is w · Σ_r (1/S) Σ_s ℓ_{r,s}:

    * "ipo": y, y' ~ Uniform (``pair_distribution="uniform"``, default) or ~ π_t ("policy");
      y'' ~ σ; ℓ = (Δ_A(y,y') − [P(y,y'') − P(y',y'')]/β)². Optimistic: y'' ~ σ_now, y''' ~ π_{t−1},
      target [2(P(y,y'') − P(y',y'')) − (P(y,y''') − P(y',y'''))]/β.
    * "ipo2": y, y' ~ π_t; target (P(y,y') − ½)/β for the "pairwise" opponent (else as "ipo").
    * "pg": y ~ π_t, y' ~ σ (y'' ~ π_{t−1} when optimistic);
      ℓ = −[P(y,y') − β(log π_t − log π_A)(y)] · log π_θ(y) (advantage detached).

    Draw order from ``generator``: the pair (y then y'), then one index per opponent term. Options as
    in :func:`exact_loss`; ``mixture_normalize_over="runs"`` samples y'' from the reference
    implementation's runs-normalized mixture (a bug reproduced for its figures).
    """
    setup = _setup(
        algorithm,
        logp,
        ref_logp,
        P,
        beta,
        opponent_probs=opponent_probs,
        mixture=mixture,
        eta_beta=eta_beta,
        magnet_logp=magnet_logp,
        previous_probs=previous_probs,
        mixture_normalize_over=mixture_normalize_over,
    )
    pairs = _pair_distribution(setup, pair_distribution)
    runs, n = logp.shape
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got num_samples={num_samples!r}")

    if setup.algorithm.loss == "pg":
        y = categorical_indices(setup.pi, num_samples, generator)
        if setup.opponents:
            value = sum(
                coef * _pick(setup.P, y, categorical_indices(sigma, num_samples, generator))
                for coef, sigma in setup.opponents
            )
        else:  # pairwise: the opponent sample y' ~ π_t
            value = _pick(setup.P, y, categorical_indices(setup.pi, num_samples, generator))
        advantage = value - setup.beta * (setup.log_pi - setup.anchor).gather(1, y)
        per_sample = policy_gradient_loss(logp.gather(1, y), advantage)
        return setup.weight * per_sample.mean(dim=1).sum()

    if pairs == "uniform":
        y = uniform_indices(runs, n, num_samples, generator, device=logp.device)
        yp = uniform_indices(runs, n, num_samples, generator, device=logp.device)
    else:
        y = categorical_indices(setup.pi, num_samples, generator)
        yp = categorical_indices(setup.pi, num_samples, generator)
    if setup.opponents:
        target = 0.0
        for coef, sigma in setup.opponents:
            z = categorical_indices(sigma, num_samples, generator)
            target = target + coef * (_pick(setup.P, y, z) - _pick(setup.P, yp, z))
        target = target / setup.beta
    else:
        target = (_pick(setup.P, y, yp) - 0.5) / setup.beta
    per_sample = ipo_regression_loss(
        logp.gather(1, y), logp.gather(1, yp), setup.anchor.gather(1, y), setup.anchor.gather(1, yp), target
    )
    return setup.weight * per_sample.mean(dim=1).sum()
