"""Text that is not valid UTF-8 (a lone surrogate: a file name decoded with ``surrogateescape``, a
broken emoji) in what a run journals.

SQLite stores text as UTF-8 and cannot bind a lone surrogate. In a JSON value (a tool's result, a
model's reply, a run's input) the journal writes it as the JSON escape ``\\udcff`` and reads it back
as it was; in an error message it is written as the escape's text; an id holding one is refused
with a `ConfigurationError` naming it. Before, the call's end was never journaled (the tool had run,
the model had been billed) and the run failed with a raw ``UnicodeEncodeError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agents import Agent, function_tool
from typer.testing import CliRunner

import agentspan
import agentspan.config
from agentspan import jsontext
from agentspan.cli import app
from agentspan.errors import ConfigurationError
from agentspan.hashing import canonical_json
from agentspan.records import RunStatus, StepStatus
from agentspan.stores.sqlite import SqliteStore
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

ODD = "caf" + b"\xe9".decode("utf-8", "surrogateescape")  # 'caf\udce9'


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("AGENTSPAN_HOME", str(tmp_path))
    agentspan.config.reset()
    yield tmp_path
    agentspan.config.reset()


def test_json_text_escapes_a_lone_surrogate_and_reads_it_back() -> None:
    value = {"a": ODD, "b": "é", "n": 10**30}
    text = jsontext.dumps(value)
    text.encode("utf-8")  # storable
    assert jsontext.loads(text) == value and json.loads(text) == value
    assert jsontext.loads(jsontext.canonical(value)) == value
    assert canonical_json({"b": "é"}) == '{"b":"é"}'  # valid text keeps its canonical form (and hashes)
    assert jsontext.utf8_text(f"open {ODD}") == "open caf\\udce9"
    assert jsontext.utf8_text("é") == "é"


def test_a_tool_result_and_a_reply_with_a_lone_surrogate_are_journaled(home: Path) -> None:
    calls: list[str] = []

    @function_tool
    def read_name(q: str) -> str:
        """Returns a file name."""
        calls.append(q)
        return f"name: {ODD}"

    def agent() -> Agent:
        return Agent(name="files", tools=[read_name],
                     model=ScriptedModel([ToolCall("read_name", {"q": "first"}), f"final {ODD}"]))

    result = agentspan.run(agent(), f"look at {ODD}", run_id="odd")
    assert result.final_output == f"final {ODD}"
    handle = agentspan.get("odd")
    assert handle.status() is RunStatus.COMPLETED
    steps = handle.steps()
    assert [(s.kind.value, s.status) for s in steps] == [
        ("llm", StepStatus.COMPLETED), ("tool", StepStatus.COMPLETED), ("llm", StepStatus.COMPLETED)]
    assert steps[1].input == {"q": "first"} and steps[1].output == f"name: {ODD}"
    assert handle.run().input == f"look at {ODD}"
    # read back from the file by another store object: as it was
    other = SqliteStore(home / "agentspan.db", create=False)
    try:
        assert [s.output for s in other.list_steps("odd")] == [s.output for s in steps]
    finally:
        other.close()
    assert calls == ["first"]


def test_a_tool_error_quoting_a_lone_surrogate_is_journaled_failed(home: Path) -> None:
    @function_tool(failure_error_function=None)
    def open_file(folder: str) -> str:
        """Opens the file of a folder."""
        raise FileNotFoundError(f"no such file: {folder}/{ODD}")  # a name read from the disk

    agent = Agent(name="files", tools=[open_file], model=ScriptedModel([ToolCall("open_file", {"folder": "x"}), "x"]))
    with pytest.raises(Exception, match="no such file"):
        agentspan.run(agent, "open it", run_id="odd-error")
    handle = agentspan.get("odd-error")
    assert handle.status() is RunStatus.FAILED
    tool = [s for s in handle.steps() if s.kind.value == "tool"]
    assert [s.status for s in tool] == [StepStatus.FAILED]
    assert tool[0].error == "FileNotFoundError: no such file: x/caf\\udce9"
    assert "caf\\udce9" in (handle.run().error or "")


def test_an_id_with_a_lone_surrogate_is_refused_by_name() -> None:
    agent = Agent(name="a", model=ScriptedModel(["done"]))
    with pytest.raises(ConfigurationError, match=r"run_id 'r\\udce9' is not valid UTF-8"):
        agentspan.run(agent, "hi", run_id="r" + b"\xe9".decode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigurationError, match="not valid UTF-8"):
        agentspan.get("id" + b"\xff".decode("utf-8", "surrogateescape")).status()
    assert agentspan.get_store().list_runs() == []  # nothing stored


def test_through_the_server_too(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client sends such a value escaped and reads it back (pydantic refuses both ways), the
    server takes it in a JSON value and refuses it in a text column, and an id holding one never
    reaches a URL."""
    from server_support import sqlite_server

    with sqlite_server(home / "server.db") as (url, backing):
        monkeypatch.setenv("AGENTSPAN_SERVER_URL", url)
        agentspan.config.reset()

        @function_tool
        def read_name(q: str) -> str:
            """Returns a file name."""
            return f"name: {ODD}"

        agent = Agent(name="files", tools=[read_name],
                      model=ScriptedModel([ToolCall("read_name", {"q": "first"}), f"final {ODD}"]))
        assert agentspan.run(agent, f"look at {ODD}", run_id="odd").final_output == f"final {ODD}"
        steps = agentspan.get("odd").steps()  # read back through the server
        assert [(s.status, s.output) for s in steps][1:] == [(StepStatus.COMPLETED, f"name: {ODD}"),
                                                             (StepStatus.COMPLETED, steps[2].output)]
        assert [s.output for s in backing.list_steps("odd")] == [s.output for s in steps]
        assert agentspan.get("odd").run().input == f"look at {ODD}"
        with pytest.raises(ConfigurationError, match="not valid UTF-8"):
            agentspan.get("id" + b"\xff".decode("utf-8", "surrogateescape")).status()
        with pytest.raises(ConfigurationError, match="not valid UTF-8"):
            agentspan.get_store().list_runs(agent=ODD)
        shown = CliRunner().invoke(app, ["runs", "show", "odd", "--json"])
        assert shown.exit_code == 0 and json.loads(shown.stdout)["output"] == f"final {ODD}"
        assert "\\udce9" in shown.stdout  # escaped: the output is valid UTF-8
        refused = httpx.post(f"{url}/api/runs", content=b'{"framework": "f", "agent": "a\\udce9", "input": 1}',
                             headers={"Content-Type": "application/json"})
        assert refused.status_code == 422 and "lone surrogate" in refused.text


def test_an_adk_session_holding_one(home: Path) -> None:
    from google.adk.agents import LlmAgent

    from agentspan_adk.testing import Call, ScriptedLlm

    def read_name(q: str) -> dict[str, str]:
        """Returns a file name."""
        return {"name": f"name: {ODD}"}

    model = ScriptedLlm(model="m", turns=[[Call("read_name", {"q": "a"})], f"final {ODD}"])
    agent = LlmAgent(name="files", model=model, tools=[read_name])
    assert agentspan.run(agent, "look", run_id="adk-odd").text == f"final {ODD}"
    handle = agentspan.get("adk-odd")
    assert handle.status() is RunStatus.COMPLETED
    assert all(s.status is StepStatus.COMPLETED for s in handle.steps())
