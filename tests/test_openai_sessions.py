"""openai-agents sessions (``session=``, the SDK's conversation memory) in durable runs: each read
and write of the session is a journaled ``checkpoint`` step, so a resumed run reads the history
its first attempt read and does not write a turn twice (SIGKILLed children, a real
`SQLiteSession` file)."""

from __future__ import annotations

import asyncio
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, SQLiteSession, function_tool, set_tracing_disabled

import agentspan
from agentspan.errors import ConfigurationError
from agentspan.records import new_id
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

import oa_support
from crash_support import calls_of, home, lines, run_child

set_tracing_disabled(True)
child = partial(run_child, str(Path(__file__).parent / "oa_child.py"))


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def items_of(session: SQLiteSession) -> list[Any]:
    return asyncio.run(session.get_items())


def shape(items: list[Any]) -> list[str]:
    """Each item as its type, or role (what a duplicated turn would show twice)."""
    return [item.get("type") or item["role"] for item in items]


def test_session_reads_and_writes_are_journaled_steps(home):
    session = SQLiteSession("chat-1", str(home / "chat.db"))
    agent = Agent(name="calc", tools=[add], model=ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"], name="m"))
    assert agentspan.run(agent, "1+2?", session=session).final_output == "3"
    first = agentspan.get_store().list_runs(limit=1)[0]
    assert first.session_id == "chat-1"  # the run is recorded under the SDK session's id
    steps = agentspan.get(first.id).steps()
    assert [(s.kind.value, s.key, s.name) for s in steps] == [
        ("checkpoint", "session:0", "session.get_items"), ("checkpoint", "session:1", "session.add_items"),
        ("llm", "llm:0", "m"), ("tool", "llm:0/call:call_0_0", "add"),
        ("checkpoint", "session:2", "session.add_items"), ("llm", "llm:1", "m"),
        ("checkpoint", "session:3", "session.add_items")]
    assert steps[0].output == [] and steps[1].input["items"] == [{"content": "1+2?", "role": "user"}]
    assert shape(items_of(session)) == ["user", "function_call", "function_call_output", "message"]

    again = Agent(name="calc", model=ScriptedModel(["still 3"], name="m"))
    assert agentspan.run(again, "sure?", session=session).final_output == "still 3"
    second = agentspan.get_store().list_runs(limit=1)[0]
    read, _, model = agentspan.get(second.id).steps()[:3]
    assert shape(read.output) == ["user", "function_call", "function_call_output", "message"]
    assert shape(model.input["new_items"]) == ["user", "function_call", "function_call_output", "message", "user"]
    assert len(items_of(session)) == 6


def test_a_run_goes_on_only_with_its_session(home):
    session = SQLiteSession("chat-2", str(home / "chat.db"))
    agent = Agent(name="calc", model=ScriptedModel(["hello"], name="m"))
    handle = agentspan.start(agent, "hi", session=session, idempotency_key="k")
    assert handle.result(timeout=20).final_output == "hello"
    stored = agentspan.get_store().get_run(handle.id)
    adapter = agentspan.adapters.adapter_for(agent)
    with pytest.raises(ConfigurationError, match="started with the session 'chat-2'.*session=session"):
        adapter.check_options(stored, {})
    with pytest.raises(ConfigurationError, match="not 'other'"):
        adapter.check_options(stored, {"session": SQLiteSession("other")})
    adapter.check_options(stored, {"session": session})

    class Compacting(SQLiteSession):
        def run_compaction(self, *args: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="Compacting compacts itself"):
        agentspan.run(agent, "hi", session=Compacting("chat-3"))
    with pytest.raises(ConfigurationError, match="not dict"):
        agentspan.run(agent, "hi", session={"id": 1})
    # what `options_for=lambda run: {"session": SQLiteSession(run.session_id, ...)}` makes for a run
    # without a session: said as such (was: "takes an openai-agents Session ..., not SQLiteSession")
    plain = agentspan.get_store().get_run(agentspan.start(agent, "hi").id)
    with pytest.raises(ConfigurationError, match="SQLiteSession whose session_id is None; give none"):
        adapter.check_options(plain, {"session": SQLiteSession(plain.session_id, str(home / "chat.db"))})


@pytest.mark.crash
@pytest.mark.parametrize(("crash_at", "calls_after", "lookups"), [
    ("lookup:after", [0, 1], 2),  # the tool ran, unjournaled: run again; its turn not yet in the session
    ("between:1", [0, 1], 1),  # the first turn is in the session (and journaled): not written again
    ("model:1", [0, 1, 1], 1),
    # the first turn written to the session, its journal entry not: in doubt, found there, not written again
    ("session:added:2", [0, 1], 1),
])
def test_sigkill_then_resume_with_the_session_keeps_it_as_an_uncrashed_run(child_env, crash_at, calls_after,
                                                                           lookups):
    run_id = new_id()
    crashed = child(child_env, "start", run_id, "session", crash_at=crash_at)
    assert crashed.returncode == -9, crashed.stderr
    without = child(child_env, "resume", run_id)  # the session is needed: refused, nothing changed
    assert without.returncode != 0 and "started with the session 'support-chat'" in without.stderr
    assert agentspan.get(run_id).status() is agentspan.RunStatus.RUNNING
    resumed = child(child_env, "resume", run_id, "session")
    assert resumed.returncode == 0, resumed.stderr
    assert f"FINAL: {oa_support.FINAL}" in resumed.stdout
    assert sorted(calls_of("m")) == calls_after
    assert len([line for line in lines("effects") if line.startswith("lookup")]) == lookups
    session = SQLiteSession("support-chat", str(home() / "conversation.db"))
    assert shape(items_of(session)) == ["user", "function_call", "function_call_output", "message"]


def test_a_worker_goes_on_with_a_session_run_only_with_options_for_it(child_env, caplog):
    run_id = new_id()
    crashed = child(child_env, "start", run_id, "session", crash_at="between:1")
    assert crashed.returncode == -9, crashed.stderr
    agent = oa_support.support_agent()
    time.sleep(max(0.0, agentspan.get_store().get_run(run_id).lease_expires_at - time.time()))  # orphaned now
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    with caplog.at_level("WARNING", logger="agentspan"):
        assert agentspan.serve(agent, stop=stop, poll_interval=0.05) == 0  # no session: left alone
    assert agentspan.get(run_id).status() is agentspan.RunStatus.RUNNING
    told = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"a worker cannot take run {run_id}")]
    assert len(told) == 1 and "started with the session 'support-chat'" in told[0] and "options_for" in told[0]

    database = str(home() / "conversation.db")
    made: list[str | None] = []

    def options_for(run: agentspan.Run) -> dict[str, Any]:
        made.append(run.session_id)
        return {"session": SQLiteSession(run.session_id, database), "hooks": oa_support.CrashHooks()}

    assert agentspan.serve(agent, max_runs=1, poll_interval=0.05, options_for=options_for) == 1
    assert agentspan.get(run_id).result(timeout=20) == oa_support.FINAL and made == ["support-chat"]
    assert shape(items_of(SQLiteSession("support-chat", database))) == [
        "user", "function_call", "function_call_output", "message"]
    assert sorted(calls_of("m")) == [0, 1]


