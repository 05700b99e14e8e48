"""Every NLHF algorithm as a loss on a parametrized policy: the one regression and the PG loss.

Notation (the EGPO paper's, as losses): log-probabilities ``logp`` of shape (runs, N) from a policy module
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
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from .algorithms import Algorithm, Anchor, LossFamily, Opponent, get_algorithm
from .samplers import NormalizeOver, categorical_indices, geometric_mixture_log_probs, mixture_normalization, uniform_indices

__all__ = [
    "ipo_regression_loss",
    "policy_gradient_loss",
    "regression_target",
    "policy_gradient_advantage",
    "exact_loss",
    "sampled_loss",
    "LossOptions",
    "PairDistribution",
]

PairDistribution = Literal["uniform", "policy"]


# ---------------------------------------------------------------------------------------------
# Per-pair / per-sample building blocks (no reduction)
# ---------------------------------------------------------------------------------------------


def _check_same_shape(**tensors: torch.Tensor) -> torch.Size:
    """Per-pair/per-sequence inputs must agree exactly: broadcasting a (B,) log-probability against a
    (B, 1) target would silently build a (B, B) loss."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"inputs must have one shape (no broadcasting), got {described}")
    return next(iter(tensors.values())).shape


def _loss_dtype(tensor: torch.Tensor) -> torch.dtype:
    """At least float32: a bf16/fp16 model's log-probabilities are upcast before squaring."""
    return torch.promote_types(tensor.dtype, torch.float32)


