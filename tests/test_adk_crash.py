"""SIGKILL crash tests for Google ADK agents: real child processes killed inside a tool call, inside
a model call and inside one of two parallel calls, then resumed by another process.

Live model calls and tool side effects are counted across processes via files in the store's
home (`adk_support`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from google.adk.events._rewind_events import _apply_rewinds

import agentspan
from agentspan.records import new_id
from agentspan_adk._session import SessionSnapshots

import adk_support
from crash_support import calls_of, cli, final_line, kill_when_waiting, lines, run_child

pytestmark = pytest.mark.crash
child = partial(run_child, str(Path(__file__).parent / "adk_child.py"))


def uncrashed_final() -> str:
    """What the support agents answer when nothing crashes (logs calls too: count before)."""
    return agentspan.run(adk_support.support_tree(), adk_support.PROMPT).text


@pytest.mark.parametrize(
    ("crash_at", "billing_calls", "lookups"),
    [
        # killed inside the tool after its side effect, before it was journaled: the in-doubt call
        # runs again (policy "retry") with the same idempotency key
        ("lookup:after", [0, 1], 2),
        # killed inside notify_customer, the second of two parallel calls: quote_refund (journaled)
        # is replayed, notify runs once
        ("notify:before", [0, 1], 1),
        # killed inside billing's second model call: the call in flight is made again; both
        # parallel tool calls are replayed, with the session state notify_customer had set
        ("model:billing:1", [0, 1, 1], 1),
    ],
)
def test_sigkill_then_resume_repeats_no_completed_call(child_env, crash_at, billing_calls, lookups):
    run_id = new_id()
    crashed = child(child_env, "start", run_id, "support", crash_at=crash_at)
    assert crashed.returncode == -9, crashed.stderr
    assert agentspan.get(run_id).status() is agentspan.RunStatus.RUNNING
    resumed = child(child_env, "resume", run_id, "support")
    assert resumed.returncode == 0, resumed.stderr
    assert calls_of("support") == [0, 1]  # the model is never asked twice for a completed call
    assert calls_of("billing") == billing_calls
    effects = adk_support.effects()
    assert effects.count("lookup 42") == lookups
    assert effects.count("quote 42") == 1 and effects.count("notify 42") == 1
    keys = {line.split()[-1] for line in lines("effects") if line.startswith("lookup")}
    assert keys == {f"{run_id}:support/llm:0/call:0"}  # one idempotency key for every attempt
    handle = agentspan.get(run_id)
    assert handle.status() is agentspan.RunStatus.COMPLETED
    steps = handle.steps()
    assert len({s.key for s in steps}) == len(steps)
    assert all(s.status is agentspan.StepStatus.COMPLETED for s in steps), [(s.key, s.status) for s in steps]
    assert sorted(s.kind.value for s in steps) == ["checkpoint", "handoff", "llm", "llm", "llm", "llm",
                                                    "tool", "tool", "tool"]
    snapshots = SessionSnapshots(agentspan.get_store(), "support", adk_support.USER, f"session-{run_id}")
    session = snapshots.load(snapshots.latest_id())
    assert session is not None and session.state["notified"] == "42"
    assert final_line(resumed.stdout) == handle.result()["text"] == uncrashed_final() == adk_support.FINAL


def test_serve_picks_up_a_run_killed_inside_a_model_call(child_env):
    run_id = new_id()
    assert child(child_env, "start", run_id, "support", crash_at="model:billing:0").returncode == -9
    worker = child(child_env, "serve", run_id, "support")
    assert worker.returncode == 0, worker.stderr
    assert final_line(worker.stdout) == adk_support.FINAL
    assert calls_of("support") == [0, 1] and calls_of("billing") == [0, 0, 1]
    assert sorted(adk_support.effects()) == ["lookup 42", "notify 42", "quote 42"]


def test_adk_confirmation_waits_across_a_kill_and_is_approved_from_another_process(child_env):
    run_id = new_id()
    kill_when_waiting(child(child_env, "start", run_id, "confirm", wait=False), run_id)
    (approval,) = agentspan.get(run_id).pending_approvals()
    assert (approval.tool, approval.args, approval.step_key) == (
        "cancel_order", {"order_id": "42"}, "orders/llm:0/call:0/approval")
    assert adk_support.effects() == []
    approved = cli(child_env, "approve", approval.id, "--by", "carol")
    assert approved.returncode == 0, approved.stderr
    resumed = child(child_env, "resume", run_id, "confirm")
    assert resumed.returncode == 0, resumed.stderr
    assert final_line(resumed.stdout) == "Cancelled."
    assert adk_support.effects() == ["cancel 42"]
    assert calls_of("orders") == [0, 1]  # the call that asked for the tool was not made again
    steps = agentspan.get(run_id).steps()
    assert [s.key for s in steps] == ["adk:session", "orders/llm:0", "orders/llm:0/call:0/approval",
                                      "orders/llm:0/call:0/confirmed", "orders/llm:1"]
    assert steps[2].output["by"] == "carol" and steps[3].output == {"cancelled": "42"}


def test_approval_required_tool_waits_across_a_kill_and_a_worker_finishes_it(child_env):
    run_id = new_id()
    kill_when_waiting(child(child_env, "start", run_id, "refund", wait=False), run_id)
    handle = agentspan.get(run_id)
    (approval,) = handle.pending_approvals()
    assert (approval.tool, approval.args) == ("refund", {"order_id": "42", "amount": 30.0})
    handle.approve(by="dave")
    worker = child(child_env, "serve", run_id, "refund")
    assert worker.returncode == 0, worker.stderr
    assert final_line(worker.stdout) == "Done."
    assert adk_support.effects() == ["refund 42 30.0"]
    assert calls_of("refunds") == [0, 1]


def test_user_built_runner_resumes_a_killed_invocation_when_the_session_runs_again(child_env):
    session_id = "s-" + new_id()
    crashed = child(child_env, "runner", session_id, "support", crash_at="notify:before")
    assert crashed.returncode == -9, crashed.stderr
    (run,) = agentspan.get_store().list_runs()
    assert (run.agent, run.status, run.session_id) == ("shop/support", agentspan.RunStatus.RUNNING, session_id)
    again = child(child_env, "runner", session_id, "support")
    assert again.returncode == 0, again.stderr
    assert final_line(again.stdout) == adk_support.FINAL
    assert calls_of("support") == [0, 1] and calls_of("billing") == [0, 1]
    assert sorted(adk_support.effects()) == ["lookup 42", "notify 42", "quote 42"]
    (run,) = agentspan.get_store().list_runs()  # the same run, claimed again and completed
    assert run.status is agentspan.RunStatus.COMPLETED and run.output["text"] == adk_support.FINAL
    # The durable session held the dead attempt's events; it was rewound before the retry, so the
    # conversation the session shows is the one an uncrashed run leaves.
    import asyncio

    session = asyncio.run(adk_support.runner(adk_support.support_tree()).session_service.get_session(
        app_name=adk_support.APP, user_id=adk_support.USER, session_id=session_id))
    live = _apply_rewinds(session.events)
    assert [e.author for e in live] == ["user", "support", "support", "support", "support", "billing", "billing",
                                        "billing"]
    assert session.state["notified"] == "42"


def test_user_built_runner_goes_on_after_a_kill_past_a_confirmed_tool_when_the_answer_is_sent_again(child_env):
    session_id = "s-" + new_id()
    asked = child(child_env, "runner", session_id, "confirm")
    assert asked.returncode == 0, asked.stderr
    # the confirmed tool ran and its result is in the session; the process dies in the next model call
    crashed = child(child_env, "runner-confirm", session_id, "confirm", crash_at="model:orders:1")
    assert crashed.returncode == -9, crashed.stderr
    again = child(child_env, "runner-confirm", session_id, "confirm")  # the application sends its answer again
    assert again.returncode == 0, again.stderr
    assert final_line(again.stdout) == "Cancelled."  # was: ADK ignored the acted-on answer, no final answer
    assert adk_support.effects() == ["cancel 42"]
    assert calls_of("orders") == [0, 1, 1]  # the call in flight at the kill was made again
    (run,) = agentspan.get_store().list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED and run.output["text"] == "Cancelled."

