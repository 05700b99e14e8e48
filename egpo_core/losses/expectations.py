"""The loss of a whole tabular or neural policy (a scalar): the exact expectation over all pairs and
responses (:func:`exact_loss`), or a one-sample-per-term Monte-Carlo estimate whose gradient is
unbiased (:func:`sampled_loss`). Both reduce as the sum over runs of each run's mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..algorithms import Algorithm, LossFamily
from ..samplers import categorical_indices, uniform_indices
from .blocks import ipo_regression_loss, policy_gradient_advantage, policy_gradient_loss, regression_target
from .options import LossOptions, _pair_distribution, _setup, _term_potentials

__all__ = ["exact_loss", "sampled_loss"]



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
