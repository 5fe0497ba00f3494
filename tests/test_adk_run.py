"""In-process behaviour of the Google ADK adapter with real ADK runners and scripted models:
``agentspan.run(adk_agent, ...)``, `AgentspanPlugin` on user-built Runners, the trail, replay,
approvals (Agentspan's and ADK's own confirmations) and bad input."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.adk.agents import LlmAgent, LoopAgent, ParallelAgent, SequentialAgent
from google.adk.apps import App
from google.adk.artifacts import FileArtifactService
from google.adk.events import Event
from google.adk.events._rewind_events import _apply_rewinds
from google.adk.runners import InMemoryRunner, Runner
from google.adk.sessions import InMemorySessionService
from google.adk.tools import ToolContext
from google.adk.tools.agent_tool import AgentTool
from google.genai import types
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

import agentspan
from agentspan.errors import (
    ApprovalConflict,
    ApprovalPending,
    ConfigurationError,
    NoPendingApproval,
    ReplayDivergenceError,
)
from agentspan.events import ApprovalRequested
from agentspan.hashing import digest
from agentspan_adk import ADKResult, AgentspanPlugin, _codec
from agentspan_adk._managed import is_user_text
from agentspan_adk.testing import Call, ScriptedLlm

import adk_support
import crash_support
from adk_support import FINAL, PROMPT
from crash_support import wait_status
from journal_utils import crashed_copy


@pytest.fixture(autouse=True)
def _home(home):
    yield home


def message(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


async def send(runner: Runner, session_id: str, content: types.Content, user_id: str = "u") -> list[Event]:
    return [e async for e in runner.run_async(user_id=user_id, session_id=session_id, new_message=content)]


# ---- agentspan.run: result and trail ------------------------------------------------------
def test_run_returns_the_final_text_the_events_and_the_session_and_records_the_trail():
    result = agentspan.run(adk_support.support_tree(), PROMPT, session_id="s-1", user_id="alice")
    assert isinstance(result, ADKResult) and result.text == FINAL
    assert result.session.id == result.session_id == "s-1" and result.session.state["notified"] == "42"
    assert [e.author for e in result.events] == ["support"] * 4 + ["billing"] * 3
    assert result.events[3].actions.transfer_to_agent == "billing"
    (run,) = agentspan.get_store().list_runs()
    assert (run.framework, run.agent, run.status, run.input) == ("adk", "support", agentspan.RunStatus.COMPLETED,
                                                                 PROMPT)
    assert run.output == {"text": FINAL, "app_name": "support", "user_id": "alice", "session_id": "s-1"}
    assert (run.input_tokens, run.output_tokens) == (100 + 110 + 100 + 110, 80)
    steps = agentspan.get(run.id).steps()
    assert [(s.kind.value, s.key) for s in steps[:6]] == [
        ("checkpoint", "adk:session"), ("llm", "support/llm:0"), ("tool", "support/llm:0/call:0"),
        ("llm", "support/llm:1"), ("handoff", "support/llm:1/call:0"), ("llm", "support/billing/llm:0")]
    assert {s.key for s in steps[6:8]} == {"support/billing/llm:0/call:0", "support/billing/llm:0/call:1"}
    assert steps[8].key == "support/billing/llm:1" and len(steps) == 9
    llm = steps[1]
    assert (llm.name, llm.provider, llm.model, llm.input_tokens, llm.output_tokens) == (
        "support", "scripted", "support", 100, 20)
    assert llm.duration_ms is not None and llm.input_hash and llm.input["agent"] == "support"
    assert llm.input["new"] == [{"parts": [{"text": PROMPT}], "role": "user"}]
    # The input hash keeps its format (runs journaled by earlier versions replay): the request's
    # model, system instruction and tool names, and the order-free sum of its messages' digests.
    messages = sum(int(digest(m), 16) for m in llm.input["new"]) % (1 << 256)
    extra = {"model": "support", "system": llm.input["system"], "tools": ["lookup_order", "transfer_to_agent"]}
    assert llm.input_hash == digest([extra, format(messages, "x")])
    assert llm.output["content"]["parts"][0]["function_call"]["name"] == "lookup_order"
    tool = steps[2]
    assert (tool.name, tool.input) == ("lookup_order", {"order_id": "42"})
    assert tool.output == {"order_id": "42", "paid": 30.0}
    assert tool.duration_ms is not None
    handoff = steps[4]
    assert (handoff.name, handoff.input) == ("billing", {"agent_name": "billing"})
    assert handoff.output["actions"]["transfer_to_agent"] == "billing"
    notify = next(s for s in steps if s.name == "notify_customer")
    assert notify.output["result"] == "told the customer about 42"
    assert notify.output["actions"] == {"state_delta": {"notified": "42"}}


def test_tools_see_their_step_and_idempotency_key():
    handle = agentspan.start(adk_support.support_tree(), PROMPT)
    handle.result(timeout=20)
    keys = sorted(line.split()[-1] for line in crash_support.lines("effects"))
    assert keys == sorted(f"{handle.id}:{k}" for k in ["support/llm:0/call:0", "support/billing/llm:0/call:0",
                                                     "support/billing/llm:0/call:1"])
    assert agentspan.current_step() is None


@pytest.mark.parametrize("keep", range(1, 10))
def test_resumed_after_any_step_replays_what_was_journaled_and_runs_the_rest_once(keep):
    first = agentspan.start(adk_support.support_tree(), PROMPT)
    first.result(timeout=20)
    journal = first.steps()
    (crash_support.home() / "effects").unlink()
    (crash_support.home() / "model-calls").unlink()
    copy = crashed_copy(first.id, keep)
    resumed = agentspan.resume(copy, adk_support.support_tree())
    assert resumed.result(timeout=20).text == FINAL
    rest = journal[keep:]
    live_models = sorted(f"{s.name} {s.key.rsplit(':', 1)[1]}" for s in rest if s.kind is agentspan.StepKind.LLM)
    assert sorted(crash_support.lines("model-calls")) == live_models
    live_tools = sorted(s.name for s in rest if s.kind is agentspan.StepKind.TOOL)
    names = {"lookup": "lookup_order", "quote": "quote_refund", "notify": "notify_customer"}
    assert sorted(names[e.split()[0]] for e in adk_support.effects()) == live_tools
    assert [s.key for s in resumed.steps()] == [s.key for s in journal]
    counters = resumed.counters()
    assert counters.replayed("llm") + counters.live("llm") == 4


async def _slow(seconds: float, label: str) -> str:
    await asyncio.sleep(seconds)
    return label


async def slow_lookup(what: str) -> str:
    """A lookup that takes a while."""
    return await _slow(0.2, f"slow {what}")


async def fast_lookup(what: str) -> str:
    """A quick lookup."""
    return await _slow(0.0, f"fast {what}")


def test_parallel_function_calls_are_keyed_by_their_position_in_the_response():
    model = ScriptedLlm(turns=[[Call("slow_lookup", {"what": "a"}), Call("fast_lookup", {"what": "b"})], "ok"])
    handle = agentspan.start(LlmAgent(name="finder", model=model, tools=[slow_lookup, fast_lookup]), "go")
    assert handle.result(timeout=20).text == "ok"
    tools = {s.key: s.output for s in handle.steps() if s.kind is agentspan.StepKind.TOOL}
    assert tools == {"finder/llm:0/call:0": "slow a", "finder/llm:0/call:1": "fast b"}
    order = [s.key for s in handle.steps() if s.kind is agentspan.StepKind.TOOL]
    assert order == ["finder/llm:0/call:0", "finder/llm:0/call:1"]  # journal order = response order


def add(a: int, b: int) -> int:
    """Add two numbers."""
    crash_support.log("effects", f"add {a} {b} -")
    return a + b


def workflow() -> SequentialAgent:
    helper = LlmAgent(name="helper", description="Adds.", model=adk_support.model("helper", [
        Call("add", {"a": 20, "b": 22}), "42"]), tools=[add])
    first = LlmAgent(name="first", model=adk_support.model("first", [Call("helper", {"request": "20+22"}), "got 42"]),
                     tools=[AgentTool(agent=helper)])
    left = LlmAgent(name="left", model=adk_support.model("left", [Call("add", {"a": 1, "b": 1}), "two"]), tools=[add])
    right = LlmAgent(name="right", model=adk_support.model("right", ["right"]))
    looped = LlmAgent(name="looped", model=adk_support.model("looped", ["once", "twice"]))
    return SequentialAgent(name="flow", sub_agents=[
        first, ParallelAgent(name="fan", sub_agents=[left, right]), LoopAgent(name="loop", sub_agents=[looped],
                                                                               max_iterations=2)])


def test_workflow_agents_and_agent_tools_are_journaled_by_agent_path_and_replay():
    handle = agentspan.start(workflow(), "go")
    assert handle.result(timeout=20).text == "twice"
    keys = {s.key for s in handle.steps()}
    assert {"flow/first/llm:0", "flow/first/llm:0/call:0", "flow/first/llm:0/call:0/helper/llm:0",
            "flow/first/llm:0/call:0/helper/llm:0/call:0", "flow/first/llm:0/call:0/helper/llm:1",
            "flow/fan/left/llm:0/call:0", "flow/fan/right/llm:0", "flow/loop/looped/llm:0",
            "flow/loop/looped/llm:1"} <= keys
    (crash_support.home() / "model-calls").unlink()
    (crash_support.home() / "effects").unlink()
    copy = crashed_copy(handle.id, len(handle.steps()) - 1)  # everything but the last loop iteration
    resumed = agentspan.resume(copy, workflow())
    assert resumed.result(timeout=20).text == "twice"
    assert crash_support.lines("model-calls") == ["looped 1"] and adk_support.effects() == []


def test_agentspan_now_in_workflow_agents_and_agent_tools_replays_per_agent():
    said: dict[str, list[str]] = {}

    def timed_workflow() -> SequentialAgent:
        flow = workflow()
        agents = [flow.sub_agents[0], flow.sub_agents[0].tools[0].agent, *flow.sub_agents[1].sub_agents,
                  flow.sub_agents[2].sub_agents[0]]
        for agent in agents:
            def instruction(context: Any, name: str = agent.name) -> str:
                said.setdefault(name, []).append(f"{name} at {agentspan.now().isoformat()}")
                return said[name][-1]
            agent.instruction = instruction
        return flow

    handle = agentspan.start(timed_workflow(), "go")
    assert handle.result(timeout=20).text == "twice"
    recorded = {name: list(texts) for name, texts in said.items()}
    assert {name: len(texts) for name, texts in recorded.items()} == {
        "first": 2, "helper": 2, "left": 2, "right": 1, "looped": 2}
    copy = crashed_copy(handle.id, len(handle.steps()) - 1)  # everything but the last loop iteration
    said.clear()
    time.sleep(0.01)
    assert agentspan.resume(copy, timed_workflow()).result(timeout=20).text == "twice"
    assert {name: texts for name, texts in said.items() if name != "looped"} == {
        name: texts for name, texts in recorded.items() if name not in ("looped", "helper")}
    assert said["looped"][0] == recorded["looped"][0] and said["looped"][1] != recorded["looped"][1]
    assert "helper" not in said  # the agent tool's call was journaled whole: not run again

    # killed inside the agent tool, after the helper's first call and its tool call
    inside = crashed_copy(handle.id, None, keys={"session", "flow/first/llm:0", "flow/first/llm:0/call:0/helper/llm:0",
                                                 "flow/first/llm:0/call:0/helper/llm:0/call:0"})
    said.clear()
    assert agentspan.resume(inside, timed_workflow()).result(timeout=20).text == "twice"
    assert said["first"][0] == recorded["first"][0] and said["helper"][0] == recorded["helper"][0]
    assert said["helper"][1] != recorded["helper"][1]


# ---- approvals ------------------------------------------------------------------------------
def test_approval_required_tool_waits_and_runs_once_when_approved_from_another_handle():
    handle = agentspan.start(adk_support.refund_agent(), "refund 42")
    wait_status(handle, agentspan.RunStatus.WAITING)
    (pending,) = handle.pending_approvals()
    assert (pending.tool, pending.args, pending.step_key) == ("refund", {"order_id": "42", "amount": 30.0},
                                                             "refunds/llm:0/call:0")
    assert adk_support.effects() == []
    decided = agentspan.get(handle.id).approve(by="alice", reason="fine")
    assert decided.status is agentspan.ApprovalStatus.APPROVED
    assert handle.result(timeout=20).text == "Done."
    assert adk_support.effects() == ["refund 42 30.0"]
    assert crash_support.calls_of("refunds") == [0, 1]  # the call that asked for the refund was not made again
    with pytest.raises(ApprovalConflict, match="already approved"):
        agentspan.get(handle.id).approve(pending.id)
    with pytest.raises(NoPendingApproval):
        agentspan.get(handle.id).approve()


async def slow_notify(order_id: str) -> dict[str, Any]:
    """Notify the customer (slowly)."""
    adk_support.effect("notify-start", order_id)
    await asyncio.sleep(0.2)
    adk_support.effect("notify-end", order_id)
    return {"notified": order_id}


@pytest.mark.parametrize("shape", ["one response", "parallel branches"])
def test_a_call_running_beside_one_that_waits_for_an_approval_ends_and_is_not_made_again(shape):
    """ADK cancels the calls running beside one that raises (waits for an approval): they end
    anyway and are journaled, so the run goes on after the decision without making them again."""
    refund_call = Call("refund", {"order_id": "42", "amount": 30.0})
    notify_call = Call("slow_notify", {"order_id": "42"})
    if shape == "one response":
        agent: Any = LlmAgent(name="one", model=ScriptedLlm(turns=[[refund_call, notify_call], "done"]),
                              tools=[adk_support.refund, slow_notify])
    else:
        agent = ParallelAgent(name="par", sub_agents=[
            LlmAgent(name="ra", model=ScriptedLlm(turns=[refund_call, "refunded"]), tools=[adk_support.refund]),
            LlmAgent(name="nb", model=ScriptedLlm(turns=[notify_call, "notified"]), tools=[slow_notify])])
    handle = agentspan.start(agent, "go")
    wait_status(handle, agentspan.RunStatus.WAITING)
    agentspan.get(handle.id).approve(by="alice")
    handle.result(timeout=20)
    assert adk_support.effects() == ["notify-start 42", "notify-end 42", "refund 42 30.0"]


def test_streamed_run_delivers_each_adk_event_once_across_an_approval():
    async def main() -> tuple[agentspan.StreamedRun, list[Any]]:
        streamed = agentspan.run_streamed(adk_support.refund_agent(), "refund 42")
        events = []
        async for event in streamed.stream_events():
            events.append(event)
            if isinstance(event, ApprovalRequested):
                streamed.handle.approve(event.approval.id)
        return streamed, events

    streamed, events = asyncio.run(main())
    assert isinstance(streamed.result, ADKResult) and streamed.text == "Done."
    adk_events = [e for e in events if isinstance(e, Event)]
    calls = [e for e in adk_events if e.get_function_calls()]
    responses = [e for e in adk_events if e.get_function_responses()]
    # the run was executed again after the decision (the first model call replayed): its events
    # came again and were not delivered twice
    assert len(calls) == 1 and len(responses) == 1 and [e.author for e in adk_events].count("refunds") == 3
    (approval,) = [i for i, e in enumerate(events) if isinstance(e, ApprovalRequested)]
    assert approval < events.index(responses[0])  # asked before the tool ran
    assert adk_support.effects() == ["refund 42 30.0"] and crash_support.calls_of("refunds") == [0, 1]
    assert agentspan.get(streamed.id).status() is agentspan.RunStatus.COMPLETED


def test_rejected_tool_call_is_not_run_and_the_model_is_told():
    handle = agentspan.start(adk_support.refund_agent(), "refund 42")
    wait_status(handle, agentspan.RunStatus.WAITING)
    agentspan.get(handle.id).reject(by="bob", reason="not eligible")
    result = handle.result(timeout=20)
    assert result.text == "Done." and adk_support.effects() == []
    (answer,) = [r for e in result.events for r in e.get_function_responses()]
    assert "rejected by bob: not eligible" in answer.response["result"]


@pytest.mark.parametrize("approve", [True, False])
def test_adk_require_confirmation_becomes_an_agentspan_approval(approve):
    handle = agentspan.start(adk_support.confirm_agent(), "cancel 42")
    wait_status(handle, agentspan.RunStatus.WAITING)
    (pending,) = handle.pending_approvals()
    assert (pending.tool, pending.args, pending.step_key) == ("cancel_order", {"order_id": "42"},
                                                             "orders/llm:0/call:0/approval")
    if approve:
        agentspan.get(handle.id).approve(by="carol")
    else:
        agentspan.get(handle.id).reject(by="carol", reason="keep it")
    result = handle.result(timeout=20)
    assert result.text == "Cancelled."
    assert adk_support.effects() == (["cancel 42"] if approve else [])
    answers = [r.response for e in result.events for r in e.get_function_responses() if r.name == "cancel_order"]
    assert answers[-1] == ({"cancelled": "42"} if approve else {"error": "This tool call is rejected."})
    approval = next(s for s in handle.steps() if s.kind is agentspan.StepKind.APPROVAL)
    assert approval.output["approved"] is approve and approval.output["by"] == "carol"


def transfer_money(amount: int, tool_context: ToolContext) -> str:
    """Move money; asks a human through ADK's request_confirmation first."""
    confirmation = tool_context.tool_confirmation
    if confirmation is None:
        tool_context.request_confirmation(hint=f"move {amount}?", payload={"amount": amount})
        return "waiting for a human"
    crash_support.log("effects", f"transfer {amount} -")
    return f"moved {amount}, approved by {confirmation.payload['by']}" if confirmation.confirmed else "not moved"


