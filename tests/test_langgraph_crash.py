"""SIGKILL crash tests for durable LangGraph runs: real child processes, killed inside a tool call
and inside a model call, then resumed by another process.

LangGraph alone re-runs a crashed node from the top; with Agentspan the model and tool calls that
node had already made come from the journal. Live model calls and tool side effects are counted
across processes via files in the store's home (`lgr_support`).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from langchain_core.load import load
from langchain_core.messages import AIMessage, HumanMessage

import agentspan
from agentspan.records import new_id

import lgr_support
from crash_support import calls_of, cli, final_line, home, kill_when_waiting, run_child

pytestmark = pytest.mark.crash
child = partial(run_child, str(Path(__file__).parent / "lg_child.py"))


def final_of(stdout: str) -> list:
    """The final conversation a child printed."""
    return json.loads(final_line(stdout))


def uncrashed_support_conversation() -> list:
    """What the support graph answers when nothing crashes (plain LangGraph, no Agentspan run)."""
    result = lgr_support.support_graph().invoke({"messages": [HumanMessage(lgr_support.PROMPT)]})
    return json.loads(json.dumps(lgr_support.plain(result["messages"])))


def assert_journal_complete(run_id: str, nodes: int = 4) -> list[agentspan.Step]:
    steps = agentspan.get(run_id).steps()
    keys = [s.key for s in steps]
    assert len(keys) == len(set(keys))
    assert all(s.status is agentspan.StepStatus.COMPLETED for s in steps), [(s.key, s.status) for s in steps]
    kinds = [s.kind.value for s in steps]
    assert kinds.count("llm") == 4 and kinds.count("tool") == 3 and kinds.count("checkpoint") == nodes, kinds
    return steps


@pytest.mark.parametrize(
    ("transport", "crash_at", "writer_calls"),
    [
        # Killed inside the parallel lookup of order 43, after the lookup of 42 was journaled:
        # LangGraph runs the tools node again; 42 is replayed, 43 runs once. On the embedded store
        # and through a server process (`conftest.home`) on SQLite and on PostgreSQL, where the
        # journal and AgentspanSaver's checkpoints both go over HTTP.
        *[pytest.param(transport, "lookup:43", [0, 1], id=f"{transport}-lookup:43")
          for transport in ("embedded", "server-sqlite", "server-postgres")],
        # Killed inside the third call of the summarize node (after a tool call and a model call
        # in that node): the node runs again, its first two calls replayed; only the call that
        # was in flight is made again.
        pytest.param("embedded", "model:writer:1", [0, 1, 1], id="embedded-model:writer:1"),
    ],
)
def test_sigkill_inside_a_node_then_resume_repeats_no_completed_call(child_env, transport, crash_at, writer_calls):
    run_id = new_id()
    crashed = child(child_env, "start", run_id, "support", crash_at=crash_at)
    assert crashed.returncode == -9, crashed.stderr
    assert agentspan.get(run_id).status() is agentspan.RunStatus.RUNNING
    resumed = child(child_env, "resume", run_id, "support")
    assert resumed.returncode == 0, resumed.stderr
    effects = lgr_support.effects()
    assert sorted(e.split()[0] + " " + e.split()[1] for e in effects) == [
        "lookup 42", "lookup 43", "notify summary"]
    assert calls_of("agent") == [0, 1]
    assert calls_of("writer") == writer_calls
    conversation = uncrashed_support_conversation()  # (after counting: it logs calls too)
    assert final_of(resumed.stdout) == conversation
    handle = agentspan.get(run_id)
    assert handle.status() is agentspan.RunStatus.COMPLETED
    stored = load(handle.result(), allowed_objects="messages")["messages"]
    assert json.loads(json.dumps(lgr_support.plain(stored))) == conversation
    steps = assert_journal_complete(run_id)
    # The journal and the graph's checkpoints (AgentspanSaver) went where the transport says.
    assert (home() / "agentspan.db").exists() is (transport == "embedded")
    assert agentspan.get_store().list_checkpoints(limit=1)
    lookups = {s.key.rsplit("/", 1)[1]: s for s in steps if s.name == "lookup_order"}
    assert set(lookups) == {"call:call_a", "call:call_b"}
    # the idempotency key a tool saw is its step's, in whichever process ran it
    assert {e.split()[2] for e in effects if e.startswith("lookup")} == {f"{run_id}:{s.key}" for s in lookups.values()}


def test_serve_picks_up_a_run_killed_inside_a_node(child_env):
    run_id = new_id()
    assert child(child_env, "start", run_id, "support", crash_at="model:writer:1").returncode == -9
    worker = child(child_env, "serve", run_id, "support")
    assert worker.returncode == 0, worker.stderr
    assert calls_of("writer") == [0, 1, 1] and calls_of("agent") == [0, 1]
    assert len(lgr_support.effects()) == 3
    stored = load(agentspan.get(run_id).result(), allowed_objects="messages")["messages"]
    assert isinstance(stored[-1], AIMessage) and stored[-1].content == lgr_support.SUMMARY
    assert_journal_complete(run_id)


@pytest.mark.parametrize("transport", ["embedded", "server-postgres"])  # a server process: `conftest.home`
def test_interrupt_waits_across_a_kill_and_is_approved_from_the_cli(child_env, transport):
    run_id = new_id()
    kill_when_waiting(child(child_env, "start", run_id, "review", wait=False), run_id)
    listed = cli(child_env, "approvals", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (approval,) = json.loads(listed.stdout)
    assert approval["run_id"] == run_id and approval["tool"] == "review"
    assert approval["args"] == {"action": "refund", "order_id": "42", "amount": 30.0,
                                "note": "Refund $30.00 on order 42?"}
    assert lgr_support.effects() == []
    approved = cli(child_env, "approve", approval["id"], "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    resumed = child(child_env, "resume", run_id, "review")
    assert resumed.returncode == 0, resumed.stderr
    assert final_of(resumed.stdout)[-1] == ["ai", "Refunded by alice.", None]
    assert lgr_support.effects() == ["refund 42 30.0"]
    # the node ran twice (before and after the decision); its model call was made once
    assert calls_of("writer") == [0]
    steps = agentspan.get(run_id).steps()
    assert [s.kind.value for s in steps] == ["llm", "approval", "checkpoint"]
    assert steps[1].output["approved"] is True and steps[1].output["by"] == "alice"


def test_approval_required_tool_waits_across_a_kill_and_runs_once_after_approval(child_env):
    run_id = new_id()
    kill_when_waiting(child(child_env, "start", run_id, "refunds", wait=False), run_id)
    (approval,) = agentspan.get(run_id).pending_approvals()
    assert (approval.tool, approval.args) == ("refund", {"order_id": "42", "amount": 30.0})
    assert cli(child_env, "approve", approval.id, "--by", "alice").returncode == 0
    resumed = child(child_env, "resume", run_id, "refunds")
    assert resumed.returncode == 0, resumed.stderr
    conversation = final_of(resumed.stdout)
    assert conversation[2] == ["tool", "refunded $30.00 on order 42", "call_r"]
    assert conversation[-1] == ["ai", "Done.", None]
    assert lgr_support.effects() == ["refund 42 30.0"]
    assert calls_of("agent") == [0, 1]  # the call that asked for the refund was not made again


def only_run() -> agentspan.Run:
    """The one run in the test's store (a direct invocation and its resume share one run)."""
    (run,) = agentspan.get_store().list_runs(limit=10)
    return run


