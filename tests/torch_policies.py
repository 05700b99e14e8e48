"""Test oracle: torch policies over N responses, batched over independent runs (games).

The library's own network is numpy (``egpo_core.network``) and the simulator's compiled kernel;
these ``nn.Module`` versions let the tests drive ``egpo_core.losses`` with autograd and compare
the kernel against them. Nothing in ``egpo_core`` imports this module.

Every policy is an ``nn.Module`` whose ``forward()`` takes no input and returns log-probabilities of
shape (runs, N):

    log π_θ(y) = θ_y − log Σ_{y'} e^{θ_{y'}}        (log_softmax of the policy's logits)

* :class:`TabularPolicy` — one free logit per (run, response).
* :class:`NeuralPolicy` — the EGPO paper's network: a learned input v ∈ R^hidden per run, then
  (depth − 1) × [Linear(hidden, hidden) + ReLU], then Linear(hidden, N), then log_softmax. Each run
  has its own weights by default; ``shared=True`` gives one set of weights for all runs (the reference
  implementation's choice: its runs shared a network and differed only in the input v).

The losses in :mod:`egpo_core.losses` and the schemes in :mod:`egpo_core.schemes` only rely on
``forward()`` returning (runs, N) log-probabilities, so any module with that contract works too.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from egpo_core.validation import check_count

__all__ = ["TabularPolicy", "NeuralPolicy"]


class TabularPolicy(nn.Module):
    """Softmax policy with a free logit per (run, response).

    Parameter ``logits`` θ of shape (runs, N); ``forward()`` returns log π_θ = log_softmax(θ) (runs, N).

    Args:
        logits: initial logits, array-like of shape (runs, N) (copied).
        dtype: parameter dtype (default: the dtype of a tensor ``logits``, else torch's default dtype).
        device: parameter device.
    """

    def __init__(
        self,
        logits: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if dtype is None:
            dtype = logits.dtype if isinstance(logits, torch.Tensor) else torch.get_default_dtype()
        initial = torch.as_tensor(logits, dtype=dtype, device=device).detach().clone()
        if initial.ndim != 2 or initial.shape[0] < 1 or initial.shape[1] < 1:
            raise ValueError(f"logits must have shape (runs, N) with runs, N ≥ 1, got shape {tuple(initial.shape)}")
        if not torch.isfinite(initial).all():
            raise ValueError("logits must be finite")
        self.logits = nn.Parameter(initial)

    @classmethod
    def zeros(
        cls, runs: int, num_actions: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> "TabularPolicy":
        """The uniform policy: θ = 0 of shape (runs, N)."""
        runs = check_count(runs, "runs")
        num_actions = check_count(num_actions, "num_actions")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return cls(torch.zeros(runs, num_actions, dtype=dtype, device=device))

    @property
    def runs(self) -> int:
        return self.logits.shape[0]

    @property
    def num_actions(self) -> int:
        return self.logits.shape[1]

    def forward(self) -> torch.Tensor:
        """log π_θ = log_softmax(θ) over actions, shape (runs, N)."""
        return F.log_softmax(self.logits, dim=-1)


class NeuralPolicy(nn.Module):
    """The paper's policy network, batched over runs.

        h_0 = v                                     (learned input, (runs, hidden))
        h_k = ReLU(W_k h_{k−1} + b_k),  k = 1 … depth − 1     (W_k: hidden × hidden)
        log π = log_softmax(W_depth h_{depth−1} + b_depth)    (W_depth: N × hidden)

    Parameters: ``input`` (runs, hidden); ``weights[k]`` of shape (runs, out, in) and ``biases[k]`` of
    shape (runs, out) when per-run (default), or (out, in) and (out,) when ``shared=True``. Per-run
    layers are evaluated with one batched matrix product (``torch.baddbmm``), so run r's output
    depends only on run r's parameters.

    Initialization (the paper's): inputs ~ N(0, 1); weights Xavier-normal, i.e. N(0, 2/(fan_in +
    fan_out)) for every run's matrix; biases 0. Draw order from ``generator``: the input, then each
    layer's weights in order (so a given generator state gives a reproducible network).

    Args:
        runs: number of independent runs (games).
        num_actions: N, the number of responses.
        hidden: width of the input and of the hidden layers (paper: 10).
        depth: number of Linear layers (paper: 3, i.e. two hidden layers then the output layer).
        shared: one set of weights for all runs (only the inputs differ).
        generator: a ``torch.Generator`` for deterministic initialization.
        dtype, device: of the parameters (default: torch's default dtype, CPU).
    """

    def __init__(
        self,
        runs: int,
        num_actions: int,
        hidden: int = 10,
        depth: int = 3,
        *,
        shared: bool = False,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        runs = check_count(runs, "runs")
        num_actions = check_count(num_actions, "num_actions")
        hidden = check_count(hidden, "hidden")
        depth = check_count(depth, "depth")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.shared = bool(shared)
        factory = dict(dtype=dtype, device=device)

        self.input = nn.Parameter(torch.randn(runs, hidden, generator=generator, **factory))
        weights, biases = [], []
        for k in range(depth):
            fan_out = num_actions if k == depth - 1 else hidden
            fan_in = hidden
            std = math.sqrt(2.0 / (fan_in + fan_out))
            lead = () if self.shared else (runs,)
            weights.append(nn.Parameter(std * torch.randn(*lead, fan_out, fan_in, generator=generator, **factory)))
            biases.append(nn.Parameter(torch.zeros(*lead, fan_out, **factory)))
        self.weights = nn.ParameterList(weights)
        self.biases = nn.ParameterList(biases)

    @property
    def runs(self) -> int:
        return self.input.shape[0]

    @property
    def hidden(self) -> int:
        return self.input.shape[1]

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def num_actions(self) -> int:
        return self.weights[-1].shape[-2]

    @classmethod
    def from_arrays(
        cls,
        input: np.ndarray | torch.Tensor,
        weights: Sequence[np.ndarray | torch.Tensor],
        biases: Sequence[np.ndarray | torch.Tensor],
        shared: bool = True,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> "NeuralPolicy":
        """Build a network from given arrays (copied), e.g. ``egpo_core.reference_draws.reference_instances``'s.

        Args:
            input: (runs, hidden) inputs v.
            weights: [W_1, …, W_depth], W_k of shape (out_k, in_k) (one set for all runs) or, only
                with ``shared=False``, (runs, out_k, in_k) (per run). W_1 … W_{depth−1} are
                hidden × hidden and W_depth is N × hidden.
            biases: [b_1, …, b_depth], each (out_k,) or (runs, out_k) like the weights.
            shared: keep one set of weights for all runs; with ``shared=False`` 2-D weights are
                copied to every run (independent parameters from then on).
        """
        inp = torch.as_tensor(np.asarray(input) if not isinstance(input, torch.Tensor) else input, dtype=dtype)
        if inp.ndim != 2:
            raise ValueError(f"input must have shape (runs, hidden), got shape {tuple(inp.shape)}")
        if len(weights) != len(biases) or len(weights) == 0:
            raise ValueError(
                f"need the same positive number of weights and biases, got {len(weights)} weights and {len(biases)} biases"
            )
        runs, hidden = inp.shape
        ws = [torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w, dtype=dtype) for w in weights]
        bs = [torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b, dtype=dtype) for b in biases]
        in_dim = hidden
        for k, (w, b) in enumerate(zip(ws, bs)):
            per_run = w.ndim == 3
            if per_run and shared:
                raise ValueError(f"weights[{k}] has a runs axis (shape {tuple(w.shape)}) but shared=True")
            if w.ndim not in (2, 3) or (per_run and w.shape[0] != runs):
                raise ValueError(
                    f"weights[{k}] must have shape (out, {in_dim}) or ({runs}, out, {in_dim}), got shape {tuple(w.shape)}"
                )
            out_dim = w.shape[-2]
            if w.shape[-1] != in_dim:
                raise ValueError(
                    f"weights[{k}] shape {tuple(w.shape)} does not take inputs of width {in_dim} "
                    f"(input shape {tuple(inp.shape)})"
                )
            if k < len(ws) - 1 and out_dim != hidden:
                raise ValueError(f"hidden layer weights[{k}] must be {hidden} × {hidden}, got shape {tuple(w.shape)}")
            expected_b = (runs, out_dim) if per_run else (out_dim,)
            if tuple(b.shape) != expected_b:
                raise ValueError(f"biases[{k}] shape {tuple(b.shape)} does not match weights[{k}] shape {tuple(w.shape)}")
            in_dim = out_dim
        # A private generator: building the skeleton must not advance torch's global random state.
        skeleton_rng = torch.Generator().manual_seed(0)
        policy = cls(runs, ws[-1].shape[-2], hidden, len(ws), shared=shared, generator=skeleton_rng, dtype=dtype)
        with torch.no_grad():
            policy.input.copy_(inp)
            for k, (w, b) in enumerate(zip(ws, bs)):
                policy.weights[k].copy_(w.expand_as(policy.weights[k]))
                policy.biases[k].copy_(b.expand_as(policy.biases[k]))
        return policy if device is None else policy.to(device)

    def logits(self) -> torch.Tensor:
        """Unnormalized output W_depth h_{depth−1} + b_depth, shape (runs, N)."""
        h = self.input
        last = self.depth - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if self.shared:
                h = F.linear(h, w, b)
            else:
                # h_r ← b_r + W_r h_r for every run r, as (runs, 1, in) @ (runs, in, out).
                h = torch.baddbmm(b.unsqueeze(1), h.unsqueeze(1), w.transpose(1, 2)).squeeze(1)
            if k < last:
                h = torch.relu(h)
        return h

    def forward(self) -> torch.Tensor:
        """log π_θ = log_softmax(network output) over actions, shape (runs, N)."""
        return F.log_softmax(self.logits(), dim=-1)
