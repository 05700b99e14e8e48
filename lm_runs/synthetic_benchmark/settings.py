"""Sizes and hyper-parameters of one benchmark run: :class:`BenchmarkSettings` and its presets,

``DEFAULT`` (the full setting): the paper's five online algorithms (:data:`ONLINE`) and the six round
methods (:data:`ROUND_METHODS`) on 15 training seeds, enough for the exact paired test of
:mod:`.verdicts` to decide a pair after Holm's correction over the 55 pairs (smallest p 2/2^15, times 55:
0.0034 ≤ 0.05; 10 seeds, 0.11, could decide none); 165 runs (176 with the length-normalized ones),
about 30 s each on a quiet core — about 90 minutes, half that with ``--jobs 2`` on two cores (``--reuse``
takes over the runs a previous folder holds).
``SHORT``: the five online algorithms of ``DEFAULT`` on its first 3 seeds (the same runs, bit for bit, on
one machine): under 10 minutes, what ``make reproduce`` runs; 3 seeds cannot decide any pair (smallest p
2/2^3 = 0.25) and its figures say so.
``FAST``: seconds, for tests, the five online algorithms: it checks the pipeline, not the algorithms.

The round methods. Beside the paper's five online algorithms the benchmark trains :data:`ROUND_METHODS`
(``DEFAULT`` does; otherwise when ``algorithms`` names them) — ``inpo``, ``comal``,
``mpo``, ``mnpo``, ``onpo`` and ``sppo_rounds`` (SPPO in rounds; the bare name ``sppo`` is refused as ambiguous with
the online SPPO of ``lm_runs.train_nlhf``) — through ``lm_runs.rounds`` with the same oracle judge, from the
same π_ref, at the same learning rate, optimizer and schedule. The budget-matching rule: **the same number
of optimizer steps on batches of the same size**. An online update is one optimizer step (EGPO: its two
half-steps count as one update) on B·S judged pairs (B = ``batch_size`` prompts × S = ``samples_per_prompt``);
a round method's optimizer step sees B·S ordered pairs (SPPO: 2·B·S single responses, the responses of B·S
pairs). One round on N training prompts with K = ``round_samples_per_prompt`` samples each trains

    steps_per_round = P · E · ⌈n_rows / rows_per_step⌉,   n_rows = N·K(K−1)/2 pairs (SPPO: N·K responses),
    rows_per_step = B·S (SPPO: 2·B·S),   E = ``round_epochs``,   P = the round's training phases,

(``round_pair_selection = "all"``; ``best_vs_worst``: n_rows = N pairs, SPPO 2N responses; an epoch's last
step may hold fewer rows), and ``rounds = updates / steps_per_round`` rounds, refused unless it divides
exactly — so every method ends after ``updates`` optimizer steps. P = 1 but for ONPO, P = 2: its round trains
the auxiliary policy π′ and then the policy (``lm_runs.rounds``), each phase E epochs on the round's one dataset
(the same N·K(K−1)/2 pairs), and both phases' optimizer steps count — the budget is the optimizer steps, not
the rounds: ONPO runs half as many rounds as INPO (``DEFAULT``: 20 of 4 steps, INPO 40 of 2) and so judges and
samples half as many pairs. The judged pairs differ and are stated (a round judges N·K(K−1)/2 pairs and reuses
them for E epochs, ONPO's for 2E; an online update judges B·S, EGPO 2·B·S).
A round method is measured (:class:`~.measurement.RoundEvaluation`) exactly as the online ones: at update 0
(π_ref) and at each round end whose cumulative optimizer-step count (ONPO: both phases' steps) is a multiple
of ``eval_every``, and at the last; its records carry that count as ``update``. ONPO is measured at its round
ends only, after the policy phase: during the auxiliary phase the trained model is π′, not the policy (whose
parameters that phase leaves as they were).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from transformers import SchedulerType
from transformers.training_args import OptimizerNames

from egpo_core.algorithms import PAPER_ALGORITHMS, get_algorithm

from .corpus import EVAL_NOUNS, TRAIN_NOUNS, make_prompts
from .game import check_classes

__all__ = ["BenchmarkSettings", "DEFAULT", "SHORT", "FAST", "ONLINE", "ROUND_METHODS", "check_algorithms", "core_name",
           "round_alg", "online_algorithms", "at_eta", "split_eta"]

#: The paper's five online algorithms as the benchmark names them (``BenchmarkSettings``' default).
ONLINE = ("egpo", "oipo1", "oipo2", "nashmd", "nashmdpg")
#: The round methods as the benchmark names them (``lm_runs.rounds``' ``--alg`` but ``sppo_rounds`` → ``sppo``).
ROUND_METHODS = ("inpo", "comal", "mpo", "mnpo", "sppo_rounds", "onpo")
_SPPO_ROUNDS = "sppo_rounds"


def core_name(algorithm: str) -> str:
    """The ``egpo_core`` registry name of an algorithm named by its name or any alias (``nashmd`` → ``nash_md``;
    ``sppo_rounds`` → ``sppo``)."""
    return get_algorithm("sppo" if algorithm == _SPPO_ROUNDS else algorithm).name


def round_alg(algorithm: str) -> str | None:
    """``lm_runs.rounds``' ``--alg`` for a round method named as the benchmark names it (``sppo_rounds`` →
    ``sppo``, an alias → the registry name); None for an online algorithm."""
    if algorithm == _SPPO_ROUNDS:
        return "sppo"
    name = core_name(algorithm)
    return name if name in ROUND_METHODS else None


_AT_ETA = "@eta="


def at_eta(algorithm: str, eta: float) -> str:
    """The name of the round method ``algorithm`` trained at another step η than the run's, in a verdict table
    (``--against``): ``onpo`` at η = 1 → ``onpo@eta=1``."""
    return f"{algorithm}{_AT_ETA}{eta:g}"


def split_eta(name: str) -> tuple[str, float | None]:
    """:func:`at_eta` undone: ``onpo@eta=1`` → (``onpo``, 1.0); any other name → (``name``, None)."""
    algorithm, found, eta = name.partition(_AT_ETA)
    return (algorithm, float(eta)) if found else (name, None)


def online_algorithms(algorithms: Sequence[str]) -> list[str]:
    """The online ones among ``algorithms`` (those egpo_core's simulation and the win-rate tables cover)."""
    return [a for a in algorithms if round_alg(a) is None]


def check_algorithms(algorithms: Sequence[str]) -> None:
    """``ValueError`` unless ``algorithms`` names distinct algorithms (by their names or aliases), each
    one of the paper's five (online) or of :data:`ROUND_METHODS`, at least one of them online (the simulation
    and the win-rate tables cover the online ones). The bare ``sppo`` is refused (ambiguous:
    the benchmark trains SPPO in rounds only, as ``sppo_rounds``)."""
    names = []
    for a in algorithms:
        if a == _SPPO_ROUNDS:
            names.append(a)
            continue
        try:
            name = core_name(a)
        except ValueError as error:
            raise ValueError(f"algorithms: {error}") from None
        if name == "sppo":
            raise ValueError(f"algorithms: {a!r} is ambiguous here: the benchmark trains SPPO in rounds, name it {_SPPO_ROUNDS!r}")
        if name not in PAPER_ALGORITHMS and name not in ROUND_METHODS:
            raise ValueError(f"algorithms: {a!r} is not one of the paper's algorithms {list(PAPER_ALGORITHMS)} "
                             f"or the round methods {list(ROUND_METHODS)}")
        names.append(name)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"algorithms must name distinct algorithms, at least one, got {list(algorithms)}")
    if not online_algorithms(algorithms):
        raise ValueError(f"algorithms: {list(algorithms)} names no online algorithm; the round methods run beside at "
                         f"least one of {list(PAPER_ALGORITHMS)}")


