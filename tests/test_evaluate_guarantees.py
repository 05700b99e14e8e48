"""lm_runs.evaluate's guarantees (issue 15): a model ties with its copy and a judge's position bias cannot
pass for a win; intervals from few prompts say so; judges are known by their content; a judge that
raises costs its pairs, not the evaluation; Ctrl-C is one line and the rerun resumes; an epoch folder
left by a killed save is skipped with a warning; ``--help`` runs."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lm_runs.evaluate import EvaluationError, EvaluationSettings, ModelSpec, discover_runs, evaluate, main
from lm_runs.evaluate.tables import render_pairwise, render_vs_reference
from test_evaluate import PROMPTS, _classifier, _perturbed, base, biased, shorter

K = 2
SETTINGS = EvaluationSettings(
    num_prompts=len(PROMPTS), samples_per_prompt=K, max_new_tokens=6, prompts_per_batch=2, bootstrap=200,
    device="cpu", judge_batch_size=4,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from lm_runs.tiny import build_tiny_lm

    root = tmp_path_factory.mktemp("models")
    ref = build_tiny_lm(root / "ref", seed=0)
    run = root / "run"
    for k in (1, 2):
        _perturbed(ref, run / "epochs" / f"epoch-{k}", seed=10 + k)
    (run / "config.yaml").write_text("alg: egpo\n")
    return {"ref": ref, "run": run, "pm": _classifier(ref, root / "pm")}


def _counting(judge, calls: list[int]):
    def fn(prompts, completions):
        calls.append(len(completions))
        return judge(prompts, completions)
    return fn


# --------------------------------------------------------------------------------------------------
# a model ties with itself; position bias is no win; few prompts are flagged
# --------------------------------------------------------------------------------------------------


def test_a_model_ties_with_its_copy_under_a_position_biased_judge(models, tmp_path):
    """The same weights in another folder draw the same responses (generations are seeded by the model's
    content): every pair is identical, ½ by symmetry, and the judge is never asked. Before, the copy
    drew other responses and the biased judge, asked one order, made it win (60.0, bold)."""
    copy = tmp_path / "copy"
    shutil.copytree(models["ref"], copy)
    calls: list[int] = []
    for both_orders in (True, False):
        settings = EvaluationSettings(**{**SETTINGS.__dict__, "both_orders": both_orders})
        result = evaluate({"copy": copy}, models["ref"], PROMPTS, _counting(biased, calls), settings, tmp_path / f"out{both_orders}")
        row = result.winrates[(result.winrates.model == "copy") & (result.winrates.split == "all")].iloc[0]
        assert row.win_rate == 0.5 and row.ci_low == 0.5 and row.ci_high == 0.5 and row.n_pairs == len(PROMPTS) * K
        assert result.generations["copy"] == result.generations["reference"]
        assert result.tables["vs_reference.md"].splitlines()[2] == "| copy | 50.0† |"
        assert result.summary["comparisons"][0]["identical_pairs"] == len(PROMPTS) * K
    assert calls == []


def test_position_bias_is_no_win_with_both_orders(models, tmp_path):
    """Two in-memory copies of π_ref draw responses of their own (an in-memory model is seeded by its
    name), so the pairs differ. Asked one order, a judge giving the first response 0.1 more makes each
    copy beat π_ref with an interval above 50 %; with both orders (the default) the interval covers 50 %
    and the bias is measured as +0.1. 40 prompts: no entry is flagged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompts = [f"question {i}: what about the {w}?" for i, w in enumerate(["cat", "sun", "dog", "moon"] * 10)]
    tokenizer = AutoTokenizer.from_pretrained(models["ref"])
    twins = [ModelSpec(name, AutoModelForCausalLM.from_pretrained(models["ref"]), tokenizer=tokenizer) for name in ("twin_a", "twin_b")]
    settings = EvaluationSettings(**{**SETTINGS.__dict__, "num_prompts": len(prompts), "bootstrap": 500})
    one_order = EvaluationSettings(**{**settings.__dict__, "both_orders": False})
    both = evaluate(twins, models["ref"], prompts, biased, settings, tmp_path / "both").winrates
    single = evaluate(twins, models["ref"], prompts, biased, one_order, tmp_path / "one").winrates
    for name in ("twin_a", "twin_b"):
        b = both[(both.model == name) & (both.opponent == "reference") & (both.split == "all")].iloc[0]
        s = single[(single.model == name) & (single.opponent == "reference") & (single.split == "all")].iloc[0]
        assert s.ci_low > 0.5  # what one order reports: a "significant" win of a model over itself
        assert s.win_rate - b.win_rate == pytest.approx(0.1, abs=1e-9)  # exactly the bias, removed
        assert b.ci_low <= 0.5 <= b.ci_high
        assert b.position_bias == pytest.approx(0.1, abs=1e-9) and b.n_bias_pairs == len(prompts) * K
        assert not b.few_prompts and b.n_prompts == 40


