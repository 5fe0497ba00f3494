"""`agentspan.instrument()`: the frameworks' own entry points run durably, unchanged code."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from agents import Agent, Runner, function_tool, set_tracing_disabled
from google.adk.agents import LlmAgent
from google.adk.runners import InMemoryRunner
from google.genai import types

import agentspan
from agentspan.errors import ConfigurationError
from agentspan_adk import AgentspanPlugin
from agentspan_adk.testing import Call, ScriptedLlm
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

set_tracing_disabled(True)
effects: list[str] = []


@pytest.fixture(autouse=True)
def _clean(home) -> Iterator[None]:
    effects.clear()
    yield
    agentspan.uninstrument()


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    effects.append(f"add {a} {b}")
    return a + b


def calc(*script) -> Agent:
    return Agent(name="calc", instructions="Add.", tools=[add], model=ScriptedModel(list(script), name="m"))


def adk_add(a: int, b: int) -> int:
    """Add two numbers."""
    effects.append(f"adk add {a} {b}")
    return a + b


def test_openai_runner_calls_become_durable_runs_and_uninstrument_restores_them():
    assert agentspan.instrument("openai-agents") == agentspan.instrument("openai-agents")  # idempotent
    result = Runner.run_sync(calc(ToolCall("add", {"a": 1, "b": 2}), "3"), "1+2?", max_turns=5)
    assert result.final_output == "3" and effects == ["add 1 2"]
    (run,) = agentspan.get_store().list_runs()
    assert (run.framework, run.status, run.output) == ("openai-agents", agentspan.RunStatus.COMPLETED, "3")
    assert [s.kind.value for s in agentspan.get(run.id).steps()] == ["llm", "tool", "llm"]

    async def in_async_code() -> str:
        return (await Runner.run(calc("async"), "hi")).final_output

    assert asyncio.run(in_async_code()) == "async" and len(agentspan.get_store().list_runs()) == 2
    assert agentspan.run(calc("once"), "x").final_output == "once"  # a durable run's own call is not routed again
    assert len(agentspan.get_store().list_runs()) == 3

    agentspan.uninstrument("openai-agents")
    assert Runner.run_sync(calc("plain"), "x").final_output == "plain"
    assert len(agentspan.get_store().list_runs()) == 3


def test_openai_max_turns_none_means_no_limit_as_in_the_sdk():
    turns = [ToolCall("add", {"a": n, "b": n}) for n in range(11)] + ["done"]
    assert Runner.run_sync(calc(*turns), "add", max_turns=None).final_output == "done"  # the plain SDK
    agentspan.instrument("openai-agents")
    effects.clear()
    assert Runner.run_sync(calc(*turns), "add", max_turns=None).final_output == "done"
    assert len(effects) == 11 and len(agentspan.get_store().list_runs()) == 1


def test_openai_run_streamed_becomes_a_streamed_durable_run():
    agentspan.instrument("openai-agents")

    async def stream() -> tuple[list[str], str]:
        result = Runner.run_streamed(calc(ToolCall("add", {"a": 2, "b": 2}), "4"), "2+2?")
        names = [getattr(e, "name", e.type) async for e in result.stream_events()]
        return names, result.final_output

    names, final = asyncio.run(stream())
    assert final == "4" and effects == ["add 2 2"] and names.count("tool_output") == 1
    (run,) = agentspan.get_store().list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED
    assert [s.kind.value for s in agentspan.get(run.id).steps()] == ["llm", "tool", "llm"]


def test_openai_calls_with_options_agentspan_does_not_journal_are_left_to_the_sdk(caplog, monkeypatch):
    from agentspan_openai_agents import _instrument

    agentspan.instrument("openai-agents")
    result = Runner.run_sync(calc("kept"), "x", previous_response_id="resp_1")  # journaled, and stored
    (run,) = agentspan.get_store().list_runs()
    assert result.final_output == "kept" and run.options["previous_response_id"] == "resp_1"
    # an option Agentspan does not know (as one a later SDK adds) leaves the call to the SDK
    monkeypatch.setattr(_instrument, "JOURNALED_OPTIONS", _instrument.JOURNALED_OPTIONS - {"conversation_id"})
    with caplog.at_level(logging.WARNING, logger="agentspan"):
        result = Runner.run_sync(calc("plain"), "x", conversation_id="conv_1")
    assert result.final_output == "plain" and len(agentspan.get_store().list_runs()) == 1
    assert any("conversation_id is not journaled" in r.getMessage() for r in caplog.records)


def test_adk_runners_get_the_plugin_once():
    agentspan.instrument("adk")
    agent = LlmAgent(name="calc", model=ScriptedLlm(turns=[Call("adk_add", {"a": 2, "b": 3}), "5"]), tools=[adk_add])
    runner = InMemoryRunner(agent=agent, app_name="calculator")
    assert [type(p) for p in runner.plugin_manager.plugins] == [AgentspanPlugin]
    own = InMemoryRunner(agent=agent, app_name="calculator", plugins=[AgentspanPlugin(name="mine")])
    assert [p.name for p in own.plugin_manager.plugins] == ["mine"]

    async def main() -> str:
        session = await runner.session_service.create_session(app_name="calculator", user_id="u")
        message = types.Content(role="user", parts=[types.Part(text="2+3?")])
        events = [e async for e in runner.run_async(user_id="u", session_id=session.id, new_message=message)]
        return events[-1].content.parts[0].text

    assert asyncio.run(main()) == "5" and effects == ["adk add 2 3"]
    (run,) = agentspan.get_store().list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED and len(agentspan.get(run.id).steps()) == 3
    agentspan.uninstrument("adk")
    assert InMemoryRunner(agent=agent, app_name="calculator").plugin_manager.plugins == []


def test_instrument_everything_and_what_cannot_be_instrumented():
    assert set(agentspan.instrument()) == {"openai-agents", "adk"}
    with pytest.raises(ConfigurationError, match="checkpointer=AgentspanSaver"):
        agentspan.instrument("langgraph")
    with pytest.raises(ConfigurationError, match="no Agentspan adapter"):
        agentspan.instrument("crewai")
