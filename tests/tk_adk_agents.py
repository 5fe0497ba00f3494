"""Google ADK agents for the testing-kit tests, importable by crash tests' child processes.

Every agent names a real Gemini model, which a mock run must answer for (a call would be blocked
by the network guard, or fail without an API key). Real tools record their side effects with
`tk_effects.effect`.
"""

from __future__ import annotations

from typing import Any

from google.adk.agents import LlmAgent
from google.adk.tools import FunctionTool

import agentspan

from tk_effects import effect


def lookup_order(order_id: str) -> str:
    """Look up an order's payment status."""
    effect(f"lookup {order_id}")
    return f"order {order_id}: paid $30.00"


@agentspan.tool(approval_required=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (a human approves every call)."""
    effect(f"refund {order_id} {amount}")
    return f"refunded ${amount:.2f} on order {order_id}"


def cancel_order(order_id: str) -> dict[str, Any]:
    """Cancel an order (ADK asks for a confirmation first)."""
    effect(f"cancel {order_id}")
    return {"cancelled": order_id}


billing = LlmAgent(name="billing", description="Handles refunds.", instruction="Refund orders.",
                   model="gemini-2.5-flash", tools=[refund])
support = LlmAgent(name="support", instruction="Help the customer.", model="gemini-2.5-flash-lite",
                   tools=[lookup_order], sub_agents=[billing])
"""Triage agent: looks orders up, transfers refunds to ``billing``."""
orders = LlmAgent(name="orders", instruction="Cancel orders.", model="gemini-2.5-flash",
                  tools=[FunctionTool(cancel_order, require_confirmation=True)])
"""An agent whose tool needs ADK's own confirmation (``require_confirmation=True``)."""
