"""The hot endpoints' fast path: a journaling worker's requests without FastAPI's per-request work.

A worker sends a few requests all the time: step writes, lease renewals, checkpoint puts.
`HotPathMiddleware` answers those itself, in front of FastAPI's routing (which tries every route
in turn), its dependency resolution (the body parsed by ``json.loads``, then validated, then
checked value by value) and its exception middleware: the body is parsed and validated in one
step (``model_validate_json``), checked (`checks.checked_body`, which skips walking the JSON
values when the raw text cannot hold anything they refuse) and handed to the same endpoint
function the FastAPI route calls.

It only takes the requests the route would accept as they are. Anything else (another content
type, a body the model refuses, malformed JSON) goes on to the FastAPI route untouched, body
included, and is answered there exactly as before (the same 400 and 422 problem documents). A
`ProblemError` raised by the endpoint function (bad path segment, failed checks, a store error) is
rendered as the app's handler renders it. The OpenAPI document is the routes' own: nothing here
is a route.

Runs innermost, after the raw-path, metrics, auth and body-limit middlewares, so 401/403/413 and
the metrics are unchanged; it sets the request's ``route`` as routing would, for the metrics.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentspan_server.checks import checked_body, path_param
from agentspan_server.problems import ProblemError, problem_response

__all__ = ["HotEndpoint", "HotPathMiddleware"]

_JSON = b"application/json"


@dataclass(frozen=True)
class HotEndpoint:
    """One endpoint served by the fast path.

    Attributes:
        method: The HTTP method.
        path: The route's path template (``/api/runs/{run_id}/lease``); its parameters are whole
            path segments.
        model: The body's model.
        handle: The endpoint function: the decoded path parameters (in template order), then the
            checked body; it answers or raises `ProblemError`.
    """

    method: str
    path: str
    model: type[BaseModel]
    handle: Callable[..., Awaitable[Response]]


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(regex)


class HotPathMiddleware:
    """ASGI middleware answering the `HotEndpoint` requests it can take (see the module).

    Args:
        app: The wrapped application (FastAPI's exception middleware and router).
        endpoints: The endpoints to serve.
        routes: The app's routes: each endpoint's route is set on its requests, as routing does.
    """

    def __init__(self, app: ASGIApp, *, endpoints: Sequence[HotEndpoint], routes: Sequence[BaseRoute]) -> None:
        self.app = app
        by_path = {(getattr(r, "path", None), m): r for r in routes for m in getattr(r, "methods", None) or ()}
        self._exact: dict[tuple[str, str], tuple[HotEndpoint, BaseRoute | None]] = {}
        self._templated: list[tuple[str, re.Pattern[str], HotEndpoint, BaseRoute | None]] = []
        for endpoint in endpoints:
            entry = (endpoint, by_path.get((endpoint.path, endpoint.method)))
            if "{" in endpoint.path:
                self._templated.append((endpoint.method, _pattern(endpoint.path), *entry))
            else:
                self._exact[(endpoint.method, endpoint.path)] = entry

    def _find(self, method: str, path: str) -> tuple[HotEndpoint, BaseRoute | None, dict[str, str]] | None:
        found = self._exact.get((method, path))
        if found is not None:
            return (*found, {})
        for wanted, pattern, endpoint, route in self._templated:
            if wanted == method and (match := pattern.fullmatch(path)) is not None:
                return endpoint, route, match.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._find(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if scope.get("root_path"):  # mounted: the router's own path handling applies
            found = None
        if found is None or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        endpoint, route, segments = found
        body, message = await _read_body(receive)
        if message is not None:  # the client went away mid-body: let the route see it
            await self.app(scope, _replay(body, receive, message), send)
            return
        try:
            model = endpoint.model.model_validate_json(body)
        except ValidationError:  # answered by the route, with its own 400/422 details
            await self.app(scope, _replay(body, receive), send)
            return
        if route is not None:
            scope["route"] = route
        try:
            params = [path_param(name, raw) for name, raw in segments.items()]
            response = await endpoint.handle(*params, checked_body(model, raw=body))
        except ProblemError as exc:
            response = problem_response(exc.problem, exc.headers)
        await response(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    """Whether the request declares exactly ``application/json`` (what the SDK sends)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.lower() == _JSON
    return False


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body; and the message that ended it early (a disconnect), or None."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks), None


def _replay(body: bytes, receive: Receive, last: Message | None = None) -> Receive:
    """A ``receive`` giving the body already read (then ``last``, if any), then the real one."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": last is not None}]
    if last is not None:
        pending.append(last)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
