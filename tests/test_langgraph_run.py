"""In-process behaviour of `agentspan.run` with real LangGraph graphs, fake chat models and
LangChain tools: results, the trail, replay inside nodes, interrupts and approval-gated tools."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime
from typing import Any, TypedDict

import pytest
from langchain_core.load import load
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import Command, RetryPolicy, interrupt

import agentspan
import agentspan.config
from agentspan.errors import (
    ApprovalConflict,
    ConfigurationError,
    InDoubtStepError,
    ReplayDivergenceError,
    RunCancelledError,
    RunFailed,
)
from agentspan.events import ApprovalRequested
from agentspan_langgraph import AgentspanSaver, _calls
from agentspan_langgraph._calls import dump_chat_result, load_chat_result

import crash_support
import lgr_support
from crash_support import calls_of, wait_status
from journal_utils import crashed_copy
from lgr_support import PROMPT, ScriptedChatModel, SimulatedCrash, ai, effects, plain

INPUT = {"messages": [HumanMessage(PROMPT)]}


@pytest.fixture(autouse=True)
def _home(home):
    lgr_support.RAISE_AT.clear()
    yield home


def only_run() -> agentspan.Run:
    (run,) = agentspan.get_store().list_runs()
    return run


def checkpoint_of(thread_id: str) -> Any:
    return AgentspanSaver(agentspan.get_store()).get_tuple({"configurable": {"thread_id": thread_id}})


def chat_graph(checkpointer: Any = None):
    """One node answering from a long script: the n-th answer of a thread is ``"answer n"``."""
    model = ScriptedChatModel(model_name="chat", responses=[ai(f"answer {n}") for n in range(5)])
    builder = StateGraph(MessagesState)
    builder.add_node("chat", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    return builder.compile(checkpointer=checkpointer, name="chat")


# ---- results and the trail -----------------------------------------------------------------
def test_run_returns_what_invoke_returns_and_records_every_call_and_node():
    result = agentspan.run(lgr_support.support_graph(), INPUT)
    assert set(result) == {"messages"} and all(isinstance(m, BaseMessage) for m in result["messages"])
    expected = plain(lgr_support.support_graph().invoke(INPUT)["messages"])
    assert plain(result["messages"]) == expected
    run = only_run()
    assert (run.framework, run.agent, run.status) == ("langgraph", "support", agentspan.RunStatus.COMPLETED)
    assert plain(load(run.output, allowed_objects="messages")["messages"]) == expected
    assert run.input == {"messages": [{"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages",
                                                                              "HumanMessage"],
                                       "kwargs": {"content": PROMPT, "type": "human"}}]}
    steps = agentspan.get(run.id).steps()
    assert [(s.kind.value, s.name) for s in steps] == [
        ("llm", "agent"), ("checkpoint", "agent"),
        ("tool", "lookup_order"), ("tool", "lookup_order"), ("checkpoint", "tools"),
        ("llm", "agent"), ("checkpoint", "agent"),
        ("tool", "notify"), ("llm", "writer"), ("llm", "writer"), ("checkpoint", "summarize"),
    ]
    for step in steps:
        if step.kind is agentspan.StepKind.LLM:
            assert (step.provider, step.input_tokens, step.output_tokens) == ("scripted", 100, 20)
            assert step.duration_ms is not None and step.input_hash
    # every call's key hangs off the node (task) that made it
    nodes = [s for s in steps if s.kind is agentspan.StepKind.CHECKPOINT]
    assert [s.key.split(":")[0] for s in nodes] == ["agent", "tools", "agent", "summarize"]
    summarize = nodes[-1].key
    assert [s.key for s in steps[7:10]] == [f"{summarize}/tool:0", f"{summarize}/llm:0", f"{summarize}/llm:1"]
    assert nodes[-1].output["messages"][0]["kwargs"]["content"] == lgr_support.SUMMARY
    assert (run.input_tokens, run.output_tokens, run.steps) == (400, 80, 11)


def test_parallel_tool_calls_are_keyed_by_their_tool_call_ids():
    handle = agentspan.start(lgr_support.support_graph(), INPUT)
    handle.result(timeout=20)
    tools = [s for s in handle.steps() if s.name == "lookup_order"]
    tools_node = next(s.key for s in handle.steps() if s.name == "tools")
    assert sorted(s.key for s in tools) == [f"{tools_node}/call:call_a", f"{tools_node}/call:call_b"]
    assert {s.key.rsplit(":", 1)[1]: s.input for s in tools} == {"call_a": {"order_id": "42"},
                                                                 "call_b": {"order_id": "43"}}
    message = load(tools[0].output, allowed_objects="messages")
    assert isinstance(message, ToolMessage) and message.content.endswith("paid $30.00")
    # the tools saw their own step, and with it the idempotency key for downstream APIs
    assert sorted(e.split()[2] for e in effects() if e.startswith("lookup")) == sorted(
        f"{handle.id}:{s.key}" for s in tools)


def test_a_crash_inside_a_node_replays_its_completed_calls_on_resume():
    lgr_support.RAISE_AT.add("model:writer:1")  # dies in the third call of the summarize node
    graph = lgr_support.support_graph()
    handle = agentspan.start(graph, INPUT)
    with pytest.raises(SimulatedCrash):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.RUNNING
    resumed = agentspan.resume(handle.id, graph)
    result = resumed.result(timeout=20)
    assert result["messages"][-1].content == lgr_support.SUMMARY
    # LangGraph ran the summarize node again; its tool call and first model call came from the journal
    assert calls_of("writer") == [0, 1, 1] and calls_of("agent") == [0, 1]
    assert [e.split()[0] for e in effects()] == ["lookup", "lookup", "notify"]
    counters = resumed.counters()
    assert (counters.replayed("llm"), counters.live("llm"), counters.replayed("tool"), counters.live("tool")) == (
        1, 1, 1, 0)
    # the replayed model result is a real AIMessage: the node built the same state from it
    assert plain(result["messages"]) == plain(lgr_support.support_graph().invoke(INPUT)["messages"])


def test_a_node_retried_by_its_retry_policy_replays_each_attempt_apart():
    class Flaky(ScriptedChatModel):
        """Fails its first live call (a provider hiccup), answers by the script afterwards."""

        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
            if "flaky failed" not in crash_support.lines("model-calls"):
                crash_support.log("model-calls", "flaky failed")
                raise RuntimeError("rate limited")
            return super()._generate(messages, *args, **kwargs)

    flaky = Flaky(model_name="flaky", responses=[ai("draft")])
    checker = ScriptedChatModel(model_name="checker", responses=[ai("ok")])

    def draft(state: MessagesState) -> dict[str, Any]:
        first = flaky.invoke(state["messages"])
        return {"messages": [first, checker.invoke([HumanMessage("check: " + first.content)])]}

    builder = StateGraph(MessagesState)
    builder.add_node("draft", draft, retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.01,
                                                              retry_on=RuntimeError))
    builder.add_edge(START, "draft")
    graph = builder.compile()
    lgr_support.RAISE_AT.add("model:checker:0")  # dies in the retried attempt, after its model call
    handle = agentspan.start(graph, INPUT)
    with pytest.raises(SimulatedCrash):
        handle.result(timeout=20)
    keys = [s.key.split("/", 1)[1] for s in handle.steps()]
    assert keys == ["llm:0", "retry:1/llm:0"]  # the failed call, then the retried one
    result = agentspan.resume(handle.id, graph).result(timeout=20)
    # resumed: the node's first attempt no longer fails, so it goes on under its own keys
    assert [m.content for m in result["messages"]] == [PROMPT, "draft", "ok"]
    statuses = {s.key.split("/", 1)[1]: s.status.value for s in handle.steps() if s.kind.value == "llm"}
    assert statuses == {"llm:0": "completed", "retry:1/llm:0": "completed", "llm:1": "completed"}


@pytest.mark.parametrize("then", [None, "model", "end"])
def test_a_tool_with_fail_policy_killed_mid_call_fails_the_run_on_resume(then):
    """Also when a ``ToolNode(handle_tool_errors=True)`` turns whatever a tool raises into a
    message for the model (``then``: the graph goes back to the model or ends): the core's own
    error is not shown to the model; the run fails with it."""
    graph = lgr_support.charging_graph(then=then)
    handle = agentspan.start(graph, INPUT)
    with pytest.raises(SimulatedCrash):
        handle.result(timeout=20)
    with pytest.raises(InDoubtStepError, match="call:c1"):
        agentspan.resume(handle.id, graph).result(timeout=20)
    assert handle.status() is agentspan.RunStatus.FAILED and effects() == ["charge 9"]
    assert crash_support.lines("model-calls") == ["m 0"]  # the model was not told of the error


def test_a_changed_prompt_on_resume_is_a_divergence_and_keeps_the_journal(monkeypatch):
    lgr_support.RAISE_AT.add("model:writer:1")
    handle = agentspan.start(lgr_support.support_graph(), INPUT)
    with pytest.raises(SimulatedCrash):
        handle.result(timeout=20)
    before = handle.steps()
    monkeypatch.setattr(lgr_support, "HumanMessage", lambda text: HumanMessage(text + " in French"))
    with pytest.raises(ReplayDivergenceError, match="summarize:.*/llm:0"):
        agentspan.resume(handle.id, lgr_support.support_graph()).result(timeout=20)
    assert handle.status() is agentspan.RunStatus.FAILED
    assert handle.steps() == before


def test_a_prompt_that_says_the_time_with_agentspan_now_replays_on_resume(monkeypatch):
    """A node re-run on resume builds its prompts again: with `agentspan.now` they say the times the
    first attempt's calls were made (with the wall clock the replayed call would diverge)."""
    said: list[str] = []

    def timed(text: str) -> HumanMessage:
        said.append(f"{text} at {agentspan.now().isoformat()}")
        return HumanMessage(said[-1])

    monkeypatch.setattr(lgr_support, "HumanMessage", timed)
    lgr_support.RAISE_AT.add("model:writer:1")  # dies in the node's second model call
    handle = agentspan.start(lgr_support.support_graph(), INPUT)
    with pytest.raises(SimulatedCrash):
        handle.result(timeout=20)
    first = list(said)
    said.clear()
    time.sleep(0.01)
    lgr_support.RAISE_AT.clear()
    result = agentspan.resume(handle.id, lgr_support.support_graph()).result(timeout=20)
    assert result["messages"][-1].content == lgr_support.SUMMARY
    assert said[0] == first[0]  # the replayed call's prompt
    assert said[1] != first[1]  # the call made again: it failed, so it was not journaled as made
    (draft,) = [s for s in handle.steps() if s.key.startswith("summarize:") and s.key.endswith("/llm:0")]
    assert first[0].endswith(datetime.fromtimestamp(draft.started_at, UTC).isoformat())


