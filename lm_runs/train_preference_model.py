"""Train the ground-truth pairwise preference model: ``python -m lm_runs.train_preference_model``.

    python -m lm_runs.train_preference_model --model_name_or_path google/gemma-2-2b \\
        --dataset pairs.jsonl --output_dir runs/preference_model

The dataset has string columns ``prompt``, ``chosen`` and ``rejected`` (a chat message list in
``prompt`` is accepted and turned into the judge's text with :func:`lm_runs.data.prompt_text`).
Every pair is used **in both orders**, so the model cannot learn a position preference:

    render_pair(prompt, chosen, rejected)  → label 0 (FIRST_IS_BETTER)
    render_pair(prompt, rejected, chosen)  → label 1 (SECOND_IS_BETTER)

with :func:`lm_runs.judges.pair_format.render_pair`, the layout
:class:`lm_runs.judges.PreferenceModelJudge` queries. The model is
``AutoModelForSequenceClassification.from_pretrained(model_name_or_path, num_labels=2)`` (a causal
LM directory gets a fresh classification head), its ``config.pad_token_id`` set from the tokenizer,
trained with the model's own cross-entropy on ``labels``. Texts are tokenized as the judge does
(``add_special_tokens=True``) and padded on the right; a pair whose text exceeds ``max_length``
tokens is left out of training (the count is logged) rather than cut, since a cut would hide the
second response or the question from the model and make its label noise. Rows whose ``chosen``
equals ``rejected`` carry no preference and are left out too.

Held-out pairs — ``--eval_dataset`` (a file of the same format) or ``--eval_size`` (a number or a
fraction of ``--dataset``'s pairs, split off by a seeded shuffle, :func:`lm_runs.data.split_prompts`) —
are scored after training and at every evaluation ``--eval_strategy`` asks for, each pair in both
orders (a pair is kept only when both of its texts fit in ``max_length``). With
p_i = softmax(logits(render_pair(x_i, chosen_i, rejected_i)))[FIRST_IS_BETTER] = P(chosen ≻ rejected), the
judge's answer with the order given (``shuffle_order=False``), and q_i the same for
render_pair(x_i, rejected_i, chosen_i) = P(rejected ≻ chosen), the report is

* ``eval_loss`` = mean over the 2n texts of the cross-entropy of their label (the training loss),
* ``eval_pair_accuracy``, ``eval_mean_p_chosen``, ``eval_brier`` = the accuracy, mean p and Brier score
  (1/n) Σ (1 − p_i)² of :func:`lm_runs.judges.calibration.calibration_report` (the computation of
  ``python -m lm_runs.calibrate_judge`` and ``train_reward_model``),
* ``eval_position_bias`` = (1/n) Σ (p_i + q_i − 1), the same report's both-order position bias,
* ``eval_pairs`` = n,

logged and written to ``output_dir/eval_results.json`` (atomically, by the saving process).

Training is ``transformers.Trainer`` (``--deepspeed``, ``--report_to``, ``--save_steps`` ... as usual);
weight decay comes from the Trainer's AdamW (no DeepSpeed ``optimizer`` block is needed, see
:func:`lm_runs.launcher.warn_deepspeed_optimizer`). The final model (LoRA merged) and tokenizer are
saved to ``output_dir`` for ``PreferenceModelJudge``. Options, the starting model (a causal LM or a
2-label classifier), the output folder and the pairs are checked before anything loads (one line, exit
status 2); checkpoints appear complete or not at all and ``--resume_from_checkpoint true`` resumes from
the newest complete one, as in :mod:`lm_runs.sft`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from transformers import Trainer

from egpo_core.files import atomic_write
from lm_runs.checkpoints import AtomicCheckpoints
from lm_runs.data import check_prompt, load_table, prompt_text, right_padded
from lm_runs.judges.pair_format import FIRST_IS_BETTER, SECOND_IS_BETTER, render_pair
from lm_runs.launcher import run_entry_point, supervised_main, warn_deepspeed_optimizer
from lm_runs.models import check_model_source, load_preference_model_base, load_tokenizer
from lm_runs.training_arguments import HeldOutPairsArguments, SupervisedRunArguments

__all__ = [
    "PreferenceModelConfig",
    "PreferenceModelTrainer",
    "HeldOutPairsReport",
    "build_pair_dataset",
    "response_text",
    "tokenize_pairs",
    "PairCollator",
    "build_trainer",
    "main",
]

logger = logging.getLogger(__name__)


@dataclass
class PreferenceModelConfig(HeldOutPairsArguments, SupervisedRunArguments):
    """Options of ``python -m lm_runs.train_preference_model``: the fields below, those of
    :class:`~lm_runs.training_arguments.SupervisedRunArguments` (the model, LoRA — PEFT also trains the
    head —, ``--overwrite_output_dir``) and every ``transformers.TrainingArguments`` option. Defaults
    follow the paper (lr 1e-5, 3 epochs, weight decay 0.1, 1000 warmup steps, sequences up to 1024
    tokens). ``--model_name_or_path`` is a causal LM (it gets a fresh 2-label head) or a 2-label
    sequence classifier, loaded with ``AutoModelForSequenceClassification(num_labels=2)``."""

    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Preference pairs (required): a .jsonl/.json, .csv or .parquet file or a save_to_disk directory "
            "with string columns 'prompt', 'chosen', 'rejected'."
        },
    )
    max_length: int = field(
        default=1024, metadata={"help": "Longest rendered pair in tokens (paper: 1024); longer pairs are left out."}
    )
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the pairs, both orders (paper: 3)."})
    warmup_steps: float = field(
        default=1000, metadata={"help": "Linear warmup steps (paper: 1000); a value below 1 is a fraction of training."}
    )


class HeldOutPairsReport:
    """A pair-trained judge's ``Trainer`` mixin (before ``Trainer`` in the bases): after
    ``Trainer.train``, with held-out pairs, the trainer's :meth:`evaluate` is logged and written
    atomically to ``output_dir/eval_results.json`` by the saving process."""

    def train(self, *args: Any, **kwargs: Any) -> Any:
        result = super().train(*args, **kwargs)
        if self.eval_dataset is not None:
            metrics = self.evaluate()
            logger.info("held-out pairs: %s", ", ".join(f"{name} {value:.4g}" for name, value in sorted(metrics.items())))
            if self.args.should_save:
                atomic_write(f"{self.args.output_dir}/eval_results.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        return result


class PreferenceModelTrainer(HeldOutPairsReport, AtomicCheckpoints, Trainer):
    """``transformers.Trainer`` whose checkpoints appear complete or not at all (:class:`AtomicCheckpoints`);
    :meth:`evaluate` is the held-out report of the module docstring and :meth:`train` ends with it when
    there are held-out pairs."""

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """``{prefix_loss, prefix_pair_accuracy, prefix_mean_p_chosen, prefix_brier, prefix_position_bias,
        prefix_pairs}`` over the held-out texts (a :func:`tokenize_pairs` dataset with ``whole_pairs``: rows
        2i and 2i+1 are pair i in both orders; all ranks gathered, in order); logged."""
        from lm_runs.judges.calibration import calibration_report

        import torch

        loader = self.get_eval_dataloader(eval_dataset)
        model = self.model
        was_training = model.training
        model.eval()
        log_probs, labels = [], []
        with torch.no_grad():
            for inputs in loader:
                inputs = self._prepare_inputs(inputs)
                logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
                log_probs.append(self.accelerator.gather_for_metrics(logits.float().log_softmax(dim=-1)))
                labels.append(self.accelerator.gather_for_metrics(inputs["labels"]))
        model.train(was_training)
        log_p = torch.cat(log_probs).double()
        label = torch.cat(labels)
        first = log_p[:, FIRST_IS_BETTER].exp()
        p = first[label == FIRST_IS_BETTER].tolist()  # P(chosen ≻ rejected), chosen shown first
        q = first[label == SECOND_IS_BETTER].tolist()  # P(rejected ≻ chosen), rejected shown first
        calibration = calibration_report(p, q)
        metrics = {
            f"{metric_key_prefix}_loss": float(-log_p.gather(1, label[:, None]).mean()),
            f"{metric_key_prefix}_pair_accuracy": calibration["accuracy"],
            f"{metric_key_prefix}_mean_p_chosen": calibration["mean_p_chosen"],
            f"{metric_key_prefix}_brier": calibration["brier"],
            f"{metric_key_prefix}_position_bias": calibration["both_orders"]["position_bias"],
            f"{metric_key_prefix}_pairs": float(calibration["pairs"]),
        }
        self.log(dict(metrics))  # Trainer.log adds the epoch to the dict it is given
        return metrics



def response_text(value: Any, column: str, where: str) -> str:
    """``value`` when it is a non-empty string (a response of row ``where``); else ValueError naming the column."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {column!r} must be a non-empty string, got {value!r:.60}")
    return value


