"""ADK 2 graph workflows made durable by ``agentspan.run``/``start``/``resume``: function nodes
journaled (replayed without calling the function), agent nodes' model and tool calls keyed by
node path, tools as nodes keyed by node path, a SIGKILL in a real child process resumed by
another process, parallel branches joined by a ``JoinNode``, and a graph changed since the run
started refused as a divergence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import adk_workflow_support as flows
import pytest
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.adk.tools import FunctionTool
from google.adk.workflow import START, FunctionNode, Workflow
from google.genai import types

import agentspan
from agentspan.errors import ReplayDivergenceError
from agentspan.records import new_id

import adk_support
from crash_support import calls_of, final_line, lines, run_child
from journal_utils import crashed_copy

child = partial(run_child, str(Path(__file__).parent / "adk_workflow_child.py"))
REFUND_KEYS = ["adk:session", "refunds@1/prepare@1/node", "refunds@1/triage@1/llm:0",
               "refunds@1/triage@1/llm:0/call:0", "refunds@1/triage@1/llm:1", "refunds@1/finish@1/node"]


@pytest.fixture(autouse=True)
def _home(home: Path) -> Iterator[Path]:
    yield home


def plain_adk(flow: Workflow) -> tuple[Any, list[str]]:
    """The final node's output and the side effects of the workflow run by ADK alone."""
    runner = Runner(node=flow, session_service=InMemorySessionService(), auto_create_session=True)
    message = types.Content(role="user", parts=[types.Part(text=flows.PROMPT)])
    events = list(runner.run(user_id="u", session_id="s", new_message=message))
    return events, adk_support.effects()


def keys(run_id: str) -> list[str]:
    return [s.key for s in agentspan.get(run_id).steps()]


def test_a_workflow_runs_to_the_same_output_as_plain_adk():
    events, plain = plain_adk(flows.refund_flow())
    expected = flows.final_output(events, "finish")
    assert expected == {"answer": "Order 42: refund $30.", "prepared": "42"}
    result = agentspan.run(flows.refund_flow(), flows.PROMPT)
    assert flows.final_output(result.events, "finish") == expected
    assert result.text == "Order 42: refund $30."
    assert adk_support.effects() == plain * 2
    (run,) = agentspan.get_store().list_runs()
    assert keys(run.id) == REFUND_KEYS
    # agentspan.current_step() inside a function node: its step, with a stable idempotency key
    assert f"prepare 42 {run.id}:refunds@1/prepare@1/node" in lines("effects")


def test_a_resumed_workflow_replays_function_nodes_and_agent_calls():
    done = agentspan.run(flows.refund_flow(), flows.PROMPT, run_id=new_id())
    first = agentspan.get_store().list_runs()[0].id
    crashed = crashed_copy(first, 4)  # session, prepare, triage's first call and its tool
    before = adk_support.effects()
    resumed = agentspan.resume(crashed, flows.refund_flow()).result(timeout=20)
    assert flows.final_output(resumed.events, "finish") == flows.final_output(done.events, "finish")
    assert adk_support.effects()[len(before):] == ["finish 42"]  # prepare and lookup replayed
    assert calls_of("triage") == [0, 1, 1]
    assert keys(crashed) == REFUND_KEYS


