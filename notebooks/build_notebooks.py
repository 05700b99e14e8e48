"""Write the simulation notebooks of this folder (without outputs) from the cell sources below.

    python notebooks/build_notebooks.py            # rewrite every notebook
    python notebooks/build_notebooks.py --check    # exit 1 if a notebook differs from its source here

The notebooks are thin: computation lives in ``egpo_core`` (``analysis``, ``plotting``, ``presets``),
the cells call it and tell the story. Edit a notebook here and rebuild, or edit it in JupyterLab and
port the change back (``--check`` tells when they differ). Every notebook starts with a cell tagged
``parameters`` (papermill); ``fast = True`` shrinks the work to a few seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
import pandas as pd
from IPython.display import Image, display

from egpo_core import analysis, plotting

out = plotting.figure_dir(NOTEBOOK, out_dir)
pd.set_option("display.float_format", "{:.3g}".format)
print(f"writing figures and data to {out}")


def show(paths):
    """Display a figure written by plotting.save_figure (its PNG)."""
    display(Image(filename=str(paths[0])))
'''


def _parameters(source: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


def _notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


# ----------------------------------------------------------------------------------------------------
# one paper setting (exact neural, sampled tabular, sampled neural)

SETTING_STORY = {
    "sim_exact_neural": (
        "# Exact gradients, neural policy (SPEC §4)",
        "N = 100 responses; the policy is a small network (a learned input v ∈ R¹⁰ → 2 × [Linear(10, 10) + ReLU] "
        "→ Linear(10, 100)), trained with exact (all-pairs) gradients, β = 0.01, 10k SGD steps of rate 0.003. "
        "Under the reference conventions the 10 runs share one network (only the input differs), as in the "
        "paper's code, so the runs are coupled through the summed gradient; `conventions = \"default\"` gives "
        "each run its own network (see `sim_reference_vs_correct`).",
        "Expected: EGPO ends lowest; Online IPO 1 and Nash-MD follow; Online IPO 2 and Nash-MD-PG stay far "
        "above. With a network the step is no longer an exact mirror-descent step, so no run reaches 1e-6.",
    ),
    "sim_sampled_tabular": (
        "# Sampled gradients, tabular policy (SPEC §4)",
        "N = 10 logits, each step estimated from 100 sampled pairs, β = 0.01, 100k SGD steps of rate 2e-4. "
        "The noise floor of the gap is set by the step size; the five algorithms meet near it except "
        "Nash-MD-PG and, under the reference conventions, Nash-MD.",
        "The reference implementation normalizes sampled Nash-MD's mixture over the runs axis instead of the "
        "actions, which stalls it near a gap of 0.2; `conventions = \"default\"` normalizes over actions and "
        "Nash-MD then joins the others (see `sim_reference_vs_correct`).",
    ),
    "sim_sampled_neural": (
        "# Sampled gradients, neural policy (SPEC §4)",
        "N = 100 responses, the network policy, 100 sampled pairs per step, β = 0.1, 20k SGD steps of rate "
        "1e-3. Under the reference conventions the runs share one network.",
        "Expected: the four mirror-descent-type algorithms end close together (noise-dominated), Nash-MD-PG "
        "a little above; the picture is the same for every run.",
    ),
}


def setting_notebook(notebook: str, preset: str) -> nbformat.NotebookNode:
    title, intro, expected = SETTING_STORY[notebook]
    return _notebook([
        new_markdown_cell(f"{title}\n\n{intro}\n\nPreset `{preset}` of `egpo_core.presets`; the games are the "
                          "reference implementation's draws from seed 2018011309, so run k here is run k there."),
        _parameters(
            "fast = False                 # True: the preset's short horizon (tests, quick looks)\n"
            "conventions = \"reference\"    # \"reference\": the paper's code; \"default\": the corrected behaviour\n"
            f"preset = \"{preset}\"\n"
            "iterations = None            # override the preset's number of updates\n"
            "runs = None                  # override the number of games (others than the paper's then)\n"
            "seed = None                  # override the paper's seed (other games)\n"
            "max_steps = 500              # steps kept in the tidy data file (evenly spaced, first and last included)\n"
            "dpi = 64\n"
            "out_dir = None               # None: <repository>/figures/" + notebook
        ),
        new_code_cell(f'NOTEBOOK = "{notebook}"\n' + SETUP),
        new_markdown_cell("## Simulate\n\nAll five paper algorithms on all runs, in one batched call."),
        new_code_cell(
            "result = analysis.run_preset(preset, conventions=conventions, fast=fast, iterations=iterations,\n"
            "                             runs=runs, seed=seed)\n"
            "print(result.settings)"
        ),
        new_markdown_cell(
            "## One panel per run\n\nDuality gap on a log axis, 10-step moving average, each curve cut at its "
            "first value below 1e-6; dashed for exact gradients, solid for sampled ones.\n\n" + expected
        ),
        new_code_cell(
            "fig = plotting.plot_gap_panels(result, ncols=5)\n"
            "plotting.add_title(fig, f\"{preset} ({conventions} conventions)\")\n"
            "# (no dots in figure stems: save_figure replaces everything after the last dot by the format)\n"
            "show(plotting.save_figure(fig, out / f\"panels_{preset}\".replace(\".\", \"_\"), dpi=dpi))"
        ),
        new_markdown_cell(
            "## Median final gap beside the reference implementation\n\n`median_final` is the median over runs "
            "of the gap after the last update, `reached` the number of runs whose gap fell below 1e-6; "
            "`reference_*` are SPEC §4's numbers (reference implementation, CPU). They are comparable under "
            "`conventions = \"reference\"` at the full horizon."
        ),
        new_code_cell(
            "table = analysis.summary_vs_reference(result, preset)\n"
            "table.to_csv(out / \"summary.csv\", index=False)\n"
            "display(table)"
        ),
        new_markdown_cell("## Tidy data\n\nThe recorded gaps at `max_steps` evenly spaced steps (always t = 0 and "
                          "the last), one row per (algorithm, run, step)."),
        new_code_cell(
            "tidy = analysis.thin(result, max_steps).to_dataframe()\n"
            "tidy.insert(0, \"preset\", preset)\n"
            "tidy.to_parquet(out / f\"metrics_{preset}.parquet\", index=False)\n"
            "print(len(tidy), \"rows;\", sorted(p.name for p in out.iterdir()))"
        ),
    ])


# ----------------------------------------------------------------------------------------------------
# exact tabular: three β


def exact_tabular_notebook() -> nbformat.NotebookNode:
    return _notebook([
        new_markdown_cell(
            "# Exact gradients, tabular policy: three values of β (SPEC §4)\n\n"
            "N = 10 logits, exact (all-pairs) gradients, the paper's three settings: β = 0.1 (1k updates, "
            "lr 0.1), β = 0.01 (5k, lr 0.02), β = 0.001 (100k, lr 2e-4). One plain SGD step of rate lr on the "
            "exact Online IPO 1 loss is a mirror-descent step with ηβ = 4·lr/N, so these runs are exact "
            "mirror-descent trajectories.\n\n"
            "The story: at β = 0.1 Online IPO 1 and EGPO converge fast, Online IPO 2 more slowly, Nash-MD stops "
            "at its biased fixed point and Nash-MD-PG crawls; as β shrinks the single-step methods (Online IPO 1 "
            "= OMD, Nash-MD) start to cycle and only EGPO keeps converging linearly in the last iterate, "
            "reaching 1e-6 in every run at every β."
        ),
        _parameters(
            "fast = False                 # True: the presets' short horizons (tests, quick looks)\n"
            "conventions = \"reference\"    # \"reference\": the paper's code; \"default\": the corrected behaviour\n"
            "presets = [\"exact-tabular-beta0.1\", \"exact-tabular-beta0.01\", \"exact-tabular-beta0.001\"]\n"
            "iterations = None            # override every preset's number of updates\n"
            "runs = None                  # override the number of games (others than the paper's then)\n"
            "seed = None                  # override the paper's seed (other games)\n"
            "picked_run = 0               # the run shown in the one-row figure\n"
            "max_steps = 500              # steps kept per preset in the tidy data files\n"
            "dpi = 64\n"
            "out_dir = None               # None: <repository>/figures/sim_exact_tabular"
        ),
        new_code_cell('NOTEBOOK = "sim_exact_tabular"\n' + SETUP),
        new_markdown_cell("## Simulate the three settings"),
        new_code_cell(
            "results = {\n"
            "    name: analysis.run_preset(name, conventions=conventions, fast=fast, iterations=iterations,\n"
            "                              runs=runs, seed=seed)\n"
            "    for name in presets\n"
            "}\n"
            "for name, res in results.items():\n"
            "    print(name, res.settings[\"iterations\"], \"updates,\", res.runs, \"runs\")"
        ),
        new_markdown_cell(
            "## One figure per β, one panel per run\n\nDuality gap (log axis), 10-step moving average, curves "
            "cut at 1e-6 (so a curve that stops early has converged)."
        ),
        new_code_cell(
            "for name, res in results.items():\n"
            "    fig = plotting.plot_gap_panels(res, ncols=5)\n"
            "    plotting.add_title(fig, f\"{name} ({conventions} conventions)\")\n"
            "    # (no dots in figure stems: save_figure replaces everything after the last dot by the format)\n"
            "    show(plotting.save_figure(fig, out / f\"panels_{name}\".replace(\".\", \"_\"), dpi=dpi))"
        ),
        new_markdown_cell("## The one-row \"picked\" figure\n\nOne run (run 0 in the paper) for each β side by side."),
        new_code_cell(
            "picked = {rf\"$\\beta={res.configs['beta'].iloc[0]:g}$\": res for res in results.values()}\n"
            "fig = plotting.plot_picked(picked, run=picked_run)\n"
            "show(plotting.save_figure(fig, out / \"picked\", dpi=100))"
        ),
        new_markdown_cell(
            "## Median final gap beside the reference implementation\n\n`reference_median` / "
            "`reference_reached` are SPEC §4's numbers (0 stands for \"~0\"); comparable under "
            "`conventions = \"reference\"` at the full horizons. The reference ran in float32, this simulator in "
            "float64, so gaps far below 1e-6 differ in their digits but not in what they say."
        ),
        new_code_cell(
            "table = pd.concat([analysis.summary_vs_reference(res, name) for name, res in results.items()],\n"
            "                  ignore_index=True)\n"
            "table.to_csv(out / \"summary.csv\", index=False)\n"
            "display(table)"
        ),
        new_markdown_cell("## Tidy data\n\nOne file per setting: the recorded gaps at `max_steps` evenly spaced "
                          "steps (t = 0 and the last always included)."),
        new_code_cell(
            "for name, res in results.items():\n"
            "    tidy = analysis.thin(res, max_steps).to_dataframe()\n"
            "    tidy.insert(0, \"preset\", name)\n"
            "    tidy.to_parquet(out / f\"metrics_{name}.parquet\", index=False)\n"
            "print(sorted(p.name for p in out.iterdir()))"
        ),
    ])


# ----------------------------------------------------------------------------------------------------
# reference vs corrected conventions


def reference_vs_correct_notebook() -> nbformat.NotebookNode:
    return _notebook([
        new_markdown_cell(
            "# The reference implementation's conventions vs the corrected ones\n\n"
            "The paper's figures come from code with three choices that differ from the algorithms as "
            "written (SPEC §3). `egpo_core` reproduces them under `conventions=\"reference\"` and corrects "
            "them under `conventions=\"default\"`:\n\n"
            "1. **Nash-MD mixture coefficient.** Theory: c = ηβ = 4·lr/N. Reference: c = 2·lr/N, half of it. "
            "Visible in the exact tabular settings, mostly at β = 0.1 and 0.01.\n"
            "2. **Sampled Nash-MD normalization.** The reference normalizes the geometric mixture over the "
            "runs axis instead of the actions, so the opponent is not a distribution over responses; sampled "
            "Nash-MD then stalls near a gap of 0.2. Normalized over actions it behaves like the others.\n"
            "3. **Shared network.** In the neural settings the reference trains one network for all runs (only "
            "the learned input differs), coupling the runs through the summed gradient. With one network per "
            "run (default) the exact neural runs converge much further.\n\n"
            "Each paper setting is run under both conventions on the same games; the other algorithms "
            "(Online IPO 1 and 2, EGPO, and Nash-MD-PG apart from its mixture) are unaffected in the tabular "
            "settings."
        ),
        _parameters(
            "fast = False                 # True: the presets' short horizons (tests, quick looks)\n"
            "presets = [\"exact-tabular-beta0.1\", \"exact-tabular-beta0.01\", \"exact-tabular-beta0.001\",\n"
            "           \"exact-neural-beta0.01\", \"sampled-tabular-beta0.01\", \"sampled-neural-beta0.1\"]\n"
            "conventions = [\"reference\", \"default\"]\n"
            "iterations = None            # override every preset's number of updates\n"
            "runs = None\n"
            "seed = None\n"
            "dpi = 80\n"
            "out_dir = None               # None: <repository>/figures/sim_reference_vs_correct"
        ),
        new_code_cell('NOTEBOOK = "sim_reference_vs_correct"\n' + SETUP),
        new_markdown_cell("## Simulate every setting under both conventions"),
        new_code_cell(
            "results = {\n"
            "    name: {conv: analysis.run_preset(name, conventions=conv, fast=fast, iterations=iterations,\n"
            "                                     runs=runs, seed=seed) for conv in conventions}\n"
            "    for name in presets\n"
            "}"
        ),
        new_markdown_cell(
            "## Median gap over runs, side by side\n\nOne row per setting, one column per conventions value; "
            "the line is the median over the runs of the 10-step moving average, the band the inter-quartile "
            "range. Look at Nash-MD (green) in the sampled tabular row and at every algorithm in the neural "
            "rows."
        ),
        new_code_cell(
            "curves = pd.concat(\n"
            "    [analysis.median_curves(by_conv).assign(setting=name) for name, by_conv in results.items()],\n"
            "    ignore_index=True,\n"
            ")\n"
            "curves.to_parquet(out / \"median_curves.parquet\", index=False)\n"
            "fig = plotting.plot_median_grid(curves, col=\"label\", row=\"setting\", panel_width=6.0, panel_height=3.2)\n"
            "show(plotting.save_figure(fig, out / \"median_gap_grid\", dpi=dpi))"
        ),
        new_markdown_cell(
            "## Median final gap under each conventions value\n\n`ratio` = reference / default. Medians of "
            "exactly 0 (the gap underflowed) are drawn at 1e-17."
        ),
        new_code_cell(
            "table = analysis.conventions_table(results)\n"
            "table.to_csv(out / \"conventions_table.csv\", index=False)\n"
            "display(table)\n"
            "fig = plotting.plot_conventions_dumbbell(table, tuple(conventions))\n"
            "show(plotting.save_figure(fig, out / \"median_final_dumbbell\", dpi=dpi))"
        ),
        new_markdown_cell(
            "Reading the table: the sampled tabular Nash-MD row shows the normalization bug (≈ 0.2 against "
            "≈ 2e-3 at the full horizon); the exact tabular Nash-MD rows show the mixture coefficient (the "
            "reference's halved c leaves a smaller bias at Nash-MD's fixed point); the neural rows show what "
            "sharing one network across runs costs."
        ),
    ])


# ----------------------------------------------------------------------------------------------------
# theory checks


def theory_notebook() -> nbformat.NotebookNode:
    return _notebook([
        new_markdown_cell(
            "# Theory checks\n\n"
            "Three numerical checks of what the papers claim (SPEC §2), on random games (exact tabular "
            "gradients, N = 10):\n\n"
            "- **(a) Rates over the (η, β) plane.** EGPO converges linearly in the last iterate to π*_β at a "
            "rate about (1 − ηβ)^t for η small enough; OMD (Online IPO 1) oscillates when β is small. For each "
            "algorithm and each (η, β) we measure the slope of log Gap_β(π_t) and classify the run as "
            "converging, plateauing at a biased point, slowly falling, oscillating or diverging — a map none "
            "of the papers draws. The measured slopes are compared with the theory's log(1 − ηβ) and with the "
            "exact local rate 2·log ρ, ρ the spectral radius of the linearized update at π*_β (the gap is "
            "quadratic in the distance to π*_β, hence the factor 2).\n"
            "- **(b) β → 0.** With β tuned to the horizon T, the last iterate should approach a Nash "
            "equilibrium of the original game; exploitability max_y (Pπ)_y − ½ measures how far (0 exactly at "
            "an equilibrium; the LP gives one).\n"
            "- **(c) More algorithms.** MPO (magnetic mirror descent, with and without magnet resets), SPPO "
            "(multiplicative weights, unregularized) and OMWU (optimistic) beside the paper's five."
        ),
        _parameters(
            "fast = False           # True: a small grid and short horizons (tests, quick looks)\n"
            "seed = 0               # random games for (a) and (b)\n"
            "num_actions = 10\n"
            "runs = None            # games per cell (None: 10, or 3 when fast)\n"
            "# (a) rate map\n"
            "etas = None            # None: 0.1 … 1000 (3 values when fast)\n"
            "betas = None           # None: 1 … 0.001 (3 values when fast)\n"
            "rate_iterations = None # None: 2000 (300 when fast)\n"
            "# (b) beta -> 0\n"
            "b_eta = 1.0\n"
            "b_iterations = None    # horizon of the beta sweep (None: 3000, 300 when fast)\n"
            "b_betas = None         # None: 1 … 1e-4\n"
            "horizons = None        # None: 100 … 10000 (100, 300 when fast)\n"
            "beta_horizon = 5.0     # beta_T is beta_horizon over T\n"
            "# (c) extra algorithms\n"
            "extra_preset = \"exact-tabular-beta0.1\"\n"
            "extra_iterations = None  # None: 5000 (200 when fast)\n"
            "magnet_period = 50\n"
            "dpi = 100\n"
            "out_dir = None         # None: <repository>/figures/theory_checks"
        ),
        new_code_cell(
            'NOTEBOOK = "theory_checks"\n' + SETUP + "\n"
            "import numpy as np\n"
            "from egpo_core.algorithms import PAPER_ALGORITHMS\n"
            "from egpo_core.games import random_games\n\n"
            "ALL = list(PAPER_ALGORITHMS) + [\"mpo\", \"sppo\", \"omwu\"]\n"
            "runs = runs or (3 if fast else 10)\n"
            "etas = etas or ([0.3, 3.0, 30.0] if fast else [0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000])\n"
            "betas = betas or ([0.3, 0.03, 0.003] if fast else [1, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001])\n"
            "rate_iterations = rate_iterations or (300 if fast else 2000)\n"
            "b_iterations = b_iterations or (300 if fast else 3000)\n"
            "b_betas = b_betas or ([0.1, 0.01, 0.001] if fast else [1, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4])\n"
            "horizons = horizons or ([100, 300] if fast else [100, 300, 1000, 3000, 10000])\n"
            "extra_iterations = extra_iterations or (200 if fast else 5000)\n\n"
            "rng = np.random.default_rng(seed)\n"
            "P = random_games(runs, num_actions, rng)\n"
            "ref_logits = rng.normal(size=(runs, num_actions))"
        ),
        new_markdown_cell(
            "## (a) Measured rates over the (η, β) plane\n\n"
            "`analysis.rate_sweep` runs every cell of the grid (one batched `sweep` per β), measures each "
            "run's log-gap slope (`analysis.log_gap_slope`: least squares over the second half of the decay) "
            "and class (`analysis.classify_trajectories`), and adds the linearized prediction. Runs that "
            "overflow (NaN/inf gaps, typically ηβ > 2) are classed as diverging. Right of the black staircase "
            "ηβ > 1: the theory's step has no meaning there, Nash-MD's mixture is capped at c = 1."
        ),
        new_code_cell(
            "rates = analysis.rate_sweep(P, ref_logits, ALL, etas=etas, betas=betas, iterations=rate_iterations)\n"
            "rates.to_parquet(out / \"rate_table.parquet\", index=False)\n"
            "cells = analysis.rate_map(rates)\n"
            "cells.to_csv(out / \"rate_map.csv\", index=False)\n"
            "fig = plotting.plot_rate_map(cells, ALL)\n"
            "show(plotting.save_figure(fig, out / \"rate_map\", dpi=dpi))"
        ),
        new_markdown_cell(
            "Numbers in the cells: measured slope / log(1 − ηβ) for the converging cells. About 2 for EGPO, "
            "OMWU, OMD and MPO at small ηβ and β ≥ 0.03: the gap is quadratic in the distance to π*_β, which "
            "contracts like (1 − ηβ)^t, so the theory's rate holds as a bound with room to spare. Larger at small "
            "β, where the fit still catches the faster nonlinear start; smaller where ηβ approaches 1 or the "
            "step is not a mirror-descent step (Online IPO 2). EGPO and OMWU converge in a much larger region "
            "than OMD, Nash-MD and Online IPO 2 as β shrinks; Nash-MD plateaus at its biased fixed point; MPO's "
            "proximal step never overflows; SPPO, unregularized, does not converge to π*_β at all. "
            "\"Oscillates\" also covers runs too slow to tell at this horizon (tiny ηβ).\n\n"
            "Measured against predicted slopes, cell by cell (median over runs):"
        ),
        new_code_cell(
            "fig = plotting.plot_slope_comparison(cells)\n"
            "show(plotting.save_figure(fig, out / \"slopes_vs_theory\", dpi=dpi))\n"
            "conv = cells[(cells[\"class\"] == \"converges\") & np.isfinite(cells[\"predicted_slope\"])]\n"
            "display(conv.assign(measured_over_predicted=conv[\"slope\"] / conv[\"predicted_slope\"])\n"
            "       .groupby(\"algorithm\")[\"measured_over_predicted\"].describe()[[\"count\", \"min\", \"50%\", \"max\"]])"
        ),
        new_markdown_cell(
            "## (b) β → 0: the original game's Nash equilibrium\n\n"
            "Left: final exploitability after a fixed horizon for a range of β (step η fixed). The black line "
            "is the exploitability of π*_β itself — the bias a method converging to π*_β cannot beat; it "
            "shrinks roughly in proportion to β. Right: β tuned to the horizon, β_T = `beta_horizon`/T, so "
            "that (1 − ηβ_T)^T is the same at every T; a last-iterate-convergent method then follows the bias "
            "line down, polynomially in T. The LP Nash equilibrium (`equilibria.nash_equilibrium`) has "
            "exploitability ≈ 0 (column `nash_exploitability`)."
        ),
        new_code_cell(
            "by_beta = analysis.final_metrics_vs_beta(P, ref_logits, ALL, betas=b_betas, eta=b_eta,\n"
            "                                         iterations=b_iterations)\n"
            "by_beta.to_csv(out / \"exploitability_vs_beta.csv\", index=False)\n"
            "by_horizon = analysis.horizon_tuned_exploitability(P, ref_logits, ALL, horizons=horizons, eta=b_eta,\n"
            "                                                   beta_horizon=beta_horizon)\n"
            "by_horizon.to_csv(out / \"exploitability_vs_horizon.csv\", index=False)\n"
            "import matplotlib.pyplot as plt\n"
            "fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))\n"
            "plotting.plot_final_metric(by_beta, \"beta\", ax=axes[0],\n"
            "                           title=f\"T = {b_iterations}, η = {b_eta:g}\")\n"
            "plotting.plot_final_metric(by_horizon, \"horizon\", ax=axes[1], power=-1.0,\n"
            "                           title=f\"β = {beta_horizon:g}/T, η = {b_eta:g}\")\n"
            "show(plotting.save_figure(fig, out / \"beta_to_zero\", dpi=dpi))\n"
            "print(\"largest LP exploitability:\", by_beta[\"nash_exploitability\"].abs().max())\n"
            "display(by_horizon.groupby([\"horizon\", \"algorithm\"])[\"exploitability\"].median().unstack())"
        ),
        new_markdown_cell(
            "EGPO and OMWU track the bias of π*_β all the way down (exploitability ∝ 1/T with β ∝ 1/T); the "
            "single-step methods do for large β only and start to cycle once β is small, so their "
            "exploitability stops improving.\n\n"
            "## (c) MPO, SPPO and OMWU beside the paper's five\n\n"
            "The games and step of a paper preset (`extra_preset`), a longer horizon, and both the regularized "
            "gap and the original game's exploitability. MPO runs twice: with the magnet fixed at π_ref (it "
            "then converges to π*_β like the others) and with the magnet reset to π_t every `magnet_period` "
            "steps, which moves its limit toward the original game's Nash equilibrium — lower exploitability "
            "than π*_β, at the price of a large regularized gap. SPPO is drawn twice too: its last iterate "
            "and its average iterate π̄_t = Σ_{s≤t} π_s/(t+1) (metrics `average_duality_gap`, "
            "`average_exploitability`), the one its no-regret guarantee is about."
        ),
        new_code_cell(
            "metrics = (\"duality_gap\", \"exploitability\")\n"
            "base = analysis.run_preset(extra_preset, algorithms=ALL, fast=fast, iterations=extra_iterations,\n"
            "                           metrics=metrics + tuple(f\"average_{m}\" for m in metrics))\n"
            "reset = analysis.run_preset(extra_preset, algorithms=[\"mpo\"], fast=fast, iterations=extra_iterations,\n"
            "                            metrics=metrics, magnet_period=magnet_period)\n"
            "frames = []\n"
            "for metric in metrics:\n"
            "    part = analysis.median_curves({\"\": base, f\"reset every {magnet_period}\": reset}, metric)\n"
            "    part[\"metric\"] = metric.replace(\"_\", \" \")\n"
            "    part[\"series\"] = [a if not lab else f\"MPO ({lab})\" for a, lab in zip(part[\"algorithm\"], part[\"label\"])]\n"
            "    # SPPO's guarantee is about its average iterate: draw it beside the last one.\n"
            "    average = analysis.median_curves({\"\": base}, f\"average_{metric}\", algorithms=[\"sppo\"])\n"
            "    average[\"metric\"] = metric.replace(\"_\", \" \")\n"
            "    average[\"series\"] = \"SPPO (average iterate)\"\n"
            "    frames += [part, average]\n"
            "extra = pd.concat(frames, ignore_index=True)\n"
            "extra.to_parquet(out / \"extra_algorithms_curves.parquet\", index=False)\n"
            "fig = plotting.plot_median_grid(extra, col=\"metric\", series=\"series\", ylabel=\"\", sharey=False,\n"
            "                                panel_width=6.0, panel_height=4.2)\n"
            "plotting.add_title(fig, f\"{extra_preset} games, {base.settings['iterations']} updates\")\n"
            "show(plotting.save_figure(fig, out / \"extra_algorithms\", dpi=dpi))\n"
            "final = pd.concat([base.summary(m).assign(metric=m) for m in metrics] +\n"
            "                  [reset.summary(m).assign(metric=m, algorithm=f\"mpo (reset every {magnet_period})\")\n"
            "                   for m in metrics], ignore_index=True)\n"
            "final = final.pivot(index=\"algorithm\", columns=\"metric\", values=\"median_final\")\n"
            "final.to_csv(out / \"extra_algorithms_final.csv\")\n"
            "display(final)"
        ),
    ])


# ----------------------------------------------------------------------------------------------------
# benchmarks


def benchmarks_notebook() -> nbformat.NotebookNode:
    return _notebook([
        new_markdown_cell(
            "# Simulator speed\n\n"
            "How long the batched simulator (`egpo_core.simulate`, one compiled loop over every trajectory, "
            "parallel over trajectories) takes for each paper preset — all five algorithms on all ten runs — "
            "and how the time scales with the number of responses N, the number of runs and the number of "
            "steps. The first call of each kind loads the compiled kernel and is not timed. The reference "
            "implementation needs about 15 minutes for the six presets on a 2-core CPU (SPEC's re-run)."
        ),
        _parameters(
            "fast = False               # True: the presets' short horizons and a small scaling grid\n"
            "conventions = \"reference\"\n"
            "repeats = 1                # best of this many calls per measurement\n"
            "dpi = 100\n"
            "out_dir = None             # None: <repository>/figures/benchmarks"
        ),
        new_code_cell(
            'NOTEBOOK = "benchmarks"\n' + SETUP + "\n"
            "import os\n"
            "import platform\n\n"
            "print(platform.processor() or platform.machine(), os.cpu_count(), \"cores\")"
        ),
        new_markdown_cell("## The paper presets"),
        new_code_cell(
            "presets = analysis.time_presets(fast=fast, conventions=conventions, repeats=repeats)\n"
            "presets.to_csv(out / \"presets_timing.csv\", index=False)\n"
            "display(presets)\n"
            "print(f\"all six presets: {presets['seconds'].sum():.1f} s\")"
        ),
        new_markdown_cell(
            "## Scaling\n\nEGPO (two preference evaluations per step), exact tabular gradients, random games; "
            "from a base case vary one of N, runs and steps. A step costs O(N²) per trajectory (the product "
            "Pπ), so time should grow about linearly in runs and steps and up to quadratically in N."
        ),
        new_code_cell(
            "base = dict(num_actions=10, runs=10, iterations=300 if fast else 3000)\n"
            "sizes = {\n"
            "    \"N\": [10, 30, 100] if fast else [10, 30, 100, 300, 1000],\n"
            "    \"runs\": [10, 30, 100] if fast else [10, 30, 100, 300, 1000],\n"
            "    \"steps\": [300, 1000, 3000] if fast else [1000, 3000, 10000, 30000],\n"
            "}\n"
            "key = {\"N\": \"num_actions\", \"runs\": \"runs\", \"steps\": \"iterations\"}\n"
            "grid = [{**base, key[vary]: size, \"vary\": vary} for vary, values in sizes.items() for size in values]\n"
            "scaling = analysis.time_scaling(grid, repeats=repeats)\n"
            "scaling.to_csv(out / \"scaling.csv\", index=False)\n"
            "display(scaling)\n"
            "fig = plotting.plot_benchmarks(presets, scaling)\n"
            "show(plotting.save_figure(fig, out / \"benchmarks\", dpi=dpi))"
        ),
    ])


def notebooks() -> dict[str, nbformat.NotebookNode]:
    """Every notebook of this folder, by file stem."""
    return {
        "sim_exact_tabular": exact_tabular_notebook(),
        "sim_exact_neural": setting_notebook("sim_exact_neural", "exact-neural-beta0.01"),
        "sim_sampled_tabular": setting_notebook("sim_sampled_tabular", "sampled-tabular-beta0.01"),
        "sim_sampled_neural": setting_notebook("sim_sampled_neural", "sampled-neural-beta0.1"),
        "sim_reference_vs_correct": reference_vs_correct_notebook(),
        "theory_checks": theory_notebook(),
        "benchmarks": benchmarks_notebook(),
    }


def _text(nb: nbformat.NotebookNode) -> str:
    for k, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{k}"  # stable ids: rebuilding gives identical files
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a notebook differs")
    args = parser.parse_args(argv)
    stale = []
    for stem, nb in notebooks().items():
        nbformat.validate(nb)
        path = HERE / f"{stem}.ipynb"
        text = _text(nb)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("differ from build_notebooks.py: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
