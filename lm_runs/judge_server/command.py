"""The command line: ``python -m lm_runs.judge_server --judge SPEC [--port 8000] ...``.

Flags are read by ``HfArgumentParser`` from :class:`JudgeServerArguments` (the ``--judge*`` flags of
:class:`~lm_runs.judges.arguments.JudgeArguments`, plus the server's own), so every flag is accepted
with underscores or dashes (``--max_batch_size`` / ``--max-batch-size``), as in the other entry points.
Bad flags are one line and exit status 2, before the judge loads. Transformers itself is imported only
by a judge that needs it (a preference model): see :func:`hf_argument_parser`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lm_runs.judges.arguments import JudgeArguments
from lm_runs.judges.protocol import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_PAIRS_PER_REQUEST, TOKEN_ENV

from .serving import DEFAULT_HOST, DEFAULT_REQUEST_TIMEOUT, bind_socket, default_max_connections, server_config, server_url

__all__ = ["JudgeServerArguments", "build_parser", "hf_argument_parser", "main"]

_TOKEN_HELP = (
    f"Required bearer token. Prefer the environment variable {TOKEN_ENV}, which other users cannot see: "
    "a --token value is visible to everyone on the machine in the process list (ps), so it is accepted "
    f"with a warning. Unset: ${TOKEN_ENV} when set, else no authentication."
)


@dataclass
class JudgeServerArguments(JudgeArguments):
    """The judge server's flags (``--judge`` is required)."""

    host: str = field(default=DEFAULT_HOST, metadata={"help": "Address to listen on (a non-loopback one needs --allow_remote)."})
    allow_remote: bool = field(default=False, metadata={"help": "Allow listening on a non-loopback --host."})
    port: int = field(default=8000, metadata={"help": "Port (0: pick a free one; the URL is printed)."})
    max_batch_size: int = field(default=64, metadata={"help": "Pairs per judge call, merged across requests."})
    max_wait_ms: float = field(default=5.0, metadata={"help": "How long the oldest request waits for a batch to fill, in ms."})
    token: str | None = field(default=None, metadata={"help": _TOKEN_HELP})
    max_pairs_per_request: int = field(default=DEFAULT_MAX_PAIRS_PER_REQUEST, metadata={"help": "Payload limit (413 above)."})
    max_body_bytes: int = field(default=DEFAULT_MAX_BODY_BYTES, metadata={"help": "Body limit in bytes (413 above; 16777216 = 16 MiB)."})
    max_queued_pairs: int = field(default=1 << 20, metadata={"help": "Queue limit in pairs (429 above)."})
    request_timeout: float = field(
        default=DEFAULT_REQUEST_TIMEOUT,
        metadata={"help": "Seconds a connection has to send its whole request (headers and body); then it is closed."},
    )
    max_connections: int | None = field(
        default=None,
        metadata={
            "help": "Most connections open at once (beyond it the oldest one still sending its request is closed). "
            "Unset: min(1024, the file-descriptor limit - 128)."
        },
    )
    device: str | None = field(default=None, metadata={"help": "A model judge's device; unset: cuda if available, else cpu."})
    seed: int = field(default=0, metadata={"help": "Seed of the judge's order shuffling."})
    log_level: str = field(default="info", metadata={"help": "uvicorn's log level (critical, error, warning, info, debug)."})
    judge_batch_size: int | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "Pairs per forward pass of a preference-model judge (> 0); unset: --max_batch_size."}
    )

    def __post_init__(self) -> None:
        if self.judge is None:
            raise ValueError(f"--judge is required: {_judge_help()}")
        for flag, value, low in (
            ("--port", self.port, 0),
            ("--max_batch_size", self.max_batch_size, 1),
            ("--max_wait_ms", self.max_wait_ms, 0),
            ("--max_pairs_per_request", self.max_pairs_per_request, 1),
            ("--max_body_bytes", self.max_body_bytes, 1),
            ("--max_queued_pairs", self.max_queued_pairs, 1),
            ("--max_connections", 1 if self.max_connections is None else self.max_connections, 1),
        ):
            if value < low:
                raise ValueError(f"{flag} must be >= {low}, got {value}")
        if not self.request_timeout > 0:
            raise ValueError(f"--request_timeout must be > 0 seconds, got {self.request_timeout}")
        if self.port > 65535:
            raise ValueError(f"--port must be <= 65535, got {self.port}")
        if self.log_level.lower() not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise ValueError(f"--log_level must be one of critical, error, warning, info, debug, got {self.log_level!r}")
        if not _is_loopback(self.host) and not self.allow_remote:
            raise ValueError(f"--host {self.host} is not a loopback address: pass --allow_remote to listen on it")
        if self.judge.strip().startswith(("http://", "https://")):
            raise ValueError(f"--judge {self.judge}: an HTTP judge cannot be served again; give 'module:function', openai:MODEL or a model directory")
        if self.judge_batch_size is None:
            self.judge_batch_size = self.max_batch_size
        super().__post_init__()


