"""The lease and approval methods of `RemoteStore` (a mixin): claims, renewals, the claimable
runs, and approvals requested, read, decided and announced over HTTP.

Retried as every call of `RemoteStore` (`agentspan.stores.remote`): a claim or a decision whose
answer was lost and whose retry is refused counts as done when the server's state is the one that
attempt left (the run held by this owner at the next epoch; the approval decided this way at this
time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from agentspan import wire
from agentspan.errors import ApprovalConflict, LeaseLostError
from agentspan.records import Approval, ApprovalStatus, Run
from agentspan.stores.base import check_claimant
from agentspan.stores.remote_answers import newest_first_pages, parsed, seg

if TYPE_CHECKING:
    from agentspan.stores.plain_http import Answer

__all__ = ["MAX_LIMIT", "RemoteLeasesAndApprovals", "clamp"]

_M = TypeVar("_M", bound=BaseModel)
MAX_LIMIT = 1000
"""Most items one listing returns through a server (larger limits are clamped to it)."""


def clamp(limit: int) -> int:
    """A listing limit the server accepts: negative (no limit) and too large become `MAX_LIMIT`."""
    return MAX_LIMIT if limit < 0 or limit > MAX_LIMIT else limit


class RemoteLeasesAndApprovals:
    """The lease and approval methods of `RemoteStore`, which provides ``_call``, ``_get``,
    ``_ask``, ``_refuse_unstorable`` and ``get_run``."""

    if TYPE_CHECKING:
        def _call(
            self, method: str, path: str, body: BaseModel | None = None, params: Any = None, *,
            already_done: Callable[[BaseException], bool] | None = None,
        ) -> Answer | None: ...  # fmt: skip
        def _get(self, path: str, model: type[_M], params: Any = None) -> _M: ...
        def _ask(self, method: str, path: str, body: BaseModel, model: type[_M]) -> _M: ...
        def _refuse_unstorable(self, exc: ValidationError) -> None: ...
        def get_run(self, run_id: str) -> Run: ...

    # ---- leases ---------------------------------------------------------------------------
    def claim_run(self, run_id: str, *, owner: str, expected_epoch: int, lease_expires_at: float) -> Run:
        def ours(exc: BaseException) -> bool:
            if not isinstance(exc, LeaseLostError):
                return False
            run = self.get_run(run_id)
            return run.lease_owner == owner and run.lease_epoch == expected_epoch + 1

        try:
            body = wire.ClaimRun(owner=owner, expected_epoch=expected_epoch, lease_expires_at=lease_expires_at)
        except ValidationError as exc:
            self._refuse_unstorable(exc)
            raise
        response = self._call("POST", f"/runs/{seg(run_id)}/claim", body, already_done=ours)
        return self.get_run(run_id) if response is None else parsed(response, Run)

    def renew_lease(self, run_id: str, *, epoch: int, lease_expires_at: float) -> bool:
        body = wire.RenewLease(epoch=epoch, lease_expires_at=lease_expires_at)
        response = self._call("POST", f"/runs/{seg(run_id)}/lease", body)
        assert response is not None
        return parsed(response, wire.Renewed).renewed

    def claimable_runs(self, *, agents: Sequence[str] | None, now: float, limit: int = 10,
                       after: str | None = None) -> list[Run]:
        """See `Store.claimable_runs`: ``GET /api/claimable``. ``after`` is sent only when given, so
        a server older than it answers the first page as before (`agentspan.serve` notices)."""
        if agents is not None and not agents:
            return []  # no agent matches nothing (an empty filter cannot be sent as a query)
        params: list[tuple[str, Any]] = [("now", now), ("limit", clamp(limit))]
        params += [("agent", a) for a in agents or ()]
        if after is not None:
            params.append(("after", after))
        return self._get("/claimable", wire.RunList, params).runs

    # ---- approvals ------------------------------------------------------------------------
    def request_approval(self, approval: Approval, *, epoch: int) -> Approval:
        body = wire.RequestApproval(approval=approval, epoch=epoch)
        response = self._call("POST", f"/runs/{seg(approval.run_id)}/approvals", body)
        assert response is not None
        return parsed(response, Approval)

    def get_approval(self, approval_id: str) -> Approval:
        return self._get(f"/approvals/{seg(approval_id)}", Approval)

    def find_approval(self, run_id: str, step_key: str) -> Approval | None:
        return self._get(f"/runs/{seg(run_id)}/approvals/{seg(step_key)}", wire.FoundApproval).approval

    def list_approvals(
        self, *, run_id: str | None = None, status: str | None = None, limit: int = 100,
        before: str | None = None,
    ) -> list[Approval]:
        """See `Store.list_approvals`: ``GET /api/approvals``, one page of at most `MAX_LIMIT`
        approvals per request; a larger (or negative: no) limit asks for the next, older, page
        after the last approval received (``before``) until the limit or the oldest approval, as
        the embedded stores answer (was: clamped to one page, silently dropping the oldest).

        ``before`` is sent only when given or paging, so a server older than paging still answers
        a listing that fits in one page.

        Raises:
            ConfigurationError: ``before`` was given and the server ignored it (a server older than
                paging answers the newest approvals instead).
        """
        def page(want: int, after: str | None) -> list[Approval]:
            params = {k: v for k, v in (("run_id", run_id), ("status", status), ("limit", want),
                                        ("before", after)) if v is not None}
            return self._get("/approvals", wire.ApprovalList, params).approvals

        return newest_first_pages(page, limit=limit, before=before, page_size=MAX_LIMIT, what="approvals")

    def decide_approval(self, approval_id: str, *, approved: bool, by: str | None, reason: str | None,
                        decided_at: float) -> Approval:
        wanted = ApprovalStatus.APPROVED if approved else ApprovalStatus.REJECTED

        def ours(exc: BaseException) -> bool:
            if not isinstance(exc, ApprovalConflict):
                return False
            found = self.get_approval(approval_id)
            return found.status is wanted and found.decided_at == decided_at

        body = wire.Decision(approved=approved, by=by, reason=reason, decided_at=decided_at)
        response = self._call("POST", f"/approvals/{seg(approval_id)}/decision", body, already_done=ours)
        return self.get_approval(approval_id) if response is None else parsed(response, Approval)

    def claim_announcement(self, approval_id: str, *, claimant: str) -> bool:
        check_claimant(claimant)
        try:
            body = wire.ClaimAnnouncement(claimant=claimant)  # a retried claim by the same claimant is its own
        except ValidationError as exc:
            self._refuse_unstorable(exc)
            raise
        return self._ask("POST", f"/approvals/{seg(approval_id)}/announcement", body, wire.AnnouncementClaim).claimed
