"""Iterative round mode of NLHF training: INPO (Zhang et al., ICLR 2025, arXiv 2407.00617) on round datasets.

    python -m lm_runs.rounds --alg inpo --rounds 3 --samples_per_prompt 4 --pair_selection best_vs_worst \\
        --epochs_per_round 2 --eta 1.0 --model_name_or_path SFT_DIR --judge PM_DIR --prompts p.jsonl \\
        --output_dir runs/inpo
    python -m lm_runs.train_nlhf --rounds 3 ...   (the same run: ``--rounds`` hands over to this module)

Round r = 0 … R−1 freezes the policy of its start, π_t, and

1. samples K = ``--samples_per_prompt`` responses per prompt from π_t (temperature 1 by default) in ONE
   batched decoding loop (:func:`lm_runs.generation.generate_completions`, seeded with seed + r);
2. judges every unordered pair {i < j} of a prompt's K responses, P_ij = P(y_i ≻ y_j), in one judge call;
3. selects ordered pairs (y_w, y_l): ``all`` — every pair, ordered by one Bernoulli(P_ij) draw
   (y_i wins iff u_ij < P_ij, u_ij ~ U(0, 1) from ``numpy.random.default_rng([seed, r])``, INPO's
   definition); ``best_vs_worst`` — one pair per prompt, the response with the highest mean judged win rate
   w_i = mean_{j≠i} P_ij (P_ji = 1 − P_ij) against the one with the lowest (first index on ties), as the
   papers' pipelines do;
4. computes the summed log-probabilities of every response under π_t and π_ref once (exact, and cheaper
   than a frozen copy of π_t);
5. saves the round's dataset — ``rounds/round-r/dataset/{responses,judgements,pairs}.jsonl`` and ``round.json``
   (prompts, responses' text and token ids, log-probabilities, lengths, judgements, the draws u_ij, the
   seeds) — as one folder published by a rename: complete or absent; a complete one is reused on resume;
6. trains ``--epochs_per_round`` epochs of INPO's loss on the ordered pairs (a fresh optimizer and
   learning-rate schedule each round; Hugging Face checkpoints inside ``rounds/round-r/trainer``),

       L(θ) = mean over pairs of (Δ_θ − ηβ Δ_ref − (1 − ηβ) Δ_t − η/2)²,   Δ_q = ℓ_q(y_w) − ℓ_q(y_l),

   ℓ the summed log-probability (``--length_normalize true``, the default: divided by the response's
   length), i.e. egpo_core's ``ipo_regression_loss`` with the anchor ℓ_A = ηβ ℓ_ref + (1 − ηβ) ℓ_t (the
   geometric mixture of π_t and π_ref at c = ηβ, egpo_core.algorithms.inpo) and the constant target η/2;
7. saves the round's end: ``rounds/round-r/policy.pt`` (the trainable parameters, bit for bit) and
   ``rounds/round-r/model`` (a model folder for ``lm_runs.evaluate``).

Counting: ``--per_device_train_batch_size`` counts ordered pairs here (not prompts), and the step-counted
Hugging Face flags (``--save_steps``, ``--logging_steps``, ``--warmup_steps``) count optimizer steps within a
round. The last round's model is also saved to ``output_dir``. ``--resume_from_checkpoint true`` continues an
interrupted run wherever it stopped: finished rounds are skipped, a saved dataset is reused, and a round
cut short resumes from its newest checkpoint — ending bit for bit where an uninterrupted run ends
(each round is seeded by seed + r alone, and starts from the saved end of the round before).

Refused in round mode (one line, exit status 2): any ``--alg`` but INPO, K < 2, the online algorithms'
opponent and mixture flags, ``--max_steps`` / ``--num_train_epochs`` (rounds and epochs per round count
training), ``--deepspeed`` and more than one process (not implemented yet).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from egpo_core.algorithms import Algorithm, get_algorithm
from egpo_core.files import atomic_write, fsync_directory, write_jsonl
from egpo_core.losses import ipo_regression_loss

from .checkpoints import AtomicCheckpoints
from .config import NLHFConfig
from .data import PromptCollator, encode_prompt, prompt_text
from .generation import ReferenceModel, generate_completions
from .logprobs import completion_logprobs

__all__ = ["RoundsConfig", "PAIR_SELECTIONS", "round_dir", "build_round_dataset", "load_round_dataset", "RoundTrainer", "run_rounds", "main"]

#: ``--pair_selection`` choices.
PAIR_SELECTIONS = ("all", "best_vs_worst")

#: NLHFConfig fields the round mode does not read: refused when changed from their defaults.
_ONLINE_ONLY = ("opponent_temperature", "opponent_top_k", "opponent_top_p", "opponent_min_p", "mixture_coef",
                "extragradient_offload", "judge_gather")


@dataclass
class RoundsConfig(NLHFConfig):
    """NLHFConfig plus the round mode's fields (see the module docstring). ``--samples_per_prompt`` is K,
    the responses sampled per prompt in a round; ``--alg`` must be ``inpo`` (the default here)."""

    alg: str = field(default="inpo", metadata={"help": "Round mode trains INPO (inpo, alias iterative_nash); online algorithms such as egpo run without --rounds."})
    samples_per_prompt: int = field(default=4, metadata={"help": "K: responses sampled per prompt in a round (≥ 2); 'all' judges and trains K(K−1)/2 pairs per prompt."})
    """K, the responses per prompt of a round."""
    rounds: int = field(default=1, metadata={"help": "Number of rounds R (each: sample from the frozen π_t, judge, train)."})
    """Number of rounds."""
    pair_selection: str = field(
        default="all",
        metadata={"help": "Pairs of a round: 'all' (every pair of the K samples, ordered by a Bernoulli(P) draw, INPO's) or 'best_vs_worst' (highest vs lowest mean judged win rate, one pair per prompt)."},
    )
    """``all`` or ``best_vs_worst``."""
    epochs_per_round: int = field(default=1, metadata={"help": "Epochs over a round's pairs."})
    """Training epochs on each round's dataset."""
    eta: float = field(
        default=1.0,
        metadata={"help": "INPO's η (the paper's η; --beta is the paper's τ): target η/2, anchor weight ηβ on π_ref and 1 − ηβ on π_t; needs 0 < ηβ ≤ 1."},
    )
    """INPO's OMD step η (0 < ηβ ≤ 1)."""

    @property
    def algorithm(self) -> Algorithm:
        """INPO's declaration; ``ValueError`` (one line) for any other ``--alg``."""
        try:
            algorithm = get_algorithm(str(self.alg))
        except ValueError:
            raise ValueError(f"unknown algorithm --alg {self.alg!r}; round mode (--rounds) trains inpo") from None
        if algorithm.name != "inpo":
            raise ValueError(f"--alg {self.alg}: {algorithm.label} is online (one rollout per step); round mode (--rounds) trains inpo — drop --rounds")
        return algorithm

    @property
    def on_policy_pair(self) -> bool:
        """INPO samples y, y′ from π_t itself: temperature 1, no top-k unless asked."""
        return True

    def _check(self) -> None:
        super()._check()
        defaults = {f.name: f.default for f in NLHFConfig.__dataclass_fields__.values()}
        for name in _ONLINE_ONLY:
            if getattr(self, name) != defaults[name]:
                raise ValueError(f"--{name} {getattr(self, name)}: not read in round mode (INPO has no opponent sample)")
        if self.rounds < 1:
            raise ValueError(f"--rounds must be at least 1, got {self.rounds}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"--samples_per_prompt {self.samples_per_prompt}: round mode needs K ≥ 2 responses per prompt to form a pair")
        if self.pair_selection not in PAIR_SELECTIONS:
            raise ValueError(f"--pair_selection {self.pair_selection!r}: choose one of {', '.join(PAIR_SELECTIONS)}")
        if self.epochs_per_round < 1:
            raise ValueError(f"--epochs_per_round must be at least 1, got {self.epochs_per_round}")
        if not (isinstance(self.eta, (int, float)) and self.eta > 0 and self.eta * self.beta <= 1):
            raise ValueError(f"--eta {self.eta!r}: INPO needs η > 0 and ηβ ≤ 1 (β = {self.beta})")
        if self.deepspeed:
            raise ValueError(f"--deepspeed {self.deepspeed}: round mode runs in one process without DeepSpeed (not implemented yet)")
        if self.max_steps != -1:
            raise ValueError(f"--max_steps {self.max_steps}: round mode trains --epochs_per_round epochs per round")
        if self.num_train_epochs != 3.0:  # TrainingArguments' default: the flag was given
            raise ValueError(f"--num_train_epochs {self.num_train_epochs}: round mode counts --rounds and --epochs_per_round")


def round_dir(output_dir: str | os.PathLike[str], r: int) -> Path:
    """``output_dir/rounds/round-r``."""
    return Path(output_dir) / "rounds" / f"round-{r}"


# ------------------------------------------------------------------------------------------------
# 1. the round's dataset
# ------------------------------------------------------------------------------------------------


def select_pairs(P: "Sequence[Sequence[float]]", selection: str, uniforms: Sequence[float] | None) -> list[tuple[int, int]]:
    """Ordered pairs (winner, loser) of one prompt's K responses from the judged upper triangle
    ``P[i][j]`` = P(y_i ≻ y_j), i < j. ``all``: every pair i < j in row order, y_i winning iff
    ``uniforms[n] < P[i][j]`` for the pair's draw n. ``best_vs_worst``: (argmax w, argmin w over the
    others), w_i = mean_{j≠i} P(y_i ≻ y_j) with P(y_j ≻ y_i) = 1 − P(y_i ≻ y_j)."""
    K = len(P)
    upper = [(i, j) for i in range(K) for j in range(i + 1, K)]
    if selection == "all":
        return [(i, j) if u < P[i][j] else (j, i) for (i, j), u in zip(upper, uniforms)]
    wins = [0.0] * K
    for i, j in upper:
        wins[i] += P[i][j]
        wins[j] += 1.0 - P[i][j]
    best = max(range(K), key=lambda k: (wins[k], -k))
    worst = min((k for k in range(K) if k != best), key=lambda k: (wins[k], k))
    return [(best, worst)]


def build_round_dataset(
    config: RoundsConfig,
    r: int,
    policy: torch.nn.Module,
    reference: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    judge: Callable[[Sequence[str], Sequence[Sequence[str]]], Sequence[float]],
) -> Path:
    """Sample, judge, select and score round ``r``'s dataset from the frozen π_t = ``policy`` (steps 1-5 of
    the module docstring) and publish it as ``round_dir/dataset`` (a staging folder renamed into place);
    returns the folder. ``reference``: a :class:`~lm_runs.generation.ReferenceModel`."""

    K, device = config.samples_per_prompt, config.device
    batch = PromptCollator(tokenizer, config.max_prompt_length)([{"prompt": p} for p in prompts])
    prompt_ids = batch["prompt_ids"].to(device).repeat_interleave(K, dim=0)  # row = prompt * K + k
    prompt_mask = batch["prompt_mask"].to(device).repeat_interleave(K, dim=0)
    generator = torch.Generator().manual_seed(config.seed + r)  # on the CPU: the same draws on any device
    sampled = generate_completions(
        policy, prompt_ids, prompt_mask, config.pair_sampling, max_new_tokens=config.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, generator=generator,
    )
    with torch.no_grad():
        was_training = policy.training
        policy.eval()
        try:
            logp_t = completion_logprobs(policy, prompt_ids, prompt_mask, sampled.ids, sampled.mask)
        finally:
            policy.train(was_training)
        logp_ref = completion_logprobs(reference, prompt_ids, prompt_mask, sampled.ids, sampled.mask)
    texts = tokenizer.batch_decode(sampled.ids, skip_special_tokens=True)
    lengths = sampled.lengths.tolist()
    texts_of = [prompt_text(p) for p in prompts]
    upper = [(i, j) for i in range(K) for j in range(i + 1, K)]
    queries = [(p, i, j) for p in range(len(prompts)) for i, j in upper]
    answers = judge([texts_of[p] for p, _, _ in queries], [[texts[p * K + i], texts[p * K + j]] for p, i, j in queries])
    uniforms = np.random.default_rng([config.seed, r]).random(len(queries)).tolist()
    responses = [
        {
            "prompt_index": p, "sample": k, "prompt": prompts[p], "response": texts[p * K + k],
            "token_ids": sampled.ids[p * K + k, : lengths[p * K + k]].tolist(),
            "truncated": bool(sampled.truncated[p * K + k]), "length": lengths[p * K + k],
            "logp_policy": float(logp_t[p * K + k]), "logp_ref": float(logp_ref[p * K + k]),
        }
        for p in range(len(prompts)) for k in range(K)
    ]
    judgements = [
        {"prompt_index": p, "i": i, "j": j, "p_i_over_j": float(a), "u": float(u)}
        for (p, i, j), a, u in zip(queries, answers, uniforms)
    ]
    pairs = []
    per_prompt = len(upper)
    for p in range(len(prompts)):
        block = judgements[p * per_prompt : (p + 1) * per_prompt]
        P = [[0.5] * K for _ in range(K)]
        for row in block:
            P[row["i"]][row["j"]] = row["p_i_over_j"]
        chosen = select_pairs(P, config.pair_selection, [row["u"] for row in block])
        pairs += [{"prompt_index": p, "winner": w, "loser": lo} for w, lo in chosen]
    folder = round_dir(config.output_dir, r) / "dataset"
    staging = folder.with_name(".partial-dataset")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_jsonl(staging / "responses.jsonl", responses)
    write_jsonl(staging / "judgements.jsonl", judgements)
    write_jsonl(staging / "pairs.jsonl", pairs)
    meta = {
        "round": r, "samples_per_prompt": K, "pair_selection": config.pair_selection, "prompts": len(prompts),
        "generation_seed": config.seed + r, "draw_seed": [config.seed, r], "eta": config.eta, "beta": config.beta,
        "sampling": {"temperature": config.pair_sampling.temperature, "top_k": config.pair_sampling.top_k,
                     "top_p": config.pair_sampling.top_p, "min_p": config.pair_sampling.min_p},
        "max_new_tokens": config.max_new_tokens,
    }
    atomic_write(staging / "round.json", json.dumps(meta, indent=2) + "\n")
    os.replace(staging, folder)
    fsync_directory(folder.parent)
    return folder


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def load_round_dataset(folder: str | os.PathLike[str], tokenizer: Any, max_prompt_length: int | None) -> list[dict]:
    """The training rows of a saved round dataset, one per ordered pair: the prompt's token ids (encoded
    as the collator encodes it), the winner's and loser's token ids, lengths and log-probabilities under
    π_t and π_ref (summed)."""

    folder = Path(folder)
    responses = {(row["prompt_index"], row["sample"]): row for row in _read_jsonl(folder / "responses.jsonl")}
    rows = []
    for pair in _read_jsonl(folder / "pairs.jsonl"):
        w, lo = responses[(pair["prompt_index"], pair["winner"])], responses[(pair["prompt_index"], pair["loser"])]
        ids = encode_prompt(tokenizer, w["prompt"])
        rows.append({
            "prompt_ids": ids[-max_prompt_length:] if max_prompt_length else ids,
            "winner_ids": w["token_ids"], "loser_ids": lo["token_ids"],
            "logp_t": [w["logp_policy"], lo["logp_policy"]], "logp_ref": [w["logp_ref"], lo["logp_ref"]],
        })
    return rows


class PairCollator:
    """Batch rows of :func:`load_round_dataset` as ``prompt_ids/prompt_mask`` (left-padded, winners' rows
    then losers'), ``completion_ids/completion_mask`` (right-padded) and (B, 2) tensors ``logp_t``,
    ``logp_ref``."""

    def __init__(self, pad_token_id: int):
        self.pad = int(pad_token_id)

    def __call__(self, rows: Sequence[dict]) -> dict:
        import torch

        def padded(seqs: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
            width = max(1, max(len(s) for s in seqs))
            ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for n, s in enumerate(seqs):
                if s:
                    span = slice(width - len(s), width) if left else slice(0, len(s))
                    ids[n, span], mask[n, span] = torch.tensor(s, dtype=torch.long), 1
            return ids, mask

        prompt_ids, prompt_mask = padded([row["prompt_ids"] for row in rows] * 2, left=True)
        completion_ids, completion_mask = padded([row["winner_ids"] for row in rows] + [row["loser_ids"] for row in rows], left=False)
        return {
            "prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids, "completion_mask": completion_mask,
            "logp_t": torch.tensor([row["logp_t"] for row in rows], dtype=torch.float32),
            "logp_ref": torch.tensor([row["logp_ref"] for row in rows], dtype=torch.float32),
        }


# ------------------------------------------------------------------------------------------------
# 2. training on it
# ------------------------------------------------------------------------------------------------


def inpo_pair_loss(ell: torch.Tensor, ell_t: torch.Tensor, ell_ref: torch.Tensor, eta: float, beta: float) -> torch.Tensor:
    """Per-pair INPO loss (Δ_θ − ηβ Δ_ref − (1 − ηβ) Δ_t − η/2)² from (B, 2) sequence log-probabilities
    [winner, loser] under π_θ, π_t and π_ref: egpo_core's ``ipo_regression_loss`` with the anchor
    ℓ_A = ηβ ℓ_ref + (1 − ηβ) ℓ_t (INPO's geometric mixture at c = ηβ; its normaliser cancels in Δ)
    and the target η/2."""
    c = eta * beta
    anchor = c * ell_ref + (1.0 - c) * ell_t
    return ipo_regression_loss(ell[:, 0], ell[:, 1], anchor[:, 0], anchor[:, 1], 0.5 * eta)


class _StepLosses(TrainerCallback):
    """Closes each optimizer step's loss record (:meth:`RoundTrainer._end_step`) before anything logs it."""

    def __init__(self, trainer: "RoundTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._end_step()
        return control


class RoundTrainer(AtomicCheckpoints, Trainer):
    """HF Trainer of one round: :func:`inpo_pair_loss` on the round's ordered pairs, the log-probs
    under π_t and π_ref read from the saved dataset. ``step_losses`` holds each optimizer step's mean
    loss over its micro-batches' pairs; the logged ``loss`` is their mean since the last log (not
    rounded, unlike the Trainer's own)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.round_index = 0  # set by run_rounds; logged with every loss
        self.step_losses: list[float] = []
        self._since_log: list[float] = []
        self._micro: list[float] = []
        self.callback_handler.callbacks.insert(0, _StepLosses(self))  # before the flow decides to log

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mask = inputs["completion_mask"]
        logp = completion_logprobs(model, inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], mask)
        B = inputs["logp_t"].shape[0]
        lengths = mask.sum(-1).clamp_min(1).float()
        ell, ell_t, ell_ref = logp.view(2, B).T, inputs["logp_t"], inputs["logp_ref"]
        if self.args.length_normalize:
            per = lengths.view(2, B).T
            ell, ell_t, ell_ref = ell / per, ell_t / per, ell_ref / per
        loss = inpo_pair_loss(ell, ell_t, ell_ref, self.args.eta, self.args.beta).mean()
        self._micro.append(float(loss.detach()))
        return loss

    def _end_step(self) -> None:
        """Called at each optimizer step's end: its micro-batches' mean loss is the step's."""
        if self._micro:
            self.step_losses.append(sum(self._micro) / len(self._micro))
            self._since_log.append(self.step_losses[-1])
            self._micro = []

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._since_log:
            logs["loss"] = sum(self._since_log) / len(self._since_log)
            logs["round"] = self.round_index
            self._since_log = []
        super().log(logs, start_time)


def _trainable_state(model: torch.nn.Module) -> dict:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def run_rounds(
    config: RoundsConfig,
    *,
    judge: Callable[[Sequence[str], Sequence[Sequence[str]]], Sequence[float]] | None = None,
    resume: bool = False,
    stop_after: Callable[[int, Any], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Run (or, with ``resume``, continue) every round of ``config``; returns the last round's trainer.
    ``judge``: an in-process judge (else ``config.judge``'s spec, loaded and probed as in
    :func:`lm_runs.train_nlhf.build_trainer`). ``stop_after(r, trainer)`` is called after round r's
    training (tests interrupt there); ``callbacks``: ``TrainerCallback`` objects given to every round's trainer."""
    from transformers import set_seed

    from .checkpoints import MODEL_MARKERS, latest_checkpoint, save_model_atomically
    from .data import load_prompts
    from .judges import CheckedJudge, JudgeError, load_judge
    from .launcher import inputs_checked, one_line
    from .models import load_policy, load_reference, load_tokenizer

    prompts = [row["prompt"] for row in load_prompts(
        config.prompts, column=config.prompt_column, split=config.prompts_split,
        max_prompts=config.max_prompts, max_chars=config.max_prompt_chars,
    )]
    if judge is None:
        checked = load_judge(config.judge, seed=config.seed, device=str(config.device), **config.judge_kwargs())
        probe = prompt_text(prompts[0])
        try:
            checked([probe, probe], [["Yes.", "No."], ["No.", "Yes."]])  # two pairs: a wrong count shows
        except JudgeError as error:  # a judge that cannot answer two pairs is a bad --judge
            raise ValueError(f"--judge {config.judge}: {one_line(error)}") from None
    else:
        checked = judge if isinstance(judge, CheckedJudge) else CheckedJudge(judge)
    tokenizer = load_tokenizer(config.model_name_or_path, padding_side="left")
    dtype = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    policy = load_policy(config.model_name_or_path, dtype=dtype, lora=config, seed=config.seed)
    ref_model = load_reference(config.model_name_or_path, config.ref_model_name_or_path, use_peft=config.use_peft, dtype=dtype)
    policy.to(config.device)
    reference = ReferenceModel(policy, frozen=None if ref_model is None else ref_model.to(config.device))
    inputs_checked()
    trainer = None
    for r in range(config.rounds):
        folder = round_dir(config.output_dir, r)
        if resume and (folder / "policy.pt").is_file():
            continue
        if r > 0:
            state = torch.load(round_dir(config.output_dir, r - 1) / "policy.pt", map_location=config.device)
            policy.load_state_dict(state, strict=False)
        dataset = folder / "dataset"
        if not (resume and (dataset / "round.json").is_file()):
            shutil.rmtree(folder, ignore_errors=True)
            set_seed(config.seed + r)
            build_round_dataset(config, r, policy, reference, tokenizer, prompts, checked)
        rows = load_round_dataset(dataset, tokenizer, config.max_prompt_length)
        args = copy.copy(config)  # the round's view: its folder, epochs and seed (checked options unchanged)
        args.output_dir, args.num_train_epochs, args.seed = str(folder / "trainer"), float(config.epochs_per_round), config.seed + r
        args.resume_from_checkpoint, args.overwrite_output_dir = None, False
        trainer = RoundTrainer(model=policy, args=args, train_dataset=rows, data_collator=PairCollator(tokenizer.pad_token_id),
                                   processing_class=tokenizer, callbacks=list(callbacks))
        trainer.round_index = r
        trainer.train(resume_from_checkpoint=latest_checkpoint(args.output_dir) if resume else None)
        if stop_after is not None:
            stop_after(r, trainer)
        save_model_atomically(trainer, folder / "model")
        atomic_write(folder / "policy.pt", lambda f: torch.save(_trainable_state(policy), f))
    if trainer is not None:
        save_model_atomically(trainer, config.output_dir)
    elif not any((Path(config.output_dir) / name).is_file() for name in MODEL_MARKERS):
        # every round had finished, but the run stopped before saving the final model: the last round's end
        state = torch.load(round_dir(config.output_dir, config.rounds - 1) / "policy.pt", map_location=config.device)
        policy.load_state_dict(state, strict=False)
        save_model_atomically(policy, config.output_dir, tokenizer=tokenizer)
    return trainer


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lm_runs.rounds`` (and ``python -m lm_runs.train_nlhf --rounds R …``): parse and check the
    options (one line, exit status 2), check the output folder, run the rounds."""
    from .cli import parse_config
    from .launcher import UsageError, clear_previous_run
    from .models import check_model_source

    (config,) = parse_config([RoundsConfig], argv)
    if not config.judge:
        raise ValueError("--judge is required")
    folder = Path(config.output_dir)
    resume_flag = str(config.resume_from_checkpoint or "").strip().lower()
    if resume_flag not in ("", "false", "none", "true"):
        raise UsageError(f"--resume_from_checkpoint {config.resume_from_checkpoint}: round mode resumes with 'true' (it finds the round and its checkpoint)")
    resume = resume_flag == "true"
    if resume and config.overwrite_output_dir:
        raise UsageError("--resume_from_checkpoint and --overwrite_output_dir contradict each other: give one")
    if resume and not (folder / "rounds").is_dir():
        raise UsageError(f"--resume_from_checkpoint true: no rounds in {folder}")
    if not resume and folder.is_dir() and any(folder.iterdir()):
        if not config.overwrite_output_dir:
            raise UsageError(f"--output_dir {folder} is not empty: resume it with --resume_from_checkpoint true, replace it with --overwrite_output_dir true, or choose another folder")
    if config.world_size > 1:
        raise UsageError(f"round mode runs in one process (world size {config.world_size}): launch it with python, not torchrun")
    check_model_source(config.model_name_or_path, "policy")
    if config.ref_model_name_or_path:
        check_model_source(config.ref_model_name_or_path, "reference")
    if not resume and config.overwrite_output_dir:
        clear_previous_run(folder)
        shutil.rmtree(folder / "rounds", ignore_errors=True)
    run_rounds(config, resume=resume)


def wants_rounds(argv: Sequence[str]) -> bool:
    """Whether ``python -m lm_runs.train_nlhf argv`` asks for the round mode: ``--rounds`` among the flags
    or the ``--config`` file's keys, or ``--alg inpo`` (an alias too) — INPO exists only in rounds. A
    ``--config`` file that cannot be read answers False (the ordinary parser then reports it)."""
    from .cli import ConfigFileError, config_flags

    flags = list(argv)
    for n, flag in enumerate(argv):
        path = flag.split("=", 1)[1] if flag.startswith("--config=") else argv[n + 1] if flag == "--config" and n + 1 < len(argv) else None
        if path is not None:
            try:
                flags = config_flags(path) + flags
            except ConfigFileError:
                return False
    alg = None
    for n, flag in enumerate(flags):
        if flag == "--rounds" or flag.startswith("--rounds="):
            return True
        if flag.startswith("--alg="):
            alg = flag.split("=", 1)[1]
        elif flag == "--alg" and n + 1 < len(flags):
            alg = flags[n + 1]
    try:
        return alg is not None and get_algorithm(alg).name == "inpo"
    except ValueError:
        return False


if __name__ == "__main__":
    from .launcher import run_entry_point

    run_entry_point(main)
