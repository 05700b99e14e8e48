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

Extragradient (EGPO) as two optimizer steps kept apart by :class:`egpo_core.schemes.ExtragradientState`:
the first window of an update saves θ_t with the optimizer and scheduler state and steps on batch t
(→ θ_{t+½}); the next window generates on batch t+1 at θ_{t+½}, restores θ_t and the state, and steps
from θ_t. The scheduler therefore ticks once per update; a checkpoint between the two steps carries
the snapshot (``extragradient_state_rank{R}.pt``) and resumes into the full step.

Generation and judging run once per accumulation window, at its first micro-batch (after the Trainer
has restored the RNG state on resume), for all of the window's micro-batches.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from egpo_core.losses import (
    ipo_regression_loss,
    policy_gradient_advantage,
    policy_gradient_loss,
    regression_target,
)
from egpo_core.schemes import ExtragradientState

from .config import NLHFConfig
from .data import PromptCollator, prompt_text
from .generation import Completions, ReferenceModel, generate_completions, generate_mixture
from .logprobs import completion_logprobs
from .optimizer_state import TrainerOptimizerStateIO

__all__ = ["NLHFTrainer", "EXTRAGRADIENT_STATE"]

#: Per-rank file in a checkpoint folder holding EGPO's phase and snapshot.
EXTRAGRADIENT_STATE = "extragradient_state_rank{rank}.pt"


class _Window:
    """The prompt batches of one accumulation window, and their rollouts once generated."""

    def __init__(self, batches: list[dict]):
        self.batches = batches
        self.rollouts: list[dict] | None = None


class _EpochModels(TrainerCallback):
    """Saves the model into ``output_dir/epochs/epoch-{k}`` after every epoch of *updates* (EGPO's
    epoch k is after 2k passes over the prompts), so the evaluation can enumerate them."""

    def __init__(self, trainer: "NLHFTrainer"):
        self.trainer = trainer

    def on_epoch_end(self, args, state, control, **kwargs):
        passes = round(state.epoch or 0)
        per_update = args.steps_per_update
        complete = abs((state.epoch or 0) - passes) < 1e-6  # not a run stopped mid-epoch by max_steps
        if complete and passes > 0 and passes % per_update == 0:
            self.trainer.save_model(os.path.join(args.output_dir, "epochs", f"epoch-{passes // per_update}"))
        return control


def _rows(completions: Completions, start: int, stop: int) -> Completions:
    """Rows start:stop of a batch of completions (one role of a joint generate call)."""
    return Completions(completions.ids[start:stop], completions.mask[start:stop], completions.truncated[start:stop])


