"""The class game: K response classes, a cyclic preference between them, its regularized equilibrium.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "PROMPT_TYPES",
    "check_classes",
    "char_class",
    "text_class",
    "class_matrices",
    "prompt_type",
    "ClassOracle",
    "ClassGame",
    "class_metrics",
]

#: Prompt types: the matrix each uses (M or its transpose) and the class the reference favours.
PROMPT_TYPES: dict[str, dict[str, Any]] = {
    "forward": {"transpose": False, "favoured_class": 0},
    "backward": {"transpose": True, "favoured_class": 1},
}


def check_classes(num_classes: int) -> int:
    """``num_classes`` as an int when it is an integer K with 3 ≤ K ≤ 5, else ``ValueError`` naming it."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or not 3 <= num_classes <= 5:
        raise ValueError(f"num_classes must be an integer from 3 to 5, got {num_classes!r}")
    return int(num_classes)


def char_class(ch: str, num_classes: int) -> int:
    """Class of a first character: letter i (a = 0 … z = 25, either case) → ⌊iK/26⌋; anything else → 0."""
    K = check_classes(num_classes)
    if len(ch) != 1:
        raise ValueError(f"char_class needs one character, got {ch!r}")
    lower = ch.lower()
    if "a" <= lower <= "z" and ch.isascii():
        return (ord(lower) - ord("a")) * K // 26
    return 0


def text_class(text: str, num_classes: int) -> int:
    """Class of a response text: the class of its first character; the empty response is class 0."""
    return char_class(text[0], num_classes) if text else 0


def class_matrices(num_classes: int, strength: float = 1.0) -> dict[str, np.ndarray]:
    """Prompt type → its K×K preference matrix: "forward" is ``cyclic_games(1, K, strength)`` (class i
    beats i+1 … i+⌊(K−1)/2⌋ mod K), "backward" its transpose; both validated (M + Mᵀ = 1)."""
    from egpo_core.games import cyclic_games, validate_preference_matrix

    K = check_classes(num_classes)
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
        self.num_classes = check_classes(num_classes)
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
        """P(a ≻ b | x) for every prompt x and pair [a, b] (:meth:`preference`)."""
        self.calls += 1
        return [self.preference(x, a, b) for x, (a, b) in zip(prompts, completions)]

    def identity(self) -> dict[str, Any]:
        """The judge by content, for ``lm_runs.judges.CheckedJudge.identity`` (what evaluation caches are
        keyed on): this class's source (``source_identity``) and the game it judges by — the matrices,
        K and ε — so an oracle of another game is another judge."""
        from lm_runs.judges.base import source_identity

        return {
            "kind": "callable", **source_identity(type(self)), "num_classes": self.num_classes,
            "matrices": {k: v.tolist() for k, v in sorted(self.matrices.items())}, "length_bonus": self.length_bonus,
        }


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

