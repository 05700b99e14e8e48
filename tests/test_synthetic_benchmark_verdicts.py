"""lm_runs.synthetic_benchmark.verdicts and the benchmark's figures, on synthetic per-seed numbers whose
answers are known by hand (no model is trained here: seconds).

The exact signed-rank p-values are checked against hand counts and against scipy's exact test on
tie-free inputs; Holm against a hand computation; the verdicts on a clear difference (decided), identical
inputs (undecided, p = 1) and a clear difference on too few seeds (undecided). The figures are checked
for what a reviewer reads: mathtext (no literal "π*_β"/"π_ref"), integer update ticks, labelled log
ticks, coinciding curves named, the short setting's limits stated on it.
"""

from __future__ import annotations

import json
from dataclasses import fields

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lm_runs import plots  # noqa: E402
from lm_runs import synthetic_benchmark as sb  # noqa: E402
from lm_runs.synthetic_benchmark import figures, verdicts  # noqa: E402
from lm_runs.synthetic_benchmark.settings import online_algorithms  # noqa: E402

ALGS = ["egpo", "oipo1", "oipo2", "nashmd", "nashmdpg"]


# ----------------------------------------------------------------------------------------------
# the exact test, Holm, the verdicts
# ----------------------------------------------------------------------------------------------


def test_signed_rank_p_values_by_hand():
    # every difference of one sign: p = 2 / 2^n, the smallest the test can give
    assert verdicts.signed_rank_test([0.1] * 10)["p"] == pytest.approx(2 / 1024, rel=1e-12)
    assert verdicts.signed_rank_test([-1.0, -2.0, -3.0])["p"] == pytest.approx(0.25, rel=1e-12)
    assert verdicts.smallest_p(3) == 0.25 and verdicts.smallest_p(10) == pytest.approx(0.001953125)
    # zeros dropped, mid-ranks for the tie: d = (1, −2, 3, 1) has ranks (1.5, 3, 4, 1.5), W+ = 7, W− = 3;
    # of the 16 sign vectors 5 give W+ ≥ 7 ({3,4}, {1.5,1.5,4}, {1.5,3,4} twice, all), so p = 2·5/16
    result = verdicts.signed_rank_test([1.0, -2.0, 3.0, 0.0, 1.0])
    assert result == {"n_nonzero": 4, "w_plus": 7.0, "w_minus": 3.0, "p": pytest.approx(0.625, rel=1e-12)}
    # identical inputs: no non-zero difference, nothing against the null
    assert verdicts.signed_rank_test([0.0, 0.0, 0.0])["p"] == 1.0
    with pytest.raises(ValueError, match="finite"):
        verdicts.signed_rank_test([1.0, float("nan")])


