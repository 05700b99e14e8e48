"""lm_runs.synthetic_benchmark: the class game, the class feature, the exact class distribution of a
real tiny LM against its samples, the gap as a measurement, and the fast pipeline end to end.

Statistical tests use fixed seeds (deterministic) and thresholds far from their typical values: the
chi-square p-value of a correct distribution must exceed 1e-4; a wrong one must fall below 1e-6.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chisquare
from transformers import AutoModelForCausalLM, AutoTokenizer

from egpo_core.metrics import duality_gap_brute_force
from lm_runs import synthetic_benchmark as sb
from lm_runs.generation import SamplingParams, generate_completions


# ----------------------------------------------------------------------------------------------
# the class game
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [3, 4, 5])
def test_class_matrices_are_valid_cyclic_games(K):
    mats = sb.class_matrices(K, strength=0.8)
    assert set(mats) == set(sb.PROMPT_TYPES)
    forward, backward = mats["forward"], mats["backward"]
    for M in (forward, backward):
        assert M.shape == (K, K)
        np.testing.assert_allclose(M + M.T, np.ones((K, K)), atol=0)
        np.testing.assert_allclose(np.diag(M), 0.5)
    np.testing.assert_array_equal(backward, forward.T)
    assert forward[0, 1] == pytest.approx(0.9) and forward[1, 0] == pytest.approx(0.1)  # class 0 beats class 1
    assert forward[K - 1, 0] == pytest.approx(0.9)  # … and loses to class K − 1: non-transitive
    # a cycle: no class beats every other
    assert not any(np.all(np.delete(forward[i], i) >= 0.5) for i in range(K))


def test_equilibrium_is_the_fixed_point_and_the_reference_is_far_from_it():
    M = sb.class_matrices(3)["forward"]
    prompts = ["forward game: tell me about the lake", "backward game: tell me about the lake"]
    r = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    game = sb.ClassGame.build(sb.class_matrices(3), prompts, r, beta=0.1)
    q = np.exp(game.star_logp)
    for i, P in enumerate(game.P):
        br = r[i] * np.exp(P @ q[i] / 0.1)
        np.testing.assert_allclose(q[i], br / br.sum(), atol=1e-10)  # q* = softmax(log r + Mq*/β)
    at_star = game.metrics(game.star_logp)
    at_ref = game.metrics(game.ref_logp)
    assert at_star["duality_gap"] < 1e-10 and at_star["kl_to_equilibrium"] < 1e-12
    assert at_ref["duality_gap"] > 0.2 and at_ref["kl_to_equilibrium"] > 0.3
    # the closed form against the brute-force definition of the gap
    np.testing.assert_allclose(
        at_ref["duality_gap"], np.mean(duality_gap_brute_force(game.P, game.ref_logp, game.ref_logp, 0.1)), rtol=1e-9
    )
    np.testing.assert_array_equal(game.P[0], M)
    # a uniform reference in an odd cyclic game stays uniform
    uniform = sb.ClassGame.build(sb.class_matrices(3), prompts[:1], np.full((1, 3), 1 / 3), beta=0.1)
    np.testing.assert_allclose(np.exp(uniform.star_logp), 1 / 3, atol=1e-12)


def test_char_and_text_class_rule():
    assert [sb.char_class(c, 3) for c in "aAiIjJrRsSzZ"] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert [sb.char_class(c, 5) for c in "afgklpquvz"] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [sb.char_class(c, 3) for c in " .9\n\ufffdé"] == [0] * 6
    assert sb.text_class("", 4) == 0 and sb.text_class("sun moon", 3) == 2 and sb.text_class(" sun", 3) == 0
    with pytest.raises(ValueError, match="3 to 5"):
        sb.char_class("a", 6)


def test_oracle_preferences():
    oracle = sb.ClassOracle(sb.class_matrices(3), 3)
    fwd, bwd = "forward game: tell me about the lake", "backward game: tell me about the lake"
    assert oracle([fwd, bwd, fwd, fwd], [["apple", "jam"], ["apple", "jam"], ["sun", "apple"], ["cat dog", "bird"]]) == [1.0, 0.0, 1.0, 0.5]
    bonus = sb.ClassOracle(sb.class_matrices(3), 3, length_bonus=0.2)
    p = bonus.preference(fwd, "cat dog egg", "bird")
    assert p == pytest.approx(0.5 + 0.2 * math.tanh(1.0))
    assert bonus.preference(fwd, "bird", "cat dog egg") == pytest.approx(1 - p)
    assert bonus.preference(fwd, "apple", "jam kite moon") == 1.0  # across classes the term is off
    with pytest.raises(ValueError, match="not a benchmark prompt"):
        oracle(["tell me a story"], [["a", "b"]])


# ----------------------------------------------------------------------------------------------
# a real tiny LM: the class feature and the exact class distribution
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """Tokenizer + tiny GPT-2, briefly fine-tuned so its first-token distribution is far from uniform."""
    root = tmp_path_factory.mktemp("synthetic")
    prompts = sb.make_prompts(sb.TRAIN_NOUNS[:4])
    corpus = sb.make_sft_corpus(prompts, 3, 256, 0.8, seed=0)
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    text = [r["completion"] for r in corpus] + prompts + sb.WORD_POOL
    sb.build_benchmark_model(root / "model", text)
    sb.sft_reference(root / "model", root / "sft.jsonl", root / "sft", epochs=1.0, learning_rate=sb.DEFAULT.sft_learning_rate)
    tokenizer = AutoTokenizer.from_pretrained(root / "sft")
    model = AutoModelForCausalLM.from_pretrained(root / "sft")
    return {"root": root, "tokenizer": tokenizer, "model": model, "prompts": prompts}


def test_tokenizer_has_one_special_token(lm):
    tok = lm["tokenizer"]
    assert tok.all_special_ids == [tok.eos_token_id] and tok.pad_token_id == tok.eos_token_id
    assert tok.clean_up_tokenization_spaces is False


def test_class_feature_is_deterministic_and_is_the_first_tokens_class(lm):
    tok = lm["tokenizer"]
    K = 3
    classes = sb.token_classes(tok, K)
    np.testing.assert_array_equal(classes, sb.token_classes(AutoTokenizer.from_pretrained(lm["root"] / "sft"), K))
    assert classes[tok.eos_token_id] == 0
    assert set(classes.tolist()) == {0, 1, 2}
    # every class holds the SFT lead words' tokens
    for c, words in enumerate(sb.lead_words(K)):
        for w in words:
            assert classes[tok(w, add_special_tokens=False)["input_ids"][0]] == c
    # class(decode(y)) = token_class[y₁] for every first token, with continuations that complete
    # multi-byte characters, start with EOS, or are random tokens; decoded as the trainer decodes
    rng = np.random.default_rng(0)
    V = len(tok)
    utf8_tail = tok("é", add_special_tokens=False)["input_ids"]  # 0xC3 0xA9 as byte tokens or one merge
    mismatches = []
    for t in range(V):
        continuations = [[], [tok.eos_token_id, tok.eos_token_id], utf8_tail, rng.integers(0, V, 3).tolist()]
        if t == tok.eos_token_id:
            continuations = [[tok.eos_token_id]]  # generation stops at EOS; the rest is padding (= EOS)
        texts = tok.batch_decode([[t] + c for c in continuations], skip_special_tokens=True)
        mismatches += [(t, text) for text in texts if sb.text_class(text, K) != classes[t]]
    assert not mismatches, mismatches[:5]


def test_exact_class_distribution_matches_sampled_frequencies(lm):
    tok, model = lm["tokenizer"], lm["model"]
    K = 3
    classes = sb.token_classes(tok, K)
    prompts = ["forward game: tell me about the lake", "backward game: tell me about the cave"]
    ids, mask = sb.encode_prompts(tok, prompts)
    exact = np.exp(sb.class_log_probs(model, ids, mask, classes, K))
    np.testing.assert_allclose(exact.sum(-1), 1.0, atol=1e-12)
    assert exact[0].argmax() == 0 and exact[0].max() > 0.5  # forward prompts favour class 0 after SFT
    n = 3000
    sampled = generate_completions(
        model, ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), SamplingParams(), max_new_tokens=1,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, generator=torch.Generator().manual_seed(0),
    )
    first = classes[sampled.ids[:, 0].numpy()].reshape(2, n)
    for i in range(2):
        counts = np.bincount(first[i], minlength=K)
        assert chisquare(counts, n * exact[i]).pvalue > 1e-4, (counts, n * exact[i])
        order = np.argsort(exact[i])
        wrong = exact[i].copy()
        wrong[order[-1]], wrong[order[-2]] = exact[i][order[-2]], exact[i][order[-1]]  # two classes swapped
        assert chisquare(counts, n * wrong).pvalue < 1e-6  # the test has power against a wrong distribution
        # and within 5 standard errors class by class
        se = np.sqrt(exact[i] * (1 - exact[i]) / n)
        assert np.all(np.abs(counts / n - exact[i]) < 5 * se + 1e-12)


def test_gap_of_reference_is_above_the_gap_of_a_policy_tilted_to_the_equilibrium(lm):
    """A check of the measurement: a logit bias b_t = log q*(c_t) − log r(c_t) on the first token turns
    the class distribution into q* exactly (gap 0); halfway in log space it lies between."""
    tok, model = lm["tokenizer"], lm["model"]
    K, beta = 3, 0.1
    classes = sb.token_classes(tok, K)
    prompts = sb.make_prompts(sb.EVAL_NOUNS[:2])
    ids, mask = sb.encode_prompts(tok, prompts)
    ref_logp = sb.class_log_probs(model, ids, mask, classes, K)
    game = sb.ClassGame.build(sb.class_matrices(K), prompts, np.exp(ref_logp), beta)
    shift = game.star_logp - game.ref_logp  # (n, K)
    bias = shift[:, classes]  # (n, V): every token of class c moves by the same amount
    tilted = sb.class_log_probs(model, ids, mask, classes, K, logit_bias=bias)
    np.testing.assert_allclose(tilted, game.star_logp, atol=1e-9)
    half = sb.class_log_probs(model, ids, mask, classes, K, logit_bias=0.5 * bias)
    g_ref, g_half, g_star = (game.metrics(x)["duality_gap"] for x in (ref_logp, half, tilted))
    assert g_ref > 0.15 and g_star < 1e-8 and g_star < g_half < g_ref
    assert game.metrics(tilted)["exploitability"] < game.metrics(ref_logp)["exploitability"]


def test_conditional_kl_estimate(lm):
    tok, model = lm["tokenizer"], lm["model"]
    K = 3
    classes = sb.token_classes(tok, K)
    ids, mask = sb.encode_prompts(tok, sb.make_prompts(sb.EVAL_NOUNS[:1]))
    logp = sb.class_log_probs(model, ids, mask, classes, K)
    mean, se = sb.conditional_kl_estimate(model, model, tok, ids, mask, classes, logp, logp, samples=8, max_new_tokens=3, seed=0)
    assert mean == 0.0 and se == 0.0  # π = π_ref: every sample's log-ratio is exactly 0
    # a policy that differs from π_ref only beyond the first token: perturb the weights, then the
    # class log-ratio is removed and the estimate is a non-negative KL, clearly above zero
    other = AutoModelForCausalLM.from_pretrained(lm["root"] / "sft")
    with torch.no_grad():
        for p in other.transformer.h.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    lp_other = sb.class_log_probs(other, ids, mask, classes, K)
    mean, se = sb.conditional_kl_estimate(other, model, tok, ids, mask, classes, lp_other, logp, samples=64, max_new_tokens=3, seed=0)
    assert mean > 5 * se > 0


# ----------------------------------------------------------------------------------------------
# the fast pipeline end to end
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    summary = sb.main(["--out", str(out), "--fast", "--no_progress"])
    return out, summary


def _reference_numbers_from_game_json(game: dict) -> tuple[float, float, float]:
    """Mean over the evaluation prompts of the reference's gap, exploitability and KL(q*‖r), from
    game.json alone (numpy; q* by damped fixed-point iteration of q = softmax(log r + Mq/β))."""
    beta = game["beta"]
    gaps, expl, kls = [], [], []
    for p in game["prompts"]:
        if p["split"] != "eval":
            continue
        M = np.array(game["matrices"][p["type"]])
        r = np.array(p["reference_class_probs"])
        win = M @ r
        gaps.append(2 * beta * math.log(np.sum(r * np.exp(win / beta))) - 1)  # KL(r‖r) = 0
        expl.append(win.max() - 0.5)
        q = r.copy()
        for _ in range(20000):
            target = r * np.exp(M @ q / beta)
            q = 0.95 * q + 0.05 * target / target.sum()
        kls.append(float(np.sum(q * np.log(q / r))))
    return float(np.mean(gaps)), float(np.mean(expl)), float(np.mean(kls))


def test_fast_pipeline_writes_everything(fast_run):
    out, summary = fast_run
    for name in ("game.json", "metrics.csv", "metrics_length_normalized.csv", "simulation.csv", "comparison.csv",
                 "summary.json", "gap_curves.png", "gap_curves.pdf", "simulation.png", "length_normalized.png",
                 "final_per_seed.csv", "verdicts.csv", "verdicts.json", "verdicts.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # the verdicts: every pair of the 5 algorithms for the gap and the exploitability, on the FAST run's 2
    # seeds, which cannot decide any (smallest p 2/2^2 = 0.5), as the summary states
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert len(verdicts) == 20 and set(verdicts.metric) == {"duality_gap", "exploitability"}
    assert not verdicts["decided"].any() and (verdicts["n_seeds"] == 2).all()
    final = pd.read_csv(out / "final_per_seed.csv")
    assert len(final) == 2 * 5 * 2 and set(final.metric) == {"duality_gap", "exploitability"}
    assert summary["verdicts"]["n_seeds"] == 2 and "cannot decide any pair" in summary["verdicts"]["what_n_decides"]
    assert len(summary["verdicts"]["duality_gap"]) == 10
    assert (out / "gap_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == ["algorithm", "seed", "update", "metric", "value"]
    assert set(metrics.algorithm) == {"egpo", "oipo1", "oipo2", "nashmd", "nashmdpg"}
    assert set(metrics.seed) == set(sb.FAST.seeds)
    assert {"duality_gap", "exploitability", "kl_to_equilibrium"} <= set(metrics.metric)
    # every run is evaluated at update 0, every eval_every updates and at the end (EGPO after full steps)
    for (alg, seed), group in metrics[metrics.metric == "duality_gap"].groupby(["algorithm", "seed"]):
        assert sorted(group["update"]) == [0, 2, 4], (alg, seed)
    assert np.all(np.isfinite(metrics["value"]))
    ln = pd.read_csv(out / "metrics_length_normalized.csv")
    assert set(ln.algorithm) == {"egpo", "oipo1", "oipo2", "nashmd"}  # Nash-MD-PG always sums
    assert summary["timings"]["total_s"] > 0
    # summary.json lists every run's folder (what lm_winrates reads instead of rebuilding the names)
    listed = json.loads((out / "summary.json").read_text())["runs"]
    assert listed == summary["runs"]
    expected = {(a, seed, "summed") for a in sb.FAST.algorithms for seed in sb.FAST.seeds}
    expected |= {(a, seed, "length_normalized") for a in sb.FAST.algorithms if a != "nashmdpg" for seed in sb.FAST.length_normalized_seeds}
    assert {(r["algorithm"], r["seed"], r["variant"]) for r in listed} == expected and len(listed) == len(expected)
    for r in listed:
        assert r["path"] == f"runs/{sb.run_name(r['algorithm'], r['seed'], r['variant'] == 'length_normalized')}"
        assert (out / r["path"] / "final").is_dir(), r
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(r["path"].split("/")[1] for r in listed)
    # the win-rate tables of the first seed's epochs, whose checkpoints are then removed (no keep_checkpoints)
    winrates = pd.read_csv(out / "win_rates" / "winrates.csv")
    assert set(sb.FAST.algorithms) <= set(winrates["algorithm"].dropna())
    assert ((winrates["win_rate"] >= 0) & (winrates["win_rate"] <= 1)).all()
    assert (out / "win_rates" / "tables" / "vs_reference.md").is_file()
    assert not any((out / "runs").glob("*/epochs"))


def test_update_zero_is_the_reference_computed_independently(fast_run):
    out, _ = fast_run
    game = json.loads((out / "game.json").read_text())
    assert game["beta"] == sb.FAST.beta
    classes = game["classes"]
    assert sorted(t for c in classes for t in c) == list(range(len(game["tokens"])))  # a partition
    gap, expl, kl = _reference_numbers_from_game_json(game)
    metrics = pd.read_csv(out / "metrics.csv")
    zero = metrics[metrics["update"] == 0]
    for name, expected in (("duality_gap", gap), ("exploitability", expl), ("kl_to_equilibrium", kl)):
        values = zero[zero.metric == name]["value"]
        assert len(values) == 10  # 5 algorithms × 2 seeds
        np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-9)
    assert gap > 0.1
    # training moved the policy: later updates differ from the reference
    last = metrics[(metrics["update"] == 4) & (metrics.metric == "duality_gap")]["value"]
    assert np.all(np.abs(last - gap) > 1e-6)
    sim = pd.read_csv(out / "simulation.csv")
    sim0 = sim[(sim["update"] == 0) & (sim.metric == "duality_gap")]["value"]
    np.testing.assert_allclose(sim0, gap, rtol=1e-6)  # the simulation starts from the same reference


def test_refuses_a_non_empty_out_and_bad_options(fast_run, tmp_path, capsys):
    out, _ = fast_run
    with pytest.raises(SystemExit) as info:
        sb.main(["--out", str(out), "--fast"])
    assert info.value.code == 2
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        sb.main(["--out", str(tmp_path / "x"), "--fast", "--num_classes", "7"])
    assert info.value.code == 2
    assert "num_classes must be an integer from 3 to 5" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _final_digests(out, summary, seed: int) -> dict[str, str]:
    """algorithm → SHA-256 of its summed run's final weights (training seed ``seed``)."""
    digests = {}
    for r in summary["runs"]:
        if r["variant"] == "summed" and r["seed"] == seed:
            weights = sorted((out / r["path"] / "final").glob("*.safetensors"))
            assert weights, r
            digests[r["algorithm"]] = hashlib.sha256(b"".join(p.read_bytes() for p in weights)).hexdigest()
    return digests


