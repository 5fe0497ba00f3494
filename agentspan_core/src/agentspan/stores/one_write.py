"""An httpx transport sending each HTTP/1.1 request in one write: headers and body together.

httpx (through httpcore and h11) writes a request's headers and its body with two ``send`` calls
on a ``TCP_NODELAY`` socket: two packets, so the server is woken by the headers and again by the
body, and the client makes one system call more. `one_write_transport` gives httpx's own
transport a network backend whose streams keep what is written until the next read (a request
is always followed by reading its answer) and send it then, in one call. Everything else (the
connection pool, keep-alive, TLS, timeouts, errors) is httpx's: a failed send raises httpcore's
``WriteError`` as before, only from the read that follows.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["one_write_transport"]


class _OneWriteStream(httpcore.NetworkStream):
    """A stream whose writes are sent together just before the next read."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self._pending: list[bytes] = []
        self._timeout: float | None = None

    def _flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending = []
            self._stream.write(data, self._timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._pending.append(buffer)
            self._timeout = timeout

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._flush()
        return self._stream.read(max_bytes, timeout)

    def close(self) -> None:
        self._pending = []
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:  # fmt: skip
        self._flush()
        return _OneWriteStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _OneWriteBackend(httpcore.NetworkBackend):
    """Wraps another backend's streams in `_OneWriteStream`."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:  # fmt: skip
        return _OneWriteStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:  # fmt: skip
        return _OneWriteStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def one_write_transport(**kwargs: Any) -> httpx.HTTPTransport:
    """httpx's `HTTPTransport` (same arguments) sending each request in one write.

    When this httpx/httpcore no longer has the pool attribute it relies on, the transport is
    returned as it is (two writes, as before).
    """
    transport = httpx.HTTPTransport(**kwargs)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = _OneWriteBackend(backend)  # type: ignore[union-attr]
    return transport
