"""Approvals of the SQLite store (`SqliteApprovals`, a mixin of `SqliteStore`).

A request is fenced like a step write (the run must be held at the caller's lease epoch and not
cancelled) and idempotent per step; a decision is one conditional update, so an approval is
decided once and an expired one not at all.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agentspan.errors import ApprovalConflict, ApprovalNotFound, ConfigurationError, LeaseLostError
from agentspan.records import Approval, ApprovalStatus
from agentspan.stores import sqlite_schema as sql
from agentspan.stores.base import check_claimant
from agentspan.stores.sqlite_journal import fence_refusal
from agentspan.stores.sqlite_rows import APPROVAL_COLUMNS, approval_from_row, approval_values

__all__ = ["SqliteApprovals", "refusal"]

_T = TypeVar("_T")
_COUNT_LIVE_PENDING = (  # expired at ``at`` >= expires_at, as `agentspan.approvals.effective_status` reads it
    "SELECT COUNT(*) FROM (SELECT 1 FROM approvals WHERE status='pending' "
    "AND (expires_at IS NULL OR expires_at > ?) LIMIT ?)"
)


def refusal(cur: sqlite3.Cursor, run_id: str, epoch: int, *, cancelling: bool = False) -> BaseException:
    """Explains, inside the transaction, why a fenced write matched no row."""
    return fence_refusal(cur, run_id, epoch, cancelling=cancelling) or LeaseLostError(
        f"run {run_id!r} is held at lease epoch {epoch}; the write carried epoch {epoch}")


class SqliteApprovals:
    """`Store.request_approval`, `get_approval`, `find_approval`, `list_approvals`,
    `decide_approval` and `claim_announcement` of `SqliteStore` (and `count_pending_approvals`,
    for the server's metrics)."""

    if TYPE_CHECKING:

        def _tx(self, fn: Callable[[sqlite3.Cursor], _T], *, sync: bool = True, step: bool = False) -> _T: ...

        def _query(self, statement: str, params: Any) -> list[Any]: ...

        def _select(self, table: str, columns: str, filters: dict[str, Any], order: str, limit: int, *,
                    below: tuple[str, str | None] | None = None) -> list[Any]: ...

        def _write_one(self, statement: str, params: Sequence[Any], *, step: bool = False) -> int: ...

    def request_approval(self, approval: Approval, *, epoch: int) -> Approval:
        """See `Store.request_approval`. The fence is checked even when the approval exists."""
        values = approval_values(approval)
        run_id = approval.run_id

        def tx(cur: sqlite3.Cursor) -> Approval:
            existing = cur.execute(sql.FIND_APPROVAL, (run_id, approval.step_key)).fetchone()
            if existing is not None:
                row = cur.execute(sql.RUN_STATE, (run_id,)).fetchone()
                if row is None or row[0] == "cancelled" or row[1] != epoch:
                    raise refusal(cur, run_id, epoch)
                return approval_from_row(existing)
            if cur.execute(sql.WAIT_RUN, (time.time(), run_id, epoch)).rowcount == 0:
                raise refusal(cur, run_id, epoch)
            if cur.execute(sql.APPROVAL_EXISTS, (approval.id,)).fetchone() is not None:
                raise ConfigurationError(f"an approval with id {approval.id!r} already exists")
            cur.execute(sql.INSERT_APPROVAL, values)
            return approval_from_row(values)

        return self._tx(tx)

    def get_approval(self, approval_id: str) -> Approval:
        """See `Store.get_approval`."""
        rows = self._query(sql.GET_APPROVAL, (approval_id,))
        if not rows:
            raise ApprovalNotFound(approval_id)
        return approval_from_row(rows[0])

    def find_approval(self, run_id: str, step_key: str) -> Approval | None:
        """See `Store.find_approval`."""
        rows = self._query(sql.FIND_APPROVAL, (run_id, step_key))
        return approval_from_row(rows[0]) if rows else None

    def list_approvals(
        self, *, run_id: str | None = None, status: str | None = None, limit: int = 100,
        before: str | None = None,
    ) -> list[Approval]:
        """See `Store.list_approvals` (``before`` compares as the ORDER BY does: binary, by code point)."""
        filters = {"run_id": run_id, "status": status}
        rows = self._select("approvals", APPROVAL_COLUMNS, filters, "id DESC", limit, below=("id", before))
        return [approval_from_row(r) for r in rows]

    def count_pending_approvals(self, *, at: float, limit: int) -> int:
        """Counts pending approvals whose deadline has not passed at ``at``, up to ``limit``.

        Not part of the `Store` contract: the server's metrics use it when a store has it (the
        contract's `list_approvals` cannot skip expired ones, so counting through it reads them all).
        """
        return int(self._query(_COUNT_LIVE_PENDING, (at, limit))[0][0])

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
        status = ApprovalStatus.APPROVED if approved else ApprovalStatus.REJECTED
        params = (status.value, by, decided_at, reason, approval_id, decided_at)

        def tx(cur: sqlite3.Cursor) -> Approval:
            if cur.execute(sql.DECIDE, params).rowcount == 0:
                row = cur.execute(sql.GET_APPROVAL, (approval_id,)).fetchone()
                if row is None:
                    raise ApprovalNotFound(approval_id)
                current = approval_from_row(row)
                if current.status is not ApprovalStatus.PENDING:
                    raise ApprovalConflict(f"approval {approval_id!r} was already {current.status.value}")
                raise ApprovalConflict(
                    f"approval {approval_id!r} expired at {current.expires_at} before it was decided"
                )
            return approval_from_row(cur.execute(sql.GET_APPROVAL, (approval_id,)).fetchone())

        return self._tx(tx)

    def claim_announcement(self, approval_id: str, *, claimant: str) -> bool:
        """See `Store.claim_announcement` (one conditional update; the approval is read only when
        it matches no row)."""
        check_claimant(claimant)
        if self._write_one(sql.CLAIM_ANNOUNCEMENT, (claimant, approval_id, claimant)):
            return True
        if not self._query(sql.APPROVAL_EXISTS, (approval_id,)):
            raise ApprovalNotFound(approval_id)
        return False
