"""Journaling of ADK 2 graph workflow nodes that no callback reaches: ``FunctionNode``s.

A ``FunctionNode`` runs plain Python (``node_input`` in, an output, a route and state changes
out) and fires no plugin callback. `install` wraps ``FunctionNode._run_impl`` once, at class level
(a workflow copies its nodes with ``model_copy``, so an instance attribute would not follow). The
wrapper journals a node only inside a journaled invocation (`bind` sets a context variable the
workflow's node tasks inherit); anywhere else it is ADK's own method.

One step per node execution, keyed by the node's path in the graph (``flow@1/fetch@1/node``)
with the prefix of the enclosing journal; its input hash covers the node's name and its input,
so a node whose ``@n`` went to another trigger (or whose input changed) diverges instead of
replaying another execution's output. The step's value is what the node yielded, as JSON events
(output, content, route, state and artifact deltas), plus the state delta left on the node's
context at its end. A completed step is replayed by yielding those events again, without calling
the function; a live one runs the whole function inside the step (`agentspan.current_step` works
in it; its events are handed to ADK when it returns).

Not journaled: a ``FunctionNode`` run by another journaled one (``ctx.run_node``): it is part of
its parent's step (run again with it when that step was in flight at a crash). Refused
(`ConfigurationError`): a node with ``require_confirmation`` or an ``auth_config``, and a node
that yields a ``RequestInput`` (human input inside a workflow is not made durable).
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
from agentspan.hashing import digest
from agentspan.records import JSON, StepKind
from agentspan_adk._journal import Journal
from agentspan_adk._reading import to_json

__all__ = ["bind", "install"]

_EVENT_FIELDS = {"content", "actions", "output", "custom_metadata"}
"""What a node's event carries that the journal keeps (ADK fills in ids, author, paths, times)."""

_journals: contextvars.ContextVar[Callable[[str], Journal | None] | None] = contextvars.ContextVar(
    "agentspan_adk_node_journals", default=None)
_in_node: contextvars.ContextVar[bool] = contextvars.ContextVar("agentspan_adk_in_node", default=False)
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
        journal = journal_of(ctx.invocation_id) if journal_of is not None and not _in_node.get() else None
        if journal is None:
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
            "workflow is not made durable by Agentspan (run the workflow without Agentspan, or ask in an agent's tool)")
    key = f"{journal.prefix}{ctx.node_path}/node"
    await journal.check_workflow_root(ctx.node_path)
    step_input: dict[str, JSON] = {"node": node.name, "input": to_json(node_input)}

    async def live() -> list[Any]:
        token = _in_node.set(True)  # (nodes it runs itself are part of this step)
        try:
            return [_check(node, item) async for item in original(node, ctx=ctx, node_input=node_input)]
        finally:
            _in_node.reset(token)

    def dump(items: list[Any]) -> JSON:
        return {"events": [_dump_event(e) for e in items], "left": to_json(dict(ctx.actions.state_delta))}

    recorded = await journal.run.step(kind=StepKind.TOOL, key=key, name=node.name, input=step_input,
                                      input_hash=digest(step_input), invoke=live, dump=dump, load=_identity)
    if isinstance(recorded, list):  # made live just now: ADK gets the very events the function made
        return recorded
    ctx.actions.state_delta.update(recorded.get("left") or {})  # (ADK flushes what no event carried)
    return [Event.model_validate(e) for e in recorded.get("events") or []]


def _check(node: FunctionNode, item: Any) -> Any:
    if isinstance(item, RequestInput):
        raise ConfigurationError(
            f"function node {node.name!r} asked for human input (RequestInput): not made durable by Agentspan in an "
            "ADK graph workflow (run the workflow without Agentspan, or ask in an agent's tool)")
    return item


def _dump_event(event: Event) -> JSON:
    data: JSON = to_jsonable_python(event.model_dump(include=_EVENT_FIELDS, exclude_none=True), fallback=str)
    return data


def _identity(value: Any) -> Any:
    return value

