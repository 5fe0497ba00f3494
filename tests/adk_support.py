"""Agents for the Google ADK tests, importable by the test process and by child processes.

Side effects and live model calls are appended to files in AGENTSPAN_HOME so they can be counted
across processes (a SIGKILLed child cannot report anything itself).

The support scenario: ``support`` looks the order up (a tool with a side effect), then transfers
to ``billing``, which makes two function calls in one response (``quote_refund`` and
``notify_customer``, run in parallel) and answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.runners import Runner
from google.adk.sessions import BaseSessionService, DatabaseSessionService, InMemorySessionService
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.adk.tools import FunctionTool, ToolContext
from google.genai import types

import agentspan
from agentspan_adk import AgentspanPlugin
from agentspan_adk.testing import Call, ScriptedLlm

from crash_support import crash_if, home, lines, log

PROMPT = "Order 42 arrived damaged. Refund it please."
FINAL = "Refunded $30.00 on order 42; the customer was told."
APP = "shop"
USER = "alice"


def effect(name: str, *args: Any) -> None:
    """Logs a tool's side effect with the idempotency key of its journal step."""
    step = agentspan.current_step()
    log("effects", " ".join([name, *map(str, args), step.idempotency_key if step else "-"]))


def effects() -> list[str]:
    """The side effects of every process, without idempotency keys."""
    return [" ".join(line.split()[:-1]) for line in lines("effects")]


# ---- tools ----------------------------------------------------------------------------------
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up."""
    crash_if("lookup:before")
    effect("lookup", order_id)
    crash_if("lookup:after")
    return {"order_id": order_id, "paid": 30.0}


def quote_refund(order_id: str) -> dict[str, Any]:
    """Quote the refund of an order."""
    effect("quote", order_id)
    return {"order_id": order_id, "refund": 30.0}


def notify_customer(order_id: str, message: str, tool_context: ToolContext) -> str:
    """Tell the customer."""
    crash_if("notify:before")
    effect("notify", order_id)
    tool_context.state["notified"] = order_id
    return f"told the customer about {order_id}"


@agentspan.tool(approval_required=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (an Agentspan approval first)."""
    effect("refund", order_id, amount)
    return f"refunded ${amount:.2f} on order {order_id}"


def cancel_order(order_id: str) -> dict[str, Any]:
    """Cancel an order (ADK asks for a confirmation first)."""
    effect("cancel", order_id)
    return {"cancelled": order_id}


# ---- agents ---------------------------------------------------------------------------------
def model(name: str, turns: list[Any]) -> ScriptedLlm:
    def on_call(index: int) -> None:
        log("model-calls", f"{name} {index}")
        crash_if(f"model:{name}:{index}")

    return ScriptedLlm(model=name, turns=turns, on_call=on_call)


def support_tree() -> LlmAgent:
    """support (lookup, then transfer) → billing (two parallel calls, then the final answer)."""
    billing = LlmAgent(
        name="billing", description="Handles refunds.",
        model=model("billing", [[Call("quote_refund", {"order_id": "42"}),
                                 Call("notify_customer", {"order_id": "42", "message": "refund on its way"})],
                                FINAL]),
        tools=[quote_refund, notify_customer])
    return LlmAgent(
        name="support", instruction="Help the customer.",
        model=model("support", [Call("lookup_order", {"order_id": "42"}),
                                Call("transfer_to_agent", {"agent_name": "billing"})]),
        tools=[lookup_order], sub_agents=[billing])


def refund_agent() -> LlmAgent:
    """An ``@agentspan.tool(approval_required=True)`` tool."""
    return LlmAgent(name="refunds", model=model("refunds", [Call("refund", {"order_id": "42", "amount": 30.0}),
                                                             "Done."]), tools=[refund])


def confirm_agent() -> LlmAgent:
    """An ADK ``FunctionTool(require_confirmation=True)``."""
    return LlmAgent(name="orders", model=model("orders", [Call("cancel_order", {"order_id": "42"}), "Cancelled."]),
                    tools=[FunctionTool(cancel_order, require_confirmation=True)])


SCENARIOS = {"support": support_tree, "refund": refund_agent, "confirm": confirm_agent}


# ---- a user-built Runner with a durable session service --------------------------------------
def runner(agent: LlmAgent, *, resumable: bool = False) -> Runner:
    """A Runner on an SQLite session file in AGENTSPAN_HOME, with the Agentspan plugin on its App
    (``resumable``: an App ADK can resume an invocation of, ``ResumabilityConfig``)."""
    from google.adk.apps import ResumabilityConfig

    service = SqliteSessionService(str(home() / "adk-sessions.db"))
    config = ResumabilityConfig(is_resumable=True) if resumable else None
    return Runner(app=App(name=APP, root_agent=agent, plugins=[AgentspanPlugin()], resumability_config=config),
                  session_service=service)


async def resume_last_invocation(runner: Runner, session_id: str) -> list[Any]:
    """ADK's own resume (a resumable App) of the invocation of the session's last user message."""
    session = await runner.session_service.get_session(app_name=APP, user_id=USER, session_id=session_id)
    assert session is not None
    invocation = [e.invocation_id for e in session.events if e.author == "user"][-1]
    return [e async for e in runner.run_async(user_id=USER, session_id=session_id, invocation_id=invocation)]


async def run_turn(runner: Runner, session_id: str, text: str) -> list[Any]:
    """Sends one message on a session (created on first use); returns the events."""
    if await runner.session_service.get_session(app_name=APP, user_id=USER, session_id=session_id) is None:
        await runner.session_service.create_session(app_name=APP, user_id=USER, session_id=session_id)
    message = types.Content(role="user", parts=[types.Part(text=text)])
    return [e async for e in runner.run_async(user_id=USER, session_id=session_id, new_message=message)]


async def answer_confirmation(runner: Runner, session_id: str, confirmed: bool) -> list[Any]:
    """Answers the session's (last) ``adk_request_confirmation``, as an application does."""
    session = await runner.session_service.get_session(app_name=APP, user_id=USER, session_id=session_id)
    assert session is not None
    (request,) = [c for e in session.events for c in e.get_function_calls() if c.name == "adk_request_confirmation"]
    answer = types.Part(function_response=types.FunctionResponse(
        id=request.id, name="adk_request_confirmation", response={"confirmed": confirmed}))
    message = types.Content(role="user", parts=[answer])
    return [e async for e in runner.run_async(user_id=USER, session_id=session_id, new_message=message)]



def session_service(kind: str, home: Path) -> BaseSessionService:
    """An ADK session service of ``kind`` (``sqlite``, ``database``: ADK's SQLAlchemy one on
    SQLite, or in ``memory``), its files in ``home``."""
    if kind == "sqlite":
        return SqliteSessionService(str(home / "sessions.db"))
    if kind == "database":
        return DatabaseSessionService(f"sqlite+aiosqlite:///{home / 'adk.db'}")
    return InMemorySessionService()
