"""Streamed durable runs: `run_streamed` and the `StreamedRun` it returns.

The drop-in for openai-agents' ``Runner.run_streamed(agent, input)`` (and, for Google ADK agents,
the events of ``Runner.run_async``; for LangGraph graphs, the chunks of ``graph.astream``): the run
is journaled as
`agentspan.run_async` journals it (the same steps, so a streamed run that crashed is resumed by
`agentspan.resume` like any other), and the framework's own stream events reach the caller as
they happen. Model calls served from the journal show as their completed response (no deltas);
an event already delivered is not delivered again when the run is executed again after an
approval (`agentspan.events`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from agentspan import attached, executor
from agentspan.adapters import Adapter, adapter_for
from agentspan.api import resumable, run_in_loop
from agentspan.config import get_store
from agentspan.divergence import OnDivergence, check_policy
from agentspan.errors import ConfigurationError, LeaseLostError, RunCancelledError, RunNotFound, RunStateError
from agentspan.events import END, EventSink, event_sink
from agentspan.handle import Handle
from agentspan.records import RunStatus, new_id
from agentspan.stores.base import call_store


class StreamedRun:
    """A durable run whose framework events are streamed to this process.

    Iterate `stream_events` to the end (as with the SDK's ``RunResultStreaming``); then `result`
    is the framework's own result object, and its attributes (``final_output``, ``new_items``,
    ...) are readable on this object too.
    """

    def __init__(self, run_id: str, task: asyncio.Task[Any], sink: EventSink) -> None:
        self.id = run_id
        self._task = task
        self._sink = sink

    def __repr__(self) -> str:
        return f"<agentspan.StreamedRun {self.id} {'complete' if self.is_complete else 'streaming'}>"

    @property
    def handle(self) -> Handle:
        """The run's `Handle`: status, steps, pending approvals, approve/reject, cancel."""
        return Handle(self.id, store=get_store(create=False))

    @property
    def is_complete(self) -> bool:
        """Whether the run has ended in this process (completed, failed or cancelled)."""
        return self._task.done()

    async def stream_events(self) -> AsyncIterator[Any]:
        """Yields the run's events as they happen, then raises what the run raised, if anything.

        The events are the framework's own (for openai-agents: ``RawResponsesStreamEvent``,
        ``RunItemStreamEvent``, ``AgentUpdatedStreamEvent``; for ADK: its ``Event`` objects; for
        LangGraph: ``astream``'s chunks of the ``stream_mode`` option, default ``"updates"``), plus
        `agentspan.events.ApprovalRequested` while the run waits for a decision.

        Raises:
            Exception: The run's error (the run is recorded ``failed``), `RunCancelledError`, ...
        """
        while True:
            event = await self._sink.next()
            if event is END:
                break
            yield event
        await asyncio.wait({self._task})
        self._task.result()

    @property
    def result(self) -> Any:
        """The framework's result (an openai-agents ``RunResultStreaming``, an ``ADKResult``), once
        the run ended.

        Raises:
            RunStateError: The run is still streaming.
            Exception: What the run raised.
        """
        if not self._task.done():
            raise RunStateError(f"run {self.id!r} is still streaming: iterate stream_events() to its end first")
        return self._task.result()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.result, name)

    def cancel(self, reason: str | None = None, *, mode: str = "immediate") -> None:
        """Cancels the run (durably: recorded ``cancelled``; the stream then ends at the run's next
        journal write). Once the run ended, nothing (as the SDK's ``RunResultStreaming.cancel``).

        Args:
            reason: Recorded as the run's error.
            mode: The SDK's ``"immediate"`` or ``"after_turn"``, taken for drop-in code: either
                way the run stops at its next journal write (after the call in progress).

        Raises:
            ConfigurationError: Another ``mode``.
        """
        if mode not in ("immediate", "after_turn"):
            raise ConfigurationError(f"mode must be 'immediate' or 'after_turn', not {mode!r}")
        if self._task.done():
            return
        try:
            Handle(self.id, store=get_store()).cancel(reason)
        except RunNotFound:  # not stored yet (its task has not run): cancelled once it is, before any call
            self._sink.cancel_requested = (reason,)


