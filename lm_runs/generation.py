"""Sampling completions for NLHF: per-row sampling distributions, π_ref, and the geometric mixture.

Three pieces the trainer needs:

* :func:`generate_completions` samples one completion per prompt row, row ``r`` from its own
  :class:`SamplingParams` (temperature, top-k, top-p, min-p), all rows in ONE batched decoding loop
  that draws token for token what ``model.generate`` draws, so that y, y′ and y″ drawn with different
  distributions share one batched decode.
* :class:`ReferenceModel` is π_ref: a separate frozen model, or the policy's own module with its peft
  adapter disabled (no second copy of the weights).
* :func:`generate_mixture` samples from the token-level geometric mixture of Nash-MD,

      log π_c(· | x, y_<t) ∝ (1 − c)·log π(· | x, y_<t) + c·log π_ref(· | x, y_<t),

  with the same decoding loop keeping one KV cache per model; c is per row, so plain policy rows
  (c = 0) and mixture rows are drawn together.

The command-line side of sampling lives here too: :class:`SamplingArguments` (``--temperature
--top_k --top_p --min_p --max_new_tokens``, a mixin for entry points that sample with one distribution)
and :func:`sampling_params`, which builds a :class:`SamplingParams` and names the flag of a bad value
(NLHF training's ``--pair_*`` / ``--opponent_*`` go through it).

Every function takes left-padded prompts (``prompt_mask[:, -1] == 1`` on every row) and returns
:class:`Completions`: generated ids with pad after the first EOS, a mask that is 1 up to and including
the first EOS, and a ``truncated`` flag for rows that never produced EOS.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import transformers
from transformers import DynamicCache

__all__ = [
    "SamplingParams",
    "SamplingArguments",
    "sampling_params",
    "SAMPLING_HELP",
    "Completions",
    "PerRowSampling",
    "ReferenceModel",
    "generate_completions",
    "generate_mixture",
    "position_ids_from_mask",
]


# --------------------------------------------------------------------------------------------------
# Sampling parameters and the per-row logits processor
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingParams:
    """One sampling distribution. temperature > 0; top_k ≥ 0 (0 = off); 0 < top_p ≤ 1; 0 ≤ min_p < 1.

    Applied to next-token logits z in HF ``generate``'s order: z / temperature, then keep the top_k
    largest, then the smallest set of most likely tokens whose probability reaches top_p, then drop
    tokens with probability < min_p · max probability. Each filter keeps at least one token.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        # bool is an int subclass: reject it explicitly, top_k=True is surely a mistake.
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise ValueError(f"temperature must be a number, got temperature={self.temperature!r}")
        if not self.temperature > 0 or self.temperature == float("inf"):
            raise ValueError(f"temperature must be > 0 and finite, got temperature={self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise ValueError(f"top_k must be an int, got top_k={self.top_k!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got top_k={self.top_k!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)):
            raise ValueError(f"top_p must be a number, got top_p={self.top_p!r}")
        if not 0.0 < self.top_p <= 1.0:  # also rejects NaN
            raise ValueError(f"top_p must be in (0, 1], got top_p={self.top_p!r}")
        if isinstance(self.min_p, bool) or not isinstance(self.min_p, (int, float)):
            raise ValueError(f"min_p must be a number, got min_p={self.min_p!r}")
        if not 0.0 <= self.min_p < 1.0:
            raise ValueError(f"min_p must be in [0, 1), got min_p={self.min_p!r}")


def sampling_params(flag_prefix: str, temperature: float, top_k: int, top_p: float, min_p: float) -> SamplingParams:
    """The :class:`SamplingParams` of command-line values; an invalid one is reported under its flag,
    ``--{flag_prefix}{field}`` (``--pair_temperature must be > 0 ...``), as one ``ValueError`` line."""
    try:
        return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    except ValueError as error:  # name the flag, not the dataclass field
        raise ValueError(f"--{flag_prefix}{error}") from None


#: Help texts of the four sampling flags, one home for every entry point that samples.
SAMPLING_HELP = {
    "temperature": "Sampling temperature T > 0: logits are divided by T.",
    "top_k": "Keep the k most likely tokens (0 = off).",
    "top_p": "Nucleus sampling: keep the most likely tokens whose probability reaches top_p, in (0, 1].",
    "min_p": "Drop tokens less likely than min_p × the most likely token's probability, in [0, 1).",
}


@dataclass
class SamplingArguments:
    """The sampling flags of an entry point that draws responses with one distribution
    (``--temperature --top_k --top_p --min_p --max_new_tokens``): a mixin for ``HfArgumentParser``
    dataclasses (subclasses redeclare a field to change its default). Its ``__post_init__`` validates
    (one line naming the flag) and calls the parent's only when there is one. NLHF training samples two
    roles and spells them ``--pair_*`` / ``--opponent_*`` (:class:`lm_runs.config.NLHFConfig`), through
    the same :func:`sampling_params`.
    """

    temperature: float = field(default=1.0, metadata={"help": SAMPLING_HELP["temperature"]})
    """Sampling temperature."""
    top_k: int = field(default=0, metadata={"help": SAMPLING_HELP["top_k"]})
    """Top-k (0 disables)."""
    top_p: float = field(default=1.0, metadata={"help": SAMPLING_HELP["top_p"]})
    """Nucleus threshold."""
    min_p: float = field(default=0.0, metadata={"help": SAMPLING_HELP["min_p"]})
    """Min-p threshold."""
    max_new_tokens: int = field(default=64, metadata={"help": "Maximum new tokens per response (>= 1)."})
    """Maximum new tokens per response."""

    def __post_init__(self) -> None:
        self.sampling  # noqa: B018 - validates, naming the flag
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()

    @property
    def sampling(self) -> SamplingParams:
        """The :class:`SamplingParams` these flags describe."""
        return sampling_params("", self.temperature, self.top_k, self.top_p, self.min_p)


def _broadcast_params(params: SamplingParams | Sequence[SamplingParams], batch: int) -> list[SamplingParams]:
    """One SamplingParams per row: a single one is repeated; a sequence must have one per row."""
    if isinstance(params, SamplingParams):
        return [params] * batch
    params = list(params)
    if len(params) != batch:
        raise ValueError(f"need one SamplingParams per prompt row: got {len(params)} for {batch} rows")
    for i, p in enumerate(params):
        if not isinstance(p, SamplingParams):
            raise TypeError(f"params[{i}] must be a SamplingParams, got {type(p).__name__}")
    return params


class PerRowSampling(transformers.LogitsProcessor):
    """Applies row r's temperature, then top-k, then top-p, then min-p (the order HF's generate uses).

    Row by row this equals HF's ``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``
    and ``MinPLogitsWarper`` (``min_tokens_to_keep=1``, filter value −inf) chained, a filter being
    skipped on rows where it is off (top_k = 0, top_p = 1, min_p = 0), but vectorised over the batch:

    * temperature: z ← z / T_r;
    * top-k: drop z_v < (k_r-th largest z);
    * top-p: sort z ascending, p = softmax, drop tokens whose ascending cumulative probability is
      ≤ 1 − top_p_r (the most likely token is always kept);
    * min-p: p = softmax(z), drop p_v < min_p_r · max_v p_v (the most likely token is always kept).

    ``scores`` must have one row per SamplingParams (and, inside ``generate``, num_return_sequences=1).
    """

    def __init__(self, params: Sequence[SamplingParams], device: torch.device | str | None = None):
        params = list(params)
        if not params:
            raise ValueError("PerRowSampling needs at least one SamplingParams")
        self.params = tuple(params)
        # float32 per-row constants: the scores HF hands to processors are float32.
        self.temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device)
        self.top_k = torch.tensor([p.top_k for p in params], dtype=torch.long, device=device)
        self.top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)
        self.min_p = torch.tensor([p.min_p for p in params], dtype=torch.float32, device=device)
        self._any_temperature = any(p.temperature != 1.0 for p in params)
        self._any_top_k = any(p.top_k > 0 for p in params)
        self._any_top_p = any(p.top_p < 1.0 for p in params)
        self._any_min_p = any(p.min_p > 0.0 for p in params)

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> torch.Tensor:
        if scores.dim() != 2 or scores.shape[0] != len(self.params):
            raise ValueError(
                f"PerRowSampling built for {len(self.params)} rows got scores of shape {tuple(scores.shape)}"
            )
        dev = scores.device
        neg_inf = float("-inf")
        if self._any_temperature:
            scores = scores / self.temperature.to(dev, scores.dtype)[:, None]
        if self._any_top_k:
            vocab = scores.shape[-1]
            k = self.top_k.to(dev).clamp(1, vocab)  # rows with top_k = 0 are re-enabled below as "keep all"
            top_values = torch.topk(scores, int(k.max()), dim=-1).values
            kth = top_values.gather(-1, (k - 1)[:, None])
            remove = (scores < kth) & (self.top_k.to(dev) > 0)[:, None]
            scores = scores.masked_fill(remove, neg_inf)
        if self._any_top_p:
            sorted_logits, sorted_idx = torch.sort(scores, descending=False)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            threshold = (1.0 - self.top_p.double()).to(dev, cum.dtype)[:, None]
            sorted_remove = cum <= threshold
            sorted_remove[:, -1] = False  # the most likely token always stays
            sorted_remove &= (self.top_p.to(dev) < 1.0)[:, None]
            remove = sorted_remove.scatter(1, sorted_idx, sorted_remove)
            scores = scores.masked_fill(remove, neg_inf)
        if self._any_min_p:
            probs = scores.softmax(dim=-1)
            top = probs.amax(dim=-1, keepdim=True)
            remove = probs < self.min_p.to(dev, probs.dtype)[:, None] * top
            remove.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
            scores = scores.masked_fill(remove, neg_inf)
        return scores


