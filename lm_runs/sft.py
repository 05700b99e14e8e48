"""Supervised fine-tuning of the reference policy: ``python -m lm_runs.sft``.

    python -m lm_runs.sft --model_name_or_path Qwen/Qwen2.5-1.5B --dataset sft.jsonl --output_dir runs/sft
    python -m lm_runs.sft --config lm_runs/configs/sft.yaml --learning_rate 2e-5   # YAML, flags override

The dataset holds ``prompt`` + ``completion`` columns (the prompt a string or a chat message list,
the completion a string or a one-message assistant list) or a ``messages`` column of chat
conversations whose last message is the assistant's answer. Each example is tokenized as

    encode_prompt(tokenizer, prompt)  +  tokens(completion)  +  [EOS]

— the prompt exactly as the NLHF trainer conditions the policy on it (:func:`lm_runs.data.render_prompt`:
chat template with the generation prompt), the completion appended verbatim, then EOS so the model
learns to stop. The loss is on the completion and its EOS only: labels are ``-100`` on the prompt
tokens and on padding, decided **by position** (how many prompt tokens, which positions are padding)
and never by comparing ids to ``pad_token_id`` — with pad = EOS that comparison would mask every
EOS and the model would never learn to end its answer. Sequences longer than ``max_length`` are cut
on the right (the end of the completion and its EOS are lost; nothing teaches a stop mid-answer);
an example whose prompt alone fills ``max_length`` has no completion token left and is dropped
(the count is logged).

Training is ``transformers.Trainer`` with this module's :class:`SFTConfig` (a ``TrainingArguments``),
so ``--deepspeed``, ``--report_to tensorboard``, ``--save_steps``, ``--resume_from_checkpoint``,
``--use_cpu`` and the rest behave as usual. Weight decay is applied by the Trainer's own AdamW (to
every weight except biases and normalization weights); a DeepSpeed config needs **no** ``optimizer``
block — DeepSpeed wraps the Trainer's optimizer — and one is warned about, since it would replace
that optimizer. The final model (LoRA adapters merged in) and the tokenizer are written to
``output_dir`` as safetensors, ready for ``from_pretrained``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from transformers import TrainingArguments

from lm_runs.data import check_prompt, encode_prompt, is_message_list, load_table
from lm_runs.lora import LoraArguments, lora_config

__all__ = [
    "SFTConfig",
    "sft_example",
    "build_sft_dataset",
    "SFTCollator",
    "build_trainer",
    "warn_deepspeed_optimizer",
    "save_final_model",
    "load_tokenizer",
    "require_options",
    "resume_argument",
    "main",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class SFTConfig(LoraArguments, TrainingArguments):
    """Options of ``python -m lm_runs.sft``: the model and data fields below, the LoRA fields of
    :class:`~lm_runs.lora.LoraArguments` and every ``transformers.TrainingArguments`` option.
    Defaults follow the paper's SFT (lr 1e-5, 5 epochs, weight decay 0.1, 100 warmup steps); the
    per-device batch size is whatever is given."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Causal LM to fine-tune: a local directory or a hub name (required)."}
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training data (required): a .jsonl/.json, .csv or .parquet file or a save_to_disk directory, "
            "with 'prompt' + 'completion' columns or a 'messages' column of chat conversations."
        },
    )
    dataset_split: str = field(
        default="train", metadata={"help": "Split to read from a DatasetDict directory or a hub dataset."}
    )
    max_length: int = field(
        default=512, metadata={"help": "Longest tokenized prompt + completion + EOS; longer ones are cut on the right."}
    )
    # Paper defaults (overriding TrainingArguments').
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak AdamW learning rate (paper: 1e-5)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs over the SFT data (paper: 5)."})
    weight_decay: float = field(
        default=0.1,
        metadata={"help": "AdamW weight decay on all weights but biases and norms, applied by the Trainer (paper: 0.1)."},
    )
    warmup_steps: float = field(
        default=100, metadata={"help": "Linear warmup steps (paper: 100); a value below 1 is a fraction of training."}
    )


