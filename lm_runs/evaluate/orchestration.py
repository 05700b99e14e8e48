"""The resumable evaluation: one output folder, generate every model, judge every comparison, summarise.

:func:`evaluate` checks its inputs, then :class:`Evaluation` pins the settings (with the judge's and
the prompts' identities) in ``settings.json``, reuses whatever generations and judgements the folder
already holds (each written atomically after every batch), and writes the tidy win rates,
``summary.json`` and the tables.
"""

from __future__ import annotations

import gc
import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from egpo_core.files import atomic_write, write_jsonl

from ..judges import CallableJudge, CheckedJudge, load_judge
from ..launcher import one_line
from ..models import ModelRoleError, check_model_source, load_causal_lm
from .judging import FailureStreak, judge_pairs, position_bias, preferences
from .responses import generate_responses, policy_device
from .settings import (
    REFERENCE,
    SETTINGS_VERSION,
    EvaluationError,
    EvaluationResult,
    EvaluationSettings,
    ModelSpec,
    derive_seed,
    model_identity,
    prompts_hash,
    sampling_stream,
)
from .statistics import MIN_INTERVAL_PROMPTS, bootstrap_indices, select_best, split_indices, win_rate_ci
from .tables import render_tables, table_notes

__all__ = ["evaluate", "Evaluation", "file_stem", "as_checked_judge", "OUTPUT_NAMES"]

#: Between the two model names of a judgement file (``A__vs__B.jsonl``); no model name may hold it.
SEPARATOR = "__vs__"
#: What an evaluation writes into its output folder (``--overwrite`` removes exactly these).
OUTPUT_DIRS = ("generations", "judgements", "tables")
OUTPUT_FILES = ("settings.json", "summary.json", "winrates.csv", "winrates.parquet")
OUTPUT_NAMES = OUTPUT_DIRS + OUTPUT_FILES


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (blank lines skipped); a bad line is an :class:`EvaluationError` naming it."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise EvaluationError(f"{path}: line {number} is not JSON; delete the file to redo it") from None
    return rows


def file_stem(name: str) -> str:
    """A file-name-safe form of a model name (``run/epoch-3`` → ``run+epoch-3``)."""
    return re.sub(r"[^A-Za-z0-9._=-]", "+", name)




def _as_specs(models: Mapping[str, Any] | Sequence[ModelSpec]) -> list[ModelSpec]:
    if isinstance(models, Mapping):
        return [v if isinstance(v, ModelSpec) else ModelSpec(str(k), v) for k, v in models.items()]
    specs = list(models)
    for s in specs:
        if not isinstance(s, ModelSpec):
            raise EvaluationError(f"models must be a dict name → model/dir or a list of ModelSpec, got {type(s).__name__}")
    return specs


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} → {new!r}"]


