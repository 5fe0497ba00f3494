"""Schema, migrations, opening and statements of the SQLite store.

The store creates and migrates its own schema. `MIGRATIONS` is an ordered list of SQL scripts:
the script at list position ``i`` is schema version ``i + 1``. Applied versions are recorded in
``agentspan_migrations``; a migration is applied once, in its own ``BEGIN IMMEDIATE``
transaction, so several processes opening the same fresh file never apply it twice.

Rows map to records (and JSON values to their TEXT columns) in `sqlite_rows`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from agentspan.errors import StoreError

# Importing sqlite_rows also registers its sqlite3 adapters, before `open_database` opens a connection.
from agentspan.stores.sqlite_rows import (
    APPROVAL_COLUMNS,
    APPROVAL_FIELDS,
    RUN_COLUMNS,
    RUN_FIELDS,
    STEP_COLUMNS,
    STEP_FIELDS,
)

MIGRATIONS: list[str] = [
    # ---- version 1: runs, steps, approvals ------------------------------------------------
    """
    CREATE TABLE runs (
        id               TEXT PRIMARY KEY,
        framework        TEXT NOT NULL,
        agent            TEXT NOT NULL,
        input            TEXT,
        status           TEXT NOT NULL,
        output           TEXT,
        error            TEXT,
        session_id       TEXT,
        idempotency_key  TEXT UNIQUE,
        parent_run_id    TEXT,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        lease_owner      TEXT,
        lease_expires_at REAL,
        lease_epoch      INTEGER NOT NULL DEFAULT 0,
        input_tokens     INTEGER NOT NULL DEFAULT 0,
        output_tokens    INTEGER NOT NULL DEFAULT 0,
        cost_usd         REAL NOT NULL DEFAULT 0,
        steps            INTEGER NOT NULL DEFAULT 0,
        options          TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX runs_status ON runs (status, id);
    CREATE INDEX runs_agent ON runs (agent, id);
    CREATE INDEX runs_session ON runs (session_id) WHERE session_id IS NOT NULL;
    CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

    CREATE TABLE steps (
        run_id        TEXT NOT NULL,
        key           TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        name          TEXT,
        status        TEXT NOT NULL,
        input         TEXT,
        input_hash    TEXT,
        output        TEXT,
        error         TEXT,
        attempt       INTEGER NOT NULL,
        started_at    REAL NOT NULL,
        ended_at      REAL,
        duration_ms   REAL,
        provider      TEXT,
        model         TEXT,
        input_tokens  INTEGER,
        output_tokens INTEGER,
        cost_usd      REAL,
        PRIMARY KEY (run_id, key)
    );
    CREATE INDEX steps_run_seq ON steps (run_id, seq);

    CREATE TABLE approvals (
        id           TEXT PRIMARY KEY,
        run_id       TEXT NOT NULL,
        step_key     TEXT NOT NULL,
        tool         TEXT NOT NULL,
        args         TEXT,
        args_hash    TEXT NOT NULL,
        status       TEXT NOT NULL,
        requested_at REAL NOT NULL,
        expires_at   REAL,
        decided_by   TEXT,
        decided_at   REAL,
        reason       TEXT,
        UNIQUE (run_id, step_key)
    );
    CREATE INDEX approvals_status ON approvals (status, id);
    """,
    # ---- version 2: checkpoints and their pending writes (`stores.sqlite_checkpoints`) -------
    # ``data`` last: the columns before it are read without following its overflow pages. The
    # primary keys serve "latest of a namespace" (ORDER BY checkpoint_id DESC on the key) and a
    # checkpoint's writes.
    """
    CREATE TABLE checkpoints (
        thread_id     TEXT NOT NULL,
        namespace     TEXT NOT NULL,
        checkpoint_id TEXT NOT NULL,
        parent_id     TEXT,
        run_id        TEXT,
        type          TEXT NOT NULL,
        metadata      TEXT NOT NULL,
        created_at    REAL NOT NULL,
        data          BLOB NOT NULL,
        PRIMARY KEY (thread_id, namespace, checkpoint_id)
    );
    CREATE INDEX checkpoints_run ON checkpoints (run_id) WHERE run_id IS NOT NULL;

    CREATE TABLE checkpoint_writes (
        thread_id     TEXT NOT NULL,
        namespace     TEXT NOT NULL,
        checkpoint_id TEXT NOT NULL,
        task_id       TEXT NOT NULL,
        idx           INTEGER NOT NULL,
        task_path     TEXT NOT NULL,
        channel       TEXT NOT NULL,
        type          TEXT NOT NULL,
        data          BLOB NOT NULL,
        PRIMARY KEY (thread_id, namespace, checkpoint_id, task_id, idx)
    );
    """,
    # ---- version 3: a step write touches only the step's own pages (`stores.sqlite_journal`) --
    # Run totals are summed from the steps of runs that have not ended, so a step write no longer
    # updates its run row; ``list_steps`` sorts a run's steps by ``seq`` itself.
    """
    DROP INDEX IF EXISTS steps_run_seq;
    """,
    # ---- version 4: who announced an approval (`Store.claim_announcement`: Slack posts) -------
    """
    ALTER TABLE approvals ADD COLUMN announced_by TEXT;
    """,
]

_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS agentspan_migrations (version INTEGER PRIMARY KEY, applied_at REAL)"
)


def split_script(script: str) -> Iterator[str]:
    """Yields the complete SQL statements of a script (trigger bodies stay whole)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending.strip()
            pending = ""
    if pending.strip(" \t\r\n;"):
        yield pending.strip()


def applied_migrations(conn: sqlite3.Connection, *, create: bool, path: str) -> set[int]:
    """The schema versions a database holds, read without writing anything (a file that is
    refused is left exactly as it was).

    Raises:
        StoreError: As `migrate`.
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    applied: set[int] = set()
    if "agentspan_migrations" in tables:
        applied = {r[0] for r in conn.execute("SELECT version FROM agentspan_migrations")}
    elif tables:
        raise StoreError(f"{path} is not a valid Agentspan store (it holds other tables)")
    elif not create:
        raise StoreError(f"no Agentspan store at {path} (the database is empty)")
    newest = max(applied, default=0)
    if newest > len(MIGRATIONS):
        raise StoreError(
            f"the Agentspan store at {path} has schema version {newest}, newer than this version "
            f"of Agentspan supports ({len(MIGRATIONS)}); upgrade agentspan"
        )
    return applied


def migrate(conn: sqlite3.Connection, *, create: bool, path: str) -> None:
    """Brings the schema up to date, applying each missing migration in its own transaction.

    Args:
        conn: An autocommit connection (``isolation_level=None``).
        create: Whether a database without the Agentspan schema may be initialised.
        path: The database path, for error messages.

    Raises:
        StoreError: The database holds other tables but no Agentspan schema, or it was written by
            a newer Agentspan (unknown schema version).
    """
    applied = applied_migrations(conn, create=create, path=path)
    for version, script in enumerate(MIGRATIONS, start=1):
        if version in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")  # another process may be migrating: check again inside
        try:
            conn.execute(_MIGRATIONS_TABLE)
            done = conn.execute("SELECT 1 FROM agentspan_migrations WHERE version=?", (version,)).fetchone()
            if done is None:
                for statement in split_script(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO agentspan_migrations (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _enable_wal(conn: sqlite3.Connection, *, deadline_s: float = 10.0) -> str:
    """Switches the database to WAL mode and returns the journal mode now in force.

    Converting a fresh file to WAL needs an exclusive lock, and SQLite reports ``database is
    locked`` at once (without calling the busy handler) when several connections race to do it.
    The switch is retried with a short backoff until ``deadline_s`` has passed.
    """
    give_up_at = time.monotonic() + deadline_s
    delay = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + delay > give_up_at:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


BUSY_TIMEOUT = 10.0
"""Seconds a statement waits for another connection's write lock before it fails."""


def open_database(path: str, *, durability: str, create: bool) -> sqlite3.Connection:
    """Opens (creating and migrating as allowed) an Agentspan SQLite database.

    The connection is in autocommit mode (``isolation_level=None``: transactions are explicit),
    shareable between threads (the caller serialises its use), in WAL mode with
    ``synchronous=NORMAL`` (``"normal"``) or ``FULL`` (``"full"``) and a 10 s busy timeout.

    Raises:
        StoreError: The file is missing (with ``create=False``), is not a valid Agentspan store,
            or cannot be opened.
    """
    file = Path(path)
    if not file.exists():
        if not create:
            raise StoreError(f"no Agentspan store at {path}")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the Agentspan store at {path}: {exc}") from exc
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the Agentspan store at {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        applied_migrations(conn, create=create, path=path)  # before WAL mode: a refused file stays as it was
        mode = _enable_wal(conn)
        if str(mode).lower() != "wal":
            raise StoreError(f"the Agentspan store at {path} cannot use WAL mode (journal_mode={mode})")
        conn.execute("PRAGMA synchronous=FULL" if durability == "full" else "PRAGMA synchronous=NORMAL")
        migrate(conn, create=create, path=path)
    except sqlite3.Error as exc:
        conn.close()
        name = getattr(exc, "sqlite_errorname", "")
        if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in str(exc):
            raise StoreError(f"{path} is not a valid Agentspan store ({exc})") from exc
        raise StoreError(f"cannot open the Agentspan store at {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


# ---- statements ----------------------------------------------------------------------------
# Constant SQL strings, so sqlite3's statement cache reuses the prepared statements.
GET_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE id=?"
RUN_BY_KEY = f"SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key=?"
INSERT_RUN = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * len(RUN_FIELDS))})"
RUN_STATE = "SELECT status, lease_epoch, error FROM runs WHERE id=?"
UPDATE_RUN = (
    "UPDATE runs SET status=COALESCE(:status, status), output=COALESCE(:output, output), "
    "error=COALESCE(:error, error), updated_at=:now, "
    "lease_owner=CASE WHEN :release THEN NULL ELSE lease_owner END, "
    "lease_expires_at=CASE WHEN :release THEN NULL ELSE lease_expires_at END "
    "WHERE id=:id AND lease_epoch=:epoch AND (status!='cancelled' OR :cancelling)"
)
CANCEL_RUN = (
    "UPDATE runs SET status='cancelled', error=?, updated_at=? "
    "WHERE id=? AND status IN ('pending', 'running', 'waiting')"
)
EXPIRE_APPROVALS_OF_RUN = (  # a cancelled run's pending approvals can no longer be decided
    "UPDATE approvals SET status='expired', decided_at=?, reason=? WHERE run_id=? AND status='pending'"
)
CLAIM_RUN = (
    "UPDATE runs SET lease_owner=?, lease_expires_at=?, lease_epoch=lease_epoch+1, updated_at=? "
    "WHERE id=? AND lease_epoch=? AND status IN ('pending', 'running', 'waiting')"
)
RENEW_LEASE = "UPDATE runs SET lease_expires_at=? WHERE id=? AND lease_epoch=?"
CLAIMABLE = (  # `+a.status`: look approvals up by run, not by the (large) pending status
    f"SELECT {RUN_COLUMNS} FROM runs r WHERE r.status IN ('pending', 'running', 'waiting') "
    "AND (r.lease_owner IS NULL OR r.lease_expires_at IS NULL OR r.lease_expires_at < :now) "
    "AND (r.status != 'waiting' OR NOT EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = r.id "
    "AND +a.status = 'pending' AND (a.expires_at IS NULL OR a.expires_at > :now)))"
)
FENCE_START = (
    "UPDATE runs SET updated_at=?, steps=steps+? WHERE id=? AND lease_epoch=? AND status!='cancelled'"
)
FENCE_FINISH = (
    "UPDATE runs SET updated_at=?, input_tokens=input_tokens+?, output_tokens=output_tokens+?, "
    "cost_usd=cost_usd+? WHERE id=? AND lease_epoch=? AND status!='cancelled'"
)
FENCE_RECORD = (  # a new step that already ended: count it and add its metrics in one update
    "UPDATE runs SET updated_at=?, steps=steps+1, input_tokens=input_tokens+?, "
    "output_tokens=output_tokens+?, cost_usd=cost_usd+? WHERE id=? AND lease_epoch=? AND status!='cancelled'"
)
INSERT_STEP = (
    f"INSERT INTO steps ({STEP_COLUMNS}) VALUES ({', '.join('?' * len(STEP_FIELDS))}) "
    "ON CONFLICT (run_id, key) DO NOTHING"
)
REPLACE_STEP = (  # a re-attempt of a key that is not completed keeps its seq
    "UPDATE steps SET "
    + ", ".join(f"{f}=?" for f in STEP_FIELDS[3:])
    + " WHERE run_id=? AND key=? AND status!='completed'"
)
FINISH_STEP = (
    "UPDATE steps SET status=?, output=?, error=?, ended_at=?, "
    "duration_ms=COALESCE(?, (? - started_at) * 1000.0), provider=COALESCE(?, provider), "
    "model=COALESCE(?, model), input_tokens=COALESCE(?, input_tokens), "
    "output_tokens=COALESCE(?, output_tokens), cost_usd=COALESCE(?, cost_usd) "
    "WHERE run_id=? AND key=? AND status='started'"
)
LIST_STEPS = (
    "SELECT r.id, "
    + ", ".join(f"s.{c.strip()}" for c in STEP_COLUMNS.split(","))
    + " FROM runs r LEFT JOIN steps s ON s.run_id = r.id WHERE r.id=? ORDER BY s.seq"
)
GET_APPROVAL = f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id=?"
CLAIM_ANNOUNCEMENT = "UPDATE approvals SET announced_by=? WHERE id=? AND (announced_by IS NULL OR announced_by=?)"
APPROVAL_EXISTS = "SELECT 1 FROM approvals WHERE id=?"
FIND_APPROVAL = f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id=? AND step_key=?"
INSERT_APPROVAL = (
    f"INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ({', '.join('?' * len(APPROVAL_FIELDS))})"
)
WAIT_RUN = (
    "UPDATE runs SET status='waiting', updated_at=? WHERE id=? AND lease_epoch=? AND status!='cancelled'"
)
DECIDE = (
    "UPDATE approvals SET status=?, decided_by=?, decided_at=?, reason=? "
    "WHERE id=? AND status='pending' AND (expires_at IS NULL OR expires_at > ?)"
)
