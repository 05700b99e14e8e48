"""The resumable evaluation: generate every model, judge every comparison, summarise.

:func:`evaluate` checks its inputs, then :class:`Evaluation` pins the settings (with the judge's and
the prompts' identities) in its output folder (:class:`~lm_runs.evaluate.folder.EvaluationFolder`),
reuses whatever generations and judgements the folder already holds (each written atomically after
every batch), and writes the tidy win rates, ``summary.json`` and the tables
(:class:`~lm_runs.evaluate.summary.Results`). With a reward-model judge the responses are scored once
each and the judgements formed from the scores (:mod:`lm_runs.evaluate.scoring`).
"""

from __future__ import annotations

import gc
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..checkpoints import SaveError
from ..judges import CallableJudge, CheckedJudge, JudgeChanged, load_judge
from ..launcher import one_line
from ..models import ModelRoleError, check_model_source, load_causal_lm
from .folder import SEPARATOR, EvaluationFolder, file_stem, read_jsonl
from .judging import FailureStreak, judge_pairs
from .responses import generate_responses, policy_device
from ..judges.reward_model import scorer_of
from .scoring import pair_records, score_responses
from .settings import (
    REFERENCE,
    SETTINGS_VERSION,
    EvaluationError,
    EvaluationResult,
    EvaluationSettings,
    ModelSpec,
    model_identity,
    prompts_hash,
    sampling_stream,
)
from .statistics import select_best, split_indices
from .summary import Results
from .tables import render_tables

__all__ = ["evaluate", "Evaluation", "as_checked_judge"]


def _as_specs(models: Mapping[str, Any] | Sequence[ModelSpec]) -> list[ModelSpec]:
    if isinstance(models, Mapping):
        return [v if isinstance(v, ModelSpec) else ModelSpec(str(k), v) for k, v in models.items()]
    specs = list(models)
    for s in specs:
        if not isinstance(s, ModelSpec):
            raise EvaluationError(f"models must be a dict name → model/dir or a list of ModelSpec, got {type(s).__name__}")
    return specs


