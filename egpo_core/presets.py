"""The six simulation settings of the EGPO paper, as named configurations with the reference
implementation's games.

    >>> from egpo_core.presets import get_preset
    >>> preset = get_preset("exact-tabular-beta0.01")
    >>> preset.config                    # a SimulationConfig: beta=0.01, lr=0.02, iterations=5000, ...
    >>> res = preset.run()               # or preset.run(["egpo"], conventions="reference", fast=True)
    >>> res.summary()                    # median final gap and runs reaching 1e-6, per algorithm

Each preset draws its games with :func:`egpo_core.reference_draws.reference_instances` from the paper's seed,
so results compare run by run with the reference implementation's. Those draws are stored as data
(``egpo_core/reference_data``, written by :func:`write_preset_draws` on torch's AVX2 path), so the presets'
inputs, and their results, are the same on every CPU and need no torch. ``REFERENCE_MEDIANS`` holds the
reference implementation's median final gaps (its CPU re-run) for side-by-side tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .config import SimulationConfig
from .reference_draws import REFERENCE_DATA, GameInstances, reference_instances, stored_draws_path, write_draws
from .results import SimulationResult
from .simulator import simulate
from .stepsizes import eta_from_lr

PAPER_SEED = 2018011309

__all__ = ["Preset", "PRESETS", "PAPER_SEED", "REFERENCE_MEDIANS", "REFERENCE_REACHED", "get_preset", "presets_table",
           "write_preset_draws"]


@dataclass(frozen=True)
class Preset:
    """One paper setting: a named :class:`~egpo_core.config.SimulationConfig` and its games.

    Attributes:
        name: CLI name, e.g. ``"exact-tabular-beta0.01"``.
        config: the setting (policy, gradient, beta, lr, iterations, seed = the paper's, num_samples).
        num_actions: N.
        runs: games drawn from the seed.
        fast_iterations: the shortened horizon used by ``fast=True`` (tests, quick looks).
    """

    name: str
    config: SimulationConfig
    num_actions: int
    runs: int = 10
    fast_iterations: int = 200

    # The config's fields most read about a preset, for tables and loops.
    policy = property(lambda self: self.config.policy)
    gradient = property(lambda self: self.config.gradient)
    beta = property(lambda self: self.config.beta)
    lr = property(lambda self: self.config.lr)
    iterations = property(lambda self: self.config.iterations)
    seed = property(lambda self: self.config.seed)
    num_samples = property(lambda self: self.config.num_samples)

    def draw_arguments(self) -> tuple[int, int, int, str, int, int]:
        """``reference_instances``'s arguments for this setting: seed, runs, N, policy, hidden_dim, depth."""
        return self.seed, self.runs, self.num_actions, self.policy, self.config.hidden_dim, self.config.depth

    def instances(self) -> GameInstances:
        """The games and reference policies the reference implementation drew for this setting. The paper's
        settings read them from their stored file (a missing file is an error: a torch draw here could
        differ by CPU); a setting changed to other runs or another seed draws them with torch on this CPU."""
        arguments = self.draw_arguments()
        path = stored_draws_path(*arguments)
        if not path.is_file() and arguments in {preset.draw_arguments() for preset in PRESETS.values()}:
            raise FileNotFoundError(f"preset {self.name}: its stored draws {path} are missing (an installation "
                                    "without egpo_core's package data?); reinstall egpo, or write_preset_draws()")
        return reference_instances(*arguments)

    def configure(self, *, fast: bool = False, **changes: Any) -> SimulationConfig:
        """This preset's config with ``changes`` (config fields; ``None`` values are ignored), or
        its short horizon when ``fast``. The policy is refused: the games are drawn for it."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if fast:
            if "iterations" in changes:
                raise ValueError(f"give fast or iterations, not both (fast means iterations={self.fast_iterations})")
            changes["iterations"] = self.fast_iterations
        if changes.get("policy", self.policy) != self.policy:
            raise ValueError(f"preset {self.name} has policy={self.policy!r} (its games are drawn for it), got "
                             f"policy={changes['policy']!r}: use a games file or other arrays for another policy")
        return self.config.replace(**changes)

    def run(
        self,
        algorithms: Sequence[str] | str | None = None,
        *,
        fast: bool = False,
        progress: bool = True,
        **changes: Any,
    ) -> SimulationResult:
        """Simulate this setting; ``changes`` are config fields (conventions, iterations, metrics, ...)."""
        config = self.configure(fast=fast, algorithms=algorithms, **changes)
        inst = self.instances()
        result = simulate(inst.P, inst.ref_logits, config, network=inst.network, progress=progress)
        result.provenance["games"] = {"source": "preset", "preset": self.name, "seed": self.seed, "runs": self.runs,
                                      "num_actions": self.num_actions}
        result.provenance["call"] = f"egpo_core.presets.get_preset({self.name!r}).run(...) with {config!r}"
        return result


def _preset(name: str, policy: str, gradient: str, beta: float, iterations: int, lr: float, num_actions: int,
            fast_iterations: int = 200) -> Preset:
    config = SimulationConfig(beta=beta, lr=lr, iterations=iterations, policy=policy, gradient=gradient, seed=PAPER_SEED)
    return Preset(name, config, num_actions, fast_iterations=fast_iterations)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        _preset("exact-tabular-beta0.1", "tabular", "exact", 0.1, 1_000, 0.1, 10),
        _preset("exact-tabular-beta0.01", "tabular", "exact", 0.01, 5_000, 0.02, 10),
        _preset("exact-tabular-beta0.001", "tabular", "exact", 0.001, 100_000, 2e-4, 10, fast_iterations=2_000),
        _preset("exact-neural-beta0.01", "neural", "exact", 0.01, 10_000, 0.003, 100),
        _preset("sampled-tabular-beta0.01", "tabular", "sampled", 0.01, 100_000, 2e-4, 10, fast_iterations=2_000),
        _preset("sampled-neural-beta0.1", "neural", "sampled", 0.1, 20_000, 1e-3, 100),
    ]
}

#: Median final duality gap over the 10 runs, reference implementation on CPU;
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


def write_preset_draws(folder: str | Path = REFERENCE_DATA) -> list[Path]:
    """Draw every preset's games with torch on this CPU and write them to ``folder``
    (:func:`~egpo_core.reference_draws.write_draws`), one file per distinct argument set; returns the
    paths. ``egpo_core/reference_data`` was written so, with torch 2.13.0 on its AVX2 path."""
    arguments = dict.fromkeys(p.draw_arguments() for p in PRESETS.values())
    return [write_draws(folder, *args) for args in arguments]


def presets_table() -> pd.DataFrame:
    """One row per preset: its setting and the implied mirror-descent step η = 4·lr/(Nβ)."""
    rows = []
    for p in PRESETS.values():
        rows.append(
            {
                "name": p.name, "policy": p.policy, "gradient": p.gradient, "beta": p.beta,
                "iterations": p.iterations, "lr": p.lr, "eta": eta_from_lr(p.lr, p.beta, p.num_actions),
                "N": p.num_actions, "runs": p.runs, "seed": p.seed,
            }
        )
    return pd.DataFrame(rows)
