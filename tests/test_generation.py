"""lm_runs.generation: per-row sampling, generate_completions, ReferenceModel, generate_mixture.

Tiny random-init GPT-2s (lm_runs.tiny) with an untied N(0, 0.3²) output head so that next-token
distributions are peaked (a freshly initialised GPT-2 is almost uniform, which would make the
filters and the statistical checks vacuous). Tolerances are stated at each assertion.

Two computations of the same scores (cached or not, HF's code or ours, another CPU) differ by float32
rounding, so a discrete outcome computed both ways — a filter's support, a sampled token — is compared
only where it is decided by more than MARGIN = 1e-4 (decision_margin; the sampled token through the
exponential race torch.multinomial runs, replayed from the same generator): the token-for-token checks
hold on any machine and still fail on a real difference.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch

pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from scipy.stats import chi2  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lm_runs.generation import (  # noqa: E402
    Completions,
    PerRowSampling,
    ReferenceModel,
    SamplingArguments,
    SamplingParams,
    _finalize,
    generate_completions,
    generate_mixture,
)
from lm_runs.tiny import build_tiny_lm  # noqa: E402

PROMPTS = ["the cat runs", "tell me a story about the big red dog please", "why", "one two three four"]


def _spread_head_and_save(path, seed: int):
    """Untie the output head and give it random N(0, 0.3²) weights: peaked, but not one-hot, next-token
    distributions (top token ≈ 0.3, top 20 ≈ 0.8 of the mass)."""
    model = AutoModelForCausalLM.from_pretrained(path)
    model.config.tie_word_embeddings = False
    g = torch.Generator().manual_seed(seed)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=g) * 0.3)
    model.save_pretrained(path)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_generation")
    policy_dir = build_tiny_lm(root / "policy", seed=0)
    ref_dir = build_tiny_lm(root / "ref", seed=1)
    _spread_head_and_save(policy_dir, seed=100)
    _spread_head_and_save(ref_dir, seed=101)
    return policy_dir, ref_dir


@pytest.fixture(scope="module")
def tok(dirs):
    return AutoTokenizer.from_pretrained(dirs[0])


def load(path):
    return AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.fixture
def policy(dirs):
    return load(dirs[0])


@pytest.fixture
def ref_model(dirs):
    return load(dirs[1])


def lora_policy(path):
    """A peft LoRA policy over the base at ``path`` with non-zero LoRA weights (B ≠ 0)."""
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True,
                             lora_dropout=0.0, init_lora_weights=False)
    torch.manual_seed(3)
    return peft.get_peft_model(load(path), config)


def encode(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    assert tok.padding_side == "left"
    return enc.input_ids, enc.attention_mask


def kw(tok, **extra):
    return dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **extra)


def hf_warp(logits_row: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """HF's own warpers, chained in generate's order, on one row (1, V)."""
    x = logits_row
    if p.temperature != 1.0:
        x = TemperatureLogitsWarper(float(p.temperature))(None, x)
    if p.top_k > 0:
        x = TopKLogitsWarper(p.top_k)(None, x)
    if p.top_p < 1.0:
        x = TopPLogitsWarper(p.top_p)(None, x)
    if p.min_p > 0.0:
        x = MinPLogitsWarper(p.min_p)(None, x)
    return x


def next_logits(model, ids, mask):
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()


@contextmanager
def eos_rate(model, tok, q: float):
    """Make ``model`` put probability exactly ``q`` on EOS at every position (a hook on its output
    embedding sets z_eos = logsumexp(other logits) + log(q / (1 − q)))."""
    eos = tok.eos_token_id

    def hook(module, inputs, out):
        others = out.clone()
        others[..., eos] = float("-inf")
        out = out.clone()
        out[..., eos] = torch.logsumexp(others, dim=-1) + math.log(q / (1 - q))
        return out

    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------
# Comparing discrete decisions robustly
# ----------------------------------------------------------------------------------------------

#: Two computations of the same next-token scores (with or without the KV cache, the last position or all
#: of them, another CPU's kernels) differ by float32 rounding, about 1e-6 here. A discrete decision — a
#: filter's cut, the sampled token — is compared only where moving every score by up to MARGIN (100× that
#: rounding) cannot change it: such a comparison holds on any machine and still fails on a real difference.
MARGIN = 1e-4


def race_draws(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """The Exp(1) draws behind one ``torch.multinomial(p, 1, generator=generator)`` call on a (B, V) p: on
    the CPU it returns argmax_v p_v / q_v with q = torch.empty_like(p).exponential_(1, generator) (the
    exponential race, i.e. the Gumbel-max trick); test_multinomial_is_an_exponential_race checks it."""
    return torch.empty(shape).exponential_(1, generator=generator)


def decision_margin(scores: torch.Tensor, p: SamplingParams, q: torch.Tensor | None = None) -> tuple[float, int | None]:
    """(margin, token) for one row of pre-warp scores z (V,): margin is a lower bound on the max-abs change
    of z that could change the support left by p's filters or, given the race draws q (V,), the sampled
    token argmax_v p_v / q_v (returned as token; None without q).

    In x = z / T, a change of z by at most ε moves every difference x_v − x_w by at most 2ε/T and every
    probability by a factor within e^(±2ε/T). So each decision is safe for ε < T·g/2, g being: top-k, the
    gap between the k-th and (k+1)-th largest x; top-p, log(1 + d) with d the distance of the ascending
    cumulative probabilities from 1 − top_p, and the gap between the last dropped and first kept x; min-p,
    the distance of x_v − max x from log min_p; the race, the gap between the two largest x_v − log q_v.
    """
    x = scores.double() / p.temperature
    gaps = []
    if 0 < p.top_k < x.numel():
        top = torch.topk(x, p.top_k + 1).values
        gaps.append(float(top[-2] - top[-1]))
        x = x.masked_fill(x < top[-2], float("-inf"))
    if p.top_p < 1.0:
        ascending = torch.sort(x[torch.isfinite(x)]).values
        cum = ascending.softmax(0).cumsum(0)
        dropped = cum <= 1.0 - p.top_p
        dropped[-1] = False
        gaps.append(math.log1p(float((cum - (1.0 - p.top_p)).abs().min())))
        cut = int(dropped.sum())
        if cut:
            gaps.append(float(ascending[cut] - ascending[cut - 1]))
            x = x.masked_fill(x < ascending[cut], float("-inf"))
    if p.min_p > 0.0:
        below = x - x.max() - math.log(p.min_p)
        gaps.append(float(below[torch.isfinite(below)].abs().min()))
        x = x.masked_fill(below < 0, float("-inf"))
    token = None
    if q is not None:
        race = (x - q.double().log()).masked_fill(~torch.isfinite(x), float("-inf"))
        best = torch.topk(race, 2)
        gaps.append(float(best.values[0] - best.values[1]))
        token = int(best.indices[0])
    return (p.temperature * min(gaps) / 2 if gaps else math.inf), token


def assert_away_from_cuts(scores: torch.Tensor, params: list[SamplingParams]) -> None:
    """Every row of (B, V) scores is at least MARGIN from a cut of its filters: the supports computed from
    these scores and from the same scores computed another way are the same (a property of the test data,
    the same on every machine up to float rounding)."""
    for r, p in enumerate(params):
        margin, _ = decision_margin(scores[r], p)
        assert margin >= MARGIN, f"row {r} ({p}) lies {margin:.2e} from a filter cut: pick other test data"


def uncached_scores(model, ids, mask, new_tokens) -> torch.Tensor:
    """(B, T, V) float32 next-token logits before each of the T ``new_tokens`` (B, T), teacher-forced and
    without a cache: ONE forward pass over [prompt; new tokens], every new token attended (as the decoding
    loops do, pads of finished rows included), position ids cumsum(mask) − 1."""
    full_ids = torch.cat([ids, new_tokens], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(new_tokens)], dim=1)
    pos = (full_mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        logits = model(input_ids=full_ids, attention_mask=full_mask, position_ids=pos, use_cache=False).logits
    return logits[:, ids.shape[1] - 1 : -1].float()


def test_multinomial_is_an_exponential_race():
    """The premise of race_draws: torch.multinomial's one-sample draws, step after step from one generator,
    are argmax_v p_v / q_v with race_draws' q, exactly (ties and zero probabilities included)."""
    torch.manual_seed(0)
    drawn, replay = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for _ in range(5):
        probs = torch.randn(16, 50).mul(2).softmax(-1)
        probs[:, :10] = 0.0  # filtered tokens
        probs[:, 10:12] = probs[:, 10:11]  # a tie
        tokens = torch.multinomial(probs, 1, generator=drawn).squeeze(1)
        expected = (probs / race_draws(tuple(probs.shape), replay)).argmax(-1)
        assert torch.equal(tokens, expected)
        assert (tokens >= 10).all()



