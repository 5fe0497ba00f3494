"""The ``/api/runs/prune`` route: `Store.delete_runs` (retention) over HTTP.

`add_retention_routes` adds it to the app `agentspan_server.app.create_app` builds, which passes
its ``call`` (the store call that turns store errors into problems). Deleting runs needs the admin
role (`RUN_DELETIONS`, checked by `agentspan_server.auth` before the body is read). The path is
fixed and POST only: the run routes that take a run id answer GET and PATCH at
``/api/runs/{run_id}`` and POST only below it (``/api/runs/{run_id}/cancel``, ...), so ``prune`` is
never taken for a run id by a POST (a GET of ``/api/runs/prune`` asks for a run of that id).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from agentspan.stores.base import Store
from agentspan.wire import API_PREFIX, DeletedRuns, DeleteRuns
from agentspan_server.checkpoint_routes import StoreCall
from agentspan_server.checks import checked_body
from agentspan_server.openapi_docs import BODY, COMMON, json_response, responses

__all__ = ["PRUNE_RUNS", "RUN_DELETIONS", "add_retention_routes"]

PRUNE_RUNS = f"{API_PREFIX}/runs/prune"
"""The path of `Store.delete_runs`."""
RUN_DELETIONS = frozenset({PRUNE_RUNS})
"""The paths that delete runs: they need the admin role."""


def add_retention_routes(app: FastAPI, store: Store, call: StoreCall) -> None:
    """Adds ``POST /api/runs/prune`` to the app.

    Args:
        app: The app to add it to.
        store: The backing store; the route calls its `Store.delete_runs`.
        call: Calls a store method, turning its exceptions into problems (`ConfigurationError`: 422).
    """

    @app.post(PRUNE_RUNS, response_model=DeletedRuns, tags=["runs"],
              responses=responses(*COMMON, *BODY, 403))  # fmt: skip
    async def delete_runs(body: DeleteRuns) -> Response:
        """`Store.delete_runs` (needs the admin role): ended runs with their steps and approvals,
        oldest first, in one transaction; checkpoints are kept."""
        b = checked_body(body)
        deleted = await call(store.delete_runs, ended_before=b.ended_before, statuses=b.statuses, limit=b.limit)
        return json_response(DeletedRuns(deleted=deleted))
