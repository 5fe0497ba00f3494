"""JSON for what crosses the durable boundary: run inputs and outputs, journaled model results,
tool results and node updates.

LangChain objects (messages, documents) use langchain-core's own format (``dumpd``, revived by
``load`` restricted to message and document classes: nothing else is ever instantiated).
LangGraph's `Command` and `Send` get a tagged form. Pydantic models and dataclasses become plain
dicts (LangGraph accepts a dict wherever a state object is expected). Anything else that is not
JSON becomes its ``str``: lossy, but never pickled.

What a call hands back to the graph (a tool's result, a model's reply: `to_exact_json`) must be
the same objects live and replayed, and the ones the call returned: there, what JSON cannot hold
(a pydantic model, a set, a datetime, bytes, a dict with other keys than strings, in a message's
``additional_kwargs`` or a tool message's ``artifact`` too) is kept in the form LangGraph's own
serializer gives it in checkpoints (``JsonPlusSerializer``, msgpack, base64 in the JSON), beside
its lossy JSON form (shown in the trail; handed back where the serializer cannot revive it). A
tuple comes back a list, as from LangGraph's checkpoints; a class another process could not
import (one of ``__main__``, or defined in a function) keeps its JSON form only, so a run resumed
anywhere gets what its first attempt got.
"""

from __future__ import annotations

import base64
import dataclasses
import math
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
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
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


def to_exact_json(value: Any) -> JSON:
    """`to_json` of a value a call hands back to the graph: `from_json` revives it as it was (what
    JSON cannot hold in LangGraph's serializer's form)."""
    return dumpd(_prepare(value, exact=True))


def from_json(data: JSON) -> Any:
    """Revives what `to_json` produced: messages and documents as objects, Commands and Sends too."""
    if data is None or isinstance(data, (str, int, float, bool)):
        return data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ``load`` is marked beta
        revived = load(data, allowed_objects=_REVIVABLE)
    return _restore(revived)


def _prepare(value: Any, exact: bool = False, brief: bool = False) -> Any:
    """Leaves revivable LangChain objects for ``dumpd``; turns everything else into JSON shapes
    (``exact``: what JSON cannot hold kept in the serializer's form too, `_exactly`; ``brief``:
    bytes as their length, in the JSON form beside the serializer's)."""
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return value if not exact or math.isfinite(value) else _exactly(value, value)
    if isinstance(value, _REVIVABLE):
        return _message_fields(value) if exact else value
    if isinstance(value, Mapping):
        if exact and not all(type(k) is str for k in value):  # keys JSON cannot hold: the whole mapping
            return _exactly(value, {str(k): _prepare(v, brief=True) for k, v in value.items()})
        return {str(k): _prepare(v, exact, brief) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        if exact and isinstance(value, (set, frozenset)):
            return _exactly(value, [_prepare(v, brief=True) for v in value])
        return [_prepare(v, exact, brief) for v in value]  # a tuple: a list (as from LangGraph's own checkpoints)
    if isinstance(value, Command):
        return {_TAG: "command", "graph": value.graph, "update": _prepare(value.update, exact),
                "resume": _prepare(value.resume, exact), "goto": _prepare(value.goto, exact)}
    if isinstance(value, Send):
        return {_TAG: "send", "node": value.node, "arg": _prepare(value.arg, exact)}
    if isinstance(value, Interrupt):
        return {_TAG: "interrupt", "id": value.id, "value": _prepare(value.value, exact)}
    if isinstance(value, BaseMessage):  # a message class outside the allowlist (custom subclass)
        lossy = _prepare(value.model_dump(), brief=exact or brief)
    elif isinstance(value, BaseModel):
        lossy = {name: _prepare(getattr(value, name), brief=exact or brief) for name in type(value).model_fields}
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        lossy = {f.name: _prepare(getattr(value, f.name), brief=exact or brief) for f in dataclasses.fields(value)}
    elif (exact or brief) and isinstance(value, bytes | bytearray):
        lossy = f"<{len(value)} bytes>"  # (the serializer always takes bytes: no long text beside them)
    else:
        lossy = str(value)  # includes LangChain objects outside the allowlist (models, prompts)
    return _exactly(value, lossy) if exact else lossy


_MESSAGE_FIELDS = ("additional_kwargs", "response_metadata", "artifact", "metadata")
"""The fields of messages and documents that hold arbitrary values (``dumpd`` refuses what is not JSON)."""


def _message_fields(message: Any) -> Any:
    """A copy of a message (or document) whose free-form fields are prepared exactly."""
    update = {name: _prepare(getattr(message, name), exact=True) for name in _MESSAGE_FIELDS
              if getattr(message, name, None) is not None}
    return message.model_copy(update=update) if update else message


_serde = JsonPlusSerializer()


def _exactly(value: Any, lossy: Any) -> Any:
    """``value`` in the serializer's form, tagged with its class, beside its ``lossy`` JSON form
    (that alone when the serializer refuses it, or when another process could not import a class
    in it: one of ``__main__`` or defined in a function; such a value is its JSON form live and
    replayed alike, wherever the run is resumed)."""
    if not _importable(value):
        return lossy
    try:
        kind, data = _serde.dumps_typed(value)
    except Exception:
        return lossy
    return {_TAG: "serde", "type": kind, "data": base64.b64encode(data).decode("ascii"), "class": _class_of(value),
            "json": lossy}


def _class_of(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _importable(value: Any, depth: int = 0) -> bool:
    """Whether every class in ``value`` can be imported by name in another process."""
    kind = type(value)
    if kind.__module__ == "__main__" or "<locals>" in kind.__qualname__ or depth > 64:
        return False
    if isinstance(value, Mapping):
        return all(_importable(k, depth + 1) and _importable(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_importable(v, depth + 1) for v in value)
    if isinstance(value, BaseModel):
        return all(_importable(getattr(value, name), depth + 1) for name in type(value).model_fields)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_importable(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value))
    return True


def _restore(value: Any) -> Any:
    """Revives the tagged `Command`/`Send`/`Interrupt` and serializer forms inside an already
    loaded value."""
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, _REVIVABLE):
        update = {name: _restore(getattr(value, name)) for name in _MESSAGE_FIELDS
                  if isinstance(getattr(value, name, None), dict | list)}
        return value.model_copy(update=update) if update else value
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag == "serde":
        try:
            revived = _serde.loads_typed((value["type"], base64.b64decode(value["data"])))
        except Exception:
            revived = None
        if revived is None or _class_of(revived) != value.get("class", _class_of(revived)):
            # not revived as it was (the serializer refused the class, or gave back its raw data)
            return _restore(value["json"])
        return revived
    if tag == "command":
        goto = _restore(value["goto"])
        return Command(graph=value["graph"], update=_restore(value["update"]), resume=_restore(value["resume"]),
                       goto=tuple(goto) if isinstance(goto, list) else goto)
    if tag == "send":
        return Send(value["node"], _restore(value["arg"]))
    if tag == "interrupt":
        return Interrupt(value=_restore(value["value"]), id=value["id"])
    return {k: _restore(v) for k, v in value.items()}
