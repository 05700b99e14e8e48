"""From a ``--judge`` spec string to a :class:`~lm_runs.judges.base.CheckedJudge`: the one module that
knows every judge kind.

The four forms (:data:`JUDGE_SPEC_HELP`, the help text of every ``--judge`` flag):

* ``openai:MODEL`` → :class:`~lm_runs.judges.openai_judge.OpenAIJudge` (kind ``"openai"``);
* ``http://host:port`` / ``https://...`` → :class:`~lm_runs.judges.http.HTTPJudge` (kind ``"http"``);
* a model folder, recognised from its ``config.json`` by :func:`lm_runs.models.judge_model_role`:
  a 2-label sequence classifier → :class:`~lm_runs.judges.preference_model.PreferenceModelJudge` (kind
  ``"preference_model"``: P(a ≻ b) read off the pair), a 1-label one (a scalar Bradley–Terry reward
  model) → :class:`~lm_runs.judges.reward_model.RewardModelJudge` (kind ``"reward_model"``:
  P(a ≻ b) = σ((r(a) − r(b))/τ)); anything else (a causal LM, which would load with a randomly
  initialised score head, a 3-label classifier) is refused in one line. A reward model's temperature
  τ (default 1) is the spec suffix ``?temperature=T`` (``runs/rm?temperature=0.5``), refused on any
  other judge. Which kind was recognised is logged once, when the judge loads;
* ``module:function`` (or ``module:obj.attr``) → :class:`~lm_runs.judges.base.CallableJudge`.

:func:`check_judge_spec` validates a spec cheaply (no import of the judge, no weights), so entry points
refuse a bad one before any model loads. The concrete judges are imported on first use (torch, httpx
and openai stay unloaded until needed).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
import re
from typing import Any, Callable
from urllib.parse import urlsplit

from .base import CallableJudge, CheckedJudge

__all__ = ["JUDGE_SPEC_HELP", "check_judge_spec", "judge_model_spec", "load_judge"]

logger = logging.getLogger(__name__)

_CALLABLE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

#: The help text of every ``--judge`` flag: the four accepted forms.
JUDGE_SPEC_HELP = (
    "The judge, P(a ≻ b), in one of four forms: "
    "'openai:MODEL' (a chat model behind an OpenAI-compatible endpoint, from OPENAI_BASE_URL / OPENAI_API_KEY); "
    "'http://host:port' or 'https://...' (a judge server, python -m lm_runs.judge_server; token from EGPO_JUDGE_TOKEN); "
    "a model folder: a 2-label sequence-classification preference model (e.g. from lm_runs.train_preference_model) "
    "or a 1-label reward model, P(a ≻ b) = sigmoid((r(a) - r(b))/T) (e.g. from lm_runs.train_reward_model; "
    "temperature T as a suffix, 'runs/rm?temperature=0.5', default 1); "
    "'module:function' (a Python callable judge, e.g. lm_runs.judges.toy:prefer_shorter)."
)


def _refuse(spec: str, reason: str) -> ValueError:
    return ValueError(f"judge spec {spec!r}: {reason}; {JUDGE_SPEC_HELP}")


def judge_model_spec(spec: str) -> tuple[str, str, dict[str, float]] | None:
    """``(folder, role, options)`` for a model-folder spec (``FOLDER`` or ``FOLDER?temperature=T``), None
    for a spec that names no existing folder. ``role`` is :func:`lm_runs.models.judge_model_role`'s
    (config files only); ``options`` holds ``temperature`` when the suffix gives it. Raises
    ``ValueError`` (one line) for a folder of no judge kind, an unknown or malformed option, a
    temperature that is not a finite number > 0, or a temperature on a preference model."""
    from lm_runs.models import judge_model_role

    folder, mark, query = spec.partition("?")
    if not os.path.isdir(folder if mark else spec):
        return None
    if not mark:
        return spec, judge_model_role(spec), {}
    options: dict[str, float] = {}
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if key != "temperature" or not eq:
            raise _refuse(spec, f"unknown model option {item!r} (a reward model takes '?temperature=T')")
        try:
            temperature = float(value)
        except ValueError:
            temperature = math.nan
        if not (math.isfinite(temperature) and temperature > 0):
            raise _refuse(spec, f"temperature {value!r} is not a finite number > 0")
        options["temperature"] = temperature
    role = judge_model_role(folder)
    if role != "reward_model":
        raise _refuse(spec, "'?temperature=' applies to a reward model (1 label); this folder is a 2-label preference model")
    return folder, role, options


def check_judge_spec(spec: Any) -> str:
    """Validate a judge spec without loading anything; return it stripped.

    Raises ``ValueError`` (one line naming the spec) for an empty spec, ``openai:`` without a model,
    a URL without a host or with a bad port, a model folder of no judge kind or a bad option
    (:func:`judge_model_spec`: a causal LM, a missing ``config.json``, a label count other than 1 or 2,
    a temperature on a preference model), a path that does not exist, a ``module:function`` whose top-level module cannot be
    found, or anything else.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"judge spec {spec!r} is empty; {JUDGE_SPEC_HELP}")
    spec = spec.strip()
    if spec.startswith("openai:"):
        if not spec[len("openai:") :].strip():
            raise ValueError(f"judge spec {spec!r} names no model; expected 'openai:MODEL'")
        return spec
    if spec.startswith(("http://", "https://")):
        parts = urlsplit(spec)
        if not parts.hostname:
            raise _refuse(spec, "the URL names no host")
        try:
            parts.port
        except ValueError:
            raise _refuse(spec, "the URL's port is not a number in 0..65535") from None
        return spec
    if judge_model_spec(spec) is not None:
        return spec
    if os.path.exists(spec):
        raise _refuse(spec, "is a file, not a model folder")
    if _CALLABLE_SPEC.match(spec):
        module_name = spec.partition(":")[0]
        if importlib.util.find_spec(module_name.split(".")[0]) is None:
            raise ValueError(f"judge spec {spec!r}: cannot import module {module_name!r} (no module named {module_name.split('.')[0]!r})")
        return spec
    hint = "not understood (not an existing directory)" if ":" not in spec else "not understood"
    raise _refuse(spec, hint)


