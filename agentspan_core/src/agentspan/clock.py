"""`agentspan.now`, `agentspan.random`, `agentspan.uuid4`: the time and chance, as a resumed run
reads them again.

A resumed run runs the framework's loop again from the start, and each journaled model call's
input is compared with the journal's. Instructions that say what time it is
(``f"Today is {datetime.now():%A %d %B}"``) read another time in the resumed run, so its first
replayed model call differs from the journal (`agentspan.errors.ReplayDivergenceError`); so do
prompts that draw random examples or ids. These read the time once per model call and journal it
with the call (as the call step's ``started_at``), and draw from a generator seeded with the call's
key and that time, so the resumed run reads what the first attempt read, as Temporal's
``workflow.now()``, ``workflow.random()`` and ``workflow.uuid4()`` do. An adapter tells the run the
key of the next model call made in a context (`agentspan.ActiveRun.next_model_key`), and one whose
run is not the active run in the framework's context binds the run there (`bind`).
"""

from __future__ import annotations

import contextvars
import random as _random
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentspan.runtime import ActiveRun

_bound: contextvars.ContextVar[ActiveRun | None] = contextvars.ContextVar("agentspan_clock_run", default=None)


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
    run = _run()
    return datetime.fromtimestamp(run.clock() if run is not None else time.time(), UTC)


def random() -> _random.Random:
    """A random generator whose draws a resumed run makes again.

    Inside a durable run: the generator of the next model call made in this context (as `now`),
    seeded with that call's key and journaled time: the same draws, in the same order, on every
    execution of the run, and other draws in another run or for another call. Use it for what
    goes into a model call (examples picked at random for a prompt). Outside a durable run, and
    where no model call is on its way: a new generator seeded by the system.
    """
    run = _run()
    source = run.random_source() if run is not None else None
    return source if source is not None else _random.Random()


def uuid4() -> uuid.UUID:
    """A random (version 4) UUID drawn from `random`: the same on every execution of a durable run."""
    return uuid.UUID(int=random().getrandbits(128), version=4)


def bind(run: ActiveRun | None) -> None:
    """Makes `now`, `random` and `uuid4` read ``run`` in this context (None: the active run).

    For an adapter whose run executes in a framework's context without being the active run
    there (ADK's plugin in the user's own Runner): it binds the run while the run's agents execute.
    """
    _bound.set(run)


def _run() -> ActiveRun | None:
    run = _bound.get()
    if run is None:
        runtime = sys.modules.get("agentspan.runtime")  # loaded whenever a run is active
        run = runtime.active_run() if runtime is not None else None
    return run
