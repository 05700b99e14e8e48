"""The EGPO paper's policy network (an MLP on a learned input), in numpy: its format, its
initialization, its forward pass and the simulator's flat parameter layout. The simulator's compiled
forward and backward passes (``egpo_core._kernel``) read exactly this layout.

A network is a dict of float arrays:

    "input"    v of shape (runs, hidden)                    (one learned input per run)
    "weights"  [W_1, …, W_depth], W_l of shape (out, in)    (shared by all runs) or (runs, out, in)
               (one per run); W_1 … W_{depth−1} are hidden × hidden, W_depth is N × hidden
    "biases"   [b_1, …, b_depth], each (out,) (shared) or (runs, out) (one per run)

and its policy is π = softmax of

    h_0 = v,   h_l = ReLU(W_l h_{l−1} + b_l)  (l = 1 … depth − 1),   logits = W_depth h_{depth−1} + b_depth.

``reference_draws.reference_instances(..., policy="neural").network`` is the reference
implementation's network (shared weights); :func:`neural_init` draws an independent one per run.
"""

from __future__ import annotations

import math

import numpy as np

from .validation import check_count

__all__ = ["check_network", "network_logits", "neural_init", "network_parameters"]


def check_network(network: dict) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Validate a network dict (format in the module docstring) and return (input, weights, biases)
    as float64 arrays; raises ValueError naming the first inconsistent array."""
    if not isinstance(network, dict) or not {"input", "weights", "biases"} <= set(network):
        found = sorted(network) if isinstance(network, dict) else type(network).__name__
        raise ValueError(f"network must be a dict with 'input', 'weights' and 'biases', got {found}")
    v = np.asarray(network["input"], dtype=np.float64)
    weights = [np.asarray(w, dtype=np.float64) for w in network["weights"]]
    biases = [np.asarray(b, dtype=np.float64) for b in network["biases"]]
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"network input must have shape (runs, hidden), got shape {v.shape}")
    if len(weights) != len(biases) or not weights:
        raise ValueError(f"network needs as many biases as weights (≥ 1), got {len(weights)} and {len(biases)}")
    runs, width = v.shape
    for layer, (W, b) in enumerate(zip(weights, biases)):
        per_run = W.ndim == 3
        if W.ndim not in (2, 3) or (per_run and W.shape[0] != runs) or W.shape[-1] != width:
            raise ValueError(
                f"network weights[{layer}] must have shape (out, {width}) or ({runs}, out, {width}), "
                f"got shape {W.shape}"
            )
        if layer < len(weights) - 1 and W.shape[-2] != v.shape[1]:
            raise ValueError(f"hidden layer weights[{layer}] must be {v.shape[1]} × {v.shape[1]}, got shape {W.shape}")
        if b.shape not in ((W.shape[-2],), (runs, W.shape[-2])):
            raise ValueError(f"network biases[{layer}] has shape {b.shape}, but weights[{layer}] has shape {W.shape}")
        width = W.shape[-2]
    for name, arrays in (("input", [v]), ("weights", weights), ("biases", biases)):
        for array in arrays:
            if not np.isfinite(array).all():
                raise ValueError(f"network {name} must be finite")
    return v, weights, biases


def network_logits(network: dict) -> np.ndarray:
    """Forward pass in float64, batched over the runs (rows of ``network["input"]``):

        h_0 = v,  h_l = ReLU(W_l h_{l−1} + b_l) (l < depth),  logits = W_depth h_{depth−1} + b_depth.

    Weights shared by all runs ((out, in)) or one per run ((runs, out, in)). Returns (runs, N).
    Each output is summed in one fixed order, b_o + W_o0 h_0 + W_o1 h_1 + …, every product rounded
    before it is added (elementwise numpy, no BLAS, no fused multiply-add): the same bits on every
    CPU, and those of the simulator kernel's forward pass.
    """
    h, weights, biases = check_network(network)
    for layer, (W, b) in enumerate(zip(weights, biases)):
        out = np.broadcast_to(b, h.shape[:-1] + W.shape[-2:-1]).copy()  # (runs, out)
        for i in range(W.shape[-1]):
            out += W[..., :, i] * h[..., i, None]
        h = np.maximum(out, 0.0) if layer < len(weights) - 1 else out
    return h


def neural_init(runs: int, num_actions: int, hidden_dim: int = 10, depth: int = 3, seed: int = 0) -> dict:
    """An independent network per run (weights with a leading runs axis), the paper's initialization:

        W_l ~ N(0, 2/(fan_in + fan_out)) (Xavier normal),   b_l = 0,   v ~ N(0, 1).

    Drawn from ``np.random.default_rng(seed)`` in this order: W_1, …, W_depth, then v.
    """
    runs = check_count(runs, "runs")
    num_actions = check_count(num_actions, "num_actions")
    hidden_dim = check_count(hidden_dim, "hidden_dim")
    depth = check_count(depth, "depth")
    rng = np.random.default_rng(seed)
    dims = [hidden_dim] * depth + [num_actions]
    weights = [
        rng.normal(0.0, math.sqrt(2.0 / (dims[i] + dims[i + 1])), size=(runs, dims[i + 1], dims[i]))
        for i in range(depth)
    ]
    return {
        "input": rng.normal(size=(runs, hidden_dim)),
        "weights": weights,
        "biases": [np.zeros((runs, w.shape[1])) for w in weights],
    }


def network_parameters(network: dict, runs: int, num_actions: int) -> tuple[np.ndarray, int, int]:
    """The simulator's flat layout: row r = [v_r, vec(W_1), b_1, …, vec(W_depth), b_depth] (each W
    row-major (out, in), shared weights copied to every run). Returns (params (runs, npar), hidden,
    number of hidden layers = depth − 1)."""
    v, weights, biases = check_network(network)
    if v.shape[0] != runs:
        raise ValueError(f"network input has {v.shape[0]} runs, the games have {runs}")
    if weights[-1].shape[-2] != num_actions:
        raise ValueError(f"network output size {weights[-1].shape[-2]} != number of actions {num_actions}")
    pieces = [v]
    for W, b in zip(weights, biases):
        pieces += [np.broadcast_to(W, (runs,) + W.shape[-2:]).reshape(runs, -1), np.broadcast_to(b, (runs,) + b.shape[-1:])]
    return np.concatenate(pieces, axis=1), v.shape[1], len(weights) - 1
