"""The Agentspan HTTP API: the `Store` contract over HTTP, exactly as `agentspan.wire` describes it.

`create_app` serves one backing store. Each ``/api`` endpoint checks its input, calls the matching
store method once and answers with the `agentspan.wire` model; store methods are synchronous, so
endpoints are plain ``def`` functions that FastAPI runs in its threadpool (the event loop never
blocks on the store).

Every error is an RFC 9457 problem document (``application/problem+json``, `wire.Problem`). Input
is checked completely before the store is called, so bad input gets a 4xx answer and writes
nothing: beyond the pydantic models, strings must be valid Unicode without NUL characters, numbers
finite, typed integers within 64 bits and JSON values nested at most `MAX_JSON_DEPTH` levels
(what every backend, PostgreSQL included, can store and every answer can encode).

Requests are routed on the raw (still percent-encoded) path, so an id or step key holding ``/``
is one path segment (``%2F``), as `agentspan.stores.remote` sends it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, unquote_to_bytes

from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from agentspan import errors
from agentspan.records import Approval, ApprovalStatus, Run, RunStatus
from agentspan.stores.base import Store
from agentspan.wire import (
    API_PREFIX,
    PROBLEM_CONTENT_TYPE,
    ApprovalList,
    CancelRun,
    ClaimRun,
    CreatedRun,
    Decision,
    FinishStep,
    FoundApproval,
    Problem,
    RecordStep,
    Renewed,
    RenewLease,
    RequestApproval,
    Role,
    RunList,
    StartStep,
    StepList,
    UpdateRun,
    problem_of,
)
from agentspan_server.auth import AuthMiddleware, KeyRing
from agentspan_server.metrics import HttpMetricsMiddleware, ServerMetrics

log = logging.getLogger("agentspan_server")

MAX_JSON_DEPTH = 100
"""Deepest nesting of a JSON value accepted (deeper values cannot be encoded reliably)."""
_INT64 = (-(2**63), 2**63 - 1)
_MAX_LISTED_ERRORS = 50
_DECISION_PATH = re.compile(re.escape(API_PREFIX) + r"/approvals/[^/]+/decision")
_T = TypeVar("_T")

Limit = Annotated[int, Query(ge=0, le=1000, description="Most items to return (0..1000; 0 answers an empty list).")]


# ---- problems ---------------------------------------------------------------------------------
class ProblemError(Exception):
    """Raised inside the app to answer with a problem document."""

    def __init__(self, problem: Problem, headers: dict[str, str] | None = None) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.headers = headers


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    """Renders a problem (``ensure_ascii``: any text, even a lone surrogate, encodes)."""
    body = json.dumps(problem.model_dump(exclude_none=True), ensure_ascii=True, separators=(",", ":"))
    return Response(body, status_code=problem.status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _problem(status: int, title: str, detail: str, error: str, **extra: Any) -> Problem:
    return Problem(title=title, status=status, detail=detail, error=error, **extra)


def _invalid(issues: list[dict[str, str]], *, status: int = 422) -> ProblemError:
    shown = "; ".join(f"{i['field']}: {i['message']}" for i in issues[:5])
    more = f" (and {len(issues) - 5} more)" if len(issues) > 5 else ""
    title = "Unprocessable Content" if status == 422 else "Bad Request"
    detail = f"invalid request: {shown}{more}"
    return ProblemError(_problem(status, title, detail, "ConfigurationError", errors=issues[:_MAX_LISTED_ERRORS]))


def _issue(loc: tuple[Any, ...] | list[Any], message: str, kind: str) -> dict[str, str]:
    field = _printable(".".join(_printable(str(p), 80) for p in loc), 300)
    return {"field": field, "message": _printable(message, 300), "type": kind}


def _printable(text: str, limit: int) -> str:
    """Client-supplied text made safe to echo: valid Unicode, bounded length."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = ascii(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- input checks beyond the pydantic models --------------------------------------------------
def _check_text(text: str, loc: tuple[Any, ...], issues: list[dict[str, str]]) -> None:
    if text.isascii():
        if "\x00" in text:
            issues.append(_issue(loc, "must not contain NUL characters", "string_nul"))
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        issues.append(_issue(loc, "must be valid Unicode (no lone surrogates)", "string_unicode"))
        return
    if "\x00" in text:
        issues.append(_issue(loc, "must not contain NUL characters", "string_nul"))


