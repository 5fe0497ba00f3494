"""The SDK's lifecycle hooks (``RunHooks`` given to a run, ``AgentHooks`` on an agent), each call
told whether the call it is about is replayed from the journal (`agentspan.replaying`).

A resumed attempt runs the SDK's loop again, so hooks fire for replayed calls too. A hook that
fires before its call starts (``on_llm_start``, ``on_tool_start``) cannot learn that from the run's
state alone: the first live call's start hook fires while nothing has gone live yet. These
wrappers look the call up in the journal and answer for it (`agentspan.runtime.told_replaying`):
``on_llm_start`` by the key the next model call gets, ``on_llm_end`` by the one that just ended,
the tool hooks by the call id; the other hooks (agent start/end, handoffs) keep the run's answer.
"""

from __future__ import annotations

from typing import Any

from agents import AgentHooks, RunHooks

import agentspan
from agentspan.runtime import told_replaying
from agentspan_openai_agents._model import CallTracker


def _replayed(method: str, context: Any, tracker: CallTracker) -> bool | None:
    """Whether the call a hook is about is (was) served from the journal; None: not known."""
    run = agentspan.active_run()
    if run is None or not run.recorded:
        return None
    if method == "on_llm_start":
        return run.will_replay(run.peek_llm_key())
    if method == "on_llm_end":
        return run.was_replayed("llm", tracker.last_llm_key(run))  # its own scope's: not a nested run's
    if method in ("on_tool_start", "on_tool_end"):
        call_id = getattr(context, "tool_call_id", None)
        if not call_id:
            return None
        key = run.call_key(call_id)
        return run.will_replay(key) if method == "on_tool_start" else run.was_replayed("tool", key)
    return None


def _forward(method: str) -> Any:
    async def hook(self: Any, *args: Any, **kwargs: Any) -> Any:  # the SDK passes some by keyword (on_handoff)
        context = args[0] if args else kwargs.get("context")
        with told_replaying(_replayed(method, context, self._agentspan_tracker)):
            return await getattr(self._agentspan_inner, method)(*args, **kwargs)

    hook.__name__ = method
    return hook


_CALL_HOOKS = ("on_llm_start", "on_llm_end", "on_tool_start", "on_tool_end")


class _ReplayAware:
    """Forwards the hooks of ``forwarded`` to the user's object, each in `told_replaying`."""

    forwarded: tuple[str, ...] = ()

    def __init__(self, inner: Any, tracker: CallTracker) -> None:
        self._agentspan_inner = inner
        self._agentspan_tracker = tracker
        for name in dir(type(inner)):  # hooks not forwarded (a newer SDK's) go to the user's object as they are
            if name.startswith("on_") and name not in self.forwarded:
                setattr(self, name, getattr(inner, name))

    def __getattr__(self, name: str) -> Any:  # the user's own attributes
        return getattr(self._agentspan_inner, name)


class _ReplayAwareRunHooks(_ReplayAware, RunHooks):  # type: ignore[misc]
    forwarded = ("on_agent_start", "on_agent_end", "on_handoff", *_CALL_HOOKS)


class _ReplayAwareAgentHooks(_ReplayAware, AgentHooks):  # type: ignore[misc]
    forwarded = ("on_start", "on_end", "on_handoff", *_CALL_HOOKS)


for _cls in (_ReplayAwareRunHooks, _ReplayAwareAgentHooks):
    for _name in _cls.forwarded:
        setattr(_cls, _name, _forward(_name))


def run_hooks(hooks: Any, tracker: CallTracker) -> Any:
    """The run's ``hooks=``, each call told whether its call is replayed (None stays None)."""
    if hooks is None or isinstance(hooks, _ReplayAwareRunHooks):
        return hooks
    return _ReplayAwareRunHooks(hooks, tracker)


def agent_hooks(hooks: Any, tracker: CallTracker) -> Any:
    """An agent's ``hooks``, each call told whether its call is replayed (None stays None)."""
    if hooks is None or isinstance(hooks, _ReplayAwareAgentHooks):
        return hooks
    return _ReplayAwareAgentHooks(hooks, tracker)
