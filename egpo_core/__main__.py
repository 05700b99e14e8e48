"""``python -m egpo_core``: see egpo_core/cli.py."""

import sys

from .cli import main

sys.exit(main())
