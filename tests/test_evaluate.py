"""lm_runs.evaluate: win rates against a manual computation, bootstrap intervals, both-order judging,
missing judgements, kill-and-resume, the settings fingerprint, the tables. The issue-15 guarantees
(a model ties with its copy, judges known by content, refusals, Ctrl-C, --help) are in
tests/test_evaluate_guarantees.py."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lm_runs import evaluate as ev
from lm_runs.evaluate.folder import file_stem
from lm_runs.evaluate import EvaluationError, EvaluationSettings, discover_runs, evaluate, main, win_rate_ci
from lm_runs.judges import CallableJudge, CheckedJudge, JudgeError
from lm_runs.models import load_causal_lm
from lm_runs.evaluate.tables import render_pairwise, render_vs_reference

PROMPTS = [
    "tell me about the cat",
    "why is the sun big",
    "write a poem",
    "how fast is the dog",
    [{"role": "system", "content": "be short"}, {"role": "user", "content": "what is a star"}],
    "the moon",
]
K = 2
SETTINGS = EvaluationSettings(
    num_prompts=6, samples_per_prompt=K, max_new_tokens=6, prompts_per_batch=2, bootstrap=200, device="cpu",
    judge_batch_size=4,
)


def base(a: str, b: str) -> float:
    """An order-symmetric preference for the shorter text, in [0.2, 0.8]: base(a, b) = 1 − base(b, a)."""
    return 0.5 + 0.3 * math.tanh((len(b) - len(a)) / 10.0)


def shorter(prompts, completions):
    return [base(a, b) for a, b in completions]


def biased(prompts, completions):
    """P(first ≻ second) = clip(base + 0.1): the first response gets 0.1 more."""
    return [min(1.0, max(0.0, base(a, b) + 0.1)) for a, b in completions]


# --------------------------------------------------------------------------------------------------
# fixtures: a reference, two runs (2 and 3 epochs), one baseline evaluation
# --------------------------------------------------------------------------------------------------


def _perturbed(ref: Path, out: Path, seed: int, scale: float = 0.5) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ref)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    model.save_pretrained(out)
    for f in ref.iterdir():  # the tokenizer files, chat_template.jinja included
        if f.name not in ("model.safetensors", "config.json", "generation_config.json"):
            shutil.copy(f, out)
    return out


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    import torch

    from lm_runs.config import NLHFConfig
    from lm_runs.tiny import build_tiny_lm

    root = tmp_path_factory.mktemp("zoo")
    ref = build_tiny_lm(root / "ref", seed=0)
    run_a, run_b = root / "run_a", root / "run_b"
    for k in (1, 2):
        _perturbed(ref, run_a / "epochs" / f"epoch-{k}", seed=10 + k)
    for k in (1, 2, 3):
        _perturbed(ref, run_b / "epochs" / f"epoch-{k}", seed=20 + k)
    # run_a names its algorithm through the trainer's pickled NLHFConfig, run_b through a YAML config
    args = NLHFConfig(output_dir=str(run_a), alg="egpo", use_cpu=True, report_to="none",
                      model_name_or_path=str(ref), judge="lm_runs.judges.toy:prefer_shorter", prompts="p.jsonl")
    torch.save(args, run_a / "training_args.bin")
    (run_b / "config.yaml").write_text("alg: oipo1\nbeta: 0.1\n")
    return {"root": root, "ref": ref, "run_a": run_a, "run_b": run_b, "pm": _classifier(ref, root / "pm")}


def _classifier(ref: Path, out: Path, num_labels: int = 2) -> Path:
    """A sequence classifier on the tiny LM's body, fresh score head: 2 labels, a preference-model folder;
    1 label, a reward-model folder."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(ref, num_labels=num_labels)
    model.save_pretrained(out)
    for f in ref.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out)
    return out


