"""NLHFTrainer: online Nash learning from human feedback for any egpo_core algorithm, as a HF Trainer.

One optimizer step is the pipeline

    generate → judge → log-probs → egpo_core loss → backward

and everything around it — optimizer stepping, gradient clipping and accumulation, the scheduler,
mixed precision, DeepSpeed, checkpoints, logging — is the Trainer's own. The algorithm is data
(``egpo_core.algorithms``): its opponent terms say which responses to sample and which pairs to
judge, ``egpo_core.losses.regression_target`` builds the target from the judged preferences, and
``ipo_regression_loss`` / ``policy_gradient_loss`` are the losses; nothing here re-implements them.

Per prompt (``samples_per_prompt`` times), with ℓ(y) the (length-normalized) sequence
log-probability and ``wins[k]`` = P(· ≻ z_k) for the algorithm's opponent terms z_k:

* IPO family (Online IPO 1, EGPO, Nash-MD, Online IPO 2, SPPO): y, y′ ~ pair sampling; z_k ~ the
  policy ("current") or the geometric mixture ("mixture"), or z = y′ ("pair");
  loss (ℓθ(y) − ℓθ(y′) − ℓA(y) + ℓA(y′) − Σ_k c_k [P(y≻z_k) − P(y′≻z_k)]/β)², A = π_ref (SPPO: π_θ detached).
* Nash-MD-PG: y ~ π_θ, z ~ mixture; loss −[P(y ≻ z) − β(log π_θ(y) − log π_ref(y))]·log π_θ(y) with
  summed sequence log-probabilities (the KL term is a sequence-level log-ratio).

A rollout is three named stages (as the ``training_step`` of TRL's Nash-MD trainer):
:meth:`NLHFTrainer._generate` (every response the algorithm needs, in one decoding loop) →
:meth:`NLHFTrainer._judge` (the preference matrix P(· ≻ z_k)) → :meth:`NLHFTrainer._reference_logprobs`
(π_ref's log-probabilities of the pair); :meth:`NLHFTrainer.compute_loss` then forms the target and the loss.

Extragradient (EGPO) as two optimizer steps kept apart by :class:`egpo_core.schemes.ExtragradientState`:
the first window of an update generates on batch t at θ_t, saves θ_t with the optimizer and scheduler
state and steps (→ θ_{t+½}); the next window generates on batch t+1 at θ_{t+½}, restores θ_t and the
state, and steps from θ_t. The scheduler therefore ticks once per update; a checkpoint between the two
steps carries the snapshot (``extragradient_state_rank{R}.pt``) and resumes into the full step.

Counting: the configuration counts updates (``--max_steps``, ``--num_train_epochs``); the trainer derives
the optimizer-step count from it (× ``steps_per_update``) without changing the configuration. Every
other step-counted Hugging Face flag counts updates too — ``--logging_steps``, ``--save_steps``,
``--logging_first_step`` (and the ratio forms, × the planned updates), ``--warmup_steps`` (the schedule
counts updates), and ``--logging_strategy/--save_strategy epoch`` means an epoch of updates (there is no
evaluation set: ``lm_runs.config`` refuses the eval flags) — because the Trainer's flow callback,
its progress bar (console or Jupyter) and every log see :meth:`NLHFTrainer.state_in_updates`, and the
flow acts only on an optimizer step that completes an update (EGPO: the full step). Logs,
TensorBoard's x-axis (``step``) and the logged ``epoch`` count updates. The Trainer's ``global_step``
(``trainer_state.json``) and the checkpoint folders ``checkpoint-N`` count optimizer steps: EGPO's
checkpoint after update u is ``checkpoint-{2u}``, so ``--save_steps 3 --max_steps 6`` writes
``checkpoint-6`` and ``checkpoint-12``; only a save outside this flow between the half and the full step
(after a judge failure, see below, or at another callback's request) writes an odd one, which resumes
into the full step. For the other algorithms updates and optimizer steps are the same numbers.

A judge that fails (raises, or answers NaN or a value outside [0, 1]) stops training with a
:class:`~lm_runs.judges.JudgeError` naming the update and the cause, after saving the checkpoint of the
last completed optimizer step (with the random-number state of that moment, so resuming from it ends
where an uninterrupted run would). In a distributed run the ranks first agree (one ``all_reduce`` of a
failure flag after each judge call, before any collective of the step that a failed rank would not
join): all ranks take the failure path together, save that checkpoint together (the save is collective)
and raise the same one-line error, naming the rank whose judge failed.

Each checkpoint names the judge by content (``judge_identity.json``: a model judge's file digests and τ, a
served judge's identity from its ``/health``, a callable's module source digest), and a resume with another
judge is refused in one line before training: the resumed updates would follow another preference.

Generation and judging run once per accumulation window, at its first micro-batch (after the Trainer
has restored the RNG state on resume), for all of the window's micro-batches.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainerState
from transformers import trainer as hf_trainer
from transformers.trainer_callback import DefaultFlowCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from egpo_core.losses import (
    ipo_regression_loss,
    policy_gradient_advantage,
    policy_gradient_loss,
    regression_target,
)
from egpo_core.schemes import ExtragradientState

from .checkpoints import (
    MODEL_MARKERS,
    AtomicCheckpoints,
    is_complete_checkpoint,
    latest_checkpoint,
    save_model_atomically,
)
from .config import NLHFConfig
from .data import PromptCollator, prompt_text
from .generation import Completions, ReferenceModel, generate_completions, generate_mixture
from .judges import JudgeError
from .judges.base import identity_changes, judge_identity
from .launcher import UsageError, one_line
from .logprobs import completion_logprobs
from .optimizer_state import TrainerOptimizerStateIO

logger = logging.getLogger(__name__)

__all__ = ["NLHFTrainer", "EXTRAGRADIENT_STATE", "JUDGE_IDENTITY"]

#: Per-rank file in a checkpoint folder holding EGPO's phase and snapshot.
EXTRAGRADIENT_STATE = "extragradient_state_rank{rank}.pt"
#: File in a checkpoint folder naming, by content, the judge the run was trained with.
JUDGE_IDENTITY = "judge_identity.json"


class _JudgeFailed(Exception):
    """Raised by the judge stage (on every rank once they agree); :meth:`NLHFTrainer.training_step` turns
    it into a JudgeError after saving a checkpoint."""


class _Window:
    """The prompt batches of one accumulation window, and their rollouts once generated."""

    def __init__(self, batches: list[dict]):
        self.batches = batches
        self.rollouts: list[dict] | None = None


def _completed_update_epoch(args: NLHFConfig, state: TrainerState) -> int | None:
    """k when the Trainer's state is at the end of update-epoch k (``steps_per_update`` × k passes over the
    prompts; not a run stopped mid-epoch), else None."""
    passes = round(state.epoch or 0)
    complete = abs((state.epoch or 0) - passes) < 1e-6
    if complete and passes > 0 and passes % args.steps_per_update == 0:
        return passes // args.steps_per_update
    return None


class _EpochModels(TrainerCallback):
    """Saves the model into ``output_dir/epochs/epoch-{k}`` after every epoch of *updates* (EGPO's
    epoch k is after 2k passes over the prompts), so the evaluation can enumerate them. Each folder
    appears complete or not at all (:func:`~lm_runs.checkpoints.save_model_atomically`); a run resumed
    from the checkpoint that ends epoch k writes ``epoch-k`` when a kill left it unwritten."""

    def __init__(self, trainer: "NLHFTrainer"):
        self.trainer = trainer

    def _folder(self, args, epoch: int) -> Path:
        return Path(args.output_dir) / "epochs" / f"epoch-{epoch}"

    def on_train_begin(self, args, state, control, **kwargs):
        epoch = _completed_update_epoch(args, state)
        if epoch is not None and not any((self._folder(args, epoch) / name).is_file() for name in MODEL_MARKERS):
            save_model_atomically(self.trainer, self._folder(args, epoch))
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = _completed_update_epoch(args, state)
        if epoch is not None:
            save_model_atomically(self.trainer, self._folder(args, epoch))
        return control


class _OptimizerStepCounts:
    """A read-only view of the configuration in which ``max_steps`` / ``num_train_epochs`` count optimizer
    steps / passes over the prompts (× ``steps_per_update``), for the Trainer's own bookkeeping; every
    other attribute is the configuration's."""

    def __init__(self, args: NLHFConfig):
        self._args = args
        per_update = args.steps_per_update
        self.max_steps = args.max_steps * per_update if args.max_steps > 0 else args.max_steps
        self.num_train_epochs = args.num_train_epochs * per_update

    def __getattr__(self, name: str) -> Any:
        return getattr(self._args, name)