# ----------------------------------------------------------------------------------------------
# SamplingParams and PerRowSampling
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(temperature="1"), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_k=True), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=float("nan")), "top_p"),
        (dict(min_p=-0.1), "min_p"),
        (dict(min_p=1.0), "min_p"),
    ],
)
def test_sampling_params_rejects_bad_values(kwargs, field):
    value = kwargs[field]
    with pytest.raises(ValueError, match=f"{field}=") as err:
        SamplingParams(**kwargs)
    assert repr(value) in str(err.value)


def test_sampling_params_accepts_edges():
    SamplingParams(temperature=1e-3, top_k=0, top_p=1.0, min_p=0.0)
    SamplingParams(temperature=2, top_k=1, top_p=1e-6, min_p=0.999)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--temperature", "0"], "--temperature must be > 0 and finite, got temperature=0.0"),
        (["--top_k", "-1"], "--top_k must be >= 0"),
        (["--top_p", "1.5"], "--top_p must be in (0, 1]"),
        (["--min_p", "1"], "--min_p must be in [0, 1)"),
        (["--max_new_tokens", "0"], "--max_new_tokens must be an integer >= 1, got 0"),
    ],
)
def test_sampling_arguments_name_the_flag(flags, message):
    """SamplingArguments parsed by HfArgumentParser: a bad value is refused naming its flag."""
    from transformers import HfArgumentParser

    with pytest.raises(ValueError) as err:
        HfArgumentParser([SamplingArguments]).parse_args_into_dataclasses(flags, look_for_args_file=False)
    assert message in str(err.value)