def test_request_confirmation_from_inside_a_tool_gets_the_decision_and_its_payload():
    agent = LlmAgent(name="bank", model=ScriptedLlm(turns=[Call("transfer_money", {"amount": 5}), "moved"]),
                     tools=[transfer_money])
    handle = agentspan.start(agent, "move 5")
    wait_status(handle, agentspan.RunStatus.WAITING)
    agentspan.get(handle.id).approve(by="erin")
    result = handle.result(timeout=20)
    assert adk_support.effects() == ["transfer 5"]
    tools = {s.key: s.output for s in handle.steps() if s.kind is agentspan.StepKind.TOOL}
    assert tools["bank/llm:0/call:0/confirmed"] == "moved 5, approved by erin"
    assert tools["bank/llm:0/call:0"]["result"] == "waiting for a human"  # the first run of the tool asked
    assert result.text == "moved"


# ---- AgentspanPlugin on user-built Runners ----------------------------------------------------
def test_plugin_on_a_user_runner_opens_one_run_per_invocation():
    agent = LlmAgent(name="calc", model=ScriptedLlm(turns=[Call("add", {"a": 1, "b": 2}), "3", "again: 3"]),
                     tools=[add])
    runner = InMemoryRunner(app=App(name="calculator", root_agent=agent, plugins=[AgentspanPlugin()]))

    async def main() -> None:
        await runner.session_service.create_session(app_name="calculator", user_id="u", session_id="s")
        await send(runner, "s", message("1+2?"))
        await send(runner, "s", message("and again?"))

    asyncio.run(main())
    second, first = agentspan.get_store().list_runs()
    assert (first.agent, first.framework, first.session_id, first.status) == (
        "calculator/calc", "adk-runner", "s", agentspan.RunStatus.COMPLETED)
    assert first.output["text"] == "3" and second.output["text"] == "again: 3"
    assert first.idempotency_key.startswith("adk:calculator:u:s:0:")
    assert second.idempotency_key.startswith("adk:calculator:u:s:1:")
    assert [s.key for s in agentspan.get(first.id).steps()] == ["calc/llm:0", "calc/llm:0/call:0", "calc/llm:1"]
    assert [s.key for s in agentspan.get(second.id).steps()] == ["calc/llm:0"]
    assert first.lease_owner is None and second.lease_owner is None