def test_a_changed_prompt_goes_on_live_with_on_divergence_live(monkeypatch):
    lgr_support.RAISE_AT.add("model:writer:1")
    handle = agentspan.start(lgr_support.support_graph(), INPUT)
    with pytest.raises(SimulatedCrash):
        handle.result(timeout=20)
    before = {s.key: s for s in handle.steps()}
    lgr_support.RAISE_AT.clear()
    monkeypatch.setattr(lgr_support, "HumanMessage", lambda text: HumanMessage(text + " in French"))
    agentspan.resume(handle.id, lgr_support.support_graph(), on_divergence="live").result(timeout=20)
    assert handle.status() is agentspan.RunStatus.COMPLETED
    after = handle.steps()
    (diverged,) = [k for k in before if k.startswith("summarize:") and k.endswith("/llm:0")]
    aside = [s for s in after if s.key.startswith("superseded:")]
    assert aside and all(s.key.split("/", 1)[1] in before for s in aside)
    assert any(s.key.endswith(diverged) for s in aside) and diverged in {s.key for s in after}


def test_async_nodes_and_tools_are_journaled_too():
    @tool
    async def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    model = ScriptedChatModel(model_name="m", responses=[ai("", ("add", {"a": 2, "b": 3}, "c1")), ai("5")])
    critic = ScriptedChatModel(model_name="critic", responses=[ai("fine")])

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    async def review(state: MessagesState) -> dict[str, Any]:
        # a blocking model call inside an async node (it blocks the loop, as it would without us)
        return {"messages": [critic.invoke([HumanMessage("review " + state["messages"][-1].content)])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([add]))
    builder.add_node("review", review)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", lambda s: "tools" if s["messages"][-1].tool_calls else "review",
                                  ["tools", "review"])
    builder.add_edge("tools", "agent")
    result = asyncio.run(agentspan.run_async(builder.compile(), {"messages": [HumanMessage("2+3?")]}))
    assert [m.content for m in result["messages"][-3:]] == ["5", "5", "fine"]
    steps = agentspan.get(only_run().id).steps()
    assert [(s.kind.value, s.name) for s in steps if s.kind.value != "checkpoint"] == [
        ("llm", "m"), ("tool", "add"), ("llm", "m"), ("llm", "critic")]
    assert next(s for s in steps if s.name == "add").output["kwargs"]["content"] == "5"


