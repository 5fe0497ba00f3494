"""The approval routes: `Store.request_approval`, `find_approval`, `list_approvals`,
`get_approval`, `decide_approval` and `claim_announcement` over HTTP.

`add_approval_routes` adds them to the app `agentspan_server.app.create_app` builds, with its
``call`` (the store call that turns store errors into problems). Deciding needs the approver or
admin role (checked by `agentspan_server.auth` before the body is read). A decision sent without
``by`` is recorded as decided by the key that sent it (`agentspan_server.auth.requester`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

from fastapi import FastAPI, Query
from starlette.requests import Request
from starlette.responses import Response

from agentspan import approvals
from agentspan.records import Approval, ApprovalStatus
from agentspan.stores.base import Store, after_position
from agentspan.wire import (
    API_PREFIX,
    AnnouncementClaim,
    ApprovalList,
    ClaimAnnouncement,
    Decision,
    FoundApproval,
    RequestApproval,
)
from agentspan_server.auth import KeyRing, requester
from agentspan_server.checkpoint_routes import StoreCall
from agentspan_server.checks import Limit, checked_body, path_param, query_text, same_run, undecided_request
from agentspan_server.openapi_docs import BODY, COMMON, json_response, responses

__all__ = ["add_approval_routes"]

Before = Annotated[str | None, Query(description="Keyset paging: only approvals whose id sorts before this one "
                                     "(the last id of the previous page); it need not name an approval. An empty "
                                     "value is a position too, before every id: no approvals (leave the parameter "
                                     "out for the first page).")]
"""The ``before`` query parameter of ``GET /api/approvals``, read as ``GET /api/runs`` reads its
own: `agentspan.stores.remote.RemoteStore` pages with it past the largest page (1000)."""


def add_approval_routes(app: FastAPI, store: Store, call: StoreCall,
                        on_requested: Callable[[Approval, Approval], None] | None = None, *,
                        keys: KeyRing | None = None) -> None:
    """Adds the approval routes to the app.

    Args:
        app: The app to add them to.
        store: The backing store.
        call: Calls a store method, turning its exceptions into problems.
        on_requested: Called on the event loop with the requested and the stored approval after
            each successful request (Slack posts new approvals); None for nothing.
        keys: The API keys requests were checked against: a decision sent without ``by`` records
            the role of its key (None: a server without keys records None).
    """

    @app.post(API_PREFIX + "/runs/{run_id}/approvals", response_model=Approval, tags=["approvals"],
              responses=responses(*COMMON, *BODY, 404, 409))  # fmt: skip
    async def request_approval(run_id: str, body: RequestApproval) -> Response:
        """`Store.request_approval` (fenced, idempotent per step). ``approval.run_id`` must match;
        the approval must be pending and undecided, its ``args_hash`` the hash of its ``args``."""
        rid, b = path_param("run_id", run_id), checked_body(body)
        same_run(rid, b.approval.run_id, "approval.run_id")
        undecided_request(b.approval)
        approval = await call(store.request_approval, b.approval, epoch=b.epoch)
        if on_requested is not None:
            on_requested(b.approval, approval)  # Slack posts it only when new
        return json_response(approval)

    @app.get(API_PREFIX + "/runs/{run_id}/approvals/{step_key:path}", response_model=FoundApproval,
             tags=["approvals"], responses=responses(*COMMON))  # fmt: skip
    async def find_approval(run_id: str, step_key: str) -> Response:
        """`Store.find_approval`: ``approval`` is null when none was requested for the step."""
        rid, key = path_param("run_id", run_id), path_param("step_key", step_key)
        return json_response(FoundApproval(approval=await call(store.find_approval, rid, key)))

    @app.get(f"{API_PREFIX}/approvals", response_model=ApprovalList, tags=["approvals"],
             responses=responses(*COMMON))  # fmt: skip
    async def list_approvals(
        run_id: str | None = None, status: ApprovalStatus | None = None, limit: Limit = 100, before: Before = None
    ) -> Response:
        """`Store.list_approvals`: newest first; ``before`` (the last id of a page) gives the next, older, page."""
        position = query_text("before", before)
        approvals = await call(store.list_approvals, run_id=query_text("run_id", run_id),
                               status=None if status is None else status.value, limit=limit,
                               **after_position(position))  # fmt: skip
        return json_response(ApprovalList(approvals=approvals))

    @app.get(API_PREFIX + "/approvals/{approval_id}", response_model=Approval, tags=["approvals"],
             responses=responses(*COMMON, 404))  # fmt: skip
    async def get_approval(approval_id: str) -> Response:
        """`Store.get_approval`."""
        return json_response(await call(store.get_approval, path_param("approval_id", approval_id)))

    @app.post(API_PREFIX + "/approvals/{approval_id}/decision", response_model=Approval, tags=["approvals"],
              responses=responses(*COMMON, *BODY, 403, 404, 409))  # fmt: skip
    async def decide_approval(approval_id: str, body: Decision, request: Request) -> Response:
        """`Store.decide_approval` (needs the approver or admin role). ``decided_at`` defaults to now;
        ``by`` to the role of the API key that sent the decision (``api:approver``, ``api:admin``;
        null on a server without keys).

        Whether the approval expired is read on the server's clock, whatever ``decided_at`` says
        (an earlier one would otherwise decide an approval past its deadline)."""
        aid, b = path_param("approval_id", approval_id), checked_body(body)
        server_now = time.time()
        decided_at = server_now if b.decided_at is None else b.decided_at
        if b.decided_at is not None:
            await call(_refuse_if_expired, store, aid, server_now)
        by = b.by if b.by is not None else requester(request, keys)
        approval = await call(store.decide_approval, aid, approved=b.approved, by=by, reason=b.reason,
                              decided_at=decided_at)  # fmt: skip
        return json_response(approval)

    @app.post(API_PREFIX + "/approvals/{approval_id}/announcement", response_model=AnnouncementClaim,
              tags=["approvals"], responses=responses(*COMMON, *BODY, 404))  # fmt: skip
    async def claim_announcement(approval_id: str, body: ClaimAnnouncement) -> Response:
        """`Store.claim_announcement`: ``claimed`` is true for the first claimant (and that claimant again)."""
        aid, b = path_param("approval_id", approval_id), checked_body(body)
        claimed = await call(store.claim_announcement, aid, claimant=b.claimant)
        return json_response(AnnouncementClaim(claimed=claimed))


def _refuse_if_expired(store: Store, approval_id: str, at: float) -> None:
    """Raises `ApprovalConflict` when the pending approval's deadline passed before ``at``."""
    current = store.get_approval(approval_id)
    if current.status is ApprovalStatus.PENDING and current.expires_at is not None and at > current.expires_at:
        raise approvals.expired_conflict(current)
