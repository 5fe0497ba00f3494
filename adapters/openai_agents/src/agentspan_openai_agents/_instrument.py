"""`agentspan.instrument` for openai-agents: ``Runner.run``, ``Runner.run_sync`` and
``Runner.run_streamed`` go through Agentspan (``agentspan.run_async`` / ``run`` /
``run_streamed``), so unchanged code runs durably."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import wrapt
from agents import Runner

import agentspan
from agentspan_openai_agents._adapter import RUNNER_OPTIONS

log = logging.getLogger("agentspan")

JOURNALED_OPTIONS = frozenset({*RUNNER_OPTIONS, "run_config"})
"""The ``Runner`` keyword arguments a durable run takes (any other one given leaves the call to the SDK)."""
PATCHED = ("agents.Runner.run, Runner.run_sync and Runner.run_streamed call agentspan.run_async, agentspan.run "
           "and agentspan.run_streamed")
_originals: dict[str, Any] = {}
_warned: set[str] = set()


def _routed(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]] | None:
    """The ``(agent, input, options)`` of a ``Runner`` call to journal, or None to leave it to the SDK."""
    if agentspan.active_run() is not None:
        return None  # a durable run calling the SDK itself
    options = dict(kwargs)
    positional = list(args)
    agent = positional.pop(0) if positional else options.pop("starting_agent", None)
    input = positional.pop(0) if positional else options.pop("input", None)
    # None is each option's SDK default (as not given), but for max_turns (default 10): None is no limit
    options = {name: value for name, value in options.items() if value is not None or name == "max_turns"}
    why = None
    if positional:
        why = "positional options"
    elif not isinstance(input, (str, list)):
        why = f"an input of type {type(input).__name__} (a RunState continues the SDK's own interruption)"
    else:
        unknown = sorted(set(options) - JOURNALED_OPTIONS)
        if unknown:
            why = f"option(s) {', '.join(unknown)}"
    if why is not None:
        if why not in _warned:
            _warned.add(why)
            log.warning("agentspan.instrument: a Runner call with %s is not journaled (left to the SDK as it was)", why)
        return None
    return agent, input, options


def _run_sync(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    routed = _routed(args, kwargs)
    if routed is None:
        return wrapped(*args, **kwargs)
    agent, input, options = routed
    return agentspan.run(agent, input, **options)


def _run(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    routed = _routed(args, kwargs)
    if routed is None:
        return wrapped(*args, **kwargs)
    agent, input, options = routed
    return agentspan.run_async(agent, input, **options)  # a coroutine, as Runner.run returns


def _run_streamed(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    routed = _routed(args, kwargs)
    if routed is None:
        return wrapped(*args, **kwargs)
    agent, input, options = routed
    return agentspan.run_streamed(agent, input, **options)  # an agentspan.StreamedRun: stream_events(), final_output


def instrument(on: bool) -> str:
    """Patches (``on``) or restores ``Runner.run``, ``run_sync`` and ``run_streamed``; idempotent."""
    if on and not _originals:
        for name, wrapper in (("run", _run), ("run_sync", _run_sync), ("run_streamed", _run_streamed)):
            _originals[name] = Runner.__dict__[name]
            wrapt.wrap_function_wrapper(Runner, name, wrapper)
    elif not on and _originals:
        for name, original in _originals.items():
            setattr(Runner, name, original)
        _originals.clear()
    return PATCHED
