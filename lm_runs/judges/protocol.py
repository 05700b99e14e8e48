"""The wire format of the judge server, shared by the server (:mod:`lm_runs.judge_server`) and its
client (:class:`~lm_runs.judges.http.HTTPJudge`).

* ``POST /v1/classifications`` (:data:`CLASSIFICATIONS_PATH`), ``Content-Type: application/json``,
  body :class:`ClassificationRequest` ``{"prompts": [str, ...], "completions": [[a, b], ...],
  "shuffle_order": bool}`` (``shuffle_order`` optional, default true; unknown fields ignored)
  → 200 :class:`ClassificationResponse` ``{"id", "object": "classification", "model", "results":
  [P(a ≻ b), ...]}``.
* ``POST /v1/scores`` (:data:`SCORES_PATH`), only where the server's judge is a scalar reward model:
  body :class:`ScoreRequest` ``{"prompts": [str, ...], "responses": [str, ...]}`` → 200
  :class:`ScoreResponse` ``{"id", "object": "score", "model", "scores": [r(prompts[i], responses[i]), ...],
  "temperature": τ}``, so a client forms P(a ≻ b) = σ((r_a − r_b)/τ) from one score per response — the
  classification route's answers for the same pairs (``lm_runs.judges.reward_model``). Any other judge
  answers 404 naming its kind.
* ``GET /health`` → :class:`HealthResponse` ``{"status": "ok", "model", "judge_kind", "temperature",
  "identity"}`` (never needs the token): ``judge_kind`` ``"reward_model"`` (with its τ) says the score
  route is served; ``identity`` is the served judge by content, exactly the in-process judge's
  :meth:`~lm_runs.judges.base.CheckedJudge.identity` (its kind, a model folder's file digests, a reward
  model's τ, a callable's source digest), so a client tells which judge answers whatever its URL.
* Every error → :class:`ErrorResponse` ``{"error": message, "request_id": id}`` with a 4xx/5xx
  status. 4xx are the client's fault and never retried; 429 and 5xx are transient and retried.
* Authentication: ``Authorization: Bearer <token>``; both sides read the token from the environment
  variable :data:`TOKEN_ENV` by default.

Limits a request must respect (the server's defaults, each settable by a flag): at most
:data:`DEFAULT_MAX_BODY_BYTES` bytes of body, :data:`DEFAULT_MAX_PAIRS_PER_REQUEST` pairs, JSON nested no deeper than
Python's decoder allows (a few hundred levels; a valid request nests 3), integers of at most
:data:`MAX_INT_DIGITS` digits, and texts that are valid Unicode (no lone surrogate, which no UTF-8 encoder or tokenizer accepts).
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "CLASSIFICATIONS_PATH",
    "SCORES_PATH",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_PAIRS_PER_REQUEST",
    "MAX_INT_DIGITS",
    "TOKEN_ENV",
    "ClassificationRequest",
    "ClassificationResponse",
    "ScoreRequest",
    "ScoreResponse",
    "ErrorResponse",
    "HealthResponse",
    "ProtocolError",
    "invalid_text",
    "parse_classification_request",
    "parse_score_request",
]

#: Environment variable holding the bearer token (client and server).
TOKEN_ENV = "EGPO_JUDGE_TOKEN"
#: The classification endpoint.
CLASSIFICATIONS_PATH = "/v1/classifications"
#: The scoring endpoint (a reward-model judge only).
SCORES_PATH = "/v1/scores"
#: Largest request body the server reads by default (413 above).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Most pairs per request the server accepts by default (413 above).
DEFAULT_MAX_PAIRS_PER_REQUEST = 4096
#: Longest integer literal accepted, in digits.
MAX_INT_DIGITS = 100


class ClassificationRequest(BaseModel):
    """A classification request: one prompt and one pair ``[a, b]`` per item; ``shuffle_order``
    (``None``: true) lets the judge show each pair in a seeded random order."""

    model_config = ConfigDict(strict=True, extra="ignore")

    prompts: list[str]
    completions: list[list[str]]
    shuffle_order: bool | None = None


class ClassificationResponse(BaseModel):
    """The answer: ``results[i]`` = P(completions[i][0] ≻ completions[i][1] | prompts[i])."""

    id: str
    object: str = "classification"
    model: str
    results: list[float]


class ScoreRequest(BaseModel):
    """A scoring request: one response per prompt, ``responses[i]`` to ``prompts[i]``."""

    model_config = ConfigDict(strict=True, extra="ignore")

    prompts: list[str]
    responses: list[str]


class ScoreResponse(BaseModel):
    """The answer: ``scores[i]`` = r(prompts[i], responses[i]), the reward model's scalar score, and the
    temperature τ of its pair answers P(a ≻ b) = σ((r_a − r_b)/τ)."""

    id: str
    object: str = "score"
    model: str
    scores: list[float]
    temperature: float


class HealthResponse(BaseModel):
    """``GET /health``: the server is up and serves ``model``, a judge of kind ``judge_kind``; ``temperature``
    is τ of a reward model (which also answers :data:`SCORES_PATH`), else None; ``identity`` is the judge
    by content (:meth:`~lm_runs.judges.base.CheckedJudge.identity`), None from a server that cannot
    tell it (an older server; a judge whose ``identity()`` failed, which the server's log names)."""

    status: str = "ok"
    model: str
    judge_kind: str | None = None
    temperature: float | None = None
    identity: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    """Every error: what was wrong (never a judge's own exception text) and the request's id, which
    the server's log names beside the details."""

    error: str
    request_id: str | None = None


class ProtocolError(ValueError):
    """A request the protocol refuses: ``status`` (400 or 413), ``kind`` (the error metric's label)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def invalid_text(prompts: Sequence[str], completions: Sequence[Sequence[str]]) -> str | None:
    """The location (``"prompts[i]"`` / ``"completions[i][j]"``) of the first text that is not valid
    Unicode (a lone surrogate, which cannot be encoded as UTF-8), or ``None`` when all are valid."""
    for i, prompt in enumerate(prompts):
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            return f"prompts[{i}]"
    for i, pair in enumerate(completions):
        for j, text in enumerate(pair):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return f"completions[{i}][{j}]"
    return None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _limited_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ProtocolError(400, "invalid_json", f"invalid JSON: an integer of {len(text.lstrip('-'))} digits (limit {MAX_INT_DIGITS})")
    return int(text)


#: The request decoder (one for all requests: ``json.loads`` with a keyword builds a decoder per call).
_DECODER = json.JSONDecoder(parse_int=_limited_int)


#: What each place of a request must hold, by the shape of its location (a field, an item, a side).
_EXPECTED = {
    ("prompts",): "an array of strings",
    ("prompts", 0): "a string",
    ("completions",): "an array of [a, b] pairs",
    ("completions", 0): "a pair [a, b] of strings",
    ("completions", 0, 0): "a string",
    ("shuffle_order",): "true or false",
    ("responses",): "an array of strings",
    ("responses", 0): "a string",
}


def _type_error(error: ValidationError) -> str:
    """The first validation error as "'completions[0][1]' must be a string, got null"."""
    first = error.errors()[0]
    loc = tuple(first.get("loc", ()))
    where = str(loc[0]) + "".join(f"[{part}]" for part in loc[1:])
    shape = tuple(part if isinstance(part, str) else 0 for part in loc)
    expected = _EXPECTED.get(shape, first.get("msg", "valid"))
    return f"'{where}' must be {expected}, got {_json_type(first.get('input'))}"


def _decode_object(body: bytes, fields: tuple[str, ...]) -> dict:
    """The request body as a JSON object holding ``fields``; :class:`ProtocolError` (400) otherwise."""
    if not body.strip():
        raise ProtocolError(400, "invalid_json", "empty request body: expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(400, "invalid_json", "request body is not UTF-8 text") from None
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise ProtocolError(400, "invalid_json", f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise ProtocolError(400, "invalid_json", "invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError(400, "bad_request", f"request body must be a JSON object, got {_json_type(data)}")
    for key in fields:
        if key not in data:
            raise ProtocolError(400, "bad_request", f"missing field '{key}'")
    return data


def parse_classification_request(body: bytes, max_pairs: int = DEFAULT_MAX_PAIRS_PER_REQUEST) -> ClassificationRequest:
    """Decode and validate a request body; raise :class:`ProtocolError` (400, or 413 for more than
    ``max_pairs`` pairs) naming the problem and where it is."""
    data = _decode_object(body, ("prompts", "completions"))
    try:
        request = ClassificationRequest.model_validate(data)
    except ValidationError as error:
        raise ProtocolError(400, "bad_request", _type_error(error)) from None
    prompts, completions = request.prompts, request.completions
    if len(prompts) != len(completions):
        raise ProtocolError(400, "bad_request", f"'prompts' has {len(prompts)} items but 'completions' has {len(completions)}")
    if not prompts:
        raise ProtocolError(400, "bad_request", "'prompts' and 'completions' are empty: send at least one pair")
    if len(prompts) > max_pairs:
        raise ProtocolError(413, "too_large", f"too many pairs: {len(prompts)} > limit {max_pairs} per request")
    for i, pair in enumerate(completions):
        if len(pair) != 2:
            raise ProtocolError(400, "bad_request", f"'completions[{i}]' must hold exactly 2 responses, got {len(pair)}")
    # a surrogate can only arrive as a JSON escape (UTF-8 decoding refuses raw ones): check the texts
    # one by one only when the body holds such an escape
    where = invalid_text(prompts, completions) if _SURROGATE_ESCAPE.search(body) else None
    if where is not None:
        raise ProtocolError(400, "bad_request", f"'{where}' is not valid Unicode (a lone surrogate)")
    return request


def parse_score_request(body: bytes, max_responses: int = DEFAULT_MAX_PAIRS_PER_REQUEST) -> ScoreRequest:
    """Decode and validate a scoring request body; raise :class:`ProtocolError` (400, or 413 for more than
    ``max_responses`` responses) naming the problem and where it is."""
    data = _decode_object(body, ("prompts", "responses"))
    try:
        request = ScoreRequest.model_validate(data)
    except ValidationError as error:
        raise ProtocolError(400, "bad_request", _type_error(error)) from None
    prompts, responses = request.prompts, request.responses
    if len(prompts) != len(responses):
        raise ProtocolError(400, "bad_request", f"'prompts' has {len(prompts)} items but 'responses' has {len(responses)}")
    if not prompts:
        raise ProtocolError(400, "bad_request", "'prompts' and 'responses' are empty: send at least one response")
    if len(prompts) > max_responses:
        raise ProtocolError(413, "too_large", f"too many responses: {len(prompts)} > limit {max_responses} per request")
    where = None
    if _SURROGATE_ESCAPE.search(body):
        where = invalid_text(prompts, []) or next((f"responses[{i}]" for i, r in enumerate(responses) if invalid_text([r], [])), None)
    if where is not None:
        raise ProtocolError(400, "bad_request", f"'{where}' is not valid Unicode (a lone surrogate)")
    return request
