"""The six simulation settings of the EGPO paper (SPEC §4), with the reference implementation's games.

    >>> from egpo_core.presets import get_preset
    >>> res = get_preset("exact-tabular-beta0.01").run()
    >>> res.summary()                    # median final gap and runs reaching 1e-6, per algorithm

Each preset draws its games with :func:`egpo_core.games.reference_instances` from the paper's seed,
so results compare run by run with the reference implementation's. ``REFERENCE_MEDIANS`` holds the
reference implementation's median final gaps (CPU re-run, SPEC §4) for side-by-side tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from .algorithms import PAPER_ALGORITHMS
from .games import GameInstances, reference_instances
from .simulate import SimulationResult, simulate

PAPER_SEED = 2018011309

__all__ = ["Preset", "PRESETS", "PAPER_SEED", "REFERENCE_MEDIANS", "get_preset", "presets_table"]


@dataclass(frozen=True)
class Preset:
    """One paper setting.

    Attributes:
        name: CLI name, e.g. ``"exact-tabular-beta0.01"``.
        policy: "tabular" (N = 10 logits) or "neural" (N = 100, the SPEC §4 network).
        gradient: "exact" or "sampled" (``num_samples`` draws per step).
        beta: regularization β.
        iterations: number of updates.
        lr: the reference implementation's SGD learning rate (η = 4·lr/(Nβ)).
        num_actions: N.
        runs: games per seed.
        seed: the paper's seed.
        num_samples: samples per step in sampled mode.
        fast_iterations: the shortened horizon used by ``fast=True`` (tests, quick looks).
    """

    name: str
    policy: str
    gradient: str
    beta: float
    iterations: int
    lr: float
    num_actions: int
    runs: int = 10
    seed: int = PAPER_SEED
    num_samples: int = 100
    fast_iterations: int = 200

    def instances(self) -> GameInstances:
        """The games and reference policies the reference implementation drew for this setting."""
        return reference_instances(self.seed, self.runs, self.num_actions, self.policy)

    def run(
        self,
        algorithms: Sequence[str] = PAPER_ALGORITHMS,
        *,
        conventions: str = "default",
        fast: bool = False,
        iterations: int | None = None,
        **options,
    ) -> SimulationResult:
        """Simulate this setting; ``options`` go to :func:`egpo_core.simulate.simulate`."""
        inst = self.instances()
        horizon = iterations if iterations is not None else (self.fast_iterations if fast else self.iterations)
        return simulate(
            inst.P, inst.ref_logits, algorithms, beta=self.beta, lr=self.lr, iterations=horizon,
            policy=self.policy, gradient=self.gradient, num_samples=self.num_samples,
            conventions=conventions, seed=self.seed, network=inst.network, **options,
        )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("exact-tabular-beta0.1", "tabular", "exact", 0.1, 1_000, 0.1, 10),
        Preset("exact-tabular-beta0.01", "tabular", "exact", 0.01, 5_000, 0.02, 10),
        Preset("exact-tabular-beta0.001", "tabular", "exact", 0.001, 100_000, 2e-4, 10, fast_iterations=2_000),
        Preset("exact-neural-beta0.01", "neural", "exact", 0.01, 10_000, 0.003, 100),
        Preset("sampled-tabular-beta0.01", "tabular", "sampled", 0.01, 100_000, 2e-4, 10, fast_iterations=2_000),
        Preset("sampled-neural-beta0.1", "neural", "sampled", 0.1, 20_000, 1e-3, 100),
    ]
}

#: Median final duality gap over the 10 runs, reference implementation on CPU (SPEC §4);
#: 0.0 stands for "~0". In brackets there: runs reaching 1e-6, here ``REFERENCE_REACHED``.
REFERENCE_MEDIANS: dict[str, dict[str, float]] = {
    "exact-tabular-beta0.1": {"oipo1": 0.0, "oipo2": 9e-8, "nash_md": 1.5e-5, "nash_md_pg": 1.5e-2, "egpo": 0.0},
    "exact-tabular-beta0.01": {"oipo1": 9.6e-5, "oipo2": 0.13, "nash_md": 4.3e-5, "nash_md_pg": 0.26, "egpo": 0.0},
    "exact-tabular-beta0.001": {"oipo1": 5.2e-2, "oipo2": 0.59, "nash_md": 5.1e-2, "nash_md_pg": 0.31, "egpo": 2.4e-7},
    "exact-neural-beta0.01": {"oipo1": 6.5e-4, "oipo2": 1.2e-2, "nash_md": 5.1e-4, "nash_md_pg": 7.0e-2, "egpo": 3.5e-5},
    "sampled-tabular-beta0.01": {"oipo1": 3.2e-3, "oipo2": 2.1e-3, "nash_md": 0.20, "nash_md_pg": 0.26, "egpo": 1.8e-3},
    "sampled-neural-beta0.1": {"oipo1": 2.8e-3, "oipo2": 2.5e-3, "nash_md": 3.4e-3, "nash_md_pg": 7.0e-3, "egpo": 2.9e-3},
}
REFERENCE_REACHED: dict[str, dict[str, int]] = {
    "exact-tabular-beta0.1": {"oipo1": 10, "oipo2": 8, "egpo": 10},
    "exact-tabular-beta0.01": {"oipo1": 4, "nash_md": 3, "egpo": 10},
    "exact-tabular-beta0.001": {"oipo1": 1, "egpo": 10},
}


def get_preset(name: str) -> Preset:
    """Look a preset up by name; raises ``ValueError`` listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def presets_table() -> pd.DataFrame:
    """One row per preset: its setting and the implied mirror-descent step η = 4·lr/(Nβ)."""
    rows = []
    for p in PRESETS.values():
        rows.append(
            {
                "name": p.name, "policy": p.policy, "gradient": p.gradient, "beta": p.beta,
                "iterations": p.iterations, "lr": p.lr, "eta": 4 * p.lr / (p.num_actions * p.beta),
                "N": p.num_actions, "runs": p.runs, "seed": p.seed,
            }
        )
    return pd.DataFrame(rows)
