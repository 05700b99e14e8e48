"""The per-pair and per-sample building blocks of every loss (no reduction): the IPO regression
(Δ_A(y, y′) − target)², the policy-gradient term −A·log π_θ(y), and the target and advantage an
algorithm's opponent terms make of judged preferences. The language-model trainer calls them on
per-sequence log-probabilities; :mod:`egpo_core.losses.expectations` on per-action ones.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..algorithms import Algorithm, get_algorithm

__all__ = [
    "ipo_regression_loss",
    "policy_gradient_loss",
    "regression_target",
    "policy_gradient_advantage",
    "anchor_mixture_logp",
    "anchored_log_ratio",
]


def _check_positive(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {name}={value!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {name}={value!r}")
    return value


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


def anchor_mixture_logp(anchor_logps: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The log-probability of a geometric mixture of anchors, up to its normaliser:

        log π_A(y) = Σ_k w_k log π_k(y),   w_k ≥ 0,   Σ_k w_k = 1 (within 1e-9),

    e.g. INPO's anchor ηβ log π_ref + (1 − ηβ) log π_t (weights (ηβ, 1 − ηβ)), COMAL's and MPO's with π_ref
    replaced by the magnet, MNPO's r log π_ref + (1 − r) Σ_j λ_j log π_{t−j}, SPPO's log π_t (one anchor,
    weight 1). Weights summing to 1 make π_A's normaliser log Σ_y Π_k π_k(y)^{w_k} ≤ 0 (Hölder) a constant that
    cancels in every pair difference Δ_A(y, y′). Summed left to right, w_0 a_0 + w_1 a_1 + …, in the anchors'
    dtype; the anchors (detached) must have one shape. ``ValueError`` (one line) for no anchors, a count
    mismatch, negative weights or weights not summing to 1."""
    anchors, weights = list(anchor_logps), [float(w) for w in weights]
    if not anchors or len(anchors) != len(weights):
        raise ValueError(f"anchor_mixture_logp needs one weight per anchor and at least one anchor, got {len(anchors)} anchors and weights={weights!r}")
    if any(not (w >= 0 and math.isfinite(w)) for w in weights) or abs(sum(weights) - 1.0) > 1e-9:
        raise ValueError(f"anchor weights must be non-negative and sum to 1, got weights={weights!r}")
    _check_same_shape(**{f"anchor_{k}": a for k, a in enumerate(anchors)})
    mixed = weights[0] * anchors[0]
    for w, a in zip(weights[1:], anchors[1:]):
        mixed = mixed + w * a
    return mixed


def anchored_log_ratio(logp: torch.Tensor, anchor_logps: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The anchored log-ratio h(y) = log π_θ(y) − Σ_k w_k log π_k(y) (:func:`anchor_mixture_logp`), not reduced,
    in at least float32. SPPO's regression on it is (h(y) − η(P̂(y ≻ π_t) − ½))² with the one anchor π_t; a pair
    regression is :func:`ipo_regression_loss` with the mixture as its anchor."""
    dtype = _loss_dtype(logp)
    mixed = anchor_mixture_logp(anchor_logps, weights)
    _check_same_shape(logp=logp, anchor=mixed)
    return logp.to(dtype) - mixed.to(dtype)


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
