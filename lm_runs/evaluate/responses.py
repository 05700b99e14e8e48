"""The responses: K samples per prompt from every model, seeded per batch so a rerun continues exactly.

:func:`generate_responses` draws batch c of a model with a generator seeded by hash(seed, stream, c),
where the stream names the model by content (:func:`~lm_runs.evaluate.settings.sampling_stream`).
Models are loaded by :func:`lm_runs.models.load_causal_lm`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ..generation import generate_completions
from .settings import EvaluationError, EvaluationSettings, derive_seed

__all__ = ["generate_responses", "policy_device"]


def policy_device(settings: EvaluationSettings) -> str:
    """``settings.device``, else cuda when available, else cpu."""
    if settings.device:
        return settings.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids of the tokenizer and of the model's generation config (chat models often have two)."""
    ids: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)
    if not ids:
        raise EvaluationError("the tokenizer has no EOS token: responses could never end")
    return ids


def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    settings: EvaluationSettings,
    *,
    model_name: str,
    stream: str | None = None,
    done: Mapping[tuple[int, int], Mapping[str, Any]] | None = None,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """K responses per prompt: records ``{"prompt": i, "sample": j, "text", "truncated", "num_tokens"}``
    ordered by (i, j).

    Prompts go in batches of ``settings.prompts_per_batch`` consecutive prompts × K rows; batch c
    (prompts c·P … c·P + P − 1) is drawn with a generator seeded by hash(seed, stream, c) (``stream``
    defaults to ``model_name``), so a record depends only on (settings, stream, i, j): two copies of a
    model given the same stream draw the same responses. Batches whose records are all in ``done`` are
    skipped (resumption); ``on_batch`` receives the records so far after each new batch.
    """
    import torch
    from tqdm.auto import tqdm

    from ..data import PromptCollator

    collator = PromptCollator(tokenizer, settings.max_prompt_length)
    eos = _eos_ids(model, tokenizer)
    params = settings.sampling()
    K, P = settings.samples_per_prompt, settings.prompts_per_batch
    device = next(model.parameters()).device
    records: dict[tuple[int, int], dict[str, Any]] = {k: dict(v) for k, v in (done or {}).items()}
    starts = list(range(0, len(prompts), P))
    todo = [s for s in starts if not all((i, j) in records for i in range(s, min(s + P, len(prompts))) for j in range(K))]
    for start in tqdm(todo, desc=f"generate {model_name}", disable=not progress, leave=False):
        indices = list(range(start, min(start + P, len(prompts))))
        batch = collator([{"prompt": prompts[i]} for i in indices for _ in range(K)])
        generator = torch.Generator().manual_seed(derive_seed(settings.seed, "generate", stream or model_name, start // P))
        out = generate_completions(
            model,
            batch["prompt_ids"].to(device),
            batch["prompt_mask"].to(device),
            params,
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=collator.pad_token_id,
            generator=generator,
        )
        texts = tokenizer.batch_decode(out.ids, skip_special_tokens=True)
        lengths = out.lengths.tolist()
        truncated = out.truncated.tolist()
        for row, (i, j) in enumerate((i, j) for i in indices for j in range(K)):
            records[(i, j)] = {
                "prompt": i,
                "sample": j,
                "text": texts[row],
                "truncated": bool(truncated[row]),
                "num_tokens": int(lengths[row]),
            }
        if on_batch is not None:
            on_batch([records[k] for k in sorted(records)])
    return [records[k] for k in sorted(records)]
