"""The options of a whole-policy loss (:class:`LossOptions`, shared by :func:`~egpo_core.losses.exact_loss`
and :func:`~egpo_core.losses.sampled_loss`), their checks, and what an algorithm's declared fields
make of them at θ_t: the anchor π_A, each opponent term's σ_k, the loss weight and the pair weights.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from ..algorithms import Algorithm, Anchor, LossFamily, Opponent, get_algorithm
from ..samplers import NormalizeOver, geometric_mixture_log_probs, mixture_normalization
from .blocks import _check_positive

__all__ = ["LossOptions", "PairDistribution"]

PairDistribution = Literal["uniform", "policy"]



def _check_algorithm(algorithm: Algorithm | str) -> Algorithm:
    algorithm = get_algorithm(algorithm)  # its fields were checked against the vocabulary when it was declared
    if not algorithm.simulated:
        raise ValueError(f"algorithm {algorithm.name!r} has a closed form only, no loss here "
                         f"(see egpo_core.algorithms.{algorithm.name})")
    if algorithm.history_length > 1:
        raise ValueError(f"algorithm {algorithm.name!r} reads a history of {algorithm.history_length} past policies, which "
                         f"the torch losses do not keep (see egpo_core.algorithms.{algorithm.name}; its language-model "
                         "form: lm_runs.rounds)")
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
