# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exact gradients, tabular policy: three values of β
#
# N = 10 logits, exact (all-pairs) gradients, the paper's three settings: β = 0.1 (1k updates, lr 0.1), β =
# 0.01 (5k, lr 0.02), β = 0.001 (100k, lr 2e-4). One plain SGD step of rate lr on the exact Online IPO 1 loss
# is a mirror-descent step with ηβ = 4·lr/N, so these runs are exact mirror-descent trajectories.
#
# The story: at β = 0.1 Online IPO 1 and EGPO converge fast, Online IPO 2 more slowly, Nash-MD stops at its
# biased fixed point and Nash-MD-PG crawls; as β shrinks the single-step methods (Online IPO 1 = OMD, Nash-MD)
# start to cycle and only EGPO keeps converging linearly in the last iterate, reaching 1e-6 in every run at
# every β.

# %% tags=["parameters"]
fast = False                 # True: the presets' short horizons (tests, quick looks)
conventions = "reference"    # "reference": the paper's code; "default": the corrected behaviour
presets = ["exact-tabular-beta0.1", "exact-tabular-beta0.01", "exact-tabular-beta0.001"]
iterations = None            # override every preset's number of updates
runs = None                  # override the number of games (others than the paper's then)
seed = None                  # override the paper's seed (other games)
picked_run = 0               # the run shown in the one-row figure
max_steps = 500              # steps kept per preset in the tidy data files
progress = True              # progress bars of the simulation cells (widgets in JupyterLab)
dpi = 150
out_dir = None               # None: the scratch folder <repository>/runs/notebooks/sim_exact_tabular
                             # (make reproduce passes <repository>/figures/sim_exact_tabular)

# %%
NOTEBOOK = "sim_exact_tabular"
import pandas as pd
from IPython.display import display

from egpo_core import experiments, plotting, summaries
from _setup import show, start

out = start(NOTEBOOK, out_dir)

# %% [markdown]
# ## Simulate the three settings

# %%
results = {
    name: experiments.run_preset(name, conventions=conventions, fast=fast, iterations=iterations,
                                 runs=runs, seed=seed, progress=progress)
    for name in presets
}
for name, res in results.items():
    print(name, res.settings["iterations"], "updates,", res.runs, "runs")

# %% [markdown]
# ## One figure per β, one panel per run
#
# The first panel is the median over runs (band: the runs' quartiles), then one panel per run. Duality gap on a
# log axis from 1e-6 to 1, a trailing 10-step moving average, each curve cut at its first value below 1e-6 and
# ended on the "≤ 1e-6" line (so a curve that stops early has converged); long curves are drawn as bins of
# consecutive steps with their min–max envelope as a light band. The title states what the figure shows,
# computed from the summary table below.

# %%
for name, res in results.items():
    finding = summaries.gap_finding(res.summary())
    fig = plotting.plot_gap_panels(res, title=f"{name} ({conventions} conventions): {finding}")
    # dots of preset names become _ in figure stems (figures/README.md)
    show(plotting.save_figure(fig, out / f"panels_{name}".replace(".", "_"), dpi=dpi))

# %% [markdown]
# ## The one-row "picked" figure
#
# One run (run 0 in the paper) for each β side by side; the title lists, per β, the algorithms whose gap in
# that run fell below 1e-6.

# %%
def below_cutoff(res, run):
    """Labels of the algorithms whose gap in ``run`` fell below 1e-6 at some step."""
    gaps = res.values["duality_gap"][0, :, run]
    names = [summaries.short_label(a) for a, g in zip(res.algorithms, gaps) if (g < plotting.GAP_CUTOFF).any()]
    return ", ".join(names) or "none"


finding = " · ".join(f"β = {res.configs['beta'].iloc[0]:g}: {below_cutoff(res, picked_run)}" for res in results.values())
fig = plotting.plot_picked(results, run=picked_run, title=f"Run {picked_run} below 1e-6 — {finding}")
show(plotting.save_figure(fig, out / "picked", dpi=dpi))

# %% [markdown]
# ## Median final gap beside the reference implementation
#
# `reference_median` / `reference_reached` are the reference implementation's numbers re-run on CPU (0 stands
# for "~0"); comparable under `conventions = "reference"` at the full horizons. The reference ran in float32, this simulator in float64,
# so gaps far below 1e-6 differ in their digits but not in what they say.

# %%
table = pd.concat([summaries.summary_vs_reference(res, name) for name, res in results.items()],
                  ignore_index=True)
table.to_csv(out / "summary.csv", index=False)
display(table)

# %% [markdown]
# ## Tidy data
#
# One file per setting: the recorded gaps at `max_steps` evenly spaced steps (t = 0 and the last always
# included).

# %%
for name, res in results.items():
    tidy = summaries.thin(res, max_steps).to_dataframe()
    tidy.insert(0, "preset", name)
    tidy.to_parquet(out / f"metrics_{name}.parquet", index=False)
print(sorted(p.name for p in out.iterdir()))
