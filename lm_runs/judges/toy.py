"""Rule-based judges with known preferences, for smoke runs, tutorials and tests.

    python -m lm_runs.train_nlhf --judge lm_runs.judges.toy:prefer_shorter ...

Both are soft, position-symmetric (P(a ≻ b) + P(b ≻ a) = 1) and deterministic.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["prefer_shorter", "prefer_vowels", "vowels"]


def vowels(text: str) -> int:
    """The number of the letters a, e, i, o, u in ``text``."""
    return sum(text.count(v) for v in "aeiou")


def prefer_shorter(prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> list[float]:
    """P(a ≻ b) = ½ + (|b| − |a|) / (2·(|a| + |b| + 1)), |·| in characters."""
    return [0.5 + (len(b) - len(a)) / (2.0 * (len(a) + len(b) + 1)) for a, b in completions]


def prefer_vowels(prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> list[float]:
    """P(a ≻ b) = ½ + (v(a) − v(b)) / (2·(v(a) + v(b) + 1)), v = :func:`vowels`."""
    return [0.5 + (vowels(a) - vowels(b)) / (2.0 * (vowels(a) + vowels(b) + 1)) for a, b in completions]