def test_flagged_entries_render_with_a_dagger_and_no_bold():
    vs = {"egpo": {1: 0.6, 2: 0.4}}
    flags = {"egpo": {1: True, 2: False}}
    note = "† from 6 prompts"
    assert render_vs_reference(vs, flagged=flags, notes=[note]) == (
        "| Algorithm | 1 | 2 |\n|---|---:|---:|\n| egpo | 60.0† | 40.0 |\n\n† from 6 prompts\n"
    )
    with_ci = render_vs_reference(vs, flagged={"egpo": {1: False}}, ci={"egpo": {1: (0.55, 0.65)}})
    assert with_ci.splitlines()[2] == "| egpo | **60.0** [55.0, 65.0] | 40.0 |"
    tex = render_vs_reference(vs, fmt="latex", flagged=flags, notes=["x"])
    assert r"egpo & 60.0$^\dagger$ & 40.0 \\" in tex and tex.endswith("\\end{tabular}\n{\\footnotesize x\\par}\n")
    # a pairwise flag holds for the mirrored entry too
    pw = render_pairwise(["a", "b"], {("a", "b"): 0.7}, flagged={("a", "b"): True})
    assert pw.splitlines()[2:] == ["| a | – | 70.0† |", "| b | 30.0† | – |"]


# --------------------------------------------------------------------------------------------------
# judges: by content; a raising judge; Ctrl-C
# --------------------------------------------------------------------------------------------------


