"""A user-built Runner whose ``ParallelAgent`` branch goes on past an ADK confirmation's answer and
then waits on an ``@agentspan.tool(approval_required=True)`` call: once approved, the application
sends the same answer again (as the README says), and only that branch goes on, from the journal.

Was: the plugin passed ADK an empty message instead of the answer acted on before, and ADK, with
no function response to route it to the branch's agent, ran the root agent: every branch again,
the finished ones making new model calls (scripted models ran out of turns: the run failed).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.adk.agents import BaseAgent, LlmAgent, ParallelAgent, SequentialAgent
from google.adk.apps import App
from google.adk.events import Event
from google.adk.events._rewind_events import _apply_rewinds
from google.adk.runners import Runner
from google.adk.tools import FunctionTool
from google.genai import types

import agentspan
from agentspan.errors import ApprovalPending
from agentspan_adk import AgentspanPlugin
from agentspan_adk.testing import Call

import adk_support
from crash_support import calls_of

APP, USER, SESSION = "shop", "u", "s"
REQUEST = "adk_request_confirmation"

pytestmark = pytest.mark.filterwarnings("ignore:(Parallel|Sequential)Agent is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _home(home):
    yield home



def fan_runner(kind: str, home: Path, *, root: str = "parallel", b_confirms: bool = False) -> Runner:
    """``fan``: branch ``a`` (a confirmed ``cancel_order``, then an Agentspan-approved ``refund``)
    beside branch ``b`` (a ``lookup_order``, or a confirmed ``cancel_order`` when ``b_confirms``);
    under a ``SequentialAgent`` when ``root`` is ``"sequential"``."""
    a = LlmAgent(name="a", model=adk_support.model("a", [Call("cancel_order", {"order_id": "42"}),
                                                       Call("refund", {"order_id": "42", "amount": 30.0}), "A done"]),
                 tools=[FunctionTool(adk_support.cancel_order, require_confirmation=True), adk_support.refund])
    b_call = Call("cancel_order", {"order_id": "7"}) if b_confirms else Call("lookup_order", {"order_id": "7"})
    b = LlmAgent(name="b", model=adk_support.model("b", [b_call, "B done"]),
                 tools=[FunctionTool(adk_support.cancel_order, require_confirmation=True) if b_confirms
                        else adk_support.lookup_order])
    fan = ParallelAgent(name="fan", sub_agents=[a, b])
    agent: BaseAgent = fan if root == "parallel" else SequentialAgent(name="seq", sub_agents=[fan])
    return Runner(app=App(name=APP, root_agent=agent, plugins=[AgentspanPlugin()]),
                  session_service=adk_support.session_service(kind, home))


async def converse(runner: Runner, order: tuple[str, ...] = ("a", "b")) -> tuple[list[Event], list[str]]:
    """Sends the user's message, then answers the open confirmations one message per branch (ADK
    resumes one branch per message), in ``order`` of their agents, sending an answer again after
    each approval of an ``approval_required`` call (approved in Agentspan), until no confirmation
    is open; every event the app got and the approved keys."""
    await runner.session_service.create_session(app_name=APP, user_id=USER, session_id=SESSION)
    message = types.Content(role="user", parts=[types.Part(text="go")])
    seen: list[Event] = []
    approved: list[str] = []
    for _ in range(8):
        try:
            async for event in runner.run_async(user_id=USER, session_id=SESSION, new_message=message):
                seen.append(event)
        except ApprovalPending as pending:
            handle = agentspan.get(pending.run_id)
            for approval in handle.pending_approvals():
                if approval.step_key.endswith("/approval"):
                    continue  # an open ADK confirmation's: the app answers it itself
                approved.append(approval.step_key)
                handle.approve(approval.id, by="ops")
            continue  # the same answer again, once decided
        session = await runner.session_service.get_session(app_name=APP, user_id=USER, session_id=SESSION)
        assert session is not None
        live = _apply_rewinds(session.events)
        answered = {r.id for e in live for r in e.get_function_responses() if r.name == REQUEST}
        todo = {e.author: c for e in live for c in e.get_function_calls() if c.name == REQUEST and c.id not in answered}
        if not todo:
            return seen, approved
        request = todo[next(author for author in order if author in todo)]
        message = types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            id=request.id, name=REQUEST, response={"confirmed": True}))])
    raise AssertionError(f"the invocation never ended: model calls a {calls_of('a')}, b {calls_of('b')}")


def final_texts(events: list[Event]) -> dict[str, list[str]]:
    """Each agent's final texts among ``events``."""
    texts: dict[str, list[str]] = {}
    for event in events:
        if event.author != "user" and event.is_final_response() and event.content:
            texts.setdefault(event.author, []).extend(p.text for p in event.content.parts or [] if p.text)
    return texts


def session_events(runner: Runner) -> list[Event]:
    session = asyncio.run(runner.session_service.get_session(app_name=APP, user_id=USER, session_id=SESSION))
    assert session is not None
    return _apply_rewinds(session.events)


@pytest.mark.parametrize("root", ["parallel", "sequential"])
@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_an_approval_after_a_confirmation_in_a_parallel_branch_goes_on_without_the_finished_branch(kind, root, home):
    runner = fan_runner(kind, home, root=root)
    events, approved = asyncio.run(converse(runner))
    prefix = "seq/fan" if root == "sequential" else "fan"
    assert approved == [f"{prefix}/a/llm:1/call:0"]
    assert calls_of("a") == [0, 1, 2]  # the call that asked for the refund was replayed, not made again
    assert calls_of("b") == [0, 1]  # was: [0, 1, 2] (the finished branch ran again; its model had no turn 2)
    assert sorted(adk_support.effects()) == ["cancel 42", "lookup 7", "refund 42 30.0"]
    assert final_texts(events) == {"a": ["A done"], "b": ["B done"]}
    assert final_texts(session_events(runner)) == {"a": ["A done"], "b": ["B done"]}
    (run,) = agentspan.get_store().list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED and run.output["text"] == "A done"
    steps = agentspan.get(run.id).steps()
    assert sorted(s.key for s in steps) == sorted(f"{prefix}/{key}" for key in [
        "a/llm:0", "a/llm:0/call:0/approval", "a/llm:0/call:0/confirmed", "a/llm:1", "a/llm:1/call:0", "a/llm:2",
        "b/llm:0", "b/llm:0/call:0", "b/llm:1"])
    assert all(s.status is agentspan.StepStatus.COMPLETED for s in steps)


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_confirmations_of_two_branches_then_an_approval_each_branch_runs_once(kind, order, home):
    runner = fan_runner(kind, home, b_confirms=True)
    events, approved = asyncio.run(converse(runner, order))
    assert approved == ["fan/a/llm:1/call:0"]
    assert calls_of("a") == [0, 1, 2]
    assert calls_of("b") == [0, 1]
    assert sorted(adk_support.effects()) == ["cancel 42", "cancel 7", "refund 42 30.0"]
    assert final_texts(events) == {"a": ["A done"], "b": ["B done"]}
    assert final_texts(session_events(runner)) == {"a": ["A done"], "b": ["B done"]}
    (run,) = agentspan.get_store().list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED
    assert run.output["text"] == ("B done" if order == ("a", "b") else "A done")  # the branch answered last
