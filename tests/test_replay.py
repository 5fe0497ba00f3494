"""Journal replay: ``agentspan runs export`` and `agentspan.testing.replay` as a determinism
regression test, for openai-agents and LangGraph (agents in `tk_agents`, graphs in `tk_graphs`;
their models would fail if ever called, and their tools record side effects in `tk_effects`)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents import function_tool
from langchain_core.messages import AIMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from typer.testing import CliRunner

import agentspan
from agentspan.cli import app
from agentspan.errors import ConfigurationError, InvalidExportError, ReplayDivergenceError
from agentspan.export import FORMAT
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing import approve, call, mock_run, reject, replay, reply

import tk_agents as oa
import tk_graphs as lg
from tk_effects import effect, effects

REFUND_SCRIPT = [call("lookup_order", order_id="42"), call("transfer_to_billing"),
                 call("refund", order_id="42", amount=30.0), reply("Refunded $30.00 on order 42.")]
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("effects_file")


def export(run_id: str, path: Path) -> Path:
    """``agentspan runs export RUN_ID -o PATH`` (in process, on the test's store)."""
    result = runner.invoke(app, ["runs", "export", run_id, "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


def reset_effects(path: Path) -> None:
    path.unlink(missing_ok=True)


# ---- export ----------------------------------------------------------------------------------
def test_export_holds_the_run_its_whole_journal_and_approvals(agentspan_store: SqliteStore, tmp_path: Path) -> None:
    recorded = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT)
    document = json.loads(export(recorded.run_id, tmp_path / "tests" / "runs" / "run.json").read_text())  # folders made
    assert document["format"] == FORMAT and isinstance(document["exported_at"], float)
    shown = json.loads(runner.invoke(app, ["runs", "show", recorded.run_id, "--json"]).output)
    assert document["run"] == {k: v for k, v in shown.items() if k not in ("steps", "approvals")}
    assert [s["key"] for s in document["steps"]] == [s.key for s in recorded.steps]
    assert [s["seq"] for s in document["steps"]] == sorted(s["seq"] for s in document["steps"])
    tool_step = document["steps"][1]
    assert (tool_step["kind"], tool_step["name"], tool_step["input"], tool_step["output"], tool_step["status"],
            tool_step["attempt"]) == ("tool", "lookup_order", {"order_id": "42"}, "order 42: paid $30.00",
                                      "completed", 1)
    assert len(tool_step["input_hash"]) == 64
    (approval,) = document["approvals"]
    assert (approval["tool"], approval["status"], approval["step_key"]) == ("refund", "approved", "llm:2/call:call_2_0")


def test_export_to_stdout_in_a_subprocess_and_unknown_run(agentspan_store: SqliteStore) -> None:
    recorded = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT)
    done = subprocess.run([sys.executable, "-m", "agentspan.cli", "runs", "export", recorded.run_id],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run"]["id"] == recorded.run_id
    missing = runner.invoke(app, ["runs", "export", "no-such-run"])
    assert missing.exit_code == 1
    assert "error:" in missing.output and "no-such-run" in missing.output
    blocked = Path(__file__)  # a file: no folder can be made under it
    refused = runner.invoke(app, ["runs", "export", recorded.run_id, "-o", str(blocked / "run.json")])
    assert refused.exit_code == 1 and "cannot write" in refused.output


# ---- openai-agents ---------------------------------------------------------------------------
def test_openai_replay_serves_every_call_from_the_recording(agentspan_store: SqliteStore, tmp_path: Path,
                                                            effects_file: Path) -> None:
    recorded = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT)
    path = export(recorded.run_id, tmp_path / "run.json")
    assert effects() == ["lookup 42", "refund 42 30.0"]
    reset_effects(effects_file)
    result = replay(path, oa.support)
    assert result.status is agentspan.RunStatus.COMPLETED
    assert result.output == "Refunded $30.00 on order 42."
    assert result.replayed == {"llm": 4, "tool": 2, "handoff": 1}
    assert result.live == {}  # no model was called
    assert effects() == []  # no tool ran
    assert result.run_id != recorded.run_id
    assert [r.id for r in agentspan_store.list_runs()] == [recorded.run_id]  # replayed in an isolated store
    assert [(c.name, c.result) for c in result.tool_calls] == [(c.name, c.result) for c in recorded.tool_calls]


def test_openai_changed_instructions_diverge_at_the_first_model_call(agentspan_store: SqliteStore,
                                                                     tmp_path: Path) -> None:
    recorded = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT)
    path = export(recorded.run_id, tmp_path / "run.json")
    changed = oa.support.clone(instructions="Help the customer, briefly.")
    with pytest.raises(ReplayDivergenceError) as caught:
        replay(path, changed)
    error = caught.value
    assert error.run_id == recorded.run_id and error.key == "llm:0"
    assert "recorded llm call" in str(error)
    assert 'first difference at $.system: recorded "Help the customer.", live "Help the customer, briefly."' in str(
        error)


