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


def _graph(checkpointer: Any) -> Any:
    def node(state: _State) -> dict[str, list[str]]:
        first = act.invoke({"what": "refund $5"})
        second = act.invoke({"what": "delete account"})
        return {"out": [first, second]}

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


def test_a_rejected_second_approval_is_not_run_with_the_first_ones_decision() -> None:
    DONE.clear()
    handle = agentspan.start(_graph(None), {"out": []}, thread_id="run")
    for decide in ("approve", "reject"):
        deadline = time.monotonic() + 20
        while not handle.pending_approvals() and time.monotonic() < deadline:
            time.sleep(0.02)
        (approval,) = handle.pending_approvals()
        getattr(handle, decide)(approval.id, by="human")
    assert handle.result(timeout=20)["out"] == ["refund $5: done (approved)", "delete account: refused (rejected)"]
    assert DONE == ["refund $5"]  # was: the delete ran too, with the first approval's decision
