"""One judge for all ranks of a distributed run: rank 0 judges every rank's pairs, each rank gets its own.

By default every rank calls its judge with its own pairs (one HTTP client per rank, or one local
judge per rank). :class:`GatheringJudge` is the other layout: rank 0 gathers the pairs of all ranks
(``torch.distributed.gather_object``), judges them in one call and scatters back to each rank the
slice at that rank's offset (``scatter_object_list``) — the reference client's layout, without its
defect of handing every rank rank 0's slice. A failure on rank 0 is raised on every rank (no rank is
left waiting).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .base import JudgeError

__all__ = ["GatheringJudge"]


class GatheringJudge:
    """Wraps ``judge`` so that only rank 0 calls it; every rank must call this wrapper collectively.

    Args:
        judge: the judge rank 0 calls with the concatenation of all ranks' pairs, in rank order.
        group: the process group (default: the world).
    """

    def __init__(self, judge: Callable[..., list[float]], group: Any = None) -> None:
        self.judge = judge
        self.group = group

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
                answers = [JudgeError(f"the judge on rank 0 failed: {error}")] * world
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
