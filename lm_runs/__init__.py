"""lm_runs: NLHF training, judging and evaluation of language models on top of egpo_core."""
