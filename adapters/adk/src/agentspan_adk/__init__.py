"""Agentspan adapter for Google ADK.

``Runner(..., plugins=[AgentspanPlugin()])`` journals every model and tool call of every agent in
the tree and replays them after a crash; ``agentspan.run(adk_agent, "prompt", session_id=...)``
runs an ADK agent durably without a hand-built Runner and returns an `ADKResult`.
"""

from agentspan_adk._adapter import ADKAdapter, ADKResult
from agentspan_adk.plugin import AgentspanPlugin

__all__ = ["ADKAdapter", "ADKResult", "AgentspanPlugin"]
