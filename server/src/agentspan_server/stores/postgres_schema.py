"""Statements and row mapping of the PostgreSQL store (its schema and migrations:
`postgres_migrations`).

Columns mirror the SQLite store one for one, so rows map to records with the same functions:
JSON values (``input``, ``output``, ``options``, ``args``) are TEXT holding compact JSON exactly
as encoded by Python (``NULL`` is JSON ``null``); JSONB would not round-trip every value (it
rewrites ``1e308`` as a 309-digit integer and rejects ``\\u0000``). Timestamps are DOUBLE PRECISION
epoch seconds and counters BIGINT. Ids and keys use the ``"C"`` collation so that ``ORDER BY id``
is creation order (UUIDv7) whatever the database's locale.
"""

from __future__ import annotations

from agentspan.stores import sqlite_schema as _lite
from agentspan.stores.sqlite_rows import (
    APPROVAL_COLUMNS,
    APPROVAL_FIELDS,
    RUN_COLUMNS,
    RUN_FIELDS,
    STEP_COLUMNS,
    STEP_FIELDS,
    approval_from_row,
    approval_values,
    dump_json,
    load_json,
    run_from_row,
    run_values,
    step_from_row,
    step_values,
)
from agentspan_server.stores.postgres_migrations import MIGRATIONS, migrate

__all__ = [
    "APPROVAL_COLUMNS", "MIGRATIONS", "RUN_COLUMNS", "STEP_COLUMNS", "approval_from_row", "approval_values",
    "dump_json", "load_json", "migrate", "run_from_row", "run_values", "step_from_row", "step_values",
]  # fmt: skip  (MIGRATIONS and migrate: from `postgres_migrations`)

# ---- statements ----------------------------------------------------------------------------
# Constant SQL strings, so psycopg prepares each once per connection (after a few executions).
def _placeholders(n: int) -> str:
    return ", ".join(["%s"] * n)


def _from_sqlite(statement: str) -> str:
    """The SQLite store's statement with psycopg's ``%s`` placeholders (the SQL is the same)."""
    return statement.replace("?", "%s")


