"""openai-agents MCP tools: the calls an agent makes to its MCP servers' tools are journaled steps,
replayed after a crash (never made twice) and gated by Agentspan approvals.

Real parts only: a real MCP server (`mcp_notes`, over stdio) in a process of its own, real agent
processes (`oa_mcp_child`), SIGKILL.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

import agentspan
from agentspan.records import new_id

import oa_support
from crash_support import calls_of, cli, kill_when_waiting, lines, run_child

pytestmark = pytest.mark.crash

child = partial(run_child, str(Path(__file__).parent / "oa_mcp_child.py"))


def test_mcp_tool_calls_are_journaled_and_not_made_again_after_sigkill(child_env):
    run_id = new_id()
    # killed between steps: the first MCP call is journaled, the next model call not yet started
    crashed = child(child_env, "start", run_id, crash_at="between:1")
    assert crashed.returncode == -9, crashed.stderr
    assert lines("effects") == ["note a"]
    resumed = child(child_env, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"FINAL: {oa_support.FINAL}" in resumed.stdout
    assert lines("effects") == ["note a", "note b"]  # note a was replayed from the journal
    assert sorted(calls_of("m")) == [0, 1, 2]  # model call 0 was replayed too
    handle = agentspan.get(run_id)
    steps = handle.steps()
    assert [(s.kind.value, s.name) for s in steps if s.kind is agentspan.StepKind.TOOL] == [
        ("tool", "write_note"), ("tool", "write_note")]
    assert [s.input for s in steps if s.kind is agentspan.StepKind.TOOL] == [{"text": "a"}, {"text": "b"}]
    assert steps[1].output == {"type": "text", "text": "saved a"}
    assert all(s.status is agentspan.StepStatus.COMPLETED for s in steps)
    assert handle.status() is agentspan.RunStatus.COMPLETED


def test_mcp_server_approval_is_an_agentspan_approval(child_env):
    run_id = new_id()
    kill_when_waiting(child(child_env, "start", run_id, "approval", wait=False), run_id)
    assert lines("effects") == []
    (approval,) = agentspan.get(run_id).pending_approvals()
    assert approval.tool == "write_note" and approval.args == {"text": "a"}
    approved = cli(child_env, "approve", approval.id, "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    resumed = child(child_env, "resume", run_id, "approval")
    assert resumed.returncode == 0, resumed.stderr
    assert f"FINAL: {oa_support.FINAL}" in resumed.stdout
    assert lines("effects") == ["note a"]
    assert agentspan.get(run_id).status() is agentspan.RunStatus.COMPLETED


def test_a_worker_connects_the_mcp_servers_it_was_given_unconnected(child_env):
    run_id = new_id()
    crashed = child(child_env, "start", run_id, crash_at="between:1")
    assert crashed.returncode == -9, crashed.stderr
    worker = child(child_env, "serve", run_id)  # its agent's server is not connected: the run connects it
    assert worker.returncode == 0, worker.stderr
    assert f"FINAL: {oa_support.FINAL}" in worker.stdout
    assert lines("effects") == ["note a", "note b"]
    assert agentspan.get(run_id).status() is agentspan.RunStatus.COMPLETED
