"""Judges for the tests, importable as ``toy_judges:NAME`` (tests/ is on the path): the shipped
rule-based judges plus misbehaving ones."""

from __future__ import annotations

from lm_runs.judges.toy import prefer_shorter, prefer_vowels, vowels  # noqa: F401


def out_of_range(prompts, completions):
    return [1.5 for _ in completions]


def wrong_count(prompts, completions):
    return [0.5]
