"""A function tool's own timeout (``function_tool(timeout=...)``) in a durable run: the SDK's
timeout would cancel Agentspan's tool step from outside, leaving the call in doubt, so a resumed
run called the tool again and sent the model something else than the timeout it had seen (a
`ReplayDivergenceError` at the next model call). The timeout now runs inside the step: its
outcome is journaled and replayed."""

from __future__ import annotations

import asyncio

import pytest
from agents import Agent, function_tool, set_tracing_disabled
from agents.exceptions import ToolTimeoutError

import agentspan
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from journal_utils import crashed_copy

set_tracing_disabled(True)
calls: list[int] = []


@pytest.fixture(autouse=True)
def _fresh(home):
    calls.clear()


async def slow_the_first_time(n: int) -> str:
    calls.append(n)
    if len(calls) == 1:
        await asyncio.sleep(2.0)
    return f"done {n}"


def agent_with(tool) -> Agent:
    turns = [ToolCall(tool.name, {"n": 1}), ToolCall(tool.name, {"n": 2}), "finished"]
    return Agent(name="a", tools=[tool], model=ScriptedModel(turns, name="m"))


def test_a_timed_out_call_is_journaled_and_replayed_as_the_model_saw_it(home):
    tool = function_tool(slow_the_first_time, timeout=0.2)
    agent = agent_with(tool)
    handle = agentspan.start(agent, "go")
    assert handle.result(timeout=20).final_output == "finished"
    tools = [s for s in handle.steps() if s.kind.value == "tool"]
    assert [(s.status.value, s.output) for s in tools] == [
        ("completed", "Tool 'slow_the_first_time' timed out after 0.2 seconds."), ("completed", "done 2")]
    assert calls == [1, 2]

    copy_id = crashed_copy(handle.id, keep=3)  # killed after the second model call (llm:0, the timeout, llm:1)
    calls.clear()
    assert agentspan.resume(copy_id, agent).result(timeout=20).final_output == "finished"
    assert calls == [2]  # the timed-out call is not made again; the model's input is the same


def test_the_tools_timeout_error_function_and_raise_behaviour(home):
    def explain(ctx, error: ToolTimeoutError) -> str:
        return f"gave up after {error.timeout_seconds}s"

    tool = function_tool(slow_the_first_time, timeout=0.2, timeout_error_function=explain)
    handle = agentspan.start(agent_with(tool), "go")
    assert handle.result(timeout=20).final_output == "finished"
    assert [s.output for s in handle.steps() if s.kind.value == "tool"] == ["gave up after 0.2s", "done 2"]

    calls.clear()
    raising = function_tool(slow_the_first_time, timeout=0.2, timeout_behavior="raise_exception")
    failed = agentspan.start(agent_with(raising), "go")
    with pytest.raises(ToolTimeoutError):
        failed.result(timeout=20)
    (tool_step,) = [s for s in failed.steps() if s.kind.value == "tool"]
    assert tool_step.status.value == "failed" and "ToolTimeoutError" in tool_step.error
