"""SIGKILL crash tests: real child processes, killed at several points, then resumed.

Counts live model calls and tool side effects across all processes via files in the store's home.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest

import agentspan
from agentspan.records import new_id

import oa_support
from crash_support import calls_of, cli, home, kill_when_waiting, lines, run_child

pytestmark = pytest.mark.crash


@pytest.fixture(params=["embedded", "server-sqlite", "server-postgres"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every scenario runs on the embedded store and through a real server on SQLite and PostgreSQL."""
    return request.param


child = partial(run_child, str(Path(__file__).parent / "oa_child.py"))


@pytest.mark.parametrize(
    ("crash_at", "calls_after", "effects"),
    [
        # killed inside the 2nd model call: it was in flight, so it is made again (2 turns + 1)
        ("model:1", [0, 1, 1], 1),
        # killed inside the tool before its side effect: the in-doubt call is retried once
        ("lookup:before", [0, 1], 1),
        # killed after the tool's side effect but before it was journaled: retried (policy retry)
        # with the same idempotency key, so the downstream API can deduplicate
        ("lookup:after", [0, 1], 2),
        # killed between steps: the tool call is journaled, the next model call not yet started
        ("between:1", [0, 1], 1),
    ],
)
def test_sigkill_then_resume_finishes_like_an_uncrashed_run(child_env, crash_at, calls_after, effects):
    run_id = new_id()
    crashed = child(child_env, "start", run_id, crash_at=crash_at)
    assert crashed.returncode == -9, crashed.stderr
    resumed = child(child_env, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"FINAL: {oa_support.FINAL}" in resumed.stdout
    assert sorted(calls_of("m")) == calls_after
    assert calls_of("m").count(0) == 1  # a completed model call is never made again
    lookups = [line for line in lines("effects") if line.startswith("lookup")]
    assert len(lookups) == effects
    assert len({line.split()[2] for line in lookups}) == 1  # one idempotency key for all attempts
    handle = agentspan.get(run_id)
    assert handle.status() is agentspan.RunStatus.COMPLETED
    assert handle.result() == oa_support.FINAL
    keys = [s.key for s in handle.steps()]
    assert len(keys) == len(set(keys)) == 3
    assert all(s.status is agentspan.StepStatus.COMPLETED for s in handle.steps())


@pytest.mark.parametrize("crash_at", ["lookup:before", "between:1"])
def test_sigkill_of_a_run_whose_instructions_say_the_time(child_env, crash_at):
    """Instructions read with `agentspan.now`: the resumed process reads the killed one's time for
    the model call it replays (with the wall clock it would diverge there)."""
    run_id = new_id()
    crashed = child(child_env, "start", run_id, "clock", crash_at=crash_at)
    assert crashed.returncode == -9, crashed.stderr
    time.sleep(0.01)  # the wall clock has moved on
    resumed = child(child_env, "resume", run_id, "clock")
    assert resumed.returncode == 0, resumed.stderr
    assert f"FINAL: {oa_support.FINAL}" in resumed.stdout
    assert calls_of("m").count(0) == 1  # the first model call was replayed, not made again
    first, second = [s for s in agentspan.get(run_id).steps() if s.kind is agentspan.StepKind.LLM]
    for step in (first, second):  # each call's instructions said the time it was first made
        said = datetime.fromtimestamp(step.started_at, UTC).isoformat()
        assert step.input["system"] == f"Help the customer. The time is {said}."
    assert first.started_at < second.started_at


def test_in_doubt_tool_with_fail_policy_fails_the_run(child_env, monkeypatch):
    run_id = new_id()
    crashed = child({**child_env, "LOOKUP_IN_DOUBT": "fail"}, "start", run_id, crash_at="lookup:after")
    assert crashed.returncode == -9
    resumed = child({**child_env, "LOOKUP_IN_DOUBT": "fail"}, "resume", run_id)
    assert resumed.returncode != 0
    error = agentspan.get(run_id).run().error
    assert "InDoubtStepError" in resumed.stderr and error.startswith("InDoubtStepError") and "'lookup_order'" in error
    assert agentspan.get(run_id).status() is agentspan.RunStatus.FAILED
    assert len(lines("effects")) == 1


@pytest.mark.parametrize(("stop_at", "model_calls"), [("tool:lookup_order", [0, 1]), ("llm:1", [0, 1])])
def test_a_process_stopped_past_its_lease_does_not_repeat_what_the_next_owner_did(child_env, stop_at, model_calls):
    """SIGSTOPped just before a live call for longer than the lease, while a worker took the run
    over and finished it: on SIGCONT the first process must not make that call again (was: the
    lookup ran twice, the model call was billed twice; only the journal write was refused)."""
    run_id = new_id()
    stopped = child({**child_env, "STOP_AT": stop_at}, "start", run_id, wait=False)
    try:
        deadline = time.monotonic() + 60
        while not (home() / "stopped").exists():
            assert time.monotonic() < deadline and stopped.poll() is None, stopped.poll()
            time.sleep(0.01)
        time.sleep(0.05)  # the pid is written just before the stop
        assert agentspan.serve(oa_support.support_agent(), max_runs=1) == 1  # once the lease lapsed
        assert agentspan.get(run_id).status() is agentspan.RunStatus.COMPLETED
    finally:
        os.kill(int((home() / "stopped").read_text()), signal.SIGCONT)
    _, err = stopped.communicate(timeout=60)
    assert stopped.returncode != 0 and "LeaseLostError" in err, err
    assert [line.split()[0] for line in lines("effects")] == ["lookup"]
    assert sorted(calls_of("m")) == model_calls  # each model call made once, by one process or the other


def test_a_call_that_fails_because_the_process_exits_is_in_doubt_not_journaled(child_env):
    """The main thread ended while an `agentspan.start` run went on in its thread: the SDK ran the
    sync tool on a closed executor ("cannot schedule new futures after shutdown") and answered the
    model with its error message (was: journaled completed, the run completed, the lookup never
    made); left to the lease instead, as at a crash, and resumed the call is made."""
    run_id = new_id()
    exited = child({**child_env, "EXIT_AT": "tool:lookup_order"}, "start-exit", run_id)
    assert exited.returncode == 0, exited.stderr
    handle = agentspan.get(run_id)
    assert handle.status() is agentspan.RunStatus.RUNNING
    assert [s.key for s in handle.steps() if s.status is agentspan.StepStatus.COMPLETED] == ["llm:0"]
    resumed = child(child_env, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert lines("effects")[0].startswith("lookup 42")
    lookup = [s for s in handle.steps() if s.kind is agentspan.StepKind.TOOL]
    assert [(s.status, s.output, s.error) for s in lookup] == [
        (agentspan.StepStatus.COMPLETED, "order 42: paid $30.00", None)]


LATE_RUN = """
import threading, time, agentspan
from agents import Agent, function_tool
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

@function_tool
async def breaks() -> str:
    "Breaks."
    raise ValueError("its own failure")

agent = Agent(name="late", tools=[breaks], model=ScriptedModel([ToolCall("breaks", {}), "done"], name="m"))

def late():
    while threading.main_thread().is_alive():  # a thread of the app's, still running once main ended
        time.sleep(0.01)
    print("FINAL:", agentspan.run(agent, "go", run_id="late").final_output, flush=True)

threading.Thread(target=late).start()
"""


@pytest.mark.parametrize("transport", ["embedded"])  # (a server store's calls need a thread pool: refused then)
def test_a_run_made_as_the_process_exits_fails_its_calls_for_their_own_reasons(child_env):
    """Only the interpreter's refusal is the exit's: a run made after the main thread ended (in a
    thread of the app's) whose tool raises an error of its own goes on as anywhere else (was:
    ProcessExiting, the run left to its lease)."""
    done = subprocess.run([sys.executable, "-c", LATE_RUN], env=child_env, capture_output=True, text=True, timeout=60)
    assert "FINAL: done" in done.stdout, done.stderr
    (breaks,) = [s for s in agentspan.get("late").steps() if s.kind is agentspan.StepKind.TOOL]
    assert breaks.error == "ValueError: its own failure"


def test_in_doubt_tool_with_ask_policy_asks_before_each_re_run(child_env):
    """``on_in_doubt="ask"``: each interrupted execution is a question of its own (was: the
    approval of the first re-run let a second one through, nobody asked), and a rejected re-run
    tells the model the call may have taken effect (was: "It was not executed")."""
    env = {**child_env, "LOOKUP_IN_DOUBT": "ask"}
    run_id = new_id()
    assert child(env, "start", run_id, crash_at="lookup:after").returncode == -9
    kill_when_waiting(child(env, "resume", run_id, wait=False), run_id)
    handle = agentspan.get(run_id)
    (question,) = handle.pending_approvals()
    assert (question.tool, question.step_key) == ("lookup_order", "llm:0/call:call_0_0/in-doubt:1")
    handle.approve(question.id, by="ops")
    (home() / "crashed").unlink()  # the approved re-run is killed too
    assert child(env, "resume", run_id, crash_at="lookup:after").returncode == -9
    assert len(lines("effects")) == 2
    kill_when_waiting(child(env, "resume", run_id, wait=False), run_id)
    (again,) = handle.pending_approvals()
    assert again.step_key == "llm:0/call:call_0_0/in-doubt:2"
    handle.reject(again.id, by="ops", reason="looked it up by hand")
    resumed = child(env, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert len(lines("effects")) == 2
    (lookup,) = [s for s in handle.steps() if s.kind is agentspan.StepKind.TOOL]
    assert lookup.output == ("Tool call 'lookup_order' was interrupted before it finished and may have taken "
                             "effect; running it again was rejected by ops: looked it up by hand.")


def test_killed_while_waiting_for_approval_then_approved_from_another_process(child_env):
    run_id = new_id()
    kill_when_waiting(child(child_env, "start", run_id, "approval", wait=False), run_id)
    handle = agentspan.get(run_id)
    (approval,) = handle.pending_approvals()
    assert approval.tool == "refund" and approval.args == {"order_id": "42", "amount": 30.0}
    approved = cli(child_env, "approve", approval.id, "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    resumed = child(child_env, "resume", run_id, "approval")
    assert resumed.returncode == 0, resumed.stderr
    assert f"FINAL: {oa_support.FINAL}" in resumed.stdout
    effects = lines("effects")
    assert [e.split()[0] for e in effects] == ["lookup", "refund"]
    assert sorted(calls_of("m")) == [0, 1, 2]


def test_serve_picks_up_an_orphaned_run_after_its_lease_expires(child_env):
    run_id = new_id()
    crashed = child(child_env, "start", run_id, crash_at="model:1")
    assert crashed.returncode == -9
    worker = child(child_env, "serve", run_id)
    assert worker.returncode == 0, worker.stderr
    assert f"FINAL: {oa_support.FINAL}" in worker.stdout
    assert sorted(calls_of("m")) == [0, 1, 1]
    assert len(lines("effects")) == 1


def test_two_processes_resuming_at_once_exactly_one_proceeds(child_env):
    run_id = new_id()
    assert child(child_env, "start", run_id, crash_at="model:1").returncode == -9
    barrier = home() / "go"
    racers = [child({**child_env, "BARRIER": str(barrier)}, "resume", run_id, wait=False) for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(list(home().glob("go.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    barrier.touch()
    outcomes = [r.communicate(timeout=90) + (r.returncode,) for r in racers]
    winners = [o for o in outcomes if o[2] == 0]
    losers = [o for o in outcomes if o[2] != 0]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    # The loser either lost the claim race or, when it got there after the winner had finished
    # (a slower transport), found the run completed; either way it ran nothing.
    assert "LeaseLostError" in losers[0][1] or "is already completed" in losers[0][1], losers[0][1]
    steps = agentspan.get(run_id).steps()
    assert len({s.key for s in steps}) == len(steps) == 3
    assert len(lines("effects")) == 1
