"""Worker of the multi-process round-mode tests (run by torchrun, or by python for one process): runs
:func:`lm_runs.rounds.run_rounds` with the flags after ``--`` and saves this rank's final trainable
parameters and the last round's optimizer-step losses to ``RECORDS/final_rank{rank}.pt``.

    torchrun --nproc_per_node=2 tests/distributed_rounds.py RECORDS [--interrupt_round R] -- ROUND FLAGS…

``--interrupt_round R`` stops every rank right after round R's training, before its end is saved (exit
status 3), as a run killed there; ``--resume_from_checkpoint true`` among the flags then continues it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lm_runs.cli import parse_config  # noqa: E402
from lm_runs.rounds import RoundsConfig, run_rounds  # noqa: E402


class Interrupted(Exception):
    """Raised after the round named by --interrupt_round."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("records")
    parser.add_argument("--interrupt_round", type=int, default=None)
    own, _, flags = " ".join(sys.argv[1:]).partition(" -- ")
    args = parser.parse_args(own.split())
    (config,) = parse_config([RoundsConfig], flags.split())
    resume = str(config.resume_from_checkpoint).lower() == "true"
    config.resume_from_checkpoint = None

    def stop(r: int, trainer) -> None:
        if r == args.interrupt_round:
            raise Interrupted

    try:
        trainer = run_rounds(config, resume=resume, stop_after=stop)
    except Interrupted:
        sys.exit(3)
    final = {n: p.detach().cpu().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    Path(args.records).mkdir(parents=True, exist_ok=True)
    record = {"final": final, "world": config.world_size, "step_losses": trainer.step_losses}
    torch.save(record, Path(args.records) / f"final_rank{config.process_index}.pt")


if __name__ == "__main__":
    main()
