"""Agents for the openai-agents tests, importable by the test process and by child processes.

Side effects and live model calls are appended to files in AGENTSPAN_HOME so they can be counted
across processes (a SIGKILLed child cannot report anything itself).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents import Agent, RunHooks, SQLiteSession, function_tool, set_tracing_disabled

import agentspan
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from crash_support import calls_of, crash_if, lines, log, run_child, stop_if

set_tracing_disabled(True)

PROMPT = "My order 42 arrived damaged. Refund it please."
FINAL = "Refunded $30.00 on order 42."


@function_tool
@agentspan.tool(on_in_doubt=os.environ.get("LOOKUP_IN_DOUBT", "retry"))  # type: ignore[arg-type]
def lookup_order(order_id: str) -> str:
    """Look up an order."""
    crash_if("lookup:before")
    step = agentspan.current_step()
    log("effects", f"lookup {order_id} {step.idempotency_key if step else '-'}")
    crash_if("lookup:after")
    return f"order {order_id}: paid $30.00"


@function_tool
@agentspan.tool(approval_required=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (approval required)."""
    log("effects", f"refund {order_id} {amount}")
    return f"refunded ${amount:.2f} on order {order_id}"


class CrashHooks(RunHooks):
    """Kills the process between steps: after a tool call was journaled, before the next model call
    (``between:<n>``); or stops it (SIGSTOP, `stop_if`) just before a model call (``llm:<n>``) or
    a tool call (``tool:<name>``)."""

    async def on_llm_start(self, context, agent, system_prompt, input_items) -> None:
        outputs = sum(1 for i in input_items if isinstance(i, dict) and i.get("type") == "function_call_output")
        crash_if(f"between:{outputs}")
        stop_if(f"llm:{outputs}")

    async def on_tool_start(self, context, agent, tool) -> None:
        stop_if(f"tool:{tool.name}")
        if os.environ.get("EXIT_AT") == f"tool:{tool.name}":  # the main thread ends; the run goes on
            EXIT.set()
            import concurrent.futures.thread as executors

            deadline = time.monotonic() + 10
            while not executors._shutdown and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.001)


EXIT = threading.Event()
"""Set (``EXIT_AT``) when the child's main thread is to end while its run goes on."""


def model_for(turns: list, name: str = "m") -> ScriptedModel:
    def on_call(index: int) -> None:
        log("model-calls", f"{name} {index}")
        crash_if(f"model:{index}")

    return ScriptedModel(turns, name=name, on_call=on_call)


def timed_instructions(context: Any, agent: Agent) -> str:
    """Instructions that say what time it is, read with `agentspan.now` (the same on resume)."""
    return f"Help the customer. The time is {agentspan.now().isoformat()}."


def support_agent(approval: bool = False, clock: bool = False) -> Agent:
    """lookup_order → (refund, approval-gated) → final text; ``clock``: `timed_instructions`."""
    turns: list = [ToolCall("lookup_order", {"order_id": "42"})]
    tools = [lookup_order]
    if approval:
        turns.append(ToolCall("refund", {"order_id": "42", "amount": 30.0}))
        tools.append(refund)
    turns.append(FINAL)
    instructions = timed_instructions if clock else "Help the customer."
    return Agent(name="support", instructions=instructions, tools=tools, model=model_for(turns))


def describe_event(event: Any) -> str:
    """One stream event as a short line: its type and what it carries (a delta, an item's call id)."""
    data = getattr(event, "data", None)
    if event.type == "raw_response_event":
        return f"raw {data.type} {getattr(data, 'delta', '')}".rstrip()
    if event.type == "run_item_stream_event":
        raw = event.item.raw_item
        call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
        return f"item {event.name} {call_id or ''}".rstrip()
    if event.type == "agent_updated_stream_event":
        return f"agent {event.new_agent.name}"
    return event.type


def __getattr__(name: str) -> Any:
    """``oa_support:AGENT`` for ``agentspan worker``: the support agent, built on first access."""
    if name == "AGENT":
        agent = support_agent()
        globals()["AGENT"] = agent
        return agent
    raise AttributeError(name)


class CrashingSession(SQLiteSession):
    """A `SQLiteSession` with a crash point right after its n-th write in this process
    (``session:added:<n>``): the turn is in the session, its journal entry not yet written."""

    writes = 0

    async def add_items(self, items: list[Any]) -> None:
        await super().add_items(items)
        CrashingSession.writes += 1
        crash_if(f"session:added:{CrashingSession.writes}")


def crash_then_resume(env: dict[str, str], crash_at: str, calls_after: list[int], effects: int) -> None:
    """Runs the support agent in a child SIGKILLed at ``crash_at``, resumes it in another, and
    checks the model calls made (``calls_after``), the lookups run (``effects``) and the journal."""
    from agentspan.records import new_id

    child = str(Path(__file__).parent / "oa_child.py")
    run_id = new_id()
    assert run_child(child, env, "start", run_id, crash_at=crash_at).returncode == -9
    resumed = run_child(child, env, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"FINAL: {FINAL}" in resumed.stdout
    assert sorted(calls_of("m")) == calls_after and calls_of("m").count(0) == 1
    assert len([line for line in lines("effects") if line.startswith("lookup")]) == effects
    handle = agentspan.get(run_id)
    assert handle.status() is agentspan.RunStatus.COMPLETED
    assert [s.status for s in handle.steps()] == [agentspan.StepStatus.COMPLETED] * 3


def run_watched_adds(watch: Callable[[], None]) -> str:
    """``agentspan.run`` of a calculator (model, add, model, add, model) that calls ``watch`` at
    each of its five calls as it is made live; returns the final output."""

    @function_tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        watch()
        return a + b

    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4}), "7"],
                          on_call=lambda index: watch())
    return agentspan.run(Agent(name="calc", tools=[add], model=model), "add").final_output
