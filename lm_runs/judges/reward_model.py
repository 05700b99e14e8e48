"""A scalar Bradley–Terry reward model (a sequence classifier with 1 label) as a pairwise judge.

The model reads one response at a time and gives it a reward r(x, y) (its single logit, read at the
last token). A pair is judged by the Bradley–Terry model with temperature τ > 0 (default 1):

    P(a ≻ b | x) = σ((r(x, a) − r(x, b)) / τ),      σ(z) = 1 / (1 + e^(−z)),

so P(a ≻ b) + P(b ≻ a) = 1 exactly: the order a pair is shown in cannot matter (there is no order),
and the judge does not shuffle. Each call scores every distinct (prompt, response) text once, in
batched forward passes, then forms the pair probabilities from the scores: a batch of n pairs costs
at most 2n scored texts, fewer when responses repeat (a response compared with several others).

How each judge kind renders its input (a judge is given prompts as strings: a message-list prompt
reaches it as :func:`lm_runs.data.prompt_text`, the text of its system and user turns, in training,
evaluation and ``train_reward_model`` alike):

* the pairwise preference model (2 labels) reads one text per pair,
  :func:`lm_runs.judges.pair_format.render_pair` (``Prompt: …`` / ``Response 0: …`` / ``Response 1: …``
  / the question), tokenized with the tokenizer's special tokens (``add_special_tokens=True``);
* the reward model (1 label) reads one text per response, :func:`render_response`: with a chat
  template in its tokenizer (the one it was trained with, saved beside it), the conversation
  ``[user: prompt, assistant: response]`` rendered by ``apply_chat_template`` (no generation prompt:
  the response is the last turn) and tokenized without
  adding special tokens (the template writes its own); without a template, ``Prompt: {prompt}`` and
  ``Response: {response}`` in the preference model's layout, tokenized as the preference model's
  text is. ``python -m lm_runs.train_reward_model`` renders its pairs with the same function, so a
  model is queried as it was trained.

Texts over ``max_length`` tokens are cut on the tokenizer's ``truncation_side`` (the right by default,
losing the end of the response), as the preference model cuts its pair text.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..models import folder_digest, load_reward_model
from .base import check_pairs
from .preference_model import PreferenceModelJudge, classifier_outputs

__all__ = ["RewardModelJudge", "render_response", "encode_response", "bradley_terry", "scorer_of"]


def render_response(tokenizer: Any, prompt: str, response: str) -> tuple[str, bool]:
    """``(text, templated)``: what a reward model with ``tokenizer`` reads for ``response`` to ``prompt``
    (see the module docstring), and whether the chat template rendered it."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False), True
    return f"Prompt: {prompt}\n\nResponse: {response}", False


def encode_response(tokenizer: Any, prompt: str, response: str, max_length: int | None = None) -> list[int]:
    """Token ids of :func:`render_response`: a templated text without added special tokens, a plain one
    with them; cut to ``max_length`` tokens when given (``truncation=True``)."""
    text, templated = render_response(tokenizer, prompt, response)
    cut = {"truncation": True, "max_length": max_length} if max_length is not None else {}
    return list(tokenizer(text, add_special_tokens=not templated, **cut)["input_ids"])


def bradley_terry(reward_a: float, reward_b: float, temperature: float = 1.0) -> float:
    """σ((reward_a − reward_b) / temperature), computed without overflow for any finite rewards."""
    z = (reward_a - reward_b) / temperature
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def scorer_of(judge: Any) -> Any | None:
    """The scalar reward model behind ``judge`` (a :class:`~lm_runs.judges.base.CheckedJudge` or a bare
    judge), or None: its inner judge when that says it ``scores_responses()`` — a :class:`RewardModelJudge`,
    or an :class:`~lm_runs.judges.http.HTTPJudge` whose server serves one. A scorer has
    ``rewards(prompts, responses) -> [r, ...]``, ``temperature`` (τ of P(a ≻ b) = σ((r_a − r_b)/τ)) and
    ``batch_size`` (responses per call worth sending at once); its pair answers are formed from the rewards."""
    inner = getattr(judge, "inner", judge)
    says = getattr(inner, "scores_responses", None)
    return inner if callable(says) and says() else None