def test_judges_are_identified_by_content_not_path(models, tmp_path):
    """settings.json records the judge by its files' digests: the same preference model in another folder
    reuses the judgements; changed weights in the same folder are refused (before: the path string)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    pm = tmp_path / "pm"
    shutil.copytree(models["pm"], pm)
    out = tmp_path / "out"
    specs = discover_runs([models["run"]])[:1]
    evaluate(specs, models["ref"], PROMPTS, str(pm), SETTINGS, out)

    def judgements() -> dict[str, tuple[bytes, int, int]]:
        # content, and inode and mtime: a file judged again is written aside and renamed (a new inode)
        return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "judgements").iterdir()}

    saved = judgements()
    assert saved  # something was judged
    settings_json = (out / "settings.json").read_text()
    assert json.loads(settings_json)["fingerprint"]["judge"]["kind"] == "preference_model"
    moved = tmp_path / "elsewhere" / "judge"
    shutil.copytree(pm, moved)
    evaluate(specs, models["ref"], PROMPTS, str(moved), SETTINGS, out)  # accepted: the same judge
    assert judgements() == saved  # reused, not judged again
    assert (out / "settings.json").read_text() == settings_json
    model = AutoModelForSequenceClassification.from_pretrained(pm)
    with torch.no_grad():
        model.score.weight.add_(1.0)
    model.save_pretrained(pm)
    with pytest.raises(EvaluationError, match=r"judge\.files\.model\.safetensors.*--overwrite"):
        evaluate(specs, models["ref"], PROMPTS, str(pm), SETTINGS, out)


def test_a_judge_that_raises_loses_its_pairs_not_the_evaluation(models, tmp_path):
    """A judge callable raising an ordinary exception on some pairs: those pairs are missing, with the
    reason, and the rest is judged (before: the exception ended the evaluation with a traceback)."""
    moon = PROMPTS[5]

    def fragile(prompts, completions):
        if moon in prompts:
            raise RuntimeError("cannot judge the moon")
        return shorter(prompts, completions)

    specs = discover_runs([models["run"]])
    result = evaluate(specs, models["ref"], PROMPTS, fragile, SETTINGS, tmp_path / "out")
    row = result.winrates[(result.winrates.model == specs[0].name) & (result.winrates.split == "all")].iloc[0]
    assert row.n_missing == K and row.n_pairs == (len(PROMPTS) - 1) * K
    reasons = " ".join(result.summary["comparisons"][0]["missing_reasons"])
    assert "RuntimeError: cannot judge the moon" in reasons
    gen = {m: {(r["prompt"], r["sample"]): r["text"] for r in rows} for m, rows in result.generations.items()}
    expected = np.mean([0.5 * (base(gen[specs[0].name][i, j], gen["reference"][i, j]) + 1 - base(gen["reference"][i, j], gen[specs[0].name][i, j]))
                        for i in range(5) for j in range(K)])
    assert row.win_rate == pytest.approx(expected, abs=1e-12)


def test_ctrl_c_is_one_line_exit_130_and_the_rerun_resumes(models, tmp_path, monkeypatch, capsys):
    (tmp_path / "interrupting_judge.py").write_text(textwrap.dedent("""
        calls = {"n": 0, "interrupt_at": None}
        asked = []

        def judge(prompts, completions):
            calls["n"] += 1
            if calls["n"] == calls["interrupt_at"]:
                raise KeyboardInterrupt
            asked.append(len(completions))
            return [0.5 + 0.3 * ((len(b) > len(a)) - (len(a) > len(b))) for a, b in completions]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import interrupting_judge

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    argv = ["--reference", str(models["ref"]), "--runs", str(models["run"]), "--prompts", str(prompts),
            "--judge", "interrupting_judge:judge", "--output_dir", str(tmp_path / "out"), "--samples_per_prompt", str(K),
            "--max_new_tokens", "6", "--device", "cpu", "--bootstrap", "50", "--progress", "false", "--judge_batch_size", "4"]
    interrupting_judge.calls["interrupt_at"] = 3
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()  # (before it: the libraries' loading bars)
    assert err[-1].startswith("interrupted: ") and "run the same command again to resume" in err[-1]
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in err)
    assert interrupting_judge.asked == [8, 8]  # two calls of 4 pairs in both orders were judged and saved
    interrupting_judge.calls["interrupt_at"] = None
    assert main(argv) == 0
    # every pair asked once in all: 2 epochs × 12 pairs against π_ref + 1 pairwise comparison × 6, in both orders
    assert sum(interrupting_judge.asked) == 2 * (2 * len(PROMPTS) * K + 3 * K)
    assert "judge position bias: +0.000" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# folders; --help
# --------------------------------------------------------------------------------------------------


def test_an_epoch_folder_with_an_empty_config_is_skipped_with_one_warning(models, tmp_path, capsys):
    """An ``epochs/epoch-k`` whose config.json a killed save left at 0 bytes (trainers before the atomic
    saves): skipped, one warning line naming it (before: a traceback when its weights were loaded)."""
    run = tmp_path / "run"
    shutil.copytree(models["run"], run)
    (run / "epochs" / "epoch-2" / "config.json").write_text("")
    specs = discover_runs([run])
    assert [s.name for s in specs] == ["run/epoch-1"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: skipping ") and str(run / "epochs" / "epoch-2") in err[0]
    (run / "epochs" / "epoch-1" / "config.json").write_text("")
    with pytest.raises(EvaluationError, match="no complete epochs/epoch-k folder"):
        discover_runs([run])
    (run / "epochs" / "epoch-1" / "config.json").write_text("{not json")
    with pytest.raises(EvaluationError, match="epoch-1.*not a readable JSON file"):
        discover_runs([run])


def test_an_output_folder_of_something_else_is_refused(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    specs = discover_runs([models["run"]])
    with pytest.raises(EvaluationError, match=r"holds files that are not an evaluation's \(notes.txt\)"):
        evaluate(specs, models["ref"], PROMPTS, shorter, SETTINGS, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (out / "notes.txt").unlink()
    out.rmdir()
    out.write_text("a file")
    with pytest.raises(EvaluationError, match="is a file"):
        evaluate(specs, models["ref"], PROMPTS, shorter, SETTINGS, out)
