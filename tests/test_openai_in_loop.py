"""`agentspan.run` (the sync entry point) called inside a running event loop: the run executes on a
helper thread, in the caller's context, and an interrupt of the caller stops it."""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from agents import Agent, function_tool, set_tracing_disabled

import agentspan
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

set_tracing_disabled(True)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@pytest.fixture(autouse=True)
def _home(home: Path) -> Path:
    return home


@function_tool
def whoami() -> str:
    """The caller's request id."""
    return request_id.get()


def test_tools_of_a_run_called_inside_a_loop_see_the_callers_context_variables():
    """As under `run_async` and outside a loop (was: "unset" inside a loop only)."""
    def agent() -> Agent:
        return Agent(name="ctx", tools=[whoami], model=ScriptedModel([ToolCall("whoami", {}), "fin"], name="m"))

    async def main() -> None:
        request_id.set("req-42")
        await agentspan.run_async(agent(), "go", run_id="awaited")
        agentspan.run(agent(), "go", run_id="in-loop")

    asyncio.run(main())
    for run_id in ("awaited", "in-loop"):
        assert agentspan.get(run_id).steps()[1].output == "req-42", run_id


def test_a_run_called_inside_a_loop_raises_its_error_in_the_caller():
    @function_tool
    def broken() -> str:
        """Fails."""
        raise ValueError("no such order")

    agent = Agent(name="err", tools=[broken], model=ScriptedModel([ToolCall("broken", {}), "fin"], name="m"),
                  output_type=int)  # the final "fin" is not an int: the SDK raises

    async def main() -> None:
        agentspan.run(agent, "go", run_id="fails")

    with pytest.raises(Exception, match="Invalid JSON"):
        asyncio.run(main())
    assert agentspan.get("fails").status() is agentspan.RunStatus.FAILED


CHILD = textwrap.dedent('''
    import asyncio, os, sys, time
    from pathlib import Path
    from agents import Agent, function_tool, set_tracing_disabled
    import agentspan
    from agentspan_openai_agents.testing import ScriptedModel, ToolCall

    set_tracing_disabled(True)
    calls = Path(os.environ["AGENTSPAN_HOME"]) / "calls"

    @function_tool
    def slow(n: str) -> str:
        """A slow call."""
        with calls.open("a") as f:
            f.write(n + "\\n")
        time.sleep(0.4)
        return n

    agent = Agent(name="slow", tools=[slow],
                  model=ScriptedModel([ToolCall("slow", {"n": str(i)}) for i in range(8)] + ["fin"], name="m"))

    async def main() -> None:
        agentspan.run(agent, "go", run_id="interrupted")

    started = time.monotonic()
    loop = asyncio.new_event_loop()  # a plain loop, where SIGINT raises KeyboardInterrupt (as in a notebook)
    try:
        loop.run_until_complete(main())
        print("completed", flush=True)
    except KeyboardInterrupt:
        print(f"interrupted {time.monotonic() - started:.2f}", flush=True)
''')


def test_ctrl_c_stops_a_run_called_inside_a_loop(tmp_path: Path, home: Path):
    """Ctrl-C reaches the caller at once and the run stops, as outside a loop (was: the run went
    on to its end, every call made, before the caller saw the interrupt; one waiting for a
    decision blocked the caller until someone decided)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "AGENTSPAN_HOME": str(home)})
    calls = home / "calls"
    deadline = time.monotonic() + 30
    while not (calls.exists() and calls.read_text()):
        assert time.monotonic() < deadline and child.poll() is None, "the run's first call never started"
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    assert out.startswith("interrupted"), out
    assert len(calls.read_text().split()) <= 2  # was: all 8 calls made
    assert agentspan.get("interrupted").status() is agentspan.RunStatus.RUNNING  # left to its lease


def test_runs_one_after_another_on_a_thread_leave_no_resource_warning() -> None:
    """`agentspan.run` keeps its thread's loop for the next run after ``shutdown_asyncgens`` (as
    ``Runner.run_sync`` does): nothing of ours may start an async generator there (each later run
    warned ``asynchronous generator ... was scheduled after loop.shutdown_asyncgens() call``)."""
    import gc
    import threading
    import warnings

    found: list[str] = []
    # Warnings are recorded from every thread: a loop an earlier test's thread left open (as
    # ``Runner.run_sync`` leaves it) must not be collected, and warn, while this test records.
    gc.collect()
    gc.disable()

    def runs() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for n in range(3):
                agent = Agent(name="again", instructions="x", model=ScriptedModel([f"answer {n}"]))
                assert agentspan.run(agent, "hi").final_output == f"answer {n}"
        found.extend(str(w.message) for w in caught  # (recorded from every thread: only this one's kind)
                     if issubclass(w.category, ResourceWarning) and "shutdown_asyncgens" in str(w.message))

    thread = threading.Thread(target=runs)
    try:
        thread.start()
        thread.join(timeout=60)
    finally:
        gc.enable()
    assert not thread.is_alive() and found == []
