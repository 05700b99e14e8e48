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
    load_preference_model_base,
    load_tokenizer,
)
from lm_runs.tiny import build_tiny_lm  # noqa: E402


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return {"lm": build_tiny_lm(root / "lm"), "pm": build_tiny_lm(root / "pm", num_labels=2),
            "three": build_tiny_lm(root / "three", num_labels=3), "root": root}


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