def _pad_cat(parts: Sequence[Completions], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Completions of several roles stacked row-wise, right-padded to one length."""
    width = max(part.ids.shape[1] for part in parts)
    padded = [part.padded_to(width, pad_token_id) for part in parts]
    return torch.cat([p.ids for p in padded]), torch.cat([p.mask for p in padded])


class NLHFTrainer(Trainer):
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
        # --max_steps / --num_train_epochs count updates; an EGPO update is two optimizer steps
        if args.steps_per_update > 1:
            if args.max_steps > 0:
                args.max_steps *= args.steps_per_update
            else:
                args.num_train_epochs *= args.steps_per_update
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

    @property
    def updates(self) -> int:
        """Completed updates of the algorithm (EGPO: pairs of optimizer steps)."""
        return self.extragradient.updates if self.extragradient is not None else self.state.global_step

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The schedule counts updates: EGPO's restore rolls the scheduler back after its half step."""
        return super().create_scheduler(math.ceil(num_training_steps / self.args.steps_per_update), optimizer)

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
            window.rollouts = self._rollout_window(window.batches)  # generate → judge
        return super().training_step(model, window.rollouts[index], num_items_in_batch)  # → compute_loss → backward

    def _rollout_window(self, batches: list[dict]) -> list[dict]:
        """Rollouts of a window; EGPO: save θ_t before a half step, restore it after generating at θ_{t+½}."""
        state = self.extragradient
        phase = None if state is None else state.phase
        if phase == "half":
            state.save(self.model.parameters(), self.optimizer, self.lr_scheduler)
        rollouts = [self._rollout(batch) for batch in batches]
        if phase == "full":
            state.restore(self.model.parameters(), self.optimizer, self.lr_scheduler)
        return rollouts

    @property
    def _is_update_step(self) -> bool:
        """Whether the current optimizer step completes an update (EGPO: the full step)."""
        return self.extragradient is None or self.extragradient.phase == "half"

    @torch.no_grad()
    def _rollout(self, batch: dict) -> dict:
        """Sample the responses the algorithm needs, judge them and take π_ref's log-probabilities."""
        args, tokenizer = self.args, self.processing_class
        device = args.device
        repeat = args.samples_per_prompt
        prompt_ids = batch["prompt_ids"].to(device).repeat_interleave(repeat, dim=0)
        prompt_mask = batch["prompt_mask"].to(device).repeat_interleave(repeat, dim=0)
        prompts = [prompt_text(p) for p in batch["prompts"] for _ in range(repeat)]
        n = len(prompts)
        terms = self.algorithm.opponent_terms
        policy = self.accelerator.unwrap_model(self.model_wrapped)
        gen = dict(max_new_tokens=args.max_new_tokens, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)

        # 1. generate: every row (y, y′, policy opponents, mixture opponents) side by side in ONE decoding
        #    loop; mixture rows mix in π_ref, the others are plain policy rows (mixture coefficient 0)
        started = time.perf_counter()
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
        opponents: dict[int, Completions] = {k: parts[pair_roles + j] for j, k in enumerate(opponent_terms)}
        generated = time.perf_counter()

        # 2. judge: P(y ≻ z_k), P(y′ ≻ z_k); a "pair" term is P(y ≻ y′) against P(y′ ≻ y′) = ½
        text = lambda c: tokenizer.batch_decode(c.ids, skip_special_tokens=True)  # noqa: E731
        texts = [text(c) for c in responses]
        opponent_texts = {k: text(c) for k, c in opponents.items()}
        queries: list[tuple[int, int]] = []  # (role, term) of each block of n judged pairs
        pairs: list[list[str]] = []
        for k, term in enumerate(terms):
            versus = texts[1] if term.source == "pair" else opponent_texts[k]
            for role in range(pair_roles if term.source != "pair" else 1):
                queries.append((role, k))
                pairs += [[a, b] for a, b in zip(texts[role], versus)]
        judged = torch.tensor(self.judge(prompts * len(queries), pairs), dtype=torch.float32, device=device)
        wins = torch.full((pair_roles, n, len(terms)), 0.5, device=device)
        for block, (role, k) in enumerate(queries):
            wins[role, :, k] = judged[block * n : (block + 1) * n]
        judged_at = time.perf_counter()

        # 3. π_ref's summed log-probabilities of the pair (the reference is frozen: computed once here)
        completion_ids, completion_mask = _pad_cat(responses, tokenizer.pad_token_id)
        twice = lambda t: t.repeat(pair_roles, 1)  # noqa: E731
        with self.reference.as_module() as reference:
            ref_logp = completion_logprobs(reference, twice(prompt_ids), twice(prompt_mask), completion_ids, completion_mask)

        self._record(
            "generation",
            seconds=generated - started,
            judge_seconds=judged_at - generated,
            new_tokens=float(sampled.lengths.sum()),
            mean_length=float(completion_mask.sum(-1).float().mean()),
            truncated_fraction=float(torch.cat([c.truncated for c in responses]).float().mean()),
        )
        return {
            "prompt_ids": twice(prompt_ids),
            "prompt_mask": twice(prompt_mask),
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "ref_logp": ref_logp,
            "wins_y": wins[0],
            "wins_yp": wins[1] if pair_roles > 1 else wins[0],
        }

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
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------
    # checkpoints: EGPO's snapshot travels with them
    # ------------------------------------------------------------------------------------------

    def _state_file(self, folder: str | Path) -> Path:
        return Path(folder) / EXTRAGRADIENT_STATE.format(rank=self.args.process_index)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.extragradient is None:
            return
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        path = self._state_file(folder)
        partial = path.with_suffix(".tmp")
        torch.save(self.extragradient.state_dict(), partial)
        os.replace(partial, path)  # atomic: a killed save never leaves half a snapshot

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """As ``Trainer.train``; with EGPO, also reload the snapshot and phase of the checkpoint."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"--resume_from_checkpoint: no checkpoint in {self.args.output_dir}")
        if resume_from_checkpoint and self.extragradient is not None:
            path = self._state_file(resume_from_checkpoint)
            if not path.is_file():
                raise ValueError(f"{resume_from_checkpoint} has no {path.name}: not a checkpoint of an EGPO run")
            self.extragradient.load_state_dict(torch.load(path, map_location="cpu", weights_only=False), device=self.args.device)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
