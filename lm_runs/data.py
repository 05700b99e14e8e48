"""Prompts for NLHF training and evaluation: loading, rendering, batching, splitting.

A prompt is either a string or a chat message list ``[{"role": "user", "content": ...}, ...]``
(TRL's prompt-only conversational format). Three renderings of a prompt exist and each has one
function, so that every caller sees the same text:

* :func:`render_prompt` — what the **policy** is conditioned on: the tokenizer's chat template with
  the generation prompt appended (a string prompt becomes one user message), or the raw string when
  the tokenizer has no template.
* :func:`encode_prompt` — the token ids of that rendering (no extra special tokens when a template
  rendered it, since templates write their own BOS where they want one).
* :func:`prompt_text` — what a **judge** reads: the string itself, or the user/system contents of a
  message list joined by newlines. The trainer and the evaluation both call it.

:func:`load_prompts` reads prompts from a JSONL/JSON, CSV or Parquet file, a ``save_to_disk``
directory or a ``datasets`` hub name, and checks every row before any long work starts;
:class:`PromptCollator` batches them left-padded for generation (:func:`right_padded` pads training
rows on the right); :func:`split_prompts` holds out an evaluation set. :func:`load_table` is the file loader the SFT and preference-model scripts share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from lm_runs.launcher import UsageError, one_line

__all__ = [
    "DATA_EXTENSIONS",
    "Prompt",
    "load_table",
    "load_prompts",
    "check_prompt",
    "is_message_list",
    "render_prompt",
    "encode_prompt",
    "prompt_text",
    "PromptCollator",
    "right_padded",
    "split_prompts",
]

#: A prompt: a plain string or a list of ``{"role": ..., "content": ...}`` messages.
Prompt = str | list[dict[str, Any]]

#: File extensions :func:`load_table` reads, and the ``datasets`` builder for each.
DATA_EXTENSIONS: dict[str, str] = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}


def _looks_like_path(spec: str) -> bool:
    """Whether ``spec`` is meant as a local path rather than a hub name (for the missing-file error)."""
    return (
        Path(spec).suffix.lower() in DATA_EXTENSIONS
        or spec.startswith(("/", "./", "../", "~"))
        or "\\" in spec
    )


def load_table(spec: str | Path, *, split: str = "train"):
    """Load a table as a ``datasets.Dataset``.

    ``spec`` is a ``.jsonl``/``.json``, ``.csv`` or ``.parquet`` file (chosen by extension), a
    directory written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk`` (``split`` picks the
    split of a ``DatasetDict``), or otherwise a ``datasets`` hub name loaded with
    ``load_dataset(spec, split=split)``. Raises ``FileNotFoundError`` for a path that does not
    exist and ``ValueError`` for an unknown extension, a missing split or an unreadable file, each with
    a one-line message naming the value (for a JSON-lines file, the number of the first malformed line).
    """
    import datasets

    spec_str = str(spec)
    path = Path(spec_str).expanduser()
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as error:
            raise ValueError(f"{spec_str}: a directory but not one written by save_to_disk ({one_line(error)})") from None
        except IndexError:
            # datasets cannot concatenate zero Arrow shards: a saved dataset with no rows.
            raise ValueError(f"{spec_str}: empty dataset (no rows)") from None
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{spec_str}: no split {split!r}; splits: {sorted(loaded)}")
            loaded = loaded[split]
        return loaded
    if path.is_file():
        builder = DATA_EXTENSIONS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"{spec_str}: unknown extension {path.suffix!r}; expected one of {sorted(DATA_EXTENSIONS)} "
                "or a save_to_disk directory"
            )
        if path.stat().st_size == 0:
            raise ValueError(f"{spec_str}: empty file (no rows)")
        try:
            # A local file always lands in the "train" split, whatever ``split`` says.
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as error:  # noqa: BLE001 - re-raised as one line naming the file
            if "corresponds to no data" in str(error):  # datasets' way of saying "zero rows"
                raise ValueError(f"{spec_str}: empty file (no rows)") from None
            if builder == "json":
                _raise_json_error(path, spec_str)
            raise ValueError(f"{spec_str}: could not read as {builder} ({one_line(error)})") from None
    if _looks_like_path(spec_str):
        raise FileNotFoundError(f"{spec_str}: no such file or directory")
    return datasets.load_dataset(spec_str, split=split)


def _raise_json_error(path: Path, spec: str) -> None:
    """ValueError naming the first line of a JSON-lines file that is not one JSON object (or, for a file
    holding a single JSON document, the line and column where it breaks); returns when none is found."""
    import json

    with path.open(encoding="utf-8", errors="strict") as handle:
        try:
            lines = handle.read().splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"{spec}: not UTF-8 text ({one_line(error)})") from None
    whole = "\n".join(lines)
    try:
        json.loads(whole)
        return  # one valid JSON document: datasets' own message stands
    except ValueError as error:
        document_error = error
    if path.suffix.lower() == ".json" and whole.lstrip().startswith(("[", "{")) and len(lines) > 0:
        try:
            json.loads(lines[0])
        except ValueError:  # not JSON lines either: report where the single document breaks
            raise ValueError(
                f"{spec}: line {document_error.lineno}, column {document_error.colno}: not valid JSON ({document_error.msg})"
            ) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{spec}: line {number}: not valid JSON ({error.msg}, column {error.colno})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{spec}: line {number}: expected a JSON object per line, got {type(value).__name__}")


def is_message_list(value: Any) -> bool:
    """Whether ``value`` is a non-empty list of messages, each a mapping with a non-empty string
    ``role`` and a string ``content`` (extra keys, e.g. from Arrow struct columns, are allowed)."""
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        return False
    for message in value:
        if not isinstance(message, Mapping):
            return False
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role or not isinstance(content, str):
            return False
    return True


def check_prompt(prompt: Any, where: str = "prompt") -> None:
    """Raise ``ValueError`` (naming ``where``) unless ``prompt`` is a non-blank string or a valid
    message list (see :func:`is_message_list`) with at least one non-blank content."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"{where}: empty prompt string")
        return
    if is_message_list(prompt):
        if not any(message["content"].strip() for message in prompt):
            raise ValueError(f"{where}: message list whose contents are all empty")
        return
    shown = repr(prompt)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise ValueError(
        f"{where}: not a non-empty string or a list of {{'role': str, 'content': str}} messages: {shown}"
    )