class RewardModelJudge:
    """Load a 1-label ``AutoModelForSequenceClassification`` + tokenizer from ``path``
    (:func:`lm_runs.models.load_reward_model`, which refuses any other kind) and judge pairs with it
    (see the module docstring).

    * ``temperature``: τ > 0 of P(a ≻ b) = σ((r(a) − r(b))/τ).
    * ``device``: ``None`` picks CUDA when available, else CPU.
    * ``batch_size``: texts (responses) per forward pass, sorted by token length and padded on the right
      (:func:`~lm_runs.judges.preference_model.classifier_outputs`).
    * ``max_length``: token limit per rendered response, capped by the model's position limit.

    ``scored_texts`` counts the texts scored so far (tests and benchmarks read it).
    """

    kind = "reward_model"
    #: No order to shuffle: P(a ≻ b) + P(b ≻ a) = 1 by construction.
    shuffles_order = False
    #: The files that decide the answers: the preference model's, and a chat template saved on its own.
    CONTENT_FILES = PreferenceModelJudge.CONTENT_FILES + ("chat_template*",)

    def __init__(
        self,
        path: str | Path,
        *,
        temperature: float = 1.0,
        device: str | None = None,
        batch_size: int = 16,
        max_length: int = 1024,
        dtype: str | None = None,
    ) -> None:
        import torch

        path = Path(path)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"reward model temperature must be a finite number > 0, got {temperature!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.path = path
        self.name = path.resolve().name
        self.temperature = float(temperature)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.scored_texts = 0
        self.model, self.tokenizer = load_reward_model(path, dtype=dtype)
        self.pad_token_id = self.model.config.pad_token_id
        self.templated = bool(getattr(self.tokenizer, "chat_template", None))
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if isinstance(limit, int) and limit > 0 else max_length
        self.model.to(self.device)

    def scores_responses(self) -> bool:
        """True: a reward model answers pairs from one score per response (see :func:`scorer_of`)."""
        return True

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """r(prompts[i], responses[i]) for each i, each distinct (prompt, response) scored once."""
        keys = list(zip(prompts, responses))
        distinct = list(dict.fromkeys(keys))
        ids = [encode_response(self.tokenizer, prompt, response, self.max_length) for prompt, response in distinct]
        scores = classifier_outputs(
            self.model,
            ids,
            batch_size=self.batch_size,
            pad_token_id=self.pad_token_id,
            device=self.device,
            read=lambda logits: logits.float()[:, 0].cpu().tolist(),
        )
        self.scored_texts += len(distinct)
        by_key = dict(zip(distinct, scores))
        return [by_key[key] for key in keys]

    def __call__(self, prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> list[float]:
        """P(completions[i][0] ≻ completions[i][1] | prompts[i]) = σ((r(a) − r(b))/τ) for each i."""
        prompts, completions = check_pairs(prompts, completions)
        n = len(prompts)
        rewards = self.rewards(prompts + prompts, [a for a, _ in completions] + [b for _, b in completions])
        return [bradley_terry(rewards[i], rewards[n + i], self.temperature) for i in range(n)]

    def identity(self) -> dict[str, Any]:
        """The judge by content: the SHA-256 of each of its :data:`CONTENT_FILES`
        (:func:`lm_runs.models.folder_digest`), the temperature and the token limit."""
        files = folder_digest(self.path, self.CONTENT_FILES)
        return {"kind": self.kind, "files": files, "temperature": self.temperature, "max_length": self.max_length}

    def __repr__(self) -> str:
        return f"RewardModelJudge({str(self.path)!r}, temperature={self.temperature}, device={str(self.device)!r})"
