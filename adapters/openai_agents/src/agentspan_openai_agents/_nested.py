"""Agents run inside a tool call (``agent.as_tool(...)``, or a tool's own ``Runner.run``) or a
guardrail check: their model and tool calls are journaled too.

An agent tool is a function tool whose call runs its agent with ``Runner.run`` (or
``Runner.run_streamed``) on the very agent object it was made from, and a tool of the app's may
call ``Runner.run`` itself: either way the agent is not the durable clone, so its model calls (a
`Model` instance) and tools (an approval-gated one included) would run unjournaled and unchecked
inside the journaled tool call. While a durable openai-agents run executes (`attempt`), a
``Runner`` call made inside one of its tool calls gets the durable clone of its starting agent and,
for models named by the run config, the attempt's journaling provider (`install`: ``wrapt``
wrappers on ``Runner.run`` and ``Runner.run_streamed``; every other call passes through
untouched). The nested calls are journaled under the tool call's key (``llm:0/call:<id>/llm:0``,
...), so after a crash the nested agent replays what it had done and goes on from there; so are
the calls of a session the nested run is given (``agent.as_tool(session=...)``).

A guardrail is checked again on every attempt (its result decides whether the run goes on), but an
agent it runs (the SDK's pattern: a small model judging the input) is journaled the same way, under
the guardrail's key (``guardrail:input:<agent>:<name>/llm:0``; `checking`): a resumed run's check
gets the judge's journaled answer instead of calling (and paying for) the model again.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import wrapt
from agents import Agent, RunConfig, Runner

import agentspan
from agentspan_openai_agents._session import JournaledSession, nested_session

if TYPE_CHECKING:
    from agentspan_openai_agents._wrap import AgentWrapper

_attempt: contextvars.ContextVar[tuple[AgentWrapper, RunConfig] | None] = contextvars.ContextVar(
    "agentspan_openai_attempt", default=None)
"""The executing attempt's agent wrapper and run config (with its journaling provider)."""
_install_lock = threading.Lock()
_checking: contextvars.ContextVar[bool] = contextvars.ContextVar("agentspan_openai_checking", default=False)


@contextlib.contextmanager
def attempt(wrapper: AgentWrapper, config: RunConfig) -> Iterator[None]:
    """Marks the block as a durable run's attempt, whose tool calls' ``Runner`` calls are journaled.

    Such a call that gives no run config gets the attempt's (its journaling provider), without its
    input and output guardrails: those guard the run itself (a guardrail that runs a judge agent
    would otherwise check the judge's run too, without end)."""
    install()
    if config.input_guardrails or config.output_guardrails:
        config = dataclasses.replace(config, input_guardrails=None, output_guardrails=None)
    token = _attempt.set((wrapper, config))
    try:
        yield
    finally:
        _attempt.reset(token)


@contextlib.contextmanager
def checking(run: agentspan.ActiveRun, key: str) -> Iterator[None]:
    """Marks the block as the check of the guardrail journaled at ``key``: ``Runner`` calls made in
    it are journaled under that key."""
    token = _checking.set(True)
    try:
        with run.scoped(key):
            yield
    finally:
        _checking.reset(token)


def _inside_journaled_call() -> bool:
    if agentspan.active_run() is None:
        return False
    step = agentspan.current_step()
    return (step is not None and step.kind == "tool") or _checking.get()


def _nested(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The ``Runner`` call's arguments, with the durable clone and the journaling provider when the
    call is made inside a tool call or guardrail check of the executing attempt."""
    current = _attempt.get()
    if current is None or not _inside_journaled_call():
        return args, kwargs
    wrapper, config = current
    agent = args[0] if args else kwargs.get("starting_agent")
    if isinstance(agent, Agent) and not wrapper.is_clone(agent):
        if args:
            args = (wrapper.agent(agent), *args[1:])
        else:
            kwargs = {**kwargs, "starting_agent": wrapper.agent(agent)}
    session = kwargs.get("session")
    if session is not None and not isinstance(session, JournaledSession):  # an agent tool's own session
        kwargs = {**kwargs, "session": nested_session(session, wrapper.session_checks)}
    given = kwargs.get("run_config")
    if given is None:
        kwargs = {**kwargs, "run_config": config}
    elif given is not config and given.model_provider is not config.model_provider:
        kwargs = {**kwargs, "run_config": wrapper.run_config(given)}
    return args, kwargs


def _through_clone(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    args, kwargs = _nested(args, kwargs)
    return wrapped(*args, **kwargs)


def _wrapped_by_us(name: str) -> bool:
    """Whether ``Runner.<name>`` is (still) wrapped by us: ``agentspan.uninstrument`` puts back the
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
