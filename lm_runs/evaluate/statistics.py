"""The numbers: win rates with bootstrap intervals over prompts, the selection/report split, the best epochs.

:func:`win_rate_ci` (the ratio estimator and its percentile interval), :func:`split_indices`,
:func:`select_best` (formulas in their docstrings and the package docstring), and
:data:`MIN_INTERVAL_PROMPTS`, below which an interval is flagged as unreliable.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .settings import EvaluationError, derive_seed

__all__ = ["MIN_INTERVAL_PROMPTS", "win_rate_ci", "bootstrap_indices", "split_indices", "select_best"]

#: An entry resting on fewer prompts is flagged (tables: a dagger and no bold; ``winrates.csv``:
#: ``few_prompts``). The percentile bootstrap of a mean over n prompts is about the normal interval
#: with the (n − 1)/n variance: against Student's t interval of normal data its half-width is 6 % short
#: for n = 30 (coverage 93.6 % instead of 95 %), 18 % for n = 10 (90.4 %) and 47 % for n = 4 (81.2 %);
#: below 30 prompts it looks more decisive than it is.
MIN_INTERVAL_PROMPTS = 30


def bootstrap_indices(size: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, size) positions drawn uniformly with replacement from range(size), seeded."""
    return np.random.default_rng(seed).integers(0, size, size=(resamples, size))


def win_rate_ci(
    P: np.ndarray,
    prompts: Sequence[int] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    indices: np.ndarray | None = None,
) -> dict[str, float | int]:
    """Win rate over the rows ``prompts`` of ``P`` (n prompts × K pairs, NaN = missing) and its
    bootstrap interval.

        win_rate = Σ_i Σ_j m_ij P_ij / Σ_i Σ_j m_ij,   m_ij = 1 where P_ij is not NaN,

    the interval = the (1 − level)/2 and (1 + level)/2 quantiles of that ratio over ``resamples``
    draws of the prompts with replacement (a prompt's K pairs stay together). ``indices``, a
    (resamples, len(prompts)) array of positions into ``prompts``, fixes the draws (shared by all
    entries of a split). Returns win_rate, ci_low, ci_high, n_pairs (judged), n_missing.
    """
    P = np.asarray(P, dtype=float)
    rows = np.arange(P.shape[0]) if prompts is None else np.asarray(list(prompts), dtype=int)
    sub = P[rows]
    present = ~np.isnan(sub)
    sums = np.where(present, sub, 0.0).sum(axis=1)
    counts = present.sum(axis=1)
    n_pairs = int(counts.sum())
    out: dict[str, float | int] = {
        "win_rate": float(sums.sum() / n_pairs) if n_pairs else float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "n_pairs": n_pairs,
        "n_missing": int(sub.size - n_pairs),
    }
    if n_pairs and len(rows) and (resamples > 0 or indices is not None):
        draws = indices if indices is not None else bootstrap_indices(len(rows), resamples, seed)
        denominators = counts[draws].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = sums[draws].sum(axis=1) / denominators
        ratios = ratios[denominators > 0]
        if ratios.size:
            tail = (1.0 - level) / 2.0
            out["ci_low"], out["ci_high"] = (float(q) for q in np.quantile(ratios, [tail, 1.0 - tail]))
    return out


def split_indices(num_prompts: int, selection_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(selection, report): a seeded permutation of range(n) cut at round(fraction · n), each sorted.
    Disjoint, together all prompts; raises :class:`EvaluationError` when either would be empty."""
    n_selection = int(round(selection_fraction * num_prompts))
    if not 1 <= n_selection <= num_prompts - 1:
        raise EvaluationError(
            f"--selection_fraction {selection_fraction} of {num_prompts} prompts leaves "
            f"{n_selection} for selection and {num_prompts - n_selection} to report on; both need at least one"
        )
    order = np.random.default_rng(derive_seed(seed, "split")).permutation(num_prompts)
    return sorted(int(i) for i in order[:n_selection]), sorted(int(i) for i in order[n_selection:])


def select_best(scores: Mapping[str, float], groups: Mapping[str, str], count: int = 2) -> dict[str, list[str]]:
    """Per group (algorithm), the ``count`` model names with the highest score (ties and NaN: the
    earlier-listed model first, NaN last), returned in listing order within the group."""
    order = {name: k for k, name in enumerate(groups)}
    out: dict[str, list[str]] = {}
    for name, group in groups.items():
        out.setdefault(group, []).append(name)
    for group, names in out.items():
        ranked = sorted(names, key=lambda n: (math.isnan(scores[n]), -scores[n] if not math.isnan(scores[n]) else 0.0, order[n]))
        out[group] = sorted(ranked[:count], key=order.__getitem__)
    return out
