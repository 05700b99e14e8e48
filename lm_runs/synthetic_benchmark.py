"""A CPU-scale language-model benchmark whose Nash equilibrium is known exactly.

    python -m lm_runs.synthetic_benchmark --out DIR            # default size (minutes on 2 CPU cores)
    python -m lm_runs.synthetic_benchmark --out DIR --fast     # seconds, for tests

A real tiny causal LM (a local byte-level BPE tokenizer and a random-init 2-layer GPT-2, built here,
fine-tuned by ``lm_runs.sft``) answers prompts, and a programmatic, non-transitive oracle judges
pairs of its responses. Every NLHF algorithm of ``lm_runs.trainer`` (egpo, oipo1, oipo2, nashmd,
nashmdpg) is trained on it with the unchanged trainer, and the class-level duality gap is measured
*exactly* during training.

The game
--------
The K classes (3 ≤ K ≤ 5) are a partition of the first *character* of a response. The 26 letters are
split into K contiguous ranges, case-insensitive: letter number i (a = 0, …, z = 25) is in class
⌊iK/26⌋ (K = 3: a–i, j–r, s–z). Every other first character (digits, whitespace, punctuation,
anything non-ASCII) and the empty response are in class 0 ("other" shares class 0, by definition).

A response's class is then the class of its **first token**: with a byte-level tokenizer whose only
special token is EOS (= pad = BOS; there is no separate pad token), the judge's text is
``decode(ids, skip_special_tokens=True)`` and

* y₁ = EOS: the response is empty → class 0, and EOS is put in class 0;
* y₁ an ordinary token: its bytes are non-empty; if its first byte is ASCII, the decoded text
  starts with exactly that character whatever follows; if not, the (lossy UTF-8) decoded text starts
  with a non-ASCII character (U+FFFD or a valid multi-byte one) → class 0, and so does the token.

So ``token_class[t] = class(first character of decode([t]))`` (EOS: 0) and class(y) = token_class[y₁]
for every response, with ``clean_up_tokenization_spaces=False`` (that clean-up could turn " ." into
"."). The policy's class distribution for a prompt x is exact from ONE forward pass,

    p_θ(c | x) = Σ_{t : token_class[t] = c} π_θ(t | x)        (first-token probabilities, temperature 1).

The oracle: P(y ≻ y′ | x) = M_τ(x)[class(y), class(y′)] with M_τ cyclic (``egpo_core.games.cyclic_games``:
class i beats i+1, …, i+⌊(K−1)/2⌋ mod K with strength s; valid, M + Mᵀ = 1, diagonal ½). The prompt
type τ is the prompt's text before " game:": "forward" uses M, "backward" uses Mᵀ, and the SFT data
make the reference favour class 0 on forward prompts and class 1 on backward ones. Optionally
(``--length_bonus ε``, off by default) a within-class term is added when both classes are equal:
P = ½ + ε·tanh((w(y) − w(y′))/2), w = number of words — antisymmetric and in [0, 1] for ε ≤ ½; with
it on, the equilibrium conditionals are no longer the reference's (the class-level numbers stay exact
class-level numbers, but then they no longer describe the sequence equilibrium completely).

Why the class game's equilibrium is the sequence game's
-------------------------------------------------------
For a prompt x write π(y) = p(c) π(y | c) with c = class(y) (conditionals within a class), and the same
for π_ref with marginal r. The chain rule of KL gives

    KL(π ‖ π_ref) = KL(p ‖ r) + Σ_c p(c) KL(π(·|c) ‖ π_ref(·|c)).

Without the within-class term the preference depends on the classes only: P(π′ ≻ π) = p′ᵀ M p. Hence in
J_β(π′, π) = P(π′ ≻ π) − β KL(π′‖π_ref) + β KL(π‖π_ref) the conditionals of π′ enter only through
−β Σ_c p′(c) KL(π′(·|c)‖π_ref(·|c)) ≤ 0, so every best response keeps the reference's conditionals, and
the regularized equilibrium is  π*_β(y) = q*(c) π_ref(y | c)  with q* = π*_β of the K×K class game
with reference r (``egpo_core.equilibria.regularized_equilibrium(M, log r, β)``). Likewise the
sequence-level duality gap splits exactly into

    Gap_β^seq(π) = Gap_β^class(p) + 2β Σ_c p(c) KL(π(·|c) ‖ π_ref(·|c)),

the class gap ``egpo_core.metrics.duality_gap(M, log p, log r, β)`` plus twice β the expected
conditional KL (the attacker and the defender both drop the conditionals' KL of their own side). This
holds for the *summed* sequence log-probabilities the KL is made of, i.e. the trainer's
``length_normalize=False``. With the paper's length-normalized IPO loss (ℓ = mean per-token log-prob)
the regression target is the same but the policy's log-ratio is divided by the response length, so
the fixed point is no longer π*_β; the benchmark runs that variant too (``metrics_length_normalized.csv``)
and measures the same exact class-level numbers, which then show how far from π*_β it settles.
Responses are cut at ``max_new_tokens``: all KLs here are those of the truncated-response
distributions the trainer actually samples, which does not change anything above.

Measurements (per evaluation point, averaged over the evaluation prompts; update 0 = π_ref)
----------------------------------------------------------------------------------------------
``duality_gap``        Gap_β^class(p_θ)  = 2β KL(p_θ ‖ softmax(log r + M p_θ / β))   (exact)
``exploitability``     max_c (M p_θ)_c − ½                                          (exact)
``kl_to_equilibrium``  KL(q* ‖ p_θ)                                                  (exact)
``conditional_kl``     Σ_c p_θ(c) KL(π_θ(·|c) ‖ π_ref(·|c)), sampled: the mean over y ~ π_θ of
                       log π_θ(y)/π_ref(y) − log p_θ(c(y))/r(c(y)), whose expectation it is;
                       ``conditional_kl_se`` its standard error over the samples.

Evaluation runs in a ``TrainerCallback`` after every ``eval_every`` updates (EGPO: after the full
step), one forward pass over the evaluation prompts (plus the samples for the conditional KL).

Outputs (in ``--out``)
----------------------
``game.json``           β, the classes' token ids, the matrices, every prompt with its type and the
                        reference's exact class probabilities (recompute q* and the reference's gap
                        from this file alone), plus the first-character rule and the settings.
``metrics.csv``         tidy: algorithm, seed, update, metric, value (summed log-probabilities).
``metrics_length_normalized.csv``  the same for the length-normalized runs.
``simulation.csv``      egpo_core's simulation of the same class games (tidy: algorithm, eta, update, metric, value).
``comparison.csv``      per algorithm: the LM's final gaps, the fitted η and the simulation's predictions.
``gap_curves.png/.pdf``, ``simulation.png/.pdf``, ``length_normalized.png/.pdf``  figures.
``summary.json``        timings, settings, the headline numbers and ``runs``: one entry per training run
                        {algorithm, seed, variant ("summed" or "length_normalized"), path} with the
                        run's folder relative to ``--out`` (:func:`run_name`:
                        ``runs/<algorithm>_<sum|ln>_seed<seed>``); read the folders from there.
``model/``, ``sft/``, ``runs/<run>/final``  the tiny model, π_ref and every run's final policy
                        (``runs/<run>/epochs/epoch-k`` too with ``keep_checkpoints``).
``win_rates/``          :func:`win_rate_tables` on the first seed's epoch checkpoints: the ``lm_runs.evaluate``
                        output (win rates vs π_ref by epoch, the pairwise table, tidy CSV), oracle judge.

How the simulation is compared (the LM's step is not η): egpo_core simulates every algorithm on
the class games from q₀ = r with exact expected updates and tabular (softmax) policies over a grid of
mirror-descent steps η; the mixture coefficient of Nash-MD is the LM's. An "effective" η is fitted
per algorithm (least squares between log gaps at the evaluation points), and one common η for all
algorithms; the comparison reports the orderings of the final gaps and the fitted steps, not a
claim that the curves coincide.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from egpo_core.files import atomic_path, atomic_write
from lm_runs.tiny import build_tiny_tokenizer  # the tiny models' BPE and chat template, EOS as the only special token

__all__ = [
    "PROMPT_TYPES",
    "ALGORITHMS",
    "WORD_POOL",
    "char_class",
    "text_class",
    "token_classes",
    "class_matrices",
    "prompt_type",
    "ClassOracle",
    "ClassGame",
    "class_log_probs",
    "class_metrics",
    "conditional_kl_estimate",
    "build_benchmark_model",
    "make_prompts",
    "make_sft_corpus",
    "ExactEvaluation",
    "BenchmarkSettings",
    "FAST",
    "DEFAULT",
    "run_benchmark",
    "run_name",
    "win_rate_tables",
    "main",
]

logger = logging.getLogger(__name__)

#: Prompt types: the matrix each uses (M or its transpose) and the class the reference favours.
PROMPT_TYPES: dict[str, dict[str, Any]] = {
    "forward": {"transpose": False, "favoured_class": 0},
    "backward": {"transpose": True, "favoured_class": 1},
}

#: Command-line names of the five algorithms (``lm_runs.config.ALGORITHM_ALIASES``) → egpo_core names.
ALGORITHMS: dict[str, str] = {
    "egpo": "egpo",
    "oipo1": "oipo1",
    "oipo2": "oipo2",
    "nashmd": "nash_md",
    "nashmdpg": "nash_md_pg",
}

#: Words the SFT responses are made of; each falls in the class of its first letter.
WORD_POOL = (
    "apple bird cat dog egg fish goat hat ice jam kite lemon moon nest owl pear queen rock sun star "
    "tree umbrella van water yak zebra"
).split()

#: Nouns of the prompts ("<type> game: tell me about the <noun>"); training and evaluation nouns differ.
TRAIN_NOUNS = (
    "river mountain city forest ocean garden castle island desert village bridge market "
    "library school window kitchen harbor meadow valley tower station palace temple canyon"
).split()
EVAL_NOUNS = "lake cave field road farm park shop hill".split()


# ======================================================================================================
# the class game
# ======================================================================================================


def _check_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or not 3 <= num_classes <= 5:
        raise ValueError(f"num_classes must be an integer from 3 to 5, got {num_classes!r}")
    return int(num_classes)


def char_class(ch: str, num_classes: int) -> int:
    """Class of a first character: letter i (a = 0 … z = 25, either case) → ⌊iK/26⌋; anything else → 0."""
    K = _check_classes(num_classes)
    if len(ch) != 1:
        raise ValueError(f"char_class needs one character, got {ch!r}")
    lower = ch.lower()
    if "a" <= lower <= "z" and ch.isascii():
        return (ord(lower) - ord("a")) * K // 26
    return 0


def text_class(text: str, num_classes: int) -> int:
    """Class of a response text: the class of its first character; the empty response is class 0."""
    return char_class(text[0], num_classes) if text else 0


def token_classes(tokenizer, num_classes: int) -> np.ndarray:
    """(V,) int64: token t → class of the first character of ``decode([t])``; special tokens → 0.

    Equals ``text_class(decode(ids, skip_special_tokens=True))`` for every response starting with t
    (see the module docstring; ``tests/test_synthetic_benchmark.py`` checks it over the vocabulary).
    """
    K = _check_classes(num_classes)
    special = set(tokenizer.all_special_ids)
    out = np.zeros(len(tokenizer), dtype=np.int64)
    for t in range(len(tokenizer)):
        if t not in special:
            out[t] = text_class(tokenizer.decode([t], skip_special_tokens=False), K)
    return out


def class_matrices(num_classes: int, strength: float = 1.0) -> dict[str, np.ndarray]:
    """Prompt type → its K×K preference matrix: "forward" is ``cyclic_games(1, K, strength)`` (class i
    beats i+1 … i+⌊(K−1)/2⌋ mod K), "backward" its transpose; both validated (M + Mᵀ = 1)."""
    from egpo_core.games import cyclic_games, validate_preference_matrix

    K = _check_classes(num_classes)
    if not (isinstance(strength, (int, float)) and 0 < strength <= 1):
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    forward = cyclic_games(1, K, float(strength))[0]
    out = {}
    for name, spec in PROMPT_TYPES.items():
        out[name] = validate_preference_matrix(forward.T.copy() if spec["transpose"] else forward.copy())
    return out


def prompt_type(prompt: str) -> str:
    """The type of a prompt: its text before " game:" (``ValueError`` for any other prompt)."""
    head, sep, _ = prompt.partition(" game:")
    if not sep or head not in PROMPT_TYPES:
        raise ValueError(f"not a benchmark prompt (expected '<type> game: …', type in {list(PROMPT_TYPES)}): {prompt[:60]!r}")
    return head


class ClassOracle:
    """The judge: P(a ≻ b | x) = M_τ(x)[class(a), class(b)], plus ε·tanh((w(a) − w(b))/2) when the
    classes are equal (w = word count; ``length_bonus`` ε ∈ [0, ½], default 0)."""

    def __init__(self, matrices: Mapping[str, np.ndarray], num_classes: int, length_bonus: float = 0.0):
        if not 0.0 <= length_bonus <= 0.5:
            raise ValueError(f"length_bonus must be in [0, 0.5], got {length_bonus!r}")
        self.matrices = {k: np.asarray(v, dtype=np.float64) for k, v in matrices.items()}
        self.num_classes = _check_classes(num_classes)
        self.length_bonus = float(length_bonus)
        self.calls = 0

    def preference(self, prompt: str, a: str, b: str) -> float:
        """P(a ≻ b | prompt)."""
        M = self.matrices[prompt_type(prompt)]
        ca, cb = text_class(a, self.num_classes), text_class(b, self.num_classes)
        value = float(M[ca, cb])
        if ca == cb and self.length_bonus > 0:
            value += self.length_bonus * math.tanh((len(a.split()) - len(b.split())) / 2.0)
        return min(1.0, max(0.0, value))

    def __call__(self, prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> list[float]:
        self.calls += 1
        return [self.preference(x, a, b) for x, (a, b) in zip(prompts, completions)]


@dataclass(frozen=True, eq=False)
class ClassGame:
    """The class game of a set of prompts: per prompt its matrix, the reference's class log-probs,
    q* = π*_β and the reference's metrics.

    Attributes:
        beta: β.
        prompts: the prompt texts.
        P: (n, K, K) the matrix of each prompt.
        ref_logp: (n, K) log r(c | x).
        star_logp: (n, K) log q*(c | x), q* = regularized_equilibrium(P, log r, β).
    """

    beta: float
    prompts: tuple[str, ...]
    P: np.ndarray
    ref_logp: np.ndarray
    star_logp: np.ndarray

    @classmethod
    def build(cls, matrices: Mapping[str, np.ndarray], prompts: Sequence[str], ref_probs: np.ndarray, beta: float) -> "ClassGame":
        from egpo_core.equilibria import regularized_equilibrium

        P = np.stack([np.asarray(matrices[prompt_type(x)], dtype=np.float64) for x in prompts])
        ref = np.asarray(ref_probs, dtype=np.float64)
        if ref.shape != P.shape[:2] or np.any(ref <= 0) or np.any(np.abs(ref.sum(-1) - 1) > 1e-9):
            raise ValueError(f"ref_probs must be (n, K) positive rows summing to 1, got shape {ref.shape}")
        ref_logp = np.log(ref)
        eq = regularized_equilibrium(P, ref_logp, beta)
        star = np.log(eq.policy)
        return cls(float(beta), tuple(prompts), P, ref_logp, star)

    def metrics(self, logp: np.ndarray) -> dict[str, float]:
        """:func:`class_metrics` of class log-probs ``logp`` (n, K)."""
        return class_metrics(self.P, logp, self.ref_logp, self.star_logp, self.beta)


def class_metrics(P: np.ndarray, logp: np.ndarray, ref_logp: np.ndarray, star_logp: np.ndarray, beta: float) -> dict[str, float]:
    """Means over prompts of

        duality_gap       = 2β KL(p ‖ softmax(log r + P p/β))   (egpo_core.metrics.duality_gap),
        exploitability    = max_c (P p)_c − ½,
        kl_to_equilibrium = KL(q* ‖ p).
    """
    from egpo_core.metrics import duality_gap, exploitability, kl_divergence

    return {
        "duality_gap": float(np.mean(duality_gap(P, logp, ref_logp, beta))),
        "exploitability": float(np.mean(exploitability(P, logp))),
        "kl_to_equilibrium": float(np.mean(kl_divergence(star_logp, logp))),
    }


# ======================================================================================================
# exact measurement on a language model
# ======================================================================================================


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


# ======================================================================================================
# tokenizer, model and data
# ======================================================================================================


def build_benchmark_model(out_dir: str | Path, corpus: Sequence[str], *, n_layer: int = 2, n_embd: int = 64, n_head: int = 2, seed: int = 0) -> Path:
    """A byte-level BPE tokenizer trained on ``corpus`` whose ONLY special token is EOS (also BOS and pad;
    ``lm_runs.tiny.build_tiny_tokenizer(pad_is_eos=True)``, no space clean-up on decoding) — what makes
    class(response) = token_class[first token] exact (module docstring) — plus a random-init GPT-2
    (dropout 0), saved."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(out_dir, corpus=corpus, pad_is_eos=True)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    return out_dir


