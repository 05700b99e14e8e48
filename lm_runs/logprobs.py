"""Sequence log-probabilities log π(y | x) of completions under a causal LM, with gradients.

    log π(y | x) = Σ_t m_t · log softmax(z_{P+t−1})[y_t]

where z_i are the logits at position i of the concatenation [x; y] (x left-padded to P columns, y
right-padded with mask m), so z_{P+t−1} is the prediction of completion token y_t. With
``average=True`` the sum is divided by Σ_t m_t (the length-normalised log-probability).
"""

from __future__ import annotations

import torch

from lm_runs.generation import ReferenceModel, _accepts_kwarg, position_ids_from_mask

__all__ = ["completion_logprobs"]


def _check_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask) -> None:
    if prompt_ids.dim() != 2 or prompt_ids.shape != prompt_mask.shape:
        raise ValueError(
            f"prompt_ids and prompt_mask must be (B, P) of the same shape, got {tuple(prompt_ids.shape)} "
            f"and {tuple(prompt_mask.shape)}"
        )
    if completion_ids.dim() != 2 or completion_ids.shape != completion_mask.shape:
        raise ValueError(
            f"completion_ids and completion_mask must be (B, T) of the same shape, got "
            f"{tuple(completion_ids.shape)} and {tuple(completion_mask.shape)}"
        )
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(f"{prompt_ids.shape[0]} prompt rows but {completion_ids.shape[0]} completion rows")
    if prompt_ids.shape[1] == 0 or completion_ids.shape[1] == 0:
        raise ValueError(
            f"prompt and completion need at least one column, got P={prompt_ids.shape[1]}, T={completion_ids.shape[1]}"
        )
    right_padded = (prompt_mask[:, -1] == 0).nonzero().flatten().tolist()
    if right_padded:
        raise ValueError(
            f"prompts must be left-padded (mask 1 in the last column); rows {right_padded} end with padding"
        )


def completion_logprobs(
    model: torch.nn.Module | ReferenceModel,
    prompt_ids: torch.LongTensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.LongTensor,
    completion_mask: torch.Tensor,
    *,
    average: bool = False,
) -> torch.Tensor:
    """(B,) float32 log π(completion | prompt), summed (or averaged) over completion_mask.

    One forward pass over [prompt; completion] with attention mask [prompt_mask; completion_mask] and
    position ids cumsum(mask) − 1 (right for left-padded prompts). Only the T logits that predict
    completion tokens are taken (``logits_to_keep=T+1`` where the model supports it, so the model never
    materialises B×(P+T)×V logits), cast to float32, and

        log p_t = z_t[y_t] − logsumexp_v z_t[v]

    (= log_softmax gathered at y_t, without keeping a second B×T×V tensor), then Σ_t m_t log p_t, divided
    by max(Σ_t m_t, 1) when ``average`` is True.

    Gradients flow to the model's parameters; the model's train/eval mode is left as the caller set it.
    A :class:`~lm_runs.generation.ReferenceModel` is evaluated through ``as_module()`` (no gradient, eval
    mode, the adapter disabled for a shared peft policy). Under bf16 autocast or with bf16 weights the
    result is still float32.
    """
    if isinstance(model, ReferenceModel):
        with model.as_module() as module:
            return completion_logprobs(
                module, prompt_ids, prompt_mask, completion_ids, completion_mask, average=average
            )
    _check_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask)
    T = completion_ids.shape[1]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    # Completion padding is on the right, after every real token: causal attention never sees it.
    attention_mask = torch.cat([prompt_mask.long(), completion_mask.long()], dim=1)
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    if _accepts_kwarg(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = T + 1  # positions P−1 .. P+T−1; the last predicts past the completion
    logits = model(**kwargs).logits
    logits = logits[:, -(T + 1):-1]  # (B, T, V): position P+t−1 predicts completion token t
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.float()
        token_logits = logits.gather(-1, completion_ids[:, :, None]).squeeze(-1)
        token_logp = token_logits - torch.logsumexp(logits, dim=-1)
        mask = completion_mask.to(token_logp.dtype)
        total = (token_logp * mask).sum(-1)
        if average:
            total = total / mask.sum(-1).clamp_min(1.0)
    return total
