"""The package's version, the one place it is written (``egpo_core.__version__`` re-exports it, and
pyproject.toml reads it from there). A leaf: modules that record it (provenance, ``--version``)
import it from here, not from the package root."""

__version__ = "0.2.0"