class _InUpdates:
    """Mixin in front of one of Hugging Face's callbacks (:func:`_counting_updates`): every event reaches
    the callback with :meth:`NLHFTrainer.state_in_updates` instead of the Trainer's state
    (``global_step``, ``max_steps``, ``epoch``, ``logging_steps``/``save_steps`` in updates). For the
    DefaultFlowCallback (``flow``: it decides when to log, save and stop) ``on_step_end`` is passed on
    only for an optimizer step that completes an update and ``on_epoch_end`` only at the end of an epoch
    of updates: EGPO's half step never logs or saves, and ``--logging_steps 2`` logs updates 2, 4, 6."""

    trainer: "NLHFTrainer"
    flow = False


def _forward_in_updates(event: str) -> Callable:
    def forward(self: _InUpdates, args, state, control, **kwargs):
        if self.flow and event == "on_step_end" and not self.trainer._is_update_step:
            return control
        if self.flow and event == "on_epoch_end" and _completed_update_epoch(args, state) is None:
            return control
        return getattr(super(_InUpdates, self), event)(args, self.trainer.state_in_updates(), control, **kwargs)

    forward.__name__ = event
    return forward


for _event in [name for name in vars(TrainerCallback) if name.startswith("on_")]:
    setattr(_InUpdates, _event, _forward_in_updates(_event))


