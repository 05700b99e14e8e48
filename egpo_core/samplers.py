"""Sampling responses for the sampled losses, batched over runs.

All samplers return integer indices of shape (runs, S) and draw from an explicit
``torch.Generator`` so that sampled runs are reproducible.

The geometric mixture of Nash-MD, π^c ∝ π^{1−c} π_ref^c, is built by
:func:`geometric_mixture_log_probs`. Its ``normalize_over="runs"`` option reproduces a bug of the
EGPO reference implementation (see that function); the default normalizes over actions.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from .algorithms.base import MixtureNormalization

__all__ = ["uniform_indices", "categorical_indices", "geometric_mixture_log_probs", "mixture_normalization", "NormalizeOver"]

NormalizeOver = MixtureNormalization | Literal["actions", "runs"]


def mixture_normalization(name: str, value: NormalizeOver) -> MixtureNormalization:
    """``value`` as a :class:`~egpo_core.algorithms.MixtureNormalization`; a ValueError names the
    argument ``name`` otherwise."""
    try:
        return MixtureNormalization(value)
    except ValueError:
        raise ValueError(f"{name} must be 'actions' or 'runs', got {name}={value!r}") from None


def _check_num_samples(num_samples: int) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got num_samples={num_samples!r}")
    return int(num_samples)


def uniform_indices(
    runs: int,
    num_actions: int,
    num_samples: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Indices y[r, s] ~ Uniform{0, …, N−1}, i.i.d., shape (runs, S), dtype int64."""
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < 1:
        raise ValueError(f"runs must be a positive integer, got runs={runs!r}")
    if isinstance(num_actions, bool) or not isinstance(num_actions, (int, np.integer)) or num_actions < 1:
        raise ValueError(f"num_actions must be a positive integer, got num_actions={num_actions!r}")
    num_samples = _check_num_samples(num_samples)
    return torch.randint(0, int(num_actions), (int(runs), num_samples), generator=generator, device=device)


def categorical_indices(
    probs: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices y[r, s] ~ probs[r, ·] / Σ_y probs[r, y], i.i.d. with replacement, shape (runs, S).

    ``probs`` (runs, N) must be finite and non-negative with a positive sum in every row; rows need
    not be normalized (each row is renormalized, as ``torch.multinomial`` does).
    """
    if not isinstance(probs, torch.Tensor):
        probs = torch.as_tensor(probs, dtype=torch.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (runs, N), got shape {tuple(probs.shape)}")
    num_samples = _check_num_samples(num_samples)
    probs = probs.detach()
    if not torch.isfinite(probs).all():
        raise ValueError("probs must be finite")
    if (probs < 0).any():
        raise ValueError(f"probs must be non-negative, got minimum {probs.min().item()!r}")
    row_sums = probs.sum(dim=-1)
    if (row_sums <= 0).any():
        raise ValueError(f"every row of probs needs a positive sum, got row sums {row_sums.tolist()!r}")
    return torch.multinomial(probs, num_samples, replacement=True, generator=generator)


def geometric_mixture_log_probs(
    log_pi: torch.Tensor,
    log_ref: torch.Tensor,
    c: float,
    normalize_over: NormalizeOver = "actions",
) -> torch.Tensor:
    """Log of the geometric mixture π^c ∝ π^{1−c} π_ref^c, from log-probabilities of shape (runs, N).

    With m = (1 − c) log π + c log π_ref:

    * ``"actions"`` (correct): log π^c[r, y] = m[r, y] − log Σ_{y'} exp m[r, y'], a distribution over
      actions for every run.
    * ``"runs"`` (reproduces the reference implementation's bug: it applied softmax over dim −2 of the
      (runs, N) tensor m): returns m[r, y] − log Σ_{r'} exp m[r', y], normalized over *runs* for each
      action. A sampler then renormalizes each row, so run r samples y with probability
      ∝ exp(m[r, y]) / Σ_{r'} exp(m[r', y]) — a distribution that depends on the other runs and is
      not the mixture (sampled Nash-MD then stalls at a duality gap ≈ 0.2 instead of ≈ 2e-3).

    ``c`` ∈ [0, 1]: c = 0 gives π, c = 1 gives π_ref. The result is differentiable in its inputs;
    callers building an opponent detach them.
    """
    if log_pi.shape != log_ref.shape:
        raise ValueError(
            f"log_pi and log_ref must have the same shape, got {tuple(log_pi.shape)} and {tuple(log_ref.shape)}"
        )
    if log_pi.ndim != 2:
        raise ValueError(f"log-probabilities must have shape (runs, N), got shape {tuple(log_pi.shape)}")
    c = float(c)
    if not 0.0 <= c <= 1.0:
        raise ValueError(f"mixture coefficient c must lie in [0, 1], got c={c!r}")
    axis = -1 if mixture_normalization("normalize_over", normalize_over) is MixtureNormalization.ACTIONS else -2
    m = (1.0 - c) * log_pi + c * log_ref
    return m - torch.logsumexp(m, dim=axis, keepdim=True)
