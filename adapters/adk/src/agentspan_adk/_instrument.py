"""`agentspan.instrument` for Google ADK: every ``Runner`` (and ``InMemoryRunner``) gets an
`AgentspanPlugin` unless it has one, so unchanged code runs durably."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import wrapt
from google.adk.runners import Runner

import agentspan
from agentspan_adk._roots import check_agent_root
from agentspan_adk.plugin import AgentspanPlugin

PATCHED = "every google.adk Runner gets an AgentspanPlugin unless it has one"
_original: list[Any] = []


def _init(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    wrapped(*args, **kwargs)
    if agentspan.current_step() is not None:
        return  # a Runner made inside a journaled call (an AgentTool's) is journaled by the outer one
    manager = instance.plugin_manager
    if any(isinstance(plugin, AgentspanPlugin) for plugin in manager.plugins):
        # Journaled already: `agentspan.run`'s own Runner (a graph workflow's too), or one the
        # user gave a plugin (which refuses a workflow root itself, at its first callback)
        return
    check_agent_root(instance.agent)  # a graph workflow's Runner: refused now, not at its first message
    manager.register_plugin(AgentspanPlugin())


def instrument(on: bool) -> str:
    """Patches (``on``) or restores ``Runner.__init__``; idempotent."""
    if on and not _original:
        _original.append(Runner.__dict__["__init__"])
        wrapt.wrap_function_wrapper(Runner, "__init__", _init)
    elif not on and _original:
        Runner.__init__ = _original.pop()  # type: ignore[method-assign]
    return PATCHED
