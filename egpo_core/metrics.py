"""Metrics of a policy in the (KL-regularized) preference game.

All functions are batched: ``P`` has shape (runs, N, N) (or (N, N)), policies are given by logits of
shape (runs, N) (or (N,)). Logits are unnormalized log-probabilities; every metric first applies
``log_softmax``. Notation follows SPEC §1:

    J_β(π, π') = πᵀ P π' − β KL(π‖π_ref) + β KL(π'‖π_ref)
    BR_β(π)    = softmax(θ_ref + Pπ/β)                        (best response in the regularized game)
    Gap_β(π)   = max_π' J_β(π', π) − min_π' J_β(π, π') = 2 β KL(π ‖ BR_β(π))
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

__all__ = [
    "policy",
    "kl_divergence",
    "game_value",
    "best_response_logits",
    "duality_gap",
    "duality_gap_brute_force",
    "exploitability",
]


def policy(logits: np.ndarray) -> np.ndarray:
    """π = softmax(θ) along the last axis."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64), axis=-1))


def kl_divergence(logits_p: np.ndarray, logits_q: np.ndarray) -> np.ndarray:
    """KL(p‖q) = Σ_y p(y) [log p(y) − log q(y)], p = softmax(logits_p), q = softmax(logits_q)."""
    log_p = log_softmax(np.asarray(logits_p, dtype=np.float64), axis=-1)
    log_q = log_softmax(np.asarray(logits_q, dtype=np.float64), axis=-1)
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def game_value(
    P: np.ndarray, logits_1: np.ndarray, logits_2: np.ndarray, ref_logits: np.ndarray, beta: float
) -> np.ndarray:
    """J_β(π₁, π₂) = π₁ᵀ P π₂ − β KL(π₁‖π_ref) + β KL(π₂‖π_ref): the payoff of π₁ against π₂."""
    pi_1, pi_2 = policy(logits_1), policy(logits_2)
    win = np.einsum("...i,...ij,...j->...", pi_1, P, pi_2)
    return win - beta * kl_divergence(logits_1, ref_logits) + beta * kl_divergence(logits_2, ref_logits)


def best_response_logits(
    P: np.ndarray, logits: np.ndarray, ref_logits: np.ndarray, beta: float
) -> np.ndarray:
    """Logits of BR_β(π) = argmax_π' J_β(π', π): θ_ref + Pπ/β."""
    return np.asarray(ref_logits, dtype=np.float64) + np.einsum("...ij,...j->...i", P, policy(logits)) / beta


def duality_gap(P: np.ndarray, logits: np.ndarray, ref_logits: np.ndarray, beta: float) -> np.ndarray:
    """Closed-form duality gap of the symmetric profile (π, π) in the β-regularized game.

        Gap_β(π) = 2[β log Σ_y π_ref(y) e^{(Pπ)_y/β} + β KL(π‖π_ref)] − 1 = 2 β KL(π ‖ BR_β(π)).

    The KL form (using πᵀPπ = ½) avoids the cancellation of the first form; it is ≥ 0 and zero
    only at the regularized equilibrium π*_β.
    """
    return 2.0 * beta * kl_divergence(logits, best_response_logits(P, logits, ref_logits, beta))


def duality_gap_brute_force(
    P: np.ndarray, logits: np.ndarray, ref_logits: np.ndarray, beta: float
) -> np.ndarray:
    """Gap_β(π) = max_π' J_β(π', π) − min_π' J_β(π, π'), each optimum taken from its first-order
    condition (θ_ref + Pπ/β and θ_ref − Pᵀπ/β) and evaluated with :func:`game_value`.

    Independent of the constant-sum identity used by :func:`duality_gap`; tests compare the two.
    """
    pi = policy(logits)
    attacker = best_response_logits(P, logits, ref_logits, beta)
    # min over π' of J_β(π, π') = πᵀPπ' + β KL(π'‖π_ref) + const: logits θ_ref − Pᵀπ/β.
    defender = np.asarray(ref_logits, dtype=np.float64) - np.einsum("...ji,...j->...i", P, pi) / beta
    return game_value(P, attacker, logits, ref_logits, beta) - game_value(P, logits, defender, ref_logits, beta)


def exploitability(P: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Exploitability in the original (β = 0) game: max_y (Pπ)_y − ½.

    Zero exactly at a Nash equilibrium of P; the symmetric duality gap of the original game is twice it.
    """
    return np.max(np.einsum("...ij,...j->...i", P, policy(logits)), axis=-1) - 0.5

