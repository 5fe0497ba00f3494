"""Which ADK roots Agentspan makes durable: agent trees (a `BaseAgent` root), not ADK 2's graph
workflows (a ``google.adk.workflow.Workflow`` or any other ``BaseNode`` as ``App.root_agent``,
or ``Runner(node=...)``).

A workflow is refused up front, before any run is stored, by every entry point
(``agentspan.run``/``start``/``resume``/``serve`` and the testing kit through
`ADKAdapter.accepts`, `AgentspanPlugin` at an invocation's first callback, `agentspan.instrument`
when the Runner is made). Why not journaled: its ``FunctionNode``s run plain Python that no
callback reaches (a resumed run would repeat their effects); its agent nodes have no parent agent,
so each is a root of its own and a resumed run read the first one's journaled calls as those of a
renamed root (``ReplayDivergenceError`` after a crash past the first node); and ADK resumes a
workflow from its own events in the session, which the plugin's rewinds would have to follow.
"""

from __future__ import annotations

from typing import Any

from google.adk.agents import BaseAgent

from agentspan.errors import ConfigurationError

__all__ = ["check_agent_root"]


def check_agent_root(root: Any) -> None:
    """Refuses an ADK root that is not an agent (a graph workflow node).

    Args:
        root: ``App.root_agent``, the target given to ``agentspan.run``, or the Runner's root
            (``Runner.agent``; an invocation's ``agent``, None when the Runner drives a node).

    Raises:
        ConfigurationError: ``root`` is not a `BaseAgent`; the message names it and what to do.
    """
    if isinstance(root, BaseAgent):
        return
    what = "no agent (the Runner drives a graph node)" if root is None else (
        f"{type(root).__name__} {getattr(root, 'name', '?')!r}, a graph node, not an agent")
    raise ConfigurationError(
        f"Agentspan does not support ADK graph workflows (google.adk.workflow Workflow or another BaseNode as "
        f"App.root_agent, Runner(node=...)): the root is {what}. Its function nodes would not be journaled and a "
        "crash past its first agent node could not be resumed. Make an agent the root (an LlmAgent, or a "
        "SequentialAgent/ParallelAgent/LoopAgent of the LlmAgents), or run the workflow without Agentspan "
        "(not durable).")
