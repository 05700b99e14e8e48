"""The algorithm registry: every module of this package (except ``base``) declares one algorithm
as ``ALGORITHM``, an :class:`~egpo_core.algorithms.base.Algorithm`, and is registered under its name.

    >>> from egpo_core.algorithms import get_algorithm
    >>> get_algorithm("egpo").scheme
    'extragradient'

Adding an algorithm that recombines existing choices is one new module here, e.g. ``my_method.py``
with the equations in its docstring, a numpy ``closed_form`` and

    ALGORITHM = Algorithm(name="my_method", label="My method", aliases=("mm",), color="#17becf",
                          loss="ipo", opponent="mixture", anchor="current", scheme="extragradient",
                          closed_form=closed_form)

The module is the one place its name, aliases, display name and figure colour are declared:
:func:`get_algorithm` accepts the name or any alias case-insensitively, and every figure and command
line reads :func:`display_name` and :func:`algorithm_color`. Nothing else changes: the torch losses, the schemes and the simulator kernel dispatch on the
declared fields, never on names, and every accepted combination of fields runs the same math in the
kernel as in the losses (tests/test_field_combinations.py); combinations that have no meaning are
refused when the ``Algorithm`` is built. New modules are listed after the eight below, by module
name (COMAL, INPO, MNPO, Nash-MP, ONPO). Beyond recombining: a new loss, opponent, anchor or scheme is a new
member of its vocabulary in ``base.py`` plus its math in ``egpo_core.losses`` and ``egpo_core._kernel``.

An algorithm whose update is not one SGD step on its declared loss in some simulator mode says so in
``simulated`` (the modes where it is): INPO's update is the minimiser of its ordered-pair loss (scheme
"minimize"), which the kernel computes for tabular policies only; so is MNPO's, whose anchor mixes a history of
H past policies (``Algorithm.history_length``, ``history_weights``; the kernel keeps a ring of them). The simulator
refuses the other modes in one line, and ``--algorithms``' help lists the algorithms that run, with their modes
when not all four.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    NAMED_CONVENTIONS,
    OPPONENT_TERMS,
    SIMULATOR_MODES,
    UNDECLARED_COLOR,
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
        taken = {key: other.name for other in registry.values() for key in (other.name.lower(), *other.aliases)}
        for key in (algorithm.name.lower(), *algorithm.aliases):
            if key in taken:
                raise ImportError(f"{module.__name__}: the name or alias {key!r} of {algorithm.name!r} is already "
                                  f"taken by {taken[key]!r}")
        registry[algorithm.name] = algorithm
    return registry


ALGORITHMS: dict[str, Algorithm] = _registry()


def _known() -> str:
    """``oipo1 (online_ipo1), …, egpo (eg), mpo, …``: every name with its aliases, for error messages."""
    return ", ".join(f"{a.name} ({', '.join(a.aliases)})" if a.aliases else a.name for a in ALGORITHMS.values())


def get_algorithm(name: str | Algorithm) -> Algorithm:
    """Look an algorithm up by its registry name or any of its aliases, case-insensitively
    (``"EGPO"``, ``"eg"``, ``"nmd"``, ``"nashmdpg"``, ``"online_ipo1"`` …); an :class:`Algorithm`
    passes through. Raises ``ValueError`` listing the names and their aliases."""
    if isinstance(name, Algorithm):
        return name
    found = ALGORITHMS.get(name)
    if found is not None:
        return found
    key = name.strip().lower() if isinstance(name, str) else None
    for algorithm in ALGORITHMS.values():
        if key == algorithm.name.lower() or key in algorithm.aliases:
            return algorithm
    raise ValueError(f"unknown algorithm {name!r}; known: {_known()}")


_RAISE = object()


def _declared(name: str | Algorithm, default: object) -> Algorithm | None:
    """The algorithm called ``name``; None when it is unknown and a ``default`` was given."""
    try:
        return get_algorithm(name)
    except ValueError:
        if default is _RAISE:
            raise
        return None


def algorithm_color(name: str | Algorithm, default: str | object = _RAISE) -> str:
    """The colour ``"#rrggbb"`` every figure draws the algorithm ``name`` (a name or an alias) in: the
    one its module declares (:data:`UNDECLARED_COLOR` for an algorithm declared without one). An
    unknown name raises ``ValueError``, or gives ``default`` when one is passed (figures whose series
    are not all algorithms)."""
    algorithm = _declared(name, default)
    if algorithm is None:
        return default  # type: ignore[return-value]
    return algorithm.color or UNDECLARED_COLOR


def display_name(name: str | Algorithm, default: str | object = _RAISE) -> str:
    """The algorithm's display name in figures and tables (its ``label``: ``"nmdpg"`` → ``"Nash-MD-PG"``).
    An unknown name raises ``ValueError``, or gives ``default`` when one is passed."""
    algorithm = _declared(name, default)
    if algorithm is None:
        return default  # type: ignore[return-value]
    return algorithm.label


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
    "algorithm_color",
    "display_name",
    "UNDECLARED_COLOR",
    "SIMULATOR_MODES",
    "center",
    "geometric_mixture_logits",
    "mirror_descent_step",
    "preference_vector",
]
