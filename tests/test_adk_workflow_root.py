"""ADK 2 graph workflows (``google.adk.workflow.Workflow`` as ``App.root_agent``, or the target)
are accepted by ``agentspan.run`` and its kin (journaled: `test_adk_workflow_durable`); another
``BaseNode`` as the root is refused, and so is a workflow in a user-built Runner (`AgentspanPlugin`,
`agentspan.instrument`), with a `ConfigurationError` before anything is stored (before, the
plugin failed with an ``AttributeError`` on the invocation's ``None`` agent)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.adk.agents import LlmAgent, SequentialAgent
from google.adk.apps import App
from google.adk.runners import InMemoryRunner, Runner
from google.adk.sessions import InMemorySessionService
from google.adk.workflow import START, FunctionNode, Workflow
from google.genai import types

import agentspan
from agentspan.errors import ConfigurationError, ReplayDivergenceError
from agentspan.testing import call, mock_run, reply
from agentspan_adk import AgentspanPlugin
from agentspan_adk.testing import Call, ScriptedLlm

from journal_utils import crashed_copy

REFUSED = "does not support ADK graph workflows"
effects: list[str] = []


@pytest.fixture(autouse=True)
def _home(home: Path) -> Iterator[Path]:
    effects.clear()
    yield home
    agentspan.uninstrument("adk")


def lookup(order_id: str) -> dict[str, Any]:
    """Look an order up."""
    effects.append(f"lookup {order_id}")
    return {"order_id": order_id, "paid": 30.0}


def agents() -> tuple[LlmAgent, LlmAgent]:
    triage = LlmAgent(name="triage", tools=[lookup],
                      model=ScriptedLlm(turns=[Call("lookup", {"order_id": "42"}), "Order 42 found."]))
    writer = LlmAgent(name="writer", model=ScriptedLlm(turns=["Refunded."]))
    return triage, writer


def agent_tree() -> SequentialAgent:
    with warnings.catch_warnings():  # (ADK 2.13 deprecates SequentialAgent in favour of Workflow)
        warnings.simplefilter("ignore", DeprecationWarning)
        return SequentialAgent(name="flow", sub_agents=list(agents()))


def workflow() -> Workflow:
    return Workflow(name="flow", edges=[(START, *agents())])


def message(text: str = "Refund 42") -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


def no_runs() -> bool:
    return agentspan.get_store().list_runs(limit=100) == []


def model_calls(flow: Workflow) -> int:
    return sum(node.model.calls for node in flow.graph.nodes if isinstance(node, LlmAgent))  # type: ignore[union-attr]


def test_the_workflow_runs_without_agentspan():
    """The example is a working ADK workflow (what is refused is Agentspan around it)."""
    runner = Runner(node=workflow(), session_service=InMemorySessionService(), auto_create_session=True)
    events = list(runner.run(user_id="u", session_id="s", new_message=message()))
    assert [e.author for e in events if e.content is not None and e.content.parts][-1] == "writer"
    assert effects == ["lookup 42"]


@pytest.mark.parametrize("target", [lambda: App(name="shop", root_agent=workflow()), workflow],
                         ids=["app", "bare-workflow"])
@pytest.mark.parametrize("entry", ["run", "start", "run-named", "mock_run"])
def test_agentspan_run_makes_a_workflow_root_durable(target, entry):
    """Accepted by every entry point since workflows are journaled (`test_adk_workflow_durable`)."""
    if entry == "run":
        text = agentspan.run(target(), "Refund 42", session_id="s").text
    elif entry == "start":
        text = agentspan.start(target(), "Refund 42").result(timeout=20).text
    elif entry == "run-named":  # (agent_name given: the adapter's agent_name() is not asked)
        text = agentspan.run(target(), "Refund 42", agent_name="refunds").text
    else:  # the scripted turns go to the workflow's agent nodes; the tool's stand-in answers
        script = [call("lookup", order_id="42"), reply("Found."), reply("Refunded.")]
        text = mock_run(target(), "Refund 42", script=script,
                        tools={"lookup": lambda order_id: {"order_id": order_id, "paid": 30.0}}).output
    assert text == "Refunded."
    if entry == "mock_run":
        assert effects == []
        return
    assert effects == ["lookup 42"]
    (run,) = agentspan.get_store().list_runs(limit=100)
    assert run.status is agentspan.RunStatus.COMPLETED


def test_a_root_node_that_is_no_workflow_is_refused_before_storing_anything():
    node = FunctionNode(func=lambda node_input: "x", name="lonely")
    for target in (node, App(name="shop", root_agent=node)):
        with pytest.raises(ConfigurationError, match="as a google.adk.workflow Workflow root only") as raised:
            agentspan.run(target, "Refund 42")
        assert "FunctionNode 'lonely'" in str(raised.value)
    assert no_runs()


def test_resume_diverges_when_the_root_changed_kind():
    """A run journaled with the agent tree, resumed with the workflow of the same agents (keys by
    node path): refused as a divergence before any call is made again."""
    handle = agentspan.start(agent_tree(), "Refund 42", session_id="s")
    assert handle.result(timeout=20).text == "Refunded."
    crashed = crashed_copy(handle.id, 3)  # a run its process died in (resumable with the agent tree)
    with pytest.raises(ReplayDivergenceError, match="root agent 'flow'.*'flow@1'"):
        agentspan.resume(crashed, App(name="shop", root_agent=workflow())).result(timeout=20)
    assert effects == ["lookup 42"]  # the tool journaled under the agent tree did not run again
    crashed = crashed_copy(handle.id, 3)
    assert agentspan.resume(crashed, agent_tree()).result(timeout=20).text == "Refunded."


@pytest.mark.parametrize("how", ["node", "app", "in-memory"])
def test_the_plugin_refuses_a_workflow_root_before_opening_a_run(how):
    flow = workflow()
    service = InMemorySessionService()
    runner: Runner
    if how == "node":
        runner = Runner(node=flow, session_service=service, plugins=[AgentspanPlugin()], auto_create_session=True)
    elif how == "app":
        runner = Runner(app=App(name="shop", root_agent=flow, plugins=[AgentspanPlugin()]), session_service=service,
                        auto_create_session=True)
    else:
        runner = InMemoryRunner(app=App(name="shop", root_agent=flow, plugins=[AgentspanPlugin()]))
        runner.auto_create_session = True
    with pytest.raises(RuntimeError) as raised:  # ADK wraps what a plugin raises in a RuntimeError
        list(runner.run(user_id="u", session_id="s", new_message=message()))
    cause = raised.value.__cause__
    assert isinstance(cause, ConfigurationError)
    assert REFUSED in str(cause) and "Runner drives a graph node" in str(cause)
    assert no_runs()
    assert effects == [] and model_calls(flow) == 0


def test_instrument_refuses_a_workflow_runner_when_it_is_made():
    agentspan.instrument("adk")
    with pytest.raises(ConfigurationError, match=REFUSED):
        Runner(node=workflow(), session_service=InMemorySessionService())
    runner = InMemoryRunner(agent=LlmAgent(name="solo", model=ScriptedLlm(turns=["Hi."])))  # agents still fine
    assert any(isinstance(p, AgentspanPlugin) for p in runner.plugin_manager.plugins)
    agentspan.uninstrument("adk")
    Runner(node=workflow(), session_service=InMemorySessionService())  # ADK's own again


def test_agent_roots_are_still_journaled_by_the_plugin():
    tree = agent_tree()
    runner = Runner(app=App(name="shop", root_agent=tree, plugins=[AgentspanPlugin()]),
                    session_service=InMemorySessionService(), auto_create_session=True)
    list(runner.run(user_id="u", session_id="s", new_message=message()))
    (run,) = agentspan.get_store().list_runs(limit=100)
    assert run.agent == "shop/flow" and run.status is agentspan.RunStatus.COMPLETED
    assert [s.key for s in agentspan.get(run.id).steps()] == [
        "flow/triage/llm:0", "flow/triage/llm:0/call:0", "flow/triage/llm:1", "flow/writer/llm:0"]