@pytest.fixture(scope="module")
def baseline(zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    models = discover_runs([zoo["run_a"], zoo["run_b"]])
    result = evaluate(models, zoo["ref"], PROMPTS, shorter, SETTINGS, out)
    return {"result": result, "out": out, "models": models}


def _with_generations(baseline, tmp_path: Path) -> Path:
    """A fresh output dir holding the baseline's generations (same models and sampling: reused, not redone)."""
    out = tmp_path / "out"
    shutil.copytree(baseline["out"] / "generations", out / "generations")
    return out


def _generations(out: Path, name: str) -> dict[tuple[int, int], str]:
    rows = [json.loads(line) for line in (out / "generations" / f"{file_stem(name)}.jsonl").read_text().splitlines()]
    return {(r["prompt"], r["sample"]): r["text"] for r in rows}


def _entry(df: pd.DataFrame, model: str, opponent: str, split: str) -> pd.Series:
    rows = df[(df.model == model) & (df.opponent == opponent) & (df.split == split)]
    assert len(rows) == 1, (model, opponent, split)
    return rows.iloc[0]


# --------------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------------


def test_discover_runs_names_epochs_and_algorithms(zoo, tmp_path):
    models = discover_runs([zoo["run_a"], f"B={zoo['run_b']}"])
    assert [m.name for m in models] == ["run_a/epoch-1", "run_a/epoch-2", "B/epoch-1", "B/epoch-2", "B/epoch-3"]
    assert [m.algorithm for m in models] == ["egpo"] * 2 + ["oipo1"] * 3
    assert [m.epoch for m in models] == [1, 2, 1, 2, 3]
    # numeric order, not string order; a run without an algorithm is labelled by its name
    run = tmp_path / "run_c"
    for k in (10, 2):
        (run / "epochs" / f"epoch-{k}").mkdir(parents=True)
        (run / "epochs" / f"epoch-{k}" / "config.json").write_text("{}")
    models = discover_runs([run])
    assert [m.name for m in models] == ["run_c/epoch-2", "run_c/epoch-10"]
    assert {m.algorithm for m in models} == {"run_c"}
    # two runs of one algorithm are told apart
    same = discover_runs([f"x={zoo['run_a']}", f"y={zoo['run_a']}"])
    assert {m.algorithm for m in same} == {"egpo (x)", "egpo (y)"}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--runs", "/no/such/run"], "no such directory"),
        (["--runs", "EMPTY"], "no epochs/epoch-k folders"),
        (["--runs", "RUN_A", "--samples_per_prompt", "0"], "--samples_per_prompt must be an integer >= 1"),
        (["--runs", "RUN_A", "--judge", "not a judge"], "judge spec 'not a judge'"),
        (["--runs", "RUN_A", "--judge", "REF"], "causal language model"),  # a causal LM is no judge
        (["--models", "x=PM"], "a policy must be a causal language model"),  # a classifier is no policy
        (["--runs", "RUN_A", "--output_dir", "FILE"], "is a file"),
        (["--runs", "RUN_A", "--judge_batch_size", "0"], "--judge_batch_size"),
        (["--runs", "RUN_A", "--both_orders", "maybe"], "--both_orders"),
        (["--runs", "RUN_A", "--top_p", "2"], "--top_p must be in (0, 1]"),
        (["--runs", "RUN_A", "--judge_device", "gpu0"], "--judge_device 'gpu0' is not a device"),
        (["--runs", "RUN_A", "--judge_device", "cpu"], "--judge_device applies to a preference-model judge"),
        (["--runs", "RUN_A", "--selection_fraction", "1.0"], "--selection_fraction"),
        (["--models", "x=/no/such/model"], "no such model folder"),
        (["--runs", "RUN_A", "--prompts", "/no/prompts.jsonl"], "--prompts"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(zoo, tmp_path, capsys, flags, message):
    (tmp_path / "empty").mkdir()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    argv = ["--reference", str(zoo["ref"]), "--prompts", str(prompts), "--judge", "lm_runs.judges.toy:prefer_shorter",
            "--output_dir", str(tmp_path / "out"), "--device", "cpu", "--progress", "false"]
    (tmp_path / "file").write_text("not a folder")
    named = {"RUN_A": zoo["run_a"], "EMPTY": tmp_path / "empty", "REF": zoo["ref"], "x=PM": f"x={zoo['pm']}",
             "FILE": tmp_path / "file"}
    flags = [str(named.get(f, f)) for f in flags]
    if "maybe" in flags:  # argparse's own refusal: usage and one error line, exit 2
        with pytest.raises(SystemExit) as exit_info:
            main(argv + flags)
        assert exit_info.value.code == 2
    else:
        assert main(argv + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and (err[-1].startswith("error: ") or "maybe" in flags)
    assert not any("Traceback" in line for line in err)
    assert not (tmp_path / "out" / "generations").exists()  # refused before any generation


# --------------------------------------------------------------------------------------------------
# win rates, intervals, splits, selection
# --------------------------------------------------------------------------------------------------


def test_win_rates_equal_a_manual_computation_from_the_saved_generations(zoo, baseline):
    result, out, models = baseline["result"], baseline["out"], baseline["models"]
    df = result.winrates
    ref = _generations(out, "reference")
    summary = json.loads((out / "summary.json").read_text())
    selection, report = summary["splits"]["selection"], summary["splits"]["report"]
    assert set(selection).isdisjoint(report) and sorted(selection + report) == list(range(len(PROMPTS)))
    assert len(selection) == 3  # selection_fraction ½ of 6
    manual_selection = {}
    for m in models:
        gen = _generations(out, m.name)
        assert sorted(gen) == [(i, j) for i in range(len(PROMPTS)) for j in range(K)]
        for split, prompts in (("all", range(len(PROMPTS))), ("selection", selection), ("report", report)):
            values = [base(gen[i, j], ref[i, j]) for i in prompts for j in range(K)]
            row = _entry(df, m.name, "reference", split)
            assert row.win_rate == pytest.approx(np.mean(values), abs=1e-12)
            assert row.ci_low <= row.win_rate <= row.ci_high and row.ci_low < row.ci_high
            assert row.n_pairs == len(values) and row.n_missing == 0
            assert row.algorithm == m.algorithm and row.epoch == m.epoch
        manual_selection[m.name] = np.mean([base(gen[i, j], ref[i, j]) for i in selection for j in range(K)])
    # the best two epochs per algorithm, chosen on the selection split
    for algorithm in ("egpo", "oipo1"):
        names = [m.name for m in models if m.algorithm == algorithm]
        best = sorted(sorted(names, key=lambda n: -manual_selection[n])[:2], key=names.index)
        assert result.selected[algorithm] == best
    # pairwise: report split only, both directions, row over column = mean of base(row, column) over the report pairs
    chosen = [n for names in result.selected.values() for n in names]
    pairwise = df[df.comparison == "pairwise"]
    assert set(pairwise.split) == {"report"}
    assert len(pairwise) == len(chosen) * (len(chosen) - 1)
    a, b = chosen[0], chosen[-1]
    ga, gb = _generations(out, a), _generations(out, b)
    manual = np.mean([base(ga[i, j], gb[i, j]) for i in report for j in range(K)])
    assert _entry(df, a, b, "report").win_rate == pytest.approx(manual, abs=1e-12)
    assert _entry(df, b, a, "report").win_rate == pytest.approx(1 - manual, abs=1e-12)
    # the files beside the tables agree with the returned data
    on_disk = pd.read_parquet(out / "winrates.parquet")
    assert np.allclose(on_disk.win_rate, df.win_rate)
    assert pd.read_csv(out / "winrates.csv").shape == df.shape
    md = (out / "tables" / "vs_reference.md").read_text()
    assert md.splitlines()[0] == "| Algorithm | 1 | 2 | 3 |" and "| egpo |" in md and "| oipo1 |" in md
    cell = _entry(df, "run_b/epoch-3", "reference", "all").win_rate
    assert md.splitlines()[3].split(" | ")[3].strip(" |*") == f"{100 * cell:.1f}†"  # 6 prompts: flagged, never bold
    assert "**" not in md and "† from 6 prompts, fewer than 30" in md
    assert df.few_prompts.all() and result.summary["intervals"]["flagged_entries"] == len(df)
    assert result.tables["pairwise.tex"] == (out / "tables" / "pairwise.tex").read_text()


def test_bootstrap_interval_contains_the_estimate_shrinks_with_prompts_and_resamples_prompts():
    rng = np.random.default_rng(0)
    widths = []
    for n in (8, 64, 512):
        P = np.clip(rng.normal(0.6, 0.2, size=(n, 1)) + rng.normal(0, 0.05, size=(n, 4)), 0, 1)
        stats = win_rate_ci(P, resamples=500, seed=1)
        assert stats["ci_low"] < stats["win_rate"] < stats["ci_high"]
        widths.append(stats["ci_high"] - stats["ci_low"])
    assert widths[0] > widths[1] > widths[2]
    # with fixed draws the interval is the percentile of Σ over drawn prompts of sums / counts, missing excluded
    P = np.array([[1.0, 0.0], [0.5, np.nan], [0.2, 0.4]])
    draws = np.array([[0, 0, 1], [2, 2, 2], [1, 2, 0], [0, 1, 2]])
    stats = win_rate_ci(P, indices=draws)
    sums, counts = np.array([1.0, 0.5, 0.6]), np.array([2, 1, 2])
    ratios = sums[draws].sum(1) / counts[draws].sum(1)
    assert stats["win_rate"] == pytest.approx(2.1 / 5)
    assert (stats["ci_low"], stats["ci_high"]) == pytest.approx(tuple(np.quantile(ratios, [0.025, 0.975])))
    assert stats["n_pairs"] == 5 and stats["n_missing"] == 1


def test_split_is_seeded_and_disjoint():
    sel, rep = ev.split_indices(100, 0.5, seed=3)
    assert len(sel) == 50 and set(sel).isdisjoint(rep) and sorted(sel + rep) == list(range(100))
    assert ev.split_indices(100, 0.5, seed=3) == (sel, rep)
    assert ev.split_indices(100, 0.5, seed=4) != (sel, rep)
    with pytest.raises(EvaluationError):
        ev.split_indices(1, 0.5, seed=0)


# --------------------------------------------------------------------------------------------------
# both orders, missing judgements
# --------------------------------------------------------------------------------------------------


def _without_bias_note(tables: dict[str, str]) -> dict[str, str]:
    return {name: "\n".join(line for line in text.splitlines() if "position bias" not in line) for name, text in tables.items()}


def test_both_orders_measures_the_position_bias_and_removes_it(zoo, baseline, tmp_path):
    calls = []

    def counted(judge):
        def fn(prompts, completions):
            calls.append(len(completions))
            return judge(prompts, completions)
        fn.__qualname__ = judge.__qualname__
        return fn

    # the baseline judged both orders (the default) with the order-symmetric judge
    biased_run = evaluate(baseline["models"], zoo["ref"], PROMPTS, counted(biased), SETTINGS, _with_generations(baseline, tmp_path / "b"))
    one_order = EvaluationSettings(**{**SETTINGS.__dict__, "both_orders": False})
    single_run = evaluate(baseline["models"], zoo["ref"], PROMPTS, shorter, one_order, _with_generations(baseline, tmp_path / "s"))
    biased_single = evaluate(baseline["models"], zoo["ref"], PROMPTS, biased, one_order, _with_generations(baseline, tmp_path / "bs"))
    b, f, one = biased_run.winrates, baseline["result"].winrates, single_run.winrates
    vs = b[b.comparison == "vs_reference"]
    assert np.allclose(vs.position_bias, 0.1, atol=1e-9)
    assert (vs.n_bias_pairs == vs.n_pairs).all()
    assert biased_run.summary["position_bias"] == pytest.approx(0.1, abs=1e-9)
    assert np.allclose(f[f.comparison == "vs_reference"].position_bias, 0.0, atol=1e-12)
    assert one.position_bias.isna().all() and (one.n_bias_pairs == 0).all()
    # the averaged preference of the biased judge equals the unbiased judge's (both orders and one order)
    key = ["model", "opponent", "split"]
    merged = b.merge(f, on=key, suffixes=("_b", "_f")).merge(one, on=key)
    assert len(merged) == len(one) and set(b.model) == set(one.model)
    assert np.abs(merged.win_rate_b - merged.win_rate_f).max() < 1e-9
    assert np.abs(merged.win_rate_b - merged.win_rate).max() < 1e-9
    # asked in one order, the biased judge's bias is in every entry: +0.1 on every comparison against π_ref
    shifted = biased_single.winrates.merge(one, on=key, suffixes=("_b", ""))
    shifted = shifted[shifted.comparison == "vs_reference"]
    assert np.allclose(shifted.win_rate_b - shifted.win_rate, 0.1, atol=1e-9)
    # the tables differ only in the bias they state under each table
    assert _without_bias_note(biased_run.tables) == _without_bias_note(baseline["result"].tables)
    assert biased_run.tables != baseline["result"].tables
    for name in ("vs_reference.md", "vs_reference_ci.md"):
        assert "Judge position bias: +0.100 (mean of ½·(P(a ≻ b) + P(b ≻ a)) − ½ over the 60 pairs" in biased_run.tables[name]
        assert "Judge position bias: +0.000" in baseline["result"].tables[name]
        assert "Judge position bias: not measured (one order per pair)" in single_run.tables[name]
    assert "Judge position bias: +0.100" in biased_run.tables["pairwise.md"]
    assert r"Judge position bias: +0.100 (mean of $\frac{1}{2}" in biased_run.tables["vs_reference.tex"]
    assert biased_run.summary["tables"]["notes"]["vs_reference"][-1].startswith("Judge position bias: +0.100")
    # each pair was asked in both orders, in one call: 2 × (5 models + pairwise) × pairs
    n_pairs = len(PROMPTS) * K * len(baseline["models"]) + 3 * K * 6  # 6 pairwise comparisons on 3 report prompts
    assert sum(calls) == 2 * n_pairs and max(calls) == 2 * SETTINGS.judge_batch_size


def test_missing_judgements_are_counted_excluded_and_reported(zoo, baseline, tmp_path):
    poem, moon = PROMPTS[2], PROMPTS[5]

    def flaky(prompts, completions):
        if moon in prompts:
            raise JudgeError("the judge cannot answer about the moon")
        return [float("nan") if p == poem and j % 2 == 0 else None if p == poem else base(a, b)
                for j, (p, (a, b)) in enumerate(zip(prompts, completions))]

    # wrapped as load_judge wraps a module:function judge: the per-item NaN/None still only costs that item
    judge = CheckedJudge(CallableJudge(flaky, name="flaky"))
    settings = EvaluationSettings(**{**SETTINGS.__dict__, "max_missing_fraction": 0.4})
    result = evaluate(baseline["models"][:2], zoo["ref"], PROMPTS, judge, settings, _with_generations(baseline, tmp_path))
    out = result.output_dir
    ref = _generations(out, "reference")
    kept = [0, 1, 3, 4]
    for m in baseline["models"][:2]:
        gen = _generations(out, m.name)
        row = _entry(result.winrates, m.name, "reference", "all")
        assert row.n_missing == 2 * K and row.n_pairs == 4 * K
        assert row.win_rate == pytest.approx(np.mean([base(gen[i, j], ref[i, j]) for i in kept for j in range(K)]), abs=1e-12)
        lines = [json.loads(x) for x in (out / "judgements" / f"{file_stem(m.name)}__vs__reference.jsonl").read_text().splitlines()]
        missing = [r for r in lines if r["p_ab"] is None]
        assert sorted({r["prompt"] for r in missing}) == [2, 5]
        assert all(r["error"] for r in missing)
    comparison = result.summary["comparisons"][0]
    assert comparison["n_missing"]["all"] == 2 * K
    reasons = " ".join(comparison["missing_reasons"])
    assert "moon" in reasons and ("NaN" in reasons or "None" in reasons)
    # too many missing: refused, not averaged over what is left
    with pytest.raises(EvaluationError, match="max_missing_fraction"):
        evaluate(baseline["models"][:1], zoo["ref"], PROMPTS, judge,
                 EvaluationSettings(**{**SETTINGS.__dict__, "max_missing_fraction": 0.2}), _with_generations(baseline, tmp_path / "x"))
    # a judge that never works stops the evaluation instead of filling the table with missing entries
    state = {"up": False, "asked": 0}

    def server(prompts, completions):
        if not state["up"]:
            raise JudgeError("connection refused")
        state["asked"] += len(completions)
        return shorter(prompts, completions)

    judge = CallableJudge(server, name="judge-server")  # one name: the settings stay the same once it is fixed
    out = _with_generations(baseline, tmp_path / "y")
    with pytest.raises(EvaluationError, match="5 pairs in a row"):
        evaluate(baseline["models"][:1], zoo["ref"], PROMPTS, judge,
                 EvaluationSettings(**{**SETTINGS.__dict__, "max_consecutive_judge_errors": 5}), out)
    with pytest.raises(EvaluationError, match="12 of 12 pairs"):
        evaluate(baseline["models"][:1], zoo["ref"], PROMPTS, judge, SETTINGS, out)
    # neither kept the failures: once the judge works, a rerun asks every pair
    state["up"] = True
    result = evaluate(baseline["models"][:1], zoo["ref"], PROMPTS, judge, SETTINGS, out)
    assert state["asked"] == 2 * len(PROMPTS) * K and result.summary["missing"] == 0  # each pair in both orders


def test_empty_responses_are_kept_and_counted(zoo, baseline, tmp_path):
    out = _with_generations(baseline, tmp_path)
    path = out / "generations" / "reference.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["text"] = ""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = []

    def judge(prompts, completions):
        seen.extend(b for _, b in completions)
        return shorter(prompts, completions)

    result = evaluate(baseline["models"][:1], zoo["ref"], PROMPTS, judge, SETTINGS, out)
    assert [m["empty"] for m in result.summary["models"] if m["name"] == "reference"] == [1]
    # both orders: the empty reference response is shown second once (and first once, in the swapped pair)
    assert "" in seen and seen.count("") == 1 and len(seen) == 2 * len(PROMPTS) * K


# --------------------------------------------------------------------------------------------------
# kill and resume; the fingerprint
# --------------------------------------------------------------------------------------------------


class Killed(BaseException):
    """A kill: not an Exception, so no judge wrapper takes it for a failed judgement."""


def test_killed_evaluation_resumes_to_the_same_tables_without_redoing_work(zoo, baseline, tmp_path, monkeypatch):
    out = tmp_path / "out"
    models = baseline["models"]
    real_generate = ev.responses.generate_completions
    generated = {"calls": 0, "rows": 0}
    limit = {"generate": 7, "judge": None}

    def generate_hook(model, prompt_ids, *args, **kwargs):
        if limit["generate"] is not None and generated["calls"] >= limit["generate"]:
            raise Killed("generation killed")
        generated["calls"] += 1
        generated["rows"] += prompt_ids.shape[0]
        return real_generate(model, prompt_ids, *args, **kwargs)

    judged = {"calls": 0, "pairs": 0}

    def judge(prompts, completions):
        if limit["judge"] is not None and judged["calls"] >= limit["judge"]:
            raise Killed("judge killed")
        judged["calls"] += 1
        judged["pairs"] += len(completions)
        return shorter(prompts, completions)

    monkeypatch.setattr(ev.responses, "generate_completions", generate_hook)
    with pytest.raises(Killed):  # dies in the third model's generation (3 batches per model)
        evaluate(models, zoo["ref"], PROMPTS, judge, SETTINGS, out)
    assert generated["calls"] == 7 and judged["calls"] == 0
    limit.update(generate=None, judge=9)
    with pytest.raises(Killed):  # generation finishes, judging dies after 9 calls
        evaluate(models, zoo["ref"], PROMPTS, judge, SETTINGS, out)
    assert generated["calls"] == 6 * 3  # no batch generated twice: 6 models × 3 batches in all
    assert generated["rows"] == 6 * len(PROMPTS) * K
    limit["judge"] = None
    before = dict(judged)
    result = evaluate(models, zoo["ref"], PROMPTS, judge, SETTINGS, out)
    assert generated["calls"] == 18  # nothing regenerated on the last run
    total = 2 * (len(PROMPTS) * K * len(models) + 3 * K * 6)  # both orders
    assert judged["pairs"] == total  # every pair asked exactly once (in both orders) over the three runs
    assert judged["pairs"] - before["pairs"] == total - 9 * 2 * SETTINGS.judge_batch_size
    assert result.tables == baseline["result"].tables
    pd.testing.assert_frame_equal(result.winrates, baseline["result"].winrates)
    # a fourth run does nothing new
    evaluate(models, zoo["ref"], PROMPTS, judge, SETTINGS, out)
    assert generated["calls"] == 18 and judged["pairs"] == total


def test_a_changed_setting_or_model_is_refused(zoo, baseline, tmp_path, capsys):
    out = _with_generations(baseline, tmp_path)
    models = baseline["models"][:1]
    evaluate(models, zoo["ref"], PROMPTS, shorter, SETTINGS, out)
    changed = EvaluationSettings(**{**SETTINGS.__dict__, "top_k": 50})
    with pytest.raises(EvaluationError, match=r"top_k: 100 → 50.*--overwrite"):
        evaluate(models, zoo["ref"], PROMPTS, shorter, changed, out)
    with pytest.raises(EvaluationError, match="prompts"):
        evaluate(models, zoo["ref"], PROMPTS[:5] + ["another prompt"], shorter, SETTINGS, out)
    with pytest.raises(EvaluationError, match="judge"):
        evaluate(models, zoo["ref"], PROMPTS, biased, SETTINGS, out)
    # the same name for other weights
    other = [ev.ModelSpec(models[0].name, baseline["models"][1].source, algorithm="egpo", epoch=1)]
    with pytest.raises(EvaluationError, match="another model"):
        evaluate(other, zoo["ref"], PROMPTS, shorter, SETTINGS, out)
    # analysis settings may change; --overwrite starts afresh
    evaluate(models, zoo["ref"], PROMPTS, shorter, EvaluationSettings(**{**SETTINGS.__dict__, "bootstrap": 50}), out)
    result = evaluate(models, zoo["ref"], PROMPTS, shorter, changed, out, overwrite=True)
    assert json.loads((out / "settings.json").read_text())["fingerprint"]["sampling"]["top_k"] == 50
    assert len(result.generations["reference"]) == len(PROMPTS) * K
    # the command line says the same in one line, exit 2
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    argv = ["--reference", str(zoo["ref"]), "--runs", str(zoo["run_a"]), "--prompts", str(prompts),
            "--judge", "lm_runs.judges.toy:prefer_shorter", "--output_dir", str(out), "--samples_per_prompt", "2",
            "--max_new_tokens", "6", "--device", "cpu", "--progress", "false"]
    assert main(argv) == 2
    assert "use a new --output_dir, or --overwrite" in capsys.readouterr().err


def test_a_judge_server_restarted_with_another_judge_is_refused_and_the_same_judge_elsewhere_accepted(
        zoo, baseline, tmp_path, capsys):
    """A reward model served at τ = 1 judges an evaluation: settings.json pins the served judge by content
    (the in-process judge's identity, no URL). The server restarted at the same URL with τ = 2 is refused
    in one line naming both τ (exit 2 from the command line) unless --overwrite; the same model at τ = 1
    behind another port, or in process, resumes the folder to the same tables."""
    import socket

    from lm_runs.judge_server import create_app, serve_in_thread
    from lm_runs.judges.http import HTTPJudge
    from lm_runs.judges.reward_model import RewardModelJudge

    rm = _classifier(zoo["ref"], tmp_path / "rm", num_labels=1)
    out, models = _with_generations(baseline, tmp_path), baseline["models"][:1]

    def in_process(temperature: float) -> CheckedJudge:
        return CheckedJudge(RewardModelJudge(rm, device="cpu", batch_size=1, temperature=temperature))

    def served(temperature: float, port: int = 0):
        return serve_in_thread(create_app(in_process(temperature), max_wait_ms=0), port=port)

    with served(1.0) as server, HTTPJudge(server.url) as client:
        url, port = server.url, server.port
        first = evaluate(models, zoo["ref"], PROMPTS, CheckedJudge(client), SETTINGS, out)
    pinned = json.loads((out / "settings.json").read_text())["fingerprint"]["judge"]
    assert pinned == in_process(1.0).identity() and pinned["kind"] == "reward_model" and pinned["temperature"] == 1.0
    assert url not in json.dumps(pinned)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    argv = ["--reference", str(zoo["ref"]), "--runs", str(zoo["run_a"]), "--prompts", str(prompts), "--judge", url,
            "--output_dir", str(out), "--samples_per_prompt", str(K), "--max_new_tokens", "6", "--prompts_per_batch", "2",
            "--device", "cpu", "--progress", "false"]
    with served(2.0, port) as server, HTTPJudge(server.url) as client:  # restarted at the same URL, another τ
        assert server.url == url
        with pytest.raises(EvaluationError, match=r"judge\.temperature: 1\.0 → 2\.0.*--overwrite") as refused:
            evaluate(models, zoo["ref"], PROMPTS, CheckedJudge(client), SETTINGS, out)
        assert "\n" not in str(refused.value)
        capsys.readouterr()
        assert main(argv) == 2
        refusal = capsys.readouterr().err.splitlines()[-1]  # after the prompt dataset's progress bar
        assert "settings (judge.temperature: 1.0 → 2.0); use a new --output_dir, or --overwrite" in refusal
    with socket.socket() as other:  # a port other than the first server's
        other.bind(("127.0.0.1", 0))
        other_port = other.getsockname()[1]
    assert other_port != port
    with served(1.0, other_port) as server, HTTPJudge(server.url) as client:
        again = evaluate(models, zoo["ref"], PROMPTS, CheckedJudge(client), SETTINGS, out)
    assert again.tables == first.tables
    assert evaluate(models, zoo["ref"], PROMPTS, in_process(1.0), SETTINGS, out).tables == first.tables
    with served(2.0, port) as server, HTTPJudge(server.url) as client:  # --overwrite starts afresh with τ = 2
        evaluate(models, zoo["ref"], PROMPTS, CheckedJudge(client), SETTINGS, out, overwrite=True)
    assert json.loads((out / "settings.json").read_text())["fingerprint"]["judge"] == in_process(2.0).identity()


def test_lora_adapter_epochs_load_on_the_reference(zoo, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(zoo["ref"]),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False))
    folder = tmp_path / "run" / "epochs" / "epoch-1"
    model.save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "some-org/not-on-this-machine"  # a hub name: π_ref is used instead
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (spec,) = discover_runs([tmp_path / "run"])
    loaded, tokenizer = load_causal_lm(spec.source, reference=zoo["ref"])
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-5)
        plain = AutoModelForCausalLM.from_pretrained(zoo["ref"])(input_ids=ids).logits
    assert not torch.allclose(plain, expected, atol=1e-3)
    assert tokenizer.eos_token_id is not None


def test_cli_end_to_end(zoo, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:4]))
    out = tmp_path / "out"
    argv = ["--reference", str(zoo["ref"]), "--models", f"base={zoo['ref']}", f"tuned={zoo['run_a'] / 'epochs' / 'epoch-2'}",
            "--prompts", str(prompts), "--judge", "lm_runs.judges.toy:prefer_shorter", "--output_dir", str(out),
            "--samples_per_prompt", "1", "--max_new_tokens", "4", "--device", "cpu", "--bootstrap", "20",
            "--progress", "false", "--both_orders"]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "| Algorithm | – |" in shown and "| base |" in shown
    df = pd.read_csv(out / "winrates.csv")
    # "base" is π_ref's own folder: the same responses, every pair a tie by symmetry, no judge asked
    row = df[(df.model == "base") & (df.split == "all")].iloc[0]
    assert row.n_pairs == 4 and row.win_rate == 0.5 and row.n_bias_pairs == 0 and np.isnan(row.position_bias)
    row = df[(df.model == "tuned") & (df.split == "all")].iloc[0]
    assert row.n_bias_pairs == 4 and row.position_bias == pytest.approx(0.0, abs=1e-12)  # the toy judge is order-symmetric
    assert set(df.comparison) == {"vs_reference", "pairwise"}
    # the position bias is printed at the end, and stated under the tables
    assert shown.splitlines()[-2].startswith("judge position bias: +0.000")
    assert "Judge position bias: +0.000" in (out / "tables" / "vs_reference.md").read_text()


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE")
def test_a_full_disk_is_one_line_and_a_rerun_resumes(zoo, tmp_path, capsys):
    """``python -m lm_runs.evaluate`` in a process that may write no file beyond 2000 bytes (RLIMIT_FSIZE,
    SIGXFSZ ignored: writes fail with EFBIG as a full disk's fail with ENOSPC): the generations and
    judgements (about 0.3 kB a file) are written, the first larger output is not; one error line names
    it and the cause, exit status 2, no temporary or partial file is left, and a rerun without the limit
    finishes without generating again."""
    import re
    import resource
    import signal
    import subprocess
    import sys

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:4]))
    out = tmp_path / "out"
    argv = ["--reference", str(zoo["ref"]), "--models", f"tuned={zoo['run_a'] / 'epochs' / 'epoch-2'}",
            "--prompts", str(prompts), "--judge", "lm_runs.judges.toy:prefer_shorter", "--output_dir", str(out),
            "--samples_per_prompt", "1", "--max_new_tokens", "4", "--device", "cpu", "--bootstrap", "20",
            "--progress", "false"]

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lm_runs.evaluate", *argv], cwd=Path(__file__).resolve().parents[1],
                          env=env, preexec_fn=limit, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    match = re.fullmatch(
        rf"error: could not save {re.escape(str(out))}/(\S+): a file grew past the file-size limit \(ulimit -f\) or "
        rf"the file system's largest file; what was generated and judged before is kept in {re.escape(str(out))}: "
        "make room and run the same command again to resume", errors[0])
    assert match, errors[0]
    assert not (out / match.group(1)).exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    generations = {p.name: p.stat().st_mtime_ns for p in (out / "generations").iterdir()}
    assert sorted(generations) == ["reference.jsonl", "reference.meta.json", "tuned.jsonl", "tuned.meta.json"]
    assert all(len((out / "generations" / f"{m}.jsonl").read_text().splitlines()) == 4 for m in ("reference", "tuned"))

    assert main(argv) == 0
    capsys.readouterr()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "generations").iterdir()} == generations  # not redone
    assert (out / match.group(1)).is_file() and (out / "summary.json").is_file()


