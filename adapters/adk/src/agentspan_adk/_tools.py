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

A tool that raises is answered by ADK's ``on_tool_error_callback`` functions (of plugins, such as
``ReflectAndRetryToolPlugin``, then of the agent) after ``run_async`` returns, i.e. after the step
ended. The wrapper therefore asks them inside the step: their answer is the call's result,
journaled ``completed`` with the error noted (`agentspan.StepInfo.handled_error`), so a resumed
run replays the answer instead of running the tool again. When none answers, the error goes on to
ADK, which asks them once more (as they answered nothing, the second asking answers nothing too).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from google.adk.flows.llm_flows.tools._error_handler import run_on_tool_error_callbacks
from google.adk.tools import BaseTool, ToolContext

import agentspan
from agentspan.errors import AgentspanError
from agentspan.jsontext import error_text
from agentspan_adk import _mock
from agentspan_adk._journal import ToolCall
from agentspan_adk._reading import invocation_of

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
        return await call.journal.execute(call, _answering_errors(call, args, _mock.live_call(
            call.tool, args, tool_context, lambda: original(args=args, tool_context=tool_context))))

    setattr(run_async, _WRAPPED, original)
    tool.run_async = run_async  # type: ignore[method-assign]


def _answering_errors(call: ToolCall, args: dict[str, Any],
                      invoke: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """``invoke``, with an error ADK's ``on_tool_error_callback`` functions answer turned into
    that answer (noted on the step as a handled error)."""
    async def call_answering_errors() -> Any:
        try:
            return await invoke()
        except AgentspanError:  # the core's own (a nested run's): never the tool's to answer
            raise
        except Exception as error:
            answer = None
            with contextlib.suppress(Exception):  # (a callback that raises: ADK asks it again)
                answer = await _error_answer(call, args, error)
            if answer is None:
                raise
            step = agentspan.current_step()
            if step is not None:
                step.handled_error(error_text(error))
            return answer

    return call_answering_errors


async def _error_answer(call: ToolCall, args: dict[str, Any], error: Exception) -> Any:
    """What ADK's ``on_tool_error_callback`` functions answer ``error`` with, asked as ADK asks
    them (its own ``run_on_tool_error_callbacks``: the plugins' first, then the agent's, each
    called with the arguments its signature takes, up to the first answer; None: no answer)."""
    ic = invocation_of(call.tool_context)
    # the ignore: ADK 2 types ic.agent BaseAgent | BaseNode | None; in a tool call it is the LlmAgent calling
    return await run_on_tool_error_callbacks(invocation_context=ic, agent=ic.agent, tool=call.tool,  # type: ignore[arg-type]
                                             tool_args=args, tool_context=call.tool_context, error=error)