def test_identical_models_tie_in_the_win_rate_tables(fast_run):
    """Issue 15: two runs with byte-identical weights must tie. In the FAST run Online IPO 1 and Nash-MD
    end with the same weights at every epoch (both are IPO anchored at π_ref; their opponents, drawn
    from π_θ and from its mixture with π_ref, come out the same tokens while the two are this close,
    and the loss sees the opponent only through its samples); the old tables showed one of them beating the other 68.8 [62.5, 75.0]. Identical models
    draw identical responses (the evaluation seeds sampling by model content) and every pair of
    identical responses is ½, so the win rate is exactly 50 with a degenerate interval around it, and
    both have the same win rate against π_ref."""
    out, summary = fast_run
    digests = _final_digests(out, summary, sb.FAST.seeds[0])
    groups: dict[str, list[str]] = {}
    for alg, digest in digests.items():
        groups.setdefault(digest, []).append(alg)
    identical = [g for g in groups.values() if len(g) > 1]
    assert identical, f"no two algorithms of the FAST run ended with identical weights, the check needs a pair: {digests}"
    winrates = pd.read_csv(out / "win_rates" / "winrates.csv")
    last = winrates["epoch"].max()
    pairwise = winrates[(winrates["comparison"] == "pairwise") & (winrates["epoch"] == last) & (winrates["opponent_epoch"] == last)]
    vs_ref = winrates[(winrates["comparison"] == "vs_reference") & (winrates["epoch"] == last) & (winrates["split"] == "all")]
    checked = 0
    for group in identical:
        for a in group:
            for b in group:
                if a == b:
                    continue
                rows = pairwise[(pairwise["algorithm"] == a) & (pairwise["opponent_algorithm"] == b)]
                assert len(rows) >= 1, (a, b)
                for _, row in rows.iterrows():
                    assert abs(row["win_rate"] - 0.5) < 1e-9, row.to_dict()
                    assert row["ci_low"] <= 0.5 <= row["ci_high"], row.to_dict()
                    checked += 1
        ref_rates = vs_ref[vs_ref["algorithm"].isin(group)]["win_rate"]
        assert len(ref_rates) == len(group) and ref_rates.nunique() == 1, vs_ref[vs_ref["algorithm"].isin(group)]
    assert checked >= 2
    table = (out / "win_rates" / "tables" / "pairwise_ci.md").read_text()
    assert re.search(r"\b50\.0\S* \[50\.0, 50\.0\]", table)  # the entry may carry a few-prompts mark


