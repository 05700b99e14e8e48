"""Iterative round mode of NLHF training: INPO, COMAL, MPO, MNPO, SPPO and ONPO on round datasets.

    python -m lm_runs.rounds --alg inpo --rounds 3 --samples_per_prompt 4 --pair_selection best_vs_worst \\
        --epochs_per_round 2 --eta 1.0 --model_name_or_path SFT_DIR --judge PM_DIR --prompts p.jsonl \\
        --output_dir runs/inpo
    python -m lm_runs.train_nlhf --rounds 3 ...   (the same run: ``--rounds`` hands over to this module)
    python -m lm_runs.train_nlhf --alg comal --magnet_period 2 ...   (comal, mpo, mnpo, onpo exist only in rounds)

Round r = 0 … R−1 freezes the policy of its start, π_t (t = r), and

1. samples K = ``--samples_per_prompt`` responses per prompt from π_t (temperature 1 by default) in ONE
   batched decoding loop (:func:`lm_runs.generation.generate_completions`, seeded with seed + r);
2. judges every unordered pair {i < j} of a prompt's K responses, P_ij = P(y_i ≻ y_j), in one judge call;
   each response's mean judged win rate against the round's other samples of its prompt is
   P̂(y_i ≻ π_t) = mean_{j≠i} P_ij (P_ji = 1 − P_ij), an unbiased estimate of P(y_i ≻ π_t);
3. selects ordered pairs (y_w, y_l): ``all`` — every pair, ordered by one Bernoulli(P_ij) draw
   (y_i wins iff u_ij < P_ij, u_ij ~ U(0, 1) from ``numpy.random.default_rng([seed, r])``, INPO's
   definition); ``best_vs_worst`` — one pair per prompt, the response with the highest P̂ against the one
   with the lowest (first index on ties), as the papers' pipelines do;
4. computes the summed log-probabilities of every response under π_t, π_ref and every earlier policy the
   round's anchor reads (π_s = the policy at round s's start: ``rounds/round-(s−1)/policy.pt``, π_0 the
   initial policy), each once;
5. saves the round's dataset — ``rounds/round-r/dataset/{responses,judgements,pairs}.jsonl`` and ``round.json``
   (prompts, responses' text and token ids, log-probabilities, lengths, win rates P̂, judgements, the draws
   u_ij, the seeds, the round's loss: its anchors, weights and step) — as one folder published by a rename:
   complete or absent; a complete one is reused on resume;
6. trains ``--epochs_per_round`` epochs of the method's round loss (a fresh optimizer and learning-rate
   schedule each round; Hugging Face checkpoints inside ``rounds/round-r/trainer``); ONPO trains two phases,
   its auxiliary policy and then the policy (below);
7. saves the round's end: ``rounds/round-r/policy.pt`` (the trainable parameters, bit for bit; π_{r+1}) and
   ``epochs/epoch-(r+1)`` (a model folder: the policy after r + 1 rounds, the layout of the online trainer's
   epoch models, so ``python -m lm_runs.evaluate --runs output_dir`` compares the round ends, column k = the
   policy after k rounds).

The round losses. ℓ_q(y) is the summed log-probability of y under q (``--length_normalize true``, the
default: divided by y's length; the INPO, COMAL and SPPO papers' losses sum — ``--length_normalize false`` —
MNPO's code averages per token), Δ_q = ℓ_q(y_w) − ℓ_q(y_l), and the anchor is a geometric mixture
ℓ_A = Σ_k w_k ℓ_k with Σ_k w_k = 1 (:func:`egpo_core.losses.anchor_mixture_logp`). The pair methods minimise

    L(θ) = mean over ordered pairs of (Δ_θ − Δ_A − η′/2)²,   ℓ_A = η′β ℓ_M + (1 − η′β) ℓ_t,

egpo_core's ``ipo_regression_loss`` with the anchor ℓ_A and the constant target η′/2. By INPO's Proposition 6
its minimiser over policies (pairs y, y′ ~ π_t i.i.d., ordered by a Bernoulli(P(y ≻ y′)) draw) is the
mirror-descent step log π_{t+1} ≐ (1 − η′β) log π_t + η′β log π_M + η′ P(· ≻ π_t):

* ``inpo`` (Zhang et al., arXiv 2407.00617): π_M = π_ref, η′ = η (``--eta``; needs ηβ ≤ 1);
* ``comal`` (Liu et al., arXiv 2410.23223): π_M = the magnet, π_ref until round K = ``--magnet_period`` and
  then the policy of the latest round start r′ = K⌊r/K⌋ (refreshed at every r > 0 with r % K = 0: π_M = π_t
  in that round), η′ = η; K = 0 never refreshes (= INPO bit for bit); egpo_core's ``magnet_period``;
* ``mpo`` (Wang et al., arXiv 2410.16714): π_M the magnet as for COMAL, η′ = η/(1 + ηβ) — MPO's magnetic step
  log π_{t+1} ≐ (log π_t + ηβ log π_M + η P(· ≻ π_t))/(1 + ηβ) is exactly the step above at η′
  (1 − η′β = 1/(1 + ηβ), η′β = ηβ/(1 + ηβ)), so any η > 0 is allowed. The step η′ = η·w(ηβ) is MPO's
  declared loss weight w = 1/(1 + ηβ) applied to the step; the loss itself is not reweighted (a weight
  does not move a minimiser, and the round mode trains towards the minimiser);
* ``mnpo`` (Wu et al., arXiv 2509.23102): ℓ_A = ηβ ℓ_ref + (1 − ηβ) Σ_{j<H} λ_j ℓ_{t−j}, H =
  ``--history_length`` past round policies (π_t first; before π_0: π_0), λ_j = w_j/Σ w (``--history_weights``,
  default equal); η′ = η; H = 1 is INPO;
* ``sppo`` (Wu et al., arXiv 2405.00675) trains on single responses, the square loss

      L(θ) = mean over responses of (ℓ_θ(y) − ℓ_t(y) − η(P̂(y ≻ π_t) − ½))²

  (:func:`egpo_core.losses.anchored_log_ratio` with the one anchor π_t; ``--beta`` is not read), over
  every response (``all``) or the best and worst of each prompt (``best_vs_worst``). Its minimiser over
  policies is the multiplicative-weights step log π_{t+1} ≐ log π_t + η P(· ≻ π_t) up to the paper's
  approximation of the log-partition by η/2 (an error of order η³ in the logits);
* ``onpo`` (Zhang et al., arXiv 2502.16852, optimistic online mirror descent on the original game, β = 0:
  ``--beta`` is not read) keeps an auxiliary policy π′ beside the policy, π′_0 = π_0, and trains two pair
  regressions with the target η/2 on the round's one dataset of ordered pairs from π_t, in two phases:

      auxiliary:  L′(θ′) = mean (Δ_θ′ − Δ_{π′_t} − η/2)²        → π′_{t+1},
      policy:     L(θ)   = mean (Δ_θ − Δ_{π′_{t+1}} − η/2)²     → π_{t+1}.

  By INPO's Proposition 6 their minimisers are π′_{t+1} ∝ π′_t e^{η P(·≻π_t)} and π_{t+1} ∝ π′_{t+1}
  e^{η P(·≻π_t)}, ONPO's two-sequence step, i.e. log π_{t+1} ≐ log π_t + η[2P(· ≻ π_t) − P(· ≻ π_{t−1})]
  (:func:`egpo_core.algorithms.onpo.closed_form`; round 0, from π′_0 = π_0: log π_1 ≐ log π_0 + 2η P(· ≻ π_0)).
  The auxiliary policy is a second set of the model's trainable parameters (the LoRA adapter with
  ``--use_peft``), swapped into the one model in memory, never a second model: each phase starts at its own
  anchor (π′_t, then π′_{t+1}), so a phase cut short by few epochs shrinks the learned step η P rather than
  adding an offset. The auxiliary phase's Hugging Face checkpoints go to ``rounds/round-r/auxiliary-trainer``;
  its end is published as one folder ``rounds/round-r/auxiliary`` (renamed into place: complete or absent)
  holding ``policy.pt`` (π′_{t+1}'s trainable parameters, bit for bit; what a resume reads), the same
  parameters as a ``from_pretrained`` folder with the tokenizer (the layout of ``epochs/epoch-k``: with
  ``--use_peft`` the LoRA adapter, ``PeftModel.from_pretrained(base, "rounds/round-r/auxiliary")``; else the
  model, ``AutoModelForCausalLM.from_pretrained("rounds/round-r/auxiliary")``) and ``logp.jsonl`` (every
  response's summed log-probability under π′_{t+1}, the policy phase's anchor); the dataset holds the responses'
  log-probabilities under π′_t (``logp_past["aux"]``). The policy phase checkpoints in ``rounds/round-r/trainer``
  and ends at ``policy.pt`` as every method does; a resume continues inside either phase or between them.

Counting: ``--per_device_train_batch_size`` counts ordered pairs (SPPO: responses) here, not prompts, and
the step-counted Hugging Face flags (``--save_steps``, ``--logging_steps``, ``--warmup_steps``) count
optimizer steps within a round. The last round's model is also saved to ``output_dir``.
``--resume_from_checkpoint true`` continues an interrupted run wherever it stopped: finished rounds are
skipped, a saved dataset is reused (its log-probabilities under the magnet or past policies included), and a
round cut short resumes from its newest checkpoint — ending bit for bit where an uninterrupted run ends
(each round is seeded by seed + r alone, and starts from the saved end of the round before; the policies an
anchor reads are the saved round ends, kept in the round folders). A saved round whose loss differs from
the flags' (another --alg, --eta, --magnet_period …) is refused before any model loads.

Several processes (``torchrun --nproc_per_node=W``, DDP; on CPU ``--use_cpu true``, gloo; ONPO's auxiliary
log-probabilities are computed by rank 0, which publishes them). Rank k samples
the contiguous block of prompts [⌊nk/W⌋, ⌊n(k+1)/W⌋) from the frozen π_t in its own batched loop, its
generator seeded with seed + r on rank 0 and with ``numpy.random.SeedSequence([seed + r, k])`` on rank
k > 0 (saved in round.json's ``generation_shards``), scores its responses' log-probabilities and asks the
judge its prompts' pairs; every rank then receives every rank's part (``all_gather_object``, in rank order),
so the draws u_ij, the pair selection and the win rates are computed from the whole round on every rank
alike; rank 0 alone publishes the dataset, and every rank reads that one folder. Training is the Hugging
Face Trainer's DDP over the saved rows (``--per_device_train_batch_size`` rows per rank and micro-batch);
rank 0 saves the round ends. The guarantee: a run is reproducible bit for bit for a given seed AND world
size (the ranks agree on everything saved), and resuming (between or inside rounds) with the same world size
ends bit for bit where the uninterrupted run ends. The saved dataset is NOT the single-process one: W
shards are W sampling streams (and W differently padded batches), so the responses differ from one world
size to another; with W = 1 everything is as before, bit for bit. A world larger than the prompts is refused.

Refused in round mode (one line, exit status 2): an ``--alg`` outside :data:`~lm_runs.config.ROUND_ALGORITHMS`,
K < 2, the online algorithms' opponent and mixture flags, a round flag the method does not read
(``--magnet_period`` but for comal/mpo, ``--history_length/--history_weights`` but for mnpo, ``--beta`` for
sppo and onpo), ``--max_steps`` / ``--num_train_epochs`` (rounds and epochs per round count training),
and ``--deepspeed`` with ZeRO stage 3 (which partitions the parameters the rounds sample from and swap).

DeepSpeed ZeRO stages 0-2 (``--deepspeed lm_runs/configs/zero2.json`` under torchrun or the deepspeed
launcher): one Trainer serves the whole run (:meth:`RoundTrainer.next_phase`: accelerate accepts a DeepSpeed
plugin only in the first Accelerator of a process), and every round (and ONPO phase) builds a fresh engine,
optimizer and schedule from the model's parameters as they are; the rest is as under DDP.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import CallbackHandler

from egpo_core.algorithms import Algorithm, get_algorithm
from egpo_core.files import atomic_write, fsync_directory, write_jsonl
from egpo_core.losses import anchor_mixture_logp, anchored_log_ratio, ipo_regression_loss

from .checkpoints import AtomicCheckpoints
from .config import LM_ALGORITHMS, ROUND_ALGORITHMS, NLHFConfig, zero_stage
from .data import PromptCollator, encode_prompt, prompt_text
from .generation import ReferenceModel, generate_completions
from .logprobs import completion_logprobs

__all__ = [
    "RoundOptions", "RoundsConfig", "RoundLoss", "PAIR_SELECTIONS", "PHASES", "round_dir", "epoch_dir", "method_phases", "round_phases",
    "round_loss", "round_loss_terms",
    "build_round_dataset", "load_round_dataset", "RoundTrainer", "run_rounds", "main",
]

#: ``--pair_selection`` choices.
PAIR_SELECTIONS = ("all", "best_vs_worst")

#: NLHFConfig fields the round mode does not read: refused when changed from their defaults.
_ONLINE_ONLY = ("opponent_temperature", "opponent_top_k", "opponent_top_p", "opponent_min_p", "mixture_coef",
                "extragradient_offload", "judge_gather")

#: An anchor policy of a round: "ref" (π_ref), "t" (π_t, the round's own start), s (π_s, round s < r's start),
#: "aux" (ONPO's auxiliary policy π′_t at the round's start) or "aux+1" (π′_{t+1}, the auxiliary phase's end).
Source = Union[str, int]

#: ONPO's two training phases in a round, in order (every other method trains the policy phase alone).
PHASES = ("auxiliary", "policy")


@dataclass
class RoundOptions:
    """The round mode's own flags (``python -m lm_runs.train_nlhf --help`` lists them with NLHFConfig's)."""

    rounds: int = field(default=1, metadata={"help": "Round mode: number of rounds R (each: sample K responses per prompt from the frozen π_t, judge, train)."})
    """Number of rounds."""
    pair_selection: str = field(
        default="all",
        metadata={"help": "Round mode: 'all' (every pair of the K samples, ordered by a Bernoulli(P) draw, INPO's; sppo: every response) or 'best_vs_worst' (highest vs lowest mean judged win rate, one pair per prompt; sppo: those two responses)."},
    )
    """``all`` or ``best_vs_worst``."""
    epochs_per_round: int = field(default=1, metadata={"help": "Round mode: epochs over a round's dataset."})
    """Training epochs on each round's dataset."""
    eta: float = field(
        default=1.0,
        metadata={"help": "Round mode: the mirror-descent step η (INPO's, the paper's τ is --beta): pair target η/2, anchor weight ηβ (inpo, comal, mnpo need ηβ ≤ 1; mpo's step is η/(1 + ηβ)); sppo's target η(P̂ − ½); onpo: both regressions' target η/2 (no β)."},
    )
    """The round's step η (> 0; ηβ ≤ 1 for inpo, comal, mnpo)."""
    magnet_period: int = field(
        default=0,
        metadata={"help": "comal, mpo: the magnet (π_ref at first) becomes the current policy at every round r > 0 that K divides; 0 never refreshes (comal = inpo)."},
    )
    """K of COMAL's and MPO's magnet refresh (egpo_core's ``magnet_period``)."""
    history_length: int = field(default=2, metadata={"help": "mnpo: H, the past round policies π_t, …, π_{t−H+1} in the anchor (1 = inpo)."})
    """MNPO's history length H ≥ 1."""
    history_weights: list[float] | None = field(
        default=None,
        metadata={"help": "mnpo: H non-negative weights of π_t, π_{t−1}, … (normalised to sum 1; default equal)."},
    )
    """MNPO's history weights w_j (most recent first), or None for equal weights."""