@pytest.mark.parametrize("n", [4, 7, 10, 13])
def test_signed_rank_p_values_equal_scipys_exact_test_without_ties(n):
    rng = np.random.default_rng(n)
    for shift in (0.0, 0.5, 1.5):
        d = rng.normal(shift, 1.0, n)
        assert verdicts.signed_rank_test(d)["p"] == pytest.approx(wilcoxon(d, method="exact").pvalue, rel=1e-9)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 → 4·0.005 = 0.02, 3·0.01 = 0.03, 2·0.03 = 0.06, max(1·0.04, 0.06) = 0.06
    np.testing.assert_allclose(verdicts.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    np.testing.assert_allclose(verdicts.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1


def _final(values: dict[str, list[float]], metric: str = "duality_gap") -> pd.DataFrame:
    return pd.DataFrame([dict(metric=metric, algorithm=a, seed=s, value=v) for a, vs in values.items() for s, v in enumerate(vs)])


def test_a_clear_difference_is_decided_identical_inputs_are_not():
    rng = np.random.default_rng(0)
    low = 0.1 + 0.01 * rng.random(10)
    table = verdicts.pair_verdicts(_final({"x": list(low), "y": list(low + 0.2), "z": list(low)}))
    rows = {(r.a, r.b): r for r in table.itertuples()}
    # x − y = −0.2 on every seed: p = 2/2^10, Holm over the 3 pairs: sorted (2/1024, 2/1024, 1) → 3·2/1024 for both
    xy = rows[("x", "y")]
    assert xy.decided and xy.lower == "x" and xy.a_lower == 10 and xy.b_lower == 0
    assert xy.p == pytest.approx(2 / 1024) and xy.p_holm == pytest.approx(6 / 1024)
    assert xy.verdict == "x lower than y (p = 0.0059)"
    assert xy.mean_diff == pytest.approx(-0.2) and xy.ci_low == pytest.approx(-0.2) and xy.ci_high == pytest.approx(-0.2)
    yz = rows[("y", "z")]
    assert yz.decided and yz.lower == "z" and yz.verdict.startswith("z lower than y")  # the direction follows the data
    xz = rows[("x", "z")]
    assert not xz.decided and xz.p == 1.0 and xz.ties == 10 and xz.verdict == "undecided at n = 10 (p = 1)"
    assert xz.ci_low == 0.0 and xz.ci_high == 0.0


def test_bootstrap_interval_brackets_the_mean_of_noisy_differences():
    rng = np.random.default_rng(1)
    a = rng.normal(0.3, 0.05, 12)
    b = a + rng.normal(0.02, 0.05, 12)
    row = verdicts.pair_verdicts(_final({"a": list(a), "b": list(b)})).iloc[0]
    d = a - b
    assert row.ci_low < d.mean() < row.ci_high
    # the percentile interval of a mean over 12 seeds: about ±2 standard errors wide, not degenerate
    se = d.std(ddof=1) / np.sqrt(12)
    assert 2.5 * se < row.ci_high - row.ci_low < 5 * se


def test_three_seeds_decide_nothing_however_large_the_difference():
    table = verdicts.pair_verdicts(_final({"x": [0.1, 0.11, 0.12], "y": [0.9, 0.91, 0.92]}))
    row = table.iloc[0]
    assert row.a_lower == 3 and row.p == pytest.approx(0.25) and not row.decided
    assert row.verdict == "undecided at n = 3 (p = 0.25)"
    assert "cannot decide any pair" in verdicts.decidable(3, 10, 0.05)
    assert "can decide" in verdicts.decidable(10, 10, 0.05) and "cannot" not in verdicts.decidable(10, 10, 0.05)
    assert "cannot decide" in verdicts.decidable(8, 10, 0.05)  # 2/2^8 = 0.0078 > 0.005


def test_pairs_use_only_the_seeds_both_ran_and_bad_levels_are_refused():
    final = _final({"x": [0.1, 0.2, 0.3], "y": [0.2, 0.3]})
    row = verdicts.pair_verdicts(final).iloc[0]
    assert row.n_seeds == 2 and row.mean_diff == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="alpha and level"):
        verdicts.pair_verdicts(final, alpha=1.5)


def _metrics(values: dict[str, list[float]], updates=(0, 5, 10)) -> pd.DataFrame:
    """Tidy metrics.csv rows: gap and exploitability per algorithm and seed; the final update takes
    ``values``, earlier updates a fixed start of 0.4 (π_ref)."""
    rows = []
    for a, finals in values.items():
        for seed, v in enumerate(finals):
            for u in updates:
                for metric, scale in (("duality_gap", 1.0), ("exploitability", 0.5), ("kl_to_equilibrium", 0.3)):
                    value = 0.4 if u == 0 else (0.4 + v) / 2 if u != updates[-1] else v
                    rows.append(dict(algorithm=a, seed=seed, update=u, metric=metric, value=scale * value))
    return pd.DataFrame(rows)


def test_write_verdicts_writes_tidy_files_of_the_last_update(tmp_path):
    n = 10
    values = {a: [0.05 * (k + 1) + 0.001 * s for s in range(n)] for k, a in enumerate(ALGS)}
    final, table, content = verdicts.write_verdicts(tmp_path, _metrics(values), ALGS)
    per_seed = pd.read_csv(tmp_path / "final_per_seed.csv")
    assert list(per_seed.columns) == ["metric", "algorithm", "seed", "value"] and len(per_seed) == 2 * 5 * n
    assert per_seed[(per_seed.metric == "duality_gap") & (per_seed.algorithm == "egpo")]["value"].tolist() == pytest.approx(values["egpo"])
    on_disk = pd.read_csv(tmp_path / "verdicts.csv")
    assert len(on_disk) == 2 * 10 and set(on_disk.metric) == {"duality_gap", "exploitability"}
    # every algorithm is 0.05 apart on every seed: all 10 pairs of both metrics decided, the earlier one lower
    assert on_disk["decided"].all()
    assert all(r.lower == r.a for r in on_disk.itertuples())
    data = json.loads((tmp_path / "verdicts.json").read_text())
    assert data["n_seeds"] == n and data["update"] == 10 and data["pairs_per_metric"] == 10
    assert data["verdicts"]["duality_gap"][0] == "egpo lower than oipo1 (p = 0.02)"  # 10 · 2/1024, Holm's first step
    assert "Wilcoxon" in data["test"] and "Holm" in data["test"]


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------


def _texts(fig) -> list[str]:
    out = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return [t for t in out if t]


def _settings(updates: int, seeds: int) -> sb.BenchmarkSettings:
    return sb.BenchmarkSettings(seeds=tuple(range(seeds)), updates=updates, eval_every=5)


def _draw_all(tmp_path, monkeypatch, values, updates=(0, 5, 10)):
    metrics = _metrics(values, updates)
    algs = list(values)
    online = online_algorithms(algs)  # the simulation covers the online algorithms (as in the pipeline)
    sim = pd.DataFrame([dict(algorithm=a, eta=1.0, update=u, metric="duality_gap", value=0.3) for a in online for u in updates])
    comparison = pd.DataFrame([dict(algorithm=a, common_eta=1.0, eta_fit=1.0) for a in online])
    result = verdicts.write_verdicts(tmp_path, metrics, algs)
    s = sb.BenchmarkSettings(seeds=tuple(range(len(values[algs[0]]))), updates=updates[-1], eval_every=5, algorithms=tuple(algs))
    captured = {}

    def keep(fig, path, **kwargs):  # drawn (tick labels are made then), not written: seconds faster
        fig.canvas.draw()
        captured[path.name] = _texts(fig), fig
        return [path]

    monkeypatch.setattr(figures, "save_figure", keep)
    figures.benchmark_figures(tmp_path, metrics, None, sim, comparison, s, n_prompts=4,
                              reference={"duality_gap": 0.4, "exploitability": 0.2, "kl_to_equilibrium": 0.12}, verdicts=result)
    return captured


def test_figures_render_subscripts_integer_ticks_and_name_coinciding_curves(tmp_path, monkeypatch):
    values = {a: [0.05 * (k + 1) + 0.001 * s for s in range(3)] for k, a in enumerate(ALGS)}
    values["nashmd"] = list(values["oipo1"])  # identical runs: drawn on top of each other
    captured = _draw_all(tmp_path, monkeypatch, values)
    assert {"gap_curves", "simulation", "verdicts"} <= set(captured)
    for name, (texts, fig) in captured.items():
        joined = "\n".join(texts)
        assert "π*_β" not in joined and "π_ref" not in joined and "pi_ref" not in joined, (name, joined)
        for ax in fig.axes:
            if ax.get_xlabel() == "update":
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)
                labelled = [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]
                assert len(labelled) >= 3, (name, labelled)  # a log axis with enough labels to read a value
    gap_texts = "\n".join(captured["gap_curves"][0])
    assert r"$\pi^*_\beta$" in gap_texts and r"$\pi_{\mathrm{ref}}$" in gap_texts
    assert "Online IPO 1 (OMD) = Nash-MD" in gap_texts  # the hidden curve is named
    # 3 seeds: the figure says they decide nothing
    assert "n = 3 seeds cannot decide any pair" in gap_texts
    verdict_texts = "\n".join(captured["verdicts"][0])
    assert "cannot decide any pair" in verdict_texts and "undecided" in verdict_texts and "lower" not in verdict_texts.split("\n")


