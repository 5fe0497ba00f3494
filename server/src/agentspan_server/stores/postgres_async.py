"""The server's asyncio path to PostgreSQL: the hot `Store` calls run on the event loop.

Calling the synchronous `PostgresStore` from the server costs a thread hand-off per request (and
the worker threads contend with the event loop for the GIL). `AsyncPostgresPath` runs the calls a
journaling worker makes all the time (`HOT_CALLS`: step writes, lease renewal, run and step reads,
checkpoint puts and gets) on the server's own event loop through psycopg's `AsyncConnectionPool`,
executing the very plans the synchronous store executes (`postgres_journal`,
`postgres_checkpoints`), so both answer with the same results and the same errors. Every other
call keeps going through the synchronous store.

The asyncio pool belongs to one event loop: it opens lazily on the first call (or in the app's
lifespan) and is closed by `aclose` (the app's lifespan shutdown). A call made from another event
loop runs the same plan on the synchronous store, on a worker thread.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Generator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import psycopg
from psycopg_pool import AsyncConnectionPool

from agentspan.stores.base import unstorable
from agentspan_server.stores import postgres_checkpoints as checkpoints
from agentspan_server.stores import postgres_journal as journal
from agentspan_server.stores.postgres_pool import InTransaction, Outcome, Plan, Statement

if TYPE_CHECKING:
    from agentspan_server.stores.postgres import PostgresStore

__all__ = ["HOT_CALLS", "AsyncPostgresPath", "adrive"]

_T = TypeVar("_T")

HOT_CALLS: Mapping[str, Callable[..., Plan[Any]]] = MappingProxyType({
    "get_run": journal.get_run,
    "renew_lease": journal.renew_lease,
    "start_step": journal.start_step,
    "finish_step": journal.finish_step,
    "record_step": journal.record_step,
    "list_steps": journal.list_steps,
    "put_checkpoint": checkpoints.put_checkpoint,
    "put_checkpoint_writes": checkpoints.put_checkpoint_writes,
    "put_checkpoint_with_writes": checkpoints.put_checkpoint_with_writes,
    "get_checkpoint": checkpoints.get_checkpoint,
})  # fmt: skip
"""The `Store` methods served on the event loop, each with the plan taking the method's arguments."""


async def adrive(plan: Generator[Statement, Outcome, _T], cur: psycopg.AsyncCursor[Any]) -> _T:
    """Runs a plan's statements on an asyncio cursor (`postgres_pool.drive`, awaited)."""
    try:
        statement = next(plan)
        while True:
            await cur.execute(statement.query, statement.params, binary=statement.binary, prepare=statement.prepare)
            rows = await cur.fetchall() if cur.rownumber is not None else []
            statement = plan.send(Outcome(rows, cur.rowcount))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class AsyncPostgresPath:
    """The `HOT_CALLS` of a `PostgresStore`, awaited on the event loop.

    Args:
        store: The store whose database, pool sizes and error messages are used, and which serves
            calls made from an event loop other than the pool's.
    """

    names: frozenset[str] = frozenset(HOT_CALLS)
    """The `Store` methods this path serves."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._pool: AsyncConnectionPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cursors: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], psycopg.AsyncCursor[Any]] = (
            weakref.WeakKeyDictionary()
        )

    async def open(self) -> None:
        """Opens the pool on the running event loop (connections are made in the background)."""
        if self._pool is None:
            self._pool, self._loop = self._store.async_pool(), asyncio.get_running_loop()
            await self._pool.open()

    async def aclose(self) -> None:
        """Closes the pool, if it was opened on the running event loop; a later call opens a new one."""
        pool, self._pool = self._pool, None
        if pool is not None and self._loop is asyncio.get_running_loop():
            await pool.close()

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Runs the hot call ``name`` with the `Store` method's arguments.

        Raises:
            The `Store` method's errors (`StoreError` for database failures, password-free).
        """
        plan = HOT_CALLS[name](*args, **kwargs)
        if self._pool is None:
            await self.open()
        if self._loop is not asyncio.get_running_loop():  # the pool cannot serve another loop
            return await anyio.to_thread.run_sync(self._store._run, plan)
        assert self._pool is not None
        return await self._run(self._pool, plan)

    async def _run(self, pool: AsyncConnectionPool, plan: Plan[_T], *, transaction: bool = False) -> _T:
        """`PostgresPool._run` on the asyncio pool.

        The connection is taken and given back without ``pool.connection()``'s context (whose
        exit commits: nothing to do on these autocommit connections, but an awaited lock), and
        each connection keeps one cursor: together ~30 us of CPU less per call. A connection
        given back mid-transaction or mid-statement (an error, a cancellation) is rolled back or
        replaced by the pool.
        """
        try:
            conn = await pool.getconn()  # (PoolTimeout is a psycopg.Error too)
            try:
                cursor = self._cursors.get(conn)
                if cursor is None or cursor.closed:
                    cursor = self._cursors[conn] = conn.cursor()
                if transaction:
                    async with conn.transaction():
                        result = await adrive(plan, cursor)
                else:
                    result = await adrive(plan, cursor)
            finally:
                await pool.putconn(conn)
        except psycopg.Error as exc:
            raise self._store._error(exc) from exc
        except UnicodeEncodeError as exc:  # text PostgreSQL cannot take (a lone surrogate)
            raise unstorable(self._store.url, exc) from exc
        if isinstance(result, InTransaction):
            return await self._run(pool, result.plan, transaction=True)
        return result
