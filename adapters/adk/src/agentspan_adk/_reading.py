"""Reading ADK's objects the way the journal needs them: an agent's path in its tree, the
invocation a callback belongs to, which events are model turns, a tool's ``@agentspan.tool``
options and a tool result as JSON."""

from __future__ import annotations

from typing import Any

from google.adk.agents import BaseAgent
from google.adk.agents.callback_context import CallbackContext
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events import Event
from google.adk.events._rewind_events import _apply_rewinds
from google.adk.tools import BaseTool
from pydantic_core import to_jsonable_python

from agentspan.records import JSON
from agentspan.tools import DEFAULT_TOOL_OPTIONS, ToolOptions, tool_options

__all__ = ["agent_path", "invocation_of", "is_model_turn", "live_events", "model_turns", "options_of", "to_json"]


def agent_path(agent: BaseAgent) -> str:
    """The agent's path from the root of its tree: ``root/child/grandchild``."""
    names = []
    node: BaseAgent | None = agent
    while node is not None:
        names.append(node.name)
        node = node.parent_agent
    return "/".join(reversed(names))


def invocation_of(context: CallbackContext) -> InvocationContext:
    """The invocation a callback's (or tool's) context belongs to, read in place.

    ADK's public ``get_invocation_context()`` returns a pydantic copy of the invocation context
    (same agent, session, ids and branch; only its workflow ``node_path``/``isolation_scope``
    differ) on every call, and the plugin asks for it on every model and tool call. The plugin only
    reads the agent, session, invocation id and branch, which the copy shares with the original:
    read the original (falls back to the public method if ADK ever drops the attribute).
    """
    found = getattr(context, "_invocation_context", None)
    if type(found) is InvocationContext or isinstance(found, InvocationContext):
        return found  # type: ignore[return-value]
    return context.get_invocation_context()


def is_model_turn(event: Event) -> bool:
    """Whether an event is a model call's response (not one ADK made up: confirmation requests...)."""
    if event.partial:
        return False
    if event.content is None:
        return bool(event.error_code)
    if event.content.role != "model":
        return False
    calls = event.get_function_calls()
    return not calls or not all((c.name or "").startswith("adk_request_") for c in calls)


def model_turns(events: list[Event], invocation_id: str, author: str, branch: str | None) -> int:
    """How many model calls of ``author`` the session records for one invocation.

    Counted among the events ADK's rewinds leave (`live_events`): a continuation whose session was
    rewound to the answer it goes on from (`agentspan_adk._managed`) still has the interrupted
    attempt's events, with the same invocation id, before the rewind.
    """
    return sum(1 for e in live_events(events) if e.invocation_id == invocation_id and e.author == author
               and e.branch == branch and is_model_turn(e))


def live_events(events: list[Event]) -> list[Event]:
    """A session's events without those ADK's rewinds removed (what its model calls are sent)."""
    if not any(e.actions.rewind_before_invocation_id for e in events):
        return events  # (the usual case: no copy)
    return _apply_rewinds(events)


def options_of(tool: BaseTool) -> ToolOptions:
    """The ``@agentspan.tool`` options of an ADK tool (set on the tool or on its function)."""
    found = tool_options(tool)
    if found is None:
        func = getattr(tool, "func", None)
        found = tool_options(func) if func is not None else None
    return DEFAULT_TOOL_OPTIONS if found is None else found


def to_json(value: Any) -> JSON:
    """A tool result as JSON (pydantic models and dataclasses too; anything else as its ``str``).

    A new value: dicts and lists are rebuilt, never shared with ``value`` (what the tool or ADK
    changes in them later does not change what was journaled). Bytes are their UTF-8 text, or,
    when some are no UTF-8 text (an image's), all of them are base64 (as ``google.genai`` sends
    bytes), instead of an error the tool's step would be journaled failed with.
    """
    try:
        return to_jsonable_python(value, fallback=str)
    except UnicodeDecodeError:
        return to_jsonable_python(value, fallback=str, bytes_mode="base64")
