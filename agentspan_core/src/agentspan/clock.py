"""`agentspan.now`: the time, as a resumed run reads it again.

A resumed run runs the framework's loop again from the start, and each journaled model call's
input is compared with the journal's. Instructions that say what time it is
(``f"Today is {datetime.now():%A %d %B}"``) read another time in the resumed run, so its first
replayed model call differs from the journal (`agentspan.errors.ReplayDivergenceError`).
`agentspan.now` reads the time once per model call and journals it with the call (as the call
step's ``started_at``), so the resumed run reads what the first attempt read, as Temporal's
``workflow.now()`` does. An adapter tells the run the key of the next model call made in a
context (`agentspan.ActiveRun.next_model_key`), and one whose run is not the active run in the
framework's context binds the run's clock there (`bind`).
"""

from __future__ import annotations

import contextvars
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

_bound: contextvars.ContextVar[Callable[[], float] | None] = contextvars.ContextVar("agentspan_clock", default=None)


def now() -> datetime:
    """The current time (UTC), the same on every execution of a durable run.

    Inside a durable run: the time the next model call made in this context was first made (in
    openai-agents the run's or a nested agent's next call, in a LangGraph node the node's, in ADK
    the running agent's): read from the wall clock the first time it is asked for, then the same
    until that call is made, and read from the journal when a resumed run comes to that call
    again. Use it for what goes into a model call (instructions, a prompt); a tool that measures
    time reads the wall clock (its result is journaled). Outside a durable run, and where no
    model call is on its way: the wall clock.

    Returns:
        A timezone-aware `datetime` in UTC.
    """
    read = _bound.get()
    if read is None:
        runtime = sys.modules.get("agentspan.runtime")  # loaded whenever a run is active
        run = runtime.active_run() if runtime is not None else None
        read = run.clock if run is not None else time.time
    return datetime.fromtimestamp(read(), UTC)


def bind(read: Callable[[], float] | None) -> None:
    """Makes `now` read ``read`` in this context (None: the active run's clock, or the wall clock).

    For an adapter whose run executes in a framework's context without being the active run
    there (ADK's plugin in the user's own Runner): it binds the run's `agentspan.ActiveRun.clock`
    while the run's agents execute.
    """
    _bound.set(read)
