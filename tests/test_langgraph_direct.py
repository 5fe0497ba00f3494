"""Graphs compiled with `AgentspanSaver` and invoked directly (``graph.invoke``, ``stream``,
``ainvoke``, ``astream``), without ``agentspan.run``: each top-level invocation is an Agentspan
run (`agentspan_langgraph._direct`)."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.load import load
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt

import agentspan
from agentspan.errors import ApprovalPending, InDoubtStepError, LeaseLostError
from agentspan_langgraph import AgentspanSaver

import lgr_support
from crash_support import calls_of
from lgr_support import PROMPT, SimulatedCrash, effects, plain

INPUT = {"messages": [HumanMessage(PROMPT)]}


@pytest.fixture(autouse=True)
def _home(home):
    lgr_support.RAISE_AT.clear()
    yield home


def on_saver(graph: Any, **saver: Any) -> Any:
    return graph.copy(update={"checkpointer": AgentspanSaver(**saver)})


def thread(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": name}}


def runs() -> list[agentspan.Run]:
    return agentspan.get_store().list_runs(limit=50)


def only_run() -> agentspan.Run:
    (run,) = runs()
    return run


def test_invoke_is_a_run_with_every_call_and_node_in_the_trail():
    result = on_saver(lgr_support.support_graph()).invoke(INPUT, thread("t-1"))
    expected = plain(lgr_support.support_graph().invoke(INPUT)["messages"])
    assert plain(result["messages"]) == expected  # what LangGraph returns, unchanged
    run = only_run()
    assert (run.framework, run.agent, run.session_id, run.status) == (
        "langgraph", "support", "t-1", agentspan.RunStatus.COMPLETED)
    assert run.options == {"thread_id": "t-1", "durability": "sync", "config": {"configurable": {"thread_id": "t-1"}}}
    assert plain(load(run.output, allowed_objects="messages")["messages"]) == expected
    steps = agentspan.get(run.id).steps()
    kinds = [s.kind.value for s in steps]
    assert (kinds.count("llm"), kinds.count("tool"), kinds.count("checkpoint")) == (4, 3, 0)  # nodes: checkpoints
    llm = next(s for s in steps if s.kind.value == "llm")
    assert (llm.model, llm.input_tokens, llm.output_tokens) == ("agent", 100, 20)
    # the graph's checkpoints name the run that wrote them (a later invoke(None) finds it there)
    checkpoint = agentspan.get_store().get_checkpoint("t-1", "", None)
    assert checkpoint is not None and checkpoint.metadata["agentspan_run_id"] == run.id


def test_each_new_input_on_a_thread_is_a_new_run():
    graph = on_saver(lgr_support.review_graph())
    graph.invoke(INPUT, thread("t-2"))  # waits on its interrupt
    (waiting,) = runs()
    assert waiting.status is agentspan.RunStatus.WAITING
    graph.invoke({"messages": [HumanMessage("Something else")]}, thread("t-2"))
    newer, older = runs()
    assert older.id == waiting.id and older.status is agentspan.RunStatus.CANCELLED
    assert "superseded" in (older.error or "")
    assert newer.status is agentspan.RunStatus.WAITING and newer.session_id == "t-2"
    # the superseded run's approval no longer asks for a decision; the new run's does
    pending = agentspan.get_store().list_approvals(status="pending")
    assert [a.run_id for a in pending] == [newer.id]
    (expired,) = agentspan.get_store().list_approvals(run_id=older.id)
    assert (expired.status.value, expired.reason) == ("expired", "the run was cancelled")


@pytest.mark.parametrize(("answer", "status"), [({"approved": True, "by": "bob"}, "approved"),
                                                ({"approved": False, "reason": "no"}, "rejected")])
def test_the_applications_own_command_resume_answers_the_interrupt_and_closes_its_approval(answer, status):
    graph = on_saver(lgr_support.review_graph())
    first = graph.invoke(INPUT, thread("t-3"))
    assert first["__interrupt__"]  # LangGraph's answer, as without Agentspan
    (approval,) = agentspan.get(only_run().id).pending_approvals()
    result = graph.invoke(Command(resume=answer), thread("t-3"))
    expected = "Refunded by bob." if status == "approved" else "Not refunded: no"
    assert result["messages"][-1].content == expected
    run = only_run()  # the resume continued the waiting run
    assert run.status is agentspan.RunStatus.COMPLETED
    decided = agentspan.get_store().get_approval(approval.id)
    assert (decided.status.value, decided.decided_by) == (status, "langgraph")
    step = next(s for s in agentspan.get(run.id).steps() if s.kind.value == "approval")
    assert step.output["resume"] == answer and step.output["status"] == status


def test_answering_with_the_config_langgraph_hands_back_continues_the_waiting_run():
    """``graph.get_state(thread).config`` names the thread's latest checkpoint: resuming with it is
    resuming the thread, as with LangGraph's own savers (was: taken for time travel, so the waiting
    run stayed waiting with its approval open, and the node's calls were made again, unjournaled)."""
    graph = on_saver(lgr_support.review_graph())
    graph.invoke(INPUT, thread("t-head"))
    (approval,) = agentspan.get(only_run().id).pending_approvals()
    assert calls_of("writer") == [0]
    head = graph.get_state(thread("t-head")).config
    assert head["configurable"]["checkpoint_id"]
    result = graph.invoke(Command(resume={"approved": True, "by": "bob"}), head)
    assert result["messages"][-1].content == "Refunded by bob."
    run = only_run()
    assert run.status is agentspan.RunStatus.COMPLETED
    assert agentspan.get_store().get_approval(approval.id).status.value == "approved"
    assert calls_of("writer") == [0]  # the node's model call replayed, not made again

