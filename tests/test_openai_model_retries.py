"""A model call that raises inside a durable run: the SDK retrying it (``ModelSettings.retry``) is the
same step's next attempt (same key, same input hash), so the run replays as it ran; a call made
instead of it (a fallback agent) is not taken for a divergence; a failure nobody retries stays in
the trail."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, ModelSettings, Runner, function_tool, set_tracing_disabled
from agents.retry import ModelRetryBackoffSettings, ModelRetrySettings

import agentspan
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from journal_utils import crashed_copy

set_tracing_disabled(True)
live: list[str] = []


@pytest.fixture(autouse=True)
def _fresh(home: Any) -> None:
    live.clear()


class Flaky(ScriptedModel):
    """Raises on its first call in this process, then answers from its script."""

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        live.append(self.agentspan_model_id)
        if live.count(self.agentspan_model_id) == 1:
            raise ConnectionError("network blip")
        return await super().get_response(*args, **kwargs)


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


RETRY = ModelSettings(retry=ModelRetrySettings(max_retries=2, backoff=ModelRetryBackoffSettings(initial_delay=0.01),
                                               policy=lambda context: True))


def test_a_call_the_sdk_retried_is_one_step_and_replays_as_it_ran():
    agent = Agent(name="calc", tools=[add], model_settings=RETRY,
                  model=Flaky([ToolCall("add", {"a": 1, "b": 2}), "3"], name="m"))
    handle = agentspan.start(agent, "1+2?")
    assert handle.result(timeout=20).final_output == "3"
    assert len(live) == 3  # the failed call, its retry, the final answer
    assert [(s.key, s.status.value, s.attempt) for s in handle.steps()] == [
        ("llm:0", "completed", 2), ("llm:0/call:call_0_0", "completed", 1), ("llm:1", "completed", 1)]

    copy_id = crashed_copy(handle.id, keep=2)  # killed before the last model call
    live.clear()
    live.append("scripted/m")  # this process's first call has failed already
    assert agentspan.resume(copy_id, agent).result(timeout=20).final_output == "3"
    assert live == ["scripted/m", "scripted/m"]  # only the last call is made again


def test_a_different_call_after_a_failed_one_is_not_a_divergence():
    first = Agent(name="first", model=Flaky(["never"], name="first"))
    fallback = Agent(name="fallback", instructions="Answer briefly.",  # another input than the failed call
                     model=ScriptedModel(["from the fallback"], name="fallback"))

    @function_tool
    async def ask(question: str) -> str:
        """Ask an expert agent, or its fallback."""
        try:
            return (await Runner.run(first, question)).final_output
        except ConnectionError:
            return (await Runner.run(fallback, question)).final_output

    agent = Agent(name="desk", tools=[ask],
                  model=ScriptedModel([ToolCall("ask", {"question": "q"}, call_id="c1"), "done"], name="m"))
    handle = agentspan.start(agent, "go")
    assert handle.result(timeout=20).final_output == "done"
    nested = {s.key: (s.name, s.status.value) for s in handle.steps() if s.key.startswith("llm:0/call:c1/")}
    assert nested == {"llm:0/call:c1/llm:0": ("fallback", "completed")}  # the failed call's attempt replaced
    (tool,) = [s for s in handle.steps() if s.key == "llm:0/call:c1"]
    assert tool.output == "from the fallback"


def test_a_failure_nobody_retries_fails_the_run_with_the_call_in_the_trail():
    agent = Agent(name="calc", model=Flaky(["never"], name="m"))
    handle = agentspan.start(agent, "go")
    with pytest.raises(ConnectionError):
        handle.result(timeout=20)
    (step,) = handle.steps()
    assert (step.key, step.status.value, step.error) == ("llm:0", "failed", "ConnectionError: network blip")