def _check_json(value: Any, loc: tuple[Any, ...], issues: list[dict[str, str]], depth: int) -> None:
    if len(issues) >= _MAX_LISTED_ERRORS:
        return
    if isinstance(value, str):
        _check_text(value, loc, issues)
    elif isinstance(value, float):
        if not math.isfinite(value):
            issues.append(_issue(loc, "must be a finite number", "float_finite"))
    elif isinstance(value, (dict, list)):
        if depth >= MAX_JSON_DEPTH:
            issues.append(_issue(loc, f"is nested deeper than {MAX_JSON_DEPTH} levels", "json_depth"))
            return
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, (*loc, key), issues)
                _check_json(item, (*loc, key), issues, depth + 1)
        else:
            for index, item in enumerate(value):
                _check_json(item, (*loc, index), issues, depth + 1)


def _check_model(model: BaseModel, loc: tuple[Any, ...], issues: list[dict[str, str]]) -> None:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _check_model(value, (*loc, name), issues)
        elif isinstance(value, int) and not isinstance(value, bool):
            if not _INT64[0] <= value <= _INT64[1]:
                issues.append(_issue((*loc, name), "must fit in a signed 64-bit integer", "int_range"))
        else:
            _check_json(value, (*loc, name), issues, 0)


def checked_body(body: _T) -> _T:
    """Returns a validated request body after the checks beyond its model (raises a 422 problem)."""
    issues: list[dict[str, str]] = []
    if isinstance(body, BaseModel):
        _check_model(body, ("body",), issues)
    if issues:
        raise _invalid(issues)
    return body


def path_param(name: str, raw: str) -> str:
    """Decodes one percent-encoded path segment (routing runs on the raw path)."""
    try:
        value = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid([_issue(("path", name), "must be percent-encoded UTF-8", "string_unicode")]) from None
    issues: list[dict[str, str]] = []
    _check_text(value, ("path", name), issues)
    if issues:
        raise _invalid(issues)
    return value


def query_text(name: str, value: str | None) -> str | None:
    """Checks a text query parameter (raises a 422 problem)."""
    if value is not None:
        issues: list[dict[str, str]] = []
        _check_text(value, ("query", name), issues)
        if issues:
            raise _invalid(issues)
    return value


def _json_response(model: BaseModel, status: int = 200) -> Response:
    try:
        body: str | bytes = model.model_dump_json()
    except ValueError:  # text the store holds that JSON cannot encode as UTF-8 (lone surrogates)
        body = json.dumps(model.model_dump(mode="json"), ensure_ascii=True)
    return Response(body, status_code=status, media_type="application/json")


# ---- ASGI middleware --------------------------------------------------------------------------
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
            _problem(413, "Content Too Large", f"the request body exceeds {self.max_body_bytes} bytes",
                     "ConfigurationError")
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    problem = _problem(400, "Bad Request", "malformed Content-Length header", "ConfigurationError")
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

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def required_role(scope: Scope) -> Role | None:
    """The role a request needs: none for ``/healthz``, approver to decide, agent otherwise."""
    path = scope["path"]
    if path == "/healthz":
        return None
    if _DECISION_PATH.fullmatch(path):
        return "approver"
    return "agent"


# ---- exception handlers -----------------------------------------------------------------------
async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.problem, exc.headers)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    found = list(exc.errors())
    for error in found:
        if error.get("type") == "json_invalid":
            reason = _printable(str((error.get("ctx") or {}).get("error", "invalid JSON")), 200)
            position = error.get("loc", ("body", "?"))[-1]
            problem = _problem(400, "Bad Request", f"malformed JSON body: {reason} at position {position}",
                               "ConfigurationError")  # fmt: skip
            return problem_response(problem)
    issues = [_issue(tuple(e.get("loc", ())), str(e.get("msg", "invalid")), str(e.get("type", "invalid")))
              for e in found]  # fmt: skip
    return problem_response(_invalid(issues).problem)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        detail = f"no such endpoint: {request.method} {_printable(request.url.path, 200)}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {_printable(request.url.path, 200)}"
    else:
        detail = _printable(str(exc.detail), 300)
    error = "ConfigurationError" if status in (400, 413, 422) else "TransportError"
    title = {404: "Not Found", 405: "Method Not Allowed"}.get(status, "Bad Request" if status == 400 else "Error")
    return problem_response(_problem(status, title, detail, error), dict(exc.headers or {}) or None)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    problem = _problem(500, "Internal Server Error", "the server failed to handle the request; see its log",
                       "TransportError")  # fmt: skip
    return problem_response(problem)