def test_plugin_run_waiting_for_approval_continues_when_the_message_is_sent_again():
    model = ScriptedLlm(turns=[Call("refund", {"order_id": "7", "amount": 5.0}), "refunded"])
    runner = Runner(app_name="shop", agent=LlmAgent(name="desk", model=model, tools=[adk_support.refund]),
                    session_service=InMemorySessionService(), plugins=[AgentspanPlugin()], auto_create_session=True)
    with pytest.raises(ApprovalPending) as pending:
        asyncio.run(send(runner, "s", message("refund 7")))
    handle = agentspan.get(pending.value.run_id)
    assert handle.status() is agentspan.RunStatus.WAITING and handle.run().lease_owner is None
    handle.approve(by="frank")
    events = asyncio.run(send(runner, "s", message("refund 7")))
    assert events[-1].content.parts[0].text == "refunded"
    assert adk_support.effects() == ["refund 7 5.0"] and model.calls == 2
    assert handle.status() is agentspan.RunStatus.COMPLETED and len(agentspan.get_store().list_runs()) == 1


def test_plugin_on_divergence_live_goes_on_live_when_the_agent_changed():
    service = InMemorySessionService()

    def desk_runner(instruction: str, turns: list[Any], **plugin: Any) -> tuple[Runner, ScriptedLlm]:
        model = ScriptedLlm(turns=turns)
        agent = LlmAgent(name="desk", instruction=instruction, model=model, tools=[adk_support.refund])
        return Runner(app_name="shop", agent=agent, session_service=service, plugins=[AgentspanPlugin(**plugin)],
                      auto_create_session=True), model

    first, _ = desk_runner("Refund.", [Call("refund", {"order_id": "7", "amount": 5.0}), "refunded"])
    with pytest.raises(ApprovalPending) as pending:
        asyncio.run(send(first, "s", message("refund 7")))
    handle = agentspan.get(pending.value.run_id)
    (old,) = handle.pending_approvals()
    turns = [Call("refund", {"order_id": "7", "amount": 4.0}), "refunded 4"]
    with pytest.raises(ConfigurationError, match="on_divergence"):
        AgentspanPlugin(on_divergence="maybe")  # type: ignore[arg-type]
    live, model = desk_runner("Refund carefully.", turns, on_divergence="live")
    with pytest.raises(ApprovalPending):
        asyncio.run(send(live, "s", message("refund 7")))
    assert model.calls == 1
    assert handle.store.get_approval(old.id).status is agentspan.ApprovalStatus.EXPIRED
    (new,) = handle.pending_approvals()
    assert new.args == {"order_id": "7", "amount": 4.0} and new.step_key == old.step_key
    handle.approve(by="gina")
    events = asyncio.run(send(live, "s", message("refund 7")))
    assert events[-1].content.parts[0].text == "refunded 4" and adk_support.effects() == ["refund 7 4.0"]
    assert any(s.key.startswith("superseded:") for s in handle.steps())


