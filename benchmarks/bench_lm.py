"""Seconds per NLHF update of ``lm_runs.trainer.NLHFTrainer``, per algorithm, with where the time goes.

One update = one optimizer step (EGPO: the pair of half and full steps) of the trainer
``python -m lm_runs.train_nlhf`` runs (built by ``lm_runs.train_nlhf.build_trainer``), full fine-tuning of
a causal LM against a separate frozen π_ref, 8 prompts per optimizer step, 16 new tokens, fp32, one process,
a callable judge (the shorter response wins softly, defined below), one torch thread (``--threads``). Every algorithm runs in its own
subprocess, so its peak RSS (``ru_maxrss``) is its own; the time per update is the median over
``--updates`` updates after ``--warmup`` warm-up updates.

``--judges`` compares judges: ``shorter`` (the callable, default), ``preference_model`` (a 2-label pairwise
classifier: one forward row per judged pair) and ``reward_model`` (a 1-label Bradley–Terry reward model of
the same body: each distinct response of a rollout scored once, 3 rows per prompt for EGPO and Online
IPO 1 instead of 2 pair rows), both random-init tiny GPT-2 classifiers of ``--judge-layers`` ×
``--judge-width`` built here and loaded by ``lm_runs.judges.load_judge`` on the benchmark's device. The
``judge`` column is the judging time per update; with several judges each row is ``ALG+JUDGE``, and
``detail.judge_rows`` / ``detail.judge_tokens`` count the judge model's forward rows (texts: a pair text
or a response) and their tokens per update — the work, which a busy machine does not blur.

    python benchmarks/bench_lm.py --json bench_lm.json                     # tiny GPT-2 built here
    python benchmarks/bench_lm.py --model DIR --prompts FILE --json out.json
    python benchmarks/bench_lm.py --memory-floor     # + the peak RSS of a plain HF Trainer, for comparison
    python benchmarks/bench_lm.py --algorithms egpo oipo1 --judges preference_model reward_model

With no ``--model`` a tiny random-init GPT-2 (``lm_runs.tiny.build_tiny_lm``: 2 layers × 64 dims,
vocabulary 320) and ``--num-prompts`` prompts ("tell me about the cat and the moon", ...) are built in a
temporary directory. The device is CUDA when available, else the CPU (``--device`` overrides).

Breakdown of an update (the phases are timed from a subclass of the trainer, which changes nothing
it computes; on CUDA each boundary synchronizes):

* ``generation``: sampling (``generate_completions`` and, for Nash-MD, ``generate_mixture``);
* ``judging``: decoding the responses to text and calling the judge;
* ``forward_backward``: π_ref's log-probabilities of the pair, and the policy's forward and backward
  passes (``Trainer.training_step`` → ``compute_loss`` → backward);
* ``other``: the rest of the update — the optimizer step (also reported alone as
  ``detail.optimizer_step``), EGPO's snapshot and restore (``detail.extragradient_snapshot``), data
  loading, logging and the Trainer's loop.

Each phase is the median over the measured updates; ``other`` is the median of (update − the three
phases), so the four add up to about ``seconds_per_update``. The trainer's epoch-end model saving
is switched off (it is not part of an update).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from egpo_core.cli import OneLineArgumentParser  # noqa: E402

ALGORITHMS = ("egpo", "oipo1", "oipo2", "nashmd", "nashmdpg")
PLAIN_TRAINER = "plain-trainer"  # the worker measuring measure_plain_trainer
ANCHORS = REPO / "benchmarks" / "lm_anchors.json"
PHASES = ("generation", "judging", "forward_backward", "other")
JUDGES = ("shorter", "preference_model", "reward_model")
#: Labels of the judge classifiers built for ``--judges``.
JUDGE_LABELS = {"preference_model": 2, "reward_model": 1}
WORDS = "cat dog bird fish sun moon star tree rock water fire stone".split()


def shorter_wins(prompts, completions):
    """P(a ≻ b) = ½ + (len b − len a) / (2 (len a + len b + 1)): the benchmark's trivial judge."""
    return [0.5 + (len(b) - len(a)) / (2.0 * (len(a) + len(b) + 1)) for a, b in completions]


