"""`agentspan.run` called inside a running event loop (a notebook's, a web handler's).

The run executes in a loop of its own on a helper thread, in a copy of the caller's context, so
its context variables reach the tools as under ``await agentspan.run_async``. An interrupt of the
caller (Ctrl-C) cancels the run there and returns once it has stopped, as outside a loop: it does
not wait for the run's end, nor for a decision the run waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any


class BesideLoop:
    """Runs the coroutine ``make()`` gives in a loop of its own on a helper thread (the caller's
    loop is blocked until it ends), in a copy of the caller's context.

    Args:
        make: Makes the coroutine (called on the helper thread).
    """

    def __init__(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._task: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self._given_up = False
        self._stopped = threading.Event()  # the run's task has ended (its cleanup may go on)
        self._outcome: list[Any] = []
        self._error: list[BaseException] = []

    def run(self) -> Any:
        """Returns the coroutine's result, or raises its error; an interrupt of the caller cancels it."""
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(self._thread_main,), name="agentspan-run")
        thread.start()
        try:
            self._stopped.wait()
        except BaseException:
            self._give_up()
            self._stopped.wait()  # the run has stopped (a second interrupt leaves it to its thread)
            raise
        if self._error:
            raise self._error[0]
        return self._outcome[0]

    def _give_up(self) -> None:
        with self._lock:
            self._given_up = True
            if self._task is not None:
                loop, task = self._task
                with contextlib.suppress(RuntimeError):  # the loop already closed: the run ended
                    loop.call_soon_threadsafe(task.cancel)

    def _thread_main(self) -> None:
        # On Python 3.11, ``asyncio.run`` ends with ``signal.getsignal(SIGINT)``, which builds the
        # repr of the handler and so of the finished main task and its result (milliseconds for a
        # long run's result): the main task therefore returns None and hands the result over.
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the caller's thread
            if not self._error:
                self._error.append(exc)
        finally:
            self._stopped.set()

    async def _main(self) -> None:
        try:
            with self._lock:
                if self._given_up:
                    raise asyncio.CancelledError
                self._task = (asyncio.get_running_loop(), asyncio.current_task())  # type: ignore[assignment]
            self._outcome.append(await self._make())
        except BaseException as exc:
            self._error.append(exc)
            raise
        finally:
            self._stopped.set()