def test_a_plugin_run_cannot_be_resumed_by_agentspan_resume():
    runner = Runner(app=App(name="shop", root_agent=adk_support.refund_agent(), plugins=[AgentspanPlugin()]),
                    session_service=InMemorySessionService(), auto_create_session=True)
    with pytest.raises(ApprovalPending) as pending:
        asyncio.run(send(runner, "s", message("refund 42")))
    with pytest.raises(ConfigurationError, match="adk-runner run: AgentspanPlugin opened it in your own ADK Runner"):
        agentspan.resume(pending.value.run_id, runner.agent)
    with pytest.raises(ConfigurationError, match="run the same message on the same session there"):
        agentspan.retry(pending.value.run_id, runner.agent)
    run = agentspan.get(pending.value.run_id).run()
    assert (run.framework, run.status, run.lease_owner) == ("adk-runner", agentspan.RunStatus.WAITING, None)


def test_a_failed_plugin_run_reopened_for_a_retry_continues_when_the_message_is_sent_again():
    broken = {"charge": True}

    def charge(order_id: str) -> str:
        """Charge an order."""
        if broken["charge"]:
            raise RuntimeError("card processor down")
        adk_support.effect("charge", order_id)
        return f"charged {order_id}"

    model = ScriptedLlm(turns=[Call("lookup_order", {"order_id": "7"}), Call("charge", {"order_id": "7"}), "charged"])
    agent = LlmAgent(name="desk", model=model, tools=[adk_support.lookup_order, charge])
    runner = Runner(app_name="shop", agent=agent, session_service=InMemorySessionService(),
                    plugins=[AgentspanPlugin()], auto_create_session=True)
    with pytest.raises(RuntimeError, match="card processor down"):
        asyncio.run(send(runner, "s", message("charge 7")))
    (failed,) = agentspan.get_store().list_runs()
    assert failed.status is agentspan.RunStatus.FAILED and model.calls == 2

    # the same message again, without a retry: the failed run stays failed, a new run is opened
    other = Runner(app_name="shop", agent=agent, session_service=InMemorySessionService(),
                   plugins=[AgentspanPlugin()], auto_create_session=True)
    broken["charge"] = False
    assert asyncio.run(send(other, "s2", message("charge 7")))[-1].content.parts[0].text == "charged"
    assert agentspan.get(failed.id).status() is agentspan.RunStatus.FAILED
    assert len(agentspan.get_store().list_runs()) == 2 and model.calls == 5
    before = len(adk_support.effects())

    # reopened as `agentspan runs retry` does, then the same message on the same session
    agentspan.get_store().reopen_run(failed.id, owner=None, lease_expires_at=None)
    model.turns = [Call("lookup_order", {"order_id": "7"}), Call("charge", {"order_id": "7"}), "charged again"]
    model.calls = 0
    events = asyncio.run(send(runner, "s", message("charge 7")))
    assert events[-1].content.parts[0].text == "charged again"
    assert model.calls == 1  # only the call after the failed one: the first two replayed
    assert adk_support.effects()[before:] == ["charge 7"]  # the lookup done before the failure is not redone
    run = agentspan.get(failed.id).run()
    assert run.status is agentspan.RunStatus.COMPLETED and len(agentspan.get_store().list_runs()) == 2
    assert [r["error"] for r in run.options["agentspan.retries"]] == ["RuntimeError: card processor down"]
    steps = {s.key: s for s in agentspan.get(failed.id).steps()}
    assert steps["desk/llm:1/call:0"].attempt == 2 and steps["desk/llm:1/call:0"].output == "charged 7"
    session = asyncio.run(runner.session_service.get_session(app_name="shop", user_id="u", session_id="s"))
    # the failed invocation's events were rewound: the model saw the conversation of the first attempt
    assert [e.content.parts[0].text for e in _apply_rewinds(session.events) if is_user_text(e)] == ["charge 7"]


def confirming_root(workflow: bool) -> Any:
    """The confirming agent, or a workflow agent running it (a message then reaches the plugin
    with the workflow agent as the invocation's agent)."""
    agent = adk_support.confirm_agent()
    return SequentialAgent(name="flow", sub_agents=[agent]) if workflow else agent


