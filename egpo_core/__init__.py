"""egpo_core: the algorithm math of Nash learning from human feedback.

Games and preference matrices, equilibria, metrics, every algorithm's update and loss, samplers and
a fast batched simulator. See README.md for a tour.

The package root is lazy: ``import egpo_core.losses`` or ``egpo_core.schemes`` (what the language-model
driver needs) loads neither numba, pandas nor the simulator; ``egpo_core.simulate`` and the other
names below are imported on first access. The functions ``simulate`` and ``sweep`` live in the module
``egpo_core.simulator`` (no submodule shares their name, so importing one never hides the other).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# public name -> submodule that defines it (imported on first attribute access)
_LAZY = {
    "ALGORITHMS": "algorithms",
    "PAPER_ALGORITHMS": "algorithms",
    "Algorithm": "algorithms",
    "get_algorithm": "algorithms",
    "duality_gap": "metrics",
    "exploitability": "metrics",
    "game_value": "metrics",
    "kl_divergence": "metrics",
    "SimulationConfig": "config",
    "SimulationResult": "results",
    "load_result": "results",
    "simulate": "simulator",
    "sweep": "simulator",
    "eta_from_lr": "stepsizes",
    "lr_from_eta": "stepsizes",
    "mixture_coefficient": "stepsizes",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'egpo_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later accesses skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs
    from .algorithms import ALGORITHMS, PAPER_ALGORITHMS, Algorithm, get_algorithm
    from .metrics import duality_gap, exploitability, game_value, kl_divergence
    from .config import SimulationConfig
    from .results import SimulationResult, load_result
    from .simulator import simulate, sweep
    from .stepsizes import eta_from_lr, lr_from_eta, mixture_coefficient
