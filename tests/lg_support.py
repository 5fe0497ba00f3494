"""Graphs and fake models for the LangGraph tests and benchmarks (no network, no real LLM).

- `ScriptedChatModel`: a chat model that answers from a list of scripted `AIMessage`s (tool calls
  included) and supports ``bind_tools``.
- `counter_graph`: a node looping on a counter with a short message list (the benchmark graph).
- `approval_graph`: ``draft`` -> ``review`` (``interrupt()``) -> ``publish``.
- `agent_graph`: model -> tools -> model, with a `ScriptedChatModel` and a ``ToolNode``.
- `fanout_graph`: ``Send`` one task per item; a chosen item can fail once.
- `parent_graph`: a parent graph calling an interrupting subgraph as a node.
- `delta_graph`: a loop appending to a ``DeltaChannel`` (beta), snapshotted every 3rd update.

Side effects are counted in `Effects` so tests can tell which nodes ran again on resume.
"""

from __future__ import annotations

import operator
import time
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Send, interrupt


class Effects(Counter[str]):
    """How many times each side effect ran (a `collections.Counter`)."""


class ScriptedChatModel(FakeMessagesListChatModel):
    """`FakeMessagesListChatModel` that accepts ``bind_tools`` (it ignores the tools)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


def tool_call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    """An `AIMessage` asking for one tool call, with token usage as real providers report it."""
    return AIMessage(
        content="",
        tool_calls=[{"name": name, "args": args, "id": call_id}],
        usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
    )


# ---- counter: the benchmark graph ---------------------------------------------------------------
class CounterState(TypedDict):
    count: int
    messages: Annotated[list[AnyMessage], add_messages]


def counter_graph(steps: int, *, keep_messages: int = 4, checkpointer: Any = None) -> CompiledStateGraph:
    """One node that runs ``steps`` times (one super-step each), incrementing ``count`` and keeping
    the last ``keep_messages`` messages (a small, changing message list)."""

    def tick(state: CounterState) -> dict[str, Any]:
        count = state["count"] + 1
        return {"count": count, "messages": [AIMessage(content=f"tick {count}", id=f"m{count % keep_messages}")]}

    builder = StateGraph(CounterState)
    builder.add_node("tick", tick)
    builder.add_edge(START, "tick")
    builder.add_conditional_edges("tick", lambda s: "tick" if s["count"] < steps else END, ["tick", END])
    return builder.compile(checkpointer=checkpointer)


def counter_input() -> dict[str, Any]:
    return {"count": 0, "messages": [HumanMessage(content="count", id="h0")]}


# ---- approval: interrupt + Command(resume=...) ----------------------------------------------------
class DraftState(TypedDict):
    topic: str
    draft: str
    verdict: str
    log: Annotated[list[str], operator.add]


def approval_graph(effects: Effects, *, checkpointer: Any = None) -> CompiledStateGraph:
    """``draft`` writes a draft; ``review`` asks a human (``interrupt``); ``publish`` runs when
    approved. ``review`` counts its runs before and after the interrupt."""

    def draft(state: DraftState) -> dict[str, Any]:
        effects["draft"] += 1
        return {"draft": f"About {state['topic']}", "log": ["draft"]}

    def review(state: DraftState) -> dict[str, Any]:
        effects["review:before"] += 1
        answer = interrupt({"question": "Publish this?", "draft": state["draft"]})
        effects["review:after"] += 1
        return {"verdict": str(answer), "log": [f"review:{answer}"]}

    def publish(state: DraftState) -> dict[str, Any]:
        effects["publish"] += 1
        return {"log": ["publish"]}

    builder = StateGraph(DraftState)
    builder.add_node("draft", draft)
    builder.add_node("review", review)
    builder.add_node("publish", publish)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_conditional_edges("review", lambda s: "publish" if s["verdict"] == "yes" else END, ["publish", END])
    builder.add_edge("publish", END)
    return builder.compile(checkpointer=checkpointer)


# ---- agent: model -> tools -> model ---------------------------------------------------------------
class AgentState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def agent_graph(effects: Effects, responses: list[BaseMessage], *, checkpointer: Any = None) -> CompiledStateGraph:
    """A tool-calling agent: ``model`` answers from ``responses`` (one per model call); tool calls
    go to a ``ToolNode`` with the ``add`` tool, whose answers go back to the model."""

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        effects["add"] += 1
        return a + b

    model = ScriptedChatModel(responses=responses).bind_tools([add])

    def call_model(state: AgentState) -> dict[str, Any]:
        effects["model"] += 1
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: AgentState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    builder = StateGraph(AgentState)
    builder.add_node("model", call_model)
    builder.add_node("tools", ToolNode([add]))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", route, ["tools", END])
    builder.add_edge("tools", "model")
    return builder.compile(checkpointer=checkpointer)


# ---- fan-out: Send --------------------------------------------------------------------------------
class FanoutState(TypedDict):
    items: list[str]
    results: Annotated[list[str], operator.add]


def fanout_graph(effects: Effects, *, fail_once: str | None = None, checkpointer: Any = None) -> CompiledStateGraph:
    """``Send``s one ``work`` task per item (all in one super-step); ``work`` on ``fail_once``
    raises the first time it runs, so the others' writes are pending when the step fails."""

    finished: set[str] = set()  # branches that returned (the failing one waits for them)
    sent: list[int] = [0]  # branches of the current fan-out

    def work(payload: dict[str, str]) -> dict[str, Any]:
        item = payload["item"]
        effects[f"work:{item}"] += 1
        if item == fail_once and effects[f"work:{item}"] == 1:
            # Fail only once the other branches are done: a branch still running when one fails
            # is cancelled by LangGraph and has no writes (on a loaded machine it may not have
            # started yet).
            deadline = time.monotonic() + 10
            while len(finished) < sent[0] - 1:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            time.sleep(0.05)  # let LangGraph record their writes
            raise RuntimeError(f"work on {item} failed")
        finished.add(item)
        return {"results": [item.upper()]}

    def summarize(state: FanoutState) -> dict[str, Any]:
        effects["summarize"] += 1
        return {"results": [f"total:{len(state['results'])}"]}

    builder = StateGraph(FanoutState)
    builder.add_node("work", work)
    builder.add_node("summarize", summarize)
    def fan_out(state: FanoutState) -> list[Send]:
        sent[0] = len(state["items"])
        return [Send("work", {"item": i}) for i in state["items"]]

    builder.add_conditional_edges(START, fan_out, ["work"])
    builder.add_edge("work", "summarize")
    builder.add_edge("summarize", END)
    return builder.compile(checkpointer=checkpointer)


