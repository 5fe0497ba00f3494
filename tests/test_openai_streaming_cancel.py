"""`StreamedRun.cancel()` at once, as the SDK's ``Runner.run_streamed(...).cancel()`` may be called:
before the stream's task has stored the run (its id is known, the run is not in the store yet)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from agents import Agent, Runner, function_tool, set_tracing_disabled

import agentspan
from agentspan.errors import RunCancelledError
from agentspan.records import RunStatus
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from server_support import sqlite_server

set_tracing_disabled(True)
effects: list[str] = []


@pytest.fixture(autouse=True)
def _home(home):
    effects.clear()
    return home


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    effects.append(f"add {a} {b}")
    return a + b


def adder() -> tuple[Agent, ScriptedModel]:
    model = ScriptedModel([ToolCall("add", {"a": 2, "b": 3}), "The sum is 5."])
    return Agent(name="adder", instructions="Add.", tools=[add], model=model), model


def cancelled_at_once(start) -> tuple[str, list[object], BaseException | None, ScriptedModel]:
    agent, model = adder()

    async def main() -> tuple[str, list[object], BaseException | None]:
        streamed = start(agent)
        streamed.cancel("changed my mind")
        events: list[object] = []
        try:
            async for event in streamed.stream_events():
                events.append(event)
        except RunCancelledError as exc:
            return streamed.id, events, exc
        return streamed.id, events, None

    run_id, events, error = asyncio.run(main())
    return run_id, events, error, model


@pytest.mark.parametrize("store", ["new", "existing", "server"])
def test_a_cancel_before_the_run_is_stored_cancels_it_before_any_call(store, tmp_path: Path):
    def start(agent: Agent) -> agentspan.StreamedRun:
        return agentspan.run_streamed(agent, "2 + 3?")

    if store == "existing":
        agentspan.run(adder()[0], "warm up")  # the store file exists, the new run is not in it yet
        effects.clear()
    if store == "server":
        with sqlite_server(tmp_path / "server.db") as (url, _backing):
            agentspan.configure(server_url=url)
            run_id, events, error, model = cancelled_at_once(start)
            run = agentspan.get(run_id).run()
    else:
        run_id, events, error, model = cancelled_at_once(start)
        run = agentspan.get(run_id).run()
    assert isinstance(error, RunCancelledError) and "changed my mind" in str(error)
    assert events == [] and effects == [] and model.calls == 0  # no model call, no tool call
    assert run.status is RunStatus.CANCELLED and run.error == "changed my mind" and run.lease_owner is None


def test_an_instrumented_sdk_streamed_run_cancelled_at_once_makes_no_call():
    agentspan.instrument()
    try:
        run_id, events, error, model = cancelled_at_once(lambda agent: Runner.run_streamed(agent, "2 + 3?"))
    finally:
        agentspan.uninstrument()
    assert isinstance(error, RunCancelledError)
    assert events == [] and effects == [] and model.calls == 0
    assert agentspan.get(run_id).status() is RunStatus.CANCELLED


def test_a_resumed_stream_cancelled_at_once_ends_as_cancelled_without_a_call():
    from journal_utils import crashed_copy

    agentspan.run(adder()[0], "2 + 3?")
    run_id = crashed_copy(agentspan.get_store().list_runs()[0].id, keep=1)  # killed after its first model call
    effects.clear()

    def start(agent: Agent) -> agentspan.StreamedRun:
        return agentspan.resume_streamed(run_id, agent)

    _, events, error, model = cancelled_at_once(start)
    assert isinstance(error, RunCancelledError) and "changed my mind" in str(error)  # was: LeaseLostError
    assert events == [] and effects == [] and model.calls == 0
    assert agentspan.get(run_id).status() is RunStatus.CANCELLED
