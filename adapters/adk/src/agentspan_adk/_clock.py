"""`agentspan.now` (and `agentspan.random`) in ADK runs: which agent's next model call the time
read in this context is for.

An agent's instruction provider runs before the model call it feeds, in the agent's own context.
The plugin notes each agent that starts and ends (`agent_started`, `agent_ended`): the innermost
running agent of the context is the one whose next model call `agentspan.now` reads the time of,
and its run is bound to the context (a plugin run in the user's own Runner is not the active run
there).
"""

from __future__ import annotations

import contextvars

from google.adk.agents.invocation_context import InvocationContext

import agentspan.clock
from agentspan_adk._journal import Journal

_Running = tuple[Journal, InvocationContext]
_running: contextvars.ContextVar[tuple[_Running, ...]] = contextvars.ContextVar("agentspan_adk_running_agents",
                                                                                default=())


def agent_started(journal: Journal, ic: InvocationContext) -> None:
    """An agent of ``journal``'s invocation starts in this context."""
    _set((*_running.get(), (journal, ic)))


def agent_ended(ic: InvocationContext) -> None:
    """The agent of ``ic`` ended in this context."""
    running = _running.get()
    if running and running[-1][1] is ic:
        _set(running[:-1])


def invocation_ended(invocation_id: str) -> None:
    """The invocation ended (or stopped: an approval, an error): its agents no longer run here."""
    running = _running.get()
    left = tuple(entry for entry in running if entry[1].invocation_id != invocation_id)
    if left != running:
        _set(left)


def next_model_key() -> str | None:
    """`agentspan.ActiveRun.next_model_key` of an ADK run: the innermost running agent's."""
    running = _running.get()
    if not running:
        return None
    journal, ic = running[-1]
    return journal.next_model_key(ic)


def _set(running: tuple[_Running, ...]) -> None:
    _running.set(running)
    agentspan.clock.bind(running[-1][0].run if running else None)


def current() -> tuple[Journal, InvocationContext] | None:
    """The innermost running agent of this context: its invocation's journal and its context."""
    running = _running.get()
    return running[-1] if running else None