GET_RUN = _from_sqlite(_lite.GET_RUN)
RUN_BY_KEY = f"SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key=%s"
INSERT_RUN = (  # no target: a duplicate id and a duplicate idempotency key both insert nothing
    f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({_placeholders(len(RUN_FIELDS))}) ON CONFLICT DO NOTHING"
)
RUN_STATE = _from_sqlite(_lite.RUN_STATE)
UPDATE_RUN = (
    "UPDATE runs SET status=COALESCE(%(status)s, status), output=COALESCE(%(output)s, output), "
    "error=COALESCE(%(error)s, error), updated_at=%(now)s, "
    "lease_owner=CASE WHEN %(release)s THEN NULL ELSE lease_owner END, "
    "lease_expires_at=CASE WHEN %(release)s THEN NULL ELSE lease_expires_at END "
    "WHERE id=%(id)s AND lease_epoch=%(epoch)s AND (status<>'cancelled' OR %(cancelling)s) "
    f"RETURNING {RUN_COLUMNS}"
)
UPDATE_RUN_CANCELLING = (  # `UPDATE_RUN` to ``cancelled``, expiring the run's pending approvals with it
    f"WITH run AS ({UPDATE_RUN}), "
    "expired AS (UPDATE approvals SET status='expired', decided_at=%(now)s, reason=%(expired)s "
    "WHERE run_id IN (SELECT id FROM run) AND status='pending') "
    "SELECT * FROM run"
)
CANCEL_RUN = (  # and, in the same statement, its pending approvals expire (`_lite.EXPIRE_APPROVALS_OF_RUN`)
    "WITH run AS (UPDATE runs SET status='cancelled', error=%(reason)s, updated_at=%(now)s "
    f"WHERE id=%(id)s AND status IN ('pending', 'running', 'waiting') RETURNING {RUN_COLUMNS}), "
    "expired AS (UPDATE approvals SET status='expired', decided_at=%(now)s, reason=%(expired)s "
    "WHERE run_id IN (SELECT id FROM run) AND status='pending') "
    "SELECT * FROM run"
)
CLAIM_RUN = (
    "UPDATE runs SET lease_owner=%s, lease_expires_at=%s, lease_epoch=lease_epoch+1, updated_at=%s "
    f"WHERE id=%s AND lease_epoch=%s AND status IN ('pending', 'running', 'waiting') RETURNING {RUN_COLUMNS}"
)
RENEW_LEASE = "UPDATE runs SET lease_expires_at=%s WHERE id=%s AND lease_epoch=%s"
CLAIMABLE = (
    f"SELECT {RUN_COLUMNS} FROM runs r WHERE r.status IN ('pending', 'running', 'waiting') "
    "AND (r.lease_owner IS NULL OR r.lease_expires_at IS NULL OR r.lease_expires_at < %(now)s) "
    "AND (r.status <> 'waiting' OR NOT EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = r.id "
    "AND a.status = 'pending' AND (a.expires_at IS NULL OR a.expires_at > %(now)s)))"
)
CLAIMABLE_ALL = CLAIMABLE + " ORDER BY r.id LIMIT %(limit)s"
CLAIMABLE_AGENTS = CLAIMABLE + " AND r.agent = ANY(%(agents)s) ORDER BY r.id LIMIT %(limit)s"
# ---- the hot path: one statement (one round trip, one autocommitted transaction) per call ----
# Each first locks the run row if and only if the fence holds (`_FENCE`: ``FOR NO KEY UPDATE``, the
# lock an ``UPDATE`` of the row takes; like ``UPDATE``, it re-checks its ``WHERE`` on the newest row
# version after waiting on a concurrent writer), then writes the step only if the run row was
# locked, then updates the run only if the step was written. A refusal therefore writes nothing,
# and the row locks are taken in one order (run, then step) by every step write. The statement
# returns ``(fenced, written)``: ``fenced`` false is a refusal (the caller reads why), ``fenced``
# and not ``written`` means the step write matched nothing. Every parameter is cast to its column's
# type: ``INSERT ... SELECT`` gives untyped parameters (strings, ``NULL``) no type of its own.
STEP_TYPES = {
    "run_id": "text", "key": "text", "seq": "bigint", "kind": "text", "name": "text", "status": "text",
    "input_hash": "text", "error": "text", "attempt": "bigint", "started_at": "float8", "ended_at": "float8",
    "duration_ms": "float8", "provider": "text", "model": "text", "input_tokens": "bigint",
    "output_tokens": "bigint", "cost_usd": "float8", "input": "text", "output": "text",
}  # fmt: skip
assert tuple(STEP_TYPES) == STEP_FIELDS
_FENCE = (
    "fence AS MATERIALIZED (SELECT id FROM runs WHERE id=%(run_id)s::text AND lease_epoch=%(epoch)s::bigint "
    "AND status<>'cancelled' FOR NO KEY UPDATE)"
)
_RESULT = "SELECT EXISTS (SELECT 1 FROM fence), EXISTS (SELECT 1 FROM counted)"


def _step_row(**overrides: str) -> str:
    return ", ".join(overrides.get(f, f"%({f})s::{STEP_TYPES[f]}") for f in STEP_FIELDS)


def _journal_step(row: str, totals: str) -> str:
    """Inserts a step (``ins``) or, for an existing key that is not completed, replaces it keeping
    its seq (``rep``: ``ON CONFLICT DO UPDATE`` acts on the newest committed row even when this
    statement's snapshot predates it), then counts a new key and adds ``totals`` to the run."""
    replace = ", ".join(f"{f}=EXCLUDED.{f}" for f in STEP_FIELDS[3:])
    return (
        f"WITH {_FENCE}, "
        f"ins AS (INSERT INTO steps ({STEP_COLUMNS}) SELECT {row} FROM fence "
        "ON CONFLICT (run_id, key) DO NOTHING RETURNING 1), "
        f"rep AS (INSERT INTO steps ({STEP_COLUMNS}) SELECT {row} FROM fence WHERE NOT EXISTS (SELECT 1 FROM ins) "
        f"ON CONFLICT (run_id, key) DO UPDATE SET {replace} WHERE steps.status<>'completed' RETURNING 1), "
        f"counted AS (UPDATE runs SET updated_at=%(now)s::float8, steps=steps+(SELECT count(*) FROM ins){totals} "
        "WHERE id=%(run_id)s::text AND (EXISTS (SELECT 1 FROM ins) OR EXISTS (SELECT 1 FROM rep)) RETURNING 1) "
    )


