"""lm_runs.synthetic_benchmark with the round methods (``lm_runs.rounds``) beside the online algorithms.

Checked: the budget rule (optimizer steps per round, rounds = updates / steps per round) by hand on the
presets; the algorithm names (``sppo`` refused as ambiguous, ``sppo_rounds`` accepted, a round method
alone refused, a budget that does not divide refused) as one ``error:`` line, exit status 2, before any
work; a FAST run with INPO and COMAL beside EGPO: every algorithm measured at the same updates, the round
methods' update 0 equal to π_ref's, COMAL equal to INPO bit for bit until its magnet is refreshed and not
after, every pair in the verdict table, the round datasets of the budget's size; the figures' colour and
name of the round methods. The FAST run (about a minute on two shared cores) is ``slow``.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from lm_runs import synthetic_benchmark as sb
from lm_runs.synthetic_benchmark.settings import ROUND_METHODS, check_algorithms, online_algorithms, round_alg


def test_budget_rule_on_the_presets():
    # FAST: 4 nouns → 8 prompts; K = 2, 'all' → 8 pairs (SPPO: 16 responses); B·S = 4·1 pairs per step
    assert sb.FAST.steps_per_round("inpo") == 2 and sb.FAST.rounds("inpo") == 2
    assert sb.FAST.steps_per_round("sppo_rounds") == 2  # 16 responses, 2·B·S = 8 per step
    # DEFAULT: 48 prompts → 48 pairs, B·S = 32 per step → ⌈1.5⌉ = 2 steps, 80 / 2 = 40 rounds
    assert sb.DEFAULT.steps_per_round("comal") == 2 and sb.DEFAULT.rounds("comal") == 40
    wide = replace(sb.DEFAULT, round_samples_per_prompt=4, round_epochs=2)  # 6 pairs per prompt → 288 → 9 steps × 2
    assert wide.steps_per_round("mnpo") == 18 and wide.steps_per_round("sppo_rounds") == 2 * 3  # 192 responses / 64
    assert round_alg("sppo_rounds") == "sppo" and round_alg("iterative_nash") == "inpo" and round_alg("nmd") is None
    assert online_algorithms(["egpo", "inpo", "nashmd", "sppo_rounds"]) == ["egpo", "nashmd"]
    assert set(ROUND_METHODS) == {"inpo", "comal", "mpo", "mnpo", "sppo_rounds", "onpo"}
    check_algorithms(["egpo", "inpo", "comal", "mpo", "mnpo", "sppo_rounds", "onpo"])
    # SHORT and FAST keep the paper's five (their runs stay those committed); the full setting adds the round methods
    assert sb.SHORT.algorithms == sb.FAST.algorithms == sb.ONLINE == ("egpo", "oipo1", "oipo2", "nashmd", "nashmdpg")
    assert sb.DEFAULT.algorithms == sb.ONLINE + ROUND_METHODS


@pytest.mark.parametrize("flags, message", [
    (["--algorithms", "egpo", "sppo"], "'sppo' is ambiguous here: the benchmark trains SPPO in rounds, name it 'sppo_rounds'"),
    (["--algorithms", "egpo", "inpoo"], "unknown algorithm 'inpoo'"),
    (["--algorithms", "egpo", "omwu"], "'omwu' is not one of the paper's algorithms"),
    (["--algorithms", "inpo", "comal"], "names no online algorithm"),
    (["--algorithms", "egpo", "inpo", "iterative_nash"], "algorithms must name distinct algorithms"),
    (["--algorithms", "egpo", "inpo", "--updates", "5"], "inpo trains 2 optimizer steps per round"),
])
def test_bad_algorithms_are_one_line_exit_2_before_anything(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        sb.main(["--out", str(tmp_path / "out"), "--fast", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert lines[0].endswith("(see python -m lm_runs.synthetic_benchmark --help)"), err
    assert list(tmp_path.iterdir()) == []


def test_round_methods_are_drawn_in_their_declared_colour_and_name():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from egpo_core.algorithms import algorithm_color
    from lm_runs.synthetic_benchmark import figures

    algs = ["egpo", "inpo", "sppo_rounds"]
    metrics = pd.DataFrame([dict(algorithm=a, seed=seed, update=u, metric="duality_gap", value=0.3 + 0.01 * k + 0.002 * u)
                            for k, a in enumerate(algs) for seed in (0, 1) for u in (0, 2, 4)])
    fig, ax = plt.subplots()
    figures._draw(ax, metrics, "duality_gap", algs)
    lines = {line.get_label(): to_hex(line.get_color()) for line in ax.get_lines()}
    plt.close(fig)
    assert lines == {"EGPO": to_hex(algorithm_color("egpo")), "INPO": to_hex(algorithm_color("inpo")),
                     "SPPO (rounds)": to_hex(algorithm_color("sppo"))}
    # the notebooks' seed bands name and colour them the same way; eleven algorithms, eleven hollow shapes, in the
    # paper's order then the round methods'; the online SPPO keeps its own name
    from lm_runs import plots

    fig = plots.plot_seed_bands(plots.seed_bands(metrics, ("duality_gap",)))
    assert {line.get_label(): to_hex(line.get_color()) for line in fig.axes[0].get_lines()
            if not line.get_label().startswith("_")} == lines
    plt.close(fig)
    assert plots.label("sppo") == "SPPO" and plots.label("nashmd") == "Nash-MD" and plots.label("x") == "x"
    assert len({plots.marker(a) for a in sb.DEFAULT.algorithms}) == 11 and plots.marker("x") == "x"
    assert plots.ordered(["onpo", "sppo_rounds", "x", "egpo", "mnpo", "iterative_nash", "oipo1"]) == [
        "oipo1", "egpo", "iterative_nash", "mnpo", "sppo_rounds", "onpo", "x"]


@pytest.fixture(scope="module")
def rounds_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_rounds") / "out"
    summary = sb.main(["--out", str(out), "--fast", "--no_progress", "--algorithms", "egpo", "inpo", "comal",
                       "--length_normalized_seeds"])
    return out, summary


@pytest.mark.slow  # a FAST run of three algorithms: about a minute on two shared cores
def test_fast_run_measures_the_round_methods_beside_egpo(rounds_run):
    out, summary = rounds_run
    s = sb.FAST
    algs = ["egpo", "inpo", "comal"]
    metrics = pd.read_csv(out / "metrics.csv")
    gap = metrics[metrics.metric == "duality_gap"].pivot_table(index=["algorithm", "seed"], columns="update", values="value")
    # every algorithm × seed at the same recorded updates: 0, every eval_every, the last
    assert sorted(gap.index) == sorted((a, seed) for a in algs for seed in s.seeds)
    assert list(gap.columns) == [0, 2, 4] and not gap.isna().any().any()
    for name in ("exploitability", "kl_to_equilibrium", "conditional_kl"):
        assert len(metrics[metrics.metric == name]) == len(algs) * len(s.seeds) * 3, name
    # update 0 is π_ref for every method: the round methods' values equal EGPO's exactly (the same forward
    # pass on the same weights), and game.json's reference gap (a differently padded batch: float32 rounding)
    reference = json.loads((out / "game.json").read_text())["reference_duality_gap"]
    np.testing.assert_allclose(gap[0].to_numpy(), reference, rtol=1e-6)
    for metric in ("duality_gap", "exploitability", "kl_to_equilibrium"):
        zero = metrics[(metrics.metric == metric) & (metrics["update"] == 0)].groupby("algorithm")["value"]
        assert zero.nunique().max() == 1 and zero.first().nunique() == 1, metric
    # COMAL's magnet (FAST: period 1 round) is π_ref in round 0 — INPO's round, bit for bit — and π_1 in round 1
    for seed in s.seeds:
        assert gap.loc[("comal", seed), 2] == gap.loc[("inpo", seed), 2]
        assert abs(gap.loc[("comal", seed), 4] - gap.loc[("inpo", seed), 4]) > 1e-6
        assert abs(gap.loc[("inpo", seed), 4] - reference) > 1e-6  # training moved the policy
    # every pair in the verdict table, per metric
    table = pd.read_csv(out / "verdicts.csv")
    for metric in ("duality_gap", "exploitability"):
        pairs = {frozenset((a, b)) for a, b in table[table.metric == metric][["a", "b"]].itertuples(index=False)}
        assert pairs == {frozenset(p) for p in (("egpo", "inpo"), ("egpo", "comal"), ("inpo", "comal"))}
    final = pd.read_csv(out / "final_per_seed.csv")
    assert set(final.algorithm) == set(algs)
    assert set(summary["final_median"]) == set(algs)
    # the simulation and the win-rate tables cover the online algorithm only
    assert set(pd.read_csv(out / "simulation.csv").algorithm) == {"egpo"}
    assert set(pd.read_csv(out / "comparison.csv").algorithm) == {"egpo"}
    assert summary["settings"]["round_magnet_period"] == 1


@pytest.mark.slow  # shares the FAST run above
def test_round_runs_keep_their_datasets_of_the_budgets_size_and_redraw(rounds_run, tmp_path):
    out, summary = rounds_run
    sb.redraw(out, tmp_path)  # the figures and verdicts from the tidy files alone, round methods included
    assert (tmp_path / "verdicts.csv").read_text() == (out / "verdicts.csv").read_text()
    assert (tmp_path / "gap_curves.png").is_file()
    runs = {(r["algorithm"], r["seed"]): out / r["path"] for r in summary["runs"]}
    assert set(runs) == {(a, seed) for a in ("egpo", "inpo", "comal") for seed in sb.FAST.seeds}
    for alg in ("inpo", "comal"):
        folder = runs[(alg, 0)]
        assert (folder / "model.safetensors").is_file()  # the last round's policy
        rounds = sorted(p.name for p in (folder / "rounds").iterdir())
        assert rounds == ["round-0", "round-1"]  # FAST: 4 updates / 2 steps per round
        meta = json.loads((folder / "rounds" / "round-1" / "dataset" / "round.json").read_text())
        assert meta["alg"] == alg and meta["samples_per_prompt"] == 2 and meta["prompts"] == 8
        pairs = (folder / "rounds" / "round-1" / "dataset" / "pairs.jsonl").read_text().splitlines()
        assert len(pairs) == 8  # one pair per prompt at K = 2: two optimizer steps of B·S = 4 pairs
        assert not (folder / "epochs").exists()  # round ends dropped without keep_checkpoints
        assert not (folder / "rounds" / "round-0" / "policy.pt").exists()
