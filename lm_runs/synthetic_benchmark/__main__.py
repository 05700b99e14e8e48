"""``python -m lm_runs.synthetic_benchmark``: see :mod:`lm_runs.synthetic_benchmark.cli`."""

from .cli import main

main()
