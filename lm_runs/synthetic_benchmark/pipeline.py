"""The pipeline: build the tiny model, fine-tune π_ref, train every algorithm × seed with the unchanged
``NLHFTrainer`` while measuring exactly, simulate, compare, draw, and evaluate win rates.

Outputs (in ``--out``)
----------------------
``game.json``           β, the classes' token ids, the matrices, every prompt with its type and the
                        reference's exact class probabilities (recompute q* and the reference's gap
                        from this file alone), plus the first-character rule and the settings.
``metrics.csv``         tidy: algorithm, seed, update, metric, value (summed log-probabilities).
``metrics_length_normalized.csv``  the same for the length-normalized runs.
``simulation.csv``      egpo_core's simulation of the same class games (tidy: algorithm, eta, update, metric, value).
``comparison.csv``      per algorithm: the LM's final gaps, the fitted η and the simulation's predictions.
``final_per_seed.csv``  tidy: metric (duality_gap, exploitability), algorithm, seed, the final value.
``metrics_against.csv`` (with ``--against DIR``) DIR's records of this run's round methods, each named
                        ``<method>@eta=<DIR's round_eta>``: they join the verdicts, paired seed by seed.
``verdicts.csv``, ``verdicts.json``  every pair of algorithms per metric: paired differences over seeds,
                        bootstrap interval, exact signed-rank test, Holm, the verdict (:mod:`.verdicts`).
``gap_curves.png/.pdf``, ``simulation.png/.pdf``, ``length_normalized.png/.pdf``, ``verdicts.png/.pdf``  figures.
``summary.json``        the command line (null from Python), timings, settings, the headline numbers, ``verdicts`` (the
                        test, n, what n can decide, the verdict of every pair) and ``runs``: one entry per
                        training run {algorithm, seed, variant ("summed" or "length_normalized"), path,
                        seconds} with the run's folder relative to ``--out`` (:func:`run_name`:
                        ``runs/<algorithm>_<sum|ln>_seed<seed>``; read the folders from there), and for a run
                        taken over from a previous one (``reuse``: :mod:`.reuse`) ``reused_from``, its
                        source folder. ``timings``: ``nlhf_s`` the runs trained here, ``reused_s`` (with
                        ``reuse``) the taken runs' seconds as their sources recorded them; ``judge_calls``
                        counts the oracle's calls in this invocation. With ``--against DIR``, ``against``:
                        DIR, its round_eta and command, the names its runs carry here, their final medians.
``model/``, ``sft/``, ``runs/<run>/final``  the tiny model, π_ref and every run's final policy
                        (``runs/<run>/epochs/epoch-k`` too with ``keep_checkpoints``). A round method's run
                        folder is ``lm_runs.rounds``' output folder: the final policy in ``runs/<run>`` itself,
                        every round's dataset in ``runs/<run>/rounds/round-r/dataset`` (ONPO: π′'s log-probabilities
                        in ``rounds/round-r/auxiliary``; the round ends' models, ``runs/<run>/epochs/epoch-k``, and
                        parameters, ``rounds/round-r/policy.pt`` and ONPO's ``auxiliary/policy.pt``, too with
                        ``keep_checkpoints``).
``win_rates/``          :func:`win_rate_tables` on the first seed's epoch checkpoints (online algorithms only:
                        a round's epoch is a round, not an update epoch): the ``lm_runs.evaluate``
                        output (win rates vs π_ref by epoch, the pairwise table, tidy CSV), oracle judge.

How the simulation is compared (the LM's step is not η): :mod:`.simulation`.

The output folder
-----------------
The rules of ``python -m egpo_core simulate --out``: a non-empty ``--out`` is refused before anything
is computed, unless ``overwrite``; then it must hold a previous benchmark run (its ``summary.json``),
and anything else is refused rather than cleared. A run is written into a hidden sibling of ``--out``
(``.<name>.partial-<random>``) and renamed into place only once complete, so ``--out`` holds a complete
run or none, and a previous run is replaced only then: a killed or failed run leaves it as it was.
Leftovers of interrupted runs into the same ``--out`` are removed when the next run starts, and a
replacement killed between its two renames (previous run aside, new one in) is rolled back or
finished by the next command. (The
evaluation's ``win_rates/summary.json`` therefore names the models by their paths in that hidden
folder, where they were evaluated.)
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from egpo_core.algorithms import get_algorithm
from egpo_core.files import atomic_write, write_jsonl

from .corpus import EVAL_NOUNS, TRAIN_NOUNS, WORD_POOL, build_benchmark_model, make_prompts, make_sft_corpus, quiet, sft_reference
from .game import ClassGame, ClassOracle, class_matrices, prompt_type
from .measurement import ExactEvaluation, RoundEvaluation, class_log_probs, encode_prompts, token_classes
from .reuse import Source, against_metrics, check_reference, load_against, load_sources, reused_runs, take_over
from .settings import DEFAULT, BenchmarkSettings, at_eta, core_name, online_algorithms, round_alg

__all__ = ["check_out", "run_name", "run_benchmark", "win_rate_tables"]

logger = logging.getLogger(__name__)

#: What marks a folder as holding a previous benchmark run (written last).
_RUN_MARKER = "summary.json"
_PARTIAL = ".partial-"
_PREVIOUS = ".previous-"


def check_out(out: str | Path, overwrite: bool) -> Path:
    """``out`` as a Path, or ``ValueError`` (one line naming it) before anything is computed: a file; a
    folder whose parent cannot be created or written; a non-empty folder without ``overwrite``; with
    ``overwrite``, a non-empty folder that holds no previous benchmark run (no ``summary.json``).

    A replacement killed between its two renames (:func:`_move_into_place`) is first rolled back or
    finished: a previous run moved aside returns to ``out`` when nothing is there, and is removed when
    the new run is in place, so ``out`` holds one whole run or none."""
    out = Path(out)
    for previous in sorted(out.absolute().parent.glob(f".{out.name}{_PREVIOUS}*")):
        if out.exists():
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(previous, out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write --out {out}: {parent} is not a writable folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"--out {out} is not empty; pass --overwrite to replace the previous run in it "
                             "(once the new one is complete), or choose another folder")
        if not (out / _RUN_MARKER).is_file():
            raise ValueError(f"--out {out} is not empty and holds no {_RUN_MARKER} of a previous benchmark run: "
                             "refusing to replace it; clear it yourself or choose another folder")
    return out


def _work_folder(out: Path) -> Path:
    """A new hidden sibling of ``out`` to build the run in; leftovers of interrupted runs are removed."""
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    for leftover in out.absolute().parent.glob(f".{out.name}{_PARTIAL}*"):
        logger.warning("removing %s, left by an interrupted run", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
    work = out.absolute().parent / f".{out.name}{_PARTIAL}{secrets.token_hex(4)}"
    work.mkdir()
    return work


def _move_into_place(work: Path, out: Path) -> None:
    """Rename the complete run ``work`` to ``out``; a previous run (or an empty folder) there is moved
    aside first and removed once the new one is in place."""
    previous = None
    if out.exists():
        previous = out.absolute().parent / f".{out.name}{_PREVIOUS}{secrets.token_hex(4)}"
        os.replace(out, previous)
    os.replace(work, out)
    if previous is not None:
        shutil.rmtree(previous)


def run_name(alg: str, seed: int, length_normalize: bool = False) -> str:
    """The folder of one training run under ``<out>/runs``: ``<alg>_sum_seed<seed>`` (summed
    log-probabilities) or ``<alg>_ln_seed<seed>`` (length-normalized). ``summary.json`` lists them
    (``runs``), so readers need not rebuild the name."""
    return f"{alg}_{'ln' if length_normalize else 'sum'}_seed{seed}"


def _train_run(
    alg: str, seed: int, length_normalize: bool, s: BenchmarkSettings, paths: dict[str, Path], game: ClassGame,
    oracle: ClassOracle, token_class: np.ndarray, bar,
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray], float]:
    """One NLHF run with the unchanged ``NLHFTrainer``, built as ``python -m lm_runs.train_nlhf`` builds
    it (:func:`lm_runs.train_nlhf.build_trainer`) with ``oracle`` as its in-process judge (the
    configuration names no judge spec) and :class:`ExactEvaluation` added as a callback; returns its
    records, class probabilities per evaluation point and wall seconds."""
    from lm_runs.config import NLHFConfig
    from lm_runs.train_nlhf import build_trainer

    run_dir = paths["runs"] / run_name(alg, seed, length_normalize)
    started = time.perf_counter()
    if round_alg(alg) is not None:
        records, probs = _train_rounds(alg, seed, length_normalize, s, paths, game, oracle, token_class, bar, run_dir)
        return records, probs, time.perf_counter() - started
    config = NLHFConfig(
        output_dir=str(run_dir), model_name_or_path=str(paths["sft"]), prompts=str(paths["train_prompts"]),
        alg=alg, beta=s.beta,
        max_steps=s.updates, per_device_train_batch_size=s.batch_size, samples_per_prompt=s.samples_per_prompt, learning_rate=s.learning_rate,
        max_new_tokens=s.max_new_tokens, length_normalize=length_normalize, use_cpu=True, report_to="none",
        seed=seed, data_seed=seed, weight_decay=0.0, lr_scheduler_type=s.lr_scheduler, warmup_steps=0,
        optim=s.optimizer, adam_beta1=s.adam_beta1, max_grad_norm=s.max_grad_norm,
        logging_steps=10**6, disable_tqdm=True, save_strategy="no",
    )
    trainer = build_trainer(config, judge=oracle)
    evaluation = ExactEvaluation(
        game, trainer.processing_class, token_class, s.num_classes, eval_every=s.eval_every, max_updates=s.updates,
        steps_per_update=config.steps_per_update, reference=trainer.reference.frozen, kl_samples=s.kl_samples,
        max_new_tokens=s.max_new_tokens, seed=seed, progress=bar.update if bar is not None else None,
    )
    trainer.add_callback(evaluation)
    quiet(trainer)
    trainer.train()
    trainer.save_model(str(run_dir / "final"))
    # the win-rate tables evaluate the epochs of the first seed's summed runs; they go after the tables
    if not s.keep_checkpoints and (length_normalize or seed != s.seeds[0]):
        shutil.rmtree(run_dir / "epochs", ignore_errors=True)
    for r in evaluation.records:
        r.update(algorithm=alg, seed=seed)
    return evaluation.records, evaluation.class_probs, time.perf_counter() - started


def _train_rounds(
    alg: str, seed: int, length_normalize: bool, s: BenchmarkSettings, paths: dict[str, Path], game: ClassGame,
    oracle: ClassOracle, token_class: np.ndarray, bar, run_dir: Path,
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray]]:
    """One run of a round method with ``lm_runs.rounds.run_rounds`` (``oracle`` as its in-process judge),
    :meth:`BenchmarkSettings.rounds` rounds of ``s.round_epochs`` epochs, ``batch_size × samples_per_prompt``
    pairs per optimizer step (SPPO: twice as many responses) — the budget rule of :mod:`.settings`, ONPO's two
    phases per round counted — and :class:`RoundEvaluation` as a callback (the policy measured at the round ends); ``run_dir`` is the rounds' output folder (the last round's policy
    in it, every round's dataset in ``run_dir/rounds``). Returns its records and class probabilities per evaluation point."""
    from lm_runs.models import load_reference, load_tokenizer
    from lm_runs.rounds import RoundsConfig, run_rounds

    name = round_alg(alg)
    rows_per_step = s.batch_size * s.samples_per_prompt * (2 if name == "sppo" else 1)
    options = dict(
        output_dir=str(run_dir), model_name_or_path=str(paths["sft"]), prompts=str(paths["train_prompts"]),
        alg=name, rounds=s.rounds(alg), samples_per_prompt=s.round_samples_per_prompt,
        pair_selection=s.round_pair_selection, epochs_per_round=s.round_epochs, eta=s.round_eta,
        per_device_train_batch_size=rows_per_step, learning_rate=s.learning_rate,
        max_new_tokens=s.max_new_tokens, length_normalize=length_normalize, use_cpu=True, report_to="none",
        seed=seed, data_seed=seed, weight_decay=0.0, lr_scheduler_type=s.lr_scheduler, warmup_steps=0,
        optim=s.optimizer, adam_beta1=s.adam_beta1, max_grad_norm=s.max_grad_norm,
        logging_steps=10**6, disable_tqdm=True, save_strategy="no",
    )
    if name not in ("sppo", "onpo"):  # SPPO's and ONPO's round losses have no β (lm_runs.rounds refuses one)
        options["beta"] = s.beta
    if name in ("comal", "mpo"):
        options["magnet_period"] = s.round_magnet_period
    if name == "mnpo":
        options["history_length"] = s.round_history_length
    config = RoundsConfig(**options)
    evaluation = RoundEvaluation(
        game, load_tokenizer(paths["sft"], padding_side="left"), token_class, s.num_classes, eval_every=s.eval_every,
        max_updates=s.updates, reference=load_reference(paths["sft"]), kl_samples=s.kl_samples,
        max_new_tokens=s.max_new_tokens, seed=seed, progress=bar.update if bar is not None else None,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # each round's Trainer prints its train summary (no quiet() hook)
        run_rounds(config, judge=oracle, callbacks=[evaluation])
    if evaluation.done != s.updates:
        raise RuntimeError(f"{alg}: the rounds trained {evaluation.done} optimizer steps, the budget is {s.updates}")
    if not s.keep_checkpoints:  # the round ends (epochs/epoch-k and each round's parameters, ONPO's π′ too); the datasets stay
        shutil.rmtree(run_dir / "epochs", ignore_errors=True)
        for folder in (run_dir / "rounds").glob("round-*"):
            (folder / "policy.pt").unlink(missing_ok=True)
            (folder / "auxiliary" / "policy.pt").unlink(missing_ok=True)
    for r in evaluation.records:
        r.update(algorithm=alg, seed=seed)
    return evaluation.records, evaluation.class_probs


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
    runs = [f"{r['algorithm']}={bench / r['path']}" for r in summary["runs"]
            if r["variant"] == "summed" and r["seed"] == seed and round_alg(r["algorithm"]) is None]
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


def _threads() -> int:
    """The benchmark's torch threads: ``OMP_NUM_THREADS`` when it is a positive integer, else 1 (an empty
    or OpenMP-list value such as ``"4,2"`` falls back to 1 rather than failing the run)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


def run_benchmark(out: str | Path, settings: BenchmarkSettings = DEFAULT, *, overwrite: bool = False, progress: bool = True,
                  reuse: Sequence[str | Path] = (), command: str | None = None, jobs: int = 1,
                  against: str | Path | None = None) -> dict[str, Any]:
    """Build tokenizer and model, SFT the reference, train every algorithm × seed (summed
    log-probabilities) and the length-normalized variant, measure, simulate, plot, evaluate win rates;
    the run is built aside and moved into ``out`` once complete (module docstring). Returns the summary.

    ``reuse``: previous benchmark folders whose runs with these settings are taken over instead of trained
    (:mod:`.reuse`). ``command``: the command line, recorded in ``summary.json``. ``jobs``: runs trained at
    once, each in a process of its own (:func:`_train_all`; the results do not depend on it). ``against``: a
    finished run with these settings but another ``round_eta`` (:func:`.reuse.load_against`): its runs of this
    run's round methods join the verdicts as ``<method>@eta=<its η>`` (their records in ``metrics_against.csv``,
    ``summary.json``'s ``against``), each paired seed by seed with this run's.
    ``ValueError`` before anything is computed for bad settings, ``jobs`` < 1, an unusable ``out``
    (:func:`check_out`), a ``reuse`` folder that is no source for these settings (:func:`.reuse.load_sources`)
    or an ``against`` folder that cannot be compared.
    """
    settings.check()
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs must be a whole number ≥ 1, got {jobs!r}")
    sources = load_sources(reuse, settings)
    compared = None if against is None else load_against(against, settings, sources)
    out = check_out(out, overwrite).resolve()  # a symbolic link: the run replaces the folder it points to
    work = _work_folder(out)
    try:
        summary = _run_into(work, settings, progress, sources, command, jobs, against=compared)
        _move_into_place(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # still there only when the run failed
    return summary


def _run_into(out: Path, s: BenchmarkSettings, progress: bool, sources: Sequence[Source], command: str | None,
              jobs: int = 1, against: Source | None = None) -> dict[str, Any]:
    """Every stage of :func:`run_benchmark`, written into the (new, empty) folder ``out``: inputs and
    π_ref (checked against the ``sources``' and ``against``'s π_ref) → the class game → the NLHF runs (those
    the ``sources`` hold taken over) → simulation, comparison, verdicts (``against``'s round-method runs
    beside) and figures → summary → win rates."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    torch.set_num_threads(_threads())

    paths = {"data": out / "data", "model": out / "model", "sft": out / "sft", "runs": out / "runs",
             "train_prompts": out / "data" / "train_prompts.jsonl"}
    for key in ("data", "runs"):
        paths[key].mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_prompts, eval_prompts = _inputs_and_reference(paths, s)
    check_reference([*sources, *([against] if against is not None else [])], paths["sft"])
    timings["build_and_sft_s"] = time.perf_counter() - t0
    game, token_class = _class_game(out, paths, s, train_prompts, eval_prompts)
    oracle = ClassOracle(class_matrices(s.num_classes, s.strength), s.num_classes, s.length_bonus)
    runs, metrics, metrics_ln = _train_all(out, paths, s, game, oracle, token_class, progress, sources, jobs)
    timings["nlhf_s"] = sum(r["seconds"] for r in runs if "reused_from" not in r)
    if sources:
        timings["reused_s"] = sum(r["seconds"] for r in runs if "reused_from" in r)
    t0 = time.perf_counter()
    extra = None
    if against is not None:
        extra = against_metrics(against, s)
        atomic_write(out / "metrics_against.csv", extra.to_csv(index=False))
    common_eta, verdicts = _simulate_compare_draw(out, s, game, metrics, metrics_ln, extra)
    timings["simulation_and_figures_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    summary = _summary(s, game, metrics, metrics_ln, timings, common_eta, oracle.calls, runs, command)
    if against is not None:
        summary["against"] = _against_summary(against, extra, s)
    summary["verdicts"] = {"test": verdicts["test"], "alpha": verdicts["alpha"], "n_seeds": verdicts["n_seeds"],
                           "what_n_decides": verdicts["what_n_decides"], **verdicts["verdicts"]}
    atomic_write(out / "summary.json", json.dumps(summary, indent=1))

    # the evaluation issue's win-rate tables (oracle judge) on the first seed's epoch checkpoints
    t0 = time.perf_counter()
    win_rate_tables(out, seed=s.seeds[0], samples_per_prompt=s.eval_samples_per_prompt, bootstrap=s.eval_bootstrap)
    if not s.keep_checkpoints:
        for alg in s.algorithms:
            shutil.rmtree(paths["runs"] / run_name(alg, s.seeds[0], False) / "epochs", ignore_errors=True)
    summary["timings"]["win_rates_s"] = time.perf_counter() - t0
    atomic_write(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _inputs_and_reference(paths: dict[str, Path], s: BenchmarkSettings) -> tuple[list[str], list[str]]:
    """Write the prompts and the SFT corpus (``data/``), build the tokenizer and random-init model
    (``model/``) and fine-tune π_ref (``sft/``); returns (training prompts, evaluation prompts)."""
    train_prompts = make_prompts(TRAIN_NOUNS[: s.train_nouns])
    eval_prompts = make_prompts(EVAL_NOUNS[: s.eval_nouns])
    corpus = make_sft_corpus(train_prompts, s.num_classes, s.sft_examples, s.favoured_prob, seed=0)
    write_jsonl(paths["train_prompts"], ({"prompt": x} for x in train_prompts))
    write_jsonl(paths["data"] / "eval_prompts.jsonl", ({"prompt": x} for x in eval_prompts))
    write_jsonl(paths["data"] / "sft.jsonl", corpus)
    tokenizer_text = [r["completion"] for r in corpus] + train_prompts + eval_prompts + WORD_POOL
    build_benchmark_model(paths["model"], tokenizer_text, n_layer=s.n_layer, n_embd=s.n_embd)
    sft_reference(paths["model"], paths["data"] / "sft.jsonl", paths["sft"], epochs=s.sft_epochs, learning_rate=s.sft_learning_rate)
    return train_prompts, eval_prompts


def _class_game(out: Path, paths: dict[str, Path], s: BenchmarkSettings, train_prompts: list[str],
                eval_prompts: list[str]) -> tuple[ClassGame, np.ndarray]:
    """The class game of the evaluation prompts from π_ref's exact class distribution, written to
    ``game.json`` (with every prompt's reference class probabilities); returns (game, token classes)."""
    from lm_runs.models import load_reference, load_tokenizer

    tokenizer = load_tokenizer(paths["sft"])
    token_class = token_classes(tokenizer, s.num_classes)
    matrices = class_matrices(s.num_classes, s.strength)
    reference = load_reference(paths["sft"])
    all_prompts = eval_prompts + train_prompts
    ids, mask = encode_prompts(tokenizer, all_prompts)
    ref_probs_all = np.exp(class_log_probs(reference, ids, mask, token_class, s.num_classes))
    ref_probs_all /= ref_probs_all.sum(-1, keepdims=True)
    game = ClassGame.build(matrices, eval_prompts, ref_probs_all[: len(eval_prompts)], s.beta)
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
    return game, token_class


#: What a worker process of ``_train_all`` trains with (set in the parent before the pool forks).
_WORKER: dict[str, Any] = {}


def _start_worker() -> None:
    """A worker of ``_train_all``'s pool: the parent's torch threads (``_threads``)."""
    import torch

    torch.set_num_threads(_threads())


def _train_in_worker(alg: str, seed: int, ln: bool) -> tuple[list[dict[str, Any]], dict[int, np.ndarray], float, int]:
    """:func:`_train_run` in a worker process, without a progress bar; returns its records, class
    probabilities, seconds and the oracle's calls it made."""
    w = _WORKER
    before = w["oracle"].calls
    records, probs, seconds = _train_run(alg, seed, ln, w["s"], w["paths"], w["game"], w["oracle"], w["token_class"], None)
    return records, probs, seconds, w["oracle"].calls - before


def _trained(to_train: Sequence[tuple[str, int, bool]], s: BenchmarkSettings, paths: dict[str, Path], game: ClassGame,
             oracle: ClassOracle, token_class: np.ndarray, bar, jobs: int) -> dict[tuple[str, int, bool], tuple]:
    """(records, class probabilities, seconds) of each run of ``to_train``: one after the other here
    (``jobs`` = 1), or up to ``jobs`` at once in forked worker processes, each run in one process from
    the same state, so its results are the same to the last bit (a run depends on its seed and
    settings only; the oracle's calls are added up here)."""
    if jobs == 1 or len(to_train) < 2:
        return {run: _train_run(*run, s, paths, game, oracle, token_class, bar) for run in to_train}
    _WORKER.update(s=s, paths=paths, game=game, oracle=oracle, token_class=token_class)
    results = {}
    try:
        with ProcessPoolExecutor(min(jobs, len(to_train)), mp_context=multiprocessing.get_context("fork"),
                                 initializer=_start_worker) as pool:
            futures = {pool.submit(_train_in_worker, *run): run for run in to_train}
            for future in as_completed(futures):
                records, probs, seconds, calls = future.result()
                results[futures[future]] = (records, probs, seconds)
                oracle.calls += calls
                if bar is not None:
                    bar.update(s.updates)
    finally:
        _WORKER.clear()
    return results


def _train_all(out: Path, paths: dict[str, Path], s: BenchmarkSettings, game: ClassGame, oracle: ClassOracle,
               token_class: np.ndarray, progress: bool, sources: Sequence[Source], jobs: int = 1):
    """Every algorithm × seed with summed log-probabilities, then the length-normalized variant
    (:func:`_train_run`, ``jobs`` at once: :func:`_trained`; a run the ``sources`` hold is taken over,
    :func:`.reuse.take_over`); writes ``metrics.csv``, ``metrics_length_normalized.csv`` and
    ``class_probs.csv``, every run in the order of ``runs`` whatever order they finished in. Returns (the
    runs as ``summary.json`` lists them, metrics, length-normalized metrics)."""
    import pandas as pd
    from tqdm.auto import tqdm

    runs = [(a, seed, False) for seed in s.seeds for a in s.algorithms]
    # the policy-gradient loss (Nash-MD-PG) always sums: no length-normalized variant
    runs += [(a, seed, True) for seed in s.length_normalized_seeds for a in s.algorithms if get_algorithm(core_name(a)).loss != "pg"]
    taken = reused_runs(sources, runs, s)
    if sources:
        logger.warning("taking over %d of the %d runs from %s", len(taken), len(runs), ", ".join(str(x.path) for x in sources))
    total_steps = sum(s.updates for _ in runs)
    records: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    class_rows = []
    listed = []
    with tqdm(total=total_steps, desc="NLHF updates", unit="upd", disable=not progress) as bar:
        trained = _trained([run for run in runs if run not in taken], s, paths, game, oracle, token_class, bar, jobs)
        for alg, seed, ln in runs:
            entry = {"algorithm": alg, "seed": seed, "variant": "length_normalized" if ln else "summed",
                     "path": f"runs/{run_name(alg, seed, ln)}"}
            if (alg, seed, ln) in taken:
                run = taken[(alg, seed, ln)]
                recs, rows = take_over(run, alg, seed, ln, s, out / entry["path"])
                class_rows += rows
                entry.update(seconds=run.seconds, reused_from=str(run.folder))
                bar.update(s.updates)
            else:
                recs, probs, seconds = trained[(alg, seed, ln)]
                entry["seconds"] = seconds
                for update, p in probs.items():
                    for i, x in enumerate(game.prompts):
                        class_rows.append({"variant": entry["variant"], "algorithm": alg, "seed": seed, "update": update,
                                           "prompt": x, **{f"p{c}": float(p[i, c]) for c in range(s.num_classes)}})
            records[ln] += recs
            listed.append(entry)
    columns = ["algorithm", "seed", "update", "metric", "value"]
    metrics = pd.DataFrame(records[False])[columns].sort_values(["algorithm", "seed", "metric", "update"], kind="stable")
    atomic_write(out / "metrics.csv", metrics.to_csv(index=False))
    metrics_ln = pd.DataFrame(records[True], columns=columns)
    if len(metrics_ln):
        metrics_ln = metrics_ln.sort_values(["algorithm", "seed", "metric", "update"], kind="stable")
    atomic_write(out / "metrics_length_normalized.csv", metrics_ln.to_csv(index=False))
    atomic_write(out / "class_probs.csv", pd.DataFrame(class_rows).to_csv(index=False))
    return listed, metrics, metrics_ln


def _simulate_compare_draw(out: Path, s: BenchmarkSettings, game: ClassGame, metrics, metrics_ln, against=None
                           ) -> tuple[float, dict[str, Any]]:
    """egpo_core's simulation of the same class games (``simulation.csv``), the fitted η
    (``comparison.csv``), the verdicts (``final_per_seed.csv``, ``verdicts.csv``, ``verdicts.json``:
    :mod:`.verdicts`; with ``against``, :func:`.reuse.against_metrics`' records, their algorithms beside
    this run's) and the figures, at the trainer's Nash-MD mixture coefficient; returns the common
    fitted η and the verdicts' JSON content."""
    from lm_runs.config import NLHFConfig

    from .figures import benchmark_figures
    from .simulation import compare_with_simulation, simulate_class_games
    from .verdicts import verdict_inputs, write_verdicts

    mixture = NLHFConfig.__dataclass_fields__["mixture_coef"].default
    sim = simulate_class_games(game, s, mixture)
    atomic_write(out / "simulation.csv", sim.to_csv(index=False))
    online = online_algorithms(s.algorithms)  # the simulation covers the online algorithms
    comparison, fits = compare_with_simulation(metrics[metrics.algorithm.isin(online)], sim, online)
    atomic_write(out / "comparison.csv", comparison.to_csv(index=False))
    verdicts = write_verdicts(out, *verdict_inputs(metrics, s.algorithms, against))
    benchmark_figures(out, metrics, metrics_ln, sim, comparison, s, n_prompts=len(game.prompts),
                      reference=game.metrics(game.ref_logp), verdicts=verdicts)
    return fits["common_eta"], verdicts[2]


def _against_summary(against: Source, records, s: BenchmarkSettings) -> dict[str, Any]:
    """``summary.json``'s ``against``: the compared run's folder, its ``round_eta`` and command, which of its
    algorithms stand in the verdicts under which name, and their final medians over this run's seeds."""
    eta = float(against.summary["settings"]["round_eta"])
    final = records[records["update"] == s.updates]
    return {
        "folder": str(against.path), "round_eta": eta, "command": against.summary.get("command"),
        "algorithms": {at_eta(a, eta): a for a in s.round_methods()},
        "final_median": {name: {m: float(g["value"].median()) for m, g in final[final.algorithm == name].groupby("metric")}
                         for name in dict.fromkeys(records["algorithm"])},
    }


def _summary(s: BenchmarkSettings, game: ClassGame, metrics, metrics_ln, timings: dict[str, float], common_eta: float,
             judge_calls: int, runs: list[dict[str, Any]], command: str | None) -> dict[str, Any]:
    """``summary.json``: the command, settings, timings, the mean seconds per run of each algorithm and
    variant, π_ref's metrics, the final medians over seeds, the common fitted η, the number of judge calls
    and every run (``runs``: :func:`_train_all`)."""
    final = metrics[metrics["update"] == s.updates]
    seconds: dict[str, list[float]] = {}
    for r in runs:
        seconds.setdefault(f"{r['algorithm']}{'_ln' if r['variant'] == 'length_normalized' else ''}", []).append(r["seconds"])
    summary = {
        "command": command,
        # the round methods' settings only when some run (a run of the paper's five writes the settings it did)
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()
                     if s.round_methods() or not k.startswith("round_")},
        "timings": timings,
        "seconds_per_run": {k: float(np.mean(v)) for k, v in seconds.items()},
        "reference": game.metrics(game.ref_logp),
        "final_median": {
            a: {m: float(final[(final.algorithm == a) & (final.metric == m)]["value"].median())
                for m in ("duality_gap", "exploitability", "kl_to_equilibrium", "conditional_kl") if m in set(final.metric)}
            for a in s.algorithms
        },
        "common_eta": common_eta,
        "win_rates": "win_rates",
        "judge_calls": judge_calls,
        "runs": runs,
    }
    if len(metrics_ln):
        fl = metrics_ln[(metrics_ln["update"] == s.updates) & (metrics_ln.metric == "duality_gap")]
        summary["final_median_length_normalized_gap"] = {a: float(g["value"].median()) for a, g in fl.groupby("algorithm")}
    return summary
