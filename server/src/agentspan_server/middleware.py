"""The small ASGI middlewares of the Agentspan HTTP API that shape a request before routing.

`RawPathMiddleware` routes on the raw (still percent-encoded) path, so an id or step key holding
``/`` is one path segment (``%2F``), as `agentspan.stores.remote` sends it; the endpoints decode
each segment themselves (`checks.path_param`). `BodyLimitMiddleware` answers 413 (a problem
document) for a body over the configured size before anything reads or parses it.
`LoopbackHostMiddleware` keeps a server without API keys (listening on loopback only) from
answering a page of another site that a DNS rebinding pointed at it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentspan_server.problems import new_problem, problem_response


class RawPathMiddleware:
    """Routes on the raw request path, so ``%2F`` inside an id stays inside its path segment."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path")
            if raw:
                scope["path"] = raw.decode("latin-1").split("?", 1)[0]
            else:
                scope["path"] = quote(scope["path"], safe="/:@!$&'()*+,;=-._~")
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Answers 413 for a body over ``max_body_bytes`` before anything parses it.

    The declared ``Content-Length`` is checked first; the body is then read (counting the bytes
    actually streamed, at most ``max_body_bytes`` kept) and handed on in one piece.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> Response:
        return problem_response(
            new_problem(413, "Content Too Large", f"the request body exceeds {self.max_body_bytes} bytes",
                        "ConfigurationError")
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    problem = new_problem(400, "Bad Request", "malformed Content-Length header", "ConfigurationError")
                    await problem_response(problem)(scope, receive, send)
                    return
                if int(value) > self.max_body_bytes:
                    await self._too_large()(scope, receive, send)
                    return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                await self._too_large()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def is_loopback_name(host_header: str) -> bool:
    """Whether a ``Host`` header names this machine (``localhost`` or a loopback address)."""
    try:
        host = urlsplit("//" + host_header).hostname or ""
    except ValueError:  # not a host at all
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackHostMiddleware:
    """Answers 403 to a request whose ``Host`` is not a loopback name (a server without API keys).

    Such a server listens on loopback only, but a web page of another site whose name a DNS
    rebinding turned to 127.0.0.1 reaches it as its own origin: its requests carry that site's
    name as ``Host``. ``exempt(path)`` names the paths left to check themselves (``/healthz``,
    the web UI's pages, which answer such a request with a 403 page).
    """

    def __init__(self, app: ASGIApp, exempt: Callable[[str], bool]) -> None:
        self.app = app
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.exempt(scope["path"]):
            host = next((value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"host"), "")
            if not is_loopback_name(host):
                problem = new_problem(403, "Forbidden", "this server has no API keys, so it answers only requests "
                                      "addressed to a loopback name (localhost, 127.0.0.1, ::1)", "HostNotAllowed")
                await problem_response(problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)