def test_verdict_matrix_reads_row_against_column(tmp_path, monkeypatch):
    values = {a: [0.05 * (k + 1) + 0.001 * s for s in range(10)] for k, a in enumerate(ALGS)}
    captured = _draw_all(tmp_path, monkeypatch, values)
    texts, fig = captured["verdicts"]
    matrix = fig.axes[2]  # bottom-left: the duality gap's pair matrix
    algs = plots.ordered(ALGS)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in matrix.texts}
    for i, a in enumerate(algs):
        for j, b in enumerate(algs):
            if i == j:
                assert (i, j) not in cells
                continue
            expected = "lower" if ALGS.index(a) < ALGS.index(b) else "higher"
            assert cells[(i, j)].split("\n")[0] == expected, (a, b, cells[(i, j)])
            sign = "-" if expected == "lower" else "+"
            assert cells[(i, j)].split("\n")[2].startswith(f"Δ = {sign}"), cells[(i, j)]
    flat = " ".join("\n".join(texts).split())  # the title is wrapped to the figure's width
    assert "can decide a pair" in flat
    assert "Decided: 10 of 10 pairs (Gap$_\\beta$), 10 of 10 pairs (exploitability (β = 0))." in flat
    plt.close("all")


def test_short_runs_explain_their_rising_gaps_on_the_figure():
    rising = _metrics({a: [0.5, 0.5] for a in ALGS}, updates=(0, 2, 4))
    note = figures.rising_note(rising, updates=4)
    assert "final median gap above" in note and "before they fall" in note and "checks the pipeline" in note
    assert "before they fall" not in figures.rising_note(_metrics({a: [0.5, 0.5] for a in ALGS}, updates=(0, 40, 80)), updates=80)
    assert figures.rising_note(_metrics({a: [0.1, 0.1] for a in ALGS}, updates=(0, 2, 4)), updates=4) == ""


