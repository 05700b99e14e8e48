"""The responses: K samples per prompt from every model, seeded per batch so a rerun continues exactly.

:func:`generate_responses` draws batch c of model m with a generator seeded by hash(seed, m, c);
:func:`load_causal_lm` loads a model folder (full weights, or a LoRA adapter merged into its base).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..generation import generate_completions
from .settings import EvaluationError, EvaluationSettings, derive_seed

__all__ = ["load_causal_lm", "generate_responses", "policy_device"]


def policy_device(settings: EvaluationSettings) -> str:
    """``settings.device``, else cuda when available, else cpu."""
    if settings.device:
        return settings.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_causal_lm(source: str | Path, *, reference: str | Path | None = None, device: str = "cpu", dtype: str | None = None):
    """(model, tokenizer) from a directory: a full model, or a LoRA adapter folder applied to its
    ``base_model_name_or_path`` when that is a local directory and to ``reference`` (π_ref, which is
    the base of a LoRA run) otherwise, then merged. The tokenizer is the folder's, else ``reference``'s."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(source)
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    adapter = source / "adapter_config.json"
    if adapter.is_file():
        from peft import PeftModel

        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        base_dir = Path(base) if base and Path(base).is_dir() else (Path(reference) if reference is not None else None)
        if base_dir is None:
            raise EvaluationError(f"{source}: a LoRA adapter whose base {base!r} is not a local directory, and no reference")
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, **kwargs), source)
        model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    has_tokenizer = any((source / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
    if not has_tokenizer and reference is None:
        raise EvaluationError(f"{source}: no tokenizer files and no reference to take them from")
    tokenizer = AutoTokenizer.from_pretrained(source if has_tokenizer else reference)
    model.to(device)
    model.eval()
    return model, tokenizer


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
    done: Mapping[tuple[int, int], Mapping[str, Any]] | None = None,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """K responses per prompt: records ``{"prompt": i, "sample": j, "text", "truncated", "num_tokens"}``
    ordered by (i, j).

    Prompts go in batches of ``settings.prompts_per_batch`` consecutive prompts × K rows; batch c
    (prompts c·P … c·P + P − 1) is drawn with a generator seeded by hash(seed, model_name, c), so a
    record depends only on (settings, model, i, j). Batches whose records are all in ``done`` are
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
        generator = torch.Generator().manual_seed(derive_seed(settings.seed, "generate", model_name, start // P))
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
