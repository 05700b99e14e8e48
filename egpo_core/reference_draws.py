"""The random draws of the EGPO paper's reference implementation, reproduced exactly.

``reference_instances(seed, …)`` returns the games P, the reference logits θ_ref and (for neural
policies) the reference network that the reference code drew after ``torch.manual_seed(seed)``;
the draw order is in its docstring and is pinned by the tests.

torch's CPU ``normal_`` depends on the CPU: on 16 or more values it takes a vectorised Box–Muller
(AVX2/AVX512, SLEEF log and sincos) or a scalar one (std::log, std::cos; CPUs without AVX2, or
``ATEN_CPU_CAPABILITY=default``), whose results differ in the last bits (θ_ref by up to 7e-7).
The draws of the paper presets are therefore stored as data (``egpo_core/reference_data/*.npz``,
the float32 values torch gives on its AVX2 path) and returned for those arguments on every machine;
other arguments are drawn with torch, on the calling CPU's path. torch is imported only for those,
so importing this module, and the presets' draws, need no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_write
from .network import network_logits
from .validation import check_count, validate_preference_matrix

__all__ = ["GameInstances", "REFERENCE_DATA", "reference_instances", "stored_draws_path", "write_draws"]

#: Folder of the stored draws, one ``.npz`` per argument set (see :func:`stored_draws_path`).
REFERENCE_DATA = Path(__file__).parent / "reference_data"


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


def _check_arguments(seed: int, runs: int, num_actions: int, policy: str, hidden_dim: int,
                     depth: int) -> tuple[int, int, int, str, int, int]:
    """The arguments as plain ints, or ``ValueError`` naming the bad one; hidden_dim and depth are
    checked (and kept) for neural policies only, 0 otherwise."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got seed={seed!r}")
    runs = check_count(runs, "runs")
    n = check_count(num_actions, "num_actions")
    if policy == "tabular":
        return int(seed), runs, n, policy, 0, 0
    if policy == "neural":
        return int(seed), runs, n, policy, check_count(hidden_dim, "hidden_dim"), check_count(depth, "depth")
    raise ValueError(f"policy must be 'tabular' or 'neural', got policy={policy!r}")


def stored_draws_path(
    seed: int, runs: int = 10, num_actions: int = 10, policy: str = "tabular", hidden_dim: int = 10, depth: int = 3,
) -> Path:
    """Where the draws for these arguments are (or would be) stored:
    ``REFERENCE_DATA / "tabular-seed{seed}-runs{runs}-n{N}.npz"``, or
    ``"neural-seed{seed}-runs{runs}-n{N}-hidden{hidden_dim}-depth{depth}.npz"``."""
    seed, runs, n, policy, hidden, depth = _check_arguments(seed, runs, num_actions, policy, hidden_dim, depth)
    name = f"{policy}-seed{seed}-runs{runs}-n{n}" + (f"-hidden{hidden}-depth{depth}" if policy == "neural" else "")
    return REFERENCE_DATA / f"{name}.npz"


def _torch_draws(seed: int, runs: int, n: int, policy: str, hidden: int, depth: int) -> dict[str, np.ndarray]:
    """The reference's float32 draws with torch on this CPU (checked arguments): ``"lower"``
    (runs, N(N−1)/2), the strict lower triangles of the ``rand`` draw in ``np.tril_indices`` order,
    and ``"theta"`` (runs, N) for tabular or ``"input"``, ``"weight_0"`` … for neural policies."""
    import torch  # lazy: keep `import egpo_core.games` and the stored presets free of torch

    f32 = torch.float32
    if policy == "tabular":
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        theta = torch.zeros((runs, n, 1), dtype=f32).normal_(0.0, 1.0, generator=gen)
        lower = torch.rand((runs, n, n), dtype=f32, generator=gen)
        draws = {"theta": theta[..., 0].numpy()}
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers = [torch.nn.Linear(hidden, hidden, dtype=f32) for _ in range(depth - 1)]
            layers.append(torch.nn.Linear(hidden, n, dtype=f32))
            inputs = torch.normal(0.0, 1.0, (runs, hidden), dtype=f32)
            with torch.no_grad():
                for layer in layers:
                    torch.nn.init.xavier_normal_(layer.weight)
            lower = torch.rand((runs, n, n), dtype=f32)
        draws = {"input": inputs.numpy()}
        draws |= {f"weight_{i}": layer.weight.detach().numpy() for i, layer in enumerate(layers)}
    rows, cols = np.tril_indices(n, k=-1)
    draws["lower"] = lower.numpy()[:, rows, cols]
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in draws.items()}


