"""``python -m lm_runs.synthetic_benchmark``: see :mod:`lm_runs.synthetic_benchmark.cli` (user errors are one
line with exit status 2, Ctrl-C one line with 130: ``lm_runs.launcher.run_entry_point``)."""

from lm_runs.launcher import run_entry_point

from .cli import main

run_entry_point(main)
