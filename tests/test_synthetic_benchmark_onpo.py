"""ONPO in lm_runs.synthetic_benchmark: its budget, and that the benchmark measures its policy, never π′.

Checked: the budget rule counts both of ONPO's phases (DEFAULT: 4 optimizer steps a round, 20 rounds; INPO
2 and 40), a budget that does not divide is refused in one line; a round trainer's callback events carry
``round_phase`` and ``round_index`` (a tiny ONPO run of two rounds: the model a callback sees at each phase's end
is π′_{t+1} after the auxiliary phase and π_{t+1} after the policy phase, parameter for parameter the saved
files); a FAST run with EGPO, INPO and ONPO on 8 updates evaluated every 2 (INPO's rounds: 2 steps, ONPO's:
2 + 2): ONPO is measured at its policy round ends 0, 4, 8 on the same axis as INPO and EGPO (0, 2, 4, 6, 8) —
never at its auxiliary phases' ends 2 and 6 —, at update 0 equal to π_ref's, at 4 and 8 equal to a fresh forward
pass of the saved round ends (``epochs/epoch-k``) and of the final policy, and away from its auxiliary policy π′.
The FAST run is ``slow`` (about a minute on two shared cores); the rest takes seconds.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from lm_runs import synthetic_benchmark as sb
from lm_runs.rounds import RoundsConfig, round_dir, run_rounds
from lm_runs.tiny import build_tiny_lm


def test_budget_counts_both_of_onpos_phases(tmp_path, capsys):
    # DEFAULT: 48 pairs a round, 32 per step → 2 steps a phase, two phases → 4 a round, 80 / 4 = 20 rounds
    assert sb.DEFAULT.steps_per_round("onpo") == 4 and sb.DEFAULT.rounds("onpo") == 20
    assert sb.DEFAULT.steps_per_round("inpo") == 2 and sb.DEFAULT.rounds("inpo") == 40
    assert "onpo" in sb.DEFAULT.algorithms and "onpo" not in sb.SHORT.algorithms  # SHORT: the five online ones
    assert replace(sb.DEFAULT, round_epochs=3, updates=84).steps_per_round("onpo") == 12  # P · E · ⌈48/32⌉
    assert sb.FAST.steps_per_round("onpo") == 4 and sb.FAST.rounds("onpo") == 1
    with pytest.raises(SystemExit) as info:
        sb.main(["--out", str(tmp_path / "out"), "--fast", "--algorithms", "egpo", "onpo", "--updates", "6"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "onpo trains 4 optimizer steps per round" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


class _PhaseEnds(TrainerCallback):
    """Records, at each training phase's end, the round, the phase, its steps and the trainable parameters."""

    def __init__(self):
        self.ends: list[tuple[int, str, int, dict]] = []

    def on_train_end(self, args, state, control, model=None, *, round_index, round_phase, **kwargs):
        params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.ends.append((round_index, round_phase, state.global_step, params))


def test_round_trainer_tells_callbacks_the_phase(tmp_path):
    model = build_tiny_lm(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"tell me about the {w}"}) + "\n" for w in ("cat", "dog", "sun", "moon")))
    config = RoundsConfig(
        output_dir=str(tmp_path / "out"), model_name_or_path=str(model), prompts=str(prompts), judge="toy_judges:prefer_shorter",
        alg="onpo", rounds=2, samples_per_prompt=2, pair_selection="all", epochs_per_round=1, eta=1.0,
        per_device_train_batch_size=2, learning_rate=1e-2, max_new_tokens=4, use_cpu=True, report_to="none",
        seed=0, weight_decay=0.0, disable_tqdm=True, logging_steps=10**6, save_strategy="no",
    )
    recorder = _PhaseEnds()
    run_rounds(config, callbacks=[recorder])
    assert [(r, phase, steps) for r, phase, steps, _ in recorder.ends] == [
        (0, "auxiliary", 2), (0, "policy", 2), (1, "auxiliary", 2), (1, "policy", 2)]  # 4 pairs / 2 per step
    for r, phase, _, params in recorder.ends:
        folder = round_dir(config.output_dir, r)
        saved = torch.load(folder / ("auxiliary/policy.pt" if phase == "auxiliary" else "policy.pt"), map_location="cpu")
        assert saved.keys() == params.keys()
        assert all(torch.equal(saved[n], params[n]) for n in params), (r, phase)  # bit for bit: the same tensors saved
    # the phases train different parameters: π′_{t+1} ≠ π_{t+1} (by far more than float32 rounding)
    aux, pol = recorder.ends[2][3], recorder.ends[3][3]
    assert max(float((aux[n] - pol[n]).abs().max()) for n in aux) > 1e-4


