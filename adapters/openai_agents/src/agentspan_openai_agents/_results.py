"""What a journaled function tool call hands the SDK: its result typed as the function declares.

The journal keeps a tool's result as JSON (`agentspan.tools.jsonable_result`), and a replayed
call can only give back what the journal holds. So that a live call and its replay hand the SDK
the same value (the model then reads the same text, and a ``tool_use_behavior`` or hook reading
the result gets the same object), both go through the same conversion: the JSON form, validated
as the function's declared return type. A tool declaring ``-> Invoice`` (a pydantic model), a
dataclass, ``tuple[int, int]``, ``datetime`` or ``bytes`` gets one back, as under the plain
``Runner``; one that declares nothing, or a JSON type, gets the JSON form; a result its own
declaration does not validate stays JSON (the same on every execution).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from agents import FunctionTool
from pydantic import TypeAdapter, ValidationError

from agentspan.records import JSON

Loader = Callable[[JSON], Any]

_AS_JSON: tuple[Any, ...] = (inspect.Signature.empty, Any, object, str, int, bool, None, type(None), dict, list)
"""Declared return types whose JSON form is the value itself (nothing to convert)."""


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
