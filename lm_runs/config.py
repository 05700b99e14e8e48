"""NLHFConfig: every option of ``python -m lm_runs.train_nlhf``, one documented field each.

A ``transformers.TrainingArguments`` (through :class:`lm_runs.training_arguments.TrainingRunArguments`,
with the LoRA fields and ``--overwrite_output_dir``; the judge flags come from
:class:`lm_runs.judges.arguments.JudgeArguments`), so the usual HF flags (``--deepspeed``,
``--report_to``, ``--save_steps``, ``--gradient_accumulation_steps``, ``--bf16``, ``--use_cpu``, …)
work as in any HF project; parsed by ``HfArgumentParser`` from flags and ``--config file.yaml``.

Counting: ``--per_device_train_batch_size`` counts prompts; every step-counted flag counts *updates* of
the algorithm — ``--max_steps``, ``--num_train_epochs``, ``--logging_steps``, ``--save_steps``,
``--warmup_steps``, ``--logging_first_step`` (a ratio such as ``--save_steps 0.25`` is a fraction of the
planned updates), and ``--logging_strategy/--save_strategy epoch`` means an epoch of updates — and so do
the logs, TensorBoard's x-axis, the progress bar (console and Jupyter) and the learning-rate schedule. An
EGPO update is two optimizer steps (the half step and the full step, each on its own batch): the trainer
derives the optimizer-step count (:attr:`NLHFConfig.steps_per_update` × updates), "epoch k" of EGPO is
after 2k passes over the prompts (``epochs/epoch-k``), and a log or checkpoint falls only after a full
step. For the other algorithms an update is one optimizer step, and nothing differs.

Checkpoint folders keep the Trainer's numbering, ``checkpoint-N`` with N = optimizer steps (the
``global_step`` of its ``trainer_state.json``): EGPO's checkpoint after update u is ``checkpoint-{2u}``
(``--save_steps 3 --max_steps 6`` writes ``checkpoint-6`` and ``checkpoint-12``). Only a judge failure
between EGPO's half and full step writes an odd N (a resumable mid-update checkpoint), which is why the
folders do not count updates.

``--alg`` takes the names of :data:`LM_ALGORITHMS` (the README's) or any alias egpo_core declares for
them (``eg``, ``nmd``, ``nash_md``, ``nmdpg``, …), trained online; the methods of :data:`ROUND_ALGORITHMS`
train in the iterative round mode (``--rounds R``, :mod:`lm_runs.rounds`); OMWU is tabular/neural only and
refused.

Checkpoints: ``--save_steps N`` alone saves every N updates (``lm_runs.cli`` then selects
``--save_strategy steps``, as in any Hugging Face project); without it no checkpoint is written (the
epoch models and the final model are). There is no evaluation set (the saved models are evaluated by
``python -m lm_runs.evaluate``), so ``--eval_strategy`` other than ``no`` and ``--eval_steps`` are refused.

Sampling defaults follow the EGPO paper's language-model runs: the pair y, y′ at temperature 2 with top-k 10 and the
opponent y″ at temperature 1 for Online IPO 1, EGPO and Nash-MD; y, y′ at temperature 1 for Online
IPO 2 and y at temperature 1 for Nash-MD-PG (policy-gradient samples must be on-policy). Leave a
``pair_*`` field unset (None) for the algorithm's default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from egpo_core.algorithms import Algorithm, Scheme, get_algorithm

from .generation import SamplingParams, sampling_params
from .judges.arguments import JudgeArguments
from .training_arguments import TrainingRunArguments, check_training_numbers

__all__ = ["NLHFConfig", "LM_ALGORITHMS", "ROUND_ALGORITHMS", "resolve_algorithm", "zero_stage"]

#: The algorithms whose online language-model form is defined here (one rollout per update), by the names
#: the README and ``--alg`` use (egpo_core's registry names and aliases are accepted too). OMWU (its target
#: needs samples from the previous iterate π_{t−1}) has no language-model form; ONPO's (two regressions, its
#: auxiliary policy's and the policy's) is a round method.
LM_ALGORITHMS = ("egpo", "oipo1", "oipo2", "nashmd", "nashmdpg", "sppo")

#: The algorithms of the iterative round mode (:mod:`lm_runs.rounds`), by registry name: each round samples
#: from the frozen π_t, judges and trains epochs on that dataset. INPO, COMAL, MPO, MNPO and ONPO run only in
#: rounds (their LM losses read the step η of the round's mirror-descent update; ONPO's also an auxiliary
#: policy carried from round to round); SPPO runs both ways.
ROUND_ALGORITHMS = ("inpo", "comal", "mpo", "mnpo", "sppo", "onpo")


def _choices() -> str:
    """``egpo (eg), oipo1 (online_ipo1), …``: the ``--alg`` names with the other spellings accepted."""
    listed = []
    for name in LM_ALGORITHMS:
        algorithm = get_algorithm(name)
        others = [a for a in dict.fromkeys((algorithm.name, *algorithm.aliases)) if a != name]
        listed.append(f"{name} ({', '.join(others)})" if others else name)
    return ", ".join(listed) + f"; or {', '.join(ROUND_ALGORITHMS)}, trained in rounds (--rounds R: python -m lm_runs.rounds --help)"


def resolve_algorithm(name: str) -> Algorithm:
    """The egpo_core :class:`Algorithm` of an ``--alg`` value (a name of :data:`LM_ALGORITHMS` or an
    alias, case-insensitively); ``ValueError`` (one line listing the choices) for an unknown name or an
    algorithm without a language-model form."""
    try:
        algorithm = get_algorithm(str(name))
    except ValueError:
        raise ValueError(f"unknown algorithm --alg {name!r}; choose one of: {_choices()}") from None
    if algorithm.name in ROUND_ALGORITHMS and algorithm.name not in {get_algorithm(n).name for n in LM_ALGORITHMS}:
        raise ValueError(f"--alg {name}: {algorithm.label} trains in rounds only: give --rounds R (python -m lm_runs.rounds --help)")
    if algorithm.name not in {get_algorithm(n).name for n in LM_ALGORITHMS}:
        raise ValueError(f"--alg {name}: {algorithm.label} has no language-model form here; choose one of: {_choices()}")
    return algorithm


def _help(text: str) -> dict:
    return {"help": text}


def zero_stage(deepspeed: str | dict | None) -> int | None:
    """The ZeRO stage of a ``--deepspeed`` config (a JSON file or a dict); None without one or when the
    file cannot be read (TrainingArguments then reports it)."""
    if isinstance(deepspeed, str) and deepspeed:
        try:
            deepspeed = json.loads(Path(deepspeed).read_text())
        except (OSError, ValueError):
            return None
    if not isinstance(deepspeed, dict):
        return None
    return int(deepspeed.get("zero_optimization", {}).get("stage", 0))


@dataclass
class NLHFConfig(JudgeArguments, TrainingRunArguments):
    """Configuration of NLHF training (see the module docstring for how steps are counted)."""

    # --- what to train ---------------------------------------------------------------------------
    alg: str = field(default="egpo", metadata=_help(f"Algorithm: one of {', '.join(LM_ALGORITHMS)} (egpo_core's aliases such as eg, nmd, nmdpg, nash_md are accepted), trained online; {', '.join(ROUND_ALGORITHMS)} run the iterative round mode instead (--rounds R and the round flags below; sppo trains online without --rounds)."))
    """Algorithm name (one of :data:`LM_ALGORITHMS`, or an alias egpo_core declares for one)."""
    model_name_or_path: str | None = field(default=None, metadata=_help("Policy to train (its initial weights)."))
    """Directory or hub name of the initial policy (usually the SFT reference policy)."""
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata=_help("π_ref; default the initial policy. With --use_peft and no value: the policy with its adapter disabled."),
    )
    """π_ref. Unset: the initial policy (with LoRA the same base model, adapter disabled, no second copy)."""
    beta: float = field(default=0.1, metadata=_help("KL-regularization β > 0 of the game."))
    """β of the KL-regularized preference game (paper: 0.1)."""

    # --- prompts ------------------------------------------------------------------------------------
    prompts: str | None = field(
        default=None,
        metadata=_help("JSONL/CSV/Parquet file, datasets.save_to_disk folder or datasets name; its prompt column holds strings or chat message lists."),
    )
    """Where the training prompts come from (see ``lm_runs.data.load_prompts``)."""
    prompt_column: str = field(default="prompt", metadata=_help("Column holding the prompts."))
    """Name of the prompt column."""
    prompts_split: str = field(default="train", metadata=_help("Split, for a datasets name."))
    """Split to load when ``prompts`` names a hub dataset."""
    max_prompts: int | None = field(default=None, metadata=_help("Keep the first n prompts (paper: 30000)."))
    """Use only the first n prompts."""
    max_prompt_chars: int | None = field(default=None, metadata=_help("Drop prompts longer than this many characters (paper: 300)."))
    """Character limit on prompts (applied before ``max_prompts``)."""
    max_prompt_length: int = field(default=256, metadata=_help("Prompts longer than this many tokens keep their end."))
    """Token limit on prompts; longer ones are left-truncated so the generation prompt survives."""

    # --- sampling -----------------------------------------------------------------------------------
    max_new_tokens: int = field(default=64, metadata=_help("Maximum tokens per response (longer ones are logged as truncated)."))
    """Maximum new tokens per response."""
    samples_per_prompt: int = field(default=1, metadata=_help("Online: pairs (y, y′) per prompt and step. Round mode: K, the responses sampled per prompt in a round (≥ 2, default 4)."))
    """Number of (y, y′) pairs drawn per prompt (each with its own opponent sample); round mode: K."""
    pair_temperature: float | None = field(default=None, metadata=_help("Temperature of y, y′ (default: 2.0, or 1.0 for oipo2/nashmdpg)."))
    """Temperature of the pair y, y′."""
    pair_top_k: int | None = field(default=None, metadata=_help("Top-k of y, y′, 0 = off (default: 10, or 0 for oipo2/nashmdpg)."))
    """Top-k of the pair (0 disables)."""
    pair_top_p: float = field(default=1.0, metadata=_help("Top-p (nucleus) of y, y′."))
    """Nucleus threshold of the pair."""
    pair_min_p: float = field(default=0.0, metadata=_help("Min-p of y, y′."))
    """Min-p threshold of the pair."""
    opponent_temperature: float = field(default=1.0, metadata=_help("Temperature of the opponent y″ (policy or mixture)."))
    """Temperature of the opponent sample y″."""
    opponent_top_k: int = field(default=0, metadata=_help("Top-k of y″, 0 = off."))
    """Top-k of the opponent sample."""
    opponent_top_p: float = field(default=1.0, metadata=_help("Top-p of y″."))
    """Nucleus threshold of the opponent sample."""
    opponent_min_p: float = field(default=0.0, metadata=_help("Min-p of y″."))
    """Min-p threshold of the opponent sample."""
    mixture_coef: float = field(
        default=0.125,
        metadata=_help("c of the Nash-MD geometric mixture: logits (1 − c)·log π_θ + c·log π_ref (paper: 0.125)."),
    )
    """Mixture coefficient c ∈ [0, 1] of Nash-MD and Nash-MD-PG's opponent."""

    # --- loss ---------------------------------------------------------------------------------------
    length_normalize: bool = field(
        default=True,
        metadata=_help("IPO losses: ℓ = mean per-token log-probability (the paper's); false: summed. Nash-MD-PG always sums."),
    )
    """Length-normalized sequence log-probabilities in the IPO-family losses."""

    # --- judge (--judge, --judge_batch_size, --judge_timeout, --judge_retries: JudgeArguments) ------
    judge_gather: bool = field(
        default=False,
        metadata=_help("Distributed runs: rank 0 judges all ranks' pairs and sends each its own (default: each rank judges its own)."),
    )
    """Whether rank 0 alone calls the judge (``lm_runs.judges.GatheringJudge``)."""

    # --- EGPO ---------------------------------------------------------------------------------------
    extragradient_offload: bool = field(default=False, metadata=_help("Keep EGPO's θ_t snapshot on the CPU."))
    """Offload the extragradient snapshot (trainable parameters + optimizer state) to CPU memory."""

    # --- TrainingArguments defaults of the paper ----------------------------------------------------
    learning_rate: float = field(default=5e-7, metadata=_help("AdamW learning rate (paper: 5e-7)."))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay (paper: 0.01)."))
    remove_unused_columns: bool = field(default=False, metadata=_help("Kept False: the collator reads the prompt column."))
    logging_steps: float = field(default=1, metadata=_help("Log every n updates (EGPO: an update is its half and full step); < 1: a fraction of the planned updates."))
    save_steps: float = field(
        default=500,
        metadata=_help("Save a checkpoint every n updates (< 1: a fraction of the planned updates); the folder checkpoint-N counts optimizer steps (EGPO: N = 2 × updates)."),
    )
    save_strategy: str = field(
        default="no",
        metadata=_help("Checkpoint strategy: 'steps' (every --save_steps updates; --save_steps alone selects it), 'epoch' (every epoch of updates), 'no'."),
    )

    def __post_init__(self) -> None:
        self._check()
        super().__post_init__()
        deepspeed = getattr(self, "hf_deepspeed_config", None)
        if deepspeed is not None and deepspeed.is_zero3() and self.use_cpu and self.world_size > 1:
            # ZeRO-3 partitions each model while it loads (deepspeed.zero.Init), which needs DeepSpeed's
            # process group; on GPUs accelerate creates it, on CPU only torch's gloo group exists yet.
            import deepspeed as ds

            ds.comm.init_distributed(dist_backend="gloo", verbose=False)

    @property
    def algorithm(self) -> Algorithm:
        """The egpo_core declaration of ``alg`` (a property: the args are pickled into checkpoints)."""
        return resolve_algorithm(self.alg)

    # Checked before any model is loaded, one message per problem, naming the flag.
    def _check(self) -> None:
        self.algorithm  # noqa: B018 - an unknown or tabular-only --alg is reported first
        check_training_numbers(self)  # --output_dir, batch sizes, accumulation, learning rate, length
        if self.steps_per_update > 1 and zero_stage(self.deepspeed) == 3:
            # ZeRO-3 partitions the parameters themselves: the snapshot of θ_t would hold shards only.
            # Checked before TrainingArguments registers the DeepSpeed config process-wide.
            raise ValueError(f"--alg {self.alg} (extragradient) supports DeepSpeed ZeRO stages 0-2, not stage 3 ({self.deepspeed})")
        if not (isinstance(self.beta, (int, float)) and self.beta > 0):
            raise ValueError(f"--beta must be > 0, got {self.beta!r}")
        if not 0.0 <= self.mixture_coef <= 1.0:
            raise ValueError(f"--mixture_coef must lie in [0, 1], got {self.mixture_coef!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.samples_per_prompt < 1:
            raise ValueError(f"--samples_per_prompt must be at least 1, got {self.samples_per_prompt}")
        if self.max_prompt_length < 1:
            raise ValueError(f"--max_prompt_length must be at least 1, got {self.max_prompt_length}")
        if str(getattr(self.eval_strategy, "value", self.eval_strategy)) != "no" or self.eval_steps is not None:
            given = f"--eval_steps {self.eval_steps}" if self.eval_steps is not None else f"--eval_strategy {getattr(self.eval_strategy, 'value', self.eval_strategy)}"
            raise ValueError(f"{given}: NLHF training has no evaluation set; evaluate the saved models with python -m lm_runs.evaluate")
        for name in ("model_name_or_path", "prompts"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        # building the SamplingParams validates temperature, top-k, top-p and min-p, naming the flag
        self.pair_sampling, self.opponent_sampling  # noqa: B018

    @property
    def on_policy_pair(self) -> bool:
        """Whether y, y′ default to the policy at temperature 1 (Online IPO 2, Nash-MD-PG, SPPO)."""
        return self.algorithm.loss in ("ipo2", "pg") or self.algorithm.anchor == "current"

    @property
    def pair_sampling(self) -> SamplingParams:
        """SamplingParams of y, y′ (the algorithm's paper default where a field is None)."""
        temperature = self.pair_temperature if self.pair_temperature is not None else (1.0 if self.on_policy_pair else 2.0)
        top_k = self.pair_top_k if self.pair_top_k is not None else (0 if self.on_policy_pair else 10)
        return sampling_params("pair_", float(temperature), int(top_k), float(self.pair_top_p), float(self.pair_min_p))

    @property
    def opponent_sampling(self) -> SamplingParams:
        """SamplingParams of the opponent y″ (from the policy or from the mixture)."""
        return sampling_params(
            "opponent_",
            float(self.opponent_temperature),
            int(self.opponent_top_k),
            float(self.opponent_top_p),
            float(self.opponent_min_p),
        )

    @property
    def steps_per_update(self) -> int:
        """Optimizer steps per update of the algorithm: 2 for extragradient (EGPO), else 1."""
        return 2 if self.algorithm.scheme == Scheme.EXTRAGRADIENT else 1

