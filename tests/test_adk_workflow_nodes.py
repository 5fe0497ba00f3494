"""ADK 2 graph workflows through ``agentspan.run``: what a function node carries besides its
yielded output. ``@agentspan.tool`` options on a node's function (an approval bound to its
input, ``on_in_doubt``), a route or output set on the node's context (not yielded), binary
bytes in its events and state, ``agentspan.instrument`` beside ``agentspan.run``, and a durable
run started inside a node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adk_workflow_support as flows
import pytest
from google.adk.events import Event
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.adk.workflow import START, FunctionNode, Workflow
from google.genai import types

import agentspan
from agentspan.errors import ConfigurationError, InDoubtStepError
from agentspan.records import StepStatus

import adk_support
from crash_support import lines, wait_status
from journal_utils import crashed_copy


@pytest.fixture(autouse=True)
def _home(home: Path) -> Iterator[Path]:
    yield home
    agentspan.uninstrument("adk")


def keys(run_id: str) -> list[str]:
    return [s.key for s in agentspan.get(run_id).steps()]


def outputs(events: list[Event]) -> list[tuple[str | None, Any]]:
    return [(e.node_info.path if e.node_info else None, e.output) for e in events if e.output is not None]


def last_run() -> str:
    return agentspan.get_store().list_runs()[0].id


# ---- @agentspan.tool options on a node's function ----------------------------------------------
@agentspan.tool(approval_required=True)
def charge(node_input: Any) -> dict[str, Any]:
    adk_support.effect("charge", "30")
    return {"charged": 30}


def ship(node_input: Any) -> str:
    adk_support.effect("ship")
    return f"shipped after {node_input}"


def pay_flow() -> Workflow:
    return Workflow(name="pay", edges=[(START, FunctionNode(func=charge, name="charge"),
                                        FunctionNode(func=ship, name="ship"))])


def test_an_approval_required_node_waits_then_runs_once_approved():
    handle = agentspan.start(pay_flow(), "go")
    wait_status(handle, agentspan.RunStatus.WAITING)
    (pending,) = handle.pending_approvals()
    assert (pending.tool, pending.step_key) == ("charge", "pay@1/charge@1/node")
    assert pending.args["node"] == "charge"  # bound to the node's name and input
    assert adk_support.effects() == []  # nothing ran before the decision
    agentspan.get(handle.id).approve(by="alice")
    result = handle.result(timeout=20)
    assert outputs(result.events)[-1] == ("pay@1/ship@1", "shipped after {'charged': 30}")
    assert adk_support.effects() == ["charge 30", "ship"]
    assert keys(handle.id) == ["adk:session", "pay@1/charge@1/node", "pay@1/ship@1/node"]


def test_a_rejected_node_does_not_run_and_outputs_the_rejection():
    handle = agentspan.start(pay_flow(), "go")
    wait_status(handle, agentspan.RunStatus.WAITING)
    agentspan.get(handle.id).reject(by="bob", reason="too much")
    result = handle.result(timeout=20)
    charged = dict(outputs(result.events))["pay@1/charge@1"]
    assert "rejected by bob: too much" in charged["error"]  # as ADK's own rejected confirmation
    assert adk_support.effects() == ["ship"]  # charge never ran
    resumed = agentspan.resume(crashed_copy(handle.id, 2), pay_flow()).result(timeout=20)
    assert dict(outputs(resumed.events))["pay@1/charge@1"] == charged  # the rejection replayed


@agentspan.tool(on_in_doubt="fail")
def transfer(node_input: Any) -> str:
    adk_support.effect("transfer")
    return "sent"


def test_on_in_doubt_fail_on_a_node_fails_the_run_instead_of_running_it_again():
    def flow() -> Workflow:
        return Workflow(name="bank", edges=[(START, FunctionNode(func=transfer, name="transfer"))])

    agentspan.run(flow(), "go")
    first = last_run()
    store = agentspan.get_store()
    copy = crashed_copy(first, 1)  # the session; the transfer in flight at a crash:
    (step,) = [s for s in store.list_steps(first) if s.key == "bank@1/transfer@1/node"]
    store.start_step(step.model_copy(update={"run_id": copy, "status": StepStatus.STARTED}), epoch=0)
    with pytest.raises(InDoubtStepError, match="transfer"):
        agentspan.resume(copy, flow()).result(timeout=20)
    assert adk_support.effects() == ["transfer"]  # not run again


# ---- a route or output set on the context ------------------------------------------------------
def refund(node_input: Any) -> str:
    adk_support.effect("refund")
    return f"refunded {node_input}"


def other(node_input: Any) -> str:
    adk_support.effect("other")
    return f"other {node_input}"


def route_on_ctx(ctx: Any, node_input: Any) -> dict[str, int]:
    ctx.route = "refund"
    return {"order": 42}


def route_and_output_on_ctx(ctx: Any, node_input: Any) -> None:
    ctx.route = "refund"
    ctx.output = {"order": 42}


def route_only(ctx: Any, node_input: Any) -> None:
    ctx.route = "refund"


async def saves_artifact(ctx: Any, node_input: Any) -> dict[str, int]:
    await ctx.save_artifact("note.txt", types.Part(text="refund 42"))
    ctx.route = "refund"
    return {"order": 42}


@pytest.mark.parametrize("classify", [route_on_ctx, route_and_output_on_ctx, route_only, saves_artifact])
def test_a_route_and_output_set_on_the_context_are_replayed(classify):
    def flow() -> Workflow:
        return Workflow(name="flow", edges=[(START, FunctionNode(func=classify, name="classify"),
                                             {"refund": FunctionNode(func=refund, name="refund"),
                                              "other": FunctionNode(func=other, name="other")})])

    done = agentspan.run(flow(), "go")
    assert adk_support.effects() == ["refund"]
    crashed = crashed_copy(last_run(), 2)  # killed after classify completed
    resumed = agentspan.resume(crashed, flow()).result(timeout=20)
    assert outputs(resumed.events) == outputs(done.events)
    assert adk_support.effects() == ["refund", "refund"]  # the branch taken again, classify replayed
    assert keys(crashed)[-1] == "flow@1/refund@1/node"

    def artifacts(events: list[Event]) -> list[dict[str, int]]:
        return [e.actions.artifact_delta for e in events if e.actions.artifact_delta]

    assert artifacts(resumed.events) == artifacts(done.events)


# ---- bytes ----------------------------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\n\xff\x00"


def produce(node_input: Any) -> bytes:
    adk_support.effect("produce")
    return PNG


def consume(node_input: Any) -> str:
    return f"got {type(node_input).__name__}"


async def image(ctx: Any, node_input: Any) -> Any:
    adk_support.effect("image")
    ctx.state["thumb"] = b"\xff\xd8\xff"
    yield Event(content=types.Content(role="model", parts=[types.Part.from_bytes(data=PNG, mime_type="image/png")]))
    yield Event(output="ok")


def test_binary_bytes_in_a_nodes_events_and_state_are_journaled_and_replayed():
    def flow() -> Workflow:
        return Workflow(name="bin", edges=[(START, FunctionNode(func=produce, name="produce"),
                                            FunctionNode(func=image, name="image"),
                                            FunctionNode(func=consume, name="consume"))])

    done = agentspan.run(flow(), "go")
    assert dict(outputs(done.events))["bin@1/produce@1"] == PNG  # live: the very bytes
    first = last_run()
    assert agentspan.get(first).status() is agentspan.RunStatus.COMPLETED
    assert all(s.status is StepStatus.COMPLETED for s in agentspan.get(first).steps())
    resumed = agentspan.resume(crashed_copy(first, None), flow()).result(timeout=20)
    assert adk_support.effects() == ["produce", "image"]  # replayed, not run again
    # a replay gives the JSON form of an untyped output (base64 text), an image Part its bytes
    replayed = dict(outputs(resumed.events))
    assert isinstance(replayed["bin@1/produce@1"], str) and replayed["bin@1/consume@1"] == "got str"
    (blob,) = [p.inline_data for e in resumed.events if e.content for p in e.content.parts or [] if p.inline_data]
    assert blob.data == PNG
    assert isinstance(resumed.session.state["thumb"], str)  # (base64, as in the session's snapshot)


# ---- agentspan.instrument beside agentspan.run --------------------------------------------------
def test_instrument_does_not_refuse_the_runner_agentspan_run_builds():
    agentspan.instrument("adk")
    result = agentspan.run(flows.refund_flow(), flows.PROMPT)
    assert flows.final_output(result.events, "finish") == {"answer": "Order 42: refund $30.", "prepared": "42"}
    with pytest.raises(ConfigurationError, match="does not support ADK graph workflows"):
        Runner(node=flows.refund_flow(), session_service=InMemorySessionService())  # a user's: still refused


# ---- a durable run started inside a node ----------------------------------------------------
def inner_a(node_input: Any) -> str:
    adk_support.effect("inner")
    return "ia"


def inner() -> Workflow:
    return Workflow(name="inner", edges=[(START, FunctionNode(func=inner_a, name="ia"))])


async def starts_a_run(node_input: Any) -> Any:
    result = await agentspan.run_async(inner(), "go")
    return outputs(result.events)[-1][1]


def test_a_run_started_inside_a_node_journals_its_own_nodes():
    agentspan.run(Workflow(name="outer", edges=[(START, FunctionNode(func=starts_a_run, name="o"))]), "go")
    runs = {r.agent: r.id for r in agentspan.get_store().list_runs()}
    assert keys(runs["outer"]) == ["adk:session", "outer@1/o@1/node"]
    assert keys(runs["inner"]) == ["adk:session", "inner@1/ia@1/node"]
    (line,) = [line for line in lines("effects") if line.startswith("inner")]
    assert line.endswith(f"{runs['inner']}:inner@1/ia@1/node")  # its own step, not the outer node's