@dataclass
class RoundsConfig(RoundOptions, NLHFConfig):
    """NLHFConfig plus :class:`RoundOptions` (see the module docstring). ``--samples_per_prompt`` is K, the
    responses sampled per prompt in a round; ``--alg`` one of :data:`~lm_runs.config.ROUND_ALGORITHMS`
    (default ``inpo``)."""

    alg: str = field(default="inpo", metadata={"help": f"Round mode trains {', '.join(ROUND_ALGORITHMS)} (inpo's alias iterative_nash, …); online algorithms such as egpo run without --rounds."})
    samples_per_prompt: int = field(default=4, metadata={"help": "K: responses sampled per prompt in a round (≥ 2); 'all' judges and trains K(K−1)/2 pairs per prompt."})
    """K, the responses per prompt of a round."""

    @property
    def algorithm(self) -> Algorithm:
        """The declaration of ``--alg``; ``ValueError`` (one line) for a method without a round form."""
        choices = ", ".join(ROUND_ALGORITHMS)
        try:
            algorithm = get_algorithm(str(self.alg))
        except ValueError:
            raise ValueError(f"unknown algorithm --alg {self.alg!r}; round mode (--rounds) trains {choices}") from None
        if algorithm.name in ROUND_ALGORITHMS:
            return algorithm
        if algorithm.name in {get_algorithm(n).name for n in LM_ALGORITHMS}:
            raise ValueError(f"--alg {self.alg}: {algorithm.label} is online (one rollout per step); round mode (--rounds) trains {choices} — drop --rounds")
        raise ValueError(f"--alg {self.alg}: {algorithm.label} has no round form here (tabular/neural only); round mode (--rounds) trains {choices}")

    @property
    def on_policy_pair(self) -> bool:
        """The round's samples come from π_t itself: temperature 1, no top-k unless asked."""
        return True

    def _check(self) -> None:
        super()._check()
        name = self.algorithm.name
        defaults = {f.name: f.default for f in NLHFConfig.__dataclass_fields__.values()}
        for option in _ONLINE_ONLY:
            if getattr(self, option) != defaults[option]:
                raise ValueError(f"--{option} {getattr(self, option)}: not read in round mode (no opponent sample)")
        if self.rounds < 1:
            raise ValueError(f"--rounds must be at least 1, got {self.rounds}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"--samples_per_prompt {self.samples_per_prompt}: round mode needs K ≥ 2 responses per prompt to form a pair")
        if self.pair_selection not in PAIR_SELECTIONS:
            raise ValueError(f"--pair_selection {self.pair_selection!r}: choose one of {', '.join(PAIR_SELECTIONS)}")
        if self.epochs_per_round < 1:
            raise ValueError(f"--epochs_per_round must be at least 1, got {self.epochs_per_round}")
        if not (isinstance(self.eta, (int, float)) and self.eta > 0 and np.isfinite(self.eta)):
            raise ValueError(f"--eta {self.eta!r}: the step η must be a positive number")
        if name in ("inpo", "comal", "mnpo") and self.eta * self.beta > 1:
            raise ValueError(f"--eta {self.eta!r}: {self.algorithm.label} needs ηβ ≤ 1 (β = {self.beta}; mpo allows any η)")
        if name in ("sppo", "onpo") and self.beta != defaults["beta"]:
            raise ValueError(f"--beta {self.beta}: {self.algorithm.label}'s round loss has no β (its step is --eta)")
        if not (isinstance(self.magnet_period, int) and self.magnet_period >= 0):
            raise ValueError(f"--magnet_period must be a whole number ≥ 0, got {self.magnet_period!r}")
        if self.magnet_period and name not in ("comal", "mpo"):
            raise ValueError(f"--magnet_period {self.magnet_period}: only comal and mpo refresh a magnet ({self.algorithm.label} does not read it)")
        if not (isinstance(self.history_length, int) and self.history_length >= 1):
            raise ValueError(f"--history_length must be at least 1, got {self.history_length!r}")
        if name != "mnpo" and (self.history_length != 2 or self.history_weights is not None):
            given = "--history_weights" if self.history_weights is not None else f"--history_length {self.history_length}"
            raise ValueError(f"{given}: only mnpo reads a history of past policies ({self.algorithm.label} does not)")
        if self.history_weights is not None:
            w = [float(x) for x in self.history_weights]
            if len(w) != self.history_length or any(not (x >= 0 and np.isfinite(x)) for x in w) or sum(w) <= 0:
                raise ValueError(f"--history_weights {' '.join(map(str, self.history_weights))}: give {self.history_length} (--history_length) non-negative weights with a positive sum")
        if zero_stage(self.deepspeed) == 3:  # checked before TrainingArguments registers the DeepSpeed config
            raise ValueError(f"--deepspeed {self.deepspeed}: round mode runs DeepSpeed ZeRO stages 0-2, not stage 3 (the rounds sample "
                             "from the model and swap its trainable parameters, which ZeRO-3 partitions)")
        if self.max_steps != -1:
            raise ValueError(f"--max_steps {self.max_steps}: round mode trains --epochs_per_round epochs per round")
        if self.num_train_epochs != 3.0:  # TrainingArguments' default: the flag was given
            raise ValueError(f"--num_train_epochs {self.num_train_epochs}: round mode counts --rounds and --epochs_per_round")


def _rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) without an initialised process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    """Wait for every process (nothing to wait for in one process)."""
    if _rank_and_world()[1] > 1:
        torch.distributed.barrier()


