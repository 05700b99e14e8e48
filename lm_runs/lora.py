"""LoRA options shared by every training entry point (SFT, preference model, NLHF), and the
``peft.LoraConfig`` they describe.

A LoRA adapter replaces a weight W by W + (α / r)·B·A with A ∈ ℝ^{r×k}, B ∈ ℝ^{d×r} trained (B starts at
0, so training starts from the base model) and W frozen; dropout with probability ``lora_dropout`` is
applied to the adapter branch's input in training forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoraArguments", "lora_config"]


@dataclass
class LoraArguments:
    """The ``--use_peft`` / ``--lora_*`` fields; a mixin of the entry points' ``TrainingArguments``
    subclasses, or a dataclass of its own for ``HfArgumentParser`` (the paper's values live in the presets
    of ``lm_runs/configs/``)."""

    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    """Train LoRA adapters (for NLHF, π_ref is then the base model with the adapter disabled)."""
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r (paper: 256)."})
    """LoRA rank r."""
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator α, scale α / r (paper: 512)."})
    """LoRA scaling α."""
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch in training (paper: 0.1)."})
    """Dropout probability on the adapter branch."""
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names LoRA wraps (e.g. q_proj v_proj), or 'all-linear'; default: PEFT's choice "
            "for the architecture."
        },
    )
    """Names of the adapted modules (None: PEFT's default for the architecture)."""

    def __post_init__(self) -> None:
        if isinstance(self.lora_r, bool) or not isinstance(self.lora_r, int) or self.lora_r < 1:
            raise ValueError(f"--lora_r must be an integer >= 1, got {self.lora_r!r}")
        if not (isinstance(self.lora_alpha, (int, float)) and self.lora_alpha > 0):
            raise ValueError(f"--lora_alpha must be > 0, got {self.lora_alpha!r}")
        if not (isinstance(self.lora_dropout, (int, float)) and 0.0 <= self.lora_dropout < 1.0):
            raise ValueError(f"--lora_dropout must lie in [0, 1), got {self.lora_dropout!r}")
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:  # TrainingArguments' own checks when mixed into it; none when used alone
            parent()


def lora_config(config: Any, task_type: str):
    """The ``peft.LoraConfig`` for ``config``'s ``lora_*`` fields (``task_type``: ``"CAUSAL_LM"`` or
    ``"SEQ_CLS"``; for the latter PEFT also trains the classification head)."""
    from peft import LoraConfig

    targets: Any = config.lora_target_modules
    if targets is not None and len(targets) == 1 and targets[0] == "all-linear":
        targets = "all-linear"  # PEFT accepts the keyword only as a plain string
    return LoraConfig(
        task_type=task_type,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
    )
