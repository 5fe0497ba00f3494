"""Schema and migrations of the PostgreSQL store.

The store creates and migrates its own schema (in the connection's current schema, normally
``public``). `MIGRATIONS` is an ordered list of SQL scripts: the script at list position ``i`` is
schema version ``i + 1``. Applied versions are recorded in ``agentspan_migrations``; each missing
migration runs in its own transaction that first takes a transaction-scoped advisory lock and then
checks again whether the version is applied, so several processes opening the same fresh
database apply it exactly once.

The checkpoint tables (version 2) are this store's own (their SQL lives in `postgres_checkpoints`):
checkpoint and write ``data`` is BYTEA, ``metadata`` JSON TEXT (see `postgres_schema`).
"""

from __future__ import annotations

import time

import psycopg

from agentspan.errors import StoreError

__all__ = ["MIGRATION_LOCK", "MIGRATIONS", "migrate"]

MIGRATIONS: list[str] = [
    # ---- version 1: runs, steps, approvals ------------------------------------------------
    """
    CREATE TABLE runs (
        id               TEXT COLLATE "C" PRIMARY KEY,
        framework        TEXT NOT NULL,
        agent            TEXT NOT NULL,
        input            TEXT,
        status           TEXT NOT NULL,
        output           TEXT,
        error            TEXT,
        session_id       TEXT,
        idempotency_key  TEXT UNIQUE,
        parent_run_id    TEXT COLLATE "C",
        created_at       DOUBLE PRECISION NOT NULL,
        updated_at       DOUBLE PRECISION NOT NULL,
        lease_owner      TEXT,
        lease_expires_at DOUBLE PRECISION,
        lease_epoch      BIGINT NOT NULL DEFAULT 0,
        input_tokens     BIGINT NOT NULL DEFAULT 0,
        output_tokens    BIGINT NOT NULL DEFAULT 0,
        cost_usd         DOUBLE PRECISION NOT NULL DEFAULT 0,
        steps            BIGINT NOT NULL DEFAULT 0,
        options          TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX runs_status ON runs (status, id);
    CREATE INDEX runs_agent ON runs (agent, id);
    CREATE INDEX runs_session ON runs (session_id) WHERE session_id IS NOT NULL;
    CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
    CREATE INDEX runs_claimable ON runs (id) WHERE status IN ('pending', 'running', 'waiting');

    CREATE TABLE steps (
        run_id        TEXT COLLATE "C" NOT NULL,
        key           TEXT COLLATE "C" NOT NULL,
        seq           BIGINT NOT NULL,
        kind          TEXT NOT NULL,
        name          TEXT,
        status        TEXT NOT NULL,
        input         TEXT,
        input_hash    TEXT,
        output        TEXT,
        error         TEXT,
        attempt       BIGINT NOT NULL,
        started_at    DOUBLE PRECISION NOT NULL,
        ended_at      DOUBLE PRECISION,
        duration_ms   DOUBLE PRECISION,
        provider      TEXT,
        model         TEXT,
        input_tokens  BIGINT,
        output_tokens BIGINT,
        cost_usd      DOUBLE PRECISION,
        PRIMARY KEY (run_id, key)
    );
    CREATE INDEX steps_run_seq ON steps (run_id, seq);

    CREATE TABLE approvals (
        id           TEXT COLLATE "C" PRIMARY KEY,
        run_id       TEXT COLLATE "C" NOT NULL,
        step_key     TEXT COLLATE "C" NOT NULL,
        tool         TEXT NOT NULL,
        args         TEXT,
        args_hash    TEXT NOT NULL,
        status       TEXT NOT NULL,
        requested_at DOUBLE PRECISION NOT NULL,
        expires_at   DOUBLE PRECISION,
        decided_by   TEXT,
        decided_at   DOUBLE PRECISION,
        reason       TEXT,
        UNIQUE (run_id, step_key)
    );
    CREATE INDEX approvals_status ON approvals (status, id);
    """,
    # ---- version 2: checkpoints of frameworks that keep their own state (LangGraph) -------------
    # The store never decodes ``data``: BYTEA, as given. ``metadata`` is compact JSON TEXT like the
    # other JSON columns (filtered through ``::json``, which accepts every value TEXT holds).
    """
    CREATE TABLE checkpoints (
        thread_id     TEXT COLLATE "C" NOT NULL,
        namespace     TEXT COLLATE "C" NOT NULL,
        checkpoint_id TEXT COLLATE "C" NOT NULL,
        parent_id     TEXT COLLATE "C",
        type          TEXT NOT NULL,
        data          BYTEA NOT NULL,
        metadata      TEXT NOT NULL DEFAULT '{}',
        run_id        TEXT COLLATE "C",
        created_at    DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (thread_id, namespace, checkpoint_id)
    );
    CREATE INDEX checkpoints_run ON checkpoints (run_id) WHERE run_id IS NOT NULL;

    CREATE TABLE checkpoint_writes (
        thread_id     TEXT COLLATE "C" NOT NULL,
        namespace     TEXT COLLATE "C" NOT NULL,
        checkpoint_id TEXT COLLATE "C" NOT NULL,
        task_id       TEXT COLLATE "C" NOT NULL,
        idx           BIGINT NOT NULL,
        task_path     TEXT COLLATE "C" NOT NULL,
        channel       TEXT NOT NULL,
        type          TEXT NOT NULL,
        data          BYTEA NOT NULL,
        PRIMARY KEY (thread_id, namespace, checkpoint_id, task_id, idx)
    );
    """,
    # ---- version 3: who announced an approval (`Store.claim_announcement`: Slack posts) -------
    """
    ALTER TABLE approvals ADD COLUMN announced_by TEXT;
    """,
]

