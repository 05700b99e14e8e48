"""Round mode (lm_runs.rounds) in two processes (torchrun, DDP, gloo, ``--use_cpu true``) on a tiny local
GPT-2: each rank samples its block of prompts from the frozen π_t with its own seeded stream and judges them,
rank 0 publishes the one round dataset, both ranks train on it with the Trainer's DDP.

The guarantee tested: bit for bit for a given seed and world size — the ranks end with equal parameters
(torch.equal), every response of the saved dataset is what its rank's seeded stream samples from π_t for its
block alone (token for token, log-probabilities within 1e-5: recomputed in another process, float32), and a
run interrupted after round 1's training (round 0 finished: a resume between rounds, round 1 from its last
checkpoint: inside a round) ends torch.equal to the uninterrupted run. The world size is part of the seed:
the 2-rank dataset is not the single-process one (see lm_runs.rounds's docstring).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lm_runs.cli import parse_config
from lm_runs.rounds import RoundsConfig, epoch_dir, prompt_shard, round_dir, shard_seed
from lm_runs.tiny import build_tiny_lm

ROOT = Path(__file__).resolve().parents[1]
WORDS = "cat dog bird fish sun moon".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_rounds")
    model_dir = build_tiny_lm(root / "model")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"tell me about the {w}"}) + "\n" for w in WORDS))
    return {"model": str(model_dir), "prompts": str(prompts)}


def flags(tiny, out: Path, *extra: str) -> list[str]:
    """tests/test_rounds.py's settings, 2 rounds."""
    return ["--output_dir", str(out), "--model_name_or_path", tiny["model"], "--prompts", tiny["prompts"],
            "--judge", "toy_judges:prefer_shorter", "--rounds", "2", "--samples_per_prompt", "3", "--eta", "2.0",
            "--beta", "0.1", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--max_new_tokens", "6",
            "--use_cpu", "true", "--report_to", "none", "--seed", "0", "--weight_decay", "0.0", "--max_grad_norm", "0.0",
            "--disable_tqdm", "true", "--logging_steps", "1", *extra]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(records: Path, round_flags: list[str], interrupt_round: int | None = None) -> int:
    """torchrun --nproc_per_node=2 tests/distributed_rounds.py; returns its exit status (asserting no other
    failure than the requested interruption)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(ROOT / "tests" / "distributed_rounds.py"), str(records)]
    if interrupt_round is not None:
        command += ["--interrupt_round", str(interrupt_round)]
    try:
        done = subprocess.run([*command, "--", *round_flags], env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as timeout:
        err = timeout.stderr or b""
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
        pytest.fail(f"torchrun ran past 300 s; its stderr ends: {err[-4000:]}")
    assert done.returncode == (0 if interrupt_round is None else 1), done.stderr[-4000:]
    return done.returncode


def finals(records: Path, key: str = "final") -> list:
    """Both ranks' records' ``key``: the final trainable parameters or the last round's step losses."""
    ranks = [torch.load(records / f"final_rank{r}.pt", weights_only=False) for r in range(2)]
    assert all(r["world"] == 2 for r in ranks)
    return [r[key] for r in ranks]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_ranks_sample_their_blocks_and_train_the_same_weights(tiny, tmp_path):
    from lm_runs.generation import ReferenceModel
    from lm_runs.judges.toy import prefer_shorter
    from lm_runs.models import load_policy, load_reference, load_tokenizer
    from lm_runs.rounds import _sample_and_judge, round_loss

    out = tmp_path / "run"
    launch(tmp_path / "records", flags(tiny, out))
    rank0, rank1 = finals(tmp_path / "records")
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    after_round_0 = torch.load(round_dir(out, 0) / "policy.pt")
    assert any(not torch.equal(rank0[k], after_round_0[k]) for k in rank0)  # round 1 trained
    final_end = torch.load(round_dir(out, 1) / "policy.pt")
    assert all(torch.equal(rank0[k], final_end[k]) for k in rank0)  # rank 0's saved round end is every rank's

    # round 0's dataset, published once: each rank's block is what its seeded stream samples from π_0 alone
    folder = round_dir(out, 0) / "dataset"
    assert not list((out / "rounds" / "round-0").glob(".partial*"))
    meta = json.loads((folder / "round.json").read_text())
    assert meta["generation_shards"] == [{"rank": k, "prompts": [prompt_shard(6, k, 2).start, prompt_shard(6, k, 2).stop],
                                          "seed": shard_seed(0, k)} for k in range(2)]
    assert meta["generation_shards"][1]["prompts"] == [3, 6] and meta["generation_shards"][1]["seed"] != 0
    responses = read_jsonl(folder / "responses.jsonl")
    judgements = read_jsonl(folder / "judgements.jsonl")
    assert [(r["prompt_index"], r["sample"]) for r in responses] == [(p, k) for p in range(6) for k in range(3)]
    (config,) = parse_config([RoundsConfig], flags(tiny, tmp_path / "unused"))
    tokenizer = load_tokenizer(tiny["model"], padding_side="left")
    policy = load_policy(tiny["model"], dtype=torch.float32, lora=config, seed=0)
    reference = ReferenceModel(policy, frozen=load_reference(tiny["model"], None, use_peft=False, dtype=torch.float32))
    prompts = [json.loads(line)["prompt"] for line in Path(tiny["prompts"]).read_text().splitlines()]
    for k in range(2):
        block = prompt_shard(6, k, 2)
        alone = _sample_and_judge(config, policy, reference, tokenizer, [prompts[p] for p in block], prefer_shorter,
                                  None, shard_seed(0, k), round_loss(config, 0))
        saved = [r for r in responses if r["prompt_index"] in block]
        assert [r["token_ids"] for r in saved] == alone["token_ids"]
        assert [r["response"] for r in saved] == alone["texts"]
        torch.testing.assert_close(torch.tensor([r["logp_policy"] for r in saved]), torch.tensor(alone["logp_t"]), rtol=0, atol=1e-5)
        assert [j["p_i_over_j"] for j in judgements if j["prompt_index"] in block] == alone["answers"]