_TOTALS = (
    ", input_tokens=input_tokens+%(add_input_tokens)s::bigint, "
    "output_tokens=output_tokens+%(add_output_tokens)s::bigint, cost_usd=cost_usd+%(add_cost_usd)s::float8"
)
_DURATION = "COALESCE(%(duration_ms)s::float8, (%(ended_at)s::float8 - {started}) * 1000.0)"
START_STEP = _journal_step(_step_row(), "") + _RESULT
# set_config(..., true) lasts until the end of the transaction, here the statement's own: the
# commit does not wait for the WAL flush, and the connection's setting is untouched afterwards
START_STEP_NOT_DURABLE = START_STEP + ", set_config('synchronous_commit', 'off', true)"
RECORD_STEP = (  # start_step + finish_step: the row as finish_step would leave it
    _journal_step(_step_row(duration_ms=_DURATION.format(started="%(started_at)s::float8")), _TOTALS) + _RESULT
)
FINISH_STEP_ONCE = (
    f"WITH {_FENCE}, "
    "ended AS (UPDATE steps SET status=%(status)s::text, output=%(output)s::text, error=%(error)s::text, "
    f"ended_at=%(ended_at)s::float8, duration_ms={_DURATION.format(started='started_at')}, "
    "provider=COALESCE(%(provider)s::text, provider), model=COALESCE(%(model)s::text, model), "
    "input_tokens=COALESCE(%(input_tokens)s::bigint, input_tokens), "
    "output_tokens=COALESCE(%(output_tokens)s::bigint, output_tokens), "
    "cost_usd=COALESCE(%(cost_usd)s::float8, cost_usd) "
    "WHERE run_id=%(run_id)s::text AND key=%(key)s::text AND status='started' AND EXISTS (SELECT 1 FROM fence) "
    "RETURNING 1), "
    f"counted AS (UPDATE runs SET updated_at=%(now)s::float8{_TOTALS} "
    "WHERE id=%(run_id)s::text AND EXISTS (SELECT 1 FROM ended) RETURNING 1) " + _RESULT
)

# ---- step writes as transactions of several statements: `finish_step`'s retry, and
# `record_step` of a step passed with a status other than ``started``
FENCE_START = (  # inserts the step (nothing on an existing key) and fences the run in one statement
    f"WITH new AS (INSERT INTO steps ({STEP_COLUMNS}) VALUES ({_placeholders(len(STEP_FIELDS))}) "
    "ON CONFLICT (run_id, key) DO NOTHING RETURNING 1), "
    "n AS (SELECT count(*) AS n FROM new) "
    "UPDATE runs SET updated_at=%s, steps=steps+n.n FROM n WHERE id=%s AND lease_epoch=%s AND status<>'cancelled' "
    "RETURNING n.n"
)
FENCE_FINISH = _from_sqlite(_lite.FENCE_FINISH)
REPLACE_STEP = _from_sqlite(_lite.REPLACE_STEP)
FINISH_STEP = _from_sqlite(_lite.FINISH_STEP)
LIST_STEPS = _from_sqlite(_lite.LIST_STEPS)
GET_APPROVAL = _from_sqlite(_lite.GET_APPROVAL)
APPROVAL_EXISTS = _from_sqlite(_lite.APPROVAL_EXISTS)
CLAIM_ANNOUNCEMENT = _from_sqlite(_lite.CLAIM_ANNOUNCEMENT)
FIND_APPROVAL = _from_sqlite(_lite.FIND_APPROVAL)
INSERT_APPROVAL = (  # nothing on a duplicate id or (run_id, step_key): the caller tells which
    f"INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ({_placeholders(len(APPROVAL_FIELDS))}) "
    "ON CONFLICT DO NOTHING"
)
WAIT_RUN = _from_sqlite(_lite.WAIT_RUN)
DECIDE = (
    "UPDATE approvals SET status=%s, decided_by=%s, decided_at=%s, reason=%s "
    f"WHERE id=%s AND status='pending' AND (expires_at IS NULL OR expires_at > %s) RETURNING {APPROVAL_COLUMNS}"
)

