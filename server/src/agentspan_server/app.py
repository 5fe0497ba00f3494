"""The Agentspan HTTP API: the `Store` contract over HTTP, exactly as `agentspan.wire` describes it.

`create_app` serves one backing store and documents it in OpenAPI. Each ``/api`` endpoint checks
its input (`checks`), calls the matching store method once and answers with the `agentspan.wire`
model; the run, lease and step routes are here, the approval routes in `approval_routes`, the
checkpoint routes in `checkpoint_routes`, run deletion in `retention_routes`, the error responses they document in
`openapi_docs`. Store methods are synchronous: a store that waits on the network (``blocking_io``,
PostgreSQL) is called on a worker thread, so the event loop never waits on it; the embedded SQLite
store (tens of microseconds a call) is called inline, saving a thread hand-off per request. A store
with an ``async_path()`` (PostgreSQL: `postgres_async`) serves its hot calls (step writes, lease
renewal, run and step reads, checkpoint puts and gets) on the event loop instead, opened and closed
with the app's lifespan. Every error is answered with a problem document (`problems`); requests are
routed on the raw path, under a body-size limit (`middleware`), an API-key check (`auth`) and
request metrics (`metrics`). The hot endpoints' requests skip FastAPI's per-request work through
`hot_path`, which calls the same endpoint functions (``*_of``) as their routes.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import FastAPI, Query
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from agentspan import errors
from agentspan.records import UNADDRESSABLE_IDS, CheckpointRecord, Run, RunStatus
from agentspan.stores.base import Store, after_position, asked_by
from agentspan.wire import (
    API_PREFIX,
    CancelRun,
    ClaimRun,
    CreatedRun,
    FinishStep,
    Problem,
    PutCheckpointWithWrites,
    PutCheckpointWrites,
    RecordStep,
    Renewed,
    RenewLease,
    ReopenRun,
    Role,
    RunList,
    StartStep,
    StepList,
    SupersedeSteps,
    UpdateRun,
    problem_of,
)
from agentspan_server.approval_routes import add_approval_routes
from agentspan_server.auth import AuthMiddleware, KeyRing, requester
from agentspan_server.checkpoint_routes import add_checkpoint_routes
from agentspan_server.checks import Limit, checked_body, path_param, query_text, same_run
from agentspan_server.hot_path import HotEndpoint, HotPathMiddleware
from agentspan_server.metrics import HttpMetricsMiddleware, ServerMetrics
from agentspan_server.middleware import BodyLimitMiddleware, LoopbackHostMiddleware, RawPathMiddleware
from agentspan_server.openapi_docs import BODY, COMMON, json_response, responses
from agentspan_server.problems import ProblemError, input_issue, install_problem_handlers, invalid_input, new_problem
from agentspan_server.retention_routes import RUN_DELETIONS, add_retention_routes
from agentspan_server.slack import INTERACTIONS_PATH, SlackSettings, exempt_interactions, install_slack
from agentspan_server.ui import install_ui, is_ui_path

log = logging.getLogger("agentspan_server")

_DECISION_PATH = re.compile(re.escape(API_PREFIX) + r"/approvals/[^/]+/decision")
_DELETIONS = RUN_DELETIONS | {f"{API_PREFIX}/checkpoints/{a}" for a in ("delete", "delete-for-runs", "prune")}
_T = TypeVar("_T")

Before = Annotated[str | None, Query(description="Keyset paging: only runs whose id sorts before this one (the "
                                     "last id of the previous page); it need not name a run. An empty value "
                                     "is a position too, before every id: no runs (leave the parameter out "
                                     "for the first page).")]
"""The ``before`` query parameter of ``GET /api/runs``. An empty ``before=`` answers no runs, as
``Store.list_runs(before="")`` does on every store: `agentspan.stores.remote.RemoteStore` sends it
as given, so reading it as absent (or refusing it) would break that store's contract (the web UI,
whose links a person edits, reads an empty ``?before=`` as the first page)."""

After = Annotated[str | None, Query(description="Keyset paging: only runs whose id sorts after this one (the last "
                                   "id of the previous page); it need not name a run.")]
"""The ``after`` query parameter of ``GET /api/claimable`` (a worker looking past runs it cannot take up)."""


def required_role(scope: Scope) -> Role | None:
    """The role a request needs: none for ``/healthz`` and the web UI, approver to decide, admin to
    delete runs or checkpoints (a POST: ``GET /api/runs/prune`` reads a run of that id), agent otherwise.

    The web UI (``/``, ``/ui``, ``/ui/...``, ``/static/...``) checks its own login sessions.
    """
    path = scope["path"]
    if path == "/healthz" or is_ui_path(path):
        return None
    if _DECISION_PATH.fullmatch(path):
        return "approver"
    if path in _DELETIONS and scope.get("method") == "POST":
        return "admin"
    return "agent"


# ---- the app ----------------------------------------------------------------------------------
def create_app(
    store: Store, *, keys: KeyRing | None = None, max_body_bytes: int = 1_048_576, slack: SlackSettings | None = None
) -> FastAPI:
    """Builds the HTTP API over a store.

    Args:
        store: The backing store; each endpoint calls its matching method.
        keys: Accepted API keys and roles; None (or an empty ring) lets every request through.
        max_body_bytes: Largest request body accepted (413 above it).
        slack: Slack approvals (`agentspan_server.slack`): new approvals posted to a channel, decided
            at ``/slack/interactions``; None for none.

    Returns:
        The FastAPI application (``/api`` routes, ``/healthz``, ``/metrics``, ``/openapi.json``).

    Raises:
        ConfigurationError: ``max_body_bytes`` is not positive.
    """
    if max_body_bytes < 1:
        raise errors.ConfigurationError(f"max_body_bytes must be positive, not {max_body_bytes}")
    metrics = ServerMetrics(store)
    # A store that waits on the network (PostgreSQL) is called on a worker thread; an embedded one
    # (SQLite: tens of microseconds a call, serialised on one connection anyway) is called inline,
    # which saves a thread hand-off per request. A store with an asyncio path serves its hot calls
    # on the event loop: no hand-off, no contention for the GIL with worker threads.
    offload = bool(getattr(store, "blocking_io", False))
    # the ignore: async_path is an extra some stores have (PostgresStore), checked for right there
    hot = store.async_path() if callable(getattr(store, "async_path", None)) else None  # type: ignore[attr-defined]
    hot_names = {} if hot is None else {getattr(store, name): name for name in hot.names}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if hot is not None:
            await hot.open()
        try:
            yield
        finally:
            if hot is not None:
                await hot.aclose()

    app = FastAPI(
        title="Agentspan",
        lifespan=lifespan,
        version="1",
        summary="The Agentspan store contract over HTTP (agentspan.wire).",
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.store = store
    app.state.store_async = hot  # the store's asyncio path (None without one)
    app.state.metrics = metrics
    slack_approvals = install_slack(app, store, slack) if slack is not None else None

    async def call(method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Calls the store, turning its exceptions (and signals) into problems."""
        try:
            if hot is not None and (name := hot_names.get(method)) is not None:
                return await hot.call(name, *args, **kwargs)  # type: ignore[no-any-return]
            if offload:
                return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs))
            return method(*args, **kwargs)
        except (errors.AgentspanError, errors.AgentspanSignal) as exc:
            problem = problem_of(exc)
            if problem.status >= 500:
                log.warning("store %s failed: %s", getattr(method, "__name__", "call"), exc)
            raise ProblemError(problem) from None

    # ---- runs ---------------------------------------------------------------------------------
    @app.post(f"{API_PREFIX}/runs", status_code=201, response_model=CreatedRun, tags=["runs"],
              responses={200: {"model": CreatedRun, "description": "Idempotency hit: the existing run"},
                         **responses(*COMMON, *BODY)})  # fmt: skip
    async def create_run(run: Run) -> Response:
        """`Store.create_run`: 201 when inserted, 200 when the idempotency key already exists."""
        if run.id in UNADDRESSABLE_IDS:
            raise invalid_input([input_issue(("body", "id"), "cannot be '.' or '..': a URL resolves it as a dot "
                                             "segment, so no request could address the run", "value_error")])
        created, inserted = await call(store.create_run, checked_body(run))
        return json_response(CreatedRun(run=created, created=inserted), 201 if inserted else 200)

    @app.get(f"{API_PREFIX}/runs", response_model=RunList, tags=["runs"], responses=responses(*COMMON))
    async def list_runs(status: RunStatus | None = None, agent: str | None = None, limit: Limit = 100,
                        session_id: str | None = None, before: Before = None) -> Response:
        """`Store.list_runs`: newest first; ``before`` (the last id of a page) gives the next, older, page."""
        position = query_text("before", before)
        runs = await call(store.list_runs, status=status, agent=query_text("agent", agent), limit=limit,
                          session_id=query_text("session_id", session_id), **after_position(position))
        return json_response(RunList(runs=runs))

    @app.get(API_PREFIX + "/runs/{run_id}", response_model=Run, tags=["runs"], responses=responses(*COMMON, 404))
    async def get_run(run_id: str) -> Response:
        """`Store.get_run`."""
        return json_response(await call(store.get_run, path_param("run_id", run_id)))

    @app.patch(API_PREFIX + "/runs/{run_id}", response_model=Run, tags=["runs"],
               responses=responses(*COMMON, *BODY, 404, 409))  # fmt: skip
    async def update_run(run_id: str, body: UpdateRun) -> Response:
        """`Store.update_run` (fenced)."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        run = await call(store.update_run, rid, epoch=b.epoch, status=b.status, output=b.output, error=b.error,
                         release_lease=b.release_lease)  # fmt: skip
        return json_response(run)

    @app.post(API_PREFIX + "/runs/{run_id}/cancel", response_model=Run, tags=["runs"],
              responses=responses(*COMMON, *BODY, 404, 409))  # fmt: skip
    async def cancel_run(run_id: str, body: CancelRun | None = None) -> Response:
        """`Store.cancel_run` (the body may be left out)."""
        rid, b = path_param("run_id", run_id), checked_body(body or CancelRun())
        return json_response(await call(store.cancel_run, rid, reason=b.reason))

    @app.post(API_PREFIX + "/runs/{run_id}/reopen", response_model=Run, tags=["runs"],
              responses=responses(*COMMON, *BODY, 404, 409))  # fmt: skip
    async def reopen_run(run_id: str, request: Request, body: ReopenRun | None = None) -> Response:
        """`Store.reopen_run`: a ``failed`` run taken up again (409 for any other status; the body
        may be left out: ``pending``, for a worker). The retry history records ``by`` (from an
        ``agent`` key as its claim, ``api:agent (for BY)``), or without it (or empty) the role of
        the API key that sent the request (``api:ROLE``; null without keys)."""
        rid, b = path_param("run_id", run_id), checked_body(body or ReopenRun())
        sender = requester(request, keys)
        # an agent key (every worker holds one) may reopen runs, but what it says of who asked is
        # its claim, not an approver's word: recorded as such
        by = (b.by if sender != "api:agent" else f"{sender} (for {b.by})") if b.by else sender
        run = await call(store.reopen_run, rid, owner=b.owner, lease_expires_at=b.lease_expires_at,
                         options=b.options, **asked_by(store, by))  # fmt: skip
        return json_response(run)

    # ---- leases -------------------------------------------------------------------------------
    @app.post(API_PREFIX + "/runs/{run_id}/claim", response_model=Run, tags=["leases"],
              responses=responses(*COMMON, *BODY, 404, 409))  # fmt: skip
    async def claim_run(run_id: str, body: ClaimRun) -> Response:
        """`Store.claim_run`: compare-and-set of the lease epoch."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        run = await call(store.claim_run, rid, owner=b.owner, expected_epoch=b.expected_epoch,
                         lease_expires_at=b.lease_expires_at)  # fmt: skip
        return json_response(run)

    @app.post(API_PREFIX + "/runs/{run_id}/lease", response_model=Renewed, tags=["leases"],
              responses=responses(*COMMON, *BODY, 404))  # fmt: skip
    async def renew_lease(run_id: str, body: RenewLease) -> Response:
        """`Store.renew_lease`: ``renewed`` is false when the epoch is stale."""
        return await renew_lease_of(path_param("run_id", run_id), checked_body(body))

    async def renew_lease_of(rid: str, b: RenewLease) -> Response:
        renewed = await call(store.renew_lease, rid, epoch=b.epoch, lease_expires_at=b.lease_expires_at)
        return json_response(Renewed(renewed=renewed))

    @app.get(f"{API_PREFIX}/claimable", response_model=RunList, tags=["leases"], responses=responses(*COMMON))
    async def claimable_runs(
        agent: Annotated[list[str] | None, Query(description="Agent names (repeat); all agents when absent.")] = None,
        now: Annotated[float | None, Query(allow_inf_nan=False, description="Default: server time.")] = None,
        limit: Limit = 10,
        after: After = None,
    ) -> Response:
        """`Store.claimable_runs`: oldest first; ``after`` (the last id of a page) gives the next, newer, page."""
        agents = None if agent is None else [query_text("agent", a) or "" for a in agent]
        position = query_text("after", after)
        # ``after`` only when given: a store written before it still answers the first page.
        runs = await call(store.claimable_runs, agents=agents, now=time.time() if now is None else now, limit=limit,
                          **({} if position is None else {"after": position}))
        return json_response(RunList(runs=runs))

    # ---- steps --------------------------------------------------------------------------------
    @app.post(API_PREFIX + "/runs/{run_id}/steps/start", status_code=204, response_class=Response, tags=["steps"],
              responses=responses(*COMMON, *BODY, 404, 409))  # fmt: skip
    async def start_step(run_id: str, body: StartStep) -> Response:
        """`Store.start_step` (fenced). ``step.run_id`` must be the path's run id."""
        return await start_step_of(path_param("run_id", run_id), checked_body(body))

    async def start_step_of(rid: str, b: StartStep) -> Response:
        same_run(rid, b.step.run_id, "step.run_id")
        await call(store.start_step, b.step, epoch=b.epoch, durable=b.durable)
        metrics.step_started(b.step)
        return Response(status_code=204)

    @app.post(API_PREFIX + "/runs/{run_id}/steps/finish", status_code=204, response_class=Response, tags=["steps"],
              responses=responses(*COMMON, *BODY, 404, 409))  # fmt: skip
    async def finish_step(run_id: str, body: FinishStep) -> Response:
        """`Store.finish_step` (fenced)."""
        return await finish_step_of(path_param("run_id", run_id), checked_body(body))

    async def finish_step_of(rid: str, b: FinishStep) -> Response:
        await call(store.finish_step, rid, b.key, b.result, epoch=b.epoch)
        metrics.step_finished(rid, b.key, b.result)
        return Response(status_code=204)

    @app.post(API_PREFIX + "/runs/{run_id}/steps/record", status_code=204, response_class=Response, tags=["steps"],
              responses=responses(*COMMON, *BODY, 404, 409))  # fmt: skip
    async def record_step(run_id: str, body: RecordStep) -> Response:
        """`Store.record_step` (fenced, one transaction). ``step.run_id`` must be the path's run id."""
        return await record_step_of(path_param("run_id", run_id), checked_body(body))

    async def record_step_of(rid: str, b: RecordStep) -> Response:
        same_run(rid, b.step.run_id, "step.run_id")
        await call(store.record_step, b.step, b.result, epoch=b.epoch)
        metrics.step_recorded(b.step, b.result)
        return Response(status_code=204)

    @app.post(API_PREFIX + "/runs/{run_id}/steps/supersede", status_code=204, response_class=Response,
              tags=["steps"], responses=responses(*COMMON, *BODY, 404, 409))  # fmt: skip
    async def supersede_steps(run_id: str, body: SupersedeSteps) -> Response:
        """`Store.supersede_steps` (fenced, one transaction; a retry changes nothing)."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        await call(store.supersede_steps, rid, b.keys, prefix=b.prefix, reason=b.reason, epoch=b.epoch)
        return Response(status_code=204)

    @app.get(API_PREFIX + "/runs/{run_id}/steps", response_model=StepList, tags=["steps"],
             responses=responses(*COMMON, 404))  # fmt: skip
    async def list_steps(run_id: str) -> Response:
        """`Store.list_steps`: ordered by ``seq``."""
        return json_response(StepList(steps=await call(store.list_steps, path_param("run_id", run_id))))

    # ---- approvals (approval_routes), run deletion (retention_routes), checkpoints ---------------
    add_approval_routes(app, store, call, None if slack_approvals is None else slack_approvals.approval_requested,
                        keys=keys)
    add_retention_routes(app, store, call)  # POST /api/runs/prune (admin)
    checkpoint_puts = add_checkpoint_routes(app, store, call)

    # ---- operations ---------------------------------------------------------------------------
    @app.get("/healthz", tags=["operations"], responses=responses(503))
    def healthz() -> dict[str, str]:
        """Liveness and store check (no API key needed)."""
        try:
            store.list_runs(limit=1)
        except Exception as exc:
            log.warning("health check failed: %s", exc)
            problem = new_problem(503, "Service Unavailable", "the store is unavailable", "StoreError")
            raise ProblemError(problem) from None
        return {"status": "ok"}

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", response_class=Response, tags=["operations"], responses=responses(401, 503))
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        body, content_type = await call(metrics.render)
        return Response(body, media_type=content_type)

    install_ui(app, store, keys)
    install_problem_handlers(app)
    runs = API_PREFIX + "/runs/{run_id}"
    hot_endpoints = [
        HotEndpoint("POST", f"{runs}/lease", RenewLease, renew_lease_of),
        HotEndpoint("POST", f"{runs}/steps/start", StartStep, start_step_of),
        HotEndpoint("POST", f"{runs}/steps/finish", FinishStep, finish_step_of),
        HotEndpoint("POST", f"{runs}/steps/record", RecordStep, record_step_of),
        HotEndpoint("PUT", f"{API_PREFIX}/checkpoints", CheckpointRecord, checkpoint_puts.put_checkpoint_of),
        HotEndpoint("PUT", f"{API_PREFIX}/checkpoints/writes", PutCheckpointWrites,
                    checkpoint_puts.put_checkpoint_writes_of),
        HotEndpoint("PUT", f"{API_PREFIX}/checkpoints/with-writes", PutCheckpointWithWrites,
                    checkpoint_puts.put_checkpoint_with_writes_of),
    ]  # fmt: skip
    # Last added runs first: raw path -> metrics -> auth -> body limit -> hot path -> routing.
    app.add_middleware(HotPathMiddleware, endpoints=hot_endpoints, routes=app.router.routes)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    role_of = required_role if slack_approvals is None else exempt_interactions(required_role)
    app.add_middleware(AuthMiddleware, keys=keys, required_role=role_of)
    if not keys:  # (Slack's interactions check Slack's signature; the UI answers with a page of its own)
        app.add_middleware(LoopbackHostMiddleware, exempt=lambda path: path in ("/healthz", INTERACTIONS_PATH)
                           or is_ui_path(path))
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