def _counting_updates(callback: TrainerCallback, trainer: "NLHFTrainer") -> TrainerCallback:
    """A fresh callback of ``callback``'s class with :class:`_InUpdates` in front (still an instance of that
    class, so ``remove_callback(ProgressCallback)`` and the like find it)."""
    cls = type(callback)
    counting = type(f"{cls.__name__}InUpdates", (_InUpdates, cls), {"flow": isinstance(callback, DefaultFlowCallback)})()
    counting.trainer = trainer
    return counting


class _RandomStateAtStepEnd(TrainerCallback):
    """Keeps the random-number state of the end of the last optimizer step — the state a checkpoint
    saved then holds — so that a checkpoint written after a judge failure resumes exactly."""

    def __init__(self) -> None:
        self.saved: dict[str, Any] | None = None

    def on_step_end(self, args, state, control, **kwargs):
        self.saved = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cpu": torch.random.get_rng_state(),
            "cuda": torch.cuda.random.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        return control

    def restore(self) -> None:
        """Put the saved state back (every generator the Trainer's checkpoints record on CPU/CUDA)."""
        saved = self.saved
        random.setstate(saved["python"])
        np.random.set_state(saved["numpy"])
        torch.random.set_rng_state(saved["cpu"])
        if saved["cuda"] is not None:
            torch.cuda.random.set_rng_state_all(saved["cuda"])


@dataclass
class _Samples:
    """What :meth:`NLHFTrainer._generate` drew for a batch of n = prompts × samples_per_prompt rows.

    responses: the pair y (and y′, except for Nash-MD-PG), one :class:`Completions` per role;
    opponents: z_k for each opponent term k of the algorithm sampled from the policy or the mixture;
    completion_ids / completion_mask: the responses stacked role after role, right-padded to one length.
    """

    prompts: list[str]
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    responses: list[Completions]
    opponents: dict[int, Completions]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    new_tokens: int

    @property
    def n(self) -> int:
        return len(self.prompts)


def _rows(completions: Completions, start: int, stop: int) -> Completions:
    """Rows start:stop of a batch of completions (one role of a joint generate call)."""
    return Completions(completions.ids[start:stop], completions.mask[start:stop], completions.truncated[start:stop])