# --------------------------------------------------------------------------------------------------
# Completions
# --------------------------------------------------------------------------------------------------


@dataclass
class Completions:
    """Sampled completions of a batch of prompts.

    ids: (B, T) generated tokens; positions after the first EOS hold pad_token_id. T is the number of
        decoding steps actually taken (≤ max_new_tokens: decoding stops once every row has its EOS);
        :meth:`padded_to` pads to a common length.
    mask: (B, T) long, 1 on generated tokens up to AND including the first EOS, 0 after.
    truncated: (B,) bool, True where no EOS was produced within max_new_tokens.
    scores: only with ``output_scores=True``: (B, T, V) float32 log-probabilities of the distribution
        each position was sampled from (after mixing and the sampling filters; −inf on filtered tokens).
    """

    ids: torch.LongTensor
    mask: torch.Tensor
    truncated: torch.BoolTensor
    scores: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.LongTensor:
        """(B,) number of completion tokens (those in mask, the EOS included)."""
        return self.mask.long().sum(-1)

    def padded_to(self, length: int, pad_token_id: int) -> "Completions":
        """The same completions right-padded (ids with pad_token_id, mask with 0) to ``length`` columns."""
        T = self.ids.shape[1]
        if length < T:
            raise ValueError(f"cannot pad {T} generated columns down to length={length}")
        extra = length - T
        ids = torch.nn.functional.pad(self.ids, (0, extra), value=pad_token_id)
        mask = torch.nn.functional.pad(self.mask, (0, extra), value=0)
        scores = None
        if self.scores is not None:
            # Padding positions sample nothing: a point mass on pad keeps every row a distribution.
            pad_rows = torch.full(
                (self.scores.shape[0], extra, self.scores.shape[2]), float("-inf"), dtype=self.scores.dtype,
                device=self.scores.device,
            )
            pad_rows[..., pad_token_id] = 0.0
            scores = torch.cat([self.scores, pad_rows], dim=1)
        return Completions(ids=ids, mask=mask, truncated=self.truncated, scores=scores)


