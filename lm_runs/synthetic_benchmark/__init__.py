"""A CPU-scale language-model benchmark whose Nash equilibrium is known exactly.

    python -m lm_runs.synthetic_benchmark --out DIR            # the full setting: 11 algorithms, 15 seeds (~90 min on one quiet core)
    python -m lm_runs.synthetic_benchmark --out DIR --reuse OLD  # the same, runs OLD holds (same settings, π_ref) copied
    python -m lm_runs.synthetic_benchmark --out NEW --algorithms egpo oipo1 oipo2 nashmd nashmdpg onpo --round_eta 0.125 \
        --reuse OLD --against OLD                              # ONPO at η = 1/8, paired seed by seed with OLD's ONPO (η = 1)
    python -m lm_runs.synthetic_benchmark --out DIR --short    # the five online algorithms, 3 seeds (under 10 min; decides no pair)
    python -m lm_runs.synthetic_benchmark --out DIR --fast     # seconds, for tests

A real tiny causal LM (a local byte-level BPE tokenizer and a random-init 2-layer GPT-2, built here,
fine-tuned by ``lm_runs.sft``) answers prompts, and a programmatic, non-transitive oracle judges
pairs of its responses. Every NLHF algorithm of ``lm_runs.trainer`` (egpo, oipo1, oipo2, nashmd,
nashmdpg) is trained on it with the unchanged trainer, and the class-level duality gap is measured
*exactly* during training. The round methods of ``lm_runs.rounds`` (inpo, comal, mpo, mnpo,
``sppo_rounds``, SPPO in rounds, and onpo, whose rounds train π′ and then the policy) run beside them in
the full setting (or when ``--algorithms`` names them), on the same budget of optimizer steps and pairs per
step (``settings``; ONPO's two phases both counted), measured the same way (the policy, at round ends). Which
algorithm ends lower is decided per pair over the training seeds by an exact paired test (``verdicts``): a
statement that holds on any machine, where single runs do not.

The package, one job per module (read them in this order):

``game``         the class game: the first-character classes, the cyclic matrices, the oracle judge,
                 the regularized equilibrium and the class-level metrics — and why the class game's
                 equilibrium is the sequence game's.
``measurement``  a model's exact class distribution (one forward pass), the sampled conditional KL,
                 and :class:`ExactEvaluation`, the Trainer callback that records them during training
                 (:class:`RoundEvaluation`: the same at the round methods' round ends).
``corpus``       prompts, the SFT corpus, the tokenizer and random-init GPT-2, π_ref by ``lm_runs.sft``.
``settings``     :class:`BenchmarkSettings` with its ``DEFAULT`` (full), ``SHORT`` and ``FAST`` presets, the
                 algorithm names and the round methods' budget rule.
``simulation``   egpo_core's simulation of the same class games and the fitted effective η.
``verdicts``     per pair of algorithms: paired per-seed differences of the final β-gap and exploitability,
                 bootstrap interval, exact signed-rank test, Holm; the verdict.
``figures``      the run's figures, in the colours ``egpo_core.algorithms`` declares; :func:`redraw`.
``reuse``        the runs taken over from previous runs (``--reuse``): same settings, same π_ref, complete;
                 the run at another round-method step η whose runs join the verdicts (``--against``).
``pipeline``     :func:`run_benchmark` (every stage, the output folder's rules, the files written) and
                 :func:`win_rate_tables`.
``cli``          the command line (``python -m lm_runs.synthetic_benchmark``).
"""

from .cli import main
from .figures import redraw
from .corpus import (
    EVAL_NOUNS,
    TRAIN_NOUNS,
    WORD_POOL,
    build_benchmark_model,
    lead_words,
    make_prompts,
    make_sft_corpus,
    sft_reference,
)
from .game import (
    PROMPT_TYPES,
    ClassGame,
    ClassOracle,
    char_class,
    class_matrices,
    class_metrics,
    prompt_type,
    text_class,
)
from .measurement import ExactEvaluation, RoundEvaluation, class_log_probs, conditional_kl_estimate, encode_prompts, token_classes
from .pipeline import check_out, run_benchmark, run_name, win_rate_tables
from .reuse import load_against, load_sources
from .settings import DEFAULT, FAST, ONLINE, ROUND_METHODS, SHORT, BenchmarkSettings
from .simulation import compare_with_simulation, simulate_class_games
from .verdicts import final_values, holm, pair_verdicts, signed_rank_test, smallest_p, verdict_inputs, write_verdicts

__all__ = [
    "PROMPT_TYPES",
    "WORD_POOL",
    "TRAIN_NOUNS",
    "EVAL_NOUNS",
    "char_class",
    "text_class",
    "token_classes",
    "class_matrices",
    "prompt_type",
    "ClassOracle",
    "ClassGame",
    "class_metrics",
    "class_log_probs",
    "conditional_kl_estimate",
    "encode_prompts",
    "build_benchmark_model",
    "make_prompts",
    "lead_words",
    "make_sft_corpus",
    "sft_reference",
    "ExactEvaluation",
    "RoundEvaluation",
    "BenchmarkSettings",
    "ONLINE",
    "ROUND_METHODS",
    "load_sources",
    "load_against",
    "FAST",
    "SHORT",
    "DEFAULT",
    "simulate_class_games",
    "compare_with_simulation",
    "check_out",
    "run_benchmark",
    "run_name",
    "win_rate_tables",
    "final_values",
    "signed_rank_test",
    "smallest_p",
    "holm",
    "pair_verdicts",
    "verdict_inputs",
    "write_verdicts",
    "redraw",
    "main",
]