# ---- threads and checkpointers -------------------------------------------------------------
def test_thread_defaults_to_the_run_id_and_a_given_thread_carries_a_conversation():
    first = agentspan.start(chat_graph(), {"messages": [HumanMessage("hi")]})
    assert first.result(timeout=20)["messages"][-1].content == "answer 0"
    assert checkpoint_of(first.id).metadata["agentspan_run_id"] == first.id
    graph = chat_graph()
    agentspan.start(graph, {"messages": [HumanMessage("hi")]}, thread_id="user-7").result(timeout=20)
    second = agentspan.start(graph, {"messages": [HumanMessage("again")]}, thread_id="user-7")
    assert [m.content for m in second.result(timeout=20)["messages"]] == ["hi", "answer 0", "again", "answer 1"]
    assert second.run().options == {"thread_id": "user-7"}
    assert checkpoint_of("user-7").metadata["agentspan_run_id"] == second.id
    # a run's session is its thread (as a direct invocation's), unless the caller names one
    assert (first.run().session_id, second.run().session_id) == (None, "user-7")
    by_config = agentspan.start(graph, INPUT, config={"configurable": {"thread_id": "user-8"}})
    named = agentspan.start(graph, INPUT, thread_id="user-9", session_id="support-desk")
    assert (by_config.run().session_id, named.run().session_id) == ("user-8", "support-desk")
    by_config.result(timeout=20), named.result(timeout=20)


