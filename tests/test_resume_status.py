"""A resumed run reads ``running`` as soon as `agentspan.resume` returns (was: ``waiting`` until its
execution thread attached), and a LangGraph ``invoke(None)`` (or a bare ``Command(resume=...)``) on
a thread with nothing left to run records no run (was: an empty ``completed`` one)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from agents import Agent, function_tool
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.errors import EmptyInputError
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command

import agentspan
import agentspan.executor
from agentspan import attached, executor
from agentspan.adapters import adapter_for
from agentspan.errors import LeaseLostError, RunCancelledError
from agentspan_langgraph import AgentspanSaver
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

import lgr_support

INPUT = {"messages": [HumanMessage(lgr_support.PROMPT)]}


@pytest.fixture(autouse=True)
def _home(home):
    lgr_support.RAISE_AT.clear()
    yield home


def thread(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": name}}


def runs() -> list[agentspan.Run]:
    return agentspan.get_store().list_runs(limit=50)


@pytest.fixture
def held_attach(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Holds every execution thread before `attach` until the event is set: what a handle reads
    right after `resume` returns does not depend on how fast that thread starts."""
    go = threading.Event()
    real = agentspan.executor.attach

    def attach_later(*args: Any, **kwargs: Any) -> Any:
        assert go.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(agentspan.executor, "attach", attach_later)
    yield go
    go.set()  # a test that failed before setting it leaves no thread waiting


# ---- (a) status right after resume ---------------------------------------------------------------
def waiting_langgraph_run() -> tuple[Any, str]:
    """A LangGraph run waiting on its interrupt, its lease given back, the interrupt approved."""
    graph = lgr_support.review_graph().copy(update={"checkpointer": AgentspanSaver()})
    assert graph.invoke(INPUT, thread("t-a"))["__interrupt__"]
    (run,) = runs()
    assert run.status is agentspan.RunStatus.WAITING and run.lease_owner is None
    agentspan.get(run.id).approve(by="alice")
    return graph, run.id


