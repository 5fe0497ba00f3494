"""The journal key of a handoff asked for in the same model response as an agent tool
(``Agent.as_tool``): it hangs off the response of the agent that asked for it (``llm:0``), not off
whichever model call answered last (the agent tool's own run, ``llm:0/call:t1/llm:0``, which a
resumed run replays whole without making it), so a resumed run replays the handoff instead of
invoking it again.

Also a child script (``python test_openai_handoff_keys.py child RUN_ID``): the team's run, killed
(`crash_support.crash_if`) in B's first model call when ``CRASH_AT=b-model``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, AgentHooks, Runner, function_tool, handoff, set_tracing_disabled

import agentspan
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from crash_support import crash_if, lines, log, run_child
from journal_utils import crashed_copy

set_tracing_disabled(True)

HANDOFF_KEY = "llm:0/handoff:transfer_to_b"
"""The handoff's key: under A's own model call, whose response asked for it."""


def team(order: str = "helper-first", *, slow_helper: bool = False, with_lookup: bool = False,
         hooks: Callable[[str], AgentHooks[Any]] | None = None) -> Agent[Any]:
    """Agent A, whose one response asks for the agent tool ``helper`` (call ``t1``) and the
    handoff ``transfer_to_b`` (call ``t2``), in the given order; B answers ``B done``.

    Args:
        order: ``helper-first`` or ``handoff-first``: the calls' order in A's response.
        slow_helper: The helper's own model call sleeps, so it answers after A's other tool call.
        with_lookup: A also asks for a plain function tool (call ``t3``) in the same response.
        hooks: Gives each agent (``A``, ``H``, ``B``) its ``hooks``.
    """
    async def on_b(ctx: Any) -> None:
        log("effects", "on_handoff_b")

    def b_called(index: int) -> None:
        log("effects", f"b_model {index}")
        if index == 0:
            crash_if("b-model")  # killed in B's first model call: the handoff is journaled by then

    @function_tool
    def lookup(q: str) -> str:
        """Look something up."""
        log("effects", f"lookup {q}")
        return "found"

    def hooks_of(name: str) -> AgentHooks[Any] | None:
        return hooks(name) if hooks is not None else None

    helper = Agent(name="H", instructions="H", hooks=hooks_of("H"), model=ScriptedModel(
        ["helped"], name="mh", latency=0.05 if slow_helper else 0.0))
    b = Agent(name="B", instructions="B", hooks=hooks_of("B"),
              model=ScriptedModel(["B done"], name="mb", on_call=b_called))
    calls = [ToolCall("helper", {"input": "x"}, "t1"), ToolCall("transfer_to_b", {}, "t2")]
    if order == "handoff-first":
        calls.reverse()
    tools: list[Any] = [helper.as_tool(tool_name="helper", tool_description="help")]
    if with_lookup:
        calls.append(ToolCall("lookup", {"q": "y"}, "t3"))
        tools.append(lookup)
    return Agent(name="A", instructions="A", tools=tools, handoffs=[handoff(b, on_handoff=on_b)],
                 hooks=hooks_of("A"), model=ScriptedModel([calls], name="ma"))


def _keys(run_id: str, kind: agentspan.StepKind) -> list[str]:
    return [s.key for s in agentspan.get(run_id).steps() if s.kind is kind]


def _plain_output() -> Any:
    """What the SDK's own runner gives for the team (its side effects are not counted after it)."""
    return Runner.run_sync(team(), "help").final_output


@pytest.fixture(autouse=True)
def _home(home: Path) -> Path:
    return home


