"""How long a PostgreSQL store waits for a connection: under the HTTP client's timeout, so that with
the database down (or every connection busy) a server answers 503 before the client gives up on
its request and sends it again (psycopg_pool alone waits 30 s)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentspan.errors import ConfigurationError, RunNotFound, StoreError
from agentspan.stores.remote import RemoteStore
from agentspan_server.app import create_app
from agentspan_server.stores.postgres import PostgresStore
from agentspan_server.stores.postgres_async import AsyncPostgresPath
from agentspan_server.stores.postgres_pool import DEFAULT_POOL_TIMEOUT

from pg_cluster import PgCluster, PgUnavailable
from server_support import thread_server


@pytest.fixture
def store(pg_db: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(pg_db, max_size=1, pool_timeout=0.5)
    yield opened
    opened.close()


def _holding(pool: Any) -> tuple[threading.Event, threading.Thread]:
    """Takes the sync pool's only connection in a thread until the returned event is set."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pool.connection():
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10)
    return release, thread


def test_the_default_wait_is_under_the_http_clients_timeout(pg_db: str) -> None:
    import inspect

    client_timeout = inspect.signature(RemoteStore).parameters["timeout"].default
    assert DEFAULT_POOL_TIMEOUT < client_timeout
    opened = PostgresStore(pg_db)
    try:
        assert opened.pool_timeout == DEFAULT_POOL_TIMEOUT
        assert opened._pool.timeout == DEFAULT_POOL_TIMEOUT
        assert opened.async_pool().timeout == DEFAULT_POOL_TIMEOUT
    finally:
        opened.close()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "5", True])
def test_a_bad_wait_is_refused(pg_db: str, bad: float) -> None:
    with pytest.raises(ConfigurationError, match="pool_timeout"):
        PostgresStore(pg_db, pool_timeout=bad)


def test_a_call_that_finds_no_free_connection_fails_after_the_wait(store: PostgresStore) -> None:
    release, thread = _holding(store._pool)
    started = time.monotonic()
    with pytest.raises(StoreError, match="couldn't get a connection") as raised:
        store.get_run("r-1")
    waited = time.monotonic() - started
    assert 0.4 <= waited < 3, waited
    assert store.url in str(raised.value)
    release.set()
    thread.join(10)
    with pytest.raises(RunNotFound):  # the connection back: the store works again
        store.get_run("r-1")


def test_the_servers_asyncio_pool_waits_as_long(store: PostgresStore) -> None:
    async def scenario() -> float:
        path = AsyncPostgresPath(store)
        await path.open()
        assert path._pool is not None
        conn = await path._pool.getconn()  # its only connection
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="couldn't get a connection"):
                await path.call("get_run", "r-1")
            return time.monotonic() - started
        finally:
            await path._pool.putconn(conn)
            await path.aclose()

    waited = asyncio.run(scenario())
    assert 0.4 <= waited < 3, waited


def test_with_the_database_down_a_server_answers_503_within_the_wait() -> None:
    try:
        cluster = PgCluster()
    except PgUnavailable as exc:
        pytest.skip(f"PostgreSQL is not installed: {exc}")
    cluster.start()
    try:
        url = cluster.create_database("outage")
        store = PostgresStore(url, max_size=2, pool_timeout=1.0)
        try:
            with thread_server(create_app(store)) as base:
                assert httpx.get(f"{base}/api/runs", timeout=10).status_code == 200
                cluster.stop()  # at once (-m immediate): the pooled connections break
                for _ in range(3):  # broken connections first, then none to be had
                    started = time.monotonic()
                    answer = httpx.get(f"{base}/api/runs", timeout=10)
                    waited = time.monotonic() - started
                    assert answer.status_code == 503, answer.text
                    assert "StoreError" in answer.text
                    assert waited < 4, waited  # psycopg_pool's own default: 30 s
        finally:
            store.close()
    finally:
        cluster.stop()
