"""The PostgreSQL store: many processes and hosts share one database through a connection pool.

Every write is one transaction. Single-statement writes (claim, cancel, fenced run update, lease
renewal, approval decision, and the hot path: `start_step`, `finish_step`, `record_step`) run as one
autocommitted statement, so they cost one round trip; writes of several statements run in an
explicit transaction. The step writes are one statement each with data-modifying CTEs: lock the run
row if the fence holds, write the step only then, update the run's totals only if the step was
written (see `postgres_schema`). Fenced writes check the lease epoch and the cancelled
status inside the write statement itself (PostgreSQL re-evaluates the ``WHERE`` clause on the
newest row version after waiting on a concurrent writer, so a compare-and-set cannot be lost);
only when it matches no row is the run read, to tell why. Reads are single autocommitted
statements; the default READ COMMITTED isolation is all they need.

This module holds the `Store` methods; the connection pool, transactions, plans and password-free
errors live in `postgres_pool` (`redact_url` is re-exported from there), the SQL in
`postgres_schema`, the journal operations (step writes, lease renewal, run reads: plans the
server's asyncio path runs too, see `postgres_async`) in `postgres_journal`, and the checkpoint
methods (with their SQL) in `postgres_checkpoints`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from agentspan.errors import (
    ApprovalConflict,
    ApprovalNotFound,
    ConfigurationError,
    LeaseLostError,
    RunNotFound,
    RunStateError,
)
from agentspan.records import JSON, Approval, ApprovalStatus, Run, RunStatus, Step, StepResult
from agentspan.stores.base import CANCELLED_RUN_APPROVALS, ENDED, Store, check_claimant
from agentspan_server.stores import postgres_journal as journal
from agentspan_server.stores import postgres_schema as sql
from agentspan_server.stores.postgres_checkpoints import PostgresCheckpoints
from agentspan_server.stores.postgres_pool import DEFAULT_POOL_TIMEOUT, Plan, Statement, redact_url
from agentspan_server.stores.postgres_schema import (
    approval_from_row,
    approval_values,
    dump_json,
    run_from_row,
    run_values,
)

if TYPE_CHECKING:
    from agentspan_server.stores.postgres_async import AsyncPostgresPath

__all__ = ["PostgresStore", "redact_url"]

_COUNT_LIVE_PENDING = (  # expired at ``at`` >= expires_at, as `agentspan.approvals.effective_status` reads it
    "SELECT COUNT(*) FROM (SELECT 1 FROM approvals WHERE status='pending' "
    "AND (expires_at IS NULL OR expires_at > %s) LIMIT %s) AS live"
)


class PostgresStore(PostgresCheckpoints, Store):
    """Stores runs, steps, approvals and checkpoints in a PostgreSQL database (version 13 or later).

    Args:
        url: A libpq connection URL (``postgresql://user:password@host:5432/dbname``) or
            ``key=value`` string. ``connect_timeout`` defaults to 10 seconds and
            ``application_name`` to ``agentspan``.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens (concurrent calls beyond it wait for one). A
            server's asyncio path (`async_path`) opens a second pool of the same sizes.
        create: Whether to create the schema in a database without one. The database itself
            must exist.
        pool_timeout: Seconds a call waits for a free connection (the database unreachable, or
            every connection in use) before it fails with `StoreError` (a server answers 503).
            The default, 5 s, is under the HTTP client's 10 s timeout: a client hears the 503
            and backs off instead of timing out and sending the request again.

    Raises:
        StoreError: The server cannot be reached, the database does not exist or is not a valid
            Agentspan store (other tables, or a newer schema version), or it is empty and
            ``create`` is false. Messages name the server and database, never the password.
        ConfigurationError: Bad pool sizes or ``pool_timeout``.
    """

    blocking_io = True  # every call is a round trip to the database server


    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10, create: bool = True,
                 pool_timeout: float = DEFAULT_POOL_TIMEOUT) -> None:
        super().__init__(
            url,
            min_size=min_size,
            max_size=max_size,
            prepare=lambda conn: sql.migrate(conn, create=create, where=self.url),
            pool_timeout=pool_timeout,
        )

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    def async_path(self) -> AsyncPostgresPath:
        """The hot calls of this store on an asyncio event loop (the server's; see `postgres_async`)."""
        from agentspan_server.stores.postgres_async import AsyncPostgresPath

        return AsyncPostgresPath(self)

    # ---- runs -----------------------------------------------------------------------------
    def create_run(self, run: Run) -> tuple[Run, bool]:
        """See `Store.create_run`. Concurrent creations with one idempotency key insert one run."""
        values = run_values(run)

        def tx(cur: psycopg.Cursor[Any]) -> tuple[Run, bool]:
            if cur.execute(sql.INSERT_RUN, values).rowcount == 1:
                return run_from_row(values), True
            if run.idempotency_key is not None:
                row = cur.execute(sql.RUN_BY_KEY, (run.idempotency_key,)).fetchone()
                if row is not None:
                    return run_from_row(row), False
            raise ConfigurationError(f"a run with id {run.id!r} already exists")

        return self._one(tx)

    def get_run(self, run_id: str) -> Run:
        """See `Store.get_run`."""
        return self._run(journal.get_run(run_id))

    def list_runs(
        self, *, status: RunStatus | None = None, agent: str | None = None, limit: int = 100,
        session_id: str | None = None, before: str | None = None,
    ) -> list[Run]:
        """See `Store.list_runs` (``id`` is ``COLLATE "C"``: ``before`` compares by code point, as
        the ORDER BY and the embedded stores do)."""
        filters = {"status": status, "agent": agent, "session_id": session_id}
        rows = self._select("runs", sql.RUN_COLUMNS, filters, "id DESC", limit, below=("id", before))
        return [run_from_row(r) for r in rows]

    def update_run(
        self,
        run_id: str,
        *,
        epoch: int,
        status: RunStatus | None = None,
        output: JSON = None,
        error: str | None = None,
        release_lease: bool = False,
    ) -> Run:
        """See `Store.update_run`."""
        status = None if status is None else RunStatus(status)
        cancelling = status is RunStatus.CANCELLED
        params = {
            "status": None if status is None else status.value,
            "output": dump_json(output),
            "error": error,
            "now": time.time(),
            "release": bool(release_lease),
            "id": run_id,
            "epoch": epoch,
            "cancelling": cancelling,
        }

        if cancelling:
            params["expired"] = CANCELLED_RUN_APPROVALS

        def plan() -> Plan[Run]:
            rows = (yield Statement(sql.UPDATE_RUN_CANCELLING if cancelling else sql.UPDATE_RUN, params)).rows
            if not rows:
                yield from journal.refused(run_id, epoch, cancelling=cancelling)
            return run_from_row(rows[0])

        return self._run(plan())

    def cancel_run(self, run_id: str, *, reason: str | None = None) -> Run:
        """See `Store.cancel_run`. The lease is left alone: its holder learns at its next write."""

        def tx(cur: psycopg.Cursor[Any]) -> Run:
            row = cur.execute(sql.CANCEL_RUN, {"reason": reason, "now": time.time(), "id": run_id,
                                               "expired": CANCELLED_RUN_APPROVALS}).fetchone()
            if row is None:
                state = cur.execute(sql.RUN_STATE, (run_id,)).fetchone()
                if state is None:
                    raise RunNotFound(run_id)
                raise RunStateError(f"run {run_id!r} already ended ({state[0]}); it cannot be cancelled")
            return run_from_row(row)

        return self._one(tx)

    def delete_runs(
        self, *, ended_before: float, statuses: Sequence[RunStatus] = ENDED, limit: int = 1000
    ) -> list[str]:
        """See `Store.delete_runs`. An ended run's ``updated_at`` is its row's column (set when it ended).

        One transaction of two statements: select the runs and lock them (``FOR UPDATE SKIP
        LOCKED``: a run another transaction is writing is left for a later call, so concurrent
        prunes never wait on each other or on a worker), then delete their approvals, steps and
        rows in one statement. Bad arguments raise before a connection is taken. An
        ``ended_before`` of NaN deletes nothing (nothing is before it), as in the other stores.
        """
        return self._run(journal.delete_runs(ended_before=ended_before, statuses=statuses, limit=limit),
                         transaction=True)  # fmt: skip

    def reopen_run(self, run_id: str, *, owner: str | None, lease_expires_at: float | None,
                   options: Mapping[str, JSON] | None = None, by: str | None = None) -> Run:
        """See `Store.reopen_run`.

        One transaction of two statements: read the run's status and options, locking its row
        (``FOR UPDATE``: no step write, claim, cancellation or deletion of the run comes between),
        refuse a run that is not ``failed``, then update the row with the options merged (the
        stored ones overlaid by ``options``), returning it. Steps and approvals are not touched;
        the run's totals are counters of its row, so they stay right.
        """
        return self._run(journal.reopen_run(run_id, owner=owner, lease_expires_at=lease_expires_at, options=options,
                                            by=by), transaction=True)  # fmt: skip

    # ---- leases ---------------------------------------------------------------------------
    def claim_run(self, run_id: str, *, owner: str, expected_epoch: int, lease_expires_at: float) -> Run:
        """See `Store.claim_run`: one compare-and-set ``UPDATE``, safe between processes."""
        params = (owner, lease_expires_at, time.time(), run_id, expected_epoch)

        def tx(cur: psycopg.Cursor[Any]) -> Run:
            row = cur.execute(sql.CLAIM_RUN, params).fetchone()
            if row is None:
                state = cur.execute(sql.RUN_STATE, (run_id,)).fetchone()
                if state is None:
                    raise RunNotFound(run_id)
                if RunStatus(state[0]).terminal:
                    raise LeaseLostError(f"run {run_id!r} already ended ({state[0]})")
                raise LeaseLostError(
                    f"run {run_id!r} was claimed by another worker (epoch {state[1]}, expected {expected_epoch})"
                )
            return run_from_row(row)

        return self._one(tx)

    def renew_lease(self, run_id: str, *, epoch: int, lease_expires_at: float) -> bool:
        """See `Store.renew_lease`. Raises `RunNotFound` for an unknown run."""

        return self._run(journal.renew_lease(run_id, epoch=epoch, lease_expires_at=lease_expires_at))

    def claimable_runs(self, *, agents: Sequence[str] | None, now: float, limit: int = 10,
                       after: str | None = None) -> list[Run]:
        """See `Store.claimable_runs` (``id`` is ``COLLATE "C"``: ``after`` compares by code point,
        as the embedded stores do).

        An empty ``agents`` sequence matches no run. A pending approval whose ``expires_at`` has
        passed (``<= now``) no longer holds its run back: it counts as expired. A plain read:
        workers racing for the same runs are settled by `claim_run`'s compare-and-set.
        """
        params: dict[str, Any] = {"now": now, "limit": None if limit < 0 else limit}
        if agents is None:
            statement = sql.CLAIMABLE_ALL
        else:
            params["agents"] = [str(name) for name in agents]
            if not params["agents"]:
                return []
            statement = sql.CLAIMABLE_AGENTS
        if after is not None:  # a page after the last id of the previous one (the claimable index's order)
            statement = statement.replace(" ORDER BY r.id", " AND r.id > %(after)s ORDER BY r.id", 1)
            params["after"] = after
        return [run_from_row(r) for r in self._query(statement, params)]

    # ---- steps (the hot path) -------------------------------------------------------------
    def start_step(self, step: Step, *, epoch: int, durable: bool = True) -> None:
        """See `Store.start_step`.

        One statement (one round trip): fence the run, insert the step or replace a key that is
        not completed, count a new key. With ``durable=False`` its transaction commits with
        ``synchronous_commit = off``: it survives a server crash only once the WAL writer has
        flushed it (within ``3 * wal_writer_delay``) or a later durable commit has.
        """
        self._run(journal.start_step(step, epoch=epoch, durable=durable))

    def finish_step(self, run_id: str, key: str, result: StepResult, *, epoch: int) -> None:
        """See `Store.finish_step`.

        One statement: fence the run, end the step, add the metrics to the run's totals.
        ``duration_ms`` defaults to ``ended_at - started_at``; ``provider``, ``model`` and the
        token/cost fields keep the started step's values when the result leaves them None. When
        the fence holds but no started step matched, the write is retried as a transaction of
        several statements, whose later statements see steps committed while the first waited for
        the run's lock; it raises `StepNotFound` if still none matches.
        """
        self._run(journal.finish_step(run_id, key, result, epoch=epoch))

    def record_step(self, step: Step, result: StepResult, *, epoch: int) -> None:
        """See `Store.record_step`: `start_step` and `finish_step` in one statement.

        The step is written as `finish_step` would leave it. A step passed with a status other
        than ``started`` takes the transaction of several statements, as `finish_step` then finds
        no started step (`StepNotFound`, or the refusal or `ConfigurationError` that comes first).
        """
        self._run(journal.record_step(step, result, epoch=epoch))

    def list_steps(self, run_id: str) -> list[Step]:
        """See `Store.list_steps` (one query: the run joined with its steps, in binary format)."""
        return self._run(journal.list_steps(run_id))

    def supersede_steps(self, run_id: str, keys: Sequence[str], *, prefix: str, reason: str, epoch: int) -> None:
        """See `Store.supersede_steps`.

        One transaction: lock the run row if the fence holds (so no step write of the run comes
        between), read the steps at the keys and at their new keys, then move the steps and their
        approvals (and those of the keys under them) in one statement. The run's totals are
        counters of its row, which the move leaves alone (``updated_at`` is set when something
        moved). An approval that would move onto an existing one refuses the whole call
        (`ConfigurationError`, nothing changed).
        """
        self._run(journal.supersede_steps(run_id, keys, prefix=prefix, reason=reason, epoch=epoch), transaction=True)

    # ---- approvals ------------------------------------------------------------------------
    def request_approval(self, approval: Approval, *, epoch: int) -> Approval:
        """See `Store.request_approval`. The fence is checked even when the approval exists."""
        values = approval_values(approval)
        run_id, step_key = approval.run_id, approval.step_key

        def plan() -> Plan[Approval]:
            existing = (yield Statement(sql.FIND_APPROVAL, (run_id, step_key))).rows
            if not existing:
                if (yield Statement(sql.WAIT_RUN, (time.time(), run_id, epoch))).rowcount == 0:
                    yield from journal.refused(run_id, epoch)
                if (yield Statement(sql.INSERT_APPROVAL, values)).rowcount == 1:
                    return approval_from_row(values)
                existing = (yield Statement(sql.FIND_APPROVAL, (run_id, step_key))).rows
                if not existing:
                    raise ConfigurationError(f"an approval with id {approval.id!r} already exists")
                raise _Existing(existing[0])  # requested concurrently: undo the status change
            state = (yield Statement(sql.RUN_STATE, (run_id,))).rows
            if not state or state[0][0] == "cancelled" or state[0][1] != epoch:
                raise journal.refusal(state[0] if state else None, run_id, epoch)
            return approval_from_row(existing[0])

        try:
            return self._run(plan(), transaction=True)
        except _Existing as found:
            return approval_from_row(found.row)

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
        """See `Store.list_approvals` (``id`` is ``COLLATE "C"``: ``before`` compares by code point,
        as the ORDER BY and the embedded stores do)."""
        filters = {"run_id": run_id, "status": status}
        rows = self._select("approvals", sql.APPROVAL_COLUMNS, filters, "id DESC", limit, below=("id", before))
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

        def tx(cur: psycopg.Cursor[Any]) -> Approval:
            row = cur.execute(sql.DECIDE, params).fetchone()
            if row is not None:
                return approval_from_row(row)
            row = cur.execute(sql.GET_APPROVAL, (approval_id,)).fetchone()
            if row is None:
                raise ApprovalNotFound(approval_id)
            current = approval_from_row(row)
            if current.status is not ApprovalStatus.PENDING:
                raise ApprovalConflict(f"approval {approval_id!r} was already {current.status.value}")
            raise ApprovalConflict(f"approval {approval_id!r} expired at {current.expires_at} before it was decided")

        return self._one(tx)

    def claim_announcement(self, approval_id: str, *, claimant: str) -> bool:
        """See `Store.claim_announcement` (one conditional update; the approval is read only when
        it matches no row)."""
        check_claimant(claimant)

        def tx(cur: psycopg.Cursor[Any]) -> bool:
            if cur.execute(sql.CLAIM_ANNOUNCEMENT, (claimant, approval_id, claimant)).rowcount:
                return True
            if cur.execute(sql.APPROVAL_EXISTS, (approval_id,)).fetchone() is None:
                raise ApprovalNotFound(approval_id)
            return False

        return self._one(tx)

    # ---- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Closes the pool's connections; later calls raise `StoreError`."""
        self._pool.close()


class _Existing(Exception):
    """Rolls back a `request_approval` that lost a race: another writer stored the approval."""

    def __init__(self, row: Sequence[Any]) -> None:
        super().__init__("approval requested concurrently")
        self.row = row
