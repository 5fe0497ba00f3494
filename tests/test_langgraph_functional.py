"""LangGraph's functional API (``@entrypoint``/``@task``) under Agentspan and its testing kit:
agent names, ``mock_run`` inputs, and ``crash_at`` keys that name the same step in every run
(a LangGraph key carries task ids that change from run to run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.func import entrypoint, task
from langgraph.graph import START, MessagesState, StateGraph

import agentspan
from agentspan.errors import ConfigurationError
from agentspan.testing import call, expect, mock_run, reply
from agentspan_langgraph import AgentspanSaver
from agentspan_langgraph._mock import stable_key

import tk_graphs as lg
from tk_effects import effects

writer = lg.ProviderChatModel(model_name="gpt-4o")  # answered by the script; fails if really called


@task
def draft(i: int) -> str:
    return writer.invoke([HumanMessage(f"part {i}")]).content


@entrypoint()
def pipeline(inp: dict[str, Any]) -> dict[str, Any]:
    """Three sequential tasks, one model call each: three steps of one stable form."""
    return {"parts": [draft(i).result() for i in range(inp["n"])]}


@entrypoint()
def answer(question: str) -> dict[str, str]:
    """An entrypoint taking a str (not a messages state)."""
    return {"question": question, "reply": writer.invoke([HumanMessage(question)]).content}


class SimulatedCrash(BaseException):
    """Stands in for the process dying (unwinds everything, records nothing)."""


CRASH_ONCE: list[str] = []


@task
def fragile(i: int) -> str:
    if CRASH_ONCE:
        CRASH_ONCE.pop()
        raise SimulatedCrash
    return f"done {i}"


@entrypoint()
def fragile_flow(inp: dict[str, Any]) -> str:
    return fragile(inp["i"]).result()


@pytest.fixture(autouse=True)
def _home(home: Path, effects_file: Path) -> Path:
    CRASH_ONCE.clear()
    return home


SUPPORT_SCRIPT = [call("lookup_order", order_id="42"), reply("Paid."), reply("Summary: paid.")]
PIPELINE_SCRIPT = [reply("a"), reply("b"), reply("c")]


# ---- crash_at: keys that name the same step in the next run ------------------------------------
def test_stable_key_drops_only_the_task_ids_of_the_namespace() -> None:
    tid, other = "2fea0c1d-8c61-c670-589e-44376b680bf6", "b6c90a11-98ff-09c0-7a28-5a52fb30abf1"
    assert stable_key(f"agent:{tid}/llm:0") == "agent/llm:0"
    assert stable_key(f"agent:{tid}") == "agent"
    assert stable_key(f"flow:{tid}|step:{other}/retry:1/llm:0") == "flow|step/retry:1/llm:0"
    assert stable_key(f"tools:{tid}/call:{other}") == f"tools/call:{other}"  # a tool call id is kept
    assert stable_key("graph/llm:0") == "graph/llm:0"
    # a task named with a colon (``@task(name="fetch:v2")``): its ids go too (were all kept)
    assert stable_key(f"flow:{tid}|fetch:v2:{other}/llm:0") == "flow|fetch:v2/llm:0"


def test_crash_at_a_stategraph_step_named_by_an_earlier_run() -> None:
    first = mock_run(lg.support_graph, "Is 42 paid?", script=SUPPORT_SCRIPT)
    assert first.crash_points == ["agent/llm:0", "agent", "tools/call:call_0_0", "tools", "agent/llm:0#1",
                                  "agent#1", "summarize/llm:0", "summarize"]
    # the agent node's second model call, named as the earlier run names it
    result = mock_run("tk_graphs:support_graph", "Is 42 paid?", script=SUPPORT_SCRIPT, crash_at="agent/llm:0#1")
    assert stable_key(result.crashed_at) == "agent/llm:0" and result.crashed_at not in {s.key for s in first.steps}
    assert result.crashed_at == result.model_calls[1].key
    assert result.live == {"llm": 2} and result.replayed == {"llm": 0}  # that call and the summary, after it
    assert effects() == ["lookup 42", "lookup 42"]  # once per run: the resume did not repeat it
    expect(result).completed().output_contains("Summary: paid.")


def test_crash_at_a_full_key_of_an_earlier_run_finds_the_same_tool_call() -> None:
    first = mock_run(lg.support_graph, "Is 42 paid?", script=SUPPORT_SCRIPT)
    key = first.tool_calls[0].key  # tools:<task id of that run>/call:call_0_0
    result = mock_run("tk_graphs:support_graph", "Is 42 paid?", script=SUPPORT_SCRIPT, crash_at=key)
    assert result.crashed_at != key and stable_key(result.crashed_at) == "tools/call:call_0_0"
    assert result.live["tool"] == 1 and effects() == ["lookup 42", "lookup 42"]  # in flight: it ran after the resume


def test_crash_at_an_ambiguous_or_unknown_key_is_explained() -> None:
    first = mock_run(lg.support_graph, "Is 42 paid?", script=SUPPORT_SCRIPT)
    with pytest.raises(ConfigurationError, match=r"is ambiguous: .* its stable form 'agent/llm:0' names 2 steps of "
                                                 r"this run: agent/llm:0, agent/llm:0#1; pass the one you mean"):
        mock_run("tk_graphs:support_graph", "Is 42 paid?", script=SUPPORT_SCRIPT, crash_at=first.steps[0].key)
    with pytest.raises(ConfigurationError, match=r"without reaching crash_at='agent/llm:0#2': it journaled 8 steps, "
                                                 r"named as crash_at takes them.*\(agent/llm:0, agent, "
                                                 r"tools/call:call_0_0, tools, agent/llm:0#1, agent#1, "):
        mock_run("tk_graphs:support_graph", "Is 42 paid?", script=SUPPORT_SCRIPT, crash_at="agent/llm:0#2")


def test_crash_at_a_task_of_an_entrypoint() -> None:
    first = mock_run(pipeline, {"n": 3}, script=PIPELINE_SCRIPT)
    assert first.crash_points == ["pipeline|draft/llm:0", "pipeline|draft/llm:0#1", "pipeline|draft/llm:0#2",
                                  "pipeline"]
    result = mock_run(pipeline, {"n": 3}, script=PIPELINE_SCRIPT, crash_at=first.crash_points[1])
    assert result.crashed_at == result.model_calls[1].key and result.crash_points == first.crash_points
    assert result.output == {"parts": ["a", "b", "c"]}  # each scripted answer used once, in order


# ---- mock_run input --------------------------------------------------------------------------
def test_mock_run_passes_a_str_to_an_entrypoint_that_takes_one() -> None:
    result = mock_run(answer, "Is 42 paid?", script=[reply("Paid.")])
    assert result.output == {"question": "Is 42 paid?", "reply": "Paid."}  # was: {"messages": [...]} as question
    assert result.store.get_run(result.run_id).input == "Is 42 paid?"
    assert mock_run(lg.support_graph, "Is 42 paid?", script=SUPPORT_SCRIPT).output == "Summary: paid."  # wrapped


@entrypoint()
def chat(state: MessagesState) -> str:
    """An entrypoint taking a messages state (its input schema a $ref to the TypedDict)."""
    return writer.invoke(state["messages"]).content


def test_mock_run_wraps_a_str_for_an_entrypoint_that_takes_messages() -> None:
    result = mock_run(chat, "Is 42 paid?", script=[reply("Paid.")])
    assert result.output == "Paid."  # was: the str passed as is, TypeError in the workflow


# ---- agent names -----------------------------------------------------------------------------
def _double(inp: dict[str, Any]) -> dict[str, Any]:
    return {"out": fragile(inp["i"]).result()}


def test_a_workflow_is_recorded_under_its_function_name() -> None:
    agentspan.run(fragile_flow, {"i": 1}, thread_id="run")
    entrypoint(checkpointer=AgentspanSaver())(_double).invoke({"i": 2}, {"configurable": {"thread_id": "direct"}})
    agentspan.run(fragile_flow.copy(update={"name": "custom"}), {"i": 3}, thread_id="named")
    mock = mock_run(answer, "q", script=[reply("a")])
    single = StateGraph(MessagesState)  # an unnamed StateGraph keeps LangGraph's default, even with one node
    single.add_node("only", lambda state: {})
    single.add_edge(START, "only")
    agentspan.run(single.compile(), {"messages": []}, thread_id="graph")
    agents = {r.session_id: r.agent for r in agentspan.get_store().list_runs()}
    assert agents == {"run": "fragile_flow", "direct": "_double", "named": "custom", "graph": "LangGraph"}
    assert mock.store.get_run(mock.run_id).agent == "answer"  # was: every workflow "LangGraph"


def test_a_run_recorded_under_the_old_default_name_still_resumes() -> None:
    CRASH_ONCE.append("crash")
    handle = agentspan.start(fragile_flow, {"i": 7}, agent_name="LangGraph")  # as before this change
    with pytest.raises(SimulatedCrash):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.RUNNING
    assert agentspan.resume(handle.id, fragile_flow).result(timeout=20) == "done 7"
    assert agentspan.get_store().get_run(handle.id).agent == "LangGraph"
