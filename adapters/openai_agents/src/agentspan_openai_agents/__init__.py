"""Agentspan adapter for the OpenAI Agents SDK.

``agentspan.run(agent, input)`` replaces ``Runner.run_sync(agent, input)``: every model call,
tool call and handoff is journaled, replayed after a crash, and gated by approvals where a tool
asks for one (``@agentspan.tool(approval_required=True)`` or the SDK's ``needs_approval``).
"""

from agentspan_openai_agents._adapter import OpenAIAgentsAdapter
from agentspan_openai_agents._model import JournalingModel, JournalingProvider, dump_response, load_response

__all__ = ["JournalingModel", "JournalingProvider", "OpenAIAgentsAdapter", "dump_response", "load_response"]
