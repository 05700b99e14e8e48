"""``python -m lm_runs.train_nlhf``: NLHF training of a language model (EGPO, Online IPO 1/2, Nash-MD,
Nash-MD-PG, SPPO) with a judge, under plain python, ``torchrun`` or the ``deepspeed`` launcher.

    python -m lm_runs.train_nlhf --alg egpo --model_name_or_path SFT_DIR --judge PM_DIR \\
        --prompts prompts.jsonl --output_dir runs/egpo [--use_peft] [--deepspeed lm_runs/configs/zero2.json]
    python -m lm_runs.train_nlhf --config lm_runs/configs/nlhf_qwen_paper.yaml --alg egpo --output_dir runs/egpo

Every option is a field of :class:`lm_runs.config.NLHFConfig` (``--help`` lists them with defaults).
Before any model loads, bad input is refused with one line naming the value and exit status 2
(:func:`lm_runs.launcher.run_entry_point`): options, the output folder (a previous run is refused unless
``--resume_from_checkpoint`` or ``--overwrite_output_dir true``), a model of the wrong kind for its role
(:func:`lm_runs.models.check_model_source`), the judge spec. A judge that fails during training ends the
run the same way, after saving a checkpoint to resume from.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["main", "build_trainer"]


def build_trainer(config):
    """Load judge, prompts, tokenizer, policy (+ LoRA) and π_ref (through :mod:`lm_runs.models`) as
    ``config`` says; return the :class:`~lm_runs.trainer.NLHFTrainer`.

    The judge is probed with two pairs first, so a judge that returns a wrong count or a value outside
    [0, 1] fails here, before training.
    """
    import torch

    from .data import load_prompts, prompt_text
    from .judges import JudgeError, load_judge
    from .judges.gathering import GatheringJudge
    from .launcher import one_line, warn_deepspeed_optimizer
    from .models import load_policy, load_reference, load_tokenizer
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
        judge = load_judge(config.judge, seed=config.seed, device=str(config.device), **config.judge_kwargs())
        probe = prompt_text(prompts[0]["prompt"])
        try:
            judge([probe, probe], [["Yes.", "No."], ["No.", "Yes."]])  # two pairs: a wrong count shows
        except JudgeError as error:  # a judge that cannot answer two pairs is a bad --judge
            raise ValueError(f"--judge {config.judge}: {one_line(error)}") from None
    if config.judge_gather:
        judge = GatheringJudge(judge)

    tokenizer = load_tokenizer(config.model_name_or_path, padding_side="left")
    dtype = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    model = load_policy(config.model_name_or_path, dtype=dtype, lora=config, seed=config.seed)
    ref_model = load_reference(config.model_name_or_path, config.ref_model_name_or_path, use_peft=config.use_peft, dtype=dtype)
    return NLHFTrainer(
        model=model, args=config, judge=judge, train_dataset=prompts, processing_class=tokenizer, ref_model=ref_model
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse and check the options, the output folder and the models' kinds, build the trainer, train
    (resuming when asked) and save the final model atomically. User errors raise ValueError / JudgeError
    (one line: :func:`lm_runs.launcher.run_entry_point` prints it and exits with status 2)."""
    from .cli import parse_config
    from .config import NLHFConfig
    from .judges.loader import JUDGE_SPEC_HELP
    from .launcher import prepare_output_dir, train_from
    from .models import check_model_source

    (config,) = parse_config([NLHFConfig], argv)
    if not config.judge:
        raise ValueError(f"--judge is required: {JUDGE_SPEC_HELP}")
    resume = prepare_output_dir(config)
    check_model_source(config.model_name_or_path, "policy")
    if config.ref_model_name_or_path:
        check_model_source(config.ref_model_name_or_path, "reference")

    from .checkpoints import save_model_atomically

    trainer = build_trainer(config)
    train_from(trainer, resume)
    save_model_atomically(trainer, config.output_dir)


if __name__ == "__main__":
    from .launcher import run_entry_point

    run_entry_point(main)