def test_a_decision_made_in_agentspan_is_delivered_by_invoke_none():
    graph = on_saver(lgr_support.review_graph())
    graph.invoke(INPUT, thread("t-4"))
    agentspan.get(only_run().id).reject(reason="too much")
    result = graph.invoke(None, thread("t-4"))
    assert result["messages"][-1].content == "Not refunded: too much"
    assert only_run().status is agentspan.RunStatus.COMPLETED
    assert effects() == []


@pytest.mark.parametrize("answer", [False, {"amount": 20}])
def test_the_applications_own_answer_is_delivered_again_when_invoke_none_goes_on_after_a_crash(answer):
    seen: list[Any] = []

    def gate(state: dict[str, Any]) -> dict[str, Any]:
        decision = interrupt({"charge": 30})
        seen.append(decision)
        if len(seen) == 1:
            raise SimulatedCrash("after the answer reached the node")
        return {"log": [f"charged {decision['amount']}" if decision else "not charged"]}

    builder = StateGraph(_Log)
    builder.add_node("gate", gate)
    builder.add_edge(START, "gate")
    builder.add_edge("gate", END)
    graph = builder.compile(checkpointer=AgentspanSaver())
    graph.invoke({"log": []}, thread("t-answer"))
    with pytest.raises(SimulatedCrash):
        graph.invoke(Command(resume=answer), thread("t-answer"))
    result = graph.invoke(None, thread("t-answer"))
    assert seen == [answer, answer]  # the application's value both times, not Agentspan's decision dict
    assert result["log"] == (["not charged"] if answer is False else ["charged 20"])
    assert only_run().status is agentspan.RunStatus.COMPLETED


class _Log(TypedDict):
    log: Annotated[list[str], operator.add]


@pytest.mark.parametrize(("transport", "use_async"), [("embedded", False), ("embedded", True),
                                                     ("server-sqlite", True)])  # a server: `conftest.home`
def test_invoke_none_after_a_crash_inside_a_node_repeats_no_completed_call(transport, use_async):
    graph = on_saver(lgr_support.support_graph())

    def invoke(given: Any) -> Any:
        return asyncio.run(graph.ainvoke(given, thread("t-5"))) if use_async else graph.invoke(given, thread("t-5"))

    lgr_support.RAISE_AT.add("model:writer:1")  # dies in the third call of the summarize node
    with pytest.raises(SimulatedCrash):
        invoke(INPUT)
    crashed = only_run()
    assert crashed.status is agentspan.RunStatus.RUNNING and crashed.lease_owner is None  # given back
    result = invoke(None)
    assert result["messages"][-1].content == lgr_support.SUMMARY
    assert only_run().status is agentspan.RunStatus.COMPLETED
    assert calls_of("agent") == [0, 1] and calls_of("writer") == [0, 1, 1]
    assert sorted(e.split()[0] for e in effects()) == ["lookup", "lookup", "notify"]


