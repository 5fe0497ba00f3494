"""Journaling of ADK 2 graph workflow nodes that no callback reaches: ``FunctionNode``s.

A ``FunctionNode`` runs plain Python (``node_input`` in, an output, a route and state changes
out) and fires no plugin callback. `install` wraps ``FunctionNode._run_impl`` once, at class level
(a workflow copies its nodes with ``model_copy``, so an instance attribute would not follow). The
wrapper journals a node only inside a journaled invocation (`bind` sets a context variable the
workflow's node tasks inherit); anywhere else it is ADK's own method.

One step per node execution, keyed by the node's path in the graph (``flow@1/fetch@1/node``)
with the prefix of the enclosing journal; its input hash covers the node's name and its input,
so a node whose ``@n`` went to another trigger (or whose input changed) diverges instead of
replaying another execution's output. The step is a tool call (`agentspan.ActiveRun.tool`): the
``@agentspan.tool`` options on the node's function apply as to a tool's, an approval bound to the
node's name and input (``approval_required``; a rejection under ``on_reject="continue"`` makes the
node's output ``{"error": <rejection message>}``, as ADK's own rejected confirmation does) and the
``on_in_doubt`` policy of an execution a crash interrupted. The step's value is what the node
yielded, as JSON events (output, content, route, state and artifact deltas), plus what it left
on its context for ADK to flush after it returns: the state and artifact deltas, and an output or
route set on the context (``ctx.output``, ``ctx.route``) rather than yielded. A completed step is
replayed by putting those back on the context and yielding the events again, without calling the
function; a live one runs the whole function inside the step (`agentspan.current_step` works in
it; its events are handed to ADK when it returns).

JSON forms: content and actions as pydantic's JSON mode (bytes as base64, which an image
``Blob`` reads back as bytes), an output as a tool result (`agentspan_adk._reading.to_json`:
bytes as UTF-8 text, or base64 when they are not text). A replay gives the node's successors
those JSON forms (a datetime as its ISO text, a set as a list...); the live run hands them the
objects themselves.

Not journaled: a ``FunctionNode`` run by another journaled one (``ctx.run_node``): it is part of
its parent's step (run again with it when that step was in flight at a crash). A durable run
started inside a node (``await agentspan.run_async(other_workflow)``) journals its own nodes in
its own run. Refused (`ConfigurationError`): a node with ``require_confirmation`` or an
``auth_config``, and a node that yields a ``RequestInput`` (ADK's human input inside a workflow
is not made durable: use ``@agentspan.tool(approval_required=True)`` on the node's function).
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator, Callable
from typing import Any

from google.adk.agents.context import Context
from google.adk.events import Event, RequestInput
from google.adk.workflow import FunctionNode
from pydantic_core import to_jsonable_python

from agentspan.errors import ConfigurationError
from agentspan.records import JSON
from agentspan.tools import DEFAULT_TOOL_OPTIONS, ToolOptions, tool_options
from agentspan_adk._journal import Journal
from agentspan_adk._reading import to_json

__all__ = ["bind", "install"]

_EVENT_FIELDS = {"content", "actions", "custom_metadata"}
"""What a node's event carries that the journal keeps besides its output (ADK fills in ids,
author, paths, times)."""

_journals: contextvars.ContextVar[Callable[[str], Journal | None] | None] = contextvars.ContextVar(
    "agentspan_adk_node_journals", default=None)
_in_node: contextvars.ContextVar[Journal | None] = contextvars.ContextVar("agentspan_adk_in_node", default=None)
"""The journal whose node step is running here: the nodes that step runs itself (``ctx.run_node``,
same journal) are part of it; those of a durable run it starts (another journal) are not."""
_ORIGINAL = "__agentspan_adk_original__"


def bind(journal_of: Callable[[str], Journal | None]) -> None:
    """Journals the function nodes run in this context (and the tasks it starts): ``journal_of``
    gives an invocation id's journal (None: not journaled)."""
    _journals.set(journal_of)


def install() -> None:
    """Wraps ``FunctionNode._run_impl`` (once; idempotent)."""
    current = FunctionNode.__dict__["_run_impl"]
    if getattr(current, _ORIGINAL, None) is not None:
        return
    original = current

    async def _run_impl(self: FunctionNode, *, ctx: Context, node_input: Any) -> AsyncGenerator[Any, None]:
        journal_of = _journals.get()
        journal = journal_of(ctx.invocation_id) if journal_of is not None else None
        if journal is None or _in_node.get() is journal:
            async for item in original(self, ctx=ctx, node_input=node_input):
                yield item
            return
        for item in await _journaled(journal, original, self, ctx, node_input):
            yield item

    setattr(_run_impl, _ORIGINAL, original)
    FunctionNode._run_impl = _run_impl  # type: ignore[method-assign]


