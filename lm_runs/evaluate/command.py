"""The command line: ``python -m lm_runs.evaluate`` flags, the checks made before any model loads, and :func:`main`.

The flags are :class:`EvaluateArguments`, the sampling flags (:class:`EvaluationSampling`: the shared
:class:`lm_runs.generation.SamplingArguments` with the evaluation's defaults) and the judge flags every
entry point shares (:class:`lm_runs.judges.arguments.JudgeArguments`: ``--judge``,
``--judge_batch_size``, ``--judge_timeout``, ``--judge_retries``). Every refusal is one line on stderr and exit status 2, before any model loads;
Ctrl-C ends with one line and exit status 130 (a rerun resumes where it stopped).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..generation import SAMPLING_HELP, SamplingArguments
from ..judges import CheckedJudge, JudgeError, load_judge
from ..checkpoints import SaveError
from ..launcher import inputs_checked, one_line
from ..judges.arguments import JudgeArguments
from ..models import ModelRoleError, check_model_source
from .orchestration import Evaluation, EvaluationResult
from .runs import discover_runs, named_path
from .settings import REFERENCE, EvaluationError, EvaluationSettings, ModelSpec

__all__ = ["EvaluateArguments", "EvaluationSampling", "main"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class EvaluateArguments:
    """Flags of ``python -m lm_runs.evaluate`` (also settable from ``--config file.yaml``)."""

    reference: str = field(metadata=_help("π_ref's model directory (the SFT policy)."))
    prompts: str = field(metadata=_help("Held-out prompts: any file or dataset lm_runs.data.load_prompts reads."))
    output_dir: str = field(metadata=_help("Where generations, judgements, tables and tidy results go."))
    runs: list[str] = field(default_factory=list, metadata=_help("Training output dirs (DIR or NAME=DIR); every epochs/epoch-k is a candidate."))
    models: list[str] = field(default_factory=list, metadata=_help("Extra models as NAME=DIR."))
    prompt_column: str = field(default="prompt", metadata=_help("Column of --prompts holding the prompts."))
    prompt_split: str = field(default="train", metadata=_help("Split of a DatasetDict / hub dataset given as --prompts."))
    num_prompts: int = field(default=100, metadata=_help("Number of prompts used (the first ones)."))
    samples_per_prompt: int = field(default=10, metadata=_help("K: responses per prompt and model."))
    max_prompt_length: int | None = field(default=None, metadata=_help("Left-truncate longer prompts to this many tokens."))
    prompts_per_batch: int = field(default=8, metadata=_help("Prompts per generate call (× K rows); part of the settings."))
    dtype: str | None = field(default=None, metadata=_help("Model dtype: float32, float16 or bfloat16 (default: the checkpoint's)."))
    both_orders: bool = field(default=True, metadata=_help(
        "Judge every pair in both orders and average them (Arena-Hard's protocol), so the judge's position bias "
        "cancels; the bias is measured and reported. 'false': one order per pair (the bias is then part of every entry)."
    ))
    selection_fraction: float = field(default=0.5, metadata=_help("Fraction of prompts the best epochs are chosen on."))
    best_per_algorithm: int = field(default=2, metadata=_help("Epochs per algorithm in the pairwise table."))
    bootstrap: int = field(default=1000, metadata=_help("Bootstrap resamples of the prompts for the 95-percent intervals (0 = none)."))
    seed: int = field(default=0, metadata=_help("Seed of sampling, the split and the bootstrap."))
    device: str | None = field(default=None, metadata=_help("Device of the policies (default: cuda when available)."))
    judge_device: str | None = field(default=None, metadata=_help("Device of a preference-model judge (default: --device)."))
    max_missing_fraction: float = field(default=0.5, metadata=_help("Stop when a comparison misses more judgements than this."))
    overwrite: bool = field(default=False, metadata=_help("Discard earlier results in --output_dir."))
    progress: bool = field(default=True, metadata=_help("Show tqdm progress bars."))

    def settings(self, sampling: SamplingArguments, judge_batch_size: int) -> EvaluationSettings:
        """The :class:`EvaluationSettings` these flags stand for, with the sampling flags and ``--judge_batch_size``."""
        return EvaluationSettings(
            num_prompts=self.num_prompts, samples_per_prompt=self.samples_per_prompt, temperature=sampling.temperature,
            top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p, max_new_tokens=sampling.max_new_tokens,
            max_prompt_length=self.max_prompt_length, prompts_per_batch=self.prompts_per_batch, dtype=self.dtype,
            both_orders=self.both_orders, selection_fraction=self.selection_fraction,
            best_per_algorithm=self.best_per_algorithm, bootstrap=self.bootstrap, seed=self.seed, device=self.device,
            judge_batch_size=judge_batch_size, max_missing_fraction=self.max_missing_fraction,
        )


@dataclass
class EvaluationSampling(SamplingArguments):
    """The sampling flags with the paper's evaluation defaults: temperature 1, top-k 100, top-p 0.95,
    responses up to 512 tokens."""

    top_k: int = field(default=100, metadata=_help(SAMPLING_HELP["top_k"]))
    top_p: float = field(default=0.95, metadata=_help(SAMPLING_HELP["top_p"]))
    max_new_tokens: int = field(default=512, metadata=_help("Longest response in tokens (>= 1)."))


def _model_folder(flag: str, item: str, path: str | Path, role: str) -> Path:
    """``path`` as a folder holding a model for ``role`` (:func:`lm_runs.models.check_model_source`), else one line."""
    try:
        check_model_source(str(path), role)
    except ModelRoleError as error:
        raise EvaluationError(f"{flag} {item}: {one_line(error)}") from None
    return Path(path).expanduser()


def _check_device(flag: str, value: str | None) -> None:
    """``value`` names a device torch knows and this machine has (None: the default), else one line."""
    if value is None:
        return
    import torch

    try:
        device = torch.device(value)
    except RuntimeError:
        raise EvaluationError(f"{flag} {value!r} is not a device (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise EvaluationError(f"{flag} {value}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _prepare(
    args: EvaluateArguments, sampling: SamplingArguments, judge_args: JudgeArguments
) -> tuple[list[ModelSpec], ModelSpec, list[Any], CheckedJudge, EvaluationSettings]:
    """Every check that can fail on bad input, cheapest first, before any model (or the judge) is loaded."""
    settings = args.settings(sampling, judge_args.judge_batch_size)
    settings.check()
    if judge_args.judge is None:
        raise EvaluationError("--judge is required: a preference-model folder, module:function, http://host:port or openai:MODEL")
    _check_device("--device", args.device)
    _check_device("--judge_device", args.judge_device)
    if args.judge_device is not None and not Path(judge_args.judge).is_dir():
        raise EvaluationError(f"--judge_device applies to a preference-model judge (a model folder), not to --judge {judge_args.judge}")
    output_dir = Path(args.output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise EvaluationError(f"--output_dir {args.output_dir} is a file; give a folder")
    reference = _model_folder("--reference", args.reference, args.reference, "reference")
    specs = discover_runs(args.runs)
    for item in args.models:
        name, path = named_path(item)
        if name is None:
            name = Path(path).resolve().name
        specs.append(ModelSpec(name, _model_folder("--models", item, path, "policy"), algorithm=name))
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
        judge = load_judge(judge_args.judge, seed=args.seed, device=args.judge_device or args.device, **judge_args.judge_kwargs())
    except (ValueError, OSError) as error:
        raise EvaluationError(f"--judge {judge_args.judge}: {one_line(error)}") from None
    return specs, ModelSpec(REFERENCE, reference, algorithm=REFERENCE), prompts, judge, settings


def bias_line(result: EvaluationResult) -> str:
    """The one line on the judge's position bias printed at the end."""
    bias = result.summary["position_bias"]
    if not result.summary["settings"]["fingerprint"]["both_orders"]:
        return "judge position bias: not measured (--both_orders false): it is part of every win rate above"
    if bias is None or math.isnan(bias):
        return "judge position bias: not measured (no pair of distinct responses)"
    return (f"judge position bias: {bias:+.3f} (mean over comparisons of ½·(P(a ≻ b) + P(b ≻ a)) − ½; "
            "removed from every win rate by averaging the two orders)")


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point: parse, check, evaluate, print the tables, the judge's position bias and where the
    results are. Bad input, or a file that cannot be written (a full disk) → one line on stderr, exit 2;
    Ctrl-C → one line, exit 130. Once the inputs are checked (:func:`lm_runs.launcher.inputs_checked`),
    any other ``ValueError`` is a bug and keeps its traceback."""
    from ..cli import parse_config

    output_dir = "the output folder"
    try:
        try:
            args, sampling, judge_args = parse_config([EvaluateArguments, EvaluationSampling, JudgeArguments], argv)
        except ValueError as error:  # a sampling or judge flag refused while parsing
            raise EvaluationError(one_line(error)) from None
        output_dir = args.output_dir
        specs, reference, prompts, judge, settings = _prepare(args, sampling, judge_args)
        evaluation = Evaluation(
            specs, reference, prompts, judge, settings, Path(args.output_dir),
            overwrite=args.overwrite, progress=args.progress,
        )
        inputs_checked()
        result = evaluation.run()
    except (EvaluationError, ModelRoleError, JudgeError, SaveError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: what was generated and judged so far is kept in {output_dir}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    print(result.tables["vs_reference.md"])
    print(result.tables["pairwise.md"])
    print(bias_line(result))
    print(f"results in {result.output_dir}: winrates.csv, winrates.parquet, summary.json, tables/")
    return 0
