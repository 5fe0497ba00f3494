"""Graphs for the LangGraph run tests, importable by the test process and by child processes.

Live model calls and tool side effects are appended to files in AGENTSPAN_HOME, so they can be
counted across processes (a SIGKILLed child cannot report anything itself).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import interrupt

import agentspan

from crash_support import crash_if, lines, log

PROMPT = "Are orders 42 and 43 paid?"
USAGE = {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
SUMMARY = "Orders 42 and 43 are paid."


class SimulatedCrash(BaseException):
    """Stands in for a process dying, in-process: unwinds everything, records nothing."""


RAISE_AT: set[str] = set()
"""In-process crash points: a model call named here raises `SimulatedCrash` (once)."""


def wait_for_step(suffix: str, timeout: float = 30.0) -> None:
    """Waits until the current run's journal holds a completed step whose key ends with ``suffix``.

    Lines a crash up with a parallel sibling: the other tool call has been journaled.
    """
    step = agentspan.current_step()
    assert step is not None, "wait_for_step outside a durable step"
    store = agentspan.get_store()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s.key.endswith(suffix) and s.status is agentspan.StepStatus.COMPLETED
               for s in store.list_steps(step.run_id)):
            return
        time.sleep(0.005)
    raise TimeoutError(f"no completed step *{suffix} in run {step.run_id}")


# ---- the fake model --------------------------------------------------------------------------
class ScriptedChatModel(FakeMessagesListChatModel):
    """A fake chat model whose answer is chosen by the conversation, not by a call counter.

    Call ``n`` is the one whose input holds ``n`` AI messages: a process that resumes a run
    mid-conversation gets the right answer without having made the earlier calls itself. Every
    live call is logged to ``model-calls`` as ``"<name> <n>"``.
    """

    model_name: str = "scripted-model"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": "scripted", "ls_model_name": self.model_name, "ls_model_type": "chat"}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        index = sum(isinstance(m, AIMessage) for m in messages)
        log("model-calls", f"{self.model_name} {index}")
        point = f"model:{self.model_name}:{index}"
        crash_if(point)
        if point in RAISE_AT:
            RAISE_AT.discard(point)
            raise SimulatedCrash(point)
        return ChatResult(generations=[ChatGeneration(message=self.responses[index].model_copy(deep=True))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        await asyncio.sleep(0)
        return self._generate(messages, stop, **kwargs)


def ai(content: str = "", *calls: tuple[str, dict[str, Any], str]) -> AIMessage:
    """A scripted answer: text, or tool calls given as ``(name, args, call_id)``."""
    return AIMessage(content, tool_calls=[{"name": n, "args": a, "id": i} for n, a, i in calls],
                     usage_metadata=dict(USAGE))


def effects() -> list[str]:
    return lines("effects")


# ---- tools ---------------------------------------------------------------------------------
@tool
def lookup_order(order_id: str) -> str:
    """Look up an order's payment status."""
    if order_id == "43":
        if os.environ.get("CRASH_AT") == "lookup:43":
            wait_for_step("/call:call_a")  # the parallel lookup of 42 is journaled by now
        crash_if("lookup:43")
    step = agentspan.current_step()
    log("effects", f"lookup {order_id} {step.idempotency_key if step else '-'}")
    return f"order {order_id}: paid $30.00"


@tool
def notify(text: str) -> str:
    """Notify the team."""
    log("effects", f"notify {text}")
    return "sent"