MIGRATION_LOCK = 0x6167_656E_7473_7061  # "agentspa": the advisory lock key serialising migrations
_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS agentspan_migrations "
    "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
)
_TABLES = (
    "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
)


def _check_newest(applied: set[int], where: str) -> None:
    newest = max(applied, default=0)
    if newest > len(MIGRATIONS):
        raise StoreError(
            f"the Agentspan store at {where} has schema version {newest}, newer than this version "
            f"of Agentspan supports ({len(MIGRATIONS)}); upgrade agentspan"
        )


def migrate(conn: psycopg.Connection, *, create: bool, where: str) -> None:
    """Brings the schema up to date, applying each missing migration in its own transaction.

    Args:
        conn: An autocommit connection.
        create: Whether a database without the Agentspan schema may be initialised.
        where: The database, password removed, for error messages.

    Raises:
        StoreError: The schema holds other tables but no Agentspan schema, it is empty and
            ``create`` is false, or it was written by a newer Agentspan (unknown schema version).
    """
    tables = {r[0] for r in conn.execute(_TABLES)}
    applied: set[int] = set()
    if "agentspan_migrations" in tables:
        applied = {r[0] for r in conn.execute("SELECT version FROM agentspan_migrations")}
    elif tables:
        raise StoreError(f"{where} is not a valid Agentspan store (it holds other tables)")
    elif not create:
        raise StoreError(f"no Agentspan store at {where} (the database is empty)")
    _check_newest(applied, where)
    for version, script in enumerate(MIGRATIONS, start=1):
        if version in applied:
            continue
        with conn.transaction():  # another process may be migrating: lock, then check again
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(_MIGRATIONS_TABLE)
            applied = {r[0] for r in conn.execute("SELECT version FROM agentspan_migrations")}
            _check_newest(applied, where)
            if version not in applied:
                conn.execute(script)  # type: ignore[arg-type]  # no parameters: several statements
                conn.execute(
                    "INSERT INTO agentspan_migrations (version, applied_at) VALUES (%s, %s)",
                    (version, time.time()),
                )