def write_prompts(path: Path, count: int) -> Path:
    lines = [
        json.dumps({"prompt": f"tell me about the {WORDS[i % len(WORDS)]} and the {WORDS[(i // len(WORDS)) % len(WORDS)]}"})
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / 2**20


# --------------------------------------------------------------------------------------------------
# one algorithm, in this process
# --------------------------------------------------------------------------------------------------


def measure(alg: str, model_dir: str, prompts: str, device: str, warmup: int, updates: int, batch: int,
            new_tokens: int, out_dir: str, judge_dir: str | None = None) -> dict:
    import torch
    from transformers import TrainerCallback

    from lm_runs.config import NLHFConfig
    from lm_runs.train_nlhf import build_trainer
    from lm_runs.trainer import NLHFTrainer, _EpochModels

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def clock() -> float:
        sync()
        return time.perf_counter()

    class Timed(NLHFTrainer):
        """Adds up, per optimizer step, the seconds spent in each phase of the step."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.phase_seconds: dict[str, float] = {}

        def _add(self, name: str, seconds: float) -> None:
            self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + seconds

        def _record(self, prefix, **values):
            if prefix == "generation":  # the trainer's own timers of its rollout
                self._add("generation", values["seconds"])
                self._add("judging", values["judge_seconds"])
            super()._record(prefix, **values)

        def _rollout(self, batch):
            start = clock()
            out = super()._rollout(batch)
            self._add("rollout", clock() - start)
            return out

        def _rollout_window(self, batches):
            start = clock()
            out = super()._rollout_window(batches)
            self._add("window", clock() - start)
            return out

        def training_step(self, model, inputs, num_items_in_batch=None):
            start = clock()
            out = super().training_step(model, inputs, num_items_in_batch)
            self._add("training_step", clock() - start)
            return out

    class Clock(TrainerCallback):
        """Wall time of every optimizer step, and of its optimizer.step()."""

        def __init__(self):
            self.steps: list[tuple[float, dict]] = []
            self._last = None
            self._pre = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self._last is None:
                self._last = clock()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self._pre = clock()

        def on_optimizer_step(self, args, state, control, **kwargs):
            trainer._add("optimizer_step", clock() - self._pre)

        def on_step_end(self, args, state, control, **kwargs):
            now = clock()
            self.steps.append((now - self._last, dict(trainer.phase_seconds)))
            trainer.phase_seconds.clear()
            self._last = now

    args = NLHFConfig(
        output_dir=out_dir,
        model_name_or_path=model_dir,
        prompts=prompts,
        alg=alg,
        max_steps=warmup + updates,
        per_device_train_batch_size=batch,
        max_new_tokens=new_tokens,
        use_cpu=not cuda,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        learning_rate=1e-4,
        save_strategy="no",
    )
    timer = Clock()
    if judge_dir is None:
        judge = shorter_wins
    else:
        from lm_runs.judges import load_judge

        judge = load_judge(judge_dir, device=device, batch_size=64)  # a rollout's pairs in one pass

        def count(module, inputs, kwargs, output):  # the judge's work: rows and tokens of each forward pass
            trainer._add("judge_rows", float(kwargs["input_ids"].shape[0]))
            trainer._add("judge_tokens", float(kwargs["attention_mask"].sum()))

        judge.inner.model.register_forward_hook(count, with_kwargs=True)
    trainer = build_trainer(args, judge=judge, callbacks=[timer], trainer_class=Timed)
    trainer.remove_callback(_EpochModels)
    trainer.train()

    per_update = args.steps_per_update
    rows = []  # one per update: total seconds and phases
    for u in range(len(timer.steps) // per_update):
        steps = timer.steps[u * per_update : (u + 1) * per_update]
        total = sum(s for s, _ in steps)
        phases: dict[str, float] = {}
        for _, p in steps:
            for k, v in p.items():
                phases[k] = phases.get(k, 0.0) + v
        gen, judge = phases.get("generation", 0.0), phases.get("judging", 0.0)
        reference = phases.get("rollout", 0.0) - gen - judge  # π_ref's log-probabilities of the pair
        fwd_bwd = phases.get("training_step", 0.0) - phases.get("window", 0.0) + reference
        snapshot = phases.get("window", 0.0) - phases.get("rollout", 0.0)  # EGPO's save / restore
        rows.append(dict(total=total, generation=gen, judging=judge, forward_backward=fwd_bwd,
                         other=total - gen - judge - fwd_bwd, reference_logprobs=reference,
                         optimizer_step=phases.get("optimizer_step", 0.0), extragradient_snapshot=snapshot,
                         judge_rows=phases.get("judge_rows", 0.0), judge_tokens=phases.get("judge_tokens", 0.0)))
    measured = rows[warmup:]
    med = lambda key: statistics.median(r[key] for r in measured)  # noqa: E731
    return {
        "seconds_per_update": med("total"),
        "peak_rss_mib": peak_rss_mib(),
        "breakdown": {k: med(k) for k in PHASES},
        "detail": {k: med(k) for k in ("reference_logprobs", "optimizer_step", "extragradient_snapshot", "judge_rows", "judge_tokens")},
        "updates_measured": len(measured),
        "seconds_per_update_min": min(r["total"] for r in measured),
        "seconds_per_update_mean": statistics.fmean(r["total"] for r in measured),
        "optimizer_steps_per_update": per_update,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "judge": getattr(judge, "kind", "shorter") if judge_dir is not None else "shorter",
    }


def measure_plain_trainer(model_dir: str, prompts: str, device: str, updates: int, batch: int, new_tokens: int,
                          out_dir: str) -> dict:
    """The memory floor of any Trainer-based NLHF trainer here: a plain ``transformers.Trainer``
    fine-tuning the same model with its causal-LM loss on the tokenized prompts, after one
    ``model.generate`` of ``batch`` prompts × ``new_tokens`` tokens — the same libraries imported and
    the same kinds of kernels warmed up, no NLHF code. Only its peak RSS is comparable."""
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from lm_runs.data import load_prompts, prompt_text
    from lm_runs.models import load_policy, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_policy(model_dir, dtype=torch.float32)
    texts = [prompt_text(row["prompt"]) for row in load_prompts(prompts)]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, ids))
    ids = [row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids]
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = TrainingArguments(output_dir=out_dir, max_steps=updates, per_device_train_batch_size=batch,
                             use_cpu=not device.startswith("cuda"), report_to="none", disable_tqdm=True,
                             save_strategy="no", logging_steps=10**6)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    first = torch.tensor(ids[:batch], device=trainer.args.device)
    with torch.no_grad():
        model.to(trainer.args.device).generate(input_ids=first, attention_mask=torch.ones_like(first), do_sample=True,
                                                max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id)
    trainer.train()
    return {"peak_rss_mib": peak_rss_mib(), "device": device, "torch_threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------------
# driver: one subprocess per algorithm
# --------------------------------------------------------------------------------------------------


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_worker(alg: str, ns: argparse.Namespace, model: str, prompts: str, device: str, judge_dir: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as out, tempfile.NamedTemporaryFile(suffix=".json") as result:
        cmd = [sys.executable, __file__, "--worker", alg, "--model", model, "--prompts", prompts,
               "--device", device, "--warmup", str(ns.warmup), "--updates", str(ns.updates),
               "--batch", str(ns.batch), "--new-tokens", str(ns.new_tokens), "--result", result.name, "--out", out]
        if ns.threads:
            cmd += ["--threads", str(ns.threads)]
        if judge_dir is not None:
            cmd += ["--judge-model", judge_dir]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "benchmarks"), str(REPO), os.environ.get("PYTHONPATH", "")]))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)  # the Trainer prints its logs
        return json.loads(Path(result.name).read_text())


def table(results: dict, anchors: dict) -> str:
    head = f"{'algorithm':<22} {'s/update':>9} {'anchor':>11} {'peak MiB':>9} {'gen':>7} {'judge':>7} {'fwd+bwd':>8} {'other':>7}  (opt step, ref log-p, EGPO snapshot)  [judge rows, tokens]"
    lines = [head, "-" * len(head)]
    for alg, r in results.items():
        b, d = r["breakdown"], r["detail"]
        anchor = anchors.get(alg, {})
        anchor = "/".join(f"{anchor[k]:.3f}" for k in ("reference_trainer", "trl") if k in anchor) or "—"
        lines.append(
            f"{alg:<22} {r['seconds_per_update']:>9.4f} {anchor:>11} {r['peak_rss_mib']:>9.0f} {b['generation']:>7.4f} "
            f"{b['judging']:>7.4f} {b['forward_backward']:>8.4f} {b['other']:>7.4f}  "
            f"({d['optimizer_step']:.4f}, {d['reference_logprobs']:.4f}, {d['extragradient_snapshot']:.4f})"
            + (f"  [{d['judge_rows']:.0f}, {d['judge_tokens']:.0f}]" if d.get("judge_rows") else "")
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = OneLineArgumentParser(prog="bench_lm.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="causal LM directory (default: a tiny GPT-2 built here)")
    parser.add_argument("--prompts", help="prompt file for lm_runs.data.load_prompts (default: generated)")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    parser.add_argument("--warmup", type=int, default=3, help="updates not timed (default 3)")
    parser.add_argument("--updates", type=int, default=25, help="timed updates (default 25; the median is reported)")
    parser.add_argument("--batch", type=int, default=8, help="prompts per optimizer step (default 8)")
    parser.add_argument("--new-tokens", type=int, default=16, help="max_new_tokens (default 16)")
    parser.add_argument("--num-prompts", type=int, default=512, help="generated prompts, without --prompts (default 512)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads in each worker (default 1; 0 = torch's default, one per core)")
    parser.add_argument("--judges", nargs="+", default=["shorter"], choices=JUDGES,
                        help="judges to time (default shorter: the callable); preference_model / reward_model: tiny "
                             "classifiers of --judge-layers x --judge-width built here; several: one row ALG+JUDGE each")
    parser.add_argument("--judge-layers", type=int, default=2, help="layers of the judge classifiers (default 2)")
    parser.add_argument("--judge-width", type=int, default=64, help="hidden size of the judge classifiers (default 64)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--memory-floor", action="store_true",
                        help="also measure the peak RSS of a plain transformers.Trainer (+ one generate) on the same model")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--judge-model", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.judge_layers < 1 or ns.judge_width < 2 or ns.judge_width % 2:
        parser.error(f"--judge-layers must be >= 1 and --judge-width an even number >= 2, got {ns.judge_layers} and {ns.judge_width}")
    for flag, value, least in (("--warmup", ns.warmup, 0), ("--updates", ns.updates, 1), ("--batch", ns.batch, 1),
                               ("--new-tokens", ns.new_tokens, 1), ("--num-prompts", ns.num_prompts, 1),
                               ("--threads", ns.threads, 0)):
        if value < least:
            parser.error(f"{flag} must be at least {least}, got {value}")

    if ns.worker:
        if ns.threads:
            import torch

            torch.set_num_threads(ns.threads)
        if ns.worker == PLAIN_TRAINER:
            result = measure_plain_trainer(ns.model, ns.prompts, ns.device, ns.updates, ns.batch, ns.new_tokens, ns.out)
        else:
            result = measure(ns.worker, ns.model, ns.prompts, ns.device, ns.warmup, ns.updates, ns.batch, ns.new_tokens, ns.out,
                             ns.judge_model)
        Path(ns.result).write_text(json.dumps(result))
        return

    if (ns.model is None) != (ns.prompts is None) and ns.model is not None:
        parser.error("--model needs --prompts")
    device = ns.device or default_device()
    with tempfile.TemporaryDirectory() as tmp:
        model = ns.model
        prompts = ns.prompts or str(write_prompts(Path(tmp) / "prompts.jsonl", ns.num_prompts))
        if model is None:
            from lm_runs.tiny import build_tiny_lm

            model = str(build_tiny_lm(Path(tmp) / "model"))
        judge_dirs: dict[str, str | None] = {"shorter": None}
        for kind in ns.judges:
            if kind in JUDGE_LABELS:
                from lm_runs.tiny import build_tiny_lm

                judge_dirs[kind] = str(build_tiny_lm(Path(tmp) / kind, num_labels=JUDGE_LABELS[kind], seed=1,
                                                     n_layer=ns.judge_layers, n_embd=ns.judge_width))
        results = {}
        for alg in ns.algorithms:
            for kind in ns.judges:
                key = alg if ns.judges == ["shorter"] else f"{alg}+{kind}"
                results[key] = run_worker(alg, ns, model, prompts, device, judge_dirs[kind])
                r = results[key]
                print(f"{key}: {r['seconds_per_update']:.4f} s/update, judging {r['breakdown']['judging']:.4f} s"
                      f" ({r['detail']['judge_rows']:.0f} judge rows, {r['detail']['judge_tokens']:.0f} tokens per update)", flush=True)
        if ns.memory_floor:
            floor = run_worker(PLAIN_TRAINER, ns, model, prompts, device)["peak_rss_mib"]
            print(f"plain transformers.Trainer + generate on the same model: peak RSS {floor:.0f} MiB", flush=True)
    anchors = json.loads(ANCHORS.read_text()) if ANCHORS.is_file() else {}
    print()
    print(table(results, anchors.get("seconds_per_update", {})))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\ndevice {device}, {os.cpu_count()} CPUs, load average {load}, torch threads {results[next(iter(results))]['torch_threads']}, "
          f"{platform.python_version()}")
    if ns.json:
        from egpo_core.files import atomic_write

        atomic_write(ns.json, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
