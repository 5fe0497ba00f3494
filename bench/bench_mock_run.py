"""How long `agentspan.testing.mock_run` takes per test, for each framework.

Run with ``uv run python bench/bench_mock_run.py [--repeats 21] [--crash-repeats 5]``.

One mock run is a three-turn script (look an order up, refund it with a scripted approval, answer)
against a real agent of each framework whose model names a real provider: openai-agents
(``Agent`` + ``function_tool``), LangGraph (a ReAct graph: model node, ``ToolNode``) and Google
ADK (``LlmAgent``). The tools run for real (no stubs). Each mock run uses its own in-memory store,
as ``mock_run`` does by default. Reported: the median and p90 wall time of one whole ``mock_run``
call (the first run of each framework, which imports it, is left out), and the same framework's
run without Agentspan where one is cheap to make (openai-agents' ``Runner.run_sync`` with a
scripted ``Model``), for scale.

Then the same mock run as a crash test (``crash_after=2``: the child process is SIGKILLed after the
lookup, the test resumes the run), its child forked from the crash kit's fork server (the default)
against a fresh interpreter (``AGENTSPAN_CRASH_FORK=0``), alternated; the first forked run, which
starts the framework's fork server, is reported on its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import agentspan
from agentspan.testing import approve, call, expect, mock_run, reply

from bench_support import machine

SCRIPT = [call("lookup_order", order_id="42"), call("refund", order_id="42", amount=30.0), approve(),
          reply("Refunded $30.00 on order 42.")]
TARGET_MS = 100.0
"""What "in milliseconds" means here: a mock run fast enough for hundreds per test session."""


def lookup_order(order_id: str) -> str:
    """Look up an order's payment status."""
    return f"order {order_id}: paid $30.00"


@agentspan.tool(approval_required=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (a human approves every call)."""
    return f"refunded ${amount:.2f} on order {order_id}"


def openai_agent() -> Any:
    from agents import Agent, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    return Agent(name="support", instructions="Help the customer.", model="gpt-4o-mini",
                 tools=[function_tool(lookup_order), function_tool(refund)])


def langgraph_graph() -> Any:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.tools import tool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    class ProviderModel(GenericFakeChatModel):
        """Stands for a provider's chat model: `mock_run` must answer for it."""

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    tools = [tool(lookup_order), tool(refund)]
    model = ProviderModel(messages=iter(()))

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(name="support-graph")


def adk_agent() -> Any:
    from google.adk.agents import LlmAgent

    return LlmAgent(name="support", instruction="Help the customer.", model="gemini-2.5-flash",
                    tools=[lookup_order, refund])


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    fn()  # imports, first-use caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return times


def plain_openai(repeats: int) -> list[float]:
    from agents import Agent, Runner, function_tool

    from agentspan_openai_agents.testing import ScriptedModel, ToolCall

    def once() -> None:
        agent = Agent(name="support", instructions="Help the customer.", tools=[function_tool(lookup_order)],
                      model=ScriptedModel([ToolCall("lookup_order", {"order_id": "42"}), "Paid."]))
        Runner.run_sync(agent, "Is order 42 paid?")

    return timed(once, repeats)


def crash_times(builder: str, repeats: int) -> tuple[float, list[float], list[float]]:
    """A crash test of ``builder``'s target: the first forked run, then forked and fresh alternated (ms)."""
    def once(fork: str) -> float:
        os.environ["AGENTSPAN_CRASH_FORK"] = fork
        started = time.perf_counter()
        result = mock_run(f"bench_mock_run:{builder}", "Refund order 42", script=SCRIPT, crash_after=2)
        elapsed = (time.perf_counter() - started) * 1e3
        assert result.crashed_at is not None
        expect(result).completed().tool_order(["lookup_order", "refund"])
        return elapsed

    first = once("1")
    forked, fresh = [], []
    for _ in range(repeats):
        forked.append(once("1"))
        fresh.append(once("0"))
    os.environ.pop("AGENTSPAN_CRASH_FORK")
    return first, forked, fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--crash-repeats", type=int, default=5, help="crash tests per way of starting the child")
    args = parser.parse_args()
    print(machine())
    rows = []
    for name, build in (("openai-agents", openai_agent), ("LangGraph", langgraph_graph), ("Google ADK", adk_agent)):
        target = build()

        def once(target: Any = target) -> None:
            result = mock_run(target, "Refund order 42", script=SCRIPT)
            expect(result).completed().tool_order(["lookup_order", "refund"])

        times = sorted(timed(once, args.repeats))
        rows.append((name, statistics.median(times), times[int(0.9 * (len(times) - 1))]))
    plain = sorted(plain_openai(args.repeats))
    print("\n| framework | mock_run median | p90 | target | |\n|---|---:|---:|---:|:-:|")
    for name, median, p90 in rows:
        verdict = "✅" if median <= TARGET_MS else "❌"
        print(f"| {name} | {median:.1f} ms | {p90:.1f} ms | ≤ {TARGET_MS:.0f} ms | {verdict} |")
    print(f"\nFor scale: a plain openai-agents `Runner.run_sync` of two scripted turns: "
          f"{statistics.median(plain):.1f} ms.")
    if args.crash_repeats < 1:
        return
    print("\n| crash test (`crash_after=2`) | child forked (median) | first forked (starts the server) "
          "| fresh interpreter (median) |\n|---|---:|---:|---:|")
    for name, builder in (("openai-agents", "openai_agent"), ("LangGraph", "langgraph_graph"),
                          ("Google ADK", "adk_agent")):
        first, forked, fresh = crash_times(builder, args.crash_repeats)
        print(f"| {name} | {statistics.median(forked):.0f} ms | {first:.0f} ms | {statistics.median(fresh):.0f} ms |",
              flush=True)


if __name__ == "__main__":
    main()