@dataclass(frozen=True)
class BenchmarkSettings:
    """Sizes and hyper-parameters of one benchmark run (``DEFAULT``, ``FAST``)."""

    num_classes: int = 3
    #: β = 0.05: the matrix-game theory predicts a visible EGPO advantage there (with exact gradients
    #: Online IPO 1 / Nash-MD cycle for mirror-descent steps η ≈ 1–3 while EGPO converges linearly);
    #: at β = 0.1 the algorithms separate only near η ≈ 3 (figures/README.md, the pilots).
    beta: float = 0.05
    strength: float = 1.0
    length_bonus: float = 0.0
    #: 10 seeds: the exact two-sided signed-rank test can decide a pair after Holm's correction over the
    #: 10 pairs of the 5 online algorithms (smallest p 2/2^10 = 0.002 ≤ 0.05/10; at 8 seeds it could
    #: decide none), but only one on which (nearly) every seed agrees; ``DEFAULT`` has 15 (module docstring)
    seeds: tuple[int, ...] = tuple(range(10))
    #: the algorithms as the benchmark's files name them (any name or alias ``egpo_core.algorithms``
    #: accepts for one of the paper's five algorithms, or one of :data:`ROUND_METHODS`)
    algorithms: tuple[str, ...] = ONLINE
    updates: int = 80
    eval_every: int = 5
    batch_size: int = 16
    samples_per_prompt: int = 2
    learning_rate: float = 2e-3
    lr_scheduler: str = "linear"
    #: the NLHF runs' optimizer (TrainingArguments ``optim``), Adam's first-moment coefficient and the
    #: gradient-clipping norm. adam_beta1 = 0 (no momentum, RMSProp-like): with the usual 0.9 the
    #: momentum is a ~10-update lag, and a lagged step in a cyclic game spirals — every algorithm's
    #: gap fell and rose again (the β1 = 0.9 pilots); without it they settle.
    optimizer: str = "adamw_torch"
    adam_beta1: float = 0.0
    max_grad_norm: float = 1.0
    max_new_tokens: int = 4
    kl_samples: int = 8
    length_normalized_seeds: tuple[int, ...] = (0,)
    sft_examples: int = 1600
    sft_epochs: float = 6.0
    sft_learning_rate: float = 3e-3
    favoured_prob: float = 0.8
    n_layer: int = 2
    n_embd: int = 64
    train_nouns: int = len(TRAIN_NOUNS)
    eval_nouns: int = len(EVAL_NOUNS)
    sim_etas: tuple[float, ...] = tuple(float(x) for x in np.geomspace(0.01, 10.0, 31))
    keep_checkpoints: bool = False
    eval_samples_per_prompt: int = 10
    eval_bootstrap: int = 1000
    #: the round methods' K (responses sampled per prompt in a round), E (epochs on a round's dataset),
    #: pair selection, step η (``lm_runs.rounds``' ``--eta``), COMAL's and MPO's magnet period (rounds) and
    #: MNPO's history length; the round count follows from the budget rule (module docstring).
    #: η = 1 for every round method, SPPO and ONPO included: in the tabular theory each one's round is then the same
    #: mirror-descent step log π ← log π + η P(· ≻ π) (SPPO without π_ref's anchor, the others with weight ηβ;
    #: ONPO, on the unregularized game as SPPO, its optimistic log π ← log π + η[2P(· ≻ π_t) − P(· ≻ π_{t−1})]).
    #: The magnet period 20 = 1/(ηβ): the tabular inner loop contracts toward the magnet's regularized
    #: equilibrium by (1 − ηβ) per round, so a shorter period refreshes the magnet before the inner problem
    #: is (approximately) solved; with 40 rounds the magnet is refreshed once (MPO: η/(1 + ηβ), nearly the same).
    #: ``--round_eta`` sets η for the run's round methods; ``--against`` pairs them with a run at another η
    round_samples_per_prompt: int = 2
    round_epochs: int = 1
    round_pair_selection: str = "all"
    round_eta: float = 1.0
    round_magnet_period: int = 20
    round_history_length: int = 2

    def round_methods(self) -> list[str]:
        """The round methods among ``algorithms``, as named there."""
        return [a for a in self.algorithms if round_alg(a) is not None]

    def steps_per_round(self, algorithm: str) -> int:
        """P · E · ⌈n_rows / rows_per_step⌉: the optimizer steps of one round of the round method ``algorithm``,
        every training phase's (P: ``lm_runs.rounds.method_phases``' count, 2 for ONPO; module docstring)."""
        n = len(make_prompts(TRAIN_NOUNS[: self.train_nouns]))  # N, the training prompts
        K = self.round_samples_per_prompt
        single = round_alg(algorithm) == "sppo"
        if self.round_pair_selection == "all":
            rows = n * K if single else n * K * (K - 1) // 2
        else:
            rows = 2 * n if single else n
        per_step = self.batch_size * self.samples_per_prompt * (2 if single else 1)
        from lm_runs.rounds import method_phases

        return len(method_phases(round_alg(algorithm))) * self.round_epochs * -(-rows // per_step)

    def rounds(self, algorithm: str) -> int:
        """updates / steps_per_round: the rounds of ``algorithm`` (a round method)."""
        return self.updates // self.steps_per_round(algorithm)

    def check(self) -> None:
        """``ValueError`` naming the first bad setting."""
        check_classes(self.num_classes)
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if not 0 <= self.length_bonus <= 0.5:
            raise ValueError(f"length_bonus must be in [0, 0.5], got {self.length_bonus}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
        check_algorithms(self.algorithms)
        if len(set(self.length_normalized_seeds)) != len(self.length_normalized_seeds) or min(self.length_normalized_seeds, default=0) < 0:
            raise ValueError(f"length_normalized_seeds must be distinct non-negative integers, got {self.length_normalized_seeds}")
        for name in ("updates", "eval_every", "batch_size", "samples_per_prompt", "max_new_tokens", "sft_examples", "train_nouns",
                     "eval_nouns", "n_layer", "n_embd", "eval_samples_per_prompt", "eval_bootstrap"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.sft_epochs > 0 and self.sft_learning_rate > 0):
            raise ValueError(f"sft_epochs and sft_learning_rate must be > 0, got {self.sft_epochs} and {self.sft_learning_rate}")
        if not self.sim_etas or min(self.sim_etas) <= 0:
            raise ValueError(f"sim_etas must be step sizes > 0, at least one, got {self.sim_etas}")
        schedules = [kind.value for kind in SchedulerType]
        if self.lr_scheduler not in schedules:
            raise ValueError(f"lr_scheduler must be one of {', '.join(schedules)}, got {self.lr_scheduler!r}")
        optimizers = [kind.value for kind in OptimizerNames]
        if self.optimizer not in optimizers:
            raise ValueError(f"optimizer must be a TrainingArguments optim ({', '.join(optimizers[:4])}, …), got {self.optimizer!r}")
        if self.kl_samples < 0 or self.kl_samples == 1:
            raise ValueError(f"kl_samples must be 0 (off) or at least 2, got {self.kl_samples}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.adam_beta1 < 1:
            raise ValueError(f"adam_beta1 must be in [0, 1), got {self.adam_beta1}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 1 / self.num_classes < self.favoured_prob < 1:
            raise ValueError(f"favoured_prob must be in (1/K, 1), got {self.favoured_prob}")
        if self.train_nouns > len(TRAIN_NOUNS) or self.eval_nouns > len(EVAL_NOUNS):
            raise ValueError(f"at most {len(TRAIN_NOUNS)} train_nouns and {len(EVAL_NOUNS)} eval_nouns")
        if self.round_methods():
            self._check_rounds()

    def _check_rounds(self) -> None:
        """``ValueError`` naming the first bad round setting (checked only when a round method is chosen)."""
        from lm_runs.rounds import PAIR_SELECTIONS

        if self.round_samples_per_prompt < 2:
            raise ValueError(f"round_samples_per_prompt must be at least 2 (a pair), got {self.round_samples_per_prompt}")
        if self.round_epochs < 1 or self.round_magnet_period < 0 or self.round_history_length < 1:
            raise ValueError(f"round_epochs ≥ 1, round_magnet_period ≥ 0 and round_history_length ≥ 1, got "
                             f"{self.round_epochs}, {self.round_magnet_period} and {self.round_history_length}")
        if self.round_pair_selection not in PAIR_SELECTIONS:
            raise ValueError(f"round_pair_selection must be one of {', '.join(PAIR_SELECTIONS)}, got {self.round_pair_selection!r}")
        if not self.round_eta > 0:
            raise ValueError(f"round_eta must be > 0, got {self.round_eta}")
        for a in self.round_methods():
            if round_alg(a) in ("inpo", "comal", "mnpo") and self.round_eta * self.beta > 1:
                raise ValueError(f"round_eta {self.round_eta}: {a} needs round_eta·beta ≤ 1 (beta = {self.beta})")
            steps = self.steps_per_round(a)
            if self.updates % steps:
                raise ValueError(f"updates {self.updates}: {a} trains {steps} optimizer steps per round "
                                 f"(round_epochs × ⌈rows / rows per step⌉), which must divide updates")


DEFAULT = BenchmarkSettings(seeds=tuple(range(15)), algorithms=ONLINE + ROUND_METHODS)
SHORT = BenchmarkSettings(seeds=(0, 1, 2))
FAST = BenchmarkSettings(
    seeds=(0, 1), updates=4, eval_every=2, batch_size=4, samples_per_prompt=1, kl_samples=4, length_normalized_seeds=(0,),
    sft_examples=256, sft_epochs=2.0, train_nouns=4, eval_nouns=2,
    sim_etas=tuple(float(x) for x in np.geomspace(0.03, 3.0, 5)),
    eval_samples_per_prompt=4, eval_bootstrap=200, round_magnet_period=1,
)
