"""Worker of the multi-process tests (run by torchrun): trains an algorithm (EGPO by default) for a few
updates with NLHFTrainer and saves, per rank, every rollout with the parameters it was generated at and
the final parameters (under ZeRO-3, whose parameters are partitioned, only the gathered final ones).

    torchrun --nproc_per_node=2 tests/distributed_nlhf.py MODEL PROMPTS OUT [--deepspeed CONFIG] [--judge SPEC]

Also the judge ``distributed_nlhf:fails_on_one_rank`` (tests/ is on the path) for the failure tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lm_runs.data import load_prompts  # noqa: E402
from lm_runs.judges.toy import prefer_shorter  # noqa: E402
from lm_runs.judges import load_judge  # noqa: E402
from lm_runs.trainer import NLHFTrainer  # noqa: E402
from test_nlhf_trainer import config as nlhf_config  # noqa: E402


_calls = 0


def fails_on_one_rank(prompts, completions):
    """prefer_shorter, except on the rank ``EGPO_TEST_FAIL_RANK`` from its call ``EGPO_TEST_FAIL_AT`` on
    (counted from 1 in this process; the entry point's probe is call 1), where it raises ConnectionError
    as a judge whose server went away."""
    global _calls
    _calls += 1
    if os.environ.get("RANK") == os.environ["EGPO_TEST_FAIL_RANK"] and _calls >= int(os.environ["EGPO_TEST_FAIL_AT"]):
        raise ConnectionError("judge server at 127.0.0.1:9 refused the connection")
    return prefer_shorter(prompts, completions)


class RecordingTrainer(NLHFTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def _rollout(self, batch):
        at = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        rollout = super()._rollout(batch)
        self.records.append({"params": at, "prompts": list(batch["prompts"]), "rollout": {k: v.clone() for k, v in rollout.items()}})
        return rollout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("prompts")
    parser.add_argument("out")
    parser.add_argument("--deepspeed", default=None)
    parser.add_argument("--judge", default="toy_judges:prefer_shorter")
    parser.add_argument("--alg", default="egpo")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--judge_gather", action="store_true")
    parser.add_argument("--use_peft", action="store_true", help="a LoRA policy; π_ref = its adapter disabled")
    args = parser.parse_args()
    # the single-process tests' settings (tests/test_nlhf_trainer.py), so both replay the same way
    tiny = {"model": args.model, "prompts": args.prompts}
    config = nlhf_config(tiny, args.out, judge=args.judge, alg=args.alg, deepspeed=args.deepspeed, bf16=args.bf16)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    ref = None
    if args.use_peft:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)  # the same adapter initialization on every rank
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn"],
                                                 task_type="CAUSAL_LM"))
    else:
        ref = AutoModelForCausalLM.from_pretrained(args.model)
    inner = load_judge(args.judge)
    if args.judge_gather:
        from lm_runs.judges.gathering import GatheringJudge

        inner = GatheringJudge(inner)
    calls = []

    def judge(prompts, pairs):  # records what this rank asked and got back
        results = inner(prompts, pairs)
        calls.append({"prompts": list(prompts), "pairs": [list(p) for p in pairs], "results": list(results)})
        return results

    trainer = RecordingTrainer(
        model=model, args=config, judge=judge, train_dataset=load_prompts(args.prompts), processing_class=tokenizer, ref_model=ref
    )
    trainer.train()
    trained = [p for p in trainer.model.parameters() if p.requires_grad]
    if trainer.is_deepspeed_enabled and trainer.accelerator.deepspeed_plugin.zero_stage == 3:
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(trained)  # the full tensors, on every rank
    else:
        gathered = contextlib.nullcontext()
    with gathered:
        final = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    rank = trainer.args.process_index
    torch.save(
        {"records": trainer.records, "calls": calls, "final": final, "world": trainer.args.world_size},
        Path(args.out) / f"records_rank{rank}.pt",
    )


if __name__ == "__main__":
    main()
