"""Evaluation wall time with a pairwise preference model versus a scalar reward model of the same size (issue 18).

Builds, in a temporary directory (nothing is downloaded), a tiny GPT-2 reference π_ref, ``--models``
perturbed copies of it (each its own algorithm, so the pairwise table compares all of them), and two
judges with the same body (``lm_runs.tiny.build_tiny_lm`` with ``--judge_layers`` × ``--judge_width``):
a 2-label preference model and a 1-label reward model. The responses are generated once and copied
into every output folder, so the timed ``lm_runs.evaluate.evaluate`` calls differ only in the judging:

* ``preference_model``: every pair asked, both orders (2 pair texts per pair);
* ``reward_model/pairs``: the reward model asked pair by pair as any judge (2 response texts per pair,
  both orders in one call);
* ``reward_model/scores``: each response scored once, every pair formed from the scores
  (``lm_runs.evaluate.scoring``; M·K texts per prompt, M = models + π_ref);
* ``reward_model/served``: the same reward model behind ``lm_runs.judge_server`` (a server thread in this
  process, ``create_app`` + ``serve_in_thread``), the evaluation an HTTP client scoring each response
  once at the server's score route (``POST /v1/scores``);
* ``no model``: ``lm_runs.judges.toy:prefer_shorter`` (no forward pass), the evaluation's own cost
  (reading the generations, bootstrap intervals, tables) that every row includes.

Each row: wall seconds (best of ``--repeats``, a fresh output folder each time), texts through the
judge model (forward-pass rows) and the pairs judged. The comparisons: each model against π_ref on all
``--prompts`` prompts, and the pairwise table (models·(models − 1)/2 comparisons) on the report half.

    python benchmarks/bench_evaluate_judges.py [--models 6 --prompts 32 --samples 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from egpo_core.cli import OneLineArgumentParser  # noqa: E402

PROMPT_WORDS = "tell me about the cat why is the sun big write a poem how fast is the dog moon star".split()


def positive(text: str) -> int:
    """An integer ≥ 1 (argparse type)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog="bench_evaluate_judges.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=positive, default=6, help="policies besides π_ref (default 6)")
    parser.add_argument("--prompts", type=positive, default=32, help="held-out prompts (default 32)")
    parser.add_argument("--samples", type=positive, default=4, help="responses per prompt and model, K (default 4)")
    parser.add_argument("--max_new_tokens", type=positive, default=24, help="response length limit (default 24)")
    parser.add_argument("--judge_layers", type=positive, default=2, help="layers of both judges (default 2)")
    parser.add_argument("--judge_width", type=positive, default=64, help="hidden size of both judges (default 64)")
    parser.add_argument("--judge_batch_size", type=positive, default=16, help="pairs per judge call (default 16)")
    parser.add_argument("--repeats", type=positive, default=3, help="timed runs per judge; the best is reported (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.judge_width % 2:
        parser.error(f"--judge_width must be even (2 attention heads), got {args.judge_width}")
    if args.json is not None and args.json.is_dir():
        parser.error(f"--json {args.json} is a folder; give a file name")
    return args


def count_rows(judge: Any) -> dict[str, int]:
    """Wrap ``judge.model.forward`` to count the rows (texts) it is given."""
    counted = {"rows": 0}
    forward = judge.model.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        ids = kwargs.get("input_ids", args[0] if args else None)
        counted["rows"] += int(ids.shape[0])
        return forward(*args, **kwargs)

    judge.model.forward = counting
    return counted


class PairByPair:
    """A reward-model judge asked pair by pair (its answers and identity, not its scores)."""

    kind = "reward_model"
    shuffles_order = False

    def __init__(self, judge: Any) -> None:
        self.judge, self.name = judge, judge.name

    def __call__(self, prompts: Any, completions: Any) -> list[float]:
        return self.judge(prompts, completions)

    def identity(self) -> dict[str, Any]:
        return self.judge.identity()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    import torch

    from transformers import AutoModelForCausalLM

    from lm_runs.evaluate import EvaluationSettings, evaluate
    from lm_runs.judges import CheckedJudge, load_judge
    from lm_runs.judges.preference_model import PreferenceModelJudge
    from lm_runs.judges.reward_model import RewardModelJudge
    from lm_runs.tiny import build_tiny_lm

    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = EvaluationSettings(
        num_prompts=args.prompts, samples_per_prompt=args.samples, max_new_tokens=args.max_new_tokens,
        prompts_per_batch=8, bootstrap=200, device=device, judge_batch_size=args.judge_batch_size,
    )
    prompts = [" ".join(PROMPT_WORDS[(3 * i + k) % len(PROMPT_WORDS)] for k in range(3 + i % 5)) for i in range(args.prompts)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref = build_tiny_lm(root / "ref", seed=0)
        models = {}
        for m in range(args.models):
            model = AutoModelForCausalLM.from_pretrained(ref)
            generator = torch.Generator().manual_seed(100 + m)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.3 * torch.randn(p.shape, generator=generator))
            model.save_pretrained(root / f"m{m}")
            for f in ref.iterdir():
                if f.name not in ("model.safetensors", "config.json", "generation_config.json"):
                    shutil.copy(f, root / f"m{m}")
            models[f"m{m}"] = root / f"m{m}"
        size = {"n_layer": args.judge_layers, "n_embd": args.judge_width, "n_head": 2, "seed": 1}
        pm_dir = build_tiny_lm(root / "pm", num_labels=2, **size)
        rm_dir = build_tiny_lm(root / "rm", num_labels=1, **size)
        texts = 2 * args.judge_batch_size
        judges = {
            "preference_model": lambda: PreferenceModelJudge(pm_dir, device=device, batch_size=args.judge_batch_size, seed=0),
            "reward_model/pairs": lambda: PairByPair(RewardModelJudge(rm_dir, device=device, batch_size=texts)),
            "reward_model/scores": lambda: RewardModelJudge(rm_dir, device=device, batch_size=texts),
            "reward_model/served": lambda: RewardModelJudge(rm_dir, device=device, batch_size=texts),
            "no model": lambda: load_judge("lm_runs.judges.toy:prefer_shorter"),
        }
        # generate once (untimed for the judges): a toy judge's evaluation leaves the generations behind
        start = time.perf_counter()
        evaluate(models, ref, prompts, "lm_runs.judges.toy:prefer_shorter", settings, root / "generated")
        generation_s = time.perf_counter() - start
        rows = []
        for label, make in judges.items():
            times, counted = [], {}
            for repeat in range(args.repeats):
                out = root / f"{label.replace('/', '_').replace(' ', '_')}-{repeat}"
                shutil.copytree(root / "generated" / "generations", out / "generations")
                judge = make()
                if isinstance(judge, CheckedJudge):  # no model to count
                    counted = {"rows": 0}
                else:
                    counted = count_rows(judge.judge if isinstance(judge, PairByPair) else judge)
                    judge = CheckedJudge(judge)
                with contextlib.ExitStack() as stack:
                    if label == "reward_model/served":  # the server starts untimed; the client is the judge
                        from lm_runs.judge_server import create_app, serve_in_thread
                        from lm_runs.judges.http import HTTPJudge

                        server = stack.enter_context(serve_in_thread(create_app(judge, max_batch_size=texts, max_wait_ms=1)))
                        judge = CheckedJudge(stack.enter_context(HTTPJudge(server.url, chunk_size=texts)))
                    start = time.perf_counter()
                    evaluate(models, ref, prompts, judge, settings, out)
                    times.append(time.perf_counter() - start)
            pairs = sum(len(path.read_text().splitlines()) for path in (out / "judgements").iterdir())
            rows.append({"judge": label, "wall_s": min(times), "all_wall_s": times, "judge_rows": counted["rows"], "pairs": pairs})
            print(f"{label:22s} {min(times):8.2f} s   {counted['rows']:7d} texts through the judge, {pairs} pairs   "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times)})", flush=True)
    report = {
        "command": "python benchmarks/bench_evaluate_judges.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "device": device,
                    "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
        "settings": {"models": args.models, "prompts": args.prompts, "samples": args.samples,
                     "max_new_tokens": args.max_new_tokens, "judge_layers": args.judge_layers,
                     "judge_width": args.judge_width, "judge_batch_size": args.judge_batch_size, "repeats": args.repeats},
        "generation_s": generation_s,
        "rows": rows,
    }
    print(f"generation (all models, once): {generation_s:.2f} s; command: {report['command']}")
    if args.json is not None:
        from egpo_core.files import atomic_write

        atomic_write(args.json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