@pytest.mark.parametrize(("transport", "crash_at", "writer_calls"), [
    ("embedded", "lookup:43", [0, 1]), ("embedded", "model:writer:1", [0, 1, 1]),
    ("server-postgres", "lookup:43", [0, 1]),  # the journal and the checkpoints over HTTP (`conftest.home`)
])
def test_a_graph_on_the_saver_alone_killed_inside_a_node_goes_on_with_invoke_none(child_env, transport, crash_at,
                                                                                   writer_calls):
    # No agentspan.run: the graph is compiled with AgentspanSaver and invoked as LangGraph's docs
    # say (`graph.invoke(input, config)`, then `graph.invoke(None, config)` after the crash).
    thread = f"thread-{new_id()}"
    crashed = child(child_env, "direct-start", thread, "support", crash_at=crash_at)
    assert crashed.returncode == -9, crashed.stderr
    run = only_run()
    assert (run.status, run.framework, run.agent, run.session_id) == (
        agentspan.RunStatus.RUNNING, "langgraph", "support", thread)
    resumed = child(child_env, "direct-resume", thread, "support")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(e.split()[0] + " " + e.split()[1] for e in lgr_support.effects()) == [
        "lookup 42", "lookup 43", "notify summary"]
    assert calls_of("agent") == [0, 1]
    assert calls_of("writer") == writer_calls
    assert final_of(resumed.stdout) == uncrashed_support_conversation()
    run = only_run()  # the resume continued the crashed run
    assert run.status is agentspan.RunStatus.COMPLETED
    assert_journal_complete(run.id, nodes=0)  # a direct invocation's nodes are in its checkpoints