def test_sampling_arguments_as_a_mixin_with_other_defaults():
    """A subclass redeclares defaults (as the evaluation does) and gets the SamplingParams they describe;
    the parent's __post_init__ still runs."""
    from dataclasses import dataclass

    @dataclass
    class Base:
        def __post_init__(self):
            self.parent_checked = True

    @dataclass
    class Evaluation(SamplingArguments, Base):
        top_k: int = 100
        top_p: float = 0.95
        max_new_tokens: int = 512

    args = Evaluation(temperature=0.7)
    assert args.sampling == SamplingParams(temperature=0.7, top_k=100, top_p=0.95, min_p=0.0)
    assert args.max_new_tokens == 512 and args.parent_checked
    with pytest.raises(ValueError, match="--top_p must be in"):
        Evaluation(top_p=0.0)


ROW_PARAMS = [
    SamplingParams(),
    SamplingParams(temperature=0.7),
    SamplingParams(top_k=5),
    SamplingParams(top_k=1000),  # larger than the vocabulary: keeps everything
    SamplingParams(top_p=0.6),
    SamplingParams(min_p=0.1),
    SamplingParams(temperature=1.3, top_k=20, top_p=0.9, min_p=0.05),
    SamplingParams(temperature=0.5, top_k=3, top_p=0.3),
]


def test_per_row_sampling_equals_hf_warpers_row_by_row():
    torch.manual_seed(0)
    logits = torch.randn(len(ROW_PARAMS), 64) * 3.0
    ours = PerRowSampling(ROW_PARAMS)(None, logits.clone())
    assert_away_from_cuts(logits, ROW_PARAMS)  # two implementations' float32 rounding cannot move a cut
    filtered_rows = 0
    for r, p in enumerate(ROW_PARAMS):
        expected = hf_warp(logits[r:r + 1].clone(), p)[0]
        # The same −inf masks exactly; finite values equal up to 1e-6.
        assert torch.equal(torch.isinf(ours[r]), torch.isinf(expected)), f"row {r} {p}"
        finite = torch.isfinite(expected)
        torch.testing.assert_close(ours[r][finite], expected[finite], rtol=0, atol=1e-6)
        filtered_rows += int(torch.isinf(expected).any())
    assert filtered_rows >= 5  # the filters actually removed tokens on most rows


def test_per_row_sampling_ties_like_hf():
    """Boundary cases: tied top-k values are all kept; top-p drops tokens whose ascending cumulative
    probability equals 1 − top_p exactly (0.25 + 0.25 = 0.5 is exact in float32)."""
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    params = [SamplingParams(top_p=0.5), SamplingParams(top_k=2), SamplingParams(min_p=0.999)]
    ours = PerRowSampling(params)(None, logits.clone())
    for r, p in enumerate(params):
        expected = hf_warp(logits[r:r + 1].clone(), p)[0]
        assert torch.equal(torch.isinf(ours[r]), torch.isinf(expected)), (r, ours[r], expected)
    assert torch.isinf(ours[0]).sum() == 2 and torch.isinf(ours[1]).sum() == 1 and torch.isinf(ours[2]).sum() == 0


