"""A pairwise preference model (2-label sequence classifier) as a judge.

The model reads :func:`~lm_runs.judges.pair_format.render_pair` (prompt, first, second) and
P(first ≻ second) = softmax(logits)[FIRST_IS_BETTER]. With ``shuffle_order`` each pair is shown in
a random order (:func:`~lm_runs.judges.base.shown_flipped`: a seeded coin per pair, so a resumed run
or a retried request sees the same order) and the answer un-flipped:

    P(a ≻ b) = p(render(a, b))          when shown as (a, b),
    P(a ≻ b) = 1 − p(render(b, a))      when shown as (b, a),

so the result is always P(original a ≻ original b) and position bias averages out over pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ..models import folder_digest
from .base import check_pairs, shown_flipped
from .pair_format import FIRST_IS_BETTER, render_pair

__all__ = ["PreferenceModelJudge", "classifier_outputs"]


def classifier_outputs(
    model: Any,
    ids: Sequence[Sequence[int]],
    *,
    batch_size: int,
    pad_token_id: int,
    device: Any,
    read: Callable[[Any], list[Any]],
) -> list[Any]:
    """One value per token-id sequence, in input order: the sequences sorted by length (longest first),
    cut into micro-batches of ``batch_size``, each padded on the right with ``pad_token_id`` (the
    attention mask hiding the padding) and run through ``model`` under ``torch.inference_mode``;
    ``read(logits)`` turns a micro-batch's (B, num_labels) logits into B values. The forward loop of
    every classifier judge (the preference model, the reward model)."""
    import torch

    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    out: list[Any] = [None] * len(ids)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                input_ids[r, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                mask[r, : len(ids[i])] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            for r, value in zip(rows, read(logits)):
                out[r] = value
    return out


class PreferenceModelJudge:
    """Load ``AutoModelForSequenceClassification`` + tokenizer from ``path`` and judge pairs with it.

    * ``device``: ``None`` picks CUDA when available, else CPU.
    * ``batch_size``: sequences per forward pass; pairs are sorted by token length (longest first)
      and padded on the right within a micro-batch, the attention mask hiding the padding.
    * ``max_length``: token limit per rendered pair, capped by the model's position limit.
      Longer texts are cut with the tokenizer's ``truncation=True`` (on its ``truncation_side``,
      the right by default: the question and possibly the second response are lost), so choose
      ``max_length`` above the longest pair you expect.
    * ``shuffle_order``: default for calls that do not pass ``shuffle_order``.
    * ``seed``: seeds the coins that decide the flips (one per pair, from the pair's text).

    ``last_flips`` holds, after each call, which pairs were shown as (b, a).
    """

    kind = "preference_model"
    #: The files that decide the model's answers: configuration, weights and tokenizer.
    CONTENT_FILES = ("config.json", "*.safetensors", "pytorch_model*.bin", "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "*.model")

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | None = None,
        batch_size: int = 16,
        max_length: int = 1024,
        shuffle_order: bool = True,
        seed: int = 0,
        dtype: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"preference model directory {str(path)!r} does not exist")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.path = path
        self.name = path.resolve().name
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.shuffle_order = shuffle_order
        self.seed = seed
        self.last_flips: list[bool] = []

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
        self.model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
        if self.model.config.num_labels != 2:
            raise ValueError(f"preference model {str(path)!r} has {self.model.config.num_labels} labels, expected 2")
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        if self.model.config.pad_token_id is None:
            if pad_id is None:
                raise ValueError(f"preference model {str(path)!r}: neither the config nor the tokenizer has a pad token")
            self.model.config.pad_token_id = pad_id
        self.pad_token_id = pad_id if pad_id is not None else self.model.config.pad_token_id
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if isinstance(limit, int) and limit > 0 else max_length
        self.model.to(self.device)
        self.model.eval()

    def first_preferences(self, texts: Sequence[str]) -> list[float]:
        """softmax(logits)[FIRST_IS_BETTER] for each already-rendered pair text, in input order."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True)
        return classifier_outputs(
            self.model,
            encoded["input_ids"],
            batch_size=self.batch_size,
            pad_token_id=self.pad_token_id,
            device=self.device,
            read=lambda logits: logits.float().softmax(dim=-1)[:, FIRST_IS_BETTER].cpu().tolist(),
        )

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], *, shuffle_order: bool | None = None
    ) -> list[float]:
        """P(completions[i][0] ≻ completions[i][1] | prompts[i]) for each i (see the module formula)."""
        prompts, completions = check_pairs(prompts, completions)
        shuffle = self.shuffle_order if shuffle_order is None else bool(shuffle_order)
        flips = [shuffle and shown_flipped(self.seed, prompt, a, b) for prompt, (a, b) in zip(prompts, completions)]
        texts = [
            render_pair(prompt, b, a) if flip else render_pair(prompt, a, b)
            for prompt, (a, b), flip in zip(prompts, completions, flips)
        ]
        shown = self.first_preferences(texts)
        self.last_flips = flips
        return [1.0 - p if flip else p for p, flip in zip(shown, flips)]

    def identity(self) -> dict[str, Any]:
        """The judge by content, not by path: the SHA-256 of each of its :data:`CONTENT_FILES`, by file name
        (:func:`lm_runs.models.folder_digest`), the seed of the order coins and the token limit."""
        files = folder_digest(self.path, self.CONTENT_FILES)
        return {"kind": self.kind, "files": files, "seed": self.seed, "max_length": self.max_length}

    def __repr__(self) -> str:
        return f"PreferenceModelJudge({str(self.path)!r}, device={str(self.device)!r})"
