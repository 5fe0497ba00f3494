"""Agents used as tools (``agent.as_tool(...)``): their own model and tool calls are journaled too.

An agent tool is a function tool whose call runs the agent with ``Runner.run`` (or
``Runner.run_streamed``) itself, on the very agent object it was made from: not the durable
clone, so without this its model calls (a `Model` instance) and tools (an approval-gated one
included) would run unjournaled and unchecked inside the journaled tool call. While Agentspan's
wrapper of such a tool runs the call (`nested_clone`), the ``Runner`` entry points are given the
durable clone of that agent in place of the agent itself (`install`: ``wrapt`` wrappers on
``Runner.run`` and ``Runner.run_streamed``, passing every other call through untouched). Its calls
are journaled under the tool call's key (``llm:0/call:<id>/llm:0``, ...), so after a crash the
nested agent replays what it had done and goes on from there.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any

import wrapt
from agents import Agent, Runner

_current: contextvars.ContextVar[tuple[Agent[Any], Agent[Any]] | None] = contextvars.ContextVar(
    "agentspan_nested_agent", default=None)
"""``(agent, its durable clone)`` while an agent tool's call runs in this context."""
_install_lock = threading.Lock()


def agent_of_tool(tool: Any) -> Agent[Any] | None:
    """The agent an agent tool runs (the SDK marks the tools ``as_tool`` makes), else None."""
    agent = getattr(tool, "_agent_instance", None)
    return agent if getattr(tool, "_is_agent_tool", False) and isinstance(agent, Agent) else None


@contextlib.contextmanager
def nested_clone(agent: Agent[Any], clone: Agent[Any]) -> Iterator[None]:
    """While the block runs, a ``Runner`` call that starts ``agent`` starts ``clone`` instead."""
    install()
    token = _current.set((agent, clone))
    try:
        yield
    finally:
        _current.reset(token)


def _swapped(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    current = _current.get()
    if current is None:
        return args, kwargs
    agent, clone = current
    if args and args[0] is agent:
        return (clone, *args[1:]), kwargs
    if kwargs.get("starting_agent") is agent:
        return args, {**kwargs, "starting_agent": clone}
    return args, kwargs


def _through_clone(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    args, kwargs = _swapped(args, kwargs)
    return wrapped(*args, **kwargs)


def _wrapped_by_us(name: str) -> bool:
    """Whether ``Runner.<name>`` is (still) our wrapper: ``agentspan.uninstrument`` puts back the
    entry points as they were before ``agentspan.instrument``, which may be before ours."""
    entry = Runner.__dict__.get(name)
    while entry is not None:  # through the wrappers around it (`agentspan.instrument`'s may be outside ours)
        if getattr(entry, "_self_wrapper", None) is _through_clone:
            return True
        entry = getattr(entry, "__wrapped__", None)
    return False


def install() -> None:
    """Wraps ``Runner.run`` and ``Runner.run_streamed`` (again, if something put them back)."""
    if _wrapped_by_us("run") and _wrapped_by_us("run_streamed"):
        return
    with _install_lock:
        for name in ("run", "run_streamed"):
            if not _wrapped_by_us(name):
                wrapt.wrap_function_wrapper(Runner, name, _through_clone)