def warn_deepspeed_optimizer(config: TrainingArguments) -> bool:
    """Warn (and return True) when the DeepSpeed config has an ``optimizer`` block.

    Without one, DeepSpeed wraps the Trainer's AdamW, whose parameter groups apply ``weight_decay``
    to weights and not to biases/norms; a DeepSpeed optimizer replaces it and treats all parameters
    alike. Nothing else is needed for weight decay to take effect.
    """
    spec = getattr(config, "deepspeed", None)
    if not spec:
        return False
    if isinstance(spec, Mapping):
        ds = dict(spec)
    else:
        text = str(spec)
        try:
            ds = json.loads(Path(text).read_text()) if Path(text).is_file() else json.loads(text)
        except (OSError, ValueError):
            return False  # the Trainer reports unreadable DeepSpeed configs itself
    if "optimizer" in ds:
        logger.warning(
            "The DeepSpeed config has an 'optimizer' block: it replaces the Trainer's AdamW (whose groups exempt "
            "biases and norms from weight decay). Drop the block; --weight_decay %s is applied without it.",
            config.weight_decay,
        )
        return True
    return False


# --------------------------------------------------------------------------------------- examples


def _completion_text(completion: Any, where: str) -> str:
    if isinstance(completion, str):
        if not completion.strip():
            raise ValueError(f"{where}: empty completion")
        return completion
    if is_message_list(completion) and len(completion) == 1 and completion[0]["role"] == "assistant":
        return _completion_text(completion[0]["content"], where)
    raise ValueError(f"{where}: the completion must be a non-empty string or one assistant message")


def _split_conversation(messages: Any, where: str) -> tuple[list[dict[str, str]], str]:
    if not is_message_list(messages):
        raise ValueError(f"{where}: 'messages' is not a list of {{'role': str, 'content': str}} messages")
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise ValueError(f"{where}: a conversation needs at least one prompt message and must end with an assistant message")
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    check_prompt(prompt, where)
    return prompt, _completion_text(messages[-1]["content"], where)


