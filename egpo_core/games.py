"""Preference matrices: validation, generators, the paper's reference draws, and a plain file format.

A game is a preference matrix P with P[i, j] = P(i ≻ j) ∈ [0, 1] and P + Pᵀ = 1 (so P[i, i] = ½),
batched as an array of shape (runs, N, N) in float64 (SPEC §1, §4). Every generator returns such a
batch, already validated. Writing P = ½ 11ᵀ + S, the matrix S = P − ½ 11ᵀ is skew-symmetric; the
game is the symmetric zero-sum game with payoff S (value 0), i.e. P has value ½.

Generators:

    random        P_ij ~ U(0, 1) for i > j, P_ji = 1 − P_ij, P_ii = ½      (the paper's games)
    tie           P = ½ 11ᵀ
    lower_win     P_ij = 1 for i > j, 0 for i < j                          (action N−1 beats all)
    cyclic        P_ij = ½ + s/2 if j − i ∈ {1..k} mod N, ½ − s/2 if i − j ∈ {1..k} mod N, k = ⌊(N−1)/2⌋
    bradley_terry P_ij = σ(s_i − s_j)                                       (transitive)
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.special import expit

__all__ = [
    "GAME_KINDS",
    "GameInstances",
    "validate_preference_matrix",
    "random_games",
    "tie_games",
    "lower_win_games",
    "rock_paper_scissors",
    "cyclic_games",
    "bradley_terry_games",
    "mix_games",
    "make_games",
    "reference_instances",
    "network_logits",
    "save_games",
    "load_games",
]

GAME_KINDS = ("random", "tie", "lower_win", "cyclic", "bradley_terry")


# ----------------------------------------------------------------------------------------------------
# helpers


def _fmt(x: float) -> str:
    """Compact number for error messages: 1.2, 1e-9, nan."""
    text = f"{float(x):.12g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else ""
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return text


def _entry(index: tuple[int, ...]) -> str:
    """'P[3, 1]' for a single matrix, 'P[run 2, 3, 1]' for a batch."""
    if len(index) == 3:
        return f"P[run {index[0]}, {index[1]}, {index[2]}]"
    return f"P[{index[0]}, {index[1]}]"


def _check_count(value: object, name: str, minimum: int = 1) -> int:
    """An integer ≥ ``minimum`` (bools rejected)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {name}={value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {name}={value}")
    return int(value)


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
# validation


def validate_preference_matrix(P: np.ndarray, atol: float = 1e-9) -> np.ndarray:
    """Check that P is a (batch of) preference matrices and return it as float64.

    Conditions, checked in this order (the first violated entry, in C order, is named):
        P.ndim ∈ {2, 3}, P.shape[-1] = P.shape[-2] ≥ 1, every entry finite,
        −atol ≤ P_ij ≤ 1 + atol,   |P_ij + P_ji − 1| ≤ atol   (hence |P_ii − ½| ≤ atol/2).

    Returns a float64 array of the same shape ((N, N) or (runs, N, N)); raises ValueError otherwise.
    """
    try:
        arr = np.asarray(P, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"P must be a numeric array, got {type(P).__name__}: {exc}") from exc
    if not (isinstance(atol, (int, float, np.floating)) and math.isfinite(atol) and atol >= 0):
        raise ValueError(f"atol must be a finite non-negative number, got atol={atol!r}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"P must have shape (N, N) or (runs, N, N), got shape {arr.shape}")
    if arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"P must be square in its last two axes, got shape {arr.shape}")
    if arr.shape[-1] == 0 or arr.size == 0:
        raise ValueError(f"P must have at least one run and one action, got shape {arr.shape}")

    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        raise ValueError(f"{_entry(idx)} = {_fmt(arr[idx])} is not finite")

    bad = np.argwhere((arr < -atol) | (arr > 1.0 + atol))
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        raise ValueError(f"{_entry(idx)} = {_fmt(arr[idx])} is outside [0, 1]")

    total = arr + np.swapaxes(arr, -1, -2)
    bad = np.argwhere(np.abs(total - 1.0) > atol)
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        mirror = idx[:-2] + (idx[-1], idx[-2])
        raise ValueError(
            f"{_entry(idx)} + {_entry(mirror)} = {_fmt(total[idx])}, must be 1 (within {_fmt(atol)})"
        )
    return arr


# ----------------------------------------------------------------------------------------------------
# generators


def random_games(runs: int, num_actions: int, seed_or_rng: int | np.random.Generator) -> np.ndarray:
    """The paper's random games (SPEC §4): for i > j, P_ij ~ U(0, 1) i.i.d., P_ji = 1 − P_ij, P_ii = ½.

    The strictly lower triangle of each run is filled row by row (``np.tril_indices(N, -1)`` order)
    from ``rng.random((runs, N(N−1)/2))``. Deterministic for an int seed. Returns (runs, N, N) float64.
    """
    runs = _check_count(runs, "runs")
    n = _check_count(num_actions, "num_actions")
    rng = _rng(seed_or_rng)
    rows, cols = np.tril_indices(n, k=-1)
    lower = rng.random((runs, rows.size))
    P = np.full((runs, n, n), 0.5)
    P[:, rows, cols] = lower
    P[:, cols, rows] = 1.0 - lower
    return validate_preference_matrix(P)


def tie_games(runs: int, num_actions: int) -> np.ndarray:
    """Every pair ties: P = ½ 11ᵀ. Every policy is a Nash equilibrium. Returns (runs, N, N)."""
    runs = _check_count(runs, "runs")
    n = _check_count(num_actions, "num_actions")
    return np.full((runs, n, n), 0.5)


def lower_win_games(runs: int, num_actions: int) -> np.ndarray:
    """Higher index always wins: P_ij = 1 for i > j, 0 for i < j, ½ for i = j.

    Transitive; the unique Nash equilibrium is the pure action N−1. Returns (runs, N, N).
    """
    runs = _check_count(runs, "runs")
    n = _check_count(num_actions, "num_actions")
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
    runs = _check_count(runs, "runs")
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
    runs = _check_count(runs, "runs")
    n = _check_count(num_actions, "num_actions")
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
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[-1] == 0 or s.shape[0] == 0:
        raise ValueError(f"scores must have shape (runs, N) or (N,), got shape {np.shape(scores)}")
    bad = np.argwhere(~np.isfinite(s))
    if bad.size:
        r, i = (int(v) for v in bad[0])
        raise ValueError(f"scores[{r}, {i}] = {_fmt(s[r, i])} is not finite")
    diff = s[:, :, None] - s[:, None, :]
    P = expit(diff)
    # Make P + Pᵀ = 1 exact: recompute the upper triangle as the complement of the lower one.
    rows, cols = np.tril_indices(s.shape[1], k=-1)
    P[:, cols, rows] = 1.0 - P[:, rows, cols]
    return validate_preference_matrix(P)


def mix_games(games: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Convex combination Σ_k w_k P_k of preference matrices (again a preference matrix).

    ``weights`` must be non-negative, one per game, and sum to 1 (within 1e-12). Every game must have
    the same shape; (N, N) games are treated as one run. Returns (runs, N, N).
    """
    if len(games) == 0:
        raise ValueError("mix_games needs at least one game, got an empty list")
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size != len(games):
        raise ValueError(f"weights must be a list of {len(games)} numbers (one per game), got shape {w.shape}")
    for k, wk in enumerate(w):
        if not np.isfinite(wk) or wk < 0:
            raise ValueError(f"weights[{k}] = {_fmt(wk)} must be finite and non-negative")
    if abs(w.sum() - 1.0) > 1e-12:
        raise ValueError(f"weights must sum to 1, got sum(weights) = {w.sum()!r}")
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
    mixed = np.einsum("k,kris->ris", w, np.stack(batches))
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
        runs = _check_count(runs, "runs")
        n = _check_count(num_actions, "num_actions")
        return bradley_terry_games(_rng(seed).standard_normal((runs, n)))
    raise ValueError(f"unknown game kind {kind!r}; expected one of {', '.join(GAME_KINDS)}")


# ----------------------------------------------------------------------------------------------------
# the paper's reference draws


@dataclass(frozen=True, eq=False)
class GameInstances:
    """Games and reference policies as drawn by the paper's reference implementation.

    Attributes:
        P: (runs, N, N) float64 preference matrices.
        ref_logits: (runs, N) float64 logits of π_ref.
        network: ``None`` for tabular policies; for neural ones a dict with ``"input"`` (runs, hidden),
            ``"weights"`` [W_1, …, W_depth] (W_l of shape (out, in), the last (N, hidden)) and
            ``"biases"`` [b_1, …, b_depth] (zeros), all float64. The weights are shared by all runs,
            only the input differs; ``ref_logits == network_logits(network)``.
    """

    P: np.ndarray
    ref_logits: np.ndarray
    network: dict | None = None


def network_logits(network: dict) -> np.ndarray:
    """Forward pass of the reference network, in float64:

        h_0 = v,  h_l = ReLU(W_l h_{l−1} + b_l) (l < depth),  logits = W_depth h_{depth−1} + b_depth,

    batched over the rows of ``network["input"]`` (runs, hidden); the weights are shared by all runs
    (W of shape (out, in)) or given per run ((runs, out, in)). Returns (runs, N).
    """
    h = np.asarray(network["input"], dtype=np.float64)
    weights, biases = network["weights"], network["biases"]
    if len(weights) != len(biases) or not weights:
        raise ValueError(f"network needs as many biases as weights, got {len(weights)} and {len(biases)}")
    for layer, (W, b) in enumerate(zip(weights, biases)):
        # W is (out, in), shared by all runs, or (runs, out, in), one per run.
        h = np.einsum("...oi,...i->...o", np.asarray(W, dtype=np.float64), h) + np.asarray(b, dtype=np.float64)
        if layer < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return h


def reference_instances(
    seed: int,
    runs: int = 10,
    num_actions: int = 10,
    policy: str = "tabular",
    hidden_dim: int = 10,
    depth: int = 3,
) -> GameInstances:
    """Reproduce the random draws of the paper's reference implementation (torch, float32, CPU).

    After ``torch.manual_seed(seed)`` the reference draws, in this order:

    * tabular: θ_ref = ``torch.zeros(runs, N, 1).normal_(0, 1)``;
    * neural: ``depth − 1`` layers ``nn.Linear(hidden, hidden)`` and ``nn.Linear(hidden, N)`` (their
      default init consumes the RNG), the input v = ``torch.normal(0, 1, (runs, hidden))``, then
      ``xavier_normal_`` on each weight in layer order (biases set to zero);
      θ_ref = W_3 ReLU(W_2 ReLU(W_1 v));
    * then ``lower = torch.rand(runs, N, N)`` and, for i > j, P_ij = lower_ij, P_ji = 1 − P_ij, P_ii = ½.

    The float32 draws are converted exactly to float64; 1 − P_ij and the network's forward pass are
    computed in float64 (so P + Pᵀ = 1 exactly and ``ref_logits == network_logits(network)``; the
    reference's float32 forward pass agrees to ~1e-6). The caller's torch RNG state is not changed:
    the tabular case uses a private ``torch.Generator`` (same stream as the global one), the neural
    case runs inside ``torch.random.fork_rng``.
    """
    import torch  # lazy: keep `import egpo_core.games` light

    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got seed={seed!r}")
    seed = int(seed)
    runs = _check_count(runs, "runs")
    n = _check_count(num_actions, "num_actions")
    f32 = torch.float32

    if policy == "tabular":
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        logits = torch.zeros((runs, n, 1), dtype=f32).normal_(0.0, 1.0, generator=gen)
        lower = torch.rand((runs, n, n), dtype=f32, generator=gen)
        ref_logits = logits[..., 0].numpy().astype(np.float64)
        network = None
    elif policy == "neural":
        hidden = _check_count(hidden_dim, "hidden_dim")
        depth = _check_count(depth, "depth")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers = [torch.nn.Linear(hidden, hidden, dtype=f32) for _ in range(depth - 1)]
            layers.append(torch.nn.Linear(hidden, n, dtype=f32))
            inputs = torch.normal(0.0, 1.0, (runs, hidden), dtype=f32)
            with torch.no_grad():
                for layer in layers:
                    torch.nn.init.xavier_normal_(layer.weight)
                    layer.bias.zero_()
            lower = torch.rand((runs, n, n), dtype=f32)
        network = {
            "input": inputs.numpy().astype(np.float64),
            "weights": [layer.weight.detach().numpy().astype(np.float64) for layer in layers],
            "biases": [layer.bias.detach().numpy().astype(np.float64) for layer in layers],
        }
        ref_logits = network_logits(network)
    else:
        raise ValueError(f"policy must be 'tabular' or 'neural', got policy={policy!r}")

    low = lower.numpy().astype(np.float64)
    rows, cols = np.tril_indices(n, k=-1)
    P = np.full((runs, n, n), 0.5)
    P[:, rows, cols] = low[:, rows, cols]
    P[:, cols, rows] = 1.0 - low[:, rows, cols]
    return GameInstances(P=validate_preference_matrix(P), ref_logits=ref_logits, network=network)


# ----------------------------------------------------------------------------------------------------
# files


def _check_names(names: Sequence[str] | None, runs: int) -> list[str]:
    if names is None:
        return [str(r) for r in range(runs)]
    names = list(names)
    if len(names) != runs:
        raise ValueError(f"names must have one entry per run ({runs}), got {len(names)}")
    for r, name in enumerate(names):
        if not isinstance(name, str) or not name or name != name.strip() or any(c in name for c in "\r\n"):
            raise ValueError(
                f"names[{r}] = {name!r} must be a non-empty string without line breaks "
                "or leading/trailing whitespace"
            )
    return names


def _atomic_write(path: str, write) -> None:
    """Write through ``write(file)`` to a temporary file in the target directory, then os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_games(
    path: str | os.PathLike,
    P: np.ndarray,
    ref_logits: np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> None:
    """Save games (and optionally π_ref logits and run names) atomically.

    Text format (any suffix but ``.npz``); numbers are written with ``repr`` so float64 round-trips:

        <runs> <N>
        run <name>            ┐
        <N numbers>  × N rows ┘ once per run
        ref_logits            (optional section)
        <N numbers>  × runs rows

    A ``.npz`` path is written with ``np.savez`` (keys ``P``, ``names`` and, if given, ``ref_logits``).
    Names default to "0", "1", …; they may contain spaces but not line breaks.
    """
    path = os.fspath(path)
    P = _as_batch(validate_preference_matrix(P))
    runs, n = P.shape[0], P.shape[-1]
    if ref_logits is not None:
        ref = np.asarray(ref_logits, dtype=np.float64)
        if ref.ndim == 1:
            ref = ref[None]
        if ref.shape != (runs, n):
            raise ValueError(f"ref_logits has shape {np.shape(ref_logits)}, but P has shape {P.shape}")
        if not np.all(np.isfinite(ref)):
            raise ValueError("ref_logits must be finite")
    else:
        ref = None
    names = _check_names(names, runs)

    if path.endswith(".npz"):
        arrays = {"P": P, "names": np.array(names, dtype=str)}
        if ref is not None:
            arrays["ref_logits"] = ref
        _atomic_write(path, lambda f: np.savez(f, **arrays))
        return

    lines = [f"{runs} {n}"]
    for r in range(runs):
        lines.append(f"run {names[r]}")
        lines.extend(" ".join(repr(float(x)) for x in row) for row in P[r])
    if ref is not None:
        lines.append("ref_logits")
        lines.extend(" ".join(repr(float(x)) for x in row) for row in ref)
    text = "\n".join(lines) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _parse_row(path: str, lineno: int, line: str, n: int) -> list[float]:
    parts = line.split()
    if len(parts) != n:
        raise ValueError(f"{path}, line {lineno}: expected {n} numbers, got {len(parts)}: {line!r}")
    try:
        return [float(x) for x in parts]
    except ValueError:
        raise ValueError(f"{path}, line {lineno}: not a row of numbers: {line!r}") from None


def load_games(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Load games written by :func:`save_games`: returns (P (runs, N, N), ref_logits (runs, N) or None,
    names). The content is validated; malformed files raise ValueError naming the file and the line
    (for text files; blank lines and lines starting with ``#`` are ignored).
    """
    path = os.fspath(path)
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: np.asarray(data[key]) for key in data.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: not a readable .npz file: {exc}") from exc
        if "P" not in arrays:
            raise ValueError(f"{path}: missing array 'P' (found {sorted(arrays)})")
        P = arrays["P"].astype(np.float64)
        ref = arrays["ref_logits"].astype(np.float64) if "ref_logits" in arrays else None
        names = [str(x) for x in arrays["names"]] if "names" in arrays else None
        if P.ndim != 3:
            raise ValueError(f"{path}: P must have shape (runs, N, N), got {P.shape}")
        try:
            P = validate_preference_matrix(P)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        if ref is not None and ref.shape != P.shape[:2]:
            raise ValueError(f"{path}: ref_logits has shape {ref.shape}, but P has shape {P.shape}")
        try:
            names = _check_names(names, P.shape[0])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        return P, ref, names

    with open(path, encoding="utf-8") as f:
        raw = f.read().split("\n")
    lines = [(k + 1, line.strip()) for k, line in enumerate(raw)]
    lines = [(k, line) for k, line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(f"{path}: empty file, expected a header line '<runs> <N>'")
    pos = 0

    def take(what: str) -> tuple[int, str]:
        nonlocal pos
        if pos >= len(lines):
            last = lines[-1][0] if lines else 0
            raise ValueError(f"{path}, line {last + 1}: unexpected end of file, expected {what}")
        item = lines[pos]
        pos += 1
        return item

    lineno, header = take("a header line '<runs> <N>'")
    parts = header.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise ValueError(f"{path}, line {lineno}: expected a header '<runs> <N>' of positive integers, got {header!r}")
    runs, n = int(parts[0]), int(parts[1])

    P = np.empty((runs, n, n))
    names: list[str] = []
    for r in range(runs):
        lineno, line = take(f"'run <name>' for run {r}")
        if not line.startswith("run ") or not line[4:].strip():
            raise ValueError(f"{path}, line {lineno}: expected 'run <name>' for run {r}, got {line!r}")
        names.append(line[4:].strip())
        for i in range(n):
            lineno, line = take(f"row {i} of run {r}")
            P[r, i] = _parse_row(path, lineno, line, n)
        start = lineno - n + 1
        try:
            validate_preference_matrix(P[r])
        except ValueError as exc:
            raise ValueError(f"{path}, lines {start}-{lineno} (run {r}): {exc}") from exc

    ref = None
    if pos < len(lines):
        lineno, line = take("'ref_logits'")
        if line != "ref_logits":
            raise ValueError(f"{path}, line {lineno}: expected 'ref_logits' or end of file, got {line!r}")
        ref = np.empty((runs, n))
        for r in range(runs):
            lineno, line = take(f"ref_logits row {r}")
            ref[r] = _parse_row(path, lineno, line, n)
            if not np.all(np.isfinite(ref[r])):
                raise ValueError(f"{path}, line {lineno}: ref_logits must be finite, got {line!r}")
    if pos < len(lines):
        lineno, line = lines[pos]
        raise ValueError(f"{path}, line {lineno}: unexpected content after the last section: {line!r}")
    return validate_preference_matrix(P), ref, names
