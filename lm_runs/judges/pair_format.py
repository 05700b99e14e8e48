"""The text a pairwise preference model reads: one prompt and two responses, in a fixed layout.

Training (``lm_runs.train_preference_model``) and judging (``PreferenceModelJudge``) both render
pairs with :func:`render_pair`, so the model is queried in exactly the format it was trained on.
Label 0 means "the first response is better"; P(first ≻ second) is the softmax of label 0.
"""

from __future__ import annotations

__all__ = ["render_pair", "FIRST_IS_BETTER", "SECOND_IS_BETTER"]

FIRST_IS_BETTER = 0
SECOND_IS_BETTER = 1


def render_pair(prompt: str, first: str, second: str) -> str:
    """The pairwise query: the prompt, then response 0 and response 1, then the question."""
    return (
        f"Prompt: {prompt}\n\n"
        f"Response 0: {first}\n\n"
        f"Response 1: {second}\n\n"
        "Which response is better, 0 or 1?"
    )
