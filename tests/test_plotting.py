"""Paper-style curves and figure files.

Oracles: trailing moving averages and bin envelopes computed by hand (1e-12 relative); the figure's
layout read back from matplotlib (limits, labels, z-order, text extents after drawing); the PNG's dpi
from its header; the backend from a fresh interpreter.
"""

import subprocess
import sys

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from egpo_core import plotting, simulate
from egpo_core.games import random_games
from egpo_core.plotting import gap_curve, plot_gap_panels, plot_picked, save_figure
from egpo_core.summaries import bin_curve, moving_average, records_per_window


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    P, ref = random_games(4, 5, rng), rng.normal(size=(4, 5))
    return simulate(P, ref, ["oipo1", "egpo", "nash_md"], beta=0.1, lr=0.05, iterations=300, progress=False)


def test_importing_plotting_leaves_the_backend_alone():
    code = ("import matplotlib; matplotlib.use('svg'); import egpo_core.plotting; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_moving_average_is_trailing_and_starts_at_the_first_record():
    values = np.array([4.0, 2.0, 6.0, 8.0, 1e-15])
    # by hand: means of the last (up to) 3 records
    expected = [4.0, 3.0, 4.0, 16 / 3, (6.0 + 8.0 + 1e-15) / 3]
    np.testing.assert_allclose(moving_average(values, 3), expected, rtol=1e-12)
    np.testing.assert_array_equal(moving_average(values, 1), values)
    tiny = np.array([1.0, 1.0, 1e-15, 1e-15, 1e-15])  # a direct sum keeps the small values' digits
    assert moving_average(tiny, 3)[-1] == pytest.approx(1e-15, rel=1e-12)


def test_window_counts_steps_when_records_are_sparse():
    # record_every = 10: a 10-step window is one record, so the curve starts at t = 0, not t = 90
    steps = np.arange(0, 1001, 10)
    values = np.exp(-steps / 200.0)
    assert records_per_window(steps, 10) == 1 and records_per_window(steps, 50) == 5
    curve = gap_curve(steps, values, window=10, cutoff=1e-12, max_points=1000)
    assert curve.steps[0] == 0
    np.testing.assert_allclose(curve.value, values, rtol=1e-12)
    dense = gap_curve(np.arange(1001), np.exp(-np.arange(1001) / 200.0), window=10, cutoff=1e-12,
                      max_points=2000)
    assert dense.steps[0] == 0 and dense.value[9] == pytest.approx(np.exp(-np.arange(10) / 200.0).mean())


def test_gap_curve_ends_on_the_cutoff_line_and_drops_nothing_above_it():
    steps = np.arange(400)
    values = np.exp(-steps / 20.0)
    values[300:] = 0.0  # an exact zero
    curve = gap_curve(steps, values, window=1, cutoff=1e-6, max_points=1000)
    first_below = np.flatnonzero(values < 1e-6)[0]
    assert curve.steps[-1] == first_below and curve.value[-1] == 1e-6
    np.testing.assert_allclose(curve.value[:-1], values[:first_below], rtol=1e-12)
    assert np.min(curve.low) == 1e-6  # nothing drawn below the cutoff
    diverged = np.array([0.5, 0.4, np.inf, np.nan])
    assert gap_curve(np.arange(4), diverged, window=1).steps.tolist() == [0, 1]


def test_bin_curve_envelope_does_not_alias_an_oscillation():
    steps = np.arange(10_000)
    values = 0.5 + 0.4 * np.sin(2 * np.pi * steps / 7)  # period 7 steps, far below the bin width
    x, mean, low, high = bin_curve(steps, values, 100)
    assert x.size == 100
    assert x[0] == 0 and x[-1] == 9999  # the first and last records are bins of their own
    inner = slice(1, -1)
    np.testing.assert_allclose(mean[inner], 0.5, atol=0.01)  # the bin means average the oscillation out
    np.testing.assert_allclose(low[inner], values.min(), atol=0.01)  # the envelope keeps its extent
    np.testing.assert_allclose(high[inner], values.max(), atol=0.01)
    width = (10_000 - 2) // 98
    np.testing.assert_allclose(x[1], steps[1:1 + width].mean())


def test_gap_panels_share_one_readable_axis_with_a_median_panel(result):
    fig = plot_gap_panels(result, title="a finding")
    panels = [ax for ax in fig.axes if ax.has_data()]
    assert len(panels) == 1 + result.runs  # the median panel and one per run
    assert panels[0].get_title().startswith("median of 4 runs")
    for ax in panels:
        assert ax.get_ylim() == (1e-6, 1.0)
    for ax in (panels[0], panels[4]):  # the first column carries the tick labels
        assert ax.get_yticklabels()[0].get_text() == r"$\leq 10^{-6}$"
    # axis labels once per row (y) and column (x): 5 data panels in rows of 4
    assert [bool(ax.get_ylabel()) for ax in panels] == [True, False, False, False, True]
    assert [bool(ax.get_xlabel()) for ax in panels] == [False, True, True, True, True]
    # EGPO on top of the others, with markers
    for ax in panels:
        top = max(ax.lines, key=lambda line: line.get_zorder())
        assert top.get_label() == "EGPO" and top.get_marker() == "o"
    # a legend for the algorithms and the line style
    legend = [t.get_text() for lg in (ax.get_legend() for ax in fig.axes) if lg for t in lg.get_texts()]
    assert "EGPO" in legend and "exact gradients" in legend
    # readable at the saved 150 dpi: no text below 8 points
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
    assert min(sizes) >= 8
    matplotlib.pyplot.close(fig)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("how", ["title argument", "suptitle afterwards (the CLI)"])
def test_suptitle_does_not_collide_with_panel_titles(result, how):
    if how == "title argument":
        fig = plot_gap_panels(result, title="a long finding " * 20)  # wider than the figure: wrapped
    else:
        fig = plot_gap_panels(result)
        fig.suptitle("runs/mine/games.txt", y=1.0)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig._suptitle.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1  # nothing cut off at the sides
    for ax in fig.axes:
        assert not _overlaps(box, ax.title.get_window_extent(renderer)), ax.get_title()
    matplotlib.pyplot.close(fig)


def test_picked_draws_egpo_on_top_and_explains_the_line_style(result):
    fig = plot_picked({"first": result, "second": result}, title="a finding")
    for ax in fig.axes:
        assert ax.get_ylim() == (1e-6, 1.0)
        assert max(ax.lines, key=lambda line: line.get_zorder()).get_label() == "EGPO"
        assert r"$\eta$" in ax.get_title()  # the step η is stated beside β
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[-1] == "exact gradients" and labels[:3] == ["Online IPO 1 (OMD)", "EGPO", "Nash-MD"]
    matplotlib.pyplot.close(fig)


def test_save_figure_keeps_dots_writes_both_formats_at_150_dpi(tmp_path, result):
    written = save_figure(plot_gap_panels(result), tmp_path / "gap_beta0.1")
    assert sorted(p.name for p in written) == ["gap_beta0.1.pdf", "gap_beta0.1.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert len(list(tmp_path.iterdir())) == 2  # no temporary file left
    with Image.open(tmp_path / "gap_beta0.1.png") as image:
        assert min(image.info["dpi"]) == pytest.approx(150, abs=0.5)


def test_final_metric_draws_egpo_on_top_with_hollow_markers():
    frame = pd.DataFrame({"algorithm": ["omwu", "egpo"] * 2, "beta": [0.1, 0.1, 0.01, 0.01],
                          "exploitability": [0.1, 0.1, 0.01, 0.01], "equilibrium_exploitability": [0.1] * 2 + [0.01] * 2})
    fig = plotting.plot_final_metric(frame)
    ax = fig.axes[0]
    # EGPO above every algorithm (the thin dashed reference line of π*_β stays visible above it)
    algorithms = [line for line in ax.lines if line.get_label() in ("EGPO", "OMWU")]
    top = max(algorithms, key=lambda line: line.get_zorder())
    assert top.get_label() == "EGPO" and top.get_markerfacecolor() == "none"
    reference = next(line for line in ax.lines if "itself" in line.get_label())
    assert reference.get_zorder() > top.get_zorder() and reference.get_linestyle() == "--"
    matplotlib.pyplot.close(fig)


def test_save_figure_takes_the_png_path_and_writes_the_pdf_beside(tmp_path, result):
    written = save_figure(plot_gap_panels(result), tmp_path / "sub" / "gap_curves.png", dpi=130, bbox_inches="tight")
    assert [p.name for p in written] == ["gap_curves.png", "gap_curves.pdf"]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["gap_curves.pdf", "gap_curves.png"]
    with Image.open(written[0]) as image:
        assert min(image.info["dpi"]) == pytest.approx(130, abs=0.5)


def test_every_curve_has_its_algorithms_declared_colour(result):
    from matplotlib.colors import to_hex

    from egpo_core.algorithms import algorithm_color

    fig = plot_gap_panels(result)
    by_label = {line.get_label(): to_hex(line.get_color()) for line in fig.axes[0].lines}
    assert by_label == {"Online IPO 1 (OMD)": algorithm_color("oipo1"), "EGPO": algorithm_color("egpo"),
                        "Nash-MD": algorithm_color("nash_md")}
    assert by_label["EGPO"] == "#9467bd"  # tab10's purple, as before the colours were declared
    matplotlib.pyplot.close(fig)
