"""A server outage longer than the client's ``retry_for``: the run that meets it is left for a
worker (not recorded failed), and a worker polling through the outage outlives it and goes on
with the run once the server is back. The server is a real process, SIGKILLed and started again
on the same port and database."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, function_tool

import agentspan
from agentspan import attached
from agentspan.errors import ServerUnreachable
from agentspan.stores.remote import RemoteStore
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from server_support import ServerProcess


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    monkeypatch.setenv("AGENTSPAN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AGENTSPAN_SERVER_URL", raising=False)
    served = ServerProcess(str(tmp_path / "server.db")).start()
    agentspan.configure(store=RemoteStore(served.url, retry_for=0.5), lease_ttl=1.0, poll_interval=0.05)
    yield served
    agentspan.config.reset()
    served.stop()


def outage_agent(server: ServerProcess, effects: list[str]) -> Agent[Any]:
    @function_tool
    def ship(order_id: str) -> str:
        """Ships an order."""
        effects.append(f"ship {order_id}")
        if len(effects) == 1:
            server.kill()  # the server dies while the tool runs: its end cannot be journaled
        return f"shipped {order_id}"

    model = ScriptedModel([ToolCall("ship", {"order_id": "42"}), "Shipped order 42."])
    return Agent(name="shipper", model=model, tools=[ship])


def test_a_run_that_meets_an_outage_is_left_to_a_worker_that_outlives_it(server, caplog):
    effects: list[str] = []
    agent = outage_agent(server, effects)
    with pytest.raises(ServerUnreachable, match="unreachable after 0.5s"):
        agentspan.run(agent, "Ship order 42", run_id="outage-1")
    # a worker polls while the server is still down: it logs the outage and goes on polling
    served: list[int] = []
    worker = threading.Thread(target=lambda: served.append(agentspan.serve(agent, max_runs=1)), daemon=True)
    with caplog.at_level(logging.WARNING, logger="agentspan"):
        worker.start()
        worker.join(timeout=1.5)
        assert worker.is_alive()  # was: the first failed poll ended serve() with TransportError
        assert "unreachable" in caplog.text
        server.start()  # same port, same database
        worker.join(timeout=60)
    assert not worker.is_alive() and served == [1]
    run = agentspan.get("outage-1").run()
    assert run.status is agentspan.RunStatus.COMPLETED and run.output is not None  # was: failed, left for a retry
    assert agentspan.get("outage-1").result(timeout=5) == "Shipped order 42."
    # the call the outage cut off is in doubt: its policy ("retry") runs it again, once
    assert effects == ["ship 42", "ship 42"]
    steps = {s.key: s for s in agentspan.get("outage-1").steps()}
    assert steps["llm:0"].attempt == 1  # the model call before the outage was not made again


def test_a_run_that_met_an_outage_is_not_recorded_failed_when_the_server_is_back_at_once(server):
    agentspan.configure(store=RemoteStore(server.url, retry_for=3.0), lease_ttl=1.0, poll_interval=0.05)
    effects: list[str] = []
    agent = outage_agent(server, effects)

    def restart_once_the_run_met_the_outage() -> None:
        while (run := attached.attached_here("outage-2")) is None or run.active.fatal is None:
            time.sleep(0.01)
        server.start()  # back within the next write's retry_for

    restarter = threading.Thread(target=restart_once_the_run_met_the_outage, daemon=True)
    restarter.start()
    with pytest.raises(ServerUnreachable):
        agentspan.run(agent, "Ship order 42", run_id="outage-2")
    restarter.join(timeout=30)
    run = agentspan.get("outage-2").run()
    assert run.status is agentspan.RunStatus.RUNNING and run.error is None  # was: failed with the outage
    assert agentspan.serve(agent, max_runs=1) == 1  # once its lease lapsed
    assert agentspan.get("outage-2").result(timeout=5) == "Shipped order 42."