def test_in_memory_checkpointer_is_replaced_and_a_durable_one_is_kept():
    agentspan.run(chat_graph(InMemorySaver()), {"messages": [HumanMessage("hi")]}, thread_id="t-mem")
    assert checkpoint_of("t-mem") is not None  # landed in the Agentspan store, not in memory
    own = AgentspanSaver(agentspan.get_store())
    graph = chat_graph(own)
    agentspan.run(graph, {"messages": [HumanMessage("hi")]}, thread_id="t-own")
    assert graph.checkpointer is own and own.get_tuple({"configurable": {"thread_id": "t-own"}}) is not None


def test_plain_invoke_outside_a_run_is_not_journaled():
    agentspan.run(chat_graph(), {"messages": [HumanMessage("hi")]})  # patches installed by now
    result = chat_graph().invoke({"messages": [HumanMessage("plain")]})
    assert result["messages"][-1].content == "answer 0"
    assert len(agentspan.get_store().list_runs()) == 1
    assert calls_of("chat") == [0, 0]


# ---- interrupt() as approvals --------------------------------------------------------------
def test_interrupt_waits_for_approval_and_the_decision_is_what_interrupt_returns():
    handle = agentspan.start(lgr_support.review_graph(), {"messages": [HumanMessage("refund 42")]})
    wait_status(handle, agentspan.RunStatus.WAITING)
    (pending,) = agentspan.get(handle.id).pending_approvals()
    assert pending.tool == "review" and pending.step_key.startswith("interrupt:")
    assert pending.args == {"action": "refund", "order_id": "42", "amount": 30.0, "note": "Refund $30.00 on order 42?"}
    assert effects() == []
    agentspan.get(handle.id).approve(by="alice", reason="within policy")
    result = handle.result(timeout=20)
    assert [m.content for m in result["messages"]][-1] == "Refunded by alice."
    assert effects() == ["refund 42 30.0"]
    assert crash_support.lines("decisions") == [repr({"approved": True, "status": "approved", "by": "alice",
                                                    "reason": "within policy", "approval_id": pending.id})]
    assert calls_of("writer") == [0]  # the node ran again after the decision; its model call did not
    steps = handle.steps()
    assert [(s.kind.value, s.key == pending.step_key) for s in steps] == [
        ("llm", False), ("approval", True), ("checkpoint", False)]
    with pytest.raises(ApprovalConflict, match="already approved"):
        agentspan.get(handle.id).approve(pending.id)


