"""What an evaluation is asked to do, and what its saved files are tied to.

:class:`EvaluationSettings` (sampling, judging and analysis options, and the *fingerprint* of those
that change a generation or a judgement), :class:`ModelSpec` (one model to evaluate),
:class:`EvaluationResult`, :class:`EvaluationError`, and the content identities that tie saved
generations to model weights (:func:`model_identity`), name a model's random stream by its content
(:func:`sampling_stream`) and tie the whole folder to its prompts (:func:`prompts_hash`). The judge's
identity is :meth:`lm_runs.judges.CheckedJudge.identity`: by content, for a judge behind a judge server
too (the served judge's identity, from the server's ``/health``), so a folder refuses a server restarted
with another model, τ or kind at the same URL and accepts the same judge served at another URL; a server
swapped for another mid-run is refused after the first call it answers
(:class:`~lm_runs.judges.JudgeChanged`, exit status 2), that call's answers unsaved; an
OpenAI-compatible endpoint whose model record (``GET /models/{model}``) changes mid-run likewise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..generation import SamplingParams
from ..launcher import UsageError
from ..models import folder_digest

__all__ = [
    "REFERENCE",
    "SETTINGS_VERSION",
    "EvaluationError",
    "EvaluationSettings",
    "ModelSpec",
    "EvaluationResult",
    "derive_seed",
    "prompts_hash",
    "IDENTITY_FILES",
    "model_identity",
    "sampling_stream",
]

#: The name π_ref carries in file names, the tidy table and the summary.
REFERENCE = "reference"
#: Version 2: judges identified by content, generations seeded by the model's content, both orders by default.
SETTINGS_VERSION = 2


class EvaluationError(UsageError):
    """Bad input or a state the evaluation refuses to continue from; the CLI prints it and exits 2."""


@dataclass(frozen=True)
class EvaluationSettings:
    """How to sample, judge and summarise.

    Fields that change a generation or a judgement (sampling, ``max_new_tokens``,
    ``max_prompt_length``, ``prompts_per_batch``, ``dtype``, ``samples_per_prompt``, ``seed``,
    ``both_orders``), with the judge's identity and the prompts, go into ``settings.json`` and must
    match on a rerun; the analysis fields (``selection_fraction``, ``best_per_algorithm``,
    ``bootstrap``) and the execution fields (``device``, ``judge_batch_size``: pairs per judge call and
    per forward pass of a preference-model judge, the missing-judgement guards) may change freely.
    ``both_orders`` is on by default: a judge's position bias then cannot pass for a win.
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
    both_orders: bool = True
    selection_fraction: float = 0.5
    best_per_algorithm: int = 2
    bootstrap: int = 1000
    seed: int = 0
    device: str | None = None
    judge_batch_size: int = 16
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


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from a stable hash of ``parts`` (the same on every machine and Python run)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def prompts_hash(prompts: Sequence[Any]) -> str:
    """SHA-256 of the prompts as sorted-key JSON (what ``settings.json`` pins about them)."""
    return hashlib.sha256(json.dumps(list(prompts), sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


#: The files of a model folder that shape a response: the weights (not the Trainer's training_args.bin),
#: the architecture, the adapter, the EOS ids of the generation config, the tokenizer and its chat template.
IDENTITY_FILES = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "config.json",
    "adapter_config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def model_identity(source: Any) -> dict[str, Any]:
    """What a model's saved generations are tied to: for a directory, its name and the digests of its
    :data:`IDENTITY_FILES` (:func:`lm_runs.models.folder_digest` with ``sampled=True``: independent of
    where the folder lies); ``{"object": class}`` for an in-memory model."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        files = folder_digest(folder, IDENTITY_FILES, exclude=("training_args.bin",), sampled=True)
        return {"directory": folder.name, "files": files}
    return {"object": type(source).__name__}


def sampling_stream(identity: Mapping[str, Any], name: str) -> str:
    """The name of a model's random stream: the SHA-256 of its files' digests for a model folder, so
    two folders holding the same model draw the same responses (a model then ties with its copy
    exactly, every pair being identical) while different models draw independently; the model's name
    for an in-memory model, whose content is not hashed."""
    files = identity.get("files")
    if files is None:
        return name
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
