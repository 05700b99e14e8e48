"""The one home for loading models: tokenizer, policy (+ LoRA), reference, the evaluation's causal LM and
the preference model — the place where a model of the wrong kind for its role is refused, and the digest
of a model folder's content (:func:`folder_digest`, what saved evaluations and judges are tied to).

Every entry point asks :func:`check_model_source` first. It reads ``config.json`` (or
``adapter_config.json``) only, so a mistake costs milliseconds and one line instead of a weight load, a
minute of hub retries for a path that is clearly local, or — worst — a silently wrong model:

* a missing local path, a file, or a folder without ``config.json``/``adapter_config.json`` is refused;
* roles ``"policy"`` and ``"reference"`` need a causal LM: an architecture named ``*ForCausalLM`` or
  ``*LMHeadModel``, or a LoRA adapter folder (``task_type`` ``CAUSAL_LM``) whose base is one;
* role ``"preference_model"`` (the pairwise judge) needs a sequence classifier
  (``*ForSequenceClassification``) with exactly 2 labels: a causal LM loaded as a classifier would get
  a random ``score`` head and serve random preferences;
* role ``"preference_model_base"`` (what ``train_preference_model`` starts from) takes either a causal LM
  (it gets a fresh 2-label head) or a 2-label sequence classifier;
* role ``"reward_model"`` (the Bradley–Terry judge) needs a sequence classifier with 1 label, a scalar
  reward r(x, y) (``problem_type`` ``"regression"`` or unset), and ``"reward_model_base"`` (what
  ``train_reward_model`` starts from) a causal LM (fresh 1-label head) or such a classifier;
* :func:`judge_model_role` tells which of the two judge roles a model folder serves (the ``--judge``
  loader asks it): 2 labels → ``"preference_model"``, 1 → ``"reward_model"``, anything else refused.

A name that is not a local path and looks like a hub id (``org/name``) is checked from the hub's
``config.json`` (the local cache first); one whose first folder exists here (``runs/sft`` with a
``runs/`` folder), that starts with ``/``, ``./``, ``../`` or ``~``, or that has more than one ``/`` is a
local path, and a missing one is refused at once.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from lm_runs.launcher import UsageError

__all__ = [
    "ModelRoleError",
    "folder_digest",
    "ROLES",
    "check_model_source",
    "model_kind",
    "judge_model_role",
    "load_tokenizer",
    "load_policy",
    "load_reference",
    "load_causal_lm",
    "load_preference_model",
    "load_preference_model_base",
    "load_reward_model",
    "load_reward_model_base",
]

#: The roles :func:`check_model_source` knows, and what each needs (used in messages).
ROLES: dict[str, str] = {
    "policy": "a causal language model (…ForCausalLM / …LMHeadModel)",
    "reference": "a causal language model (…ForCausalLM / …LMHeadModel)",
    "preference_model": "a sequence classifier with 2 labels (…ForSequenceClassification), "
    "e.g. one trained by python -m lm_runs.train_preference_model",
    "preference_model_base": "a causal language model or a sequence classifier with 2 labels",
    "reward_model": "a sequence classifier with 1 label, a scalar reward (…ForSequenceClassification, "
    "problem_type regression or unset), e.g. one trained by python -m lm_runs.train_reward_model",
    "reward_model_base": "a causal language model or a sequence classifier with 1 label",
}

#: What a ``--judge`` model folder must be (used in :func:`judge_model_role`'s refusal).
JUDGE_MODEL_NEEDS = (
    "a sequence classifier with 2 labels (a pairwise preference model) or 1 label (a scalar reward model)"
)

_CAUSAL = re.compile(r"(ForCausalLM|LMHeadModel)$")
_CLASSIFIER = re.compile(r"ForSequenceClassification$")
# Hugging Face hub ids: "name" or "org/name" of letters, digits, '-', '_', '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class ModelRoleError(UsageError):
    """A model source that cannot serve its role: the message (one line) names the path, what it is and
    what the role needs. Entry points print it and exit with status 2 (a :class:`~lm_runs.launcher.UsageError`)."""


# ------------------------------------------------------------------------------------- checking


def _looks_local(name: str) -> bool:
    """Whether ``name`` (which does not exist) can only mean a local path."""
    if name.startswith(("/", "./", "../", "~", ".")) or "\\" in name or name.endswith("/"):
        return True
    if not _HUB_ID.match(name):
        return True
    first = name.split("/", 1)[0]
    return "/" in name and Path(first).is_dir()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelRoleError(f"{path}: not a readable JSON file ({' '.join(str(error).split())[:200]})") from None
    if not isinstance(data, dict):
        raise ModelRoleError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _hub_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of hub model ``repo_id``: from the local cache, else downloaded; None when the repo
    has no such file. Raises ModelRoleError (one line) when the hub cannot be asked."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return Path(cached)
    if not _hub_resolves():
        raise ModelRoleError(f"{repo_id}: no such local folder, and the hub's host cannot be resolved (offline?)")
    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as error:  # noqa: BLE001 - every failure becomes one line naming the model
        kind = type(error).__name__
        if kind == "EntryNotFoundError":
            return None
        if kind in ("RepositoryNotFoundError", "GatedRepoError"):
            raise ModelRoleError(f"{repo_id}: no such local folder, and no such (accessible) model on the hub") from None
        raise ModelRoleError(
            f"{repo_id}: no such local folder, and the hub could not be asked for it ({kind}); "
            "give a local model folder or check the network"
        ) from None


def _hub_resolves() -> bool:
    """Whether the hub's host name resolves (True in offline mode, where huggingface_hub answers at once
    from its cache): without a name server huggingface_hub would retry for about 25 s before failing."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return False
    return True


