"""The ``interrupt()`` calls a journaled tool call made, passed over when it is replayed.

LangGraph hands the resume values of a task out by the order of its ``interrupt()`` calls: the
first call of a node run gets the first answer, the second the second (`langgraph.types.interrupt`
counts them with the task scratchpad's ``interrupt_counter``). A node executes again from its
start on every resume; a tool call in it that completed after its interrupt was answered is then
served from the journal, and does not call ``interrupt()`` again. Without more, the next tool's
``interrupt()`` would take the replayed one's place in the count, and the replayed call's answer:
a second action a human rejected would run with the first one's approval.

So a live tool call counts the interrupts it consumed (the task's counter, wrapped: each
``interrupt()`` is told to the tool call running in its context) and its journal step keeps that
number beside the result (`wrap`); a replay advances the counter by as many (`passed_over`).
Parallel tool calls of one task (a ``ToolNode``'s) each count their own; LangGraph itself assigns
their interrupts in the order they happen to be reached, so a replayed call's indices are passed
over when it replays, which for parallel calls may come after a sibling reached its interrupt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

from agentspan.records import JSON

T = TypeVar("T")

_SCRATCHPAD = "__pregel_scratchpad"
"""``langgraph._internal._constants.CONFIG_KEY_SCRATCHPAD``: where a task's config holds its scratchpad."""
_TAG = "__agentspan_lg__"
_KIND = "interrupts"

_calling: ContextVar[str | None] = ContextVar("agentspan_langgraph_interrupting_call", default=None)


class TaskInterrupts:
    """A task's ``interrupt_counter``, also counting the interrupts of each journaled tool call."""

    __slots__ = ("_counter", "consumed")

    def __init__(self, counter: Callable[[], int]) -> None:
        self._counter = counter
        self.consumed: Counter[str] = Counter()

    def __call__(self) -> int:
        key = _calling.get()
        if key is not None:
            self.consumed[key] += 1
        return self._counter()

    def counting(self, key: str, call: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """``call``, with the interrupts it makes counted as tool call ``key``'s."""

        async def counted() -> T:
            self.consumed.pop(key, None)  # (an earlier try of the call, interrupted, counted its own)
            token = _calling.set(key)
            try:
                return await call()
            finally:
                _calling.reset(token)

        return counted

    def wrap(self, key: str, output: JSON) -> JSON:
        """The journal output of tool call ``key``: with the number of interrupts it consumed, if any."""
        used = self.consumed.pop(key, 0)
        return {_TAG: _KIND, "n": used, "value": output} if used else output

    def passed_over(self, used: int) -> None:
        """A replayed call's interrupts: the next ``interrupt()`` of the task gets the answer after them."""
        for _ in range(used):
            self._counter()


def task_interrupts() -> TaskInterrupts | None:
    """The interrupt counter of the LangGraph task running in this context (installed on its
    scratchpad on first use); None outside a task."""
    try:
        from langgraph.config import get_config

        scratchpad = get_config()["configurable"].get(_SCRATCHPAD)
    except Exception:  # not inside a runnable: no task, no interrupts
        return None
    counter = getattr(scratchpad, "interrupt_counter", None)
    if counter is None:
        return None
    if not isinstance(counter, TaskInterrupts):
        counter = TaskInterrupts(counter)
        object.__setattr__(scratchpad, "interrupt_counter", counter)  # (a frozen dataclass)
    return counter


def unwrap(output: JSON) -> tuple[JSON, int]:
    """A tool step's output and the number of interrupts the call consumed (`TaskInterrupts.wrap`)."""
    if isinstance(output, dict) and output.get(_TAG) == _KIND and isinstance(output.get("n"), int):
        return output.get("value"), output["n"]
    return output, 0