def _eos_tensor(eos_token_id: int | Sequence[int], device: torch.device) -> torch.Tensor:
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(f"eos_token_id must be a non-negative int or a non-empty list of them, got {eos_token_id!r}")
    return torch.tensor(ids, dtype=torch.long, device=device)


def _finalize(tokens: torch.Tensor, eos: torch.Tensor, pad_token_id: int, scores: torch.Tensor | None) -> Completions:
    """Mask up to and including the first EOS, pad after it, flag rows without EOS."""
    T = tokens.shape[1]
    is_eos = torch.isin(tokens, eos)
    has_eos = is_eos.any(dim=-1)
    # argmax returns the first maximal index: the first EOS. Rows without EOS keep all T tokens.
    first = torch.where(has_eos, is_eos.long().argmax(dim=-1), torch.full_like(has_eos, T, dtype=torch.long))
    keep = torch.arange(T, device=tokens.device)[None, :] <= first[:, None]
    ids = tokens.masked_fill(~keep, pad_token_id)
    return Completions(ids=ids, mask=keep.long(), truncated=~has_eos, scores=scores)


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.LongTensor:
    """Positions for left-padded rows: cumsum(mask) − 1 (pad positions, which are masked, get 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def _check_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> None:
    if prompt_ids.dim() != 2 or prompt_ids.shape != prompt_mask.shape:
        raise ValueError(
            f"prompt_ids and prompt_mask must be (B, P) of the same shape, got {tuple(prompt_ids.shape)} "
            f"and {tuple(prompt_mask.shape)}"
        )
    if prompt_ids.shape[0] == 0 or prompt_ids.shape[1] == 0:
        raise ValueError(f"empty prompt batch of shape {tuple(prompt_ids.shape)}")
    right_padded = (prompt_mask[:, -1] == 0).nonzero().flatten().tolist()
    if right_padded:
        raise ValueError(
            f"prompts must be left-padded (mask 1 in the last column); rows {right_padded} end with padding"
        )


def _check_max_new_tokens(max_new_tokens: int) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got max_new_tokens={max_new_tokens!r}")


def _hf_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (the model itself otherwise)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@functools.lru_cache(maxsize=None)
def _forward_parameters(forward_function) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(forward_function).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _accepts_kwarg(model: torch.nn.Module, name: str) -> bool:
    """Whether the transformers model's ``forward`` takes ``name`` (its signature read once per class)."""
    forward = getattr(type(_hf_model(model)), "forward", None)
    return forward is not None and name in _forward_parameters(forward)


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode inside the context; every submodule's own training flag restored after (the caller trains)."""
    training = [m for m in module.modules() if m.training]
    if not training:  # already in eval mode (a frozen reference): nothing to switch or restore
        yield module
        return
    module.eval()
    try:
        yield module
    finally:
        for m in training:
            m.training = True


