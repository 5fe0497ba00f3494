"""The store conformance suite against PostgresStore, plus PostgreSQL-specific tests.

A throwaway PostgreSQL cluster starts once per session (`pg_cluster`); each test gets a fresh
database.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from agentspan.errors import ConfigurationError, LeaseLostError, StoreError
from agentspan.records import RunStatus, StepResult, StepStatus
from agentspan.stores.base import Store
from agentspan.testing.conformance import StoreConformance, make_run, make_step
from agentspan_server.stores.postgres import PostgresStore, redact_url
from agentspan_server.stores.postgres_schema import MIGRATIONS

from pg_cluster import free_port

_VERSIONS = "SELECT version, applied_at FROM agentspan_migrations ORDER BY version"


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def store(self, pg_db: str) -> Iterator[Store]:
        store = PostgresStore(pg_db)
        yield store
        store.close()


def _fetch(url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


# ---- migrations --------------------------------------------------------------------------------
def test_migrations_recorded_once(pg_db: str) -> None:
    PostgresStore(pg_db).close()
    first = _fetch(pg_db, _VERSIONS)
    assert [v for v, _ in first] == list(range(1, len(MIGRATIONS) + 1))
    store = PostgresStore(pg_db, create=False)
    store.create_run(make_run())
    store.close()
    assert _fetch(pg_db, _VERSIONS) == first
    tables = {r[0] for r in _fetch(pg_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"runs", "steps", "approvals", "checkpoints", "checkpoint_writes", "agentspan_migrations"}


def test_concurrent_first_open_from_threads_migrates_once(pg_db: str) -> None:
    barrier = threading.Barrier(6)
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        barrier.wait()
        try:
            opened.append(PostgresStore(pg_db, max_size=2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in opened:
        store.close()
    assert errors == [] and len(opened) == 6
    assert [v for v, _ in _fetch(pg_db, _VERSIONS)] == list(range(1, len(MIGRATIONS) + 1))


_OPEN_CHILD = textwrap.dedent(
    """
    import sys
    from agentspan_server.stores.postgres import PostgresStore

    print("ready", flush=True)
    sys.stdin.readline()  # the parent releases all children at once
    store = PostgresStore(sys.argv[1], min_size=1, max_size=1)
    store.list_runs()
    store.close()
    """
)


def test_concurrent_first_open_from_processes_migrates_once(pg_db: str) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_CHILD, pg_db],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    assert [v for v, _ in _fetch(pg_db, _VERSIONS)] == list(range(1, len(MIGRATIONS) + 1))


def test_newer_schema_refused(pg_db: str) -> None:
    PostgresStore(pg_db).close()
    _fetch(pg_db, "INSERT INTO agentspan_migrations VALUES (%s, 0)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StoreError, match="newer"):
        PostgresStore(pg_db)


def test_foreign_database_refused(pg_db: str) -> None:
    _fetch(pg_db, "CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match="not a valid Agentspan store"):
        PostgresStore(pg_db)


def test_empty_database_without_create(pg_db: str) -> None:
    with pytest.raises(StoreError, match="no Agentspan store"):
        PostgresStore(pg_db, create=False)
    assert _fetch(pg_db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


# ---- connections -------------------------------------------------------------------------------
def test_unreachable_server_fails_fast_without_the_password() -> None:
    url = f"postgresql://agentspan:s3cret-Pa55@127.0.0.1:{free_port()}/agentspan_db?connect_timeout=2"
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        PostgresStore(url)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "s3cret-Pa55" not in message and "s3cret-Pa55" not in repr(info.value)
    assert "127.0.0.1" in message and "agentspan_db" in message


def test_missing_database(postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(StoreError, match="no_such_db"):
        PostgresStore(url)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgres://u:p%40w@h/db?sslmode=require&password=pw", "postgres://u@h/db?sslmode=require"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("host=h dbname=db password=pw user=u", "host=h dbname=db user=u"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_repr_hides_the_password(pg_db: str) -> None:
    url = pg_db.replace("postgres@", "postgres:ignored-by-trust@")
    store = PostgresStore(url)
    try:
        assert "ignored-by-trust" not in repr(store) and repr(store) == f"PostgresStore({pg_db!r})"
    finally:
        store.close()


@pytest.mark.parametrize(("min_size", "max_size"), [(-1, 5), (3, 2), (0, 0)])
def test_bad_pool_sizes(min_size: int, max_size: int) -> None:
    with pytest.raises(ConfigurationError):
        PostgresStore("postgresql://u:pw@127.0.0.1:1/db", min_size=min_size, max_size=max_size)


def test_closed_store_raises_store_error(pg_db: str) -> None:
    store = PostgresStore(pg_db)
    store.close()
    with pytest.raises(StoreError):
        store.list_runs()


def test_non_durable_start_is_local_to_its_transaction(pg_db: str) -> None:
    store = PostgresStore(pg_db, min_size=1, max_size=1)  # one connection: the setting would leak into it
    try:
        run, _ = store.create_run(make_run())
        store.claim_run(run.id, owner="me", expected_epoch=0, lease_expires_at=time.time() + 30)
        store.start_step(make_step(run.id, "tool:0", 0), epoch=1, durable=False)
        with pytest.raises(LeaseLostError):
            store.start_step(make_step(run.id, "tool:1", 1), epoch=7, durable=False)
        with store._pool.connection() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert [s.key for s in store.list_steps(run.id)] == ["tool:0"]
    finally:
        store.close()


# ---- several instances on one database ---------------------------------------------------------
def _claim_race(stores: list[PostgresStore], run_id: str, expected_epoch: int) -> tuple[list[str], list[str]]:
    barrier = threading.Barrier(len(stores))
    winners: list[str] = []
    losers: list[str] = []

    def claim(store: PostgresStore, name: str) -> None:
        barrier.wait()
        try:
            store.claim_run(run_id, owner=name, expected_epoch=expected_epoch, lease_expires_at=time.time() + 60)
            winners.append(name)
        except LeaseLostError:
            losers.append(name)

    threads = [threading.Thread(target=claim, args=(s, f"w{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return winners, losers


def _start_race(stores: list[PostgresStore], epochs: list[int], run_id: str) -> list[str]:
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def start(store: PostgresStore, epoch: int) -> None:
        barrier.wait()
        try:
            store.start_step(make_step(run_id, "tool:0", 0), epoch=epoch)
            outcomes.append("ok")
        except LeaseLostError:
            outcomes.append("lost")

    threads = [threading.Thread(target=start, args=(s, e)) for s, e in zip(stores, epochs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_two_instances_claim_race_and_stale_step_writes(pg_db: str) -> None:
    a, b = PostgresStore(pg_db), PostgresStore(pg_db, create=False)
    contenders = [a, b] * 4
    try:
        for _ in range(5):
            run = a.create_run(make_run())[0]
            winners, losers = _claim_race(contenders, run.id, 0)
            assert len(winners) == 1 and len(losers) == len(contenders) - 1
            assert (b.get_run(run.id).lease_owner, a.get_run(run.id).lease_epoch) == (winners[0], 1)

            # every contender now races start_step on one key; only the epoch-1 holder may write
            epochs = [1, 1] + [0] * (len(contenders) - 2)  # two racing attempts by the holder
            outcomes = _start_race(contenders, epochs, run.id)
            assert sorted(outcomes) == ["lost"] * (len(contenders) - 2) + ["ok", "ok"]
            rows = _fetch(pg_db, "SELECT count(*) FROM steps WHERE run_id = %s", (run.id,))
            assert rows == [(1,)]
            assert a.get_run(run.id).steps == 1 and [s.key for s in b.list_steps(run.id)] == ["tool:0"]

            # b takes the run over; a's stale writes are refused and change nothing
            b.claim_run(run.id, owner="b", expected_epoch=1, lease_expires_at=time.time() + 60)
            with pytest.raises(LeaseLostError):
                a.finish_step(run.id, "tool:0", StepResult(status=StepStatus.COMPLETED), epoch=1)
            with pytest.raises(LeaseLostError):
                a.update_run(run.id, epoch=1, status=RunStatus.COMPLETED)
            b.finish_step(run.id, "tool:0", StepResult(status=StepStatus.COMPLETED, input_tokens=2), epoch=2)
            assert a.get_run(run.id).input_tokens == 2
    finally:
        a.close()
        b.close()


def test_concurrent_idempotent_creates_insert_one_run(pg_db: str) -> None:
    stores = [PostgresStore(pg_db) for _ in range(2)]
    try:
        barrier = threading.Barrier(6)
        results: list[tuple[str, bool]] = []

        def create(store: PostgresStore) -> None:
            barrier.wait()
            run, inserted = store.create_run(make_run(idempotency_key="order-1"))
            results.append((run.id, inserted))

        threads = [threading.Thread(target=create, args=(stores[n % 2],)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 6 and sum(inserted for _, inserted in results) == 1
        assert len({run_id for run_id, _ in results}) == 1
    finally:
        for store in stores:
            store.close()