@pytest.fixture(scope="module")
def onpo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_onpo") / "out"
    summary = sb.main(["--out", str(out), "--fast", "--no_progress", "--algorithms", "egpo", "inpo", "onpo", "--seeds", "0",
                       "--updates", "8", "--eval_every", "2", "--length_normalized_seeds", "--keep_checkpoints"])
    return out, summary


def _class_probs(folder, tokenizer, prompts, token_class, num_classes, state=None) -> np.ndarray:
    """p_θ(c | x) of the model saved in ``folder`` (its trainable parameters replaced by ``state`` if given)."""
    model = AutoModelForCausalLM.from_pretrained(folder)
    if state is not None:
        model.load_state_dict(state, strict=False)
    ids, mask = sb.encode_prompts(tokenizer, prompts)
    return np.exp(sb.class_log_probs(model, ids, mask, token_class, num_classes))


@pytest.mark.slow  # a FAST run of three algorithms on 8 updates: about a minute on two shared cores
def test_onpo_is_measured_at_the_policy_round_ends(onpo_run):
    out, summary = onpo_run
    metrics = pd.read_csv(out / "metrics.csv")
    gap = metrics[metrics.metric == "duality_gap"].pivot_table(index="algorithm", columns="update", values="value")
    assert list(gap.columns) == [0, 2, 4, 6, 8]
    assert not gap.loc[["egpo", "inpo"]].isna().any().any()  # every eval_every: EGPO's updates, INPO's round ends
    assert list(gap.loc["onpo"].dropna().index) == [0, 4, 8]  # ONPO's round ends: after 2 + 2 steps, not at 2 or 6
    assert gap.loc["onpo", 0] == gap.loc["inpo", 0] == gap.loc["egpo", 0]  # update 0: π_ref, the same forward pass
    assert abs(gap.loc["onpo", 8] - gap.loc["onpo", 0]) > 1e-6  # training moved the policy
    assert summary["settings"]["round_eta"] == 1.0 and "onpo" in summary["final_median"]
    run = out / next(r["path"] for r in summary["runs"] if r["algorithm"] == "onpo")
    assert sorted(p.name for p in (run / "rounds").iterdir()) == ["round-0", "round-1"]  # 8 updates / 4 a round
    phases = json.loads((run / "rounds" / "round-1" / "dataset" / "round.json").read_text())["phases"]
    assert set(phases) == {"auxiliary", "policy"}
    # the measured class probabilities are those of the saved policies: round ends 1 and 2 (updates 4 and 8), final
    probs = pd.read_csv(out / "class_probs.csv")
    game = json.loads((out / "game.json").read_text())
    K = game["num_classes"]
    tokenizer = AutoTokenizer.from_pretrained(out / "sft", padding_side="left")
    token_class = sb.token_classes(tokenizer, K)
    columns = [f"p{c}" for c in range(K)]

    def measured(update: int) -> tuple[list[str], np.ndarray]:
        rows = probs[(probs.algorithm == "onpo") & (probs["update"] == update)]
        return list(rows.prompt), rows[columns].to_numpy()

    prompts, at8 = measured(8)
    for update, folder in ((4, run / "epochs" / "epoch-1"), (8, run / "epochs" / "epoch-2"), (8, run)):
        # the same weights, the same batch: equal up to float32 rounding of the forward pass (CSV keeps float64 exactly)
        np.testing.assert_allclose(measured(update)[1], _class_probs(folder, tokenizer, prompts, token_class, K), rtol=0, atol=1e-6)
    # ... and not those of the auxiliary policy π′_2, trained in the same round
    aux = torch.load(run / "rounds" / "round-1" / "auxiliary" / "policy.pt", map_location="cpu")
    assert np.abs(at8 - _class_probs(run, tokenizer, prompts, token_class, K, aux)).max() > 1e-4
