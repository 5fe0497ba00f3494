"""Step writes of the SQLite store (`SqliteJournal`, a mixin of `SqliteStore`): the hot path.

Every model and tool call of a durable run ends in one of these transactions, so each writes as
few pages as it can:

- **The fence is a condition, not an update.** A step is written only if its run is still held
  at the writer's lease epoch and not cancelled: the insert is ``INSERT ... SELECT ... WHERE
  EXISTS (run at epoch)``, the finish an ``UPDATE ... AND EXISTS (...)``. Only a write that
  matches no row reads the run, to tell a refusal from an existing key.
- **Run totals are derived, not counted.** The step count, tokens, cost and last activity of a
  run that has not ended are read from its steps (``RUN_SELECT``); `update_run` and `cancel_run`
  store them on the run row whenever its status changes, so an ended run reads its own row. A
  step write therefore touches the step's pages only (its row and primary-key index: schema
  version 3 dropped the ``(run_id, seq)`` index; ``list_steps`` sorts a run's steps itself),
  about 40% less than also updating the run row and a second index.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agentspan.errors import (
    AgentspanSignal,
    ConfigurationError,
    LeaseLostError,
    RunCancelledSignal,
    RunNotFound,
    StepNotFound,
)
from agentspan.records import Step, StepResult, StepStatus
from agentspan.stores import sqlite_schema as sql
from agentspan.stores.sqlite_rows import (
    RUN_COLUMNS,
    RUN_FIELDS,
    STEP_COLUMNS,
    STEP_FIELDS,
    dump_json,
    recorded_from_values,
    recorded_step_values,
    step_from_row,
    step_values,
)

if TYPE_CHECKING:
    from agentspan.stores.deferred import DeferredStarts
    from agentspan.stores.sqlite_wal import WalCheckpointer
    from agentspan.stores.step_writer import StepWriter
    from agentspan.stores.wal_sync import WalSyncer

__all__ = ["RUN_SELECT", "STORE_TOTALS", "SqliteJournal", "recorded_tx"]

_T = TypeVar("_T")

# ---- statements ----------------------------------------------------------------------------
_ACTIVE = "r.status IN ('pending', 'running', 'waiting')"
_OF_RUN = "FROM steps s WHERE s.run_id = r.id"
_LIVE_TOTALS = {
    "updated_at": f"MAX(r.updated_at, COALESCE((SELECT MAX(COALESCE(s.ended_at, s.started_at)) {_OF_RUN}), 0))",
    "input_tokens": f"(SELECT COALESCE(SUM(s.input_tokens), 0) {_OF_RUN})",
    "output_tokens": f"(SELECT COALESCE(SUM(s.output_tokens), 0) {_OF_RUN})",
    "cost_usd": f"(SELECT COALESCE(SUM(s.cost_usd), 0.0) {_OF_RUN})",
    "steps": f"(SELECT COUNT(*) {_OF_RUN})",
}
RUN_SELECT = ", ".join(
    f"CASE WHEN {_ACTIVE} THEN {_LIVE_TOTALS[f]} ELSE r.{f} END" if f in _LIVE_TOTALS else f"r.{f}"
    for f in RUN_FIELDS
)
"""The run columns in `RUN_FIELDS` order for ``SELECT ... FROM runs r``: a run that has not ended
has its totals summed from its steps."""
STORE_TOTALS = (
    "input_tokens=(SELECT COALESCE(SUM(input_tokens), 0) FROM steps WHERE run_id=runs.id), "
    "output_tokens=(SELECT COALESCE(SUM(output_tokens), 0) FROM steps WHERE run_id=runs.id), "
    "cost_usd=(SELECT COALESCE(SUM(cost_usd), 0.0) FROM steps WHERE run_id=runs.id), "
    "steps=(SELECT COUNT(*) FROM steps WHERE run_id=runs.id)"
)
"""``SET`` assignments of an ``UPDATE runs`` that store the totals summed from the run's steps."""