def _as_like(value: torch.Tensor | float, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(dtype)
    return torch.full(like.shape, float(value), dtype=dtype, device=like.device)


def ipo_regression_loss(
    logp_y: torch.Tensor,
    logp_yp: torch.Tensor,
    anchor_logp_y: torch.Tensor,
    anchor_logp_yp: torch.Tensor,
    target: torch.Tensor | float,
) -> torch.Tensor:
    """Per-pair squared regression error of the (Online) IPO family, not reduced:

        (log π_θ(y) − log π_θ(y') − log π_A(y) + log π_A(y') − target)².

    All tensors have one shape (e.g. per-sequence log-probabilities of shape (batch,)); a float
    target stands for a constant. No broadcasting: a shape mismatch raises ``ValueError`` naming the
    shapes. Computed in at least float32. The anchor log-probabilities and the target are used as
    given (pass them detached).
    """
    dtype = _loss_dtype(logp_y)
    target = _as_like(target, logp_y, dtype)
    _check_same_shape(
        logp_y=logp_y, logp_yp=logp_yp, anchor_logp_y=anchor_logp_y, anchor_logp_yp=anchor_logp_yp, target=target
    )
    contrast = logp_y.to(dtype) - logp_yp.to(dtype) - anchor_logp_y.to(dtype) + anchor_logp_yp.to(dtype)
    return (contrast - target) ** 2


def policy_gradient_loss(logp_y: torch.Tensor, advantage: torch.Tensor | float) -> torch.Tensor:
    """Per-sample REINFORCE surrogate, not reduced: −advantage.detach() · log π_θ(y).

    Its gradient is −A(y) ∇_θ log π_θ(y); averaged over y ~ π_θ it is −∇_θ E_{y~π_θ}[A(y)] for a
    fixed advantage A. Same shapes required (no broadcasting); computed in at least float32.
    """
    dtype = _loss_dtype(logp_y)
    advantage = _as_like(advantage, logp_y, dtype)
    _check_same_shape(logp_y=logp_y, advantage=advantage)
    return -advantage.detach() * logp_y.to(dtype)


def _check_wins(algorithm: Algorithm, **wins: torch.Tensor) -> torch.Tensor:
    """The coefficients c_k of the algorithm's opponent terms, checked against wins[..., k]."""
    terms = algorithm.opponent_terms
    for name, tensor in wins.items():
        if not isinstance(tensor, torch.Tensor) or tensor.ndim < 1 or tensor.shape[-1] != len(terms):
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(
                f"{name} must have a last axis of {len(terms)} (one per opponent term of {algorithm.name!r}: "
                f"{', '.join(t.source for t in terms)}), got shape {shape}"
            )
    _check_same_shape(**wins)
    like = next(iter(wins.values()))
    return torch.tensor([t.coefficient for t in terms], dtype=_loss_dtype(like), device=like.device)


def regression_target(
    algorithm: Algorithm | str, wins_y: torch.Tensor, wins_yp: torch.Tensor, beta: float
) -> torch.Tensor:
    """The algorithm's regression target from per-response preference estimates:

        target = Σ_k c_k [P(y ≻ z_k) − P(y′ ≻ z_k)] / β,

    with (c_k, source of z_k) = ``algorithm.opponent_terms`` and ``wins_y[..., k]`` = P(y ≻ z_k)
    (exact expectations over z_k, or one sampled z_k), likewise ``wins_yp``. For a ``"pair"`` term
    z = y′, so pass P(y ≻ y′) and ½. Examples: Online IPO 1 / EGPO / Nash-MD [P(y≻y″) − P(y′≻y″)]/β;
    Online IPO 2 (P(y≻y′) − ½)/β; OMWU [2(P(y≻y″) − P(y′≻y″)) − (P(y≻y‴) − P(y′≻y‴))]/β.
    Returns shape ``wins_y.shape[:-1]``, in at least float32.
    """
    algorithm = get_algorithm(algorithm)
    beta = _check_positive("beta", beta)
    coefficients = _check_wins(algorithm, wins_y=wins_y, wins_yp=wins_yp)
    dtype = coefficients.dtype
    return ((wins_y.to(dtype) - wins_yp.to(dtype)) * coefficients).sum(dim=-1) / beta


def policy_gradient_advantage(
    algorithm: Algorithm | str, wins_y: torch.Tensor, log_ratio_y: torch.Tensor, beta: float
) -> torch.Tensor:
    """The policy-gradient family's advantage: A(y) = Σ_k c_k P(y ≻ z_k) − β (log π_t − log π_A)(y).

    ``wins_y[..., k]`` = P(y ≻ z_k) for the opponent terms (Nash-MD-PG: one z ~ π_t^c);
    ``log_ratio_y`` = log π_t(y) − log π_A(y), shape ``wins_y.shape[:-1]``. Detached inputs expected.
    """
    algorithm = get_algorithm(algorithm)
    beta = _check_positive("beta", beta)
    coefficients = _check_wins(algorithm, wins_y=wins_y)
    dtype = coefficients.dtype
    _check_same_shape(value=wins_y[..., 0], log_ratio_y=log_ratio_y)
    return (wins_y.to(dtype) * coefficients).sum(dim=-1) - beta * log_ratio_y.to(dtype)


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
    return get_algorithm(algorithm)  # its fields were checked against the vocabulary when it was declared


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


@dataclass(frozen=True)
class LossOptions:
    """The options :func:`exact_loss` and :func:`sampled_loss` share, each documented here once; both
    take them as keywords (``exact_loss(..., eta_beta=0.1)``) or as ``options=LossOptions(...)``.
    Options the algorithm does not use are ignored (``opponent_probs`` with a "pairwise" opponent
    raises).

    Attributes:
        opponent_probs: (runs, N) probabilities of σ_now, the policy the opponent is taken at;
            default π_t (EGPO's full step passes π_{t+½}). "current": σ = σ_now; "mixture":
            σ ∝ σ_now^{1−c} π_ref^c; "optimistic": T = 2Pσ_now − Pπ_{t−1}.
        mixture: the mixture coefficient c ∈ [0, 1] of the "mixture" opponent (default ``eta_beta``).
        eta_beta: ηβ, for the loss weight w = ``loss_weight(ηβ)`` (MPO's 1/(1+ηβ)) and the default c.
        magnet_logp: (runs, N) log-probabilities of the "magnet" anchor π_mag (default ``ref_logp``).
        previous_probs: (runs, N) probabilities of π_{t−1} for the "optimistic" opponent (default σ_now).
        mixture_normalize_over: "actions" (a distribution per run), or "runs": the reference
            implementation's runs-normalized mixture (:func:`egpo_core.samplers.geometric_mixture_log_probs`),
            a bug reproduced for its figures.
        pair_distribution: the pair weights of the regression: "uniform" (the default of "ipo") or
            "policy", π_t(y)π_t(y′) (the definition of "ipo2"; "uniform" with "ipo2" raises). Not for "pg".
    """

    opponent_probs: torch.Tensor | np.ndarray | None = None
    mixture: float | None = None
    eta_beta: float | None = None
    magnet_logp: torch.Tensor | np.ndarray | None = None
    previous_probs: torch.Tensor | np.ndarray | None = None
    mixture_normalize_over: NormalizeOver = "actions"
    pair_distribution: PairDistribution | None = None

    @classmethod
    def merge(cls, options: "LossOptions | None", values: dict[str, Any]) -> "LossOptions":
        """``options`` (default: all defaults) with the keyword ``values`` replacing its fields; an
        unknown keyword raises ``TypeError`` naming it."""
        base = cls() if options is None else options
        if not isinstance(base, cls):
            raise TypeError(f"options must be a LossOptions, got {type(options).__name__}")
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            known = ", ".join(f.name for f in fields(cls))
            raise TypeError(f"unknown loss option(s) {', '.join(unknown)}; known: {known}")
        return replace(base, **values) if values else base


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
    # σ_k of each of the algorithm's opponent terms (distributions over actions); None for a "pair" term
    opponents: list[torch.Tensor | None]


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
    options: LossOptions,
) -> _Setup:
    opponent_probs, mixture, eta_beta = options.opponent_probs, options.mixture, options.eta_beta
    magnet_logp, previous_probs = options.magnet_logp, options.previous_probs
    mixture_normalize_over = options.mixture_normalize_over
    algorithm = _check_algorithm(algorithm)
    beta = _check_positive("beta", beta)
    if eta_beta is not None:
        eta_beta = _check_positive("eta_beta", eta_beta)
    if not isinstance(logp, torch.Tensor) or logp.ndim != 2:
        shape = tuple(logp.shape) if isinstance(logp, torch.Tensor) else type(logp).__name__
        raise ValueError(f"logp must be a (runs, N) tensor of log-probabilities, got {shape}")
    mixture_normalize_over = mixture_normalization("mixture_normalize_over", mixture_normalize_over)
    log_pi = logp.detach()
    pi = log_pi.exp()
    ref = _as_log_probs("ref_logp", ref_logp, logp)
    preferences = _as_preferences(P, logp)

    if algorithm.anchor is Anchor.REFERENCE:
        anchor = ref
    elif algorithm.anchor is Anchor.CURRENT:
        anchor = log_pi
    else:  # magnet
        anchor = ref if magnet_logp is None else _as_log_probs("magnet_logp", magnet_logp, logp)

    if opponent_probs is not None and algorithm.opponent is Opponent.PAIRWISE:
        raise ValueError(
            f"opponent_probs has no meaning for the 'pairwise' opponent of algorithm {algorithm.name!r} "
            "(its opponent is the pair's own y')"
        )
    if opponent_probs is None:
        now, log_now = pi, log_pi
    else:
        now = _as_probs("opponent_probs", opponent_probs, logp)
        log_now = now.log()

    def distribution(source: str) -> torch.Tensor | None:
        """σ of one opponent term; None for "pair" (z = y' itself)."""
        if source == "current":
            return now
        if source == "mixture":
            if mixture is None and eta_beta is None:
                raise ValueError(f"algorithm {algorithm.name!r} mixes with π_ref: pass mixture=c or eta_beta")
            c = eta_beta if mixture is None else float(mixture)
            if not 0.0 <= c <= 1.0:
                raise ValueError(f"mixture coefficient must lie in [0, 1], got mixture={c!r}")
            mix = geometric_mixture_log_probs(log_now, ref, c, normalize_over=mixture_normalize_over).exp()
            return mix / mix.sum(dim=-1, keepdim=True)
        if source == "previous":
            return now if previous_probs is None else _as_probs("previous_probs", previous_probs, logp)
        return None

    opponents = [distribution(term.source) for term in algorithm.opponent_terms]
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
    if setup.algorithm.loss is LossFamily.PG:
        if pair_distribution is not None:
            raise ValueError(
                f"pair_distribution does not apply to the policy-gradient loss of {setup.algorithm.name!r}, "
                f"got pair_distribution={pair_distribution!r}"
            )
        return "policy"
    if pair_distribution is None:
        return "policy" if setup.algorithm.loss is LossFamily.IPO2 else "uniform"
    if pair_distribution not in ("uniform", "policy"):
        raise ValueError(f"pair_distribution must be 'uniform' or 'policy', got pair_distribution={pair_distribution!r}")
    if setup.algorithm.loss is LossFamily.IPO2 and pair_distribution == "uniform":
        raise ValueError(
            f"pair_distribution='uniform' contradicts loss 'ipo2' of {setup.algorithm.name!r}, whose pairs are "
            "y, y′ ~ π_t by definition (uniform pairs are loss 'ipo')"
        )
    return pair_distribution


