"""Which runs still have a call running in a thread of this process.

A framework runs a sync tool in a worker thread (``asyncio.to_thread``: the SDK's function tools,
LangChain's and ADK's sync tools), with a copy of the caller's context. When the caller gives up
(its task cancelled, ``asyncio.wait_for`` timing out, Ctrl-C in ``asyncio.run``), the awaiting
coroutine ends but the thread cannot be stopped: the call goes on to its end, unjournaled (in
doubt, as after a crash). Until it ends, the run must stay this process's, or a worker elsewhere
makes the call again alongside it: `agentspan.attached.AttachedRun` keeps renewing the lease while
`runs_call_in_thread` says so (`agentspan.leases.Heartbeat.linger`).

A thread of a `concurrent.futures` executor (the event loop's default one included) runs one work
item at a time; the item's callable is ``Context.run`` of the copied context (bound, or in a
`functools.partial`), and that context holds the call's step (`agentspan.current_step`). The
threads' frames are read with `sys._current_frames`, as debuggers and profilers do, only when a
run was cut off with a call in flight, never on a run's normal path.
"""

from __future__ import annotations

import contextvars
import functools
import sys
from collections.abc import Callable
from concurrent.futures.thread import _WorkItem
from types import FrameType
from typing import Any

from agentspan.tools import _current_step

__all__ = ["runs_call_in_thread"]

_WORK_ITEM_RUN = _WorkItem.run.__code__


def runs_call_in_thread(run_id: str, in_flight: Callable[[str], bool] | None = None) -> bool:
    """Whether a thread of this process still runs a call of run ``run_id`` (a work item of an
    executor whose context is the call's).

    Args:
        run_id: The run.
        in_flight: Whether the step of a key is still in flight: only those count (a work item a
            call that ended left running, a tool's background job, holds its ended step's
            context too, and is not the call). None: every step of the run counts.
    """
    for frame in sys._current_frames().values():
        if _runs_call(frame, run_id, in_flight):
            return True
    return False


def _runs_call(frame: FrameType | None, run_id: str, in_flight: Callable[[str], bool] | None) -> bool:
    while frame is not None:
        if frame.f_code is _WORK_ITEM_RUN:
            context = _context_of(frame.f_locals.get("self"))
            step = context.get(_current_step) if context is not None else None
            if step is not None and step.run_id == run_id and (in_flight is None or in_flight(step.key)):
                return True
        frame = frame.f_back
    return False


def _context_of(item: Any) -> contextvars.Context | None:
    """The context a work item's callable runs in: ``ctx.run`` bound, perhaps in partials."""
    call = getattr(item, "fn", None)
    for _ in range(8):  # partials of partials: a few levels at most
        owner = getattr(call, "__self__", None)
        if isinstance(owner, contextvars.Context):
            return owner
        if not isinstance(call, functools.partial):
            return None
        call = call.func
    return None
