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
# # A tiny language model on a game with an exactly known equilibrium
#
# `lm_runs.synthetic_benchmark` fine-tunes a random-init 2-layer GPT-2 (local BPE tokenizer) into π_ref
# and trains every NLHF algorithm of `lm_runs.trainer` on it, with the unchanged trainer (in the full setting
# also the round methods INPO, COMAL, MPO, MNPO and SPPO of `lm_runs.rounds`, on the same optimizer steps), against a
# programmatic oracle: a response's class is the class of its first character (K contiguous letter
# ranges; anything else is class 0), and classes beat each other cyclically ("forward" prompts use the
# matrix M, "backward" prompts its transpose). The sequence game's regularized equilibrium then has the
# class marginal π*_β of the K×K class game with π_ref's marginal as reference, so the class-level duality
# gap, the exploitability and KL(π*_β ‖ π_t) are computed exactly from one forward pass during training
# (the module's docstring derives it).
#
# This notebook runs the benchmark through its public entry point (`run_benchmark` with the `SHORT`,
# `DEFAULT` (full) or `FAST` settings), draws the curves per algorithm over seeds from its tidy `metrics.csv`,
# sets them beside egpo_core's simulation of the same class games (`simulation.csv`, `comparison.csv`), and
# states which algorithm ends lower for every pair, by an exact paired test over the training seeds
# (`verdicts.csv`). The run's tidy files are copied beside this notebook's and its own figures
# (`gap_curves`, `simulation`, `length_normalized`, `verdicts`) redrawn there from them (`redraw`).
#
# Why a test: floating point differs between CPUs, so the sampled tokens, and every run with them, differ
# from one machine to another after the first updates; a single run's ordering does not carry over. What
# carries over is a statement about the distribution over seeds at a stated error rate.

# %% tags=["parameters"]
setting = "short"           # "short": the five online algorithms, 3 seeds, under 10 minutes (make reproduce), decides no pair;
                            # "full": the eleven algorithms (five online, six in rounds), 15 seeds (165 runs, hours), decides pairs
fast = False                # True: the module's FAST settings (seconds; tests, quick looks), whatever `setting`
seeds = None                # training seeds (None: the setting's own: 0 1 2 short, 0..14 full, 0 1 fast)
updates = None              # NLHF updates per run (None: the settings' own, 80; 4 when fast)
num_classes = None          # K, 3 to 5 (None: 3)
beta = None                 # β of the game (None: the settings' own, 0.05)
keep_checkpoints = True     # keep every run's epochs/epoch-k (the lm_winrates notebook evaluates them)
run = True                  # False: only draw a finished run already in benchmark_dir
benchmark_dir = None        # None: <out_dir>/run (the benchmark's whole output, models included; ignored by git)
sim_eta = None              # η of the dashed simulated curves (None: the common fitted η; nearest grid value)
dpi = 150
out_dir = None              # None: the scratch folder <repository>/runs/notebooks/lm_synthetic_benchmark (make reproduce: figures/lm_synthetic_benchmark)

# %%
NOTEBOOK = "lm_synthetic_benchmark"
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
from IPython.display import display

from egpo_core import plotting
from lm_runs import plots as lm_plots
from lm_runs import synthetic_benchmark as sb
from _setup import show, start

out = start(NOTEBOOK, out_dir)
bench = Path(benchmark_dir) if benchmark_dir is not None else out / "run"
print(f"the benchmark's run in {bench}")

# %% [markdown]
# ## Run the benchmark
#
# Every algorithm × seed with summed sequence log-probabilities (the exact correspondence), plus the
# length-normalized variant on the settings' `length_normalized_seeds`. `SHORT` takes about 5 minutes on
# 2 quiet CPU cores (more when they are shared), `FAST` about 20 seconds; the full `DEFAULT` (150 runs) is run
# from the command line (`python -m lm_runs.synthetic_benchmark --out DIR --jobs 2`, `--reuse` to take over the
# runs a previous folder holds) and drawn here with `run = False`.
# The run folders are listed in `summary.json` (`runs`), which the `lm_winrates` notebook reads.

# %%
presets = {"short": sb.SHORT, "full": sb.DEFAULT}
if setting not in presets:
    raise ValueError(f"setting must be one of {sorted(presets)}, got {setting!r}")
if run:
    chosen = dict(seeds=tuple(seeds) if seeds is not None else None, updates=updates, num_classes=num_classes,
                  beta=beta)
    settings = replace(sb.FAST if fast else presets[setting], keep_checkpoints=keep_checkpoints,
                       **{k: v for k, v in chosen.items() if v is not None})
    summary = sb.run_benchmark(bench, settings, overwrite=True, progress=False)
else:
    summary = json.loads((bench / "summary.json").read_text())