@pytest.mark.parametrize("order", ["helper-first", "handoff-first"])
@pytest.mark.parametrize(("slow_helper", "with_lookup"), [(False, False), (True, True)])
def test_a_handoff_beside_an_agent_tool_is_keyed_by_the_response_that_asked_for_it(order, slow_helper,
                                                                                   with_lookup):
    """First attempt: the agent tool's inner model call answers after A's (last of all, when it is
    slow and a plain tool of the same response ends first); the handoff's key is still A's, and the
    calls' keys do not depend on their order in the response or the order they end in."""
    result = agentspan.run(team(order, slow_helper=slow_helper, with_lookup=with_lookup), "help", run_id="r")
    assert result.final_output == "B done"
    assert _keys("r", agentspan.StepKind.HANDOFF) == [HANDOFF_KEY]  # was llm:0/call:t1/llm:0/handoff:...
    assert _keys("r", agentspan.StepKind.LLM) == ["llm:0", "llm:0/call:t1/llm:0", "llm:1"]
    assert sorted(_keys("r", agentspan.StepKind.TOOL)) == ["llm:0/call:t1"] + (["llm:0/call:t3"] if with_lookup else [])
    assert lines("effects").count("on_handoff_b") == 1


def test_a_streamed_run_keys_the_handoff_beside_an_agent_tool_alike():
    """Streamed (the model call's response comes at the end of its stream), the key is the same."""
    async def main() -> Any:
        streamed = agentspan.run_streamed(team(slow_helper=True), "help", run_id="s")
        async for _ in streamed.stream_events():
            pass
        return streamed

    assert asyncio.run(main()).final_output == "B done"
    assert _keys("s", agentspan.StepKind.HANDOFF) == [HANDOFF_KEY]
    assert lines("effects").count("on_handoff_b") == 1


@pytest.mark.parametrize("handed_off", [False, True])  # killed before / after the handoff was journaled
def test_a_resumed_run_replays_the_handoff_beside_a_replayed_agent_tool(handed_off):
    """Resumed with the agent tool call journaled (replayed whole: its inner model call is not
    made), the handoff gets the same key as on the first attempt: replayed when it was journaled,
    made once otherwise."""
    handle = agentspan.start(team(), "help", run_id="first")
    assert handle.result(timeout=20).final_output == "B done"
    # every step but B's model call (and the handoff, when killed before it), whatever their keys
    kept = {s.key for s in handle.steps() if s.key != "llm:1"
            and (handed_off or s.kind is not agentspan.StepKind.HANDOFF)}
    assert len(kept) == (4 if handed_off else 3)
    copy_id = crashed_copy(handle.id, keep=None, keys=kept)
    before = lines("effects").count("on_handoff_b")
    assert agentspan.resume(copy_id, team()).result(timeout=20).final_output == "B done"
    assert _keys(copy_id, agentspan.StepKind.HANDOFF) == [HANDOFF_KEY]  # was a second, live handoff step
    # a journaled `handoff(agent, on_handoff=...)` is replayed without its callback; a live one runs it once
    assert lines("effects").count("on_handoff_b") - before == (0 if handed_off else 1)


def test_a_handoff_inside_an_agent_tools_run_is_keyed_in_that_run():
    """The agent tool's own agent hands off too: that handoff hangs off the inner response, under
    the tool call's key, while the outer run's own handoff stays under the outer response."""
    inner_b = Agent(name="IB", instructions="IB", model=ScriptedModel(["inner done"], name="mib"))
    helper = Agent(name="H", instructions="H", handoffs=[inner_b], model=ScriptedModel(
        [ToolCall("transfer_to_ib", {}, "h1")], name="mh"))
    b = Agent(name="B", instructions="B", model=ScriptedModel(["B done"], name="mb"))
    a = Agent(name="A", instructions="A", tools=[helper.as_tool(tool_name="helper", tool_description="help")],
              handoffs=[b], model=ScriptedModel(
                  [[ToolCall("helper", {"input": "x"}, "t1"), ToolCall("transfer_to_b", {}, "t2")]], name="ma"))
    assert agentspan.run(a, "help", run_id="n").final_output == "B done"
    assert _keys("n", agentspan.StepKind.HANDOFF) == ["llm:0/call:t1/llm:0/handoff:transfer_to_ib", HANDOFF_KEY]