def _plain_messages(prompt: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The messages as plain ``{"role", "content"}`` dicts (drops Arrow's padding keys/None values)."""
    return [{"role": message["role"], "content": message["content"]} for message in prompt]


def load_prompts(
    spec: str | Path,
    *,
    column: str = "prompt",
    split: str = "train",
    max_prompts: int | None = None,
    max_chars: int | None = None,
):
    """Load prompts as a ``datasets.Dataset`` with the single column ``prompt``.

    ``spec``: see :func:`load_table`. ``column`` names the prompt column (renamed to ``prompt``;
    other columns are dropped). Each value must be a non-empty string or a chat message list;
    every row is checked here, so a bad row fails at once with its index rather than mid-training.
    ``max_chars`` keeps only the prompts whose :func:`prompt_text` has at most that many characters
    (the paper keeps prompts under 300 characters); then ``max_prompts`` keeps the first n.
    Raises ``FileNotFoundError``/``ValueError`` with one line naming the file, the column (and the
    columns that exist), the row index, or the empty result.
    """
    if max_prompts is not None and max_prompts < 1:
        raise ValueError(f"max_prompts must be at least 1, got {max_prompts}")
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    table = load_table(spec, split=split)
    if column not in table.column_names:
        raise ValueError(f"{spec}: no column {column!r}; columns: {table.column_names}")
    if len(table) == 0:
        raise ValueError(f"{spec}: no prompts (the dataset is empty)")
    table = table.select_columns([column])
    if column != "prompt":
        table = table.rename_column(column, "prompt")

    prompts = table["prompt"]
    keep: list[int] = []
    for index, prompt in enumerate(prompts):
        check_prompt(prompt, where=f"{spec}: row {index}")
        # Every row is checked, even past the first ``max_prompts``: a broken file fails here.
        if max_chars is None or len(prompt_text(prompt)) <= max_chars:
            keep.append(index)
    if not keep:
        raise ValueError(f"{spec}: no prompt has at most {max_chars} characters ({len(table)} rows)")
    if max_prompts is not None:
        keep = keep[:max_prompts]
    if len(keep) != len(table):
        table = table.select(keep)
    return table


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The text the policy is conditioned on.

    With a chat template (``tokenizer.chat_template`` set): ``apply_chat_template(messages,
    tokenize=False, add_generation_prompt=True)``, where a string prompt becomes
    ``[{"role": "user", "content": prompt}]``. Without one: the string itself; a message list then
    raises ``ValueError`` (there is no way to render it).
    """
    check_prompt(prompt)
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _plain_messages(prompt)
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if isinstance(prompt, str):
        return prompt
    raise UsageError("a message-list prompt needs a tokenizer with a chat template; this tokenizer has none")


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of :func:`render_prompt`. A chat-template rendering is encoded without adding
    special tokens (the template already wrote any BOS it wants); a raw string gets the tokenizer's
    usual special tokens."""
    text = render_prompt(tokenizer, prompt)
    templated = bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer(text, add_special_tokens=not templated)["input_ids"])


def prompt_text(prompt: Prompt) -> str:
    """The plain text a judge reads for ``prompt``.

    A string is returned unchanged. For a message list, the contents of its ``system`` and ``user``
    messages, in order, joined by ``"\\n"`` (assistant turns of a multi-turn prompt are left out:
    the judge compares answers to what was asked). A list with no user/system message falls back to
    all contents. Training and evaluation both use this, so a judge sees identical prompt text.
    """
    if isinstance(prompt, str):
        return prompt
    check_prompt(prompt)
    asked = [m["content"] for m in prompt if m["role"] in ("system", "user")]
    return "\n".join(asked if asked else [m["content"] for m in prompt])


class PromptCollator:
    """Batch rows ``{"prompt": ...}`` for generation.

    Returns ``{"prompt_ids": LongTensor (B, L), "prompt_mask": LongTensor (B, L), "prompts": list}``:
    each prompt is encoded with :func:`encode_prompt`, padded **on the left** with the tokenizer's
    pad id (its EOS id when it has none) so that generation continues right after the last prompt
    token, ``prompt_mask`` is 1 on real tokens and 0 on padding, and ``prompts`` holds the original
    prompts (strings or message lists) in batch order.

    ``max_prompt_length``: prompts longer than this many tokens are **left-truncated** — their
    beginning is dropped and their end kept, since the end carries the generation prompt
    (``"Assistant:"``) the policy must see. ``None`` keeps every token.
    """

    def __init__(self, tokenizer, max_prompt_length: int | None = None) -> None:
        if max_prompt_length is not None and max_prompt_length < 1:
            raise ValueError(f"max_prompt_length must be at least 1, got {max_prompt_length}")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.pad_token_id = int(pad_id)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        if len(rows) == 0:
            raise ValueError("PromptCollator got an empty batch")
        prompts = [row["prompt"] for row in rows]
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        if self.max_prompt_length is not None:
            encoded = [ids[-self.max_prompt_length:] for ids in encoded]
        width = max(len(ids) for ids in encoded)
        prompt_ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        prompt_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            if ids:
                prompt_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                prompt_mask[row, width - len(ids):] = 1
        return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "prompts": prompts}


