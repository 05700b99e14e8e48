"""One judge for all ranks of a distributed run: rank 0 judges every rank's pairs, each rank gets its own.

By default every rank calls its judge with its own pairs (one HTTP client per rank, or one local
judge per rank). :class:`GatheringJudge` is the other layout: rank 0 gathers the pairs of all ranks
(``torch.distributed.gather_object``), judges them in one call and scatters back to each rank the
slice at that rank's offset (``scatter_object_list``) — the reference client's layout, without its
defect of handing every rank rank 0's slice. A failure on rank 0 (any exception of its judge, or a wrong
number of answers) is scattered in place of the answers and raised on every rank as one
:class:`~lm_runs.judges.JudgeError` line naming the cause, so no rank is left waiting and all take the
trainer's failure path together (``lm_runs.trainer``: one checkpoint, one error line).

``kind``, ``name`` and :meth:`GatheringJudge.identity` are those of the judge it gathers for, as
:class:`~lm_runs.judges.CheckedJudge` defines them for every judge.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from lm_runs.launcher import one_line

from .base import JudgeError, judge_identity, judge_name

__all__ = ["GatheringJudge"]


class GatheringJudge:
    """Wraps ``judge`` so that only rank 0 calls it; every rank must call this wrapper collectively.

    Args:
        judge: the judge rank 0 calls with the concatenation of all ranks' pairs, in rank order (``None``
            on the other ranks, which never call it).
        group: the process group (default: the world).
    """

    def __init__(self, judge: Callable[..., list[float]] | None, group: Any = None) -> None:
        self.judge = judge
        self.group = group

    @property
    def kind(self) -> str:
        """The gathered judge's ``kind`` (``"callable"`` for a plain callable); ``"gathered"`` on a rank that
        holds no judge (rank 0 judges for it)."""
        if self.judge is None:
            return "gathered"
        return getattr(self.judge, "kind", None) or "callable"

    @property
    def name(self) -> str:
        """The gathered judge's name; ``"rank 0's judge"`` on a rank that holds none."""
        return "rank 0's judge" if self.judge is None else judge_name(self.judge)

    def identity(self) -> dict[str, Any]:
        """The gathered judge by content: its own ``identity()`` (a CheckedJudge's, an HTTP or a model
        judge's), else ``{"kind": "callable", **source_identity(judge)}``. ``ValueError`` on a rank that
        holds no judge (ask rank 0)."""
        if self.judge is None:
            raise ValueError("GatheringJudge: this rank holds no judge (rank 0 judges for all ranks); ask rank 0 for its identity")
        return judge_identity(self.judge, self.kind)

    def __call__(self, prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> list[float]:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(self.group) == 1:
            return self.judge(prompts, completions)
        world, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        mine = (list(prompts), [list(pair) for pair in completions])
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object(mine, gathered, dst=0, group=self.group)
        answers: list[Any] | None = None
        if rank == 0:
            all_prompts = [p for ps, _ in gathered for p in ps]
            all_pairs = [c for _, cs in gathered for c in cs]
            try:
                results = list(self.judge(all_prompts, all_pairs))
                if len(results) != len(all_pairs):
                    raise JudgeError(f"judge returned {len(results)} values for {len(all_pairs)} pairs")
                answers, start = [], 0
                for ps, _ in gathered:  # each rank's slice at its own offset
                    answers.append(results[start : start + len(ps)])
                    start += len(ps)
            except Exception as error:  # every rank must learn of it, or the others wait forever
                answers = [JudgeError(f"the judge on rank 0 failed ({type(error).__name__}: {one_line(error)})")] * world
        received: list[Any] = [None]
        dist.scatter_object_list(received, answers, src=0, group=self.group)
        if isinstance(received[0], Exception):
            raise received[0]
        return received[0]

    def close(self) -> None:
        close = getattr(self.judge, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"GatheringJudge({self.judge!r})"