def test_a_prompt_that_says_the_time_replays_when_invoke_none_goes_on_after_a_crash(monkeypatch):
    said: list[str] = []

    def timed(text: str) -> HumanMessage:
        said.append(f"{text} at {agentspan.now().isoformat()}")
        return HumanMessage(said[-1])

    monkeypatch.setattr(lgr_support, "HumanMessage", timed)
    graph = on_saver(lgr_support.support_graph())
    lgr_support.RAISE_AT.add("model:writer:1")  # dies in the summarize node's second model call
    with pytest.raises(SimulatedCrash):
        graph.invoke(INPUT, thread("t-now"))
    first = list(said)
    said.clear()
    assert graph.invoke(None, thread("t-now"))["messages"][-1].content == lgr_support.SUMMARY
    assert said[0] == first[0] and calls_of("writer") == [0, 1, 1]  # the node's first call replayed


@pytest.mark.parametrize("transport", ["embedded", "server-sqlite"])
def test_stream_ainvoke_and_astream_are_runs_and_leave_nothing_in_the_callers_context(transport):
    graph = on_saver(lgr_support.support_graph())
    seen_in_loop = []
    for _ in graph.stream(INPUT, thread("s-1"), stream_mode="updates"):
        seen_in_loop.append(agentspan.active_run())

    async def both() -> None:
        await graph.ainvoke(INPUT, thread("s-2"))
        async for _ in graph.astream(INPUT, thread("s-3")):
            seen_in_loop.append(agentspan.active_run())

    asyncio.run(both())
    assert seen_in_loop and set(seen_in_loop) == {None}
    done = {r.session_id: r for r in runs()}
    assert set(done) == {"s-1", "s-2", "s-3"}
    for run in done.values():
        assert run.status is agentspan.RunStatus.COMPLETED
        assert [s.kind.value for s in agentspan.get(run.id).steps()].count("llm") == 4


def test_a_stream_closed_early_leaves_its_run_to_the_next_invoke_none():
    graph = on_saver(lgr_support.support_graph())
    stream = graph.stream(INPUT, thread("t-6"), stream_mode="updates")
    next(stream)  # the agent node asked for the lookups
    stream.close()
    stopped = only_run()
    assert stopped.status is agentspan.RunStatus.RUNNING and stopped.lease_owner is None
    graph.invoke(None, thread("t-6"))
    assert only_run().status is agentspan.RunStatus.COMPLETED
    assert calls_of("agent") == [0, 1]


def test_a_thread_executing_in_this_process_is_not_taken_by_a_second_invocation():
    graph = on_saver(lgr_support.support_graph())
    stream = graph.stream(INPUT, thread("t-9"), stream_mode="updates")
    next(stream)
    for given in (None, INPUT):
        with pytest.raises(LeaseLostError, match="still executing in this process"):
            graph.invoke(given, thread("t-9"))
    assert only_run().status is agentspan.RunStatus.RUNNING  # nothing stored was changed
    assert len(list(stream)) > 0  # the stream goes on, and ends its run
    assert only_run().status is agentspan.RunStatus.COMPLETED


def test_invoke_version_2_stores_the_graphs_value():
    result = on_saver(lgr_support.support_graph()).invoke(INPUT, thread("t-10"), version="v2")
    assert plain(load(only_run().output, allowed_objects="messages")["messages"]) == plain(result.value["messages"])


def test_a_failing_node_fails_the_run_and_the_caller_gets_its_error():
    graph = lgr_support.broken_graph(ValueError("no database"), checkpointer=AgentspanSaver())
    with pytest.raises(ValueError, match="no database"):
        graph.invoke(INPUT, thread("t-7"))
    run = only_run()
    assert run.status is agentspan.RunStatus.FAILED and run.error == "ValueError: no database"


