"""GatheringJudge in two gloo processes: rank 0 judges everyone's pairs, each rank gets its own slice
(ranks send different numbers of pairs), and a failure of the judge on rank 0 is raised on both ranks as
one line naming the cause; ``kind``, ``name`` and ``identity()`` are the gathered judge's. (The trainer's
failure path with ``--judge_gather``: tests/test_nlhf_distributed.py.)"""

from __future__ import annotations

import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from lm_runs.judges import CheckedJudge
from lm_runs.judges.base import source_identity
from lm_runs.judges.gathering import GatheringJudge


def _judge(prompts, completions):
    if any(p == "fail" for p in prompts):
        raise RuntimeError("boom")
    return [float(len(a)) / (len(a) + len(b)) for a, b in completions]


def _worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from lm_runs.judges import JudgeError

    calls: list[int] = []

    def counted(prompts, completions):  # a reward model scores the distinct responses of ONE call once
        calls.append(len(prompts))
        return _judge(prompts, completions)

    judge = GatheringJudge(counted if rank == 0 else None)  # only rank 0 needs a judge
    pairs = [[f"r{rank}-{i}" + "x" * i, "yy"] for i in range(2 + rank)]
    got = judge([f"prompt {rank}"] * len(pairs), pairs)
    out[f"{rank}-calls"] = list(calls)
    out[rank] = {"got": got, "expected": _judge([""] * len(pairs), pairs)}
    try:
        judge(["fail" if rank == 1 else "ok"], [["a", "b"]])
        out[f"{rank}-error"] = None
    except JudgeError as error:
        out[f"{rank}-error"] = str(error)
    out[f"{rank}-kind"] = judge.kind
    dist.destroy_process_group()


def test_rank_zero_judges_and_each_rank_gets_its_own_slice():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
        out = dict(out)
    for rank in (0, 1):
        assert len(out[rank]["got"]) == 2 + rank
        assert out[rank]["got"] == out[rank]["expected"]
        assert out[f"{rank}-error"] == "the judge on rank 0 failed (RuntimeError: boom)"
    assert (out["0-kind"], out["1-kind"]) == ("callable", "gathered")
    assert (out["0-calls"], out["1-calls"]) == ([2 + 3], [])  # both ranks' pairs in one call on rank 0


class _ModelJudge:
    kind = "preference_model"

    def __call__(self, prompts, completions):
        return [0.5] * len(completions)

    def identity(self):
        return {"kind": self.kind, "files": {"model.safetensors": "ab12"}}


def test_kind_and_identity_are_the_gathered_judges():
    """A judge with its own identity (a preference model, through CheckedJudge as load_judge builds it)
    keeps it; a plain callable is identified by its source, as CheckedJudge does; a rank without a judge
    says so in one line."""
    checked = CheckedJudge(_ModelJudge(), name="pm")
    gathering = GatheringJudge(checked)
    assert gathering.kind == "preference_model" and gathering.name == "pm"
    assert gathering.identity() == checked.identity() == {"kind": "preference_model", "files": {"model.safetensors": "ab12"}}
    plain = GatheringJudge(_judge)
    assert plain.kind == "callable" and plain.identity() == {"kind": "callable", **source_identity(_judge)}
    assert plain.identity()["qualname"] == "_judge" and plain.identity()["source_sha256"]
    with pytest.raises(ValueError, match="this rank holds no judge"):
        GatheringJudge(None).identity()