_FENCE = "EXISTS (SELECT 1 FROM runs WHERE id=? AND lease_epoch=? AND status!='cancelled')"
INSERT_STEP = (
    f"INSERT INTO steps ({STEP_COLUMNS}) SELECT {', '.join('?' * len(STEP_FIELDS))} "
    f"WHERE {_FENCE} ON CONFLICT (run_id, key) DO NOTHING"
)
REPLACE_STEP = sql.REPLACE_STEP + f" AND {_FENCE}"
FINISH_STEP = sql.FINISH_STEP + f" AND {_FENCE}"
GET_RUN = f"SELECT {RUN_SELECT} FROM runs r WHERE r.id=?"
RUN_BY_KEY = f"SELECT {RUN_SELECT} FROM runs r WHERE r.idempotency_key=?"
CLAIMABLE = sql.CLAIMABLE.replace(f"SELECT {RUN_COLUMNS} FROM runs r", f"SELECT {RUN_SELECT} FROM runs r", 1)
UPDATE_RUN = sql.UPDATE_RUN.replace("updated_at=:now, ", f"updated_at=:now, {STORE_TOTALS}, ", 1)
CANCEL_RUN = sql.CANCEL_RUN.replace("updated_at=? ", f"updated_at=?, {STORE_TOTALS} ", 1)
_STEP_KEYS = "SELECT key FROM steps WHERE run_id=? AND key IN (?, ?)"
_UNENDED = "status='started'"
_SUPERSEDE_STEP = (
    f"UPDATE steps SET key=?, status=CASE WHEN {_UNENDED} THEN 'failed' ELSE status END, "
    f"error=CASE WHEN {_UNENDED} THEN ? ELSE error END, ended_at=CASE WHEN {_UNENDED} THEN ? ELSE ended_at END "
    "WHERE run_id=? AND key=?"
)
_SUPERSEDE_APPROVALS = (
    "UPDATE approvals SET step_key=? || step_key, status=CASE WHEN status='pending' THEN 'expired' ELSE status END, "
    "reason=CASE WHEN status='pending' THEN ? ELSE reason END, "
    "decided_at=CASE WHEN status='pending' THEN ? ELSE decided_at END "
    "WHERE run_id=? AND (step_key=? OR substr(step_key, 1, length(?))=?)"
)
_UNDER = "(a.step_key=? OR substr(a.step_key, 1, length(?))=?)"
_APPROVAL_CLASH = (
    f"SELECT 1 FROM approvals a WHERE a.run_id=? AND {_UNDER} AND EXISTS "
    "(SELECT 1 FROM approvals b WHERE b.run_id=a.run_id AND b.step_key=? || a.step_key)"
)
"""`Store.supersede_steps` of one key: the step (an unended one fails) and the approvals of it and
of the keys under it (a pending one expires) move to the prefixed key. In an ``UPDATE``, every
``CASE`` reads the row as it was. (``substr``, not ``LIKE``: keys hold ``_``.)"""
assert CLAIMABLE != sql.CLAIMABLE and UPDATE_RUN != sql.UPDATE_RUN and CANCEL_RUN != sql.CANCEL_RUN


def fence_refusal(cur: sqlite3.Cursor, run_id: str, epoch: int, *, cancelling: bool = False) -> BaseException | None:
    """Inside the transaction: why the fence of ``(run_id, epoch)`` refuses a write, or None.

    ``cancelling``: the write cancels the run, so a cancelled run does not refuse it.
    """
    row = cur.execute(sql.RUN_STATE, (run_id,)).fetchone()
    if row is None:
        return RunNotFound(run_id)
    if row[0] == "cancelled" and not cancelling:
        return RunCancelledSignal(run_id, row[2])
    if row[1] != epoch:
        return LeaseLostError(f"run {run_id!r} is held at lease epoch {row[1]}; the write carried epoch {epoch}")
    return None


def recorded_tx(journal: SqliteJournal, step: Step, result: StepResult, epoch: int, values: tuple[Any, ...], *,
                in_doubt: bool = False) -> Callable[[sqlite3.Cursor], None]:
    """The transaction of a `record_step` whose one-statement insert wrote nothing: the step with
    an earlier unfinished attempt goes the start-then-finish way, and a refusal raises.

    ``in_doubt``: the write may have been committed already (by a `StepWriter` helper that died
    before it answered): a completed step under a fence that still holds is that commit.
    """

    def tx(cur: sqlite3.Cursor) -> None:
        if cur.execute(INSERT_STEP, values).rowcount:
            return
        if in_doubt and fence_refusal(cur, step.run_id, epoch) is None and cur.execute(
                _COMPLETED, (step.run_id, step.key)).fetchone() is not None:
            return
        journal._start_tx(step, epoch)(cur)
        journal._finish_tx(step.run_id, step.key, result, epoch)(cur)

    return tx


_COMPLETED = "SELECT 1 FROM steps WHERE run_id=? AND key=? AND status='completed'"