def make_prompts(nouns: Sequence[str]) -> list[str]:
    """Every prompt type × noun: "<type> game: tell me about the <noun>"."""
    return [f"{kind} game: tell me about the {noun}" for kind in PROMPT_TYPES for noun in nouns]


def lead_words(num_classes: int, per_class: int = 2) -> list[list[str]]:
    """The first ``per_class`` words of :data:`WORD_POOL` in each class (the SFT responses' first words)."""
    K = _check_classes(num_classes)
    out: list[list[str]] = [[] for _ in range(K)]
    for word in WORD_POOL:
        c = text_class(word, K)
        if len(out[c]) < per_class:
            out[c].append(word)
    return out


def make_sft_corpus(prompts: Sequence[str], num_classes: int, examples: int, favoured_prob: float, seed: int = 0) -> list[dict[str, str]]:
    """SFT examples {prompt, completion}: the completion's first word is from the type's favoured class
    with probability ``favoured_prob`` (else a uniformly chosen other class), the class's first lead
    word twice as often as its second, then 0–3 words of :data:`WORD_POOL`."""
    K = _check_classes(num_classes)
    rng = random.Random(seed)
    leads = lead_words(K)
    rows = []
    for i in range(examples):
        x = prompts[i % len(prompts)]
        favoured = PROMPT_TYPES[prompt_type(x)]["favoured_class"] % K
        c = favoured if rng.random() < favoured_prob else rng.choice([k for k in range(K) if k != favoured])
        first = leads[c][0] if rng.random() < 2 / 3 or len(leads[c]) == 1 else leads[c][1]
        words = [first] + [rng.choice(WORD_POOL) for _ in range(rng.randint(0, 3))]
        rows.append({"prompt": x, "completion": " ".join(words)})
    return rows