def test_openai_run_ending_early_names_the_first_recorded_step_never_reached(agentspan_store: SqliteStore,
                                                                             tmp_path: Path) -> None:
    recorded = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT)
    path = export(recorded.run_id, tmp_path / "run.json")
    changed = oa.support.clone(tool_use_behavior="stop_on_first_tool")  # ends after lookup_order
    with pytest.raises(ReplayDivergenceError, match=r"recorded step never reached: llm:1 \(llm ") as caught:
        replay(path, changed)
    assert caught.value.key == "llm:1"
    assert "the replayed run ended completed" in str(caught.value)


def _scripted(name: str, turns: list[Any], tools: list[Any] | None = None, **kwargs: Any) -> Any:
    from agents import Agent

    from agentspan_openai_agents.testing import ScriptedModel

    return Agent(name=name, instructions="Help.", tools=tools or [], model=ScriptedModel(turns, name=name), **kwargs)


def test_openai_replay_answers_an_agent_tool_call_from_the_recording(agentspan_store: SqliteStore,
                                                                     tmp_path: Path) -> None:
    """The agent tool's run is not made again, so its own recorded calls are not ones to reach
    (was: "recorded step never reached: llm:0/call:c1/llm:0" for the unchanged agent)."""
    from agentspan_openai_agents.testing import ToolCall

    def boss() -> Any:
        helper = _scripted("helper", ["helped"])
        return _scripted("boss", [ToolCall("ask_helper", {"input": "q"}, "c1"), "done"],
                         [helper.as_tool("ask_helper", "Ask the helper.")])

    assert agentspan.run(boss(), "go", run_id="boss").final_output == "done"
    result = replay(export("boss", tmp_path / "boss.json"), boss())
    assert result.output == "done" and result.replayed == {"llm": 2, "tool": 1} and result.live == {}


def test_openai_a_run_with_steps_set_aside_replays(agentspan_store: SqliteStore, tmp_path: Path) -> None:
    """Steps set aside (``superseded:``) are made by no run again (was: "recorded step never
    reached: superseded:1/llm:0" for the unchanged agent)."""
    from agents.exceptions import ModelBehaviorError

    from agentspan_openai_agents.testing import ToolCall

    agent = _scripted("refunds", [ToolCall("teleport", {"to": "mars"}), "refunded"])
    with pytest.raises(ModelBehaviorError):
        agentspan.run(agent, "refund 42", run_id="refused")  # a tool it does not have: set aside
    assert agentspan.retry("refused", agent).result(timeout=20).final_output == "refunded"
    result = replay(export("refused", tmp_path / "refused.json"), agent)
    assert result.output == "refunded" and result.replayed == {"llm": 1}


def test_openai_a_run_recorded_under_another_name_replays_given_it(agentspan_store: SqliteStore,
                                                                   tmp_path: Path) -> None:
    agent = _scripted("support", ["hi"])
    agentspan.run(agent, "hello", run_id="named", agent_name="support-v1")
    path = export("named", tmp_path / "named.json")
    with pytest.raises(ConfigurationError, match="pass agent_name="):
        replay(path, agent)
    assert replay(path, agent, agent_name="support-v1").output == "hi"  # was: no way to replay it


