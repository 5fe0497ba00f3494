"""``interrupt()`` inside journaled tool calls: a replayed call passes over the interrupts it made.

LangGraph hands a task's resume values out by the order of its ``interrupt()`` calls, and a node
runs again from its start on each resume. A tool call that completed after its interrupt was
answered is served from the journal on the next resume and does not call ``interrupt()`` again:
the next tool's interrupt must still get its own answer, not the replayed one's (was: a second
action a human rejected ran with the first one's approval).
"""

from __future__ import annotations

import operator
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

import agentspan
from agentspan.export import export_run
from agentspan.testing import replay
from agentspan_langgraph import AgentspanSaver

DONE: list[str] = []


@pytest.fixture(autouse=True)
def _home(home: Path) -> Path:
    return home


@tool
def act(what: str) -> str:
    """Performs an action once a human approves it."""
    answer = interrupt({"do": what})
    approved = answer == "yes" or (isinstance(answer, dict) and answer.get("approved") is True)
    if approved:
        DONE.append(what)
    shown = answer["status"] if isinstance(answer, dict) else answer
    return f"{what}: {'done' if approved else 'refused'} ({shown})"


class _State(TypedDict):
    out: Annotated[list[str], operator.add]


def _two_acts(state: _State) -> dict[str, list[str]]:
    first = act.invoke({"what": "refund $5"})
    second = act.invoke({"what": "delete account"})
    return {"out": [first, second]}


def _graph(checkpointer: Any, node: Any = _two_acts) -> Any:
    """``START → n → END``, node ``n`` asking for two actions."""
    builder = StateGraph(_State)
    builder.add_node("n", node)
    builder.add_edge(START, "n")
    builder.add_edge("n", END)
    return builder.compile(checkpointer=checkpointer)


def _answer_directly(checkpointer: Any, thread: str) -> tuple[list[str], list[str]]:
    graph = _graph(checkpointer)
    config = {"configurable": {"thread_id": thread}}
    state = graph.invoke({"out": []}, config)
    asked = []
    for answer in ("yes", "no"):
        (pending,) = state["__interrupt__"]
        asked.append(pending.value["do"])
        state = graph.invoke(Command(resume={pending.id: answer}), config)
    return asked, state["out"]


def test_a_later_interrupt_gets_its_own_answer_when_an_earlier_call_is_replayed() -> None:
    expected = (["refund $5", "delete account"], ["refund $5: done (yes)", "delete account: refused (no)"])
    DONE.clear()
    assert _answer_directly(InMemorySaver(), "plain") == expected
    assert DONE == ["refund $5", "refund $5"]  # LangGraph alone runs the first action again
    DONE.clear()
    assert _answer_directly(AgentspanSaver(), "durable") == expected  # was: 'delete account: done (yes)'
    assert DONE == ["refund $5"]  # the completed first call replayed, the rejected one not done


def _approve_then_reject(handle: agentspan.Handle) -> None:
    """Approves the run's first approval, then rejects its second."""
    for decide in ("approve", "reject"):
        deadline = time.monotonic() + 20
        while not handle.pending_approvals() and time.monotonic() < deadline:
            time.sleep(0.02)
        (approval,) = handle.pending_approvals()
        getattr(handle, decide)(approval.id, by="human")


def test_a_rejected_second_approval_is_not_run_with_the_first_ones_decision() -> None:
    DONE.clear()
    handle = agentspan.start(_graph(None), {"out": []}, thread_id="run")
    _approve_then_reject(handle)
    assert handle.result(timeout=20)["out"] == ["refund $5: done (approved)", "delete account: refused (rejected)"]
    assert DONE == ["refund $5"]  # was: the delete ran too, with the first approval's decision


@tool
def outer(what: str) -> str:
    """Asks for an action through the `act` tool."""
    return "outer(" + act.invoke({"what": what}) + ")"


def test_interrupts_of_a_tool_called_inside_a_replayed_tool_are_passed_over_too() -> None:
    def node(state: _State) -> dict[str, list[str]]:
        first = outer.invoke({"what": "refund $5"})  # its interrupt is made inside `act`, inside `outer`
        second = act.invoke({"what": "delete account"})
        return {"out": [first, second]}

    graph = _graph(AgentspanSaver(), node)
    config = {"configurable": {"thread_id": "nested"}}
    DONE.clear()
    state = graph.invoke({"out": []}, config)
    for answer in ("yes", "no"):
        (pending,) = state["__interrupt__"]
        state = graph.invoke(Command(resume={pending.id: answer}), config)
    assert state["out"] == ["outer(refund $5: done (yes))", "delete account: refused (no)"]
    assert DONE == ["refund $5"]  # was: the delete done with the refund's answer
    (run,) = agentspan.get_store().list_runs()
    steps = {s.key: s for s in agentspan.get(run.id).steps()}
    counts = {key: step.output for key, step in steps.items() if key.endswith("/interrupts")}
    assert sorted(counts.values()) == [1, 1, 1]  # outer, the act inside it, the second act
    # the tool steps hold the tools' own results (the count is a step of its own)
    assert all("interrupts" not in str(step.output) for step in steps.values() if step.kind.value == "tool")


def _act_then_ask(state: _State) -> dict[str, list[str]]:
    first = act.invoke({"what": "refund $5"})  # an interrupt inside a tool call
    second = interrupt({"do": "delete account"})  # then one of the node's own
    if second["approved"]:
        DONE.append("delete account")
    return {"out": [first, f"delete account: {second['status']}"]}


def test_a_recorded_run_interrupted_in_a_tool_then_in_its_node_replays_offline() -> None:
    DONE.clear()
    handle = agentspan.start(_graph(None, _act_then_ask), {"out": []}, thread_id="mixed")
    _approve_then_reject(handle)
    recorded = handle.result(timeout=20)
    assert recorded["out"] == ["refund $5: done (approved)", "delete account: rejected"]
    assert DONE == ["refund $5"]
    export = export_run(agentspan.get_store(), handle.id)
    DONE.clear()
    # was: ReplayDivergenceError at the node's interrupt, matched with the tool call's approval
    # (the replayed call makes no interrupt, so the node's came first)
    result = replay(export, _graph(None, _act_then_ask))
    assert result.status is agentspan.RunStatus.COMPLETED
    assert result.raw["out"] == recorded["out"]
    assert result.live == {} and result.replayed == {"tool": 1}
    assert DONE == []  # nothing ran: the tool call answered from the recording, the delete rejected