def prompt_shard(n: int, rank: int, world: int) -> range:
    """The prompts rank ``rank`` of ``world`` samples in a round: the contiguous block [⌊n·rank/W⌋,
    ⌊n·(rank+1)/W⌋) (blocks in rank order cover 0 … n−1 once)."""
    return range(n * rank // world, n * (rank + 1) // world)


def shard_seed(seed: int, rank: int) -> int:
    """The generator seed of rank ``rank``'s sampling in a round whose seed is ``seed`` (= --seed + r):
    ``seed`` itself on rank 0 (one process samples as it always has), else the first word of
    ``numpy.random.SeedSequence([seed, rank])`` (independent streams, the same on every machine)."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def round_dir(output_dir: str | os.PathLike[str], r: int) -> Path:
    """``output_dir/rounds/round-r``."""
    return Path(output_dir) / "rounds" / f"round-{r}"


def epoch_dir(output_dir: str | os.PathLike[str], k: int) -> Path:
    """``output_dir/epochs/epoch-k``: the model folder of the policy after k ≥ 1 rounds (π_k, round k − 1's end),
    where ``lm_runs.evaluate`` finds a run's models."""
    return Path(output_dir) / "epochs" / f"epoch-{k}"


@dataclass(frozen=True)
class RoundLoss:
    """Round r's loss (the module docstring): ``form`` "pair" — (Δ_θ − Δ_A − step/2)² on ordered pairs — or
    "single" — (ℓ_θ − ℓ_A − step·(P̂ − ½))² on responses; ``anchors`` the mixture ℓ_A = Σ_k w_k ℓ_k as
    (source, w_k), a source "ref" (π_ref), "t" (π_t) or s (π_s, the policy at round s < r's start), weights
    summing to 1; ``step`` the η′ of its mirror-descent step."""

    form: str
    anchors: tuple[tuple[Source, float], ...]
    step: float

    @property
    def weights(self) -> list[float]:
        """The mixture's weights w_k, in the anchors' order."""
        return [w for _, w in self.anchors]

    @property
    def saved_anchors(self) -> list[Source]:
        """The anchors besides π_t and π_ref whose log-probabilities the round's dataset holds
        (``logp_past``): the earlier round starts s (π_s) and ONPO's "aux" (π′_t), each kept as saved
        trainable parameters (ONPO's "aux+1", known only after the auxiliary phase, is kept beside the dataset)."""
        return [s for s, _ in self.anchors if isinstance(s, int) or s == "aux"]

    def as_json(self) -> dict:
        """The form saved in ``round.json`` (and compared on resume)."""
        return {"form": self.form, "anchors": [[s, w] for s, w in self.anchors], "step": self.step}


def _merged(anchors: Sequence[tuple[Source, float]]) -> tuple[tuple[Source, float], ...]:
    """Equal sources summed, in order of first appearance (π_M = π_t in a refresh round is one anchor)."""
    merged: dict[Source, float] = {}
    for source, weight in anchors:
        merged[source] = merged[source] + weight if source in merged else weight
    return tuple(merged.items())


def magnet_source(r: int, period: int) -> Source:
    """COMAL's and MPO's magnet in round r: π_ref while K = ``period`` is 0 or r < K, else the policy of the
    latest refresh r′ = K⌊r/K⌋ ("t" when r′ = r) — egpo_core's anchor "magnet" with t = the round."""
    if period == 0 or r < period:
        return "ref"
    refreshed = period * (r // period)
    return "t" if refreshed == r else refreshed


def method_phases(name: str) -> tuple[str, ...]:
    """The training phases of a round of the method registered as ``name``, in order: :data:`PHASES` for ONPO
    (its auxiliary policy, then the policy), ``("policy",)`` for every other method."""
    return PHASES if name == "onpo" else ("policy",)


def round_phases(config: RoundsConfig) -> tuple[str, ...]:
    """The training phases of a round of ``config``'s method, in order (:func:`method_phases`)."""
    return method_phases(config.algorithm.name)


def round_loss(config: RoundsConfig, r: int, phase: str | None = None) -> RoundLoss:
    """The loss of round ``r`` of ``config``'s method in ``phase`` (one of :func:`round_phases`; None: the
    first, whose anchors' log-probabilities the round's dataset holds and whose form ``round.json`` records);
    see the module docstring. ``ValueError`` for a phase the method does not train."""
    name = config.algorithm.name
    eta, beta = float(config.eta), float(config.beta)
    phases = round_phases(config)
    phase = phases[0] if phase is None else phase
    if phase not in phases:
        raise ValueError(f"{config.algorithm.label} trains the round phases {', '.join(phases)}, not {phase!r}")
    if name == "onpo":  # π′_{t+1} anchored at π′_t, then π_{t+1} anchored at π′_{t+1}; β is not read
        return RoundLoss("pair", (("aux" if phase == "auxiliary" else "aux+1", 1.0),), eta)
    if name == "sppo":
        return RoundLoss("single", (("t", 1.0),), eta)
    step = eta * config.algorithm.loss_weight(eta * beta)  # MPO: η/(1 + ηβ); the others η
    c = step * beta
    if name == "mnpo":
        weights = [1.0] * config.history_length if config.history_weights is None else [float(w) for w in config.history_weights]
        total = sum(weights)
        history = [("t" if max(r - j, 0) == r else max(r - j, 0), (1.0 - c) * w / total) for j, w in enumerate(weights)]
        return RoundLoss("pair", _merged([("ref", c), *history]), step)
    magnet = magnet_source(r, config.magnet_period) if name in ("comal", "mpo") else "ref"
    return RoundLoss("pair", _merged([(magnet, c), ("t", 1.0 - c)]), step)


# ------------------------------------------------------------------------------------------------
# 1. the round's dataset
# ------------------------------------------------------------------------------------------------


def win_sums(P: "Sequence[Sequence[float]]") -> list[float]:
    """w_i = Σ_{j≠i} P(y_i ≻ y_j) of one prompt's K responses from the judged upper triangle ``P[i][j]``,
    i < j, with P(y_j ≻ y_i) = 1 − P(y_i ≻ y_j); w_i/(K − 1) is the win rate P̂(y_i ≻ π_t)."""
    K = len(P)
    wins = [0.0] * K
    for i in range(K):
        for j in range(i + 1, K):
            wins[i] += P[i][j]
            wins[j] += 1.0 - P[i][j]
    return wins


def _logprobs_under(policy: torch.nn.Module, state: dict | None, *batch: torch.Tensor) -> torch.Tensor:
    """Summed completion log-probabilities under ``policy`` in eval mode, with its trainable parameters
    set to ``state`` for the call (restored after, bit for bit) when one is given; a ``UsageError`` (one line,
    exit status 2) when ``state`` does not hold exactly the policy's trainable parameters (a round end saved by
    another model)."""
    from .launcher import UsageError

    saved = _trainable_state(policy) if state is not None else None
    if state is not None and set(state) != set(saved):
        raise UsageError(f"a saved round end holds other parameters than the policy's trainable ones "
                         f"({len(set(state) - set(saved))} unknown, {len(set(saved) - set(state))} missing): resume with the run's model and LoRA flags")
    was_training = policy.training
    policy.eval()
    try:
        if state is not None:
            policy.load_state_dict(state, strict=False)
        with torch.no_grad():
            return completion_logprobs(policy, *batch)
    finally:
        if saved is not None:
            policy.load_state_dict(saved, strict=False)
        policy.train(was_training)


def select_pairs(P: "Sequence[Sequence[float]]", selection: str, uniforms: Sequence[float] | None) -> list[tuple[int, int]]:
    """Ordered pairs (winner, loser) of one prompt's K responses from the judged upper triangle
    ``P[i][j]`` = P(y_i ≻ y_j), i < j. ``all``: every pair i < j in row order, y_i winning iff
    ``uniforms[n] < P[i][j]`` for the pair's draw n. ``best_vs_worst``: (argmax w, argmin w over the
    others), w_i = Σ_{j≠i} P(y_i ≻ y_j) (:func:`win_sums`)."""
    K = len(P)
    upper = [(i, j) for i in range(K) for j in range(i + 1, K)]
    if selection == "all":
        return [(i, j) if u < P[i][j] else (j, i) for (i, j), u in zip(upper, uniforms)]
    wins = win_sums(P)
    best = max(range(K), key=lambda k: (wins[k], -k))
    worst = min((k for k in range(K) if k != best), key=lambda k: (wins[k], k))
    return [(best, worst)]


def build_round_dataset(
    config: RoundsConfig,
    r: int,
    policy: torch.nn.Module,
    reference: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    judge: Callable[[Sequence[str], Sequence[Sequence[str]]], Sequence[float]],
    past_state: Callable[[Source], dict] | None = None,
) -> Path:
    """Sample, judge, select and score round ``r``'s dataset from the frozen π_t = ``policy`` (steps 1-5 of
    the module docstring) and publish it as ``round_dir/dataset`` (a staging folder renamed into place);
    returns the folder. ``reference``: a :class:`~lm_runs.generation.ReferenceModel`; ``past_state(s)``: the
    trainable parameters of the saved anchors the round's loss reads (:attr:`RoundLoss.saved_anchors`: π_s of an
    earlier round start s, ONPO's π′_t for "aux")."""

    K = config.samples_per_prompt
    rank, world = _rank_and_world()
    shards = [prompt_shard(len(prompts), k, world) for k in range(world)]
    seeds = [shard_seed(config.seed + r, k) for k in range(world)]
    loss = round_loss(config, r)
    mine = _sample_and_judge(config, policy, reference, tokenizer, [prompts[p] for p in shards[rank]], judge,
                             past_state, seeds[rank], loss)
    parts = [mine] if world == 1 else _all_gather(mine)
    texts = [t for part in parts for t in part["texts"]]
    token_ids = [t for part in parts for t in part["token_ids"]]
    truncated = [t for part in parts for t in part["truncated"]]
    lengths = [t for part in parts for t in part["lengths"]]
    logp_t = [t for part in parts for t in part["logp_t"]]
    logp_ref = [t for part in parts for t in part["logp_ref"]]
    logp_past = {s: [t for part in parts for t in part["logp_past"][s]] for s in loss.saved_anchors}
    answers = [t for part in parts for t in part["answers"]]
    upper = [(i, j) for i in range(K) for j in range(i + 1, K)]
    queries = [(p, i, j) for p in range(len(prompts)) for i, j in upper]
    uniforms = np.random.default_rng([config.seed, r]).random(len(queries)).tolist()
    judgements = [
        {"prompt_index": p, "i": i, "j": j, "p_i_over_j": float(a), "u": float(u)}
        for (p, i, j), a, u in zip(queries, answers, uniforms)
    ]
    pairs, win_rates = [], []
    per_prompt = len(upper)
    for p in range(len(prompts)):
        block = judgements[p * per_prompt : (p + 1) * per_prompt]
        P = [[0.5] * K for _ in range(K)]
        for row in block:
            P[row["i"]][row["j"]] = row["p_i_over_j"]
        chosen = select_pairs(P, config.pair_selection, [row["u"] for row in block])
        pairs += [{"prompt_index": p, "winner": w, "loser": lo} for w, lo in chosen]
        win_rates += [w / (K - 1) for w in win_sums(P)]
    responses = []
    for p in range(len(prompts)):
        for k in range(K):
            n = p * K + k
            row = {
                "prompt_index": p, "sample": k, "prompt": prompts[p], "response": texts[n],
                "token_ids": token_ids[n], "truncated": truncated[n],
                "length": lengths[n], "logp_policy": logp_t[n], "logp_ref": logp_ref[n],
                "win_rate": win_rates[n],
            }
            if logp_past:
                row["logp_past"] = {str(s): values[n] for s, values in logp_past.items()}
            responses.append(row)
    folder = round_dir(config.output_dir, r) / "dataset"
    meta = {
        "round": r, "alg": config.algorithm.name, "loss": loss.as_json(),
        "anchor_policies": {str(s): _describe_policy_file(s, r) for s in loss.saved_anchors},
        "samples_per_prompt": K, "pair_selection": config.pair_selection, "prompts": len(prompts),
        "generation_seed": config.seed + r, "draw_seed": [config.seed, r], "eta": config.eta, "beta": config.beta,
        "sampling": {"temperature": config.pair_sampling.temperature, "top_k": config.pair_sampling.top_k,
                     "top_p": config.pair_sampling.top_p, "min_p": config.pair_sampling.min_p},
        "max_new_tokens": config.max_new_tokens,
    }
    if len(round_phases(config)) > 1:  # ONPO: each phase's loss (the dataset holds the first one's anchors)
        meta["phases"] = {phase: round_loss(config, r, phase).as_json() for phase in round_phases(config)}
    if world > 1:
        meta["generation_shards"] = [{"rank": k, "prompts": [shard.start, shard.stop], "seed": seeds[k]}
                                     for k, shard in enumerate(shards)]
    if rank == 0:
        meta["judge"] = _judge_record(judge)
        staging = folder.with_name(".partial-dataset")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        write_jsonl(staging / "responses.jsonl", responses)
        write_jsonl(staging / "judgements.jsonl", judgements)
        write_jsonl(staging / "pairs.jsonl", pairs)
        atomic_write(staging / "round.json", json.dumps(meta, indent=2) + "\n")
        os.replace(staging, folder)
        fsync_directory(folder.parent)
    _barrier()  # every rank reads the published folder
    return folder


def _all_gather(part: dict) -> list[dict]:
    """Every rank's ``part``, in rank order, on every rank."""
    parts: list[Any] = [None] * _rank_and_world()[1]
    torch.distributed.all_gather_object(parts, part)
    return parts


def _sample_and_judge(
    config: RoundsConfig,
    policy: torch.nn.Module,
    reference: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    judge: Callable[[Sequence[str], Sequence[Sequence[str]]], Sequence[float]],
    past_state: Callable[[Source], dict] | None,
    seed: int,
    loss: RoundLoss,
) -> dict:
    """Steps 1, 2 and 4 of the module docstring for ``prompts`` (this rank's block): K samples per prompt from
    π_t = ``policy`` in one batched loop (its generator seeded with ``seed``), their summed log-probabilities
    under π_t, π_ref and the saved anchors ``loss`` reads, and the judge's P_ij of every pair i < j of each
    prompt, in (prompt, i, j) order. Plain lists (row = prompt·K + k), ready to gather across ranks."""
    K, device = config.samples_per_prompt, config.device
    batch = PromptCollator(tokenizer, config.max_prompt_length)([{"prompt": p} for p in prompts])
    prompt_ids = batch["prompt_ids"].to(device).repeat_interleave(K, dim=0)  # row = prompt * K + k
    prompt_mask = batch["prompt_mask"].to(device).repeat_interleave(K, dim=0)
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on any device
    sampled = generate_completions(
        policy, prompt_ids, prompt_mask, config.pair_sampling, max_new_tokens=config.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, generator=generator,
    )
    batch_ids = (prompt_ids, prompt_mask, sampled.ids, sampled.mask)
    logp_t = _logprobs_under(policy, None, *batch_ids)
    with torch.no_grad():
        logp_ref = completion_logprobs(reference, *batch_ids)
    logp_past = {s: _logprobs_under(policy, past_state(s), *batch_ids) for s in loss.saved_anchors}
    texts = tokenizer.batch_decode(sampled.ids, skip_special_tokens=True)
    lengths = sampled.lengths.tolist()
    texts_of = [prompt_text(p) for p in prompts]
    upper = [(i, j) for i in range(K) for j in range(i + 1, K)]
    queries = [(p, i, j) for p in range(len(prompts)) for i, j in upper]
    answers = judge([texts_of[p] for p, _, _ in queries], [[texts[p * K + i], texts[p * K + j]] for p, i, j in queries])
    return {
        "texts": texts, "token_ids": [sampled.ids[n, : lengths[n]].tolist() for n in range(len(texts))],
        "truncated": [bool(sampled.truncated[n]) for n in range(len(texts))], "lengths": lengths,
        "logp_t": [float(v) for v in logp_t], "logp_ref": [float(v) for v in logp_ref],
        "logp_past": {s: [float(v) for v in values] for s, values in logp_past.items()},
        "answers": [float(a) for a in answers],
    }


def _policy_file(s: Source, r: int) -> str | None:
    """Where round ``r``'s saved anchor ``s`` is kept, relative to output_dir: π_s, the policy at round s's start,
    in ``rounds/round-(s−1)/policy.pt``; ONPO's π′_t ("aux") in ``rounds/round-(r−1)/auxiliary/policy.pt``;
    None for the initial policy (π_0 = π′_0)."""
    before = s - 1 if isinstance(s, int) else r - 1
    if before < 0:
        return None
    return f"rounds/round-{before}/" + ("policy.pt" if isinstance(s, int) else "auxiliary/policy.pt")


def _describe_policy_file(s: Source, r: int) -> str:
    """:func:`_policy_file` for ``round.json``, naming the initial policy in words."""
    return _policy_file(s, r) or "the initial policy (--model_name_or_path, seeded adapter)"


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _prompt_ids(tokenizer: Any, prompt: Any, max_prompt_length: int | None) -> list[int]:
    """A saved prompt's token ids as the collator encodes it (longer than ``max_prompt_length``: its end)."""
    ids = encode_prompt(tokenizer, prompt)
    return ids[-max_prompt_length:] if max_prompt_length else ids


def _response_logprobs(policy: torch.nn.Module, tokenizer: Any, responses: Sequence[dict], max_prompt_length: int | None,
                       batch_size: int, device: Any) -> list[float]:
    """Summed log-probabilities under ``policy`` (eval mode, no gradient) of saved responses (rows of
    ``responses.jsonl``: their prompt and ``token_ids``), in batches of ``batch_size`` rows."""
    out: list[float] = []
    for start in range(0, len(responses), batch_size):
        chunk = responses[start : start + batch_size]
        prompt_ids, prompt_mask = _padded([_prompt_ids(tokenizer, row["prompt"], max_prompt_length) for row in chunk],
                                          tokenizer.pad_token_id, left=True)
        completion_ids, completion_mask = _padded([row["token_ids"] for row in chunk], tokenizer.pad_token_id, left=False)
        batch = (t.to(device) for t in (prompt_ids, prompt_mask, completion_ids, completion_mask))
        out += [float(v) for v in _logprobs_under(policy, None, *batch)]
    return out


def _publish_auxiliary(config: RoundsConfig, folder: Path, policy: torch.nn.Module, tokenizer: Any) -> None:
    """ONPO: rank 0 publishes the auxiliary phase's end π′_{t+1} = ``policy`` as ``folder/auxiliary`` (staged in
    ``.partial-auxiliary``, renamed into place): ``policy.pt`` (its trainable parameters, bit for bit: what the
    rounds read back), the same parameters as a ``from_pretrained`` folder with the tokenizer (``policy``'s
    ``save_pretrained``: with ``--use_peft`` the LoRA adapter, ``PeftModel.from_pretrained(base, folder)``; else
    the whole model, ``AutoModelForCausalLM.from_pretrained(folder)``; the layout of ``epochs/epoch-k``) and
    ``logp.jsonl`` (every response of the round's dataset, in its order, with its summed log-probability
    under π′_{t+1}: the policy phase's anchor); every rank waits for it."""
    if _rank_and_world()[0] == 0:
        responses = _read_jsonl(folder / "dataset" / "responses.jsonl")
        logps = _response_logprobs(policy, tokenizer, responses, config.max_prompt_length,
                                   config.per_device_train_batch_size, config.device)
        staging = folder / ".partial-auxiliary"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        torch.save(_trainable_state(policy), staging / "policy.pt")
        policy.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_jsonl(staging / "logp.jsonl", [{"prompt_index": row["prompt_index"], "sample": row["sample"], "logp": v}
                                            for row, v in zip(responses, logps)])
        os.replace(staging, folder / "auxiliary")
        fsync_directory(folder)
    _barrier()


def load_round_dataset(folder: str | os.PathLike[str], tokenizer: Any, max_prompt_length: int | None, loss: RoundLoss) -> list[dict]:
    """The training rows of a saved round dataset for the round's ``loss``: the prompt's token ids (encoded
    as the collator encodes it), the completions' token ids (pair form: [winner, loser], one row per ordered
    pair; single form: [y], one row per response of the selected pairs, in order of first appearance), per
    completion the (summed) log-probabilities of the anchors in ``loss.anchors``' order, and the row's
    target (pair: step/2; single: step·(P̂(y ≻ π_t) − ½)). ONPO's "aux+1" (π′_{t+1}) is read from the
    auxiliary phase's ``logp.jsonl`` beside the dataset (``folder/../auxiliary``)."""

    folder = Path(folder)
    responses = {(row["prompt_index"], row["sample"]): row for row in _read_jsonl(folder / "responses.jsonl")}
    key = {"ref": "logp_ref", "t": "logp_policy"}
    if any(s == "aux+1" for s, _ in loss.anchors):
        after = {(row["prompt_index"], row["sample"]): row["logp"] for row in _read_jsonl(folder.parent / "auxiliary" / "logp.jsonl")}
        responses = {k: {**row, "logp_past": {**row.get("logp_past", {}), "aux+1": after[k]}} for k, row in responses.items()}

    def anchors(row: dict) -> list[float]:
        return [row[key[s]] if s in key else row["logp_past"][str(s)] for s, _ in loss.anchors]

    def prompt_ids(row: dict) -> list[int]:
        return _prompt_ids(tokenizer, row["prompt"], max_prompt_length)

    pairs = [(responses[(q["prompt_index"], q["winner"])], responses[(q["prompt_index"], q["loser"])])
             for q in _read_jsonl(folder / "pairs.jsonl")]
    if loss.form == "pair":
        return [{"prompt_ids": prompt_ids(w), "completions": [w["token_ids"], lo["token_ids"]],
                 "anchor_logp": [anchors(w), anchors(lo)], "target": 0.5 * loss.step} for w, lo in pairs]
    chosen = list({(y["prompt_index"], y["sample"]): y for pair in pairs for y in pair}.values())
    return [{"prompt_ids": prompt_ids(y), "completions": [y["token_ids"]], "anchor_logp": [anchors(y)],
             "target": loss.step * (y["win_rate"] - 0.5)} for y in chosen]


def _padded(seqs: Sequence[Sequence[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (rows, width) padded with ``pad`` on the left (prompts) or the right (completions), and the mask."""
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for n, s in enumerate(seqs):
        if s:
            span = slice(width - len(s), width) if left else slice(0, len(s))
            ids[n, span], mask[n, span] = torch.tensor(list(s), dtype=torch.long), 1
    return ids, mask


class RoundCollator:
    """Batch rows of :func:`load_round_dataset` (n completions each) as ``prompt_ids/prompt_mask``
    (left-padded) and ``completion_ids/completion_mask`` (right-padded), completion-major: every row's first
    completion (the winners), then every row's second (the losers); ``anchor_logp`` (B, n, M) and
    ``target`` (B,) in float32."""

    def __init__(self, pad_token_id: int):
        self.pad = int(pad_token_id)

    def __call__(self, rows: Sequence[dict]) -> dict:
        n = len(rows[0]["completions"])
        prompt_ids, prompt_mask = _padded([row["prompt_ids"] for row in rows] * n, self.pad, left=True)
        completion_ids, completion_mask = _padded([row["completions"][i] for i in range(n) for row in rows], self.pad, left=False)
        return {
            "prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids, "completion_mask": completion_mask,
            "anchor_logp": torch.tensor([row["anchor_logp"] for row in rows], dtype=torch.float32),
            "target": torch.tensor([row["target"] for row in rows], dtype=torch.float32),
        }


# ------------------------------------------------------------------------------------------------
# 2. training on it
# ------------------------------------------------------------------------------------------------


def round_loss_terms(loss: RoundLoss, ell: torch.Tensor, anchor_logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row round loss, not reduced. ``ell`` (B, n) log-probabilities under π_θ of the rows' completions,
    ``anchor_logp`` (B, n, M) under the M anchors of ``loss``, ``target`` (B,). Pair form (n = 2, [winner,
    loser]): (Δ_θ − Σ_k w_k Δ_k − target)², egpo_core's ``ipo_regression_loss`` with the anchor mixture
    :func:`~egpo_core.losses.anchor_mixture_logp` — INPO's (Δ_θ − ηβ Δ_ref − (1 − ηβ) Δ_t − η/2)² with the
    anchors (ref, t) and target η/2, bit for bit the loss this module computed before the mixture had its home
    in egpo_core. Single form (n = 1): (ℓ_θ − Σ_k w_k ℓ_k − target)², SPPO's with the one anchor π_t."""
    anchors = anchor_logp.unbind(-1)
    if loss.form == "pair":
        mixed = anchor_mixture_logp(anchors, loss.weights)
        return ipo_regression_loss(ell[:, 0], ell[:, 1], mixed[:, 0], mixed[:, 1], target)
    return (anchored_log_ratio(ell[:, 0], [a[:, 0] for a in anchors], loss.weights) - target) ** 2


class _StepLosses(TrainerCallback):
    """Closes each optimizer step's loss record (:meth:`RoundTrainer._end_step`) before anything logs it."""

    def __init__(self, trainer: "RoundTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._end_step()
        return control


class _RoundCallbacks(CallbackHandler):
    """The Trainer's callback handler, whose every event also passes the trainer's ``round_index`` and
    ``round_phase`` (:data:`PHASES`) to the callbacks as keyword arguments: how a callback given to
    :func:`run_rounds` tells ONPO's auxiliary phase (the model holds π′) from the policy phase."""

    def __init__(self, trainer: "RoundTrainer", handler: CallbackHandler):
        super().__init__(handler.callbacks, handler.model, handler.processing_class, handler.optimizer, handler.lr_scheduler)
        self.trainer = trainer

    def call_event(self, event, args, state, control, **kwargs):
        return super().call_event(event, args, state, control, round_index=self.trainer.round_index,
                                  round_phase=self.trainer.round_phase, **kwargs)


class RoundTrainer(AtomicCheckpoints, Trainer):
    """HF Trainer of one round: :func:`round_loss_terms` of ``round_loss`` (a :class:`RoundLoss`, a keyword
    argument) on the round's rows, the anchors' log-probs read from the saved dataset. ``step_losses`` holds each optimizer step's mean
    loss over its micro-batches' pairs; the logged ``loss`` is their mean since the last log (not
    rounded, unlike the Trainer's own). Every callback event carries ``round_index`` and ``round_phase``
    (keyword arguments, :class:`_RoundCallbacks`)."""

    def __init__(self, *args, round_loss: RoundLoss, **kwargs):
        super().__init__(*args, **kwargs)
        self.callback_handler = _RoundCallbacks(self, self.callback_handler)
        self.round_loss = round_loss
        self.round_index = 0  # set by run_rounds; logged with every loss
        self.round_phase = "policy"  # set by run_rounds: ONPO's "auxiliary" phase trains π′, every other phase the policy
        self.step_losses: list[float] = []
        self._since_log: list[float] = []
        self._micro: list[float] = []
        self.callback_handler.callbacks.insert(0, _StepLosses(self))  # before the flow decides to log

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mask = inputs["completion_mask"]
        logp = completion_logprobs(model, inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], mask)
        anchor_logp = inputs["anchor_logp"]
        B, n = anchor_logp.shape[:2]
        lengths = mask.sum(-1).clamp_min(1).float()
        ell = logp.view(n, B).T
        if self.args.length_normalize:
            per = lengths.view(n, B).T
            ell, anchor_logp = ell / per, anchor_logp / per.unsqueeze(-1)
        loss = round_loss_terms(self.round_loss, ell, anchor_logp, inputs["target"]).mean()
        self._micro.append(float(loss.detach()))
        return loss

    def next_phase(self, args: RoundsConfig, rows: list[dict], round_loss: RoundLoss) -> None:
        """Point this trainer at the next round (or ONPO phase) of the run: its arguments ``args`` (the phase's
        folder, epochs and seed), training ``rows`` and ``round_loss``; the next ``train()`` builds a fresh
        optimizer and learning-rate schedule (under DeepSpeed a fresh engine: accelerate's ``free_memory``
        destroys the last) from the model's parameters as they are, and the random generators are seeded with
        ``args.seed`` as a new Trainer seeds them. One Trainer serves the whole run because accelerate accepts a
        DeepSpeed plugin only in the first Accelerator of a process."""
        from transformers.trainer_utils import enable_full_determinism, set_seed

        self.args, self.train_dataset, self.round_loss = args, rows, round_loss
        self.optimizer, self.lr_scheduler, self.model_wrapped = None, None, self.model
        self.step_losses, self._since_log, self._micro = [], [], []
        enable_full_determinism(args.seed) if args.full_determinism else set_seed(args.seed)

    def _end_step(self) -> None:
        """Called at each optimizer step's end: its micro-batches' mean loss is the step's."""
        if self._micro:
            self.step_losses.append(sum(self._micro) / len(self._micro))
            self._since_log.append(self.step_losses[-1])
            self._micro = []

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._since_log:
            logs["loss"] = sum(self._since_log) / len(self._since_log)
            logs["round"] = self.round_index
            self._since_log = []
        super().log(logs, start_time)


def _trainable_state(model: torch.nn.Module) -> dict:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def _check_saved_rounds(config: RoundsConfig, losses: Sequence[RoundLoss]) -> None:
    """``ValueError`` (one line) when a saved round dataset was built for another loss than the flags give
    (its anchors' log-probabilities would not be the ones the loss reads); a dataset saved before round.json
    named its loss is an INPO round."""
    for r, loss in enumerate(losses):
        meta_file = round_dir(config.output_dir, r) / "dataset" / "round.json"
        if not meta_file.is_file():
            continue
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        saved = meta.get("loss", {"form": "pair", "anchors": [["ref", meta["eta"] * meta["beta"]], ["t", 1.0 - meta["eta"] * meta["beta"]]], "step": meta["eta"]})
        if saved != json.loads(json.dumps(loss.as_json())):
            raise ValueError(f"--resume_from_checkpoint true: round {r}'s saved dataset was built for the loss {json.dumps(saved)} "
                             f"({meta.get('alg', 'inpo')}), the flags give {json.dumps(loss.as_json())} ({config.algorithm.name}); resume with the run's flags")


def _judge_record(judge: Any) -> dict:
    """The judge by content (:func:`~lm_runs.judges.base.judge_identity`) as ``round.json`` stores it."""
    from .judges.base import judge_identity

    return json.loads(json.dumps(judge_identity(judge), default=str))


def _check_saved_judges(config: RoundsConfig, judge: Any) -> None:
    """``ValueError`` (one line) when a saved round was judged by another judge than ``judge`` (its
    ``round.json``'s ``judge``): the rounds still to come would follow another preference. Rounds saved
    before round.json named its judge are not checked."""
    from .judges.base import identity_changes

    now = None
    for r in range(config.rounds):
        meta_file = round_dir(config.output_dir, r) / "dataset" / "round.json"
        saved = json.loads(meta_file.read_text(encoding="utf-8")).get("judge") if meta_file.is_file() else None
        if saved is None:
            continue
        now = _judge_record(judge) if now is None else now
        changes = identity_changes(saved, now)
        if changes:
            shown = "; ".join(changes[:3]) + ("; …" if len(changes) > 3 else "")
            raise ValueError(f"--resume_from_checkpoint true: round {r} was judged by another judge ({shown}); resume with "
                             "the judge the run was trained with, or start a new run (another --output_dir, or --overwrite_output_dir true)")


def run_rounds(
    config: RoundsConfig,
    *,
    judge: Callable[[Sequence[str], Sequence[Sequence[str]]], Sequence[float]] | None = None,
    resume: bool = False,
    stop_after: Callable[[int, Any], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Run (or, with ``resume``, continue) every round of ``config``; returns the last round's trainer (ONPO:
    its policy phase's). ``judge``: an in-process judge (else ``config.judge``'s spec, loaded and probed as in
    :func:`lm_runs.train_nlhf.build_trainer`). ``stop_after(r, trainer)`` is called after round r's
    training (tests interrupt there); ``callbacks``: ``TrainerCallback`` objects given to every round's trainer
    (ONPO: to both phases' trainers; every event passes them ``round_phase``, "auxiliary" or "policy", and
    ``round_index`` as keyword arguments)."""
    from transformers import set_seed

    from .checkpoints import MODEL_MARKERS, latest_checkpoint, save_model_atomically
    from .data import load_prompts
    from .judges import CheckedJudge, JudgeError, load_judge
    from .launcher import inputs_checked, one_line, warn_deepspeed_optimizer
    from .models import load_policy, load_reference, load_tokenizer

    warn_deepspeed_optimizer(config)
    losses = [round_loss(config, r) for r in range(config.rounds)]
    if resume:
        _check_saved_rounds(config, losses)
    prompts = [row["prompt"] for row in load_prompts(
        config.prompts, column=config.prompt_column, split=config.prompts_split,
        max_prompts=config.max_prompts, max_chars=config.max_prompt_chars,
    )]
    rank, world = config.process_index, config.world_size  # (sets up the process group under torchrun)
    if len(prompts) < world:
        raise ValueError(f"--prompts {config.prompts}: {len(prompts)} prompt(s) for {world} processes; every rank samples at least one")
    if judge is None:
        checked = load_judge(config.judge, seed=config.seed, device=str(config.device), **config.judge_kwargs())
        probe = prompt_text(prompts[0])
        try:
            checked([probe, probe], [["Yes.", "No."], ["No.", "Yes."]])  # two pairs: a wrong count shows
        except JudgeError as error:  # a judge that cannot answer two pairs is a bad --judge
            raise ValueError(f"--judge {config.judge}: {one_line(error)}") from None
    else:
        checked = judge if isinstance(judge, CheckedJudge) else CheckedJudge(judge)
    if resume:
        _check_saved_judges(config, checked)
    tokenizer = load_tokenizer(config.model_name_or_path, padding_side="left")
    dtype = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    policy = load_policy(config.model_name_or_path, dtype=dtype, lora=config, seed=config.seed)
    ref_model = load_reference(config.model_name_or_path, config.ref_model_name_or_path, use_peft=config.use_peft, dtype=dtype)
    policy.to(config.device)
    reference = ReferenceModel(policy, frozen=None if ref_model is None else ref_model.to(config.device))
    initial = _trainable_state(policy)  # π_0 = π′_0 (the same after a restart: the adapter is seeded)

    def saved_state(s: Source, r: int) -> dict:
        """The trainable parameters of round ``r``'s saved anchor ``s`` (:func:`_policy_file`)."""
        file = _policy_file(s, r)
        return initial if file is None else torch.load(Path(config.output_dir) / file, map_location="cpu")  # load_state_dict copies it to the policy's device

    inputs_checked()
    trainer = None
    for r in range(config.rounds):
        folder = round_dir(config.output_dir, r)
        _barrier()  # every rank sees the same saved state (the round ends rank 0 wrote)
        if resume and (folder / "policy.pt").is_file():
            continue
        if r > 0:
            policy.load_state_dict(saved_state(r, r), strict=False)  # π_t
        dataset = folder / "dataset"
        if not (resume and (dataset / "round.json").is_file()):
            if rank == 0:
                shutil.rmtree(folder, ignore_errors=True)
            set_seed(config.seed + r)
            build_round_dataset(config, r, policy, reference, tokenizer, prompts, checked, lambda s: saved_state(s, r))
        for phase in round_phases(config):
            if phase == "auxiliary" and resume and (folder / "auxiliary").is_dir():
                continue  # ONPO's auxiliary phase ended (its folder is published whole)
            loss = round_loss(config, r, phase)
            if phase == "auxiliary":
                policy.load_state_dict(saved_state("aux", r), strict=False)  # π′_t: the auxiliary phase's start
            elif "aux+1" in dict(loss.anchors):
                policy.load_state_dict(torch.load(folder / "auxiliary" / "policy.pt", map_location="cpu"), strict=False)  # π′_{t+1}
            rows = load_round_dataset(dataset, tokenizer, config.max_prompt_length, loss)
            args = copy.copy(config)  # the phase's view: its folder, epochs and seed (checked options unchanged)
            args.output_dir = str(folder / ("auxiliary-trainer" if phase == "auxiliary" else "trainer"))
            args.num_train_epochs, args.seed = float(config.epochs_per_round), config.seed + r
            args.resume_from_checkpoint, args.overwrite_output_dir = None, False
            if trainer is None:
                trainer = RoundTrainer(model=policy, args=args, train_dataset=rows, data_collator=RoundCollator(tokenizer.pad_token_id),
                                       processing_class=tokenizer, callbacks=list(callbacks), round_loss=loss)
            else:
                trainer.next_phase(args, rows, loss)
            trainer.round_index, trainer.round_phase = r, phase
            trainer.train(resume_from_checkpoint=latest_checkpoint(args.output_dir) if resume else None)
            if phase == "auxiliary":
                _publish_auxiliary(config, folder, policy, tokenizer)
        if stop_after is not None:
            stop_after(r, trainer)
        save_model_atomically(trainer, epoch_dir(config.output_dir, r + 1))
        if rank == 0:
            atomic_write(folder / "policy.pt", lambda f: torch.save(_trainable_state(policy), f))
    _barrier()
    if trainer is not None:
        save_model_atomically(trainer, config.output_dir)
    elif rank == 0 and not any((Path(config.output_dir) / name).is_file() for name in MODEL_MARKERS):
        # every round had finished, but the run stopped before saving the final model: the last round's end
        state = torch.load(round_dir(config.output_dir, config.rounds - 1) / "policy.pt", map_location="cpu")  # load_state_dict copies it to the policy's device
        policy.load_state_dict(state, strict=False)
        save_model_atomically(policy, config.output_dir, tokenizer=tokenizer)
    _barrier()
    return trainer


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lm_runs.rounds`` (and ``python -m lm_runs.train_nlhf --rounds R …``): parse and check the
    options (one line, exit status 2), check the output folder, run the rounds."""
    from .cli import parse_config
    from .launcher import UsageError, clear_previous_run
    from .models import check_model_source

    (config,) = parse_config([RoundsConfig], argv)
    if not config.judge:
        raise ValueError("--judge is required")
    folder = Path(config.output_dir)
    resume_flag = str(config.resume_from_checkpoint or "").strip().lower()
    if resume_flag not in ("", "false", "none", "true"):
        raise UsageError(f"--resume_from_checkpoint {config.resume_from_checkpoint}: round mode resumes with 'true' (it finds the round and its checkpoint)")
    resume = resume_flag == "true"
    if resume and config.overwrite_output_dir:
        raise UsageError("--resume_from_checkpoint and --overwrite_output_dir contradict each other: give one")
    if resume and not (folder / "rounds").is_dir():
        raise UsageError(f"--resume_from_checkpoint true: no rounds in {folder}")
    if not resume and folder.is_dir() and any(folder.iterdir()):
        if not config.overwrite_output_dir:
            raise UsageError(f"--output_dir {folder} is not empty: resume it with --resume_from_checkpoint true, replace it with --overwrite_output_dir true, or choose another folder")
    check_model_source(config.model_name_or_path, "policy")
    if config.ref_model_name_or_path:
        check_model_source(config.ref_model_name_or_path, "reference")
    if config.world_size > 1:
        _barrier()  # every rank has checked the folder before any writes to it
    if not resume and config.overwrite_output_dir and config.process_index == 0:
        clear_previous_run(folder)
        shutil.rmtree(folder / "rounds", ignore_errors=True)
    run_rounds(config, resume=resume)


def wants_rounds(argv: Sequence[str]) -> bool:
    """Whether ``python -m lm_runs.train_nlhf argv`` asks for the round mode: ``--rounds`` among the flags
    or the ``--config`` file's keys, or an ``--alg`` that exists only in rounds (inpo, comal, mpo, mnpo, onpo,
    or an alias; sppo also trains online). A ``--config`` file that cannot be read answers False (the ordinary
    parser then reports it)."""
    from .cli import ConfigFileError, config_flags

    flags = list(argv)
    for n, flag in enumerate(argv):
        path = flag.split("=", 1)[1] if flag.startswith("--config=") else argv[n + 1] if flag == "--config" and n + 1 < len(argv) else None
        if path is not None:
            try:
                flags = config_flags(path) + flags
            except ConfigFileError:
                return False
    alg = None
    for n, flag in enumerate(flags):
        if flag == "--rounds" or flag.startswith("--rounds="):
            return True
        if flag.startswith("--alg="):
            alg = flag.split("=", 1)[1]
        elif flag == "--alg" and n + 1 < len(flags):
            alg = flags[n + 1]
    try:
        online = {get_algorithm(name).name for name in LM_ALGORITHMS}
        return alg is not None and get_algorithm(alg).name in set(ROUND_ALGORITHMS) - online
    except ValueError:
        return False


if __name__ == "__main__":
    from .launcher import run_entry_point

    run_entry_point(main)
