"""``python -m lm_runs.train_nlhf``: NLHF training of a language model (EGPO, Online IPO 1/2, Nash-MD,
Nash-MD-PG, SPPO) with a judge, under plain python, ``torchrun`` or the ``deepspeed`` launcher.

    python -m lm_runs.train_nlhf --alg egpo --model_name_or_path SFT_DIR --judge PM_DIR \\
        --prompts prompts.jsonl --output_dir runs/egpo [--use_peft] [--deepspeed lm_runs/configs/zero2.json]
    python -m lm_runs.train_nlhf --config lm_runs/configs/egpo_qwen.yaml --learning_rate 1e-6

Every option is a field of :class:`lm_runs.config.NLHFConfig` (``--help`` lists them with defaults).
Bad options fail before any model is loaded, with one line naming the flag (exit status 2).
"""

from __future__ import annotations

import sys
from typing import Sequence

__all__ = ["main", "build_trainer"]


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def build_trainer(config):
    """Load tokenizer, policy (+ LoRA), π_ref, judge and prompts as ``config`` says; return the trainer.

    The judge is probed with two pairs first, so a judge that returns a wrong count or a value outside
    [0, 1] fails here, before training.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .data import load_prompts, prompt_text
    from .judges import load_judge
    from .judges.gathering import GatheringJudge
    from .lora import lora_config
    from .sft import warn_deepspeed_optimizer
    from .trainer import NLHFTrainer

    warn_deepspeed_optimizer(config)
    prompts = load_prompts(
        config.prompts,
        column=config.prompt_column,
        split=config.prompts_split,
        max_prompts=config.max_prompts,
        max_chars=config.max_prompt_chars,
    )
    judge = None
    if not config.judge_gather or config.process_index == 0:
        judge = load_judge(config.judge, seed=config.seed, device=str(config.device), batch_size=config.judge_batch_size)
        probe = prompt_text(prompts[0]["prompt"])
        judge([probe, probe], [["Yes.", "No."], ["No.", "Yes."]])  # two pairs: a wrong count shows
    if config.judge_gather:
        judge = GatheringJudge(judge)

    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path, dtype=dtype)
    ref_model = None
    if config.use_peft:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(config, "CAUSAL_LM"))
        if config.ref_model_name_or_path:
            ref_model = AutoModelForCausalLM.from_pretrained(config.ref_model_name_or_path, dtype=dtype)
    else:
        ref_model = AutoModelForCausalLM.from_pretrained(config.ref_model_name_or_path or config.model_name_or_path, dtype=dtype)
    return NLHFTrainer(
        model=model, args=config, judge=judge, train_dataset=prompts, processing_class=tokenizer, ref_model=ref_model
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options, build the trainer, train (resuming when asked) and save the final model."""
    from .cli import parse_config
    from .config import NLHFConfig

    try:
        (config,) = parse_config([NLHFConfig], argv)
    except ValueError as error:
        _fail(str(error))
    from .judges import JudgeError

    try:
        trainer = build_trainer(config)
    except (ValueError, FileNotFoundError, JudgeError) as error:
        _fail(str(error))
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(config.output_dir)


if __name__ == "__main__":
    main()
