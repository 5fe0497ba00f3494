"""The event channel of a streamed run (`agentspan.run_streamed`): adapter to consumer.

An adapter that streams puts each framework event into the run's `EventSink` with a key that
names the event independently of the attempt that made it. A run is executed again from its
start after it waited for an approval (the framework replays the journaled calls), and its
events then come again: the sink delivers each key once, so the consumer sees every event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from agentspan.records import Approval

T = TypeVar("T")

event_sink: contextvars.ContextVar[EventSink | None] = contextvars.ContextVar("agentspan_event_sink", default=None)
"""The sink of the streamed run executing in this context (None: the run is not streamed)."""


@dataclass(frozen=True)
class ApprovalRequested:
    """A streamed run waits for a human decision on a tool call (an Agentspan stream event).

    Decide it with ``StreamedRun.handle.approve()`` / ``reject()``, the CLI, the API or the web
    UI; the stream goes on once every pending approval is decided.
    """

    approval: Approval
    type: Literal["agentspan_approval_requested"] = "agentspan_approval_requested"


class EventSink:
    """Delivers a streamed run's events to its one consumer, each key once."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        """The run whose events this is (a durable run started inside one of its calls has its own)."""
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._delivered: set[Hashable] = set()
        self._closed = False
        self._drained = False
        self.barrier: Callable[[], None] | None = None
        """Called before an event is queued: the run's `Store.wait_durable`, so that the reader
        never sees an event whose step is not yet as durable as the store promises."""
        self.cancel_requested: tuple[str | None] | None = None
        """``(reason,)`` of a `StreamedRun.cancel` made before the run was stored: the run is
        recorded cancelled as soon as it is (`agentspan.executor.execute`), before any call."""

    def emit(self, event: Any, key: Hashable | None = None) -> None:
        """Queues ``event`` unless an event of ``key`` was delivered already (or the stream ended).

        Args:
            event: The framework's event object.
            key: Names the event across re-executions of the run (None: always delivered).
        """
        if self._closed or (key is not None and key in self._delivered):
            return
        if key is not None:
            self._delivered.add(key)
        if self.barrier is not None:
            self.barrier()
        self._queue.put_nowait(event)

    def close(self) -> None:
        """Ends the stream: the consumer gets the queued events, then the end."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(END)

    async def next(self) -> Any:
        """The next event, or `END` once the stream is closed and drained (and from then on)."""
        if self._drained:
            return END
        event = await self._queue.get()
        self._drained = event is END
        return event


def sink_of(run_id: str) -> EventSink | None:
    """The event sink of ``run_id`` in this context: None when the run is not streamed (a sink in
    the context belongs to another run, e.g. a streamed run one of whose tools started this one)."""
    sink = event_sink.get()
    return sink if sink is not None and sink.run_id == run_id else None


class _End:
    def __repr__(self) -> str:
        return "<end of stream>"


END: Any = _End()
"""What `EventSink.next` returns after the last event."""


@dataclass(frozen=True)
class StepValue(Generic[T]):
    """The last item `journaled_events` yields: the step's value, journaled (or replayed)."""

    value: T


async def journaled_events(step: Callable[[Callable[[], Awaitable[T]]], Awaitable[T]],
                           produce: Callable[[Callable[[Any], None]], Awaitable[T]]) -> AsyncGenerator[Any, None]:
    """Runs a journaled step whose live call streams, passing its events on as they come.

    The step runs in a task; each event the live call emits is yielded at once, and once the
    step's value is in the journal, a `StepValue` with it (a step served from the journal yields
    only that). An adapter keeps back what the framework must not act on before the journal has
    it (a stream's final event) and yields it after the `StepValue`. Leaving early (close the
    generator: ``contextlib.aclosing``) cancels the step, which then stays unjournaled, as an
    interrupted call.

    Args:
        step: The journaled step of the call, given the live call: ``run.step(..., invoke=...)``.
        produce: The live call: emits its events through the given function, returns the value.
    """
    events: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.ensure_future(step(lambda: produce(events.put_nowait)))
    task.add_done_callback(lambda _: events.put_nowait(END))
    try:
        while (event := await events.get()) is not END:
            yield event
        value = task.result()
    finally:
        if not task.done():  # the consumer stopped reading (an error event, a cancelled run)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    yield StepValue(value)
