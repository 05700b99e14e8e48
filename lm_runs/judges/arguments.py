"""The ``--judge*`` flags every entry point shares (training, evaluation, the judge server).

:class:`JudgeArguments` is a dataclass mixin for ``HfArgumentParser`` dataclasses (like
:class:`lm_runs.lora.LoraArguments`): mixed into a ``TrainingArguments`` subclass its
``__post_init__`` validates its fields and then calls the parent's; used alone it validates only.
:meth:`JudgeArguments.judge_kwargs` gives what :func:`~lm_runs.judges.loader.load_judge` takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .loader import JUDGE_SPEC_HELP, check_judge_spec

__all__ = ["JudgeArguments"]


@dataclass
class JudgeArguments:
    """The judge and how to reach it: ``--judge``, ``--judge_batch_size``, ``--judge_timeout``,
    ``--judge_retries``."""

    judge: str | None = field(default=None, metadata={"help": JUDGE_SPEC_HELP})
    """The judge spec (see :data:`~lm_runs.judges.loader.JUDGE_SPEC_HELP`); ``None``: not given."""
    judge_batch_size: int = field(default=16, metadata={"help": "Pairs per forward pass of a local model judge (> 0; a reward model scores the pairs' distinct responses, up to twice as many texts)."})
    """Pairs per forward pass of a model judge (preference or reward model)."""
    judge_timeout: float | None = field(
        default=None,
        metadata={
            "help": "Remote judges (http://, openai:): total seconds one request may take, connecting, sending and "
            "reading together, before it counts as failed and is retried; unset: 60."
        },
    )
    """Deadline of one request to a remote judge, in seconds (``None``: the judge's default)."""
    judge_retries: int | None = field(
        default=None,
        metadata={
            "help": "Remote judges: retries after a connection error, a timeout, HTTP 429 or 5xx (>= 0); unset: 7, "
            "which waits at least 17.75 s in all, longer than a judge server takes to start."
        },
    )
    """Retries of a remote judge after a transient failure (``None``: the judge's default)."""

    def __post_init__(self) -> None:
        if self.judge is not None:
            self.judge = check_judge_spec(self.judge)
        size = self.judge_batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"--judge_batch_size must be an integer >= 1, got {size!r}")
        timeout = self.judge_timeout
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0):
            raise ValueError(f"--judge_timeout must be a number of seconds > 0, got {timeout!r}")
        retries = self.judge_retries
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise ValueError(f"--judge_retries must be an integer >= 0, got {retries!r}")
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:  # TrainingArguments' own checks when mixed into it; none when used alone
            parent()

    def judge_kwargs(self) -> dict[str, Any]:
        """``batch_size``, ``timeout`` and ``retries`` for :func:`~lm_runs.judges.loader.load_judge`."""
        return {"batch_size": self.judge_batch_size, "timeout": self.judge_timeout, "retries": self.judge_retries}
