"""ADK 2 graph workflows for the durable-workflow tests, importable by the test process and by
child processes (`adk_workflow_child`).

The refund workflow: START → ``prepare`` (a FunctionNode with a side effect and a state change)
→ ``triage`` (an LlmAgent: a tool call, then its answer) → ``finish`` (a FunctionNode). Side
effects and live model calls go to files in AGENTSPAN_HOME (`adk_support.effect`, `adk_support.model`),
counted across processes.
"""

from __future__ import annotations

from typing import Any

from google.adk.agents import LlmAgent
from google.adk.agents.context import Context
from google.adk.workflow import START, FunctionNode, JoinNode, Workflow

from agentspan_adk.testing import Call

from adk_support import effect, model
from crash_support import crash_if

PROMPT = "Refund order 42."


def prepare(ctx: Context, node_input: Any) -> dict[str, Any]:
    """A's side effect (logged once per live execution), then its output and a state change."""
    effect("prepare", "42")
    ctx.state["prepared"] = "42"
    crash_if("prepare:after")
    return {"order_id": "42"}


def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up."""
    effect("lookup", order_id)
    return {"order_id": order_id, "paid": 30.0}


def finish(ctx: Context, node_input: Any) -> dict[str, Any]:
    effect("finish", "42")
    return {"answer": node_input, "prepared": ctx.state.get("prepared")}


def refund_flow() -> Workflow:
    triage = LlmAgent(name="triage", instruction="Look the order up, then answer.", tools=[lookup_order],
                      model=model("triage", [Call("lookup_order", {"order_id": "42"}), "Order 42: refund $30."]))
    return Workflow(name="refunds", edges=[(START, FunctionNode(func=prepare, name="prepare"), triage,
                                            FunctionNode(func=finish, name="finish"))])


def quote(node_input: Any) -> dict[str, Any]:
    effect("quote", "42")
    return {"refund": 30.0}


def notify(node_input: Any) -> str:
    effect("notify", "42")
    return "customer told"


def report(node_input: dict[str, Any]) -> dict[str, Any]:
    effect("report", "42")
    return {"joined": dict(sorted(node_input.items()))}


def fan_in_flow(*, reordered: bool = False) -> Workflow:
    """START → prepare → (quote, notify, writer) in parallel → join → report."""
    writer = LlmAgent(name="writer", model=model("writer", ["Refund on its way."]))
    branches = (FunctionNode(func=notify, name="notify"), FunctionNode(func=quote, name="quote"), writer)
    if reordered:
        branches = branches[::-1]
    join = JoinNode(name="join")
    return Workflow(name="fanin", edges=[
        (START, FunctionNode(func=prepare, name="prepare"), branches),
        *((b, join) for b in branches),
        (join, FunctionNode(func=report, name="report"))])


def final_output(events: list[Any], node: str) -> Any:
    """The output of the last event of node ``node`` (by its path's last name)."""
    for event in reversed(events):
        path = event.node_info.path if event.node_info is not None else ""
        if event.output is not None and path.rpartition("/")[2].partition("@")[0] == node:
            return event.output
    return None
