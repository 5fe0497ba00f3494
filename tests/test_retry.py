"""`agentspan.retry` and ``agentspan runs retry``: a failed run taken up again from where it failed."""

from __future__ import annotations

import asyncio
import threading

import pytest
from agents import Agent, function_tool, set_tracing_disabled
from agents.exceptions import ModelBehaviorError, ModelRefusalError
from openai.types.responses import (
    Response,
    ResponseError,
    ResponseFailedEvent,
    ResponseOutputMessage,
    ResponseOutputRefusal,
)
from pydantic import BaseModel
from typer.testing import CliRunner

import agentspan
from agentspan.cli import app
from agentspan.errors import ReplayDivergenceError, RunStateError
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

set_tracing_disabled(True)
effects: list[str] = []
broken = {"charge": True}


@pytest.fixture(autouse=True)
def _clean(home):
    effects.clear()
    broken["charge"] = True
    yield


def _note(a: int) -> str:
    effects.append(f"note:{a}")
    return f"noted {a}"


def _charge(amount: int) -> str:
    effects.append(f"charge:{amount}")
    if broken["charge"]:
        raise ConnectionError("payment service down")
    return f"charged {amount}"


note = function_tool(_note, name_override="note")
charge = function_tool(_charge, name_override="charge", failure_error_function=None)  # its errors fail the run
SCRIPT = [ToolCall("note", {"a": 1}), ToolCall("charge", {"amount": 5}), "all done"]


def failed_run(model: ScriptedModel, instructions: str = "Charge the customer.") -> tuple[str, Agent]:
    agent = Agent(name="billing", instructions=instructions, tools=[note, charge], model=model)
    handle = agentspan.start(agent, "bill me", max_turns=10)
    with pytest.raises(Exception, match="payment service down"):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.FAILED
    return handle.id, agent


def test_retry_goes_on_from_the_failed_call_without_repeating_completed_ones(transport: str) -> None:
    model = ScriptedModel(SCRIPT, name="m")
    run_id, agent = failed_run(model)
    assert (model.calls, effects) == (2, ["note:1", "charge:5"])
    with pytest.raises(RunStateError, match="retry it with agentspan.retry"):
        agentspan.resume(run_id, agent)
    broken["charge"] = False
    failure = agentspan.get(run_id).run()
    result = agentspan.retry(run_id, agent).result(timeout=20)
    assert result.final_output == "all done"
    # the failure it was retried from stays on the run (the failed step itself is rewritten)
    (retried,) = agentspan.get(run_id).run().options["agentspan.retries"]
    assert (retried["error"], retried["failed_at"]) == (failure.error, pytest.approx(failure.updated_at))
    assert retried["owner"] and retried["retried_at"] >= failure.updated_at
    # the two model calls before the failure were replayed; only the one after it was made
    assert model.calls == 3
    assert effects == ["note:1", "charge:5", "charge:5"]  # note ran once; the failed charge again
    run = agentspan.get(run_id).run()
    assert (run.status, run.error, run.lease_epoch) == (agentspan.RunStatus.COMPLETED, None, 2)
    steps = {s.key: s for s in agentspan.get(run_id).steps()}
    charge_step = steps["llm:1/call:call_1_0"]
    assert (charge_step.status, charge_step.attempt, charge_step.output) == ("completed", 2, "charged 5")
    with pytest.raises(RunStateError, match="is completed; only a failed run can be retried"):
        agentspan.retry(run_id, agent)


@pytest.mark.parametrize("transport", ["embedded", "server-sqlite"])
def test_a_run_failed_by_divergence_is_retried_live_with_the_fixed_agent(transport: str) -> None:
    run_id, _ = failed_run(ScriptedModel(SCRIPT, name="m"))
    broken["charge"] = False
    fixed_model = ScriptedModel(SCRIPT, name="m")
    fixed = Agent(name="billing", instructions="Charge the customer, politely.", tools=[note, charge],
                  model=fixed_model)
    with pytest.raises(ReplayDivergenceError):
        agentspan.retry(run_id, fixed).result(timeout=20)  # the prompt changed: fails again by default
    assert agentspan.get(run_id).status() is agentspan.RunStatus.FAILED
    result = agentspan.retry(run_id, fixed, on_divergence="live").result(timeout=20)
    assert result.final_output == "all done"
    keys = [s.key for s in agentspan.get(run_id).steps()]
    assert any(k.startswith("superseded:") for k in keys)  # the old journal kept aside
    assert effects == ["note:1", "charge:5", "note:1", "charge:5"]  # live again from the first call