def test_on_llm_end_is_told_about_its_own_agents_call_not_a_nested_runs():
    """``on_llm_end`` asks whether the call that just ended was replayed: the last call of its own
    scope, even when an agent tool's run (a scope of its own) answered in between (parallel agent
    tools: another one's hooks may run after this one's call answered)."""
    from agentspan_openai_agents._hooks import _replayed
    from agentspan_openai_agents._model import CallTracker

    class Run:
        recorded = True

        def __init__(self, next_key: str) -> None:
            self.next_key = next_key
            self.asked: list[str] = []

        def peek_llm_key(self) -> str:
            return self.next_key

        def was_replayed(self, kind: str, key: str) -> bool:
            self.asked.append(key)
            return True

    tracker = CallTracker()
    tracker.responded("llm:0/call:t1/llm:0")
    tracker.responded("llm:0/call:t2/llm:0")  # another agent tool's run answered after it
    tracker.responded("llm:3")  # the run's own, while the agent tools' runs were not done
    for next_key, asked in [("llm:0/call:t1/llm:1", "llm:0/call:t1/llm:0"), ("llm:4", "llm:3"),
                            ("llm:0/call:t2/llm:1", "llm:0/call:t2/llm:0")]:
        run = Run(next_key)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(agentspan, "active_run", lambda run=run: run)
            assert _replayed("on_llm_end", None, tracker) is True
        assert run.asked == [asked]
    assert tracker.last_llm_key(Run("llm:0/call:t9/llm:0")) == "llm:0/call:t9/llm:?"  # nothing answered there


@pytest.mark.parametrize(("kept", "expected"), [
    # the agent tool call runs again: its inner call replays
    ({"llm:0", "llm:0/call:t1/llm:0"}, [("A", True), ("H", True), ("B", False)]),
    ({"llm:0", "llm:0/call:t1"}, [("A", True), ("B", False)]),  # the agent tool call is replayed whole
])
def test_model_hooks_of_a_resumed_team_tell_replayed_calls_apart(kept, expected):
    """End to end: each agent's ``on_llm_end`` is told whether its own call was replayed."""
    fired: list[tuple[str, bool]] = []

    class Hooks(AgentHooks):
        def __init__(self, name: str) -> None:
            self.name = name

        async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
            fired.append((self.name, agentspan.replaying()))

    handle = agentspan.start(team(hooks=Hooks), "help", run_id="h")
    assert handle.result(timeout=20).final_output == "B done"
    assert fired == [("A", False), ("H", False), ("B", False)]
    fired.clear()
    copy_id = crashed_copy(handle.id, keep=None, keys=kept)
    assert agentspan.resume(copy_id, team(hooks=Hooks)).result(timeout=20).final_output == "B done"
    assert fired == expected


@pytest.mark.crash
def test_sigkill_in_the_next_agents_model_call_then_resume_hands_off_once(child_env):
    """A real child process is SIGKILLed in B's model call, after the handoff was journaled; the
    resumed run replays the handoff (``on_handoff`` ran once in all) and ends as the SDK's own
    runner does."""
    crashed = run_child(__file__, child_env, "child", "rk", crash_at="b-model")
    assert crashed.returncode == -9, crashed.stderr
    assert lines("effects").count("on_handoff_b") == 1
    assert len(_keys("rk", agentspan.StepKind.HANDOFF)) == 1
    result = agentspan.resume("rk", team()).result(timeout=60)
    assert lines("effects").count("on_handoff_b") == 1  # was 2: invoked live again under another key
    assert len(_keys("rk", agentspan.StepKind.HANDOFF)) == 1  # was 2 handoff steps
    assert _keys("rk", agentspan.StepKind.HANDOFF) == [HANDOFF_KEY]
    assert lines("effects").count("b_model 0") == 2  # the in-flight call, made again
    assert result.final_output == _plain_output()


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:  # the crash test's child process
    print("FINAL:", agentspan.run(team(), "help", run_id=sys.argv[2]).final_output, flush=True)
