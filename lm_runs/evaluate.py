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
   seeded with a hash of (seed, m, c), so response (m, i, j) is the same on every rerun and a
   resumed generation continues exactly where it stopped. Responses are the decoded tokens up to
   (without) EOS; an empty response is kept as the empty string and counted, never re-sampled or
   glued to another.
2. **Judging.** Pair (i, j) of models A and B is A's response j to prompt i against B's response j,
   judged on :func:`lm_runs.data.prompt_text` (the text the trainer's judge sees). Its preference is

       P_ij = P(a ≻ b)                                  (one order), or
       P_ij = ½·(P(a ≻ b) + 1 − P(b ≻ a))               (``--both_orders``, Arena-Hard's protocol),

   where P(b ≻ a) is the judge's answer with the two responses swapped (the judge is then asked not
   to shuffle the order itself). The measured **position bias** is

       bias = mean over pairs of ½·(P(a ≻ b) + P(b ≻ a)) − ½,

   the mean excess probability the judge gives to whichever response is shown first; the averaged
   P_ij removes any bias of the form P(first ≻ second) = P*(first ≻ second) + δ exactly.
   A judgement the judge cannot give (it raises :class:`~lm_runs.judges.JudgeError`, or returns
   None/NaN/a non-probability for that item) is **missing**: it is recorded with its reason, left
   out of every mean, and counted (``n_missing``). With ``--both_orders`` a pair is missing when either
   order is. A batch that raises ``JudgeError`` is re-asked pair by pair, so one bad pair does not
   take its batch with it.
3. **Win rate and interval.** For prompts S (a split), with m_ij = 1 where P_ij is not missing,

       win_rate(A, B; S) = Σ_{i∈S} Σ_j m_ij·P_ij / Σ_{i∈S} Σ_j m_ij,

   and its 95% interval is the 2.5 / 97.5 percentiles of the same ratio over ``--bootstrap``
   resamples of S's prompts with replacement (each prompt keeping its K pairs together; the same
   resamples for every entry of a split, so entries are paired).
4. **Selection without reuse.** The prompts are split once, by a seeded permutation, into a
   *selection* split (``--selection_fraction``, default ½) and a *report* split. The best
   ``best_per_algorithm`` (2) epochs of each algorithm are those with the highest win rate against
   π_ref on the selection split; the pairwise table compares them on the report split only.
   (The reference code chose and reported on the same prompts, overstating the winners.)

Tables (:mod:`lm_runs.tables`): win rate against π_ref for every epoch of every algorithm (on all
prompts: nothing is chosen from it) and the pairwise row-beats-column table of the selected models
(on the report split), in percent, one decimal, bold where the row wins, epochs labelled 1-based
(``epoch-k`` → ``k``, the model after k epochs). Every entry, with its interval, is also in the tidy
``winrates.csv``/``.parquet`` (``split`` ∈ all / selection / report).

Outputs under ``--output_dir``::

    settings.json                      the fingerprint of everything that changes a generation or a judgement
    generations/<model>.jsonl          {"prompt", "sample", "text", "truncated", "num_tokens"} per response
    generations/<model>.meta.json      which model (path and a hash of its weight files) made them
    judgements/<A>__vs__<B>.jsonl      {"prompt", "sample", "p_ab", "p_ba", "error"} per pair
    winrates.csv, winrates.parquet     tidy: model, opponent, algorithm, epoch, win_rate, ci_low, ci_high,
                                       n_pairs, n_missing, split, comparison, position_bias, ...
    summary.json                       settings, models, splits, selection, per-comparison counts and bias
    tables/vs_reference.{md,tex}, tables/pairwise.{md,tex}   (and *_ci.* with the intervals)

Every file is written atomically (``egpo_core.files.atomic_write``: a temporary file, then
``os.replace``): generations after each batch, judgements after each judge call, so a killed
evaluation resumes where it stopped, regenerating no finished model and re-asking no recorded judgement. A rerun whose settings differ
from ``settings.json`` is refused (use a new ``--output_dir`` or ``--overwrite``), as is a model
name whose saved generations came from different weights.

Python API: :func:`evaluate` (models, reference, prompts, judge, settings, output_dir) →
:class:`EvaluationResult`; :func:`render_tables`; :func:`discover_runs`; :func:`win_rate_ci`.

    python -m lm_runs.evaluate --reference runs/sft --runs runs/egpo runs/oipo1 \\
        --prompts heldout.jsonl --judge runs/pm --output_dir runs/eval [--both_orders]
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from egpo_core.files import atomic_write

from .generation import SamplingParams, generate_completions
from .judges import CheckedJudge, JudgeError, accepts_shuffle_order, judge_name, load_judge
from .tables import render_pairwise, render_vs_reference

__all__ = [
    "REFERENCE",
    "EvaluationError",
    "EvaluationSettings",
    "ModelSpec",
    "EvaluationResult",
    "EvaluateArguments",
    "discover_runs",
    "read_algorithm",
    "load_causal_lm",
    "generate_responses",
    "judge_pairs",
    "preferences",
    "position_bias",
    "win_rate_ci",
    "split_indices",
    "select_best",
    "render_tables",
    "evaluate",
    "main",
]

#: The name π_ref carries in file names, the tidy table and the summary.
REFERENCE = "reference"
_SEPARATOR = "__vs__"
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")
SETTINGS_VERSION = 1


