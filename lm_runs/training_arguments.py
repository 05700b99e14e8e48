"""The options every training entry point shares, as ``TrainingArguments`` dataclasses.

* :class:`TrainingRunArguments` — ``transformers.TrainingArguments`` plus the LoRA fields
  (:class:`~lm_runs.lora.LoraArguments`) and ``--overwrite_output_dir``, with the checks every run needs
  before anything loads: ``--output_dir`` given; batch sizes and gradient accumulation steps positive
  integers; a positive, finite learning rate; something to train (``--max_steps`` > 0 or
  ``--num_train_epochs`` > 0). Each refusal is a ``ValueError`` whose one line names the flag and the
  value. The folder checks (a file, a previous run) are :func:`lm_runs.launcher.prepare_output_dir`'s.
* :class:`SupervisedRunArguments` — the model and data fields of the supervised entry points
  (``lm_runs.sft``, ``lm_runs.train_preference_model``, ``lm_runs.train_reward_model``) and the paper's
  AdamW defaults they share.
* :class:`HeldOutPairsArguments` — ``--eval_dataset`` / ``--eval_size``, the held-out pairs of the two
  pair-trained judges (preference model, reward model) and their split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from lm_runs.data import load_table, split_prompts
from lm_runs.lora import LoraArguments

__all__ = ["TrainingRunArguments", "SupervisedRunArguments", "HeldOutPairsArguments", "check_training_numbers"]


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_training_numbers(args: TrainingArguments) -> None:
    """Refuse (ValueError naming the flag and the value) an unset ``--output_dir``, a batch size or
    ``--gradient_accumulation_steps`` below 1, a learning rate that is not a positive finite number, and a
    run with nothing to train (``--max_steps`` unset or ≤ 0 and ``--num_train_epochs`` ≤ 0)."""
    if not args.output_dir:
        raise ValueError("--output_dir is required: the folder for checkpoints and the final model")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = getattr(args, name)
        if not _positive_int(value):
            raise ValueError(f"--{name} must be a positive integer, got {value!r}")
    rate = args.learning_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"--learning_rate must be a positive number, got {rate!r}")
    if (args.max_steps is None or args.max_steps <= 0) and not args.num_train_epochs > 0:
        raise ValueError(f"--num_train_epochs must be > 0 (or set --max_steps), got {args.num_train_epochs!r}")


@dataclass
class TrainingRunArguments(LoraArguments, TrainingArguments):
    """``TrainingArguments`` + LoRA fields + ``--overwrite_output_dir``, checked by
    :func:`check_training_numbers` before ``TrainingArguments``' own checks."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace a previous run in --output_dir (its checkpoints, epochs/, final model and TensorBoard "
            "logs are deleted when training starts). Without it a non-empty --output_dir is refused unless "
            "--resume_from_checkpoint is given."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Resume from a checkpoint folder, or 'true' for the newest complete checkpoint-N in --output_dir."
        },
    )

    def __post_init__(self) -> None:
        check_training_numbers(self)
        super().__post_init__()


@dataclass
class SupervisedRunArguments(TrainingRunArguments):
    """The fields ``lm_runs.sft`` and ``lm_runs.train_preference_model`` share: the starting model, the
    data split, and the paper's AdamW settings (lr 1e-5, weight decay 0.1). Each entry point adds its
    ``dataset`` field and its own ``max_length``, epochs and warmup defaults."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Model to start from (required): a local folder or a hub name."}
    )
    dataset_split: str = field(
        default="train", metadata={"help": "Split to read from a DatasetDict directory or a hub dataset."}
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak AdamW learning rate (paper: 1e-5)."})
    weight_decay: float = field(
        default=0.1,
        metadata={"help": "AdamW weight decay on all weights but biases and norms, applied by the Trainer (paper: 0.1)."},
    )

    def __post_init__(self) -> None:
        for name in ("model_name_or_path", "dataset"):
            if not getattr(self, name, None):
                raise ValueError(f"--{name} is required")
        if not _positive_int(self.max_length) or self.max_length < 2:
            raise ValueError(f"--max_length must be an integer >= 2, got {self.max_length!r}")
        super().__post_init__()


@dataclass
class HeldOutPairsArguments:
    """``--eval_dataset`` / ``--eval_size``: the held-out pairs of a pair-trained judge, checked at parse
    time (one of the two at most; a whole number >= 1 or a fraction in (0, 1); ``--eval_strategy`` other
    than ``no`` needs one). Mixed into a ``TrainingArguments`` subclass (before it in the bases)."""

    eval_dataset: str | None = field(
        default=None,
        metadata={"help": "Held-out pairs (same format) whose accuracy and calibration are reported; or use --eval_size."},
    )
    eval_size: float | None = field(
        default=None,
        metadata={
            "help": "Hold out this many of --dataset's pairs (an integer) or this fraction (in (0, 1)) for the "
            "evaluation, split by a shuffle seeded with --seed; unset: no held-out pairs unless --eval_dataset."
        },
    )

    def __post_init__(self) -> None:
        if self.eval_dataset is not None and self.eval_size is not None:
            raise ValueError("--eval_dataset and --eval_size contradict each other: give one")
        size = self.eval_size
        if size is not None and not (0 < size < 1 or (size >= 1 and float(size).is_integer())):
            raise ValueError(f"--eval_size must be a whole number of pairs >= 1 or a fraction in (0, 1), got {size!r}")
        has_eval = self.eval_dataset is not None or self.eval_size is not None
        if str(getattr(self, "eval_strategy", "no")).lower() not in ("no", "intervalstrategy.no") and not has_eval:
            raise ValueError(f"--eval_strategy {self.eval_strategy} needs held-out pairs: give --eval_dataset or --eval_size")
        super().__post_init__()

    def held_out_split(self, table):
        """``(training table, held-out table or None)`` from ``table`` (``--dataset``'s rows) and the options."""
        if self.eval_size is not None:
            size = self.eval_size if self.eval_size < 1 else int(self.eval_size)
            return split_prompts(table, size, seed=self.seed)
        if self.eval_dataset is not None:
            return table, load_table(self.eval_dataset, split=self.dataset_split)
        return table, None
