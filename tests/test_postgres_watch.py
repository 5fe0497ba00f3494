"""`agentspan_server.stores.postgres_watch`: a connection's socket stays registered with the event loop
between statements, and is unregistered when idle traffic, a lost server, a cancellation or a close
would otherwise leave the loop watching a dead or reused descriptor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
import uvloop

from agentspan_server.stores.postgres_watch import WatchedConnection


class RecordingLoop(asyncio.SelectorEventLoop):
    """An asyncio loop recording reader registrations (``("add" | "remove", fd)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:
        self.calls.append(("add", fd))
        super().add_reader(fd, callback, *args)

    def remove_reader(self, fd: Any) -> bool:
        self.calls.append(("remove", fd))
        return super().remove_reader(fd)

    def watching(self, fd: int) -> bool:
        return fd in self._selector.get_map()  # type: ignore[union-attr]


def run_on(loop: asyncio.AbstractEventLoop, scenario: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return loop.run_until_complete(scenario())
    finally:
        loop.close()


def terminate_backends(url: str) -> None:
    server, dbname = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )


def test_the_socket_is_registered_once_for_many_statements_and_unregistered_at_close(pg_db: str) -> None:
    loop = RecordingLoop()

    async def scenario() -> list[int]:
        conn = await WatchedConnection.connect(pg_db, autocommit=True)
        fd = conn.pgconn.socket
        loop.calls.clear()  # (connecting is psycopg's own wait)
        values = [(await (await conn.execute("SELECT %s::int", (i,))).fetchone())[0] for i in range(20)]
        async with conn.transaction():
            await conn.execute("SELECT 1")
        assert loop.calls == [("add", fd)] and loop.watching(fd)
        await conn.close()
        assert loop.calls == [("add", fd), ("remove", fd)] and not loop.watching(fd)
        return values

    assert run_on(loop, scenario) == list(range(20))


def test_idle_traffic_unregisters_the_socket_and_a_lost_server_fails_the_next_statement(pg_db: str) -> None:
    """The server ends an idle connection: the loop stops watching it at once (no busy loop on a
    readable socket) and the next statement raises instead of waiting."""
    loop = RecordingLoop()

    async def scenario() -> None:
        conn = await WatchedConnection.connect(pg_db, autocommit=True)
        fd = conn.pgconn.socket
        loop.calls.clear()  # (connecting is psycopg's own wait)
        await conn.execute("SELECT 1")
        terminate_backends(pg_db)
        deadline = time.monotonic() + 5
        while loop.watching(fd) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not loop.watching(fd) and loop.calls == [("add", fd), ("remove", fd)]
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="terminating connection"):
            await conn.execute("SELECT 1")
        assert time.monotonic() - started < 2 and not loop.watching(fd)
        await conn.close()

    run_on(loop, scenario)


def test_under_uvloop_a_connection_lost_mid_statement_fails_it_and_others_keep_working(pg_db: str) -> None:
    """uvloop ends its watch of a socket in error after one last callback: the statement still ends
    (with psycopg's error), and new connections, which may reuse the descriptor, are watched."""
    loop = uvloop.new_event_loop()

    async def scenario() -> None:
        for _ in range(3):
            conn = await WatchedConnection.connect(pg_db, autocommit=True)
            await conn.execute("SELECT 1")
            terminate_backends(pg_db)
            await asyncio.sleep(0.05)
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError):  # (a TimeoutError fails the test)
                for _ in range(3):
                    await asyncio.wait_for(conn.execute("SELECT 1"), 5)
            assert time.monotonic() - started < 2
            await conn.close()
        conn = await WatchedConnection.connect(pg_db, autocommit=True)
        slow = asyncio.ensure_future(conn.execute("SELECT pg_sleep(10)"))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        terminate_backends(pg_db)
        with pytest.raises(psycopg.OperationalError):
            await asyncio.wait_for(slow, 5)
        assert time.monotonic() - started < 2
        await conn.close()
        other = await WatchedConnection.connect(pg_db, autocommit=True)
        assert [(await (await other.execute("SELECT %s::int", (i,))).fetchone())[0] for i in range(5)] == list(range(5))
        await other.close()

    run_on(loop, scenario)


def test_a_cancelled_statement_leaves_the_socket_unwatched(pg_db: str) -> None:
    loop = RecordingLoop()

    async def scenario() -> None:
        conn = await WatchedConnection.connect(pg_db, autocommit=True)
        fd = conn.pgconn.socket
        loop.calls.clear()  # (connecting is psycopg's own wait)
        task = asyncio.ensure_future(conn.execute("SELECT pg_sleep(10)"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not loop.watching(fd)
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.ACTIVE  # the pool closes it
        await conn.close()
        assert not loop.watching(fd)

    run_on(loop, scenario)


def test_a_long_statement_is_rechecked_every_tick_and_ends_normally(pg_db: str) -> None:
    """A statement still waiting after a tick is told "nothing ready" (psycopg waits again) and its
    socket registered anew; it ends with its rows."""
    loop = RecordingLoop()

    async def scenario() -> None:
        conn = await WatchedConnection.connect(pg_db, autocommit=True)
        fd = conn.pgconn.socket
        loop.calls.clear()
        cur = await conn.execute("SELECT pg_sleep(0.45), 7")
        assert (await cur.fetchone())[1] == 7
        adds = loop.calls.count(("add", fd))
        assert 2 <= adds <= 5 and loop.calls.count(("remove", fd)) == adds - 1 and loop.watching(fd)
        await conn.close()

    run_on(loop, scenario)
