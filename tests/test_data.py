"""lm_runs.data: loading prompts from every supported source, the errors, rendering, batching, splitting."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

from lm_runs.data import (  # noqa: E402
    PromptCollator,
    encode_prompt,
    load_prompts,
    prompt_text,
    render_prompt,
    split_prompts,
)
from lm_runs.tiny import build_tiny_tokenizer  # noqa: E402

STRINGS = ["tell me about the cat", "why is the sun red", "write a poem about water"]
MESSAGES = [
    [{"role": "user", "content": "tell me about the dog"}],
    [{"role": "system", "content": "be happy"}, {"role": "user", "content": "how big is the moon"}],
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# --------------------------------------------------------------------------------------- loading


def test_load_jsonl_strings(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p, "other": i} for i, p in enumerate(STRINGS)])
    ds = load_prompts(str(path))
    assert ds.column_names == ["prompt"]
    assert ds["prompt"] == STRINGS


def test_load_jsonl_messages(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": m} for m in MESSAGES])
    ds = load_prompts(path)
    assert [[{"role": m["role"], "content": m["content"]} for m in p] for p in ds["prompt"]] == MESSAGES


def test_load_csv_with_other_column_name(tmp_path):
    import pandas as pd

    path = tmp_path / "p.csv"
    pd.DataFrame({"question": STRINGS, "id": [1, 2, 3]}).to_csv(path, index=False)
    ds = load_prompts(str(path), column="question")
    assert ds.column_names == ["prompt"]
    assert ds["prompt"] == STRINGS


@pytest.mark.parametrize("kind", ["strings", "messages"])
def test_load_parquet(tmp_path, kind):
    rows = STRINGS if kind == "strings" else MESSAGES
    path = tmp_path / "p.parquet"
    datasets.Dataset.from_dict({"prompt": rows}).to_parquet(str(path))
    ds = load_prompts(str(path))
    got = ds["prompt"]
    if kind == "messages":
        got = [[{"role": m["role"], "content": m["content"]} for m in p] for p in got]
    assert got == rows


def test_load_save_to_disk_dir_and_dict(tmp_path):
    datasets.Dataset.from_dict({"prompt": STRINGS}).save_to_disk(str(tmp_path / "flat"))
    assert load_prompts(str(tmp_path / "flat"))["prompt"] == STRINGS
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"prompt": STRINGS}),
         "test": datasets.Dataset.from_dict({"prompt": STRINGS[:1]})}
    )
    dd.save_to_disk(str(tmp_path / "dict"))
    assert load_prompts(str(tmp_path / "dict"), split="test")["prompt"] == STRINGS[:1]
    with pytest.raises(ValueError, match="no split 'validation'.*test.*train"):
        load_prompts(str(tmp_path / "dict"), split="validation")


def test_max_chars_then_max_prompts(tmp_path):
    prompts = ["a" * 10, "b" * 300, "c" * 299, "d" * 5, "e" * 301, "f" * 7]
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in prompts])
    assert load_prompts(str(path), max_chars=299)["prompt"] == ["a" * 10, "c" * 299, "d" * 5, "f" * 7]
    assert load_prompts(str(path), max_chars=300)["prompt"] == ["a" * 10, "b" * 300, "c" * 299, "d" * 5, "f" * 7]
    assert load_prompts(str(path), max_chars=299, max_prompts=2)["prompt"] == ["a" * 10, "c" * 299]
    assert load_prompts(str(path), max_prompts=3)["prompt"] == prompts[:3]
    # max_chars counts the judge's text of a message list (user/system contents joined by "\n").
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": m} for m in MESSAGES])
    limit = len("be happy\nhow big is the moon")
    assert len(load_prompts(str(path), max_chars=limit)) == 2
    assert len(load_prompts(str(path), max_chars=limit - 1)) == 1


def _empty_dataset(tmp_path, parquet=False):
    features = datasets.Features({"prompt": datasets.Value("string")})
    empty = datasets.Dataset.from_dict({"prompt": []}, features=features)
    if parquet:
        empty.to_parquet(str(tmp_path / "e.parquet"))
        return tmp_path / "e.parquet"
    empty.save_to_disk(str(tmp_path / "empty_dir"))
    return tmp_path / "empty_dir"


def _bad_row_file(tmp_path, value):
    return write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine prompt"}, {"prompt": "another"}, {"prompt": value}])


@pytest.mark.parametrize(
    "make, kwargs, error, pattern",
    [
        (lambda t: t / "missing.jsonl", {}, FileNotFoundError, r"missing\.jsonl: no such file"),
        (lambda t: (t / "p.txt").write_text("x") and t / "p.txt", {}, ValueError, r"p\.txt: unknown extension '\.txt'"),
        (lambda t: write_jsonl(t / "p.jsonl", [{"text": "x", "id": 1}]), {}, ValueError,
         r"no column 'prompt'; columns: \['text', 'id'\]"),
        (lambda t: write_jsonl(t / "p.jsonl", [{"prompt": "x"}]), {"column": "question"}, ValueError,
         r"no column 'question'; columns: \['prompt'\]"),
        (lambda t: _empty_dataset(t), {}, ValueError, r"empty_dir: empty dataset \(no rows\)"),
        (lambda t: _empty_dataset(t, parquet=True), {}, ValueError, r"e\.parquet: empty file \(no rows\)"),
        (lambda t: (t / "e.csv").write_text("prompt\n") and t / "e.csv", {}, ValueError, r"e\.csv: empty file"),
        (lambda t: (t / "e.jsonl").touch() or t / "e.jsonl", {}, ValueError, r"e\.jsonl: empty file"),
        (lambda t: _bad_row_file(t, ""), {}, ValueError, r"row 2: empty prompt string"),
        (lambda t: _bad_row_file(t, "   "), {}, ValueError, r"row 2: empty prompt string"),
        (lambda t: write_jsonl(t / "p.jsonl", [{"prompt": "ok"}, {"prompt": None}]), {}, ValueError,
         r"row 1: not a non-empty string"),
        (lambda t: write_jsonl(t / "p.jsonl", [{"prompt": [{"role": "user", "content": "hi"}]},
                                               {"prompt": [{"role": "user"}]}]), {}, ValueError,
         r"row 1: not a non-empty string or a list of"),
        (lambda t: write_jsonl(t / "p.jsonl", [{"prompt": [{"role": "user", "content": "hi"}]}, {"prompt": []}]),
         {}, ValueError, r"row 1: not a non-empty string"),
        (lambda t: write_jsonl(t / "p.jsonl", [{"prompt": [{"role": "user", "content": ""}]}]), {}, ValueError,
         r"row 0: message list whose contents are all empty"),
        (lambda t: write_jsonl(t / "p.jsonl", [{"prompt": "a" * 50}]), {"max_chars": 10}, ValueError,
         r"no prompt has at most 10 characters"),
        (lambda t: write_jsonl(t / "p.jsonl", [{"prompt": "x"}]), {"max_prompts": 0}, ValueError,
         r"max_prompts must be at least 1"),
    ],
    ids=["missing-file", "extension", "column", "named-column", "empty", "empty-parquet", "header-only-csv", "empty-file", "empty-string", "blank-string",
         "null", "message-without-content", "empty-list", "empty-contents", "all-filtered", "max-prompts-0"],
)
def test_load_errors(tmp_path, make, kwargs, error, pattern):
    spec = make(tmp_path)
    with pytest.raises(error, match=pattern) as info:
        load_prompts(str(spec), **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name, text, pattern",
    [
        ("p.jsonl", '{"prompt": "a"}\n\n{"prompt": "b",}\n{"prompt": "c"}\n', r"p\.jsonl: line 3: not valid JSON \(.*column 16\)$"),
        ("p.jsonl", '{"prompt": "a"}\n["b"]\n', r"p\.jsonl: line 2: expected a JSON object per line, got list$"),
        ("p.json", '[{"prompt": "a"},\n {"prompt": "b"\n', r"p\.json: line 2, column 16: not valid JSON"),
        ("p.jsonl", b"\xff\xfe{}", r"p\.jsonl: not UTF-8 text"),
    ],
    ids=["jsonl-line", "jsonl-not-object", "json-document", "not-utf8"],
)
def test_malformed_json_names_the_line(tmp_path, name, text, pattern):
    """A malformed JSON(-lines) file is reported with the line where it breaks, in one line."""
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=pattern) as info:
        load_prompts(str(path))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------- rendering


def test_render_prompt_uses_chat_template(tokenizer):
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "tell me about the cat"}], tokenize=False, add_generation_prompt=True
    )
    assert expected == "User: tell me about the cat\nAssistant:"
    assert render_prompt(tokenizer, "tell me about the cat") == expected
    assert render_prompt(tokenizer, MESSAGES[1]) == tokenizer.apply_chat_template(
        MESSAGES[1], tokenize=False, add_generation_prompt=True
    )
    assert render_prompt(tokenizer, MESSAGES[1]) == "System: be happy\nUser: how big is the moon\nAssistant:"


def test_render_prompt_without_template(tmp_path):
    from transformers import AutoTokenizer

    build_tiny_tokenizer(tmp_path)
    plain = AutoTokenizer.from_pretrained(tmp_path)
    plain.chat_template = None
    assert render_prompt(plain, "why is the sun red") == "why is the sun red"
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(plain, MESSAGES[0])


def test_prompt_text():
    assert prompt_text("why is the sun red") == "why is the sun red"
    assert prompt_text(MESSAGES[1]) == "be happy\nhow big is the moon"
    multi = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": "tell me a story"}]
    assert prompt_text(multi) == "hi\ntell me a story"


# --------------------------------------------------------------------------------------- batching


def test_prompt_collator_left_pads(tokenizer):
    rows = [{"prompt": "cat"}, {"prompt": "tell me a long story about the big red dog and the fish"},
            {"prompt": MESSAGES[1]}]
    batch = PromptCollator(tokenizer, max_prompt_length=None)(rows)
    ids, mask = batch["prompt_ids"], batch["prompt_mask"]
    assert batch["prompts"] == [r["prompt"] for r in rows]
    assert ids.dtype.is_floating_point is False and ids.shape == mask.shape
    encoded = [encode_prompt(tokenizer, r["prompt"]) for r in rows]
    width = max(len(e) for e in encoded)
    assert ids.shape == (3, width)
    for row, e in enumerate(encoded):
        pad = width - len(e)
        assert ids[row, pad:].tolist() == e                               # real tokens at the right end
        assert ids[row, :pad].tolist() == [tokenizer.pad_token_id] * pad  # padding on the left
        assert mask[row].tolist() == [0] * pad + [1] * len(e)
    assert tokenizer.decode(ids[0][mask[0].bool()]) == "User: cat\nAssistant:"
    assert mask[0, 0] == 0 and mask[1].all()


def test_prompt_collator_keeps_the_end(tokenizer):
    long_prompt = "tell me a long story about the big red dog and the small blue fish please"
    full = encode_prompt(tokenizer, long_prompt)
    short = encode_prompt(tokenizer, "cat")
    limit = len(short) + 3
    assert len(full) > limit
    batch = PromptCollator(tokenizer, max_prompt_length=limit)([{"prompt": long_prompt}, {"prompt": "cat"}])
    assert batch["prompt_ids"].shape == (2, limit)
    assert batch["prompt_ids"][0].tolist() == full[-limit:]
    kept = tokenizer.decode(batch["prompt_ids"][0])
    assert kept.endswith("\nAssistant:") and render_prompt(tokenizer, long_prompt).endswith(kept)
    assert batch["prompt_mask"][0].tolist() == [1] * limit
    assert batch["prompt_mask"][1].tolist() == [0] * 3 + [1] * len(short)
    assert batch["prompt_ids"][1, 3:].tolist() == short


# --------------------------------------------------------------------------------------- splitting


def test_split_prompts_deterministic():
    ds = datasets.Dataset.from_dict({"prompt": [f"prompt {i}" for i in range(50)]})
    train, held = split_prompts(ds, 10, seed=3)
    assert len(train) == 40 and len(held) == 10
    assert set(train["prompt"]).isdisjoint(held["prompt"])
    assert set(train["prompt"]) | set(held["prompt"]) == set(ds["prompt"])
    again_train, again_held = split_prompts(ds, 10, seed=3)
    assert again_held["prompt"] == held["prompt"] and again_train["prompt"] == train["prompt"]
    assert split_prompts(ds, 10, seed=4)[1]["prompt"] != held["prompt"]
    assert len(split_prompts(ds, 0.2, seed=0)[1]) == 10
    with pytest.raises(ValueError, match="eval_size=50"):
        split_prompts(ds, 50, seed=0)