# ---- subgraph --------------------------------------------------------------------------------------
class AskState(TypedDict):
    question: str
    answer: str


class ParentState(AskState):
    log: Annotated[list[str], operator.add]


def parent_graph(effects: Effects, *, checkpointer: Any = None) -> CompiledStateGraph:
    """``prepare`` -> ``ask`` (a compiled subgraph: ``think`` -> ``confirm``, which interrupts)
    -> ``finish``. The subgraph's checkpoints live in a child namespace of the thread."""

    def think(state: AskState) -> dict[str, Any]:
        effects["think"] += 1
        return {"answer": f"maybe {state['question']}"}

    def confirm(state: AskState) -> dict[str, Any]:
        effects["confirm"] += 1
        return {"answer": str(interrupt({"proposed": state["answer"]}))}

    sub = StateGraph(AskState)
    sub.add_node("think", think)
    sub.add_node("confirm", confirm)
    sub.add_edge(START, "think")
    sub.add_edge("think", "confirm")
    sub.add_edge("confirm", END)

    def prepare(state: ParentState) -> dict[str, Any]:
        effects["prepare"] += 1
        return {"log": ["prepare"]}

    def finish(state: ParentState) -> dict[str, Any]:
        effects["finish"] += 1
        return {"log": [f"finish:{state['answer']}"]}

    builder = StateGraph(ParentState)
    builder.add_node("prepare", prepare)
    builder.add_node("ask", sub.compile())
    builder.add_node("finish", finish)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "ask")
    builder.add_edge("ask", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=checkpointer)


# ---- DeltaChannel (beta): state rebuilt from ancestors' writes ----------------------------------
def _extend(state: list[int] | None, writes: Sequence[list[int]]) -> list[int]:
    return [*(state or []), *(x for write in writes for x in write)]


class DeltaState(TypedDict):
    n: int
    items: Annotated[list[int], DeltaChannel(_extend, snapshot_frequency=3)]


def delta_graph(until: int, *, checkpointer: Any = None) -> CompiledStateGraph:
    """A node looping until ``n == until``, appending ``n`` to ``items``: a `DeltaChannel` whose
    checkpoints hold a full snapshot only every 3rd update (the others need their ancestors)."""

    def tick(state: DeltaState) -> dict[str, Any]:
        return {"n": state["n"] + 1, "items": [state["n"]]}

    builder = StateGraph(DeltaState)
    builder.add_node("tick", tick)
    builder.add_edge(START, "tick")
    builder.add_conditional_edges("tick", lambda s: "tick" if s["n"] < until else END, ["tick", END])
    return builder.compile(checkpointer=checkpointer)
