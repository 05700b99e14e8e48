"""Train a scalar Bradley–Terry reward model: ``python -m lm_runs.train_reward_model``.

    python -m lm_runs.train_reward_model --model_name_or_path google/gemma-2-2b \\
        --dataset pairs.jsonl --eval_size 0.05 --output_dir runs/reward_model

The pairs are those of :mod:`lm_runs.train_preference_model` (string columns ``prompt``, ``chosen``,
``rejected``; a chat message list in ``prompt`` is accepted and turned into the text a judge is given,
:func:`lm_runs.data.prompt_text`; rows with ``chosen == rejected`` are left out). Each response is rendered alone with :func:`lm_runs.judges.reward_model.render_response` — the
tokenizer's chat template when it has one (saved with the model, so the judge renders the same way),
else the preference model's plain layout — and the model, a 1-label sequence classifier
(:func:`lm_runs.models.load_reward_model_base`: a causal LM gets a fresh scalar head), is trained on the
Bradley–Terry loss

    L = −log σ(r(x, chosen) − r(x, rejected)),

averaged over the pairs of a batch (chosen and rejected scored in one forward pass). A pair either of
whose texts exceeds ``max_length`` tokens is left out (the count is logged), as in
``train_preference_model``.

Held-out pairs — ``--eval_dataset`` (a file of the same format) or ``--eval_size`` (a number or a
fraction of ``--dataset``'s pairs, split off by a seeded shuffle, :func:`lm_runs.data.split_prompts`)
— are scored after training, and at every evaluation ``--eval_strategy`` asks for: the pair accuracy
(the fraction with r(chosen) > r(rejected)), the mean loss, and the judge's calibration at τ = 1 (mean
P(chosen ≻ rejected) = mean σ(r(chosen) − r(rejected)) and the Brier score, as ``python -m
lm_runs.calibrate_judge`` computes them), logged as ``eval_pair_accuracy``, ``eval_loss``,
``eval_mean_p_chosen`` and ``eval_brier`` and written to ``output_dir/eval_results.json``. The final model is what
:class:`~lm_runs.judges.reward_model.RewardModelJudge` (``--judge runs/reward_model``) loads.

Everything else is :mod:`lm_runs.train_preference_model`'s: ``transformers.Trainer`` (DeepSpeed,
``--report_to`` …), LoRA (``--use_peft``, which also trains the head), checked options and folders
(one line, exit status 2, before anything loads), checkpoints that appear complete or not at all, and
``--resume_from_checkpoint true``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from transformers import Trainer

from lm_runs.checkpoints import AtomicCheckpoints
from lm_runs.data import check_prompt, load_table, prompt_text
from lm_runs.judges.reward_model import encode_response
from lm_runs.launcher import run_entry_point, supervised_main, warn_deepspeed_optimizer
from lm_runs.models import check_model_source, load_reward_model_base, load_tokenizer
from lm_runs.train_preference_model import HeldOutPairsReport, response_text
from lm_runs.training_arguments import HeldOutPairsArguments, SupervisedRunArguments

__all__ = [
    "RewardModelConfig",
    "RewardModelTrainer",
    "tokenize_reward_pairs",
    "RewardPairCollator",
    "bradley_terry_loss",
    "build_trainer",
    "main",
]

logger = logging.getLogger(__name__)

#: The columns of a tokenized pair (kept by the Trainer although the model's forward takes none of them).
PAIR_COLUMNS = ("chosen_input_ids", "rejected_input_ids")


@dataclass
class RewardModelConfig(HeldOutPairsArguments, SupervisedRunArguments):
    """Options of ``python -m lm_runs.train_reward_model``: the fields below, those of
    :class:`~lm_runs.training_arguments.SupervisedRunArguments` (the model, LoRA, ``--overwrite_output_dir``)
    and every ``transformers.TrainingArguments`` option; the defaults are ``train_preference_model``'s."""

    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Preference pairs (required): a .jsonl/.json, .csv or .parquet file or a save_to_disk directory "
            "with string columns 'prompt', 'chosen', 'rejected'."
        },
    )
    max_length: int = field(
        default=1024, metadata={"help": "Longest rendered (prompt, response) in tokens; longer pairs are left out."}
    )
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the pairs."})
    warmup_steps: float = field(
        default=1000, metadata={"help": "Linear warmup steps; a value below 1 is a fraction of training."}
    )


