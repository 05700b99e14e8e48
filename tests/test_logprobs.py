"""lm_runs.logprobs.completion_logprobs against a per-sequence computation without any padding.

A tiny random-init GPT-2 (lm_runs.tiny) with an untied N(0, 0.3²) head, so that log-probabilities are
far from uniform and position or padding mistakes move them by much more than the tolerances.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from lm_runs.generation import ReferenceModel  # noqa: E402
from lm_runs.logprobs import completion_logprobs  # noqa: E402
from lm_runs.tiny import build_tiny_lm  # noqa: E402

PROMPTS = ["why", "tell me a story about the big red dog please", "the cat runs"]
COMPLETIONS = ["the sun is a star", "yes", "no maybe good"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = build_tiny_lm(tmp_path_factory.mktemp("tiny_logprobs") / "lm", seed=0)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.config.tie_word_embeddings = False
    g = torch.Generator().manual_seed(200)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=g) * 0.3)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tok(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir)


def batch(tok):
    """Left-padded prompts and right-padded completions (each completion ends with EOS)."""
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    rows = [tok(c).input_ids + [tok.eos_token_id] for c in COMPLETIONS]
    T = max(len(r) for r in rows)
    comp = torch.full((len(rows), T), tok.pad_token_id)
    comp_mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        comp[i, :len(r)] = torch.tensor(r)
        comp_mask[i, :len(r)] = 1
    prompt_lens = enc.attention_mask.sum(-1)
    assert len(set(prompt_lens.tolist())) == 3 and len(set(comp_mask.sum(-1).tolist())) == 3
    return enc.input_ids, enc.attention_mask, comp, comp_mask


def manual(model, tok, dtype=torch.float64):
    """Each sequence alone (no padding at all), full log_softmax over the vocabulary."""
    out = []
    for prompt, completion in zip(PROMPTS, COMPLETIONS):
        p = tok(prompt).input_ids
        c = tok(completion).input_ids + [tok.eos_token_id]
        ids = torch.tensor([p + c])
        logp = model(input_ids=ids).logits[0].to(dtype).log_softmax(-1)
        out.append(sum(logp[len(p) - 1 + t, c[t]] for t in range(len(c))))
    return torch.stack(out)


def test_equals_per_sequence_computation(model, tok):
    ids, mask, comp, comp_mask = batch(tok)
    got = completion_logprobs(model, ids, mask, comp, comp_mask)
    with torch.no_grad():
        expected = manual(model, tok)
    assert got.shape == (3,) and got.dtype == torch.float32
    # 1e-5 absolute plus 1e-6 relative: |log π| ≈ 90 here, where one float32 ulp is already 7.6e-6.
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-5)
    assert expected.std() > 1.0  # rows genuinely differ: a row mix-up would not pass


def test_average_is_sum_over_length(model, tok):
    ids, mask, comp, comp_mask = batch(tok)
    with torch.no_grad():
        total = completion_logprobs(model, ids, mask, comp, comp_mask)
        mean = completion_logprobs(model, ids, mask, comp, comp_mask, average=True)
    torch.testing.assert_close(mean, total / comp_mask.sum(-1), rtol=0, atol=1e-6)


def test_gradient_reaches_parameters(model, tok):
    ids, mask, comp, comp_mask = batch(tok)
    model.train()
    completion_logprobs(model, ids, mask, comp, comp_mask).sum().backward()
    for name in ("lm_head.weight", "transformer.wte.weight", "transformer.h.0.attn.c_attn.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_only_completion_logits_are_computed(model, tok):
    ids, mask, comp, comp_mask = batch(tok)
    shapes = []
    handle = model.lm_head.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape)))
    with torch.no_grad():
        completion_logprobs(model, ids, mask, comp, comp_mask)
    handle.remove()
    # T + 1 positions (P − 1 … P + T − 1), not the whole P + T sequence.
    assert shapes == [(3, comp.shape[1] + 1, len(tok))]


def test_bf16_weights_and_autocast_give_float32(model, tok):
    ids, mask, comp, comp_mask = batch(tok)
    with torch.no_grad():
        exact = completion_logprobs(model, ids, mask, comp, comp_mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = completion_logprobs(model, ids, mask, comp, comp_mask)
        bf16 = completion_logprobs(model.to(torch.bfloat16), ids, mask, comp, comp_mask)
    for got in (auto, bf16):
        assert got.dtype == torch.float32
        # bf16 keeps ~3 significant digits of the logits: a loose 5% of |log π| (plus 0.5 nats).
        assert ((got - exact).abs() <= 0.05 * exact.abs() + 0.5).all(), (got, exact)


def test_peft_policy_and_its_reference(model_dir, tok):
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = peft.LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    torch.manual_seed(3)
    policy = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)
    ids, mask, comp, comp_mask = batch(tok)
    got = completion_logprobs(policy, ids, mask, comp, comp_mask)
    with torch.no_grad():
        torch.testing.assert_close(got.double(), manual(policy, tok), rtol=1e-6, atol=1e-5)
        ref = completion_logprobs(ReferenceModel(policy), ids, mask, comp, comp_mask)
        torch.testing.assert_close(ref.double(), manual(base, tok), rtol=1e-6, atol=1e-5)
    assert not ref.requires_grad and got.requires_grad
    assert (got - ref).abs().max() > 0.1  # the adapter matters


def test_rejects_bad_shapes(model, tok):
    ids, mask, comp, comp_mask = batch(tok)
    with pytest.raises(ValueError, match="left-padded"):
        completion_logprobs(model, ids, mask.flip(1), comp, comp_mask)
    with pytest.raises(ValueError, match="completion rows"):
        completion_logprobs(model, ids, mask, comp[:2], comp_mask[:2])