# --------------------------------------------------------------------------------------------------
# the tables
# --------------------------------------------------------------------------------------------------


def test_a_known_comparison_renders_exactly():
    vs = {"egpo": {1: 0.5, 2: 0.61234, 3: 0.4999}, "online_ipo": {"run/epoch-1": 0.55, "run/epoch-3": float("nan")}}
    assert render_vs_reference(vs) == (
        "| Algorithm | 1 | 2 | 3 |\n"
        "|---|---:|---:|---:|\n"
        "| egpo | 50.0 | **61.2** | 50.0 |\n"
        "| online_ipo | **55.0** | – | – |\n"
    )
    assert render_vs_reference(vs, fmt="latex") == (
        "\\begin{tabular}{lrrr}\n"
        "\\toprule\n"
        "Algorithm & 1 & 2 & 3 \\\\\n"
        "\\midrule\n"
        "egpo & 50.0 & \\textbf{61.2} & 50.0 \\\\\n"
        "online\\_ipo & \\textbf{55.0} & -- & -- \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n"
    )
    labels = ["egpo/epoch-2", "egpo/epoch-3", "oipo/epoch-1"]
    wins = {("egpo/epoch-2", "egpo/epoch-3"): 0.4, ("oipo/epoch-1", "egpo/epoch-2"): 0.3, ("egpo/epoch-3", "oipo/epoch-1"): 0.5}
    display = {"egpo/epoch-2": "EGPO 2", "egpo/epoch-3": "EGPO 3", "oipo/epoch-1": "O_IPO 1"}
    assert render_pairwise(labels, wins, display=display) == (
        "|  | EGPO 2 | EGPO 3 | O_IPO 1 |\n"
        "|---|---:|---:|---:|\n"
        "| EGPO 2 | – | 40.0 | **70.0** |\n"
        "| EGPO 3 | **60.0** | – | 50.0 |\n"
        "| O_IPO 1 | 30.0 | 50.0 | – |\n"
    )
    assert render_pairwise(labels, wins, display=display, fmt="latex") == (
        "\\begin{tabular}{lrrr}\n"
        "\\toprule\n"
        " & EGPO 2 & EGPO 3 & O\\_IPO 1 \\\\\n"
        "\\midrule\n"
        "EGPO 2 & -- & 40.0 & \\textbf{70.0} \\\\\n"
        "EGPO 3 & \\textbf{60.0} & -- & 50.0 \\\\\n"
        "O\\_IPO 1 & 30.0 & 50.0 & -- \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n"
    )
    with_ci = render_vs_reference({"egpo": {1: 0.6}}, ci={"egpo": {1: (0.55, 0.65)}})
    assert with_ci.splitlines()[2] == "| egpo | **60.0** [55.0, 65.0] |"
    with pytest.raises(ValueError, match="1-based"):
        render_vs_reference({"egpo": {0: 0.5}})