def test_rejected_interrupt_resumes_the_node_with_the_rejection():
    handle = agentspan.start(lgr_support.review_graph(), {"messages": [HumanMessage("refund 42")]})
    wait_status(handle, agentspan.RunStatus.WAITING)
    agentspan.get(handle.id).reject(by="bob", reason="outside the window")
    result = handle.result(timeout=20)
    assert result["messages"][-1].content == "Not refunded: outside the window"
    assert effects() == []
    (decision,) = crash_support.lines("decisions")
    assert "'approved': False" in decision and "'status': 'rejected'" in decision and "'by': 'bob'" in decision


def test_interrupts_of_parallel_nodes_wait_together_and_are_decided_one_by_one():
    def asker(name: str):
        def node(state: MessagesState) -> dict[str, Any]:
            decision = interrupt({"ask": name})
            return {"messages": [AIMessage(f"{name}: {decision['status']}")]}
        return node

    builder = StateGraph(MessagesState)
    builder.add_node("legal", asker("legal"))
    builder.add_node("finance", asker("finance"))
    builder.add_edge(START, "legal")
    builder.add_edge(START, "finance")
    handle = agentspan.start(builder.compile(), INPUT)
    wait_status(handle, agentspan.RunStatus.WAITING)
    deadline = time.monotonic() + 10
    while len(handle.pending_approvals()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    pending = {a.tool: a for a in handle.pending_approvals()}
    assert {t: a.args for t, a in pending.items()} == {"legal": {"ask": "legal"}, "finance": {"ask": "finance"}}
    with pytest.raises(ConfigurationError, match="pass approval_id"):
        agentspan.get(handle.id).approve()
    agentspan.get(handle.id).approve(pending["legal"].id)
    time.sleep(0.2)
    assert handle.status() is agentspan.RunStatus.WAITING  # still waits on finance
    agentspan.get(handle.id).reject(pending["finance"].id, reason="over budget")
    result = handle.result(timeout=20)
    assert sorted(m.content for m in result["messages"][1:]) == ["finance: rejected", "legal: approved"]


def test_interrupt_inside_a_tool_and_inside_a_subgraph():
    @tool
    def wire(amount: int) -> str:
        """Wire money (asks a human first)."""
        decision = interrupt({"wire": amount})
        crash_support.log("effects", f"wire {amount} {decision['approved']}")
        return "wired" if decision["approved"] else "not wired"

    model = ScriptedChatModel(model_name="m", responses=[ai("", ("wire", {"amount": 5}, "w1")), ai("done")])
    inner = StateGraph(MessagesState)
    inner.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    inner.add_node("tools", ToolNode([wire]))
    inner.add_edge(START, "agent")
    inner.add_conditional_edges("agent", lambda s: "tools" if s["messages"][-1].tool_calls else END, ["tools", END])
    inner.add_edge("tools", "agent")
    outer = StateGraph(MessagesState)
    outer.add_node("payments", inner.compile())
    outer.add_edge(START, "payments")
    handle = agentspan.start(outer.compile(), INPUT)
    wait_status(handle, agentspan.RunStatus.WAITING)
    (pending,) = handle.pending_approvals()
    assert (pending.tool, pending.args) == ("payments", {"wire": 5})
    agentspan.get(handle.id).approve()
    result = handle.result(timeout=20)
    assert [m.content for m in result["messages"]] == [PROMPT, "", "wired", "done"]
    assert effects() == ["wire 5 True"] and calls_of("m") == [0, 1]
    steps = handle.steps()
    wire_step = next(s for s in steps if s.name == "wire")
    # the tool's first attempt was interrupted; it completed when LangGraph ran it again
    assert wire_step.key.startswith("payments:") and "|tools:" in wire_step.key and wire_step.attempt == 2
    assert wire_step.status is agentspan.StepStatus.COMPLETED
    nodes = [s.name for s in steps if s.kind is agentspan.StepKind.CHECKPOINT and not s.key.endswith("/interrupts")]
    assert nodes == ["agent", "tools", "agent", "payments"]
    # the tool's interrupt, counted for its replays (`agentspan_langgraph._interrupts`)
    assert [s.output for s in steps if s.key == f"{wire_step.key}/interrupts"] == [1]


def test_cancelling_a_run_waiting_on_an_interrupt():
    handle = agentspan.start(lgr_support.review_graph(), {"messages": [HumanMessage("refund 42")]})
    wait_status(handle, agentspan.RunStatus.WAITING)
    handle.cancel(reason="customer withdrew")
    with pytest.raises(RunCancelledError):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.CANCELLED and effects() == []


def test_approval_required_tool_waits_then_runs_once_when_approved():
    handle = agentspan.start(lgr_support.refund_graph(), {"messages": [HumanMessage("refund 42")]})
    wait_status(handle, agentspan.RunStatus.WAITING)
    (pending,) = handle.pending_approvals()
    assert pending.tool == "refund" and pending.args == {"order_id": "42", "amount": 30.0}
    assert pending.step_key.endswith("/call:call_r") and effects() == []
    agentspan.get(handle.id).approve(by="alice")
    result = handle.result(timeout=20)
    assert result["messages"][-1].content == "Done."
    assert result["messages"][2].content == "refunded $30.00 on order 42"
    assert effects() == ["refund 42 30.0"]


def streamed(graph: Any, payload: Any, **options: Any) -> tuple[agentspan.StreamedRun, list[Any]]:
    """Runs ``graph`` with `agentspan.run_streamed`, approving what it waits for; its chunks."""

    async def main() -> tuple[agentspan.StreamedRun, list[Any]]:
        run = agentspan.run_streamed(graph, payload, **options)
        chunks = []
        async for chunk in run.stream_events():
            chunks.append(chunk)
            if isinstance(chunk, ApprovalRequested):
                run.handle.approve(chunk.approval.id, by="alice")
        return run, chunks

    return asyncio.run(main())


def test_streamed_graph_delivers_its_updates_and_each_message_once_across_an_approval():
    run, chunks = streamed(lgr_support.review_graph(), {"messages": [HumanMessage("refund 42")]},
                           stream_mode=["updates", "messages"])
    assert run.result["messages"][-1].content == "Refunded by alice." and effects() == ["refund 42 30.0"]
    assert agentspan.get(run.id).result()["messages"][-1]["kwargs"]["content"] == "Refunded by alice."
    kinds = [c[0] if isinstance(c, tuple) else "approval" for c in chunks]
    assert kinds.count("approval") == 1 and isinstance(chunks[kinds.index("approval")], ApprovalRequested)
    drafts = [c for kind, c in (x for x in chunks if isinstance(x, tuple)) if kind == "messages"
              and c[0].content == "Refund $30.00 on order 42?"]
    # the node ran again after the decision, its model call served from the journal with the same
    # message id: delivered once
    assert len(drafts) == 1 and calls_of("writer") == [0]
    updates = [c for kind, c in (x for x in chunks if isinstance(x, tuple)) if kind == "updates"]
    assert [next(iter(u)) for u in updates] == ["__interrupt__", "review"]
    assert kinds.index("approval") < kinds.index("updates", kinds.index("updates") + 1)


def test_streamed_graph_with_one_stream_mode_yields_its_chunks_alone():
    run, chunks = streamed(lgr_support.refund_graph(), {"messages": [HumanMessage("refund 42")]})
    updates = [c for c in chunks if not isinstance(c, ApprovalRequested)]
    assert [next(iter(u)) for u in updates] == ["agent", "tools", "agent"]  # "updates", the default
    assert updates[1]["tools"]["messages"][0].content == "refunded $30.00 on order 42"
    assert run.result["messages"][-1].content == "Done." and effects() == ["refund 42 30.0"]


def test_approval_required_tool_rejected_tells_the_model():
    handle = agentspan.start(lgr_support.refund_graph(), {"messages": [HumanMessage("refund 42")]})
    wait_status(handle, agentspan.RunStatus.WAITING)
    agentspan.get(handle.id).reject(by="bob", reason="not eligible")
    result = handle.result(timeout=20)
    answer = result["messages"][2]
    assert isinstance(answer, ToolMessage) and answer.tool_call_id == "call_r" and answer.status == "error"
    assert "rejected by bob: not eligible" in answer.content
    assert result["messages"][-1].content == "Done." and effects() == []


# ---- refused input -------------------------------------------------------------------------
def test_refused_graphs_inputs_and_options_raise_clear_errors_and_store_nothing():
    builder = StateGraph(MessagesState)
    builder.add_node("chat", lambda state: {})
    builder.add_edge(START, "chat")
    with pytest.raises(ConfigurationError, match="compiled graph"):
        agentspan.run(builder, INPUT)
    with pytest.raises(ConfigurationError, match="static breakpoints"):
        agentspan.run(builder.compile(interrupt_before=["chat"]), INPUT)
    with pytest.raises(ConfigurationError, match="unknown option.*max_turns"):
        agentspan.run(chat_graph(), INPUT, max_turns=3)
    with pytest.raises(ConfigurationError, match="durability"):
        agentspan.run(chat_graph(), INPUT, durability="sometimes")
    with pytest.raises(ConfigurationError, match="time travel"):
        agentspan.run(chat_graph(), INPUT, config={"configurable": {"checkpoint_id": "1ef"}})
    with pytest.raises(ConfigurationError, match="thread_id"):
        agentspan.run(chat_graph(), INPUT, thread_id=["a"])
    with pytest.raises(ConfigurationError, match="Command"):
        agentspan.run(chat_graph(), Command(resume="yes"))
    assert agentspan.get_store().list_runs() == []


def test_a_failing_node_fails_the_run_with_its_error():
    handle = agentspan.start(lgr_support.broken_graph(ValueError("no such order")), INPUT)
    with pytest.raises(ValueError, match="no such order"):
        handle.result(timeout=20)
    with pytest.raises(RunFailed, match="ValueError: no such order"):
        agentspan.get(handle.id).result(timeout=5)


def test_ai_messages_round_trip_through_the_journal_unchanged():
    message = AIMessage("hi", id="lc_run--1-0", tool_calls=[{"name": "t", "args": {"x": [1, {"y": None}]}, "id": "c"}],
                        usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
                        response_metadata={"model_name": "gpt-4o-mini", "finish_reason": "tool_calls"})
    original = ChatResult(generations=[ChatGeneration(message=message, generation_info={"lc": 1})],
                          llm_output={"token_usage": {"total": 7}})
    revived = load_chat_result(dump_chat_result(original))
    assert revived == original and type(revived.generations[0].message) is AIMessage


class _Client:
    """Stands for an object no JSON holds (a database client)."""


@dataclasses.dataclass
class _Ctx:
    user: str
    client: Any = None


class _Count(TypedDict):
    n: int


def _two_steps(step: Any, context_schema: Any, name: str) -> Any:
    """``START → first → second → END``, both nodes ``step``."""
    builder = StateGraph(_Count, context_schema=context_schema)
    builder.add_node("first", step)
    builder.add_node("second", step)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    return builder.compile(name=name)


def test_options_no_json_keeps_must_be_given_again_to_resume_a_run():
    seen: list[tuple[Any, ...]] = []

    def step(state: _Count, runtime: Runtime[_Ctx], config: RunnableConfig) -> dict[str, int]:
        configurable = config["configurable"]
        seen.append((runtime.context.user, runtime.context.client, configurable.get("tenant"), configurable.get("db")))
        return {"n": state["n"] + 1}

    graph = _two_steps(step, _Ctx, "ctx")
    client = _Client()
    run_id = "with-client"
    agentspan.run(graph, {"n": 0}, run_id=run_id, context=_Ctx("alice", client),
                  config={"configurable": {"tenant": "acme", "db": client}})
    copy = crashed_copy(run_id, keep=1)  # as if killed after the first node
    with pytest.raises(ConfigurationError, match=r"config\.configurable\.db, context that is not stored"):
        agentspan.resume(copy, graph)  # was: the client's text in its place, and no db at all (nor tenant)
    assert agentspan.get(copy).status() is agentspan.RunStatus.RUNNING  # refused before anything changed
    seen.clear()
    out = agentspan.resume(copy, graph, context=_Ctx("alice", client), config={"configurable": {"db": client}})
    assert out.result(timeout=20) == {"n": 2}
    # (the copy's thread has no checkpoint: both nodes run again) the stored tenant kept, the rest given again
    assert seen == [("alice", client, "acme", client)] * 2


def test_credentials_in_options_are_never_stored_and_must_be_given_again():
    """A key passed the LangChain way (``configurable``, ``metadata``, a context dict) reaches the
    graph but is not written with the run (nor into an export): a resume gives it again."""
    key = "sk-FAKE-never-stored-123"
    seen: list[tuple[Any, ...]] = []

    def step(state: _Count, runtime: Runtime[dict[str, str]], config: RunnableConfig) -> dict[str, int]:
        seen.append((config["configurable"].get("openai_api_key"), config["configurable"].get("tenant"),
                     config["metadata"].get("ApiKey"), config["metadata"].get("team"), runtime.context))
        return {"n": state["n"] + 1}

    graph = _two_steps(step, dict, "keys")
    config = {"configurable": {"tenant": "acme", "openai_api_key": key}, "metadata": {"team": "t1", "ApiKey": key}}
    context = {"user": "alice", "auth": {"access_token": key}}
    agentspan.run(graph, {"n": 0}, run_id="with-keys", config=config, context=context)
    assert seen == [(key, "acme", key, "t1", context)] * 2  # the graph got them all
    stored = agentspan.get("with-keys").run().options
    assert key not in str(stored), stored
    assert stored["config"] == {"configurable": {"tenant": "acme"}, "metadata": {"team": "t1"}}
    assert "context" not in stored
    home = agentspan.config.settings().home
    assert not any(key.encode() in path.read_bytes() for path in home.glob("agentspan.db*"))

    copy = crashed_copy("with-keys", keep=1)
    missing = r"config\.configurable\.openai_api_key, config\.metadata\.ApiKey, context that is not stored"
    with pytest.raises(ConfigurationError, match=missing):
        agentspan.resume(copy, graph)
    seen.clear()
    out = agentspan.resume(copy, graph, context=context,
                           config={"configurable": {"openai_api_key": key}, "metadata": {"ApiKey": key}})
    assert out.result(timeout=20) == {"n": 2}
    assert seen == [(key, "acme", key, "t1", context)] * 2  # the stored entries kept, the keys given again


def test_a_chat_models_prompt_cache_reads_and_writes_are_its_cached_input():
    """LangChain counts the prompt cache's reads and writes in ``input_tokens`` and says how many in
    ``input_token_details``: the call is priced with them (`agentspan.models.price_usd`)."""
    usage = {"input_tokens": 1000, "output_tokens": 10, "total_tokens": 1010,
             "input_token_details": {"cache_read": 600, "cache_creation": 300}}
    message = AIMessage("hi", usage_metadata=usage, response_metadata={"model_name": "claude-sonnet-4-5"})
    metrics = _calls._usage(ChatResult(generations=[ChatGeneration(message=message)]))
    assert (metrics.input_tokens, metrics.output_tokens) == (1000, 10)
    assert (metrics.cached_input_tokens, metrics.cache_write_tokens) == (600, 300)
    # langchain-anthropic with Anthropic's cache lifetimes: writes under ephemeral_*, cache_creation 0
    lifetimes = {**usage, "input_token_details": {"cache_read": 600, "cache_creation": 0,
                                                  "ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100}}
    message = AIMessage("hi", usage_metadata=lifetimes)
    metrics = _calls._usage(ChatResult(generations=[ChatGeneration(message=message)]))
    assert (metrics.cached_input_tokens, metrics.cache_write_tokens) == (600, 300)
    # older langchain-anthropic: the lifetimes and their total in cache_creation (not counted twice)
    older = {**usage, "input_token_details": {"cache_read": 600, "cache_creation": 300,
                                              "ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100}}
    metrics = _calls._usage(ChatResult(generations=[ChatGeneration(message=AIMessage("hi", usage_metadata=older))]))
    assert (metrics.cache_write_tokens, metrics.cache_write_1h_tokens) == (300, 100)  # was 600: priced twice
    plain = AIMessage("hi", usage_metadata={"input_tokens": 5, "output_tokens": 1, "total_tokens": 6})
    metrics = _calls._usage(ChatResult(generations=[ChatGeneration(message=plain)]))
    assert (metrics.cached_input_tokens, metrics.cache_write_tokens) == (None, None)  # not reported: unknown
