"""The algorithm registry: every module of this package (except ``base``) declares one algorithm
as ``ALGORITHM``, an :class:`~egpo_core.algorithms.base.Algorithm`, and is registered under its name.

    >>> from egpo_core.algorithms import get_algorithm
    >>> get_algorithm("egpo").scheme
    'extragradient'

Adding an algorithm that recombines existing choices is one new module here, e.g. ``my_method.py``
with the equations in its docstring, a numpy ``closed_form`` and

    ALGORITHM = Algorithm(name="my_method", label="My method", loss="ipo", opponent="mixture",
                          anchor="current", scheme="extragradient", closed_form=closed_form)

Nothing else changes: the torch losses, the schemes and the simulator kernel dispatch on the
declared fields, never on names, and every accepted combination of fields runs the same math in the
kernel as in the losses (tests/test_field_combinations.py); combinations that have no meaning are
refused when the ``Algorithm`` is built. New modules are listed after the eight below, by module
name. Beyond recombining: a new loss, opponent, anchor or scheme is a new member of its vocabulary
in ``base.py`` plus its math in ``egpo_core.losses`` and ``egpo_core._kernel``.
"""

from __future__ import annotations

import importlib
import pkgutil

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

# The order of listings, tables and figure colours; modules not named here follow by module name.
_LISTING_ORDER = ("online_ipo1", "online_ipo2", "nash_md", "nash_md_pg", "egpo", "mpo", "sppo", "omwu")


def _registry() -> dict[str, Algorithm]:
    """Import every algorithm module of the package; name → its ``ALGORITHM``."""
    found = sorted(info.name for info in pkgutil.iter_modules(__path__) if info.name != "base")
    order = [m for m in _LISTING_ORDER if m in found] + [m for m in found if m not in _LISTING_ORDER]
    registry: dict[str, Algorithm] = {}
    for module_name in order:
        module = importlib.import_module(f"{__name__}.{module_name}")
        algorithm = getattr(module, "ALGORITHM", None)
        if not isinstance(algorithm, Algorithm):
            raise ImportError(f"{module.__name__} must declare ALGORITHM = Algorithm(...), got {algorithm!r}")
        if algorithm.name in registry:
            raise ImportError(f"{module.__name__} declares the algorithm name {algorithm.name!r} a second time")
        registry[algorithm.name] = algorithm
    return registry


ALGORITHMS: dict[str, Algorithm] = _registry()


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
