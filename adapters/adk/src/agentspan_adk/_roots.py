"""Which ADK roots Agentspan makes durable: agent trees (a `BaseAgent` root) everywhere, and ADK 2
graph workflows (a ``google.adk.workflow.Workflow`` as ``App.root_agent``, or as the target) only
through ``agentspan.run``/``start``/``resume``/``serve`` (see ``adapters/adk/WORKFLOWS.md``).

Refused up front, before any run is stored: any other ``BaseNode`` root (a bare ``FunctionNode``
...), and a workflow in a user-built Runner (`AgentspanPlugin` at an invocation's first callback,
`agentspan.instrument` when the Runner is made): the plugin opens such runs itself and resumes
them by rewinding the Runner's own session, which ADK's workflow resume (replaying node outputs
from the session's events) would have to follow; not built.
"""

from __future__ import annotations

from typing import Any

from google.adk.agents import BaseAgent
from google.adk.workflow import Workflow

from agentspan.errors import ConfigurationError

__all__ = ["check_agent_root", "is_workflow"]


def is_workflow(root: Any) -> bool:
    """Whether ``root`` is an ADK 2 graph workflow (``agentspan.run`` makes those durable)."""
    return isinstance(root, Workflow)


def check_agent_root(root: Any, *, workflows: bool = False) -> None:
    """Refuses an ADK root that is not an agent (a graph workflow node).

    Args:
        root: ``App.root_agent``, the target given to ``agentspan.run``, or the Runner's root
            (``Runner.agent``; an invocation's ``agent``, None when the Runner drives a node).
        workflows: Accept a ``Workflow`` too (``agentspan.run`` and its kin journal them).

    Raises:
        ConfigurationError: ``root`` is not a `BaseAgent` (nor, with ``workflows``, a
            ``Workflow``); the message names it and what to do.
    """
    if isinstance(root, BaseAgent) or (workflows and is_workflow(root)):
        return
    what = "no agent (the Runner drives a graph node)" if root is None else (
        f"{type(root).__name__} {getattr(root, 'name', '?')!r}, a graph node, not an agent")
    if workflows:
        raise ConfigurationError(
            f"Agentspan supports ADK graph workflows as a google.adk.workflow Workflow root only: the root is {what}. "
            "Wrap the node in a Workflow (Workflow(name=..., edges=[(START, node)])), or make an agent the root.")
    raise ConfigurationError(
        f"Agentspan does not support ADK graph workflows in a user-built Runner (google.adk.workflow Workflow or "
        f"another BaseNode as App.root_agent, Runner(node=...)): the root is {what}. Its function nodes would not "
        "be journaled and a crash could not be resumed there. Run the Workflow (or an App rooted at it) with "
        "agentspan.run/start (durable), make an agent the root, or run the workflow without Agentspan "
        "(not durable).")