@pytest.mark.slow
def test_two_ranks_resume_between_and_inside_rounds_ends_bit_for_bit(tiny, tmp_path):
    """Checkpoints every step; the run stopped after round 1's training, before its end was saved, and resumed
    (round 0 skipped, round 1 from its newest checkpoint): both ranks end torch.equal to the uninterrupted
    2-rank run's parameters, and the round datasets are byte for byte the uninterrupted run's."""
    every_step = ("--save_strategy", "steps", "--save_steps", "1")
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    launch(tmp_path / "straight_records", flags(tiny, straight, *every_step))
    launch(tmp_path / "cut_records", flags(tiny, cut, *every_step), interrupt_round=1)
    assert (round_dir(cut, 0) / "policy.pt").is_file() and not (round_dir(cut, 1) / "policy.pt").exists()
    before = [(round_dir(cut, r) / "dataset" / "responses.jsonl").stat().st_mtime_ns for r in range(2)]
    launch(tmp_path / "cut_records", flags(tiny, cut, *every_step, "--resume_from_checkpoint", "true"))
    after = [(round_dir(cut, r) / "dataset" / "responses.jsonl").stat().st_mtime_ns for r in range(2)]
    assert after == before  # both datasets reused, not rebuilt
    assert finals(tmp_path / "cut_records", "step_losses") == [[], []]  # round 1 resumed at its last checkpoint
    assert len(finals(tmp_path / "straight_records", "step_losses")[0]) == 5  # 18 pairs: 9 a rank, 2 a micro-batch
    reference = finals(tmp_path / "straight_records")[0]
    for resumed in finals(tmp_path / "cut_records"):
        assert resumed.keys() == reference.keys() and all(torch.equal(resumed[k], reference[k]) for k in reference)
    for r in range(2):
        for name in ("responses.jsonl", "judgements.jsonl", "pairs.jsonl"):
            assert (round_dir(cut, r) / "dataset" / name).read_bytes() == (round_dir(straight, r) / "dataset" / name).read_bytes()