def test_openai_a_failed_run_replays_and_counts_what_it_served(agentspan_store: SqliteStore, tmp_path: Path) -> None:
    from agents import function_tool

    from agentspan_openai_agents.testing import ToolCall

    @function_tool(failure_error_function=None)
    def breaks() -> str:
        """Breaks."""
        raise RuntimeError("down")

    agent = _scripted("fragile", [ToolCall("breaks", {}), "unreached"], [breaks])
    with pytest.raises(Exception, match="down"):
        agentspan.run(agent, "go", run_id="fragile")
    result = replay(export("fragile", tmp_path / "fragile.json"), agent)
    assert result.status is agentspan.RunStatus.FAILED
    assert result.replayed == {"llm": 1} and result.live == {}  # was: both empty for a failed run


def test_openai_rejected_approval_replays_with_the_recorded_decision(agentspan_store: SqliteStore, tmp_path: Path,
                                                                     effects_file: Path) -> None:
    script = [*REFUND_SCRIPT[:3], reject("needs a manager"), reply("Refund declined.")]
    recorded = mock_run(oa.support, "Refund order 42", script=script)
    path = export(recorded.run_id, tmp_path / "run.json")
    reset_effects(effects_file)
    result = replay(path, oa.support)
    assert result.output == "Refund declined."
    (refund,) = [c for c in result.tool_calls if c.name == "refund"]
    assert refund.rejected and "needs a manager" in refund.result
    assert effects() == []


def test_openai_an_approval_gate_removed_or_added_is_a_divergence(agentspan_store: SqliteStore,
                                                                   tmp_path: Path) -> None:
    """A replay is a regression test: a tool that lost its human approval (or gained one) since
    the recording is named, though its call and result are the same."""
    recorded = mock_run(oa.support, "Refund order 42", script=[*REFUND_SCRIPT[:3], approve(), REFUND_SCRIPT[3]])
    path = export(recorded.run_id, tmp_path / "run.json")

    @function_tool(name_override="refund")
    def ungated_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        return "refunded"

    ungated = oa.support.clone(handoffs=[oa.billing.clone(tools=[ungated_refund])])
    removed = r"at step 'llm:2/call:.*': the recorded run asked for an approval of tool 'refund' here; the current"
    with pytest.raises(ReplayDivergenceError, match=removed):
        replay(path, ungated)

    @function_tool(name_override="lookup_order")
    @agentspan.tool(approval_required=True)
    def gated_lookup(order_id: str) -> str:
        """Look up an order's payment status."""
        return "paid"

    with pytest.raises(ReplayDivergenceError, match="the current code asks for an approval of tool 'lookup_order' "
                                                    "here; the recorded run ran it without one"):
        replay(path, oa.support.clone(tools=[gated_lookup]))
    assert replay(path, oa.support).output == recorded.output  # unchanged: replays


def test_openai_pending_approval_replays_to_the_same_wait(agentspan_store: SqliteStore, tmp_path: Path) -> None:
    recorded = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT)
    document = json.loads(export(recorded.run_id, tmp_path / "run.json").read_text())
    # The same run as it stood while waiting for the human: nothing after the approval request.
    waiting = copy.deepcopy(document)
    waiting["run"].update(status="waiting", output=None)
    waiting["steps"] = [s for s in waiting["steps"] if s["key"] in ("llm:0", "llm:0/call:call_0_0", "llm:1",
                                                                     "llm:1/handoff:transfer_to_billing", "llm:2")]
    waiting["approvals"][0].update(status="pending", decided_by=None, decided_at=None, reason=None)
    result = replay(waiting, oa.support)
    assert result.status is agentspan.RunStatus.WAITING
    assert [(a.tool, a.status.value) for a in result.approvals] == [("refund", "pending")]
    # A replay that was meant to reach the approval but completes instead diverges.
    waiting["approvals"] = []
    with pytest.raises(ReplayDivergenceError, match="the recorded run did not make"):
        replay(waiting, oa.support)


# ---- LangGraph -------------------------------------------------------------------------------
def test_langgraph_replay_serves_every_call_from_the_recording(agentspan_store: SqliteStore, tmp_path: Path,
                                                               effects_file: Path) -> None:
    recorded = mock_run(lg.support_graph, "Is order 42 paid?",
                        script=[call("lookup_order", order_id="42"), reply("It is paid."), reply("Summary: paid.")])
    path = export(recorded.run_id, tmp_path / "run.json")
    reset_effects(effects_file)
    result = replay(str(path), lg.support_graph)
    assert (result.status, result.output) == (agentspan.RunStatus.COMPLETED, "Summary: paid.")
    assert result.replayed == {"llm": 3, "tool": 1} and result.live == {}
    assert effects() == []
    # The replay's journal is the recording (its checkpoint records are not written twice).
    assert [s.key for s in result.steps] == [s.key for s in recorded.steps]


