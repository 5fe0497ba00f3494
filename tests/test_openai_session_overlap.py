"""openai-agents sessions: runs of one session must not overlap. A crashed turn resumed after
another run wrote to its session (or popped its last item) is refused with `RunStateError`
before it writes anything there; without an overlap a resume goes on as before, and a run's first
attempt reads nothing more than the SDK does (SIGKILLed children, a real `SQLiteSession` file)."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pytest
from agents import Agent, SQLiteSession, set_tracing_disabled

import agentspan
from agentspan.errors import RunStateError
from agentspan.records import new_id
from agentspan_openai_agents.testing import ScriptedModel

import oa_support
from crash_support import calls_of, lines, run_child

set_tracing_disabled(True)
child = partial(run_child, str(Path(__file__).parent / "oa_child.py"))
SESSION = "support-chat"  # the session `oa_child.py ... session` runs on
TURN = ["user", "function_call", "function_call_output", "message"]  # the support agent's turn


@pytest.fixture(autouse=True)
def _home(home: Path) -> Path:
    return home


class CountingSession(SQLiteSession):
    """The child's session file, counting the reads made of it in this process."""

    reads: ClassVar[list[int | None]] = []

    async def get_items(self, limit: int | None = None) -> list[Any]:
        CountingSession.reads.append(limit)
        return await super().get_items(limit)


def conversation(home: Path) -> CountingSession:
    return CountingSession(SESSION, str(home / "conversation.db"))


def shape(home: Path) -> list[str]:
    """Each item of the session as its type or role (a turn written twice shows twice)."""
    items: list[Any] = asyncio.run(SQLiteSession(SESSION, str(home / "conversation.db")).get_items())
    return [item.get("type") or item["role"] for item in items]


def crash(child_env: dict[str, str], crash_at: str) -> str:
    run_id = new_id()
    crashed = child(child_env, "start", run_id, "session", crash_at=crash_at)
    assert crashed.returncode == -9, crashed.stderr
    return run_id


def resume(run_id: str, home: Path) -> Any:
    return agentspan.resume(run_id, oa_support.support_agent(), session=conversation(home)).result(timeout=30)


@pytest.mark.crash
@pytest.mark.parametrize(("crash_at", "moved_on"), [
    ("between:1", "turn"),  # its first turn's items journaled and written, the last ones not yet
    ("session:added:2", "turn"),  # a write in doubt: made, its journal entry not
    ("between:1", "pop"),
])
def test_a_crashed_turn_resumed_after_the_session_moved_on_is_refused(child_env, home, crash_at, moved_on):
    run_id = crash(child_env, crash_at)
    if moved_on == "turn":  # the user went on talking on the session meanwhile
        other = Agent(name="other", model=ScriptedModel(["Anything else?"], name="o"))
        assert agentspan.run(other, "Hello?", session=conversation(home)).final_output == "Anything else?"
    else:  # another process took the session's last item
        asyncio.run(conversation(home).pop_item())
    before = shape(home)
    lookups = len(lines("effects"))

    with pytest.raises(RunStateError, match=f"run '{run_id}' cannot go on with the session '{SESSION}'") as refused:
        resume(run_id, home)
    assert "must not overlap" in str(refused.value) and "new run" in str(refused.value)
    assert shape(home) == before  # nothing written: no turn appended after the other one
    assert len(lines("effects")) == lookups
    stored = agentspan.get_store().get_run(run_id)
    assert stored.status is agentspan.RunStatus.FAILED  # as an ADK run whose session moved on
    assert stored.error.startswith("RunStateError: ") and run_id in stored.error and SESSION in stored.error
    # a retry meets the same session: refused again, still nothing written
    with pytest.raises(RunStateError, match="cannot go on with the session"):
        agentspan.retry(run_id, oa_support.support_agent(), session=conversation(home)).result(timeout=30)
    assert shape(home) == before


@pytest.mark.crash
def test_a_resume_without_an_overlap_reads_the_session_once_and_writes_the_turn_once(child_env, home):
    CountingSession.reads.clear()
    agent = Agent(name="plain", model=ScriptedModel(["hi"], name="p"))
    other = CountingSession("elsewhere", str(home / "conversation.db"))
    assert agentspan.run(agent, "hello", session=other).final_output == "hi"
    assert CountingSession.reads == [None]  # a first attempt: the SDK's own read, nothing more

    run_id = crash(child_env, "between:1")
    CountingSession.reads.clear()
    assert resume(run_id, home).final_output == oa_support.FINAL
    assert len(CountingSession.reads) == 1  # the check (the SDK's read is replayed)
    assert shape(home) == TURN
    assert sorted(calls_of("m")) == [0, 1]
    assert agentspan.get(run_id).status() is agentspan.RunStatus.COMPLETED


