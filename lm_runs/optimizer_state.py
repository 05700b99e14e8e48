"""Saving and loading an optimizer's full state for EGPO's snapshot, whichever optimizer the Trainer built.

The snapshot must hold what the next ``step()`` reads. A torch optimizer reads its moments and the
parameters; DeepSpeed's ZeRO-1/2 and bf16 optimizers step an fp32 master partition and copy it into
the module after every step, so restoring the module's weights alone is undone at the next step (the
reference implementation's full step was taken from θ_{t+½} for that reason). Their
``state_dict()`` carries the fp32 partitions; they are loaded back with ``load_from_fp32_weights=True``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from lm_runs.launcher import UsageError

__all__ = ["TrainerOptimizerStateIO", "clone_state", "unwrap_optimizer"]


def unwrap_optimizer(optimizer: Any) -> Any:
    """The optimizer that owns the state: accelerate's wrappers (``AcceleratedOptimizer``, its DeepSpeed
    wrapper) hold it as ``.optimizer``; a DeepSpeed ZeRO optimizer is kept (its own ``.optimizer`` is
    the base optimizer over the fp32 partitions, whose state alone is not enough)."""
    while type(optimizer).__module__.startswith("accelerate") and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def clone_state(value: Any) -> Any:
    """A copy of an optimizer state that shares no tensor with it: tensors are detached and cloned
    (DeepSpeed's fp32 partitions are views, which ``copy.deepcopy`` refuses), containers are rebuilt,
    other objects (a loss scaler) are deep-copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return type(value)((key, clone_state(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(clone_state(item) for item in value)
    return copy.deepcopy(value)


class TrainerOptimizerStateIO:
    """:class:`egpo_core.schemes.OptimizerStateIO` for the optimizers a ``transformers.Trainer`` uses.

    * a ``torch.optim.Optimizer`` (possibly inside accelerate's ``AcceleratedOptimizer``): a deep copy
      of ``state_dict()``;
    * a DeepSpeed ZeRO-1/2 or bf16 optimizer: a deep copy of its ``state_dict()`` (this rank's
      partition, fp32 master weights included), loaded back as this data-parallel rank's entry with
      ``load_from_fp32_weights=True``.
    """

    def save(self, optimizer: Any) -> Any:
        return clone_state(unwrap_optimizer(optimizer).state_dict())

    def load(self, optimizer: Any, state: Any) -> None:
        owner = unwrap_optimizer(optimizer)
        if isinstance(owner, torch.optim.Optimizer):
            owner.load_state_dict(state)
            return
        if getattr(owner, "elastic_checkpoint", False):
            raise UsageError("EGPO's snapshot does not support DeepSpeed's elastic_checkpoint: set it to false")
        # DeepSpeed indexes the list by data-parallel rank; every entry is this rank's own state.
        import torch.distributed as dist

        world = dist.get_world_size(group=getattr(owner, "dp_process_group", None)) if dist.is_initialized() else 1
        owner.load_state_dict([state] * world, load_optimizer_states=True, load_from_fp32_weights=True)
