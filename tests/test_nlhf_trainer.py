"""NLHFTrainer on a tiny local GPT-2: every algorithm, EGPO's two steps against a manual computation,
LoRA and full fine-tuning, kill-and-resume, counting in updates, a judge failing mid-training, and
configuration errors (one line, exit status 2, before any model loads).

Tolerances: parameters within 1e-6 (float32, the same operations in the same order up to batching);
losses within 1e-6.

The trainer runs on the CPU unless ``EGPO_TEST_DEVICE=cuda`` (e.g. ``EGPO_TEST_DEVICE=cuda pytest
tests/test_nlhf_trainer.py -k extragradient`` on a GPU machine); the manual replays always run in float32
on the CPU, from the rollouts the trainer recorded.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import failing_judges
import pytest
import torch
import toy_judges
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.utils.notebook import NotebookProgressCallback

from lm_runs.config import NLHFConfig
from lm_runs.data import load_prompts
from lm_runs.judges import JudgeError
from lm_runs.launcher import run_entry_point
from lm_runs.logprobs import completion_logprobs
from lm_runs.tiny import build_tiny_lm
from lm_runs.trainer import NLHFTrainer

WORDS = "cat dog bird fish sun moon star tree rock water fire stone".split()
CONFIGS = Path(__file__).resolve().parents[1] / "lm_runs" / "configs"
DEVICE = os.environ.get("EGPO_TEST_DEVICE", "cpu")
if DEVICE not in ("cpu", "cuda"):
    raise ValueError(f"EGPO_TEST_DEVICE must be 'cpu' or 'cuda', got {DEVICE!r}")
if DEVICE == "cuda" and not torch.cuda.is_available():
    raise RuntimeError("EGPO_TEST_DEVICE=cuda but torch sees no CUDA device")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("nlhf")
    model_dir = build_tiny_lm(root / "model")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"tell me about the {w}"}) + "\n" for w in WORDS))
    return {"model": str(model_dir), "prompts": str(prompts), "root": root}


def config(tiny, out, **overrides) -> NLHFConfig:
    options = dict(
        output_dir=str(out),
        model_name_or_path=tiny["model"],
        prompts=tiny["prompts"],
        judge="toy_judges:prefer_shorter",
        alg="egpo",
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_new_tokens=6,
        use_cpu=DEVICE == "cpu",
        report_to="none",
        seed=0,
        weight_decay=0.0,
        max_grad_norm=0.0,
        lr_scheduler_type="linear",
        disable_tqdm=True,
    )
    options.update(overrides)
    return NLHFConfig(**options)


def make_trainer(tiny, cfg, judge=toy_judges.prefer_shorter, cls=NLHFTrainer, peft=False):
    tokenizer = AutoTokenizer.from_pretrained(tiny["model"])
    model = AutoModelForCausalLM.from_pretrained(tiny["model"])
    ref = None
    if peft:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    else:
        ref = AutoModelForCausalLM.from_pretrained(tiny["model"])
    return cls(model=model, args=cfg, judge=judge, train_dataset=load_prompts(tiny["prompts"]), processing_class=tokenizer, ref_model=ref)


def trainable(model) -> dict[str, torch.Tensor]:
    """The trainable parameters, copied to the CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


class RecordingTrainer(NLHFTrainer):
    """Records each rollout with the trainable parameters it was generated at."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records: list[tuple[dict, dict]] = []

    def _rollout(self, batch):
        at = trainable(self.model)
        rollout = super()._rollout(batch)
        self.records.append((at, {k: v.cpu().clone() for k, v in rollout.items()}))
        return rollout


# ---------------------------------------------------------------------------------------------
# every algorithm
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["egpo", "oipo1", "oipo2", "nashmd", "nashmdpg", "sppo"])
def test_every_algorithm_updates_the_trainable_parameters(tiny, tmp_path, alg):
    trainer = make_trainer(tiny, config(tiny, tmp_path, alg=alg, max_steps=2), peft=True)
    before = trainable(trainer.model)
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    after = trainable(trainer.model)
    assert all(n.find("lora_") >= 0 for n in after)  # only the adapter is trainable
    assert max(float((after[n] - before[n]).abs().max()) for n in after) > 1e-5
    assert all(torch.equal(p, frozen[n]) for n, p in trainer.model.named_parameters() if not p.requires_grad)
    assert trainer.updates == 2
    assert trainer.state.global_step == (4 if alg == "egpo" else 2)


def _expected_first_token_vowels(model, tokenizer, prompts) -> float:
    """E over prompts and the first response token t ~ π(· | prompt) of the vowels in t's text (exact)."""
    from lm_runs.data import PromptCollator

    counts = torch.tensor([toy_judges.vowels(tokenizer.decode([t])) for t in range(len(tokenizer))], dtype=torch.float32)
    batch = PromptCollator(tokenizer)([{"prompt": p} for p in prompts])
    with torch.no_grad():
        logits = model(input_ids=batch["prompt_ids"].to(model.device), attention_mask=batch["prompt_mask"].to(model.device)).logits[:, -1].cpu()
    return float((logits.softmax(-1) @ counts).mean())


