"""GatheringJudge in two gloo processes: rank 0 judges everyone's pairs, each rank gets its own slice
(ranks send different numbers of pairs), and a failure of the judge on rank 0 is raised on both ranks."""

from __future__ import annotations

import os
import socket

import torch.distributed as dist
import torch.multiprocessing as mp


def _judge(prompts, completions):
    if any(p == "fail" for p in prompts):
        raise RuntimeError("boom")
    return [float(len(a)) / (len(a) + len(b)) for a, b in completions]


def _worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from lm_runs.judges import JudgeError
    from lm_runs.judges.gathering import GatheringJudge

    judge = GatheringJudge(_judge if rank == 0 else None)  # only rank 0 needs a judge
    pairs = [[f"r{rank}-{i}" + "x" * i, "yy"] for i in range(2 + rank)]
    got = judge([f"prompt {rank}"] * len(pairs), pairs)
    out[rank] = {"got": got, "expected": _judge([""] * len(pairs), pairs)}
    try:
        judge(["fail" if rank == 1 else "ok"], [["a", "b"]])
        out[f"{rank}-error"] = None
    except JudgeError as error:
        out[f"{rank}-error"] = str(error)
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
        assert "boom" in out[f"{rank}-error"]
