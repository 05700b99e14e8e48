"""Command lines of the lm_runs entry points: HfArgumentParser over config dataclasses, plus YAML.

``--config FILE.yaml`` supplies values first and flags on the command line override them, so a
preset runs as ``python -m lm_runs.train_nlhf --config lm_runs/configs/egpo_qwen.yaml`` and a variant
as the same command plus ``--learning_rate 1e-6``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["parse_config", "config_flags"]


def config_flags(path: str | Path) -> list[str]:
    """The flags a YAML mapping stands for: ``key: value`` → ``--key value`` (lists → several values,
    mappings → one JSON string). Raises ``SystemExit`` naming the file when it is not a mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: --config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SystemExit(f"error: --config {path}: not valid YAML ({error})") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise SystemExit(f"error: --config {path}: expected a mapping of option: value, got {type(data).__name__}")
    flags: list[str] = []
    for key, value in data.items():
        flags.append(f"--{key}")
        flags.extend(_flag_values(value))
    return flags


def _flag_values(value: Any) -> list[str]:
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return [json.dumps(value)]
    return [str(value)]


def parse_config(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse ``argv`` (default ``sys.argv[1:]``) into instances of ``dataclass_types``.

    ``--config FILE`` (YAML) may appear anywhere; its values come first, explicit flags override.
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    config_args: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--config":
            if i + 1 >= len(argv):
                raise SystemExit("error: --config needs a YAML file")
            config_args += config_flags(argv[i + 1])
            i += 2
        elif argv[i].startswith("--config="):
            config_args += config_flags(argv[i].split("=", 1)[1])
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    parser = HfArgumentParser(list(dataclass_types))
    return parser.parse_args_into_dataclasses(config_args + rest, look_for_args_file=False)