def test_lines_that_coincide_are_found_exactly():
    bands = pd.DataFrame([dict(algorithm=a, update=u, median=m, low=m, high=m) for a, base in (("egpo", 0.1), ("oipo1", 0.2), ("nashmd", 0.2))
                          for u, m in ((0, 0.4), (5, base))])
    assert plots.coinciding(bands) == [["oipo1", "nashmd"]]
    bands.loc[(bands["algorithm"] == "nashmd") & (bands["update"] == 5), "high"] = 0.21
    assert plots.coinciding(bands) == []
    assert plots.coinciding_note([]) == ""


# ----------------------------------------------------------------------------------------------
# the win-rate panel
# ----------------------------------------------------------------------------------------------


def test_win_rate_panel_marks_intervals_from_too_few_prompts():
    """The evaluation flags an interval over fewer than 30 prompts (``few_prompts``: the percentile
    bootstrap is then too narrow, 81–94 % coverage). The panel used to drop the flag and fill every band
    alike, so intervals over the benchmark's 16 prompts looked decisive: between models that differ by
    nothing but sampling they excluded 50 % (the issue's byte-identical pair, before the evaluation seeded
    sampling by content). Now the flag is kept, those bands are hatched outlines and the panel says why."""
    winrates = pd.DataFrame([
        dict(model=f"{a}/epoch-{e}", opponent="reference", algorithm=a, epoch=e, win_rate=0.58, ci_low=0.52, ci_high=0.64,
             n_pairs=160, n_missing=0, split=split, comparison="vs_reference", n_prompts=16, few_prompts=True)
        for a in ("oipo1", "nashmd") for e in (1, 2) for split in ("all", "report")
    ])
    tidy = plots.vs_reference_percent(winrates, "ours")
    assert tidy["few_prompts"].all() and (tidy["n_prompts"] == 16).all() and len(tidy) == 4
    fig = plots.plot_winrates_by_epoch(tidy)
    ax = fig.axes[0]
    bands = [c for c in ax.collections]
    assert bands and all(c.get_hatch() == "////" for c in bands)
    title = ax.get_title()
    assert "fewer than 30 prompts (16 here)" in title and "no evidence" in title
    assert "Online IPO 1 (OMD) = Nash-MD" in title  # identical rows: the hidden curve is named
    assert ax.get_ylabel() == r"win rate against $\pi_{\mathrm{ref}}$ (%)"
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# settings and the command line
# ----------------------------------------------------------------------------------------------


