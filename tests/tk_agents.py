"""openai-agents agents for the testing-kit tests, importable by crash tests' child processes.

Every agent names a real provider model, which a mock run must replace (a call would be blocked
by the network guard, or fail without an API key). Real tools record their side effects with
`tk_effects.effect`.
"""

from __future__ import annotations

import os

from agents import Agent, function_tool, set_tracing_disabled

import agentspan

from tk_effects import effect

set_tracing_disabled(True)


# ---- openai-agents ---------------------------------------------------------------------------
@function_tool
def lookup_order(order_id: str) -> str:
    """Look up an order's payment status."""
    effect(f"lookup {order_id}")
    return f"order {order_id}: paid $30.00"


@function_tool
@agentspan.tool(approval_required=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (a human approves every call)."""
    effect(f"refund {order_id} {amount}")
    return f"refunded ${amount:.2f} on order {order_id}"


@function_tool
@agentspan.tool(approval_required=True, on_reject="stop")
def close_account(account_id: str) -> str:
    """Close a customer's account (a rejection stops the run)."""
    effect(f"close {account_id}")
    return "closed"


closer = Agent(name="closer", instructions="Close accounts.", tools=[close_account], model="gpt-4o")
billing = Agent(name="billing", instructions="Handle refunds.", tools=[refund], model="gpt-4o")
support = Agent(name="support", instructions="Help the customer.", tools=[lookup_order], handoffs=[billing],
                model="gpt-4o-mini")
"""Triage agent: looks orders up, hands refunds off to ``billing``."""


@function_tool
def whoami() -> str:
    """Report which process runs this tool."""
    effect(f"pid {os.getpid()} parent {os.getppid()}")
    return "ok"


prober = Agent(name="prober", instructions="Call whoami.", tools=[whoami], model="gpt-4o-mini")
"""Records the process (and its parent) that ran its tool: a crash test's child, or the test process."""
