"""A user-built Runner whose invocation goes on past an ADK confirmation's answer and then waits on an
``@agentspan.tool(approval_required=True)`` call: once approved, the application sends the same
answer again (as the README says), and the invocation goes on from the journal.

Was: the durable session kept the interrupted attempt's events after the answer (the model event
that asked for the approved tool among them), so each resend counted one model call more, called
the model live again under a new key, and opened a new approval: the approved tool never ran and
the run waited for ever.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.events import Event
from google.adk.events._rewind_events import _apply_rewinds
from google.adk.runners import Runner
from google.adk.tools import FunctionTool, ToolContext
from google.genai import types

import agentspan
from agentspan.errors import ApprovalPending
from agentspan_adk import AgentspanPlugin
from agentspan_adk.testing import Call

import adk_support
from crash_support import calls_of

APP, USER, SESSION = "shop", "u", "s"
REQUEST = "adk_request_confirmation"


@pytest.fixture(autouse=True)
def _home(home):
    yield home



@agentspan.tool(approval_required=True)
def notify_refund(order_id: str, tool_context: ToolContext) -> str:
    """Tell the customer about the refund (an Agentspan approval first)."""
    adk_support.effect("notify", order_id)
    tool_context.state["notified"] = order_id
    return f"told the customer about {order_id}"


def orders_runner(kind: str, home: Path, turns: list[Any]) -> Runner:
    """``orders``: a confirmed ``cancel_order``, then Agentspan-approved tools, on ``kind``'s session service."""
    agent = LlmAgent(name="orders", model=adk_support.model("orders", turns),
                     tools=[FunctionTool(adk_support.cancel_order, require_confirmation=True), adk_support.refund,
                            notify_refund])
    return Runner(app=App(name=APP, root_agent=agent, plugins=[AgentspanPlugin()]),
                  session_service=adk_support.session_service(kind, home))


async def converse(runner: Runner) -> tuple[list[Event], list[str]]:
    """Sends the user's message, answers the confirmation, and sends the answer again after each
    approval (approved in Agentspan) until the invocation ends; its events and the approved keys."""
    await runner.session_service.create_session(app_name=APP, user_id=USER, session_id=SESSION)
    message = types.Content(role="user", parts=[types.Part(text="cancel and refund 42")])
    approved: list[str] = []
    for _ in range(6):
        try:
            events = [e async for e in runner.run_async(user_id=USER, session_id=SESSION, new_message=message)]
        except ApprovalPending as pending:
            handle = agentspan.get(pending.run_id)
            for approval in handle.pending_approvals():
                approved.append(approval.step_key)
                handle.approve(approval.id, by="ops")
            continue  # the same message again, once decided
        session = await runner.session_service.get_session(app_name=APP, user_id=USER, session_id=SESSION)
        assert session is not None
        requests = [c for e in session.events for c in e.get_function_calls() if c.name == REQUEST]
        answered = {r.id for e in session.events for r in e.get_function_responses() if r.name == REQUEST}
        todo = [c for c in requests if c.id not in answered]
        if not todo:
            return events, approved
        message = types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            id=c.id, name=REQUEST, response={"confirmed": True})) for c in todo])
    raise AssertionError(f"the invocation never ended: model calls {calls_of('orders')}, approved {approved}")


def final_text(events: list[Event]) -> str | None:
    return next((p.text for e in reversed(events) if e.is_final_response() and e.content
                 for p in e.content.parts or [] if p.text), None)


@pytest.mark.parametrize("kind", ["sqlite", "database", "memory"])
def test_an_approval_after_a_confirmation_goes_on_when_the_answer_is_sent_again(kind, home):
    runner = orders_runner(kind, home, [Call("cancel_order", {"order_id": "42"}),
                                        Call("refund", {"order_id": "42", "amount": 30.0}), "Done."])
    events, approved = asyncio.run(converse(runner))
    assert final_text(events) == "Done."
    assert calls_of("orders") == [0, 1, 2]  # the call that asked for the refund was replayed, not made again
    assert adk_support.effects() == ["cancel 42", "refund 42 30.0"]
    assert approved == ["orders/llm:1/call:0"]
    (run,) = agentspan.get_store().list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED and run.output["text"] == "Done."
    steps = agentspan.get(run.id).steps()
    assert [s.key for s in steps] == ["orders/llm:0", "orders/llm:0/call:0/approval", "orders/llm:0/call:0/confirmed",
                                      "orders/llm:1", "orders/llm:1/call:0", "orders/llm:2"]
    assert all(s.status is agentspan.StepStatus.COMPLETED for s in steps)
    assert [s.kind.value for s in steps].count("approval") == 1  # the refund's approval is its tool step's
    assert len(agentspan.get_store().list_approvals(run_id=run.id)) == 2  # the confirmation's and the refund's
    session = asyncio.run(runner.session_service.get_session(app_name=APP, user_id=USER, session_id=SESSION))
    live = _apply_rewinds(session.events)
    # the conversation the session shows is the one an uninterrupted invocation leaves: each call once
    calls = [c.name for e in live for c in e.get_function_calls()]
    assert calls == ["cancel_order", REQUEST, "refund"]
    # (ADK's placeholder result of the call waiting for its confirmation, the answer, the results)
    assert [r.name for e in live for r in e.get_function_responses()] == [
        "cancel_order", REQUEST, "cancel_order", "refund"]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_two_approvals_after_a_confirmation_each_go_on_when_the_answer_is_sent_again(kind, home):
    runner = orders_runner(kind, home, [Call("cancel_order", {"order_id": "42"}),
                                        Call("refund", {"order_id": "42", "amount": 30.0}),
                                        Call("notify_refund", {"order_id": "42"}), "Done."])
    events, approved = asyncio.run(converse(runner))
    assert final_text(events) == "Done."
    assert calls_of("orders") == [0, 1, 2, 3]
    assert adk_support.effects() == ["cancel 42", "refund 42 30.0", "notify 42"]
    assert approved == ["orders/llm:1/call:0", "orders/llm:2/call:0"]
    (run,) = agentspan.get_store().list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED and run.output["text"] == "Done."
    session = asyncio.run(runner.session_service.get_session(app_name=APP, user_id=USER, session_id=SESSION))
    assert session.state["notified"] == "42"  # the state a tool set after the rewound point stays set
    assert [c.name for e in _apply_rewinds(session.events) for c in e.get_function_calls()] == [
        "cancel_order", REQUEST, "refund", "notify_refund"]