@pytest.mark.parametrize("workflow", [False, True])
def test_plugin_confirmation_decided_in_agentspan_wins_over_the_apps_answer(workflow):
    runner = InMemoryRunner(agent=confirming_root(workflow), app_name="ops", plugins=[AgentspanPlugin()])

    async def main() -> list[Event]:
        await runner.session_service.create_session(app_name="ops", user_id="u", session_id="s")
        events = await send(runner, "s", message("cancel 42"))
        (request,) = [c for e in events for c in e.get_function_calls() if c.name == "adk_request_confirmation"]
        (run,) = agentspan.get_store().list_runs()
        assert run.status is agentspan.RunStatus.WAITING
        agentspan.get(run.id).approve(by="grace")
        answer = types.Part(function_response=types.FunctionResponse(
            id=request.id, name="adk_request_confirmation", response={"confirmed": False}))
        return await send(runner, "s", types.Content(role="user", parts=[answer]))

    events = asyncio.run(main())
    assert events[-1].content.parts[0].text == "Cancelled."
    assert adk_support.effects() == ["cancel 42"]  # Agentspan's approval, not the app's "no"
    (run,) = agentspan.get_store().list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED
    path = "flow/orders" if workflow else "orders"
    assert [s.key for s in agentspan.get(run.id).steps()] == [
        f"{path}/llm:0", f"{path}/llm:0/call:0/approval", f"{path}/llm:0/call:0/confirmed", f"{path}/llm:1"]


@pytest.mark.parametrize("workflow", [False, True])
@pytest.mark.parametrize(("confirmed", "effects", "status"), [(True, ["cancel 42"], "approved"),
                                                            (False, [], "rejected")])
def test_plugin_confirmation_answered_by_the_app_decides_its_approval(confirmed, effects, status, workflow):
    runner = InMemoryRunner(agent=confirming_root(workflow), app_name="ops", plugins=[AgentspanPlugin()])

    async def main() -> None:
        await runner.session_service.create_session(app_name="ops", user_id="u", session_id="s")
        events = await send(runner, "s", message("cancel 42"))
        (request,) = [c for e in events for c in e.get_function_calls() if c.name == "adk_request_confirmation"]
        answer = types.Part(function_response=types.FunctionResponse(
            id=request.id, name="adk_request_confirmation", response={"confirmed": confirmed}))
        await send(runner, "s", types.Content(role="user", parts=[answer]))

    asyncio.run(main())
    assert adk_support.effects() == effects
    (run,) = agentspan.get_store().list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED
    (approval,) = agentspan.get_store().list_approvals(run_id=run.id)
    assert (approval.status.value, approval.decided_by) == (status, "adk")
    step = next(s for s in agentspan.get(run.id).steps() if s.kind.value == "approval")
    assert (step.output["status"], step.output["by"]) == (status, "adk")


def job_runner(blocking: dict[str, bool]) -> tuple[ScriptedLlm, InMemoryRunner]:
    """A user's Runner with the plugin, of an agent whose one tool hangs while ``blocking["on"]``."""
    async def slow_job(name: str) -> str:
        """A job that hangs when told to."""
        if blocking["on"]:
            await asyncio.sleep(30)
        return f"done {name}"

    model = ScriptedLlm(turns=[Call("slow_job", {"name": "a"}), "finished"])
    return model, InMemoryRunner(agent=LlmAgent(name="worker", model=model, tools=[slow_job]), app_name="jobs",
                                 plugins=[AgentspanPlugin()])


def test_a_cancelled_plugin_invocation_is_taken_over_when_the_session_runs_again():
    blocking = {"on": True}
    model, runner = job_runner(blocking)
    store = agentspan.get_store()

    async def main() -> tuple[list[Event], float]:
        await runner.session_service.create_session(app_name="jobs", user_id="u", session_id="s")
        task = asyncio.create_task(send(runner, "s", message("go")))
        while not any(s.key == "worker/llm:0/call:0" for r in store.list_runs() for s in store.list_steps(r.id)):
            await asyncio.sleep(0.01)
        task.cancel()  # e.g. the client went away: ADK calls no plugin callback
        with pytest.raises(asyncio.CancelledError):
            await task
        blocking["on"] = False
        started = time.monotonic()
        events = await send(runner, "s", message("go"))
        return events, time.monotonic() - started

    events, took = asyncio.run(main())
    assert events[-1].content.parts[0].text == "finished"
    assert took < 1.0  # taken over at once, without waiting for the lease (1.5 s here) to lapse
    (run,) = store.list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED and model.calls == 2
    tool = next(s for s in store.list_steps(run.id) if s.kind is agentspan.StepKind.TOOL)
    assert (tool.attempt, tool.output) == (2, "done a")


def test_a_crashed_plugin_invocation_of_a_session_made_again_with_its_id_is_taken_over():
    """A session deleted and made again with the same id: the same first message's run key
    belongs to the earlier, completed run, so the new run's key gets a ``#2``; that run, cut off
    mid-call, is still found and taken over when the message is sent again."""
    blocking = {"on": False}
    model, runner = job_runner(blocking)
    store = agentspan.get_store()
    sessions = runner.session_service

    async def main() -> list[Event]:
        await sessions.create_session(app_name="jobs", user_id="u", session_id="s")
        await send(runner, "s", message("go"))
        await sessions.delete_session(app_name="jobs", user_id="u", session_id="s")
        await sessions.create_session(app_name="jobs", user_id="u", session_id="s")
        blocking["on"] = True
        task = asyncio.create_task(send(runner, "s", message("go")))
        while len([s for r in store.list_runs() for s in store.list_steps(r.id) if s.kind.value == "tool"]) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        blocking["on"] = False
        return await send(runner, "s", message("go"))

    events = asyncio.run(main())
    assert events[-1].content.parts[0].text == "finished"
    assert sorted((r.status.value, r.idempotency_key.endswith("#2")) for r in store.list_runs()) == [
        ("completed", False), ("completed", True)]
    assert model.calls == 4  # two per run: the cut-off run's first call was replayed, not made again


def test_a_plugin_invocation_cancelled_during_a_model_call_leaves_nothing_behind() -> None:
    """ADK calls no plugin callback when its caller cancels it: the model call's held step is
    dropped later by the garbage collector, in another context, and must close quietly."""
    import gc
    import sys

    unraisable: list[Any] = []
    model = ScriptedLlm(turns=["hello"], latency=5)
    runners = [InMemoryRunner(agent=LlmAgent(name="w", model=model), app_name="jobs", plugins=[AgentspanPlugin()])]

    async def main() -> None:
        runner = runners[0]
        await runner.session_service.create_session(app_name="jobs", user_id="u", session_id="s")
        task = asyncio.create_task(send(runner, "s", message("hi")))
        while model.calls == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    gc.collect()  # what earlier tests left is collected outside the window
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        asyncio.run(main())
        runners.clear()  # the plugin, its journal and the held step go with the runner
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert [u.exc_value for u in unraisable] == []


# ---- what a plain Runner gives tools --------------------------------------------------------------
async def save_report(text: str, tool_context: ToolContext) -> dict[str, Any]:
    """Save a report."""
    return {"version": await tool_context.save_artifact("report.txt", types.Part(text=text))}


class Killed(BaseException):
    """The process dies here (as a SIGKILL would: the call is left in doubt)."""


KILL_READING: list[bool] = []


async def read_report(tool_context: ToolContext) -> dict[str, Any]:
    """Read the report back."""
    if KILL_READING:
        KILL_READING.pop()
        raise Killed()
    part = await tool_context.load_artifact("report.txt")
    return {"text": part.text if part else None}