def test_per_row_sampling_rejects_wrong_batch():
    with pytest.raises(ValueError, match="2 rows"):
        PerRowSampling([SamplingParams()] * 2)(None, torch.zeros(3, 10))


# ----------------------------------------------------------------------------------------------
# generate_completions
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p", [SamplingParams(), SamplingParams(temperature=0.8, top_k=20, top_p=0.9, min_p=0.05)]
)
def test_generate_completions_reproduces_hf_generate(policy, tok, p):
    """Token for token what HF's generate draws from the same global RNG state, wherever the draw is
    decided by more than MARGIN: HF's tokens are replayed (each step's torch.multinomial is an exponential
    race over race_draws from the seeded RNG) on uncached logits along HF's tokens, and a row is followed
    until its first draw closer than MARGIN that the two disagree on (a float flip may decide it)."""
    ids, mask = encode(tok, PROMPTS)
    hf_kwargs = dict(temperature=p.temperature, top_k=p.top_k, top_p=p.top_p)
    if p.min_p > 0:
        hf_kwargs["min_p"] = p.min_p
    torch.manual_seed(123)
    with torch.no_grad():
        expected = policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=10,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **hf_kwargs)
    expected = expected[:, ids.shape[1]:]
    torch.manual_seed(123)
    out = generate_completions(policy, ids, mask, [p] * len(PROMPTS), max_new_tokens=10, **kw(tok))

    scores = uncached_scores(policy, ids, mask, expected)
    replay = torch.Generator().manual_seed(123)
    diverged = [False] * len(PROMPTS)
    finished = [False] * len(PROMPTS)
    compared = close = 0
    for t in range(expected.shape[1]):
        q = race_draws((len(PROMPTS), scores.shape[-1]), replay)
        for r in range(len(PROMPTS)):
            if diverged[r] or finished[r]:
                continue
            margin, token = decision_margin(scores[r, t], p, q[r])
            got = int(out.ids[r, t]) if t < out.ids.shape[1] else None
            if margin >= MARGIN:
                assert int(expected[r, t]) == token, (r, t)  # the replay is what HF drew
                assert got == token, (r, t)
                compared += 1
            else:
                close += 1
                diverged[r] = got != int(expected[r, t])
            finished[r] = int(expected[r, t]) == tok.eos_token_id  # pads after a row's EOS
    assert compared >= 20 and close <= 2, (compared, close)
    if not any(diverged):
        assert torch.equal(out.ids, expected)  # the same length, and pads after EOS


def _chi2_ok(counts: torch.Tensor, probs: torch.Tensor, alpha: float = 1e-4) -> tuple[float, float]:
    """Pearson chi-square of counts against probs, tail bins merged until each expects ≥ 5."""
    n = counts.sum().item()
    order = torch.argsort(probs, descending=True)
    bins_obs, bins_exp, acc_o, acc_e = [], [], 0.0, 0.0
    for v in order.tolist():
        acc_o += counts[v].item()
        acc_e += n * probs[v].item()
        if acc_e >= 5:
            bins_obs.append(acc_o), bins_exp.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e > 0:
        bins_obs[-1] += acc_o
        bins_exp[-1] += acc_e
    stat = sum((o - e) ** 2 / e for o, e in zip(bins_obs, bins_exp))
    df = max(len(bins_obs) - 1, 1)
    return stat, chi2.ppf(1 - alpha, df)


def test_mixed_rows_each_follow_their_own_distribution(policy, tok):
    groups = [
        SamplingParams(top_k=8),
        SamplingParams(temperature=0.5, top_p=0.8),
        SamplingParams(temperature=1.5, min_p=0.2),
    ]
    n = 300
    ids, mask = encode(tok, ["tell me about the sun"])
    logits = next_logits(policy, ids, mask)
    params = [g for g in groups for _ in range(n)]
    out = generate_completions(policy, ids.repeat(len(params), 1), mask.repeat(len(params), 1), params,
                               max_new_tokens=1, generator=torch.Generator().manual_seed(7), **kw(tok))
    first = out.ids[:, 0]
    assert_away_from_cuts(logits.expand(len(groups), -1), groups)  # the cached prefill has the same supports
    supports = []
    for g_index, g in enumerate(groups):
        probs = hf_warp(logits.clone(), g)[0].softmax(-1)
        counts = torch.bincount(first[g_index * n:(g_index + 1) * n], minlength=probs.numel()).double()
        # Exact: never a token the filters removed. Statistical: chi-square at level 1e-4.
        assert counts[probs == 0].sum() == 0, g
        stat, threshold = _chi2_ok(counts, probs.double())
        assert stat < threshold, (g, stat, threshold)
        supports.append(set((probs > 0).nonzero().flatten().tolist()))
    assert len({frozenset(s) for s in supports}) == 3  # the groups really are different distributions


