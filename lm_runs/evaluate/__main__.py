"""``python -m lm_runs.evaluate``: see :mod:`lm_runs.evaluate` and ``--help``."""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