def _judge_help() -> str:
    from lm_runs.judges.loader import JUDGE_SPEC_HELP

    return JUDGE_SPEC_HELP


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hf_argument_parser() -> type:
    """Transformers' ``HfArgumentParser`` class, loaded without importing the ``transformers`` package.

    ``transformers/hf_argparser.py`` imports nothing from transformers, but importing it the ordinary
    way runs the package's ``__init__`` first, which takes 1.5–2.5 s here: most of the server's start
    and of its ``--help`` when the judge (a callable, ``openai:``) never needs transformers. So the file
    is run as a module of its own (the same code, the same flags); should a release make it import the
    rest of the package, the ordinary import is used.
    """
    spec = importlib.util.find_spec("transformers")  # locates the package without running it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    name = "lm_runs.judge_server._hf_argparser"
    if name in sys.modules:
        return sys.modules[name].HfArgumentParser
    if folders and (Path(folders[0]) / "hf_argparser.py").is_file():
        file_spec = importlib.util.spec_from_file_location(name, Path(folders[0]) / "hf_argparser.py")
        if file_spec is not None and file_spec.loader is not None:
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[name] = module
            try:
                file_spec.loader.exec_module(module)
                return module.HfArgumentParser
            except (ImportError, AttributeError):
                del sys.modules[name]
    from transformers import HfArgumentParser

    return HfArgumentParser


def build_parser() -> Any:
    """The command line of ``python -m lm_runs.judge_server`` (an ``HfArgumentParser``, see
    :func:`hf_argument_parser`)."""
    parser = hf_argument_parser()(JudgeServerArguments)
    parser.prog = "python -m lm_runs.judge_server"
    parser.description = (
        "Serve a judge over HTTP (POST /v1/classifications; POST /v1/scores for a reward model; GET /health, GET /metrics) with cross-request "
        f"batching. Every flag takes underscores or dashes. Authentication: set {TOKEN_ENV} (not --token)."
    )
    return parser


def _raise_file_limit() -> None:
    """Raise the soft file-descriptor limit to the hard one, so the connection cap can be generous."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags, load the judge, bind, print the URL, serve until interrupted."""
    parser = build_parser()
    try:
        (args,) = parser.parse_args_into_dataclasses(args=list(sys.argv[1:] if argv is None else argv))
    except ValueError as error:
        parser.error(str(error))
    import uvicorn

    from lm_runs.judges.base import JudgeError
    from lm_runs.judges.loader import load_judge

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.token is not None:
        print(f"warning: --token is visible to other users in the process list; set {TOKEN_ENV} instead", file=sys.stderr)
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    if not _is_loopback(args.host) and not token:
        print(f"warning: listening on {args.host} without a bearer token (set {TOKEN_ENV})", file=sys.stderr)
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as error:
        parser.error(f"cannot listen on {args.host}:{args.port}: {error}")
    try:
        judge = load_judge(args.judge, seed=args.seed, device=args.device, **args.judge_kwargs())
    except (ValueError, OSError, JudgeError) as error:
        sock.close()
        parser.error(f"--judge: {error}")
    from .app import create_app

    app = create_app(
        judge,
        name=judge.name,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        token=token,
        max_pairs_per_request=args.max_pairs_per_request,
        max_body_bytes=args.max_body_bytes,
        max_queued_pairs=args.max_queued_pairs,
    )
    _raise_file_limit()
    max_connections = args.max_connections if args.max_connections is not None else default_max_connections()
    port = sock.getsockname()[1]
    print(f"judge server: {judge.kind} {judge.name!r} listening on {server_url(args.host, port)}", flush=True)
    config = server_config(
        app,
        log_level=args.log_level.lower(),
        max_connections=max_connections,
        request_timeout=args.request_timeout,
        graceful_shutdown=10.0,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        print("judge server: interrupted", file=sys.stderr)
        sys.exit(130)
