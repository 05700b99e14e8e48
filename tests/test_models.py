"""lm_runs.models: a model source of the wrong kind for its role is refused in one line, before any weight
loads; the loaders give what the entry points need."""

from __future__ import annotations

import json
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lm_runs.models import (  # noqa: E402
    ModelRoleError,
    check_model_source,
    load_causal_lm,
    load_policy,
    load_preference_model,
    judge_model_role,
    load_preference_model_base,
    load_reward_model,
    load_reward_model_base,
    load_tokenizer,
)
from lm_runs.tiny import build_tiny_lm  # noqa: E402


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return {"lm": build_tiny_lm(root / "lm"), "pm": build_tiny_lm(root / "pm", num_labels=2),
            "three": build_tiny_lm(root / "three", num_labels=3), "rm": build_tiny_lm(root / "rm", num_labels=1),
            "root": root}


def refused(name, role) -> str:
    with pytest.raises(ModelRoleError) as caught:
        check_model_source(name, role)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_right_kind_passes(zoo):
    check_model_source(zoo["lm"], "policy")
    check_model_source(str(zoo["lm"]), "reference")
    check_model_source(zoo["pm"], "preference_model")
    check_model_source(zoo["lm"], "preference_model_base")
    check_model_source(zoo["pm"], "preference_model_base")


def test_wrong_kind_for_the_role(zoo):
    message = refused(zoo["lm"], "preference_model")
    assert str(zoo["lm"]) in message and "causal language model (GPT2LMHeadModel)" in message
    assert "sequence classifier with 2 labels" in message
    message = refused(zoo["pm"], "policy")
    assert "sequence classifier with 2 labels (GPT2ForSequenceClassification)" in message and "a policy must be" in message
    assert "3 labels" in refused(zoo["three"], "preference_model")
    assert "3 labels" in refused(zoo["three"], "preference_model_base")
    with pytest.raises(ValueError, match="unknown model role 'judge'"):
        check_model_source(zoo["lm"], "judge")


