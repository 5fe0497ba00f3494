"""Agentspan adapter for LangGraph.

``graph = builder.compile(checkpointer=AgentspanSaver())`` keeps a graph's checkpoints in the
Agentspan store; ``agentspan.run(graph, input)`` also journals each model and tool call inside
nodes, so a crash in a node does not repeat the calls it already made.
"""

from agentspan_langgraph._adapter import LangGraphAdapter
from agentspan_langgraph.saver import AgentspanSaver

__all__: list[str] = ["AgentspanSaver", "LangGraphAdapter"]
