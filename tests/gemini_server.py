"""A local Gemini API server (stdlib HTTP, a real socket on 127.0.0.1) and a no-egress guard.

`GeminiServer` answers ``POST /v1beta/models/{model}:generateContent`` from a script of replies and
records every request, so tests can drive ADK's real `google.adk.models.Gemini` (google-genai over
httpx) and count the model calls that really went over HTTP. The response bodies have the shape of
real Gemini traffic (see the recordings in ``provider-cassettes/google-gemini``): ``candidates``
with ``content.parts`` (``text`` or ``functionCall`` + ``thoughtSignature``), ``finishReason: STOP``
even for function calls, no function-call ``id`` (the Gemini API gives none), ``usageMetadata``
with ``promptTokensDetails`` and, for thinking models, ``thoughtsTokenCount``. Errors use the
API's ``{"error": {"code", "message", "status"}}`` body.

`loopback_only` makes sure nothing in a test reaches past 127.0.0.1 (no DNS, no connect);
`offline_gemini_env` adds a fake API key and clears what could redirect google-genai.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

GEMINI_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_CLOUD_PROJECT",
                   "GOOGLE_CLOUD_LOCATION", "GOOGLE_GENAI_API_VERSION", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                   "http_proxy", "https_proxy", "all_proxy")
"""Environment variables that could point google-genai elsewhere than the local server."""
GENERATE_PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):generateContent$")
DEFAULT_SIGNATURE = b"scripted-thought-signature\x00\x01\xfe\xff"
"""Opaque bytes the server puts on function-call parts, as Gemini 2.5+ does (``thoughtSignature``);
the client must send them back unchanged with the function call in the next request."""


@dataclass(frozen=True)
class Usage:
    """What the server reports in ``usageMetadata``; ``thoughts`` > 0 adds ``thoughtsTokenCount``."""

    prompt: int
    candidates: int
    thoughts: int = 0

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": self.candidates,
            "totalTokenCount": self.prompt + self.candidates + self.thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt}],
        }
        if self.thoughts:
            body["thoughtsTokenCount"] = self.thoughts
        return body


@dataclass(frozen=True)
class Reply:
    """One scripted answer: model parts (200), an API error (``status`` >= 400), or a verbatim
    ``body`` (e.g. one taken from a recording) sent with ``status``. With ``hold``, the server
    records the request but answers only once `GeminiServer.release` is called (or it stops): a
    model call in flight, for killing the client mid-call."""

    parts: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage | None = None
    status: int = 200
    error: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    hold: bool = False


def text_reply(text: str, usage: Usage | None = None) -> Reply:
    """A final text answer."""
    return Reply(parts=[{"text": text}], usage=usage)


def call_reply(name: str, args: dict[str, Any], usage: Usage | None = None, *,
               signature: bytes | None = DEFAULT_SIGNATURE) -> Reply:
    """A function call, without an ``id`` (as the Gemini API sends it), with a thought signature."""
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if signature is not None:
        part["thoughtSignature"] = base64.b64encode(signature).decode()
    return Reply(parts=[part], usage=usage)


def error_reply(code: int, status: str, message: str) -> Reply:
    """An API error, e.g. ``error_reply(429, "RESOURCE_EXHAUSTED", "Quota exceeded")``."""
    return Reply(status=code, error={"code": code, "message": message, "status": status})


def response_body(reply: Reply, model: str, index: int) -> dict[str, Any]:
    """The JSON body Gemini's ``generateContent`` returns for ``reply`` (the ``index``-th request)."""
    if reply.body is not None:
        return reply.body
    if reply.error is not None:
        return {"error": reply.error}
    candidate: dict[str, Any] = {"content": {"parts": reply.parts, "role": "model"}, "finishReason": "STOP",
                                 "index": 0}
    if any("functionCall" in part for part in reply.parts):
        candidate["finishMessage"] = "Model generated function call(s)."
    usage = reply.usage or Usage(prompt=40 + 10 * index, candidates=7)
    return {"candidates": [candidate], "modelVersion": model, "responseId": f"scripted-response-{index}",
            "usageMetadata": usage.to_json()}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]


class GeminiServer:
    """Serves scripted Gemini ``generateContent`` replies; ``requests`` holds what it received.

    Replies are used in order, one per ``generateContent`` request; a request past the end of the
    script gets a 500 error (so a test that makes an unexpected call fails loudly). Any other path
    gets Gemini's 404 error body.
    """

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from a real API

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path, _, query = self.path.partition("?")
                match = GENERATE_PATH.match(path)
                body = json.loads(raw) if raw else {}
                with server._lock:
                    server.requests.append(RecordedRequest(
                        "POST", path, query, {k.lower(): v for k, v in self.headers.items()}, body))
                    index = sum(1 for r in server.requests if GENERATE_PATH.match(r.path)) - 1
                if match is None:
                    reply = error_reply(404, "NOT_FOUND", f"{path} is not served by this test server.")
                elif index >= len(server.replies):
                    reply = error_reply(500, "INTERNAL", f"unexpected request #{index + 1}: the script "
                                                         f"has {len(server.replies)} replies")
                else:
                    reply = server.replies[index]
                if reply.hold:
                    server._released.wait(timeout=120)
                self._send(reply.status, response_body(reply, match["model"] if match else "", index))

            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append(RecordedRequest("GET", self.path, "", dict(self.headers.items()), {}))
                self._send(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client is gone (killed mid-call)
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def model_calls(self) -> list[RecordedRequest]:
        """The ``generateContent`` requests received so far."""
        with self._lock:
            return [r for r in self.requests if GENERATE_PATH.match(r.path)]

    def release(self) -> None:
        """Lets held replies (``Reply(hold=True)``) go out."""
        self._released.set()

    def __enter__(self) -> GeminiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class EgressAttempt(AssertionError):
    """Raised when code under test tries to reach a host other than the loopback interface."""


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def loopback_only() -> Iterator[list[str]]:
    """Refuses every DNS lookup and connection to anything but 127.0.0.1 / ::1 / localhost.

    Yields the list of refused destinations (each refusal also raises `EgressAttempt` in the
    caller), so a test can assert it stayed empty even if the error was swallowed somewhere.
    """
    refused: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address: Any) -> None:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            refused.append(str(address))
            raise EgressAttempt(f"connection to {address} refused: tests must not leave 127.0.0.1")

    def connect(sock: socket.socket, address: Any) -> None:
        check(address)
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not _is_loopback(name) and not _is_ip(name):  # an IP literal needs no DNS
            refused.append(f"dns:{host}")
            raise EgressAttempt(f"DNS lookup of {host!r} refused: tests must not leave 127.0.0.1")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo
    try:
        yield refused
    finally:
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = real_getaddrinfo


@contextlib.contextmanager
def offline_gemini_env(monkeypatch: pytest.MonkeyPatch, api_key: str) -> Iterator[None]:
    """A fake API key, nothing that could redirect google-genai, no proxies, no egress (`loopback_only`).

    Fails the test at exit if anything tried to leave 127.0.0.1, even when the error was swallowed.
    """
    monkeypatch.setenv("GOOGLE_API_KEY", api_key)
    for name in GEMINI_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    with loopback_only() as refused:
        yield
    assert refused == []
