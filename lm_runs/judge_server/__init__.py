"""An HTTP judge server with cross-request batching: ``python -m lm_runs.judge_server --judge SPEC``.

The wire format (routes, bodies, errors, token, limits) is :mod:`lm_runs.judges.protocol`, shared with
the client :class:`~lm_runs.judges.http.HTTPJudge`. Statuses: 400 malformed request (bad JSON, JSON
nested too deeply, an integer over 100 digits, a text that is not valid Unicode, wrong types or
counts), 401 missing or wrong bearer token, 404/405 unknown route or method (404 also for
``POST /v1/scores`` to a judge that is not a reward model), 413 too many pairs or
body too large, 415 a body not declared ``application/json``, 429 queue full, 500 the judge failed
(its error is logged under the request's id, not sent), 502 the judge answered something other than
one probability in [0, 1] per pair, 503 shutting down. ``GET /health`` names the judge served by
content (its ``identity()``: kind, a model folder's file digests, a reward model's τ), so a client's
saved results are tied to the judge, not to the server's URL.

Modules, one job each:

* :mod:`~lm_runs.judge_server.app` — the FastAPI app: routes, the checks guarding them (token,
  content type, body limit, request id), the watch for clients that leave, and the error handlers;
* :mod:`~lm_runs.judge_server.batching` — the worker thread that owns the judge and merges requests;
* :mod:`~lm_runs.judge_server.metrics` — the Prometheus metrics;
* :mod:`~lm_runs.judge_server.serving` — uvicorn with a request timeout and a connection cap
  (slow clients cannot stop the server), and :class:`ServerThread` for running it in the background;
* :mod:`~lm_runs.judge_server.command` — the command line;
* :mod:`~lm_runs.judge_server.errors` — the error type every failure is answered with.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .batching import BatchingWorker
    from .command import build_parser, main
    from .errors import ApiError
    from .metrics import ServerMetrics
    from .serving import ConnectionGuard, ServerThread, serve_in_thread

__all__ = [
    "ApiError",
    "BatchingWorker",
    "ConnectionGuard",
    "ServerMetrics",
    "ServerThread",
    "build_parser",
    "create_app",
    "main",
    "serve_in_thread",
]

#: The module each public name lives in, imported on first use: ``python -m lm_runs.judge_server``
#: runs this file first, and ``--help`` or a refused flag then need neither FastAPI nor uvicorn.
_HOMES = {
    "ApiError": ".errors",
    "BatchingWorker": ".batching",
    "ConnectionGuard": ".serving",
    "ServerMetrics": ".metrics",
    "ServerThread": ".serving",
    "build_parser": ".command",
    "create_app": ".app",
    "main": ".command",
    "serve_in_thread": ".serving",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