def bradley_terry_loss(chosen_rewards: Any, rejected_rewards: Any) -> Any:
    """mean over pairs of −log σ(r_chosen − r_rejected) (torch tensors of shape (B,))."""
    import torch.nn.functional as F

    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def tokenize_reward_pairs(table, tokenizer, max_length: int | None, name: str = "dataset"):
    """A ``datasets.Dataset`` with ``chosen_input_ids`` and ``rejected_input_ids``: each row's two
    responses rendered and encoded as the judge does (:func:`~lm_runs.judges.reward_model.encode_response`).
    Raises ``ValueError`` naming missing columns or a bad row; rows with ``chosen == rejected`` and pairs
    over ``max_length`` tokens are left out (logged); ValueError when nothing is left."""
    import datasets

    missing = [c for c in ("prompt", "chosen", "rejected") if c not in table.column_names]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; columns: {table.column_names}")
    if len(table) == 0:
        raise ValueError(f"{name}: no pairs (the dataset is empty)")
    chosen_ids: list[list[int]] = []
    rejected_ids: list[list[int]] = []
    ties = long = 0
    for index, (prompt, chosen, rejected) in enumerate(zip(table["prompt"], table["chosen"], table["rejected"])):
        where = f"{name}: row {index}"
        check_prompt(prompt, where)
        prompt = prompt_text(prompt)
        chosen = response_text(chosen, "chosen", where)
        rejected = response_text(rejected, "rejected", where)
        if chosen == rejected:
            ties += 1
            continue
        pair = [encode_response(tokenizer, prompt, chosen), encode_response(tokenizer, prompt, rejected)]
        if max_length is not None and max(len(ids) for ids in pair) > max_length:
            long += 1
            continue
        chosen_ids.append(pair[0])
        rejected_ids.append(pair[1])
    if ties:
        logger.warning("%s: left out %d pair(s) whose chosen and rejected responses are identical", name, ties)
    if long:
        logger.warning("%s: left out %d pair(s) with a text longer than max_length=%s tokens", name, long, max_length)
    if not chosen_ids:
        raise ValueError(f"{name}: no pair left to train on (identical responses, or longer than max_length={max_length})")
    return datasets.Dataset.from_dict({"chosen_input_ids": chosen_ids, "rejected_input_ids": rejected_ids})


