"""Runs a live tool call inside its journal step by wrapping the tool's ``run_async``.

ADK's plugin callbacks surround a tool call (``before_tool_callback`` / ``after_tool_callback``)
but cannot run it. For a call to be journaled ``started`` before and ``completed`` after, with
``agentspan.current_step()`` visible inside the tool and an in-flight call known after a crash,
the journal step has to enclose the call itself. ``before_tool_callback`` therefore parks the
call in a context variable (each of ADK's tool calls runs in its own task and context) and makes
sure the tool instance's ``run_async`` is wrapped: the wrapper takes the parked call and runs the
original ``run_async`` inside the step. A call that was not parked for this very `ToolContext`
(the tool used outside a durable run, or by another runner) goes straight to the original.

ADK's own steps between the two (agent ``before_tool_callback`` functions, the confirmation gate
of ``require_confirmation`` tools) keep running exactly as without Agentspan. In a mock run the
call goes to the tool's stand-in instead (`agentspan_adk._mock.live_call`).
"""

from __future__ import annotations

import contextvars
from typing import Any

from google.adk.tools import BaseTool, ToolContext

from agentspan_adk import _mock
from agentspan_adk._journal import ToolCall

_WRAPPED = "__agentspan_adk_original__"
_parked: contextvars.ContextVar[ToolCall | None] = contextvars.ContextVar("agentspan_adk_tool_call", default=None)


def park(call: ToolCall) -> None:
    """Hands a live call to the tool's wrapped ``run_async`` (same task, same context)."""
    wrap(call.tool)
    _parked.set(call)


def wrap(tool: BaseTool) -> None:
    """Wraps ``tool.run_async`` once (idempotent)."""
    wrapped = vars(tool).get("run_async")  # (the wrapper is an instance attribute)
    if wrapped is not None and getattr(wrapped, _WRAPPED, None) is not None:
        return
    original = tool.run_async

    async def run_async(*, args: dict[str, Any], tool_context: ToolContext) -> Any:
        call = _parked.get()
        if call is None or call.tool_context is not tool_context:
            return await original(args=args, tool_context=tool_context)
        _parked.set(None)
        return await call.journal.execute(call, _mock.live_call(
            call.tool, args, tool_context, lambda: original(args=args, tool_context=tool_context)))

    setattr(run_async, _WRAPPED, original)
    tool.run_async = run_async  # type: ignore[method-assign]
