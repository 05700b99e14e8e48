"""One simulation's settings: :class:`SimulationConfig`, validated once when it is built.

    >>> from egpo_core.config import SimulationConfig
    >>> config = SimulationConfig(algorithms=["egpo", "oipo1"], beta=0.01, lr=0.02, iterations=5000)
    >>> config.to_dict()["eta"] is None        # stored as given; the simulator derives η = 4·lr/(Nβ)
    True

Everything a run needs besides its data (the games ``P``, ``ref_logits``, optional ``init_logits`` and
``network``) is a field here; ``simulate``, ``sweep``, the presets and the command line all build one,
and ``run.json`` is its :meth:`~SimulationConfig.to_dict`. Each field's documentation is the string
under it (read by :func:`field_docs`, which the command line uses as help text).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import numbers
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, Literal

from .algorithms import ALGORITHMS, PAPER_ALGORITHMS, Algorithm, get_algorithm
from .stepsizes import check_conventions
from .validation import check_count, check_positive

METRICS = ("duality_gap", "exploitability", "kl_to_equilibrium", "average_duality_gap", "average_exploitability")

__all__ = ["SimulationConfig", "METRICS", "field_docs"]


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """The settings of one simulation (data excluded); see each field's documentation."""

    algorithms: tuple[str | Algorithm, ...] = PAPER_ALGORITHMS
    """Algorithms to run, names from ``egpo_core.algorithms.ALGORITHMS`` (or Algorithm objects); one string is one name."""
    beta: float
    """KL-regularization strength β > 0."""
    lr: float | None = None
    """SGD learning rate of the reference implementation (η = 4·lr/(Nβ)); give exactly one of lr and eta."""
    eta: float | None = None
    """Mirror-descent step η (lr = ηβN/4 is derived); give exactly one of lr and eta."""
    iterations: int
    """Number of updates T; metrics are recorded for π_0 … π_T."""
    policy: Literal["tabular", "neural"] = "tabular"
    """'tabular' (the logits are the parameters) or 'neural' (the paper's MLP, input → hidden layers → N logits)."""
    gradient: Literal["exact", "sampled"] = "exact"
    """'exact' (expectations over all pairs) or 'sampled' (num_samples draws per step)."""
    num_samples: int = 100
    """Responses drawn per step with gradient='sampled'."""
    conventions: Literal["default", "reference"] = "default"
    """'default' (Nash-MD mixture c = ηβ, mixtures over actions, a network per run) or 'reference' (the paper's code)."""
    seed: int = 0
    """Seed (a non-negative integer) of the sampling streams and of a random network's initialization."""
    mixture: float | None = None
    """Nash-MD mixture coefficient c in [0, 1]; None: ηβ ('default') or 2·lr/N ('reference')."""
    hidden_dim: int = 10
    """Width of a random network's hidden layers (policy='neural' without a given network)."""
    depth: int = 3
    """Number of weight matrices of a random network (policy='neural' without a given network)."""
    pair_sampling: Literal["uniform", "policy"] = "uniform"
    """Pairs y, y′ of the ipo-family losses: 'uniform' over actions or drawn from π_t ('policy'), exact or sampled.
    Not read by the scheme 'minimize' (INPO), whose pairs are π_t's by definition and whose exact minimiser does not depend on them."""
    magnet_period: int = 0
    """Refresh period K of the 'magnet' anchor (MPO's magnet, COMAL's reference): π_t replaces it every K updates (0: it stays π_ref)."""
    history_length: int | None = None
    """H: past policies mixed into the anchor of the algorithms that read a history (MNPO): log π_{t+1} ≐ ηβ log π_ref + (1 − ηβ) Σ_j λ_j log π_{t−j} + η P(·≻π_t) (None: each one's declared H; MNPO's is 2, its authors' trainer's)."""
    history_weights: tuple[float, ...] | None = None
    """Weights w_j of those H past policies, most recent first, λ_j = w_j/Σw (None: equal; given alone, H is their number)."""
    record_every: int = 1
    """Record the metrics every k-th update (and always the last)."""
    metrics: tuple[str, ...] = ("duality_gap",)
    """Metrics to record, from METRICS; duality_gap is always recorded; one string is one name."""
    dtype: Literal["float64", "float32"] = "float64"
    """Precision of the games P: 'float64', or 'float32' (exact gradients: the products Pσ = ½Σσ + (P − ½)σ from
    P − ½'s upper triangle in float32, float32 fused multiply-adds and short float32 sums accumulated in
    float64, a quarter of float64's bytes per product (``_kernel._panel_product``); sampled gradients: P's
    entries in float32; logits, gradients and metrics stay float64). Gap curves agree with float64's to a
    relative 1e-4 where the gap exceeds 1e-6 for EGPO, Online IPO 1 and Nash-MD (tests/test_kernel_float32.py,
    N = 40, β = 0.01; Online IPO 2 there up to 1.6e-4, which is the game's rounding to float32: float64 on the
    float32-rounded game deviates 2.1e-4; the N = 1000 benchmark's EGPO 5e-8)."""

    def __post_init__(self) -> None:
        def set_field(name: str, value: Any) -> None:  # frozen: normalized values go through object's setter
            object.__setattr__(self, name, value)

        set_field("algorithms", _algorithms(self.algorithms))
        self._take_history_from_objects()
        if self.history_weights is not None:
            weights = _names("history_weights", self.history_weights)
            if not all(isinstance(w, numbers.Real) and not isinstance(w, bool) for w in weights):
                raise ValueError(f"history_weights must be numbers, got history_weights={self.history_weights!r}")
            set_field("history_weights", tuple(float(w) for w in weights))
            if self.history_length is None:
                set_field("history_length", len(self.history_weights))
        if self.history_length is not None:
            set_field("history_length", check_count(self.history_length, "history_length", 1))
            if not any(_reads_history(a) for a in self.algorithms):
                raise ValueError(f"history_length={self.history_length}: no selected algorithm reads a history of past "
                                 "policies (MNPO does)")
        set_field("beta", check_positive(self.beta, "beta"))
        if (self.lr is None) == (self.eta is None):
            raise ValueError(
                f"give exactly one of lr (SGD learning rate) and eta (mirror-descent step), got lr={self.lr!r}, eta={self.eta!r}"
            )
        for name in ("lr", "eta"):
            if getattr(self, name) is not None:
                set_field(name, check_positive(getattr(self, name), name))
        if self.mixture is not None:
            set_field("mixture", _unit_interval("mixture", self.mixture))
        for name, choices in (("policy", ("tabular", "neural")), ("gradient", ("exact", "sampled")),
                              ("pair_sampling", ("uniform", "policy")), ("dtype", ("float64", "float32"))):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {name}={getattr(self, name)!r}")
        check_conventions(self.conventions)
        mode = f"{self.policy}/{self.gradient}"
        for algorithm in self.algorithm_objects():
            if not algorithm.simulated:
                raise ValueError(f"{algorithm.name} has no simulator form, only a closed form "
                                 f"(see egpo_core.algorithms.{algorithm.name})")
            if mode not in algorithm.simulated:
                raise ValueError(f"{algorithm.name} is simulated in the mode(s) {', '.join(algorithm.simulated)} only, "
                                 f"got policy={self.policy!r}, gradient={self.gradient!r} (see egpo_core.algorithms.{algorithm.name})")
        for name, minimum in (("iterations", 1), ("num_samples", 1), ("hidden_dim", 1), ("depth", 1),
                              ("record_every", 1), ("magnet_period", 0), ("seed", 0)):
            set_field(name, check_count(getattr(self, name), name, minimum))
        set_field("metrics", _metrics(self.metrics))

    def replace(self, **changes: Any) -> SimulationConfig:
        """A copy with ``changes`` applied and validated; giving ``lr`` clears ``eta`` and vice versa."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}; options: {', '.join(f.name for f in fields(self))}")
        if changes.get("lr") is not None and "eta" not in changes:
            changes["eta"] = None
        if changes.get("eta") is not None and "lr" not in changes:
            changes["lr"] = None
        return dataclasses.replace(self, **changes)

    def algorithm_objects(self) -> list[Algorithm]:
        """The algorithms as :class:`~egpo_core.algorithms.Algorithm` objects, in order; those that read a
        history of past policies with ``history_length``/``history_weights`` when given (ValueError, one line,
        for weights that are not H non-negative numbers with a positive sum)."""
        objects = [get_algorithm(a) for a in self.algorithms]
        if self.history_length is None:
            return objects
        return [dataclasses.replace(a, history_length=self.history_length, history_weights=self.history_weights)
                if _reads_history(a) else a for a in objects]

    def _take_history_from_objects(self) -> None:
        """An Algorithm object given with another history than its declaration's (``mnpo.with_history(3)``)
        sets ``history_length``/``history_weights``, so that ``run.json`` (algorithms by name) keeps it."""
        for a in self.algorithms:
            if not isinstance(a, Algorithm):
                continue
            declared = ALGORITHMS.get(a.name, a)
            if (a.history_length, a.history_weights) == (declared.history_length, declared.history_weights):
                continue
            given = (a.history_length, None if a.history_weights is None else tuple(float(w) for w in a.history_weights))
            if self.history_length is not None and (self.history_length, self.history_weights) != given:
                raise ValueError(f"algorithm {a.name!r} carries history_length={a.history_length}, history_weights="
                                 f"{a.history_weights!r}, other than the given history_length={self.history_length}, "
                                 f"history_weights={self.history_weights!r}: give one")
            object.__setattr__(self, "history_length", given[0])
            object.__setattr__(self, "history_weights", given[1])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (algorithms by name, tuples as lists), the form ``run.json`` stores."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["algorithms"] = [get_algorithm(a).name for a in self.algorithms]
        out["metrics"] = list(self.metrics)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SimulationConfig:
        """Inverse of :meth:`to_dict`; keys that are not fields (e.g. ``runs`` in a saved result) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def _reads_history(algorithm: str | Algorithm) -> bool:
    """Whether an algorithm mixes past policies into its anchor (declared with H > 1: MNPO)."""
    algorithm = get_algorithm(algorithm)
    return max(algorithm.history_length, ALGORITHMS.get(algorithm.name, algorithm).history_length) > 1