@pytest.mark.parametrize("alg", ["oipo1", "egpo", "nashmd"])
def test_preferred_tokens_become_more_likely(tiny, tmp_path, alg):
    """A judge that prefers responses with more vowels raises the expected vowels of the first token."""
    cfg = config(tiny, tmp_path, alg=alg, max_steps=10, per_device_train_batch_size=4, learning_rate=2e-2,
                 max_new_tokens=3, lr_scheduler_type="constant")
    trainer = make_trainer(tiny, cfg, judge=toy_judges.prefer_vowels)
    prompts = [f"tell me about the {w}" for w in WORDS]
    before = _expected_first_token_vowels(trainer.model, trainer.processing_class, prompts)
    trainer.train()
    after = _expected_first_token_vowels(trainer.model, trainer.processing_class, prompts)
    assert after > 1.5 * before, (before, after)  # measured here: 0.24 → 0.82–0.97


# ---------------------------------------------------------------------------------------------
# EGPO against a manual computation
# ---------------------------------------------------------------------------------------------


def manual_ipo_loss(model, rollout, beta) -> torch.Tensor:
    """(ℓθ(y) − ℓθ(y′) − ℓref(y) + ℓref(y′) − [P(y≻y″) − P(y′≻y″)]/β)², mean; ℓ length-normalized."""
    mask = rollout["completion_mask"]
    lengths = mask.sum(-1).float()
    logp = completion_logprobs(model, rollout["prompt_ids"], rollout["prompt_mask"], rollout["completion_ids"], mask) / lengths
    ref = rollout["ref_logp"] / lengths
    n = logp.shape[0] // 2
    target = (rollout["wins_y"][:, 0] - rollout["wins_yp"][:, 0]) / beta
    return ((logp[:n] - logp[n:] - ref[:n] + ref[n:] - target) ** 2).mean()