def run_streamed(target: Any, input: Any, *, run_id: str | None = None, session_id: str | None = None,
                 idempotency_key: str | None = None, agent_name: str | None = None,
                 on_divergence: OnDivergence = "raise", **options: Any) -> StreamedRun:
    """Starts a durable run in the running event loop and streams its events.

    The drop-in for ``Runner.run_streamed(agent, input)`` (openai-agents; an ADK agent's events
    and a LangGraph graph's ``astream`` chunks stream too, with ``stream_mode=`` for a graph);
    called, as that is, from async code. Arguments as for `agentspan.start`.

    Returns:
        The `StreamedRun`; its id is known at once.

    Raises:
        ConfigurationError: No running event loop, the framework's runs are not streamed, or bad
            input or options (nothing stored).
    """
    loop = _running_loop("run_streamed")
    adapter = _streaming(adapter_for(target))
    # Bad input is refused here, before anything is stored (the run itself is created in the task).
    adapter.encode_input(input)
    adapter.encode_options(options)
    check_policy(on_divergence)
    run_id = run_id or new_id()
    return _stream(loop, run_id, run_in_loop(target, input, run_id=run_id, session_id=session_id,
                                              idempotency_key=idempotency_key, agent_name=agent_name,
                                              on_divergence=on_divergence, awaited_writes=True, streamed=True,
                                              **options))


def resume_streamed(run_id: str, target: Any, *, wait: float | None = None,
                    on_divergence: OnDivergence | None = None, **options: Any) -> StreamedRun:
    """Takes over a run, as `agentspan.resume` does, and streams its events.

    The stream begins with the events of the journaled part (each model call's response whole,
    without deltas; tool calls and outputs as recorded), then goes on live. Arguments as for
    `agentspan.resume`; the checks happen here, the claim (which may wait for a dead owner's
    lease) in the stream's task.

    Raises:
        RunNotFound: Unknown run id.
        RunStateError: The run already ended.
        ConfigurationError: No running event loop, ``target`` is of another framework, or its
            framework's runs are not streamed.
    """
    loop = _running_loop("resume_streamed")
    store, adapter, policy = resumable(run_id, target, on_divergence, options)
    _streaming(adapter)

    async def go() -> Any:
        try:
            claimed = await call_store(store, attached.claim, store, run_id, wait=wait)
        except LeaseLostError:  # ended meanwhile: cancelled by `StreamedRun.cancel` before the claim, say
            ended = await call_store(store, store.get_run, run_id)
            if ended.status is RunStatus.CANCELLED:
                raise RunCancelledError(run_id, ended.error) from None
            raise
        outcome = await executor.execute(store, claimed, adapter, target, options, on_divergence=policy)
        return outcome.result

    return _stream(loop, run_id, go())


def _running_loop(name: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(
            f"agentspan.{name} needs a running event loop (call it from async code, as Runner.run_streamed); "
            "use agentspan.run / agentspan.resume outside one") from None


def _streaming(adapter: Adapter) -> Adapter:
    """``adapter``, if it streams its framework's events."""
    if not adapter.streams:
        raise ConfigurationError(
            f"{adapter.framework} runs are not streamed by agentspan: its adapter does not stream; "
            "use agentspan.run_async")
    return adapter


def _stream(loop: asyncio.AbstractEventLoop, run_id: str, execution: Coroutine[Any, Any, Any]) -> StreamedRun:
    sink = EventSink(run_id)
    token = event_sink.set(sink)
    try:  # the task copies this context: its run sees the sink
        task = loop.create_task(execution)
    finally:
        event_sink.reset(token)
    task.add_done_callback(lambda _: sink.close())
    return StreamedRun(run_id, task, sink)