class EvaluationError(ValueError):
    """Bad input or a state the evaluation refuses to continue from; the CLI prints it and exits 2."""


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationSettings:
    """How to sample, judge and summarise.

    Fields that change a generation or a judgement (sampling, ``max_new_tokens``,
    ``max_prompt_length``, ``prompts_per_batch``, ``dtype``, ``samples_per_prompt``, ``seed``,
    ``both_orders``) go into ``settings.json`` and must match on a rerun; the analysis fields
    (``selection_fraction``, ``best_per_algorithm``, ``bootstrap``) and the execution fields
    (``device``, ``judge_batch_size``, the missing-judgement guards) may change freely.
    """

    num_prompts: int = 100
    samples_per_prompt: int = 10
    temperature: float = 1.0
    top_k: int = 100
    top_p: float = 0.95
    min_p: float = 0.0
    max_new_tokens: int = 512
    max_prompt_length: int | None = None
    prompts_per_batch: int = 8
    dtype: str | None = None
    both_orders: bool = False
    selection_fraction: float = 0.5
    best_per_algorithm: int = 2
    bootstrap: int = 1000
    seed: int = 0
    device: str | None = None
    judge_batch_size: int = 64
    max_missing_fraction: float = 0.5
    max_consecutive_judge_errors: int = 16

    def sampling(self) -> SamplingParams:
        """The sampling distribution (raises ``ValueError`` for a bad one)."""
        return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p)

    def check(self) -> None:
        """Raise :class:`EvaluationError` naming the first bad field."""

        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise EvaluationError(f"--{name} must be an integer >= {low}, got {value!r}")

        integer("num_prompts", 1)
        integer("samples_per_prompt", 1)
        integer("max_new_tokens", 1)
        integer("prompts_per_batch", 1)
        integer("best_per_algorithm", 1)
        integer("bootstrap", 0)
        integer("judge_batch_size", 1)
        integer("max_consecutive_judge_errors", 1)
        if self.max_prompt_length is not None:
            integer("max_prompt_length", 1)
        if not 0.0 < float(self.selection_fraction) < 1.0:
            raise EvaluationError(f"--selection_fraction must lie in (0, 1), got {self.selection_fraction!r}")
        if not 0.0 <= float(self.max_missing_fraction) <= 1.0:
            raise EvaluationError(f"--max_missing_fraction must lie in [0, 1], got {self.max_missing_fraction!r}")
        if self.dtype is not None and self.dtype not in ("float32", "float16", "bfloat16"):
            raise EvaluationError(f"--dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        try:
            self.sampling()
        except ValueError as error:
            raise EvaluationError(str(error)) from None

    def fingerprint(self) -> dict[str, Any]:
        """The fields that change generations or judgements (what ``settings.json`` pins)."""
        return {
            "sampling": {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p, "min_p": self.min_p},
            "max_new_tokens": self.max_new_tokens,
            "max_prompt_length": self.max_prompt_length,
            "prompts_per_batch": self.prompts_per_batch,
            "dtype": self.dtype,
            "samples_per_prompt": self.samples_per_prompt,
            "seed": self.seed,
            "both_orders": self.both_orders,
        }


@dataclass
class ModelSpec:
    """One model to evaluate.

    ``source``: a model directory (full weights, or a LoRA adapter folder) or an in-memory causal LM.
    ``algorithm``: the table row it belongs to (default: its name); ``epoch``: its 1-based epoch
    (None for a model outside a run); ``tokenizer``: for an in-memory model (else the directory's,
    falling back to π_ref's).
    """

    name: str
    source: Any
    algorithm: str | None = None
    epoch: int | None = None
    run: str | None = None
    tokenizer: Any = None

    @property
    def label(self) -> str:
        """Its label in the pairwise table: ``"egpo (epoch 3)"``, or the name for a model without an epoch."""
        algorithm = self.algorithm or self.name
        return f"{algorithm} (epoch {self.epoch})" if self.epoch is not None else self.name


@dataclass
class EvaluationResult:
    """What :func:`evaluate` computed (and wrote under ``output_dir``).

    ``winrates``: the tidy table (one row per model, opponent and split); ``summary``: what
    ``summary.json`` holds; ``tables``: file name → text (Markdown and LaTeX); ``selected``: algorithm
    → the names of its best epochs; ``generations``: model name → its response records.
    """

    winrates: Any
    summary: dict[str, Any]
    tables: dict[str, str]
    selected: dict[str, list[str]]
    output_dir: Path
    generations: dict[str, list[dict[str, Any]]]


# --------------------------------------------------------------------------------------------------
# Small helpers: seeds, hashes, JSONL files
# --------------------------------------------------------------------------------------------------


def _derive_seed(*parts: Any) -> int:
    """A 63-bit seed from a stable hash of ``parts`` (the same on every machine and Python run)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _prompts_hash(prompts: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(list(prompts), sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise EvaluationError(f"{path}: line {number} is not JSON; delete the file to redo it") from None
    return rows


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _stem(name: str) -> str:
    """A file-name-safe form of a model name (``run/epoch-3`` → ``run+epoch-3``)."""
    return re.sub(r"[^A-Za-z0-9._=-]", "+", name)


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_IDENTITY_FILES = ("config.json", "adapter_config.json")


def _file_digest(path: Path, full_limit: int = 64 << 20, block: int = 1 << 20) -> str:
    """sha256 of the file when under ``full_limit`` bytes, else of its size and four 1 MiB blocks
    (start, ⅓, ⅔, end): cheap for multi-GB weights, and any retraining changes them."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        if size <= full_limit:
            for chunk in iter(lambda: handle.read(block), b""):
                digest.update(chunk)
        else:
            for offset in (0, size // 3, 2 * size // 3, size - block):
                handle.seek(offset)
                digest.update(handle.read(block))
    return digest.hexdigest()


def _identity(source: Any) -> dict[str, Any]:
    """What a model's saved generations are tied to: its weight and config files' digests (a directory,
    independent of where it lies), or ``{"object": class}`` for an in-memory model."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        files = {
            p.name: _file_digest(p)
            for p in sorted(folder.iterdir())
            if p.is_file()
            and (p.name in _IDENTITY_FILES or (p.suffix in _WEIGHT_SUFFIXES and p.name != "training_args.bin"))
        }
        return {"directory": folder.name, "files": files}
    return {"object": type(source).__name__}


# --------------------------------------------------------------------------------------------------
# Finding the models
# --------------------------------------------------------------------------------------------------


def _named(item: str) -> tuple[str | None, str]:
    """``"name=DIR"`` → (name, DIR); ``"DIR"`` → (None, DIR)."""
    if "=" in item:
        name, _, path = item.partition("=")
        if name and not os.path.exists(item):
            return name, path
    return None, item


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def read_algorithm(run_dir: str | Path) -> str | None:
    """The ``alg`` of a training run: from ``training_args.bin`` (the pickled :class:`NLHFConfig`)
    in the run folder or in one of its epoch folders, else from ``config.yaml``/``config.yml``/
    ``config.json``/``args.json`` in the run folder; None when none says.

    ``training_args.bin`` is a pickle: it is read with ``weights_only=False``, which runs code from
    the file, so only point ``--runs`` at runs you trust (as with loading their models).
    """
    run_dir = Path(run_dir)
    candidates = [run_dir / "training_args.bin"]
    epochs = run_dir / "epochs"
    if epochs.is_dir():
        candidates += sorted(epochs.glob("epoch-*/training_args.bin"))
    for path in candidates:
        if path.is_file():
            try:
                import torch

                args = torch.load(path, weights_only=False, map_location="cpu")
            except Exception:  # noqa: BLE001 - an unreadable file just does not name the algorithm
                continue
            alg = getattr(args, "alg", None)
            if isinstance(alg, str) and alg:
                return alg
    for name in ("config.yaml", "config.yml", "config.json", "args.json"):
        path = run_dir / name
        if path.is_file():
            try:
                if path.suffix == ".json":
                    data = json.loads(path.read_text())
                else:
                    import yaml

                    data = yaml.safe_load(path.read_text())
            except Exception:  # noqa: BLE001
                continue
            if isinstance(data, dict) and isinstance(data.get("alg"), str) and data["alg"]:
                return data["alg"]
    return None


def discover_runs(runs: Sequence[str | Path]) -> list[ModelSpec]:
    """Every ``epochs/epoch-k`` folder of every run, in run order then k ascending.

    An item is ``DIR`` or ``NAME=DIR``; the run name defaults to the folder's name, each model is
    named ``<run name>/epoch-k``, its algorithm is :func:`read_algorithm` (else the run name). Two
    runs of the same algorithm are told apart as ``"alg (run name)"``. Raises
    :class:`EvaluationError` for a missing folder, a run without epochs, or an epoch folder without a model.
    """
    found: list[tuple[str, str, list[ModelSpec]]] = []
    names: set[str] = set()
    for item in runs:
        name, path_text = _named(str(item))
        run_dir = Path(path_text).expanduser()
        if not run_dir.is_dir():
            raise EvaluationError(f"--runs {item}: no such directory")
        run_name = name or run_dir.resolve().name
        if run_name in names:
            raise EvaluationError(f"--runs: two runs are named {run_name!r}; name them with NAME=DIR")
        names.add(run_name)
        epochs_dir = run_dir / "epochs"
        folders = []
        if epochs_dir.is_dir():
            for child in epochs_dir.iterdir():
                match = _EPOCH_DIR.match(child.name)
                if match and child.is_dir():
                    folders.append((int(match.group(1)), child))
        if not folders:
            raise EvaluationError(f"--runs {item}: no epochs/epoch-k folders in {run_dir} (is it a training output dir?)")
        folders.sort()
        for k, child in folders:
            if k < 1:
                raise EvaluationError(f"--runs {item}: {child.name} is not 1-based (the trainer writes epoch-1, epoch-2, ...)")
            if not _is_model_dir(child):
                raise EvaluationError(f"--runs {item}: {child} holds no model (no config.json or adapter_config.json)")
        algorithm = read_algorithm(run_dir) or run_name
        specs = [ModelSpec(f"{run_name}/epoch-{k}", child, algorithm=algorithm, epoch=k, run=run_name) for k, child in folders]
        found.append((run_name, algorithm, specs))
    counts = Counter(algorithm for _, algorithm, _ in found)
    out: list[ModelSpec] = []
    for run_name, algorithm, specs in found:
        for spec in specs:
            if counts[algorithm] > 1:
                spec.algorithm = f"{algorithm} ({run_name})"
            out.append(spec)
    return out


# --------------------------------------------------------------------------------------------------
# Loading and generating
# --------------------------------------------------------------------------------------------------


def _device(settings: EvaluationSettings) -> str:
    if settings.device:
        return settings.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_causal_lm(source: str | Path, *, reference: str | Path | None = None, device: str = "cpu", dtype: str | None = None):
    """(model, tokenizer) from a directory: a full model, or a LoRA adapter folder applied to its
    ``base_model_name_or_path`` when that is a local directory and to ``reference`` (π_ref, which is
    the base of a LoRA run) otherwise, then merged. The tokenizer is the folder's, else ``reference``'s."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(source)
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    adapter = source / "adapter_config.json"
    if adapter.is_file():
        from peft import PeftModel

        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        base_dir = Path(base) if base and Path(base).is_dir() else (Path(reference) if reference is not None else None)
        if base_dir is None:
            raise EvaluationError(f"{source}: a LoRA adapter whose base {base!r} is not a local directory, and no reference")
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, **kwargs), source)
        model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    has_tokenizer = any((source / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
    if not has_tokenizer and reference is None:
        raise EvaluationError(f"{source}: no tokenizer files and no reference to take them from")
    tokenizer = AutoTokenizer.from_pretrained(source if has_tokenizer else reference)
    model.to(device)
    model.eval()
    return model, tokenizer


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids of the tokenizer and of the model's generation config (chat models often have two)."""
    ids: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)
    if not ids:
        raise EvaluationError("the tokenizer has no EOS token: responses could never end")
    return ids


def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    settings: EvaluationSettings,
    *,
    model_name: str,
    done: Mapping[tuple[int, int], Mapping[str, Any]] | None = None,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """K responses per prompt: records ``{"prompt": i, "sample": j, "text", "truncated", "num_tokens"}``
    ordered by (i, j).

    Prompts go in batches of ``settings.prompts_per_batch`` consecutive prompts × K rows; batch c
    (prompts c·P … c·P + P − 1) is drawn with a generator seeded by hash(seed, model_name, c), so a
    record depends only on (settings, model, i, j). Batches whose records are all in ``done`` are
    skipped (resumption); ``on_batch`` receives the records so far after each new batch.
    """
    import torch
    from tqdm.auto import tqdm

    from .data import PromptCollator

    collator = PromptCollator(tokenizer, settings.max_prompt_length)
    eos = _eos_ids(model, tokenizer)
    params = settings.sampling()
    K, P = settings.samples_per_prompt, settings.prompts_per_batch
    device = next(model.parameters()).device
    records: dict[tuple[int, int], dict[str, Any]] = {k: dict(v) for k, v in (done or {}).items()}
    starts = list(range(0, len(prompts), P))
    todo = [s for s in starts if not all((i, j) in records for i in range(s, min(s + P, len(prompts))) for j in range(K))]
    for start in tqdm(todo, desc=f"generate {model_name}", disable=not progress, leave=False):
        indices = list(range(start, min(start + P, len(prompts))))
        batch = collator([{"prompt": prompts[i]} for i in indices for _ in range(K)])
        generator = torch.Generator().manual_seed(_derive_seed(settings.seed, "generate", model_name, start // P))
        out = generate_completions(
            model,
            batch["prompt_ids"].to(device),
            batch["prompt_mask"].to(device),
            params,
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=collator.pad_token_id,
            generator=generator,
        )
        texts = tokenizer.batch_decode(out.ids, skip_special_tokens=True)
        lengths = out.lengths.tolist()
        truncated = out.truncated.tolist()
        for row, (i, j) in enumerate((i, j) for i in indices for j in range(K)):
            records[(i, j)] = {
                "prompt": i,
                "sample": j,
                "text": texts[row],
                "truncated": bool(truncated[row]),
                "num_tokens": int(lengths[row]),
            }
        if on_batch is not None:
            on_batch([records[k] for k in sorted(records)])
    return [records[k] for k in sorted(records)]


# --------------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------------


class _TolerantJudge:
    """Calls a judge and turns what it cannot judge into missing items instead of failing the batch.

    Returns ``(value, error)`` per pair: ``value`` a probability, or None with ``error`` saying why
    (the judge raised :class:`JudgeError` on that pair alone, or answered None, NaN, a non-number or
    a number outside [0, 1]). A batch raising ``JudgeError`` is re-asked pair by pair. Any other
    exception (an interrupt, a bug) propagates. A judge with ``judge_with_missing`` (the OpenAI judge)
    is asked through it, so its unparseable answers arrive as None.
    """

    def __init__(self, judge: Callable[..., Any], max_consecutive_errors: int = 16) -> None:
        self.inner = judge.inner if isinstance(judge, CheckedJudge) else judge
        self.name = judge_name(judge)
        self.fn = getattr(self.inner, "judge_with_missing", None) or self.inner
        self.takes_shuffle = accepts_shuffle_order(self.fn)
        self.max_consecutive_errors = max_consecutive_errors
        self.consecutive_errors = 0
        self.calls = 0

    def _ask(self, prompts: list[str], pairs: list[list[str]], shuffle_order: bool | None) -> list[Any]:
        self.calls += 1
        if shuffle_order is not None and self.takes_shuffle:
            values = self.fn(prompts, pairs, shuffle_order=shuffle_order)
        else:
            values = self.fn(prompts, pairs)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise JudgeError(f"judge {self.name} returned {type(values).__name__}, expected a list of {len(pairs)} values")
        values = list(values)
        if len(values) != len(pairs):
            raise JudgeError(f"judge {self.name} returned {len(values)} values for {len(pairs)} pairs")
        return values

    @staticmethod
    def _value(value: Any) -> tuple[float | None, str | None]:
        if value is None:
            return None, "judge returned None"
        if isinstance(value, (str, bytes, bool)) or not hasattr(value, "__float__"):
            return None, f"judge returned a non-number {value!r:.40}"
        number = float(value)
        if math.isnan(number):
            return None, "judge returned NaN"
        if not 0.0 <= number <= 1.0:
            return None, f"judge returned {number!r}, outside [0, 1]"
        return number, None

    def __call__(self, prompts: list[str], pairs: list[list[str]], shuffle_order: bool | None = None) -> list[tuple[float | None, str | None]]:
        if not pairs:
            return []
        try:
            values = self._ask(prompts, pairs, shuffle_order)
        except JudgeError as error:
            if len(pairs) > 1:
                out = []
                for k in range(len(pairs)):
                    out += self(prompts[k : k + 1], pairs[k : k + 1], shuffle_order)
                return out
            self.consecutive_errors += 1
            if self.consecutive_errors >= self.max_consecutive_errors:
                raise EvaluationError(
                    f"judge {self.name} failed on {self.consecutive_errors} pairs in a row (last: {_one_line(error)}); "
                    "is it working? Fix it and rerun: the judgements made so far are kept"
                ) from None
            return [(None, f"JudgeError: {_one_line(error)}")]
        self.consecutive_errors = 0
        return [self._value(v) for v in values]


def judge_pairs(
    judge: Callable[..., Any],
    prompt_texts: Sequence[str],
    first: Mapping[tuple[int, int], str],
    second: Mapping[tuple[int, int], str],
    keys: Sequence[tuple[int, int]],
    *,
    both_orders: bool = False,
    batch_size: int = 64,
    done: Mapping[tuple[int, int], Mapping[str, Any]] | None = None,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = False,
    desc: str = "judge",
    max_consecutive_errors: int = 16,
) -> list[dict[str, Any]]:
    """Judge pair (i, j) = (first[(i, j)], second[(i, j)]) on ``prompt_texts[i]`` for every key not in ``done``.

    Records ``{"prompt": i, "sample": j, "p_ab": P(a ≻ b) | None, "p_ba": P(b ≻ a) | None, "error": str | None}``
    (``p_ba`` only with ``both_orders``, which also asks the judge not to shuffle), ordered by key.
    ``judge`` is any judge callable (a :class:`~lm_runs.judges.CheckedJudge` is unwrapped so that
    one bad item does not fail its batch). ``on_batch`` gets all records so far after each call.
    """
    from tqdm.auto import tqdm

    tolerant = judge if isinstance(judge, _TolerantJudge) else _TolerantJudge(judge, max_consecutive_errors)
    records: dict[tuple[int, int], dict[str, Any]] = {k: dict(v) for k, v in (done or {}).items()}
    todo = [k for k in keys if k not in records]
    per_call = max(1, batch_size // 2) if both_orders else batch_size
    batches = [todo[s : s + per_call] for s in range(0, len(todo), per_call)]
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        prompts = [prompt_texts[i] for i, _ in batch]
        pairs = [[first[k], second[k]] for k in batch]
        if both_orders:
            answers = tolerant(prompts + prompts, pairs + [[b, a] for a, b in pairs], shuffle_order=False)
            forward, backward = answers[: len(batch)], answers[len(batch) :]
        else:
            forward, backward = tolerant(prompts, pairs), [(None, None)] * len(batch)
        for (i, j), (p_ab, e_ab), (p_ba, e_ba) in zip(batch, forward, backward):
            errors = [e for e in (e_ab, e_ba) if e]
            records[(i, j)] = {
                "prompt": i,
                "sample": j,
                "p_ab": p_ab,
                "p_ba": p_ba if both_orders else None,
                "error": "; ".join(errors) if errors else None,
            }
        if on_batch is not None:
            on_batch([records[k] for k in sorted(records)])
    return [records[k] for k in sorted(records)]


def preferences(records: Iterable[Mapping[str, Any]], num_prompts: int, samples: int, *, both_orders: bool) -> np.ndarray:
    """(n, K) matrix of P_ij: P(a ≻ b), or ½(P(a ≻ b) + 1 − P(b ≻ a)) with ``both_orders``; NaN where
    missing (not judged, or either order missing)."""
    P = np.full((num_prompts, samples), np.nan)
    for r in records:
        p_ab, p_ba = r.get("p_ab"), r.get("p_ba")
        if p_ab is None or (both_orders and p_ba is None):
            continue
        P[r["prompt"], r["sample"]] = 0.5 * (p_ab + 1.0 - p_ba) if both_orders else p_ab
    return P


def position_bias(records: Iterable[Mapping[str, Any]], prompts: Iterable[int] | None = None) -> tuple[float, int]:
    """(mean over pairs judged in both orders of ½(P(a ≻ b) + P(b ≻ a)) − ½, number of such pairs).

    0 for a judge indifferent to order; +δ when the response shown first gets δ more probability.
    NaN with 0 pairs (single-order judging)."""
    keep = None if prompts is None else set(int(i) for i in prompts)
    values = [
        0.5 * (r["p_ab"] + r["p_ba"]) - 0.5
        for r in records
        if r.get("p_ab") is not None and r.get("p_ba") is not None and (keep is None or r["prompt"] in keep)
    ]
    return (float(np.mean(values)) if values else float("nan")), len(values)


def _bootstrap_indices(size: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, size, size=(resamples, size))


def win_rate_ci(
    P: np.ndarray,
    prompts: Sequence[int] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    indices: np.ndarray | None = None,
) -> dict[str, float | int]:
    """Win rate over the rows ``prompts`` of ``P`` (n prompts × K pairs, NaN = missing) and its
    bootstrap interval.

        win_rate = Σ_i Σ_j m_ij P_ij / Σ_i Σ_j m_ij,   m_ij = 1 where P_ij is not NaN,

    the interval = the (1 − level)/2 and (1 + level)/2 quantiles of that ratio over ``resamples``
    draws of the prompts with replacement (a prompt's K pairs stay together). ``indices``, a
    (resamples, len(prompts)) array of positions into ``prompts``, fixes the draws (shared by all
    entries of a split). Returns win_rate, ci_low, ci_high, n_pairs (judged), n_missing.
    """
    P = np.asarray(P, dtype=float)
    rows = np.arange(P.shape[0]) if prompts is None else np.asarray(list(prompts), dtype=int)
    sub = P[rows]
    present = ~np.isnan(sub)
    sums = np.where(present, sub, 0.0).sum(axis=1)
    counts = present.sum(axis=1)
    n_pairs = int(counts.sum())
    out: dict[str, float | int] = {
        "win_rate": float(sums.sum() / n_pairs) if n_pairs else float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "n_pairs": n_pairs,
        "n_missing": int(sub.size - n_pairs),
    }
    if n_pairs and len(rows) and (resamples > 0 or indices is not None):
        draws = indices if indices is not None else _bootstrap_indices(len(rows), resamples, seed)
        denominators = counts[draws].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = sums[draws].sum(axis=1) / denominators
        ratios = ratios[denominators > 0]
        if ratios.size:
            tail = (1.0 - level) / 2.0
            out["ci_low"], out["ci_high"] = (float(q) for q in np.quantile(ratios, [tail, 1.0 - tail]))
    return out


def split_indices(num_prompts: int, selection_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(selection, report): a seeded permutation of range(n) cut at round(fraction · n), each sorted.
    Disjoint, together all prompts; raises :class:`EvaluationError` when either would be empty."""
    n_selection = int(round(selection_fraction * num_prompts))
    if not 1 <= n_selection <= num_prompts - 1:
        raise EvaluationError(
            f"--selection_fraction {selection_fraction} of {num_prompts} prompts leaves "
            f"{n_selection} for selection and {num_prompts - n_selection} to report on; both need at least one"
        )
    order = np.random.default_rng(_derive_seed(seed, "split")).permutation(num_prompts)
    return sorted(int(i) for i in order[:n_selection]), sorted(int(i) for i in order[n_selection:])


def select_best(scores: Mapping[str, float], groups: Mapping[str, str], count: int = 2) -> dict[str, list[str]]:
    """Per group (algorithm), the ``count`` model names with the highest score (ties and NaN: the
    earlier-listed model first, NaN last), returned in listing order within the group."""
    order = {name: k for k, name in enumerate(groups)}
    out: dict[str, list[str]] = {}
    for name, group in groups.items():
        out.setdefault(group, []).append(name)
    for group, names in out.items():
        ranked = sorted(names, key=lambda n: (math.isnan(scores[n]), -scores[n] if not math.isnan(scores[n]) else 0.0, order[n]))
        out[group] = sorted(ranked[:count], key=order.__getitem__)
    return out


# --------------------------------------------------------------------------------------------------
# Tables from the tidy data
# --------------------------------------------------------------------------------------------------


def render_tables(
    winrates: Any,
    models: Sequence[ModelSpec],
    selected: Mapping[str, Sequence[str]],
    *,
    vs_reference_split: str = "all",
    pairwise_split: str = "report",
) -> dict[str, str]:
    """The Markdown and LaTeX tables from the tidy win rates (a DataFrame as :func:`evaluate` writes).

    Returns ``{"vs_reference.md", "vs_reference.tex", "pairwise.md", "pairwise.tex"}`` and the same
    with ``_ci`` (entries followed by their 95% interval). vs reference: row = algorithm, column =
    epoch, on ``vs_reference_split``; pairwise: the ``selected`` models, row beats column, on ``pairwise_split``.
    """
    by_name = {m.name: m for m in models}
    vs = winrates[(winrates["comparison"] == "vs_reference") & (winrates["split"] == vs_reference_split)]
    grid: dict[str, dict[int | None, float]] = {}
    grid_ci: dict[str, dict[int | None, tuple[float, float]]] = {}
    for m in models:
        row = vs[vs["model"] == m.name]
        if row.empty:
            continue
        algorithm = m.algorithm or m.name
        grid.setdefault(algorithm, {})[m.epoch] = float(row["win_rate"].iloc[0])
        grid_ci.setdefault(algorithm, {})[m.epoch] = (float(row["ci_low"].iloc[0]), float(row["ci_high"].iloc[0]))
    labels = [name for names in selected.values() for name in names]
    pw = winrates[(winrates["comparison"] == "pairwise") & (winrates["split"] == pairwise_split)]
    cells = {(r.model, r.opponent): float(r.win_rate) for r in pw.itertuples()}
    cells_ci = {(r.model, r.opponent): (float(r.ci_low), float(r.ci_high)) for r in pw.itertuples()}
    display = {name: by_name[name].label for name in labels}
    tables: dict[str, str] = {}
    for fmt, ext in (("markdown", "md"), ("latex", "tex")):
        tables[f"vs_reference.{ext}"] = render_vs_reference(grid, fmt=fmt)
        tables[f"vs_reference_ci.{ext}"] = render_vs_reference(grid, fmt=fmt, ci=grid_ci)
        tables[f"pairwise.{ext}"] = render_pairwise(labels, cells, fmt=fmt, display=display)
        tables[f"pairwise_ci.{ext}"] = render_pairwise(labels, cells, fmt=fmt, display=display, ci=cells_ci)
    return tables


# --------------------------------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------------------------------


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


class _Evaluation:
    """One evaluation's state: what is on disk, what is left, and the numbers."""

    def __init__(
        self,
        specs: list[ModelSpec],
        reference: ModelSpec,
        prompts: list[Any],
        judge: Callable[..., Any],
        judge_spec: str,
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
        stems = [_stem(n) for n in names]
        for n in names:
            if not n or _SEPARATOR in n:
                raise EvaluationError(f"model name {n!r} is empty or contains {_SEPARATOR!r}")
        if len(set(names)) != len(names):
            dup = sorted(n for n, c in Counter(names).items() if c > 1)
            raise EvaluationError(f"model names must be unique (the reference is {REFERENCE!r}); repeated: {dup}")
        if len(set(stems)) != len(stems):
            raise EvaluationError(f"model names {names} map to clashing file names; rename them")
        for m in self.all_models:
            if isinstance(m.source, (str, Path)):
                if not Path(m.source).is_dir() or not _is_model_dir(Path(m.source)):
                    raise EvaluationError(f"model {m.name}: {m.source} is not a model directory (config.json or adapter_config.json)")
            elif m.tokenizer is None and tokenizer is None:
                raise EvaluationError(f"model {m.name} is an in-memory model: give its tokenizer (ModelSpec.tokenizer or tokenizer=)")
        self.prompts = prompts
        from .data import prompt_text

        self.prompt_texts = [prompt_text(p) for p in prompts]
        self.judge = _TolerantJudge(judge, settings.max_consecutive_judge_errors)
        self.judge_spec = judge_spec
        self.settings = settings
        self.output_dir = Path(output_dir)
        self.tokenizer = tokenizer
        self.progress = progress
        self.n, self.K = len(prompts), settings.samples_per_prompt
        self.selection, self.report = split_indices(self.n, settings.selection_fraction, settings.seed)
        self.fingerprint = {
            "version": SETTINGS_VERSION,
            **settings.fingerprint(),
            "judge": judge_spec,
            "prompts": {"count": self.n, "sha256": _prompts_hash(prompts)},
        }
        self.generate_calls = 0
        self._prepare_dir(overwrite)

    # -- files ---------------------------------------------------------------------------------

    def gen_path(self, name: str) -> Path:
        return self.output_dir / "generations" / f"{_stem(name)}.jsonl"

    def judge_path(self, a: str, b: str) -> Path:
        return self.output_dir / "judgements" / f"{_stem(a)}{_SEPARATOR}{_stem(b)}.jsonl"

    def _prepare_dir(self, overwrite: bool) -> None:
        out = self.output_dir
        settings_file = out / "settings.json"
        if overwrite:
            for sub in ("generations", "judgements", "tables"):
                shutil.rmtree(out / sub, ignore_errors=True)
            for name in ("settings.json", "summary.json", "winrates.csv", "winrates.parquet"):
                (out / name).unlink(missing_ok=True)
        for sub in ("generations", "judgements", "tables"):
            (out / sub).mkdir(parents=True, exist_ok=True)
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
            identity = _identity(m.source)
            self.identities[m.name] = identity
            meta = self.gen_path(m.name).with_suffix(".meta.json")
            if meta.is_file():
                saved = json.loads(meta.read_text())
                if saved.get("identity") != identity:
                    raise EvaluationError(
                        f"{self.gen_path(m.name)} was generated by another model than {m.name} = {m.source} "
                        "(its weight files differ); use a new --output_dir, another name, or --overwrite"
                    )
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
            model, tokenizer = load_causal_lm(spec.source, reference=ref, device=_device(self.settings), dtype=self.settings.dtype)
            loaded = True
        else:
            model, tokenizer, loaded = spec.source, spec.tokenizer or self.tokenizer, False
        try:
            self.generate_calls += 1
            rows = generate_responses(
                model, tokenizer, self.prompts, self.settings, model_name=spec.name, done=done,
                on_batch=lambda rows: _write_jsonl(self.gen_path(spec.name), rows), progress=self.progress,
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
                _write_jsonl(path, [r for r in _read_jsonl(path) if not is_missing(r)])

        try:
            records = judge_pairs(
                self.judge, self.prompt_texts, first, second, keys,
                both_orders=self.settings.both_orders, batch_size=self.settings.judge_batch_size, done=done,
                on_batch=lambda rows: _write_jsonl(path, rows), progress=self.progress, desc=f"judge {a} vs {b}",
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
        draws = {name: _bootstrap_indices(len(idx), s.bootstrap, _derive_seed(s.seed, "bootstrap", name)) for name, idx in splits.items()}
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
                    })
            reasons = Counter(r["error"] for r in records if r.get("error"))
            comparisons.append({
                "model": a, "opponent": b, "comparison": kind,
                "n_missing": {k: v["n_missing"] for k, v in stats.items()},
                "position_bias": position_bias(records)[0] if s.both_orders else None,
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
        ])
        for column in ("epoch", "opponent_epoch"):
            winrates[column] = winrates[column].astype("Int64")
        tables = render_tables(winrates, self.models, selected)
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
            "position_bias": float(np.mean(all_bias)) if all_bias else None,
            "missing": int(sum(c["n_missing"].get("all", c["n_missing"].get("report", 0)) for c in comparisons)),
            "tables": {
                "vs_reference": f"win rate (%) against {REFERENCE}, all {self.n} prompts × {self.K} samples",
                "pairwise": f"row beats column (%), the {len(self.report)} report prompts × {self.K} samples; "
                f"models chosen on the {len(self.selection)} selection prompts",
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
    from .data import check_prompt

    for index, p in enumerate(out):
        try:
            check_prompt(p, where=f"prompt {index}")
        except ValueError as error:
            raise EvaluationError(str(error)) from None
    return out[:num_prompts] if num_prompts is not None else out


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
    """Generate, judge and summarise (see the module docstring for every formula).

    ``models``: name → model directory / in-memory causal LM / :class:`ModelSpec`, or a list of
    ModelSpec (e.g. from :func:`discover_runs`); ``reference``: π_ref, the same kinds; ``prompts``: a
    list of prompts (strings or message lists) or a ``datasets.Dataset`` with a ``prompt`` column
    (the first ``settings.num_prompts`` are used); ``judge``: a spec for :func:`lm_runs.judges.load_judge`
    or a judge callable; ``tokenizer``: for in-memory models without their own.
    Writes everything under ``output_dir`` and returns it as an :class:`EvaluationResult`.
    Raises :class:`EvaluationError` for bad input, changed settings or a judge that keeps failing.
    """
    settings = settings or EvaluationSettings()
    settings.check()
    specs = _as_specs(models)
    ref = reference if isinstance(reference, ModelSpec) else ModelSpec(REFERENCE, reference, algorithm=REFERENCE)
    if ref.name != REFERENCE:
        ref = ModelSpec(REFERENCE, ref.source, algorithm=REFERENCE, tokenizer=ref.tokenizer)
    if isinstance(judge, str):
        spec = judge
        try:
            judge = load_judge(judge, seed=settings.seed, device=settings.device)
        except (ValueError, OSError) as error:
            raise EvaluationError(f"--judge {spec}: {_one_line(error)}") from None
    else:
        spec = judge_name(judge)
    evaluation = _Evaluation(
        specs, ref, _prompt_list(prompts, settings.num_prompts), judge, spec, settings, Path(output_dir),
        tokenizer=tokenizer, overwrite=overwrite, progress=progress,
    )
    return evaluation.run()


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


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
    if not reference.is_dir() or not _is_model_dir(reference):
        raise EvaluationError(f"--reference {args.reference}: not a model directory (no config.json or adapter_config.json)")
    specs = discover_runs(args.runs)
    for item in args.models:
        name, path = _named(item)
        if name is None:
            name = Path(path).resolve().name
        folder = Path(path).expanduser()
        if not folder.is_dir() or not _is_model_dir(folder):
            raise EvaluationError(f"--models {item}: not a model directory")
        specs.append(ModelSpec(name, folder, algorithm=name))
    if not specs:
        raise EvaluationError("nothing to evaluate: give --runs DIR [DIR ...] and/or --models NAME=DIR")
    from .data import load_prompts

    try:
        table = load_prompts(args.prompts, column=args.prompt_column, split=args.prompt_split, max_prompts=args.num_prompts)
    except (ValueError, FileNotFoundError) as error:
        raise EvaluationError(f"--prompts: {_one_line(error)}") from None
    prompts = list(table["prompt"])
    if len(prompts) < args.num_prompts:
        print(f"note: --prompts has {len(prompts)} prompts, fewer than --num_prompts {args.num_prompts}; using all", file=sys.stderr)
    try:
        judge = load_judge(args.judge, seed=args.seed, device=args.judge_device or args.device)
    except (ValueError, OSError) as error:
        raise EvaluationError(f"--judge {args.judge}: {_one_line(error)}") from None
    return specs, ModelSpec(REFERENCE, reference, algorithm=REFERENCE), prompts, judge, settings


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point: parse, check, evaluate, print where the results are. Bad input → one line on stderr, exit 2."""
    from .cli import parse_config

    (args,) = parse_config([EvaluateArguments], argv)
    try:
        specs, reference, prompts, judge, settings = _prepare(args)
        evaluation = _Evaluation(
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


if __name__ == "__main__":
    sys.exit(main())
