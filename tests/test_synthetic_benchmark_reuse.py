"""lm_runs.synthetic_benchmark --reuse: runs taken over from previous benchmark folders.

Checked: a folder that is not a finished run, whose settings differ in a field a run reads, or whose π_ref
differs from the first source's is refused as one ``error:`` line, exit status 2, before anything is
created; fields no run reads (seeds, algorithms, …) may differ; the ``round_*`` fields decide only whether
the source's round-method runs can be taken (tests/test_synthetic_benchmark_against.py takes its online runs); a π_ref fine-tuned here that differs stops the run; ``--jobs 0`` is refused the same way.
End to end (``slow``, two FAST runs, about two minutes on shared cores): a second run with one more seed,
trained with ``--jobs 2``, takes over the run the first holds complete — records, class probabilities and
folder equal — trains the first seed again in a worker process (the first run kept no epoch checkpoints for
the win-rate tables) with the first run's records to the last bit, counts its workers' judge calls, and
records the command, each run's seconds and source.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest

from lm_runs import synthetic_benchmark as sb
from lm_runs.synthetic_benchmark.reuse import NOT_READ_BY_A_RUN, check_reference, load_sources


def _source(folder: Path, settings: sb.BenchmarkSettings, reference: bytes = b"pi_ref", **changed) -> Path:
    """A fake finished run: ``summary.json`` with ``settings`` (``changed`` fields replaced or, as None,
    removed; the ``round_*`` fields only when it names a round method, as the pipeline writes them), empty
    tidy files and π_ref's weights ``reference``."""
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()
              if settings.round_methods() or not k.startswith("round_")}
    values.update(changed)
    values = {k: v for k, v in values.items() if v is not None}
    (folder / "sft").mkdir(parents=True)
    (folder / "sft" / "model.safetensors").write_bytes(reference)
    (folder / "summary.json").write_text(json.dumps({"settings": values, "runs": []}))
    (folder / "metrics.csv").write_text("algorithm,seed,update,metric,value\n")
    (folder / "class_probs.csv").write_text("variant,algorithm,seed,update,prompt,p0,p1,p2\n")
    return folder