def _import_callable(spec: str) -> Callable[..., Any]:
    module_name, _, attr_path = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ValueError(f"judge spec {spec!r}: cannot import module {module_name!r} ({error})") from None
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"judge spec {spec!r}: module {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"judge spec {spec!r}: {attr_path!r} is a {type(obj).__name__}, not callable")
    return obj


def load_judge(
    spec: str,
    *,
    seed: int = 0,
    device: str | None = None,
    batch_size: int = 16,
    timeout: float | None = None,
    retries: int | None = None,
) -> CheckedJudge:
    """Build the judge a spec names (see the module docstring), wrapped in :class:`CheckedJudge`.

    * ``seed``: the order-flip coins (preference model, OpenAI) and the retry jitter (HTTP, OpenAI);
    * ``device`` and ``batch_size``: a model judge's device and pairs per forward pass (a preference
      model reads one text per pair; a reward model 2·``batch_size`` response texts per pass, about the
      same number of tokens);
    * ``timeout``: total seconds per request of a remote judge (HTTP, OpenAI), ``None``: its default;
    * ``retries``: retries of a remote judge after a transient failure, ``None``: its default.

    Raises ``ValueError`` (one line) for a spec :func:`check_judge_spec` refuses or a callable that
    cannot be imported; ``timeout`` / ``retries`` given for a judge that does not use them are ignored.
    """
    spec = check_judge_spec(spec)
    remote: dict[str, Any] = {}
    if timeout is not None:
        remote["timeout"] = timeout
    if retries is not None:
        remote["max_retries"] = retries
    if spec.startswith("openai:"):
        from .openai_judge import OpenAIJudge

        return CheckedJudge(OpenAIJudge(spec[len("openai:") :].strip(), seed=seed, **remote))
    if spec.startswith(("http://", "https://")):
        from .http import HTTPJudge

        return CheckedJudge(HTTPJudge(spec, seed=seed, **remote))
    model = judge_model_spec(spec)
    if model is not None:
        folder, role, options = model
        if role == "reward_model":
            from .reward_model import RewardModelJudge

            judge: Any = RewardModelJudge(folder, device=device, batch_size=2 * batch_size, **options)
            logger.info("judge %s: a reward model (1-label sequence classifier, chat template %s): "
                        "P(a ≻ b) = σ((r(a) − r(b))/τ), τ = %g", folder, "used" if judge.templated else "absent",
                        judge.temperature)
        else:
            from .preference_model import PreferenceModelJudge

            judge = PreferenceModelJudge(folder, seed=seed, device=device, batch_size=batch_size)
            logger.info("judge %s: a pairwise preference model (2-label sequence classifier)", folder)
        return CheckedJudge(judge)
    return CheckedJudge(CallableJudge(_import_callable(spec), name=spec))
