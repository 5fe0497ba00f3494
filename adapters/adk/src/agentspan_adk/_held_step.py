"""A journal step entered in one plugin callback and left in a later one, without a task.

A live model call is journaled by one `agentspan.ActiveRun.step` that encloses the call: the step
is entered in ``before_model_callback`` (so its duration covers the model call), waits on a future
while ADK calls the model, and ends when the response's event reaches ``on_event_callback``. The
step's coroutine is driven by hand, the way an asyncio task would run it, rather than by a task of
its own: a task per model call costs its creation and two more turns of the event loop (one to
run the step's end, one to wake the callback that awaits it) on every call.

`HeldStep` runs the coroutine in a copy of the entering callback's context (as a task would), up
to its first suspension; `HeldStep.finish` resumes it once what it waits on is done, and awaits
whatever else it suspends on afterwards (a store that writes from a worker thread) as a task
would.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class HeldStep(Generic[T]):
    """A coroutine started now and finished by `finish` (or dropped by `cancel`).

    Args:
        coroutine: Not started yet; it runs at once, up to its first suspension.
    """

    def __init__(self, coroutine: Coroutine[Any, Any, T]) -> None:
        self._coroutine = coroutine
        self._context = contextvars.copy_context()
        self._ended = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._awaiting = self._advance(None, None)

    def _advance(self, value: Any, error: BaseException | None) -> Any:
        """Resumes the coroutine (with ``error`` thrown in, if given); what it awaits next."""
        try:
            if error is None:
                return self._context.run(self._coroutine.send, value)
            return self._context.run(self._coroutine.throw, error)
        except StopIteration as stop:
            self._ended, self._value = True, stop.value
        except (KeyboardInterrupt, SystemExit):  # raised at once, as a task raises them
            self._ended = True
            raise
        except BaseException as raised:  # kept for `finish`, as a task keeps it
            self._ended, self._error = True, raised
        return None

    async def finish(self) -> T:
        """Resumes the coroutine and runs it to its end; its value, or raises its error.

        The first thing the coroutine waited on must be done by now.
        """
        if not self._ended:
            self._awaiting = self._advance(None, None)
        while not self._ended:  # it suspends again: wait as its task would
            try:
                if self._awaiting is None:  # a bare yield: asyncio.sleep(0)
                    await asyncio.sleep(0)
                else:  # a future it yielded: await it here instead (as `asyncio.Task` takes it over)
                    self._awaiting._asyncio_future_blocking = False
                    await self._awaiting
            except BaseException as error:  # (a cancellation) handed to the coroutine
                self._awaiting = self._advance(None, error)
            else:
                self._awaiting = self._advance(None, None)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Drops a coroutine that will never be finished (runs its ``finally`` blocks)."""
        if not self._ended:
            self._ended = True
            self._context.run(self._coroutine.close)