@pytest.mark.crash
def test_a_session_whose_oldest_items_expired_meanwhile_is_no_overlap(child_env, home):
    """Sessions whose items expire (``EncryptedSession(ttl=...)``, ``RedisSession(ttl=...)``) lose
    them from the front while a run waits (for a decision, a worker): the session still ends as
    the run left it, so the resume goes on (was: refused as an overlap, for ever)."""
    import sqlite3

    run_id = crash(child_env, "between:1")
    before = shape(home)
    assert before and before[0] == "user"
    with sqlite3.connect(home / "conversation.db") as db:  # the oldest item expires
        db.execute("DELETE FROM agent_messages WHERE id = (SELECT MIN(id) FROM agent_messages WHERE session_id = ?)",
                   (SESSION,))
    assert resume(run_id, home).final_output == oa_support.FINAL
    assert shape(home) == TURN[1:]  # the rest of the turn written once after what was left
    assert agentspan.get(run_id).status() is agentspan.RunStatus.COMPLETED


@pytest.mark.crash
def test_a_write_in_doubt_still_resumes_once(child_env, home):
    run_id = crash(child_env, "session:added:2")  # the turn's items in the session, not in the journal
    assert resume(run_id, home).final_output == oa_support.FINAL
    assert shape(home) == TURN  # found there: not written again
    assert len([line for line in lines("effects") if line.startswith("lookup")]) == 1
    assert agentspan.get(run_id).status() is agentspan.RunStatus.COMPLETED


def test_a_session_that_reads_only_its_last_items_is_checked_on_them(home):
    """A run that read the last ``limit`` items (the session's ``SessionSettings(limit=...)``)
    knows only the session's end: older items before it are no overlap (a crashed copy of a run:
    the journal a process killed before the turn's last write leaves)."""
    from agents import SessionSettings

    from journal_utils import crashed_copy

    def session() -> SQLiteSession:
        return SQLiteSession("chat-limited", str(home / "chat.db"), session_settings=SessionSettings(limit=2))

    def agent(answer: str) -> Agent:
        return Agent(name="chat", model=ScriptedModel([answer], name="c"))

    for n in range(3):  # a history longer than the limit
        agentspan.run(agent(f"answer {n}"), f"question {n}", session=session())
    handle = agentspan.start(agent("last answer"), "last question", session=session())
    assert handle.result(timeout=20).final_output == "last answer"
    assert [s.key for s in handle.steps() if s.key.startswith("session:")] == ["session:0", "session:1", "session:2"]
    copy_id = crashed_copy(handle.id, keep=None, keys={"session:0", "session:1", "llm:0"})
    asyncio.run(session().pop_item())  # the session as the copy left it: its answer not yet written
    resumed = agentspan.resume(copy_id, agent("unused"), session=session())
    assert resumed.result(timeout=20).final_output == "last answer"
    items: list[Any] = asyncio.run(SQLiteSession("chat-limited", str(home / "chat.db")).get_items())
    assert len(items) == 8 and items[-2]["content"] == "last question"


