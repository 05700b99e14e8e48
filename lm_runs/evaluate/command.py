"""The command line: ``python -m lm_runs.evaluate`` flags, the checks made before any model loads, and :func:`main`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..judges import load_judge
from .orchestration import Evaluation
from .runs import discover_runs, is_model_dir, named_path
from .settings import REFERENCE, EvaluationError, EvaluationSettings, ModelSpec, one_line

__all__ = ["EvaluateArguments", "main"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class EvaluateArguments:
    """Flags of ``python -m lm_runs.evaluate`` (also settable from ``--config file.yaml``)."""

    reference: str = field(metadata=_help("π_ref's model directory (the SFT policy)."))
    prompts: str = field(metadata=_help("Held-out prompts: any file or dataset lm_runs.data.load_prompts reads."))
    judge: str = field(metadata=_help("Judge spec: a preference-model dir, module:function, http://host:port, openai:MODEL."))
    output_dir: str = field(metadata=_help("Where generations, judgements, tables and tidy results go."))
    runs: list[str] = field(default_factory=list, metadata=_help("Training output dirs (DIR or NAME=DIR); every epochs/epoch-k is a candidate."))
    models: list[str] = field(default_factory=list, metadata=_help("Extra models as NAME=DIR."))
    prompt_column: str = field(default="prompt", metadata=_help("Column of --prompts holding the prompts."))
    prompt_split: str = field(default="train", metadata=_help("Split of a DatasetDict / hub dataset given as --prompts."))
    num_prompts: int = field(default=100, metadata=_help("Number of prompts used (the first ones)."))
    samples_per_prompt: int = field(default=10, metadata=_help("K: responses per prompt and model."))
    temperature: float = field(default=1.0, metadata=_help("Sampling temperature."))
    top_k: int = field(default=100, metadata=_help("Top-k (0 = off)."))
    top_p: float = field(default=0.95, metadata=_help("Top-p."))
    min_p: float = field(default=0.0, metadata=_help("Min-p (0 = off)."))
    max_new_tokens: int = field(default=512, metadata=_help("Longest response in tokens."))
    max_prompt_length: int | None = field(default=None, metadata=_help("Left-truncate longer prompts to this many tokens."))
    prompts_per_batch: int = field(default=8, metadata=_help("Prompts per generate call (× K rows); part of the settings."))
    dtype: str | None = field(default=None, metadata=_help("Model dtype: float32, float16 or bfloat16 (default: the checkpoint's)."))
    both_orders: bool = field(default=False, metadata=_help("Judge both orders and average (Arena-Hard); reports the position bias."))
    selection_fraction: float = field(default=0.5, metadata=_help("Fraction of prompts the best epochs are chosen on."))
    best_per_algorithm: int = field(default=2, metadata=_help("Epochs per algorithm in the pairwise table."))
    bootstrap: int = field(default=1000, metadata=_help("Bootstrap resamples of the prompts for the 95% intervals (0 = none)."))
    seed: int = field(default=0, metadata=_help("Seed of sampling, the split and the bootstrap."))
    device: str | None = field(default=None, metadata=_help("Device of the policies (default: cuda when available)."))
    judge_device: str | None = field(default=None, metadata=_help("Device of a preference-model judge (default: --device)."))
    judge_batch_size: int = field(default=64, metadata=_help("Pairs per judge call."))
    max_missing_fraction: float = field(default=0.5, metadata=_help("Stop when a comparison misses more judgements than this."))
    overwrite: bool = field(default=False, metadata=_help("Discard earlier results in --output_dir."))
    progress: bool = field(default=True, metadata=_help("Show tqdm progress bars."))

    def settings(self) -> EvaluationSettings:
        """The :class:`EvaluationSettings` these flags stand for."""
        return EvaluationSettings(
            num_prompts=self.num_prompts, samples_per_prompt=self.samples_per_prompt, temperature=self.temperature,
            top_k=self.top_k, top_p=self.top_p, min_p=self.min_p, max_new_tokens=self.max_new_tokens,
            max_prompt_length=self.max_prompt_length, prompts_per_batch=self.prompts_per_batch, dtype=self.dtype,
            both_orders=self.both_orders, selection_fraction=self.selection_fraction,
            best_per_algorithm=self.best_per_algorithm, bootstrap=self.bootstrap, seed=self.seed, device=self.device,
            judge_batch_size=self.judge_batch_size, max_missing_fraction=self.max_missing_fraction,
        )


def _prepare(args: EvaluateArguments) -> tuple[list[ModelSpec], ModelSpec, list[Any], Any, EvaluationSettings]:
    """Every check that can fail on bad input, before any model is loaded."""
    settings = args.settings()
    settings.check()
    reference = Path(args.reference).expanduser()
    if not reference.is_dir() or not is_model_dir(reference):
        raise EvaluationError(f"--reference {args.reference}: not a model directory (no config.json or adapter_config.json)")
    specs = discover_runs(args.runs)
    for item in args.models:
        name, path = named_path(item)
        if name is None:
            name = Path(path).resolve().name
        folder = Path(path).expanduser()
        if not folder.is_dir() or not is_model_dir(folder):
            raise EvaluationError(f"--models {item}: not a model directory")
        specs.append(ModelSpec(name, folder, algorithm=name))
    if not specs:
        raise EvaluationError("nothing to evaluate: give --runs DIR [DIR ...] and/or --models NAME=DIR")
    from ..data import load_prompts

    try:
        table = load_prompts(args.prompts, column=args.prompt_column, split=args.prompt_split, max_prompts=args.num_prompts)
    except (ValueError, FileNotFoundError) as error:
        raise EvaluationError(f"--prompts: {one_line(error)}") from None
    prompts = list(table["prompt"])
    if len(prompts) < args.num_prompts:
        print(f"note: --prompts has {len(prompts)} prompts, fewer than --num_prompts {args.num_prompts}; using all", file=sys.stderr)
    try:
        judge = load_judge(args.judge, seed=args.seed, device=args.judge_device or args.device)
    except (ValueError, OSError) as error:
        raise EvaluationError(f"--judge {args.judge}: {one_line(error)}") from None
    return specs, ModelSpec(REFERENCE, reference, algorithm=REFERENCE), prompts, judge, settings


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point: parse, check, evaluate, print where the results are. Bad input → one line on stderr, exit 2."""
    from ..cli import parse_config

    (args,) = parse_config([EvaluateArguments], argv)
    try:
        specs, reference, prompts, judge, settings = _prepare(args)
        evaluation = Evaluation(
            specs, reference, prompts, judge, args.judge, settings, Path(args.output_dir),
            overwrite=args.overwrite, progress=args.progress,
        )
        result = evaluation.run()
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.tables["vs_reference.md"])
    print(result.tables["pairwise.md"])
    print(f"results in {result.output_dir}: winrates.csv, winrates.parquet, summary.json, tables/")
    return 0
