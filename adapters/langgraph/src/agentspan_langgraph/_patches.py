"""Where model and tool calls inside nodes are intercepted: four wrapt patches on langchain-core.

LangChain's callbacks see every call but cannot replace a result, so the journal hooks the
methods every chat model and tool goes through (frameworks.md section 2):

- ``BaseChatModel._generate_with_cache`` / ``_agenerate_with_cache``: one model call, after the
  messages are prepared and before LangChain's cache and the provider; callbacks
  (``on_chat_model_start``/``on_llm_end``, so LangSmith traces) still fire on a replay;
- ``BaseTool.run`` / ``arun``: one tool call, with its ``tool_call_id``.

The patches are installed once per process and do nothing unless the call happens inside a
durable LangGraph run (`agentspan_langgraph._context.current`).
"""

from __future__ import annotations

import threading
from typing import Any

import wrapt

from agentspan_langgraph._calls import journal_model_call, journal_tool_call
from agentspan_langgraph._context import call_sync, current

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Installs the patches (idempotent, thread-safe)."""
    global _installed
    with _lock:
        if _installed:
            return
        chat_models = "langchain_core.language_models.chat_models"
        wrapt.wrap_function_wrapper(chat_models, "BaseChatModel._generate_with_cache", _generate)
        wrapt.wrap_function_wrapper(chat_models, "BaseChatModel._agenerate_with_cache", _agenerate)
        wrapt.wrap_function_wrapper("langchain_core.tools.base", "BaseTool.run", _run_tool)
        wrapt.wrap_function_wrapper("langchain_core.tools.base", "BaseTool.arun", _arun_tool)
        _installed = True


def _model_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Splits ``_generate_with_cache(messages, stop=None, run_manager=None, **kwargs)`` arguments."""
    rest = dict(kwargs)
    messages = args[0] if args else rest.pop("messages")
    stop = args[1] if len(args) > 1 else rest.pop("stop", None)
    run_manager = args[2] if len(args) > 2 else rest.pop("run_manager", None)
    return messages, stop, getattr(run_manager, "metadata", None), rest


def _generate(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    invocation = current()
    if invocation is None:
        return wrapped(*args, **kwargs)
    messages, stop, metadata, options = _model_call(args, kwargs)
    return call_sync(invocation,
                     lambda live: journal_model_call(invocation, instance, messages, stop, metadata, options, live),
                     lambda: wrapped(*args, **kwargs))


async def _agenerate(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    invocation = current()
    if invocation is None:
        return await wrapped(*args, **kwargs)
    messages, stop, metadata, options = _model_call(args, kwargs)
    return await journal_model_call(invocation, instance, messages, stop, metadata, options,
                                    lambda: wrapped(*args, **kwargs))


def _tool_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, str | None, Any]:
    """Picks ``tool_input``, ``tool_call_id`` and the run metadata out of ``BaseTool.run`` arguments."""
    tool_input = args[0] if args else kwargs.get("tool_input")
    config = kwargs.get("config") or {}
    metadata = kwargs.get("metadata") or config.get("metadata")
    return tool_input, kwargs.get("tool_call_id"), metadata


def _run_tool(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    invocation = current()
    if invocation is None:
        return wrapped(*args, **kwargs)
    tool_input, tool_call_id, metadata = _tool_call(args, kwargs)
    return call_sync(invocation,
                     lambda live: journal_tool_call(invocation, instance, tool_input, tool_call_id, metadata, live),
                     lambda: wrapped(*args, **kwargs))


async def _arun_tool(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    invocation = current()
    if invocation is None:
        return await wrapped(*args, **kwargs)
    tool_input, tool_call_id, metadata = _tool_call(args, kwargs)
    return await journal_tool_call(invocation, instance, tool_input, tool_call_id, metadata,
                                   lambda: wrapped(*args, **kwargs))