async def _journaled(journal: Journal, original: Any, node: FunctionNode, ctx: Context,
                     node_input: Any) -> list[Any]:
    """The node's yielded items: replayed from the journal, or made live inside the step."""
    if node.require_confirmation or node.auth_config is not None:
        raise ConfigurationError(
            f"function node {node.name!r} asks for a confirmation or credentials: human input inside an ADK graph "
            "workflow is not made durable by Agentspan (use @agentspan.tool(approval_required=True) on the node's "
            "function instead, or run the workflow without Agentspan)")
    key = f"{journal.prefix}{ctx.node_path}/node"
    await journal.check_workflow_root(ctx.node_path)
    step_input: dict[str, JSON] = {"node": node.name, "input": to_json(node_input)}
    made: list[list[Any]] = []

    async def live() -> list[Any]:
        token = _in_node.set(journal)  # (nodes it runs itself are part of this step)
        try:
            items = [_check(node, item) async for item in original(node, ctx=ctx, node_input=node_input)]
        finally:
            _in_node.reset(token)
        made.append(items)
        return items

    def dump(items: list[Any]) -> JSON:
        return {"events": [_dump_event(e) for e in items], **_left_on(ctx)}

    # A tool call's step: the function's @agentspan.tool options (an approval bound to the node's
    # input, the in-doubt policy) apply as to a tool's; a pending approval ends the attempt
    # (`ApprovalPending`) and the next one runs the workflow again from START, replaying to here.
    recorded = await journal.run.tool(key=key, name=node.name, args=step_input, invoke=live,
                                      options=_options_of(node), dump=dump)
    if made:  # made live just now: ADK gets the very events the function made
        return made[0]
    if isinstance(recorded, str):  # rejected (on_reject="continue"): as ADK's own rejected confirmation
        return [Event(output={"error": recorded})]
    if not isinstance(recorded, dict):  # pragma: no cover - every node step's value is one of those
        raise ConfigurationError(f"journaled step {key!r} is no function node's execution")
    _restore_left(ctx, recorded)
    return [_load_event(e) for e in recorded.get("events") or []]


def _options_of(node: FunctionNode) -> ToolOptions:
    """The ``@agentspan.tool`` options of the node's function (set on it or on what it wraps)."""
    for func in (getattr(node, "_func", None), getattr(node, "_unwrapped_func", None)):
        found = tool_options(func) if func is not None else None
        if found is not None:
            return found
    return DEFAULT_TOOL_OPTIONS


def _left_on(ctx: Context) -> dict[str, JSON]:
    """What the node left on its context, for ADK to flush in an event of its own once it returns
    (`_node_runner._flush_output_and_deltas`): the state and artifact deltas no yielded event
    carried, and an output or route set on the context instead of yielded. (The node's events
    reach ADK only after this: the context's output and route are the function's own.)"""
    left: dict[str, JSON] = {"left": _json_mode(dict(ctx.actions.state_delta))}
    if ctx.actions.artifact_delta:
        left["artifacts"] = _json_mode(dict(ctx.actions.artifact_delta))
    if ctx.output is not None:
        left["output"] = to_json(ctx.output)
    if ctx.route is not None:
        left["route"] = _json_mode(ctx.route)
    return left


def _restore_left(ctx: Context, recorded: dict[str, JSON]) -> None:
    """Puts back what `_left_on` journaled (ADK flushes it after the replayed events, as live)."""
    left, artifacts = recorded.get("left"), recorded.get("artifacts")
    if isinstance(left, dict):
        ctx.actions.state_delta.update(left)
    if isinstance(artifacts, dict):
        ctx.actions.artifact_delta.update(artifacts)  # type: ignore[arg-type]
    if recorded.get("output") is not None:
        ctx.output = recorded["output"]
    if recorded.get("route") is not None:
        ctx.route = recorded["route"]  # type: ignore[assignment]


def _check(node: FunctionNode, item: Any) -> Any:
    if isinstance(item, RequestInput):
        raise ConfigurationError(
            f"function node {node.name!r} asked for human input (RequestInput): not made durable by Agentspan in an "
            "ADK graph workflow (use @agentspan.tool(approval_required=True) on the node's function, or run the "
            "workflow without Agentspan)")
    return item


def _json_mode(value: Any) -> JSON:
    """``value`` as pydantic's JSON mode gives it (bytes as base64, as `_codec.dump_actions`)."""
    data: JSON = to_jsonable_python(value, fallback=str, bytes_mode="base64")
    return data


def _dump_event(event: Event) -> JSON:
    # JSON mode: bytes (an image Part's Blob.data, bytes in a state delta) as base64, never an
    # error after the node's side effect ran; `Event.model_validate` reads a Blob's back as bytes
    data: dict[str, JSON] = event.model_dump(include=_EVENT_FIELDS, exclude_none=True, mode="json", fallback=str)
    if event.output is not None:
        data["output"] = to_json(event.output)  # (as a tool's result: UTF-8 text, base64 when no text)
    return data


def _load_event(data: JSON) -> Event:
    return Event.model_validate(data)
