"""Asyncio PostgreSQL connections whose socket stays registered with the event loop between statements.

psycopg's asyncio connection waits for each answer by registering its socket with the event loop
(``add_reader``), arming a 0.1 s timer, and unregistering both once the answer came. Under uvloop
(libuv) that is eight system calls per statement (checking the descriptor, adding it, removing it
twice, batching through io_uring), plus the timer and a new reader handle, all on the critical
path of every hot request.

`WatchedConnection` registers its socket once and leaves it registered: a statement's wait only
creates a future, which the reader callback resolves. Readable while no statement waits (a
notice, or the server closing the connection), the socket is unregistered until the next wait,
so an idle connection never keeps the loop busy. It is unregistered before the connection closes,
and when a wait fails (libpq may have closed the socket, as it does when the server goes away);
while registered, the registration holds the connection, so its socket cannot be closed by the
garbage collector behind the event loop's back.

Waits with a timeout (psycopg's cancellation and connection checks) use psycopg's own wait. A
wait interrupted (the task cancelled) leaves the statement running: the connection goes back to
the pool in the ``ACTIVE`` state and the pool closes it, where psycopg would first try to cancel
the statement.
"""

from __future__ import annotations

import asyncio
import select
from typing import Any, TypeVar

import psycopg
from psycopg import waiting

__all__ = ["WatchedConnection"]

_RV = TypeVar("_RV")
_WAIT_R, _WAIT_W = waiting.WAIT_R, waiting.WAIT_W
_READY_R, _READY_W, _READY_NONE = waiting.READY_R, waiting.READY_W, waiting.READY_NONE
CHECK_EVERY = 0.1
"""Seconds between checks of statements still waiting (psycopg's own wait wakes as often)."""


class _SocketWatch:
    """One socket registered with one event loop, resolving the waiting statement's future.

    While registered, the loop's reader holds this watch and the watch its connection.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fileno: int, conn: WatchedConnection) -> None:
        self.loop, self.fileno = loop, fileno
        self._conn = conn
        self._registered = False
        self._waiter: asyncio.Future[int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._seen: asyncio.Future[int] | None = None

    def _readable(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None:  # nobody waits: stop watching until a statement does
            self.stop()
        elif not waiter.done():
            waiter.set_result(_READY_R)

    def _tick(self) -> None:
        """Every `CHECK_EVERY` seconds while statements wait: a wait pending since the last tick
        ends with "nothing ready" (psycopg's generator then waits again), the socket registered
        anew. (uvloop closes its watch of a socket in error after one last callback, which may
        have ended the previous wait: a later wait would wait forever.)"""
        self._timer = None
        waiter = self._waiter
        if waiter is None:
            return
        if waiter is self._seen:
            self._waiter = None
            self.stop()
            if not waiter.done():
                waiter.set_result(_READY_NONE)
            return
        self._seen = waiter
        self._timer = self.loop.call_later(CHECK_EVERY, self._tick)

    async def readable(self) -> int:
        """Waits until the socket is readable; returns psycopg's ``READY_R`` (or ``READY_NONE``
        after a tick, see `_tick`)."""
        if not self._registered:
            self.loop.add_reader(self.fileno, self._readable)
            self._registered = True
        waiter = self._waiter = self.loop.create_future()
        if self._timer is None:
            self._seen, self._timer = None, self.loop.call_later(CHECK_EVERY, self._tick)
        try:
            return await waiter
        finally:
            self._waiter = None

    async def ready(self, wait: int) -> int:
        """Waits for any other readiness psycopg asks for (writing, reading or writing) as psycopg
        does, the socket unregistered first; returns its ``Ready`` flags."""
        ready = _poll_now(self.fileno, wait)
        if ready:
            return ready
        self.stop()
        waiter: asyncio.Future[None] = self.loop.create_future()

        def wake(state: int) -> None:
            nonlocal ready
            ready |= state
            if not waiter.done():
                waiter.set_result(None)

        if wait & _WAIT_R:
            self.loop.add_reader(self.fileno, wake, _READY_R)
        if wait & _WAIT_W:
            self.loop.add_writer(self.fileno, wake, _READY_W)
        try:
            await waiter
        finally:
            if wait & _WAIT_R:
                self.loop.remove_reader(self.fileno)
            if wait & _WAIT_W:
                self.loop.remove_writer(self.fileno)
        return ready

    def stop(self) -> None:
        """Unregisters the socket (a no-op when it is not registered)."""
        if self._registered:
            self._registered = False
            self.loop.remove_reader(self.fileno)

    def close(self) -> None:
        """Unregisters the socket and stops the ticks."""
        self.stop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _poll_now(fileno: int, wait: int) -> int:
    """The socket's readiness for ``wait`` right now (psycopg's ``Ready`` flags)."""
    poller = select.poll()
    poller.register(fileno, (select.POLLIN if wait & _WAIT_R else 0) | (select.POLLOUT if wait & _WAIT_W else 0))
    ready: int = _READY_NONE  # `Ready` flags or-ed together make an int
    for _, events in poller.poll(0):
        if events & select.POLLIN:
            ready |= _READY_R
        if events & select.POLLOUT:
            ready |= _READY_W
    return ready


class WatchedConnection(psycopg.AsyncConnection[Any]):
    """A psycopg `AsyncConnection` keeping its socket registered with the event loop (see the module)."""

    _watch: _SocketWatch | None = None

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        """Consumes a generator operating on the connection (psycopg's `AsyncConnection.wait`)."""
        if timeout is not None:  # psycopg's own wait registers the socket itself
            self._unwatch()
            return await super().wait(gen, interval, timeout)
        try:
            wait = next(gen)  # (sends: libpq may find the connection lost and close the socket)
            watch = self._watch
            if watch is None or watch.fileno != self.pgconn.socket:
                self._unwatch()
                watch = self._watch = _SocketWatch(asyncio.get_running_loop(), self.pgconn.socket, self)
            while True:
                ready = await (watch.readable() if wait == _WAIT_R else watch.ready(wait))
                wait = gen.send(ready)
        except StopIteration as done:
            return done.value
        except BaseException as exc:
            self._unwatch()  # before anything may reuse the descriptor of a socket libpq closed
            if isinstance(exc, OSError):
                raise psycopg.OperationalError("connection socket closed") from exc
            raise

    def _unwatch(self) -> None:
        """Unregisters the socket, if registered (from the loop it is registered with)."""
        watch, self._watch = self._watch, None
        if watch is not None and not watch.loop.is_closed():
            watch.close()

    async def close(self) -> None:
        """Unregisters the socket, then closes the connection."""
        self._unwatch()
        await super().close()
