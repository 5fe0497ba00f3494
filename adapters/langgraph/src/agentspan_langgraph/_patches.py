"""Where model and tool calls inside nodes are intercepted: four wrapt patches on langchain-core,
and four on ``Pregel`` for graphs invoked directly with an `AgentspanSaver`.

LangChain's callbacks see every call but cannot replace a result, so the journal hooks the
methods every chat model and tool goes through (frameworks.md section 2):

- ``BaseChatModel._generate_with_cache`` / ``_agenerate_with_cache``: one model call, after the
  messages are prepared and before LangChain's cache and the provider; callbacks
  (``on_chat_model_start``/``on_llm_end``, so LangSmith traces) still fire on a replay;
- ``BaseTool.run`` / ``arun``: one tool call, with its ``tool_call_id``.

``Pregel.invoke`` / ``ainvoke`` / ``stream`` / ``astream`` open a run per top-level invocation of a
graph whose checkpointer is an `AgentspanSaver` (`agentspan_langgraph._direct`); every other
invocation passes straight through.

The patches are installed once per process and do nothing unless the call happens inside a
durable LangGraph run (`agentspan_langgraph._context.current`) or a mock run
(`agentspan_langgraph._mock`: the live call is then the scripted answer or the tool's stand-in).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import wrapt

from agentspan_langgraph._calls import journal_model_call, journal_tool_call
from agentspan_langgraph._context import call_sync, current
from agentspan_langgraph._mock import scripted_model_call, scripted_tool_call

T = TypeVar("T")

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
        for entry in ("invoke", "ainvoke", "stream", "astream"):
            wrapt.wrap_function_wrapper("langgraph.pregel.main", f"Pregel.{entry}", _direct_entry(entry))
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
    messages, stop, metadata, options = _model_call(args, kwargs)
    live = scripted_model_call(options) or (lambda: wrapped(*args, **kwargs))
    if invocation is None:
        return live()
    return call_sync(invocation,
                     lambda live: journal_model_call(invocation, instance, messages, stop, metadata, options, live),
                     live)


async def _agenerate(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    invocation = current()
    messages, stop, metadata, options = _model_call(args, kwargs)
    scripted = scripted_model_call(options)
    live = _awaitable(scripted) if scripted is not None else (lambda: wrapped(*args, **kwargs))
    if invocation is None:
        return await live()
    return await journal_model_call(invocation, instance, messages, stop, metadata, options, live)


def _tool_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, str | None, Any]:
    """Picks ``tool_input``, ``tool_call_id`` and the run metadata out of ``BaseTool.run`` arguments."""
    tool_input = args[0] if args else kwargs.get("tool_input")
    config = kwargs.get("config") or {}
    metadata = kwargs.get("metadata") or config.get("metadata")
    return tool_input, kwargs.get("tool_call_id"), metadata


def _run_tool(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    invocation = current()
    tool_input, tool_call_id, metadata = _tool_call(args, kwargs)
    live = scripted_tool_call(instance, tool_input, tool_call_id) or (lambda: wrapped(*args, **kwargs))
    if invocation is None:
        return live()
    return call_sync(invocation,
                     lambda live: journal_tool_call(invocation, instance, tool_input, tool_call_id, metadata, live),
                     live)


async def _arun_tool(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    invocation = current()
    tool_input, tool_call_id, metadata = _tool_call(args, kwargs)
    scripted = scripted_tool_call(instance, tool_input, tool_call_id)
    live = _awaitable(scripted) if scripted is not None else (lambda: wrapped(*args, **kwargs))
    if invocation is None:
        return await live()
    return await journal_tool_call(invocation, instance, tool_input, tool_call_id, metadata, live)


def _direct_entry(entry: str) -> Callable[..., Any]:
    """The patch of ``Pregel.<entry>``: a direct run (`_direct.<entry>`) when `_direct.plan` finds one."""

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from agentspan_langgraph import _direct  # (it imports the adapter, which imports this module)

        direct = _direct.plan(instance, args, kwargs)
        return wrapped(*args, **kwargs) if direct is None else getattr(_direct, entry)(direct, wrapped)

    return wrapper


def _awaitable(call: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def run() -> T:
        return call()

    return run
