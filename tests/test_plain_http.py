"""`agentspan.stores.plain_http` under `RemoteStore`: the requests it sends, keep-alive, a connection
the server closed, a lost answer, and the cases left to httpx (proxies, credentials, transports)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from agentspan.errors import TransportError
from agentspan.records import RunStatus
from agentspan.stores.remote import RemoteStore

RENEWED = b'{"epoch":1,"renewed":true}'
NO_RUNS = b'{"runs":[]}'


def _answer(body: bytes, *, close: bool = False) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return (head + ("connection: close\r\n" if close else "") + "\r\n").encode() + body


class ScriptedServer:
    """A socket server answering each request with the next scripted bytes (None: close the
    connection without answering; ``"drop"`` after an answer: close the connection silently)."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.requests: list[tuple[int, bytes]] = []  # (connection number, raw request)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.closed = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.script:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.script:
                    request = _read_request(conn)
                    if request is None:
                        break
                    self.requests.append((self.connections, request))
                    step = self.script.pop(0)
                    if step is None:
                        break
                    conn.sendall(step)
                    if self.script and self.script[0] == "drop":
                        self.script.pop(0)
                        break
            self.closed += 1

    def close(self) -> None:
        self.listener.close()
        self._thread.join(5)


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    sizes = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    length = sizes[0] if sizes else 0
    while len(body) < length:
        body += conn.recv(65536)
    return data


@contextmanager
def scripted(script: list[Any]) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script)
    try:
        yield server
    finally:
        server.close()


def test_a_request_leaves_in_one_send_with_the_headers_the_server_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    sends: list[bytes] = []
    real_sendall, real_send = socket.socket.sendall, socket.socket.send

    client_thread = threading.current_thread()  # (the server's answers are not counted)

    def counting_sendall(self: socket.socket, data: Any, *args: Any) -> None:
        if threading.current_thread() is client_thread:
            sends.append(bytes(data))
        real_sendall(self, data, *args)

    def counting_send(self: socket.socket, data: Any, *args: Any) -> int:
        if threading.current_thread() is client_thread:
            sends.append(bytes(data))
        return real_send(self, data, *args)

    with scripted([_answer(RENEWED)]) as server:
        store = RemoteStore(server.url + "/prefix/", api_key="k3y", retry_for=0)
        monkeypatch.setattr(socket.socket, "sendall", counting_sendall)
        monkeypatch.setattr(socket.socket, "send", counting_send)
        assert store.renew_lease("r/1", epoch=1, lease_expires_at=5.0) is True
        monkeypatch.undo()
        store.close()
    assert len(sends) == 1 and sends[0] == server.requests[0][1]
    head, _, body = sends[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /prefix/api/runs/r%2F1/lease HTTP/1.1"
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    assert headers[b"host"] == server.url.removeprefix("http://").encode()
    assert headers[b"authorization"] == b"Bearer k3y"
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body) and b'"lease_expires_at":5.0' in body


def test_requests_share_one_keep_alive_connection_and_encode_queries_as_httpx_did() -> None:
    with scripted([_answer(NO_RUNS)] * 3) as server:
        store = RemoteStore(server.url, retry_for=0)
        assert store.list_runs(status=RunStatus.WAITING, agent="a b&c", limit=5) == []
        assert store.claimable_runs(agents=["x", "y"], now=1.5, limit=2) == []
        assert store.list_runs() == []
        store.close()
    assert [n for n, _ in server.requests] == [1, 1, 1]
    lines = [raw.split(b"\r\n", 1)[0] for _, raw in server.requests]
    assert lines == [
        b"GET /api/runs?status=waiting&agent=a%20b%26c&limit=5 HTTP/1.1",
        b"GET /api/claimable?now=1.5&limit=2&agent=x&agent=y HTTP/1.1",
        b"GET /api/runs?limit=100 HTTP/1.1",
    ]


def test_a_connection_the_server_closed_is_replaced_without_a_retry() -> None:
    """The server drops the idle connection after its first answer (as uvicorn does after 5 s of
    keep-alive): the next request goes out on a new connection, at the first attempt."""
    with scripted([_answer(RENEWED), "drop", _answer(RENEWED)]) as server:
        store = RemoteStore(server.url, retry_for=0)  # any failed attempt would raise
        assert store.renew_lease("r1", epoch=1, lease_expires_at=5.0)
        deadline = time.monotonic() + 5
        while server.closed < 1 and time.monotonic() < deadline:  # the server closed it
            time.sleep(0.01)
        time.sleep(0.05)  # and its FIN reached this side
        assert store.renew_lease("r1", epoch=1, lease_expires_at=6.0)
        store.close()
    assert [n for n, _ in server.requests] == [1, 2]


def test_connection_close_is_honoured() -> None:
    with scripted([_answer(RENEWED, close=True), _answer(RENEWED)]) as server:
        store = RemoteStore(server.url, retry_for=0)
        assert store.renew_lease("r1", epoch=1, lease_expires_at=5.0)
        assert store.renew_lease("r1", epoch=1, lease_expires_at=6.0)
        store.close()
    assert [n for n, _ in server.requests] == [1, 2]


def test_a_lost_answer_is_retried_and_a_dead_server_named() -> None:
    with scripted([None, _answer(RENEWED)]) as server:  # the first request is read, never answered
        store = RemoteStore(server.url, retry_for=5)
        assert store.renew_lease("r1", epoch=1, lease_expires_at=5.0)
        store.close()
    assert len(server.requests) == 2 and server.requests[0][1] == server.requests[1][1]
    store = RemoteStore(server.url, retry_for=0.1)
    with pytest.raises(TransportError, match="unreachable.*cannot connect"):
        store.list_runs()


def test_credentials_and_given_transports_are_left_to_httpx_and_proxies_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx sends the requests of a URL with credentials and those given a transport; a proxy
    from the environment is not used (as before: httpx uses none when given a transport)."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    with scripted([_answer(NO_RUNS)] * 3) as server:
        store = RemoteStore(server.url, retry_for=0)
        assert store.list_runs(limit=1) == []
        store.close()
        store = RemoteStore(server.url.replace("http://", "http://user:pw@"), retry_for=0)
        assert store.list_runs(limit=1) == []
        store.close()
        seen: list[str] = []

        class Given(httpx.HTTPTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                seen.append(str(request.url))
                return super().handle_request(request)

        store = RemoteStore(server.url, transport=Given(), retry_for=0)
        assert store.list_runs(limit=1) == []
        store.close()
    first, second, third = (raw.split(b"\r\n") for _, raw in server.requests)
    assert b"User-Agent: agentspan" in first
    assert b"Authorization: Basic dXNlcjpwdw==" in second  # httpx sends the URL's credentials
    assert seen == [f"{server.url}/api/runs?limit=1"] and first[0] == second[0] == third[0]


def test_first_imported_inside_a_cassette_it_still_uses_the_real_http_client(tmp_path):
    """vcrpy patches ``http.client.HTTPConnection`` with a stub while a cassette is in use; a store
    client first imported then must still subclass the real class (else every later request of the
    process goes through the stub, which lacks what the client reads: ``will_close``)."""
    import subprocess
    import sys

    code = f"""
import http.client, vcr
real = http.client.HTTPConnection
with vcr.use_cassette({str(tmp_path / "c.yaml")!r}, record_mode="none"):
    assert http.client.HTTPConnection is not real
    from agentspan.stores import plain_http
assert plain_http._Connection.__bases__ == (real,), plain_http._Connection.__mro__
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