@pytest.mark.parametrize("decision", ["approved", "rejected"])
def test_langgraph_interrupt_replays_with_the_recorded_decision(agentspan_store: SqliteStore, tmp_path: Path,
                                                                 decision: str) -> None:
    """An interrupt's approval is keyed by LangGraph's interrupt id, new in every run: the replay
    still finds the recorded decision (the n-th interrupt of the recording)."""
    script = [reply("Refund?")] if decision == "approved" else [reply("Refund?"), reject("not today")]
    recorded = mock_run(lg.review_graph, "Refund 42", script=script)
    path = export(recorded.run_id, tmp_path / "run.json")
    result = replay(str(path), lg.review_graph)
    assert (result.status, result.output) == (agentspan.RunStatus.COMPLETED, recorded.output)
    assert [a.status.value for a in result.approvals] == [decision]


@tool("lookup_order")
def pipe_lookup(order_id: str) -> str:
    """Look up an order's payment status."""
    effect(f"lookup {order_id}")
    return f"order {order_id}: paid"


@tool("check_stock")
def pipe_stock(order_id: str) -> str:
    """Check the stock for an order."""
    effect(f"stock {order_id}")
    return f"order {order_id}: in stock"


@tool("notify")
def pipe_notify(order_id: str) -> str:
    """Tell the audit log an order was looked at."""
    effect(f"notify {order_id}")
    return "noted"


@tool("cursed_lookup")
def pipe_cursed(order_id: str) -> str:
    """Look up an order; order 13 breaks it."""
    effect(f"cursed {order_id}")
    if order_id == "13":
        raise ValueError(f"order {order_id} is cursed")
    return f"order {order_id}: paid"


def pipeline(*, order_id: str = "42", lookup: Any = pipe_lookup, audits: int = 1,
             prompt: str = "Summarize the order status.") -> Any:
    """A graph whose ``fetch`` node calls tools with arguments of its own code, then a model writes."""
    writer = lg.ProviderChatModel(model_name="gpt-4o")

    def fetch(state: MessagesState) -> dict[str, Any]:
        status = lookup.invoke({"order_id": order_id})
        for _ in range(audits):
            pipe_notify.invoke({"order_id": order_id})
        return {"messages": [AIMessage(status)]}

    def write(state: MessagesState) -> dict[str, Any]:
        return {"messages": [writer.invoke([SystemMessage(prompt), *state["messages"]])]}

    builder = StateGraph(MessagesState)
    builder.add_node("fetch", fetch)
    builder.add_node("write", write)
    builder.add_edge(START, "fetch")
    builder.add_edge("fetch", "write")
    builder.add_edge("write", END)
    return builder.compile(name="pipeline")


@pytest.fixture
def pipeline_export(agentspan_store: SqliteStore, tmp_path: Path, effects_file: Path) -> Path:
    recorded = mock_run(pipeline(), "Order 42?", script=[reply("Order 42 is paid.")])
    assert [(s.kind.value, s.name) for s in recorded.steps if s.kind.value != "checkpoint"] == [
        ("tool", "lookup_order"), ("tool", "notify"), ("llm", "gpt-4o")]
    reset_effects(effects_file)
    return export(recorded.run_id, tmp_path / "pipeline.json")


def test_langgraph_unchanged_pipeline_replays(pipeline_export: Path) -> None:
    result = replay(pipeline_export, pipeline())
    assert result.output == "Order 42 is paid."
    assert result.replayed == {"tool": 2, "llm": 1}
    assert effects() == []


def test_langgraph_changed_tool_arguments_name_the_tool_step(pipeline_export: Path) -> None:
    with pytest.raises(ReplayDivergenceError) as caught:
        replay(pipeline_export, pipeline(order_id="43"))
    message = str(caught.value)
    assert caught.value.key.startswith("fetch:") and caught.value.key.endswith("/tool:0")
    assert "recorded tool call 'lookup_order'" in message
    assert 'first difference at $.order_id: recorded "42", live "43"' in message
    assert effects() == []