@pytest.mark.parametrize("then", ["direct-resume", "direct-start"])
def test_a_direct_run_killed_under_durability_exit_is_continued_or_superseded(child_env, then):
    # "exit" checkpoints only at the run's end: the killed run left its thread without a checkpoint
    env = {**child_env, "LG_DURABILITY": "exit"}
    thread = f"thread-{new_id()}"
    assert child(env, "direct-start", thread, "support", crash_at="model:writer:1").returncode == -9
    crashed = only_run()
    after = child(env, then, thread, "support")
    assert after.returncode == 0, after.stderr  # invoke(None) was a new run: LangGraph's EmptyInputError
    assert final_of(after.stdout) == uncrashed_support_conversation()
    statuses = {r.id: r.status for r in agentspan.get_store().list_runs(limit=10)}
    if then == "direct-resume":  # invoke(None) goes on with the crashed run's own input
        assert statuses == {crashed.id: agentspan.RunStatus.COMPLETED}
    else:  # new input supersedes it (no worker takes it up later to run it again on the thread)
        assert len(statuses) == 2 and statuses[crashed.id] is agentspan.RunStatus.CANCELLED
        assert "superseded" in (agentspan.get_store().get_run(crashed.id).error or "")


def test_a_graph_on_the_saver_alone_waits_on_its_interrupt_until_approved_from_the_cli(child_env):
    thread = f"thread-{new_id()}"
    started = child(child_env, "direct-start", thread, "review")
    assert started.returncode == 0, started.stderr
    assert "INTERRUPTED" in started.stdout  # the application got LangGraph's __interrupt__, as without Agentspan
    assert only_run().status is agentspan.RunStatus.WAITING
    listed = cli(child_env, "approvals", "list", "--json")
    (approval,) = json.loads(listed.stdout)
    assert (approval["run_id"], approval["tool"]) == (only_run().id, "review")
    assert cli(child_env, "approve", approval["id"], "--by", "alice").returncode == 0
    resumed = child(child_env, "direct-resume", thread, "review")
    assert resumed.returncode == 0, resumed.stderr
    assert final_of(resumed.stdout)[-1] == ["ai", "Refunded by alice.", None]
    assert lgr_support.effects() == ["refund 42 30.0"]
    assert calls_of("writer") == [0]  # the node ran twice; its model call was made once
    run = only_run()
    assert run.status is agentspan.RunStatus.COMPLETED
    assert [s.kind.value for s in agentspan.get(run.id).steps()] == ["llm", "approval"]