# ----------------------------------------------------------------------------------------------
# the output folder: refused before any work, replaced only by a complete run
# ----------------------------------------------------------------------------------------------


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def fake_stages(monkeypatch):
    """``run_benchmark`` with its stages replaced: writes ``summary.json`` and ``metrics.csv`` holding
    ``label``, or raises when ``fail`` (a run killed or failing half-way, after writing a file)."""
    calls = {"label": "new", "fail": False}

    def stages(work, settings, progress, sources=(), command=None, jobs=1, against=None):
        (work / "metrics.csv").write_text(calls["label"])
        if calls["fail"]:
            raise RuntimeError("stage failed")
        (work / "summary.json").write_text(json.dumps({"label": calls["label"]}))
        return {"label": calls["label"]}

    monkeypatch.setattr(sb.pipeline, "_run_into", stages)
    return calls


def test_out_folder_is_checked_before_any_work(tmp_path, fake_stages):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        sb.run_benchmark(tmp_path / "file", sb.FAST)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty; pass --overwrite"):
        sb.run_benchmark(other, sb.FAST)
    with pytest.raises(ValueError, match="holds no summary.json of a previous benchmark run"):
        sb.run_benchmark(other, sb.FAST, overwrite=True)  # never cleared: it is not a benchmark run
    assert _files(other) == {"notes.txt": b"mine"}
    with pytest.raises(ValueError, match="algorithms"):
        sb.run_benchmark(tmp_path / "new", replace(sb.FAST, algorithms=("egpo", "eg")))  # the same algorithm twice
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "other"]  # nothing created


