# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exact gradients, tabular policy: three values of β (SPEC §4)
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
dpi = 64
out_dir = None               # None: <repository>/figures/sim_exact_tabular

# %%
NOTEBOOK = "sim_exact_tabular"
import pandas as pd
from IPython.display import Image, display

from egpo_core import analysis, plotting

out = plotting.figure_dir(NOTEBOOK, out_dir)
pd.set_option("display.float_format", "{:.3g}".format)
print(f"writing figures and data to {out}")


def show(paths):
    """Display a figure written by plotting.save_figure (its PNG)."""
    display(Image(filename=str(paths[0])))


# %% [markdown]
# ## Simulate the three settings

# %%
results = {
    name: analysis.run_preset(name, conventions=conventions, fast=fast, iterations=iterations,
                              runs=runs, seed=seed)
    for name in presets
}
for name, res in results.items():
    print(name, res.settings["iterations"], "updates,", res.runs, "runs")

# %% [markdown]
# ## One figure per β, one panel per run
#
# Duality gap (log axis), 10-step moving average, curves cut at 1e-6 (so a curve that stops early has
# converged).

# %%
for name, res in results.items():
    fig = plotting.plot_gap_panels(res, ncols=5)
    plotting.add_title(fig, f"{name} ({conventions} conventions)")
    # dots of preset names become _ in figure stems (figures/README.md)
    show(plotting.save_figure(fig, out / f"panels_{name}".replace(".", "_"), dpi=dpi))

# %% [markdown]
# ## The one-row "picked" figure
#
# One run (run 0 in the paper) for each β side by side.

# %%
picked = {rf"$\beta={res.configs['beta'].iloc[0]:g}$": res for res in results.values()}
fig = plotting.plot_picked(picked, run=picked_run)
show(plotting.save_figure(fig, out / "picked", dpi=100))

# %% [markdown]
# ## Median final gap beside the reference implementation
#
# `reference_median` / `reference_reached` are SPEC §4's numbers (0 stands for "~0"); comparable under
# `conventions = "reference"` at the full horizons. The reference ran in float32, this simulator in float64,
# so gaps far below 1e-6 differ in their digits but not in what they say.

# %%
table = pd.concat([analysis.summary_vs_reference(res, name) for name, res in results.items()],
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
    tidy = analysis.thin(res, max_steps).to_dataframe()
    tidy.insert(0, "preset", name)
    tidy.to_parquet(out / f"metrics_{name}.parquet", index=False)
print(sorted(p.name for p in out.iterdir()))
