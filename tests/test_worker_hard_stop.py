"""A worker stopped hard (a second Ctrl-C on ``agentspan worker``; a `KeyboardInterrupt` in
``agentspan.serve``) while a run's sync tool is in flight: the tool's thread cannot be stopped, so
it ends, and its end is journaled; the run makes no new call; its lease is given back, and the
next worker goes on with it at once, repeating nothing that ended.

Was: the process waited for the tool, renewing the lease, then dropped the tool's end (or made
new model calls whose results it dropped), so the next worker ran the finished tool again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

import agentspan
from agentspan.records import RunStatus

import worker_support
from crash_support import lines
from journal_utils import crashed_copy


@pytest.fixture(autouse=True)
def _home(home):
    return home


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_second_ctrl_c_journals_the_call_in_flight_and_gives_the_lease_back(child_env):
    done = agentspan.run(worker_support.agent(), "go")  # (SLOW unset: the tool is instant here)
    assert done.final_output == "both steps done"
    run_id = crashed_copy(agentspan.get_store().list_runs()[0].id, keep=0)  # an orphan for the worker
    for name in ("tool", "model"):
        (agentspan.config.settings().home / name).unlink()

    worker = subprocess.Popen([sys.executable, "-m", "agentspan.cli", "worker", "worker_support:AGENT"],
                              env={**child_env, "SLOW": "3"}, text=True, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: lines("tool") == ["start 1"])  # the first tool call is in flight
        worker.send_signal(signal.SIGINT)
        time.sleep(0.3)
        worker.send_signal(signal.SIGINT)  # the second: do not wait for the runs
        assert worker.wait(timeout=30) == 130
    finally:
        worker.kill()
        _, err = worker.communicate()
    assert lines("tool") == ["start 1", "end 1"] and lines("model") == ["call 0"], err  # no new call after
    steps = {s.key: s.status for s in agentspan.get(run_id).steps()}
    assert steps == {"llm:0": agentspan.StepStatus.COMPLETED,
                     "llm:0/call:call_0_0": agentspan.StepStatus.COMPLETED}  # the tool's end is journaled
    run = agentspan.get(run_id).run()
    assert run.status is RunStatus.RUNNING and run.lease_owner is None  # given back: no lease to wait out

    assert agentspan.serve(worker_support.agent(), max_runs=1) == 1  # the next worker, at once
    assert agentspan.get(run_id).status() is RunStatus.COMPLETED
    assert lines("tool") == ["start 1", "end 1", "start 2", "end 2"]  # the finished tool is not run again


def test_a_hard_stop_of_serve_journals_a_parallel_call_its_sibling_left_running():
    """Two parallel calls: a slow sync tool and an agent tool whose next model call comes after the
    stop (was: that call's `ProcessExiting` ended the run with the slow call still running, so its
    end was never journaled and the lease was kept)."""
    import _thread
    import threading

    from agents import Agent, function_tool

    from agentspan_openai_agents.testing import ScriptedModel, ToolCall

    effects: list[str] = []
    slow_for = {"seconds": 0.0}

    @function_tool
    def slow(n: int) -> str:
        """A slow step."""
        effects.append(f"start {n}")
        time.sleep(slow_for["seconds"])
        effects.append(f"end {n}")
        return "ok"

    @function_tool
    def quick() -> str:
        """A quick step."""
        return "q"

    def agent() -> Agent:
        helper = Agent(name="helper", instructions="x", tools=[quick],
                       model=ScriptedModel([ToolCall("quick", {}), ToolCall("quick", {}), "helped"], name="h",
                                           latency=0.5 if slow_for["seconds"] else 0.0))
        helper_tool = helper.as_tool(tool_name="helper", tool_description="h")
        return Agent(name="main", instructions="x", tools=[slow, helper_tool],
                     model=ScriptedModel([[ToolCall("slow", {"n": 1}), ToolCall("helper", {"input": "go"})], "done"],
                                         name="m"))

    assert agentspan.run(agent(), "go").final_output == "done"
    run_id = crashed_copy(agentspan.get_store().list_runs()[0].id, keep=0)
    slow_for["seconds"], effects[:] = 2.0, []
    threading.Timer(0.7, _thread.interrupt_main).start()  # a Ctrl-C while both calls run
    with pytest.raises(KeyboardInterrupt):
        agentspan.serve(agent(), poll_interval=0.05)
    assert effects == ["start 1", "end 1"]
    steps = {s.key: s.status for s in agentspan.get(run_id).steps()}
    assert steps["llm:0/call:call_0_0"] is agentspan.StepStatus.COMPLETED  # the slow call's end is journaled
    assert agentspan.get(run_id).run().lease_owner is None  # and the lease given back
    slow_for["seconds"] = 0.0
    assert agentspan.serve(agent(), max_runs=1) == 1 and agentspan.get(run_id).status() is RunStatus.COMPLETED
    assert effects == ["start 1", "end 1"]  # not run again