print({k: summary["settings"][k] for k in ("num_classes", "beta", "seeds", "updates", "eval_every", "learning_rate")})
print({k: round(v, 1) for k, v in summary["timings"].items()}, "seconds")
print("π_ref:", {k: round(v, 4) for k, v in summary["reference"].items()})

# the run's tidy files sit beside this notebook's, its own figures and verdicts redrawn there from them with
# this code (the run folder, models included, is not committed)
for name in ("game.json", "metrics.csv", "metrics_length_normalized.csv", "simulation.csv", "comparison.csv",
             "summary.json"):
    if (bench / name).exists() and (bench / name).resolve() != (out / name).resolve():
        shutil.copyfile(bench / name, out / name)
verdicts = sb.redraw(bench, out)
print(verdicts["what_n_decides"])

# %% [markdown]
# ## Class-level duality gap and exploitability per algorithm
#
# Mean over the held-out evaluation prompts at every evaluation point (update 0 is π_ref, dotted grey),
# then the median over seeds (line) and the min–max over seeds (band). The gap is Gap_β of the class
# marginal; the exploitability is that of the unregularized class game (β = 0): the distance to the
# unregularized Nash equilibrium, which methods of the COMAL type target.

# %%
metrics = pd.read_csv(bench / "metrics.csv")
bands = lm_plots.seed_bands(metrics, ("duality_gap", "exploitability"))
bands.to_csv(out / "curves.csv", index=False)
from lm_runs.synthetic_benchmark.figures import rising_note

notes = [f"class-level metrics, median and min–max over {bands['seeds'].max()} seeds; {verdicts['what_n_decides']}",
         rising_note(metrics, int(metrics["update"].max()))]
fig = lm_plots.plot_seed_bands(bands, reference=summary["reference"], title="\n".join(n for n in notes if n))
show(plotting.save_figure(fig, out / "gap_exploitability", dpi=dpi))

# %% [markdown]
# Final values (the last update), median over seeds, beside π_ref's:

# %%
last = bands[bands["update"] == bands["update"].max()]
final = last.pivot(index="algorithm", columns="metric", values="median").loc[lm_plots.ordered(last["algorithm"])]
final.loc["π_ref"] = [summary["reference"][m] for m in final.columns]
final.to_csv(out / "final.csv")
display(final)

# %% [markdown]
# ## Which algorithm ends lower: decided per pair
#
# For every pair (A, B) and both metrics, the paired differences of the final values over the training
# seeds, d_s = x_A,s − x_B,s: their mean with a 95 % bootstrap interval over seeds, and the two-sided exact
# Wilcoxon signed-rank test, Holm-corrected over the K(K − 1)/2 pairs of a metric (α = 0.05; 10 pairs for
# the five online algorithms, 55 for the full setting's eleven). A pair is decided ("A lower than B") only when
# the adjusted p is at most α; otherwise it is undecided at this n, which is no evidence that the two are
# equal. With n seeds the smallest p the test can give is 2/2^n: 3 seeds (`SHORT`) cannot decide any pair,
# the full setting's 15 can (2/2^15 · 55 = 0.0034; 10 seeds could not among 55 pairs). Every seed's final values are in
# `final_per_seed.csv`, every pair in `verdicts.csv` / `verdicts.json`, and `verdicts.png` draws both.

# %%
table = pd.read_csv(out / "verdicts.csv")
display(table[["metric", "a", "b", "n_seeds", "a_lower", "b_lower", "mean_diff", "ci_low", "ci_high", "p", "p_holm",
               "verdict"]])
show([out / "verdicts.png"])

# %% [markdown]
# ## Beside the matrix-game simulation
#
# egpo_core simulates every algorithm on the same class games (exact expected updates, tabular softmax
# policies, the trainer's Nash-MD mixture) over a grid of mirror-descent steps η. The LM's step is Adam's,
# not an η, so the benchmark fits an effective η per algorithm and one common η by least squares on the
# log gaps (`comparison.csv`); the comparison is about orderings, not about curves that coincide. Dashed:
# the simulation at `sim_eta` (default the common fitted η), for the online algorithms (the simulation has no
# round methods' rounds).

# %%
simulation = pd.read_csv(bench / "simulation.csv")
comparison = pd.read_csv(bench / "comparison.csv")
comparison.to_csv(out / "comparison.csv", index=False)
display(comparison.set_index("algorithm"))
eta = summary["common_eta"] if sim_eta is None else sim_eta
fig = lm_plots.plot_seed_bands(bands, simulation=simulation, eta=eta, reference=summary["reference"],
                               title="LM (median and min–max over seeds) and simulation of the class games (dashed)")
show(plotting.save_figure(fig, out / "vs_simulation", dpi=dpi))