def test_cli_retry_leaves_the_run_to_a_worker() -> None:
    run_id, agent = failed_run(ScriptedModel(SCRIPT, name="m"))
    broken["charge"] = False
    result = CliRunner().invoke(app, ["runs", "retry", run_id, "--on-divergence", "live", "--json"])
    assert result.exit_code == 0, result.output
    assert '"status": "pending"' in result.output
    assert agentspan.get_store().get_run(run_id).options["agentspan.on_divergence"] == "live"  # for the worker
    refused = CliRunner().invoke(app, ["runs", "retry", run_id])
    assert refused.exit_code != 0 and "only a failed run can be retried" in refused.output
    stop = threading.Event()
    worker = threading.Thread(target=agentspan.serve, args=(agent,), kwargs={"stop": stop, "max_runs": 1})
    worker.start()
    worker.join(timeout=30)
    stop.set()
    assert agentspan.get(run_id).status() is agentspan.RunStatus.COMPLETED
    assert agentspan.get(run_id).result()  == "all done"
    assert effects == ["note:1", "charge:5", "charge:5"]


def test_a_failed_langgraph_run_is_retried_with_its_completed_model_calls_replayed() -> None:
    from langchain_core.messages import HumanMessage
    from langgraph.graph import START, MessagesState, StateGraph

    from crash_support import calls_of
    from lgr_support import ScriptedChatModel, ai

    outage = {"on": True}
    model = ScriptedChatModel(model_name="m", responses=[ai("draft"), ai("final")])

    def draft(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    def publish(state: MessagesState) -> dict:
        if outage["on"]:
            raise ConnectionError("publisher down")
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("draft", draft)
    builder.add_node("publish", publish)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "publish")
    graph = builder.compile()
    handle = agentspan.start(graph, {"messages": [HumanMessage("write it")]})
    with pytest.raises(Exception, match="publisher down"):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.FAILED
    outage["on"] = False
    result = agentspan.retry(handle.id, graph).result(timeout=20)
    assert [m.content for m in result["messages"]] == ["write it", "draft", "final"]
    assert calls_of("m") == [0, 1]  # the draft's model call was made once: replayed on the retry


def test_a_failed_adk_run_is_retried_with_its_completed_calls_replayed() -> None:
    from google.adk.agents import LlmAgent

    from agentspan_adk.testing import Call

    from adk_support import model
    from crash_support import calls_of

    outage = {"on": True}

    def ship(order_id: str) -> str:
        """Ship an order."""
        effects.append(f"ship:{order_id}")
        if outage["on"]:
            raise ConnectionError("carrier down")
        return "shipped"

    agent = LlmAgent(name="shipper", model=model("shipper", [Call("ship", {"order_id": "7"}), "Shipped."]),
                     tools=[ship])
    handle = agentspan.start(agent, "ship order 7")
    with pytest.raises(Exception, match="carrier down"):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.FAILED
    outage["on"] = False
    result = agentspan.retry(handle.id, agent).result(timeout=20)
    assert result.text == "Shipped."
    assert calls_of("shipper") == [0, 1]  # the first model call was made once: replayed on the retry
    assert effects == ["ship:7", "ship:7"]  # the failed tool call ran again, once


class Refund(BaseModel):
    order_id: str
    amount: float


_REFUSAL = ResponseOutputMessage(id="msg_r", role="assistant", status="completed", type="message",
                                 content=[ResponseOutputRefusal(refusal="I won't refund that", type="refusal")])