def _load_draws(path: Path, runs: int, n: int, policy: str, hidden: int, depth: int) -> dict[str, np.ndarray]:
    """The stored float32 draws, their shapes checked against the arguments."""
    with np.load(path, allow_pickle=False) as data:
        draws = {key: data[key] for key in data.files if key != "drawn_by"}
    shapes = {"lower": (runs, n * (n - 1) // 2)}
    if policy == "tabular":
        shapes["theta"] = (runs, n)
    else:
        shapes["input"] = (runs, hidden)
        shapes |= {f"weight_{i}": (hidden, hidden) for i in range(depth - 1)} | {f"weight_{depth - 1}": (n, hidden)}
    found = {key: (value.shape, value.dtype) for key, value in draws.items()}
    if found != {key: (shape, np.dtype(np.float32)) for key, shape in shapes.items()}:
        raise ValueError(f"stored draws {path} hold {found}, expected float32 arrays of shapes {shapes}")
    return draws


def _instances(draws: dict[str, np.ndarray], n: int, policy: str, depth: int) -> GameInstances:
    """GameInstances from float32 draws: exact float64 copies; P_ij = lower_ij, P_ji = 1 − P_ij
    (i > j), P_ii = ½; neural θ_ref = ``network_logits`` of the network (float64, zero biases)."""
    if policy == "tabular":
        ref_logits = draws["theta"].astype(np.float64)
        network = None
    else:
        weights = [draws[f"weight_{i}"].astype(np.float64) for i in range(depth)]
        network = {"input": draws["input"].astype(np.float64), "weights": weights,
                   "biases": [np.zeros(W.shape[0]) for W in weights]}
        ref_logits = network_logits(network)
    low = draws["lower"].astype(np.float64)
    rows, cols = np.tril_indices(n, k=-1)
    P = np.full((low.shape[0], n, n), 0.5)
    P[:, rows, cols] = low
    P[:, cols, rows] = 1.0 - low
    return GameInstances(P=validate_preference_matrix(P), ref_logits=ref_logits, network=network)


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

    Where :func:`stored_draws_path` of the arguments exists (the paper presets' draws) its float32
    values are used: those of torch's AVX2 ``normal_`` path, the same bytes on every machine.
    Otherwise the draws are made with torch here, and θ_ref, the input and the weights (not P)
    depend on the CPU's ``normal_`` path by up to ~1e-6 (see the module docstring).

    The float32 draws are converted exactly to float64; 1 − P_ij and the network's forward pass are
    computed in float64 (so P + Pᵀ = 1 exactly and ``ref_logits == network_logits(network)``; the
    reference's float32 forward pass agrees to ~1e-6). The caller's torch RNG state is not changed:
    the tabular case uses a private ``torch.Generator`` (same stream as the global one), the neural
    case runs inside ``torch.random.fork_rng``.
    """
    args = _check_arguments(seed, runs, num_actions, policy, hidden_dim, depth)
    _, runs, n, policy, hidden, depth = args
    path = stored_draws_path(*args)
    draws = _load_draws(path, runs, n, policy, hidden, depth) if path.is_file() else _torch_draws(*args)
    return _instances(draws, n, policy, depth)


def write_draws(
    folder: str | Path, seed: int, runs: int = 10, num_actions: int = 10, policy: str = "tabular",
    hidden_dim: int = 10, depth: int = 3,
) -> Path:
    """Draw with torch on this CPU (never from storage) and write the float32 draws to
    ``folder / stored_draws_path(...).name`` atomically, with ``"drawn_by"``: this torch's version
    and CPU path. Returns the path. Run it on an AVX2 or AVX512 CPU
    (``torch.backends.cpu.get_cpu_capability()``) for the stored presets."""
    import torch

    args = _check_arguments(seed, runs, num_actions, policy, hidden_dim, depth)
    target = Path(folder) / stored_draws_path(*args).name
    draws = _torch_draws(*args)
    drawn_by = np.array(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()} CPU path")
    atomic_write(target, lambda f: np.savez_compressed(f, **draws, drawn_by=drawn_by))
    return target
