"""Preference matrices and their generators.

A game is a preference matrix P with P[i, j] = P(i ≻ j) ∈ [0, 1] and P + Pᵀ = 1 (so P[i, i] = ½),
batched as an array of shape (runs, N, N) in float64. ``validate_preference_matrix`` (defined in
``egpo_core.validation``) checks one; every generator returns such a batch, already validated.
Writing P = ½ 11ᵀ + S, the matrix S is skew-symmetric: the game is the symmetric zero-sum game with
payoff S (value 0), i.e. P has value ½.

The paper's reference draws are in ``egpo_core.reference_draws``, games files in ``egpo_core.game_io``.

Generators:

    random        P_ij ~ U(0, 1) for i > j, P_ji = 1 − P_ij, P_ii = ½      (the paper's games)
    tie           P = ½ 11ᵀ
    lower_win     P_ij = 1 for i > j, 0 for i < j                          (action N−1 beats all)
    cyclic        P_ij = ½ + s/2 if j − i ∈ {1..k} mod N, ½ − s/2 if i − j ∈ {1..k} mod N, k = ⌊(N−1)/2⌋
    bradley_terry P_ij = σ(s_i − s_j)                                       (transitive)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.special import expit

from .validation import check_count, check_distribution, check_logits, validate_preference_matrix

__all__ = [
    "GAME_KINDS",
    "validate_preference_matrix",
    "random_games",
    "tie_games",
    "lower_win_games",
    "rock_paper_scissors",
    "cyclic_games",
    "bradley_terry_games",
    "mix_games",
    "make_games",
]

GAME_KINDS = ("random", "tie", "lower_win", "cyclic", "bradley_terry")


# ----------------------------------------------------------------------------------------------------
# helpers


def _rng(seed_or_rng: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if isinstance(seed_or_rng, (bool, np.bool_)) or not isinstance(seed_or_rng, (int, np.integer)):
        raise ValueError(f"seed_or_rng must be an int seed or a numpy Generator, got {seed_or_rng!r}")
    if seed_or_rng < 0:
        raise ValueError(f"seed must be non-negative, got seed={seed_or_rng}")
    return np.random.default_rng(int(seed_or_rng))


def _as_batch(P: np.ndarray) -> np.ndarray:
    return P[None] if P.ndim == 2 else P


# ----------------------------------------------------------------------------------------------------
# generators


def random_games(runs: int, num_actions: int, seed_or_rng: int | np.random.Generator) -> np.ndarray:
    """The paper's random games (Zhou, Fazel, Du 2025): for i > j, P_ij ~ U(0, 1) i.i.d.,
    P_ji = 1 − P_ij, P_ii = ½.

    Draw order: ``rng.random((runs, N(N−1)/2))``; run r's k-th draw is the k-th entry below the
    diagonal in row-major order, (1,0), (2,0), (2,1), (3,0), … (``np.tril_indices(N, -1)``). Deterministic for an int seed. Returns (runs, N, N) float64.
    """
    runs = check_count(runs, "runs")
    n = check_count(num_actions, "num_actions")
    rng = _rng(seed_or_rng)
    rows, cols = np.tril_indices(n, k=-1)
    lower = rng.random((runs, rows.size))
    P = np.full((runs, n, n), 0.5)
    P[:, rows, cols] = lower
    P[:, cols, rows] = 1.0 - lower
    return validate_preference_matrix(P)


def tie_games(runs: int, num_actions: int) -> np.ndarray:
    """Every pair ties: P = ½ 11ᵀ. Every policy is a Nash equilibrium. Returns (runs, N, N)."""
    runs = check_count(runs, "runs")
    n = check_count(num_actions, "num_actions")
    return np.full((runs, n, n), 0.5)


def lower_win_games(runs: int, num_actions: int) -> np.ndarray:
    """Higher index always wins: P_ij = 1 for i > j, 0 for i < j, ½ for i = j.

    Transitive; the unique Nash equilibrium is the pure action N−1. Returns (runs, N, N).
    """
    runs = check_count(runs, "runs")
    n = check_count(num_actions, "num_actions")
    single = np.tril(np.ones((n, n)), k=-1) + 0.5 * np.eye(n)
    return np.broadcast_to(single, (runs, n, n)).copy()


def _check_strength(strength: float) -> float:
    if not (isinstance(strength, (int, float, np.floating, np.integer)) and not isinstance(strength, bool)):
        raise ValueError(f"strength must be a number in [0, 1], got strength={strength!r}")
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got strength={strength}")
    return float(strength)


def rock_paper_scissors(runs: int = 1, strength: float = 1.0) -> np.ndarray:
    """Rock–paper–scissors with actions (rock, paper, scissors): P = ½ 11ᵀ + (strength/2) C,

        C = [[ 0, −1,  1],      rock beats scissors, paper beats rock, scissors beats paper,
             [ 1,  0, −1],      i.e. action i beats action i − 1 (mod 3).
             [−1,  1,  0]]

    C is skew-symmetric; for strength > 0 the unique Nash equilibrium is uniform. Returns (runs, 3, 3).
    (This is the transpose of ``cyclic_games(runs, 3, strength)``, where i beats i + 1.)
    """
    runs = check_count(runs, "runs")
    strength = _check_strength(strength)
    C = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
    single = 0.5 + 0.5 * strength * C
    return validate_preference_matrix(np.broadcast_to(single, (runs, 3, 3)).copy())


def cyclic_games(runs: int, num_actions: int, strength: float = 1.0) -> np.ndarray:
    """Generalized rock–paper–scissors: action i beats i+1, …, i+k (mod N), k = ⌊(N − 1)/2⌋.

        P_ij = ½ + s/2 if (j − i) mod N ∈ {1..k},   ½ − s/2 if (i − j) mod N ∈ {1..k},   ½ otherwise

    (for even N, i and i + N/2 tie). Every row of C = (P − ½)/(s/2) sums to zero, so the uniform
    policy is a Nash equilibrium; for odd N and s > 0 it is the unique one. Returns (runs, N, N).
    """
    runs = check_count(runs, "runs")
    n = check_count(num_actions, "num_actions")
    strength = _check_strength(strength)
    k = (n - 1) // 2
    offset = (np.arange(n)[None, :] - np.arange(n)[:, None]) % n  # (j − i) mod N
    C = np.zeros((n, n))
    C[(offset >= 1) & (offset <= k)] = 1.0
    C[(offset >= n - k) & (offset <= n - 1)] = -1.0
    single = 0.5 + 0.5 * strength * C
    return validate_preference_matrix(np.broadcast_to(single, (runs, n, n)).copy())


def bradley_terry_games(scores: np.ndarray) -> np.ndarray:
    """Transitive (Bradley–Terry) games from scores s of shape (runs, N) or (N,):

        P_ij = σ(s_i − s_j) = 1 / (1 + e^{−(s_i − s_j)}).

    The unique Nash equilibrium is the pure argmax of s (when it is unique). Returns (runs, N, N).
    σ is scipy's ``expit``, a scalar loop over the C library's exp (not a CPU-dispatched numpy loop).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[-1] == 0 or s.shape[0] == 0:
        raise ValueError(f"scores must have shape (runs, N) or (N,), got shape {np.shape(scores)}")
    s = check_logits(s, "scores")
    diff = s[:, :, None] - s[:, None, :]
    P = expit(diff)
    # Make P + Pᵀ = 1 exact: recompute the upper triangle as the complement of the lower one.
    rows, cols = np.tril_indices(s.shape[1], k=-1)
    P[:, cols, rows] = 1.0 - P[:, rows, cols]
    return validate_preference_matrix(P)