def test_langgraph_another_tool_is_named(pipeline_export: Path) -> None:
    with pytest.raises(ReplayDivergenceError, match=r"made .*/tool:0 \(tool lookup_order\) here; the current code "
                                                    r"calls 'check_stock' instead"):
        replay(pipeline_export, pipeline(lookup=pipe_stock))
    assert effects() == []


def test_langgraph_extra_tool_call_is_a_call_the_recording_did_not_make(pipeline_export: Path) -> None:
    with pytest.raises(ReplayDivergenceError) as caught:
        replay(pipeline_export, pipeline(audits=2))
    message = str(caught.value)
    assert "the current code makes a tool call fetch:" in message and "/tool:2 (notify)" in message
    assert "the recorded run did not make; recorded steps at that point: write:" in message
    assert effects() == []


def test_langgraph_removed_tool_call_is_never_reached(pipeline_export: Path) -> None:
    with pytest.raises(ReplayDivergenceError, match=r"recorded step never reached: fetch:\S+/tool:1 \(tool notify\)"):
        replay(pipeline_export, pipeline(audits=0))


def test_langgraph_changed_prompt_names_the_model_step(pipeline_export: Path) -> None:
    with pytest.raises(ReplayDivergenceError) as caught:
        replay(pipeline_export, pipeline(prompt="Summarize in French."))
    assert caught.value.key.startswith("write:") and caught.value.key.endswith("/llm:0")
    assert "recorded llm call 'gpt-4o'" in str(caught.value)


def test_output_check_compares_the_final_output(pipeline_export: Path) -> None:
    document = json.loads(pipeline_export.read_text())
    document["run"]["output"]["messages"][-1]["kwargs"]["content"] = "Order 42 is unpaid."
    with pytest.raises(ReplayDivergenceError) as caught:
        replay(document, pipeline())
    assert caught.value.key == "(final output)"
    assert ('the final output differs; first difference at $.messages[2].kwargs.content: '
            'recorded "Order 42 is unpaid.", live "Order 42 is paid."') in str(caught.value)
    assert replay(document, pipeline(), check_output=False).output == "Order 42 is paid."


def test_langgraph_failed_run_replays_the_recorded_failure(agentspan_store: SqliteStore, tmp_path: Path,
                                                           effects_file: Path) -> None:
    recorded = mock_run(pipeline(order_id="13", lookup=pipe_cursed), "Order 13?", script=[reply("unused")],
                        raise_errors=False, strict=False)
    assert recorded.status is agentspan.RunStatus.FAILED
    assert recorded.steps[0].error == "ValueError: order 13 is cursed"
    path = export(recorded.run_id, tmp_path / "failed.json")
    reset_effects(effects_file)
    result = replay(path, pipeline(order_id="13", lookup=pipe_cursed))
    assert (result.status, result.error) == (agentspan.RunStatus.FAILED, recorded.error)
    assert effects() == []  # the failure was raised again from the recording, the tool did not run


# ---- Google ADK ------------------------------------------------------------------------------
def adk_agent(instruction: str = "Help the customer.") -> Any:
    """An ADK agent on the scripted ADK model (a real durable run records it)."""
    from google.adk.agents import LlmAgent

    from agentspan_adk.testing import Call, ScriptedLlm

    def lookup_order(order_id: str) -> dict[str, str]:
        """Look up an order's payment status."""
        effect(f"lookup {order_id}")
        return {"order_id": order_id, "status": "paid"}

    model = ScriptedLlm(turns=[Call("lookup_order", {"order_id": "42"}, id="c1"), "Order 42 is paid."])
    return LlmAgent(name="support", model=model, instruction=instruction, tools=[lookup_order])


def test_adk_real_run_replays_and_a_changed_instruction_diverges(agentspan_store: SqliteStore, tmp_path: Path,
                                                                 effects_file: Path) -> None:
    assert agentspan.run(adk_agent(), "Is order 42 paid?").text == "Order 42 is paid."
    (recorded,) = agentspan_store.list_runs()
    path = export(recorded.id, tmp_path / "adk.json")
    reset_effects(effects_file)
    agent = adk_agent()
    result = replay(path, agent)
    assert result.status is agentspan.RunStatus.COMPLETED
    assert result.replayed == {"checkpoint": 1, "llm": 2, "tool": 1} and result.live == {}  # checkpoint: the session
    assert agent.model.calls == 0 and effects() == []
    with pytest.raises(ReplayDivergenceError) as caught:
        replay(path, adk_agent("Be terse."))
    assert caught.value.key == "support/llm:0" and caught.value.run_id == recorded.id
    assert 'first difference at $.system: recorded "Help the customer.' in str(caught.value)


