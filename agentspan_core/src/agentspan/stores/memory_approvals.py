"""Approvals of the in-memory store (`MemoryApprovals`, a mixin of `MemoryStore`), and the
JSON copying and the UTF-8 check every part of that store uses.

Approvals are kept by id and indexed by ``(run_id, step_key)``; every call holds the store's one
lock. A request is fenced like a step write and idempotent per step; an approval is decided once.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from agentspan import jsontext
from agentspan.errors import ApprovalConflict, ApprovalNotFound, ConfigurationError
from agentspan.records import Approval, ApprovalStatus, Run, RunStatus
from agentspan.stores.base import check_claimant, check_storable

__all__ = ["MemoryApprovals", "json_copy", "limited", "utf8_only"]


def utf8_only(*texts: str | None) -> None:
    """`base.check_storable` for this store: an id, a name or a message holding a lone surrogate
    is refused as the SQLite and PostgreSQL stores refuse to bind it.

    Raises:
        ConfigurationError: A text holds a lone surrogate.
    """
    check_storable("in memory", *texts)


def json_copy(value: Any) -> Any:
    """Returns an independent, JSON-normalised copy of ``value``."""
    if value is None:
        return None
    try:
        return jsontext.loads(jsontext.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"only JSON values can be stored: {exc}") from exc


def limited(items: list[Any], limit: int) -> list[Any]:
    return items if limit < 0 else items[:limit]


class MemoryApprovals:
    """`Store.request_approval`, `get_approval`, `find_approval`, `list_approvals`,
    `decide_approval` and `claim_announcement` of `MemoryStore`."""

    _lock: threading.Lock
    _approvals: dict[str, Approval]
    _by_step: dict[tuple[str, str], str]
    _announced: dict[str, str]

    if TYPE_CHECKING:

        def _fenced(self, run_id: str, epoch: int, *, cancelling: bool = False) -> Run: ...

    def request_approval(self, approval: Approval, *, epoch: int) -> Approval:
        """See `Store.request_approval`."""
        stored = approval.model_copy(update={"args": json_copy(approval.args)})
        # Each text refused where SQLite first binds it: the run and step it looks up by before
        # anything else, the new id before its duplicate check, the other fields only when one
        # is written (an existing approval is returned unchanged).
        utf8_only(approval.run_id, approval.step_key)
        with self._lock:
            run = self._fenced(approval.run_id, epoch)
            existing_id = self._by_step.get((approval.run_id, approval.step_key))
            if existing_id is not None:
                return self._approvals[existing_id].model_copy(deep=True)
            utf8_only(approval.id)
            if approval.id in self._approvals:
                raise ConfigurationError(f"an approval with id {approval.id!r} already exists")
            utf8_only(approval.tool, approval.args_hash, approval.decided_by, approval.reason)
            self._approvals[approval.id] = stored
            self._by_step[(approval.run_id, approval.step_key)] = approval.id
            run.status = RunStatus.WAITING
            run.updated_at = time.time()
            return stored.model_copy(deep=True)

    def get_approval(self, approval_id: str) -> Approval:
        """See `Store.get_approval`."""
        utf8_only(approval_id)
        with self._lock:
            approval = self._approvals.get(approval_id)
            if approval is None:
                raise ApprovalNotFound(approval_id)
            return approval.model_copy(deep=True)

    def find_approval(self, run_id: str, step_key: str) -> Approval | None:
        """See `Store.find_approval`."""
        utf8_only(run_id, step_key)
        with self._lock:
            approval_id = self._by_step.get((run_id, step_key))
            return None if approval_id is None else self._approvals[approval_id].model_copy(deep=True)

    def list_approvals(
        self, *, run_id: str | None = None, status: str | None = None, limit: int = 100,
        before: str | None = None,
    ) -> list[Approval]:
        """See `Store.list_approvals`."""
        utf8_only(run_id, status, before)  # (a before= holding one is a position no UTF-8 text has)
        with self._lock:
            found = [
                a
                for a in self._approvals.values()
                if (run_id is None or a.run_id == run_id) and (status is None or a.status == status)
                and (before is None or a.id < before)
            ]
            found.sort(key=lambda a: a.id, reverse=True)
            return [a.model_copy(deep=True) for a in limited(found, limit)]

    def decide_approval(
        self,
        approval_id: str,
        *,
        approved: bool,
        by: str | None,
        reason: str | None,
        decided_at: float,
    ) -> Approval:
        """See `Store.decide_approval`.

        A pending approval is expired once ``decided_at >= expires_at``; deciding it then raises
        `ApprovalConflict` and changes nothing.
        """
        utf8_only(approval_id, by, reason)  # refused before any other check, as SQLite binds them all at once
        with self._lock:
            approval = self._approvals.get(approval_id)
            if approval is None:
                raise ApprovalNotFound(approval_id)
            if approval.status != ApprovalStatus.PENDING:
                raise ApprovalConflict(f"approval {approval_id!r} was already {approval.status}")
            if approval.expires_at is not None and approval.expires_at <= decided_at:
                raise ApprovalConflict(
                    f"approval {approval_id!r} expired at {approval.expires_at} before it was decided"
                )
            approval.status = ApprovalStatus.APPROVED if approved else ApprovalStatus.REJECTED
            approval.decided_by = by
            approval.decided_at = decided_at
            approval.reason = reason
            return approval.model_copy(deep=True)

    def claim_announcement(self, approval_id: str, *, claimant: str) -> bool:
        """See `Store.claim_announcement`."""
        check_claimant(claimant)
        utf8_only(approval_id, claimant)
        with self._lock:
            if approval_id not in self._approvals:
                raise ApprovalNotFound(approval_id)
            return self._announced.setdefault(approval_id, claimant) == claimant