def mix_games(games: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Convex combination Σ_k w_k P_k of preference matrices (again a preference matrix), summed in
    index order k = 0, 1, … (no einsum/BLAS, whose order may depend on the CPU).

    ``weights`` must be non-negative, one per game, and sum to 1 (within 1e-12). Every game must have
    the same shape; (N, N) games are treated as one run. Returns (runs, N, N).
    """
    if len(games) == 0:
        raise ValueError("mix_games needs at least one game, got an empty list")
    w = check_distribution(weights, "weights", len(games))
    batches = []
    for k, game in enumerate(games):
        try:
            batch = _as_batch(validate_preference_matrix(game))
        except ValueError as exc:
            raise ValueError(f"games[{k}]: {exc}") from exc
        if batches and batch.shape != batches[0].shape:
            raise ValueError(
                f"games[{k}] has shape {batch.shape}, but games[0] has shape {batches[0].shape}"
            )
        batches.append(batch)
    mixed = w[0] * batches[0]  # Σ_k w_k P_k in index order, each product rounded: the same bits on every CPU
    for weight, batch in zip(w[1:], batches[1:]):
        mixed = mixed + weight * batch
    return validate_preference_matrix(np.clip(mixed, 0.0, 1.0))


def make_games(
    kind: str, runs: int, num_actions: int, seed: int | np.random.Generator | None = None
) -> np.ndarray:
    """Dispatch on ``kind`` ∈ GAME_KINDS = ("random", "tie", "lower_win", "cyclic", "bradley_terry").

    ``seed`` (int or Generator) is required by the random kinds ("random"; "bradley_terry" draws the
    scores s ~ N(0, 1)) and ignored by the others. Returns (runs, N, N) float64.
    """
    if kind == "random":
        if seed is None:
            raise ValueError("make_games(kind='random') needs a seed, got seed=None")
        return random_games(runs, num_actions, seed)
    if kind == "tie":
        return tie_games(runs, num_actions)
    if kind == "lower_win":
        return lower_win_games(runs, num_actions)
    if kind == "cyclic":
        return cyclic_games(runs, num_actions)
    if kind == "bradley_terry":
        if seed is None:
            raise ValueError("make_games(kind='bradley_terry') needs a seed, got seed=None")
        runs = check_count(runs, "runs")
        n = check_count(num_actions, "num_actions")
        return bradley_terry_games(_rng(seed).standard_normal((runs, n)))
    raise ValueError(f"unknown game kind {kind!r}; expected one of {', '.join(GAME_KINDS)}")