def test_out_folder_appears_complete_and_replaces_a_previous_run_only_when_complete(tmp_path, fake_stages):
    out = tmp_path / "bench"
    assert sb.run_benchmark(out, sb.FAST) == {"label": "new"}
    assert _files(out) == {"metrics.csv": b"new", "summary.json": b'{"label": "new"}'}
    before = _files(out)
    fake_stages.update(label="second", fail=True)
    with pytest.raises(RuntimeError, match="stage failed"):
        sb.run_benchmark(out, sb.FAST, overwrite=True)
    assert _files(out) == before  # the failed run left the previous one as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]  # and no partial folder
    # a run killed outright leaves its hidden work folder: the next run removes it
    (tmp_path / ".bench.partial-dead").mkdir()
    (tmp_path / ".bench.partial-dead" / "metrics.csv").write_text("partial")
    fake_stages.update(label="third", fail=False)
    sb.run_benchmark(out, sb.FAST, overwrite=True)
    assert _files(out) == {"metrics.csv": b"third", "summary.json": b'{"label": "third"}'}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]
    # killed between the two renames of a replacement: the previous run, moved aside, comes back
    os.replace(out, tmp_path / ".bench.previous-dead")
    with pytest.raises(ValueError, match="not empty; pass --overwrite"):
        sb.run_benchmark(out, sb.FAST)
    assert _files(out) == {"metrics.csv": b"third", "summary.json": b'{"label": "third"}'}
    # … and once the new run is in place, what is left aside is removed
    (tmp_path / ".bench.previous-dead").mkdir()
    (tmp_path / ".bench.previous-dead" / "metrics.csv").write_text("older")
    with pytest.raises(ValueError, match="not empty; pass --overwrite"):
        sb.run_benchmark(out, sb.FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]
    # a symbolic link to the run: the folder it points to is replaced, the link stays
    link = tmp_path / "link"
    link.symlink_to(out, target_is_directory=True)
    fake_stages.update(label="fourth")
    sb.run_benchmark(link, sb.FAST, overwrite=True)
    assert link.is_symlink() and _files(out) == {"metrics.csv": b"fourth", "summary.json": b'{"label": "fourth"}'}
    link.unlink()
    # an empty folder is used as if absent
    empty = tmp_path / "empty"
    empty.mkdir()
    sb.run_benchmark(empty, sb.FAST)
    assert _files(empty) == {"metrics.csv": b"fourth", "summary.json": b'{"label": "fourth"}'}


