"""Judges with known preferences for the tests, importable as ``toy_judges:NAME`` (tests/ is on the path)."""

from __future__ import annotations

MARKER = "cat"


def prefer_marker(prompts, completions):
    """1 if only the first response contains MARKER, 0 if only the second does, else ½."""
    out = []
    for a, b in completions:
        has_a, has_b = MARKER in a, MARKER in b
        out.append(0.5 if has_a == has_b else 1.0 if has_a else 0.0)
    return out


def vowels(text: str) -> int:
    return sum(text.count(v) for v in "aeiou")


def prefer_vowels(prompts, completions):
    """A soft preference for more vowels: ½ + (v(a) − v(b))/(2·(v(a) + v(b) + 1)), v = vowel count."""
    return [0.5 + (vowels(a) - vowels(b)) / (2.0 * (vowels(a) + vowels(b) + 1)) for a, b in completions]


def prefer_shorter(prompts, completions):
    """A soft, position-symmetric preference for the shorter response: ½ + (len b − len a)/(2·(len a + len b + 1))."""
    return [0.5 + (len(b) - len(a)) / (2.0 * (len(a) + len(b) + 1)) for a, b in completions]


def out_of_range(prompts, completions):
    return [1.5 for _ in completions]


def wrong_count(prompts, completions):
    return [0.5]
