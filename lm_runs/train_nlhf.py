"""``python -m lm_runs.train_nlhf``: NLHF training of a language model (EGPO, Online IPO 1/2, Nash-MD,
Nash-MD-PG, SPPO) with a judge, under plain python, ``torchrun`` or the ``deepspeed`` launcher.

    python -m lm_runs.train_nlhf --alg egpo --model_name_or_path SFT_DIR --judge PM_DIR \\
        --prompts prompts.jsonl --output_dir runs/egpo [--use_peft] [--deepspeed lm_runs/configs/zero2.json]
    python -m lm_runs.train_nlhf --config lm_runs/configs/nlhf_qwen_paper.yaml --alg egpo --output_dir runs/egpo

Every option is a field of :class:`lm_runs.config.NLHFConfig` (``--help`` lists them with defaults).
``--rounds R`` (or ``--alg`` inpo, comal, mpo, mnpo, onpo, which exist only in rounds) runs the iterative round mode
instead (:mod:`lm_runs.rounds`; ``--help`` lists its flags too).
Before any model loads, bad input is refused with one line naming the value and exit status 2
(:func:`lm_runs.launcher.run_entry_point`): options, the output folder (a previous run is refused unless
``--resume_from_checkpoint`` or ``--overwrite_output_dir true``), a model of the wrong kind for its role
(:func:`lm_runs.models.check_model_source`), the judge spec. A judge that fails during training ends the
run the same way, after saving a checkpoint to resume from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # the entry point imports torch and transformers only once its options are checked
    from transformers import TrainerCallback

    from .config import NLHFConfig
    from .trainer import NLHFTrainer

__all__ = ["main", "build_trainer"]

#: An in-process judge: ``judge(prompts, completions) -> [P(a ≻ b) for each pair [a, b]]``.
JudgeCallable = Callable[[Sequence[str], Sequence[Sequence[str]]], Sequence[float]]


def _check_judge_source(config: NLHFConfig, judge: JudgeCallable | None) -> None:
    """``ValueError`` (one line) unless exactly one judge is named: ``config.judge`` (a spec) or ``judge``
    (an object in this process)."""
    from .judges.loader import JUDGE_SPEC_HELP

    if judge is None and not config.judge:
        raise ValueError(f"--judge is required: {JUDGE_SPEC_HELP}")
    if judge is not None and config.judge:
        raise ValueError(f"--judge {config.judge} and an in-process judge were both given: name one judge")


def build_trainer(
    config: NLHFConfig,
    *,
    judge: JudgeCallable | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    trainer_class: type[NLHFTrainer] | None = None,
) -> NLHFTrainer:
    """The one way to turn an :class:`~lm_runs.config.NLHFConfig` into a ready
    :class:`~lm_runs.trainer.NLHFTrainer` (``python -m lm_runs.train_nlhf``, the synthetic benchmark and
    ``benchmarks/bench_lm.py`` all build theirs here), in this order:

    1. the prompts (``--prompts``, ``--prompt_column``, ``--prompts_split``, ``--max_prompt_chars``,
       ``--max_prompts``), so a bad file fails before any model loads;
    2. the judge: ``judge`` when given — an object in this process, wrapped in
       :class:`~lm_runs.judges.CheckedJudge` (which checks every answer) unless it is one already —
       else the spec ``config.judge`` through :func:`~lm_runs.judges.load_judge`, probed with two pairs
       so that a judge answering a wrong count or a value outside [0, 1] fails here, before training
       (``ValueError`` naming the spec). Exactly one of the two must be given. With ``--judge_gather``
       only rank 0 holds a judge and :class:`~lm_runs.judges.GatheringJudge` serves every rank;
    3. the tokenizer, padded on the left (generation continues after the prompt's last token);
    4. the policy in ``--bf16`` / ``--fp16`` / float32, wrapped in a fresh LoRA adapter with
       ``--use_peft``; every generator is seeded with ``--seed`` first, so the adapter's random
       initialisation is the same for the same seed;
    5. π_ref (:func:`~lm_runs.models.load_reference`): ``--ref_model_name_or_path``, else a second copy of
       the initial policy, or, with LoRA, the policy with its adapter disabled (no copy).

    ``callbacks`` are handed to the trainer with the others (``TrainerCallback`` objects); a callback
    that needs the trainer's tokenizer or π_ref can be added afterwards with ``trainer.add_callback``
    (``trainer.processing_class``, ``trainer.reference``). ``trainer_class``: an
    :class:`~lm_runs.trainer.NLHFTrainer` subclass to build instead (``benchmarks/bench_lm.py`` times
    the phases of an update from one); ``None``: NLHFTrainer itself.

    Raises ``ValueError`` (one line) for bad prompts, a missing, doubly given or misbehaving judge.
    """
    import torch

    from .data import load_prompts, prompt_text
    from .judges import CheckedJudge, JudgeError, load_judge
    from .judges.gathering import GatheringJudge
    from .launcher import one_line, warn_deepspeed_optimizer
    from .models import load_policy, load_reference, load_tokenizer
    from .trainer import NLHFTrainer

    _check_judge_source(config, judge)
    warn_deepspeed_optimizer(config)
    prompts = load_prompts(
        config.prompts,
        column=config.prompt_column,
        split=config.prompts_split,
        max_prompts=config.max_prompts,
        max_chars=config.max_prompt_chars,
    )
    checked = None
    if not config.judge_gather or config.process_index == 0:
        if judge is not None:
            checked = judge if isinstance(judge, CheckedJudge) else CheckedJudge(judge)
        else:
            checked = load_judge(config.judge, seed=config.seed, device=str(config.device), **config.judge_kwargs())
            probe = prompt_text(prompts[0]["prompt"])
            try:
                checked([probe, probe], [["Yes.", "No."], ["No.", "Yes."]])  # two pairs: a wrong count shows
            except JudgeError as error:  # a judge that cannot answer two pairs is a bad --judge
                raise ValueError(f"--judge {config.judge}: {one_line(error)}") from None
    if config.judge_gather:
        checked = GatheringJudge(checked)

    tokenizer = load_tokenizer(config.model_name_or_path, padding_side="left")
    dtype = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    model = load_policy(config.model_name_or_path, dtype=dtype, lora=config, seed=config.seed)
    ref_model = load_reference(config.model_name_or_path, config.ref_model_name_or_path, use_peft=config.use_peft, dtype=dtype)
    return (trainer_class or NLHFTrainer)(
        model=model,
        args=config,
        judge=checked,
        train_dataset=prompts,
        processing_class=tokenizer,
        ref_model=ref_model,
        callbacks=list(callbacks),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse and check the options, the output folder and the models' kinds, build the trainer, train
    (resuming when asked) and save the final model atomically. User errors raise ValueError / JudgeError
    (one line: :func:`lm_runs.launcher.run_entry_point` prints it and exits with status 2)."""
    import sys

    from .cli import parse_config
    from .config import NLHFConfig
    from .launcher import prepare_output_dir, train_from
    from .models import check_model_source
    from .rounds import RoundOptions, main as rounds_main, wants_rounds

    flags = sys.argv[1:] if argv is None else list(argv)
    if "-h" in flags or "--help" in flags:  # every flag, the round mode's included, then exit 0
        parse_config([NLHFConfig, RoundOptions], flags)
    if wants_rounds(flags):  # --rounds / --alg inpo, comal, mpo, mnpo, onpo: lm_runs.rounds
        return rounds_main(argv)
    (config,) = parse_config([NLHFConfig], argv)
    _check_judge_source(config, None)
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
