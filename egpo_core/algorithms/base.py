"""What an NLHF algorithm is made of, and the mirror-descent step they share.

Every algorithm here is a few choices around one regression, the Online IPO loss

    L(θ) = E_{(y,y')~μ} [ (ℓ_θ(y) − ℓ_θ(y') − [P(y ≻ σ) − P(y' ≻ σ)]/β)² ],   ℓ_θ = log π_θ − log π_anchor,

whose one SGD step from θ_t (uniform pairs, rate lr) is the mirror-descent step

    MD(π_t; σ):  log π_{t+1} ≐ (1 − ηβ) log π_t + ηβ log π_anchor + η P(· ≻ σ),   ηβ = 4·lr/N.

An :class:`Algorithm` declares its choices (loss family, opponent σ, anchor, scheme) and its exact
tabular update in closed form; the simulator kernel, the torch losses and the LM trainer all read
the same declaration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, Literal

import numpy as np
from scipy.special import log_softmax

# The vocabulary of algorithm choices, defined once. Members are strings ("ipo" == LossFamily.IPO),
# so declarations, configs and tables may use either; the simulator kernel's integer codes are the
# members' positions (egpo_core._kernel).


class LossFamily(StrEnum):
    """The loss: the IPO regression with uniform pairs, with pairs ~ π_t, or the policy gradient."""

    IPO = "ipo"
    IPO2 = "ipo2"
    PG = "pg"


class Opponent(StrEnum):
    """σ in the target (see :data:`OPPONENT_TERMS` for each as target terms)."""

    CURRENT = "current"
    MIXTURE = "mixture"
    OPTIMISTIC = "optimistic"
    PAIRWISE = "pairwise"


class Anchor(StrEnum):
    """The policy inside ℓ_θ = log π_θ − log π_anchor.

    ``MAGNET`` is the one vocabulary for an anchor *refreshed every K updates*: it starts at π_ref and
    becomes π_t at every t > 0 with t % K = 0, K = the simulation's ``magnet_period`` (0: never
    refreshed, the anchor stays π_ref). MPO's magnet and COMAL's proximal-point reference are this
    anchor; they differ only in their loss weight.
    """

    REFERENCE = "reference"
    CURRENT = "current"
    MAGNET = "magnet"


class Scheme(StrEnum):
    """The update scheme around the step: one SGD step, extragradient's two, or the minimiser.

    ``MINIMIZE`` replaces the SGD step by the minimiser over policies of the ordered-pair regression

        Σ_s (f(y_w,s) − f(y_l,s) − η/2)²,   f = log π − [(1 − ηβ) log π_t + ηβ log π_anchor],

    (y_w, y_l) the pairs y, y′ ~ π_t ordered by a Bernoulli(P(y ≻ y′)) judgement (INPO's update). Its
    exact minimiser is the OMD step against π_t toward the anchor, log π_t's SGD step on the exact "ipo"
    regression with uniform pairs at ηβ = 4·lr/N and weight 1; its sampled one is a least-squares solve on
    the step's drawn pairs (:func:`egpo_core.algorithms.inpo.ordered_pair_minimiser`). Declared with the
    "ipo" loss and the "current" opponent only (the minimiser's target is η P(· ≻ π_t)), tabular modes
    only (a network has no closed-form minimiser); the loss weight does not move a minimiser.
    """

    SINGLE = "single"
    EXTRAGRADIENT = "extragradient"
    MINIMIZE = "minimize"


class MixtureRule(StrEnum):
    """The Nash-MD mixture coefficient c when none is given: ηβ = 4·lr/N (the theory's), or 2·lr/N
    (what the paper's reference implementation computed, half of that)."""

    ETA_BETA = "eta_beta"
    HALF_ETA_BETA = "half_eta_beta"


class MixtureNormalization(StrEnum):
    """The axis over which the geometric mixture π^{1−c} π_ref^c is normalized: the actions (a
    distribution per run), or the runs (the reference implementation's sampled Nash-MD; each run then
    samples from its renormalized row)."""

    ACTIONS = "actions"
    RUNS = "runs"


OpponentSource = Literal["current", "mixture", "previous", "pair"]

#: The simulator's modes, ``"{policy}/{gradient}"``: what :attr:`Algorithm.simulated` lists.
SIMULATOR_MODES = ("tabular/exact", "tabular/sampled", "neural/exact", "neural/sampled")

_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")

#: The colour of an algorithm that declares none (one built outside the registry, e.g. in a test).
UNDECLARED_COLOR = "#808080"

__all__ = [
    "LossFamily",
    "Opponent",
    "Anchor",
    "Scheme",
    "MixtureRule",
    "MixtureNormalization",
    "ConventionSwitches",
    "NAMED_CONVENTIONS",
    "Algorithm",
    "UNDECLARED_COLOR",
    "SIMULATOR_MODES",
    "OpponentTerm",
    "OPPONENT_TERMS",
    "mirror_descent_step",
    "geometric_mixture_logits",
    "preference_vector",
    "center",
]


@dataclass(frozen=True)
class OpponentTerm:
    """One term c·[P(y ≻ z) − P(y′ ≻ z)] of the regression target, with z drawn from ``source``:

    * ``"current"``: the policy the opponent is taken at (π_t; π_{t+½} in EGPO's full step);
    * ``"mixture"``: the geometric mixture π^c ∝ π^{1−c} π_ref^c of that policy and π_ref;
    * ``"previous"``: the policy of the previous update, π_{t−1};
    * ``"pair"``: z = y′ itself, so the term is c·[P(y ≻ y′) − ½] (P(y′ ≻ y′) = ½).
    """

    coefficient: float
    source: OpponentSource


#: The opponent of each declared ``Algorithm.opponent`` as target terms. The regression target is
#: Σ_k c_k [P(y ≻ z_k) − P(y′ ≻ z_k)]/β (:func:`egpo_core.losses.regression_target`); the policy
#: gradient's advantage uses Σ_k c_k P(y ≻ z_k). Tabular losses take expectations over each z_k,
#: sampled losses and language models draw one z_k per term.
OPPONENT_TERMS: dict[Opponent, tuple[OpponentTerm, ...]] = {
    Opponent.CURRENT: (OpponentTerm(1.0, "current"),),
    Opponent.MIXTURE: (OpponentTerm(1.0, "mixture"),),
    Opponent.OPTIMISTIC: (OpponentTerm(2.0, "current"), OpponentTerm(-1.0, "previous")),
    Opponent.PAIRWISE: (OpponentTerm(1.0, "pair"),),
}


@dataclass(frozen=True)
class Algorithm:
    """Declaration of one NLHF algorithm.

    Attributes:
        name: registry key, e.g. ``"egpo"``.
        label: display name used in figures and tables, e.g. ``"EGPO"``.
        loss: the regression with uniform pairs, ``"ipo"`` (pairs ~ π_t where a simulation or loss
            asks for policy pairs), or with pairs y, y' ~ π_t, ``"ipo2"``; or ``"pg"``, the policy
            gradient on E_{y~π}[P(y ≻ σ) − β log(π/π_anchor)(y)].
        opponent: σ in the target: ``"current"`` (π_t), ``"mixture"`` (geometric mixture
            π_t^{1−c} π_ref^c), ``"optimistic"`` (2·P(·≻π_t) − P(·≻π_{t−1})), ``"pairwise"`` (y' itself).
        anchor: the policy inside ℓ_θ: ``"reference"`` (π_ref), ``"current"`` (π_t), ``"magnet"``
            (a magnet policy reset to π_t every ``magnet_period`` steps).
        scheme: ``"single"`` (one step) or ``"extragradient"`` (half step against π_t, return to θ_t,
            full step from θ_t against π_{t+½}: the opponent built from π_{t+½} instead of π_t, e.g.
            its mixture; not with the ``"pairwise"`` opponent, which has no policy to replace), or
            ``"minimize"`` (the minimiser of the ordered-pair loss, :class:`Scheme`; with loss "ipo",
            opponent "current" and tabular modes only).

    Every combination of the four choices that is not refused here runs the same math in the
    simulator kernel as in :mod:`egpo_core.losses` (tests/test_field_combinations.py).
        closed_form: exact tabular update ``f(theta, ref_logits, P, eta, beta, **state) -> theta'``.
        loss_weight: multiplier of the loss as a function of ηβ (MPO's proximal step needs 1/(1+ηβ)).
        reference: the paper that introduced it.
        aliases: other names :func:`~egpo_core.algorithms.get_algorithm` accepts for it (the
            reference script's ``eg``, ``nmd``, …), stored lower-case: names match case-insensitively.
        color: its colour in every figure, ``"#rrggbb"`` (the first eight: matplotlib's tab10 in
            listing order; each later one its own); ``None`` for an algorithm declared outside the registry, drawn in
            :data:`UNDECLARED_COLOR`.
        simulated: the simulator modes (:data:`SIMULATOR_MODES`) in which the kernel's update — the
            declared scheme's step(s) on the declared loss — is the algorithm's update; the simulator
            refuses the others (INPO's update, the minimiser of its ordered-pair loss, has the scheme
            "minimize", tabular modes only). Empty: a closed form only; the simulator and the torch
            losses refuse it, and the loss, opponent, anchor and scheme then describe its simplest case only.
        history_length: H, the number of past policies π_t, π_{t−1}, …, π_{t−H+1} (π_t first; policies
            before π_0 are π_0) whose mixture replaces π_t in the "minimize" scheme's anchor (MNPO):

                log π_{t+1} ≐ ηβ log π_anchor + (1 − ηβ) Σ_j λ_j log π_{t−j} + η P(· ≻ π_t);

            1 (the default) is π_t alone, INPO's update. H > 1 needs the scheme "minimize" (the kernel
            keeps a ring of the H last log-policies per trajectory, tabular modes only).
        history_weights: the weights w_0 … w_{H−1} (most recent first, non-negative, positive sum) of
            λ_j = w_j / Σ_i w_i; ``None``: equal weights.
    """

    name: str
    label: str
    loss: LossFamily
    opponent: Opponent
    anchor: Anchor
    scheme: Scheme
    closed_form: Callable[..., np.ndarray] = field(repr=False)
    loss_weight: Callable[[float], float] = field(default=lambda eta_beta: 1.0, repr=False)
    reference: str = ""
    aliases: tuple[str, ...] = ()
    color: str | None = None
    simulated: tuple[str, ...] = SIMULATOR_MODES
    history_length: int = 1
    history_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.aliases, str) or not all(isinstance(a, str) and a.strip() for a in self.aliases):
            raise ValueError(f"algorithm {self.name!r}: aliases must be a tuple of non-empty names, got {self.aliases!r}")
        object.__setattr__(self, "aliases", tuple(a.strip().lower() for a in self.aliases))
        if self.color is not None and not _HEX_COLOR.fullmatch(str(self.color)):
            raise ValueError(f"algorithm {self.name!r}: color must be a hex colour '#rrggbb', got {self.color!r}")
        if isinstance(self.simulated, str) or any(m not in SIMULATOR_MODES for m in self.simulated):
            raise ValueError(f"algorithm {self.name!r}: simulated must be a tuple of modes from "
                             f"{', '.join(SIMULATOR_MODES)}, got {self.simulated!r}")
        object.__setattr__(self, "simulated", tuple(self.simulated))
        # each choice is checked (and stored as its enum member) when the algorithm is declared
        for name, vocabulary in (("loss", LossFamily), ("opponent", Opponent), ("anchor", Anchor), ("scheme", Scheme)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, vocabulary(value))
            except ValueError:
                known = ", ".join(member.value for member in vocabulary)
                raise ValueError(f"algorithm {self.name!r}: unknown {name} {value!r}; known: {known}") from None
        # extragradient's full step replaces the opponent's policy π_t by π_{t+½}; y′ itself has no policy to replace
        if self.scheme is Scheme.EXTRAGRADIENT and self.opponent is Opponent.PAIRWISE:
            raise ValueError(
                f"algorithm {self.name!r}: scheme 'extragradient' steps against the opponent at π_{{t+½}}, "
                "but opponent 'pairwise' (y′ itself) is no policy; use scheme 'single' or another opponent"
            )
        if self.scheme is Scheme.MINIMIZE:
            if self.loss is not LossFamily.IPO or self.opponent is not Opponent.CURRENT:
                raise ValueError(
                    f"algorithm {self.name!r}: scheme 'minimize' is the minimiser of the ordered-pair loss, whose "
                    f"target is η P(· ≻ π_t): it needs loss 'ipo' and opponent 'current', got loss "
                    f"{self.loss.value!r}, opponent {self.opponent.value!r}")
            neural = [m for m in self.simulated if m.startswith("neural/")]
            if neural:
                raise ValueError(
                    f"algorithm {self.name!r}: scheme 'minimize' has a closed-form minimiser for tabular policies "
                    f"only (one SGD step of a network is not it), got simulated={self.simulated!r}")
        self._check_history()

    def _check_history(self) -> None:
        """history_length a whole number ≥ 1 (> 1 with the scheme "minimize" only), history_weights None or
        H non-negative finite numbers with a positive sum (stored as a tuple of floats)."""
        length = self.history_length
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"algorithm {self.name!r}: history_length must be a whole number ≥ 1, got {length!r}")
        object.__setattr__(self, "history_length", int(length))
        if length > 1 and self.scheme is not Scheme.MINIMIZE:
            raise ValueError(f"algorithm {self.name!r}: history_length {length} > 1 needs scheme 'minimize' (only its "
                             f"anchor mixes past policies), got scheme {self.scheme.value!r}")
        if self.history_weights is None:
            return
        try:
            weights = tuple(float(w) for w in self.history_weights)
        except (TypeError, ValueError):
            weights = ()
        if len(weights) != length or not all(np.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"algorithm {self.name!r}: history_weights must be {length} (history_length) non-negative "
                             f"numbers with a positive sum, got history_weights={self.history_weights!r}")
        object.__setattr__(self, "history_weights", weights)

    @property
    def history_lambdas(self) -> np.ndarray:
        """λ_j = w_j / Σ_i w_i, j = 0 … H − 1 (equal weights 1/H without ``history_weights``), float64 (H,)."""
        weights = np.ones(self.history_length) if self.history_weights is None else np.array(self.history_weights)
        return weights / weights.sum()

    @property
    def opponent_terms(self) -> tuple[OpponentTerm, ...]:
        """The target's opponent terms (see :data:`OPPONENT_TERMS`)."""
        return OPPONENT_TERMS[self.opponent]


@dataclass(frozen=True)
class ConventionSwitches:
    """What a simulation's ``conventions`` name decides: three independent switches.

    Attributes:
        mixture_rule: the Nash-MD mixture coefficient c when none is given (:class:`MixtureRule`).
        mixture_normalization: the axis the sampled Nash-MD's mixture is normalized over (the
            sampled "ipo" regression against the "mixture" opponent; every other mixture is
            normalized over actions), see :meth:`normalization_for`.
        shared_network: neural runs share one network's weights (only the learned input differs
            per run), so the runs of an algorithm are coupled through the summed gradient.
    """

    mixture_rule: MixtureRule = MixtureRule.ETA_BETA
    mixture_normalization: MixtureNormalization = MixtureNormalization.ACTIONS
    shared_network: bool = False

    def __post_init__(self) -> None:
        for name, vocabulary in (("mixture_rule", MixtureRule), ("mixture_normalization", MixtureNormalization)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, vocabulary(value))
            except ValueError:
                known = ", ".join(member.value for member in vocabulary)
                raise ValueError(f"unknown {name} {value!r}; known: {known}") from None
        if not isinstance(self.shared_network, bool):
            raise ValueError(f"shared_network must be a bool, got shared_network={self.shared_network!r}")

    @classmethod
    def decode(cls, conventions: "str | ConventionSwitches") -> "ConventionSwitches":
        """The switches of a conventions name (:data:`NAMED_CONVENTIONS`); switches pass through."""
        if isinstance(conventions, cls):
            return conventions
        if isinstance(conventions, str) and conventions in NAMED_CONVENTIONS:
            return NAMED_CONVENTIONS[conventions]
        raise ValueError(f"conventions must be one of {tuple(NAMED_CONVENTIONS)}, got conventions={conventions!r}")

    def normalization_for(self, algorithm: Algorithm, sampled: bool) -> MixtureNormalization:
        """The axis ``algorithm``'s mixture opponent is normalized over: ``mixture_normalization``
        for the sampled "ipo" regression against the mixture (the reference implementation's sampled
        Nash-MD, where its bug was), the actions otherwise."""
        if sampled and algorithm.loss is LossFamily.IPO and algorithm.opponent is Opponent.MIXTURE:
            return self.mixture_normalization
        return MixtureNormalization.ACTIONS


#: The ``conventions=`` names: "default" is the correct behaviour; "reference" reproduces the paper's
#: reference implementation (c = 2·lr/N, its sampled Nash-MD's mixture over runs, one shared network).
NAMED_CONVENTIONS: dict[str, ConventionSwitches] = {
    "default": ConventionSwitches(),
    "reference": ConventionSwitches(MixtureRule.HALF_ETA_BETA, MixtureNormalization.RUNS, shared_network=True),
}


def center(x: np.ndarray) -> np.ndarray:
    """Subtract the mean over actions: logits are defined up to a constant, this fixes one."""
    return x - x.mean(axis=-1, keepdims=True)


def preference_vector(P: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """(Pσ)_y = P(y ≻ σ) = Σ_y' P(y, y') σ(y'), batched over leading axes."""
    return np.einsum("...ij,...j->...i", P, pi)


def geometric_mixture_logits(logits: np.ndarray, ref_logits: np.ndarray, c: float) -> np.ndarray:
    """Logits of the geometric mixture π^c ∝ π^{1−c} π_ref^{c}: (1 − c) log π + c log π_ref."""
    return (1.0 - c) * log_softmax(logits, axis=-1) + c * log_softmax(ref_logits, axis=-1)


def mirror_descent_step(
    logits: np.ndarray, anchor_logits: np.ndarray, preference: np.ndarray, eta: float, beta: float
) -> np.ndarray:
    """MD(π_t; σ): log π_{t+1} ≐ (1 − ηβ) log π_t + ηβ log π_anchor + η P(· ≻ σ).

    ``preference`` is the vector P(· ≻ σ) (or any target potential, e.g. the optimistic one).
    Returns centered logits of π_{t+1}.
    """
    log_pi = log_softmax(logits, axis=-1)
    log_anchor = log_softmax(anchor_logits, axis=-1)
    return center((1.0 - eta * beta) * log_pi + eta * beta * log_anchor + eta * preference)
