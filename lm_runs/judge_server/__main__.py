"""``python -m lm_runs.judge_server``: see :mod:`lm_runs.judge_server.command`."""

from .command import main

main()
