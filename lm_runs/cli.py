"""Command lines of the lm_runs entry points: HfArgumentParser over config dataclasses, plus YAML.

``--config FILE.yaml`` supplies values first and flags on the command line override them, so a
preset runs as ``python -m lm_runs.train_nlhf --config lm_runs/configs/nlhf_qwen_paper.yaml`` and a
variant as the same command plus ``--learning_rate 1e-6``. Every key of the file must be an option of
the entry point; a file that is missing, not YAML, not a mapping, or has an unknown key is refused with
one line naming the file (:class:`ConfigFileError`, a ``ValueError``: exit status 2 through
:func:`lm_runs.launcher.run_entry_point`).

``--save_steps N`` alone means ``--save_strategy steps`` (Hugging Face's default strategy), whatever the
entry point's default strategy is and whatever strategy a ``--config`` file sets: a user who asks for
checkpoints every N steps gets them. Given together with another ``--save_strategy`` it would do
nothing, and is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["CONFIG_HELP", "ConfigFileError", "parse_config", "config_flags"]

#: The help text of ``--config``, shown by every entry point that reads one.
CONFIG_HELP = (
    "YAML file of option: value pairs (the keys are this command's options without '--'); flags given on the "
    "command line override its values. Presets: lm_runs/configs/*.yaml."
)


class ConfigFileError(ValueError):
    """A ``--config`` file that cannot be used; the message (one line) names the file."""


def _read_mapping(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigFileError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        detail = " ".join(str(error).split())
        raise ConfigFileError(f"--config {path}: not valid YAML ({detail})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"--config {path}: expected a mapping of option: value, got {type(data).__name__}")
    return data


def config_flags(path: str | Path) -> list[str]:
    """The flags a YAML mapping stands for: ``key: value`` → ``--key value`` (lists → several values,
    mappings → one JSON string). Raises :class:`ConfigFileError` naming the file when it is missing,
    not valid YAML or not a mapping."""
    flags: list[str] = []
    for key, value in _read_mapping(Path(path)).items():
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


def _check_keys(path: Path, dataclass_types: Sequence[type]) -> None:
    """ConfigFileError naming the file and the first key that no dataclass of the entry point has."""
    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
    for key in _read_mapping(path):
        if str(key) not in known:
            raise ConfigFileError(f"--config {path}: unknown option {key!r} (not an option of this command; see --help)")


def _given(flags: Sequence[str], name: str) -> str | None:
    """The value of the last ``--name`` in ``flags`` (``--name value`` or ``--name=value``), else None."""
    found = None
    for i, flag in enumerate(flags):
        if flag == f"--{name}":
            found = flags[i + 1] if i + 1 < len(flags) else ""
        elif flag.startswith(f"--{name}="):
            found = flag.split("=", 1)[1]
    return found


def _save_strategy_flags(file_flags: list[str], command_flags: list[str], dataclass_types: Sequence[type]) -> list[str]:
    """The flags to parse: the file's, then the command line's, plus ``--save_strategy steps`` when
    ``--save_steps`` comes without a strategy from the same place (the command line; or the file, when
    the command line names neither). ValueError when steps and a strategy other than "steps" come from
    the same place: the steps would do nothing."""
    flags = file_flags + command_flags
    if not any(f.name == "save_strategy" for cls in dataclass_types for f in dataclasses.fields(cls)):
        return flags
    for source in (command_flags, file_flags):
        steps, strategy = _given(source, "save_steps"), _given(source, "save_strategy")
        if steps is None and strategy is None:
            continue  # this place says nothing about saving: ask the next one
        if steps is None:
            return flags  # a strategy alone: the user's word
        if strategy is None:
            return flags + ["--save_strategy", "steps"]
        if strategy.strip().lower() != "steps":
            raise ValueError(f"--save_steps {steps} has no effect with --save_strategy {strategy}: drop one of them")
        return flags
    return flags


def parse_config(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse ``argv`` (default ``sys.argv[1:]``) into instances of ``dataclass_types``.

    ``--config FILE`` (YAML) may appear anywhere; its values come first, explicit flags override (see
    the module docstring for the checks and ``--save_steps``).
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    config_args: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--config" or argv[i].startswith("--config="):
            if argv[i] == "--config":
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise ConfigFileError("--config needs a YAML file")
                path, i = Path(argv[i + 1]), i + 2
            else:
                path, i = Path(argv[i].split("=", 1)[1]), i + 1
            _check_keys(path, dataclass_types)
            config_args += config_flags(path)
        else:
            rest.append(argv[i])
            i += 1
    flags = _save_strategy_flags(config_args, rest, dataclass_types)
    parser = HfArgumentParser(list(dataclass_types))
    parser.add_argument("--config", metavar="FILE.yaml", default=None, help=CONFIG_HELP)
    parsed = parser.parse_args_into_dataclasses(flags, look_for_args_file=False)
    # The --config argument exists for --help; its value was read above, so its namespace is dropped.
    if parsed and isinstance(parsed[-1], argparse.Namespace) and set(vars(parsed[-1])) <= {"config"}:
        parsed = parsed[:-1]
    return tuple(parsed)
