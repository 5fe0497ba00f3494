"""JSON for what crosses the durable boundary: run inputs and outputs, journaled model results,
tool results and node updates.

LangChain objects (messages, documents) use langchain-core's own format (``dumpd``, revived by
``load`` restricted to message and document classes: nothing else is ever instantiated).
LangGraph's `Command` and `Send` get a tagged form. Pydantic models and dataclasses become plain
dicts (LangGraph accepts a dict wherever a state object is expected). Anything else that is not
JSON becomes its ``str``: lossy, but never pickled.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

from langchain_core.documents import Document
from langchain_core.load import dumpd, load
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)
from langgraph.types import Command, Interrupt, Send
from pydantic import BaseModel

from agentspan.records import JSON

_TAG = "__agentspan_lg__"
_REVIVABLE = (AIMessage, AIMessageChunk, HumanMessage, HumanMessageChunk, SystemMessage, SystemMessageChunk,
              ToolMessage, ToolMessageChunk, RemoveMessage, Document)
"""The only classes `from_json` instantiates."""


def to_json(value: Any) -> JSON:
    """Converts a LangGraph value (state, update, tool result, ...) to JSON that `from_json` revives."""
    return dumpd(_prepare(value))


def from_json(data: JSON) -> Any:
    """Revives what `to_json` produced: messages and documents as objects, Commands and Sends too."""
    if data is None or isinstance(data, (str, int, float, bool)):
        return data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ``load`` is marked beta
        revived = load(data, allowed_objects=_REVIVABLE)
    return _restore(revived)


def _prepare(value: Any) -> Any:
    """Leaves revivable LangChain objects for ``dumpd``; turns everything else into JSON shapes."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, _REVIVABLE):
        return value
    if isinstance(value, Mapping):
        return {str(k): _prepare(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_prepare(v) for v in value]
    if isinstance(value, Command):
        return {_TAG: "command", "graph": value.graph, "update": _prepare(value.update),
                "resume": _prepare(value.resume), "goto": _prepare(value.goto)}
    if isinstance(value, Send):
        return {_TAG: "send", "node": value.node, "arg": _prepare(value.arg)}
    if isinstance(value, Interrupt):
        return {_TAG: "interrupt", "id": value.id, "value": _prepare(value.value)}
    if isinstance(value, BaseMessage):  # a message class outside the allowlist (custom subclass)
        return _prepare(value.model_dump())
    if isinstance(value, BaseModel):
        return {name: _prepare(getattr(value, name)) for name in type(value).model_fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _prepare(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)  # includes LangChain objects outside the allowlist (models, prompts)


def _restore(value: Any) -> Any:
    """Revives the tagged `Command`/`Send`/`Interrupt` forms inside an already loaded value."""
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag == "command":
        goto = _restore(value["goto"])
        return Command(graph=value["graph"], update=_restore(value["update"]), resume=_restore(value["resume"]),
                       goto=tuple(goto) if isinstance(goto, list) else goto)
    if tag == "send":
        return Send(value["node"], _restore(value["arg"]))
    if tag == "interrupt":
        return Interrupt(value=_restore(value["value"]), id=value["id"])
    return {k: _restore(v) for k, v in value.items()}