class Evaluation:
    """One evaluation: its inputs checked, its output folder (:class:`~lm_runs.evaluate.folder.EvaluationFolder`)
    prepared, and :meth:`run` to generate and judge what the folder does not hold yet and summarise.

    ``judge`` is a :class:`~lm_runs.judges.CheckedJudge` (:func:`as_checked_judge` makes one of any
    judge callable). Raises :class:`EvaluationError` before anything is generated for bad input, an
    output folder that is a file or holds files that are not an evaluation's, or a folder holding
    results of other settings, another judge or other prompts (unless ``overwrite``).
    """

    def __init__(
        self,
        specs: list[ModelSpec],
        reference: ModelSpec,
        prompts: list[Any],
        judge: CheckedJudge,
        settings: EvaluationSettings,
        output_dir: Path,
        *,
        tokenizer: Any = None,
        overwrite: bool = False,
        progress: bool = True,
    ) -> None:
        settings.check()
        if len(prompts) == 0:
            raise EvaluationError("no prompts to evaluate on")
        if not specs:
            raise EvaluationError("no models to evaluate (give --runs and/or --models)")
        self.models = specs
        self.reference = reference
        self.all_models = [reference] + specs
        names = [m.name for m in self.all_models]
        stems = [file_stem(n) for n in names]
        for n in names:
            if not n or SEPARATOR in n:
                raise EvaluationError(f"model name {n!r} is empty or contains {SEPARATOR!r}")
        if len(set(names)) != len(names):
            dup = sorted(n for n, c in Counter(names).items() if c > 1)
            raise EvaluationError(f"model names must be unique (the reference is {REFERENCE!r}); repeated: {dup}")
        if len(set(stems)) != len(stems):
            raise EvaluationError(f"model names {names} map to clashing file names; rename them")
        for m in self.all_models:
            if isinstance(m.source, (str, Path)):
                try:
                    check_model_source(m.source, "reference" if m is reference else "policy")
                except ModelRoleError as error:
                    raise EvaluationError(f"model {m.name}: {one_line(error)}") from None
            elif m.tokenizer is None and tokenizer is None:
                raise EvaluationError(f"model {m.name} is an in-memory model: give its tokenizer (ModelSpec.tokenizer or tokenizer=)")
        self.prompts = prompts
        from ..data import prompt_text

        self.prompt_texts = [prompt_text(p) for p in prompts]
        self.judge = judge
        self.streak = FailureStreak(judge.name, settings.max_consecutive_judge_errors)
        self.settings = settings
        self.tokenizer = tokenizer
        self.progress = progress
        self.n, self.K = len(prompts), settings.samples_per_prompt
        self.selection, self.report = split_indices(self.n, settings.selection_fraction, settings.seed)
        self.fingerprint = {
            "version": SETTINGS_VERSION,
            **settings.fingerprint(),
            "judge": judge.identity(),
            "prompts": {"count": self.n, "sha256": prompts_hash(prompts)},
        }
        self.generate_calls = 0
        self.reward_model = scorer_of(judge)
        self.rewards: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
        self.folder = EvaluationFolder(output_dir)
        self.identities = {m.name: model_identity(m.source) for m in self.all_models}
        analysis = {
            "selection_fraction": settings.selection_fraction,
            "best_per_algorithm": settings.best_per_algorithm,
            "bootstrap": settings.bootstrap,
        }
        self.folder.prepare(self.fingerprint, analysis, self.all_models, self.identities, overwrite)

    # -- generation ----------------------------------------------------------------------------

    def generations(self, spec: ModelSpec) -> dict[tuple[int, int], dict[str, Any]]:
        """The model's K·n responses, generated (and saved batch by batch) where not on disk yet."""
        done = self.folder.generations(spec.name, self.n, self.K)
        if len(done) == self.n * self.K:
            return done
        meta = {"model": spec.name, "identity": self.identities[spec.name]}
        self.folder.write(self.folder.meta_path(spec.name), json.dumps(meta, indent=2) + "\n")
        if isinstance(spec.source, (str, Path)):
            ref = self.reference.source if isinstance(self.reference.source, (str, Path)) else None
            try:
                model, tokenizer = load_causal_lm(spec.source, reference=ref, device=policy_device(self.settings), dtype=self.settings.dtype)
            except ModelRoleError as error:
                raise EvaluationError(f"model {spec.name}: {one_line(error)}") from None
            loaded = True
        else:
            model, tokenizer, loaded = spec.source, spec.tokenizer or self.tokenizer, False
        try:
            self.generate_calls += 1
            rows = generate_responses(
                model, tokenizer, self.prompts, self.settings, model_name=spec.name,
                stream=sampling_stream(self.identities[spec.name], spec.name), done=done,
                on_batch=lambda rows: self.folder.write_rows(self.folder.generations_path(spec.name), rows),
                progress=self.progress,
            )
        finally:
            if loaded:
                del model
                gc.collect()
                _empty_cuda_cache()
        return {(r["prompt"], r["sample"]): r for r in rows}

    # -- judging -------------------------------------------------------------------------------

    def scored(self, name: str, gens: Mapping[tuple[int, int], Mapping[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
        """The reward-model judge's reward of each of the model's responses, scored (and saved call by
        call) where not on disk yet (:func:`~lm_runs.evaluate.scoring.score_responses`)."""
        path = self.folder.scores_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return score_responses(
                self.reward_model, self.prompt_texts, {k: r["text"] for k, r in gens.items()},
                done=self.folder.scores(name), on_batch=lambda rows: self.folder.write_rows(path, rows),
                progress=self.progress, desc=f"score {name}",
            )
        except (SaveError, JudgeChanged):  # a judge server swapped mid-run: its own line
            raise
        except Exception as error:  # a pair could be missing; a score the tables need cannot
            raise EvaluationError(
                f"judge {self.judge.name} failed to score {name}'s responses ({one_line(error)}); "
                "fix it and rerun: the scores saved so far are kept"
            ) from None

    def judgements(self, a: str, b: str, prompts: Sequence[int], gens: Mapping[str, Mapping]) -> list[dict[str, Any]]:
        """Judgements of a's responses against b's for every pair of ``prompts``, reusing those on disk;
        with a reward-model judge formed from the saved rewards (:func:`~lm_runs.evaluate.scoring.pair_records`)."""
        path = self.folder.judgements_path(a, b)
        done = self.folder.judgements(a, b)
        keys = [(i, j) for i in prompts for j in range(self.K)]
        if self.reward_model is not None:  # formed from the scores; a record left missing by an earlier judge is redone
            both = self.settings.both_orders
            todo = [k for k in keys if k not in done or done[k]["p_ab"] is None or (both and done[k]["p_ba"] is None)]
            records = {k: dict(v) for k, v in done.items()}
            if todo:
                first = {k: gens[a][k]["text"] for k in todo}
                second = {k: gens[b][k]["text"] for k in todo}
                records.update(pair_records(self.rewards[a], self.rewards[b], first, second, todo,
                                            self.reward_model.temperature, both_orders=both))
                self.folder.write_rows(path, [records[k] for k in sorted(records)])
            return [records[k] for k in keys]
        if all(k in done for k in keys):
            return [done[k] for k in keys]
        first = {k: gens[a][k]["text"] for k in keys}
        second = {k: gens[b][k]["text"] for k in keys}

        def is_missing(r: Mapping[str, Any]) -> bool:
            return r["p_ab"] is None or (self.settings.both_orders and r["p_ba"] is None)

        def keep_judged_only() -> None:
            # a judge that failed wholesale: forget its missing answers so that a rerun asks them again
            if path.is_file():
                self.folder.write_rows(path, [r for r in read_jsonl(path) if not is_missing(r)])

        try:
            records = judge_pairs(
                self.judge, self.prompt_texts, first, second, keys,
                both_orders=self.settings.both_orders, batch_size=self.settings.judge_batch_size, done=done,
                on_batch=lambda rows: self.folder.write_rows(path, rows), progress=self.progress, desc=f"judge {a} vs {b}",
                streak=self.streak,
            )
        except EvaluationError:
            keep_judged_only()
            raise
        wanted = set(keys)
        chosen = [r for r in records if (r["prompt"], r["sample"]) in wanted]
        missing = sum(1 for r in chosen if is_missing(r))
        if keys and missing / len(keys) > self.settings.max_missing_fraction:
            keep_judged_only()
            reasons = Counter(r["error"] for r in chosen if r["error"]).most_common(3)
            raise EvaluationError(
                f"{a} vs {b}: the judge gave no judgement for {missing} of {len(keys)} pairs "
                f"(more than --max_missing_fraction {self.settings.max_missing_fraction}); reasons: {reasons}. "
                "Fix the judge and rerun: those pairs will be asked again"
            )
        return chosen

    # -- the whole thing -----------------------------------------------------------------------

    def run(self) -> EvaluationResult:
        """Generate every model, judge each against π_ref on all prompts, choose the best epochs of each
        algorithm on the selection split, judge them pairwise on the report split, and write the results."""
        from tqdm.auto import tqdm

        s = self.settings
        gens: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
        for spec in tqdm(self.all_models, desc="generation", disable=not self.progress):
            gens[spec.name] = self.generations(spec)
        if self.reward_model is not None:
            for spec in tqdm(self.all_models, desc="score", disable=not self.progress):
                self.rewards[spec.name] = self.scored(spec.name, gens[spec.name])

        splits = {"all": list(range(self.n)), "selection": self.selection, "report": self.report}
        results = Results(self.all_models, splits, s, self.n, self.K)
        vs_scores: dict[str, float] = {}
        for spec in tqdm(self.models, desc="judge vs reference", disable=not self.progress):
            records = self.judgements(spec.name, REFERENCE, splits["all"], gens)
            stats = results.add(spec.name, REFERENCE, "vs_reference", records, ["all", "selection", "report"], False)
            vs_scores[spec.name] = stats["selection"]["win_rate"]
        groups = {m.name: m.algorithm or m.name for m in self.models}
        selected = select_best(vs_scores, groups, s.best_per_algorithm)
        chosen = [name for names in selected.values() for name in names]
        pairs = [(chosen[x], chosen[y]) for x in range(len(chosen)) for y in range(x + 1, len(chosen))]
        for a, b in tqdm(pairs, desc="judge pairwise", disable=not self.progress):
            records = self.judgements(a, b, self.report, gens)
            results.add(a, b, "pairwise", records, ["report"], True)

        winrates = results.winrates()
        tables = render_tables(winrates, self.models, selected, both_orders=s.both_orders)
        summary = results.summary(winrates, self.fingerprint, gens, selected, self.judge)
        out = self.folder.root
        self.folder.write(out / "winrates.csv", winrates.to_csv(index=False))
        self.folder.write(out / "winrates.parquet", lambda handle: winrates.to_parquet(handle, index=False))
        self.folder.write_json(out / "summary.json", summary)
        for name, text in tables.items():
            self.folder.write(out / "tables" / name, text)
        return EvaluationResult(
            winrates=winrates,
            summary=summary,
            tables=tables,
            selected=selected,
            output_dir=out,
            generations={name: [rows_[k] for k in sorted(rows_)] for name, rows_ in gens.items()},
        )


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _prompt_list(prompts: Any, num_prompts: int | None) -> list[Any]:
    if hasattr(prompts, "column_names"):  # a datasets.Dataset
        if "prompt" not in prompts.column_names:
            raise EvaluationError(f"the prompt dataset has no 'prompt' column; columns: {prompts.column_names}")
        prompts = prompts["prompt"]
    out = list(prompts)
    from ..data import check_prompt

    for index, p in enumerate(out):
        try:
            check_prompt(p, where=f"prompt {index}")
        except ValueError as error:
            raise EvaluationError(str(error)) from None
    return out[:num_prompts] if num_prompts is not None else out


def as_checked_judge(judge: str | Callable[..., Any], settings: EvaluationSettings) -> CheckedJudge:
    """The judge as a :class:`~lm_runs.judges.CheckedJudge`: a spec string through
    :func:`lm_runs.judges.load_judge` (seeded with ``settings.seed``, on ``settings.device``,
    ``settings.judge_batch_size`` pairs per forward pass); a CheckedJudge as it is; a judge object with
    its own ``identity()`` (an HTTP, OpenAI or preference-model judge) checked as it is; any other callable
    as a :class:`~lm_runs.judges.CallableJudge` (whose exceptions count as failed judgements)."""
    if isinstance(judge, str):
        try:
            return load_judge(judge, seed=settings.seed, device=settings.device, batch_size=settings.judge_batch_size)
        except (ValueError, OSError) as error:
            raise EvaluationError(f"--judge {judge}: {one_line(error)}") from None
    if isinstance(judge, CheckedJudge):
        return judge
    if not callable(judge):
        raise EvaluationError(f"judge must be a spec string or a callable, got {type(judge).__name__}")
    return CheckedJudge(judge if callable(getattr(judge, "identity", None)) else CallableJudge(judge))


def evaluate(
    models: Mapping[str, Any] | Sequence[ModelSpec],
    reference: Any,
    prompts: Any,
    judge: str | Callable[..., Any],
    settings: EvaluationSettings | None = None,
    output_dir: str | Path = "eval",
    *,
    tokenizer: Any = None,
    overwrite: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Generate, judge and summarise (see the package docstring for every formula).

    ``models``: name → model directory / in-memory causal LM / :class:`ModelSpec`, or a list of
    ModelSpec (e.g. from :func:`discover_runs`); ``reference``: π_ref, the same kinds; ``prompts``: a
    list of prompts (strings or message lists) or a ``datasets.Dataset`` with a ``prompt`` column
    (the first ``settings.num_prompts`` are used); ``judge``: a spec for :func:`lm_runs.judges.load_judge`
    or a judge callable (:func:`as_checked_judge`); ``tokenizer``: for in-memory models without their own.
    Writes everything under ``output_dir`` and returns it as an :class:`EvaluationResult`.
    Raises :class:`EvaluationError` for bad input, changed settings or a judge that keeps failing, and
    :class:`~lm_runs.checkpoints.SaveError` for a file it cannot write (a full disk; the files written
    before are kept, and a rerun resumes).
    """
    settings = settings or EvaluationSettings()
    settings.check()
    specs = _as_specs(models)
    ref = reference if isinstance(reference, ModelSpec) else ModelSpec(REFERENCE, reference, algorithm=REFERENCE)
    if ref.name != REFERENCE:
        ref = ModelSpec(REFERENCE, ref.source, algorithm=REFERENCE, tokenizer=ref.tokenizer)
    prompt_list = _prompt_list(prompts, settings.num_prompts)
    evaluation = Evaluation(
        specs, ref, prompt_list, as_checked_judge(judge, settings), settings, Path(output_dir),
        tokenizer=tokenizer, overwrite=overwrite, progress=progress,
    )
    return evaluation.run()
