"""lm_runs.synthetic_benchmark --round_eta and --against: a round method at another step η, compared seed by seed.

Checked: the names ``<method>@eta=<η>`` (made and undone; drawn in the method's colour, labelled with η); the
verdict between a method and itself at another η is the benchmark's own paired test (on 15 seeds, every seed
lower: decided, p = 2/2^15 before Holm, times the 3 pairs after; the same values: undecided); a ``--reuse``
source at another ``round_eta`` gives its online runs and not its round-method runs; ``--against`` reads only
that run's records of this run's round methods, renamed; bad input (η ≤ 0, ``--round_eta`` without a round
method, an unknown method, a folder that is not a run, that differs in another setting, that has this run's η,
that lacks a seed, whose π_ref differs) is one ``error:`` line, exit status 2, before anything is created.
End to end (``slow``, two FAST runs, about a minute on two shared cores): a run at η = 1 and one at η = 1/8
with ``--reuse`` and ``--against`` the first: EGPO's second seed taken over, ONPO trained again at 1/8 and
ending elsewhere; the first run's ONPO final values stand in the second's verdicts, bit for bit, under
``onpo@eta=1``, paired seed by seed; ``redraw`` gives the same verdicts. The verdict figure then names this run's
round methods by their η too (``onpo@eta=0.125``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lm_runs import synthetic_benchmark as sb
from lm_runs.synthetic_benchmark.reuse import against_metrics, load_against, load_sources, reused_runs
from lm_runs.synthetic_benchmark.settings import at_eta, split_eta
from lm_runs.synthetic_benchmark.verdicts import final_values, pair_verdicts, verdict_inputs
from test_synthetic_benchmark_reuse import _source  # a fake finished run's settings, summary and π_ref

ROUNDS = replace(sb.FAST, algorithms=("egpo", "onpo"))


def _run(folder: Path, settings: sb.BenchmarkSettings, runs: dict[tuple[str, int], float], reference: bytes = b"pi_ref",
         **changed) -> Path:
    """A fake finished run of ``settings`` (``changed`` fields replaced, as None removed; the ``round_*`` fields only
    when it names a round method, as the pipeline writes them) holding ``runs`` complete: (algorithm, seed) → its
    final duality gap (exploitability: half of it; update 0: 0.38 and 0.3), each run's folder as the pipeline
    leaves it, π_ref's weights ``reference``."""
    _source(folder, settings, reference, **changed)
    summary = json.loads((folder / "summary.json").read_text())
    metrics, probs, listed = [], [], []
    for (alg, seed), gap in runs.items():
        for update, (g, e) in ((0, (0.38, 0.3)), (settings.updates, (gap, gap / 2))):
            metrics += [(alg, seed, update, "duality_gap", g), (alg, seed, update, "exploitability", e)]
            probs.append(("summed", alg, seed, update, "x", 0.2, 0.3, 0.5))
        path = f"runs/{sb.run_name(alg, seed)}"
        listed.append({"algorithm": alg, "seed": seed, "variant": "summed", "path": path, "seconds": 1.0})
        final = folder / path / ("final" if alg == "egpo" else "")
        final.mkdir(parents=True)
        (final / "config.json").write_text("{}")
    pd.DataFrame(metrics, columns=["algorithm", "seed", "update", "metric", "value"]).to_csv(folder / "metrics.csv", index=False)
    pd.DataFrame(probs, columns=["variant", "algorithm", "seed", "update", "prompt", "p0", "p1", "p2"]).to_csv(
        folder / "class_probs.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({**summary, "runs": listed, "command": "fake"}))
    return folder


def test_names_at_another_eta_are_made_undone_and_drawn_as_the_method():
    from lm_runs import plots

    assert at_eta("onpo", 1.0) == "onpo@eta=1" and at_eta("sppo_rounds", 0.125) == "sppo_rounds@eta=0.125"
    assert split_eta("onpo@eta=0.125") == ("onpo", 0.125) and split_eta("onpo") == ("onpo", None)
    assert plots.label("onpo@eta=1") == "ONPO (η = 1)" and plots.label("sppo_rounds@eta=0.5") == "SPPO (rounds) (η = 0.5)"
    assert plots.colour("onpo@eta=1") == plots.colour("onpo") != plots.colour("x")
    assert plots.marker("onpo@eta=1") == plots.marker("onpo") != "x"


def test_a_method_against_itself_at_another_eta_is_the_benchmarks_paired_test():
    seeds = range(15)
    rng = np.random.default_rng(0)
    gaps = rng.uniform(0.1, 0.4, 15)
    here = pd.DataFrame([dict(algorithm=a, seed=s, update=u, metric=m, value=0.38 if u == 0 else v)
                         for a, vals in (("egpo", gaps + 0.05), ("onpo", gaps)) for s, v in zip(seeds, vals)
                         for u in (0, 80) for m in ("duality_gap", "exploitability")])
    # ONPO at the other η ends higher on every seed, by differing amounts (no ties among |d|)
    other = here[here.algorithm == "onpo"].assign(algorithm="onpo@eta=1")
    other.loc[other["update"] == 80, "value"] += np.repeat(np.linspace(0.01, 0.15, 15), 2)
    metrics, algorithms = verdict_inputs(here, ["egpo", "onpo"], other)
    assert algorithms == ["egpo", "onpo", "onpo@eta=1"] and len(metrics) == len(here) + len(other)
    table = pair_verdicts(final_values(metrics), algorithms)
    row = table[(table.metric == "duality_gap") & (table.a == "onpo") & (table.b == "onpo@eta=1")].iloc[0]
    assert row.n_seeds == 15 and row.a_lower == 15 and row.p == pytest.approx(2 / 2**15, rel=1e-12)
    assert row.p_holm == pytest.approx(3 * 2 / 2**15, rel=1e-12)  # Holm over the 3 pairs: the smallest p, times 3
    assert row.decided and row.verdict == "onpo lower than onpo@eta=1 (p = 0.00018)"
    assert row.mean_diff == pytest.approx(-0.08, abs=1e-12)  # the mean of linspace(0.01, 0.15, 15), negated
    # the same values under another name: every difference 0, p = 1, undecided
    same = pair_verdicts(final_values(verdict_inputs(here, ["egpo", "onpo"], here[here.algorithm == "onpo"].assign(
        algorithm="onpo@eta=1"))[0]), algorithms)
    row = same[(same.a == "onpo") & (same.b == "onpo@eta=1")].iloc[0]
    assert row.p == 1.0 and not row.decided and row.ties == 15
    assert verdict_inputs(here, ("egpo", "onpo"))[1] == ["egpo", "onpo"]  # without --against: the run's own


def test_a_source_at_another_eta_gives_its_online_runs_and_against_reads_its_round_runs_renamed(tmp_path):
    runs = {("egpo", 1): 0.2, ("onpo", 0): 0.3, ("onpo", 1): 0.25}
    old = _run(tmp_path / "old", ROUNDS, runs)
    here = replace(ROUNDS, round_eta=0.125)
    wanted = [("egpo", 1, False), ("onpo", 1, False)]
    assert set(reused_runs(load_sources([old], here), wanted, here)) == {("egpo", 1, False)}  # η differs: ONPO retrained
    assert set(reused_runs(load_sources([old], ROUNDS), wanted, ROUNDS)) == set(wanted)  # η equal: both taken
    records = against_metrics(load_against(old, replace(here, seeds=(1,))), replace(here, seeds=(1,)))
    assert set(records.algorithm) == {"onpo@eta=1"} and set(records.seed) == {1}
    final = records[(records["update"] == here.updates) & (records.metric == "duality_gap")]
    assert final["value"].tolist() == [0.25]


def _refused(tmp_path, capsys, argv: list[str], message: str) -> None:
    """``main(argv)`` exits 2 with one ``error:`` line holding ``message``, nothing created in ``tmp_path/new``."""
    with pytest.raises(SystemExit) as info:
        sb.main(["--out", str(tmp_path / "new"), "--fast", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert lines[0].startswith("error:") and lines[0].endswith("(see python -m lm_runs.synthetic_benchmark --help)"), err
    assert "Traceback" not in err and not (tmp_path / "new").exists()


@pytest.mark.parametrize("flags, message", [
    (["--algorithms", "egpo", "onpo", "--round_eta", "0"], "round_eta must be > 0, got 0.0"),
    (["--algorithms", "egpo", "onpo", "--round_eta", "-0.125"], "round_eta must be > 0, got -0.125"),
    (["--round_eta", "0.125"], "--round_eta 0.125: no round method is chosen"),
    (["--algorithms", "egpo", "onpoo", "--round_eta", "0.125"], "unknown algorithm 'onpoo'"),
])
def test_bad_step_sizes_and_methods_are_one_line_exit_2_before_anything(tmp_path, capsys, flags, message):
    _refused(tmp_path, capsys, flags, message)


@pytest.mark.parametrize("make, extra, message", [
    (lambda d: d.mkdir() or d, [], "--against {d}: not a finished benchmark run (no summary.json)"),
    (lambda d: _run(d, ROUNDS, {("onpo", 0): 0.3, ("onpo", 1): 0.3}, beta=0.1), [],
     "--against {d}: its beta 0.1 differs from this run's 0.05; its runs are not this run's"),
    (lambda d: _run(d, ROUNDS, {("onpo", 0): 0.3, ("onpo", 1): 0.3}, round_magnet_period=3), [],
     "--against {d}: its round_magnet_period 3 differs from this run's 1; only round_eta may differ"),
    (lambda d: _run(d, ROUNDS, {("onpo", 0): 0.3, ("onpo", 1): 0.3}, round_eta=0.125), [],
     "--against {d}: its round_eta 0.125 is this run's"),
    (lambda d: _run(d, ROUNDS, {("onpo", 0): 0.3}), [], "--against {d}: it holds no complete run of onpo, seed 1"),
    (lambda d: _run(d, sb.FAST, {("egpo", 0): 0.3}), [], "--against {d}: it ran no round method"),
    (lambda d: _run(d, ROUNDS, {("onpo", 0): 0.3, ("onpo", 1): 0.3}, reference=b"another"),
     ["--reuse", "{src}"], "--against {d}: its π_ref differs from that of {src}"),
])
def test_an_against_folder_that_cannot_be_compared_is_one_line_exit_2_before_anything(tmp_path, capsys, make, extra,
                                                                                     message):
    d = make(tmp_path / "old")
    src = _run(tmp_path / "src", ROUNDS, {("egpo", 1): 0.2})
    fill = {"d": d, "src": src.resolve()}
    _refused(tmp_path, capsys, ["--algorithms", "egpo", "onpo", "--round_eta", "0.125", "--against", str(d),
                                *[x.format(**fill) for x in extra]], message.format(**fill))
    # without a round method here there is nothing to compare
    if (d / "summary.json").is_file():
        _refused(tmp_path, capsys, ["--against", str(d)], f"--against {d}: no round method is chosen here")


@pytest.mark.slow  # two FAST runs of EGPO and ONPO: about a minute on two shared cores
def test_a_run_at_another_eta_pairs_its_method_with_the_first_runs_seed_by_seed(tmp_path):
    common = ["--fast", "--no_progress", "--algorithms", "egpo", "onpo", "--length_normalized_seeds"]
    first, second = tmp_path / "first", tmp_path / "second"
    sb.main(["--out", str(first), *common])
    summary = sb.main(["--out", str(second), *common, "--round_eta", "0.125", "--reuse", str(first), "--against", str(first)])
    assert summary["settings"]["round_eta"] == 0.125
    reused = {(r["algorithm"], r["seed"]) for r in summary["runs"] if "reused_from" in r}
    assert reused == {("egpo", 1)}  # seed 0's epochs were not kept (the win-rate tables); ONPO's η differs
    assert summary["against"]["algorithms"] == {"onpo@eta=1": "onpo"} and summary["against"]["round_eta"] == 1.0
    assert summary["against"]["folder"] == str(first.resolve())
    a, b = (pd.read_csv(x / "final_per_seed.csv") for x in (first, second))
    old = a[a.algorithm == "onpo"].drop(columns="algorithm").reset_index(drop=True)
    pd.testing.assert_frame_equal(b[b.algorithm == "onpo@eta=1"].drop(columns="algorithm").reset_index(drop=True), old,
                                  check_exact=True)  # the first run's ONPO, bit for bit
    new = b[b.algorithm == "onpo"].drop(columns="algorithm").reset_index(drop=True)
    assert (new["value"] - old["value"]).abs().min() > 1e-6  # η = 1/8 trained another policy on every seed and metric
    table = pd.read_csv(second / "verdicts.csv")
    assert len(table) == 2 * 3  # egpo, onpo, onpo@eta=1: 3 pairs per metric
    for metric in ("duality_gap", "exploitability"):
        row = table[(table.metric == metric) & (table.a == "onpo") & (table.b == "onpo@eta=1")].iloc[0]
        d = (new[new.metric == metric]["value"].to_numpy() - old[old.metric == metric]["value"].to_numpy())
        assert row.n_seeds == 2 and row.mean_diff == pytest.approx(d.mean(), abs=1e-15)
    assert summary["against"]["final_median"]["onpo@eta=1"]["duality_gap"] == pytest.approx(
        old[old.metric == "duality_gap"]["value"].median(), abs=1e-15)
    assert (second / "metrics_against.csv").is_file()
    before = (second / "verdicts.csv").read_text()
    sb.redraw(second, tmp_path / "redrawn")
    assert (tmp_path / "redrawn" / "verdicts.csv").read_text() == before


def test_the_verdict_figure_names_this_runs_round_methods_by_their_eta_beside_another_runs():
    from lm_runs.synthetic_benchmark.figures import _named_with_eta

    s = replace(ROUNDS, round_eta=0.125)
    final = pd.DataFrame({"metric": "duality_gap", "algorithm": ["egpo", "onpo", "onpo@eta=1"], "seed": 0, "value": 0.1})
    table = pd.DataFrame({"a": ["egpo", "onpo"], "b": ["onpo", "onpo@eta=1"], "lower": ["egpo", "onpo"]})
    f, t = _named_with_eta(final, table, s)
    assert f["algorithm"].tolist() == ["egpo", "onpo@eta=0.125", "onpo@eta=1"]
    assert t.to_dict("list") == {"a": ["egpo", "onpo@eta=0.125"], "b": ["onpo@eta=0.125", "onpo@eta=1"],
                                 "lower": ["egpo", "onpo@eta=0.125"]}
    alone = final[final.algorithm != "onpo@eta=1"]  # without --against: the names stay
    assert _named_with_eta(alone, table, s)[0] is alone