def test_full_setting_has_fifteen_seeds_and_short_is_its_online_runs_of_the_first_three():
    assert sb.DEFAULT.seeds == tuple(range(15))
    assert sb.SHORT.seeds == sb.DEFAULT.seeds[:3] and set(sb.SHORT.algorithms) < set(sb.DEFAULT.algorithms)
    for f in fields(sb.BenchmarkSettings):
        if f.name not in ("seeds", "algorithms"):
            assert getattr(sb.SHORT, f.name) == getattr(sb.DEFAULT, f.name), f.name  # the same runs, fewer of them
    pairs = len(sb.DEFAULT.algorithms) * (len(sb.DEFAULT.algorithms) - 1) // 2
    assert pairs == 55  # eleven algorithms: five online, six round methods
    # the full setting can decide (2/2^15 · 55 = 0.0034); 10 seeds could not (2/2^10 · 55 = 0.107)
    assert verdicts.smallest_p(len(sb.DEFAULT.seeds)) * pairs == pytest.approx(0.003357, abs=1e-6)
    assert verdicts.smallest_p(10) * pairs > 0.05
    assert verdicts.smallest_p(len(sb.SHORT.seeds)) * 10 > 0.05  # the short one cannot, and says so


def test_cli_short_and_fast_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        sb.main(["--out", str(tmp_path / "out"), "--short", "--fast"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "not allowed with argument" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_eleven_algorithms_keep_eleven_colours_and_shapes_their_legend_below_and_say_what_fifteen_seeds_decide(tmp_path, monkeypatch):
    algs = list(sb.DEFAULT.algorithms)
    assert len(algs) == 11
    values = {a: [0.02 * (k + 1) + 0.001 * s for s in range(15)] for k, a in enumerate(algs)}
    values["mpo"] = list(values["comal"])  # identical runs: drawn on top of each other, and named
    captured = _draw_all(tmp_path, monkeypatch, values)
    texts, fig = captured["gap_curves"]
    gap = fig.axes[0]
    lines = [line for line in gap.get_lines() if not line.get_label().startswith("_") and line.get_marker() != "None"]
    assert [line.get_label() for line in lines] == [plots.label(a) for a in algs]
    assert len({line.get_color() for line in lines}) == 11 and len({line.get_marker() for line in lines}) == 11
    assert all(line.get_markerfacecolor() == "none" for line in lines)  # hollow: a hidden curve's shape shows
    # the legend of eleven curves sits below the panels, not over a panel
    assert gap.get_legend() is None and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()][:11] == [line.get_label() for line in lines]
    joined = "\n".join(texts)
    assert "COMAL = MPO" in joined
    # 15 seeds, 55 pairs: every pair (0.02 apart on every seed but COMAL–MPO, equal) is decided but that one
    assert "Decided: 54 of 55 pairs" in joined and "n = 15" in joined
    texts, fig = captured["verdicts"]
    assert fig.get_size_inches()[0] >= 2 * 1.3 * 11  # the pair matrix grows with K (1.3 in a column)
    assert "Decided: 54 of 55 pairs" in "\n".join(texts)
