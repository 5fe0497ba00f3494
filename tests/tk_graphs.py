"""LangGraph graphs for the testing-kit tests, importable by crash tests' child processes.

Their chat models stand for a provider's and fail if ever called: a mock run must replace every
one of them. Real tools record their side effects with `tk_effects.effect`.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import interrupt

import agentspan

from tk_effects import effect


class ProviderChatModel(BaseChatModel):
    """Stands for a provider's chat model (binds tools in OpenAI's format); calling it is a bug."""

    model_name: str = "gpt-4o-mini"

    @property
    def _llm_type(self) -> str:
        return "provider"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": "openai", "ls_model_name": self.model_name, "ls_model_type": "chat"}

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        raise AssertionError(f"the real model {self.model_name} was called")


@tool("lookup_order")
def lc_lookup_order(order_id: str) -> str:
    """Look up an order's payment status."""
    effect(f"lookup {order_id}")
    return f"order {order_id}: paid $30.00"


@tool("refund")
@agentspan.tool(approval_required=True)
def lc_refund(order_id: str, amount: float) -> str:
    """Refund an order (a human approves every call)."""
    effect(f"refund {order_id} {amount}")
    return f"refunded ${amount:.2f} on order {order_id}"


def build_support_graph() -> Any:
    """A ReAct agent over two tools, then a ``summarize`` node that calls a second model."""
    agent_model = ProviderChatModel(model_name="gpt-4o-mini").bind_tools([lc_lookup_order, lc_refund])
    writer = ProviderChatModel(model_name="gpt-4o")

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [agent_model.invoke(state["messages"])]}

    def summarize(state: MessagesState) -> dict[str, Any]:
        return {"messages": [writer.invoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        return "tools" if tools_condition(state) == "tools" else "summarize"

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([lc_lookup_order, lc_refund]))
    builder.add_node("summarize", summarize)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", "summarize"])
    builder.add_edge("tools", "agent")
    builder.add_edge("summarize", END)
    return builder.compile(name="support-graph")


support_graph = build_support_graph()


def build_review_graph() -> Any:
    """A node that drafts with a model, then asks a human (``interrupt``) before refunding."""
    writer = ProviderChatModel(model_name="gpt-4o")

    def review(state: MessagesState) -> dict[str, Any]:
        draft = writer.invoke(state["messages"])
        decision = interrupt({"action": "refund", "order_id": "42", "note": draft.content})
        if decision["approved"]:
            effect("refund 42")
            return {"messages": [draft, AIMessage("Refunded.")]}
        return {"messages": [draft, AIMessage(f"Not refunded: {decision['reason']}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    builder.add_edge("review", END)
    return builder.compile(name="review-graph")


review_graph = build_review_graph()


def build_async_graph() -> Any:
    """An async node calling an async model and an async tool (``ainvoke`` paths)."""
    model = ProviderChatModel(model_name="gpt-4o-mini").bind_tools([lc_lookup_order])

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([lc_lookup_order]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(name="async-graph")