async def recall(query: str, tool_context: ToolContext) -> dict[str, Any]:
    """Search the memory."""
    return {"found": len((await tool_context.search_memory(query)).memories)}


def reporter() -> LlmAgent:
    turns = [Call("save_report", {"text": "hello"}), Call("recall", {"query": "report"}), Call("read_report"), "done"]
    return LlmAgent(name="reporter", model=ScriptedLlm(turns=turns), tools=[save_report, recall, read_report])


def tool_results(run_id: str) -> list[Any]:
    return [_codec.unpack(s.output)[0] for s in agentspan.get(run_id).steps() if s.kind is agentspan.StepKind.TOOL]


def test_tools_get_artifact_and_memory_services_as_under_in_memory_runner(tmp_path: Path):
    """``InMemoryRunner`` gives tools artifact and memory services; so does ``agentspan.run``
    (in this process, or the lasting ones given), and a resumed run reads the artifacts a
    replayed call saved from the service given."""
    first = agentspan.start(reporter(), "report")
    assert first.result(timeout=20).text == "done"
    assert tool_results(first.id) == [{"version": 0}, {"found": 0}, {"text": "hello"}]
    with pytest.raises(ConfigurationError, match="artifact_service must be a google.adk BaseArtifactService"):
        agentspan.run(reporter(), "report", artifact_service="files")

    KILL_READING.append(True)
    saved = agentspan.start(reporter(), "report", artifact_service=FileArtifactService(tmp_path / "artifacts"))
    with pytest.raises(Killed):
        saved.result(timeout=20)
    resumed = agentspan.resume(saved.id, reporter(), artifact_service=FileArtifactService(tmp_path / "artifacts"))
    assert resumed.result(timeout=20).text == "done"  # the save was replayed; the file holds what it saved
    assert tool_results(saved.id) == [{"version": 0}, {"found": 0}, {"text": "hello"}]


class Quote(BaseModel):
    order_id: str
    amount: float


def quote(order_id: str) -> Quote:
    """Quote an order."""
    return Quote(order_id=order_id, amount=30.0)


def test_a_tool_returning_a_pydantic_model_gets_adks_result_shape_live_and_replayed():
    """ADK wraps a result that is no dict as ``{"result": value}``; its JSON form (a dict) keeps
    that shape, on the live call and the replayed one."""
    def agent() -> LlmAgent:
        return LlmAgent(name="q", model=ScriptedLlm(turns=[Call("quote", {"order_id": "42"}), "quoted"]),
                        tools=[quote])

    async def plain() -> Any:
        runner = InMemoryRunner(agent=agent(), app_name="q")
        await runner.session_service.create_session(app_name="q", user_id="u", session_id="s")
        return await send(runner, "s", message("go"))

    def response(events: list[Event]) -> Any:
        return next(p.function_response.response for e in events for p in (e.content.parts if e.content else [])
                    if p.function_response)

    expected = to_jsonable_python(response(asyncio.run(plain())))
    assert expected == {"result": {"order_id": "42", "amount": 30.0}}
    first = agentspan.start(agent(), "go")
    assert response(first.result(timeout=20).events) == expected
    resumed = agentspan.resume(crashed_copy(first.id, 3), agent()).result(timeout=20)  # the call replayed
    assert response(resumed.session.events) == expected


def test_a_tool_returning_bytes_that_are_no_utf8_text_completes_with_the_same_response_live_and_replayed():
    """Bytes that are no UTF-8 text (an image's) are journaled base64, not a failure of the call
    (which a retry would run again); the model reads the same function response on replay."""
    ran: list[str] = []

    def thumbnail(name: str) -> dict[str, Any]:
        """Render a thumbnail."""
        ran.append(name)
        return {"png": b"\x89PNG\r\n\x1a\n", "name": name.encode()}

    def agent() -> LlmAgent:
        return LlmAgent(name="t", model=ScriptedLlm(turns=[Call("thumbnail", {"name": "cat"}), "done"]),
                        tools=[thumbnail])

    def response(events: list[Event]) -> Any:
        return next(p.function_response.response for e in events for p in (e.content.parts if e.content else [])
                    if p.function_response)

    first = agentspan.start(agent(), "go")
    result = first.result(timeout=20)
    assert result.text == "done" and ran == ["cat"]
    expected = {"png": "iVBORw0KGgo=", "name": "Y2F0"}
    assert response(result.events) == expected
    assert first.steps()[2].status is agentspan.StepStatus.COMPLETED
    resumed = agentspan.resume(crashed_copy(first.id, 3), agent()).result(timeout=20)  # the call replayed
    assert response(resumed.session.events) == expected and ran == ["cat"]


@pytest.mark.parametrize("answered_by", ["plugin", "agent", "agent, other names"])
def test_a_tool_error_an_on_tool_error_callback_answers_is_journaled_as_that_answer_and_replayed(answered_by):
    """ADK's ``on_tool_error_callback`` (a plugin's, such as ``ReflectAndRetryToolPlugin``, or the
    agent's) answers a tool's error for the model: the call is journaled completed with that
    answer (the error noted), so a resumed run replays it instead of running the tool again (and,
    the tool succeeding now, diverging from the model's journaled next call)."""
    from google.adk.plugins.reflect_retry_tool_plugin import ReflectAndRetryToolPlugin

    charges: list[float] = []
    failing = [True]

    def charge(amount: float) -> dict[str, Any]:
        """Charge the card."""
        charges.append(amount)
        if failing:
            raise TimeoutError("gateway timed out")
        return {"charged": amount}

    observed: list[str] = []

    def observe(tool: Any, args: dict[str, Any], tool_context: ToolContext, error: Exception) -> None:
        observed.append(type(error).__name__)  # answers nothing: the next callback is asked

    def answer(tool: Any, args: dict[str, Any], tool_context: ToolContext, error: Exception) -> dict[str, Any]:
        return {"error": f"{type(error).__name__}: {error}"}

    def answer_by_position(tool: Any, tool_args: dict[str, Any], ctx: ToolContext, err: Exception) -> dict[str, Any]:
        return answer(tool, tool_args, ctx, err)  # ADK calls it with its arguments by position

    def agent() -> LlmAgent:
        callbacks = {"agent": [observe, answer], "agent, other names": [observe, answer_by_position]}
        return LlmAgent(name="pay", model=ScriptedLlm(turns=[Call("charge", {"amount": 30.0}), "paid"]), tools=[charge],
                        on_tool_error_callback=callbacks.get(answered_by))

    def options() -> dict[str, Any]:
        return {"plugins": [ReflectAndRetryToolPlugin(max_retries=3)]} if answered_by == "plugin" else {}

    handle = agentspan.start(agent(), "go", **options())
    assert handle.result(timeout=20).text == "paid" and charges == [30.0]
    step = handle.steps()[2]
    assert (step.key, step.status) == ("pay/llm:0/call:0", agentspan.StepStatus.COMPLETED)
    assert step.error == "TimeoutError: gateway timed out"
    if answered_by != "plugin":
        assert step.output == {"error": "TimeoutError: gateway timed out"}
        assert observed == ["TimeoutError"]  # asked once (was: twice, or the answer missed by name)
    else:
        assert step.output["response_type"] == "ERROR_HANDLED_BY_REFLECT_AND_RETRY_PLUGIN"
    failing.clear()
    resumed = agentspan.resume(crashed_copy(handle.id, 3), agent(), **options())  # killed before pay/llm:1
    assert resumed.result(timeout=20).text == "paid" and charges == [30.0]


