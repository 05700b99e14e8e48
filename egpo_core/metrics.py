"""Metrics of a policy in the (KL-regularized) preference game.

All functions are batched: ``P`` has shape (runs, N, N) (or (N, N)), policies are given by logits of
shape (runs, N) (or (N,); any leading axes that broadcast against P's). Logits are unnormalized
log-probabilities; every metric first applies ``log_softmax``. Notation (Zhou, Fazel, Du, EGPO, 2025):

    J_β(π, π') = πᵀ P π' − β KL(π‖π_ref) + β KL(π'‖π_ref)
    BR_β(π)    = softmax(θ_ref + Pπ/β)                        (best response in the regularized game)
    Gap_β(π)   = max_π' J_β(π', π) − min_π' J_β(π, π') = 2 β KL(π ‖ BR_β(π))

Every public function validates its inputs first (``egpo_core.validation``): P is a preference
matrix, β > 0 and finite (β ≥ 0 for ``game_value``, whose β = 0 case is the original game), logits
are finite with N entries on the last axis and batch shapes that broadcast against P's. An invalid
input raises one ValueError naming it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from .validation import check_beta, check_logits, validate_preference_matrix

__all__ = [
    "policy",
    "kl_divergence",
    "game_value",
    "best_response_logits",
    "duality_gap",
    "duality_gap_brute_force",
    "exploitability",
]


def _check_batch_shapes(named_shapes: dict[str, tuple[int, ...]]) -> None:
    """The leading (batch) shapes of the arguments must broadcast together."""
    try:
        np.broadcast_shapes(*named_shapes.values())
    except ValueError:
        listed = ", ".join(f"{name} {shape}" for name, shape in named_shapes.items())
        raise ValueError(f"the batch shapes do not broadcast: {listed}") from None


def _game(P: np.ndarray, **logits: np.ndarray) -> tuple[np.ndarray, ...]:
    """Validated (P, logits…): P a preference matrix, every logits array finite with N = P.shape[-1]
    entries on its last axis, and batch shapes broadcasting with P's."""
    P = validate_preference_matrix(P)
    n = P.shape[-1]
    arrays = {name: check_logits(value, name, n) for name, value in logits.items()}
    _check_batch_shapes({"P": P.shape[:-2], **{name: a.shape[:-1] for name, a in arrays.items()}})
    return (P, *arrays.values())


def _nonnegative(values: np.ndarray) -> np.ndarray:
    """``values`` clipped at 0: for quantities ≥ 0 in exact arithmetic (KLs, gaps) whose floating-point
    sum rounds to −1e-16 near 0, which would print as a negative gap."""
    return np.maximum(values, 0.0)


def _policy(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits, axis=-1))


def _kl(logits_p: np.ndarray, logits_q: np.ndarray) -> np.ndarray:
    log_p = log_softmax(logits_p, axis=-1)
    log_q = log_softmax(logits_q, axis=-1)
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def _best_response(P: np.ndarray, logits: np.ndarray, ref: np.ndarray, beta: float) -> np.ndarray:
    return ref + np.einsum("...ij,...j->...i", P, _policy(logits)) / beta


def _game_value(P, logits_1, logits_2, ref, beta):
    win = np.einsum("...i,...ij,...j->...", _policy(logits_1), P, _policy(logits_2))
    return win - beta * _kl(logits_1, ref) + beta * _kl(logits_2, ref)


def policy(logits: np.ndarray) -> np.ndarray:
    """π = softmax(θ) along the last axis (θ finite)."""
    return _policy(check_logits(logits, "logits"))


def kl_divergence(logits_p: np.ndarray, logits_q: np.ndarray) -> np.ndarray:
    """KL(p‖q) = Σ_y p(y) [log p(y) − log q(y)], p = softmax(logits_p), q = softmax(logits_q).

    ≥ 0 (Gibbs); computed in floating point it can round to −1e-16 when p ≈ q, so it is clipped at 0
    after computing (:func:`_nonnegative`)."""
    p = check_logits(logits_p, "logits_p")
    q = check_logits(logits_q, "logits_q", p.shape[-1])
    _check_batch_shapes({"logits_p": p.shape[:-1], "logits_q": q.shape[:-1]})
    return _nonnegative(_kl(p, q))