# ======================================================================================================
# evaluation during training
# ======================================================================================================


def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class ExactEvaluation(_trainer_callback_base()):
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


# ======================================================================================================
# the pipeline
# ======================================================================================================


@dataclass(frozen=True)
class BenchmarkSettings:
    """Sizes and hyper-parameters of one benchmark run (``DEFAULT``, ``FAST``)."""

    num_classes: int = 3
    #: β = 0.05: the matrix-game theory predicts a visible EGPO advantage there (with exact gradients
    #: Online IPO 1 / Nash-MD cycle for mirror-descent steps η ≈ 1–3 while EGPO converges linearly);
    #: at β = 0.1 the algorithms separate only near η ≈ 3 (figures/README.md, the pilots).
    beta: float = 0.05
    strength: float = 1.0
    length_bonus: float = 0.0
    seeds: tuple[int, ...] = (0, 1, 2)
    algorithms: tuple[str, ...] = tuple(ALGORITHMS)
    updates: int = 80
    eval_every: int = 5
    batch_size: int = 16
    samples_per_prompt: int = 2
    learning_rate: float = 2e-3
    lr_scheduler: str = "linear"
    #: the NLHF runs' optimizer (TrainingArguments ``optim``), Adam's first-moment coefficient and the
    #: gradient-clipping norm. adam_beta1 = 0 (no momentum, RMSProp-like): with the usual 0.9 the
    #: momentum is a ~10-update lag, and a lagged step in a cyclic game spirals — every algorithm's
    #: gap fell and rose again (the β1 = 0.9 pilots); without it they settle.
    optimizer: str = "adamw_torch"
    adam_beta1: float = 0.0
    max_grad_norm: float = 1.0
    max_new_tokens: int = 4
    kl_samples: int = 8
    length_normalized_seeds: tuple[int, ...] = (0,)
    sft_examples: int = 1600
    sft_epochs: float = 6.0
    sft_learning_rate: float = 3e-3
    favoured_prob: float = 0.8
    n_layer: int = 2
    n_embd: int = 64
    train_nouns: int = len(TRAIN_NOUNS)
    eval_nouns: int = len(EVAL_NOUNS)
    sim_etas: tuple[float, ...] = tuple(float(x) for x in np.geomspace(0.01, 10.0, 31))
    keep_checkpoints: bool = False
    eval_samples_per_prompt: int = 10
    eval_bootstrap: int = 1000

    def check(self) -> None:
        """``ValueError`` naming the first bad setting."""
        _check_classes(self.num_classes)
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if not 0 <= self.length_bonus <= 0.5:
            raise ValueError(f"length_bonus must be in [0, 0.5], got {self.length_bonus}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if not self.algorithms or unknown:
            raise ValueError(f"algorithms must come from {list(ALGORITHMS)}, got {list(self.algorithms)}")
        for name in ("updates", "eval_every", "batch_size", "samples_per_prompt", "max_new_tokens", "sft_examples", "train_nouns", "eval_nouns"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.kl_samples < 0 or self.kl_samples == 1:
            raise ValueError(f"kl_samples must be 0 (off) or at least 2, got {self.kl_samples}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.adam_beta1 < 1:
            raise ValueError(f"adam_beta1 must be in [0, 1), got {self.adam_beta1}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 1 / self.num_classes < self.favoured_prob < 1:
            raise ValueError(f"favoured_prob must be in (1/K, 1), got {self.favoured_prob}")
        if self.train_nouns > len(TRAIN_NOUNS) or self.eval_nouns > len(EVAL_NOUNS):
            raise ValueError(f"at most {len(TRAIN_NOUNS)} train_nouns and {len(EVAL_NOUNS)} eval_nouns")


DEFAULT = BenchmarkSettings()
FAST = BenchmarkSettings(
    seeds=(0, 1), updates=4, eval_every=2, batch_size=4, samples_per_prompt=1, kl_samples=4, length_normalized_seeds=(0,),
    sft_examples=256, sft_epochs=2.0, train_nouns=4, eval_nouns=2,
    sim_etas=tuple(float(x) for x in np.geomspace(0.03, 3.0, 5)),
    eval_samples_per_prompt=4, eval_bootstrap=200,
)

_WRITTEN = (
    "game.json", "metrics.csv", "metrics_length_normalized.csv", "simulation.csv", "comparison.csv",
    "summary.json", "gap_curves.png", "gap_curves.pdf", "simulation.png", "simulation.pdf",
    "length_normalized.png", "length_normalized.pdf", "class_probs.csv", "model", "sft", "runs", "data",
    "win_rates",
)


def _save_figure(fig, path_png: Path) -> None:
    """``path_png`` and the same name with ``.pdf``, each written atomically."""
    for suffix in (".png", ".pdf"):
        with atomic_path(path_png.with_suffix(suffix)) as temporary:
            fig.savefig(temporary, dpi=130, bbox_inches="tight", format=suffix[1:])


def prepare_out(out: str | Path, overwrite: bool) -> Path:
    """Create ``out``; refuse a non-empty one unless ``overwrite`` (then the entries this benchmark
    writes are removed first and anything else is left alone)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"--out {out} is not empty; pass --overwrite to replace a previous run's results")
        for name in _WRITTEN:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(dict(r)) + "\n" for r in rows))


def _quiet(trainer) -> None:
    """Drop the Trainer's log printer (the benchmark shows its own progress bar)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _run_sft(model_dir: Path, data: Path, out_dir: Path, s: BenchmarkSettings) -> None:
    """π_ref: ``lm_runs.sft`` (its SFTConfig, build_trainer and save_final_model) on the generated corpus."""
    from lm_runs.sft import SFTConfig, build_trainer, save_final_model

    config = SFTConfig(
        model_name_or_path=str(model_dir), dataset=str(data), output_dir=str(out_dir),
        num_train_epochs=s.sft_epochs, learning_rate=s.sft_learning_rate, per_device_train_batch_size=32,
        warmup_steps=0, weight_decay=0.0, lr_scheduler_type="constant", use_cpu=True, report_to="none",
        save_strategy="no", logging_steps=10**6, disable_tqdm=True, seed=0, max_length=64,
    )
    trainer = build_trainer(config)
    _quiet(trainer)
    trainer.train()
    save_final_model(trainer, str(out_dir), use_peft=False)


def run_name(alg: str, seed: int, length_normalize: bool = False) -> str:
    """The folder of one training run under ``<out>/runs``: ``<alg>_sum_seed<seed>`` (summed
    log-probabilities) or ``<alg>_ln_seed<seed>`` (length-normalized). ``summary.json`` lists them
    (``runs``), so readers need not rebuild the name."""
    return f"{alg}_{'ln' if length_normalize else 'sum'}_seed{seed}"


def _train_run(
    alg: str, seed: int, length_normalize: bool, s: BenchmarkSettings, paths: dict[str, Path], game: ClassGame,
    oracle: ClassOracle, token_class: np.ndarray, bar,
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray], float]:
    """One NLHF run with the unchanged ``NLHFTrainer``; returns its records, class probabilities per
    evaluation point and wall seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_runs.config import NLHFConfig
    from lm_runs.data import load_prompts
    from lm_runs.trainer import NLHFTrainer

    run_dir = paths["runs"] / run_name(alg, seed, length_normalize)
    started = time.perf_counter()
    config = NLHFConfig(
        output_dir=str(run_dir), model_name_or_path=str(paths["sft"]), prompts=str(paths["train_prompts"]),
        judge="lm_runs.synthetic_benchmark:ClassOracle (in-process)", alg=alg, beta=s.beta,
        max_steps=s.updates, per_device_train_batch_size=s.batch_size, samples_per_prompt=s.samples_per_prompt, learning_rate=s.learning_rate,
        max_new_tokens=s.max_new_tokens, length_normalize=length_normalize, use_cpu=True, report_to="none",
        seed=seed, data_seed=seed, weight_decay=0.0, lr_scheduler_type=s.lr_scheduler, warmup_steps=0,
        optim=s.optimizer, adam_beta1=s.adam_beta1, max_grad_norm=s.max_grad_norm,
        logging_steps=10**6, disable_tqdm=True, save_strategy="no",
    )
    tokenizer = AutoTokenizer.from_pretrained(paths["sft"])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(paths["sft"])
    reference = AutoModelForCausalLM.from_pretrained(paths["sft"])
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    evaluation = ExactEvaluation(
        game, tokenizer, token_class, s.num_classes, eval_every=s.eval_every, max_updates=s.updates,
        steps_per_update=config.steps_per_update, reference=reference, kl_samples=s.kl_samples,
        max_new_tokens=s.max_new_tokens, seed=seed, progress=bar.update if bar is not None else None,
    )
    trainer = NLHFTrainer(
        model=model, args=config, judge=oracle, train_dataset=load_prompts(str(paths["train_prompts"])),
        processing_class=tokenizer, ref_model=reference, callbacks=[evaluation],
    )
    _quiet(trainer)
    trainer.train()
    trainer.save_model(str(run_dir / "final"))
    # the win-rate tables evaluate the epochs of the first seed's summed runs; they go after the tables
    if not s.keep_checkpoints and (length_normalize or seed != s.seeds[0]):
        shutil.rmtree(run_dir / "epochs", ignore_errors=True)
    for r in evaluation.records:
        r.update(algorithm=alg, seed=seed)
    return evaluation.records, evaluation.class_probs, time.perf_counter() - started


def win_rate_tables(
    bench: Path,
    out: Path | None = None,
    *,
    seed: int = 0,
    samples_per_prompt: int = 10,
    max_epochs: int = 10,
    bootstrap: int = 1000,
    overwrite: bool = True,
) -> Path:
    """The evaluation issue's win-rate tables of a finished run (``run_benchmark`` writes them into
    ``bench/win_rates``; with ``keep_checkpoints`` they can be recomputed for any seed).

    ``lm_runs.evaluate.evaluate`` on the epoch checkpoints of every algorithm's summed-log-probability
    run of training seed ``seed`` (at most ``max_epochs`` epochs, evenly spaced, the last included),
    against π_ref (the SFT model), on the benchmark's held-out prompts, with :class:`ClassOracle` as
    the judge and responses as long as in training. Writes into ``out`` (default ``bench/win_rates``)
    and returns it. Raises ``ValueError`` when the run kept no checkpoints for that seed.
    """
    from lm_runs import evaluate as ev
    from lm_runs.data import load_prompts

    bench = Path(bench)
    summary = json.loads((bench / "summary.json").read_text())
    settings = summary["settings"]
    runs = [f"{r['algorithm']}={bench / r['path']}" for r in summary["runs"] if r["variant"] == "summed" and r["seed"] == seed]
    if not runs or not any(bench.glob("runs/*/epochs/epoch-*")):
        raise ValueError(f"{bench}: no epoch checkpoints of training seed {seed} (run with keep_checkpoints)")
    models = ev.discover_runs(runs)
    last = max(spec.epoch for spec in models)
    kept = set(np.unique(np.linspace(1, last, min(max_epochs, last)).round().astype(int)))
    models = [spec for spec in models if spec.epoch in kept]
    oracle = ClassOracle(class_matrices(settings["num_classes"], settings["strength"]), settings["num_classes"],
                         settings["length_bonus"])
    prompts = load_prompts(str(bench / "data" / "eval_prompts.jsonl"))
    evaluation = ev.EvaluationSettings(
        num_prompts=len(prompts), samples_per_prompt=samples_per_prompt, max_new_tokens=settings["max_new_tokens"],
        bootstrap=bootstrap,
    )
    out = bench / "win_rates" if out is None else Path(out)
    ev.evaluate(models, str(bench / "sft"), prompts, oracle, evaluation, out, overwrite=overwrite)
    return out


def _simulate(game: ClassGame, s: BenchmarkSettings, mixture: float):
    """egpo_core's exact tabular simulation of the class games over the η grid, averaged over prompts:
    a tidy frame (algorithm, eta, update, metric, value)."""
    import pandas as pd

    from egpo_core.simulate import sweep

    names = [ALGORITHMS[a] for a in s.algorithms]
    result = sweep(
        game.P, game.ref_logp, names, betas=[game.beta], etas=list(s.sim_etas), iterations=s.updates,
        record_every=s.eval_every, metrics=("duality_gap", "exploitability", "kl_to_equilibrium"),
        mixture=mixture, progress=False,
    )
    frame = result.to_dataframe()
    frame = frame.groupby(["algorithm", "eta", "step", "metric"], observed=True)["value"].mean().reset_index()
    back = {v: k for k, v in ALGORITHMS.items()}
    frame["algorithm"] = frame["algorithm"].astype(str).map(back)
    frame = frame.rename(columns={"step": "update"})
    return frame[["algorithm", "eta", "update", "metric", "value"]]


def _log_error(lm: np.ndarray, sim: np.ndarray) -> float:
    floor = 1e-12
    return float(np.mean((np.log(np.maximum(lm, floor)) - np.log(np.maximum(sim, floor))) ** 2))


def compare_with_simulation(metrics, sim, algorithms: Sequence[str]):
    """Fit η per algorithm and one common η (least squares on log duality gaps over the evaluation
    points, LM median over seeds against the simulation's prompt mean); returns (comparison frame, fits)."""
    import pandas as pd

    gap = metrics[metrics.metric == "duality_gap"]
    lm_median = gap.groupby(["algorithm", "update"])["value"].median()
    sgap = sim[sim.metric == "duality_gap"]
    etas = np.sort(sgap.eta.unique())
    errors = {}
    for a in algorithms:
        lm_curve = lm_median.loc[a]
        for eta in etas:
            curve = sgap[(sgap.algorithm == a) & np.isclose(sgap.eta, eta)].set_index("update")["value"]
            common = lm_curve.index.intersection(curve.index)
            errors[(a, eta)] = _log_error(lm_curve.loc[common].to_numpy(), curve.loc[common].to_numpy())
    common_eta = float(min(etas, key=lambda e: sum(errors[(a, e)] for a in algorithms)))
    rows = []
    last = int(gap["update"].max())
    for a in algorithms:
        fit = float(min(etas, key=lambda e: errors[(a, e)]))
        finals = gap[(gap.algorithm == a) & (gap["update"] == last)]["value"]
        at = lambda e: float(sgap[(sgap.algorithm == a) & np.isclose(sgap.eta, e) & (sgap["update"] == last)]["value"].iloc[0])  # noqa: E731
        rows.append({
            "algorithm": a, "lm_final_gap_median": float(finals.median()), "lm_final_gap_min": float(finals.min()),
            "lm_final_gap_max": float(finals.max()), "eta_fit": fit, "sim_final_gap_at_eta_fit": at(fit),
            "log_rmse_at_eta_fit": math.sqrt(errors[(a, fit)]), "common_eta": common_eta,
            "sim_final_gap_at_common_eta": at(common_eta), "log_rmse_at_common_eta": math.sqrt(errors[(a, common_eta)]),
        })
    frame = pd.DataFrame(rows)
    frame["lm_rank"] = frame["lm_final_gap_median"].rank(method="min").astype(int)
    frame["sim_rank_at_common_eta"] = frame["sim_final_gap_at_common_eta"].rank(method="min").astype(int)
    return frame, {"common_eta": common_eta}


_COLORS = {"egpo": "C3", "oipo1": "C0", "oipo2": "C1", "nashmd": "C2", "nashmdpg": "C4"}


def _band_plot(ax, frame, metric: str, algorithms: Sequence[str], style: str = "-", label_suffix: str = "") -> None:
    data = frame[frame.metric == metric]
    for a in algorithms:
        d = data[data.algorithm == a].groupby("update")["value"]
        med, lo, hi = d.median(), d.min(), d.max()
        ax.plot(med.index, med.values, style, color=_COLORS.get(a), label=f"{a}{label_suffix}")
        if style == "-":
            ax.fill_between(med.index, lo.values, hi.values, color=_COLORS.get(a), alpha=0.15, lw=0)


def _figures(out: Path, metrics, metrics_ln, sim, comparison, s: BenchmarkSettings, game: ClassGame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algs = list(s.algorithms)
    seeds = len(s.seeds)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, metric, title in zip(axes, ("duality_gap", "exploitability", "kl_to_equilibrium"),
                                 ("class-level duality gap", "exploitability (β = 0)", "KL(π*_β ‖ π_t) on classes")):
        _band_plot(ax, metrics, metric, algs)
        ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Tiny GPT-2, K = {s.num_classes} classes, β = {s.beta}: median and min–max over {seeds} seeds "
                 f"(mean over {len(game.prompts)} evaluation prompts; update 0 = π_ref)", fontsize=9)
    _save_figure(fig, out / "gap_curves.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    gap = sim[sim.metric == "duality_gap"]
    for ax, mode in zip(axes, ("common", "fit")):
        _band_plot(ax, metrics, "duality_gap", algs)
        for _, row in comparison.iterrows():
            eta = row["common_eta"] if mode == "common" else row["eta_fit"]
            curve = gap[(gap.algorithm == row["algorithm"]) & np.isclose(gap.eta, eta)]
            ax.plot(curve["update"], curve["value"], "--", color=_COLORS.get(row["algorithm"]), lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.set_title("simulation (dashed) at the common fitted η = %.3g" % comparison["common_eta"].iloc[0]
                     if mode == "common" else "simulation (dashed) at each algorithm's fitted η", fontsize=9)
    axes[0].legend(fontsize=8)
    axes[0].set_ylabel("class-level duality gap")
    _save_figure(fig, out / "simulation.png")
    plt.close(fig)

    if metrics_ln is not None and len(metrics_ln):
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        ln_algs = [a for a in algs if a in set(metrics_ln.algorithm)]
        for ax, metric in zip(axes, ("duality_gap", "kl_to_equilibrium")):
            _band_plot(ax, metrics[metrics.seed.isin(metrics_ln.seed.unique())], metric, ln_algs, style="-", label_suffix=" summed")
            _band_plot(ax, metrics_ln, metric, ln_algs, style="--", label_suffix=" length-normalized")
            ax.set_yscale("log")
            ax.set_xlabel("update")
            ax.set_title(metric.replace("_", " "))
        axes[0].legend(fontsize=7)
        _save_figure(fig, out / "length_normalized.png")
        plt.close(fig)


def run_benchmark(out: str | Path, settings: BenchmarkSettings = DEFAULT, *, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Build tokenizer and model, SFT the reference, train every algorithm × seed (summed
    log-probabilities) and the length-normalized variant, measure, simulate, plot. Returns the summary."""
    import pandas as pd
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    settings.check()
    s = settings
    out = prepare_out(out, overwrite)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

    paths = {"data": out / "data", "model": out / "model", "sft": out / "sft", "runs": out / "runs"}
    for key in ("data", "runs"):
        paths[key].mkdir(parents=True, exist_ok=True)
    train_prompts = make_prompts(TRAIN_NOUNS[: s.train_nouns])
    eval_prompts = make_prompts(EVAL_NOUNS[: s.eval_nouns])
    corpus = make_sft_corpus(train_prompts, s.num_classes, s.sft_examples, s.favoured_prob, seed=0)
    paths["train_prompts"] = paths["data"] / "train_prompts.jsonl"
    _write_jsonl(paths["train_prompts"], ({"prompt": x} for x in train_prompts))
    _write_jsonl(paths["data"] / "eval_prompts.jsonl", ({"prompt": x} for x in eval_prompts))
    _write_jsonl(paths["data"] / "sft.jsonl", corpus)

    # 1. tokenizer + random-init model, 2. SFT → π_ref
    t0 = time.perf_counter()
    tokenizer_text = [r["completion"] for r in corpus] + train_prompts + eval_prompts + WORD_POOL
    build_benchmark_model(paths["model"], tokenizer_text, n_layer=s.n_layer, n_embd=s.n_embd)
    _run_sft(paths["model"], paths["data"] / "sft.jsonl", paths["sft"], s)
    timings["build_and_sft_s"] = time.perf_counter() - t0

    # 3. the class game of the evaluation prompts, from π_ref's exact class distribution
    tokenizer = AutoTokenizer.from_pretrained(paths["sft"])
    token_class = token_classes(tokenizer, s.num_classes)
    matrices = class_matrices(s.num_classes, s.strength)
    reference = AutoModelForCausalLM.from_pretrained(paths["sft"])
    all_prompts = eval_prompts + train_prompts
    ids, mask = encode_prompts(tokenizer, all_prompts)
    ref_probs_all = np.exp(class_log_probs(reference, ids, mask, token_class, s.num_classes))
    ref_probs_all /= ref_probs_all.sum(-1, keepdims=True)
    game = ClassGame.build(matrices, eval_prompts, ref_probs_all[: len(eval_prompts)], s.beta)
    oracle = ClassOracle(matrices, s.num_classes, s.length_bonus)
    game_json = {
        "beta": s.beta,
        "num_classes": s.num_classes,
        "classes": [np.flatnonzero(token_class == c).tolist() for c in range(s.num_classes)],
        "matrices": {k: v.tolist() for k, v in matrices.items()},
        "prompts": [
            {"text": x, "type": prompt_type(x), "split": "eval" if i < len(eval_prompts) else "train",
             "reference_class_probs": ref_probs_all[i].tolist()}
            for i, x in enumerate(all_prompts)
        ],
        "equilibrium_class_probs": {x: np.exp(game.star_logp[i]).tolist() for i, x in enumerate(eval_prompts)},
        "reference_duality_gap": game.metrics(game.ref_logp)["duality_gap"],
        "class_rule": "class of the response's first character: letter i (a=0..z=25, any case) -> floor(i*K/26); "
                      "any other character and the empty response (EOS first) -> 0; token t -> class of decode([t])[0], EOS -> 0",
        "prompt_type_rule": "the prompt text before ' game:'",
        "length_bonus": s.length_bonus,
        "metrics_prompts": "the prompts with split == 'eval'",
        "tokens": {str(t): tokenizer.decode([t]) for t in range(len(tokenizer))},
    }
    atomic_write(out / "game.json", json.dumps(game_json, indent=1))
    del reference

    # 4. NLHF training: every algorithm × seed, then the length-normalized variant
    runs = [(a, seed, False) for seed in s.seeds for a in s.algorithms]
    runs += [(a, seed, True) for seed in s.length_normalized_seeds for a in s.algorithms if a != "nashmdpg"]
    total_steps = sum(s.updates for _ in runs)
    records: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    class_rows = []
    run_seconds: dict[str, list[float]] = {}
    with tqdm(total=total_steps, desc="NLHF updates", unit="upd", disable=not progress) as bar:
        for alg, seed, ln in runs:
            bar.set_postfix_str(f"{alg} seed {seed}{' ln' if ln else ''}")
            recs, probs, seconds = _train_run(alg, seed, ln, s, paths, game, oracle, token_class, bar)
            records[ln] += recs
            run_seconds.setdefault(f"{alg}{'_ln' if ln else ''}", []).append(seconds)
            for update, p in probs.items():
                for i, x in enumerate(eval_prompts):
                    class_rows.append({"variant": "length_normalized" if ln else "summed", "algorithm": alg, "seed": seed,
                                       "update": update, "prompt": x, **{f"p{c}": float(p[i, c]) for c in range(s.num_classes)}})
    timings["nlhf_s"] = sum(sum(v) for v in run_seconds.values())
    columns = ["algorithm", "seed", "update", "metric", "value"]
    metrics = pd.DataFrame(records[False])[columns].sort_values(["algorithm", "seed", "metric", "update"], kind="stable")
    atomic_write(out / "metrics.csv", metrics.to_csv(index=False))
    metrics_ln = pd.DataFrame(records[True], columns=columns)
    if len(metrics_ln):
        metrics_ln = metrics_ln.sort_values(["algorithm", "seed", "metric", "update"], kind="stable")
    atomic_write(out / "metrics_length_normalized.csv", metrics_ln.to_csv(index=False))
    atomic_write(out / "class_probs.csv", pd.DataFrame(class_rows).to_csv(index=False))

    # 5. the simulation of the same class games, the comparison and the figures
    t0 = time.perf_counter()
    from lm_runs.config import NLHFConfig

    mixture = NLHFConfig.__dataclass_fields__["mixture_coef"].default
    sim = _simulate(game, s, mixture)
    atomic_write(out / "simulation.csv", sim.to_csv(index=False))
    comparison, fits = compare_with_simulation(metrics, sim, list(s.algorithms))
    atomic_write(out / "comparison.csv", comparison.to_csv(index=False))
    _figures(out, metrics, metrics_ln, sim, comparison, s, game)
    timings["simulation_and_figures_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    final = metrics[metrics["update"] == s.updates]
    summary = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()},
        "timings": timings,
        "seconds_per_run": {k: float(np.mean(v)) for k, v in run_seconds.items()},
        "reference": game.metrics(game.ref_logp),
        "final_median": {
            a: {m: float(final[(final.algorithm == a) & (final.metric == m)]["value"].median())
                for m in ("duality_gap", "exploitability", "kl_to_equilibrium", "conditional_kl") if m in set(final.metric)}
            for a in s.algorithms
        },
        "common_eta": fits["common_eta"],
        "win_rates": "win_rates",
        "judge_calls": oracle.calls,
        "runs": [
            {"algorithm": alg, "seed": seed, "variant": "length_normalized" if ln else "summed",
             "path": f"runs/{run_name(alg, seed, ln)}"}
            for alg, seed, ln in runs
        ],
    }
    if len(metrics_ln):
        fl = metrics_ln[(metrics_ln["update"] == s.updates) & (metrics_ln.metric == "duality_gap")]
        summary["final_median_length_normalized_gap"] = {a: float(g["value"].median()) for a, g in fl.groupby("algorithm")}
    atomic_write(out / "summary.json", json.dumps(summary, indent=1))

    # 6. the evaluation issue's win-rate tables (oracle judge) on the first seed's epoch checkpoints
    t0 = time.perf_counter()
    win_rate_tables(out, seed=s.seeds[0], samples_per_prompt=s.eval_samples_per_prompt, bootstrap=s.eval_bootstrap)
    if not s.keep_checkpoints:
        for alg in s.algorithms:
            shutil.rmtree(paths["runs"] / run_name(alg, s.seeds[0], False) / "epochs", ignore_errors=True)
    summary["timings"]["win_rates_s"] = time.perf_counter() - t0
    atomic_write(out / "summary.json", json.dumps(summary, indent=1))
    return summary


# ======================================================================================================
# command line
# ======================================================================================================


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lm_runs.synthetic_benchmark",
        description="Tiny-LM NLHF benchmark with an exactly known (class-level) Nash equilibrium.",
    )
    p.add_argument("--out", required=True, help="Output directory (must be empty or absent unless --overwrite).")
    p.add_argument("--fast", action="store_true", help="A seconds-long version (for tests).")
    p.add_argument("--overwrite", action="store_true", help="Replace a previous run's results in --out.")
    p.add_argument("--num_classes", type=int, help="K, 3 to 5.")
    p.add_argument("--beta", type=float, help="β of the game.")
    p.add_argument("--seeds", type=int, nargs="+", help="Training seeds.")
    p.add_argument("--updates", type=int, help="Updates per run (every algorithm gets the same number).")
    p.add_argument("--eval_every", type=int, help="Evaluate every n updates.")
    p.add_argument("--learning_rate", type=float, help="AdamW learning rate of the NLHF runs.")
    p.add_argument("--lr_scheduler", help="Learning-rate schedule of the NLHF runs (a TrainingArguments lr_scheduler_type).")
    p.add_argument("--adam_beta1", type=float, help="Adam's first-moment coefficient (0: no momentum, the default).")
    p.add_argument("--length_bonus", type=float, help="ε of the within-class length term (default 0: off).")
    p.add_argument("--length_normalized_seeds", type=int, nargs="*", help="Seeds of the length-normalized runs (none: skip).")
    p.add_argument("--keep_checkpoints", action="store_true", help="Keep every run's epochs/epoch-k checkpoints.")
    p.add_argument("--no_progress", action="store_true", help="No progress bar.")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, run the benchmark, print where the results are; one ``error:`` line (exit 2)
    for a bad option or a non-empty ``--out``."""
    parser = _parser()
    args = parser.parse_args(argv)
    base = FAST if args.fast else DEFAULT
    overrides = {}
    for name in ("num_classes", "beta", "updates", "eval_every", "learning_rate", "lr_scheduler", "adam_beta1", "length_bonus"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.seeds is not None:
        overrides["seeds"] = tuple(args.seeds)
    if args.length_normalized_seeds is not None:
        overrides["length_normalized_seeds"] = tuple(args.length_normalized_seeds)
    if args.keep_checkpoints:
        overrides["keep_checkpoints"] = True
    settings = replace(base, **overrides)
    try:
        settings.check()
        prepare_out(args.out, args.overwrite)
    except ValueError as error:
        parser.error(str(error))
    summary = run_benchmark(args.out, settings, overwrite=True, progress=not args.no_progress)
    print(f"results in {args.out}: metrics.csv, gap_curves.png, comparison.csv ({summary['timings']['total_s']:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
