"""Update schemes around any torch module and optimizer: a single step, and extragradient.

* :func:`single_step`: θ_{t+1} = optimizer step on ∇L(θ_t; σ = π_t).
* :func:`extragradient_step` (EGPO):
      θ_{t+½} = optimizer step from θ_t on ∇L(θ_t; π_t)
      θ_{t+1} = optimizer step from θ_t (parameters *and optimizer state* restored) on ∇L(θ_t; π_{t+½})
  With plain SGD on the exact Online IPO loss this is the closed form π_{t+1} = MD(π_t; MD(π_t; π_t)).
  Restoring the optimizer state means the half step leaves no trace: with Adam, θ_{t+1} is exactly
  one Adam step from (θ_t, state_t) with the gradient against π_{t+½}.
* :func:`step`: picks one of the two from ``algorithm.scheme``.

The loss callables build the loss at the module's *current* parameters; they typically call the
module and :func:`egpo_core.losses.exact_loss` / :func:`~egpo_core.losses.sampled_loss`, e.g.::

    make_loss = lambda opponent: exact_loss(alg, policy(), ref_logp, P, beta, opponent_probs=opponent)
    step(alg, policy, optimizer, make_loss)

Learning-rate schedulers and gradient clipping are not applied here: step a scheduler after
:func:`step`, and clip by wrapping the optimizer's ``step``.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Callable

import torch
from torch import nn

from .algorithms import Algorithm, get_algorithm

__all__ = ["single_step", "extragradient_step", "step"]


def _loss_value(loss: Any) -> float:
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"the loss function must return a scalar tensor, got {shape}")
    return float(loss.detach())


def single_step(module: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor]) -> float:
    """One optimizer step: zero_grad, L = loss_fn(), L.backward(), optimizer.step(). Returns L(θ_t).

    ``module`` is unused except to document what is trained (kept for a uniform signature).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn()
    value = _loss_value(loss)
    loss.backward()
    optimizer.step()
    return value


def _current_probs(module: nn.Module) -> torch.Tensor:
    """π = exp(module()) detached: the module's forward returns (runs, N) log-probabilities."""
    with torch.no_grad():
        return module().detach().exp()


def extragradient_step(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any], torch.Tensor],
    opponent_fn: Callable[[nn.Module], Any] | None = None,
) -> float:
    """One extragradient (EGPO) update. Returns the full step's loss L(θ_t; π_{t+½}).

    1. save θ_t (a copy of every parameter and buffer) and a deep copy of ``optimizer.state_dict()``;
    2. half step: ``loss_fn(None)`` (the opponent is the current policy π_t), backward, step → θ_{t+½};
    3. opponent π_{t+½} = ``opponent_fn(module)`` at θ_{t+½} (default: exp(module()) detached);
    4. restore θ_t and the optimizer state saved in 1;
    5. full step: ``loss_fn(π_{t+½})`` at θ_t, backward, step → θ_{t+1}.

    Args:
        module: the policy; parameters and buffers are restored in place (the optimizer keeps
            references to the same parameter tensors).
        optimizer: any ``torch.optim.Optimizer`` over (some of) the module's parameters.
        loss_fn: ``loss_fn(opponent)`` builds the loss at the module's current parameters against
            ``opponent`` (``None`` = the current policy).
        opponent_fn: what to hand ``loss_fn`` after the half step (e.g. samples generated at θ_{t+½}
            for a language model); default the probabilities exp(module()).
    """
    tensors = list(itertools.chain(module.parameters(), module.buffers()))
    saved_tensors = [t.detach().clone() for t in tensors]
    saved_optimizer = copy.deepcopy(optimizer.state_dict())

    optimizer.zero_grad(set_to_none=True)
    half_loss = loss_fn(None)
    _loss_value(half_loss)
    half_loss.backward()
    optimizer.step()
    opponent = _current_probs(module) if opponent_fn is None else opponent_fn(module)

    with torch.no_grad():
        for tensor, saved in zip(tensors, saved_tensors):
            tensor.copy_(saved)
    optimizer.load_state_dict(saved_optimizer)

    return single_step(module, optimizer, lambda: loss_fn(opponent))


def step(
    algorithm: Algorithm | str,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    make_loss: Callable[[Any], torch.Tensor],
) -> float:
    """One update of ``algorithm`` by its declared scheme; returns the (last) loss value.

    ``make_loss(opponent)`` builds the loss at the current parameters (``opponent=None``: the current
    policy). "single": one step on ``make_loss(None)``; "extragradient": :func:`extragradient_step`.
    """
    algorithm = get_algorithm(algorithm)
    if algorithm.scheme == "single":
        return single_step(policy, optimizer, lambda: make_loss(None))
    if algorithm.scheme == "extragradient":
        return extragradient_step(policy, optimizer, make_loss)
    raise ValueError(f"unknown scheme {algorithm.scheme!r} of algorithm {algorithm.name!r}; known: single, extragradient")