def _term_potentials(setup: _Setup) -> torch.Tensor:
    """(P σ_k)_y for every opponent term k, shape (runs, N, K); a "pair" term (z = y') contributes
    P π_t, its meaning for the policy-gradient loss (the opponent sample z ~ π_t)."""
    return torch.stack(
        [torch.einsum("rij,rj->ri", setup.P, setup.pi if sigma is None else sigma) for sigma in setup.opponents],
        dim=-1,
    )


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
    options: LossOptions | None = None,
    **option_values: Any,
) -> torch.Tensor:
    """The algorithm's loss as an exact expectation over all pairs/responses (a scalar).

    With π_t = exp(logp) detached, T the opponent's preference vector (detached) and w = loss_weight(ηβ):

    * loss "ipo":  w · Σ_r (1/N²) Σ_{y,y'} (Δ_A(y,y') − [T_y − T_{y'}]/β)²
      (``pair_distribution="policy"`` weights pairs by π_t(y)π_t(y') instead of 1/N²);
    * loss "ipo2": w · Σ_r Σ_{y,y'} π_t(y)π_t(y') (Δ_A(y,y') − target(y,y'))²,
      target (P_{yy'} − ½)/β for the "pairwise" opponent, else [T_y − T_{y'}]/β;
    * loss "pg":   −w · Σ_r Σ_y π_t(y) [T_y − β(log π_t − log π_A)_y] log π_θ(y).

    T by ``algorithm.opponent`` and the anchor π_A by ``algorithm.anchor`` (``ref_logp``, π_t, or
    π_mag), with the :class:`LossOptions`.

    One SGD step of rate lr on the "ipo" loss of a tabular policy (free logits θ, log π = log_softmax θ) is
    ``algorithm.closed_form`` with ηβ = 4·lr/N: ∇_θ = (4/N)·w·center(log π_t − log π_A − T/β).

    Args:
        algorithm: an :class:`~egpo_core.algorithms.Algorithm` (or its registry name).
        logp: (runs, N) log-probabilities of the policy being trained (with gradient).
        ref_logp: (runs, N) log-probabilities (or logits) of π_ref.
        P: (runs, N, N) (or (N, N)) preferences, P[r, y, y'] = P(y ≻ y').
        beta: β > 0.
        options, option_values: the :class:`LossOptions` (``opponent_probs``, ``mixture``,
            ``eta_beta``, ``magnet_logp``, ``previous_probs``, ``mixture_normalize_over``,
            ``pair_distribution``), as an object and/or as keywords (keywords win).

    Raises:
        ValueError: β ≤ 0, unknown algorithm or field, mismatched shapes, missing ηβ/mixture.
    """
    options = LossOptions.merge(options, option_values)
    setup = _setup(algorithm, logp, ref_logp, P, beta, options)
    pairs = _pair_distribution(setup, options.pair_distribution)
    alg = setup.algorithm
    if alg.loss is LossFamily.PG:
        advantage = policy_gradient_advantage(alg, _term_potentials(setup), setup.log_pi - setup.anchor, setup.beta)
        per_response = policy_gradient_loss(logp, advantage)
        return setup.weight * (setup.pi * per_response).sum()

    runs, n = logp.shape
    grid = (runs, n, n, len(setup.opponents))
    potentials = _term_potentials(setup)
    wins_y = potentials[:, :, None, :].expand(grid).clone()  # [r, y, y', k] = P(y ≻ σ_k)
    wins_yp = potentials[:, None, :, :].expand(grid).clone()  # [r, y, y', k] = P(y' ≻ σ_k)
    for k, term in enumerate(alg.opponent_terms):
        if term.source == "pair":  # z = y': P(y ≻ y') and P(y' ≻ y') = ½
            wins_y[..., k] = setup.P
            wins_yp[..., k] = 0.5
    target = regression_target(alg, wins_y, wins_yp, setup.beta)
    pairs_shape = grid[:3]
    per_pair = ipo_regression_loss(
        logp[:, :, None].expand(pairs_shape),
        logp[:, None, :].expand(pairs_shape),
        setup.anchor[:, :, None].expand(pairs_shape),
        setup.anchor[:, None, :].expand(pairs_shape),
        target,
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
    options: LossOptions | None = None,
    **option_values: Any,
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

    Draw order from ``generator``: the pair (y then y'), then one index per opponent term. Options
    (:class:`LossOptions`) as in :func:`exact_loss`; ``mixture_normalize_over="runs"`` samples y''
    from the reference implementation's runs-normalized mixture.
    """
    options = LossOptions.merge(options, option_values)
    setup = _setup(algorithm, logp, ref_logp, P, beta, options)
    pairs = _pair_distribution(setup, options.pair_distribution)
    runs, n = logp.shape
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got num_samples={num_samples!r}")

    alg = setup.algorithm
    if alg.loss is LossFamily.PG:
        y = categorical_indices(setup.pi, num_samples, generator)
        # one opponent sample per term; a "pair" term's opponent is y' ~ π_t
        wins = torch.stack(
            [
                _pick(setup.P, y, categorical_indices(setup.pi if sigma is None else sigma, num_samples, generator))
                for sigma in setup.opponents
            ],
            dim=-1,
        )
        advantage = policy_gradient_advantage(alg, wins, (setup.log_pi - setup.anchor).gather(1, y), setup.beta)
        per_sample = policy_gradient_loss(logp.gather(1, y), advantage)
        return setup.weight * per_sample.mean(dim=1).sum()

    if pairs == "uniform":
        y = uniform_indices(runs, n, num_samples, generator, device=logp.device)
        yp = uniform_indices(runs, n, num_samples, generator, device=logp.device)
    else:
        y = categorical_indices(setup.pi, num_samples, generator)
        yp = categorical_indices(setup.pi, num_samples, generator)
    wins_y, wins_yp = [], []
    for sigma in setup.opponents:
        if sigma is None:  # z = y': P(y ≻ y') and P(y' ≻ y') = ½
            wins_y.append(_pick(setup.P, y, yp))
            wins_yp.append(torch.full_like(wins_y[-1], 0.5))
        else:
            z = categorical_indices(sigma, num_samples, generator)
            wins_y.append(_pick(setup.P, y, z))
            wins_yp.append(_pick(setup.P, yp, z))
    target = regression_target(alg, torch.stack(wins_y, dim=-1), torch.stack(wins_yp, dim=-1), setup.beta)
    per_sample = ipo_regression_loss(
        logp.gather(1, y), logp.gather(1, yp), setup.anchor.gather(1, y), setup.anchor.gather(1, yp), target
    )
    return setup.weight * per_sample.mean(dim=1).sum()