def sft_example(tokenizer, prompt: Any, completion: str, max_length: int | None = None) -> dict[str, list[int]] | None:
    """Tokenize one example: ``{"input_ids", "attention_mask", "labels"}`` (plain lists, unpadded).

    ``input_ids = encode_prompt(tokenizer, prompt) + tokens(completion) + [eos_token_id]``;
    ``labels`` is ``-100`` on the prompt positions and equal to ``input_ids`` on the completion and
    the EOS — by position, so an EOS equal to the pad id is still learned. Right-truncated to
    ``max_length``; returns ``None`` when no completion token would be left.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token; SFT appends EOS to every completion")
    prompt_ids = encode_prompt(tokenizer, prompt)
    completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"]) + [int(eos)]
    input_ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    if len(prompt_ids) >= len(input_ids):
        return None
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def build_sft_dataset(table, tokenizer, max_length: int | None, name: str = "dataset"):
    """Check every row of ``table`` and tokenize it with :func:`sft_example`.

    ``table`` has ``prompt`` + ``completion`` columns or a ``messages`` column (see the module
    docstring). Raises ``ValueError`` naming the row for a bad one, or naming the columns when
    neither layout is present; drops (and logs) rows with no completion token within ``max_length``.
    Returns a ``datasets.Dataset`` with ``input_ids``, ``attention_mask``, ``labels``.
    """
    import datasets

    columns = table.column_names
    if "prompt" in columns and "completion" in columns:
        pairs = []
        for index, (prompt, completion) in enumerate(zip(table["prompt"], table["completion"])):
            where = f"{name}: row {index}"
            if isinstance(prompt, list):
                prompt = [{"role": m["role"], "content": m["content"]} if isinstance(m, Mapping) else m for m in prompt]
            check_prompt(prompt, where)
            pairs.append((prompt, _completion_text(completion, where)))
    elif "messages" in columns:
        pairs = [_split_conversation(m, f"{name}: row {i}") for i, m in enumerate(table["messages"])]
    else:
        raise ValueError(f"{name}: expected 'prompt' + 'completion' columns or a 'messages' column; columns: {columns}")
    if not pairs:
        raise ValueError(f"{name}: no examples (the dataset is empty)")
    rows = [sft_example(tokenizer, p, c, max_length) for p, c in pairs]
    kept = [r for r in rows if r is not None]
    if len(kept) < len(rows):
        logger.warning("%s: dropped %d of %d examples whose prompt fills max_length=%s", name,
                       len(rows) - len(kept), len(rows), max_length)
    if not kept:
        raise ValueError(f"{name}: every prompt is at least max_length={max_length} tokens; nothing to train on")
    return datasets.Dataset.from_dict({key: [r[key] for r in kept] for key in ("input_ids", "attention_mask", "labels")})


class SFTCollator:
    """Right-pad a batch of :func:`sft_example` rows into tensors.

    Padding positions get ``pad_token_id`` in ``input_ids``, 0 in ``attention_mask`` and ``-100`` in
    ``labels`` — chosen by position, whatever the pad id is. Right padding keeps every sequence's
    positions starting at 0, as in generation.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def __call__(self, rows: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(row["input_ids"]) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.tensor(row["input_ids"], dtype=torch.long)
            attention_mask[i, :n] = 1
            labels[i, :n] = torch.tensor(row["labels"], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# --------------------------------------------------------------------------------------- training


def require_options(config: Any, *names: str) -> None:
    """``SystemExit`` naming the first of ``names`` that ``config`` leaves unset."""
    for name in names:
        if not getattr(config, name, None):
            raise SystemExit(f"error: --{name} is required")


def load_tokenizer(model_name_or_path: str):
    """The tokenizer of ``model_name_or_path``; one without a pad token gets pad = EOS (safe here:
    every mask in this package is positional)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{model_name_or_path}: the tokenizer has neither a pad token nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_trainer(config: SFTConfig):
    """Everything short of training: the tokenizer, the causal LM (LoRA-wrapped with ``use_peft``),
    the tokenized dataset and a ``transformers.Trainer`` over them. Errors in the data surface here,
    before any model weights are loaded."""
    from transformers import AutoModelForCausalLM, Trainer

    require_options(config, "model_name_or_path", "dataset", "output_dir")
    if config.max_length < 2:
        raise SystemExit(f"error: --max_length must be at least 2, got {config.max_length}")
    warn_deepspeed_optimizer(config)
    tokenizer = load_tokenizer(config.model_name_or_path)
    train_dataset = build_sft_dataset(
        load_table(config.dataset, split=config.dataset_split), tokenizer, config.max_length, name=config.dataset
    )
    model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path)
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if config.use_peft:
        from peft import get_peft_model

        if config.gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, lora_config(config, "CAUSAL_LM"))
    return Trainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        data_collator=SFTCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )


def save_final_model(trainer, output_dir: str, use_peft: bool) -> None:
    """Write the trained model and tokenizer to ``output_dir`` (safetensors) so ``from_pretrained``
    loads a plain model: LoRA adapters are merged first. Under DeepSpeed ZeRO-3 with LoRA the
    parameters are sharded and cannot be merged here, so the adapter is saved instead (with a warning)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if use_peft and not is_deepspeed_zero3_enabled():
        model = trainer.accelerator.unwrap_model(trainer.model)
        merged = model.merge_and_unload()
        if trainer.is_world_process_zero():
            merged.save_pretrained(output_dir)
            trainer.processing_class.save_pretrained(output_dir)
        trainer.accelerator.wait_for_everyone()
        return
    if use_peft:
        logger.warning("LoRA under ZeRO-3: saving the adapter to %s; merge it with peft before from_pretrained", output_dir)
    trainer.save_model(output_dir)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(output_dir)


def resume_argument(value: str | None) -> str | bool | None:
    """``--resume_from_checkpoint`` for ``Trainer.train``: a checkpoint path, or ``true`` for the
    latest checkpoint in ``output_dir``."""
    if value is None or value.lower() in ("", "false", "none"):
        return None
    return True if value.lower() == "true" else value


def main(argv: Sequence[str] | None = None) -> str:
    """Parse ``argv`` (default ``sys.argv[1:]``), fine-tune, save to ``output_dir``; returns it."""
    from lm_runs.cli import parse_config

    (config,) = parse_config([SFTConfig], argv)
    logging.basicConfig(level=logging.INFO if config.should_log else logging.WARNING)
    trainer = build_trainer(config)
    trainer.train(resume_from_checkpoint=resume_argument(config.resume_from_checkpoint))
    save_final_model(trainer, config.output_dir, config.use_peft)
    return config.output_dir


if __name__ == "__main__":
    main()