def test_a_model_call_that_raised_is_journaled_failed_and_made_again_by_a_retry():
    """ADK turns the error into an event without content; that event is not the model's answer:
    the call is journaled ``failed`` (not completed with the error), and a retry makes it again."""
    down = [True]

    def on_call(index: int) -> None:
        if index == 1 and down:
            down.clear()
            raise ConnectionError("model unreachable")

    def agent() -> LlmAgent:
        return LlmAgent(name="calc", tools=[add], model=ScriptedLlm(turns=[Call("add", {"a": 1, "b": 2}), "3"],
                                                                     on_call=on_call))

    handle = agentspan.start(agent(), "add")
    with pytest.raises(ConnectionError, match="model unreachable"):
        handle.result(timeout=20)
    failed = handle.steps()[-1]
    assert (failed.key, failed.status, failed.output) == ("calc/llm:1", agentspan.StepStatus.FAILED, None)
    assert "ConnectionError: model unreachable" in failed.error
    assert agentspan.retry(handle.id, agent()).result(timeout=20).text == "3"


def test_an_error_the_model_answers_with_is_its_journaled_response():
    """A response with an error code and no content (a safety block) is the model's answer,
    journaled ``completed`` as any response: unlike an error ADK raised before the model answered."""
    from google.adk.models import LlmResponse

    blocked = LlmResponse(error_code="SAFETY", error_message="blocked", model_version="scripted")
    handle = agentspan.start(LlmAgent(name="guarded", model=ScriptedLlm(turns=[blocked])), "something unsafe")
    handle.result(timeout=20)
    (step,) = [s for s in handle.steps() if s.kind is agentspan.StepKind.LLM]
    assert step.status is agentspan.StepStatus.COMPLETED and step.output["error_code"] == "SAFETY"


def test_replayed_model_calls_count_against_max_llm_calls():
    """A retried run stops at ``RunConfig(max_llm_calls=...)`` where the plain run stops: the
    replayed calls count as the live ones did."""
    from google.adk.agents.invocation_context import LlmCallsLimitExceededError
    from google.adk.agents.run_config import RunConfig

    def agent() -> LlmAgent:
        return LlmAgent(name="calc", tools=[add], model=ScriptedLlm(turns=[
            Call("add", {"a": 1, "b": 2}), Call("add", {"a": 3, "b": 4}), "10"]))

    limited = RunConfig(max_llm_calls=2)
    handle = agentspan.start(agent(), "add", run_config=limited)
    with pytest.raises(LlmCallsLimitExceededError):
        handle.result(timeout=20)
    with pytest.raises(LlmCallsLimitExceededError):
        agentspan.retry(handle.id, agent(), run_config=limited).result(timeout=20)
    assert agentspan.retry(handle.id, agent()).result(timeout=20).text == "10"  # no limit: it goes on


# ---- sessions -----------------------------------------------------------------------------
def remember(fact: str, tool_context: ToolContext) -> str:
    """Remember a fact."""
    tool_context.state["facts"] = [*tool_context.state.get("facts", []), fact]
    return "noted"


def test_a_session_goes_on_across_runs_with_its_state():
    model = ScriptedLlm(turns=[Call("remember", {"fact": "blue"}), "noted blue", "you like blue"])
    agent = LlmAgent(name="memo", model=model, tools=[remember])
    first = agentspan.run(agent, "I like blue", session_id="chat", state={"owner": "ida"})
    second = agentspan.run(agent, "what do I like?", session_id="chat")
    assert (first.text, second.text) == ("noted blue", "you like blue")  # turn 3 of the script: it saw turns 1-2
    assert second.session.state == {"owner": "ida", "facts": ["blue"]}
    assert [e.author for e in second.session.events] == ["user", "memo", "memo", "memo", "user", "memo"]
    (snapshot,) = agentspan.get_store().list_checkpoints(thread_id="adk:memo:user:chat")
    assert snapshot.checkpoint_id == agentspan.get_store().list_runs()[0].id  # older snapshots pruned


# ---- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("input", "options", "error"), [
    (42, {}, "takes a str or a google.genai types.Content, not int"),
    ("hi", {"max_turns": 3}, "unknown option.*max_turns"),
    ("hi", {"state": {"when": object()}}, "state must be a dict of JSON values"),
    ("hi", {"app_name": "my app"}, "app_name: Invalid app name"),
    ("hi", {"user_id": ""}, "user_id must be a non-empty str"),
    ("hi", {"run_config": {"max_llm_calls": 3}}, "run_config must be a google.adk RunConfig"),
    (types.Content(role="user", parts=[]), {}, "has no parts"),
])
def test_bad_input_is_refused_before_anything_is_stored(input: Any, options: dict[str, Any], error: str):
    agent = LlmAgent(name="calc", model=ScriptedLlm(turns=["x"]))
    with pytest.raises(ConfigurationError, match=error):
        agentspan.run(agent, input, **options)
    assert agentspan.get_store().list_runs() == []


def test_a_changed_prompt_is_a_divergence_naming_the_step():
    agent = adk_support.support_tree()
    handle = agentspan.start(agent, PROMPT)
    handle.result(timeout=20)
    copy = crashed_copy(handle.id, 3)  # session, support/llm:0, its tool call
    changed = adk_support.support_tree()
    changed.instruction = "Be terse."
    resumed = agentspan.resume(copy, changed)
    with pytest.raises(ReplayDivergenceError, match="support/llm:0"):
        resumed.result(timeout=20)
    assert agentspan.get(copy).status() is agentspan.RunStatus.FAILED


def test_a_renamed_root_agent_is_a_divergence_instead_of_running_every_call_again():
    """Keys start with the root agent's name: under a renamed root no journaled call is reached,
    so each would be made again. That is a divergence at the first journaled model call; with
    ``on_divergence="live"`` the run goes on live from there instead."""
    handle = agentspan.start(adk_support.support_tree(), PROMPT)
    handle.result(timeout=20)
    ran_before = len(adk_support.effects())
    copy = crashed_copy(handle.id, 7)  # all but billing's last model call
    renamed = adk_support.support_tree()
    renamed.name = "helpdesk"
    with pytest.raises(ReplayDivergenceError, match="'support/llm:0'.*root agent 'support'.*'helpdesk'"):
        agentspan.resume(copy, renamed).result(timeout=20)
    assert agentspan.get(copy).status() is agentspan.RunStatus.FAILED
    assert len(adk_support.effects()) == ran_before  # no tool ran again
    live = crashed_copy(handle.id, 7)
    renamed = adk_support.support_tree()
    renamed.name = "helpdesk"
    assert agentspan.resume(live, renamed, on_divergence="live").result(timeout=20).text == FINAL
    keys = [s.key for s in agentspan.get(live).steps()]
    assert "helpdesk/llm:0" in keys and not any(k.startswith("support/") for k in keys)


