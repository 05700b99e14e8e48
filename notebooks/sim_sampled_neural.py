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
# # Sampled gradients, neural policy (SPEC §4)
#
# N = 100 responses, the network policy, 100 sampled pairs per step, β = 0.1, 20k SGD steps of rate 1e-3.
# Under the reference conventions the runs share one network.
#
# Preset `sampled-neural-beta0.1` of `egpo_core.presets`; the games are the reference implementation's draws
# from seed 2018011309, so run k here is run k there.

# %% tags=["parameters"]
fast = False                 # True: the preset's short horizon (tests, quick looks)
conventions = "reference"    # "reference": the paper's code; "default": the corrected behaviour
preset = "sampled-neural-beta0.1"
iterations = None            # override the preset's number of updates
runs = None                  # override the number of games (others than the paper's then)
seed = None                  # override the paper's seed (other games)
max_steps = 500              # steps kept in the tidy data file (evenly spaced, first and last included)
dpi = 64
out_dir = None               # None: <repository>/figures/sim_sampled_neural

# %%
NOTEBOOK = "sim_sampled_neural"
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
# ## Simulate
#
# All five paper algorithms on all runs, in one batched call.

# %%
result = analysis.run_preset(preset, conventions=conventions, fast=fast, iterations=iterations,
                             runs=runs, seed=seed)
print(result.settings)

# %% [markdown]
# ## One panel per run
#
# Duality gap on a log axis, 10-step moving average, each curve cut at its first value below 1e-6; dashed for
# exact gradients, solid for sampled ones.
#
# Expected: the four mirror-descent-type algorithms end close together (noise-dominated), Nash-MD-PG a little
# above; the picture is the same for every run.

# %%
fig = plotting.plot_gap_panels(result, ncols=5)
plotting.add_title(fig, f"{preset} ({conventions} conventions)")
# dots of preset names become _ in figure stems (figures/README.md)
show(plotting.save_figure(fig, out / f"panels_{preset}".replace(".", "_"), dpi=dpi))

# %% [markdown]
# ## Median final gap beside the reference implementation
#
# `median_final` is the median over runs of the gap after the last update, `reached` the number of runs whose
# gap fell below 1e-6; `reference_*` are SPEC §4's numbers (reference implementation, CPU). They are
# comparable under `conventions = "reference"` at the full horizon.

# %%
table = analysis.summary_vs_reference(result, preset)
table.to_csv(out / "summary.csv", index=False)
display(table)

# %% [markdown]
# ## Tidy data
#
# The recorded gaps at `max_steps` evenly spaced steps (always t = 0 and the last), one row per (algorithm,
# run, step).

# %%
tidy = analysis.thin(result, max_steps).to_dataframe()
tidy.insert(0, "preset", preset)
tidy.to_parquet(out / f"metrics_{preset}.parquet", index=False)
print(len(tidy), "rows;", sorted(p.name for p in out.iterdir()))
