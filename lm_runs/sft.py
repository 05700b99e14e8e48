"""Supervised fine-tuning of the reference policy: ``python -m lm_runs.sft``.

    python -m lm_runs.sft --model_name_or_path Qwen/Qwen2.5-1.5B --dataset sft.jsonl --output_dir runs/sft
    python -m lm_runs.sft --config lm_runs/configs/sft_qwen_paper.yaml --learning_rate 2e-5   # YAML, flags override

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
so ``--deepspeed``, ``--report_to tensorboard``, ``--save_steps``, ``--use_cpu`` and the rest behave as
usual. Weight decay is applied by the Trainer's own AdamW (to every weight except biases and
normalization weights); a DeepSpeed config needs **no** ``optimizer`` block — DeepSpeed wraps the
Trainer's optimizer — and one is warned about, since it would replace that optimizer. The final model
(LoRA adapters merged in) and the tokenizer are written to ``output_dir`` as safetensors, ready for
``from_pretrained``.

Before anything loads, bad options, a model that is not a causal LM (:func:`lm_runs.models.check_model_source`),
an ``--output_dir`` that is a file or holds a previous run (:func:`lm_runs.launcher.prepare_output_dir`)
and bad data rows are refused with one line and exit status 2. Checkpoints appear complete or not at
all (:mod:`lm_runs.checkpoints`); ``--resume_from_checkpoint true`` resumes from the newest complete one
and ends bit for bit where an uninterrupted run ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from transformers import Trainer

from lm_runs.checkpoints import AtomicCheckpoints
from lm_runs.data import check_prompt, encode_prompt, is_message_list, load_table, right_padded
from lm_runs.launcher import run_entry_point, supervised_main, warn_deepspeed_optimizer
from lm_runs.models import check_model_source, load_policy, load_tokenizer
from lm_runs.training_arguments import SupervisedRunArguments

__all__ = [
    "SFTConfig",
    "SFTTrainer",
    "sft_example",
    "build_sft_dataset",
    "SFTCollator",
    "build_trainer",
    "main",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class SFTConfig(SupervisedRunArguments):
    """Options of ``python -m lm_runs.sft``: the fields below, those of
    :class:`~lm_runs.training_arguments.SupervisedRunArguments` (the model, LoRA, ``--overwrite_output_dir``)
    and every ``transformers.TrainingArguments`` option. Defaults follow the paper's SFT (lr 1e-5,
    5 epochs, weight decay 0.1, 100 warmup steps); the per-device batch size is whatever is given.
    ``--model_name_or_path`` must be a causal LM."""

    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training data (required): a .jsonl/.json, .csv or .parquet file or a save_to_disk directory, "
            "with 'prompt' + 'completion' columns or a 'messages' column of chat conversations."
        },
    )
    max_length: int = field(
        default=512, metadata={"help": "Longest tokenized prompt + completion + EOS; longer ones are cut on the right."}
    )
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs over the SFT data (paper: 5)."})
    warmup_steps: float = field(
        default=100, metadata={"help": "Linear warmup steps (paper: 100); a value below 1 is a fraction of training."}
    )


class SFTTrainer(AtomicCheckpoints, Trainer):
    """``transformers.Trainer`` whose checkpoints appear complete or not at all (:class:`AtomicCheckpoints`)."""


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

        batch = right_padded(rows, self.pad_token_id)
        labels = torch.full(batch["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(rows):
            labels[i, : len(row["labels"])] = torch.tensor(row["labels"], dtype=torch.long)
        return {**batch, "labels": labels}


# --------------------------------------------------------------------------------------- training


def build_trainer(config: SFTConfig):
    """Everything short of training: the tokenizer, the causal LM (LoRA-wrapped with ``use_peft``),
    the tokenized dataset and an :class:`SFTTrainer` over them. A model of the wrong kind and errors in
    the data surface here, before any model weights are loaded."""
    check_model_source(config.model_name_or_path, "policy")
    warn_deepspeed_optimizer(config)
    tokenizer = load_tokenizer(config.model_name_or_path)
    train_dataset = build_sft_dataset(
        load_table(config.dataset, split=config.dataset_split), tokenizer, config.max_length, name=config.dataset
    )
    model = load_policy(
        config.model_name_or_path,
        lora=config,
        pad_token_id=tokenizer.pad_token_id,
        gradient_checkpointing=config.gradient_checkpointing,
        seed=config.seed,
    )
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        data_collator=SFTCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )


def main(argv: Sequence[str] | None = None) -> str:
    """Parse ``argv`` (default ``sys.argv[1:]``), fine-tune, save to ``output_dir``; returns it
    (:func:`lm_runs.launcher.supervised_main`)."""
    return supervised_main(SFTConfig, build_trainer, argv)


if __name__ == "__main__":
    run_entry_point(main)