def largest_difference(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def replay_extragradient(model_dir, theta, steps, lr, rates, beta=0.1, full_step_from_half=False):
    """Replay EGPO updates by hand in float32 with torch's AdamW.

    ``steps[s]`` lists, for optimizer step s, the rollouts of every rank; a step's gradient is that of
    the mean over ranks of :func:`manual_ipo_loss`. Update u (rate ``rates[u]``): θ_{t+½} = AdamW step
    from (θ_t, state_t) on the half step's rollouts; θ_{t+1} = AdamW step from (θ_t, state_t) on the
    full step's rollouts (``full_step_from_half``: from θ_{t+½} instead — the reference code's bug
    under mixed precision, to show that the checks can tell the two apart). Returns the list of
    (θ_t, θ_{t+½}) per update and the final parameters.
    """
    manual = AutoModelForCausalLM.from_pretrained(model_dir)
    params = dict(manual.named_parameters())
    theta = {n: v.float() for n, v in theta.items()}
    optimizer = torch.optim.AdamW([params[n] for n in theta], lr=lr, weight_decay=0.0)

    def step_from(start, opt, rollouts, rate):
        with torch.no_grad():
            for name, value in start.items():
                params[name].copy_(value)
        for group in opt.param_groups:
            group["lr"] = rate
        opt.zero_grad()
        (sum(manual_ipo_loss(manual, r, beta) for r in rollouts) / len(rollouts)).backward()
        opt.step()
        return {n: params[n].detach().clone() for n in start}

    points = []
    for update, rate in enumerate(rates):
        scratch = torch.optim.AdamW([params[n] for n in theta], lr=lr, weight_decay=0.0)
        scratch.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # load_state_dict shares tensors
        theta_half = step_from(theta, scratch, steps[2 * update], rate)
        points.append((theta, theta_half))
        theta = step_from(theta_half if full_step_from_half else theta, optimizer, steps[2 * update + 1], rate)
    return points, theta


def check_extragradient_by_hand(model_dir, theta, steps, final, lr, rates) -> None:
    """The trainer's EGPO against :func:`replay_extragradient`: the half-step samples drawn at θ_t, the
    full-step samples at θ_{t+½}, and the final parameters. ``steps[s]`` lists (parameters at
    generation, rollout) of every rank. Tolerance 1e-2·lr: Adam divides by √v + ε, so float32
    rounding in near-zero gradient entries moves an entry by up to ~1e-6 here, while a step from the
    wrong point or with the wrong optimizer state moves entries by ~lr."""
    points, expected = replay_extragradient(model_dir, theta, [[r for _, r in step] for step in steps], lr, rates)
    tol = 1e-2 * lr
    for update, (theta_t, theta_half) in enumerate(points):
        for at, _ in steps[2 * update]:
            assert largest_difference(at, theta_t) < tol, "half-step samples are drawn at θ_t"
        for at, _ in steps[2 * update + 1]:
            assert largest_difference(at, theta_half) < tol, "full-step samples are drawn at θ_{t+½}"
    for parameters in final:
        assert largest_difference(parameters, expected) < tol


def test_egpo_update_is_the_step_from_theta_t_with_samples_at_the_half_step(tiny, tmp_path):
    """Two EGPO updates (four optimizer steps) against :func:`check_extragradient_by_hand`; the
    learning rate follows the linear schedule over updates (lr₀, then lr₀/2)."""
    lr = 1e-3
    trainer = make_trainer(tiny, config(tiny, tmp_path, alg="egpo", max_steps=2, learning_rate=lr), cls=RecordingTrainer)
    theta = trainable(trainer.model)
    trainer.train()
    assert len(trainer.records) == 4
    steps = [[record] for record in trainer.records]
    check_extragradient_by_hand(tiny["model"], theta, steps, [trainable(trainer.model)], lr, [lr, lr / 2])


def test_egpo_with_gradient_accumulation_and_a_partial_last_window(tiny, tmp_path):
    """12 prompts, 2 per micro-batch, 4 micro-batches per window: every pass is a window of 4 and a
    partial window of 2. Each optimizer step's gradient is the mean of its micro-batches' (the Trainer
    scales by the window's length); two EGPO updates = four windows (half 4, full 2, half 4, full 2)."""
    lr = 1e-3
    cfg = config(tiny, tmp_path, alg="egpo", max_steps=2, learning_rate=lr, gradient_accumulation_steps=4)
    trainer = make_trainer(tiny, cfg, cls=RecordingTrainer)
    theta = trainable(trainer.model)
    trainer.train()
    assert trainer.updates == 2 and trainer.state.global_step == 4
    sizes = [4, 2, 4, 2]
    assert len(trainer.records) == sum(sizes)
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    steps = [trainer.records[bounds[i] : bounds[i + 1]] for i in range(len(sizes))]
    check_extragradient_by_hand(tiny["model"], theta, steps, [trainable(trainer.model)], lr, [lr, lr / 2])


def test_trainer_loss_is_egpo_core_regression_on_the_rollout(tiny, tmp_path):
    trainer = make_trainer(tiny, config(tiny, tmp_path, alg="oipo1", max_steps=1), cls=RecordingTrainer)
    trainer.train()
    _, rollout = trainer.records[0]
    model = AutoModelForCausalLM.from_pretrained(tiny["model"])  # θ_0, where the step was taken
    got = trainer.compute_loss(model, rollout)
    torch.testing.assert_close(got, manual_ipo_loss(model, rollout, 0.1), rtol=0, atol=1e-6)


def test_reference_logprobs_with_the_adapter_disabled_are_the_base_models(tiny, tmp_path):
    trainer = make_trainer(tiny, config(tiny, tmp_path, alg="oipo1", max_steps=2), cls=RecordingTrainer, peft=True)
    trainer.train()
    _, rollout = trainer.records[-1]  # after one update the adapter is non-zero
    base = AutoModelForCausalLM.from_pretrained(tiny["model"])
    with torch.no_grad():
        expected = completion_logprobs(base, rollout["prompt_ids"], rollout["prompt_mask"], rollout["completion_ids"], rollout["completion_mask"])
        policy = completion_logprobs(trainer.model.cpu(), rollout["prompt_ids"], rollout["prompt_mask"], rollout["completion_ids"], rollout["completion_mask"])
    torch.testing.assert_close(rollout["ref_logp"], expected, rtol=0, atol=1e-5)
    assert float((policy - expected).abs().max()) > 1e-4  # the adapter changed the policy


# ---------------------------------------------------------------------------------------------
# kill and resume
# ---------------------------------------------------------------------------------------------


class StopAt(TrainerCallback):
    """Stops training after optimizer step ``step`` and asks for a checkpoint there (for EGPO possibly
    between the half and the full step, where --save_steps, counting updates, never saves)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
            control.should_save = True
        return control


@pytest.mark.parametrize("alg,stop_at", [("egpo", 3), ("oipo1", 2)])
def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tiny, tmp_path, alg, stop_at):
    """EGPO stopped after 3 optimizer steps (between the half and the full step of update 2) and
    resumed ends where the uninterrupted run does; likewise Online IPO 1."""
    steps = dict(max_steps=3, save_strategy="steps", save_steps=1)
    straight = make_trainer(tiny, config(tiny, tmp_path / "straight", alg=alg, **steps))
    straight.train()

    killed = make_trainer(tiny, config(tiny, tmp_path / "killed", alg=alg, **steps))
    killed.add_callback(StopAt(stop_at))
    killed.train()
    assert killed.state.global_step == stop_at
    checkpoint = tmp_path / "killed" / f"checkpoint-{stop_at}"
    if alg == "egpo":
        saved = torch.load(checkpoint / "extragradient_state_rank0.pt", weights_only=False)
        assert saved["phase"] == "full" and saved["updates"] == 1

    resumed = make_trainer(tiny, config(tiny, tmp_path / "killed", alg=alg, **steps))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.updates == straight.updates == 3
    a, b = trainable(resumed.model), trainable(straight.model)
    assert max(float((a[n] - b[n]).abs().max()) for n in a) < 1e-6


def test_resume_of_an_egpo_run_needs_its_snapshot(tiny, tmp_path):
    trainer = make_trainer(tiny, config(tiny, tmp_path, alg="oipo1", max_steps=1, save_strategy="steps", save_steps=1))
    trainer.train()
    egpo = make_trainer(tiny, config(tiny, tmp_path, alg="egpo", max_steps=1))
    with pytest.raises(ValueError, match="extragradient_state_rank0.pt"):
        egpo.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))


def test_epoch_folders_count_updates(tiny, tmp_path):
    """12 prompts, 2 per step: EGPO's epoch 1 is after 12 optimizer steps (two passes)."""
    trainer = make_trainer(tiny, config(tiny, tmp_path, alg="egpo", max_steps=-1, num_train_epochs=1))
    trainer.train()
    assert trainer.state.global_step == 12 and trainer.updates == 6
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["epoch-1"]
    assert (tmp_path / "epochs" / "epoch-1" / "model.safetensors").is_file()
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert [row["step"] for row in logged] == [1, 2, 3, 4, 5, 6]  # updates, not optimizer steps
    assert logged[-1]["epoch"] == pytest.approx(1.0)  # the folder written is epoch-1: the log says epoch 1 (was 2)


def test_a_resumed_run_writes_the_epoch_model_a_kill_left_unwritten(tiny, tmp_path):
    """Killed while saving epochs/epoch-1 (after the checkpoint that ends epoch 1): the resumed run writes
    epoch-1 at its start, equal to the uninterrupted run's (it never rewrote it, and a 0-byte config.json
    stayed forever)."""
    from safetensors.torch import load_file

    options = dict(alg="oipo1", max_steps=-1, num_train_epochs=1, per_device_train_batch_size=4, save_strategy="steps", save_steps=1)
    make_trainer(tiny, config(tiny, tmp_path / "straight", **options)).train()
    make_trainer(tiny, config(tiny, tmp_path / "killed", **options)).train()
    epoch = tmp_path / "killed" / "epochs" / "epoch-1"
    import shutil

    shutil.rmtree(epoch)  # what a kill during its (atomic) save leaves visible: nothing
    make_trainer(tiny, config(tiny, tmp_path / "killed", **options)).train(resume_from_checkpoint=True)
    a, b = load_file(epoch / "model.safetensors"), load_file(tmp_path / "straight" / "epochs" / "epoch-1" / "model.safetensors")
    assert all(torch.equal(a[n], b[n]) for n in a) and (epoch / "config.json").stat().st_size > 0


def test_egpo_counts_updates_without_changing_the_configuration(tiny, tmp_path, capsys):
    """--max_steps 3 is 3 updates: the configuration keeps 3 (it was doubled in place), the progress bar
    runs to 3 (it showed 0/6), logged steps are 1, 2, 3; the Trainer takes 6 optimizer steps."""
    cfg = config(tiny, tmp_path, alg="egpo", max_steps=3, disable_tqdm=False)
    trainer = make_trainer(tiny, cfg)
    capsys.readouterr()
    trainer.train()
    bar = capsys.readouterr().err
    assert "| 3/3 [" in bar and "/6 [" not in bar, bar
    assert cfg.max_steps == 3 and cfg.num_train_epochs == 3.0
    assert trainer.state.global_step == 6 and trainer.updates == 3 and trainer.planned_updates == 3
    assert [row["step"] for row in trainer.state.log_history if "loss" in row] == [1, 2, 3]


def test_epoch_based_run_schedules_updates(tiny, tmp_path):
    """--num_train_epochs 0.5 with 12 prompts, 2 per step: 3 updates (EGPO: 6 optimizer steps); the linear
    schedule counts the 3 updates (learning rates lr, 2lr/3, lr/3 logged once per update)."""
    lr = 1e-3
    cfg = config(tiny, tmp_path, alg="egpo", max_steps=-1, num_train_epochs=0.5, learning_rate=lr)
    trainer = make_trainer(tiny, cfg)
    trainer.train()
    assert trainer.planned_updates == 3 and trainer.updates == 3 and trainer.state.global_step == 6
    rates = [row["learning_rate"] for row in trainer.state.log_history if "loss" in row]
    assert rates == pytest.approx([lr, 2 * lr / 3, lr / 3], rel=1e-6)


class NotebookBar(NotebookProgressCallback):
    """HF's Jupyter progress bar as the Trainer picks it in a notebook, recording the total and the step
    it is shown instead of drawing (no IPython display in a test)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.total, self.shown = state.max_steps, []

    def on_step_end(self, args, state, control, **kwargs):
        self.shown.append(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass

    def on_train_end(self, args, state, control, **kwargs):
        pass


@pytest.mark.parametrize(
    "alg,flags,logged,checkpoints",
    [
        ("egpo", dict(logging_steps=2, save_steps=3), [2, 4, 6], ["checkpoint-12", "checkpoint-6"]),
        ("egpo", dict(logging_steps=0.5, save_steps=0.5, logging_first_step=True), [1, 3, 6], ["checkpoint-12", "checkpoint-6"]),
        ("oipo1", dict(logging_steps=2, save_steps=3), [2, 4, 6], ["checkpoint-3", "checkpoint-6"]),
    ],
    ids=["egpo", "egpo-ratios", "oipo1"],
)
def test_step_counted_flags_count_updates(tiny, tmp_path, monkeypatch, alg, flags, logged, checkpoints):
    """--max_steps 6 with --logging_steps 2 --save_steps 3: every algorithm logs updates 2, 4, 6 and saves
    after updates 3 and 6 — for EGPO the folders checkpoint-6 and checkpoint-12 (optimizer steps), each
    at an update boundary (phase "half", 3 and 6 updates; EGPO logged 3, 6 and saved checkpoint-3, -6
    before: optimizer steps, logs on half steps dropped). Ratios are fractions of the planned updates
    (0.5 × 6 = 3; logging_first_step logs update 1). The notebook progress bar (Jupyter's; it ran to 12 for
    EGPO) runs to 6 and is shown updates 0..6."""
    import transformers.trainer as hf_trainer

    monkeypatch.setattr(hf_trainer, "DEFAULT_PROGRESS_CALLBACK", NotebookBar)
    cfg = config(tiny, tmp_path, alg=alg, max_steps=6, save_strategy="steps", disable_tqdm=False, **flags)
    trainer = make_trainer(tiny, cfg)
    trainer.train()
    assert trainer.updates == 6
    assert [row["step"] for row in trainer.state.log_history if "loss" in row] == logged
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-")) == checkpoints
    if alg == "egpo":
        for name, updates in (("checkpoint-6", 3), ("checkpoint-12", 6)):
            saved = torch.load(tmp_path / name / "extragradient_state_rank0.pt", weights_only=False)
            assert saved["phase"] == "half" and saved["updates"] == updates
    (bar,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, NotebookBar)]
    assert bar.total == 6
    assert sorted(set(bar.shown)) == list(range(cfg.steps_per_update == 1, 7))
    trainer.remove_callback(NotebookProgressCallback)  # still found by its class (quiet() in the benchmark)
    assert not [c for c in trainer.callback_handler.callbacks if isinstance(c, NotebookProgressCallback)]


def test_epoch_strategies_count_epochs_of_updates(tiny, tmp_path):
    """EGPO, 12 prompts, 2 per step, 6 updates = two passes = one epoch of updates: --save_strategy epoch and
    --logging_strategy epoch save and log once, after the second pass (checkpoint-12, logged at update 6),
    not also after the first pass (checkpoint-6, mid-epoch)."""
    cfg = config(tiny, tmp_path, alg="egpo", max_steps=6, save_strategy="epoch", logging_strategy="epoch")
    trainer = make_trainer(tiny, cfg)
    trainer.train()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-12"]
    assert [(row["step"], row["epoch"]) for row in trainer.state.log_history if "loss" in row] == [(6, pytest.approx(1.0))]


# ---------------------------------------------------------------------------------------------
# a judge that fails mid-training
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alg,judge,fail_at,step",
    [("egpo", failing_judges.nan_later, 4, 3), ("oipo1", failing_judges.raises_later, 3, 2), ("egpo", failing_judges.raises_later, 3, 2)],
)
def test_a_failing_judge_saves_a_checkpoint_that_resumes_exactly(tiny, tmp_path, monkeypatch, alg, judge, fail_at, step):
    """The judge fails at its call ``fail_at`` (one call per optimizer step here): training stops with one
    JudgeError line naming the update and the cause, after writing checkpoint-``step`` (the last completed
    step; for EGPO after 3 steps that is between the half and the full step of update 2). Resumed with a
    working judge, the run ends bit for bit where an uninterrupted one does."""
    monkeypatch.setattr(failing_judges, "FAIL_AT", fail_at)
    monkeypatch.setattr(failing_judges, "calls", 0)
    straight = make_trainer(tiny, config(tiny, tmp_path / "straight", alg=alg, max_steps=3))
    straight.train()

    failed = make_trainer(tiny, config(tiny, tmp_path / "failed", alg=alg, max_steps=3), judge=judge)
    with pytest.raises(JudgeError) as error:
        failed.train()
    message = str(error.value)
    assert "\n" not in message and f"checkpoint of optimizer step {step}" in message, message
    assert f"at update {step // failed.args.steps_per_update + 1}" in message
    assert ("NaN" in message) if judge is failing_judges.nan_later else ("ConnectionError" in message and "refused" in message)
    checkpoint = tmp_path / "failed" / f"checkpoint-{step}"
    assert (checkpoint / "trainer_state.json").is_file()
    assert sorted(p.name for p in (tmp_path / "failed").iterdir() if p.name.startswith("checkpoint-")) == [checkpoint.name]

    resumed = make_trainer(tiny, config(tiny, tmp_path / "failed", alg=alg, max_steps=3))
    resumed.train(resume_from_checkpoint=True)
    a, b = trainable(resumed.model), trainable(straight.model)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_judge_failing_mid_training_ends_the_command_with_one_line(tiny, tmp_path, monkeypatch, capsys):
    """Through the entry point (judge loaded and checked by load_judge; the probe is call 1): exit status 2,
    one line, and ``--resume_from_checkpoint true`` with a working judge finishes the run."""
    from lm_runs.train_nlhf import main

    monkeypatch.setattr(failing_judges, "FAIL_AT", 4)  # probe, steps 1 and 2, then NaN
    monkeypatch.setattr(failing_judges, "calls", 0)
    flags = base_flags(tiny, tmp_path / "out") + ["--alg", "oipo1", "--max_steps", "3", "--per_device_train_batch_size", "2",
                                                  "--max_new_tokens", "4"]
    line = entry_point_error(flags + ["--judge", "failing_judges:nan_later"], capsys)
    assert "NaN" in line and "at update 3" in line and "checkpoint-2" in line, line
    run_entry_point(main, flags + ["--resume_from_checkpoint", "true"])
    assert (tmp_path / "out" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# configuration errors, before training
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if a causal LM's weights are loaded (the errors below come before that)."""
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error was reported")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.fixture(scope="module")
def classifier(tiny):
    """A 2-label sequence classifier (a preference model) beside the tiny causal LM."""
    return str(build_tiny_lm(tiny["root"] / "classifier", num_labels=2))


def entry_point_error(argv, capsys) -> str:
    """Run ``python -m lm_runs.train_nlhf ARGV`` in-process; assert exit status 2 and one line on
    stderr without a traceback, and return that line."""
    from lm_runs.train_nlhf import main

    with pytest.raises(SystemExit) as exit_info:
        run_entry_point(main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    line = err.splitlines()[-1]  # (above it only progress bars of datasets may appear)
    assert "Traceback" not in err and line.startswith("error: ") and err.count("error: ") == 1, err
    return line


def base_flags(tiny, out) -> list[str]:
    return ["--model_name_or_path", tiny["model"], "--prompts", tiny["prompts"], "--judge", "toy_judges:prefer_shorter",
            "--output_dir", str(out), "--use_cpu", "true", "--report_to", "none", "--max_steps", "1"]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--alg", "magic"], "unknown algorithm --alg 'magic'; choose one of: egpo (eg), oipo1 (online_ipo1"),
        (["--alg", "onpo"], "--max_steps 1: round mode trains --epochs_per_round epochs per round"),
        (["--alg", "omwu"], "no language-model form"),
        (["--beta", "0"], "--beta must be > 0"),
        (["--beta", "-0.1"], "--beta must be > 0"),
        (["--pair_temperature", "0"], "--pair_temperature must be > 0"),
        (["--opponent_temperature", "-1"], "--opponent_temperature must be > 0"),
        (["--mixture_coef", "1.5"], "--mixture_coef must lie in [0, 1]"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be a positive integer, got 0"),
        (["--gradient_accumulation_steps", "-1"], "--gradient_accumulation_steps must be a positive integer, got -1"),
        (["--learning_rate", "0"], "--learning_rate must be a positive number, got 0.0"),
        (["--learning_rate=-1e-6"], "--learning_rate must be a positive number"),
        (["--save_steps", "1", "--save_strategy", "no"], "--save_steps 1 has no effect with --save_strategy no"),
        (["--resume_from_checkpoint", "true", "--overwrite_output_dir", "true"], "no complete checkpoint"),
        (["--judge", "toy_judges:out_of_range"], "1.5"),
        (["--judge", "toy_judges:wrong_count"], "returned 1 values for 2 pairs"),
        (["--judge", "no_such_module:f"], "cannot import module"),
        (["--judge_timeout", "0"], "--judge_timeout must be a number of seconds > 0"),
        (["--judge_retries", "-1"], "--judge_retries must be an integer >= 0"),
        (["--judge_batch_size", "0"], "--judge_batch_size must be an integer >= 1"),
        (["--prompt_column", "question"], "no column 'question'"),
        (["--deepspeed", str(CONFIGS / "zero3.json")], "supports DeepSpeed ZeRO stages 0-2"),
        (["--use_peft", "true", "--lora_r", "0"], "--lora_r must be an integer >= 1"),
        (["--use_peft", "true", "--lora_dropout", "1.0"], "--lora_dropout must lie in [0, 1)"),
        (["--model_name_or_path", "/no/such/model"], "/no/such/model: no such model folder"),
        (["--resume_from_checkpoint", "true"], "--resume_from_checkpoint true: no complete checkpoint"),
        (["--resume_from_checkpoint", "/no/such/checkpoint-3"], "no such checkpoint folder: /no/such/checkpoint-3"),
        (["--eval_strategy", "steps"], "--eval_strategy steps: NLHF training has no evaluation set"),
        (["--eval_steps", "5"], "--eval_steps 5.0: NLHF training has no evaluation set"),
    ],
)
def test_bad_configuration_fails_before_any_model_loads_with_one_line(tiny, tmp_path, capsys, no_model_loads, flags, message):
    line = entry_point_error(base_flags(tiny, tmp_path / "out") + flags, capsys)
    assert message in line, line
    assert not (tmp_path / "out" / "checkpoint-1").exists()


def test_resuming_egpo_from_another_algorithms_checkpoint_is_one_line(tiny, tmp_path, capsys):
    """Found only once the trainer is built (after the inputs are checked), the refusal is still bad
    input: one line, exit status 2, no traceback; and nothing is trained."""
    from lm_runs.train_nlhf import main

    out = tmp_path / "out"
    run_entry_point(main, base_flags(tiny, out) + ["--alg", "oipo1", "--save_steps", "1"])
    checkpoint = out / "checkpoint-1"
    assert checkpoint.is_dir()
    capsys.readouterr()
    line = entry_point_error(base_flags(tiny, out) + ["--alg", "egpo", "--resume_from_checkpoint", str(checkpoint)], capsys)
    assert line == f"error: {checkpoint} has no extragradient_state_rank0.pt: not a checkpoint of an EGPO run", line
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]


def test_the_alg_choices_are_the_language_model_algorithms_only(tiny, tmp_path, capsys):
    """--alg lists exactly the six online LM algorithms by the README's names, then the six round methods
    (never omwu, which has no LM form); both spellings work."""
    from lm_runs.config import LM_ALGORITHMS, ROUND_ALGORITHMS, resolve_algorithm

    line = entry_point_error(base_flags(tiny, tmp_path / "out") + ["--alg", "magic"], capsys)
    assert "omwu" not in line
    assert "; or inpo, comal, mpo, mnpo, sppo, onpo, trained in rounds" in line
    assert LM_ALGORITHMS == ("egpo", "oipo1", "oipo2", "nashmd", "nashmdpg", "sppo")
    assert ROUND_ALGORITHMS == ("inpo", "comal", "mpo", "mnpo", "sppo", "onpo")
    for names, registered in [(("nashmd", "nash_md", "NMD"), "nash_md"), (("nashmdpg", "nash_md_pg", "nmdpg"), "nash_md_pg"),
                              (("egpo", "eg"), "egpo"), (("oipo1", "online_ipo1"), "oipo1")]:
        assert {resolve_algorithm(n).name for n in names} == {registered}
    help_text = NLHFConfig.__dataclass_fields__["alg"].metadata["help"]
    assert "nashmd, nashmdpg" in help_text and "omwu" not in help_text


def test_wrong_kind_of_model_is_refused_in_one_line(tiny, classifier, tmp_path, capsys, no_model_loads):
    """A sequence classifier as the policy or π_ref, a causal LM as the judge: one line naming the path."""
    line = entry_point_error(base_flags(tiny, tmp_path / "a") + ["--model_name_or_path", classifier], capsys)
    assert classifier in line and "policy must be a causal language model" in line
    line = entry_point_error(base_flags(tiny, tmp_path / "b") + ["--ref_model_name_or_path", classifier], capsys)
    assert classifier in line and "reference must be a causal language model" in line
    line = entry_point_error(base_flags(tiny, tmp_path / "c") + ["--judge", tiny["model"]], capsys)
    assert tiny["model"] in line and "causal language model" in line


def test_output_dir_is_required_and_a_previous_run_refused(tiny, tmp_path, capsys, no_model_loads):
    flags = base_flags(tiny, tmp_path / "out")
    i = flags.index("--output_dir")
    line = entry_point_error(flags[:i] + flags[i + 2 :], capsys)
    assert "--output_dir is required" in line
    (tmp_path / "file").write_text("x")
    assert "a file, not a folder" in entry_point_error(base_flags(tiny, tmp_path / "file"), capsys)
    previous = tmp_path / "previous"
    (previous / "epochs" / "epoch-1").mkdir(parents=True)
    line = entry_point_error(base_flags(tiny, previous), capsys)
    assert "holds a previous run" in line and "--overwrite_output_dir true" in line


def test_judge_flags_reach_the_http_client(tiny, tmp_path, monkeypatch):
    """--judge_timeout and --judge_retries are handed to load_judge (which gives them to the HTTP client)."""
    import lm_runs.judges as judges
    from lm_runs.train_nlhf import build_trainer

    seen = {}

    def fake_load_judge(spec, **kwargs):
        seen.update(kwargs, spec=spec)
        return toy_judges.prefer_shorter

    monkeypatch.setattr(judges, "load_judge", fake_load_judge)
    (cfg,) = __import__("lm_runs.cli", fromlist=["parse_config"]).parse_config(
        [NLHFConfig], base_flags(tiny, tmp_path / "out")[:4] + ["--judge", "http://127.0.0.1:9", "--judge_timeout", "2.5",
                                                             "--judge_retries", "1", "--output_dir", str(tmp_path / "out"),
                                                             "--use_cpu", "true", "--report_to", "none"])
    build_trainer(cfg)
    assert seen["spec"] == "http://127.0.0.1:9" and seen["timeout"] == 2.5 and seen["retries"] == 1


def test_a_judge_server_failing_mid_training_with_the_retry_budget_from_the_command_line(tiny, tmp_path, monkeypatch, capsys):
    """An HTTP judge server whose judge starts failing at its 4th call (the probe is the 1st): with
    --judge_retries 0 the client gives up at once, training stops with one line and checkpoint-2; a
    resumed run against a working server finishes."""
    from lm_runs.judge_server import create_app, serve_in_thread
    from lm_runs.train_nlhf import main

    monkeypatch.setattr(failing_judges, "FAIL_AT", 4)
    monkeypatch.setattr(failing_judges, "calls", 0)
    flags = base_flags(tiny, tmp_path / "out") + ["--alg", "oipo1", "--max_steps", "3", "--per_device_train_batch_size", "2",
                                                  "--max_new_tokens", "4", "--judge_retries", "0", "--judge_timeout", "20"]
    with serve_in_thread(create_app(failing_judges.raises_later, max_wait_ms=1.0)) as server:
        started = __import__("time").perf_counter()
        line = entry_point_error(flags + ["--judge", server.url], capsys)
        seconds = __import__("time").perf_counter() - started
    assert "the judge failed" in line and "at update 3" in line and "checkpoint-2" in line, line
    assert "failed after 1 attempts" in line  # --judge_retries 0 reached the client (default: 8 attempts)
    assert seconds < 17.75  # the default budget waits at least 17.75 s before giving up
    with serve_in_thread(create_app(toy_judges.prefer_shorter, max_wait_ms=1.0)) as server:
        run_entry_point(main, flags + ["--judge", server.url, "--resume_from_checkpoint", "true"])
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_save_steps_alone_writes_complete_checkpoints(tiny, tmp_path):
    """--save_steps 1 alone saves (it saved nothing: save_strategy defaulted to "no") after every update: for
    EGPO checkpoint-2 and checkpoint-4 (optimizer steps; it also saved 1 and 3, between half and full steps),
    each carrying its snapshot; no hidden partial folder is left; a second run into the folder needs
    --overwrite_output_dir true, which replaces the old run."""
    from lm_runs.train_nlhf import main

    out = tmp_path / "out"
    flags = base_flags(tiny, out) + ["--alg", "egpo", "--max_steps", "2", "--save_steps", "1", "--per_device_train_batch_size", "2",
                                     "--max_new_tokens", "4"]
    run_entry_point(main, flags)
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["checkpoint-2", "checkpoint-4"], names
    for name in names:
        assert (out / name / "trainer_state.json").is_file() and (out / name / "extragradient_state_rank0.pt").is_file()
    assert not [p for p in out.rglob(".*") if p.name.startswith((".partial", ".replaced"))]
    run_entry_point(main, flags[:-4] + ["--max_steps", "1", "--overwrite_output_dir", "true"])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-2"]


def test_help_runs(capsys):
    from lm_runs.train_nlhf import main

    with pytest.raises(SystemExit) as exit_info:
        run_entry_point(main, ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--alg", "--judge_timeout", "--judge_retries", "--save_steps", "--overwrite_output_dir", "openai:"):
        assert flag in out, flag


def test_help_runs_as_a_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "lm_runs.train_nlhf", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--alg" in done.stdout and "nashmd" in done.stdout


def test_yaml_config_with_flag_override(tiny, tmp_path):
    from lm_runs.cli import parse_config

    path = tmp_path / "run.yaml"
    path.write_text(f"alg: nmd\nbeta: 0.05\nmodel_name_or_path: {tiny['model']}\nprompts: {tiny['prompts']}\n"
                    f"judge: toy_judges:prefer_shorter\noutput_dir: {tmp_path}\nuse_cpu: true\n")
    (cfg,) = parse_config([NLHFConfig], ["--config", str(path), "--beta", "0.2"])
    assert cfg.algorithm.name == "nash_md" and cfg.beta == 0.2 and cfg.mixture_coef == 0.125
    assert cfg.pair_sampling.temperature == 2.0 and cfg.pair_sampling.top_k == 10


@pytest.mark.parametrize("preset", ["nlhf_qwen_paper.yaml", "sft_qwen_paper.yaml", "preference_model_gemma_paper.yaml"])
def test_paper_presets_parse(preset):
    """Every key of a shipped preset is an option of its entry point, with the paper's values."""
    from pathlib import Path

    import yaml
    from transformers import HfArgumentParser

    from lm_runs.cli import config_flags
    from lm_runs.sft import SFTConfig
    from lm_runs.train_preference_model import PreferenceModelConfig

    path = Path(__file__).resolve().parents[1] / "lm_runs" / "configs" / preset
    cls = {"nlhf": NLHFConfig, "sft_": SFTConfig, "pref": PreferenceModelConfig}[preset[:4]]
    values = yaml.safe_load(path.read_text())
    assert set(values) <= {f.name for f in __import__("dataclasses").fields(cls)}
    flags = config_flags(path) + ["--bf16", "false", "--deepspeed", "", "--use_cpu", "true"]
    if cls is NLHFConfig:  # the preset's judge folder is made by a preference-model run; specs are checked at parse time
        flags += ["--judge", "lm_runs.judges.toy:prefer_shorter"]
    (parsed,) = HfArgumentParser([cls]).parse_args_into_dataclasses(flags, look_for_args_file=False)
    assert parsed.learning_rate == values["learning_rate"]
    if cls is NLHFConfig:
        assert (parsed.beta, parsed.lora_r, parsed.lora_alpha, parsed.warmup_steps) == (0.1, 256, 512, 1000)
        assert parsed.pair_sampling.temperature == 2.0 and parsed.pair_sampling.top_k == 10


def test_metrics_reach_tensorboard(tiny, tmp_path, monkeypatch):
    """report_to=tensorboard writes the documented metrics, one point per update (EGPO: per pair)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))  # transformers 5: the run folder
    cfg = config(tiny, tmp_path / "out", alg="egpo", max_steps=3, report_to=["tensorboard"])
    make_trainer(tiny, cfg).train()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/win_rate", "train/kl_ref", "train/target", "train/contrast", "train/learning_rate",
                "train/generation/mean_length", "train/generation/truncated_fraction",
                "train/generation/tokens_per_second", "train/seconds_per_update", "train/update"):
        assert tag in tags, (tag, sorted(tags))
    updates = [event.value for event in events.Scalars("train/update")]
    assert updates == [1.0, 2.0, 3.0]
    # the x-axis counts updates, as for the other algorithms (it was 2, 4, 6: optimizer steps)
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3]
    assert [event.value for event in events.Scalars("train/epoch")][:3] == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert all(0.0 <= e.value <= 1.0 for e in events.Scalars("train/win_rate"))


def test_the_entry_point_trains_a_lora_adapter(tiny, tmp_path):
    """`python -m lm_runs.train_nlhf --use_peft ...` in-process: the saved output is the adapter."""
    from lm_runs.train_nlhf import main

    out = tmp_path / "lora"
    main(["--alg", "nashmd", "--model_name_or_path", tiny["model"], "--prompts", tiny["prompts"],
          "--judge", "toy_judges:prefer_shorter", "--output_dir", str(out), "--use_cpu", "true", "--report_to", "none",
          "--max_steps", "2", "--per_device_train_batch_size", "2", "--max_new_tokens", "4", "--learning_rate", "1e-2",
          "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "c_attn"])
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and adapter["target_modules"] == ["c_attn"]
    assert not (out / "model.safetensors").exists()  # no full copy of the weights
    from safetensors.torch import load_file

    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and float(v.abs().max()) > 0 for k, v in weights.items())  # trained away from B = 0


def test_a_checkpoint_names_its_judge_and_a_resume_with_another_is_one_line(tiny, tmp_path, capsys):
    """The checkpoint holds the judge's identity (the toy judge's module source digest); resuming it with
    another judge is refused before any step, in one line naming what changed; with the same judge the run
    resumes."""
    from lm_runs.judges.base import source_identity
    from lm_runs.judges.toy import prefer_shorter
    from lm_runs.train_nlhf import main

    out = tmp_path / "out"
    flags = base_flags(tiny, out) + ["--alg", "oipo1", "--save_steps", "1", "--judge", "lm_runs.judges.toy:prefer_shorter"]
    run_entry_point(main, flags)
    saved = json.loads((out / "checkpoint-1" / "judge_identity.json").read_text())
    assert saved == {"kind": "callable", **source_identity(prefer_shorter)}
    capsys.readouterr()
    other = flags[:-1] + ["lm_runs.judges.toy:prefer_vowels", "--resume_from_checkpoint", "true"]
    line = entry_point_error(other, capsys)
    assert line.startswith(f"error: --resume_from_checkpoint {out / 'checkpoint-1'}: it was trained with another judge "
                           "(qualname: 'prefer_shorter' → 'prefer_vowels')"), line
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    run_entry_point(main, flags + ["--max_steps", "2", "--resume_from_checkpoint", "true"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