class SqliteJournal:
    """`Store.start_step`, `finish_step`, `record_step`, `supersede_steps` and `list_steps` of `SqliteStore`."""

    _deferred: DeferredStarts
    _writer: StepWriter | None
    _syncer: WalSyncer | None
    _wal: WalCheckpointer
    _lock: threading.Lock
    _counted: int
    _refused: dict[str, BaseException]
    _settle_lock: threading.Lock

    if TYPE_CHECKING:

        def _tx(self, fn: Callable[[sqlite3.Cursor], _T], *, sync: bool = True, step: bool = False,
                settle: bool = True) -> _T: ...

        def _query(self, statement: str, params: Any) -> list[Any]: ...

        def _write_one(self, statement: str, params: Sequence[Any], *, step: bool = False) -> int: ...

        durability: str

    # ---- step writes handed to the helper process (`StepWriter`) ----------------------------
    def wait_durable(self, run_id: str | None = None) -> None:
        """See `Store.wait_durable`: waits for the helper's commits (``"normal"``) or fsyncs
        (``"full"``) of the step writes so far (``defer_step_sync``; otherwise every commit is
        already as durable as it gets).

        Raises:
            StoreError: An fsync of the WAL failed, or a step write of ``run_id`` failed.
            LeaseLostError: A step write of ``run_id`` was refused: another attempt holds the run.
            RunCancelledSignal: A step write of ``run_id`` was refused: the run was cancelled.
        """
        if self._writer is not None:
            self._settle_steps()
            if run_id is not None and self._refused:
                refused = self._refused.pop(run_id, None)
                if refused is not None:
                    raise refused
        if self._syncer is not None:
            self._syncer.wait()

    def _settle_steps(self) -> None:
        """Waits for the step writes handed to the `StepWriter` (if any are still out)."""
        if self._writer is not None and self._writer.busy:
            self._settle()

    def _settle(self) -> None:
        """Waits for the step writes handed to the `StepWriter`, counts its commits, and writes
        those it did not apply the usual way (a refusal is kept for `wait_durable`). One thread
        at a time: another one waits until the writes handed back are written too."""
        writer = self._writer
        assert writer is not None
        with self._settle_lock:
            returned = writer.settle()
            self._count_helper_commits()
            self._write_all_returned(returned)

    def _write_all_returned(self, returned: list[tuple[Any, bool]]) -> None:
        writer = self._writer
        assert writer is not None
        try:
            for record, in_doubt in returned:
                self._write_returned(record, in_doubt)
        finally:
            writer.written(len(returned))

    def _count_helper_commits(self) -> None:
        """Counts the helper's commits since the last call for the background checkpoints."""
        writer = self._writer
        assert writer is not None
        with self._lock:
            applied = writer.applied
            if applied > self._counted:
                self._wal.committed(applied - self._counted)
                self._counted = applied

    def _write_returned(self, values: tuple[Any, ...], in_doubt: bool) -> None:
        """Writes a step row the helper handed back (the values `record_step` sent) in this thread."""
        step, result, epoch = recorded_from_values(values)
        try:
            self._tx(recorded_tx(self, step, result, epoch, values, in_doubt=in_doubt), step=True,
                     settle=False)
        except (Exception, AgentspanSignal) as exc:  # the run's, raised at its next wait (`wait_durable`)
            self._refused.setdefault(step.run_id, exc)

    # ---- the journal ----------------------------------------------------------------------
    def start_step(self, step: Step, *, epoch: int, durable: bool = True) -> None:
        """See `Store.start_step`.

        One transaction: insert the step if its run is held at ``epoch`` (``DO NOTHING`` on an
        existing key), and, for an existing key, replace it unless it is completed. A
        ``durable=False`` start is held back (`DeferredStarts`): a call that ends within
        ``defer_start_for`` is journaled by one `record_step`; a longer one's start is written by
        a timer, on a ``"full"`` store with ``synchronous=NORMAL`` (no fsync; the WAL is
        append-only, so the next full commit's fsync covers it).
        """
        if durable or not self._deferred.hold(step, epoch):
            self._tx(self._start_tx(step, epoch), sync=durable or self.durability != "full", step=durable)

    def _write_start(self, step: Step, epoch: int) -> None:
        self._tx(self._start_tx(step, epoch), sync=self.durability != "full")

    def finish_step(self, run_id: str, key: str, result: StepResult, *, epoch: int) -> None:
        """See `Store.finish_step`.

        One fenced update of the step. ``duration_ms`` defaults to ``ended_at - started_at``;
        ``provider``, ``model`` and the token/cost fields keep the started step's values when the
        result leaves them None.
        """
        held = self._deferred.take(run_id, key)
        if held is not None:
            self.record_step(held[0], result, epoch=epoch)
            return
        self._tx(self._finish_tx(run_id, key, result, epoch), step=True)

    def record_step(self, step: Step, result: StepResult, *, epoch: int) -> None:
        """See `Store.record_step`: `start_step` and `finish_step` in one transaction.

        A new key (the usual case) is one fenced insert of the ended step; a key with an earlier
        unfinished attempt goes the start-then-finish way. A ``defer_step_sync`` store hands the
        insert to its `StepWriter` and returns: `wait_durable` waits for the commit, and raises
        its refusal.
        """
        if result.status == StepStatus.STARTED:
            raise ConfigurationError("record_step needs a 'completed' or 'failed' result")
        values = (*recorded_step_values(step, result), step.run_id, epoch)
        writer = self._writer
        # The values are all a handed-back write needs (`recorded_from_values`): nothing else is
        # held per write while the helper commits it.
        if writer is not None and writer.send(values, values):
            if writer.applied - self._counted >= 16:
                self._count_helper_commits()
            return
        if self._write_one(INSERT_STEP, values, step=True):
            return  # the usual case, one statement in autocommit (its own transaction)
        self._tx(recorded_tx(self, step, result, epoch, values), step=True)

    def _start_tx(self, step: Step, epoch: int) -> Callable[[sqlite3.Cursor], None]:
        values = step_values(step)
        run_id, key = values[0], values[1]
        insert = (*values, run_id, epoch)
        replace = (*values[3:], run_id, key, run_id, epoch)

        def tx(cur: sqlite3.Cursor) -> None:
            if cur.execute(INSERT_STEP, insert).rowcount:
                return
            refusal = fence_refusal(cur, run_id, epoch)
            if refusal is not None:
                raise refusal
            if cur.execute(REPLACE_STEP, replace).rowcount == 0:
                raise ConfigurationError(
                    f"step {key!r} of run {run_id!r} is already completed; a journal entry is never rewritten"
                )

        return tx

    def _finish_tx(self, run_id: str, key: str, result: StepResult, epoch: int) -> Callable[[sqlite3.Cursor], None]:
        status = result.status
        if status == StepStatus.STARTED:
            raise ConfigurationError("finish_step needs a 'completed' or 'failed' result")
        ended_at = result.ended_at
        values = (
            status._value_, dump_json(result.output), result.error, ended_at, result.duration_ms, ended_at,
            result.provider, result.model, result.input_tokens, result.output_tokens, result.cost_usd,
            run_id, key, run_id, epoch,
        )  # fmt: skip

        def tx(cur: sqlite3.Cursor) -> None:
            if cur.execute(FINISH_STEP, values).rowcount == 0:
                refusal = fence_refusal(cur, run_id, epoch)
                raise refusal if refusal is not None else StepNotFound(run_id, key)

        return tx

    def supersede_steps(self, run_id: str, keys: Sequence[str], *, prefix: str, reason: str, epoch: int) -> None:
        """See `Store.supersede_steps` (one transaction, after the fence is checked). Starts of those
        steps still held back (``durable=False``) are written first."""
        if not prefix:
            raise ConfigurationError("supersede_steps needs a non-empty prefix")
        keys = list(dict.fromkeys(keys))
        for key in keys:
            held = self._deferred.take(run_id, key)
            if held is not None:
                self._write_start(*held)
        moved_at = time.time()

        def tx(cur: sqlite3.Cursor) -> None:
            refusal = fence_refusal(cur, run_id, epoch)
            if refusal is not None:
                raise refusal
            found = {key: {r[0] for r in cur.execute(_STEP_KEYS, (run_id, key, prefix + key))} for key in keys}
            for key in keys:
                if not found[key]:
                    raise StepNotFound(run_id, key)
            moving = [key for key in keys if key in found[key]]
            for key in moving:
                taken = prefix + key in found[key] or cur.execute(
                    _APPROVAL_CLASH, (run_id, key, key + "/", key + "/", prefix)).fetchone()
                if taken:
                    raise ConfigurationError(f"the journal of run {run_id!r} holds {prefix + key!r} already")
            for key in moving:
                cur.execute(_SUPERSEDE_STEP, (prefix + key, reason, moved_at, run_id, key))
                cur.execute(_SUPERSEDE_APPROVALS, (prefix, reason, moved_at, run_id, key, key + "/", key + "/"))
            if moving:
                cur.execute("UPDATE runs SET updated_at=MAX(updated_at, ?) WHERE id=?", (moved_at, run_id))

        self._tx(tx)

    def list_steps(self, run_id: str) -> list[Step]:
        """See `Store.list_steps` (one query: the run joined with its steps, in ``seq`` order)."""
        rows = self._query(sql.LIST_STEPS, (run_id,))
        if not rows:
            raise RunNotFound(run_id)
        if rows[0][1] is None:
            return []
        return [step_from_row(r[1:]) for r in rows]