def _unit_interval(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {name}={value!r}")
    return float(value)


def _names(name: str, value: Any) -> tuple:
    """A string is one name (not its characters); otherwise any non-empty sequence."""
    if isinstance(value, (str, Algorithm)):
        return (value,)
    if not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a name or a list of names, got {name}={value!r}")
    value = tuple(value)
    if not value:
        raise ValueError(f"{name} is empty")
    return value


def _algorithms(value: Any) -> tuple[str | Algorithm, ...]:
    algorithms = _names("algorithms", value)
    for a in algorithms:
        if not isinstance(a, (str, Algorithm)):
            raise ValueError(f"algorithms must hold names or Algorithm objects, got {a!r} ({type(a).__name__})")
    names = [get_algorithm(a).name for a in algorithms]  # unknown names raise here
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"algorithms lists {', '.join(map(repr, repeated))} more than once")
    return algorithms


def _metrics(value: Any) -> tuple[str, ...]:
    metrics = _names("metrics", value)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(METRICS)}")
    return tuple(dict.fromkeys(("duality_gap", *metrics)))  # the gap first and always; no repeats


@cache
def field_docs() -> dict[str, str]:
    """Field name → the documentation string written under it in :class:`SimulationConfig`."""
    tree = ast.parse(inspect.getsource(SimulationConfig))
    body = tree.body[0].body
    docs = {}
    for stmt, following in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)):
            docs[stmt.target.id] = following.value.value
    return docs
