"""Judging with a scalar reward model: each response scored once, every pair formed from the scores.

A reward-model judge (:class:`~lm_runs.judges.reward_model.RewardModelJudge`, in this process or served) answers a pair as

    P(a ≻ b | x) = σ((r(x, a) − r(x, b)) / τ),

a function of the two responses' rewards alone. So the evaluation does not send pairs to it: it scores
each of a model's responses once (:func:`score_responses`, n·K texts per model, fewer where a model
repeats a response to a prompt), saves the rewards in ``scores/<model>.jsonl``, and forms every pair's
record from the saved rewards (:func:`pair_records`). With M models (π_ref included) that is M·n·K
forward passes instead of 2·n·K per comparison (both orders), whatever the number of comparisons.

The records are those :func:`~lm_runs.evaluate.judging.judge_pairs` would make through the same judge
(``p_ab`` = :func:`~lm_runs.judges.reward_model.bradley_terry` (r_a, r_b, τ), ``p_ba`` the same with the
rewards swapped, identical responses ½ with ``"same": true``), so the tables, intervals and
``summary.json`` are the same; with both orders, P(b ≻ a) = 1 − P(a ≻ b) by construction (one score per
response, no order shown), so the second order costs no forward pass and the position bias is 0 up to
rounding. Only a reward model's answers factor this way — in this process, or behind a judge server that
serves one (its score route, ``lm_runs.judges.protocol``) —: every other judge is asked pair by pair.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping, Sequence

from ..judges.reward_model import bradley_terry

__all__ = ["text_digest", "score_responses", "pair_records"]


def text_digest(text: str) -> str:
    """SHA-256 of a response's UTF-8 text: a saved reward is reused only for the same response."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def score_responses(
    model: Any,
    prompt_texts: Sequence[str],
    texts: Mapping[tuple[int, int], str],
    *,
    done: Mapping[tuple[int, int], Mapping[str, Any]] | None = None,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = False,
    desc: str = "score",
) -> dict[tuple[int, int], dict[str, Any]]:
    """r(prompt_texts[i], texts[(i, j)]) for every key (i, j) of ``texts`` from ``model`` (a scorer,
    :func:`~lm_runs.judges.reward_model.scorer_of`: a reward-model judge, or a judge server serving
    one, asked at its score route), as records
    ``{"prompt": i, "sample": j, "reward": r, "sha256": text_digest(response)}``.

    A record of ``done`` is kept when its ``sha256`` matches the response; each other distinct
    (prompt, response) is scored once, ``model.batch_size`` texts per call, and a response repeated
    under another sample of the same prompt takes the same reward. ``on_batch`` gets all records so far
    (ordered by key) after each call.
    """
    from tqdm.auto import tqdm

    records: dict[tuple[int, int], dict[str, Any]] = {}
    for key, row in (done or {}).items():
        if key in texts and row.get("sha256") == text_digest(texts[key]):
            records[key] = dict(row)
    known = {(i, texts[(i, j)]): row["reward"] for (i, j), row in records.items()}
    todo = list(dict.fromkeys((key[0], texts[key]) for key in sorted(texts) if key not in records and (key[0], texts[key]) not in known))
    batches = [todo[s : s + model.batch_size] for s in range(0, len(todo), model.batch_size)]

    def fill() -> None:
        for key in sorted(texts):
            if key not in records and (key[0], texts[key]) in known:
                records[key] = {"prompt": key[0], "sample": key[1], "reward": known[(key[0], texts[key])],
                                "sha256": text_digest(texts[key])}

    fill()
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        rewards = model.rewards([prompt_texts[i] for i, _ in batch], [text for _, text in batch])
        known.update(zip(batch, rewards))
        fill()
        if on_batch is not None:
            on_batch([records[k] for k in sorted(records)])
    return records


def pair_records(
    rewards_a: Mapping[tuple[int, int], Mapping[str, Any]],
    rewards_b: Mapping[tuple[int, int], Mapping[str, Any]],
    first: Mapping[tuple[int, int], str],
    second: Mapping[tuple[int, int], str],
    keys: Sequence[tuple[int, int]],
    temperature: float,
    *,
    both_orders: bool = True,
) -> dict[tuple[int, int], dict[str, Any]]:
    """The judgement record of pair (i, j) = (first[(i, j)], second[(i, j)]) for every key, from the
    rewards: ``p_ab`` = σ((r_a − r_b)/τ), ``p_ba`` = σ((r_b − r_a)/τ) (None without ``both_orders``),
    computed as :class:`~lm_runs.judges.reward_model.RewardModelJudge` computes them; identical responses ½ with ``"same": True``
    (as :func:`~lm_runs.evaluate.judging.judge_pairs` records them)."""
    out = {}
    for key in keys:
        i, j = key
        if first[key] == second[key]:
            out[key] = {"prompt": i, "sample": j, "p_ab": 0.5, "p_ba": 0.5 if both_orders else None, "error": None, "same": True}
            continue
        r_a, r_b = rewards_a[key]["reward"], rewards_b[key]["reward"]
        out[key] = {
            "prompt": i,
            "sample": j,
            "p_ab": bradley_terry(r_a, r_b, temperature),
            "p_ba": bradley_terry(r_b, r_a, temperature) if both_orders else None,
            "error": None,
        }
    return out