@pytest.mark.parametrize("then", ["model", "end"])
def test_an_error_of_the_core_a_tool_node_swallowed_fails_the_direct_run(then):
    """`invoke(None)` after a crash inside a tool of policy ``on_in_doubt="fail"``, its errors
    handled by the ``ToolNode``: the caller gets `InDoubtStepError` and the run is failed with it,
    whether the graph goes back to the model or ends after the tools."""
    graph = lgr_support.charging_graph(then=then, checkpointer=AgentspanSaver(), name="shop")
    with pytest.raises(SimulatedCrash):
        graph.invoke(INPUT, thread("t-12"))
    with pytest.raises(InDoubtStepError, match="call:c1"):
        graph.invoke(None, thread("t-12"))
    run = only_run()
    assert run.status is agentspan.RunStatus.FAILED and run.error.startswith("InDoubtStepError")
    assert effects() == ["charge 9"] and calls_of("m") == [0]


def test_a_failed_run_reopened_for_a_retry_goes_on_with_invoke_none_from_where_it_failed():
    writer = lgr_support.ScriptedChatModel(model_name="writer", responses=[lgr_support.ai("draft")])
    failures = ["database down"]

    def work(state: MessagesState) -> dict[str, Any]:
        draft = writer.invoke(state["messages"])
        if failures:
            raise ValueError(failures.pop())
        return {"messages": [draft]}

    builder = StateGraph(MessagesState)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    graph = builder.compile(checkpointer=AgentspanSaver(), name="work")
    with pytest.raises(ValueError, match="database down"):
        graph.invoke(INPUT, thread("t-11"))
    failed = only_run()
    assert failed.status is agentspan.RunStatus.FAILED
    agentspan.get_store().reopen_run(failed.id, owner=None, lease_expires_at=None)  # `agentspan runs retry`
    result = graph.invoke(None, thread("t-11"))
    assert result["messages"][-1].content == "draft"
    assert (only_run().id, only_run().status) == (failed.id, agentspan.RunStatus.COMPLETED)
    assert calls_of("writer") == [0]  # the model call made before the failure came from the journal


def test_an_approval_required_tool_waits_and_runs_once_after_approval():
    graph = on_saver(lgr_support.refund_graph())
    with pytest.raises(ApprovalPending):
        graph.invoke(INPUT, thread("t-8"))
    handle = agentspan.get(only_run().id)
    assert handle.status() is agentspan.RunStatus.WAITING
    handle.approve(by="alice")
    result = graph.invoke(None, thread("t-8"))
    assert isinstance(result["messages"][-1], AIMessage) and result["messages"][-1].content == "Done."
    assert effects() == ["refund 42 30.0"] and calls_of("agent") == [0, 1]
    assert only_run().status is agentspan.RunStatus.COMPLETED


def test_what_opens_no_run_of_its_own():
    # a saver that only checkpoints
    on_saver(lgr_support.support_graph(), runs=False).invoke(INPUT, thread("n-1"))
    assert runs() == []
    # a subgraph: its calls belong to the run of the graph that invoked it
    inner = lgr_support.support_graph("inner")
    builder = StateGraph(MessagesState)
    builder.add_node("inner", lambda state: inner.invoke(state))
    builder.add_edge(START, "inner")
    builder.add_edge("inner", END)
    outer = builder.compile(checkpointer=AgentspanSaver(), name="outer")
    outer.invoke(INPUT, thread("n-2"))
    run = only_run()
    assert run.agent == "outer"
    assert [s.kind.value for s in agentspan.get(run.id).steps()].count("llm") == 4
    # time travel: an invocation from an earlier checkpoint
    (earliest, *_) = reversed(list(outer.get_state_history(thread("n-2"))))
    outer.invoke(None, earliest.config)
    assert len(runs()) == 1
    # agentspan.run on a graph that already has the saver: one run, the one agentspan.run opened
    agentspan.run(on_saver(lgr_support.support_graph()), INPUT, thread_id="n-3")
    assert len(runs()) == 2


# ---- invocations LangGraph answers in other ways --------------------------------------------------
class Log(TypedDict):
    log: Annotated[list[str], operator.add]