def _pad_cat(parts: Sequence[Completions], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Completions of several roles stacked row-wise, right-padded to one length."""
    width = max(part.ids.shape[1] for part in parts)
    padded = [part.padded_to(width, pad_token_id) for part in parts]
    return torch.cat([p.ids for p in padded]), torch.cat([p.mask for p in padded])


class NLHFTrainer(AtomicCheckpoints, Trainer):
    """Online NLHF for ``args.alg`` (see the module docstring).

    Args:
        model: the policy (a causal LM, or a peft model whose adapter is trained).
        args: :class:`~lm_runs.config.NLHFConfig`.
        judge: ``judge(prompts, completions) -> list[float]``, P(a ≻ b) for each pair ``[a, b]``;
            each rank calls it with its own pairs.
        train_dataset: prompts, a column ``prompt`` (see ``lm_runs.data.load_prompts``).
        processing_class: the tokenizer (left padding, a pad token).
        ref_model: π_ref as a separate frozen model; ``None`` with a peft policy means the policy
            with its adapter disabled.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        args: NLHFConfig,
        judge: Callable[[Sequence[str], Sequence[Sequence[str]]], list[float]],
        train_dataset,
        processing_class,
        ref_model: torch.nn.Module | None = None,
        callbacks: list[TrainerCallback] | None = None,
    ):
        if processing_class.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token (set tokenizer.pad_token)")
        self.algorithm = args.algorithm
        self.judge = judge
        self._judge_identity_cache: dict[str, Any] | None = None
        self.planned_updates: int | None = None  # set when training starts (needs the prompt count)
        super().__init__(
            model=model,
            args=args,
            data_collator=PromptCollator(processing_class, args.max_prompt_length),
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
        )
        if ref_model is not None:
            ref_model = self._place_reference(ref_model)
        self.reference = ReferenceModel(model, frozen=ref_model)
        self.extragradient = (
            ExtragradientState(TrainerOptimizerStateIO(), offload=args.extragradient_offload)
            if self.algorithm.scheme == "extragradient"
            else None
        )
        self.add_callback(_EpochModels(self))
        self._count_updates_in_callbacks()
        self._random_state = _RandomStateAtStepEnd()
        self.add_callback(self._random_state)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._last_log = (time.perf_counter(), 0)

    def _place_reference(self, ref_model: torch.nn.Module) -> torch.nn.Module:
        """π_ref on the training device; under ZeRO-3, where loading partitioned it like the policy, inside
        an inference engine of its own (no optimizer) whose hooks gather each layer for its forward pass."""
        if not (self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3):
            return ref_model.to(self.args.device)
        import deepspeed

        ds_config = self.accelerator.state.deepspeed_plugin.deepspeed_config
        inference = {key: ds_config[key] for key in ("zero_optimization", "bf16", "fp16") if key in ds_config}
        inference["train_micro_batch_size_per_gpu"] = ds_config["train_micro_batch_size_per_gpu"]
        engine, *_ = deepspeed.initialize(model=ref_model, config=inference)
        engine.eval()
        return engine.module

    # ------------------------------------------------------------------------------------------
    # counting
    # ------------------------------------------------------------------------------------------

    def _count_updates_in_callbacks(self) -> None:
        """Put Hugging Face's flow callback and progress bar (the console's, or the notebook's that the
        Trainer picks in Jupyter) behind :class:`_InUpdates`, in their places."""
        callbacks = self.callback_handler.callbacks
        progress = (ProgressCallback, hf_trainer.DEFAULT_PROGRESS_CALLBACK)
        for i, callback in enumerate(callbacks):
            if isinstance(callback, (DefaultFlowCallback, *progress)) and not isinstance(callback, _InUpdates):
                callbacks[i] = _counting_updates(callback, self)

    @property
    def updates(self) -> int:
        """Completed updates of the algorithm (EGPO: pairs of optimizer steps)."""
        return self.extragradient.updates if self.extragradient is not None else self.state.global_step

    def set_initial_training_values(self, args, dataloader):
        """The Trainer's counts from the configuration's: optimizer steps = ``steps_per_update`` ×
        updates (passes = ``steps_per_update`` × epochs); :attr:`planned_updates` = ``--max_steps``, or
        ⌈epochs × windows per pass⌉."""
        values = super().set_initial_training_values(_OptimizerStepCounts(args), dataloader)
        windows_per_pass = values[1]
        self.planned_updates = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * windows_per_pass)
        return values

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The schedule counts updates (:attr:`planned_updates`): EGPO's restore rolls the scheduler back
        after its half step, so it ticks once per update."""
        return super().create_scheduler(self.planned_updates, optimizer)

    def state_in_updates(self) -> TrainerState:
        """The Trainer's state as the user counts it: ``global_step``, ``max_steps``, ``epoch`` and the
        logging/saving/evaluation intervals in updates (a ratio such as ``--save_steps 0.5`` × the planned
        updates); a copy for EGPO, the state itself for the other algorithms."""
        per_update = self.args.steps_per_update
        if per_update == 1:
            return self.state
        view = copy.copy(self.state)  # log_history and the rest are shared
        view.global_step = self.updates
        view.max_steps = self.planned_updates if self.planned_updates is not None else view.max_steps
        view.epoch = None if self.state.epoch is None else self.state.epoch / per_update
        if self.planned_updates is not None:
            view.compute_steps(self.args, self.planned_updates)
        return view

    def floating_point_ops(self, inputs) -> int:
        return 0  # the rollout's cost is not the forward pass of an input_ids batch

    # ------------------------------------------------------------------------------------------
    # the step: generate → judge → log-probs → loss → backward
    # ------------------------------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Defer the window's rollouts to its first micro-batch (see :meth:`training_step`)."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        window = _Window(batches)
        return [{"window": window, "index": i} for i in range(len(batches))], None

    def training_step(self, model, inputs, num_items_in_batch=None):
        window, index = inputs["window"], inputs["index"]
        if window.rollouts is None:
            try:
                window.rollouts = self._rollout_window(window.batches)  # generate → judge → π_ref log-probs
            except _JudgeFailed as failure:
                raise JudgeError(f"{failure} at update {self.updates + 1}; {self._save_after_failure()}") from failure.__cause__
        return super().training_step(model, window.rollouts[index], num_items_in_batch)  # → compute_loss → backward

    def _save_after_failure(self) -> str:
        """Save the checkpoint of the last completed optimizer step (unless it exists) with that step's
        random-number state; returns what to tell the user. Called on every rank at once (the ranks agreed
        on the failure, :meth:`_agree_on_failure`): the save is collective, and whether the checkpoint
        exists is the main process's answer, so all ranks take the same branch."""
        step = self.state.global_step
        folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        if step == 0:
            return "no optimizer step was completed, so there is nothing to resume from"
        if self._random_state.saved is None:  # resumed, and failed before completing a step of its own
            return f"the newest checkpoint in {self.args.output_dir} is where to resume from"
        if not self._main_process_sees(is_complete_checkpoint(folder)):
            self._random_state.restore()
            self._save_checkpoint(self.model, trial=None)
        return f"checkpoint of optimizer step {step} in {folder}: resume with --resume_from_checkpoint true"

    def _main_process_says(self, message: str | None) -> str | None:
        """Rank 0's ``message`` on every rank (a broadcast of one object; the message itself in a single
        process)."""
        import torch.distributed as dist

        if self.args.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return message
        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _main_process_sees(self, answer: bool) -> bool:
        """Rank 0's ``answer`` on every rank (a broadcast; the answer itself in a single process)."""
        import torch.distributed as dist

        if self.args.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return answer
        flag = torch.tensor([1.0 if answer else 0.0], device=self.args.device)
        dist.broadcast(flag, src=0)
        return bool(float(flag))

    def _rollout_window(self, batches: list[dict]) -> list[dict]:
        """Rollouts of a window. EGPO: a half step's window then saves θ_t (before its optimizer step); a full
        step's window, generated at θ_{t+½}, then restores θ_t. Nothing is saved or restored when the
        rollouts fail, so the state stays that of the last completed step."""
        state = self.extragradient
        phase = None if state is None else state.phase
        rollouts = [self._rollout(batch) for batch in batches]  # a judge failure leaves the state untouched
        if phase == "half":
            state.save(self.model.parameters(), self.optimizer, self.lr_scheduler)
        elif phase == "full":
            state.restore(self.model.parameters(), self.optimizer, self.lr_scheduler)
        return rollouts

    @property
    def _is_update_step(self) -> bool:
        """Whether the current optimizer step completes an update (EGPO: the full step)."""
        return self.extragradient is None or self.extragradient.phase == "half"

    @torch.no_grad()
    def _rollout(self, batch: dict) -> dict:
        """generate → judge → reference log-probs: the inputs of :meth:`compute_loss` for one batch."""
        started = time.perf_counter()
        samples = self._generate(batch)
        generated = time.perf_counter()
        try:
            wins, failure = self._judge(samples), None
        except _JudgeFailed as error:
            wins, failure = None, error
        self._agree_on_failure(failure)  # every rank raises, or none: no rank is left in a collective
        judged = time.perf_counter()
        ref_logp = self._reference_logprobs(samples)
        responses, mask = samples.responses, samples.completion_mask
        self._record(
            "generation",
            seconds=generated - started,
            judge_seconds=judged - generated,
            new_tokens=float(samples.new_tokens),
            mean_length=float(mask.sum(-1).float().mean()),
            truncated_fraction=float(torch.cat([c.truncated for c in responses]).float().mean()),
        )
        roles = len(responses)
        return {
            "prompt_ids": samples.prompt_ids.repeat(roles, 1),
            "prompt_mask": samples.prompt_mask.repeat(roles, 1),
            "completion_ids": samples.completion_ids,
            "completion_mask": mask,
            "ref_logp": ref_logp,
            "wins_y": wins[0],
            "wins_yp": wins[1] if roles > 1 else wins[0],
        }

    def _generate(self, batch: dict) -> _Samples:
        """Every row the algorithm needs — y, y′ (Nash-MD-PG: y alone) with the pair sampling, one z_k per
        opponent term from the policy or the mixture with the opponent sampling — side by side in ONE
        decoding loop; mixture rows mix in π_ref, the others are plain policy rows (coefficient 0)."""
        args, tokenizer = self.args, self.processing_class
        device, repeat = args.device, args.samples_per_prompt
        prompt_ids = batch["prompt_ids"].to(device).repeat_interleave(repeat, dim=0)
        prompt_mask = batch["prompt_mask"].to(device).repeat_interleave(repeat, dim=0)
        prompts = [prompt_text(p) for p in batch["prompts"] for _ in range(repeat)]
        n = len(prompts)
        terms = self.algorithm.opponent_terms
        policy = self.accelerator.unwrap_model(self.model_wrapped)
        gen = dict(max_new_tokens=args.max_new_tokens, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        pair_roles = 1 if self.algorithm.loss == "pg" else 2
        opponent_terms = [k for k, t in enumerate(terms) if t.source in ("current", "mixture")]  # LM_ALGORITHMS have no "previous"
        mixtures = [k for k in opponent_terms if terms[k].source == "mixture"]
        rows = pair_roles + len(opponent_terms)
        params = [args.pair_sampling] * (pair_roles * n) + [args.opponent_sampling] * (len(opponent_terms) * n)
        ids, mask = prompt_ids.repeat(rows, 1), prompt_mask.repeat(rows, 1)
        if mixtures:
            coefs = [0.0] * (pair_roles * n) + [args.mixture_coef if k in mixtures else 0.0 for k in opponent_terms for _ in range(n)]
            sampled = generate_mixture(policy, self.reference, ids, mask, coefs, params, **gen)
        else:
            sampled = generate_completions(policy, ids, mask, params, **gen)
        parts = [_rows(sampled, i * n, (i + 1) * n) for i in range(rows)]
        responses = parts[:pair_roles]
        completion_ids, completion_mask = _pad_cat(responses, tokenizer.pad_token_id)
        return _Samples(
            prompts=prompts,
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            responses=responses,
            opponents={k: parts[pair_roles + j] for j, k in enumerate(opponent_terms)},
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            new_tokens=int(sampled.lengths.sum()),
        )

    def _judge(self, samples: _Samples) -> torch.Tensor:
        """wins[role, i, k] = P(response_role ≻ z_k) for prompt row i and opponent term k, in one judge call;
        a "pair" term is P(y ≻ y′) for y against P(y′ ≻ y′) = ½ for y′. Every pair of the rollout goes in
        that one call, so a reward-model judge (:class:`~lm_runs.judges.reward_model.RewardModelJudge`, which
        scores each distinct (prompt, response) of a call once) scores y, y′ and each z_k once — 3 forward
        rows per prompt for EGPO and Online IPO 1 instead of 2 pair passes — and forms every
        P(a ≻ b) = σ((r_a − r_b)/τ) from those scores; with ``--judge_gather`` rank 0's one call holds every
        rank's pairs. A preference model reads one text per pair. Raises :class:`_JudgeFailed` naming
        the cause when the judge raises (a :class:`~lm_runs.judges.JudgeError` for NaN, out-of-range or
        miscounted answers, an unreachable server, or any exception of a callable judge)."""
        tokenizer, terms, n = self.processing_class, self.algorithm.opponent_terms, samples.n
        pair_roles = len(samples.responses)
        text = lambda c: tokenizer.batch_decode(c.ids, skip_special_tokens=True)  # noqa: E731
        texts = [text(c) for c in samples.responses]
        opponent_texts = {k: text(c) for k, c in samples.opponents.items()}
        queries: list[tuple[int, int]] = []  # (role, term) of each block of n judged pairs
        pairs: list[list[str]] = []
        for k, term in enumerate(terms):
            versus = texts[1] if term.source == "pair" else opponent_texts[k]
            for role in range(pair_roles if term.source != "pair" else 1):
                queries.append((role, k))
                pairs += [[a, b] for a, b in zip(texts[role], versus)]
        try:
            answers = self.judge(samples.prompts * len(queries), pairs)
        except Exception as error:  # noqa: BLE001 - any failure of the judge stops training with a checkpoint
            raise _JudgeFailed(f"the judge failed ({type(error).__name__}: {one_line(error)})") from error
        judged = torch.tensor(answers, dtype=torch.float32, device=self.args.device)
        if not bool(torch.isfinite(judged).all()):  # a raw callable (no CheckedJudge) answering NaN
            raise _JudgeFailed("the judge answered a non-finite probability (NaN or inf)")
        wins = torch.full((pair_roles, n, len(terms)), 0.5, device=self.args.device)
        for block, (role, k) in enumerate(queries):
            wins[role, :, k] = judged[block * n : (block + 1) * n]
        return wins

    def _agree_on_failure(self, failure: _JudgeFailed | None) -> None:
        """Raise :class:`_JudgeFailed` on every rank when the judge failed on any: one ``all_reduce`` (max)
        of a failure flag, then, only after a failure, an ``all_gather_object`` of the causes so that every
        rank names the first failed rank and its cause. Single process: raise ``failure`` if any."""
        import torch.distributed as dist

        if self.args.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            if failure is not None:
                raise failure
            return
        flag = torch.tensor([0.0 if failure is None else 1.0], device=self.args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if float(flag) == 0.0:
            return
        causes: list[str | None] = [None] * dist.get_world_size()
        dist.all_gather_object(causes, None if failure is None else str(failure))
        rank, cause = next((r, c) for r, c in enumerate(causes) if c is not None)
        raise _JudgeFailed(f"{cause} on rank {rank}") from (failure.__cause__ if failure is not None else None)

    def _reference_logprobs(self, samples: _Samples) -> torch.Tensor:
        """π_ref's summed log-probabilities of the pair responses, role after role (π_ref is frozen:
        computed once here, not in every forward pass of the loss)."""
        roles = len(samples.responses)
        with self.reference.as_module() as reference:
            return completion_logprobs(
                reference,
                samples.prompt_ids.repeat(roles, 1),
                samples.prompt_mask.repeat(roles, 1),
                samples.completion_ids,
                samples.completion_mask,
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """log-probs at the current parameters → the algorithm's egpo_core loss, averaged over pairs."""
        args, alg = self.args, self.algorithm
        mask = inputs["completion_mask"]
        lengths = mask.sum(-1).clamp_min(1).float()
        logp = completion_logprobs(model, inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], mask)
        ref_logp = inputs["ref_logp"]
        n = inputs["wins_y"].shape[0]
        if alg.loss == "pg":
            advantage = policy_gradient_advantage(alg, inputs["wins_y"], logp.detach() - ref_logp, args.beta)
            per_sample = policy_gradient_loss(logp, advantage)
            extra = {"advantage": float(advantage.mean())}
        else:
            ell = logp / lengths if args.length_normalize else logp
            ref_ell = ref_logp / lengths if args.length_normalize else ref_logp
            anchor = ell.detach() if alg.anchor == "current" else ref_ell
            target = regression_target(alg, inputs["wins_y"], inputs["wins_yp"], args.beta)
            per_sample = ipo_regression_loss(ell[:n], ell[n:], anchor[:n], anchor[n:], target)
            contrast = (ell[:n] - ell[n:] - anchor[:n] + anchor[n:]).detach()
            extra = {"target": float(target.mean()), "contrast": float(contrast.mean())}
        loss = per_sample.mean()
        if self._is_update_step:
            self._record(
                "",
                loss=float(loss.detach()),
                win_rate=float(inputs["wins_y"].mean()),
                kl_ref=float((logp.detach() - ref_logp).mean()),
                **extra,
            )
        return loss

    # ------------------------------------------------------------------------------------------
    # logging
    # ------------------------------------------------------------------------------------------

    def _record(self, prefix: str, **values: float) -> None:
        for name, value in values.items():
            self._metrics[f"{prefix}/{name}" if prefix else name].append(value)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the rollout and loss metrics (means since the last log, over ranks) to a training log.
        EGPO logs once per update: a log falling between its half and full step is deferred."""
        if "loss" in logs and not self._is_update_step:
            return
        if "loss" in logs and self._metrics:
            names = sorted(self._metrics)
            means = torch.tensor([sum(self._metrics[k]) / len(self._metrics[k]) for k in names], device=self.args.device)
            means = self.accelerator.gather(means[None]).mean(dim=0) if self.accelerator.num_processes > 1 else means
            merged = dict(zip(names, means.tolist()))
            tokens = sum(self._metrics["generation/new_tokens"])
            seconds = sum(self._metrics["generation/seconds"])
            merged.pop("generation/new_tokens", None)
            if seconds > 0:
                merged["generation/tokens_per_second"] = tokens / seconds
            if "loss" in merged:
                logs["loss"] = merged.pop("loss")  # the update's loss (EGPO: the full step's)
            now, updates = time.perf_counter(), self.updates
            last_time, last_updates = self._last_log
            if updates > last_updates:
                merged["seconds_per_update"] = (now - last_time) / (updates - last_updates)
            self._last_log = (now, updates)
            logs.update(merged)
            logs["update"] = updates
            self._metrics.clear()
        # the log's step and epoch, and what TensorBoard and the other reporters see, count updates
        state, self.state = self.state, self.state_in_updates()
        try:
            super().log(logs, start_time)
        finally:
            self.state = state

    # ------------------------------------------------------------------------------------------
    # checkpoints: EGPO's snapshot travels with them
    # ------------------------------------------------------------------------------------------

    def _state_file(self, folder: str | Path) -> Path:
        return Path(folder) / EXTRAGRADIENT_STATE.format(rank=self.args.process_index)

    def save_checkpoint_extras(self, folder: Path) -> None:
        """EGPO's phase and snapshot, and (saving process) the judge's identity, into the checkpoint while
        it is still hidden (part of its rename)."""
        if self.extragradient is not None:
            torch.save(self.extragradient.state_dict(), self._state_file(folder))
        if self.args.should_save:
            (folder / JUDGE_IDENTITY).write_text(json.dumps(self._judge_identity(), indent=2, sort_keys=True) + "\n")

    def _judge_identity(self) -> dict[str, Any]:
        """The judge by content (:func:`~lm_runs.judges.base.judge_identity`), as JSON reads it back; asked
        once. On the saving process only: under ``--judge_gather`` the other ranks hold no judge."""
        if self._judge_identity_cache is None:
            self._judge_identity_cache = json.loads(json.dumps(judge_identity(self.judge), default=str))
        return self._judge_identity_cache

    def _check_the_judge_is_unchanged(self, checkpoint: Path) -> None:
        """Refuse, on every rank at once, to resume ``checkpoint`` with another judge than the one it was
        trained with (its :data:`JUDGE_IDENTITY`): the resumed updates would follow another preference, and
        the run would mix two experiments under one name. The saving process compares (a checkpoint
        without the file, from an earlier egpo, resumes with a warning); the others hear its verdict."""
        problem = None
        if self.args.should_save:
            saved = checkpoint / JUDGE_IDENTITY
            if not saved.is_file():
                logger.warning("%s names no judge (%s is missing): the judge cannot be checked against the one it was trained with",
                               checkpoint, JUDGE_IDENTITY)
            else:
                changes = identity_changes(json.loads(saved.read_text()), self._judge_identity())
                if changes:
                    shown = "; ".join(changes[:3]) + ("; …" if len(changes) > 3 else "")
                    problem = (f"--resume_from_checkpoint {checkpoint}: it was trained with another judge ({shown}); "
                               "resume with the judge it was trained with, or start a new run (another --output_dir, "
                               "or --overwrite_output_dir true)")
        problem = self._main_process_says(problem)
        if problem is not None:
            raise UsageError(problem)

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """As ``Trainer.train`` (``True``: the newest complete checkpoint in ``output_dir``); with EGPO,
        also reload the snapshot and phase of the checkpoint."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = latest_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise UsageError(f"--resume_from_checkpoint true: no complete checkpoint in {self.args.output_dir}")
        if resume_from_checkpoint and not Path(resume_from_checkpoint).is_dir():
            raise UsageError(f"--resume_from_checkpoint: no such checkpoint folder: {resume_from_checkpoint}")
        if self.args.should_save:  # asked now, while the judge answers: a checkpoint saved after it failed names it too
            self._judge_identity()
        if resume_from_checkpoint:
            self._check_the_judge_is_unchanged(Path(resume_from_checkpoint))
        if resume_from_checkpoint and self.extragradient is not None:
            path = self._state_file(resume_from_checkpoint)
            if not path.is_file():
                raise UsageError(f"{resume_from_checkpoint} has no {path.name}: not a checkpoint of an EGPO run")
            self.extragradient.load_state_dict(torch.load(path, map_location="cpu", weights_only=False), device=self.args.device)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