def test_scores_are_the_per_row_distributions_and_ignore_model_generation_config(policy, tok):
    ids, mask = encode(tok, PROMPTS)
    params = [SamplingParams(), SamplingParams(temperature=0.6, top_k=7), SamplingParams(top_p=0.7),
              SamplingParams(min_p=0.3)]
    # A checkpoint's generation_config must not leak into the distribution.
    policy.generation_config.top_k = 2
    policy.generation_config.repetition_penalty = 3.0
    policy.generation_config.suppress_tokens = [5, 6, 7]
    out = generate_completions(policy, ids, mask, params, max_new_tokens=3, output_scores=True, **kw(tok))
    assert policy.generation_config.top_k == 2  # restored
    assert out.scores.shape == (4, out.ids.shape[1], len(tok)) and out.scores.dtype == torch.float32
    logits = next_logits(policy, ids, mask)
    assert_away_from_cuts(logits, params)  # the cached prefill has the same supports
    for r, p in enumerate(params):
        expected = hf_warp(logits[r:r + 1].clone(), p)[0].log_softmax(-1)
        assert torch.equal(torch.isinf(out.scores[r, 0]), torch.isinf(expected))
        finite = torch.isfinite(expected)
        torch.testing.assert_close(out.scores[r, 0][finite], expected[finite], rtol=0, atol=1e-5)


def test_peft_policy_samples_with_its_adapter(dirs, tok):
    policy = lora_policy(dirs[0])
    policy.get_base_model().generation_config.top_k = 2  # must not leak through peft's generate either
    ids, mask = encode(tok, PROMPTS)
    p = SamplingParams(temperature=0.8)
    out = generate_completions(policy, ids, mask, p, max_new_tokens=2, output_scores=True, **kw(tok))
    expected = (next_logits(policy, ids, mask) / 0.8).log_softmax(-1)
    torch.testing.assert_close(out.scores[:, 0], expected, rtol=0, atol=1e-5)
    assert policy.get_base_model().generation_config.top_k == 2


def test_left_padding_gives_the_unpadded_distribution(policy, tok):
    ids, mask = encode(tok, PROMPTS)
    assert (mask == 0).any()  # some rows are padded
    out = generate_completions(policy, ids, mask, SamplingParams(), max_new_tokens=1, output_scores=True,
                               **kw(tok))
    for r, text in enumerate(PROMPTS):
        alone = tok([text], return_tensors="pt").input_ids
        with torch.no_grad():
            expected = policy(alone).logits[0, -1].float().log_softmax(-1)
        torch.testing.assert_close(out.scores[r, 0], expected, rtol=0, atol=1e-5)


def test_generator_reproducible_and_global_rng_untouched(policy, tok):
    ids, mask = encode(tok, PROMPTS)
    state = torch.get_rng_state()
    a = generate_completions(policy, ids, mask, SamplingParams(), max_new_tokens=6,
                             generator=torch.Generator().manual_seed(5), **kw(tok))
    assert torch.equal(torch.get_rng_state(), state)
    b = generate_completions(policy, ids, mask, SamplingParams(), max_new_tokens=6,
                             generator=torch.Generator().manual_seed(5), **kw(tok))
    c = generate_completions(policy, ids, mask, SamplingParams(), max_new_tokens=6,
                             generator=torch.Generator().manual_seed(6), **kw(tok))
    assert torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids, c.ids)


def test_training_mode_restored(policy, tok):
    ids, mask = encode(tok, PROMPTS)
    policy.train()
    policy.transformer.h[0].eval()  # a mixed state must come back as it was
    generate_completions(policy, ids, mask, SamplingParams(), max_new_tokens=2, **kw(tok))
    assert policy.training and policy.transformer.h[1].training and not policy.transformer.h[0].training


