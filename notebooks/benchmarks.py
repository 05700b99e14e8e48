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
# # Simulator and language-model speed
#
# Two parts: the matrix-game simulator, and the language-model trainer's seconds per NLHF update beside the
# anchors we were handed (last section).
#
# ## Simulator speed
#
# How long the batched simulator (`egpo_core.simulate`, one compiled loop over every trajectory, parallel over
# trajectories) takes for each paper preset — all five algorithms on all ten runs — and how the time scales
# with the number of responses N, the number of runs and the number of steps. The first call of each kind
# loads the compiled kernel and is not timed. The reference implementation needs about 15 minutes for the six
# presets on a 2-core CPU (re-run on this project's development machine). The timing functions live in
# `benchmarks/bench_simulate.py`, the script that prints the same measurements.

# %% tags=["parameters"]
fast = False               # True: the presets' short horizons and a small scaling grid
conventions = "reference"
repeats = 1                # best of this many calls per measurement
dpi = 150
lm_algorithms = None       # bench_lm's --algorithms (None: all five)
lm_updates = None          # timed updates per algorithm (None: bench_lm's 25; 2 when fast)
lm_warmup = None           # untimed updates first (None: bench_lm's 3; 1 when fast)
lm_dpi = 150
out_dir = None             # None: the scratch folder <repository>/runs/notebooks/benchmarks
                           # (make reproduce passes <repository>/figures/benchmarks)

# %%
NOTEBOOK = "benchmarks"
import importlib.util
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

import egpo_core
from egpo_core import plotting
from _setup import show, start

out = start(NOTEBOOK, out_dir)
print(platform.processor() or platform.machine(), os.cpu_count(), "cores")
repo = Path(egpo_core.__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_simulate", repo / "benchmarks" / "bench_simulate.py")
bench_simulate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_simulate)

# %% [markdown]
# ## The paper presets

# %%
presets = bench_simulate.time_presets(fast=fast, conventions=conventions, repeats=repeats)
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
scaling = bench_simulate.time_scaling(grid, repeats=repeats)
scaling.to_csv(out / "scaling.csv", index=False)
display(scaling)
# the measured log–log slope between the two largest sizes of each panel (1: linear, 2: quadratic)
slopes = {vary: np.polyfit(np.log(part[key[vary]].to_numpy(float)[-2:]), np.log(part["seconds"].to_numpy()[-2:]), 1)[0]
          for vary, part in scaling.groupby("vary", sort=False)}
fig = plotting.plot_benchmarks(presets, scaling)
plotting.add_title(fig, f"The six paper presets (5 algorithms × 10 runs) take {presets['seconds'].sum():.0f} s here; "
                        "log–log slope between the two largest sizes: "
                        + ", ".join(f"{vary} {slope:.1f}" for vary, slope in slopes.items()), fontsize=11)
show(plotting.save_figure(fig, out / "benchmarks", dpi=dpi))

# %% [markdown]
# ## Language-model updates
#
# `benchmarks/bench_lm.py` times `lm_runs.trainer.NLHFTrainer`: one update (EGPO: its half and full step)
# of full fine-tuning of a tiny random-init GPT-2 (2 layers × 64 dims) against a frozen π_ref, 8 prompts
# per update, 16 new tokens, fp32, one process, one torch thread, each algorithm in its own subprocess;
# the median over the timed updates, split into generation, judging, forward + backward (π_ref's and the
# policy's) and the rest. Beside it, the anchors of `benchmarks/lm_anchors.json`: the paper's reference
# trainer and TRL on the same tiny setup (measured once on the 2-core development machine and handed to
# us, not re-measured here). With `fast = True` only 2 updates are timed: the numbers are then rough.

# %%
import json
import subprocess
import sys
from pathlib import Path

import egpo_core
from lm_runs import plots as lm_plots

repo = Path(egpo_core.__file__).resolve().parents[1]
command = [sys.executable, str(repo / "benchmarks" / "bench_lm.py"), "--json", str(out / "lm_bench.json"),
           "--updates", str(lm_updates or (2 if fast else 25)), "--warmup", str(lm_warmup or (1 if fast else 3))]
if fast:
    command += ["--num-prompts", "16"]
if lm_algorithms:
    command += ["--algorithms", *lm_algorithms]
finished = subprocess.run(command, capture_output=True, text=True)
print(finished.stdout)
if finished.returncode:
    raise RuntimeError(f"bench_lm.py failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
results = json.loads((out / "lm_bench.json").read_text())
anchors = json.loads((repo / "benchmarks" / "lm_anchors.json").read_text())
lm = lm_plots.bench_frame(results, anchors["seconds_per_update"])
lm.to_csv(out / "lm_seconds_per_update.csv", index=False)
display(lm.pivot_table(index="algorithm", columns=["source", "phase"], values="seconds", sort=False))
# the title states the finding: each algorithm's time against its fastest anchor, and the memory
names = {"oipo1": "Online IPO 1", "egpo": "EGPO", "nashmd": "Nash-MD"}
against = []
for alg, by_source in anchors["seconds_per_update"].items():
    if alg in results:
        fastest = min(by_source.values())
        against.append(f"{names.get(alg, alg)} {results[alg]['seconds_per_update']:.3f} s (anchor {fastest:.3f})")
rss = [r["peak_rss_mib"] for r in results.values()]
title = (("Per NLHF update: " + ", ".join(against) + "; ") if against else "") + \
        f"peak RSS {min(rss):.0f}–{max(rss):.0f} MiB (anchors ≈ {anchors['peak_rss_mib']})"
fig = lm_plots.plot_bench(lm, title=title)
show(plotting.save_figure(fig, out / "lm_seconds_per_update", dpi=lm_dpi))

# %% [markdown]
# Goals set with the anchors (`lm_anchors.json`, `goals`), against this run:

# %%
nan = float("nan")
ours = {alg: r["seconds_per_update"] for alg, r in results.items()}
goals = anchors["goals"]
checks = pd.DataFrame([
    ("oipo1 seconds per update", ours.get("oipo1", nan), goals["oipo1_seconds_per_update_max"]),
    ("egpo / oipo1", ours["egpo"] / ours["oipo1"] if {"egpo", "oipo1"} <= set(ours) else nan,
     goals["egpo_over_oipo1_max"]),
    ("nashmd seconds per update", ours.get("nashmd", nan), goals["nashmd_seconds_per_update_max"]),
    ("largest peak RSS (MiB)", max(r["peak_rss_mib"] for r in results.values()), goals["peak_rss_mib_max"]),
], columns=["quantity", "measured", "goal (at most)"])
checks["met"] = checks["measured"] <= checks["goal (at most)"]
display(checks)
