"""Agentspan adapter for Google ADK.

``Runner(..., plugins=[AgentspanPlugin()])`` journals every model and tool call of every agent in
the tree; ``agentspan.run(adk_agent, prompt, session_id=...)`` runs an ADK agent durably without a
hand-built Runner.
"""

__all__: list[str] = []