def right_padded(rows: Sequence[Mapping[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """``input_ids`` (B, L) padded on the right with ``pad_token_id`` and ``attention_mask`` (B, L), 1 on
    the tokens and 0 on padding, as LongTensors, from rows holding ``input_ids`` lists (L = the longest).
    Padding is decided by position, never by comparing ids. The training collators of SFT and of the
    preference model build on it."""
    import torch

    width = max(len(row["input_ids"]) for row in rows)
    input_ids = torch.full((len(rows), width), int(pad_token_id), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.tensor(row["input_ids"], dtype=torch.long)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def split_prompts(dataset, eval_size: int | float, seed: int = 0):
    """Split ``dataset`` into ``(train, eval)`` deterministically for a given ``seed``.

    ``eval_size``: an int is a number of rows (the paper holds out 100 evaluation prompts), a float
    in (0, 1) a fraction. The split is a seeded shuffle (``Dataset.train_test_split``), so the same
    seed gives the same rows on every machine. Raises ``ValueError`` when no training row would be left.
    """
    n = len(dataset)
    if isinstance(eval_size, bool) or not isinstance(eval_size, (int, float)):
        raise ValueError(f"eval_size must be an int or a float, got {eval_size!r}")
    if isinstance(eval_size, float) and not eval_size.is_integer():
        if not 0.0 < eval_size < 1.0:
            raise ValueError(f"a fractional eval_size must lie in (0, 1), got {eval_size}")
    else:
        eval_size = int(eval_size)
        if not 1 <= eval_size < n:
            raise ValueError(f"eval_size={eval_size} must be at least 1 and below the {n} prompts")
    parts = dataset.train_test_split(test_size=eval_size, shuffle=True, seed=seed)
    return parts["train"], parts["test"]
