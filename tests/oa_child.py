"""Child process for crash tests: ``python oa_child.py start|resume|serve|stream|resume-stream RUN_ID [approval]
[session] [clock]``.

``clock``: the agent's instructions say what time it is (`agentspan.now`).

``STEP_WRITER`` set in the environment: the store's step-writer helper process
(`agentspan.stores.step_writer`) is started and ready before the run.

``session``: the run keeps its conversation in an SDK `SQLiteSession` (``conversation.db`` in the
home), passed to ``start`` and ``resume`` as ``session=``.

The streamed modes (``agentspan.run_streamed`` / ``resume_streamed``) log each event they get to
the ``stream-events`` file of the home (`oa_support.describe_event`), so a test can see what a
killed child had streamed."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import agentspan

import oa_support
from crash_support import home, log


async def streamed(start: Callable[[], Any]) -> Any:
    """Starts a streamed run and logs its events to ``stream-events`` as they come."""
    run = start()
    async for event in run.stream_events():
        log("stream-events", f"{os.getpid()} {oa_support.describe_event(event)}")
    return run.result

if __name__ == "__main__":
    mode, run_id = sys.argv[1], sys.argv[2]
    approval = "approval" in sys.argv[3:]
    agent = oa_support.support_agent(approval=approval, clock="clock" in sys.argv[3:])
    hooks: dict[str, Any] = {"hooks": oa_support.CrashHooks()}
    if "session" in sys.argv[3:]:
        hooks["session"] = oa_support.CrashingSession("support-chat", str(home() / "conversation.db"))
    if os.environ.get("STEP_WRITER"):  # the store's helper commits the steps from the first one
        agentspan.configure(step_helper="on")  # whatever this machine's CPUs
        agentspan.get_store()._writer.start(timeout=20)  # type: ignore[attr-defined]
    barrier = os.environ.get("BARRIER")
    if barrier:  # line up with a racing process: announce readiness, wait for the go
        Path(f"{barrier}.{os.getpid()}").touch()
        while not Path(barrier).exists():
            time.sleep(0.001)
    if mode == "start":
        result = agentspan.run(agent, oa_support.PROMPT, run_id=run_id, **hooks)
    elif mode == "resume":
        result = agentspan.resume(run_id, agent, **hooks).result(timeout=60)
    elif mode == "stream":
        result = asyncio.run(streamed(lambda: agentspan.run_streamed(agent, oa_support.PROMPT, run_id=run_id, **hooks)))
    elif mode == "resume-stream":
        result = asyncio.run(streamed(lambda: agentspan.resume_streamed(run_id, agent, **hooks)))
    elif mode == "start-exit":  # `agentspan.start`, then the main thread ends while the run goes on
        handle = agentspan.start(agent, oa_support.PROMPT, run_id=run_id, **hooks)
        # an exit hook of the app's keeps the interpreter up until the run's attempt has ended
        atexit.register(lambda: concurrent.futures.wait([handle._future], timeout=30))  # type: ignore[list-item]
        oa_support.EXIT.wait(60)
        sys.exit(0)
    elif mode == "serve":
        agentspan.serve(agent, max_runs=1)
        result = agentspan.get(run_id).result(timeout=60)
    print("FINAL:", result.final_output if hasattr(result, "final_output") else result, flush=True)
