"""``python -m lm_runs.evaluate``: see :mod:`lm_runs.evaluate` and ``--help``.

:func:`~lm_runs.evaluate.command.main` answers bad input and an output it cannot write (exit 2) and
Ctrl-C (exit 130) itself; :func:`lm_runs.launcher.run_entry_point` turns what is left of the known
failures (a full disk outside the output folder, a missing file) into one line too.
"""

import sys
from typing import Sequence

from ..launcher import run_entry_point
from .command import main


def _command(argv: Sequence[str] | None) -> None:
    sys.exit(main(argv))


if __name__ == "__main__":
    run_entry_point(_command)
