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
# # Win rates by epoch, beside the paper's
#
# The paper's language-model result is a table of held-out win rates against π_ref after every epoch, and
# a pairwise table of each algorithm's best two epochs. `lm_runs.evaluate` computes both with the paper's
# protocol and its reference code's defects removed: K samples per prompt, missing judgements kept missing,
# the best epochs chosen on one split of the prompts and compared on the other, and 95% bootstrap
# intervals over prompts.
#
# By default this notebook evaluates the checkpoints of the synthetic benchmark (the `lm_synthetic_benchmark`
# notebook's run, one training seed, one run per algorithm) with the benchmark's own oracle as the judge; give
# `eval_dir` to draw any other `lm_runs.evaluate` output folder instead (e.g. a real model's evaluation).
# The paper's numbers (its Qwen run, win rate against π_ref by epoch, `data/paper_lm_winrates.csv`) are drawn
# beside ours. They are not the same experiment: the synthetic benchmark's oracle is cyclic, so a policy can
# beat π_ref by far more than a real model can in a few epochs, or lose to it.

# %% tags=["parameters"]
fast = False                # True: few samples and bootstrap resamples (tests, quick looks)
eval_dir = None             # an lm_runs.evaluate output folder to draw (None: evaluate the benchmark's checkpoints)
benchmark_dir = None        # None: the lm_synthetic_benchmark notebook's run, else a fresh run in <out_dir>/benchmark
seed = 0                    # the training seed whose runs are evaluated
max_epochs = 10             # at most this many epochs per run, evenly spaced, the last included
samples_per_prompt = None   # responses per prompt and model (None: the benchmark's own setting, 10; 4 when fast)
bootstrap = None            # bootstrap resamples of the prompts (None: the benchmark's own setting, 1000; 200 when fast)
paper_csv = "data/paper_lm_winrates.csv"  # the paper's numbers, relative to notebooks/
dpi = 150
out_dir = None              # None: the scratch folder <repository>/runs/notebooks/lm_winrates (make reproduce: figures/lm_winrates)

# %%
NOTEBOOK = "lm_winrates"
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from egpo_core import plotting
from lm_runs import plots as lm_plots
from lm_runs import synthetic_benchmark as sb
from transformers.utils import logging as hf_logging
from _setup import show, start

hf_logging.disable_progress_bar()  # no weight-loading bars in the outputs
out = start(NOTEBOOK, out_dir)

# %% [markdown]
# ## The checkpoints and the evaluation
#
# Skipped when `eval_dir` is given. The benchmark's run must have kept its epoch checkpoints
# (`keep_checkpoints`, the `lm_synthetic_benchmark` notebook's default); if the notebook's run is not there,
# a fresh one is made here (`SHORT` settings, `FAST` when `fast`). The prompts are the benchmark's held-out
# evaluation prompts, the judge its `ClassOracle`, the responses as long as in training.

# %%
ours_label = "this repository: synthetic benchmark" if eval_dir is None else f"this repository: {Path(eval_dir).name}"
if eval_dir is None:
    bench = Path(benchmark_dir) if benchmark_dir is not None else out.parent / "lm_synthetic_benchmark" / "run"
    if not any(bench.glob("runs/*/epochs/epoch-*")):
        bench = out / "benchmark"
        base = sb.FAST if fast else sb.SHORT
        sb.run_benchmark(bench, replace(base, keep_checkpoints=True), overwrite=True, progress=False)
    # the benchmark's own evaluation (lm_runs.synthetic_benchmark.win_rate_tables): the summed-log-probability
    # run of every algorithm for the chosen training seed, the oracle as judge. The run already holds it
    # for its first seed at its own settings (win_rates/): recomputed only for other settings.
    settings = json.loads((bench / "summary.json").read_text())["settings"]
    wanted = dict(seed=seed, max_epochs=max_epochs,
                  samples_per_prompt=samples_per_prompt or settings["eval_samples_per_prompt"],
                  bootstrap=bootstrap or settings["eval_bootstrap"])
    own = dict(seed=settings["seeds"][0], max_epochs=10, samples_per_prompt=settings["eval_samples_per_prompt"],
               bootstrap=settings["eval_bootstrap"])
    if wanted == own and (bench / "win_rates" / "winrates.csv").is_file():
        eval_dir = bench / "win_rates"
    else:
        eval_dir = sb.win_rate_tables(bench, out / "eval", **wanted)
eval_dir = Path(eval_dir)
winrates = pd.read_csv(eval_dir / "winrates.csv")
winrates.to_csv(out / "winrates.csv", index=False)
print(f"{len(winrates)} win rates from {eval_dir}")

# %% [markdown]
# ## Win rate against π_ref by epoch
#
# On all prompts (nothing is chosen from this table); bold where the row beats π_ref.

# %%
(out / "tables").mkdir(exist_ok=True)
for name in ("vs_reference", "vs_reference_ci", "pairwise", "pairwise_ci"):
    shutil.copy(eval_dir / "tables" / f"{name}.md", out / "tables" / f"{name}.md")
display(Markdown((eval_dir / "tables" / "vs_reference.md").read_text()))

# %% [markdown]
# ## Pairwise: each algorithm's best two epochs
#
# The best two epochs of each algorithm by their win rate against π_ref on the *selection* half of the
# prompts, compared row against column on the *report* half only; bold where the row wins.

# %%
display(Markdown((eval_dir / "tables" / "pairwise.md").read_text()))

# %% [markdown]
# ## By epoch, beside the paper
#
# Left: ours with the 95% bootstrap interval over prompts (band; hatched where it rests on fewer than 30
# prompts, where the percentile bootstrap is too narrow and an interval excluding 50 % is no evidence);
# right: the paper's Qwen run (no intervals published). The dashed line is 50%, a tie with π_ref. Two
# byte-identical models draw the same responses (the evaluation seeds sampling by a model's content) and
# tie at exactly 50 %; curves that coincide are named above the panel.

# %%
ours = lm_plots.vs_reference_percent(winrates, source=ours_label)
paper = pd.read_csv(paper_csv)
by_epoch = pd.concat([ours, paper], ignore_index=True)
by_epoch.to_csv(out / "winrate_by_epoch.csv", index=False)
fig = lm_plots.plot_winrates_by_epoch(by_epoch)
show(plotting.save_figure(fig, out / "winrate_by_epoch", dpi=dpi))
display(by_epoch.pivot_table(index="algorithm", columns=["source", "epoch"], values="win_rate_percent", sort=False)
        .round(1))