# ---- bad exports -----------------------------------------------------------------------------
def test_bad_exports_are_clear_errors(pipeline_export: Path, tmp_path: Path) -> None:
    good = json.loads(pipeline_export.read_text())
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InvalidExportError, match="is not JSON"):
        replay(broken, pipeline())
    with pytest.raises(InvalidExportError, match="cannot read"):
        replay(tmp_path / "missing.json", pipeline())
    with pytest.raises(InvalidExportError, match="no 'format' field") as caught:
        replay({k: v for k, v in good.items() if k != "format"}, pipeline())
    assert caught.value.field == "format"
    with pytest.raises(InvalidExportError, match="unknown format 'agentspan.run/9' in field 'format'"):
        replay({**good, "format": "agentspan.run/9"}, pipeline())
    bad_step = copy.deepcopy(good)
    bad_step["steps"][1]["kind"] = "telepathy"
    with pytest.raises(InvalidExportError, match=r"field 'steps\[1\]\.kind'") as caught:
        replay(bad_step, pipeline())
    assert caught.value.field == "steps[1].kind"
    with pytest.raises(InvalidExportError, match="field 'run.framework': Field required"):
        replay({**good, "run": {k: v for k, v in good["run"].items() if k != "framework"}}, pipeline())
    with pytest.raises(InvalidExportError, match="field 'approvals' must be a list"):
        replay({**good, "approvals": None}, pipeline())
    utf16 = tmp_path / "utf16.json"
    utf16.write_text(pipeline_export.read_text(), encoding="utf-16")
    with pytest.raises(InvalidExportError, match="is not UTF-8 text"):
        replay(utf16, pipeline())
    twice = copy.deepcopy(good)
    twice["steps"][2]["key"] = twice["steps"][0]["key"]
    with pytest.raises(InvalidExportError, match=r"field 'steps\[2\]\.key' is '.*', the key of steps\[0\] too"):
        replay(twice, pipeline())


def test_target_of_another_framework_or_agent_is_a_clear_error(pipeline_export: Path) -> None:
    with pytest.raises(ConfigurationError, match="is a langgraph run; the target is a openai-agents Agent"):
        replay(pipeline_export, oa.support)
    with pytest.raises(ConfigurationError, match="is a run of agent 'pipeline'; the target is agent 'support-graph'"):
        replay(pipeline_export, lg.support_graph)
    running = json.loads(pipeline_export.read_text())
    running["run"]["status"] = "running"
    with pytest.raises(ConfigurationError, match="exported while running"):
        replay(running, pipeline())


# ---- through a server ------------------------------------------------------------------------
def test_export_through_a_server_replays_like_the_embedded_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               effects_file: Path) -> None:
    import agentspan.config
    from agentspan.export import export_run
    from agentspan.stores.remote import RemoteStore
    from agentspan_server.app import create_app

    from server_support import thread_server

    backing = SqliteStore(tmp_path / "server.db")
    try:
        with thread_server(create_app(backing)) as url:
            remote = RemoteStore(url, retry_for=2.0)
            recorded = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT, store=remote)
            monkeypatch.setenv("AGENTSPAN_HOME", str(tmp_path / "home"))
            monkeypatch.setenv("AGENTSPAN_SERVER_URL", url)
            agentspan.config.reset()
            try:
                path = export(recorded.run_id, tmp_path / "run.json")
            finally:
                agentspan.config.reset()
            remote.close()
        document = json.loads(path.read_text())
        embedded = export_run(backing, recorded.run_id)
        assert document["steps"] == embedded["steps"] and document["run"] == embedded["run"]
        reset_effects(effects_file)
        result = replay(path, oa.support)
        assert result.output == "Refunded $30.00 on order 42." and result.live == {} and effects() == []
    finally:
        backing.close()
