"""The ``interrupt()`` calls a journaled tool call made, passed over when it is replayed.

LangGraph hands the resume values of a task out by the order of its ``interrupt()`` calls: the
first call of a node run gets the first answer, the second the second (`langgraph.types.interrupt`
counts them with the task scratchpad's ``interrupt_counter``). A node executes again from its
start on every resume; a tool call in it that completed after its interrupt was answered is then
served from the journal, and does not call ``interrupt()`` again. Without more, the next tool's
``interrupt()`` would take the replayed one's place in the count, and the replayed call's answer:
a second action a human rejected would run with the first one's approval.

So a live tool call counts the interrupts made while it runs (the task's counter, wrapped: each
``interrupt()`` is told to every journaled tool call it runs inside, an outer tool calling an
inner one included), and when it made some, a ``checkpoint`` step ``<call key>/interrupts``
journals their number before the call's own end is journaled; a replay of the call advances the
counter by as many (`TaskInterrupts.passed_over`). Parallel tool calls of one task (a
``ToolNode``'s) each count their own; LangGraph itself assigns their interrupts in the order they
happen to be reached.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import agentspan
from agentspan.records import StepKind, StepStatus

T = TypeVar("T")

_SCRATCHPAD = "__pregel_scratchpad"
"""``langgraph._internal._constants.CONFIG_KEY_SCRATCHPAD``: where a task's config holds its scratchpad."""

_calling: ContextVar[tuple[str, ...]] = ContextVar("agentspan_langgraph_interrupting_calls", default=())
"""The keys of the journaled tool calls running in this context, outermost first."""
_install = threading.Lock()  # (a ToolNode runs sync tools on threads of its own, each asking for the counter)


def step_key(call_key: str) -> str:
    """The key of the step journaling how many interrupts tool call ``call_key`` made."""
    return f"{call_key}/interrupts"


class TaskInterrupts:
    """A task's ``interrupt_counter``, also counting the interrupts of each journaled tool call."""

    __slots__ = ("_counter", "consumed")

    def __init__(self, counter: Callable[[], int]) -> None:
        self._counter = counter
        self.consumed: Counter[str] = Counter()

    def __call__(self) -> int:
        for key in _calling.get():
            self.consumed[key] += 1
        return self._counter()

    def counting(self, run: agentspan.ActiveRun, key: str,
                 call: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """``call``, with the interrupts made while it runs counted as tool call ``key``'s, and
        journaled (a step of their own) once it returns, before the call's end is."""

        async def counted() -> T:
            self.consumed.pop(key, None)  # (an earlier try of the call, interrupted, counted its own)
            token = _calling.set((*_calling.get(), key))
            try:
                value = await call()
            finally:
                _calling.reset(token)
            made = self.consumed.pop(key, 0)
            if made:
                await _journal_count(run, key, made)
            return value

        return counted

    def passed_over(self, run: agentspan.ActiveRun, key: str) -> None:
        """A replayed tool call ``key``: the next ``interrupt()`` of the task gets the answer after
        the ones it made (each also counted for the journaled calls it runs inside).

        Only this run's own journal counts: its interrupts were answered in this run, so the task's
        resume values hold their answers. A call answered from another run's recording (a strict
        replay, `agentspan.testing.replay`: the recording's keys carry other task ids, so they are
        not found here) made no interrupt in this run and has no answer to pass over; the replay
        matches the recording's approvals with that in mind."""
        step = run.journal.get(step_key(key))
        if step is not None and step.status is StepStatus.COMPLETED and isinstance(step.output, int):
            for _ in range(step.output):
                self()


async def _journal_count(run: agentspan.ActiveRun, key: str, made: int) -> None:
    async def count() -> int:
        return made

    await run.step(kind=StepKind.CHECKPOINT, key=step_key(key), name="interrupts", input=None, input_hash=None,
                   invoke=count, dump=_same, load=_same)


def _same(value: Any) -> Any:
    return value


def task_interrupts() -> TaskInterrupts | None:
    """The interrupt counter of the LangGraph task running in this context (installed on its
    scratchpad on first use); None outside a task."""
    try:
        from langgraph.config import get_config

        scratchpad = get_config()["configurable"].get(_SCRATCHPAD)
    except Exception:  # not inside a runnable: no task, no interrupts
        return None
    with _install:
        counter = getattr(scratchpad, "interrupt_counter", None)
        if counter is None:
            return None
        if not isinstance(counter, TaskInterrupts):
            counter = TaskInterrupts(counter)
            object.__setattr__(scratchpad, "interrupt_counter", counter)  # (a frozen dataclass)
        return counter
