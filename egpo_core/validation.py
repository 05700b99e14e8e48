"""One validator per kind of value the math modules accept.

Each validator returns the value in the form the math uses (float64 arrays, Python numbers) or
raises one ``ValueError`` that names the argument and the offending value, before any computation:

    validate_preference_matrix   P of shape (N, N) or (runs, N, N): finite, entries in [0, 1], P + Pᵀ = 1
    check_beta                   β > 0 and finite (β ≥ 0 where the formula has a β = 0 limit)
    check_positive               any other finite positive number (a step size, a tolerance)
    check_count                  an integer ≥ a minimum (runs, N, max_iter, …); bools refused
    check_logits                 finite logits whose last axis has N entries
    check_distribution           a probability vector of a given length (non-negative, sums to 1)

The checks are whole-array reductions (``np.isfinite(…).all()``, min and max), cheap beside the
metrics they guard; the position of a bad entry is looked up only once a check has failed.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "validate_preference_matrix",
    "check_beta",
    "check_positive",
    "check_count",
    "check_logits",
    "check_distribution",
    "format_number",
]


def format_number(x: float) -> str:
    """Compact number for error messages: 1.2, 1e-9, nan."""
    text = f"{float(x):.12g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else ""
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return text


def _is_real_number(value: object) -> bool:
    """int/float (numpy scalars included), not bool: the types a scalar parameter may have."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _entry(index: tuple[int, ...]) -> str:
    """'P[3, 1]' for a single matrix, 'P[run 2, 3, 1]' for a batch."""
    if len(index) == 3:
        return f"P[run {index[0]}, {index[1]}, {index[2]}]"
    return f"P[{index[0]}, {index[1]}]"


def _first(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True entry of ``mask`` in C order."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


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
    if not (_is_real_number(atol) and math.isfinite(atol) and atol >= 0):
        raise ValueError(f"atol must be a finite non-negative number, got atol={atol!r}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"P must have shape (N, N) or (runs, N, N), got shape {arr.shape}")
    if arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"P must be square in its last two axes, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"P must have at least one run and one action, got shape {arr.shape}")

    # Fast path: whole-array reductions; the masks that locate a bad entry are built only on failure.
    # min and max propagate NaN and the comparisons are False for NaN, so passing them also proves
    # every entry finite.
    if not (arr.min() >= -atol and arr.max() <= 1.0 + atol):
        finite = np.isfinite(arr)
        if not finite.all():
            idx = _first(~finite)
            raise ValueError(f"{_entry(idx)} = {format_number(arr[idx])} is not finite")
        idx = _first((arr < -atol) | (arr > 1.0 + atol))
        raise ValueError(f"{_entry(idx)} = {format_number(arr[idx])} is outside [0, 1]")

    # P + Pᵀ one game at a time: the sum stays in cache and no temporary the size of the batch is made
    # (100 games of N = 1000: 0.25 s; the batch's sum 0.44 s warm, 0.96 s on fresh pages). total − 1 is
    # exact for total ∈ [½, 2] (Sterbenz), so the test is |P_ij + P_ji − 1| > atol.
    total = np.empty(arr.shape[-2:])
    deviation = 0.0
    for game in arr.reshape((-1,) + arr.shape[-2:]):
        np.add(game, game.T, out=total)
        deviation = max(deviation, total.max() - 1.0, 1.0 - total.min())
    if deviation > atol:
        total = arr + np.swapaxes(arr, -1, -2)
        idx = _first(np.abs(total - 1.0) > atol)
        if idx[-1] == idx[-2]:  # P_ii + P_ii = 1: a response ties with itself
            raise ValueError(f"{_entry(idx)} = {format_number(arr[idx])} is on the diagonal and must be 0.5 "
                             f"(a response ties with itself; within {format_number(atol / 2)})")
        mirror = idx[:-2] + (idx[-1], idx[-2])
        raise ValueError(
            f"{_entry(idx)} + {_entry(mirror)} = {format_number(total[idx])}, "
            f"must be 1 (within {format_number(atol)})"
        )
    return arr


def check_beta(beta: float, *, allow_zero: bool = False) -> float:
    """β as a float: finite and > 0 (≥ 0 with ``allow_zero``, for formulas defined at β = 0)."""
    bound = "non-negative" if allow_zero else "positive"
    if not _is_real_number(beta):
        raise ValueError(f"beta must be a {bound} finite number, got beta={beta!r}")
    value = float(beta)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"beta must be {bound} and finite, got beta={format_number(value)}")
    return value


def check_positive(value: float, name: str) -> float:
    """A finite number > 0, as a float."""
    if not _is_real_number(value):
        raise ValueError(f"{name} must be a positive finite number, got {name}={value!r}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be positive and finite, got {name}={format_number(number)}")
    return number


def check_count(value: int, name: str, minimum: int = 1) -> int:
    """An integer ≥ ``minimum``, as an int (bools and integral floats such as 3.0 are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {name}={value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {name}={value}")
    return int(value)


def check_logits(logits: np.ndarray, name: str, num_actions: int | None = None) -> np.ndarray:
    """Logits as a float64 array of ndim ≥ 1, every entry finite, with ``num_actions`` entries on the
    last axis when given (the policy is softmax over that axis)."""
    try:
        arr = np.asarray(logits, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, got {type(logits).__name__}: {exc}") from exc
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., N) with N ≥ 1, got shape {arr.shape}")
    if num_actions is not None and arr.shape[-1] != num_actions:
        raise ValueError(
            f"{name} has {arr.shape[-1]} entries on its last axis (shape {arr.shape}), "
            f"but the game has N = {num_actions} actions"
        )
    finite = np.isfinite(arr)
    if not finite.all():
        idx = _first(~finite)
        position = ", ".join(str(i) for i in idx)
        raise ValueError(f"{name}[{position}] = {format_number(arr[idx])} is not finite")
    return arr


def check_distribution(values: np.ndarray, name: str, length: int, atol: float = 1e-12) -> np.ndarray:
    """A probability vector of ``length`` entries: finite, ≥ 0, |Σ − 1| ≤ ``atol``. Returns float64."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size != length:
        raise ValueError(f"{name} must be a list of {length} numbers, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"{name}[{k}] = {format_number(arr[k])} must be finite and non-negative")
    if abs(arr.sum() - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1, got sum({name}) = {float(arr.sum())!r}")
    return arr
