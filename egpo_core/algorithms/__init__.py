"""The algorithm registry: one module per algorithm, each exporting ``ALGORITHM``.

    >>> from egpo_core.algorithms import get_algorithm
    >>> get_algorithm("egpo").scheme
    'extragradient'
"""

from __future__ import annotations

from . import egpo, mpo, nash_md, nash_md_pg, omwu, online_ipo1, online_ipo2, sppo
from .base import (
    NAMED_CONVENTIONS,
    OPPONENT_TERMS,
    Algorithm,
    Anchor,
    ConventionSwitches,
    LossFamily,
    MixtureNormalization,
    MixtureRule,
    Opponent,
    Scheme,
    OpponentTerm,
    center,
    geometric_mixture_logits,
    mirror_descent_step,
    preference_vector,
)

#: The five algorithms of the EGPO paper, in its order.
PAPER_ALGORITHMS = ("oipo1", "oipo2", "nash_md", "nash_md_pg", "egpo")

ALGORITHMS: dict[str, Algorithm] = {
    module.ALGORITHM.name: module.ALGORITHM
    for module in (online_ipo1, online_ipo2, nash_md, nash_md_pg, egpo, mpo, sppo, omwu)
}


def get_algorithm(name: str | Algorithm) -> Algorithm:
    """Look an algorithm up by name; raises ``ValueError`` listing the known names."""
    if isinstance(name, Algorithm):
        return name
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}") from None


__all__ = [
    "Algorithm",
    "LossFamily",
    "Opponent",
    "Anchor",
    "Scheme",
    "MixtureRule",
    "MixtureNormalization",
    "ConventionSwitches",
    "NAMED_CONVENTIONS",
    "OpponentTerm",
    "OPPONENT_TERMS",
    "ALGORITHMS",
    "PAPER_ALGORITHMS",
    "get_algorithm",
    "center",
    "geometric_mixture_logits",
    "mirror_descent_step",
    "preference_vector",
]