@pytest.mark.parametrize(("first_answer", "error", "refused"), [
    ('{"order_id": "42"}', ModelBehaviorError, "Invalid JSON"),  # not a Refund
    (ToolCall("teleport", {"to": "mars"}), ModelBehaviorError, "Tool teleport not found"),  # a tool it has not
    # the model refused to give the output type (was: replayed on every retry, failing again)
    ([_REFUSAL], ModelRefusalError, "I won't refund that"),
])
def test_a_retry_asks_the_model_again_for_an_answer_the_sdk_refused(first_answer, error, refused):
    model = ScriptedModel([first_answer, '{"order_id": "42", "amount": 30}'], name="m")
    agent = Agent(name="refunds", instructions="Refund.", output_type=Refund, model=model)
    with pytest.raises(error, match=refused):
        agentspan.run(agent, "refund 42", run_id="refused")
    result = agentspan.retry("refused", agent).result(timeout=20)  # was: the same answer replayed, failing again
    assert result.final_output == Refund(order_id="42", amount=30.0)
    assert model.calls == 2
    steps = {s.key: s for s in agentspan.get("refused").steps()}
    assert steps["llm:0"].output != steps["superseded:1/llm:0"].output  # the refused answer is kept aside


class FailsOnce(ScriptedModel):
    """The script's model, but its call ``fail_at`` fails once as a Responses call ending in
    ``response.failed`` does: `ModelBehaviorError` raised by the call (unstreamed), a
    ``response.failed`` event the SDK's run raises on (streamed)."""

    def __init__(self, turns: list, fail_at: int) -> None:
        super().__init__(turns, name="m")
        self.fail_at, self.failed = fail_at, False

    def _fails(self) -> bool:
        if self.failed or self._index() != self.fail_at:
            return False
        self.failed = True
        self.calls += 1
        return True

    async def get_response(self, *args, **kwargs):
        if self._fails():
            raise ModelBehaviorError("Responses stream ended with terminal event `response.failed`.")
        return await super().get_response(*args, **kwargs)

    async def stream_response(self, *args, **kwargs):
        if self._fails():
            yield ResponseFailedEvent(type="response.failed", sequence_number=0, response=Response.model_construct(
                id="resp_1", status="failed", error=ResponseError(code="server_error", message="server had an error")))
            return
        async for event in super().stream_response(*args, **kwargs):
            yield event


async def _stream(agent: Agent, run_id: str) -> None:
    async for _ in agentspan.run_streamed(agent, "bill me", run_id=run_id).stream_events():
        pass


@pytest.mark.parametrize("streamed", [False, True])
def test_a_retry_makes_again_only_the_model_call_that_failed_itself(streamed):
    """A model call that fails with the SDK's `ModelBehaviorError` (a Responses call ending in
    ``response.failed``): not an answer the SDK refused, so the answers before it stay."""
    broken["charge"] = False
    model = FailsOnce([ToolCall("charge", {"amount": 5}), "all done"], fail_at=1)
    agent = Agent(name="billing", instructions="Charge.", tools=[charge], model=model)
    with pytest.raises(ModelBehaviorError, match="response.failed"):  # was StepNotFound, streamed
        if streamed:
            asyncio.run(_stream(agent, "failed-call"))
        else:
            agentspan.run(agent, "bill me", run_id="failed-call")
    failed = {s.key: s for s in agentspan.get("failed-call").steps()}
    assert failed["llm:1"].status is agentspan.StepStatus.FAILED and "response.failed" in failed["llm:1"].error
    assert agentspan.retry("failed-call", agent).result(timeout=20).final_output == "all done"
    assert effects == ["charge:5"]  # was: the charge made again, its model call set aside with it
    assert model.calls == 3  # llm:0, the failed llm:1, llm:1 again; llm:0 was asked again too
    steps = agentspan.get("failed-call").steps()
    assert [(s.key, s.attempt) for s in steps] == [("llm:0", 1), ("llm:0/call:call_0_0", 1), ("llm:1", 2)]