def game_value(
    P: np.ndarray, logits_1: np.ndarray, logits_2: np.ndarray, ref_logits: np.ndarray, beta: float
) -> np.ndarray:
    """J_β(π₁, π₂) = π₁ᵀ P π₂ − β KL(π₁‖π_ref) + β KL(π₂‖π_ref): the payoff of π₁ against π₂ (β ≥ 0)."""
    P, logits_1, logits_2, ref = _game(P, logits_1=logits_1, logits_2=logits_2, ref_logits=ref_logits)
    beta = check_beta(beta, allow_zero=True)
    return _game_value(P, logits_1, logits_2, ref, beta)


def best_response_logits(
    P: np.ndarray, logits: np.ndarray, ref_logits: np.ndarray, beta: float
) -> np.ndarray:
    """Logits of BR_β(π) = argmax_π' J_β(π', π): θ_ref + Pπ/β."""
    P, logits, ref = _game(P, logits=logits, ref_logits=ref_logits)
    beta = check_beta(beta)
    return _best_response(P, logits, ref, beta)


def duality_gap(P: np.ndarray, logits: np.ndarray, ref_logits: np.ndarray, beta: float) -> np.ndarray:
    """Closed-form duality gap of the symmetric profile (π, π) in the β-regularized game.

        Gap_β(π) = 2[β log Σ_y π_ref(y) e^{(Pπ)_y/β} + β KL(π‖π_ref)] − 1 = 2 β KL(π ‖ BR_β(π)).

    The KL form (using πᵀPπ = ½) avoids the cancellation of the first form; it is ≥ 0 and zero
    only at the regularized equilibrium π*_β (clipped at 0 after computing: near π*_β the sum rounds
    to −1e-16).
    """
    P, logits, ref = _game(P, logits=logits, ref_logits=ref_logits)
    beta = check_beta(beta)
    return _nonnegative(2.0 * beta * _kl(logits, _best_response(P, logits, ref, beta)))


def duality_gap_brute_force(
    P: np.ndarray, logits: np.ndarray, ref_logits: np.ndarray, beta: float
) -> np.ndarray:
    """Gap_β(π) = max_π' J_β(π', π) − min_π' J_β(π, π'), each optimum taken from its first-order
    condition (θ_ref + Pπ/β and θ_ref − Pᵀπ/β) and evaluated with :func:`game_value`'s J_β.

    Independent of the constant-sum identity used by :func:`duality_gap`; tests compare the two.
    Not clipped: a difference of two payoffs, its rounding (either sign) is what such a comparison shows.
    """
    P, logits, ref = _game(P, logits=logits, ref_logits=ref_logits)
    beta = check_beta(beta)
    attacker = _best_response(P, logits, ref, beta)
    # min over π' of J_β(π, π') = πᵀPπ' + β KL(π'‖π_ref) + const: logits θ_ref − Pᵀπ/β.
    defender = ref - np.einsum("...ji,...j->...i", P, _policy(logits)) / beta
    return _game_value(P, attacker, logits, ref, beta) - _game_value(P, logits, defender, ref, beta)


def exploitability(P: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Exploitability in the original (β = 0) game: max_y (Pπ)_y − ½.

    Zero exactly at a Nash equilibrium of P; the symmetric duality gap of the original game is twice it.
    ≥ 0 since max_y (Pπ)_y ≥ πᵀPπ = ½; clipped at 0 after computing (rounding gives −1e-17 at equilibrium).
    """
    P, logits = _game(P, logits=logits)
    return _nonnegative(np.max(np.einsum("...ij,...j->...i", P, _policy(logits)), axis=-1) - 0.5)