def test_finalize_masks_up_to_first_eos():
    eos, pad = 9, 8
    tokens = torch.tensor([[1, 9, 2, 9], [3, 4, 5, 6], [9, 1, 1, 1], [2, 3, 4, 9]])
    out = _finalize(tokens, torch.tensor([eos]), pad, None)
    assert out.ids.tolist() == [[1, 9, 8, 8], [3, 4, 5, 6], [9, 8, 8, 8], [2, 3, 4, 9]]
    assert out.mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert out.truncated.tolist() == [False, True, False, False]
    assert out.lengths.tolist() == [2, 4, 1, 4]
    padded = out.padded_to(6, pad)
    assert padded.ids[:, 4:].eq(pad).all() and padded.mask[:, 4:].eq(0).all()
    assert torch.equal(padded.ids[:, :4], out.ids) and torch.equal(padded.lengths, out.lengths)
    # Several EOS ids (chat models often have two): the first of either ends the row.
    two = _finalize(tokens, torch.tensor([eos, 5]), pad, None)
    assert two.ids.tolist()[1] == [3, 4, 5, 8] and two.truncated.tolist() == [False, False, False, False]


def _check_eos_layout(out: Completions, eos: int, pad: int, max_new_tokens: int):
    saw_eos = saw_truncated = False
    for r in range(out.ids.shape[0]):
        row, m = out.ids[r].tolist(), out.mask[r].tolist()
        if eos in row:
            k = row.index(eos)
            assert m == [1] * (k + 1) + [0] * (len(row) - k - 1)
            assert all(t == pad for t in row[k + 1:])
            assert not out.truncated[r]
            saw_eos = True
        else:
            assert m == [1] * len(row) and len(row) == max_new_tokens
            assert out.truncated[r]
            saw_truncated = True
    assert saw_eos and saw_truncated  # both cases occurred


def test_generate_completions_eos_handling(policy, tok):
    ids, mask = encode(tok, PROMPTS * 4)
    with eos_rate(policy, tok, 0.25):  # EOS likely but not certain at each step
        out = generate_completions(policy, ids, mask, SamplingParams(), max_new_tokens=6,
                                   generator=torch.Generator().manual_seed(1), **kw(tok))
    _check_eos_layout(out, tok.eos_token_id, tok.pad_token_id, 6)


def test_generate_completions_rejects_bad_inputs(policy, tok):
    ids, mask = encode(tok, PROMPTS)
    with pytest.raises(ValueError, match="one SamplingParams per prompt row"):
        generate_completions(policy, ids, mask, [SamplingParams()], max_new_tokens=2, **kw(tok))
    with pytest.raises(ValueError, match="left-padded"):
        generate_completions(policy, ids, mask.flip(1), SamplingParams(), max_new_tokens=2, **kw(tok))
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        generate_completions(policy, ids, mask, SamplingParams(), max_new_tokens=0, **kw(tok))


# ----------------------------------------------------------------------------------------------
# ReferenceModel
# ----------------------------------------------------------------------------------------------


def test_reference_over_peft_is_the_base_model(dirs, tok):
    policy = lora_policy(dirs[0])
    base = load(dirs[0])
    ref = ReferenceModel(policy)
    assert ref.shares_policy
    ids, mask = encode(tok, PROMPTS)
    policy.train()
    ref_logits = ref(input_ids=ids, attention_mask=mask).logits
    assert policy.training  # restored
    assert not ref_logits.requires_grad
    with torch.no_grad():
        base_logits = base(input_ids=ids, attention_mask=mask).logits
        policy_logits = policy(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ref_logits, base_logits, rtol=0, atol=1e-6)
    assert (policy_logits - base_logits).abs().max() > 1e-2  # the adapter is on again after the call
    with ref.as_module() as module:
        with torch.no_grad():
            torch.testing.assert_close(module(input_ids=ids, attention_mask=mask).logits, base_logits,
                                       rtol=0, atol=1e-6)


def test_reference_frozen_and_errors(policy, ref_model, tok):
    ref = ReferenceModel(policy, frozen=ref_model)
    assert not ref.shares_policy
    assert not any(p.requires_grad for p in ref_model.parameters())
    ids, mask = encode(tok, PROMPTS)
    with torch.no_grad():
        expected = ref_model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ref(input_ids=ids, attention_mask=mask).logits, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="frozen"):
        ReferenceModel(policy)  # a plain transformers model has no adapter to disable
    with pytest.raises(ValueError, match="policy itself"):
        ReferenceModel(policy, frozen=policy)


# ----------------------------------------------------------------------------------------------
# generate_mixture
# ----------------------------------------------------------------------------------------------

MIX_PARAMS = SamplingParams(temperature=0.9, top_k=40)


