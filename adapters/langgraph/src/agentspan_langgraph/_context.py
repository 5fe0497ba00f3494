"""Which run a call inside a graph belongs to, and the key it gets in that run's journal.

One `Invocation` lives for one ``graph.ainvoke`` of a durable run, in a contextvar that LangGraph
copies into every task (threads included), so the patched model and tool methods journal only
inside an Agentspan LangGraph run and pass straight through everywhere else.

Keys are derived from LangGraph's own task identity, never from timing:

- a model or tool call made by a node is scoped by the task's checkpoint namespace
  (``agent:<task id>``; ``outer:<task id>|inner:<task id>`` inside a subgraph). LangGraph derives
  task ids from the checkpoint the step started from, so a node re-executed after a crash or an
  interrupt has the same namespace (checkpoints are written with ``durability="sync"``);
- model calls count within their task (``agent:<task id>/llm:0``, ``/llm:1``...); when a
  ``RetryPolicy`` runs the node again, the calls of each further attempt are counted apart
  (``agent:<task id>/retry:1/llm:0``), so a resumed node that fails and retries the same way
  meets the same keys, and one that no longer fails does not run into its earlier retries;
- tool calls are keyed by the model's ``tool_call_id`` (``tools:<task id>/call:<id>``), so the
  parallel calls of a ``ToolNode`` keep their keys whatever order they finish in; a tool invoked
  without a tool call counts within its task (``/tool:0``);
- calls made inside a journaled tool are scoped by that tool's step key; calls made inside a
  journaled model call are part of it and are not journaled on their own.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from langchain_core.runnables.config import var_child_runnable_config

import agentspan
from agentspan.errors import AgentspanError
from agentspan.hashing import digest

T = TypeVar("T")

_invocation: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "agentspan_langgraph_invocation", default=None)


class Invocation:
    """Per-invoke state of a durable graph run: call counters per task and a digest memo.

    Args:
        run: The Agentspan run being executed.
    """

    def __init__(self, run: agentspan.ActiveRun) -> None:
        self.run = run
        self._counters: dict[tuple[str, str], int] = {}
        self._digests: dict[int, tuple[Any, str]] = {}
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.offload = bool(getattr(run.store, "blocking_io", False))
        """The store does network I/O (a server): journal writes must go through an event loop."""

    def task_started(self, ns: str) -> None:
        """Notes that the task ``ns`` starts (again, when LangGraph retries it)."""
        with self._lock:
            self._attempts[ns] = self._attempts.get(ns, -1) + 1

    def scope(self, metadata: Mapping[str, Any] | None) -> str:
        """Returns the key prefix of a call: the enclosing tool step, else the LangGraph task.

        Args:
            metadata: The call's run metadata (LangGraph puts ``langgraph_checkpoint_ns`` there).
        """
        step = agentspan.current_step()
        if step is not None and step.kind == "tool":
            return step.key
        ns = (metadata or {}).get("langgraph_checkpoint_ns")
        if not ns:
            config = var_child_runnable_config.get() or {}
            ns = config.get("metadata", {}).get("langgraph_checkpoint_ns") or config.get(
                "configurable", {}).get("checkpoint_ns")
        if not ns:
            return "graph"
        attempt = self._attempts.get(str(ns), 0)
        return f"{ns}/retry:{attempt}" if attempt else str(ns)

    def next_index(self, scope: str, kind: str) -> int:
        """Returns the position of the next ``kind`` call in ``scope`` (0, 1, ...; thread-safe)."""
        with self._lock:
            index = self._counters.get((scope, kind), 0)
            self._counters[scope, kind] = index + 1
        return index

    def next_model_key(self) -> str:
        """The key the next model call made in this context takes, without taking it (the run's
        `agentspan.now`)."""
        scope = self.scope(None)
        with self._lock:
            return f"{scope}/llm:{self._counters.get((scope, 'llm'), 0)}"

    def digest_of(self, item: Any, dump: Callable[[Any], Any]) -> str:
        """Returns the digest of ``dump(item)``, computed once per object in this invocation.

        A node passes the whole conversation to every model call; digesting each message once
        keeps the cost of hashing a call's input flat as the conversation grows.
        """
        entry = self._digests.get(id(item))
        if entry is not None and entry[0] is item:
            return entry[1]
        value = digest(dump(item))
        self._digests[id(item)] = (item, value)
        return value


def begin(invocation: Invocation) -> contextvars.Token[Invocation | None]:
    """Starts journaling the calls of one ``ainvoke`` in this context."""
    invocation.run.next_model_key = _next_model_key
    return _invocation.set(invocation)


def _next_model_key() -> str | None:
    """`agentspan.ActiveRun.next_model_key` of a LangGraph run: the current invocation's (in a node:
    the node's task's next model call), None where no call is journaled."""
    invocation = current()
    return invocation.next_model_key() if invocation is not None else None


def end(token: contextvars.Token[Invocation | None]) -> None:
    """Undoes `begin`."""
    _invocation.reset(token)


def current() -> Invocation | None:
    """Returns the invocation to journal a call in, or None when the call must pass through.

    None outside a durable LangGraph run, and inside a journaled model call (whatever that call
    does internally is part of its one journal entry).
    """
    invocation = _invocation.get()
    if invocation is None or agentspan.active_run() is not invocation.run:
        return None
    step = agentspan.current_step()
    if step is not None and step.kind == "llm":
        return None
    return invocation


def call_sync(invocation: Invocation, journal: Callable[[Callable[[], Awaitable[T]]], Coroutine[Any, Any, T]],
              call: Callable[[], T]) -> T:
    """Journals a synchronous call (a model or tool called from a sync node or tool) and returns its result.

    ``journal(live)`` is the journaling coroutine; ``live()`` makes the call. With the embedded
    store, journaling never waits on anything, so the coroutine is driven to its end right here,
    with the call made inline in the caller's thread: no event loop, no thread hop. A store that
    does network I/O is called from worker threads by the core, which needs a loop: the
    coroutine then gets a short-lived one, and the call itself runs on a worker thread (so code
    that starts an event loop of its own still can).
    """
    if not invocation.offload:
        async def inline() -> T:
            return call()

        return _drive(journal(inline))

    async def threaded() -> T:
        return await asyncio.to_thread(call)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_loop = False
    else:
        in_loop = True
    if not in_loop:  # (outside the except block: errors of the call must not chain onto this one)
        return asyncio.run(journal(threaded))
    context = contextvars.copy_context()  # a sync call made in a running loop: use a helper thread
    with ThreadPoolExecutor(1, thread_name_prefix="agentspan-langgraph") as pool:
        return pool.submit(context.run, lambda: asyncio.run(journal(threaded))).result()


def _drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine that never suspends to its end, in the calling thread."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AgentspanError("a journaled LangGraph call waited on I/O with an embedded store; "
                         "this is a bug in agentspan-langgraph")