@contextmanager
def _seeded_global_rng(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """``generate`` samples with the global RNG: seed it from ``generator`` inside a fork, restored after.

    Without a generator the global RNG is used as is (so ``torch.manual_seed`` before the call reproduces it).
    """
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            torch.default_generator.manual_seed(seed)
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield


# --------------------------------------------------------------------------------------------------
# The decoding loop shared by generate_completions and generate_mixture
# --------------------------------------------------------------------------------------------------


def _last_logits(module: torch.nn.Module, input_ids, attention_mask, position_ids, cache, keep_last: bool) -> torch.Tensor:
    """Next-token logits (B, V) in float32 from one cached forward step."""
    kwargs = dict(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
        past_key_values=cache, use_cache=True,
    )
    if keep_last:  # only the last position's logits, never a B×P×V tensor at the prefill
        kwargs["logits_to_keep"] = 1
    return module(**kwargs).logits[:, -1].float()


def _synced_gpus(model: torch.nn.Module) -> bool:
    """Whether every rank must run each forward pass (ZeRO-3 or FSDP shards, several processes), as
    ``generate`` decides it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    try:
        from transformers.distributed.fsdp import is_fsdp_managed_module
    except ImportError:  # older transformers
        from transformers.integrations.fsdp import is_fsdp_managed_module
    return is_deepspeed_zero3_enabled() or is_fsdp_managed_module(_hf_model(model))


def _all_peers_finished(finished_here: bool, device: torch.device) -> bool:
    import torch.distributed as dist

    flag = torch.tensor(0.0 if finished_here else 1.0, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    return flag.item() == 0.0


def _decode(
    next_scores,
    processor: PerRowSampling,
    prompt_ids: torch.LongTensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos: torch.Tensor,
    pad_token_id: int,
    generator: torch.Generator | None,
    output_scores: bool,
    synced_gpus: bool = False,
) -> Completions:
    """Multinomial sampling step by step, as ``generate``'s sampling loop does it.

    ``next_scores(input_ids, attention_mask, position_ids)`` runs the model(s) on the prompts (the
    prefill) or on the (B, 1) new tokens, over their KV caches, and returns (B, V) float32 scores. Each
    step: ``processor`` warps them, one ``torch.multinomial`` draw per row from their softmax
    (``generator``; the global RNG when None), finished rows get pad; a row finishes at its first EOS.
    Decoding ends when every row has finished or after max_new_tokens tokens. With ``synced_gpus``
    (ZeRO-3 / FSDP), a rank whose rows have all finished keeps running forward passes, without
    sampling, until every rank has finished (like ``generate``).
    """
    batch, device = prompt_ids.shape[0], prompt_ids.device
    attention_mask = prompt_mask.long()
    position_ids = position_ids_from_mask(attention_mask)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    step_tokens: list[torch.Tensor] = []
    step_scores: list[torch.Tensor] = []
    finished_here = False

    scores = next_scores(prompt_ids, attention_mask, position_ids)
    tokens = torch.full((batch,), pad_token_id, dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        if not finished_here:
            warped = processor(None, scores)
            tokens = torch.multinomial(warped.softmax(-1), num_samples=1, generator=generator).squeeze(1)
            tokens = tokens.masked_fill(finished, pad_token_id)
            step_tokens.append(tokens)
            if output_scores:
                step_scores.append(warped.log_softmax(-1))
            finished |= torch.isin(tokens, eos)
            finished_here = bool(finished.all())
        if step == max_new_tokens - 1:
            break
        if _all_peers_finished(finished_here, device) if synced_gpus else finished_here:
            break
        # The new token is attended to by every row (finished rows' pads are masked out later by
        # Completions.mask); its position is one past the row's last real position.
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
        position_ids = position_ids[:, -1:] + 1
        scores = next_scores(tokens[:, None], attention_mask, position_ids)

    out_scores = torch.stack(step_scores, dim=1) if output_scores else None
    return _finalize(torch.stack(step_tokens, dim=1), eos, pad_token_id, out_scores)


# --------------------------------------------------------------------------------------------------
# generate_completions: one batched decode, per-row distributions
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_completions(
    model: torch.nn.Module,
    prompt_ids: torch.LongTensor,
    prompt_mask: torch.Tensor,
    params: SamplingParams | Sequence[SamplingParams],
    *,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    generator: torch.Generator | None = None,
    output_scores: bool = False,
) -> Completions:
    """Sample one completion per row, row r from params[r], in ONE batched decoding loop.

    The loop (:func:`_decode`, over one ``DynamicCache``) is ``model.generate``'s sampling loop with
    do_sample=True, every built-in warper neutral (temperature 1, top_k 0, top_p 1, no repetition
    penalty; the model's own generation_config is never read) and :class:`PerRowSampling` as the only
    logits processor, so row r's token t is drawn from softmax(warp_r(z_t)) — token for token what
    ``generate`` draws from the same RNG state, without its per-step overhead. Rows of y, y′ and y″
    with different SamplingParams go side by side.

    Prompts must be left-padded; position ids are cumsum(attention_mask) − 1.
    Sampling uses the global torch RNG: with ``generator`` given, a seed drawn from it seeds
    the global RNG inside ``torch.random.fork_rng`` (the caller's global RNG state is left unchanged);
    without it the global RNG is used directly (``torch.manual_seed(s)`` before the call reproduces it).
    The model runs in eval mode (every module's training flag restored after), without gradients.
    ``output_scores=True`` also returns each step's sampling log-probabilities in ``Completions.scores``.
    """
    _check_prompts(prompt_ids, prompt_mask)
    _check_max_new_tokens(max_new_tokens)
    rows = _broadcast_params(params, prompt_ids.shape[0])
    eos = _eos_tensor(eos_token_id, prompt_ids.device)
    processor = PerRowSampling(rows, device=prompt_ids.device)
    keep_last = _accepts_kwarg(model, "logits_to_keep")
    with _eval_mode(model), _seeded_global_rng(generator, prompt_ids.device):
        cache = DynamicCache(config=_hf_model(model).config)

        def next_scores(input_ids, attention_mask, position_ids):
            return _last_logits(model, input_ids, attention_mask, position_ids, cache, keep_last)

        return _decode(
            next_scores, processor, prompt_ids, prompt_mask, max_new_tokens=max_new_tokens, eos=eos,
            pad_token_id=pad_token_id, generator=None, output_scores=output_scores, synced_gpus=_synced_gpus(model),
        )


# --------------------------------------------------------------------------------------------------
# π_ref
# --------------------------------------------------------------------------------------------------


def _has_peft_adapter(model: torch.nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft not installed: no model can be a PeftModel
        return False
    return isinstance(model, PeftModel) and len(getattr(model, "peft_config", {})) > 0


class ReferenceModel:
    """π_ref: a separate frozen model, or the policy's peft module with its adapter disabled.

    * ``ReferenceModel(policy, frozen=ref_model)``: ``ref_model`` is π_ref (put in eval mode, its
      parameters' requires_grad set to False).
    * ``ReferenceModel(policy)`` with ``policy`` a peft ``PeftModel``: π_ref is the base model, computed by
      the same module inside ``policy.disable_adapter()`` (no second copy of the weights in memory).

    A plain transformers policy needs ``frozen``. Calls run under ``torch.no_grad()`` and in eval mode
    (training flags restored after).
    """

    def __init__(self, policy: torch.nn.Module, frozen: torch.nn.Module | None = None):
        if frozen is None:
            if not _has_peft_adapter(policy):
                raise ValueError(
                    f"ReferenceModel(policy) needs a peft PeftModel with an adapter (π_ref = adapter disabled); "
                    f"got a {type(policy).__name__}: pass the reference explicitly, "
                    "ReferenceModel(policy, frozen=ref_model)"
                )
        else:
            if frozen is policy:
                raise ValueError(
                    "frozen is the policy itself: π_ref must be a separate model (or omit frozen for a peft policy)"
                )
            frozen.eval()
            frozen.requires_grad_(False)
        self.policy = policy
        self.frozen = frozen

    @property
    def shares_policy(self) -> bool:
        """True when π_ref is the policy's module with the adapter disabled."""
        return self.frozen is None

    @contextmanager
    def as_module(self) -> Iterator[torch.nn.Module]:
        """Yields a module computing π_ref (for a shared peft policy, the adapter is disabled inside the
        context), in eval mode and under torch.no_grad()."""
        with torch.no_grad():
            if self.frozen is not None:
                with _eval_mode(self.frozen):
                    yield self.frozen
            else:
                with self.policy.disable_adapter(), _eval_mode(self.policy):
                    yield self.policy

    def forward(self, **model_kwargs):
        """The model output (logits, past_key_values, ...) with the reference weights."""
        with self.as_module() as module:
            return module(**model_kwargs)

    __call__ = forward


# --------------------------------------------------------------------------------------------------
# generate_mixture: geometric mixture of π and π_ref, two KV caches
# --------------------------------------------------------------------------------------------------


def _mixture_coefficients(mixture_coef: float | Sequence[float], batch: int) -> list[float]:
    """One coefficient per row, each a number in [0, 1]; a single number is repeated."""
    values = [mixture_coef] * batch if isinstance(mixture_coef, (int, float)) else list(mixture_coef)
    if len(values) != batch:
        raise ValueError(f"need one mixture_coef per prompt row: got {len(values)} for {batch} rows")
    for c in values:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.0 <= c <= 1.0:
            raise ValueError(f"mixture_coef must be a number in [0, 1], got mixture_coef={c!r}")
    return [float(c) for c in values]


@torch.no_grad()
def generate_mixture(
    policy: torch.nn.Module,
    reference: ReferenceModel,
    prompt_ids: torch.LongTensor,
    prompt_mask: torch.Tensor,
    mixture_coef: float | Sequence[float],
    params: SamplingParams | Sequence[SamplingParams],
    *,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    generator: torch.Generator | None = None,
    output_scores: bool = False,
) -> Completions:
    """Sample from the token-level geometric mixture of the policy π and the reference π_ref.

    At every step the next-token scores of row r are

        s_r = (1 − c_r)·log_softmax(z_π) + c_r·log_softmax(z_ref),     c_r = mixture_coef[r] ∈ [0, 1],

    i.e. log π_c ∝ (1 − c)·log π + c·log π_ref (softmax renormalises), then ``params``' temperature,
    top-k, top-p and min-p (:class:`PerRowSampling`; one SamplingParams for all rows, or one per row),
    then one multinomial draw per row with ``generator`` (on the prompts' device; the global RNG when
    None). Rows stop at their first EOS (pad after); decoding ends when every row has stopped or after
    max_new_tokens.

    ``mixture_coef`` is one number for every row or one per row: rows with c_r = 0 are plain policy
    rows (their scores are the policy's logits z_π, exactly as :func:`generate_completions` samples
    them), so a trainer draws y, y′ and the Nash-MD opponent y″ in ONE decoding loop. π_ref runs only
    on the rows with c_r > 0, and the policy only if some c_r < 1 (rows with c_r = 1 take π_ref alone,
    which also avoids 0·(−inf)).

    Its own decoding loop keeps TWO KV caches (``DynamicCache``), one per model: the policy's computed
    with the adapter on, the reference's (over the mixed rows only) through ``reference.as_module()``.
    Position ids are cumsum(attention_mask) − 1 at the prefill and for each new token. Eval mode for
    both (training flags restored after), no gradients.
    """
    if not isinstance(reference, ReferenceModel):
        raise TypeError(f"reference must be a ReferenceModel, got {type(reference).__name__}")
    if reference.shares_policy and reference.policy is not policy:
        raise ValueError(
            "reference disables the adapter of a different module than `policy`: build it as ReferenceModel(policy)"
        )
    _check_prompts(prompt_ids, prompt_mask)
    _check_max_new_tokens(max_new_tokens)
    device = prompt_ids.device
    batch = prompt_ids.shape[0]
    coefs = _mixture_coefficients(mixture_coef, batch)
    eos = _eos_tensor(eos_token_id, device)
    processor = PerRowSampling(_broadcast_params(params, batch), device=device)
    c = torch.tensor(coefs, dtype=torch.float32, device=device)
    mixed_rows = (c > 0).nonzero().flatten()  # the rows π_ref runs on
    c_mixed = c[mixed_rows][:, None]
    use_policy, use_reference = bool((c < 1).any()), mixed_rows.numel() > 0
    only_reference = (c_mixed == 1.0).squeeze(1)  # mixed rows that take π_ref alone

    with _eval_mode(policy), contextlib.ExitStack() as stack:
        # A frozen reference is entered once; a shared peft policy disables its adapter at every step.
        frozen_ref = None if reference.shares_policy else stack.enter_context(reference.as_module())
        # Separate caches: the two models see the same tokens but have different keys/values.
        policy_cache = DynamicCache(config=_hf_model(policy).config) if use_policy else None
        ref_model = policy if reference.shares_policy else reference.frozen
        ref_cache = DynamicCache(config=_hf_model(ref_model).config) if use_reference else None
        keep_policy = _accepts_kwarg(policy, "logits_to_keep")
        keep_ref = keep_policy if reference.shares_policy else _accepts_kwarg(reference.frozen, "logits_to_keep")

        def reference_logits(input_ids, attention_mask, position_ids) -> torch.Tensor:
            if frozen_ref is not None:
                return _last_logits(frozen_ref, input_ids, attention_mask, position_ids, ref_cache, keep_ref)
            with reference.as_module() as ref_module:
                return _last_logits(ref_module, input_ids, attention_mask, position_ids, ref_cache, keep_ref)

        def next_scores(input_ids, attention_mask, position_ids) -> torch.Tensor:
            scores = None
            if use_policy:
                scores = _last_logits(policy, input_ids, attention_mask, position_ids, policy_cache, keep_policy)
            if use_reference:
                rows = (input_ids[mixed_rows], attention_mask[mixed_rows], position_ids[mixed_rows])
                ref_part = c_mixed * reference_logits(*rows).log_softmax(-1)
                if scores is None:
                    return ref_part
                pol_part = (1.0 - c_mixed) * scores[mixed_rows].log_softmax(-1)
                scores = scores.index_copy(0, mixed_rows, torch.where(only_reference[:, None], ref_part, pol_part + ref_part))
            return scores

        return _decode(
            next_scores, processor, prompt_ids, prompt_mask, max_new_tokens=max_new_tokens, eos=eos,
            pad_token_id=pad_token_id, generator=generator, output_scores=output_scores,
            synced_gpus=_synced_gpus(policy),
        )