def test_mixture_endpoints_and_midpoint_distributions(policy, ref_model, tok):
    ref = ReferenceModel(policy, frozen=ref_model)
    ids, mask = encode(tok, PROMPTS)
    lp = next_logits(policy, ids, mask).log_softmax(-1)
    lr = next_logits(ref_model, ids, mask).log_softmax(-1)
    assert (lp - lr).abs().max() > 1.0  # the two models really differ
    for c, mixed in [(0.0, lp), (1.0, lr), (0.4, 0.6 * lp + 0.4 * lr)]:
        assert_away_from_cuts(mixed, [MIX_PARAMS] * len(PROMPTS))  # the cached prefill has the same supports
        out = generate_mixture(policy, ref, ids, mask, c, MIX_PARAMS, max_new_tokens=1, output_scores=True,
                               **kw(tok))
        expected = PerRowSampling([MIX_PARAMS] * len(PROMPTS))(None, mixed).log_softmax(-1)
        assert torch.equal(torch.isinf(out.scores[:, 0]), torch.isinf(expected)), c
        finite = torch.isfinite(expected)
        torch.testing.assert_close(out.scores[:, 0][finite], expected[finite], rtol=0, atol=1e-5)


def test_mixture_coefficients_per_row(policy, ref_model, tok):
    """Plain policy rows (c = 0) and mixture rows in one call: each block follows its own distribution,
    and with every c = 0 the call draws what generate_completions draws, token for token."""
    ref = ReferenceModel(policy, frozen=ref_model)
    ids, mask = encode(tok, PROMPTS)
    B = len(PROMPTS)
    lp = next_logits(policy, ids, mask)
    lr = next_logits(ref_model, ids, mask).log_softmax(-1)
    coefs = [0.0] * B + [0.4] * B + [1.0] * B
    out = generate_mixture(policy, ref, ids.repeat(3, 1), mask.repeat(3, 1), coefs, MIX_PARAMS, max_new_tokens=1,
                           output_scores=True, **kw(tok))
    proc = PerRowSampling([MIX_PARAMS] * B)
    for block, mixed in enumerate([lp, 0.6 * lp.log_softmax(-1) + 0.4 * lr, lr]):
        assert_away_from_cuts(mixed, [MIX_PARAMS] * B)  # the cached prefill has the same supports
        got, expected = out.scores[block * B : (block + 1) * B, 0], proc(None, mixed).log_softmax(-1)
        assert torch.equal(torch.isinf(got), torch.isinf(expected)), block
        finite = torch.isfinite(expected)
        torch.testing.assert_close(got[finite], expected[finite], rtol=0, atol=1e-5)

    torch.manual_seed(5)  # both draw from the global RNG without a generator
    plain = generate_completions(policy, ids, mask, MIX_PARAMS, max_new_tokens=8, **kw(tok))
    torch.manual_seed(5)
    zero = generate_mixture(policy, ref, ids, mask, [0.0] * B, MIX_PARAMS, max_new_tokens=8, **kw(tok))
    assert torch.equal(zero.ids, plain.ids) and zero.ids.shape[1] >= 3
    with pytest.raises(ValueError, match="one mixture_coef per prompt row"):
        generate_mixture(policy, ref, ids, mask, [0.5] * (B - 1), MIX_PARAMS, max_new_tokens=2, **kw(tok))
    with pytest.raises(ValueError, match="mixture_coef=1.5"):
        generate_mixture(policy, ref, ids, mask, [0.5] * (B - 1) + [1.5], MIX_PARAMS, max_new_tokens=2, **kw(tok))


@contextmanager
def _nothing():
    yield


