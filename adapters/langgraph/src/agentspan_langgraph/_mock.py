"""`agentspan.testing.mock_run` for LangGraph: scripted answers for every chat model a graph calls,
and tool stand-ins.

Both hook into the adapter's existing patch points (`agentspan_langgraph._patches`), through the
part that makes the live call: in a mock run (a context variable set for the run's scope) a
``BaseChatModel._generate_with_cache`` call returns an `AIMessage` built from the next scripted
turn instead of reaching the provider, whatever the model class, and a stubbed ``BaseTool.run``
returns the stand-in's result. The journal, approvals and replay around them are unchanged, so the
trail shows the graph's real model names. A model called through ``stream()`` directly (not via
``invoke``) bypasses ``_generate_with_cache`` and is not scripted.
"""

from __future__ import annotations

import json
import re
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.messages.tool import ToolOutputMixin
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool
from pydantic_core import to_jsonable_python

import agentspan
from agentspan.testing import MockSetup, StandIns, context_scope
from agentspan_langgraph._calls import tool_args
from agentspan_langgraph._codec import from_json

_stand_ins: ContextVar[StandIns | None] = ContextVar("agentspan_langgraph_stand_ins", default=None)


def bound_tool_names(tools: Any) -> list[str] | None:
    """The names of the tools bound to a model call (``bind_tools``), in any provider's format.

    None when no tools are bound or a format is not recognised (the call is then not checked).
    """
    if not tools:
        return None
    names: list[str] = []
    for tool in tools:
        name = getattr(tool, "name", None) if not isinstance(tool, dict) else None
        if isinstance(tool, dict):
            function = tool.get("function")
            if isinstance(function, dict):
                name = function.get("name")
            elif isinstance(tool.get("function_declarations"), list):
                names.extend(str(d.get("name")) for d in tool["function_declarations"] if isinstance(d, dict))
                continue
            else:
                name = tool.get("name")
        if not isinstance(name, str):
            return None
        names.append(name)
    return names


def scripted_model_call(options: dict[str, Any]) -> Callable[[], ChatResult] | None:
    """In a mock run, the call answering a chat model call from the script; else None."""
    stand_ins = _stand_ins.get()
    if stand_ins is None:
        return None
    tools = bound_tool_names(options.get("tools"))

    def answer() -> ChatResult:
        turn = stand_ins.next_turn(tools=tools)
        message = AIMessage(
            content=turn.text, id=f"run-mock-{uuid.uuid4()}",
            tool_calls=[{"name": c.name, "args": c.args, "id": c.id, "type": "tool_call"} for c in turn.calls],
            usage_metadata={"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens,
                            "total_tokens": turn.input_tokens + turn.output_tokens})
        return ChatResult(generations=[ChatGeneration(message=message)])

    return answer


def scripted_tool_call(tool: BaseTool, tool_input: Any, tool_call_id: str | None) -> Callable[[], Any] | None:
    """In a mock run, the call of a stubbed tool's stand-in, shaped as ``BaseTool.run``'s result; else None."""
    stand_ins = _stand_ins.get()
    if stand_ins is None or tool.name not in stand_ins.stubbed:
        return None

    def answer() -> Any:
        result = stand_ins.call_stub(tool.name, tool_args(tool, tool_input))
        if tool_call_id is None or isinstance(result, ToolOutputMixin):
            return result
        content = result if isinstance(result, str) else json.dumps(to_jsonable_python(result, fallback=str))
        return ToolMessage(content, tool_call_id=tool_call_id, name=tool.name)

    return answer


def _input_for(target: Any) -> Callable[[Any], Any]:
    """`MockSetup.input`: a str becomes a user message for a graph whose input has a ``messages``
    channel; any other input (and a str for any other graph: an ``@entrypoint`` taking a str) as is."""
    if not _takes_messages(target):
        return lambda value: value
    return lambda value: {"messages": [{"role": "user", "content": value}]} if isinstance(value, str) else value