def test_cli_refuses_a_file_and_help_runs(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as info:
        sb.main(["--out", str(tmp_path / "file"), "--fast"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        sb.main(["--help"])
    assert info.value.code == 0
    assert "--overwrite" in capsys.readouterr().out


def test_module_entry_point_help():
    done = subprocess.run([sys.executable, "-m", "lm_runs.synthetic_benchmark", "--help"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m lm_runs.synthetic_benchmark" in done.stdout and "--fast" in done.stdout


# ----------------------------------------------------------------------------------------------
# benchmarks/bench_lm.py: its timing hooks still match the trainer
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # a benchmark script (its --help and one timed update): make test-slow
def test_bench_lm_help_and_one_timed_update(tmp_path):
    """``--help`` runs; one EGPO update on the tiny model gives a positive time per update whose four
    phases add up to it (``other`` is the remainder, so each phase must be ≥ 0 for the hooks on the
    trainer's stages to be measuring what they name)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_lm.py"
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--memory-floor" in done.stdout
    result = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(script), "--algorithms", "egpo", "--warmup", "0", "--updates", "1",
                           "--num-prompts", "8", "--batch", "2", "--new-tokens", "4", "--json", str(result)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    egpo = json.loads(result.read_text())["egpo"]
    assert egpo["optimizer_steps_per_update"] == 2 and egpo["updates_measured"] == 1
    phases = egpo["breakdown"]
    assert egpo["seconds_per_update"] > 0
    assert all(phases[p] >= 0 for p in ("generation", "judging", "forward_backward", "other")), phases
    assert sum(phases.values()) == pytest.approx(egpo["seconds_per_update"], rel=1e-6)


@pytest.mark.parametrize("flags, message", [
    (["--lr_scheduler", "linnear"], "lr_scheduler must be one of linear, cosine"),
    (["--updates", "0"], "updates must be at least 1, got 0"),
    (["--beta", "-0.1"], "beta must be > 0, got -0.1"),
    (["--seeds", "1", "1"], "seeds must be distinct non-negative integers"),
    (["--length_normalized_seeds", "2", "2"], "length_normalized_seeds must be distinct"),
    (["--length_bonus", "0.7"], "length_bonus must be in [0, 0.5], got 0.7"),
    (["--adam_beta1", "1"], "adam_beta1 must be in [0, 1), got 1.0"),
    (["--learning_rate", "0"], "learning_rate must be in (0, 1), got 0.0"),
    (["--learn", "0.1"], "unrecognized arguments: --learn 0.1"),  # no abbreviation of --learning_rate
])
def test_cli_refuses_each_bad_setting_in_one_line_before_anything(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        sb.main(["--out", str(tmp_path / "out"), "--fast", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# figures: one colour and one name per algorithm, from egpo_core.algorithms
# ----------------------------------------------------------------------------------------------


def test_every_lm_figure_draws_an_algorithm_in_its_declared_colour_and_name():
    """The benchmark's curves, the notebooks' seed bands and the win-rate figure give each algorithm
    the colour and display name ``egpo_core.algorithms`` declares (the benchmark used to draw EGPO red
    and the win-rate figure purple)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from egpo_core.algorithms import algorithm_color, display_name
    from lm_runs import plots
    from lm_runs.synthetic_benchmark import figures

    algs = ["egpo", "oipo1", "oipo2", "nashmd", "nashmdpg"]
    metrics = pd.DataFrame([dict(algorithm=a, seed=seed, update=u, metric="duality_gap", value=0.3 + 0.01 * k + 0.001 * seed + 0.002 * u)
                            for k, a in enumerate(algs) for seed in (0, 1) for u in (0, 2, 4)])
    winrates = pd.DataFrame([dict(algorithm=a, epoch=e, win_rate_percent=50.0 + k + e, source="ours")
                             for k, a in enumerate(algs) for e in (1, 2)])
    fig, ax = plt.subplots()
    figures._draw(ax, metrics, "duality_gap", algs)
    drawn = [fig, plots.plot_seed_bands(plots.seed_bands(metrics, ("duality_gap",))), plots.plot_winrates_by_epoch(winrates)]
    expected = {display_name(a): to_hex(algorithm_color(a)) for a in algs}
    assert len(set(expected.values())) == len(algs)  # five distinct colours
    for figure in drawn:
        lines = {line.get_label(): to_hex(line.get_color()) for line in figure.axes[0].get_lines() if not line.get_label().startswith("_")}
        assert lines == expected
        plt.close(figure)
    assert plots.ordered(["egpo", "x", "nashmdpg", "oipo1", "nmd"]) == ["oipo1", "nmd", "nashmdpg", "egpo", "x"]
