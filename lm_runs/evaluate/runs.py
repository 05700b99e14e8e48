"""Which models an evaluation compares: every ``epochs/epoch-k`` folder of every training run.

:func:`discover_runs` turns ``--runs DIR`` / ``NAME=DIR`` items into :class:`ModelSpec` s named
``<run>/epoch-k`` (k 1-based, the model after k epochs), labelled with the run's algorithm
(:func:`read_algorithm`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..launcher import one_line
from ..models import ModelRoleError, check_model_source
from .settings import EvaluationError, ModelSpec

__all__ = ["discover_runs", "read_algorithm", "named_path"]

_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


def named_path(item: str) -> tuple[str | None, str]:
    """``"name=DIR"`` → (name, DIR); ``"DIR"`` → (None, DIR)."""
    if "=" in item:
        name, _, path = item.partition("=")
        if name and not os.path.exists(item):
            return name, path
    return None, item


def read_algorithm(run_dir: str | Path) -> str | None:
    """The ``alg`` of a training run: from ``training_args.bin`` (the pickled :class:`NLHFConfig`)
    in the run folder or in one of its epoch folders, else from ``config.yaml``/``config.yml``/
    ``config.json``/``args.json`` in the run folder; None when none says.

    ``training_args.bin`` is a pickle: it is read with ``weights_only=False``, which runs code from
    the file, so only point ``--runs`` at runs you trust (as with loading their models).
    """
    run_dir = Path(run_dir)
    candidates = [run_dir / "training_args.bin"]
    epochs = run_dir / "epochs"
    if epochs.is_dir():
        candidates += sorted(epochs.glob("epoch-*/training_args.bin"))
    for path in candidates:
        if path.is_file():
            try:
                import torch

                args = torch.load(path, weights_only=False, map_location="cpu")
            except Exception:  # noqa: BLE001 - an unreadable file just does not name the algorithm
                continue
            alg = getattr(args, "alg", None)
            if isinstance(alg, str) and alg:
                return alg
    for name in ("config.yaml", "config.yml", "config.json", "args.json"):
        path = run_dir / name
        if path.is_file():
            try:
                if path.suffix == ".json":
                    data = json.loads(path.read_text())
                else:
                    import yaml

                    data = yaml.safe_load(path.read_text())
            except Exception:  # noqa: BLE001
                continue
            if isinstance(data, dict) and isinstance(data.get("alg"), str) and data["alg"]:
                return data["alg"]
    return None


def discover_runs(runs: Sequence[str | Path]) -> list[ModelSpec]:
    """Every ``epochs/epoch-k`` folder of every run, in run order then k ascending.

    An item is ``DIR`` or ``NAME=DIR``; the run name defaults to the folder's name, each model is
    named ``<run name>/epoch-k``, its algorithm is :func:`read_algorithm` (else the run name). Two
    runs of the same algorithm are told apart as ``"alg (run name)"``. An epoch folder whose
    ``config.json`` is empty (0 bytes: a save killed midway by a trainer older than the atomic saves)
    is skipped with one warning line on stderr naming it. Raises :class:`EvaluationError` for a
    missing folder, a run without epochs, or an epoch folder that is not a causal LM
    (:func:`lm_runs.models.check_model_source` with the role ``"policy"``: no config.json, another kind
    of model, an unreadable config).
    """
    found: list[tuple[str, str, list[ModelSpec]]] = []
    names: set[str] = set()
    for item in runs:
        name, path_text = named_path(str(item))
        run_dir = Path(path_text).expanduser()
        if not run_dir.is_dir():
            raise EvaluationError(f"--runs {item}: no such directory")
        run_name = name or run_dir.resolve().name
        if run_name in names:
            raise EvaluationError(f"--runs: two runs are named {run_name!r}; name them with NAME=DIR")
        names.add(run_name)
        epochs_dir = run_dir / "epochs"
        folders = []
        if epochs_dir.is_dir():
            for child in epochs_dir.iterdir():
                match = _EPOCH_DIR.match(child.name)
                if match and child.is_dir():
                    folders.append((int(match.group(1)), child))
        if not folders:
            raise EvaluationError(f"--runs {item}: no epochs/epoch-k folders in {run_dir} (is it a training output dir?)")
        folders.sort()
        complete = []
        for k, child in folders:
            if k < 1:
                raise EvaluationError(f"--runs {item}: {child.name} is not 1-based (the trainer writes epoch-1, epoch-2, ...)")
            config = child / "config.json"
            if config.is_file() and config.stat().st_size == 0:
                print(f"warning: skipping {child}: its config.json is empty (a save killed midway); "
                      "delete or re-save that folder", file=sys.stderr)
                continue
            try:
                check_model_source(child, "policy")
            except ModelRoleError as error:
                raise EvaluationError(f"--runs {item}: {one_line(error)}") from None
            complete.append((k, child))
        if not complete:
            raise EvaluationError(f"--runs {item}: no complete epochs/epoch-k folder in {run_dir}")
        folders = complete
        algorithm = read_algorithm(run_dir) or run_name
        specs = [ModelSpec(f"{run_name}/epoch-{k}", child, algorithm=algorithm, epoch=k, run=run_name) for k, child in folders]
        found.append((run_name, algorithm, specs))
    counts = Counter(algorithm for _, algorithm, _ in found)
    out: list[ModelSpec] = []
    for run_name, algorithm, specs in found:
        for spec in specs:
            if counts[algorithm] > 1:
                spec.algorithm = f"{algorithm} ({run_name})"
            out.append(spec)
    return out