class Evaluation:
    """One evaluation's state: what is on disk, what is left, and the numbers.

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
        self.output_dir = Path(output_dir)
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
        self._prepare_dir(overwrite)

    # -- files ---------------------------------------------------------------------------------

    def gen_path(self, name: str) -> Path:
        """Where a model's responses are saved."""
        return self.output_dir / "generations" / f"{file_stem(name)}.jsonl"

    def judge_path(self, a: str, b: str) -> Path:
        """Where the judgements of a's responses against b's are saved."""
        return self.output_dir / "judgements" / f"{file_stem(a)}{SEPARATOR}{file_stem(b)}.jsonl"

    def _prepare_dir(self, overwrite: bool) -> None:
        out = self.output_dir
        settings_file = out / "settings.json"
        if out.exists() and not out.is_dir():
            raise EvaluationError(f"--output_dir {out} is a file; give a folder (new, or one of an earlier evaluation)")
        if out.is_dir() and not settings_file.is_file():
            foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_NAMES and not p.name.startswith("."))
            if foreign:
                raise EvaluationError(
                    f"--output_dir {out} holds files that are not an evaluation's ({', '.join(foreign[:3])}"
                    f"{', ...' if len(foreign) > 3 else ''}); give a new or empty folder"
                )
        if overwrite:
            for sub in OUTPUT_DIRS:
                shutil.rmtree(out / sub, ignore_errors=True)
            for name in OUTPUT_FILES:
                (out / name).unlink(missing_ok=True)
        if settings_file.is_file():
            try:
                old = json.loads(settings_file.read_text())
            except json.JSONDecodeError:
                raise EvaluationError(f"{settings_file} is not JSON; use a new --output_dir or --overwrite") from None
            changes = _diff(old.get("fingerprint"), self.fingerprint)
            if changes:
                raise EvaluationError(
                    f"{out} holds results made with other settings ({'; '.join(changes)}); "
                    "use a new --output_dir, or --overwrite to discard them"
                )
        self.identities = {}
        for m in self.all_models:
            identity = model_identity(m.source)
            self.identities[m.name] = identity
            meta = self.gen_path(m.name).with_suffix(".meta.json")
            if meta.is_file():
                saved = json.loads(meta.read_text())
                if saved.get("identity") != identity:
                    raise EvaluationError(
                        f"{self.gen_path(m.name)} was generated by another model than {m.name} = {m.source} "
                        "(its weight files differ); use a new --output_dir, another name, or --overwrite"
                    )
        for sub in OUTPUT_DIRS:
            (out / sub).mkdir(parents=True, exist_ok=True)
        analysis = {
            "selection_fraction": self.settings.selection_fraction,
            "best_per_algorithm": self.settings.best_per_algorithm,
            "bootstrap": self.settings.bootstrap,
        }
        atomic_write(settings_file, json.dumps({"fingerprint": self.fingerprint, "analysis": analysis}, indent=2) + "\n")

    # -- generation ----------------------------------------------------------------------------

    def _load_generations(self, name: str) -> dict[tuple[int, int], dict[str, Any]]:
        path = self.gen_path(name)
        if not path.is_file():
            return {}
        rows = {}
        for r in _read_jsonl(path):
            if 0 <= r["prompt"] < self.n and 0 <= r["sample"] < self.K:
                rows[(r["prompt"], r["sample"])] = r
        return rows

    def generations(self, spec: ModelSpec) -> dict[tuple[int, int], dict[str, Any]]:
        """The model's K·n responses, generated (and saved batch by batch) where not on disk yet."""
        done = self._load_generations(spec.name)
        if len(done) == self.n * self.K:
            return done
        meta = self.gen_path(spec.name).with_suffix(".meta.json")
        atomic_write(meta, json.dumps({"model": spec.name, "identity": self.identities[spec.name]}, indent=2) + "\n")
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
                on_batch=lambda rows: write_jsonl(self.gen_path(spec.name), rows), progress=self.progress,
            )
        finally:
            if loaded:
                del model
                gc.collect()
                _empty_cuda_cache()
        return {(r["prompt"], r["sample"]): r for r in rows}

    # -- judging -------------------------------------------------------------------------------

    def judgements(self, a: str, b: str, prompts: Sequence[int], gens: Mapping[str, Mapping]) -> list[dict[str, Any]]:
        """Judgements of a's responses against b's for every pair of ``prompts``, reusing those on disk."""
        path = self.judge_path(a, b)
        done = {(r["prompt"], r["sample"]): r for r in _read_jsonl(path)} if path.is_file() else {}
        keys = [(i, j) for i in prompts for j in range(self.K)]
        if all(k in done for k in keys):
            return [done[k] for k in keys]
        first = {k: gens[a][k]["text"] for k in keys}
        second = {k: gens[b][k]["text"] for k in keys}

        def is_missing(r: Mapping[str, Any]) -> bool:
            return r["p_ab"] is None or (self.settings.both_orders and r["p_ba"] is None)

        def keep_judged_only() -> None:
            # a judge that failed wholesale: forget its missing answers so that a rerun asks them again
            if path.is_file():
                write_jsonl(path, [r for r in _read_jsonl(path) if not is_missing(r)])

        try:
            records = judge_pairs(
                self.judge, self.prompt_texts, first, second, keys,
                both_orders=self.settings.both_orders, batch_size=self.settings.judge_batch_size, done=done,
                on_batch=lambda rows: write_jsonl(path, rows), progress=self.progress, desc=f"judge {a} vs {b}",
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
        import pandas as pd
        from tqdm.auto import tqdm

        s = self.settings
        gens: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
        for spec in tqdm(self.all_models, desc="generation", disable=not self.progress):
            gens[spec.name] = self.generations(spec)

        splits = {"all": list(range(self.n)), "selection": self.selection, "report": self.report}
        draws = {name: bootstrap_indices(len(idx), s.bootstrap, derive_seed(s.seed, "bootstrap", name)) for name, idx in splits.items()}
        rows: list[dict[str, Any]] = []
        comparisons: list[dict[str, Any]] = []
        by_name = {m.name: m for m in self.all_models}

        def record(a: str, b: str, kind: str, records: list[dict[str, Any]], split_names: Sequence[str], both_ways: bool) -> dict[str, dict]:
            P = preferences(records, self.n, self.K, both_orders=s.both_orders)
            stats = {}
            for split in split_names:
                st = win_rate_ci(P, splits[split], indices=draws[split])
                bias, n_bias = position_bias(records, splits[split])
                stats[split] = st
                for model, opponent, flip in [(a, b, False)] + ([(b, a, True)] if both_ways else []):
                    mm, oo = by_name[model], by_name[opponent]
                    rows.append({
                        "model": model,
                        "opponent": opponent,
                        "algorithm": mm.algorithm or mm.name,
                        "epoch": mm.epoch,
                        "win_rate": 1.0 - st["win_rate"] if flip else st["win_rate"],
                        "ci_low": 1.0 - st["ci_high"] if flip else st["ci_low"],
                        "ci_high": 1.0 - st["ci_low"] if flip else st["ci_high"],
                        "n_pairs": st["n_pairs"],
                        "n_missing": st["n_missing"],
                        "split": split,
                        "comparison": kind,
                        "opponent_algorithm": oo.algorithm or oo.name if oo.name != REFERENCE else REFERENCE,
                        "opponent_epoch": oo.epoch,
                        "n_prompts": len(splits[split]),
                        "position_bias": bias,
                        "n_bias_pairs": n_bias,
                        "few_prompts": len(splits[split]) < MIN_INTERVAL_PROMPTS,
                    })
            reasons = Counter(r["error"] for r in records if r.get("error"))
            comparisons.append({
                "model": a, "opponent": b, "comparison": kind,
                "n_missing": {k: v["n_missing"] for k, v in stats.items()},
                "position_bias": position_bias(records)[0] if s.both_orders else None,
                "identical_pairs": sum(1 for r in records if r.get("same")),
                "missing_reasons": dict(reasons),
            })
            return stats

        vs_scores: dict[str, float] = {}
        for spec in tqdm(self.models, desc="judge vs reference", disable=not self.progress):
            records = self.judgements(spec.name, REFERENCE, splits["all"], gens)
            stats = record(spec.name, REFERENCE, "vs_reference", records, ["all", "selection", "report"], False)
            vs_scores[spec.name] = stats["selection"]["win_rate"]
        groups = {m.name: m.algorithm or m.name for m in self.models}
        selected = select_best(vs_scores, groups, s.best_per_algorithm)
        chosen = [name for names in selected.values() for name in names]
        pairs = [(chosen[x], chosen[y]) for x in range(len(chosen)) for y in range(x + 1, len(chosen))]
        for a, b in tqdm(pairs, desc="judge pairwise", disable=not self.progress):
            records = self.judgements(a, b, self.report, gens)
            record(a, b, "pairwise", records, ["report"], True)

        winrates = pd.DataFrame(rows, columns=[
            "model", "opponent", "algorithm", "epoch", "win_rate", "ci_low", "ci_high", "n_pairs", "n_missing",
            "split", "comparison", "opponent_algorithm", "opponent_epoch", "n_prompts", "position_bias", "n_bias_pairs",
            "few_prompts",
        ])
        for column in ("epoch", "opponent_epoch"):
            winrates[column] = winrates[column].astype("Int64")
        tables = render_tables(winrates, self.models, selected, both_orders=s.both_orders)
        vs_rows = winrates[(winrates["comparison"] == "vs_reference") & (winrates["split"] == "all")]
        pw_rows = winrates[(winrates["comparison"] == "pairwise") & (winrates["split"] == "report")]
        all_bias = [c["position_bias"] for c in comparisons if c["position_bias"] is not None and not math.isnan(c["position_bias"])]
        summary = {
            "settings": {"fingerprint": self.fingerprint, "analysis": {
                "selection_fraction": s.selection_fraction, "best_per_algorithm": s.best_per_algorithm, "bootstrap": s.bootstrap,
            }},
            "models": [
                {
                    "name": m.name,
                    "source": str(m.source) if isinstance(m.source, (str, Path)) else type(m.source).__name__,
                    "algorithm": m.algorithm or m.name if m.name != REFERENCE else REFERENCE,
                    "epoch": m.epoch,
                    "run": m.run,
                    "responses": len(gens[m.name]),
                    "empty": sum(1 for r in gens[m.name].values() if r["text"] == ""),
                    "blank": sum(1 for r in gens[m.name].values() if not r["text"].strip()),
                    "truncated": sum(1 for r in gens[m.name].values() if r["truncated"]),
                    "mean_tokens": float(np.mean([r["num_tokens"] for r in gens[m.name].values()])),
                }
                for m in self.all_models
            ],
            "splits": {"selection": self.selection, "report": self.report},
            "selected": selected,
            "comparisons": comparisons,
            "judge": {"name": self.judge.name, "kind": self.judge.kind, "identity": self.fingerprint["judge"]},
            "position_bias": float(np.mean(all_bias)) if all_bias else None,
            "intervals": {
                "level": 0.95,
                "bootstrap": s.bootstrap,
                "min_prompts": MIN_INTERVAL_PROMPTS,
                "flagged_entries": int(winrates["few_prompts"].sum()),
                "note": f"entries from fewer than {MIN_INTERVAL_PROMPTS} prompts are flagged (few_prompts, a dagger "
                "in the tables, never bold): a bootstrap over so few prompts understates the uncertainty",
            },
            "missing": int(sum(c["n_missing"].get("all", c["n_missing"].get("report", 0)) for c in comparisons)),
            "tables": {
                "vs_reference": f"win rate (%) against {REFERENCE}, all {self.n} prompts × {self.K} samples",
                "pairwise": f"row beats column (%), the {len(self.report)} report prompts × {self.K} samples; "
                f"models chosen on the {len(self.selection)} selection prompts",
                "notes": {
                    "vs_reference": table_notes(vs_rows, both_orders=s.both_orders, latex=False),
                    "pairwise": table_notes(pw_rows, both_orders=s.both_orders, latex=False),
                },
            },
        }
        out = self.output_dir
        atomic_write(out / "winrates.csv", winrates.to_csv(index=False))
        atomic_write(out / "winrates.parquet", lambda handle: winrates.to_parquet(handle, index=False))
        atomic_write(out / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
        for name, text in tables.items():
            atomic_write(out / "tables" / name, text)
        return EvaluationResult(
            winrates=winrates,
            summary=summary,
            tables=tables,
            selected=selected,
            output_dir=out,
            generations={name: [rows_[k] for k in sorted(rows_)] for name, rows_ in gens.items()},
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


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
    Raises :class:`EvaluationError` for bad input, changed settings or a judge that keeps failing.
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