def test_a_conversation_kept_by_the_server_is_journaled_call_by_call(home):
    """``auto_previous_response_id`` (and ``previous_response_id`` / ``conversation_id``): the SDK
    sends each model call only what the server lacks; the journal keeps each call's input whole,
    the options are stored, and a resumed run (here: by a worker, with no options of its own) keeps
    sending deltas."""
    seen: list[tuple[str | None, int]] = []

    class Spy(ScriptedModel):
        async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append((kwargs.get("previous_response_id"), len(input)))
            return await super().get_response(system_instructions, input, *args, **kwargs)

    def agent() -> Agent:
        turns = [ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 3}), "6"]
        return Agent(name="calc", tools=[add], model=Spy(turns, name="m"))

    handle = agentspan.start(agent(), "1+2, then +3?", auto_previous_response_id=True)
    assert handle.result(timeout=20).final_output == "6"
    assert [n for _, n in seen] == [1, 1, 1]  # deltas: the prompt, then each tool call's output
    run = agentspan.get_store().get_run(handle.id)
    assert run.options["auto_previous_response_id"] is True
    llm = [s for s in handle.steps() if s.kind.value == "llm"]
    assert [[i.get("type") or i["role"] for i in s.input["new_items"]] for s in llm] == [
        ["user"], ["function_call_output"], ["function_call_output"]]

    from journal_utils import crashed_copy

    copy_id = crashed_copy(handle.id, keep=2)  # killed after the first tool call
    seen.clear()
    stop = threading.Event()
    worker = threading.Thread(target=agentspan.serve, args=(agent(),), kwargs={"stop": stop, "max_runs": 1})
    worker.start()
    try:
        assert agentspan.get(copy_id).result(timeout=20) == "6"
    finally:
        stop.set()
        worker.join(10)
    assert [n for _, n in seen] == [1, 1]  # live again from the second call, still deltas