def test_a_changed_prompt_goes_on_live_with_on_divergence_live():
    handle = agentspan.start(adk_support.support_tree(), PROMPT)
    handle.result(timeout=20)
    copy = crashed_copy(handle.id, 3)  # session, support/llm:0, its tool call
    recorded = [s for s in agentspan.get(copy).steps()]
    changed = adk_support.support_tree()
    changed.instruction = "Be terse."
    ran_before = len(adk_support.effects())
    result = agentspan.resume(copy, changed, on_divergence="live").result(timeout=20)
    assert result.text == FINAL
    assert len(adk_support.effects()) > ran_before  # the tool call of support/llm:0 ran again, live
    steps = agentspan.get(copy).steps()
    aside = f"superseded:{recorded[1].seq}/"
    assert [s.key for s in steps[:3]] == [recorded[0].key, aside + recorded[1].key, aside + recorded[2].key]
    assert [s.output for s in steps[1:3]] == [s.output for s in recorded[1:3]]
    assert "support/llm:0" in [s.key for s in steps[3:]]
    assert agentspan.get(copy).status() is agentspan.RunStatus.COMPLETED


@pytest.mark.parametrize("transport", ["server-sqlite"])
def test_runs_sessions_and_approvals_through_a_server(transport):
    first = agentspan.run(adk_support.support_tree(), PROMPT, session_id="srv")
    assert first.text == FINAL
    (run,) = agentspan.get_store().list_runs()
    assert len(agentspan.get(run.id).steps()) == 9 and run.output["text"] == FINAL
    model = ScriptedLlm(turns=["first", "second"])
    agent = LlmAgent(name="chat", model=model)
    agentspan.run(agent, "one", session_id="talk")
    assert agentspan.run(agent, "two", session_id="talk").text == "second"  # the session came back from the server
    handle = agentspan.start(adk_support.confirm_agent(), "cancel 42")
    wait_status(handle, agentspan.RunStatus.WAITING)
    agentspan.get(handle.id).approve(by="hank")
    assert handle.result(timeout=30).text == "Cancelled." and adk_support.effects().count("cancel 42") == 1


def test_instructions_that_say_the_time_with_agentspan_now_replay_on_resume():
    said: list[str] = []

    def timed_tree() -> LlmAgent:
        def instruction(context: Any) -> str:
            said.append(f"Help the customer. The time is {agentspan.now().isoformat()}.")
            return said[-1]

        tree = adk_support.support_tree()
        tree.instruction = instruction
        tree.sub_agents[0].instruction = instruction
        return tree

    first = agentspan.start(timed_tree(), PROMPT)
    assert first.result(timeout=20).text == FINAL
    recorded = list(said)
    assert len(recorded) == 4 and len(set(recorded)) == 4  # one per model call, the time moving
    copy = crashed_copy(first.id, 6)  # killed in billing's first call's tools
    said.clear()
    time.sleep(0.01)
    assert agentspan.resume(copy, timed_tree()).result(timeout=20).text == FINAL
    assert said[:3] == recorded[:3]  # the replayed calls' instructions said their first times
    assert said[3] != recorded[3]


def test_a_plugin_run_in_your_own_runner_reads_agentspan_now_from_its_journal():
    said: list[str] = []

    def instruction(context: Any) -> str:
        said.append(f"The time is {agentspan.now().isoformat()}.")
        return said[-1]

    model = ScriptedLlm(turns=[Call("refund", {"order_id": "7", "amount": 5.0}), "refunded"])
    agent = LlmAgent(name="desk", instruction=instruction, model=model, tools=[adk_support.refund])
    runner = Runner(app_name="shop", agent=agent, session_service=InMemorySessionService(),
                    plugins=[AgentspanPlugin()], auto_create_session=True)

    async def stopped_for_the_approval() -> tuple[str, datetime]:
        with pytest.raises(ApprovalPending) as pending:
            await send(runner, "s", message("refund 7"))
        time.sleep(0.01)
        return pending.value.run_id, agentspan.now()  # in the runner's own context, after it stopped

    run_id, after = asyncio.run(stopped_for_the_approval())
    handle = agentspan.get(run_id)
    (step,) = [s for s in handle.steps() if s.kind is agentspan.StepKind.LLM]
    assert said == [f"The time is {datetime.fromtimestamp(step.started_at, UTC).isoformat()}."]
    assert after > datetime.fromtimestamp(step.started_at, UTC)  # the wall clock again
    handle.approve(by="frank")
    time.sleep(0.01)
    events = asyncio.run(send(runner, "s", message("refund 7")))  # the invocation goes on: desk/llm:0 replayed
    assert events[-1].content.parts[0].text == "refunded" and model.calls == 2
    assert said[1] == said[0] and said[2] > said[0]


def test_confirmations_of_two_parallel_branches_both_approved_both_run():
    """Each branch's answer goes in a message of its own (ADK resumes one branch per message;
    was: both answers in one, the second branch's approved tool never ran and the run completed)."""
    from google.adk.tools import FunctionTool

    ran: list[str] = []

    def cancel(order_id: str) -> dict:
        """Cancel an order."""
        ran.append(order_id)
        return {"cancelled": order_id}

    def branch(name: str, order_id: str) -> LlmAgent:
        return LlmAgent(name=name, model=ScriptedLlm(turns=[Call("cancel", {"order_id": order_id}), f"{name} done"]),
                        tools=[FunctionTool(cancel, require_confirmation=True)])

    handle = agentspan.start(ParallelAgent(name="both", sub_agents=[branch("ca", "1"), branch("cb", "2")]), "go")
    deadline = time.monotonic() + 20
    while len(handle.pending_approvals()) < 2:
        assert time.monotonic() < deadline, handle.status()
        time.sleep(0.05)
    for approval in handle.pending_approvals():
        handle.approve(approval.id)
    result = handle.result(timeout=20)
    assert sorted(ran) == ["1", "2"]  # was: ["1"]
    texts = [p.text for e in result.events if e.content for p in e.content.parts or [] if p.text]
    assert sorted(texts) == ["ca done", "cb done"]


def test_the_renamed_root_check_reads_only_adk_model_call_keys():
    """Another framework's model calls in the same run (a LangGraph node's ``agent:<id>/llm:0``, an
    openai-agents ``llm:0``) are not taken for a renamed root agent's."""
    from agentspan_adk._journal import _agent_model_key

    assert _agent_model_key("support/llm:0") and _agent_model_key("support/billing/llm:3")
    assert not any(_agent_model_key(k) for k in ("agent:abc/llm:0", "llm:0", "support/llm:0/call:0", "superseded:3/x"))