def test_a_resume_whose_divergence_set_aside_the_session_writes_says_so(home):
    """``on_divergence="live"`` moved aside a session write the session still holds: going on would
    write the turn again after it, so the run is refused, naming the divergence (was: blamed
    "another run")."""
    from agents import function_tool

    from agentspan_openai_agents.testing import ToolCall

    from journal_utils import crashed_copy

    @function_tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    def session() -> SQLiteSession:
        return SQLiteSession("chat", str(home / "chat.db"))

    def agent(instructions: str) -> Agent:
        return Agent(name="calc", instructions=instructions, tools=[add],
                     model=ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"], name="m"))

    handle = agentspan.start(agent("v1"), "1+2?", session=session())
    handle.result(timeout=20)
    keys = [s.key for s in handle.steps()]
    copy_id = crashed_copy(handle.id, keep=None, keys=set(keys[:5]))  # through the write after the tool
    asyncio.run(session().pop_item())  # the session as the copy left it: the final answer not written
    before = asyncio.run(session().get_items())
    with pytest.raises(RunStateError, match="set aside by on_divergence='live'"):
        agentspan.resume(copy_id, agent("v2, changed"), on_divergence="live", session=session()).result(timeout=20)
    assert asyncio.run(session().get_items()) == before


def test_an_agent_tools_own_session_is_journaled_and_not_written_twice(home):
    """``agent.as_tool(session=...)``: the nested run's session calls are journaled under the tool
    call's key, so a run resumed while the agent tool was in flight replays the nested run's read
    and write instead of reading the session as the crashed attempt left it (its input then
    differed from the journal) and writing the nested turn again."""
    from agentspan_openai_agents.testing import ToolCall

    from journal_utils import crashed_copy

    def inner_session() -> SQLiteSession:
        return SQLiteSession("researcher-notes", str(home / "notes.db"))

    def agent() -> Agent:
        researcher = Agent(name="researcher", model=ScriptedModel(["found it"], name="r"))
        tool = researcher.as_tool(tool_name="research", tool_description="Research.", session=inner_session())
        return Agent(name="lead", tools=[tool],
                     model=ScriptedModel([ToolCall("research", {"input": "x"}), "done"], name="l"))

    handle = agentspan.start(agent(), "go")
    assert handle.result(timeout=20).final_output == "done"
    keys = [s.key for s in handle.steps()]
    nested = [k for k in keys if k.count("/") >= 2]
    assert any("session:" in k for k in nested), keys  # the nested run's session calls are steps
    items = asyncio.run(inner_session().get_items())
    assert len(items) == 2  # the nested turn: its input and its answer
    tool_key = next(k for k in keys if k.count("/") == 1)
    # a process killed inside the agent tool: its nested calls journaled, the tool call's end not
    copy_id = crashed_copy(handle.id, keep=None, keys={k for k in keys if k == "llm:0" or k.startswith(tool_key + "/")})
    assert agentspan.resume(copy_id, agent()).result(timeout=20).final_output == "done"
    assert asyncio.run(inner_session().get_items()) == items  # not written twice


@pytest.mark.parametrize("killed", ["before the last write", "before the first write"])
def test_parallel_calls_of_an_agent_tool_sharing_its_session_resume(home, killed):
    """Two calls of one agent tool in one response write to its session in turn; killed after
    one wrote and before the other did, the run resumes: every journaled call of the session
    counts in the check, in the order they were made, and both wait for one check made before
    either writes (was: refused as another run's write, for ever)."""
    from agentspan_openai_agents.testing import ToolCall

    from journal_utils import crashed_copy

    def notes(name: str) -> SQLiteSession:
        return SQLiteSession(name, str(home / "notes.db"))

    def agent(name: str) -> Agent:
        researcher = Agent(name="researcher", model=ScriptedModel(["found A", "found B"], name="r"))
        tool = researcher.as_tool(tool_name="research", tool_description="Research.", session=notes(name))
        return Agent(name="lead", tools=[tool], model=ScriptedModel(
            [[ToolCall("research", {"input": "a"}, call_id="cA"), ToolCall("research", {"input": "b"}, call_id="cB")],
             "done"], name="l"))

    handle = agentspan.start(agent("notes"), "go")
    assert handle.result(timeout=20).final_output == "done"
    steps = handle.steps()
    session_steps = [s for s in steps if (s.name or "").startswith("session.")]
    writes = [s.seq for s in session_steps if s.name == "session.add_items"]
    # the process killed right before a session write, both tool calls in flight (before the first
    # one: both calls' writes go live on the resume, after one check of the session)
    cut = max(writes) if killed == "before the last write" else min(writes)
    kept = [s for s in steps if s.key.count("/") >= 2 and s.seq < cut]
    copy_id = crashed_copy(handle.id, keep=None, keys={"llm:0"} | {s.key for s in kept})

    async def as_left() -> None:  # the copy's session, as that process left it
        for s in kept:
            if s.name == "session.add_items":
                await notes("notes-2").add_items(s.input["items"])

    asyncio.run(as_left())
    assert agentspan.resume(copy_id, agent("notes-2")).result(timeout=20).final_output == "done"
    items = asyncio.run(notes("notes-2").get_items())
    assert items == asyncio.run(notes("notes").get_items())  # the uncrashed run's session, each item once


def test_an_agent_tool_given_a_compacting_session_fails_the_run(home, monkeypatch):
    """A session that compacts itself through a model cannot be journaled: refused, and the run
    fails with it (was: the SDK answered the tool call with an error message and the run
    completed, the tool never working)."""
    from agents.memory import OpenAIResponsesCompactionSession

    from agentspan.errors import ConfigurationError
    from agentspan_openai_agents.testing import ToolCall

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")  # its client is built, never called
    compacting = OpenAIResponsesCompactionSession(
        session_id="notes", underlying_session=SQLiteSession("notes", str(home / "n.db")))
    researcher = Agent(name="researcher", model=ScriptedModel(["found it"], name="r"))
    tool = researcher.as_tool(tool_name="research", tool_description="Research.", session=compacting)
    lead = Agent(name="lead", tools=[tool],
                 model=ScriptedModel([ToolCall("research", {"input": "x"}), "done"], name="l"))
    handle = agentspan.start(lead, "go")
    with pytest.raises(ConfigurationError, match="compacts itself"):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.FAILED
