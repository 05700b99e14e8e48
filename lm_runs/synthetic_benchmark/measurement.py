"""Exact measurement of a language model's class distribution, and the Trainer callback that records it.

Measurements (per evaluation point, averaged over the evaluation prompts; update 0 = π_ref)
----------------------------------------------------------------------------------------------
``duality_gap``        Gap_β^class(p_θ)  = 2β KL(p_θ ‖ softmax(log r + M p_θ / β))   (exact)
``exploitability``     max_c (M p_θ)_c − ½                                          (exact)
``kl_to_equilibrium``  KL(q* ‖ p_θ)                                                  (exact)
``conditional_kl``     Σ_c p_θ(c) KL(π_θ(·|c) ‖ π_ref(·|c)), sampled: the mean over y ~ π_θ of
                       log π_θ(y)/π_ref(y) − log p_θ(c(y))/r(c(y)), whose expectation it is;
                       ``conditional_kl_se`` its standard error over the samples.

Evaluation runs in a ``TrainerCallback`` (:class:`ExactEvaluation`) after every ``eval_every`` updates (EGPO: after the full
step), one forward pass over the evaluation prompts (plus the samples for the conditional KL). The round
methods (``lm_runs.rounds``: one Trainer per round, its step count restarting at 0) are measured by
:class:`RoundEvaluation`, the same measurement at update 0 and at the round ends, their ``update`` the
cumulative optimizer-step count u = Σ_{rounds so far} (steps of the round, ONPO: of both its phases).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from transformers import TrainerCallback

from .game import ClassGame, check_classes, text_class

__all__ = ["token_classes", "encode_prompts", "class_log_probs", "conditional_kl_estimate", "ExactEvaluation", "RoundEvaluation"]


def token_classes(tokenizer, num_classes: int) -> np.ndarray:
    """(V,) int64: token t → class of the first character of ``decode([t])``; special tokens → 0.

    Equals ``text_class(decode(ids, skip_special_tokens=True))`` for every response starting with t
    (see ``game``'s module docstring; ``tests/test_synthetic_benchmark.py`` checks it over the vocabulary).
    """
    K = check_classes(num_classes)
    special = set(tokenizer.all_special_ids)
    out = np.zeros(len(tokenizer), dtype=np.int64)
    for t in range(len(tokenizer)):
        if t not in special:
            out[t] = text_class(tokenizer.decode([t], skip_special_tokens=False), K)
    return out



def encode_prompts(tokenizer, prompts: Sequence[str]):
    """Left-padded (prompt_ids, prompt_mask) exactly as the trainer conditions the policy
    (``lm_runs.data.PromptCollator``: chat template with the generation prompt)."""
    from lm_runs.data import PromptCollator

    batch = PromptCollator(tokenizer)([{"prompt": x} for x in prompts])
    return batch["prompt_ids"], batch["prompt_mask"]


def class_log_probs(model, prompt_ids, prompt_mask, token_class: np.ndarray, num_classes: int, logit_bias=None) -> np.ndarray:
    """(n, K) float64 log p_θ(c | x) = logsumexp_{t ∈ class c} log π_θ(t | x), first-token log-probs
    from one forward pass (position ids cumsum(mask) − 1, as generation uses). ``logit_bias`` (V,)
    is added to the first-token logits (for tests: a policy whose first-token distribution is tilted)."""
    import torch

    from lm_runs.generation import position_ids_from_mask

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask), use_cache=False)
    finally:
        model.train(was_training)
    logits = out.logits[:, -1].double()
    if logits.shape[-1] != len(token_class):
        raise ValueError(f"the model has {logits.shape[-1]} logits, token_class covers {len(token_class)} tokens")
    if logit_bias is not None:
        logits = logits + torch.as_tensor(logit_bias, dtype=torch.float64)
    logp = logits.log_softmax(-1)
    cls = torch.as_tensor(token_class)
    columns = []
    for c in range(num_classes):
        members = (cls == c).nonzero().flatten()
        columns.append(torch.logsumexp(logp[:, members], -1) if members.numel() else torch.full((logp.shape[0],), -math.inf, dtype=torch.float64))
    return torch.stack(columns, -1).numpy()


def conditional_kl_estimate(
    policy, reference, tokenizer, prompt_ids, prompt_mask, token_class: np.ndarray,
    logp: np.ndarray, ref_logp: np.ndarray, *, samples: int, max_new_tokens: int, seed: int,
) -> tuple[float, float]:
    """Sampled E_x Σ_c p(c) KL(π(·|x,c) ‖ π_ref(·|x,c)) with its standard error.

    y ~ π_θ(· | x) at temperature 1 (``samples`` per prompt, a seeded generator that leaves the global
    RNG alone); per sample d = log π_θ(y|x) − log π_ref(y|x) − [log p(c(y)|x) − log r(c(y)|x)]
    (summed log-probabilities, EOS included), E[d] = the expected conditional KL. Returns (mean, se).
    """
    import torch

    from lm_runs.generation import SamplingParams, generate_completions
    from lm_runs.logprobs import completion_logprobs

    n = prompt_ids.shape[0]
    ids = prompt_ids.repeat_interleave(samples, 0)
    mask = prompt_mask.repeat_interleave(samples, 0)
    gen = torch.Generator().manual_seed(int(seed))
    sampled = generate_completions(
        policy, ids, mask, SamplingParams(), max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, generator=gen,
    )
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            lp = completion_logprobs(policy, ids, mask, sampled.ids, sampled.mask).double().numpy()
            lr = completion_logprobs(reference, ids, mask, sampled.ids, sampled.mask).double().numpy()
    finally:
        policy.train(was_training)
    first = token_class[sampled.ids[:, 0].numpy()]
    row = np.repeat(np.arange(n), samples)
    d = lp - lr - (logp[row, first] - ref_logp[row, first])
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), se



class ExactEvaluation(TrainerCallback):
    """A ``TrainerCallback`` recording the class metrics at update 0 (train begin) and after every
    ``eval_every`` updates and the last (an EGPO update ends on an even optimizer step)."""

    def __init__(
        self, game: ClassGame, tokenizer, token_class: np.ndarray, num_classes: int, *,
        eval_every: int, max_updates: int, steps_per_update: int, reference=None,
        kl_samples: int = 0, max_new_tokens: int = 4, seed: int = 0, progress: Callable[[int], None] | None = None,
    ):
        self.game = game
        self.tokenizer = tokenizer
        self.token_class = token_class
        self.num_classes = num_classes
        self.eval_every = eval_every
        self.max_updates = max_updates
        self.steps_per_update = steps_per_update
        self.reference = reference
        self.kl_samples = kl_samples
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.progress = progress
        self.prompt_ids, self.prompt_mask = encode_prompts(tokenizer, game.prompts)
        self.records: list[dict[str, Any]] = []
        self.class_probs: dict[int, np.ndarray] = {}
        self._last = -1

    def evaluate(self, model, update: int) -> None:
        logp = class_log_probs(model, self.prompt_ids, self.prompt_mask, self.token_class, self.num_classes)
        values = self.game.metrics(logp)
        if self.kl_samples > 0 and self.reference is not None:
            mean, se = conditional_kl_estimate(
                model, self.reference, self.tokenizer, self.prompt_ids, self.prompt_mask, self.token_class,
                logp, self.game.ref_logp, samples=self.kl_samples, max_new_tokens=self.max_new_tokens,
                seed=self.seed * 100003 + update,
            )
            values["conditional_kl"] = mean
            values["conditional_kl_se"] = se
        self.class_probs[update] = np.exp(logp)
        for name, value in values.items():
            self.records.append({"update": update, "metric": name, "value": value})
        self._last = update

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0 and self._last < 0:
            self.evaluate(model, 0)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.steps_per_update:
            return control  # EGPO between its half and its full step
        update = state.global_step // self.steps_per_update
        if self.progress is not None:
            self.progress(1)
        if update != self._last and (update % self.eval_every == 0 or update == self.max_updates):
            self.evaluate(model, update)
        return control


class RoundEvaluation(ExactEvaluation):
    """:class:`ExactEvaluation` for ``lm_runs.rounds.run_rounds`` (given to every round's Trainer, whose events
    carry ``round_phase``): records update 0 at the first phase's start (π_0 = π_ref; ONPO's first phase
    trains π′ from π′_0 = π_0, the same parameters), and at the end of each round's policy phase u = the
    optimizer steps of every phase so far (ONPO's auxiliary phases included), when ``eval_every`` divides u or
    u reaches ``max_updates``. The end of ONPO's auxiliary phase is never measured: the model then holds π′_{t+1},
    not the policy. ``progress`` advances one per optimizer step. ``steps_per_update`` is 1 (an update of a round
    method is one optimizer step)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, steps_per_update=1, **kwargs)
        self.done = 0  # optimizer steps of the finished phases

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.progress is not None:
            self.progress(1)
        return control

    def on_train_end(self, args, state, control, model=None, *, round_phase: str, **kwargs):
        self.done += state.global_step
        if round_phase == "policy" and self.done != self._last and (self.done % self.eval_every == 0 or self.done >= self.max_updates):
            self.evaluate(model, self.done)
        return control