def _source_configs(name: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(config.json, adapter_config.json)`` of a model source as dicts (None where absent); refuses a
    missing local path, a file, or a folder holding neither."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelRoleError(f"{name}: a file, not a model folder (expected a folder with config.json)")
        config, adapter = path / "config.json", path / "adapter_config.json"
        if not config.is_file() and not adapter.is_file():
            raise ModelRoleError(f"{name}: no config.json in this folder, so it is not a model folder")
        return (_read_json(config) if config.is_file() else None, _read_json(adapter) if adapter.is_file() else None)
    if _looks_local(name):
        raise ModelRoleError(f"{name}: no such model folder")
    config = _hub_file(name, "config.json")
    adapter = _hub_file(name, "adapter_config.json") if config is None else None
    if config is None and adapter is None:
        raise ModelRoleError(f"{name}: the hub model has no config.json, so it is not a model transformers can load")
    return (_read_json(config) if config else None, _read_json(adapter) if adapter else None)


def _num_labels(config: dict[str, Any]) -> int:
    """The label count a config.json declares (transformers' default, 2, when it names none)."""
    if isinstance(config.get("id2label"), dict):
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def _classifier_labels(config: dict[str, Any]) -> int | None:
    """The label count of a sequence classifier's config (None for any other kind); a 2-label config
    declaring ``problem_type`` ``"regression"`` (two regression outputs, not a preference) counts as 0."""
    if model_kind(config) != "classifier":
        return None
    labels = _num_labels(config)
    if config.get("problem_type") == "regression" and labels != 1:
        return 0
    if config.get("problem_type") not in (None, "regression") and labels == 1:
        return 0
    return labels


def model_kind(config: dict[str, Any]) -> str:
    """``"causal_lm"``, ``"classifier"`` or ``"other"`` from a config.json's ``architectures``
    (``"unknown"`` when it declares none)."""
    architectures = config.get("architectures") or []
    if not architectures:
        return "unknown"
    if any(_CAUSAL.search(a) for a in architectures):
        return "causal_lm"
    if any(_CLASSIFIER.search(a) for a in architectures):
        return "classifier"
    return "other"


def _describe(config: dict[str, Any]) -> str:
    architectures = ", ".join(config.get("architectures") or []) or "no architecture declared"
    kind = model_kind(config)
    if kind == "causal_lm":
        return f"a causal language model ({architectures})"
    if kind == "classifier":
        return f"a sequence classifier with {_num_labels(config)} labels ({architectures})"
    return f"a model of another kind ({architectures})"


def check_model_source(name_or_path: str | os.PathLike[str], role: str) -> None:
    """Refuse, before any weight loads, a model source that cannot serve ``role`` (see the module
    docstring for what each role needs). Raises :class:`ModelRoleError` with one line naming the path,
    what it is and what ``role`` needs; returns None when the source fits."""
    if role not in ROLES:
        raise ValueError(f"unknown model role {role!r}; roles: {', '.join(ROLES)}")
    name = str(name_or_path)
    if not name.strip():
        raise ModelRoleError(f"an empty model name was given where {ROLES[role]} is needed")
    needs = ROLES[role]
    config, adapter = _source_configs(name)
    if config is None:  # a LoRA adapter folder: judge it by its task and its base model
        assert adapter is not None
        task = str(adapter.get("task_type") or "")
        base = adapter.get("base_model_name_or_path")
        if role in ("policy", "reference"):
            if task and task != "CAUSAL_LM":
                raise ModelRoleError(f"{name} is a LoRA adapter for task {task}; a {role} must be {needs}")
            if base and Path(str(base)).expanduser().is_dir():  # a hub or moved base is the loader's to find
                try:
                    check_model_source(str(base), role)
                except ModelRoleError as error:
                    raise ModelRoleError(f"{name}: a LoRA adapter whose base does not fit: {error}") from None
            return
        raise ModelRoleError(
            f"{name} is a LoRA adapter folder; a {role.replace('_', ' ')} must be a full model ({needs}): "
            "merge the adapter into its base first"
        )
    kind = model_kind(config)
    labels = _classifier_labels(config)
    if role in ("policy", "reference"):
        if kind in ("causal_lm", "unknown"):
            return
    elif role in ("preference_model", "reward_model"):
        if labels == _JUDGE_LABELS[role]:
            return
    elif kind == "causal_lm" or labels == _JUDGE_LABELS[role.removesuffix("_base")]:  # *_base
        return
    raise ModelRoleError(f"{name} is {_describe(config)}; a {role.replace('_', ' ')} must be {needs}")


#: The label count of each judge role's sequence classifier.
_JUDGE_LABELS = {"preference_model": 2, "reward_model": 1}


def judge_model_role(name_or_path: str | os.PathLike[str]) -> str:
    """``"preference_model"`` (a 2-label sequence classifier: P(a ≻ b) read off a pair) or
    ``"reward_model"`` (1 label: a scalar reward per response) for a ``--judge`` model folder, from its
    ``config.json`` alone. Raises :class:`ModelRoleError` (one line naming the path, what it is and
    :data:`JUDGE_MODEL_NEEDS`) for anything else: a causal LM, a 3-label classifier, a LoRA adapter."""
    name = str(name_or_path)
    config, _ = _source_configs(name)
    if config is None:
        raise ModelRoleError(f"{name} is a LoRA adapter folder; a judge model must be a full model ({JUDGE_MODEL_NEEDS}): "
                             "merge the adapter into its base first")
    labels = _classifier_labels(config)
    for role, count in _JUDGE_LABELS.items():
        if labels == count:
            return role
    regression = " with problem_type regression" if config.get("problem_type") == "regression" else ""
    raise ModelRoleError(f"{name} is {_describe(config)}{regression}; a judge model must be {JUDGE_MODEL_NEEDS}")


# -------------------------------------------------------------------------------------- content

#: Above this size :func:`folder_digest` with ``sampled=True`` reads four blocks of a file, not all of it.
_SAMPLED_ABOVE = 64 << 20
_BLOCK = 1 << 20


def _file_digest(path: Path, sampled: bool) -> str:
    """SHA-256 (hex) of one file, as :func:`folder_digest` defines it."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode()) if sampled else hashlib.sha256()
    with open(path, "rb") as handle:
        if sampled and size > _SAMPLED_ABOVE:
            for offset in (0, size // 3, 2 * size // 3, size - _BLOCK):
                handle.seek(offset)
                digest.update(handle.read(_BLOCK))
        else:
            for chunk in iter(lambda: handle.read(_BLOCK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def folder_digest(
    folder: str | os.PathLike[str], patterns: Sequence[str], *, exclude: Sequence[str] = (), sampled: bool = False
) -> dict[str, str]:
    """The content of a model folder, independent of where it lies: file name → SHA-256 (hex) of every
    file directly in ``folder`` whose name matches one of ``patterns`` and none of ``exclude`` (shell
    wildcards, case-sensitive; hidden files match ``*`` too), sorted by name. Each digest is

        sampled=False:  sha256(bytes)
        sampled=True:   sha256(str(size) ‖ bytes)                              size ≤ 64 MiB,
                        sha256(str(size) ‖ B(0) ‖ B(size//3) ‖ B(2·size//3) ‖ B(size − 1 MiB))   above,

    with B(o) the 1 MiB block at offset o: cheap for multi-GB weights, and any retraining changes
    them. Saved generations are tied to a policy by ``sampled=True``
    (:func:`lm_runs.evaluate.settings.model_identity`), a preference-model judge is known by
    ``sampled=False`` (:meth:`lm_runs.judges.preference_model.PreferenceModelJudge.identity`): both are
    pinned in saved evaluations, so neither changes."""
    root = Path(folder)
    digests = {}
    for path in sorted(root.iterdir()):
        name = path.name
        if (
            any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
            and not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)
            and path.is_file()
        ):
            digests[name] = _file_digest(path, sampled)
    return digests


# -------------------------------------------------------------------------------------- loading


def _dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """``from_pretrained`` keywords for ``dtype`` (a torch dtype or its name); none when ``dtype`` is
    None, so transformers' own default applies."""
    if dtype is None:
        return {}
    if isinstance(dtype, str):
        import torch

        dtype = getattr(torch, dtype)
    return {"dtype": dtype}


def _seed(seed: int | None) -> None:
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)


def load_tokenizer(name_or_path: str | os.PathLike[str], *, padding_side: str | None = None):
    """The tokenizer of ``name_or_path``; one without a pad token gets pad = EOS (safe in this package:
    every mask is positional). ``padding_side`` overrides the tokenizer's own when given ("left" for
    generation). Raises ValueError when there is neither a pad nor an EOS token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{name_or_path}: the tokenizer has neither a pad token nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _with_lora(model: Any, lora: Any, task_type: str, gradient_checkpointing: bool) -> Any:
    """``model`` wrapped in a fresh peft LoRA adapter of ``task_type`` when ``lora.use_peft`` (the
    options of :class:`lm_runs.lora.LoraArguments`), else ``model`` itself."""
    if lora is None or not getattr(lora, "use_peft", False):
        return model
    from peft import get_peft_model

    from lm_runs.lora import lora_config

    if gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, lora_config(lora, task_type))


def load_policy(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: Any = None,
    lora: Any = None,
    pad_token_id: int | None = None,
    gradient_checkpointing: bool = False,
    seed: int | None = None,
):
    """The policy to train: ``AutoModelForCausalLM.from_pretrained(name_or_path)``.

    ``dtype``: a torch dtype or its name (None: transformers' default). ``lora``: an object with the
    :class:`~lm_runs.lora.LoraArguments` fields; with ``lora.use_peft`` the model is wrapped by
    ``peft.get_peft_model`` (input embeddings made to require grads first when ``gradient_checkpointing``,
    so checkpointed LoRA layers get gradients). ``pad_token_id``, when given, is written into the model's
    config and generation config. ``seed``, when given, seeds every generator (``transformers.set_seed``)
    first, so whatever is initialised at random — the LoRA matrices A — is the same for the same seed.
    """
    from transformers import AutoModelForCausalLM

    _seed(seed)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **_dtype_kwargs(dtype))
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = pad_token_id
    return _with_lora(model, lora, "CAUSAL_LM", gradient_checkpointing)


def load_reference(
    policy_name_or_path: str | os.PathLike[str],
    ref_name_or_path: str | os.PathLike[str] | None = None,
    *,
    use_peft: bool = False,
    dtype: Any = None,
):
    """π_ref for NLHF training: ``ref_name_or_path`` when given, else a second copy of the initial policy
    — except with LoRA (``use_peft``) and no ``ref_name_or_path``, where None is returned: π_ref is then
    the policy with its adapter disabled, and no second copy is loaded."""
    from transformers import AutoModelForCausalLM

    if ref_name_or_path:
        return AutoModelForCausalLM.from_pretrained(ref_name_or_path, **_dtype_kwargs(dtype))
    if use_peft:
        return None
    return AutoModelForCausalLM.from_pretrained(policy_name_or_path, **_dtype_kwargs(dtype))


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def load_causal_lm(
    source: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    dtype: str | None = None,
):
    """``(model, tokenizer)`` for evaluation, in eval mode on ``device``, from a folder: a full causal LM,
    or a LoRA adapter folder applied to its ``base_model_name_or_path`` when that is a local folder and to
    ``reference`` (π_ref, the base of a LoRA run) otherwise, then merged. The tokenizer is the folder's,
    else ``reference``'s. Raises :class:`ModelRoleError` (one line) for a source that is not a causal LM,
    an adapter with no usable base, or no tokenizer anywhere."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(source)
    check_model_source(str(source), "policy")
    kwargs = _dtype_kwargs(dtype)
    adapter = source / "adapter_config.json"
    if adapter.is_file():
        from peft import PeftModel

        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        base_dir = Path(base) if base and Path(base).is_dir() else (Path(reference) if reference is not None else None)
        if base_dir is None:
            raise ModelRoleError(f"{source}: a LoRA adapter whose base {base!r} is not a local directory, and no reference")
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, **kwargs), source)
        model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    has_tokenizer = any((source / name).is_file() for name in _TOKENIZER_FILES)
    if not has_tokenizer and reference is None:
        raise ModelRoleError(f"{source}: no tokenizer files and no reference to take them from")
    tokenizer = AutoTokenizer.from_pretrained(source if has_tokenizer else reference)
    model.to(device)
    model.eval()
    return model, tokenizer


def _load_judge_classifier(path: str | os.PathLike[str], role: str, dtype: str | None):
    """``(model, tokenizer)`` of a judge's sequence classifier, checked for ``role`` first (see
    :func:`load_preference_model`)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_model_source(str(path), role)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, **_dtype_kwargs(dtype))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if model.config.pad_token_id is None:
        if pad_id is None:
            raise ValueError(f"{role.replace('_', ' ')} {str(path)!r}: neither the config nor the tokenizer has a pad token")
        model.config.pad_token_id = pad_id
    model.eval()
    return model, tokenizer


def load_preference_model(path: str | os.PathLike[str], *, dtype: str | None = None):
    """``(model, tokenizer)`` of a pairwise preference model folder (checked for the role first:
    a 2-label sequence classifier). The model's ``config.pad_token_id`` is filled from the tokenizer
    (its pad token, else its EOS) when the config has none; ValueError when neither has one. The model
    is returned in eval mode on the CPU; the caller moves it."""
    return _load_judge_classifier(path, "preference_model", dtype)


def load_reward_model(path: str | os.PathLike[str], *, dtype: str | None = None):
    """``(model, tokenizer)`` of a scalar reward model folder (checked for the role first: a 1-label
    sequence classifier), prepared as :func:`load_preference_model` prepares a preference model."""
    return _load_judge_classifier(path, "reward_model", dtype)


def load_preference_model_base(
    name_or_path: str | os.PathLike[str],
    *,
    pad_token_id: int,
    lora: Any = None,
    gradient_checkpointing: bool = False,
    seed: int | None = None,
):
    """The model ``train_preference_model`` trains: ``AutoModelForSequenceClassification.from_pretrained``
    with 2 labels, ``first_is_better`` (:data:`~lm_runs.judges.pair_format.FIRST_IS_BETTER`) and
    ``second_is_better`` (a causal LM gets a fresh classification head), its
    ``config.pad_token_id`` set to ``pad_token_id``; LoRA-wrapped (task ``SEQ_CLS``, which also trains the
    head) when ``lora.use_peft``. ``seed``, when given, seeds every generator first, so a fresh head and
    LoRA matrices are the same for the same seed."""
    from lm_runs.judges.pair_format import FIRST_IS_BETTER, SECOND_IS_BETTER

    return _classifier_base(
        name_or_path,
        dict(
            num_labels=2,
            id2label={FIRST_IS_BETTER: "first_is_better", SECOND_IS_BETTER: "second_is_better"},
            label2id={"first_is_better": FIRST_IS_BETTER, "second_is_better": SECOND_IS_BETTER},
        ),
        pad_token_id,
        lora,
        gradient_checkpointing,
        seed,
    )


def load_reward_model_base(
    name_or_path: str | os.PathLike[str],
    *,
    pad_token_id: int,
    lora: Any = None,
    gradient_checkpointing: bool = False,
    seed: int | None = None,
):
    """The model ``train_reward_model`` trains: ``AutoModelForSequenceClassification.from_pretrained``
    with 1 label ``reward`` and ``problem_type`` ``"regression"`` (a causal LM gets a fresh scalar head),
    otherwise as :func:`load_preference_model_base`."""
    return _classifier_base(
        name_or_path,
        dict(num_labels=1, id2label={0: "reward"}, label2id={"reward": 0}, problem_type="regression"),
        pad_token_id,
        lora,
        gradient_checkpointing,
        seed,
    )


def _classifier_base(
    name_or_path: str | os.PathLike[str],
    head: dict[str, Any],
    pad_token_id: int,
    lora: Any,
    gradient_checkpointing: bool,
    seed: int | None,
):
    """``AutoModelForSequenceClassification.from_pretrained(name_or_path, **head)`` after seeding, its
    pad id set, LoRA-wrapped (task ``SEQ_CLS``) when ``lora.use_peft``."""
    from transformers import AutoModelForSequenceClassification

    _seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(name_or_path, **head)
    model.config.pad_token_id = pad_token_id
    return _with_lora(model, lora, "SEQ_CLS", gradient_checkpointing)
