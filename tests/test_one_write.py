"""`agentspan.stores.one_write`: a request's headers and body leave in one write, before its answer is read."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpcore
import httpx
import pytest

from agentspan.stores.one_write import _OneWriteBackend, _OneWriteStream, one_write_transport


class FakeStream(httpcore.NetworkStream):
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self.fail:
            raise httpcore.WriteError("broken pipe")
        self.calls.append(("write", (buffer, timeout)))

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.calls.append(("read", max_bytes))
        return b"answer"

    def close(self) -> None:
        self.calls.append(("close", None))

    def get_extra_info(self, info: str) -> Any:
        return f"info:{info}"


def test_writes_are_sent_together_before_the_next_read() -> None:
    inner = FakeStream()
    stream = _OneWriteStream(inner)
    stream.write(b"POST / HTTP/1.1\r\n\r\n", 5.0)
    stream.write(b"")
    stream.write(b'{"a": 1}', 5.0)
    assert inner.calls == []
    assert stream.read(100, 5.0) == b"answer"
    assert inner.calls == [("write", (b'POST / HTTP/1.1\r\n\r\n{"a": 1}', 5.0)), ("read", 100)]
    stream.read(100)
    assert inner.calls[-1] == ("read", 100) and len(inner.calls) == 3  # nothing left to send
    assert stream.get_extra_info("is_readable") == "info:is_readable"
    stream.write(b"dropped")
    stream.close()
    assert inner.calls[-1] == ("close", None)


def test_a_failed_send_raises_the_write_error_from_the_read() -> None:
    stream = _OneWriteStream(FakeStream(fail=True))
    stream.write(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(httpcore.WriteError):
        stream.read(100)


def test_httpx_with_the_transport_sends_a_request_in_one_send_call() -> None:
    """A real socket server: the whole request (headers and body) arrives from one send (the
    transport `RemoteStore` gives httpx for https:// servers, here on plain http)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                data += conn.recv(65536)
            received.append(data)
            body = b'{"epoch":1,"renewed":true}'
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    sends: list[int] = []
    real_send = socket.socket.send

    def counting_send(self: socket.socket, data: Any, *args: Any) -> int:
        sends.append(len(data))
        return real_send(self, data, *args)

    client = httpx.Client(transport=one_write_transport(verify=False))
    try:
        socket.socket.send = counting_send  # type: ignore[method-assign]
        try:
            url = f"http://127.0.0.1:{listener.getsockname()[1]}/api/runs/r1/lease"
            response = client.post(url, content=b'{"epoch": 1}', headers={"Content-Type": "application/json"})
        finally:
            socket.socket.send = real_send  # type: ignore[method-assign]
    finally:
        client.close()
        thread.join(5)
        listener.close()
    assert response.json() == {"epoch": 1, "renewed": True}
    assert len(sends) == 1 and sends[0] == len(received[0])
    assert received[0].startswith(b"POST /api/runs/r1/lease HTTP/1.1") and received[0].endswith(b"}")


def test_the_transport_keeps_httpx_settings() -> None:
    transport = one_write_transport(verify=False, retries=2)
    assert isinstance(transport._pool._network_backend, _OneWriteBackend)
    assert transport._pool._retries == 2
    transport.close()
