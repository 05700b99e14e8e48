"""The random draws of the EGPO paper's reference implementation, reproduced exactly.

``reference_instances(seed, …)`` returns the games P, the reference logits θ_ref and (for neural
policies) the reference network that the reference code drew after ``torch.manual_seed(seed)``;
the draw order is in its docstring and is pinned by the tests. torch is imported only when it is
called, so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .network import network_logits
from .validation import check_count, validate_preference_matrix

__all__ = ["GameInstances", "reference_instances"]


@dataclass(frozen=True, eq=False)
class GameInstances:
    """Games and reference policies as drawn by the paper's reference implementation.

    Attributes:
        P: (runs, N, N) float64 preference matrices.
        ref_logits: (runs, N) float64 logits of π_ref.
        network: ``None`` for tabular policies; for neural ones a network dict (``egpo_core.network``) with ``"input"`` (runs, hidden),
            ``"weights"`` [W_1, …, W_depth] (W_l of shape (out, in), the last (N, hidden)) and
            ``"biases"`` [b_1, …, b_depth] (zeros), all float64. The weights are shared by all runs,
            only the input differs; ``ref_logits == network_logits(network)``.
    """

    P: np.ndarray
    ref_logits: np.ndarray
    network: dict | None = None


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
    runs = check_count(runs, "runs")
    n = check_count(num_actions, "num_actions")
    f32 = torch.float32

    if policy == "tabular":
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        logits = torch.zeros((runs, n, 1), dtype=f32).normal_(0.0, 1.0, generator=gen)
        lower = torch.rand((runs, n, n), dtype=f32, generator=gen)
        ref_logits = logits[..., 0].numpy().astype(np.float64)
        network = None
    elif policy == "neural":
        hidden = check_count(hidden_dim, "hidden_dim")
        depth = check_count(depth, "depth")
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
