"""NLHFConfig: every option of ``python -m lm_runs.train_nlhf``, one documented field each.

A subclass of ``transformers.TrainingArguments``, so the usual HF flags (``--deepspeed``,
``--report_to``, ``--save_steps``, ``--gradient_accumulation_steps``, ``--bf16``, ``--use_cpu``, …)
work as in any HF project; parsed by ``HfArgumentParser`` from flags and ``--config file.yaml``.

Counting: ``--per_device_train_batch_size`` counts prompts; ``--max_steps`` and
``--num_train_epochs`` count *updates* of the algorithm. An EGPO update is two optimizer steps (the
half step and the full step, each on its own batch), so the Trainer's ``global_step`` runs to twice
``max_steps`` and "epoch k" of EGPO is after 2k passes over the prompts; the learning-rate schedule,
warm-up included, counts updates for every algorithm.

Sampling defaults follow the EGPO paper's language-model runs: the pair y, y′ at temperature 2 with top-k 10 and the
opponent y″ at temperature 1 for Online IPO 1, EGPO and Nash-MD; y, y′ at temperature 1 for Online
IPO 2 and y at temperature 1 for Nash-MD-PG (policy-gradient samples must be on-policy). Leave a
``pair_*`` field unset (None) for the algorithm's default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments

from egpo_core.algorithms import Algorithm, Scheme, get_algorithm

from .generation import SamplingParams
from .lora import LoraArguments

__all__ = ["NLHFConfig", "ALGORITHM_ALIASES", "LM_ALGORITHMS", "resolve_algorithm"]

#: Command-line names → egpo_core algorithm names (the reference script's ``eg``, ``nmd``, ``nmdpg``
#: are accepted as aliases).
ALGORITHM_ALIASES = {
    "egpo": "egpo",
    "eg": "egpo",
    "oipo1": "oipo1",
    "oipo2": "oipo2",
    "nashmd": "nash_md",
    "nash_md": "nash_md",
    "nmd": "nash_md",
    "nashmdpg": "nash_md_pg",
    "nash_md_pg": "nash_md_pg",
    "nmdpg": "nash_md_pg",
    "sppo": "sppo",
    "mpo": "mpo",
    "omwu": "omwu",
}

#: The egpo_core algorithms whose language-model form is well defined here. MPO (its loss weight
#: 1/(1 + ηβ) needs the mirror-descent step η, which a language model does not have) and OMWU (its
#: target needs samples from the previous iterate π_{t−1}) are tabular/neural only.
LM_ALGORITHMS = ("egpo", "oipo1", "oipo2", "nash_md", "nash_md_pg", "sppo")


def resolve_algorithm(name: str) -> Algorithm:
    """The egpo_core :class:`Algorithm` of a command-line name; ``ValueError`` lists the choices."""
    key = ALGORITHM_ALIASES.get(str(name).strip().lower())
    if key is None:
        raise ValueError(f"unknown algorithm --alg {name!r}; choose one of: {', '.join(ALGORITHM_ALIASES)}")
    return get_algorithm(key)


def _help(text: str) -> dict:
    return {"help": text}


def _zero_stage(deepspeed: str | dict | None) -> int | None:
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
class NLHFConfig(LoraArguments, TrainingArguments):
    """Configuration of NLHF training (see the module docstring for how steps are counted)."""

    # --- what to train ---------------------------------------------------------------------------
    alg: str = field(default="egpo", metadata=_help(f"Algorithm: one of {', '.join(ALGORITHM_ALIASES)}."))
    """Algorithm name (egpo, oipo1, oipo2, nashmd, nashmdpg, sppo; eg/nmd/nmdpg aliases)."""
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
    samples_per_prompt: int = field(default=1, metadata=_help("Pairs (y, y′) per prompt and step."))
    """Number of (y, y′) pairs drawn per prompt (each with its own opponent sample)."""
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

    # --- judge --------------------------------------------------------------------------------------
    judge: str | None = field(
        default=None,
        metadata=_help("P(a ≻ b): 'module:function', 'http://host:port' (judge server) or a preference-model directory."),
    )
    """The preference oracle (see ``lm_runs.judges.load_judge``)."""
    judge_batch_size: int = field(default=16, metadata=_help("Pairs per forward pass of a local preference model."))
    """Batch size of a local preference-model judge."""
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
    logging_steps: float = field(default=1, metadata=_help("Log every n optimizer steps."))
    save_strategy: str = field(default="no", metadata=_help("Checkpoint strategy ('steps' with --save_steps, 'epoch', 'no')."))

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
        if self.steps_per_update > 1 and _zero_stage(self.deepspeed) == 3:
            # ZeRO-3 partitions the parameters themselves: the snapshot of θ_t would hold shards only.
            # Checked before TrainingArguments registers the DeepSpeed config process-wide.
            raise ValueError(f"--alg {self.alg} (extragradient) supports DeepSpeed ZeRO stages 0-2, not stage 3 ({self.deepspeed})")
        if self.algorithm.name not in LM_ALGORITHMS:
            raise ValueError(
                f"--alg {self.alg}: {self.algorithm.name} has no language-model form here; choose one of {', '.join(LM_ALGORITHMS)}"
            )
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
        for name in ("model_name_or_path", "prompts", "judge"):
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
        return _sampling("pair", temperature, top_k, self.pair_top_p, self.pair_min_p)

    @property
    def opponent_sampling(self) -> SamplingParams:
        """SamplingParams of the opponent y″ (from the policy or from the mixture)."""
        return _sampling("opponent", self.opponent_temperature, self.opponent_top_k, self.opponent_top_p, self.opponent_min_p)

    @property
    def steps_per_update(self) -> int:
        """Optimizer steps per update of the algorithm: 2 for extragradient (EGPO), else 1."""
        return 2 if self.algorithm.scheme == Scheme.EXTRAGRADIENT else 1


def _sampling(role: str, temperature, top_k, top_p, min_p) -> SamplingParams:
    """SamplingParams of one role; an invalid value is reported under its flag (``--pair_temperature``)."""
    try:
        return SamplingParams(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), min_p=float(min_p))
    except ValueError as error:  # name the flag, not the dataclass field
        raise ValueError(f"--{role}_{error}") from None
