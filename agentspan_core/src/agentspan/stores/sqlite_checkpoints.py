"""Checkpoint storage of the SQLite store (`SqliteCheckpoints`, a mixin of `SqliteStore`).

The tables are schema version 2 (`sqlite_schema.MIGRATIONS`). LangGraph calls these methods on
every super-step (one `put_checkpoint`, one `put_checkpoint_writes` per task, a read on resume),
so they stay lean: constant SQL (sqlite3's statement cache keeps it prepared), ``executemany`` for
writes, blobs bound and returned as they are. `put_checkpoint` is one statement in autocommit
(its own transaction); every other write is one ``BEGIN IMMEDIATE`` transaction
(`SqliteStore._tx`). Reads of checkpoints with their writes run in one deferred read transaction,
so they see one snapshot. Records are built by validation, which pydantic 2 does faster than
``model_construct`` for these models (`get_checkpoint` builds its record outside the lock). Lists
of ids reach SQL as one JSON array parameter (``json_each``), so the statement text never depends
on their number.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agentspan import jsontext
from agentspan.records import JSON, CheckpointRecord, CheckpointWrite
from agentspan.stores.checkpoint_rules import check_limit, dump_metadata, id_list, load_filter, metadata_matches

if TYPE_CHECKING:
    import threading

    from agentspan.errors import ConfigurationError, StoreError
    from agentspan.stores.sqlite_wal import WalCheckpointer

__all__ = ["SqliteCheckpoints"]

_T = TypeVar("_T")
_decode = jsontext.loads

# ---- statements ----------------------------------------------------------------------------
_CP_FIELDS = ("parent_id", "run_id", "type", "metadata", "created_at", "data")
_W_FIELDS = ("task_id", "idx", "task_path", "channel", "type", "data")
_CP_COLUMNS = "thread_id, namespace, checkpoint_id, " + ", ".join(_CP_FIELDS)
_W_COLUMNS = "thread_id, namespace, checkpoint_id, " + ", ".join(_W_FIELDS)
_KEY = "thread_id=? AND namespace=? AND checkpoint_id=?"

PUT_CHECKPOINT = (
    f"INSERT INTO checkpoints ({_CP_COLUMNS}) VALUES ({', '.join('?' * 9)}) "
    "ON CONFLICT (thread_id, namespace, checkpoint_id) DO UPDATE SET "
    + ", ".join(f"{f}=excluded.{f}" for f in _CP_FIELDS)
)
KEEP_WRITE = f"INSERT INTO checkpoint_writes ({_W_COLUMNS}) VALUES ({', '.join('?' * 9)}) ON CONFLICT DO NOTHING"
REPLACE_WRITE = (
    f"INSERT INTO checkpoint_writes ({_W_COLUMNS}) VALUES ({', '.join('?' * 9)}) "
    "ON CONFLICT (thread_id, namespace, checkpoint_id, task_id, idx) DO UPDATE SET "
    + ", ".join(f"{f}=excluded.{f}" for f in _W_FIELDS[2:])
)
GET_LATEST = (
    f"SELECT {_CP_COLUMNS} FROM checkpoints WHERE thread_id=? AND namespace=? ORDER BY checkpoint_id DESC LIMIT 1"
)
GET_CHECKPOINT = f"SELECT {_CP_COLUMNS} FROM checkpoints WHERE {_KEY}"
WRITES_OF = (
    f"SELECT {', '.join(_W_FIELDS)} FROM checkpoint_writes WHERE {_KEY} ORDER BY task_path, task_id, idx"
)
DELETE_THREAD = (
    "DELETE FROM checkpoints WHERE thread_id=?",
    "DELETE FROM checkpoint_writes WHERE thread_id=?",
)
_IDS = "(SELECT value FROM json_each(?))"
DELETE_RUNS = (  # writes first: they are found through their checkpoints
    "DELETE FROM checkpoint_writes WHERE (thread_id, namespace, checkpoint_id) IN "
    f"(SELECT thread_id, namespace, checkpoint_id FROM checkpoints WHERE run_id IN {_IDS})",
    f"DELETE FROM checkpoints WHERE run_id IN {_IDS}",
)
COPY_THREAD = (
    f"INSERT OR REPLACE INTO checkpoints ({_CP_COLUMNS}) "
    f"SELECT ?, namespace, checkpoint_id, {', '.join(_CP_FIELDS)} FROM checkpoints WHERE thread_id=?",
    f"INSERT OR REPLACE INTO checkpoint_writes ({_W_COLUMNS}) "
    f"SELECT ?, namespace, checkpoint_id, {', '.join(_W_FIELDS)} FROM checkpoint_writes WHERE thread_id=?",
)
PRUNE_ALL = (
    f"DELETE FROM checkpoints WHERE thread_id IN {_IDS}",
    f"DELETE FROM checkpoint_writes WHERE thread_id IN {_IDS}",
)
_NOT_LATEST = (  # the checkpoints of the threads that are not the latest of their namespace
    f"SELECT thread_id, namespace, checkpoint_id FROM checkpoints WHERE thread_id IN {_IDS} AND checkpoint_id < "
    "(SELECT MAX(k.checkpoint_id) FROM checkpoints k WHERE k.thread_id = checkpoints.thread_id "
    "AND k.namespace = checkpoints.namespace)"
)
PRUNE_KEEP_LATEST = (  # writes first, found through their checkpoints: writes of no checkpoint stay
    f"DELETE FROM checkpoint_writes WHERE (thread_id, namespace, checkpoint_id) IN ({_NOT_LATEST})",
    f"DELETE FROM checkpoints WHERE (thread_id, namespace, checkpoint_id) IN ({_NOT_LATEST})",
)


def _narrowing(key: str, value: JSON) -> bool:
    """Whether ``json_extract(metadata, '$."key"') = value`` may narrow the candidates of a filter.

    Only for ASCII string values, and keys that the stored JSON spells as they are (SQLite matches
    a path label against the key's JSON text, escapes included). It keeps every match (strings
    come back unescaped); `metadata_matches` then decides exactly.
    """
    return (
        isinstance(value, str)
        and value.isascii()
        and key.isascii()
        and key.isprintable()
        and '"' not in key
        and "\\" not in key
    )


def _checkpoint_from_row(
    row: Sequence[Any], writes: list[CheckpointWrite], metadata: dict[str, JSON] | None = None
) -> CheckpointRecord:
    """Builds a checkpoint from a row selected with `_CP_COLUMNS`; ``metadata`` is the row's, when
    already decoded."""
    thread_id, namespace, checkpoint_id, parent_id, run_id, type_, text, created_at, data = row
    return CheckpointRecord(
        thread_id=thread_id, namespace=namespace, checkpoint_id=checkpoint_id, parent_id=parent_id, type=type_,
        data=data, metadata=_decode(text) if metadata is None else metadata, run_id=run_id, created_at=created_at,
        writes=writes,
    )  # fmt: skip


def _writes_from_rows(key: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[CheckpointWrite]:
    """Builds the writes of the checkpoint ``key`` (thread, namespace, id) from `WRITES_OF` rows."""
    thread_id, namespace, checkpoint_id = key
    return [
        CheckpointWrite(
            thread_id=thread_id, namespace=namespace, checkpoint_id=checkpoint_id, task_id=task_id,
            task_path=task_path, idx=idx, channel=channel, type=type_, data=data,
        )  # fmt: skip
        for task_id, idx, task_path, channel, type_, data in rows
    ]


def _checkpoint_values(c: CheckpointRecord) -> tuple[Any, ...]:
    """The parameters of `PUT_CHECKPOINT` (raises `ConfigurationError` for metadata that is not JSON)."""
    return (
        c.thread_id, c.namespace, c.checkpoint_id, c.parent_id, c.run_id, c.type,
        dump_metadata(c.metadata), c.created_at, c.data,
    )  # fmt: skip


def _write_rows(writes: Sequence[CheckpointWrite]) -> list[tuple[Any, ...]]:
    """The parameters of `KEEP_WRITE`/`REPLACE_WRITE`, one tuple per write."""
    return [
        (w.thread_id, w.namespace, w.checkpoint_id, w.task_id, w.idx, w.task_path, w.channel, w.type, w.data)
        for w in writes
    ]


class SqliteCheckpoints:
    """The checkpoint methods of `SqliteStore`, which provides the connection and transactions."""

    if TYPE_CHECKING:
        _lock: threading.Lock
        _conn: sqlite3.Connection
        _cur: sqlite3.Cursor
        _wal: WalCheckpointer
        durability: str

        def _tx(self, fn: Callable[[sqlite3.Cursor], _T], *, sync: bool = True, step: bool = False,
                settle: bool = True) -> _T: ...
        def _error(self, exc: sqlite3.Error) -> StoreError: ...
        def _unstorable(self, exc: UnicodeEncodeError) -> ConfigurationError: ...
        def _settle_steps(self) -> None: ...

    def _read(self, fn: Callable[[sqlite3.Cursor], _T]) -> _T:
        """Runs ``fn`` in one deferred (read) transaction: one snapshot, no write lock."""
        self._settle_steps()
        with self._lock:
            cur = self._cur
            try:
                cur.execute("BEGIN")
                try:
                    result = fn(cur)
                finally:
                    cur.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            except UnicodeEncodeError as exc:
                raise self._unstorable(exc) from exc
            return result

    # ---- writes -----------------------------------------------------------------------------
    def put_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """See `Store.put_checkpoint` (one statement: its own transaction)."""
        values = _checkpoint_values(checkpoint)
        self._settle_steps()
        with self._lock:
            try:
                self._cur.execute(PUT_CHECKPOINT, values)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            except UnicodeEncodeError as exc:
                raise self._unstorable(exc) from exc
            self._wal.committed()

    def put_checkpoint_writes(self, writes: Sequence[CheckpointWrite], *, replace: bool, defer: bool = False) -> None:
        """See `Store.put_checkpoint_writes` (``executemany``: rows apply in order; ``defer``
        changes nothing: the write is as cheap as holding it back).

        On a ``"full"`` store the commit is not fsynced: losing pending writes only makes the
        framework run their task again, and the next checkpoint's fsync covers them (the WAL is
        append-only).
        """
        rows = _write_rows(writes)
        if rows:
            statement = REPLACE_WRITE if replace else KEEP_WRITE
            self._tx(lambda cur: cur.executemany(statement, rows), sync=self.durability != "full")

    def put_checkpoint_with_writes(
        self, checkpoint: CheckpointRecord, writes: Sequence[CheckpointWrite], *, replace: bool
    ) -> None:
        """See `Store.put_checkpoint_with_writes` (one ``BEGIN IMMEDIATE`` transaction)."""
        values = _checkpoint_values(checkpoint)
        rows = _write_rows(writes)
        statement = REPLACE_WRITE if replace else KEEP_WRITE

        def put(cur: sqlite3.Cursor) -> None:
            if rows:
                cur.executemany(statement, rows)
            cur.execute(PUT_CHECKPOINT, values)

        self._tx(put)

    def delete_checkpoints(self, thread_id: str) -> None:
        """See `Store.delete_checkpoints`."""
        self._tx(lambda cur: [cur.execute(statement, (thread_id,)) for statement in DELETE_THREAD])

    def delete_checkpoints_for_runs(self, run_ids: Sequence[str]) -> None:
        """See `Store.delete_checkpoints_for_runs`."""
        ids = id_list(run_ids, "run_ids")
        if ids:
            param = (json.dumps(ids),)
            self._tx(lambda cur: [cur.execute(statement, param) for statement in DELETE_RUNS])

    def copy_checkpoints(self, source_thread_id: str, target_thread_id: str) -> None:
        """See `Store.copy_checkpoints`."""
        if source_thread_id != target_thread_id:
            params = (target_thread_id, source_thread_id)
            self._tx(lambda cur: [cur.execute(statement, params) for statement in COPY_THREAD])

    def prune_checkpoints(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """See `Store.prune_checkpoints`."""
        ids = id_list(thread_ids, "thread_ids")
        if ids:
            param = (json.dumps(ids),)
            statements = PRUNE_KEEP_LATEST if keep_latest else PRUNE_ALL
            self._tx(lambda cur: [cur.execute(statement, param) for statement in statements])

    # ---- reads ------------------------------------------------------------------------------
    def get_checkpoint(
        self, thread_id: str, namespace: str = "", checkpoint_id: str | None = None
    ) -> CheckpointRecord | None:
        """See `Store.get_checkpoint`: the checkpoint's row, then its writes, in one snapshot."""
        params: tuple[str, ...]
        if checkpoint_id is None:
            statement, params = GET_LATEST, (thread_id, namespace)
        else:
            statement, params = GET_CHECKPOINT, (thread_id, namespace, checkpoint_id)

        def read(cur: sqlite3.Cursor) -> tuple[Any, list[Any]] | None:
            row = cur.execute(statement, params).fetchone()
            return None if row is None else (row, cur.execute(WRITES_OF, row[:3]).fetchall())

        found = self._read(read)
        if found is None:
            return None
        row, writes = found
        return _checkpoint_from_row(row, _writes_from_rows(row[:3], writes))

    def list_checkpoints(
        self,
        *,
        thread_id: str | None = None,
        namespace: str | None = None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        metadata: dict[str, JSON] | None = None,
        limit: int | None = None,
    ) -> list[CheckpointRecord]:
        """See `Store.list_checkpoints`.

        A metadata filter narrows the rows in SQL where it safely can (`_narrowing`) and is
        decided by `metadata_matches`; the rows are then read until ``limit`` of them match.
        """
        check_limit(limit)
        wanted = load_filter(metadata)
        if limit == 0:
            return []
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("thread_id=?", thread_id), ("namespace=?", namespace), ("checkpoint_id=?", checkpoint_id),
            ("checkpoint_id<?", before),
        ):  # fmt: skip
            if value is not None:
                clauses.append(clause)
                params.append(value)
        for key, value in (wanted or {}).items():
            if _narrowing(key, value):
                clauses.append("json_extract(metadata, ?)=?")
                params.extend((f'$."{key}"', value))
        statement = f"SELECT {_CP_COLUMNS} FROM checkpoints"
        if clauses:
            statement += " WHERE " + " AND ".join(clauses)
        statement += " ORDER BY checkpoint_id DESC, thread_id, namespace"
        if wanted is None and limit is not None:
            statement += " LIMIT ?"
            params.append(limit)

        def read(cur: sqlite3.Cursor) -> list[CheckpointRecord]:
            found: list[CheckpointRecord] = []
            rows = self._conn.execute(statement, params)  # its own cursor: `cur` reads the writes
            try:
                for row in rows:
                    decoded = None
                    if wanted is not None:
                        decoded = _decode(row[6])
                        if not metadata_matches(decoded, wanted):
                            continue
                    writes = _writes_from_rows(row[:3], cur.execute(WRITES_OF, row[:3]).fetchall())
                    found.append(_checkpoint_from_row(row, writes, decoded))
                    if len(found) == limit:
                        break
            finally:
                rows.close()
            return found

        return self._read(read)