@pytest.mark.parametrize("kind", ["frozen", "peft"])
def test_mixture_equals_uncached_reference_implementation(dirs, tok, kind):
    """The cached decoding against a reference without any cache, teacher-forced along the cached run's own
    tokens: at every live step the mixture's sampling distribution (filters, then probabilities to 1e-5)
    and the token that step's multinomial draw gives (the exponential race over race_draws of the same
    generator) — wherever the decision is more than MARGIN from a cut or a tie (all but a few steps)."""
    if kind == "frozen":
        policy, frozen = load(dirs[0]), load(dirs[1])
        ref = ReferenceModel(policy, frozen=frozen)
        ref_fn = frozen
    else:
        policy = lora_policy(dirs[0])
        ref = ReferenceModel(policy)

        def ref_fn(**inputs):
            with policy.disable_adapter():
                return policy(**inputs)

    ids, mask = encode(tok, PROMPTS * 4)
    eos, pad, steps, c = tok.eos_token_id, tok.pad_token_id, 8, 0.3
    # Geometric mixing of two disagreeing models inflates EOS (Σ_v p_v^(1−c) r_v^c < 1 on the other
    # tokens): the separate random reference needs a small per-model EOS rate to leave truncated rows.
    q_eos = 0.02 if kind == "frozen" else 0.15
    with eos_rate(policy, tok, q_eos), (eos_rate(frozen, tok, q_eos) if kind == "frozen" else _nothing()):
        fast = generate_mixture(policy, ref, ids, mask, c, MIX_PARAMS, max_new_tokens=steps,
                                output_scores=True, generator=torch.Generator().manual_seed(11), **kw(tok))
        lp = uncached_scores(policy, ids, mask, fast.ids).log_softmax(-1)
        lr = uncached_scores(ref_fn, ids, mask, fast.ids).log_softmax(-1)
    assert fast.ids.shape[1] >= 3  # several cached steps were exercised
    _check_eos_layout(fast, eos, pad, steps)
    mixed = (1 - c) * lp + c * lr
    replay = torch.Generator().manual_seed(11)
    compared = close = 0
    for t in range(fast.ids.shape[1]):
        q = race_draws(tuple(mixed[:, t].shape), replay)
        for r in fast.mask[:, t].nonzero().flatten().tolist():
            margin, token = decision_margin(mixed[r, t], MIX_PARAMS, q[r])
            if margin < MARGIN:
                close += 1
                continue
            compared += 1
            assert int(fast.ids[r, t]) == token, (r, t)
            expected = PerRowSampling([MIX_PARAMS])(None, mixed[r, t][None])[0].log_softmax(-1)
            assert torch.equal(torch.isinf(fast.scores[r, t]), torch.isinf(expected)), (r, t)
            finite = torch.isfinite(expected)
            torch.testing.assert_close(fast.scores[r, t][finite].exp(), expected[finite].exp(), rtol=0, atol=1e-5)
    assert compared >= 40 and close <= compared // 20, (compared, close)


def test_mixture_with_lora_mixes_policy_with_base(dirs, tok):
    policy = lora_policy(dirs[0])
    base = load(dirs[0])
    ref = ReferenceModel(policy)
    ids, mask = encode(tok, PROMPTS)
    params = SamplingParams()
    lp = next_logits(policy, ids, mask).log_softmax(-1)
    lb = next_logits(base, ids, mask).log_softmax(-1)
    assert (lp - lb).abs().max() > 0.1  # the adapter changes the distribution

    def first_step(c):
        out = generate_mixture(policy, ref, ids, mask, c, params, max_new_tokens=1, output_scores=True, **kw(tok))
        return out.scores[:, 0]

    mid, at_one = first_step(0.5), first_step(1.0)
    torch.testing.assert_close(at_one, lb, rtol=0, atol=1e-5)  # c = 1: the base model, adapter off
    torch.testing.assert_close(mid, (0.5 * lp + 0.5 * lb).log_softmax(-1), rtol=0, atol=1e-5)
    assert (mid - lp).abs().max() > 0.05  # not the policy mixed with itself
    # The adapter is back on after the call.
    torch.testing.assert_close(next_logits(policy, ids, mask).log_softmax(-1), lp, rtol=0, atol=0)


def test_mixture_restores_training_and_validates(policy, ref_model, tok):
    ref = ReferenceModel(policy, frozen=ref_model)
    ids, mask = encode(tok, PROMPTS)
    policy.train()
    out = generate_mixture(policy, ref, ids, mask, 0.5, SamplingParams(), max_new_tokens=3, **kw(tok))
    assert policy.training and out.ids.shape == (len(PROMPTS), 3)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="mixture_coef"):
            generate_mixture(policy, ref, ids, mask, bad, SamplingParams(), max_new_tokens=2, **kw(tok))
    with pytest.raises(TypeError, match="ReferenceModel"):
        generate_mixture(policy, ref_model, ids, mask, 0.5, SamplingParams(), max_new_tokens=2, **kw(tok))


def test_mixture_rejects_a_reference_over_another_policy(dirs, tok):
    ids, mask = encode(tok, PROMPTS)
    ref = ReferenceModel(lora_policy(dirs[0]))
    with pytest.raises(ValueError, match="different module"):
        generate_mixture(lora_policy(dirs[0]), ref, ids, mask, 0.5, SamplingParams(), max_new_tokens=2, **kw(tok))
