"""Checkpoints in PostgreSQL: the `Store` checkpoint methods of `PostgresStore`, as a mixin.

Tables ``checkpoints`` and ``checkpoint_writes`` (schema version 2, `postgres_schema`) hold the
records column for column; ``data`` is BYTEA, stored and returned as given (never decoded), and
``metadata`` is compact JSON TEXT like every other JSON column of the store. Text PostgreSQL cannot
hold (NUL, lone surrogates, also inside metadata, where its JSON functions could not read them) is
refused with `ConfigurationError` before anything is written, as the server refuses it with a 422.

Every method is one autocommitted statement, so one round trip and one transaction: a checkpoint
read brings its pending writes along (parallel arrays aggregated in a ``LATERAL`` subquery, read in
binary format so the bytes are not hex-encoded), a batch of writes is one ``INSERT`` (a multi-row
``VALUES``, or ``SELECT FROM unnest(...)`` for a large batch), and the deletions delete the writes
and their checkpoints with a data-modifying CTE.
The hot path of a LangGraph super-step (`put_checkpoint`, `put_checkpoint_writes` per task, an
occasional `get_checkpoint`) therefore costs what ``PostgresSaver``'s own statements cost; through
the server it is usually one `put_checkpoint_with_writes`: the writes' ``INSERT`` in a CTE of the
checkpoint's upsert, still one statement.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from pydantic import BaseModel

from agentspan.errors import ConfigurationError
from agentspan.records import JSON, CheckpointRecord, CheckpointWrite
from agentspan.stores.checkpoint_rules import check_limit, dump_metadata, id_list
from agentspan_server.checks import check_json, check_record
from agentspan_server.stores.postgres_pool import Plan, PostgresPool, Statement
from agentspan_server.stores.postgres_schema import load_json

__all__ = [
    "PostgresCheckpoints", "get_checkpoint", "put_checkpoint", "put_checkpoint_with_writes", "put_checkpoint_writes",
]

_KEY = ("thread_id", "namespace", "checkpoint_id")
CHECKPOINT_FIELDS = (*_KEY, "parent_id", "type", "data", "metadata", "run_id", "created_at")
WRITE_FIELDS = (*_KEY, "task_id", "idx", "task_path", "channel", "type", "data")
_CHECKPOINT_COLUMNS = ", ".join(CHECKPOINT_FIELDS)
_WRITE_COLUMNS = ", ".join(WRITE_FIELDS)
_WRITE_KEY = "thread_id, namespace, checkpoint_id, task_id, idx"


def _replace(fields: Sequence[str]) -> str:
    return ", ".join(f"{f}=EXCLUDED.{f}" for f in fields)


# ---- statements (constant strings: psycopg prepares each once per connection) -------------------
PUT_CHECKPOINT = (  # ``%b``: the bytes travel in binary format, not hex-encoded
    f"INSERT INTO checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %b, %s, %s, %s) "
    f"ON CONFLICT (thread_id, namespace, checkpoint_id) DO UPDATE SET {_replace(CHECKPOINT_FIELDS[3:])}"
)
_UNNEST_WRITES = (
    f"INSERT INTO checkpoint_writes ({_WRITE_COLUMNS}) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], "
    f"%s::text[], %s::int8[], %s::text[], %s::text[], %s::text[], %b::bytea[]) ON CONFLICT ({_WRITE_KEY}) "
)
_ON_CONFLICT = {True: f"DO UPDATE SET {_replace(WRITE_FIELDS[5:])}", False: "DO NOTHING"}
PUT_WRITES_REPLACE = _UNNEST_WRITES + _ON_CONFLICT[True]
PUT_WRITES_KEEP = _UNNEST_WRITES + _ON_CONFLICT[False]
MAX_VALUES_ROWS = 64
"""Largest batch of writes sent as a multi-row ``VALUES`` (one prepared statement per batch size,
measured ~100 us faster than ``unnest`` for a few writes); larger batches go through ``unnest``."""


@functools.cache
def put_writes_values(rows: int, replace: bool) -> str:
    """The ``INSERT`` of ``rows`` writes as a multi-row ``VALUES`` (parameters row after row)."""
    row = "(%s, %s, %s, %s, %s, %s, %s, %s, %b)"
    values = ", ".join([row] * rows)
    conflict = f"ON CONFLICT ({_WRITE_KEY}) {_ON_CONFLICT[replace]}"
    return f"INSERT INTO checkpoint_writes ({_WRITE_COLUMNS}) VALUES {values} {conflict}"

_WRITE_ARRAYS = ", ".join(  # LangGraph's writes_sort_key: the order a super-step applies them
    f"array_agg(cw.{f} ORDER BY cw.task_path, cw.task_id, cw.idx) AS {f}s" for f in WRITE_FIELDS[3:]
)
_SELECT_CHECKPOINTS = (  # each checkpoint with its writes as parallel arrays (NULL: no writes)
    f"SELECT {', '.join(f'c.{f}' for f in CHECKPOINT_FIELDS)}, w.* FROM checkpoints c "
    f"CROSS JOIN LATERAL (SELECT {_WRITE_ARRAYS} FROM checkpoint_writes cw WHERE cw.thread_id=c.thread_id "
    "AND cw.namespace=c.namespace AND cw.checkpoint_id=c.checkpoint_id) w "
)
GET_LATEST = _SELECT_CHECKPOINTS + "WHERE c.thread_id=%s AND c.namespace=%s ORDER BY c.checkpoint_id DESC LIMIT 1"
GET_CHECKPOINT = _SELECT_CHECKPOINTS + "WHERE c.thread_id=%s AND c.namespace=%s AND c.checkpoint_id=%s"
_LIST_ORDER = " ORDER BY c.checkpoint_id DESC, c.thread_id, c.namespace LIMIT %s"
# Equal as JSON values (jsonb: numbers by value, objects whatever their key order); a missing key is
# null. Through ``json`` first, which takes any text ``jsonb`` would refuse, so only the one value is cast.
_METADATA_EQUALS = "COALESCE((c.metadata::json -> %s)::jsonb, 'null') = %s::jsonb"

DELETE_THREAD = (
    "WITH w AS (DELETE FROM checkpoint_writes WHERE thread_id=%(thread)s::text) "
    "DELETE FROM checkpoints WHERE thread_id=%(thread)s::text"
)
DELETE_THREADS = (
    "WITH w AS (DELETE FROM checkpoint_writes WHERE thread_id = ANY(%(threads)s::text[])) "
    "DELETE FROM checkpoints WHERE thread_id = ANY(%(threads)s::text[])"
)
_DELETE_WRITES_OF_GONE = (
    "DELETE FROM checkpoint_writes w USING gone g "
    "WHERE w.thread_id=g.thread_id AND w.namespace=g.namespace AND w.checkpoint_id=g.checkpoint_id"
)
DELETE_FOR_RUNS = (
    "WITH gone AS (DELETE FROM checkpoints WHERE run_id = ANY(%s::text[]) "
    "RETURNING thread_id, namespace, checkpoint_id) " + _DELETE_WRITES_OF_GONE
)
PRUNE_KEEP_LATEST = (  # one statement, one snapshot: what is put meanwhile is neither seen nor deleted
    "WITH latest AS (SELECT DISTINCT ON (thread_id, namespace) thread_id, namespace, checkpoint_id "
    "FROM checkpoints WHERE thread_id = ANY(%(threads)s::text[]) ORDER BY thread_id, namespace, checkpoint_id DESC), "
    "gone AS (DELETE FROM checkpoints c WHERE c.thread_id = ANY(%(threads)s::text[]) AND NOT EXISTS (SELECT 1 "
    "FROM latest l WHERE l.thread_id=c.thread_id AND l.namespace=c.namespace AND l.checkpoint_id=c.checkpoint_id) "
    "RETURNING thread_id, namespace, checkpoint_id) " + _DELETE_WRITES_OF_GONE  # only the deleted ones' writes
)
COPY_THREAD = (  # the target's checkpoints and writes with the same ids are overwritten
    f"WITH c AS (INSERT INTO checkpoints ({_CHECKPOINT_COLUMNS}) "
    f"SELECT %(target)s::text, {', '.join(CHECKPOINT_FIELDS[1:])} FROM checkpoints WHERE thread_id=%(source)s::text "
    f"ON CONFLICT (thread_id, namespace, checkpoint_id) DO UPDATE SET {_replace(CHECKPOINT_FIELDS[3:])}) "
    f"INSERT INTO checkpoint_writes ({_WRITE_COLUMNS}) "
    f"SELECT %(target)s::text, {', '.join(WRITE_FIELDS[1:])} FROM checkpoint_writes WHERE thread_id=%(source)s::text "
    f"ON CONFLICT ({_WRITE_KEY}) DO UPDATE SET {_replace(WRITE_FIELDS[5:])}"
)


# ---- rows -----------------------------------------------------------------------------------------
_write_row = attrgetter(*WRITE_FIELDS)
def _storable(records: Sequence[BaseModel], what: str, *, skip: tuple[str, ...] = ()) -> None:
    """Refuses text PostgreSQL cannot hold (NUL, lone surrogates: also inside JSON values, which
    its JSON functions could then not read), non-finite numbers and integers beyond 64 bits.

    Raises:
        ConfigurationError: Naming each bad field (the server refuses the same input with a 422).
    """
    issues: list[dict[str, str]] = []
    for i, record in enumerate(records):
        check_record(record, (f"{what}[{i}]",) if len(records) > 1 else (what,), issues, skip=skip)
    _refuse(issues, what)


def _refuse(issues: list[dict[str, str]], what: str) -> None:
    if issues:
        shown = "; ".join(f"{issue['field']} {issue['message']}" for issue in issues[:5])
        raise ConfigurationError(f"cannot store this {what}: {shown}")


def checkpoint_values(checkpoint: CheckpointRecord) -> tuple[Any, ...]:
    """A checkpoint's column values in `CHECKPOINT_FIELDS` order.

    Raises:
        ConfigurationError: Its metadata is not JSON, or it holds what PostgreSQL cannot store.
    """
    c = checkpoint
    metadata = dump_metadata(c.metadata)
    _storable((c,), "checkpoint", skip=("data", "writes"))
    return (c.thread_id, c.namespace, c.checkpoint_id, c.parent_id, c.type, c.data, metadata, c.run_id, c.created_at)


def checkpoint_from_row(row: Sequence[Any]) -> CheckpointRecord:
    """Builds a checkpoint (with its writes) from a `_SELECT_CHECKPOINTS` row (trusted: no re-validation)."""
    thread_id, namespace, checkpoint_id, parent_id, type_, data, metadata, run_id, created_at = row[:9]
    task_ids, idxs, task_paths, channels, types, datas = row[9:]
    writes = [
        CheckpointWrite.model_construct(
            thread_id=thread_id, namespace=namespace, checkpoint_id=checkpoint_id, task_id=task_id, idx=idx,
            task_path=task_path, channel=channel, type=write_type, data=write_data,
        )  # fmt: skip
        for task_id, idx, task_path, channel, write_type, write_data in zip(
            task_ids or (), idxs or (), task_paths or (), channels or (), types or (), datas or (), strict=True
        )
    ]
    return CheckpointRecord.model_construct(
        thread_id=thread_id, namespace=namespace, checkpoint_id=checkpoint_id, parent_id=parent_id, type=type_,
        data=data, metadata=load_json(metadata), run_id=run_id, created_at=created_at, writes=writes,
    )  # fmt: skip


def _write_rows(writes: Sequence[CheckpointWrite], *, replace: bool) -> list[tuple[Any, ...]]:
    """The writes' column values (`WRITE_FIELDS` order), one tuple per write.

    Writes repeating an identity within the batch collapse to one, as if stored one after the
    other: the last with ``replace``, the first without (one statement may not upsert a row twice).
    They are then sorted by identity, so concurrent batches lock shared rows in one order.
    """
    unique: dict[tuple[str, str, str, str, int], CheckpointWrite] = {}
    for write in writes:
        key = (write.thread_id, write.namespace, write.checkpoint_id, write.task_id, write.idx)
        if replace or key not in unique:
            unique[key] = write
    return [_write_row(unique[key]) for key in sorted(unique)]


def _list_statement(
    thread_id: str | None,
    namespace: str | None,
    checkpoint_id: str | None,
    before: str | None,
    metadata: dict[str, JSON] | None,
    limit: int | None,
) -> tuple[str, list[Any]]:
    """The ``SELECT`` of `list_checkpoints` for the given filters, with its parameters."""
    conditions: list[str] = []
    params: list[Any] = []
    for condition, value in (
        ("c.thread_id=%s", thread_id), ("c.namespace=%s", namespace),
        ("c.checkpoint_id=%s", checkpoint_id), ("c.checkpoint_id<%s", before),
    ):  # fmt: skip
        if value is not None:
            conditions.append(condition)
            params.append(value)
    for key, value in (metadata or {}).items():
        conditions.append(_METADATA_EQUALS)
        params += [key, dump_metadata(value, what=f"metadata filter {key!r}")]
    if metadata:
        issues: list[dict[str, str]] = []
        check_json(metadata, ("metadata",), issues)
        _refuse(issues, "metadata filter")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    params.append(limit)
    return _SELECT_CHECKPOINTS + where + _LIST_ORDER, params


# ---- the hot operations as plans (`postgres_pool`; the server's asyncio path runs them too) -------
def put_checkpoint(checkpoint: CheckpointRecord) -> Plan[None]:
    """`Store.put_checkpoint`: one upsert."""
    yield Statement(PUT_CHECKPOINT, checkpoint_values(checkpoint))
    return None


def put_checkpoint_writes(writes: Sequence[CheckpointWrite], *, replace: bool, defer: bool = False) -> Plan[None]:
    """`Store.put_checkpoint_writes`: the whole batch in one ``INSERT`` (one transaction); ``defer``
    changes nothing here."""
    if writes:
        yield Statement(*_writes_insert(writes, replace))
    return None


def put_checkpoint_with_writes(
    checkpoint: CheckpointRecord, writes: Sequence[CheckpointWrite], *, replace: bool
) -> Plan[None]:
    """`Store.put_checkpoint_with_writes`: one statement (the writes' ``INSERT`` in a CTE before the
    checkpoint's upsert), so one round trip and one transaction."""
    values = checkpoint_values(checkpoint)
    if not writes:
        yield Statement(PUT_CHECKPOINT, values)
        return None
    insert, params = _writes_insert(writes, replace)
    yield Statement(_with_writes(insert), [*params, *values])
    return None


@functools.cache
def _with_writes(writes_insert: str) -> str:
    return f"WITH w AS ({writes_insert}) {PUT_CHECKPOINT}"


def _writes_insert(writes: Sequence[CheckpointWrite], replace: bool) -> tuple[str, list[Any]]:
    """The ``INSERT`` of a batch of writes and its parameters (multi-row ``VALUES`` for a few
    writes, ``unnest`` for many).

    Raises:
        ConfigurationError: A write holds what PostgreSQL cannot store.
    """
    _storable(writes, "checkpoint write", skip=("data",))
    rows = _write_rows(writes, replace=replace)
    if len(rows) <= MAX_VALUES_ROWS:
        return put_writes_values(len(rows), replace), [v for row in rows for v in row]
    statement = PUT_WRITES_REPLACE if replace else PUT_WRITES_KEEP
    return statement, [list(column) for column in zip(*rows, strict=True)]


def get_checkpoint(
    thread_id: str, namespace: str = "", checkpoint_id: str | None = None
) -> Plan[CheckpointRecord | None]:
    """`Store.get_checkpoint`: the checkpoint and its writes in one query."""
    if checkpoint_id is None:
        found = yield Statement(GET_LATEST, (thread_id, namespace), binary=True)
    else:
        found = yield Statement(GET_CHECKPOINT, (thread_id, namespace, checkpoint_id), binary=True)
    return checkpoint_from_row(found.rows[0]) if found.rows else None


class PostgresCheckpoints(PostgresPool):
    """The checkpoint methods of `PostgresStore` (see `Store.put_checkpoint` and the methods after it)."""

    def put_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """See `Store.put_checkpoint`: one upsert."""
        self._run(put_checkpoint(checkpoint))

    def put_checkpoint_writes(self, writes: Sequence[CheckpointWrite], *, replace: bool, defer: bool = False) -> None:
        """See `Store.put_checkpoint_writes`: the whole batch in one ``INSERT`` (one transaction)."""
        self._run(put_checkpoint_writes(writes, replace=replace))

    def put_checkpoint_with_writes(
        self, checkpoint: CheckpointRecord, writes: Sequence[CheckpointWrite], *, replace: bool
    ) -> None:
        """See `Store.put_checkpoint_with_writes`: one statement (one transaction)."""
        self._run(put_checkpoint_with_writes(checkpoint, writes, replace=replace))

    def get_checkpoint(
        self, thread_id: str, namespace: str = "", checkpoint_id: str | None = None
    ) -> CheckpointRecord | None:
        """See `Store.get_checkpoint`: the checkpoint and its writes in one query."""
        return self._run(get_checkpoint(thread_id, namespace, checkpoint_id))

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
        """See `Store.list_checkpoints`: one query, checkpoints with their writes.

        Raises:
            ConfigurationError: ``limit`` is negative, or a metadata value is not JSON.
        """
        check_limit(limit)
        statement, params = _list_statement(thread_id, namespace, checkpoint_id, before, metadata, limit)
        return [checkpoint_from_row(r) for r in self._query(statement, params, binary=True)]

    def delete_checkpoints(self, thread_id: str) -> None:
        """See `Store.delete_checkpoints`: one statement."""
        self._one(lambda cur: cur.execute(DELETE_THREAD, {"thread": thread_id}))

    def delete_checkpoints_for_runs(self, run_ids: Sequence[str]) -> None:
        """See `Store.delete_checkpoints_for_runs`: one statement."""
        ids = id_list(run_ids, "run_ids")
        if ids:
            # not prepared: the plan is made knowing the array (a generic plan scans it per row)
            self._one(lambda cur: cur.execute(DELETE_FOR_RUNS, (ids,), prepare=False))

    def copy_checkpoints(self, source_thread_id: str, target_thread_id: str) -> None:
        """See `Store.copy_checkpoints`: one statement; the target's checkpoints and writes with
        the same ids are overwritten, its others kept."""
        if source_thread_id != target_thread_id:
            params = {"source": source_thread_id, "target": target_thread_id}
            self._one(lambda cur: cur.execute(COPY_THREAD, params))

    def prune_checkpoints(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """See `Store.prune_checkpoints`: one statement (one snapshot) for all the threads."""
        threads = id_list(thread_ids, "thread_ids")
        if threads:
            statement = PRUNE_KEEP_LATEST if keep_latest else DELETE_THREADS
            self._one(lambda cur: cur.execute(statement, {"threads": threads}, prepare=False))