@function_tool
@agentspan.tool(approval_required=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    return "refunded"


def refund_agent() -> Agent:
    return Agent(name="calc", instructions="be helpful", tools=[refund],
                 model=ScriptedModel([ToolCall("refund", {"order_id": "42", "amount": 3.0}), "ok"], name="m"))


def waiting_openai_run() -> str:
    """An openai-agents run a worker gave back waiting for its approval, the approval decided."""
    store = agentspan.get_store()
    run, _ = store.create_run(agentspan.Run(framework="openai-agents", agent="calc", input="go",
                                            status=agentspan.RunStatus.PENDING))
    claimed = attached.claim(store, run.id, wait=0)
    outcome = asyncio.run(executor.execute(store, claimed, adapter_for(refund_agent()), refund_agent(), {},
                                           on_wait="release"))
    assert outcome.status is agentspan.RunStatus.WAITING and agentspan.get(run.id).status() is outcome.status
    agentspan.get(run.id).approve(by="alice")
    return run.id


def test_a_resumed_langgraph_run_reads_running_as_soon_as_resume_returns(held_attach):
    graph, run_id = waiting_langgraph_run()
    handle = agentspan.resume(run_id, graph)
    # its execution thread has not attached yet: the resume itself marked the run
    assert handle.status() is agentspan.RunStatus.RUNNING
    assert agentspan.get(run_id).status() is agentspan.RunStatus.RUNNING  # any reader of the store
    held_attach.set()
    assert handle.result(timeout=20)["messages"][-1].content == "Refunded by alice."
    assert handle.status() is agentspan.RunStatus.COMPLETED


def test_a_resumed_openai_agents_run_reads_running_as_soon_as_resume_returns(held_attach):
    held_attach.set()  # the worker's execution that leaves the run waiting attaches at once
    run_id = waiting_openai_run()
    held_attach.clear()
    handle = agentspan.resume(run_id, refund_agent())
    assert handle.status() is agentspan.RunStatus.RUNNING
    held_attach.set()
    assert handle.result(timeout=20).final_output == "ok"


def test_resume_marks_the_run_running_once_not_once_more(monkeypatch):
    """The mark moved from the execution thread to `resume`: still one status write."""
    graph, run_id = waiting_langgraph_run()
    store = agentspan.get_store()
    marks: list[int] = []
    real = store.update_run

    def counted(run_id: str, **fields: Any) -> agentspan.Run:
        if fields.get("status") is agentspan.RunStatus.RUNNING:
            marks.append(fields["epoch"])
        return real(run_id, **fields)

    monkeypatch.setattr(store, "update_run", counted)
    agentspan.resume(run_id, graph).result(timeout=20)
    assert len(marks) == 1


def test_resume_does_not_flip_a_run_another_process_holds():
    graph, run_id = waiting_langgraph_run()
    store = agentspan.get_store()
    run = store.get_run(run_id)
    store.claim_run(run_id, owner="elsewhere:1:abcd", expected_epoch=run.lease_epoch,
                    lease_expires_at=agentspan.records.now() + 60)
    with pytest.raises(LeaseLostError):
        agentspan.resume(run_id, graph, wait=0)
    assert agentspan.get(run_id).status() is agentspan.RunStatus.WAITING


def test_a_run_cancelled_between_the_claim_and_the_mark_ends_cancelled(monkeypatch):
    """The mark refused (the run was cancelled right after the claim): the handle's result raises
    the cancellation, as when the execution thread's attach found it."""
    graph, run_id = waiting_langgraph_run()
    claim = attached.claim

    def claim_then_cancel(store: Any, run_id: str, **kwargs: Any) -> agentspan.Run:
        claimed = claim(store, run_id, **kwargs)
        agentspan.get(run_id).cancel("changed my mind")
        return claimed

    monkeypatch.setattr(attached, "claim", claim_then_cancel)
    handle = agentspan.resume(run_id, graph)
    with pytest.raises(RunCancelledError):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.CANCELLED


# ---- (b) LangGraph: continuing a thread with nothing left to run is no run ------------------------
def finished_thread(name: str) -> tuple[Any, dict[str, Any]]:
    graph = lgr_support.support_graph().copy(update={"checkpointer": AgentspanSaver()})
    final = graph.invoke(INPUT, thread(name))
    (run,) = runs()
    assert run.status is agentspan.RunStatus.COMPLETED
    return graph, final


def test_invoke_none_on_a_finished_thread_returns_its_state_and_records_no_run():
    graph, final = finished_thread("t-done")
    checkpoints = len(list(graph.checkpointer.list(thread("t-done"))))
    assert graph.invoke(None, thread("t-done")) == final  # what LangGraph returns: the final state
    assert len(runs()) == 1  # was: a second, empty, completed run
    assert list(graph.stream(None, thread("t-done"))) == []  # LangGraph streams nothing
    assert asyncio.run(graph.ainvoke(None, thread("t-done"))) == final
    assert len(runs()) == 1
    assert len(list(graph.checkpointer.list(thread("t-done")))) == checkpoints


def test_a_bare_command_resume_on_a_finished_thread_records_no_run():
    graph, final = finished_thread("t-cmd")

    async def streamed() -> list[Any]:
        return [chunk async for chunk in graph.astream(Command(resume=True), thread("t-cmd"))]

    assert graph.invoke(Command(resume={"approved": True}), thread("t-cmd")) == final
    assert asyncio.run(streamed()) == []
    assert len(runs()) == 1


def test_invoke_none_on_a_thread_without_checkpoints_is_langgraphs_error_and_no_run():
    graph = lgr_support.support_graph().copy(update={"checkpointer": AgentspanSaver()})
    with pytest.raises(EmptyInputError):
        graph.invoke(None, thread("t-new"))
    assert runs() == []


def test_invoke_none_is_still_a_run_when_the_thread_has_a_task_left():
    """A finished thread whose state was updated to run a node again: LangGraph runs it, so that
    invocation is a run."""
    ran: list[int] = []

    def step(state: MessagesState) -> dict[str, Any]:
        ran.append(len(state["messages"]))
        return {"messages": [AIMessage("done")]}

    builder = StateGraph(MessagesState)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    graph = builder.compile(checkpointer=AgentspanSaver(), name="again")
    graph.invoke(INPUT, thread("t-again"))
    (done,) = runs()
    graph.update_state(thread("t-again"), {"messages": [HumanMessage("and order 43")]}, as_node="__start__")
    assert graph.get_state(thread("t-again")).next == ("step",)
    assert graph.invoke(None, thread("t-again"))["messages"][-1].content == "done"
    assert ran == [1, 3]
    newer, older = runs()
    assert older.id == done.id and newer.status is agentspan.RunStatus.COMPLETED and newer.session_id == "t-again"
