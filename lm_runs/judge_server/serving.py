"""Serving the app with uvicorn, guarded against slow and numerous clients; :class:`ServerThread`
runs it on a background thread (tests, notebooks), :func:`server_config` is shared with the CLI.

uvicorn's h11 server waits forever for a request that never completes (it times out only idle
keep-alive connections), so a client sending a request line and one header holds its connection,
and enough of them exhaust the process's file descriptors: ``/health`` then cannot be reached and
every refused ``accept`` logs a traceback. :class:`ConnectionGuard` bounds both:

* **request timeout**: a connection has ``request_timeout`` seconds, from its opening (or from the end
  of its previous answer), to send a complete request, headers and body; then it is closed. The time
  the judge takes is not counted.
* **connection cap**: at most ``max_connections`` connections are open (by default below the file
  descriptor limit); a new one beyond the cap evicts the oldest connection still waiting for its
  request, or, when every open connection has a request in progress, is closed at once. So slow
  clients cannot keep a fresh ``/health`` probe out.
* **one log line per overload**: timeouts, evictions and refusals are counted and logged at most once
  a minute, with the counts, instead of once per connection.
"""

from __future__ import annotations

import logging
import resource
import socket
import threading
import time
from typing import Any

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_REQUEST_TIMEOUT",
    "ConnectionGuard",
    "ServerThread",
    "bind_socket",
    "default_max_connections",
    "serve_in_thread",
    "server_config",
    "server_url",
]

DEFAULT_HOST = "127.0.0.1"
#: Seconds a connection has to send its whole request.
DEFAULT_REQUEST_TIMEOUT = 30.0
_LOG_EVERY = 60.0

logger = logging.getLogger("lm_runs.judge_server")


def default_max_connections() -> int:
    """min(1024, soft file-descriptor limit − 128), at least 16: room for the process's other files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft - 128))


class ConnectionGuard:
    """The request timeout and connection cap of one server (see the module docstring)."""

    def __init__(self, max_connections: int | None = None, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if not request_timeout > 0:
            raise ValueError(f"request_timeout must be > 0, got {request_timeout}")
        self.max_connections = max_connections if max_connections is not None else default_max_connections()
        self.request_timeout = float(request_timeout)
        self.open: dict[Any, None] = {}  # insertion order: oldest first
        self.counts = {"timed_out": 0, "evicted": 0, "refused": 0}
        self._pending = dict(self.counts)
        self._last_log: float | None = None

    def admit(self, connection: Any) -> bool:
        """Register a new connection; at the cap, evict the oldest one waiting for its request, or refuse
        (return False) when none is waiting."""
        if len(self.open) >= self.max_connections:
            victim = next((c for c in self.open if c.waiting_for_request()), None)
            if victim is None:
                self.note("refused")
                return False
            self.note("evicted")
            self.release(victim)
            victim.transport.abort()
        self.open[connection] = None
        return True

    def release(self, connection: Any) -> None:
        """Forget a closed connection."""
        self.open.pop(connection, None)

    def note(self, event: str) -> None:
        """Count a timeout / eviction / refusal; log the counts at most once every minute."""
        self.counts[event] += 1
        self._pending[event] += 1
        now = time.monotonic()
        if self._last_log is None or now - self._last_log >= _LOG_EVERY:
            self._last_log = now
            summary = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in self._pending.items() if n)
            logger.warning(
                "judge server under connection pressure (%d open, limit %d; a request must arrive within %g s): %s "
                "since the last report; next report in %d s at the earliest",
                len(self.open), self.max_connections, self.request_timeout, summary, int(_LOG_EVERY),
            )
            self._pending = dict.fromkeys(self._pending, 0)


def guarded_protocol(guard: ConnectionGuard) -> type:
    """uvicorn's h11 protocol with ``guard``'s request timeout and connection cap."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    incomplete = (h11.IDLE, h11.SEND_BODY)  # the client's side: before or inside its request

    class GuardedH11Protocol(H11Protocol):
        _request_timer: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if not guard.admit(self):
                transport.abort()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._request_timer = self.loop.call_later(guard.request_timeout, self._request_timed_out)

        def _disarm(self) -> None:
            if self._request_timer is not None:
                self._request_timer.cancel()
                self._request_timer = None

        def waiting_for_request(self) -> bool:
            return self._request_timer is not None

        def _request_timed_out(self) -> None:
            self._request_timer = None
            guard.note("timed_out")
            guard.release(self)
            self.transport.abort()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._request_timer is not None and self.conn.their_state not in incomplete:
                self._disarm()  # the request is complete: the judge's time is not the client's

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state in incomplete:
                self._arm()  # the next request on this connection has its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            guard.release(self)
            super().connection_lost(exc)

    return GuardedH11Protocol


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound to ``(host, port)`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says it is TCP; without it, Nagle + delayed ACKs add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def server_url(host: str, port: int) -> str:
    """``http://host:port`` (IPv6 hosts in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server_config(
    app: Any,
    *,
    log_level: str = "warning",
    max_connections: int | None = None,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    graceful_shutdown: float = 5.0,
) -> Any:
    """The ``uvicorn.Config`` serving ``app`` with a :class:`ConnectionGuard`."""
    import uvicorn

    guard = ConnectionGuard(max_connections, request_timeout)
    config = uvicorn.Config(
        app,
        http=guarded_protocol(guard),
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=graceful_shutdown,
    )
    config.connection_guard = guard  # type: ignore[attr-defined]
    return config


class ServerThread:
    """A uvicorn server for ``app`` on a background thread; ``port`` is the bound port once started.

    ``port=0`` binds a free port. ``max_connections`` / ``request_timeout``: the
    :class:`ConnectionGuard`'s limits. ``stop()`` (or leaving the ``with`` block) shuts it down gracefully.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        log_level: str = "warning",
        max_connections: int | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.log_level = log_level
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.port: int | None = None
        self.server: Any = None
        self.guard: ConnectionGuard | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self.port is None:
            raise RuntimeError("server not started")
        return server_url(self.host, self.port)

    def start(self, timeout: float = 30.0) -> "ServerThread":
        """Bind, start serving, and return once uvicorn reports it is up (``RuntimeError`` otherwise)."""
        import uvicorn

        sock = bind_socket(self.host, self.requested_port)
        self.port = sock.getsockname()[1]
        config = server_config(
            self.app, log_level=self.log_level, max_connections=self.max_connections, request_timeout=self.request_timeout
        )
        self.guard = config.connection_guard
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"judge server on {self.url} exited during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"judge server on {self.url} did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Ask uvicorn to exit and join its thread."""
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "ServerThread":
        if self.server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(app: Any, *, host: str = DEFAULT_HOST, port: int = 0, timeout: float = 30.0, **limits: Any) -> ServerThread:
    """Start ``app`` on a background uvicorn thread (default 127.0.0.1, a free port); ``.port`` is bound.
    ``limits``: ``max_connections`` / ``request_timeout`` of :class:`ServerThread`."""
    return ServerThread(app, host=host, port=port, **limits).start(timeout=timeout)