def build_pair_dataset(table, name: str = "dataset"):
    """Both orders of every pair: a ``datasets.Dataset`` with ``text`` and ``label`` columns.

    Row i of ``table`` becomes rows 2i (``render_pair(prompt, chosen, rejected)``, label
    ``FIRST_IS_BETTER`` = 0) and 2i+1 (``render_pair(prompt, rejected, chosen)``, label
    ``SECOND_IS_BETTER`` = 1). Raises ``ValueError`` naming the missing columns or the bad row;
    rows with ``chosen == rejected`` are dropped with a log line.
    """
    import datasets

    missing = [c for c in ("prompt", "chosen", "rejected") if c not in table.column_names]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; columns: {table.column_names}")
    if len(table) == 0:
        raise ValueError(f"{name}: no pairs (the dataset is empty)")
    texts: list[str] = []
    labels: list[int] = []
    ties = 0
    for index, (prompt, chosen, rejected) in enumerate(zip(table["prompt"], table["chosen"], table["rejected"])):
        where = f"{name}: row {index}"
        check_prompt(prompt, where)
        prompt = prompt_text(prompt)
        chosen = response_text(chosen, "chosen", where)
        rejected = response_text(rejected, "rejected", where)
        if chosen == rejected:
            ties += 1
            continue
        texts += [render_pair(prompt, chosen, rejected), render_pair(prompt, rejected, chosen)]
        labels += [FIRST_IS_BETTER, SECOND_IS_BETTER]
    if ties:
        logger.warning("%s: left out %d pair(s) whose chosen and rejected responses are identical", name, ties)
    if not texts:
        raise ValueError(f"{name}: every pair has chosen == rejected; nothing to train on")
    return datasets.Dataset.from_dict({"text": texts, "label": labels})


