"""`agentspan.now`: the time, as a resumed run reads it again.

A resumed run runs the framework's loop again from the start, and each journaled model call's
input is compared with the journal's. Instructions that say what time it is
(``f"Today is {datetime.now():%A %d %B}"``) read another time in the resumed run, so its first
replayed model call differs from the journal (`agentspan.errors.ReplayDivergenceError`).
`agentspan.now` reads the time once per model call and journals it with the call (as the call
step's ``started_at``), so the resumed run reads what the first attempt read, as Temporal's
``workflow.now()`` does.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime


def now() -> datetime:
    """The current time (UTC), the same on every execution of a durable run.

    Inside a durable run: the time the next model call made in this context was first made (an
    openai-agents run's own calls, or those of an agent run inside a tool call): read from the wall clock the first
    time it is asked for, then the same until that call is made, and read from the journal when a
    resumed run comes to that call again. Use it for what goes into a model call (instructions, a
    prompt); a tool that measures time reads the wall clock (its result is journaled).
    In a LangGraph node: the time of the node's next model call. Outside a durable run, and in
    runs of an adapter that does not tell the run its next model call's key
    (`agentspan.ActiveRun.next_model_key`; ADK for now): the wall clock.

    Returns:
        A timezone-aware `datetime` in UTC.
    """
    runtime = sys.modules.get("agentspan.runtime")  # loaded whenever a run is active
    run = runtime.active_run() if runtime is not None else None
    return datetime.fromtimestamp(run.clock() if run is not None else time.time(), UTC)
