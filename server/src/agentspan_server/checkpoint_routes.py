"""The ``/api/checkpoints`` routes: the `Store` checkpoint methods over HTTP.

`add_checkpoint_routes` adds them to the app `agentspan_server.app.create_app` builds, which
passes its ``call`` (the store call that turns store errors into problems). Unfenced, like the
Store methods. The bytes arrive base64-decoded by the models and are handed to the store as they
are; nothing here interprets them. The three puts are hot endpoints: their endpoint functions
(``*_of``) are returned for `hot_path`, which calls them as their routes do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fastapi import FastAPI
from starlette.responses import Response

from agentspan.records import CheckpointRecord
from agentspan.stores.base import Store
from agentspan.wire import (
    API_PREFIX,
    CheckpointList,
    CopyCheckpoints,
    DeleteCheckpoints,
    DeleteCheckpointsForRuns,
    FoundCheckpoint,
    ListCheckpoints,
    PruneCheckpoints,
    PutCheckpointWithWrites,
    PutCheckpointWrites,
)
from agentspan_server.checks import checked_body, query_text
from agentspan_server.openapi_docs import BODY, COMMON, json_response, responses

__all__ = ["CheckpointPuts", "StoreCall", "add_checkpoint_routes"]

_T = TypeVar("_T")


class StoreCall(Protocol):
    """How the routes call the store: ``await call(store.method, *args, **kwargs)``."""

    async def __call__(self, method: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T: ...


@dataclass(frozen=True)
class CheckpointPuts:
    """The checkpoint puts' endpoint functions (the checked body in, the response out).

    Attributes:
        put_checkpoint_of: ``PUT /api/checkpoints`` (a `CheckpointRecord`).
        put_checkpoint_writes_of: ``PUT /api/checkpoints/writes`` (a `PutCheckpointWrites`).
        put_checkpoint_with_writes_of: ``PUT /api/checkpoints/with-writes`` (a `PutCheckpointWithWrites`).
    """

    put_checkpoint_of: Callable[[CheckpointRecord], Awaitable[Response]]
    put_checkpoint_writes_of: Callable[[PutCheckpointWrites], Awaitable[Response]]
    put_checkpoint_with_writes_of: Callable[[PutCheckpointWithWrites], Awaitable[Response]]


def add_checkpoint_routes(app: FastAPI, store: Store, call: StoreCall) -> CheckpointPuts:
    """Adds the checkpoint routes to the app, in the order the OpenAPI document lists them.

    Args:
        app: The app to add them to.
        store: The backing store; each route calls its matching method.
        call: Calls a store method, turning its exceptions into problems.

    Returns:
        The endpoint functions of the three puts, for the hot path.
    """

    @app.put(f"{API_PREFIX}/checkpoints", status_code=204, response_class=Response, tags=["checkpoints"],
             responses=responses(*COMMON, *BODY))  # fmt: skip
    async def put_checkpoint(checkpoint: CheckpointRecord) -> Response:
        """`Store.put_checkpoint`: an upsert by ``(thread_id, namespace, checkpoint_id)``; ``writes`` is ignored."""
        return await put_checkpoint_of(checked_body(checkpoint))

    async def put_checkpoint_of(checkpoint: CheckpointRecord) -> Response:
        await call(store.put_checkpoint, checkpoint)
        return Response(status_code=204)

    @app.put(f"{API_PREFIX}/checkpoints/writes", status_code=204, response_class=Response, tags=["checkpoints"],
             responses=responses(*COMMON, *BODY))  # fmt: skip
    async def put_checkpoint_writes(body: PutCheckpointWrites) -> Response:
        """`Store.put_checkpoint_writes`: one transaction."""
        return await put_checkpoint_writes_of(checked_body(body))

    async def put_checkpoint_writes_of(b: PutCheckpointWrites) -> Response:
        await call(store.put_checkpoint_writes, b.writes, replace=b.replace)
        return Response(status_code=204)

    @app.put(f"{API_PREFIX}/checkpoints/with-writes", status_code=204, response_class=Response, tags=["checkpoints"],
             responses=responses(*COMMON, *BODY))  # fmt: skip
    async def put_checkpoint_with_writes(body: PutCheckpointWithWrites) -> Response:
        """`Store.put_checkpoint_with_writes`: the writes, then the checkpoint, in one transaction
        (what a LangGraph super-step saves: its tasks' writes and the next checkpoint)."""
        return await put_checkpoint_with_writes_of(checked_body(body))

    async def put_checkpoint_with_writes_of(b: PutCheckpointWithWrites) -> Response:
        await call(store.put_checkpoint_with_writes, b.checkpoint, b.writes, replace=b.replace)
        return Response(status_code=204)

    @app.get(f"{API_PREFIX}/checkpoints/find", response_model=FoundCheckpoint, tags=["checkpoints"],
             responses=responses(*COMMON))  # fmt: skip
    async def get_checkpoint(thread_id: str, namespace: str = "", checkpoint_id: str | None = None) -> Response:
        """`Store.get_checkpoint`: with its writes; the latest of the namespace without ``checkpoint_id``;
        ``checkpoint`` is null when there is none."""
        tid, ns = query_text("thread_id", thread_id) or "", query_text("namespace", namespace) or ""
        found = await call(store.get_checkpoint, tid, ns, query_text("checkpoint_id", checkpoint_id))
        return json_response(FoundCheckpoint(checkpoint=found))

    @app.post(f"{API_PREFIX}/checkpoints/search", response_model=CheckpointList, tags=["checkpoints"],
              responses=responses(*COMMON, *BODY))  # fmt: skip
    async def list_checkpoints(body: ListCheckpoints) -> Response:
        """`Store.list_checkpoints`: with their writes, newest first."""
        b = checked_body(body)
        found = await call(store.list_checkpoints, thread_id=b.thread_id, namespace=b.namespace,
                           checkpoint_id=b.checkpoint_id, before=b.before, metadata=b.metadata,
                           limit=b.limit)  # fmt: skip
        return json_response(CheckpointList(checkpoints=found))

    @app.post(f"{API_PREFIX}/checkpoints/copy", status_code=204, response_class=Response, tags=["checkpoints"],
              responses=responses(*COMMON, *BODY))  # fmt: skip
    async def copy_checkpoints(body: CopyCheckpoints) -> Response:
        """`Store.copy_checkpoints`."""
        b = checked_body(body)
        await call(store.copy_checkpoints, b.source_thread_id, b.target_thread_id)
        return Response(status_code=204)

    @app.post(f"{API_PREFIX}/checkpoints/delete", status_code=204, response_class=Response, tags=["checkpoints"],
              responses=responses(*COMMON, *BODY, 403))  # fmt: skip
    async def delete_checkpoints(body: DeleteCheckpoints) -> Response:
        """`Store.delete_checkpoints` (needs the admin role)."""
        await call(store.delete_checkpoints, checked_body(body).thread_id)
        return Response(status_code=204)

    @app.post(f"{API_PREFIX}/checkpoints/delete-for-runs", status_code=204, response_class=Response,
              tags=["checkpoints"], responses=responses(*COMMON, *BODY, 403))  # fmt: skip
    async def delete_checkpoints_for_runs(body: DeleteCheckpointsForRuns) -> Response:
        """`Store.delete_checkpoints_for_runs` (needs the admin role)."""
        await call(store.delete_checkpoints_for_runs, checked_body(body).run_ids)
        return Response(status_code=204)

    @app.post(f"{API_PREFIX}/checkpoints/prune", status_code=204, response_class=Response, tags=["checkpoints"],
              responses=responses(*COMMON, *BODY, 403))  # fmt: skip
    async def prune_checkpoints(body: PruneCheckpoints) -> Response:
        """`Store.prune_checkpoints` (needs the admin role)."""
        b = checked_body(body)
        await call(store.prune_checkpoints, b.thread_ids, keep_latest=b.keep_latest)
        return Response(status_code=204)

    return CheckpointPuts(put_checkpoint_of, put_checkpoint_writes_of, put_checkpoint_with_writes_of)