# ---- `Store.supersede_steps`: statements of one transaction ----------------------------------
# The run row is locked if and only if the fence holds (like the step writes' `_FENCE`), so no step
# write of the run runs between the check of the keys and the move. The steps at the keys and at
# their new keys are read, then whether an approval that moves (of a moving key or of a key under
# it, ``key/...``) would land on one that exists; then the steps and approvals move to
# ``prefix || key`` in one statement. In an ``UPDATE`` every ``CASE`` reads the row as it was (for
# an approval decided concurrently: as the decision left it, the row being re-read after the wait).
# The run's totals are counters of the run row, which the move leaves alone; only ``updated_at``
# changes.
LOCK_RUN = "SELECT 1 FROM runs WHERE id=%s AND lease_epoch=%s AND status<>'cancelled' FOR NO KEY UPDATE"
STEP_KEYS = "SELECT key FROM steps WHERE run_id=%s AND key = ANY(%s::text[])"
_MOVES = (  # an approval of one of the moving keys or of a key under one (not LIKE: keys hold '_' and '%')
    "a.run_id=%(run_id)s::text AND EXISTS (SELECT 1 FROM unnest(%(keys)s::text[]) AS m(key) "
    "WHERE a.step_key = m.key OR starts_with(a.step_key, m.key || '/'))"
)
APPROVAL_CLASH = (  # the first approval that moves onto an existing one
    f"SELECT a.step_key FROM approvals a WHERE {_MOVES} AND EXISTS (SELECT 1 FROM approvals b "
    "WHERE b.run_id=a.run_id AND b.step_key = %(prefix)s::text || a.step_key) LIMIT 1"
)
_UNENDED = "WHEN status='started' THEN"
_PENDING = "WHEN status='pending' THEN"
SUPERSEDE = (
    "WITH moved AS (UPDATE steps SET key=%(prefix)s::text || key, "
    f"status=CASE {_UNENDED} 'failed' ELSE status END, error=CASE {_UNENDED} %(reason)s::text ELSE error END, "
    f"ended_at=CASE {_UNENDED} %(now)s::float8 ELSE ended_at END "
    "WHERE run_id=%(run_id)s::text AND key = ANY(%(keys)s::text[]) RETURNING 1), "
    "expired AS (UPDATE approvals a SET step_key=%(prefix)s::text || step_key, "
    f"status=CASE {_PENDING} 'expired' ELSE status END, reason=CASE {_PENDING} %(reason)s::text ELSE reason END, "
    f"decided_at=CASE {_PENDING} %(now)s::float8 ELSE decided_at END WHERE {_MOVES} RETURNING 1) "
    "UPDATE runs SET updated_at=%(now)s::float8 WHERE id=%(run_id)s::text"
)

# ---- `Store.delete_runs`: statements of one transaction --------------------------------------
# The ended runs to delete, oldest first, locked (``FOR UPDATE``: no step write, approval request
# or status change of theirs runs until the deletion commits; a run another transaction holds
# locked is skipped, not waited for, so concurrent prunes delete different runs). ``updated_at`` is
# the column `GET_RUN` reports: for an ended run, when it ended. Then the runs' approvals, steps and
# rows go in one statement (a data-modifying ``WITH`` runs whether or not the statement reads it).
# Nothing references a run (no foreign keys): checkpoints keep their ``run_id``, child runs their
# ``parent_run_id``; a run's counters (steps, tokens, cost) are columns of its own row.
BIGINT_MAX = 2**63 - 1
"""The largest ``LIMIT`` sent (a larger limit means the same: no limit)."""
ENDED_RUNS = (
    "SELECT id FROM runs WHERE status = ANY(%s::text[]) AND updated_at < %s::float8 "
    "ORDER BY updated_at, id LIMIT %s::bigint FOR UPDATE SKIP LOCKED"
)
DELETE_RUNS = (
    "WITH approvals_gone AS (DELETE FROM approvals WHERE run_id = ANY(%(ids)s::text[])), "
    "steps_gone AS (DELETE FROM steps WHERE run_id = ANY(%(ids)s::text[])) "
    "DELETE FROM runs WHERE id = ANY(%(ids)s::text[])"
)

# ---- `Store.reopen_run`: statements of one transaction ---------------------------------------
# The run row is read and locked (``FOR UPDATE``: no step write, claim, cancellation or deletion of
# the run runs until the reopen commits), so the status checked is the status changed; the stored
# options are merged with the given ones in Python, then the row is updated in one statement that
# returns it as `GET_RUN` reads it (a run's totals are columns of its own row).
LOCK_FOR_REOPEN = "SELECT status, options, error, updated_at FROM runs WHERE id=%s FOR UPDATE"
REOPEN_RUN = (
    "UPDATE runs SET status=%(status)s, lease_owner=%(owner)s, lease_expires_at=%(expires)s, "
    "lease_epoch=lease_epoch+1, error=NULL, output=NULL, options=%(options)s, updated_at=%(now)s "
    f"WHERE id=%(id)s RETURNING {RUN_COLUMNS}"
)
