"""Several servers on one PostgreSQL database, a server SIGKILLed mid-run, racing workers.

Real server processes (``python -m agentspan_server``) on a throwaway PostgreSQL cluster; the
agent is the openai-agents support agent of `oa_support` with a scripted model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentspan
from agentspan.records import new_id
from agentspan.stores.remote import RemoteStore

import crash_support
import oa_support
from server_support import ServerProcess

pytestmark = pytest.mark.crash
CHILD = str(Path(__file__).parent / "oa_child.py")


@pytest.fixture
def replicas(pg_db: str):
    a, b = ServerProcess(pg_db).start(), ServerProcess(pg_db).start()
    yield a, b
    a.stop()
    b.stop()


def test_run_started_on_one_replica_is_approved_and_read_on_another(home, replicas, monkeypatch):
    a, b = replicas
    monkeypatch.setenv("AGENTSPAN_SERVER_URL", a.url)
    agentspan.config.reset()
    handle = agentspan.start(oa_support.support_agent(approval=True), oa_support.PROMPT)
    deadline = time.monotonic() + 30
    via_b = RemoteStore(b.url)
    while not (pending := via_b.list_approvals(run_id=handle.id, status="pending")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert via_b.get_run(handle.id).status is agentspan.RunStatus.WAITING
    cli = subprocess.run([sys.executable, "-m", "agentspan.cli", "approve", pending[0].id, "--by", "ops"],
                         env={**os.environ, "AGENTSPAN_SERVER_URL": b.url},
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert handle.result(timeout=60).final_output == oa_support.FINAL
    run = via_b.get_run(handle.id)
    assert run.status is agentspan.RunStatus.COMPLETED
    assert [s.kind.value for s in via_b.list_steps(handle.id)] == ["llm", "tool", "llm", "tool", "llm"]
    assert [line.split()[0] for line in crash_support.lines("effects")] == ["lookup", "refund"]


def test_server_sigkilled_mid_run_client_carries_on_through_another_replica(home, replicas, monkeypatch):
    a, b = replicas
    monkeypatch.setenv("AGENTSPAN_SERVER_URL", f"{a.url},{b.url}")
    agentspan.config.reset()
    turns = [oa_support.ToolCall("kill_server", {}), oa_support.ToolCall("lookup_order", {"order_id": "42"}),
             oa_support.FINAL]

    @oa_support.function_tool
    def kill_server() -> str:
        """SIGKILLs server A while the run is in flight."""
        a.kill()
        crash_support.log("effects", "kill")
        return "killed"

    agent = oa_support.Agent(name="support", instructions="x", tools=[kill_server, oa_support.lookup_order],
                             model=oa_support.model_for(turns))
    result = agentspan.run(agent, oa_support.PROMPT)
    assert result.final_output == oa_support.FINAL
    assert a.proc.returncode == -9
    via_b = RemoteStore(b.url)
    (run,) = via_b.list_runs()
    steps = via_b.list_steps(run.id)
    assert run.status is agentspan.RunStatus.COMPLETED
    assert len(steps) == len({s.key for s in steps}) == 5
    assert all(s.status is agentspan.StepStatus.COMPLETED for s in steps)
    assert [line.split()[0] for line in crash_support.lines("effects")] == ["kill", "lookup"]
    assert sorted(crash_support.calls_of("m")) == [0, 1, 2]


def test_two_workers_racing_for_an_orphaned_run_exactly_one_runs_it(home, replicas, child_env):
    a, b = replicas
    workers = [
        subprocess.Popen([sys.executable, "-m", "agentspan.cli", "worker", "oa_support:AGENT"],
                         env={**child_env, "AGENTSPAN_SERVER_URL": url}, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for url in (a.url, b.url)
    ]
    for worker in workers:  # both are polling before the run is orphaned: a real race for it
        assert "serving" in worker.stderr.readline()
    run_id = new_id()
    crashed = subprocess.run([sys.executable, CHILD, "start", run_id],
                             env={**child_env, "AGENTSPAN_SERVER_URL": a.url, "CRASH_AT": "model:1"},
                             capture_output=True, text=True, timeout=90)
    assert crashed.returncode == -9, crashed.stderr
    store = RemoteStore(b.url)
    deadline = time.monotonic() + 60
    while store.get_run(run_id).status is not agentspan.RunStatus.COMPLETED and time.monotonic() < deadline:
        time.sleep(0.05)
    for worker in workers:
        worker.terminate()
    reports = [w.communicate(timeout=30)[1] for w in workers]
    assert store.get_run(run_id).status is agentspan.RunStatus.COMPLETED, reports
    assert all("run(s) handled" in r for r in reports), reports
    handled = sorted(int(r.rsplit("worker: ", 1)[1].split()[0]) for r in reports)
    assert handled == [0, 1], reports
    steps = store.list_steps(run_id)
    assert len(steps) == len({s.key for s in steps}) == 3
    assert len(crash_support.lines("effects")) == 1
    assert sorted(crash_support.calls_of("m")) == [0, 1, 1]
