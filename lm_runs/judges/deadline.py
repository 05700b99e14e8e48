"""A total deadline per HTTP request for ``httpx`` clients (the HTTP judge, the OpenAI judge).

``httpx`` timeouts bound each socket operation, not a request: a server that trickles its answer a
byte at a time never trips a read timeout. Here each thread sets the deadline of the request it is
about to make (:meth:`Deadlines.set`), and every connect, read and write of the transport from
:func:`deadline_transport` waits at most for what is left of it, so the request as a whole fails
(with an ``httpx`` timeout error) once the deadline has passed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["Deadlines", "deadline_transport"]


class Deadlines:
    """The per-thread deadline of the request in progress, read by every socket operation."""

    def __init__(self) -> None:
        self._local = threading.local()

    def set(self, deadline: float | None) -> None:
        """The calling thread's deadline (``time.monotonic()`` seconds), or ``None`` for none."""
        self._local.deadline = deadline

    def left(self, timeout: float | None, error: type[Exception]) -> float | None:
        """``min(timeout, seconds to the deadline)``; raises ``error`` once the deadline has passed."""
        deadline = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise error("the request's deadline passed")
        return left if timeout is None else min(timeout, left)


def deadline_transport(deadlines: Deadlines) -> Any:
    """An ``httpx.HTTPTransport`` whose connections wait, in every read, write and connect, at most
    until the current thread's deadline (httpcore's network-backend hook)."""
    import httpcore
    import httpx

    class Stream(httpcore.NetworkStream):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self.inner.read(max_bytes, deadlines.left(timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self.inner.write(buffer, deadlines.left(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self.inner.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
            return Stream(self.inner.start_tls(ssl_context, server_hostname, deadlines.left(timeout, httpcore.ConnectTimeout)))

        def get_extra_info(self, info: str) -> Any:
            return self.inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self.inner = httpcore.SyncBackend()

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None) -> Any:
            left = deadlines.left(timeout, httpcore.ConnectTimeout)
            return Stream(self.inner.connect_tcp(host, port, left, local_address, socket_options))

        def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
            return Stream(self.inner.connect_unix_socket(path, deadlines.left(timeout, httpcore.ConnectTimeout), socket_options))

        def sleep(self, seconds: float) -> None:
            self.inner.sleep(seconds)

    transport = httpx.HTTPTransport()
    # httpx exposes no network-backend option; its transport wraps an httpcore pool, which takes one.
    transport._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(), network_backend=Backend())
    return transport
