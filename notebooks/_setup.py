"""The start every notebook of this folder shares, in one place.

A notebook's import cell ends with

    from _setup import show, start

    out = start(NOTEBOOK, out_dir)

and draws its figures as ``show(plotting.save_figure(fig, out / "name", dpi=dpi))``. The import finds this
module because a notebook runs with this folder as its current directory, which the kernel puts on
``sys.path``: JupyterLab starts a notebook's kernel in the notebook's folder, and ``run_all.py`` (``make
reproduce``) and the tests run papermill with ``cwd=notebooks/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from IPython.display import Image, display

from egpo_core import plotting


def start(notebook: str, out_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the notebook's figures and tidy data, ``plotting.figure_dir(notebook, out_dir)``:
    ``out_dir`` when given (``make reproduce`` passes figures/<run>/), else the scratch folder
    runs/notebooks/<notebook>/ (ignored by git); created if missing. Also sets pandas to show floats with 3
    significant digits and prints where the outputs go."""
    out = plotting.figure_dir(notebook, out_dir)
    pd.set_option("display.float_format", "{:.3g}".format)
    print(f"writing figures and data to {out}")
    return out


def show(paths: Sequence[str | os.PathLike]) -> None:
    """Display a figure written by ``plotting.save_figure``: the PNG, first of the paths it returns."""
    display(Image(filename=str(paths[0])))
