"""A lean HTTP/1.1 client for `RemoteStore`'s plain ``http://`` servers, on the standard library.

A journaling worker sends one small request per journaled call, each on the call's critical path.
httpx spent 420-540 us of CPU on one and its answer on a busy test machine (its client's headers,
cookies, auth and redirect handling, then httpcore's and h11's state machines, in pure Python),
`http.client` 170-190 us.
`PlainHttp` sends requests on keep-alive `http.client` connections and answers with the status
and body, all `RemoteStore` uses. `RemoteStore` keeps httpx for what this does not do: ``https://``,
credentials in the URL, a transport given by the caller.

Each request goes out in one write, headers and body together (`http.client` writes them with two
``send`` calls on a ``TCP_NODELAY`` socket: two packets, and the server woken twice). An idle
connection is checked before it is used again: a server that closed it (uvicorn closes idle
keep-alive connections after 5 s) left it readable, and a new one is opened instead of failing
the request. Connections are pooled, so threads may send at once.

Connections are the standard library's own `http.client.HTTPConnection`, also when this module is
first imported while an HTTP recorder (vcrpy, as in `agentspan.testing.cassette`) has patched
``http.client`` with a stub: the stub's real base is used (a store's traffic is never a cassette's).

Errors are httpx's, as `RemoteStore` handles them: `httpx.ConnectError` (or `httpx.ConnectTimeout`)
when no connection could be made, so nothing was sent; after that `httpx.WriteError`,
`httpx.WriteTimeout`, `httpx.ReadError`, `httpx.ReadTimeout` or `httpx.RemoteProtocolError`, and
the request may have been applied.
"""

from __future__ import annotations

import http.client
import select
import threading
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["Answer", "PlainHttp"]


@dataclass(frozen=True, slots=True)
class Answer:
    """A server's answer: what `RemoteStore` reads of it.

    Attributes:
        status_code: The HTTP status.
        content: The body.
        url: The request's URL, without credentials (for messages).
    """

    status_code: int
    content: bytes
    url: str

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")


def _real_http_connection() -> type[http.client.HTTPConnection]:
    """``http.client.HTTPConnection``, or, while vcrpy has patched a stub in, the stub's real base."""
    patched = http.client.HTTPConnection
    if patched.__module__ == "http.client":
        return patched
    return getattr(patched, "_baseclass", patched)  # type: ignore[no-any-return]


class _Connection(_real_http_connection()):  # type: ignore[misc]
    """An `http.client` connection sending a request's header block and body in one write."""

    _held: list[bytes] | None = None

    def send(self, data: Any) -> None:
        if self._held is None:
            super().send(data)
        else:
            self._held.append(bytes(data))

    def send_request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None) -> None:
        """Sends one request; ``headers`` are sent as given, after ``Host`` (``Content-Length`` is
        added for a body)."""
        self._held = []
        try:
            self.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers:
                self.putheader(name, value)
            if body is not None:
                self.putheader("Content-Length", str(len(body)))
            self.endheaders(body)
            data = b"".join(self._held)
        finally:
            self._held = None
        super().send(data)

    def closed_by_peer(self) -> bool:
        """Whether an idle connection became readable: its peer closed it (or sent unasked data)."""
        if self.sock is None:
            return True
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        try:
            return bool(poller.poll(0))
        except OSError:
            return True


class PlainHttp:
    """Sends requests to one ``http://host:port`` server on pooled keep-alive connections.

    Args:
        host: The server's host name or address (an IPv6 address without brackets).
        port: Its TCP port.
        timeout: Seconds to connect, and to wait for each read or write.
        max_idle: Most idle connections kept open.
    """

    def __init__(self, host: str, port: int, *, timeout: float, max_idle: int = 8) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None) -> Answer:
        """Sends ``method target`` (the path and query) and reads the whole answer.

        Raises:
            httpx.TransportError: See the module docstring.
        """
        url = f"http://{self._where}{target}"
        conn = self._take()
        if conn is None:
            conn = self._connect()
        try:
            try:
                conn.send_request(method, target, headers, body)
            except TimeoutError as exc:
                raise httpx.WriteTimeout(f"sending to {url} timed out") from exc
            except OSError as exc:
                raise httpx.WriteError(f"sending to {url} failed: {exc}") from exc
            try:
                answer = conn.getresponse()
                content = answer.read()
            except TimeoutError as exc:
                raise httpx.ReadTimeout(f"no answer from {url} within {self.timeout:g}s") from exc
            except http.client.HTTPException as exc:
                raise httpx.RemoteProtocolError(f"bad answer from {url}: {exc!r}") from exc
            except OSError as exc:
                raise httpx.ReadError(f"reading the answer from {url} failed: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if answer.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return Answer(answer.status, content, url)

    def _connect(self) -> _Connection:
        conn = _Connection(self.host, self.port, timeout=self.timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(f"timed out after {self.timeout:g}s") from exc
        except OSError as exc:
            conn.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    def _take(self) -> _Connection | None:
        """The most recently used idle connection still open, or None."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if not conn.closed_by_peer():
                return conn
            conn.close()

    def _give_back(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Closes the idle connections; one in use is closed when its request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