@tool
@agentspan.tool(approval_required=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (a human approves every call)."""
    log("effects", f"refund {order_id} {amount}")
    return f"refunded ${amount:.2f} on order {order_id}"


# ---- graphs --------------------------------------------------------------------------------
def support_graph(name: str = "support"):
    """A ReAct agent (two parallel lookups, then an answer) and a summarize node that notifies the
    team and drafts then polishes a summary with a second model: three calls inside one node."""
    agent_model = ScriptedChatModel(model_name="agent", responses=[
        ai("", ("lookup_order", {"order_id": "42"}, "call_a"), ("lookup_order", {"order_id": "43"}, "call_b")),
        ai("Both orders are paid."),
    ]).bind_tools([lookup_order])
    writer = ScriptedChatModel(model_name="writer", responses=[ai("draft: paid"), ai(SUMMARY)])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [agent_model.invoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        return "tools" if state["messages"][-1].tool_calls else "summarize"

    def summarize(state: MessagesState) -> dict[str, Any]:
        notify.invoke({"text": "summary requested"})
        ask = HumanMessage("Draft a summary")
        draft = writer.invoke([ask])
        final = writer.invoke([ask, draft, HumanMessage("Polish it")])
        return {"messages": [final]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([lookup_order]))
    builder.add_node("summarize", summarize)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", "summarize"])
    builder.add_edge("tools", "agent")
    builder.add_edge("summarize", END)
    return builder.compile(name=name)


def review_graph(name: str = "review"):
    """A node that drafts with a model, then asks a human (``interrupt``) before refunding."""
    writer = ScriptedChatModel(model_name="writer", responses=[ai("Refund $30.00 on order 42?")])

    def review(state: MessagesState) -> dict[str, Any]:
        draft = writer.invoke(state["messages"])
        decision = interrupt({"action": "refund", "order_id": "42", "amount": 30.0, "note": draft.content})
        log("decisions", repr(decision))
        if decision["approved"]:
            log("effects", "refund 42 30.0")
            return {"messages": [draft, AIMessage(f"Refunded by {decision['by']}.")]}
        return {"messages": [draft, AIMessage(f"Not refunded: {decision['reason']}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    builder.add_edge("review", END)
    return builder.compile(name=name)


def refund_graph(name: str = "refunds"):
    """A ReAct agent calling a tool marked ``@agentspan.tool(approval_required=True)``."""
    model = ScriptedChatModel(model_name="agent", responses=[
        ai("", ("refund", {"order_id": "42", "amount": 30.0}, "call_r")),
        ai("Done."),
    ])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([refund]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", lambda s: "tools" if s["messages"][-1].tool_calls else END,
                                  ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(name=name)


def broken_graph(error: Exception, checkpointer: Any = None, name: str = "broken"):
    """One node that raises ``error``."""
    def broken(state: MessagesState) -> dict[str, Any]:
        raise error

    builder = StateGraph(MessagesState)
    builder.add_node("broken", broken)
    builder.add_edge(START, "broken")
    builder.add_edge("broken", END)
    return builder.compile(checkpointer=checkpointer, name=name)


def plain(messages: list[BaseMessage]) -> list[tuple[str, Any, Any]]:
    """A conversation without its random ids: what two equal runs have in common."""
    return [(m.type, m.content, [(c["name"], c["args"], c["id"]) for c in getattr(m, "tool_calls", [])]
             or getattr(m, "tool_call_id", None)) for m in messages]


def charging_graph(*, then: str | None = None, checkpointer: Any = None, name: str = "LangGraph"):
    """``agent → tools``: the model asks for ``charge`` (``on_in_doubt="fail"``), which dies after
    charging (a `SimulatedCrash`, as a kill would), then answers ``ok``. ``then`` (``"model"`` or
    ``"end"``): the tools' errors are handled by the ``ToolNode`` and the graph goes back to the
    model or ends; None: a plain ``ToolNode`` and no edge after it."""
    @tool
    @agentspan.tool(on_in_doubt="fail")
    def charge(amount: int) -> str:
        """Charge a card (must never run twice)."""
        log("effects", f"charge {amount}")
        raise SimulatedCrash("died after charging, before the result was journaled")

    model = ScriptedChatModel(model_name="m", responses=[ai("", ("charge", {"amount": 9}, "c1")), ai("ok")])
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_node("tools", ToolNode([charge], handle_tool_errors=then is not None))
    builder.add_edge(START, "agent")
    if then is None:
        builder.add_edge("agent", "tools")
    else:
        builder.add_conditional_edges("agent", tools_condition)
        builder.add_edge("tools", "agent" if then == "model" else END)
    return builder.compile(checkpointer=checkpointer, name=name)
