"""Update schemes around any torch module and optimizer: a single step, and extragradient.

* :func:`single_step`: θ_{t+1} = optimizer step on ∇L(θ_t; σ = π_t).
* :class:`ExtragradientState`: extragradient as resumable state — the snapshot of θ_t (trainable
  parameters only) with the optimizer's and scheduler's state, and the phase ("half" or "full") —
  so that a training loop that owns the optimizer step (a ``transformers.Trainer``, DeepSpeed) can
  take the two steps of an update in two of its own steps and checkpoint between them.
* :func:`extragradient_step` (EGPO), built on it:
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
from typing import Any, Callable, Iterable, Literal, Protocol

import torch
from torch import nn

from .algorithms import Algorithm, Scheme, get_algorithm

__all__ = ["ExtragradientState", "OptimizerStateIO", "TorchOptimizerStateIO", "single_step", "extragradient_step", "step"]


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


class OptimizerStateIO(Protocol):
    """How to copy an optimizer's state out and put it back. The state must hold everything the next
    ``step()`` reads — for a mixed-precision or ZeRO optimizer that includes its fp32 master weights,
    which it copies into the module at every step (restoring the module alone would be undone)."""

    def save(self, optimizer: Any) -> Any: ...

    def load(self, optimizer: Any, state: Any) -> None: ...


class TorchOptimizerStateIO:
    """A ``torch.optim.Optimizer``: a deep copy of ``state_dict()`` (moments, step counts, and the
    param groups' hyperparameters such as the learning rate), loaded back with ``load_state_dict``."""

    def save(self, optimizer: torch.optim.Optimizer) -> dict:
        return copy.deepcopy(optimizer.state_dict())

    def load(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)


Phase = Literal["half", "full"]


class ExtragradientState:
    """One extragradient (EGPO) update split into its two steps, as state that survives a checkpoint.

        phase "half":  save(θ_t, optimizer, scheduler)        # → phase "full"
                       step on ∇L(θ_t; π_t)                    # the caller's optimizer step → θ_{t+½}
        phase "full":  sample the opponent at θ_{t+½}
                       restore(θ_t, optimizer, scheduler)      # → phase "half", updates += 1
                       step on ∇L(θ_t; π_{t+½})                # the caller's optimizer step → θ_{t+1}

    The snapshot holds the *trainable* parameters only (those with ``requires_grad``; a frozen base
    model is never copied), the optimizer state through ``optimizer_io`` (default
    :class:`TorchOptimizerStateIO`), and the scheduler's ``state_dict()`` when one is given, so the
    half step leaves no trace: the learning rate schedule ticks once per update and θ_{t+1} is one
    optimizer step from (θ_t, state_t). The phase is kept here, never derived from a step counter.
    :meth:`state_dict` / :meth:`load_state_dict` carry the phase, the update count and the snapshot,
    so a run checkpointed between the two steps resumes into the full step.

    Args:
        optimizer_io: how to save and load the optimizer's state.
        offload: keep the snapshot on the CPU (saves accelerator memory; costs two copies per update).
    """

    def __init__(self, optimizer_io: OptimizerStateIO | None = None, *, offload: bool = False) -> None:
        self.optimizer_io = TorchOptimizerStateIO() if optimizer_io is None else optimizer_io
        self.offload = offload
        self.updates = 0
        self._parameters: list[torch.Tensor] | None = None
        self._optimizer: Any = None
        self._scheduler: dict | None = None

    @property
    def phase(self) -> Phase:
        """"half" when the next step is a half step (nothing saved), "full" when θ_t is saved."""
        return "half" if self._parameters is None else "full"

    @staticmethod
    def _trainable(parameters: Iterable[torch.Tensor]) -> list[torch.Tensor]:
        return [p for p in parameters if p.requires_grad]

    def save(self, parameters: Iterable[torch.Tensor], optimizer: Any, scheduler: Any | None = None) -> None:
        """Snapshot θ_t (trainable ``parameters``), the optimizer's and the scheduler's state."""
        if self._parameters is not None:
            raise RuntimeError("ExtragradientState.save() called in the 'full' phase: restore() must come first")
        device = "cpu" if self.offload else None
        trainable = self._trainable(parameters)
        if not trainable:
            raise ValueError("no trainable parameters (requires_grad=True) to snapshot")
        self._parameters = [p.detach().to(device, copy=True) for p in trainable]
        self._optimizer = self.optimizer_io.save(optimizer)
        self._scheduler = None if scheduler is None else copy.deepcopy(scheduler.state_dict())

    def restore(self, parameters: Iterable[torch.Tensor], optimizer: Any, scheduler: Any | None = None) -> None:
        """Put θ_t and the saved optimizer/scheduler state back; the update's full step comes next."""
        if self._parameters is None:
            raise RuntimeError("ExtragradientState.restore() called in the 'half' phase: nothing was saved")
        trainable = self._trainable(parameters)
        shapes = [tuple(p.shape) for p in trainable]
        saved = [tuple(p.shape) for p in self._parameters]
        if shapes != saved:
            raise ValueError(
                f"the trainable parameters changed since save(): saved {len(saved)} tensors of shapes "
                f"{saved[:4]}..., given {len(shapes)} of shapes {shapes[:4]}..."
            )
        with torch.no_grad():
            for parameter, value in zip(trainable, self._parameters):
                parameter.copy_(value)
        self.optimizer_io.load(optimizer, self._optimizer)
        if scheduler is not None:
            if self._scheduler is None:
                raise ValueError("restore() got a scheduler but save() did not")
            scheduler.load_state_dict(self._scheduler)
        self._parameters = self._optimizer = self._scheduler = None
        self.updates += 1

    def state_dict(self) -> dict:
        """Phase, update count and snapshot (tensors on the CPU), for a checkpoint."""
        return {
            "phase": self.phase,
            "updates": self.updates,
            "parameters": None if self._parameters is None else [p.cpu() for p in self._parameters],
            "optimizer": self._optimizer,
            "scheduler": self._scheduler,
        }

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        """Resume from :meth:`state_dict`; ``device`` is where the parameters go (default: CPU if
        ``offload`` else as saved)."""
        if state.get("phase") not in ("half", "full"):
            raise ValueError(f"not an ExtragradientState state dict: phase={state.get('phase')!r}")
        self.updates = int(state["updates"])
        parameters = state["parameters"]
        if state["phase"] == "full" and parameters is None:
            raise ValueError("an ExtragradientState in the 'full' phase must carry its saved parameters")
        target = "cpu" if self.offload else device
        self._parameters = None if parameters is None else [p.to(target) for p in parameters]
        self._optimizer = state["optimizer"]
        self._scheduler = state["scheduler"]


def extragradient_step(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any], torch.Tensor],
    opponent_fn: Callable[[nn.Module], Any] | None = None,
    state: ExtragradientState | None = None,
) -> float:
    """One extragradient (EGPO) update. Returns the full step's loss L(θ_t; π_{t+½}).

    1. ``state.save``: θ_t (the module's trainable parameters) and the optimizer's state;
    2. half step: ``loss_fn(None)`` (the opponent is the current policy π_t), backward, step → θ_{t+½};
    3. opponent π_{t+½} = ``opponent_fn(module)`` at θ_{t+½} (default: exp(module()) detached);
    4. ``state.restore``: θ_t and the optimizer state saved in 1;
    5. full step: ``loss_fn(π_{t+½})`` at θ_t, backward, step → θ_{t+1}.

    Args:
        module: the policy; parameters are restored in place (the optimizer keeps references to
            the same parameter tensors).
        optimizer: any ``torch.optim.Optimizer`` over (some of) the module's parameters.
        loss_fn: ``loss_fn(opponent)`` builds the loss at the module's current parameters against
            ``opponent`` (``None`` = the current policy).
        opponent_fn: what to hand ``loss_fn`` after the half step (e.g. samples generated at θ_{t+½}
            for a language model); default the probabilities exp(module()).
        state: an :class:`ExtragradientState` to use (default a fresh one); it must be in the "half" phase.
    """
    state = ExtragradientState() if state is None else state
    state.save(module.parameters(), optimizer)
    single_step(module, optimizer, lambda: loss_fn(None))
    opponent = _current_probs(module) if opponent_fn is None else opponent_fn(module)
    state.restore(module.parameters(), optimizer)
    return single_step(module, optimizer, lambda: loss_fn(opponent))


def step(
    algorithm: Algorithm | str,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    make_loss: Callable[[Any], torch.Tensor],
) -> float:
    """One update of ``algorithm`` by its declared scheme; returns the (last) loss value.

    ``make_loss(opponent)`` builds the loss at the current parameters (``opponent=None``: the current
    policy). "single": one step on ``make_loss(None)``; "extragradient": :func:`extragradient_step`;
    "minimize" (a tabular minimiser, :class:`~egpo_core.algorithms.base.Scheme`) is refused (ValueError).
    """
    algorithm = get_algorithm(algorithm)
    if algorithm.scheme == Scheme.MINIMIZE:
        raise ValueError(f"algorithm {algorithm.name!r} has scheme 'minimize' (its update is the minimiser of its "
                         "ordered-pair loss, tabular only), which no optimizer step takes")
    if algorithm.scheme == Scheme.EXTRAGRADIENT:
        return extragradient_step(policy, optimizer, make_loss)
    return single_step(policy, optimizer, lambda: make_loss(None))