class RewardPairCollator:
    """Batch B tokenized pairs as one right-padded block of 2B texts, the chosen responses first:
    ``input_ids`` and ``attention_mask`` (2B, L) (:func:`lm_runs.data.right_padded`)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        from lm_runs.data import right_padded

        texts = [{"input_ids": row["chosen_input_ids"]} for row in rows]
        texts += [{"input_ids": row["rejected_input_ids"]} for row in rows]
        return right_padded(texts, self.pad_token_id)


class RewardModelTrainer(HeldOutPairsReport, AtomicCheckpoints, Trainer):
    """``transformers.Trainer`` on the Bradley–Terry loss (:func:`bradley_terry_loss`) whose
    checkpoints appear complete or not at all; :meth:`evaluate` reports the held-out pair accuracy and
    :meth:`train` ends with it when there are held-out pairs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # compute_loss returns the batch mean, so the Trainer divides it by the accumulation steps
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False

    def _set_signature_columns_if_needed(self) -> None:
        self._signature_columns = list(PAIR_COLUMNS)

    def _rewards(self, model: Any, inputs: Mapping[str, Any]) -> tuple[Any, Any]:
        """(r_chosen, r_rejected), each (B,), from one forward pass over the collator's 2B texts."""
        rewards = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, 0].float()
        half = rewards.shape[0] // 2
        return rewards[:half], rewards[half:]

    def compute_loss(self, model: Any, inputs: Mapping[str, Any], return_outputs: bool = False, **kwargs: Any) -> Any:
        """The batch's Bradley–Terry loss (with the reward margins when ``return_outputs``)."""
        chosen, rejected = self._rewards(model, inputs)
        loss = bradley_terry_loss(chosen, rejected)
        return (loss, {"margins": chosen - rejected}) if return_outputs else loss

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """``{prefix_pair_accuracy, prefix_loss, prefix_pairs, prefix_mean_p_chosen, prefix_brier}`` over the
        held-out pairs (all ranks gathered): the fraction with r(chosen) > r(rejected), the mean −log σ(margin),
        and the calibration of the judge at τ = 1, p = σ(margin) = P(chosen ≻ rejected): its mean and its Brier
        score (:func:`lm_runs.judges.calibration.calibration_report`, ``python -m lm_runs.calibrate_judge``'s
        computation); logged."""
        from lm_runs.judges.calibration import calibration_report

        import torch

        loader = self.get_eval_dataloader(eval_dataset)
        model = self.model
        was_training = model.training
        model.eval()
        margins = []
        with torch.no_grad():
            for inputs in loader:
                inputs = self._prepare_inputs(inputs)
                chosen, rejected = self._rewards(model, inputs)
                margins.append(self.accelerator.gather_for_metrics(chosen - rejected))
        model.train(was_training)
        margin = torch.cat(margins).double()
        metrics = {
            f"{metric_key_prefix}_pair_accuracy": float((margin > 0).double().mean()),
            f"{metric_key_prefix}_loss": float(-torch.nn.functional.logsigmoid(margin).mean()),
            f"{metric_key_prefix}_pairs": float(margin.numel()),
        }
        calibration = calibration_report(torch.sigmoid(margin).tolist())
        metrics[f"{metric_key_prefix}_mean_p_chosen"] = calibration["mean_p_chosen"]
        metrics[f"{metric_key_prefix}_brier"] = calibration["brier"]
        self.log(dict(metrics))  # Trainer.log adds the epoch to the dict it is given
        return metrics



def build_trainer(config: RewardModelConfig) -> RewardModelTrainer:
    """The tokenizer, the tokenized pairs (training and held-out), the 1-label classifier (LoRA-wrapped
    with ``use_peft``) and a :class:`RewardModelTrainer`; a starting model of the wrong kind and data
    errors surface before the model loads."""
    check_model_source(config.model_name_or_path, "reward_model_base")
    warn_deepspeed_optimizer(config)
    tokenizer = load_tokenizer(config.model_name_or_path)
    table, held_out = config.held_out_split(load_table(config.dataset, split=config.dataset_split))
    train_dataset = tokenize_reward_pairs(table, tokenizer, config.max_length, name=config.dataset)
    eval_dataset = None
    if held_out is not None:
        eval_name = config.eval_dataset or f"{config.dataset} (held out)"
        eval_dataset = tokenize_reward_pairs(held_out, tokenizer, config.max_length, name=eval_name)
    model = load_reward_model_base(
        config.model_name_or_path,
        pad_token_id=tokenizer.pad_token_id,
        lora=config,
        gradient_checkpointing=config.gradient_checkpointing,
        seed=config.seed,
    )
    return RewardModelTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=RewardPairCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )


def main(argv: Sequence[str] | None = None) -> str:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, report the held-out pair accuracy, save to
    ``output_dir``; returns it (:func:`lm_runs.launcher.supervised_main`)."""
    return supervised_main(RewardModelConfig, build_trainer, argv)


if __name__ == "__main__":
    run_entry_point(main)