def _takes_messages(target: Any) -> bool:
    """Whether the graph's input has a ``messages`` channel."""
    builder = getattr(target, "builder", None)  # a compiled StateGraph: the channels of its input schema
    schemas, schema = getattr(builder, "schemas", None), getattr(builder, "input_schema", None)
    if isinstance(schemas, Mapping) and schema in schemas:
        return "messages" in schemas[schema]
    try:  # any other Pregel (an ``@entrypoint``): what its input's JSON schema says
        schema_json = target.get_input_jsonschema()
    except Exception:  # a type with no JSON schema, or one LangGraph cannot resolve (a string annotation)
        return "messages" in getattr(target, "channels", {}) or _annotated_messages(target)
    ref = schema_json.get("$ref")  # a TypedDict or pydantic input (``MessagesState``): its definition
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        schema_json = (schema_json.get("$defs") or {}).get(ref.removeprefix("#/$defs/")) or {}
    properties = schema_json.get("properties")
    return isinstance(properties, Mapping) and "messages" in properties


def _annotated_messages(target: Any) -> bool:
    """Whether an ``@entrypoint``'s function takes a mapping with a ``messages`` key by its
    annotation (``state: MessagesState``), read with the function's own globals."""
    nodes = getattr(target, "nodes", None) or {}
    func = getattr(getattr(next(iter(nodes.values()), None), "bound", None), "func", None) if len(nodes) == 1 else None
    if func is None:
        return False
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an annotation that does not resolve
        return False
    first = next((hint for name, hint in hints.items() if name != "return"), None)
    return "messages" in getattr(first, "__annotations__", {})


_TASK_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_NAMESPACE = re.compile(rf"^(?:[^|]+?:{_TASK_ID}\|)*[^|]+?:{_TASK_ID}(?=/|$)")
"""A key's checkpoint namespace: ``node:<task id>`` segments joined by ``|`` (a node name has no
``|``; a task's may hold a ``:``, ``@task(name="fetch:v2")``)."""


def stable_key(key: str) -> str:
    """`MockSetup.stable_key`: a step key without its task ids, which LangGraph derives from the
    checkpoint a task starts from and so change from run to run (``agent:2fea…/llm:0`` ->
    ``agent/llm:0``; ``flow:…|step:…/llm:0`` -> ``flow|step/llm:0``). Only the namespace loses
    them: what follows it (a tool call id) is kept as is."""
    match = _NAMESPACE.match(key)
    if match is None:
        return key
    return re.sub(f":{_TASK_ID}", "", match.group()) + key[match.end():]


def _final_output(result: Any) -> Any:
    messages = result.get("messages") if isinstance(result, dict) else None
    if isinstance(messages, list) and messages and isinstance(messages[-1], BaseMessage):
        return messages[-1].content
    return result


def _tool_result(output: Any) -> Any:
    value = from_json(output)
    return value.content if isinstance(value, ToolMessage) else value


def _nodes(steps: Sequence[agentspan.Step]) -> list[str]:
    return [s.name or "" for s in steps if s.kind is agentspan.StepKind.CHECKPOINT]


def mock_setup(target: Any, stand_ins: StandIns, options: dict[str, Any]) -> MockSetup:
    """The adapter's `Adapter.mock` hook.

    A str input becomes ``{"messages": [user message]}`` when the graph's input has a
    ``messages`` channel; the output is the last message's content; ``handoff_to(name)`` checks
    that node ``name`` ran; ``crash_at`` matches keys without their task ids (`stable_key`).
    Stand-ins are not checked against the graph's tools (a node may call tools that no
    ``ToolNode`` lists).
    """

    return MockSetup(scope=context_scope(_stand_ins, stand_ins), input=_input_for(target),
                     final_output=_final_output, tool_result=_tool_result, handoffs=_nodes, stable_key=stable_key)