_PROBLEM_REF = {"schema": {"$ref": "#/components/schemas/Problem"}}
_ERRORS = {
    400: "Malformed JSON body", 401: "Missing or invalid API key", 403: "The key's role may not do this",
    404: "Unknown id", 409: "Stale lease epoch, double decision or wrong run state",
    413: "Body too large", 422: "Invalid values", 503: "Store unavailable",
}  # fmt: skip


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"description": _ERRORS[s], "content": {PROBLEM_CONTENT_TYPE: _PROBLEM_REF}} for s in statuses}


_COMMON = (401, 422, 503)
_BODY = (400, 413)


# ---- the app ----------------------------------------------------------------------------------
def create_app(store: Store, *, keys: KeyRing | None = None, max_body_bytes: int = 1_048_576) -> FastAPI:
    """Builds the HTTP API over a store.

    Args:
        store: The backing store; each endpoint calls its matching method.
        keys: Accepted API keys and roles; None (or an empty ring) lets every request through.
        max_body_bytes: Largest request body accepted (413 above it).

    Returns:
        The FastAPI application (``/api`` routes, ``/healthz``, ``/metrics``, ``/openapi.json``).

    Raises:
        ConfigurationError: ``max_body_bytes`` is not positive.
    """
    if max_body_bytes < 1:
        raise errors.ConfigurationError(f"max_body_bytes must be positive, not {max_body_bytes}")
    metrics = ServerMetrics(store)
    app = FastAPI(
        title="Agentspan",
        version="1",
        summary="The Agentspan store contract over HTTP (agentspan.wire).",
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.store = store
    app.state.metrics = metrics

    def call(method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Calls the store, turning its exceptions (and signals) into problems."""
        try:
            return method(*args, **kwargs)
        except (errors.AgentspanError, errors.AgentspanSignal) as exc:
            problem = problem_of(exc)
            if problem.status >= 500:
                log.warning("store %s failed: %s", getattr(method, "__name__", "call"), exc)
            raise ProblemError(problem) from None

    def same_run(run_id: str, body_run_id: str, field: str) -> None:
        if body_run_id != run_id:
            issue = _issue(("body", *field.split(".")), "must equal the run id of the path", "run_id_mismatch")
            raise _invalid([issue])

    # ---- runs ---------------------------------------------------------------------------------
    @app.post(f"{API_PREFIX}/runs", status_code=201, response_model=CreatedRun, tags=["runs"],
              responses={200: {"model": CreatedRun, "description": "Idempotency hit: the existing run"},
                         **_responses(*_COMMON, *_BODY)})  # fmt: skip
    def create_run(run: Run) -> Response:
        """`Store.create_run`: 201 when inserted, 200 when the idempotency key already exists."""
        created, inserted = call(store.create_run, checked_body(run))
        return _json_response(CreatedRun(run=created, created=inserted), 201 if inserted else 200)

    @app.get(f"{API_PREFIX}/runs", response_model=RunList, tags=["runs"], responses=_responses(*_COMMON))
    def list_runs(status: RunStatus | None = None, agent: str | None = None, limit: Limit = 100) -> Response:
        """`Store.list_runs`: newest first."""
        runs = call(store.list_runs, status=status, agent=query_text("agent", agent), limit=limit)
        return _json_response(RunList(runs=runs))

    @app.get(API_PREFIX + "/runs/{run_id}", response_model=Run, tags=["runs"], responses=_responses(*_COMMON, 404))
    def get_run(run_id: str) -> Response:
        """`Store.get_run`."""
        return _json_response(call(store.get_run, path_param("run_id", run_id)))

    @app.patch(API_PREFIX + "/runs/{run_id}", response_model=Run, tags=["runs"],
               responses=_responses(*_COMMON, *_BODY, 404, 409))  # fmt: skip
    def update_run(run_id: str, body: UpdateRun) -> Response:
        """`Store.update_run` (fenced)."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        run = call(store.update_run, rid, epoch=b.epoch, status=b.status, output=b.output, error=b.error,
                   release_lease=b.release_lease)  # fmt: skip
        return _json_response(run)

    @app.post(API_PREFIX + "/runs/{run_id}/cancel", response_model=Run, tags=["runs"],
              responses=_responses(*_COMMON, *_BODY, 404, 409))  # fmt: skip
    def cancel_run(run_id: str, body: CancelRun | None = None) -> Response:
        """`Store.cancel_run` (the body may be left out)."""
        rid, b = path_param("run_id", run_id), checked_body(body or CancelRun())
        return _json_response(call(store.cancel_run, rid, reason=b.reason))

    # ---- leases -------------------------------------------------------------------------------
    @app.post(API_PREFIX + "/runs/{run_id}/claim", response_model=Run, tags=["leases"],
              responses=_responses(*_COMMON, *_BODY, 404, 409))  # fmt: skip
    def claim_run(run_id: str, body: ClaimRun) -> Response:
        """`Store.claim_run`: compare-and-set of the lease epoch."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        run = call(store.claim_run, rid, owner=b.owner, expected_epoch=b.expected_epoch,
                   lease_expires_at=b.lease_expires_at)  # fmt: skip
        return _json_response(run)

    @app.post(API_PREFIX + "/runs/{run_id}/lease", response_model=Renewed, tags=["leases"],
              responses=_responses(*_COMMON, *_BODY, 404))  # fmt: skip
    def renew_lease(run_id: str, body: RenewLease) -> Response:
        """`Store.renew_lease`: ``renewed`` is false when the epoch is stale."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        renewed = call(store.renew_lease, rid, epoch=b.epoch, lease_expires_at=b.lease_expires_at)
        return _json_response(Renewed(renewed=renewed))

    @app.get(f"{API_PREFIX}/claimable", response_model=RunList, tags=["leases"], responses=_responses(*_COMMON))
    def claimable_runs(
        agent: Annotated[list[str] | None, Query(description="Agent names (repeat); all agents when absent.")] = None,
        now: Annotated[float | None, Query(allow_inf_nan=False, description="Default: server time.")] = None,
        limit: Limit = 10,
    ) -> Response:
        """`Store.claimable_runs`: oldest first."""
        agents = None if agent is None else [query_text("agent", a) or "" for a in agent]
        runs = call(store.claimable_runs, agents=agents, now=time.time() if now is None else now, limit=limit)
        return _json_response(RunList(runs=runs))

    # ---- steps --------------------------------------------------------------------------------
    @app.post(API_PREFIX + "/runs/{run_id}/steps/start", status_code=204, response_class=Response, tags=["steps"],
              responses=_responses(*_COMMON, *_BODY, 404, 409))  # fmt: skip
    def start_step(run_id: str, body: StartStep) -> Response:
        """`Store.start_step` (fenced). ``step.run_id`` must be the path's run id."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        same_run(rid, b.step.run_id, "step.run_id")
        call(store.start_step, b.step, epoch=b.epoch, durable=b.durable)
        metrics.step_started(b.step)
        return Response(status_code=204)

    @app.post(API_PREFIX + "/runs/{run_id}/steps/finish", status_code=204, response_class=Response, tags=["steps"],
              responses=_responses(*_COMMON, *_BODY, 404, 409))  # fmt: skip
    def finish_step(run_id: str, body: FinishStep) -> Response:
        """`Store.finish_step` (fenced)."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        call(store.finish_step, rid, b.key, b.result, epoch=b.epoch)
        metrics.step_finished(rid, b.key, b.result)
        return Response(status_code=204)

    @app.post(API_PREFIX + "/runs/{run_id}/steps/record", status_code=204, response_class=Response, tags=["steps"],
              responses=_responses(*_COMMON, *_BODY, 404, 409))  # fmt: skip
    def record_step(run_id: str, body: RecordStep) -> Response:
        """`Store.record_step` (fenced, one transaction). ``step.run_id`` must be the path's run id."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        same_run(rid, b.step.run_id, "step.run_id")
        call(store.record_step, b.step, b.result, epoch=b.epoch)
        metrics.step_recorded(b.step, b.result)
        return Response(status_code=204)

    @app.get(API_PREFIX + "/runs/{run_id}/steps", response_model=StepList, tags=["steps"],
             responses=_responses(*_COMMON, 404))  # fmt: skip
    def list_steps(run_id: str) -> Response:
        """`Store.list_steps`: ordered by ``seq``."""
        return _json_response(StepList(steps=call(store.list_steps, path_param("run_id", run_id))))

    # ---- approvals ----------------------------------------------------------------------------
    @app.post(API_PREFIX + "/runs/{run_id}/approvals", response_model=Approval, tags=["approvals"],
              responses=_responses(*_COMMON, *_BODY, 404, 409))  # fmt: skip
    def request_approval(run_id: str, body: RequestApproval) -> Response:
        """`Store.request_approval` (fenced, idempotent per step). ``approval.run_id`` must match."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        same_run(rid, b.approval.run_id, "approval.run_id")
        return _json_response(call(store.request_approval, b.approval, epoch=b.epoch))

    @app.get(API_PREFIX + "/runs/{run_id}/approvals/{step_key:path}", response_model=FoundApproval,
             tags=["approvals"], responses=_responses(*_COMMON))  # fmt: skip
    def find_approval(run_id: str, step_key: str) -> Response:
        """`Store.find_approval`: ``approval`` is null when none was requested for the step."""
        rid, key = path_param("run_id", run_id), path_param("step_key", step_key)
        return _json_response(FoundApproval(approval=call(store.find_approval, rid, key)))

    @app.get(f"{API_PREFIX}/approvals", response_model=ApprovalList, tags=["approvals"],
             responses=_responses(*_COMMON))  # fmt: skip
    def list_approvals(run_id: str | None = None, status: ApprovalStatus | None = None, limit: Limit = 100) -> Response:
        """`Store.list_approvals`: newest first."""
        approvals = call(store.list_approvals, run_id=query_text("run_id", run_id),
                         status=None if status is None else status.value, limit=limit)  # fmt: skip
        return _json_response(ApprovalList(approvals=approvals))

    @app.get(API_PREFIX + "/approvals/{approval_id}", response_model=Approval, tags=["approvals"],
             responses=_responses(*_COMMON, 404))  # fmt: skip
    def get_approval(approval_id: str) -> Response:
        """`Store.get_approval`."""
        return _json_response(call(store.get_approval, path_param("approval_id", approval_id)))

    @app.post(API_PREFIX + "/approvals/{approval_id}/decision", response_model=Approval, tags=["approvals"],
              responses=_responses(*_COMMON, *_BODY, 403, 404, 409))  # fmt: skip
    def decide_approval(approval_id: str, body: Decision) -> Response:
        """`Store.decide_approval` (needs the approver or admin role). ``decided_at`` defaults to now."""
        aid, b = path_param("approval_id", approval_id), checked_body(body)
        decided_at = time.time() if b.decided_at is None else b.decided_at
        approval = call(store.decide_approval, aid, approved=b.approved, by=b.by, reason=b.reason,
                        decided_at=decided_at)  # fmt: skip
        return _json_response(approval)

    # ---- operations ---------------------------------------------------------------------------
    @app.get("/healthz", tags=["operations"], responses=_responses(503))
    def healthz() -> dict[str, str]:
        """Liveness and store check (no API key needed)."""
        try:
            store.list_runs(limit=1)
        except Exception as exc:
            log.warning("health check failed: %s", exc)
            raise ProblemError(_problem(503, "Service Unavailable", "the store is unavailable", "StoreError")) from None
        return {"status": "ok"}

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", response_class=Response, tags=["operations"], responses=_responses(401, 503))
    def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        body, content_type = call(metrics.render)
        return Response(body, media_type=content_type)

    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
    # Last added runs first: raw path -> metrics -> auth -> body limit -> routing.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(AuthMiddleware, keys=keys, required_role=required_role)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics, routes=app.router.routes)
    app.add_middleware(RawPathMiddleware)
    _document(app, secured=bool(keys))
    return app


def _document(app: FastAPI, *, secured: bool) -> None:
    """Completes the generated OpenAPI document: the `Problem` schema and, with keys, bearer auth."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            if secured:
                schema["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
                schema["security"] = [{"apiKey": []}]
                schema["paths"].get("/healthz", {}).get("get", {})["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