def test_missing_paths_files_and_folders_without_config_are_refused_at_once(zoo, tmp_path):
    started = time.perf_counter()
    assert refused("/nonexistent", "policy") == "/nonexistent: no such model folder"
    assert refused(str(tmp_path / "a" / "b"), "policy").endswith("no such model folder")
    assert refused("./no_such_model", "preference_model").endswith("no such model folder")
    (tmp_path / "runs").mkdir()
    assert refused(str(tmp_path / "runs") + "/sft", "policy").endswith("no such model folder")
    assert "a file, not a model folder" in refused(str(zoo["lm"] / "config.json"), "policy")
    assert "no config.json" in refused(str(tmp_path), "policy")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{ not json")
    assert "config.json: not a readable JSON file" in refused(str(tmp_path / "broken"), "policy")
    assert time.perf_counter() - started < 2.0  # no hub retries for a path that is clearly local


def test_hub_name_offline_is_one_line_quickly(monkeypatch):
    """A hub-like name that is not cached, with no way to ask the hub, is refused in one line (today's
    loaders retried for 52 s and then printed two tracebacks)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    started = time.perf_counter()
    message = refused("someone/no-such-model-xyz", "policy")
    assert message.startswith("someone/no-such-model-xyz: no such local folder")
    assert time.perf_counter() - started < 5.0


def test_lora_adapter_folders(zoo, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(zoo["lm"]),
                           LoraConfig(task_type="CAUSAL_LM", r=2, lora_alpha=4, target_modules=["c_attn"]))
    model.save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(zoo["lm"])
    check_model_source(adapter, "policy")
    assert "LoRA adapter folder" in refused(adapter, "preference_model")
    # An adapter whose base is a classifier is no policy.
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(zoo["pm"])
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert "whose base does not fit" in refused(adapter, "policy")
    config["task_type"] = "SEQ_CLS"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert "LoRA adapter for task SEQ_CLS" in refused(adapter, "policy")


def test_loaders(zoo):
    tokenizer = load_tokenizer(zoo["lm"], padding_side="left")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    first = load_policy(zoo["lm"], pad_token_id=7, seed=3)
    assert first.config.pad_token_id == 7 and first.generation_config.pad_token_id == 7

    class Lora:
        use_peft, lora_r, lora_alpha, lora_dropout, lora_target_modules = True, 2, 4, 0.0, None

    a = load_policy(zoo["lm"], lora=Lora(), seed=5)
    b = load_policy(zoo["lm"], lora=Lora(), seed=5)
    c = load_policy(zoo["lm"], lora=Lora(), seed=6)
    name = next(n for n, _ in a.named_parameters() if "lora_A" in n)
    pa, pb, pc = (dict(m.named_parameters())[name] for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)  # the adapter's init follows the seed
    h1 = load_preference_model_base(zoo["lm"], pad_token_id=1, seed=0)
    h2 = load_preference_model_base(zoo["lm"], pad_token_id=1, seed=0)
    assert h1.config.num_labels == 2 and h1.config.id2label == {0: "first_is_better", 1: "second_is_better"}
    assert torch.equal(h1.score.weight, h2.score.weight)  # a fresh head, the same for the same seed
    model, pm_tokenizer = load_preference_model(zoo["pm"])
    assert model.config.num_labels == 2 and not model.training and pm_tokenizer is not None
    with pytest.raises(ModelRoleError, match="a preference model must be"):
        load_preference_model(zoo["lm"])
    lm, lm_tokenizer = load_causal_lm(zoo["lm"])
    assert not lm.training and lm_tokenizer.eos_token_id is not None
    with pytest.raises(ModelRoleError, match="a policy must be"):
        load_causal_lm(zoo["pm"])


# ------------------------------------------------------------------------------------- content digests


def digest_folder(folder):
    """A model folder of fixed bytes: weights of several kinds (one over 64 MiB, hashed by samples), the
    config, tokenizer and adapter files, and files neither digest reads (training_args.bin, an index,
    notes, a folder named like a tokenizer file)."""
    folder.mkdir(parents=True)
    texts = {
        "config.json": '{"architectures": ["GPT2LMHeadModel"]}\n',
        "adapter_config.json": '{"r": 4}\n',
        "generation_config.json": '{"eos_token_id": 2}\n',
        "tokenizer.json": '{"model": {"vocab": {}}}\n',
        "tokenizer_config.json": '{"chat_template": "x"}\n',
        "special_tokens_map.json": '{"eos_token": "</s>"}\n',
        "chat_template.jinja": "{{ messages }}\n",
        "vocab.json": '{"a": 0}\n',
        "merges.txt": "a b\n",
        "model.safetensors.index.json": '{"weight_map": {}}\n',
        "notes.txt": "not part of the model\n",
        "README.md": "# a model\n",
    }
    for name, text in texts.items():
        (folder / name).write_text(text)
    blobs = {
        "model.safetensors": bytes(range(256)) * 40,
        "tokenizer.model": b"\x00\x01spm" * 50,
        "pytorch_model-00001-of-00002.bin": b"torch" * 99,
        "training_args.bin": b"args" * 10,
        ".hidden.bin": b"hidden",
        ".hidden.model": b"hidden model",
        "optimizer.pt": b"opt" * 7,
        "big.pth": bytes(range(251)) * ((64 << 20) // 251 + 100),
    }
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
    (folder / "tokenizer_dir").mkdir()
    return folder


#: What the evaluation's model_identity and the preference-model judge's identity gave for digest_folder
#: before both moved to lm_runs.models.folder_digest (computed with the code of commit 1184e62): saved
#: evaluations pin these values, so they must not change.
IDENTITY_BEFORE = {
    ".hidden.bin": "3f8d2546e9b7b83cd0553ba1750b229b0565de96da1d18294c24f8dd4f875497",
    "adapter_config.json": "6d50e3ab3c62690d01e8096bfc103e1aa26f4b3eb8ae68de410a934d3628da5e",
    "big.pth": "a132f85a527798b742968980a8678d269426ee253864568746259660b6699184",
    "chat_template.jinja": "25a089db1a4ef920a9d3160bf77862dff715f1659538b15f830b01aff8d38974",
    "config.json": "0100b7e5a8ac8e258f60cd56dceaa767e43a8f31e94dbc73c1a94f92014e432f",
    "generation_config.json": "1cf4491cf48aab9c613b5444cdfbcc507aa6533d610b372230c12ddf0400081b",
    "model.safetensors": "36a960a31cd6ee5c97253f1693146da0d6d3432f4e4a5d6a1cbced97eab925be",
    "optimizer.pt": "e74083bd4afbf6d4a0cdfa013186364656ce3841c970ee938423b0c9a07ca8b5",
    "pytorch_model-00001-of-00002.bin": "f4d772fd7baf5caf9939f4ea0310c696ea0eeadf93eba8d76ab93d9925b23656",
    "special_tokens_map.json": "5223e9360185fe80c96102262fd14bee60e091958fc8957cc64ab83828d28966",
    "tokenizer.json": "ed8e74ffd3a6560e02c4eca0c63a0d691ffa65d8292b440fc5eb5d215c639de0",
    "tokenizer.model": "53c89765a03128cc64cdfb393738b93e385e98c678e2d5b7d823846d808623ba",
    "tokenizer_config.json": "db24d89e4120b2b79a5b61b07e3f229dc89a8b30b9e50520ecdf3ad6c1ea5a48",
}
JUDGE_BEFORE = {
    ".hidden.model": "878e0b30d3676ba61c99b82555dfa47e4d649f9985b4f74ef3ec5e61803cb2ad",
    "config.json": "0f631958aff2e6c80e8299c0fc0a4425d1f833e4e8d26279471bff8360599fc1",
    "merges.txt": "01186fcf04b4b447f393e552964c08c7b419c1ad7a25c342a0b631b1967d3a27",
    "model.safetensors": "e96760a87768717bcebcfd25ddc7d46b4dbc95a4b0014def080c08539f7d90d0",
    "pytorch_model-00001-of-00002.bin": "17f03a1acab490063dccdc2779e62ab2ea98ef747f275033bc36209c006710fb",
    "special_tokens_map.json": "457ba39d556763b9e5186ebf5dd7bbe6f5fa184214ff5932800b0798f61d40a2",
    "tokenizer.json": "9c18113f8979b1b5a078144c5e0db8631046b73ca1051d07ec88ff5f1b4ca0b7",
    "tokenizer.model": "00616fb0a1b59fd5a7892e47b87ca3650cf58d14c7baef9de71b450872fb0661",
    "tokenizer_config.json": "e897cff86ae4ceeb05c8df278e061b4f9b7b7e05cf58b15bb02b0a29475e03a9",
    "vocab.json": "e3dc792d722c4dde5c4a0ab28c9d874e7092c5e4805fc3a2bf7d041fb107f9ef",
}


def test_folder_digests_keep_their_values_and_follow_the_weights(tmp_path):
    from lm_runs.evaluate.settings import model_identity, sampling_stream
    from lm_runs.judges.preference_model import PreferenceModelJudge
    from lm_runs.models import folder_digest

    folder = digest_folder(tmp_path / "model")
    identity = model_identity(folder)
    assert identity == {"directory": "model", "files": IDENTITY_BEFORE}
    judge = PreferenceModelJudge.__new__(PreferenceModelJudge)  # identity() reads the folder only
    judge.path, judge.seed, judge.max_length = folder, 0, 1024
    assert judge.identity() == {"kind": "preference_model", "files": JUDGE_BEFORE, "seed": 0, "max_length": 1024}
    assert list(judge.identity()["files"]) == sorted(JUDGE_BEFORE)  # sorted by name, as settings.json holds it

    # independent of where the folder lies (the name aside)
    moved = digest_folder(tmp_path / "elsewhere" / "model")
    assert model_identity(moved) == identity

    # a changed weight changes both digests of that file and nothing else
    stream = sampling_stream(identity, "m")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[5000] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(data))
    changed = model_identity(folder)["files"]
    assert {k for k in changed if changed[k] != IDENTITY_BEFORE[k]} == {"model.safetensors"}
    judged = folder_digest(folder, PreferenceModelJudge.CONTENT_FILES)
    assert {k for k in judged if judged[k] != JUDGE_BEFORE[k]} == {"model.safetensors"}
    assert sampling_stream(model_identity(folder), "m") != stream
    # a large file is hashed by its size and four 1 MiB blocks: a change inside the middle one counts
    big = folder / "big.pth"
    with open(big, "r+b") as handle:
        handle.seek(big.stat().st_size // 3 + 10)
        handle.write(b"\xff")
    assert model_identity(folder)["files"]["big.pth"] != IDENTITY_BEFORE["big.pth"]
    # the plain digest is the file's SHA-256
    import hashlib

    assert judged["config.json"] == hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()


def test_reward_model_roles(zoo):
    """A 1-label classifier is a reward model (and a base for one); the two judge roles do not mix."""
    check_model_source(zoo["rm"], "reward_model")
    check_model_source(zoo["rm"], "reward_model_base")
    check_model_source(zoo["lm"], "reward_model_base")
    assert "1 labels" in refused(zoo["rm"], "preference_model")
    assert "2 labels" in refused(zoo["pm"], "reward_model")
    assert "3 labels" in refused(zoo["three"], "reward_model_base")
    assert "causal language model" in refused(zoo["lm"], "reward_model")
    assert (judge_model_role(zoo["rm"]), judge_model_role(zoo["pm"])) == ("reward_model", "preference_model")
    for which in ("three", "lm"):
        with pytest.raises(ModelRoleError, match="a judge model must be a sequence classifier with 2 labels") as caught:
            judge_model_role(zoo[which])
        assert "\n" not in str(caught.value)


def test_regression_outputs_other_than_one_are_no_judge(zoo, tmp_path):
    """problem_type regression with 2 outputs is not a pairwise preference model: refused by both roles."""
    folder = tmp_path / "two_regression"
    folder.mkdir()
    config = json.loads((zoo["pm"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "problem_type": "regression"}))
    with pytest.raises(ModelRoleError, match="problem_type regression"):
        judge_model_role(folder)
    refused(folder, "preference_model")


def test_reward_model_loaders(zoo):
    model, tokenizer = load_reward_model(zoo["rm"])
    assert model.config.num_labels == 1 and not model.training and model.config.pad_token_id == tokenizer.pad_token_id
    with pytest.raises(ModelRoleError, match="a reward model must be"):
        load_reward_model(zoo["pm"])
    h1 = load_reward_model_base(zoo["lm"], pad_token_id=1, seed=0)
    h2 = load_reward_model_base(zoo["lm"], pad_token_id=1, seed=0)
    assert h1.config.num_labels == 1 and h1.config.problem_type == "regression" and h1.config.pad_token_id == 1
    assert h1.score.weight.shape[0] == 1 and torch.equal(h1.score.weight, h2.score.weight)
