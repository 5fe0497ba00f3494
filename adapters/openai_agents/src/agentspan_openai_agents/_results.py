"""What a journaled function tool call hands the SDK: its result typed as the function declares.

The journal keeps a tool's result as JSON (`agentspan.tools.jsonable_result`), and a replayed
call can only give back what the journal holds. So that a live call and its replay hand the SDK
the same value (the model then reads the same text, and a ``tool_use_behavior`` or hook reading
the result gets the same object), both go through the same conversion: the JSON form, validated
as the function's declared return type. A tool declaring ``-> Invoice`` (a pydantic model), a
dataclass, ``tuple[int, int]``, ``datetime`` or ``bytes`` gets one back, as under the plain
``Runner``; one that declares nothing, or a JSON type, gets the JSON form; a result its own
declaration does not validate stays JSON (the same on every execution).

The model reads what the SDK makes of that value: for a result it stringifies (neither text nor
the SDK's structured outputs, no output schema of the tool's, not a hosted program's call),
``str(value)``. Where an undeclared result is an object whose JSON form reads otherwise than the
result itself (a pydantic model or a dataclass, an ``Agent.as_tool`` of an agent with an
``output_type``, a tuple), the call is journaled, and handed to the SDK, as the result's own text
(`as_the_model_reads`), so the model reads what it reads under the plain ``Runner``, live and
replayed alike. A dict or a list stays JSON (hooks index it): a datetime in it reads as its ISO
text, an int key as a string.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from agents import FunctionTool, ItemHelpers
from pydantic import TypeAdapter, ValidationError

from agentspan.records import JSON
from agentspan.tools import jsonable_result

Loader = Callable[[JSON], Any]

_AS_JSON: tuple[Any, ...] = (inspect.Signature.empty, Any, object, str, int, bool, None, type(None), dict, list)
"""Declared return types whose JSON form is the value itself (nothing to convert)."""


def text_dump(tool: FunctionTool, loader: Loader | None) -> Callable[[Any], JSON] | None:
    """The journal form of ``tool``'s results when the SDK stringifies them for the model
    (`as_the_model_reads`); None: the default JSON form (a declared type is loaded back, or the
    tool's output schema has the SDK send JSON)."""
    if loader is not None or tool.output_json_schema is not None or getattr(tool, "_output_type_adapter", None):
        return None
    return as_the_model_reads


def as_the_model_reads(value: Any) -> JSON:
    """A result's JSON form, or its own text where the result is an object (not text, a number, a
    dict or a list, which hooks and a ``tool_use_behavior`` read as such) whose JSON form would
    read otherwise to the model (the SDK hands the model ``str(value)`` of a result that is not
    one of its structured outputs)."""
    form = jsonable_result(value)
    if value is None or isinstance(value, str | int | float | bool | dict | list):
        return form
    text = str(value)
    if text == str(form) or ItemHelpers._convert_tool_output_as_structured(value) is not None:
        return form  # reads alike, or the SDK sends it as structured items (its JSON form alike)
    return text


def programmatic(ctx: Any) -> bool:
    """Whether the tool call was made by a hosted program (the SDK sends such a result as JSON)."""
    caller = getattr(getattr(ctx, "tool_call", None), "caller", None)
    return (caller.get("type") if isinstance(caller, dict) else getattr(caller, "type", None)) == "program"


def result_loader(tool: FunctionTool) -> Loader | None:
    """The conversion of ``tool``'s journaled result into what the SDK gets (None: the JSON form
    itself), from the return type of the function ``function_tool`` made it of."""
    try:
        function = tool.__wrapped__
    except AttributeError:  # not made by `function_tool` (an MCP server's tool, a hand-made one)
        return None
    try:
        return _loader_for(function)
    except TypeError:  # a callable object that is not hashable: not cached
        return _loader_for.__wrapped__(function)


@functools.lru_cache(maxsize=1024)  # a tool is wrapped again for every run; a `TypeAdapter` costs far more
def _loader_for(function: Any) -> Loader | None:
    try:
        declared = inspect.signature(function, eval_str=True).return_annotation
    except Exception:  # a name the annotation uses is not resolvable: nothing to validate against
        return None
    if any(declared is plain for plain in _AS_JSON):
        return None
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(declared)
    except Exception:  # not a type pydantic can validate
        return None

    def load(value: JSON) -> Any:
        try:
            return adapter.validate_python(value)
        except ValidationError:
            return value

    return load
