"""A run whose caller gave up while a sync tool ran keeps its lease until the tool's thread ends.

The thread cannot be stopped; were the lease left to lapse at once, a worker elsewhere would take
the run up after the lease's TTL and make the call again while the first one still ran.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from agents import Agent, function_tool

import agentspan
from agentspan.call_threads import runs_call_in_thread
from agentspan.records import now
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

TTL = 0.6


@pytest.fixture(autouse=True)
def short_lease(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import agentspan.config

    monkeypatch.setenv("AGENTSPAN_LEASE_TTL", str(TTL))
    agentspan.config.reset()


def _give_up(loop: asyncio.AbstractEventLoop, agent: Agent, run_id: str, ready: Callable[[], bool]) -> None:
    """Starts the run on ``loop`` and cancels its caller once ``ready()``; the loop is left open."""
    async def give_up() -> None:
        run = asyncio.ensure_future(agentspan.run_async(agent, "go", run_id=run_id))
        while not ready():
            await asyncio.sleep(0.01)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)

    loop.run_until_complete(give_up())


def _agent(tool: object) -> Agent:
    return Agent(name="calc", instructions="Work.", tools=[tool],
                 model=ScriptedModel([ToolCall("slow", {"order_id": "42"}), "fin"]))


def test_a_sync_tool_longer_than_the_lease_runs_once_at_a_time_after_its_caller_gave_up():
    """The caller's task is cancelled while a sync tool that outlasts several lease TTLs runs: the
    lease is renewed until the tool's thread ends (was: it lapsed after one TTL, and a worker
    ran the tool again alongside the first call), then lapses, and a worker finishes the run."""
    spans: list[tuple[str, float]] = []
    release = threading.Event()

    @function_tool
    def slow(order_id: str) -> str:
        """A slow call."""
        spans.append(("start", time.monotonic()))
        if len(spans) == 1:
            release.wait(20)  # the first call: until the test lets it end
        spans.append(("end", time.monotonic()))
        return f"done {order_id}"

    agent = _agent(slow)

    loop = asyncio.new_event_loop()  # left open, as a service's loop is (`asyncio.run` would wait for the thread)
    _give_up(loop, agent, "long-tool", lambda: bool(spans))
    assert runs_call_in_thread("long-tool")
    time.sleep(3 * TTL)  # three TTLs after the caller gave up, the thread still runs
    run = agentspan.get("long-tool").run()
    assert run.lease_expires_at is not None and run.lease_expires_at > now()  # renewed: no other process takes it
    release.set()
    assert agentspan.serve(agent, max_runs=1) == 1
    assert agentspan.get("long-tool").result(timeout=20) == "fin"
    starts = [at for what, at in spans if what == "start"]
    ends = [at for what, at in spans if what == "end"]
    assert len(starts) == 2 and starts[1] >= ends[0]  # made again (in doubt) only after the first ended
    assert not runs_call_in_thread("long-tool")
    loop.close()


def test_the_lease_lapses_once_the_cut_off_thread_ends():
    """After the thread ends the lease is no longer renewed: it lapses within a TTL or so."""
    release = threading.Event()
    ran = threading.Event()

    @function_tool
    def slow(order_id: str) -> str:
        """A slow call."""
        ran.set()
        release.wait(20)
        return f"done {order_id}"

    loop = asyncio.new_event_loop()
    _give_up(loop, _agent(slow), "lapses", ran.is_set)
    release.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        run = agentspan.get("lapses").run()
        if run.lease_expires_at is not None and run.lease_expires_at < now():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the lease was still renewed 10 s after the tool's thread ended")
    assert run.status is agentspan.RunStatus.RUNNING  # left for a worker, its call in doubt
    loop.close()


def test_a_thread_of_another_run_is_not_this_runs():
    """Only a work item whose context holds one of the run's steps counts."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from agentspan.tools import StepInfo, _current_step

    started, release = threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        release.wait(10)

    context = contextvars.copy_context()
    context.run(_current_step.set, StepInfo("other", "tool:1", "other:tool:1", 1, "tool", "slow"))
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(context.run, work)
        started.wait(10)
        try:
            assert runs_call_in_thread("other") and not runs_call_in_thread("mine")
        finally:
            release.set()
        future.result()
    assert not runs_call_in_thread("other")


def test_a_lingering_lease_another_process_took_is_no_longer_held_here():
    """A renewal refused while the lease lingers (another process claimed the run anyway, its
    owner thought dead) ends the heartbeat, and this process may claim the run again later."""
    from agentspan import leases

    class Refusing:
        def renew_lease(self, run_id: str, *, epoch: int, lease_expires_at: float) -> bool:
            return False

    beat = leases.Heartbeat(Refusing(), "taken", 1, TTL)  # type: ignore[arg-type]
    beat.__enter__()
    try:
        beat.linger(lambda: True)
        assert "taken" in leases._executing  # still running here: not claimable by this process
        assert beat.beat() is False
        assert "taken" not in leases._executing  # was: kept for ever (nobody ends a lingering heartbeat)
    finally:
        beat.__exit__()


def _lapses_within(run_id: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = agentspan.get(run_id).run()
        if run.lease_expires_at is not None and run.lease_expires_at < now():
            return True
        time.sleep(0.05)
    return False


def test_a_background_job_a_finished_tool_left_running_does_not_hold_the_lease():
    """A tool started work in a thread (with a copy of its context) and returned; the caller gave
    up later, during a model call. The job is not a call of the run in flight: the lease lapses
    (was: renewed for as long as the job ran, for ever for a poller)."""
    stop, model_started = threading.Event(), threading.Event()
    jobs: list[asyncio.Task[None]] = []

    def export() -> None:
        while not stop.wait(0.05):
            pass

    @function_tool
    async def start_export(name: str) -> str:
        """Starts an export in the background."""
        jobs.append(asyncio.create_task(asyncio.to_thread(export)))
        return "export started"

    agent = Agent(name="exp", tools=[start_export], model=ScriptedModel(
        [ToolCall("start_export", {"name": "x"}), "ok"], name="m", latency=2.0,
        on_call=lambda i: model_started.set() if i == 1 else None))

    loop = asyncio.new_event_loop()
    try:
        _give_up(loop, agent, "background", model_started.is_set)
        assert runs_call_in_thread("background")  # the job's context holds the ended tool step...
        assert _lapses_within("background", 6 * TTL)  # ...but it is no call in flight
    finally:
        stop.set()
        loop.run_until_complete(asyncio.gather(*jobs))
        loop.close()


def test_parallel_calls_on_a_loop_that_no_longer_runs_do_not_hold_the_lease():
    """Two async calls were cut off with the caller; the caller's loop is left open but never
    runs again: the calls make no progress (as in a crashed process), so the lease lapses (was:
    renewed for as long as the process lived)."""
    started = threading.Event()

    @function_tool
    async def slow(order_id: str) -> str:
        """A slow async call."""
        started.set()
        await asyncio.sleep(1.0)
        return "done"

    agent = Agent(name="a", tools=[slow], model=ScriptedModel(
        [[ToolCall("slow", {"order_id": "1"}), ToolCall("slow", {"order_id": "2"})], "fin"], name="m"))

    loop = asyncio.new_event_loop()
    try:
        _give_up(loop, agent, "idle-loop", started.is_set)
        assert _lapses_within("idle-loop", 6 * TTL)
    finally:
        loop.close()
