"""An LLM-as-judge behind an OpenAI-compatible chat-completions endpoint (``--judge openai:MODEL``).

:class:`OpenAIJudge` asks a chat model, once per pair, which of two responses to a question is
better, and reads P(a ≻ b) from the log-probabilities of its one-token answer. It works with the
OpenAI API and with any server that speaks ``POST {base_url}/chat/completions`` (vLLM, SGLang,
llama.cpp's server, TGI's OpenAI route, ...). ``load_judge("openai:MODEL")`` builds one with the
base URL and key from ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.

The prompt
----------
Each pair is sent as two messages (``SYSTEM_PROMPT`` and ``USER_TEMPLATE`` below, the defaults;
both can be replaced through the constructor). The system message is, verbatim::

    You are an impartial judge. You will see a question and two responses to it, labelled A and B.
    Decide which response answers the question better: more helpful, more correct, more honest and
    safer, and closer to what the question asks for. Do not let the order of the responses, their
    length or their style sway you, except where these make a response better or worse. Answer
    with exactly one letter, A or B, and nothing else.

(one paragraph, without the line breaks), and the user message is::

    <question>
    {prompt}
    </question>

    <response_a>
    {first}
    </response_a>

    <response_b>
    {second}
    </response_b>

    Which response is better? Answer with exactly one letter, A or B.

where ``first`` / ``second`` are the two responses in the order shown (see *Order* below). The
request asks for ``max_tokens=1``, ``temperature=0`` and, unless ``logprobs=False``,
``logprobs=True, top_logprobs=k`` (``k = 5`` by default).

How the probability is read
---------------------------
The answer is the message content with surrounding whitespace stripped. It must be exactly
``"A"`` or ``"B"``; anything else (another letter, an empty answer, a refusal, a content-filter
stop, no choices at all) is *malformed*. A malformed answer is never turned into a preference: the
request is repeated up to ``malformed_retries`` times and, if no attempt gives a valid answer, the
pair is **missing** (see below).

For a valid answer, the log-probabilities of the first generated token are used when the
endpoint returns them. Over the first token and its ``top_logprobs`` alternatives (each distinct
token string counted once), let

    p_A = Σ exp(logprob) over tokens whose stripped text is "A"   (so "A" and " A" add up),
    p_B = Σ exp(logprob) over tokens whose stripped text is "B";

then P(first ≻ second) = p_A / (p_A + p_B). A letter absent from the top-k contributes 0, so a
very confident judge gives exactly 0 or 1. When the endpoint returns no log-probabilities (or
none of its top tokens is A or B), the letter alone decides: P(first ≻ second) is 1.0 for "A" and
0.0 for "B".

Order
-----
With ``shuffle_order`` (the default) each pair is shown as (a, b) or as (b, a), by a coin drawn
from ``random.Random`` seeded with ``seed`` and a SHA-256 hash of (prompt, a, b), so the same pair
gets the same order on every run, whatever else is in the call and whatever the thread timing.
The answer is un-flipped: P(a ≻ b) = P(first ≻ second) when shown as (a, b), and
1 − P(first ≻ second) when shown as (b, a). Results are therefore always P(original a ≻ original b).

Missing pairs
-------------
:meth:`OpenAIJudge.judge_or_missing` returns ``Judgement(None, reason)`` for a missing pair (for evaluations, which
can drop or count them); :meth:`OpenAIJudge.judge_detailed` also reports the order, the answer and
how it was read; calling the judge (``judge(prompts, completions)``, the interface training uses)
raises :class:`~lm_runs.judges.base.JudgeError` naming the missing pairs, since training needs a
value for every pair.

Retries
-------
The ``openai`` client is built with ``max_retries=0``; retrying is done here, with the policy of
:class:`~lm_runs.judges.http.HTTPJudge`: connection errors, timeouts, HTTP 429 and 5xx are retried
up to ``max_retries`` times with jittered exponential backoff (sleep ~ U(c/2, c), c = min(backoff_max,
backoff_base · 2^attempt), see :mod:`lm_runs.judges.retry`; a 429's ``Retry-After``, capped at ``backoff_max``, is used instead
when given), and then one :class:`JudgeError` names the server and the last failure. Any other
4xx raises :class:`JudgeError` at once with the server's message. Such a failure aborts the whole
call (both in ``__call__`` and ``judge_or_missing``); pairs already answered are kept in the cache, unless
the endpoint's pinned model record changed (*Swapped models* below).

Swapped models
--------------
The endpoint's model record (``GET {base_url}/models/{model}``, its :data:`SERVED_FIELDS`) is pinned when
it is first asked: by :meth:`OpenAIJudge.identity` (a run's start: evaluations and round datasets record
it), else at the end of the first call that sent requests. After every later call that sent requests it
is read again (with the retry policy), and when it differs (another ``root``, ``owned_by``,
``max_model_len``, ``id``, or no record any more) the call raises
:class:`~lm_runs.judges.base.JudgeChanged` — one line naming the change; the commands exit with status 2 —
and its answers are neither returned nor cached: answers of two models must not mix. Once per call (one
batch of pairs, answered by up to ``max_concurrency`` requests at once) rather than per request: the
check is one small GET beside a batch of chat completions, not one per completion (which would double
the requests a rate limit counts), and a call is what its caller keeps or drops whole, so no answer of a
swapped model is kept. An endpoint without the route (an HTTP 4xx: ``served`` is None) is not checked,
and neither is what the record cannot show (see :meth:`OpenAIJudge.identity`).

Cache
-----
Every valid answer is appended to a JSONL file (``cache_path``; by default
``$XDG_CACHE_HOME/egpo/openai_judge/cache.jsonl``, ``~/.cache`` when ``XDG_CACHE_HOME`` is unset),
one line per record, with a single ``O_APPEND`` write under a lock, so an interrupted evaluation
keeps everything answered so far and a rerun pays only for the rest. Records are keyed by the SHA-256
of (model, the two prompt templates, prompt, first, second), i.e. of what was actually shown,
and hold P(first ≻ second); the un-flip is applied on reading. A torn last line (a crash in the
middle of a write) is skipped on loading. Missing pairs are not cached, so a rerun asks again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .base import JudgeChanged, JudgeError, Judgement, check_pairs, identity_changes, shown_flipped
from .deadline import Deadlines, deadline_transport
from .retry import DEFAULT_RETRIES, RetryPolicy, TransientFailure, retry_after_seconds

__all__ = [
    "OpenAIJudge",
    "DetailedJudgement",
    "SERVED_FIELDS",
    "SYSTEM_PROMPT",
    "USER_TEMPLATE",
    "default_cache_path",
    "read_answer",
    "render_messages",
]

#: The default system message (see the module docstring).
SYSTEM_PROMPT = (
    "You are an impartial judge. You will see a question and two responses to it, labelled A and B. "
    "Decide which response answers the question better: more helpful, more correct, more honest and "
    "safer, and closer to what the question asks for. Do not let the order of the responses, their "
    "length or their style sway you, except where these make a response better or worse. Answer "
    "with exactly one letter, A or B, and nothing else."
)

#: The default user message; ``{prompt}``, ``{first}`` and ``{second}`` are filled in.
USER_TEMPLATE = (
    "<question>\n{prompt}\n</question>\n\n"
    "<response_a>\n{first}\n</response_a>\n\n"
    "<response_b>\n{second}\n</response_b>\n\n"
    "Which response is better? Answer with exactly one letter, A or B."
)

#: The fields of the endpoint's model record (``GET {base_url}/models/{model}``) that identify the judge.
SERVED_FIELDS = ("id", "owned_by", "root", "parent", "max_model_len")

_CACHE_FORMAT = 1
_NOT_ASKED = object()
_MAX_ERROR_CHARS = 300


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/egpo/openai_judge/cache.jsonl`` (``~/.cache/...`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "egpo" / "openai_judge" / "cache.jsonl"


def render_messages(
    prompt: str, first: str, second: str, *, system_prompt: str = SYSTEM_PROMPT, user_template: str = USER_TEMPLATE
) -> list[dict[str, str]]:
    """The chat messages for one pair shown as (first, second): ``[system, user]``."""
    user = user_template.format(prompt=prompt, first=first, second=second)
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]


def _get(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]`` (``None`` when absent), for client objects and plain dicts alike."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def read_answer(response: Any) -> tuple[float | None, str, str]:
    """Read one chat-completion response: ``(P(first ≻ second) or None, source, answer)``.

    ``source`` is ``"logprobs"`` or ``"letter"`` for a valid answer, and a short reason
    (``"no choices"``, ``"refusal"``, ``"content filter"``, ``"not A or B"``) when the probability is
    ``None`` (a malformed answer). ``answer`` is the raw message content (``""`` when absent).
    Accepts the ``openai`` client's objects or the equivalent plain dicts.
    """
    choices = _get(response, "choices")
    if not choices:
        return None, "no choices", ""
    choice = choices[0]
    message = _get(choice, "message")
    content = _get(message, "content")
    answer = content if isinstance(content, str) else ""
    if _get(message, "refusal"):
        return None, "refusal", answer
    if _get(choice, "finish_reason") == "content_filter":
        return None, "content filter", answer
    letter = answer.strip()
    if letter not in ("A", "B"):
        return None, "not A or B", answer
    tokens = _get(_get(choice, "logprobs"), "content")
    if tokens:
        first_token = tokens[0]
        seen: dict[str, float] = {}
        # the alternatives first: the generated token counts only when it is not among them
        candidates = [*(_get(first_token, "top_logprobs") or []), first_token]
        for candidate in candidates:
            token, logprob = _get(candidate, "token"), _get(candidate, "logprob")
            if isinstance(token, str) and isinstance(logprob, (int, float)) and token not in seen:
                seen[token] = float(logprob)
        mass = {"A": 0.0, "B": 0.0}
        for token, logprob in seen.items():
            if token.strip() in mass and math.isfinite(logprob):
                mass[token.strip()] += math.exp(min(logprob, 0.0))
        total = mass["A"] + mass["B"]
        if total > 0.0:
            return mass["A"] / total, "logprobs", answer
    return (1.0 if letter == "A" else 0.0), "letter", answer


@dataclasses.dataclass(frozen=True)
class DetailedJudgement:
    """One pair's outcome.

    * ``value``: P(original a ≻ original b), or ``None`` when the pair is missing;
    * ``flipped``: whether the pair was shown as (b, a);
    * ``source``: ``"logprobs"``, ``"letter"`` or ``"cache"`` (``None`` when missing);
    * ``answer``: the raw answer of the last attempt (``None`` for a cached value);
    * ``attempts``: requests made for this pair (0 when cached);
    * ``reason``: why the pair is missing (``None`` otherwise).
    """

    value: float | None
    flipped: bool
    source: str | None
    answer: str | None
    attempts: int
    reason: str | None = None


class _AnswerCache:
    """An append-only JSONL file of ``{"key", "p_first", ...}`` records, loaded on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._values: dict[str, float] | None = None
        self._needs_newline = False

    def _load(self) -> dict[str, float]:
        if self._values is not None:
            return self._values
        values: dict[str, float] = {}
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        for line in data.splitlines():
            try:
                record = json.loads(line)
                key, value = record["key"], float(record["p_first"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn line from an interrupted write, or something foreign
            if isinstance(key, str) and 0.0 <= value <= 1.0:
                values[key] = value
        self._needs_newline = bool(data) and not data.endswith(b"\n")
        self._values = values
        return values

    def get(self, key: str) -> float | None:
        """The cached P(first ≻ second) for ``key``, or ``None``."""
        with self._lock:
            return self._load().get(key)

    def put(self, key: str, value: float, extra: dict[str, Any]) -> None:
        """Record ``value`` for ``key`` in memory and append it to the file (one ``write`` call)."""
        line = json.dumps({"key": key, "p_first": value, **extra}, ensure_ascii=True) + "\n"
        with self._lock:
            self._load()[key] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            payload = ("\n" if self._needs_newline else "") + line
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, payload.encode("ascii"))
            finally:
                os.close(fd)
            self._needs_newline = False


class OpenAIJudge:
    """P(a ≻ b) from a chat model behind an OpenAI-compatible endpoint (see the module docstring).

    * ``model``: the model name sent with each request.
    * ``base_url`` / ``api_key``: ``None`` reads ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``. With no
      base URL the OpenAI API is used and a key is required; with a base URL and no key a
      placeholder key is sent (local servers usually ignore it).
    * ``timeout``: total seconds per request (a deadline on connecting, sending and reading together,
      :mod:`lm_runs.judges.deadline`; per socket operation only with an injected ``client``). ``max_retries``, ``backoff_base``, ``backoff_max``: the retry
      policy for connection errors, timeouts, 429 and 5xx (as :class:`~lm_runs.judges.http.HTTPJudge`).
    * ``malformed_retries``: extra requests for a pair whose answer is not A or B before it is missing.
    * ``logprobs`` / ``top_logprobs``: whether to ask for log-probabilities, and how many alternatives.
    * ``max_concurrency``: requests in flight at once within one call (a thread pool).
    * ``shuffle_order`` / ``seed``: the default order flipping and the seed of its coins (and of the
      backoff jitter).
    * ``cache_path`` / ``use_cache``: the JSONL answer cache (``None``: :func:`default_cache_path`).
    * ``system_prompt`` / ``user_template``: replace the prompt (the template needs ``{prompt}``,
      ``{first}`` and ``{second}``); the cache keys include both, so old answers are not reused.
    * ``sleep``: the sleep function used between retries (tests inject a recorder).
    * ``client``: an already-built client with ``client.chat.completions.create`` (tests, proxies).
    """

    kind = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = DEFAULT_RETRIES,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        malformed_retries: int = 2,
        logprobs: bool = True,
        top_logprobs: int = 5,
        max_concurrency: int = 8,
        shuffle_order: bool = True,
        seed: int = 0,
        cache_path: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        system_prompt: str = SYSTEM_PROMPT,
        user_template: str = USER_TEMPLATE,
        sleep: Callable[[float], None] = time.sleep,
        client: Any = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"OpenAIJudge needs a model name, got {model!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if malformed_retries < 0:
            raise ValueError(f"malformed_retries must be >= 0, got {malformed_retries}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not 0 <= top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be in [0, 20], got {top_logprobs}")
        try:
            user_template.format(prompt="", first="", second="")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"user_template must use only {{prompt}}, {{first}} and {{second}}: {error!r}") from None
        for field in ("{prompt}", "{first}", "{second}"):
            if field not in user_template:
                raise ValueError(f"user_template lacks {field}")
        self.model = model.strip()
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/") or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.malformed_retries = malformed_retries
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.max_concurrency = max_concurrency
        self.shuffle_order = shuffle_order
        self.seed = seed
        self.system_prompt = system_prompt
        self.user_template = user_template
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max, seed=seed, sleep=sleep)
        self.server = self.base_url or "https://api.openai.com/v1"
        self.name = f"openai:{self.model}@{self.server}"
        self._deadlines = Deadlines()
        self.cache: _AnswerCache | None = (
            _AnswerCache(Path(cache_path) if cache_path is not None else default_cache_path()) if use_cache else None
        )
        template_id = hashlib.sha256(json.dumps([system_prompt, user_template]).encode("utf-8")).hexdigest()[:16]
        self._key_prefix = [_CACHE_FORMAT, self.model, template_id]
        if client is None:
            import openai

            key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
            if not key:
                if self.base_url is None:
                    raise ValueError(
                        "OpenAIJudge: no API key (set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server)"
                    )
                key = "EMPTY"
            import httpx

            http_client = httpx.Client(timeout=timeout, transport=deadline_transport(self._deadlines))
            client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=timeout, http_client=http_client)
        self._client = client
        self._served: Any = _NOT_ASKED  # served_model()'s answer, asked once
        self.requests_made = 0  # chat-completion requests sent, all calls together
        self._count_lock = threading.Lock()

    # ------------------------------------------------------------------ public interface

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], *, shuffle_order: bool | None = None
    ) -> list[float]:
        """P(a ≻ b) per pair, in order; raises :class:`JudgeError` naming any missing pair."""
        judgements = self.judge_detailed(prompts, completions, shuffle_order=shuffle_order)
        missing = [i for i, j in enumerate(judgements) if j.value is None]
        if missing:
            first = judgements[missing[0]]
            more = f" (and {len(missing) - 1} more: {missing[1:11]})" if len(missing) > 1 else ""
            raise JudgeError(
                f"judge {self.name}: no valid answer for pair {missing[0]}{more} after "
                f"{first.attempts} attempts; last answer {first.answer!r} ({first.reason})"
            )
        return [j.value for j in judgements]  # type: ignore[misc]

    def judge_or_missing(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], *, shuffle_order: bool | None = None
    ) -> list[Judgement]:
        """One :class:`~lm_runs.judges.base.Judgement` per pair, in order: the value, or ``None`` with the
        reason where no attempt gave a valid answer (what ``CheckedJudge.judge_or_missing`` asks)."""
        out = []
        for j in self.judge_detailed(prompts, completions, shuffle_order=shuffle_order):
            reason = None if j.value is not None else f"no valid answer after {j.attempts} attempts; last answer {j.answer!r} ({j.reason})"
            out.append(Judgement(j.value, reason))
        return out

    def identity(self) -> dict[str, Any]:
        """The judge by what answers: the endpoint, the model name, the prompt templates' digest, the seed
        of the order coins and ``served``, what the endpoint reports about the model (:meth:`served_model`).

        What this cannot detect: other weights behind the same reported record (a vLLM server restarted
        on a checkpoint rewritten at the same path, a provider updating a model behind a stable id or
        alias) and other server settings (quantization, sampling defaults); a change of the record
        after the identity was taken is caught after the call it happens in (:meth:`check_same_judge`).
        ``created`` is left out (vLLM stamps it with each request's time) and so is
        ``system_fingerprint`` (a per-response value that the provider changes as it redeploys, not
        asked before judging)."""
        return {"kind": self.kind, "base_url": self.server, "model": self.model, "templates": self._key_prefix[2], "seed": self.seed,
                "served": self.served_model()}

    def served_model(self) -> dict[str, Any] | None:
        """What ``GET {base_url}/models/{model}`` reports about the model, its stable fields only
        (:data:`SERVED_FIELDS`: ``id`` and ``owned_by``, and from servers that report them ``root`` —
        vLLM's weights path or hub name behind a ``--served-model-name`` —, ``parent`` and
        ``max_model_len``); asked once per client, with the retry policy. ``None`` when the endpoint has no
        such route (an HTTP 4xx) or the client none (an injected client without ``models``)."""
        if self._served is _NOT_ASKED:
            models = getattr(self._client, "models", None)
            self._served = None if models is None else self.retry.run(lambda: self._model_record(models), f"judge {self.name} (GET models/{self.model})")
        return self._served

    def check_same_judge(self) -> None:
        """Raise :class:`~lm_runs.judges.base.JudgeChanged` (one line) when ``GET {base_url}/models/{model}``
        now reports another record than the one pinned (:meth:`served_model`), or none any more; nothing to
        check before the record was first asked or for an endpoint without the route (pinned None). Asked
        with the retry policy: an endpoint that stays unreachable raises ``JudgeUnavailable``."""
        pinned = self._served
        if pinned is _NOT_ASKED or pinned is None:
            return
        now = self.retry.run(lambda: self._model_record(self._client.models), f"judge {self.name} (GET models/{self.model})")
        if now != pinned:
            changes = (identity_changes({"served": pinned}, {"served": now}) if now is not None
                       else [f"GET models/{self.model} answers no record now"])
            shown = "; ".join(changes[:3]) + ("; …" if len(changes) > 3 else "")
            raise JudgeChanged(f"judge {self.name} now serves another model than the one this run started with ({shown}); "
                               "its answers would mix two judges' and are not kept: serve the run's judge again and rerun, "
                               "or start a new run with the new judge")

    def judge_detailed(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], *, shuffle_order: bool | None = None
    ) -> list[DetailedJudgement]:
        """One :class:`DetailedJudgement` per pair, in input order.

        Cached pairs are answered from the cache; identical uncached pairs in one call share one
        request; the rest go out on up to ``max_concurrency`` threads. A transport or HTTP failure
        that outlives the retries raises :class:`JudgeError` (remaining requests are cancelled). A call
        that sent requests then checks the endpoint's model record (:meth:`check_same_judge`) before its
        new answers are cached and returned (on such a failure: before the answers it got are cached).
        """
        prompts, completions = check_pairs(prompts, completions)
        shuffle = self.shuffle_order if shuffle_order is None else bool(shuffle_order)
        results: list[DetailedJudgement | None] = [None] * len(prompts)
        pending: dict[str, list[int]] = {}  # cache key -> indices shown that way
        shown: dict[str, tuple[str, str, str]] = {}
        flips: list[bool] = []
        for index, (prompt, (a, b)) in enumerate(zip(prompts, completions)):
            flipped = shuffle and shown_flipped(self.seed, prompt, a, b)
            flips.append(flipped)
            first, second = (b, a) if flipped else (a, b)
            key = self._cache_key(prompt, first, second)
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is not None:
                results[index] = DetailedJudgement(self._unflip(cached, flipped), flipped, "cache", None, 0)
            else:
                pending.setdefault(key, []).append(index)
                shown[key] = (prompt, first, second)

        answered: list[tuple[str, float, dict[str, str]]] = []  # cached once the model record is checked

        def finish(key: str, outcome: tuple[float | None, str, str, int]) -> None:
            p_first, source, answer, attempts = outcome
            if p_first is not None:
                answered.append((key, p_first, {"model": self.model, "source": source, "answer": answer}))
            for index in pending[key]:
                flipped = flips[index]
                if p_first is None:
                    results[index] = DetailedJudgement(None, flipped, None, answer, attempts, reason=source)
                else:
                    results[index] = DetailedJudgement(self._unflip(p_first, flipped), flipped, source, answer, attempts)

        keys = list(pending)
        if not keys:
            return results  # type: ignore[return-value]
        try:
            if len(keys) == 1 or self.max_concurrency == 1:
                for key in keys:
                    finish(key, self._judge_shown(*shown[key]))
            else:
                pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=min(self.max_concurrency, len(keys)), thread_name_prefix="openai-judge"
                )
                try:
                    futures = {pool.submit(self._judge_shown, *shown[key]): key for key in keys}
                    for future in concurrent.futures.as_completed(futures):
                        finish(futures[future], future.result())
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
        except JudgeChanged:
            raise
        except JudgeError:
            try:  # keep what was answered before the failure, if the same model answered it
                self._keep(answered, pin=False)
            except JudgeChanged:
                raise
            except JudgeError:
                pass  # the record cannot be read either: nothing is kept; the call's own failure is reported
            raise
        self._keep(answered, pin=True)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Close the client's pooled connections."""
        close = getattr(self._client, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> "OpenAIJudge":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAIJudge({self.model!r}, base_url={self.server!r})"

    # ------------------------------------------------------------------ internals

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry ``attempt`` (see :class:`~lm_runs.judges.retry.RetryPolicy`)."""
        return self.retry.backoff(attempt)

    def _cache_key(self, prompt: str, first: str, second: str) -> str:
        text = json.dumps([*self._key_prefix, prompt, first, second], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @staticmethod
    def _unflip(p_first: float, flipped: bool) -> float:
        return 1.0 - p_first if flipped else p_first

    def _keep(self, answered: Sequence[tuple[str, float, dict[str, str]]], pin: bool) -> None:
        """After a call's requests: :meth:`check_same_judge` (or, with ``pin``, when the record was never
        asked, pin it now: :meth:`served_model`), then append the call's valid answers to the cache."""
        if self._served is _NOT_ASKED:
            if pin:
                self.served_model()
        else:
            self.check_same_judge()
        if self.cache is not None:
            for key, value, extra in answered:
                self.cache.put(key, value, extra)

    def _judge_shown(self, prompt: str, first: str, second: str) -> tuple[float | None, str, str, int]:
        """Ask about one pair as shown, retrying malformed answers."""
        messages = render_messages(
            prompt, first, second, system_prompt=self.system_prompt, user_template=self.user_template
        )
        reason, answer = "no attempt", ""
        attempts = self.malformed_retries + 1
        for attempt in range(1, attempts + 1):
            p_first, source, answer = read_answer(self._request(messages))
            if p_first is not None:
                return p_first, source, answer, attempt
            reason = source
        return None, reason, answer, attempts

    def _model_record(self, models: Any) -> dict[str, Any] | None:
        """One ``models.retrieve`` attempt: the record's :data:`SERVED_FIELDS` that it has, ``None`` for a
        4xx (no such route or model), a :class:`TransientFailure` for what may be retried."""
        import openai

        self._deadlines.set(time.monotonic() + self.timeout)
        try:
            record = models.retrieve(self.model)
        except openai.APIStatusError as error:
            if error.status_code != 429 and error.status_code < 500:
                return None
            raise TransientFailure(f"HTTP {error.status_code}: {_status_message(error)}") from None
        except openai.APIConnectionError as error:
            raise TransientFailure(f"{type(error).__name__}: {error}") from None
        finally:
            self._deadlines.set(None)
        fields = record.model_dump() if hasattr(record, "model_dump") else dict(record)
        return {key: fields[key] for key in SERVED_FIELDS if fields.get(key) is not None}

    def _request(self, messages: list[dict[str, str]]) -> Any:
        """One chat completion, with the retry policy; raises :class:`JudgeError` when it gives up."""
        return self.retry.run(lambda: self._request_once(messages), f"judge {self.name}")

    def _request_once(self, messages: list[dict[str, str]]) -> Any:
        """One attempt: the completion, a :class:`TransientFailure` to retry, or a :class:`JudgeError`."""
        import openai

        options: dict[str, Any] = {"max_tokens": 1, "temperature": 0}
        if self.logprobs:
            options.update(logprobs=True, top_logprobs=self.top_logprobs)
        with self._count_lock:
            self.requests_made += 1
        self._deadlines.set(time.monotonic() + self.timeout)
        try:
            return self._client.chat.completions.create(model=self.model, messages=messages, **options)
        except openai.APIStatusError as error:
            status = error.status_code
            message = _status_message(error)
            if status != 429 and status < 500:
                raise JudgeError(f"judge {self.name}: the server rejected the request (HTTP {status}): {message}") from None
            wait = None
            if status == 429:
                response = getattr(error, "response", None)
                header = response.headers.get("retry-after") if response is not None else None
                wait = retry_after_seconds(header, self.backoff_max)
            raise TransientFailure(f"HTTP {status}: {message}", retry_after=wait) from None
        except openai.APIConnectionError as error:  # includes APITimeoutError
            cause = error.__cause__
            raise TransientFailure(f"{type(error).__name__}: {error}" + (f" ({cause})" if cause else "")) from None
        except openai.APIResponseValidationError as error:
            raise JudgeError(f"judge {self.name}: the server answered something unreadable: {error}") from None
        finally:
            self._deadlines.set(None)


def _status_message(error: Any) -> str:
    """The server's own message from an ``APIStatusError`` (``{"error": {"message"}}`` or the text)."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:_MAX_ERROR_CHARS]
        if isinstance(body.get("message"), str):
            return body["message"][:_MAX_ERROR_CHARS]
        if isinstance(inner, str):
            return inner[:_MAX_ERROR_CHARS]
    if isinstance(body, str) and body.strip():
        return body.strip()[:_MAX_ERROR_CHARS]
    return str(getattr(error, "message", error))[:_MAX_ERROR_CHARS]