@pytest.mark.parametrize("make, message", [
    (lambda d: d.mkdir() or d, "not a finished benchmark run (no summary.json)"),
    (lambda d: _source(d, sb.FAST, beta=0.1), "its beta 0.1 differs from this run's 0.05; its runs are not this run's"),
    (lambda d: _source(d, sb.FAST, updates=6), "its updates 6 differs from this run's 4"),
    (lambda d: _source(d, sb.FAST, adam_beta1=None), "it has no setting adam_beta1 (written by another version)"),
])
def test_cli_refuses_a_folder_that_is_no_source_in_one_line_before_anything(tmp_path, capsys, make, message):
    source = make(tmp_path / "old")
    with pytest.raises(SystemExit) as info:
        sb.main(["--out", str(tmp_path / "new"), "--fast", "--reuse", str(source)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --reuse {source}: {message}" in err and "Traceback" not in err
    assert len(err.strip().splitlines()[-1]) < 300 and not (tmp_path / "new").exists()


def test_cli_refuses_jobs_below_one_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        sb.main(["--out", str(tmp_path / "new"), "--fast", "--jobs", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: --jobs must be at least 1, got 0" in err and "Traceback" not in err and not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="jobs must be a whole number ≥ 1, got 0"):
        sb.run_benchmark(tmp_path / "new", sb.FAST, jobs=0)
    assert not (tmp_path / "new").exists()


def test_sources_must_share_pi_ref_and_may_differ_only_where_no_run_reads(tmp_path):
    a = _source(tmp_path / "a", sb.FAST)
    with pytest.raises(ValueError, match=f"--reuse {tmp_path / 'b'}: its π_ref differs from that of {a}"):
        load_sources([a, _source(tmp_path / "b", sb.FAST, reference=b"another")], sb.FAST)
    # every field no run reads differs here: still a source (which runs there are is not what a run computes)
    other = {"seeds": [7], "algorithms": ["egpo"], "length_normalized_seeds": [], "keep_checkpoints": True,
             "sim_etas": [1.0], "eval_samples_per_prompt": 2, "eval_bootstrap": 10}
    assert set(other) == set(NOT_READ_BY_A_RUN)
    c = _source(tmp_path / "c", sb.FAST, **other)
    assert [s.path for s in load_sources([a, c], sb.FAST)] == [a.resolve(), c.resolve()]
    # the round methods' settings are read by their runs only: a source whose round_* fields differ (or that has
    # none) is a source of online runs, its round-method runs are not taken (same_rounds: reused_runs skips them)
    rounds = replace(sb.FAST, algorithms=("egpo", "comal"))
    assert [x.same_rounds for x in load_sources([_source(tmp_path / "d", sb.FAST)], rounds)] == [False]
    assert [x.same_rounds for x in load_sources([_source(tmp_path / "e", rounds, round_magnet_period=3)], rounds)] == [False]
    assert [x.same_rounds for x in load_sources([_source(tmp_path / "f", rounds)], rounds)] == [True]
    assert [x.same_rounds for x in load_sources([_source(tmp_path / "g", rounds, round_eta=0.5)], rounds)] == [False]


def test_a_pi_ref_fine_tuned_here_that_differs_stops_the_run(tmp_path):
    sources = load_sources([_source(tmp_path / "old", sb.FAST)], sb.FAST)
    here = tmp_path / "sft"
    here.mkdir()
    (here / "model.safetensors").write_bytes(b"pi_ref")
    check_reference(sources, here)  # the same bytes: nothing raised
    (here / "model.safetensors").write_bytes(b"pi_ref, another machine")
    with pytest.raises(RuntimeError, match="the π_ref fine-tuned here differs from that of"):
        check_reference(sources, here)
    check_reference([], here)  # no sources: nothing to compare


@pytest.mark.slow  # two FAST runs of two algorithms: about two minutes on two shared cores
def test_a_second_run_takes_over_the_complete_runs_and_trains_the_others_to_the_same_bits(tmp_path):
    common = ["--fast", "--no_progress", "--algorithms", "oipo1", "nashmdpg", "--length_normalized_seeds"]
    first, second = tmp_path / "first", tmp_path / "second"
    before = sb.main(["--out", str(first), *common])  # seeds 0 1 (FAST), one run after the other
    summary = sb.main(["--out", str(second), *common, "--seeds", "0", "1", "2", "--reuse", str(first), "--jobs", "2"])
    assert summary["command"] == ("python -m lm_runs.synthetic_benchmark --out " + str(second) + " " + " ".join(common)
                                  + " --seeds 0 1 2 --reuse " + str(first) + " --jobs 2")
    # two seeds × two algorithms trained in each: the same judge calls, the workers' added up
    assert summary["judge_calls"] == before["judge_calls"] > 0
    runs = {(r["algorithm"], r["seed"]): r for r in summary["runs"]}
    assert set(runs) == {(a, s) for a in ("oipo1", "nashmdpg") for s in (0, 1, 2)}
    # seed 1 is taken over; seed 0 is trained (the first run kept no epochs of it, which the win-rate tables
    # read), and seed 2 is new
    old = {(r["algorithm"], r["seed"]): r for r in json.loads((first / "summary.json").read_text())["runs"]}
    for (alg, seed), r in runs.items():
        if seed == 1:
            assert r["reused_from"] == str((first / old[(alg, 1)]["path"]).resolve())
            assert r["seconds"] == old[(alg, 1)]["seconds"]
            assert (second / r["path"] / "final" / "config.json").is_file()
        else:
            assert "reused_from" not in r and r["seconds"] > 0
    assert summary["timings"]["reused_s"] == pytest.approx(sum(old[(a, 1)]["seconds"] for a in ("oipo1", "nashmdpg")), rel=1e-12)
    # seeds 0 and 1 equal the first run's to the last bit: taken (seed 1) or trained again (seed 0)
    for name in ("metrics.csv", "class_probs.csv"):
        a, b = pd.read_csv(first / name), pd.read_csv(second / name)
        for seed in (0, 1):
            pd.testing.assert_frame_equal(a[a.seed == seed].reset_index(drop=True), b[b.seed == seed].reset_index(drop=True),
                                          check_exact=True)
        assert set(b.seed) == {0, 1, 2}
    assert summary["verdicts"]["n_seeds"] == 3