@pytest.mark.crash
def test_sigkill_in_an_agent_node_then_resume_in_another_process(child_env):
    run_id = new_id()
    crashed = child(child_env, "start", run_id, crash_at="model:triage:1")
    assert crashed.returncode == -9, crashed.stderr
    assert agentspan.get(run_id).status() is agentspan.RunStatus.RUNNING
    resumed = child(child_env, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert adk_support.effects() == ["prepare 42", "lookup 42", "finish 42"]  # A once, B's tool once
    assert calls_of("triage") == [0, 1, 1]  # only the call in flight at the kill was made again
    assert agentspan.get(run_id).status() is agentspan.RunStatus.COMPLETED
    assert keys(run_id) == REFUND_KEYS
    uncrashed = agentspan.run(flows.refund_flow(), flows.PROMPT)
    assert json.loads(final_line(resumed.stdout)) == flows.final_output(uncrashed.events, "finish")


@pytest.mark.crash
def test_sigkill_inside_a_function_node_runs_it_again_then_goes_on(child_env):
    run_id = new_id()
    assert child(child_env, "start", run_id, crash_at="prepare:after").returncode == -9
    resumed = child(child_env, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    effects = [line.split() for line in lines("effects")]
    # in flight at the kill: run again, with the same idempotency key
    assert [e for e in effects if e[0] == "prepare"] == [["prepare", "42", f"{run_id}:refunds@1/prepare@1/node"]] * 2
    assert json.loads(final_line(resumed.stdout)) == {"answer": "Order 42: refund $30.", "prepared": "42"}


@pytest.mark.parametrize("reordered", [False, True], ids=["same-order", "branches-listed-reversed"])
def test_parallel_branches_joined_by_a_join_node_replay(reordered):
    events, _ = plain_adk(flows.fan_in_flow())
    expected = flows.final_output(events, "report")
    done = agentspan.run(flows.fan_in_flow(), flows.PROMPT)
    assert flows.final_output(done.events, "report") == expected
    first = agentspan.get_store().list_runs()[0].id
    steps = keys(first)
    assert sorted(steps) == sorted(["adk:session", "fanin@1/prepare@1/node", "fanin@1/quote@1/node",
                                    "fanin@1/notify@1/node", "fanin@1/writer@1/llm:0", "fanin@1/report@1/node"])
    # a process killed after the prepare node and one branch completed
    crashed = crashed_copy(first, None, {"adk:session", "fanin@1/prepare@1/node", "fanin@1/quote@1/node"})
    before = len(adk_support.effects())
    resumed = agentspan.resume(crashed, flows.fan_in_flow(reordered=reordered)).result(timeout=20)
    assert flows.final_output(resumed.events, "report") == expected
    assert sorted(adk_support.effects()[before:]) == ["notify 42", "report 42"]
    # every step completed: a replay of all of them calls nothing
    again = crashed_copy(first, None)
    before = len(adk_support.effects())
    models = len(calls_of("writer"))
    replayed = agentspan.resume(again, flows.fan_in_flow(reordered=reordered)).result(timeout=20)
    assert flows.final_output(replayed.events, "report") == expected
    assert adk_support.effects()[before:] == [] and len(calls_of("writer")) == models


def audit(node_input: Any) -> str:
    return "audited"


def test_a_graph_changed_since_the_run_started_is_a_divergence():
    agentspan.run(flows.refund_flow(), flows.PROMPT)
    first = agentspan.get_store().list_runs()[0].id
    crashed = crashed_copy(first, 3)
    changed = flows.refund_flow()
    prepare, triage, finish = (n for n in changed.graph.nodes if n.name in ("prepare", "triage", "finish"))
    # a node inserted before prepare: prepare's journaled execution had another input
    changed = Workflow(name="refunds", edges=[(START, FunctionNode(func=audit, name="audit"), prepare, triage,
                                               finish)])
    before = adk_support.effects()
    with pytest.raises(ReplayDivergenceError, match="prepare"):
        agentspan.resume(crashed, changed).result(timeout=20)
    assert adk_support.effects() == before  # prepare was not run again
    assert agentspan.get(crashed).status() is agentspan.RunStatus.FAILED


def shout(text: str) -> dict[str, str]:
    """Shout."""
    adk_support.effect("shout", text)
    return {"loud": text.upper()}


def test_a_tool_node_is_keyed_by_its_node_path_and_replayed():
    def words(node_input: Any) -> dict[str, str]:
        return {"text": "refund 42"}

    def flow() -> Workflow:
        return Workflow(name="loud", edges=[(START, FunctionNode(func=words, name="words"), FunctionTool(shout))])

    done = agentspan.run(flow(), flows.PROMPT)
    first = agentspan.get_store().list_runs()[0].id
    assert keys(first) == ["adk:session", "loud@1/words@1/node", "loud@1/shout@1/tool"]
    assert flows.final_output(done.events, "shout") == {"loud": "REFUND 42"}
    resumed = agentspan.resume(crashed_copy(first, None), flow()).result(timeout=20)
    assert flows.final_output(resumed.events, "shout") == {"loud": "REFUND 42"}
    assert adk_support.effects() == ["shout refund 42"]  # the tool ran once


def cancel_order(order_id: str) -> dict[str, str]:
    """Cancel an order (ADK asks for a confirmation first)."""
    adk_support.effect("cancel", order_id)
    return {"cancelled": order_id}


def test_human_input_inside_a_workflow_is_refused_clearly():
    from google.adk.agents import LlmAgent

    from agentspan.errors import ConfigurationError

    orders = LlmAgent(name="orders", tools=[FunctionTool(cancel_order, require_confirmation=True)],
                      model=adk_support.model("orders", [adk_support.Call("cancel_order", {"order_id": "42"}),
                                                         "Cancelled."]))
    with pytest.raises(ConfigurationError, match="asked for a confirmation"):
        agentspan.run(Workflow(name="cancels", edges=[(START, orders)]), "Cancel 42")
    gated = FunctionNode(func=flows.quote, name="quote", require_confirmation=True, rerun_on_resume=True)
    with pytest.raises(ConfigurationError, match="asks for a confirmation or credentials"):
        agentspan.run(Workflow(name="quotes", edges=[(START, gated)]), "Quote 42")
    assert adk_support.effects() == []


def test_a_renamed_workflow_diverges_before_its_first_node_runs_again():
    agentspan.run(flows.refund_flow(), flows.PROMPT)
    first = agentspan.get_store().list_runs()[0].id
    crashed = crashed_copy(first, 3)
    renamed = flows.refund_flow()
    renamed = Workflow(name="refunds_v2", edges=renamed.edges)
    before = adk_support.effects()
    with pytest.raises(ReplayDivergenceError, match="root workflow 'refunds@1'.*'refunds_v2@1'"):
        agentspan.resume(crashed, renamed).result(timeout=20)
    assert adk_support.effects() == before  # prepare (journaled under the old name) did not run again


async def stamp(ctx: Any, node_input: Any) -> Any:
    """An async generator node that changes the state after its last event (ADK flushes it)."""
    adk_support.effect("stamp", "42")
    yield {"stamped": True}
    ctx.state["stamped_after"] = "yes"


def test_state_a_node_changed_after_its_last_event_is_replayed():
    def flow() -> Workflow:
        return Workflow(name="stamps", edges=[(START, FunctionNode(func=stamp, name="stamp"))])

    done = agentspan.run(flow(), flows.PROMPT)
    assert done.session.state.get("stamped_after") == "yes"
    first = agentspan.get_store().list_runs()[0].id
    crashed = crashed_copy(first, None)
    resumed = agentspan.resume(crashed, flow()).result(timeout=20)
    assert adk_support.effects() == ["stamp 42"]
    assert resumed.session.state.get("stamped_after") == "yes"
    assert flows.final_output(resumed.events, "stamp") == {"stamped": True}
