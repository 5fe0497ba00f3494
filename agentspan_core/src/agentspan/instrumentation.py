"""`instrument`: unchanged code runs durably, by patching the frameworks' own entry points.

``agentspan.run(agent, input)`` is the one-line change; ``agentspan.instrument()`` at start-up is
the zero-line one: each installed adapter that can patches its framework (with ``wrapt``) so the
framework's own entry point goes through Agentspan:

- openai-agents: ``Runner.run`` and ``Runner.run_sync`` become ``agentspan.run_async`` and
  ``agentspan.run`` (the same `RunResult` comes back), ``Runner.run_streamed`` becomes
  ``agentspan.run_streamed`` (a `StreamedRun`: ``stream_events()``, ``final_output``); a call
  with an option Agentspan does not journal (``session``, ``previous_response_id``,
  ``conversation_id``, ...) or with a ``RunState`` goes to the SDK as it was, with a warning;
- Google ADK: every ``Runner`` (and ``InMemoryRunner``) gets an `AgentspanPlugin` unless it has one.

LangGraph has no runner to patch: a graph is made durable by compiling it with
``checkpointer=AgentspanSaver()`` or by ``agentspan.run(graph, input)``.

Calls made by a durable run itself (the adapter runs the framework's entry point inside it) are
never routed again.
"""

from __future__ import annotations

import logging
import threading

from agentspan.adapters import Adapter, adapter_named, registered
from agentspan.errors import ConfigurationError

log = logging.getLogger("agentspan")
_lock = threading.Lock()


def instrument(*frameworks: str) -> dict[str, str]:
    """Makes the frameworks' own entry points durable in this process (see the module).

    Args:
        *frameworks: Adapter framework names (``"openai-agents"``, ``"adk"``); default: every
            installed adapter that can (each framework is imported).

    Returns:
        Framework name → what was patched. Calling it again changes nothing.

    Raises:
        ConfigurationError: A named framework has no installed adapter, or its adapter cannot
            instrument (LangGraph: compile with ``checkpointer=AgentspanSaver()`` instead).
    """
    return _switch(frameworks, on=True)


def uninstrument(*frameworks: str) -> dict[str, str]:
    """Undoes `instrument` (same arguments); the frameworks' entry points are their own again."""
    return _switch(frameworks, on=False)


def _switch(frameworks: tuple[str, ...], *, on: bool) -> dict[str, str]:
    adapters: list[Adapter] = [adapter_named(name) for name in frameworks] if frameworks else registered()
    done: dict[str, str] = {}
    with _lock:
        for adapter in adapters:
            patched = adapter.instrument(on)
            if patched is None:
                if frameworks:
                    raise ConfigurationError(
                        f"the {adapter.framework} adapter cannot instrument its framework"
                        + ("; compile the graph with checkpointer=AgentspanSaver() or call agentspan.run(graph, "
                           "input)" if adapter.framework == "langgraph" else ""))
                continue
            done[adapter.framework] = patched
            log.info("agentspan: %s %s: %s", "instrumented" if on else "restored", adapter.framework, patched)
    return done
