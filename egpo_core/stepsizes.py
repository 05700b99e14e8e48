"""Step sizes: the mirror-descent step η and the SGD learning rate of the reference implementation.

One plain SGD step with rate lr on the exact Online IPO 1 loss (mean over all N² pairs) is the
mirror-descent step with

    ηβ = 4·lr/N        (derivation: ∇_θ L = (4/N)·center(θ − θ_ref − Pπ/β)).

The Nash-MD mixture coefficient c is ηβ in theory (default). The reference implementation used
c = 2·lr/N, half of that; ``conventions="reference"`` reproduces it.
"""

from __future__ import annotations

from typing import Literal

from .algorithms.base import ConventionSwitches, MixtureRule
from .validation import check_beta, check_count, check_positive

Conventions = Literal["default", "reference"]
CONVENTIONS = ("default", "reference")

__all__ = ["Conventions", "CONVENTIONS", "eta_from_lr", "lr_from_eta", "mixture_coefficient", "check_conventions"]


def eta_from_lr(lr: float, beta: float, num_actions: int) -> float:
    """η = 4·lr / (N β): the mirror-descent step one SGD step of rate ``lr`` takes."""
    lr, beta = check_positive(lr, "lr"), check_beta(beta)
    return 4.0 * lr / (check_count(num_actions, "num_actions") * beta)


def lr_from_eta(eta: float, beta: float, num_actions: int) -> float:
    """lr = η β N / 4: the SGD rate whose step on the exact Online IPO 1 loss is MD with step η."""
    eta, beta = check_positive(eta, "eta"), check_beta(beta)
    return eta * beta * check_count(num_actions, "num_actions") / 4.0


def check_conventions(conventions: str) -> Conventions:
    """Validate a ``conventions`` value ("default" or "reference")."""
    if conventions not in CONVENTIONS:
        raise ValueError(f"conventions must be one of {CONVENTIONS}, got {conventions!r}")
    return conventions  # type: ignore[return-value]


def mixture_coefficient(lr: float, beta: float, num_actions: int, conventions: Conventions = "default") -> float:
    """Nash-MD mixture coefficient c of π_t^c ∝ π_t^{1−c} π_ref^c.

    ``"default"``: c = ηβ = 4·lr/N (the theory's choice). ``"reference"``: c = 2·lr/N, as the
    reference implementation computed it (its ``true_lr·β`` with ``true_lr = 2·lr/(βN)``).
    """
    rule = ConventionSwitches.decode(conventions).mixture_rule
    eta = eta_from_lr(lr, beta, num_actions)
    return eta * beta if rule is MixtureRule.ETA_BETA else 2.0 * lr / num_actions
