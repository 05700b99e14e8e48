"""Held-out win rates of NLHF checkpoints: ``python -m lm_runs.evaluate``.

The paper's protocol (EGPO, Zhou, Fazel & Du, language-model evaluation), with its reference code's
defects removed.

Protocol
--------
1. **Generation.** Every model (π_ref, every ``epochs/epoch-k`` of every run, extra models) samples
   K responses (``--samples_per_prompt``, default 10) to each of the n held-out prompts
   (``--num_prompts``, default 100) at temperature 1, top-k 100, top-p 0.95 (configurable), the
   prompt rendered with the tokenizer's chat template (:class:`lm_runs.data.PromptCollator`).
   Batches hold ``prompts_per_batch`` consecutive prompts × K samples, and batch c of model m is
   seeded with a hash of (seed, content(m), c), where content(m) is the digest of m's weight, config
   and tokenizer files (its name for an in-memory model): response (m, i, j) is the same on every
   rerun, a resumed generation continues exactly where it stopped, and two folders holding the same
   model draw the same responses (different models draw independently). Responses are the decoded tokens up to
   (without) EOS; an empty response is kept as the empty string and counted, never re-sampled or
   glued to another.
2. **Judging.** Pair (i, j) of models A and B is A's response j to prompt i against B's response j,
   judged on :func:`lm_runs.data.prompt_text` (the text the trainer's judge sees). Its preference is

       P_ij = ½·(P(a ≻ b) + 1 − P(b ≻ a))               (both orders, the default; Arena-Hard's protocol), or
       P_ij = P(a ≻ b)                                  (``--both_orders false``),

   where P(b ≻ a) is the judge's answer with the two responses swapped (the judge is then asked not
   to shuffle the order itself). The measured **position bias** is

       bias = mean over pairs of distinct responses of ½·(P(a ≻ b) + P(b ≻ a)) − ½,

   the mean excess probability the judge gives to whichever response is shown first; the averaged
   P_ij removes any bias of the form P(first ≻ second) = P*(first ≻ second) + δ exactly (asked one
   order, +δ would be in every entry). A pair of **identical responses** is P_ij = ½ by symmetry and
   is not asked (its record carries ``"same": true``): a model ties with a copy of itself exactly.
   The judge is called through :meth:`lm_runs.judges.CheckedJudge.judge_or_missing`: a judgement the
   judge cannot give (it raises — :class:`~lm_runs.judges.JudgeError`, or any exception of a Python
   judge callable —, or answers None/NaN/a non-probability for that item) is **missing**: it is
   recorded with its reason, left out of every mean, and counted (``n_missing``). With both orders a
   pair is missing when either order is. A batch that fails is re-asked pair by pair, so one bad pair
   does not take its batch with it; ``max_consecutive_judge_errors`` (16) missing pairs in a row stop
   the evaluation (a judge that is down), as do more than ``--max_missing_fraction`` missing pairs in
   a comparison.
   A **reward-model judge** (P(a ≻ b | x) = σ((r(x, a) − r(x, b))/τ)) is not asked pair by pair: each
   response is scored once (``scores/<model>.jsonl``; with M models, π_ref included, M·K rewards per
   prompt however many comparisons) and each pair's record is formed from the two rewards, exactly as
   the judge would answer it (:mod:`lm_runs.evaluate.scoring`). Both orders cost nothing more:
   P(b ≻ a) = 1 − P(a ≻ b) by construction, and the measured position bias is 0.
3. **Win rate and interval.** For prompts S (a split), with m_ij = 1 where P_ij is not missing,

       win_rate(A, B; S) = Σ_{i∈S} Σ_j m_ij·P_ij / Σ_{i∈S} Σ_j m_ij,

   and its 95 % interval is the 2.5 / 97.5 percentiles of the same ratio over ``--bootstrap``
   resamples of S's prompts with replacement (each prompt keeping its K pairs together; the same
   resamples for every entry of a split, so entries are paired). An entry from |S| < 30 prompts
   (:data:`~lm_runs.evaluate.statistics.MIN_INTERVAL_PROMPTS`) is flagged (``few_prompts``): the
   percentile bootstrap then understates the uncertainty (coverage 93.6 % at 30 prompts, 81 % at 4).
4. **Selection without reuse.** The prompts are split once, by a seeded permutation, into a
   *selection* split (``--selection_fraction``, default ½) and a *report* split. The best
   ``best_per_algorithm`` (2) epochs of each algorithm are those with the highest win rate against
   π_ref on the selection split; the pairwise table compares them on the report split only.
   (The reference code chose and reported on the same prompts, overstating the winners.)

Tables (:mod:`lm_runs.evaluate.tables`): win rate against π_ref for every epoch of every algorithm (on all
prompts: nothing is chosen from it) and the pairwise row-beats-column table of the selected models
(on the report split), in percent, one decimal, bold where the row wins, epochs labelled 1-based
(``epoch-k`` → ``k``, the model after k epochs). The ``*_ci`` tables are the same with each entry's
95 % interval ``[low, high]`` after it. A flagged entry carries a dagger and is never bold; under every
table a note explains the dagger (when there is one) and states the judge's position bias over the
table's pairs (or that one order was asked, so it is in every entry); the command prints the bias at
the end. Every entry, with its interval, is also in the tidy ``winrates.csv``/``.parquet``
(``split`` ∈ all / selection / report).

Outputs under ``--output_dir``::

    settings.json                      the fingerprint of everything that changes a generation or a judgement,
                                       the judge by content (CheckedJudge.identity: a model folder's file
                                       digests, a callable's module source digest, a served judge's identity
                                       from the server's /health — its URL only for an older server —, checked
                                       again after every call to the server; an OpenAI-compatible endpoint's
                                       URL, model and model record) and the prompts' hash
    generations/<model>.jsonl          {"prompt", "sample", "text", "truncated", "num_tokens"} per response
    generations/<model>.meta.json      which model (the digests of its weight, config and tokenizer files) made them
    judgements/<A>__vs__<B>.jsonl      {"prompt", "sample", "p_ab", "p_ba", "error"[, "same"]} per pair
    scores/<model>.jsonl               {"prompt", "sample", "reward", "sha256"} per response (a reward-model judge
                                       only; a saved reward is reused for the response whose SHA-256 it names)
    winrates.csv, winrates.parquet     tidy: model, opponent, algorithm, epoch, win_rate, ci_low, ci_high,
                                       n_pairs, n_missing, split, comparison, position_bias, n_bias_pairs,
                                       few_prompts, ...
    summary.json                       settings, judge, models, splits, selection, per-comparison counts and
                                       bias, intervals (min_prompts, flagged entries), the tables' notes
    tables/vs_reference.{md,tex}, tables/pairwise.{md,tex}   (and *_ci.* with the intervals)

Every file is written atomically (``egpo_core.files.atomic_write``: a temporary file, then
``os.replace``): generations after each batch, judgements after each judge call, so a killed
evaluation (or Ctrl-C: one line, exit status 130) resumes where it stopped, regenerating no finished
model and re-asking no recorded judgement; a file that cannot be written (a full disk, a quota, the
file-size limit) stops the evaluation with one line naming it and the cause (exit status 2), leaving
it as it was. A rerun whose settings, judge or prompts differ from
``settings.json`` is refused (use a new ``--output_dir`` or ``--overwrite``), as is a model name whose
saved generations came from different weights, and an ``--output_dir`` that is a file or holds files
that are not an evaluation's. Before any model loads, the reference and every model are checked to be
causal LMs and the judge to be a judge (:func:`lm_runs.models.check_model_source`,
:func:`lm_runs.judges.check_judge_spec`: a causal LM given as ``--judge`` is refused); an
``epochs/epoch-k`` folder whose ``config.json`` a killed save left empty is skipped with a warning.

Python API: :func:`evaluate` (models, reference, prompts, judge, settings, output_dir) →
:class:`EvaluationResult`; :func:`render_tables`; :func:`discover_runs`; :func:`win_rate_ci`.

Modules: ``settings`` (options, fingerprint, identities) · ``runs`` (finding the epochs of training
runs) · ``responses`` (generation) · ``judging`` (judgements, missing ones, position bias) ·
``scoring`` (a reward-model judge: scores once, pairs from scores) · ``statistics`` (win rates,
bootstrap, split, selection) · ``tables`` (Markdown/LaTeX) · ``folder``
(the output folder: its files, the refusals, the pinned settings) · ``summary`` (the tidy win rates
and ``summary.json``) · ``orchestration`` (the resumable evaluation: generate, judge, summarise) ·
``command`` (flags and checks) · ``__main__`` (the entry point).

    python -m lm_runs.evaluate --reference runs/sft --runs runs/egpo runs/oipo1 \\
        --prompts heldout.jsonl --judge runs/pm --output_dir runs/eval [--both_orders false]
"""

from __future__ import annotations

from .command import EvaluateArguments, main
from .judging import FailureStreak, judge_pairs, position_bias, preferences
from .orchestration import evaluate
from .responses import generate_responses
from .runs import discover_runs, read_algorithm
from .settings import REFERENCE, EvaluationError, EvaluationResult, EvaluationSettings, ModelSpec
from .statistics import select_best, split_indices, win_rate_ci
from .tables import render_pairwise, render_tables, render_vs_reference

__all__ = [
    "REFERENCE",
    "EvaluationError",
    "EvaluationSettings",
    "ModelSpec",
    "EvaluationResult",
    "EvaluateArguments",
    "discover_runs",
    "read_algorithm",
    "generate_responses",
    "judge_pairs",
    "FailureStreak",
    "preferences",
    "position_bias",
    "win_rate_ci",
    "split_indices",
    "select_best",
    "render_tables",
    "render_vs_reference",
    "render_pairwise",
    "evaluate",
    "main",
]