def tokenize_pairs(pairs, tokenizer, max_length: int | None, name: str = "dataset", *, whole_pairs: bool = False):
    """Tokenize :func:`build_pair_dataset` rows as the judge does (``add_special_tokens=True``):
    ``input_ids``, ``attention_mask``, ``labels``. Texts over ``max_length`` tokens are left out
    (logged) — with ``whole_pairs`` both orders of a pair (rows 2i, 2i+1) are kept or left out together,
    as the held-out report needs; raises ``ValueError`` when none fits."""
    import datasets

    encoded = tokenizer(list(pairs["text"]), add_special_tokens=True)["input_ids"]
    fits = [max_length is None or len(ids) <= max_length for ids in encoded]
    if whole_pairs:
        fits = [fits[i] and fits[i ^ 1] for i in range(len(fits))]
    keep = [i for i, ok in enumerate(fits) if ok]
    if len(keep) < len(encoded):
        logger.warning("%s: left out %d of %d pair texts longer than max_length=%s tokens", name,
                       len(encoded) - len(keep), len(encoded), max_length)
    if not keep:
        raise ValueError(f"{name}: no pair text fits in max_length={max_length} tokens")
    labels = pairs["label"]
    return datasets.Dataset.from_dict({
        "input_ids": [encoded[i] for i in keep],
        "attention_mask": [[1] * len(encoded[i]) for i in keep],
        "labels": [labels[i] for i in keep],
    })


class PairCollator:
    """Right-pad tokenized pair texts: ``input_ids`` (pad id on the right), ``attention_mask``
    (0 on padding) and ``labels`` (B,) as LongTensors — the layout the judge scores."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        labels = torch.tensor([int(row["labels"]) for row in rows], dtype=torch.long)
        return {**right_padded(rows, self.pad_token_id), "labels": labels}


def build_trainer(config: PreferenceModelConfig):
    """The tokenizer, the both-orders tokenized datasets (training and held-out), the 2-label classifier
    (LoRA-wrapped with ``use_peft``) and a :class:`PreferenceModelTrainer`; a starting model of the wrong
    kind and data errors surface before the model loads."""
    check_model_source(config.model_name_or_path, "preference_model_base")
    warn_deepspeed_optimizer(config)
    tokenizer = load_tokenizer(config.model_name_or_path)
    table, held_out = config.held_out_split(load_table(config.dataset, split=config.dataset_split))
    pairs = build_pair_dataset(table, name=config.dataset)
    train_dataset = tokenize_pairs(pairs, tokenizer, config.max_length, name=config.dataset)
    eval_dataset = None
    if held_out is not None:
        eval_name = config.eval_dataset or f"{config.dataset} (held out)"
        eval_pairs = build_pair_dataset(held_out, name=eval_name)
        eval_dataset = tokenize_pairs(eval_pairs, tokenizer, config.max_length, name=eval_name, whole_pairs=True)
    model = load_preference_model_base(
        config.model_name_or_path,
        pad_token_id=tokenizer.pad_token_id,
        lora=config,
        gradient_checkpointing=config.gradient_checkpointing,
        seed=config.seed,
    )
    return PreferenceModelTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=PairCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )


def main(argv: Sequence[str] | None = None) -> str:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, report the held-out pairs, save to ``output_dir``; returns it
    (:func:`lm_runs.launcher.supervised_main`)."""
    return supervised_main(PreferenceModelConfig, build_trainer, argv)


if __name__ == "__main__":
    run_entry_point(main)