@pytest.mark.slow
def test_fewer_prompts_than_ranks_is_one_line_exit_2(tiny, tmp_path):
    """``python -m lm_runs.rounds`` under torchrun with 1 prompt for 2 ranks: every rank stops with the one-line
    error (exit status 2, torchrun's 1) before a model loads; nothing is written."""
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"prompt": "tell me about the cat"}) + "\n")
    round_flags = flags(tiny, tmp_path / "out")
    round_flags[round_flags.index("--prompts") + 1] = str(one)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                           f"--master_port={free_port()}", "-m", "lm_runs.rounds", *round_flags],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 1, done.stderr[-4000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all("1 prompt(s) for 2 processes" in line for line in errors), done.stderr[-4000:]
    assert 'lm_runs/rounds.py", line' not in done.stderr  # no rank's traceback (torchrun's own report follows)
    assert not (tmp_path / "out" / "rounds").exists()


@pytest.mark.slow
def test_two_ranks_train_onpo_with_one_published_auxiliary_policy(tiny, tmp_path):
    """ONPO under torchrun (2 ranks, 2 rounds): both ranks end with equal parameters, the saved round end; each
    round's auxiliary end is published once and whole by rank 0 (rounds/round-r/auxiliary with policy.pt and
    one log-probability per response, no staging folder left); round 1's dataset holds the responses'
    log-probabilities under π′_1 = round 0's saved auxiliary end (recomputed here in one process within 1e-5),
    which differ from those under π_1 (the auxiliary policy is not the policy)."""
    from lm_runs.logprobs import completion_logprobs
    from lm_runs.models import load_policy, load_tokenizer
    from lm_runs.data import encode_prompt

    out = tmp_path / "run"
    launch(tmp_path / "records", flags(tiny, out, "--alg", "onpo"))
    rank0, rank1 = finals(tmp_path / "records")
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    final_end = torch.load(round_dir(out, 1) / "policy.pt")
    assert all(torch.equal(rank0[k], final_end[k]) for k in rank0)
    for r in range(2):
        assert not list(round_dir(out, r).glob(".partial*"))
        assert len(read_jsonl(round_dir(out, r) / "auxiliary" / "logp.jsonl")) == 18
    (config,) = parse_config([RoundsConfig], flags(tiny, tmp_path / "unused", "--alg", "onpo"))
    tokenizer = load_tokenizer(tiny["model"], padding_side="left")
    policy = load_policy(tiny["model"], dtype=torch.float32, lora=config, seed=0).eval()
    policy.load_state_dict(torch.load(round_dir(out, 0) / "auxiliary" / "policy.pt"), strict=False)
    responses = read_jsonl(round_dir(out, 1) / "dataset" / "responses.jsonl")
    for row in responses[::5]:
        ids, completion = torch.tensor([encode_prompt(tokenizer, row["prompt"])]), torch.tensor([row["token_ids"]])
        with torch.no_grad():
            value = float(completion_logprobs(policy, ids, torch.ones_like(ids), completion, torch.ones_like(completion)))
        assert abs(value - row["logp_past"]["aux"]) <= 1e-5 * abs(value) + 1e-5, (value, row["logp_past"]["aux"])
    assert any(abs(row["logp_past"]["aux"] - row["logp_policy"]) > 1e-4 for row in responses)


@pytest.mark.slow
def test_two_ranks_under_zero2_train_onpo_rounds_as_ddp_and_resume_bit_for_bit(tiny, tmp_path):
    """--deepspeed zero2.json (ZeRO-2 on the CPU, gloo, the Trainer's torch AdamW), ONPO, 2 rounds: four
    trainings (two phases a round) on the run's one Trainer, each with a fresh DeepSpeed engine. Both ranks end
    with equal parameters (torch.equal), the saved round end; round 0's dataset is byte for byte the DDP run's
    (the same π_0 sampled with the same streams), and the final parameters lie within 1e-6 of the DDP run's
    (the same AdamW steps, the gradients reduced by ZeRO-2 instead of DDP: measured 0, bit for bit, on one
    machine; round 1 moved them by 9e-3). Stopped after round 1's training and resumed (its policy phase from
    its last ZeRO-2 checkpoint): torch.equal to the uninterrupted run. (4 torchrun launches: about 4 minutes.)"""
    zero2 = ("--alg", "onpo", "--save_strategy", "steps", "--save_steps", "1", "--deepspeed", str(ROOT / "lm_runs" / "configs" / "zero2.json"))
    ddp, straight, cut = tmp_path / "ddp", tmp_path / "straight", tmp_path / "cut"
    launch(tmp_path / "ddp_records", flags(tiny, ddp, "--alg", "onpo"))
    launch(tmp_path / "straight_records", flags(tiny, straight, *zero2))
    rank0, rank1 = finals(tmp_path / "straight_records")
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    final_end = torch.load(round_dir(straight, 1) / "policy.pt")
    assert all(torch.equal(rank0[k], final_end[k]) for k in rank0)
    for name in ("responses.jsonl", "judgements.jsonl", "pairs.jsonl"):
        assert (round_dir(straight, 0) / "dataset" / name).read_bytes() == (round_dir(ddp, 0) / "dataset" / name).read_bytes()
    under_ddp = finals(tmp_path / "ddp_records")[0]
    gap = max(float((rank0[k] - under_ddp[k]).abs().max()) for k in rank0)
    assert gap <= 1e-6, gap
    launch(tmp_path / "cut_records", flags(tiny, cut, *zero2), interrupt_round=1)
    launch(tmp_path / "cut_records", flags(tiny, cut, *zero2, "--resume_from_checkpoint", "true"))
    for resumed in finals(tmp_path / "cut_records"):
        assert resumed.keys() == rank0.keys() and all(torch.equal(resumed[k], rank0[k]) for k in rank0)


LORA = ("--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "c_attn", "--learning_rate", "1e-2")


@pytest.mark.slow
def test_two_ranks_under_zero2_train_onpo_lora_rounds_as_ddp_with_loadable_auxiliary_adapters(tiny, tmp_path):
    """ONPO with a LoRA adapter (--use_peft, r = 4 on c_attn) under --deepspeed zero2.json (ZeRO-2 on the CPU,
    gloo, the Trainer's torch AdamW), 2 ranks, 2 rounds, against the same run under DDP. The trainable
    parameters are the adapter's alone (every name holds ``lora_``) and both ZeRO-2 ranks end with equal
    ones (torch.equal), the saved round end; round 0's dataset is byte for byte the DDP run's; each round's
    auxiliary end π′_{r+1} (``auxiliary/policy.pt``) and the final adapter lie within 1e-6 of the DDP run's
    (the same AdamW steps, the gradients reduced by ZeRO-2 instead of DDP: measured 0, bit for bit, on one
    machine), and each rank saved its ZeRO-2 optimizer partition in both phases' checkpoints. Each saved π′_{r+1} loads back
    into a fresh LoRA-wrapped model (load_policy + load_state_dict) and gives its ``logp.jsonl`` within
    1e-5 (recomputed in one process, float32), and differs from the round's policy end; each round end's
    model folder (epochs/epoch-r), the final one and each round's auxiliary end (rounds/round-r/auxiliary) are
    peft adapters (adapter_config.json) that PeftModel.from_pretrained loads to that round's policy.pt
    (auxiliary/policy.pt) bit for bit. Stopped after round 1's training and resumed (its policy phase from its last ZeRO-2
    checkpoint of the adapter): torch.equal to the uninterrupted run. (4 torchrun launches: about 4 minutes.)"""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lm_runs.data import encode_prompt
    from lm_runs.logprobs import completion_logprobs
    from lm_runs.models import load_policy, load_tokenizer

    onpo = ("--alg", "onpo", *LORA)
    zero2_flags = (*onpo, "--save_strategy", "steps", "--save_steps", "1", "--deepspeed", str(ROOT / "lm_runs" / "configs" / "zero2.json"))
    ddp, zero2, cut = tmp_path / "ddp", tmp_path / "zero2", tmp_path / "cut"
    launch(tmp_path / "ddp_records", flags(tiny, ddp, *onpo))
    launch(tmp_path / "zero2_records", flags(tiny, zero2, *zero2_flags))
    rank0, rank1 = finals(tmp_path / "zero2_records")
    assert rank0 and all("lora_" in k for k in rank0)
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert all(torch.equal(rank0[k], v) for k, v in torch.load(round_dir(zero2, 1) / "policy.pt").items())
    assert any(float(v.abs().max()) > 0 for k, v in rank0.items() if "lora_B" in k)  # the adapter trained (B starts at 0)
    for name in ("responses.jsonl", "judgements.jsonl", "pairs.jsonl"):
        assert (round_dir(zero2, 0) / "dataset" / name).read_bytes() == (round_dir(ddp, 0) / "dataset" / name).read_bytes()

    def gap(a: dict, b: dict) -> float:
        assert a.keys() == b.keys()
        return max(float((a[k] - b[k]).abs().max()) for k in a)

    gaps = [gap(rank0, finals(tmp_path / "ddp_records")[0])]
    for r in range(2):
        auxiliary = torch.load(round_dir(zero2, r) / "auxiliary" / "policy.pt")
        assert auxiliary.keys() == rank0.keys()
        gaps.append(gap(auxiliary, torch.load(round_dir(ddp, r) / "auxiliary" / "policy.pt")))
    assert max(gaps) <= 1e-6, gaps  # measured 0 (bit for bit) on one machine
    for phase in ("auxiliary-trainer", "trainer"):  # ZeRO-2 ran: each rank saved its optimizer partition
        assert {p.name for p in round_dir(zero2, 1).glob(f"{phase}/checkpoint-*/global_step*/*optim_states.pt")} >= {
            f"zero_pp_rank_{k}_mp_rank_00_optim_states.pt" for k in range(2)}

    (config,) = parse_config([RoundsConfig], flags(tiny, tmp_path / "unused", *onpo))
    tokenizer = load_tokenizer(tiny["model"], padding_side="left")
    model = load_policy(tiny["model"], dtype=torch.float32, lora=config, seed=0).eval()
    for r in range(2):
        model.load_state_dict(torch.load(round_dir(zero2, r) / "auxiliary" / "policy.pt"), strict=False)
        responses = read_jsonl(round_dir(zero2, r) / "dataset" / "responses.jsonl")
        logged = read_jsonl(round_dir(zero2, r) / "auxiliary" / "logp.jsonl")
        assert [(row["prompt_index"], row["sample"]) for row in logged] == [(row["prompt_index"], row["sample"]) for row in responses]
        for row, saved in list(zip(responses, logged))[::4]:
            ids, completion = torch.tensor([encode_prompt(tokenizer, row["prompt"])]), torch.tensor([row["token_ids"]])
            with torch.no_grad():
                value = float(completion_logprobs(model, ids, torch.ones_like(ids), completion, torch.ones_like(completion)))
            assert abs(value - saved["logp"]) <= 1e-5 * abs(value) + 1e-5, (r, value, saved["logp"])
        end = torch.load(round_dir(zero2, r) / "policy.pt")
        assert gap(torch.load(round_dir(zero2, r) / "auxiliary" / "policy.pt"), end) > 1e-4  # π′_{r+1} is not π_{r+1}

    for folder, end in ((epoch_dir(zero2, 1), round_dir(zero2, 0) / "policy.pt"), (epoch_dir(zero2, 2), round_dir(zero2, 1) / "policy.pt"),
                        (zero2, round_dir(zero2, 1) / "policy.pt"),
                        *((round_dir(zero2, r) / "auxiliary", round_dir(zero2, r) / "auxiliary" / "policy.pt") for r in range(2))):
        assert (folder / "adapter_config.json").is_file()
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny["model"]), str(folder), is_trainable=True)
        adapter, saved = {n: p.detach() for n, p in loaded.named_parameters() if p.requires_grad}, torch.load(end)
        assert adapter.keys() == saved.keys() and all(torch.equal(adapter[k], saved[k]) for k in saved), folder

    launch(tmp_path / "cut_records", flags(tiny, cut, *zero2_flags), interrupt_round=1)
    assert (round_dir(cut, 1) / "auxiliary" / "policy.pt").is_file() and not (round_dir(cut, 1) / "policy.pt").exists()
    launch(tmp_path / "cut_records", flags(tiny, cut, *zero2_flags, "--resume_from_checkpoint", "true"))
    for resumed in finals(tmp_path / "cut_records"):
        assert resumed.keys() == rank0.keys() and all(torch.equal(resumed[k], rank0[k]) for k in rank0)
