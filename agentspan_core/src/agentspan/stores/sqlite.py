"""The embedded SQLite store: one file, WAL mode, safe for several threads and processes.

One connection is shared by the threads of a process (the executing thread and the lease
heartbeat) under a lock. Several processes may open the same file: every write is its own
``BEGIN IMMEDIATE`` transaction, so writers queue on SQLite's lock (``busy_timeout`` 10 s) instead
of failing, and fenced writes check the lease epoch inside the write statement itself (only when
it matches no row is the run read, to tell why).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from agentspan.errors import (
    ConfigurationError,
    LeaseLostError,
    RunNotFound,
    RunStateError,
    StoreError,
)
from agentspan.records import JSON, Run, RunStatus
from agentspan.stores import sqlite_journal as live
from agentspan.stores import sqlite_schema as sql
from agentspan.stores.base import CANCELLED_RUN_APPROVALS, ENDED, Store, check_deletion, unstorable
from agentspan.stores.cores import spare_core, usable_cores
from agentspan.stores.deferred import DeferredStarts
from agentspan.stores.reopening import reopen_refusal, reopened_options
from agentspan.stores.sqlite_approvals import SqliteApprovals, refusal
from agentspan.stores.sqlite_checkpoints import SqliteCheckpoints
from agentspan.stores.sqlite_journal import SqliteJournal
from agentspan.stores.sqlite_rows import (
    dump_json,
    load_json,
    run_from_row,
    run_values,
)
from agentspan.stores.sqlite_wal import BACKSTOP_PAGES, WalCheckpointer
from agentspan.stores.step_writer import StepWriter, still_committing
from agentspan.stores.wal_sync import WalSyncer

_T = TypeVar("_T")
REOPEN_RUN = (
    "UPDATE runs SET status=?, lease_owner=?, lease_expires_at=?, lease_epoch=lease_epoch+1, error=NULL, "
    "output=NULL, options=?, updated_at=? WHERE id=? AND status='failed'"
)


def _rollback(cur: sqlite3.Cursor) -> None:
    if cur.connection.in_transaction:
        try:
            cur.execute("ROLLBACK")
        except sqlite3.Error:
            pass


class SqliteStore(SqliteJournal, SqliteApprovals, SqliteCheckpoints, Store):
    """Stores runs, steps, approvals and checkpoints (`SqliteCheckpoints`) in one SQLite file.

    Args:
        path: The database file. Its parent directory is created when ``create`` is true.
        durability: ``"normal"`` (``synchronous=NORMAL``: a commit survives a process crash;
            the last commits may be lost on power loss) or ``"full"`` (``synchronous=FULL``:
            every commit is fsynced, power-loss safe, slower).
        create: Whether to create the file (and schema) when it does not exist.
        defer_start_for: Seconds a ``durable=False`` start may wait to be written together with
            its end (`agentspan.stores.deferred`); 0 writes every start at once.
        defer_step_sync: Make step writes durable off the caller's path, for a caller that calls
            `wait_durable` before acting on a step (the runtime does, before every live call):
            a helper process commits new steps (`agentspan.stores.step_writer`; on a ``"full"``
            store with an fsync per commit), and on a ``"full"`` store the other step writes
            (a start, a write the helper handed back) commit without an fsync and another helper
            process fsyncs them (`agentspan.stores.wal_sync`). Every other statement of the store
            waits for the helpers first; other writes stay as durable on commit as
            ``durability`` says.
        step_helper: With ``defer_step_sync``, whether new steps go to the helper process:
            None (the default) when this process may use two CPUs or more
            (`agentspan.stores.cores`: on one CPU the helper slows a run down), True or False
            to decide it here.

    Raises:
        StoreError: The file is missing (with ``create=False``), is not a valid Agentspan
            store, or cannot be opened.
        ConfigurationError: Unknown ``durability``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Literal["normal", "full"] = "normal",
        create: bool = True,
        defer_start_for: float = 0.2,
        defer_step_sync: bool = False,
        step_helper: bool | None = None,
    ) -> None:
        if durability not in ("normal", "full"):
            raise ConfigurationError(f"durability must be 'normal' or 'full', not {durability!r}")
        self.path = os.fspath(path)
        self.durability = durability
        self._lock = threading.Lock()
        self._conn = sql.open_database(self.path, durability=durability, create=create)
        self._cur = self._conn.cursor()  # reused under the lock: no cursor object per statement
        self._deferred = DeferredStarts(defer_start_for, self._write_start)
        self._wal = WalCheckpointer(self.path)
        deferred = defer_step_sync and os.name == "posix"  # POSIX pipes and select
        self._syncer = WalSyncer(os.path.abspath(self.path) + "-wal") if deferred and durability == "full" else None
        if step_helper is not None and not isinstance(step_helper, bool):
            raise ConfigurationError(f"step_helper={step_helper!r}: expected True, False or None (auto)")
        own_core = deferred and step_helper is not False and spare_core(usable_cores())
        helper = deferred and (own_core if step_helper is None else step_helper)
        self._writer = (StepWriter(os.path.abspath(self.path), live.INSERT_STEP, busy_timeout=sql.BUSY_TIMEOUT,
                                   autocheckpoint_pages=BACKSTOP_PAGES, synchronous=durability.upper(),
                                   poll=own_core)
                        if helper else None)
        self._refused: dict[str, BaseException] = {}
        """Run id -> why the first step write the helper handed back was refused (raised by
        `wait_durable`; forgotten when the run is claimed again)."""
        self._settle_lock = threading.Lock()
        self._counted = 0
        """The helper's commits counted so far for the background checkpoints."""
        # `_wal` checkpoints in the background; SQLite's own checkpoint in the commit path stays
        # only as a backstop for a WAL the background thread cannot keep up with.
        self._conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}, durability={self.durability!r})"

    # ---- plumbing -------------------------------------------------------------------------
    def _error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"Agentspan store {self.path}: {exc}")

    def _unstorable(self, exc: UnicodeEncodeError) -> ConfigurationError:
        return unstorable(self.path, exc)

    def _tx(self, fn: Callable[[sqlite3.Cursor], _T], *, sync: bool = True, step: bool = False,
            settle: bool = True) -> _T:
        """Runs ``fn`` in one ``BEGIN IMMEDIATE`` transaction, rolled back on any error.

        ``sync=False`` commits with ``synchronous=NORMAL`` (no fsync) on a ``"full"`` store.
        ``step``: a step write, which a ``defer_step_sync`` store commits without an fsync and
        then asks its `WalSyncer` to make durable. ``settle``: first wait for the step writes
        handed to the `StepWriter` (False only while writing those it handed back).
        """
        if settle:
            self._settle_steps()
        later = step and self._syncer is not None
        relaxed = later or not sync
        with self._lock:
            cur = self._cur
            try:
                changes = self._conn.total_changes  # raises on a closed store, as any use of it does
                if relaxed:
                    cur.execute("PRAGMA synchronous=NORMAL")
                try:
                    cur.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(cur)
                        cur.execute("COMMIT")
                        self._wal.committed()
                    except BaseException:
                        _rollback(cur)
                        raise
                finally:
                    if relaxed:
                        cur.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            except UnicodeEncodeError as exc:
                raise self._unstorable(exc) from exc
            if self._syncer is not None:
                if later:
                    self._syncer.request()
                elif sync and self._conn.total_changes != changes:
                    # SQLite's fsync of this commit covered the ones before (a commit that changed
                    # nothing, a lease renewal refused say, writes nothing and fsyncs nothing)
                    self._syncer.covered()
            return result

    def _write_one(self, statement: str, params: Sequence[Any], *, step: bool = False) -> int:
        """Runs one write statement as its own transaction (autocommit); returns its row count.

        A single statement needs no ``BEGIN IMMEDIATE``: SQLite takes the write lock for it (and
        waits for it, with the busy timeout) and commits it on its own. ``step`` as for `_tx`.
        """
        self._settle_steps()
        later = step and self._syncer is not None
        with self._lock:
            cur = self._cur
            try:
                if later:
                    cur.execute("PRAGMA synchronous=NORMAL")
                try:
                    count = cur.execute(statement, params).rowcount
                finally:
                    if later:
                        cur.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            except UnicodeEncodeError as exc:
                raise self._unstorable(exc) from exc
            self._wal.committed()
            if self._syncer is not None and count:
                if later:
                    self._syncer.request()
                else:
                    self._syncer.covered()
            return count

    def _query(self, statement: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
        self._settle_steps()
        with self._lock:
            try:
                return self._cur.execute(statement, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            except UnicodeEncodeError as exc:
                raise self._unstorable(exc) from exc

    def _select(self, table: str, columns: str, filters: dict[str, Any], order: str, limit: int, *,
                below: tuple[str, str | None] | None = None) -> list[Any]:
        """Selects ``columns`` of the rows matching the non-None ``filters``; ``below``: (column,
        value), only rows whose column sorts before a non-None value (keyset paging)."""
        tests = [f"{name}=?" for name, value in filters.items() if value is not None]
        params = [str(value) for value in filters.values() if value is not None]
        if below is not None and below[1] is not None:
            tests.append(f"{below[0]}<?")
            params.append(below[1])
        statement = f"SELECT {columns} FROM {table}" + (f" WHERE {' AND '.join(tests)}" if tests else "")
        return self._query(f"{statement} ORDER BY {order} LIMIT ?", (*params, limit))

    # ---- runs -----------------------------------------------------------------------------
    def create_run(self, run: Run) -> tuple[Run, bool]:
        """See `Store.create_run`."""
        values = run_values(run)

        def tx(cur: sqlite3.Cursor) -> tuple[Run, bool]:
            if run.idempotency_key is not None:
                row = cur.execute(live.RUN_BY_KEY, (run.idempotency_key,)).fetchone()
                if row is not None:
                    return run_from_row(row), False
            if cur.execute(sql.RUN_STATE, (run.id,)).fetchone() is not None:
                raise ConfigurationError(f"a run with id {run.id!r} already exists")
            cur.execute(sql.INSERT_RUN, values)
            return run_from_row(values), True

        return self._tx(tx)

    def get_run(self, run_id: str) -> Run:
        """See `Store.get_run`."""
        rows = self._query(live.GET_RUN, (run_id,))
        if not rows:
            raise RunNotFound(run_id)
        return run_from_row(rows[0])

    def list_runs(
        self, *, status: RunStatus | None = None, agent: str | None = None, limit: int = 100,
        session_id: str | None = None, before: str | None = None,
    ) -> list[Run]:
        """See `Store.list_runs` (``before`` compares as the ORDER BY does: binary, by code point)."""
        filters = {"r.status": status, "r.agent": agent, "r.session_id": session_id}
        rows = self._select("runs r", live.RUN_SELECT, filters, "r.id DESC", limit, below=("r.id", before))
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

        def tx(cur: sqlite3.Cursor) -> Run:
            if cur.execute(live.UPDATE_RUN, params).rowcount == 0:
                raise refusal(cur, run_id, epoch, cancelling=cancelling)
            if cancelling:
                cur.execute(sql.EXPIRE_APPROVALS_OF_RUN, (params["now"], CANCELLED_RUN_APPROVALS, run_id))
            return run_from_row(cur.execute(live.GET_RUN, (run_id,)).fetchone())

        return self._tx(tx)

    def delete_runs(self, *, ended_before: float, statuses: Sequence[RunStatus] = ENDED,
                    limit: int = 1000) -> list[str]:
        """See `Store.delete_runs` (an ended run's ``updated_at`` is its row's)."""
        wanted = check_deletion(statuses, limit)
        marks = ", ".join("?" * len(wanted))

        def tx(cur: sqlite3.Cursor) -> list[str]:
            ids = [r[0] for r in cur.execute(
                f"SELECT id FROM runs WHERE status IN ({marks}) AND updated_at < ? ORDER BY updated_at, id LIMIT ?",
                (*wanted, ended_before, limit))]  # fmt: skip
            for table, column in (("approvals", "run_id"), ("steps", "run_id"), ("runs", "id")):
                cur.executemany(f"DELETE FROM {table} WHERE {column}=?", [(i,) for i in ids])
            return ids

        return self._tx(tx) if wanted else []

    def cancel_run(self, run_id: str, *, reason: str | None = None) -> Run:
        """See `Store.cancel_run`. The lease is left alone: its holder learns at its next write."""

        def tx(cur: sqlite3.Cursor) -> Run:
            at = time.time()
            if cur.execute(live.CANCEL_RUN, (reason, at, run_id)).rowcount == 0:
                row = cur.execute(sql.RUN_STATE, (run_id,)).fetchone()
                if row is None:
                    raise RunNotFound(run_id)
                raise RunStateError(f"run {run_id!r} already ended ({row[0]}); it cannot be cancelled")
            cur.execute(sql.EXPIRE_APPROVALS_OF_RUN, (at, CANCELLED_RUN_APPROVALS, run_id))
            return run_from_row(cur.execute(live.GET_RUN, (run_id,)).fetchone())

        return self._tx(tx)

    def reopen_run(self, run_id: str, *, owner: str | None, lease_expires_at: float | None,
                   options: Mapping[str, JSON] | None = None, by: str | None = None) -> Run:
        """See `Store.reopen_run`."""
        status = RunStatus.PENDING if owner is None else RunStatus.RUNNING
        expires = None if owner is None else lease_expires_at
        self._refused.pop(run_id, None)

        def tx(cur: sqlite3.Cursor) -> Run:
            row = cur.execute("SELECT status, options, error, updated_at FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            if row[0] != RunStatus.FAILED:
                raise reopen_refusal(run_id, row[0])
            now = time.time()
            merged = reopened_options(load_json(row[1]), options, error=row[2], failed_at=row[3], owner=owner,
                                      now=now, by=by)
            cur.execute(REOPEN_RUN, (status.value, owner, expires, dump_json(merged), now, run_id))
            return run_from_row(cur.execute(live.GET_RUN, (run_id,)).fetchone())

        return self._tx(tx)

    # ---- leases ---------------------------------------------------------------------------
    def claim_run(self, run_id: str, *, owner: str, expected_epoch: int, lease_expires_at: float) -> Run:
        """See `Store.claim_run`."""
        self._refused.pop(run_id, None)  # an earlier attempt's: a new one raises its own
        params = (owner, lease_expires_at, time.time(), run_id, expected_epoch)

        def tx(cur: sqlite3.Cursor) -> Run:
            if cur.execute(sql.CLAIM_RUN, params).rowcount == 0:
                row = cur.execute(sql.RUN_STATE, (run_id,)).fetchone()
                if row is None:
                    raise RunNotFound(run_id)
                if RunStatus(row[0]).terminal:
                    raise LeaseLostError(f"run {run_id!r} already ended ({row[0]})")
                raise LeaseLostError(
                    f"run {run_id!r} was claimed by another worker "
                    f"(epoch {row[1]}, expected {expected_epoch})"
                )
            return run_from_row(cur.execute(live.GET_RUN, (run_id,)).fetchone())

        return self._tx(tx)

    def renew_lease(self, run_id: str, *, epoch: int, lease_expires_at: float) -> bool:
        """See `Store.renew_lease`. Raises `RunNotFound` for an unknown run."""

        def tx(cur: sqlite3.Cursor) -> bool:
            if cur.execute(sql.RENEW_LEASE, (lease_expires_at, run_id, epoch)).rowcount == 1:
                return True
            if cur.execute(sql.RUN_STATE, (run_id,)).fetchone() is None:
                raise RunNotFound(run_id)
            return False

        return self._tx(tx)

    def claimable_runs(self, *, agents: Sequence[str] | None, now: float, limit: int = 10,
                       after: str | None = None) -> list[Run]:
        """See `Store.claimable_runs` (``after`` compares as the ORDER BY does: binary, by code point).

        An empty ``agents`` sequence matches no run. A pending approval whose ``expires_at`` has
        passed (``<= now``) no longer holds its run back: it counts as expired.
        """
        statement = live.CLAIMABLE
        # Declared wide: the agent names (str) are added below to the numbers now and limit.
        params: dict[str, float | str] = {"now": now, "limit": limit}
        if after is not None:  # (the primary key's index: the scan starts there)
            statement += " AND r.id > :after"
            params["after"] = after
        if agents is not None:
            names = list(agents)
            if not names:
                return []
            statement += f" AND r.agent IN ({', '.join(f':a{i}' for i in range(len(names)))})"
            params.update({f"a{i}": name for i, name in enumerate(names)})
        rows = self._query(statement + " ORDER BY r.id LIMIT :limit", params)
        return [run_from_row(r) for r in rows]

    def still_writing(self, owner: str) -> bool:
        """See `Store.still_writing`: a step-writer helper of ``owner`` still holds its lock file
        (`agentspan.stores.step_writer.still_committing`)."""
        return still_committing(owner, self.path)

    # ---- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Writes the starts still held back, then closes the connection; later calls raise
        `StoreError`."""
        self._deferred.close(write=True)
        if self._writer is not None:
            with self._settle_lock:
                returned = self._writer.close()
                self._count_helper_commits()
                self._write_all_returned(returned)
        if self._syncer is not None:
            self._syncer.close()
        self._wal.close()
        with self._lock:
            self._conn.close()
