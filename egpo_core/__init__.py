"""egpo_core: the algorithm math of Nash learning from human feedback.

Games and preference matrices, equilibria, metrics, every algorithm's update and loss, samplers and
a fast batched simulator. See README.md for a tour.
"""

from .algorithms import ALGORITHMS, PAPER_ALGORITHMS, Algorithm, get_algorithm
from .metrics import duality_gap, exploitability, game_value, kl_divergence
from .simulate import SimulationResult, simulate, sweep
from .stepsizes import eta_from_lr, lr_from_eta, mixture_coefficient

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "PAPER_ALGORITHMS",
    "Algorithm",
    "get_algorithm",
    "duality_gap",
    "exploitability",
    "game_value",
    "kl_divergence",
    "SimulationResult",
    "simulate",
    "sweep",
    "eta_from_lr",
    "lr_from_eta",
    "mixture_coefficient",
]