def asking_graph(*, fails: list[str] | None = None, nodes: tuple[str, ...] = ("ask",)) -> Any:
    """``START → each of nodes (in parallel) → END``; each node interrupts and logs the answer,
    after raising the errors in ``fails`` first (one per invocation)."""
    def asking(name: str) -> Any:
        def node(state: Log) -> dict[str, list[str]]:
            if fails:
                raise ValueError(fails.pop())
            return {"log": [f"{name}:{interrupt(f'{name}?')}"]}
        return node

    builder = StateGraph(Log)
    for name in nodes:
        builder.add_node(name, asking(name))
        builder.add_edge(START, name)
        builder.add_edge(name, END)
    return builder.compile(checkpointer=AgentspanSaver(), name="asking")


@pytest.mark.parametrize("stream_mode", ["updates", ["values"], "debug"])
@pytest.mark.parametrize("use_async", [False, True])
def test_invoke_with_another_stream_mode_still_waits_on_the_graphs_interrupt(stream_mode, use_async):
    graph = asking_graph()

    def invoke(given: Any, **options: Any) -> Any:
        if use_async:
            return asyncio.run(graph.ainvoke(given, thread("t-modes"), **options))
        return graph.invoke(given, thread("t-modes"), **options)

    chunks = invoke({"log": []}, stream_mode=stream_mode)
    assert isinstance(chunks, list)  # LangGraph's chunks, not the state: the state says it waits
    assert only_run().status is agentspan.RunStatus.WAITING
    assert [a.tool for a in agentspan.get(only_run().id).pending_approvals()] == ["ask"]
    invoke(Command(resume="yes"), stream_mode=stream_mode)
    assert (only_run().status, only_run().output) == (agentspan.RunStatus.COMPLETED, {"log": ["ask:yes"]})


def test_a_resume_langgraph_refuses_leaves_the_run_waiting_and_its_approvals_open():
    graph = asking_graph(nodes=("x", "y"))
    graph.invoke({"log": []}, thread("t-two"))
    with pytest.raises(RuntimeError, match="multiple pending interrupts"):
        graph.invoke(Command(resume="one"), thread("t-two"))  # which one? LangGraph refuses it
    assert only_run().status is agentspan.RunStatus.WAITING
    assert sorted(a.tool for a in agentspan.get(only_run().id).pending_approvals()) == ["x", "y"]
    ids = {i.value: i.id for i in graph.get_state(thread("t-two")).interrupts}
    result = graph.invoke(Command(resume={ids["x?"]: "X", ids["y?"]: "Y"}), thread("t-two"))
    assert sorted(result["log"]) == ["x:X", "y:Y"] and only_run().status is agentspan.RunStatus.COMPLETED
    approvals = agentspan.get_store().list_approvals(run_id=only_run().id)
    assert sorted((a.status.value, a.decided_by) for a in approvals) == [("approved", "langgraph")] * 2


def test_a_run_that_wrote_no_checkpoint_of_its_own_is_continued_not_left_waiting():
    """A node that failed, then interrupted in the first step of the invocation that went on:
    that run wrote no checkpoint (the interrupt's writes go to the checkpoint before it), and
    the answer continues it instead of opening a third run."""
    graph = asking_graph(fails=["database down"])
    with pytest.raises(ValueError, match="database down"):
        graph.invoke({"log": []}, thread("t-quiet"))
    assert graph.invoke(None, thread("t-quiet"))["__interrupt__"]
    assert graph.invoke(Command(resume="yes"), thread("t-quiet")) == {"log": ["ask:yes"]}
    assert sorted(run.status.value for run in runs()) == ["completed", "failed"]


def test_a_waiting_run_is_continued_after_update_state():
    graph = asking_graph()
    graph.invoke({"log": []}, thread("t-edit"))
    graph.update_state(thread("t-edit"), {"log": ["edited"]})  # a checkpoint no run wrote
    assert graph.invoke(Command(resume="yes"), thread("t-edit")) == {"log": ["edited", "ask:yes"]}
    assert only_run().status is agentspan.RunStatus.COMPLETED
    (approval,) = agentspan.get_store().list_approvals(run_id=only_run().id)  # not left pending
    assert (approval.status.value, approval.decided_by) == ("approved", "langgraph")
