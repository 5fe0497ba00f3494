"""A step larger than the server takes (its ``--max-body-bytes``): the run fails with an error that
says which run, which setting and what to do, and a retry on a server that takes more goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import Agent, function_tool

import agentspan
import agentspan.config
from agentspan.errors import ConfigurationError
from agentspan.stores.sqlite import SqliteStore
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from server_support import thread_server


@pytest.fixture()
def backing(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "server.db")
    yield store
    store.close()


def test_a_step_over_the_servers_body_limit_names_the_setting_and_the_retry(
    backing: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentspan_server.app import create_app

    made: list[int] = []

    @function_tool
    def report(n: int) -> str:
        """A long report."""
        made.append(n)
        return "x" * 20_000

    def agent() -> Agent:
        return Agent(name="a", instructions="x", model=ScriptedModel([ToolCall("report", {"n": 1}), "done"]),
                     tools=[report])

    monkeypatch.setenv("AGENTSPAN_HOME", str(tmp_path / "home"))
    with thread_server(create_app(backing, max_body_bytes=8_192)) as url:
        monkeypatch.setenv("AGENTSPAN_SERVER_URL", url)
        agentspan.config.reset()
        try:
            with pytest.raises(ConfigurationError) as refused:
                agentspan.run(agent(), "go", run_id="big one")
        finally:
            agentspan.config.reset()
    message = str(refused.value)  # was only "the request body exceeds 8192 bytes"
    assert "exceeds 8192 bytes" in message and "--max-body-bytes" in message
    assert "run 'big one'" in message and "agentspan runs retry 'big one'" in message
    with thread_server(create_app(backing, max_body_bytes=1_048_576)) as url:
        monkeypatch.setenv("AGENTSPAN_SERVER_URL", url)
        agentspan.config.reset()
        try:
            assert agentspan.retry("big one", agent()).result(timeout=30).final_output == "done"
        finally:
            agentspan.config.reset()
    assert made == [1, 1]  # its end never reached the journal: made again (its in-doubt policy, retry)
