"""A function tool that raised, answered for by the SDK: its ``failure_error_function`` (by default
a message that leaves the exception out) turns the exception into the tool's answer for the model,
as a timeout's message is. The step is journaled ``completed`` with that answer, so a resumed run
replays it as the model saw it (running the tool again could answer otherwise, and the next model
call would diverge), and with the exception as its ``error``, so the trail shows the failure
(before, it showed as an ordinary result, the exception nowhere)."""

from __future__ import annotations

import asyncio
import json
from unittest.mock import AsyncMock

import httpx
import pytest
from agents import Agent, FunctionTool, function_tool, set_tracing_disabled
from typer.testing import CliRunner

import agentspan
from agentspan.cli import app
from agentspan.records import StepStatus
from agentspan.testing import call, mock_run, reply
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from journal_utils import crashed_copy

set_tracing_disabled(True)
calls: list[int] = []
SDK_MESSAGE = "An error occurred while running the tool. Please try again."


@pytest.fixture(autouse=True)
def _fresh(home):
    calls.clear()


def fails_the_first_time(n: int) -> str:
    """Looks n up."""
    calls.append(n)
    if len(calls) == 1:
        raise ValueError(f"lookup {n} broke")
    return f"found {n}"


def agent_with(tool) -> Agent:
    turns = [ToolCall(tool.name, {"n": 1}), ToolCall(tool.name, {"n": 2}), "finished"]
    return Agent(name="a", tools=[tool], model=ScriptedModel(turns, name="m"))


def tool_steps(handle: agentspan.Handle) -> list[tuple[StepStatus, object, str | None]]:
    return [(s.status, s.output, s.error) for s in handle.steps() if s.kind.value == "tool"]


def test_a_failure_the_sdk_answered_for_is_shown_failed_and_replayed_as_answered(home):
    agent = agent_with(function_tool(fails_the_first_time))
    handle = agentspan.start(agent, "go")
    assert handle.result(timeout=20).final_output == "finished"
    (first, second) = tool_steps(handle)
    assert first[:2] == (StepStatus.COMPLETED, SDK_MESSAGE)
    assert first[2] == "ValueError: lookup 1 broke"  # what the SDK's message does not say
    assert second == (StepStatus.COMPLETED, "found 2", None)
    shown = json.loads(CliRunner().invoke(app, ["runs", "show", handle.id, "--json"]).stdout)
    assert [s["error"] for s in shown["steps"] if s["kind"] == "tool"] == [first[2], None]

    copy_id = crashed_copy(handle.id, keep=3)  # killed after the second model call (llm:0, the failure, llm:1)
    calls.clear()
    assert agentspan.resume(copy_id, agent).result(timeout=20).final_output == "finished"
    assert calls == [2]  # the failed call is replayed as the model saw it, not made again
    assert tool_steps(agentspan.get(copy_id))[0] == first


def test_a_custom_failure_functions_answer_too_and_a_raised_failure_fails_the_step(home):
    tool = function_tool(fails_the_first_time, failure_error_function=lambda ctx, exc: f"sorry: {exc}")
    handle = agentspan.start(agent_with(tool), "go")
    assert handle.result(timeout=20).final_output == "finished"
    assert tool_steps(handle)[0] == (StepStatus.COMPLETED, "sorry: lookup 1 broke", "ValueError: lookup 1 broke")

    calls.clear()
    handle = agentspan.start(agent_with(function_tool(fails_the_first_time, failure_error_function=None)), "go")
    with pytest.raises(Exception, match="lookup 1 broke"):
        handle.result(timeout=20)
    assert tool_steps(handle) == [(StepStatus.FAILED, None, "ValueError: lookup 1 broke")]


def test_a_timeout_the_sdk_answered_for_is_shown_failed(home):
    async def slow(n: int) -> str:
        """Slow the first time."""
        calls.append(n)
        if len(calls) == 1:
            await asyncio.sleep(2.0)
        return f"done {n}"

    handle = agentspan.start(agent_with(function_tool(slow, timeout=0.2)), "go")
    assert handle.result(timeout=20).final_output == "finished"
    assert tool_steps(handle) == [
        (StepStatus.COMPLETED, "Tool 'slow' timed out after 0.2 seconds.",
         "ToolTimeoutError: Tool 'slow' timed out after 0.2 seconds."),
        (StepStatus.COMPLETED, "done 2", None)]


def test_a_stand_in_that_raises_in_a_mock_run_is_shown_failed():
    def broken(n: int) -> str:
        raise ConnectionError("no route")

    agent = Agent(name="a", tools=[function_tool(fails_the_first_time)])
    result = mock_run(agent, "go", script=[call("fails_the_first_time", n=1), reply("finished")],
                      tools={"fails_the_first_time": broken})
    tools = [s for s in result.steps if s.kind.value == "tool"]
    assert [(s.status, s.error) for s in tools] == [(StepStatus.COMPLETED, "ConnectionError: no route")]
    assert tools[0].output == SDK_MESSAGE and calls == []
    assert [c.error for c in result.tool_calls] == ["ConnectionError: no route"]
    assert str(result.tool_calls[0]).endswith("raised ConnectionError: no route")


def test_a_tool_whose_invoker_is_a_test_double_is_called_as_it_is(home):
    """Only the SDK's own invoker is copied to note failures: an app test's mock is awaited itself."""
    invoker = AsyncMock(return_value="mocked")
    tool = FunctionTool(name="lookup", description="Looks up.", params_json_schema={"type": "object", "properties": {}},
                        on_invoke_tool=invoker)
    agent = Agent(name="a", tools=[tool], model=ScriptedModel([ToolCall("lookup", {}), "finished"], name="m"))
    assert agentspan.run(agent, "go").final_output == "finished"
    invoker.assert_awaited_once()


def test_slack_shows_arguments_holding_a_lone_surrogate():
    from agentspan.records import Approval
    from agentspan_server.slack import approval_blocks

    odd = "caf" + b"\xe9".decode("utf-8", "surrogateescape")
    approval = Approval(run_id="r", step_key="k", tool="open", args={"path": odd}, args_hash="h")
    blocks = approval_blocks(approval)
    request = httpx.Request("POST", "http://slack.test/api/chat.postMessage", json={"blocks": blocks})
    assert rb"caf\\udce9" in request.content  # sent escaped, not refused (the approval was never announced)


@pytest.mark.parametrize("noted", ["exception", "text"])
def test_a_tool_of_your_own_notes_the_failure_it_answered_for(noted):
    """`current_step().handled_error(...)` takes the exception (as the README shows) or its text."""

    def lookup(n: int) -> str:
        """Looks n up, with a fallback."""
        try:
            raise ValueError("backend down")
        except ValueError as exc:
            agentspan.current_step().handled_error(exc if noted == "exception" else f"ValueError: {exc}")
            return "no answer (backend down)"

    handle = agentspan.start(Agent(name="a", tools=[function_tool(lookup)],
                                   model=ScriptedModel([ToolCall("lookup", {"n": 1}), "sorry"], name="m")), "go")
    assert handle.result(timeout=20).final_output == "sorry"
    assert tool_steps(handle) == [(StepStatus.COMPLETED, "no answer (backend down)", "ValueError: backend down")]


def test_handled_error_refuses_what_is_neither_an_exception_nor_text():
    step = agentspan.StepInfo("r", "k", "r:k", 1, "tool", "t")
    with pytest.raises(TypeError, match="not int"):
        step.handled_error(42)  # type: ignore[arg-type]
    assert step.handled == []
