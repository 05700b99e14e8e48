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
# # Simulator speed
#
# How long the batched simulator (`egpo_core.simulate`, one compiled loop over every trajectory, parallel over
# trajectories) takes for each paper preset — all five algorithms on all ten runs — and how the time scales
# with the number of responses N, the number of runs and the number of steps. The first call of each kind
# loads the compiled kernel and is not timed. The reference implementation needs about 15 minutes for the six
# presets on a 2-core CPU (SPEC's re-run).

# %% tags=["parameters"]
fast = False               # True: the presets' short horizons and a small scaling grid
conventions = "reference"
repeats = 1                # best of this many calls per measurement
dpi = 100
out_dir = None             # None: <repository>/figures/benchmarks

# %%
NOTEBOOK = "benchmarks"
import pandas as pd
from IPython.display import Image, display

from egpo_core import analysis, plotting

out = plotting.figure_dir(NOTEBOOK, out_dir)
pd.set_option("display.float_format", "{:.3g}".format)
print(f"writing figures and data to {out}")


def show(paths):
    """Display a figure written by plotting.save_figure (its PNG)."""
    display(Image(filename=str(paths[0])))

import os
import platform

print(platform.processor() or platform.machine(), os.cpu_count(), "cores")

# %% [markdown]
# ## The paper presets

# %%
presets = analysis.time_presets(fast=fast, conventions=conventions, repeats=repeats)
presets.to_csv(out / "presets_timing.csv", index=False)
display(presets)
print(f"all six presets: {presets['seconds'].sum():.1f} s")

# %% [markdown]
# ## Scaling
#
# EGPO (two preference evaluations per step), exact tabular gradients, random games; from a base case vary one
# of N, runs and steps. A step costs O(N²) per trajectory (the product Pπ), so time should grow about linearly
# in runs and steps and up to quadratically in N.

# %%
base = dict(num_actions=10, runs=10, iterations=300 if fast else 3000)
sizes = {
    "N": [10, 30, 100] if fast else [10, 30, 100, 300, 1000],
    "runs": [10, 30, 100] if fast else [10, 30, 100, 300, 1000],
    "steps": [300, 1000, 3000] if fast else [1000, 3000, 10000, 30000],
}
key = {"N": "num_actions", "runs": "runs", "steps": "iterations"}
grid = [{**base, key[vary]: size, "vary": vary} for vary, values in sizes.items() for size in values]
scaling = analysis.time_scaling(grid, repeats=repeats)
scaling.to_csv(out / "scaling.csv", index=False)
display(scaling)
fig = plotting.plot_benchmarks(presets, scaling)
show(plotting.save_figure(fig, out / "benchmarks", dpi=dpi))
