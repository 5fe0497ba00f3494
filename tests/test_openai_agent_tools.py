"""Agents run inside a tool call of a durable run (``agent.as_tool(...)``, or a tool's own
``Runner.run``) or a guardrail check: the nested agent's model and tool calls are journaled under
the tool call's (or the guardrail's) key, replayed after a crash, and its approval-gated tools wait
for a decision like any other."""

from __future__ import annotations

import time
from typing import Any

import pytest
from agents import Agent, Model, ModelProvider, RunConfig, Runner, function_tool, set_tracing_disabled

import agentspan
from agentspan.errors import InDoubtStepError
from agentspan.records import Run, RunStatus, StepResult, StepStatus
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

set_tracing_disabled(True)
done: list[str] = []  # side effects of the nested agent's tools


@pytest.fixture(autouse=True)
def _fresh(home: Any) -> None:
    done.clear()


@function_tool
@agentspan.tool(approval_required=True)
def refund(order_id: str) -> str:
    """Refund an order."""
    done.append(f"refund {order_id}")
    return "refunded"


@function_tool
def lookup(order_id: str) -> str:
    """Look an order up."""
    done.append(f"lookup {order_id}")
    return "order 7: 30 USD"


def front_desk(tool: Any, inner_turns: list[Any]) -> tuple[Agent[Any], ScriptedModel]:
    inner = ScriptedModel(inner_turns, name="inner")
    billing = Agent(name="billing", instructions="Billing.", tools=[tool], model=inner)
    front = Agent(name="front", instructions="Front desk.", tools=[billing.as_tool("billing", "Billing tasks.")],
                  model=ScriptedModel([ToolCall("billing", {"input": "order 7"}, call_id="b1"), "all done"],
                                      name="outer"))
    return front, inner


def copy_of(run_id: str, keys: list[str]) -> str:
    """A new run holding the completed steps ``keys`` of ``run_id``: what a process killed after
    them (and before the others) leaves behind."""
    store = agentspan.get_store()
    run = store.get_run(run_id)
    copy = Run(framework=run.framework, agent=run.agent, input=run.input, options=run.options,
               status=RunStatus.RUNNING)
    store.create_run(copy)
    for step in store.list_steps(run_id):
        if step.key in keys:
            store.record_step(step.model_copy(update={"run_id": copy.id, "status": StepStatus.STARTED}),
                              StepResult(status=step.status, output=step.output), epoch=0)
    return copy.id


def test_an_agent_tools_approval_gated_tool_waits_for_a_decision():
    front, inner = front_desk(refund, [ToolCall("refund", {"order_id": "7"}, call_id="r1"), "billing done"])
    handle = agentspan.start(front, "Refund order 7.")
    deadline = time.monotonic() + 20
    while not handle.pending_approvals():
        assert time.monotonic() < deadline, handle.status()
        time.sleep(0.01)
    (approval,) = handle.pending_approvals()
    assert (approval.tool, approval.args) == ("refund", {"order_id": "7"})
    assert approval.step_key == "llm:0/call:b1/llm:0/call:r1"
    assert done == []  # not run before it was approved
    handle.approve()
    assert handle.result(timeout=20).final_output == "all done"
    assert done == ["refund 7"]
    assert inner.calls == 2  # its first call was replayed when the run went on after the decision
    keys = {s.key: s for s in handle.steps()}
    assert {"llm:0", "llm:0/call:b1", "llm:0/call:b1/llm:0", "llm:0/call:b1/llm:0/call:r1", "llm:0/call:b1/llm:1",
            "llm:1"} <= set(keys)
    assert keys["llm:0/call:b1/llm:0"].name == "inner" and keys["llm:0/call:b1"].output == "billing done"


def test_a_crash_inside_an_agent_tool_replays_the_nested_calls():
    front, inner = front_desk(lookup, [ToolCall("lookup", {"order_id": "7"}, call_id="l1"), "billing done"])
    handle = agentspan.start(front, "What is order 7?")
    assert handle.result(timeout=20).final_output == "all done"
    assert done == ["lookup 7"] and inner.calls == 2
    # killed inside the agent tool, after its lookup and before its second model call ended
    copy_id = copy_of(handle.id, ["llm:0", "llm:0/call:b1/llm:0", "llm:0/call:b1/llm:0/call:l1"])
    done.clear()
    result = agentspan.resume(copy_id, front).result(timeout=20)
    assert result.final_output == "all done"
    assert done == [] and inner.calls == 3  # the lookup replayed; only the nested second call live
    assert [s.key for s in agentspan.get(copy_id).steps()] == [
        "llm:0", "llm:0/call:b1/llm:0", "llm:0/call:b1/llm:0/call:l1", "llm:0/call:b1", "llm:0/call:b1/llm:1", "llm:1"]


def test_a_replayed_agent_tool_call_still_counts_its_runs_usage():
    """An agent tool's run adds its model calls' usage to its caller's (the SDK shares the `Usage`);
    replayed, that run is not made again (was: the resumed run's usage left those calls out)."""
    def usage_of(result: Any) -> tuple[int, int, int]:
        usage = result.context_wrapper.usage
        return usage.requests, usage.input_tokens, usage.output_tokens

    front, inner = front_desk(lookup, [ToolCall("lookup", {"order_id": "7"}, call_id="l1"), "billing done"])
    plain = usage_of(Runner.run_sync(front, "What is order 7?"))
    assert plain[0] == 4  # the outer model's two calls and the agent tool's two
    handle = agentspan.start(front, "What is order 7?")
    assert usage_of(handle.result(timeout=20)) == plain
    # killed after the agent tool's call was journaled, before the next model call ended
    copy_id = copy_of(handle.id, ["llm:0", "llm:0/call:b1/llm:0", "llm:0/call:b1/llm:0/call:l1",
                                  "llm:0/call:b1/llm:1", "llm:0/call:b1"])
    calls = inner.calls
    assert usage_of(agentspan.resume(copy_id, front).result(timeout=20)) == plain
    assert inner.calls == calls  # replayed: the agent tool's run was not made again


@function_tool
@agentspan.tool(on_in_doubt="fail")
def charge(order_id: str) -> str:
    """Charge an order (must never run twice)."""
    done.append(f"charge {order_id}")
    return "charged"


def test_an_error_of_the_core_inside_an_agent_tool_is_not_journaled_as_its_result():
    """``as_tool`` turns what the nested run raises into a message for the model (the SDK's
    ``failure_error_function``). An error of the core's own there (a nested call in doubt under
    ``on_in_doubt="fail"``) fails the run, and the agent tool's step is journaled failed, not
    completed with that message, so a retry runs it again instead of replaying it."""
    front, inner = front_desk(charge, [ToolCall("charge", {"order_id": "7"}, call_id="c1"), "billing done"])
    handle = agentspan.start(front, "Charge order 7.")
    assert handle.result(timeout=20).final_output == "all done"
    store = agentspan.get_store()
    # killed inside the nested charge: the outer call and the nested call both in flight
    copy_id = copy_of(handle.id, ["llm:0", "llm:0/call:b1/llm:0"])
    steps = {s.key: s for s in store.list_steps(handle.id)}
    for key in ("llm:0/call:b1", "llm:0/call:b1/llm:0/call:c1"):
        store.start_step(steps[key].model_copy(update={"run_id": copy_id, "status": StepStatus.STARTED}), epoch=0)
    done.clear()
    outer_calls = front.model.calls
    with pytest.raises(InDoubtStepError, match="'charge'"):
        agentspan.resume(copy_id, front).result(timeout=20)
    after = {s.key: s for s in store.list_steps(copy_id)}
    assert after["llm:0/call:b1"].status is StepStatus.FAILED
    assert after["llm:0/call:b1"].error.startswith("InDoubtStepError")
    assert done == [] and front.model.calls == outer_calls and "llm:1" not in after


class NamedModels(ModelProvider):
    """Resolves model names to scripted models (as a run config's provider)."""

    def __init__(self, **models: ScriptedModel) -> None:
        self.models = models

    def get_model(self, model_name: str | None) -> Model:
        return self.models[model_name or ""]


def test_a_tools_own_runner_call_is_journaled_with_the_run_config_of_the_run():
    billing = Agent(name="billing", instructions="Billing.", tools=[refund], model="inner")

    @function_tool
    async def delegate(task: str) -> str:
        """Hand a task to billing."""
        return str((await Runner.run(billing, task)).final_output)  # no run config: the run's is used

    models = NamedModels(
        outer=ScriptedModel([ToolCall("delegate", {"task": "refund 7"}, call_id="d1"), "all done"], name="outer"),
        inner=ScriptedModel([ToolCall("refund", {"order_id": "7"}, call_id="r1"), "billing done"], name="inner"))
    front = Agent(name="front", instructions="Front desk.", tools=[delegate], model="outer")
    handle = agentspan.start(front, "Refund order 7.", run_config=RunConfig(model_provider=models))
    deadline = time.monotonic() + 20
    while not handle.pending_approvals():
        assert time.monotonic() < deadline, handle.status()
        time.sleep(0.01)
    assert handle.pending_approvals()[0].step_key == "llm:0/call:d1/llm:0/call:r1" and done == []
    handle.approve()
    assert handle.result(timeout=20).final_output == "all done" and done == ["refund 7"]
    assert models.models["inner"].calls == 2  # its first call was replayed after the decision
    keys = {s.key: s for s in handle.steps()}
    assert keys["llm:0/call:d1/llm:0"].name == "inner" and keys["llm:0/call:d1"].output == "billing done"


def test_a_run_configs_guardrails_are_recorded_and_their_judge_journaled():
    """``RunConfig(input_guardrails=..., output_guardrails=...)`` guard the run as an agent's own
    do: recorded in the trail, a judge they run journaled (answered from the journal on resume),
    and not applied to the judge's own run (the SDK runs it with no run config)."""
    from agents import GuardrailFunctionOutput, input_guardrail, output_guardrail

    judged: list[str] = []
    judge = Agent(name="judge", model=ScriptedModel(["safe"] * 4, name="judge",
                                                    on_call=lambda i: judged.append("judge")))

    @input_guardrail
    async def safe_input(ctx: Any, agent: Any, input: Any) -> GuardrailFunctionOutput:
        verdict = (await Runner.run(judge, input)).final_output
        return GuardrailFunctionOutput(output_info=verdict, tripwire_triggered=verdict != "safe")

    @output_guardrail
    async def short_output(ctx: Any, agent: Any, output: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=len(output), tripwire_triggered=len(output) > 20)

    def agent() -> Agent[Any]:
        return Agent(name="desk", tools=[lookup],
                     model=ScriptedModel([ToolCall("lookup", {"order_id": "7"}, call_id="c1"), "30 USD"], name="m"))

    config = RunConfig(input_guardrails=[safe_input], output_guardrails=[short_output])
    handle = agentspan.start(agent(), "What does order 7 cost?", run_config=config)
    assert handle.result(timeout=20).final_output == "30 USD"
    keys = {s.key: s for s in handle.steps()}
    assert keys["guardrail:input:desk:safe_input/llm:0"].name == "judge"
    assert keys["guardrail:input:desk:safe_input"].output["output_info"] == "safe"
    assert keys["guardrail:output:desk:short_output"].output == {"tripwire_triggered": False, "output_info": 6}
    assert judged == ["judge"] and done == ["lookup 7"]

    judged.clear()
    done.clear()
    copy_id = copy_of(handle.id, [k for k in keys if not k.startswith(("llm:1", "guardrail:output"))])
    assert agentspan.resume(copy_id, agent(), run_config=config).result(timeout=20).final_output == "30 USD"
    assert judged == [] and done == []  # checked again; the judge answered from the journal


def test_agents_run_by_guardrails_are_journaled_under_the_guardrails_key():
    """The SDK's guardrail pattern, a judge agent run inside the check: checked again on resume,
    but the judge's answer comes from the journal (not a second, paid model call)."""
    from agents import (
        GuardrailFunctionOutput,
        ToolGuardrailFunctionOutput,
        input_guardrail,
        tool_input_guardrail,
    )

    judged: list[str] = []

    def judge(name: str) -> Agent[Any]:
        return Agent(name=name, model=ScriptedModel(["safe"], name=name, on_call=lambda i: judged.append(name)))

    input_judge, args_judge = judge("input-judge"), judge("args-judge")

    @input_guardrail
    async def safe_input(ctx: Any, agent: Any, input: Any) -> GuardrailFunctionOutput:
        verdict = (await Runner.run(input_judge, input)).final_output
        return GuardrailFunctionOutput(output_info=verdict, tripwire_triggered=verdict != "safe")

    @tool_input_guardrail
    async def safe_args(data: Any) -> ToolGuardrailFunctionOutput:
        verdict = (await Runner.run(args_judge, data.context.tool_arguments)).final_output
        return ToolGuardrailFunctionOutput.allow(output_info=verdict)

    @function_tool(tool_input_guardrails=[safe_args])
    def look(order_id: str) -> str:
        """Look an order up."""
        done.append(f"look {order_id}")
        return "order 7: 30 USD"

    agent = Agent(name="desk", tools=[look], input_guardrails=[safe_input],
                  model=ScriptedModel([ToolCall("look", {"order_id": "7"}, call_id="c1"), "30 USD"], name="m"))
    handle = agentspan.start(agent, "What does order 7 cost?")
    assert handle.result(timeout=20).final_output == "30 USD"
    keys = {s.key: s for s in handle.steps()}
    assert keys["guardrail:input:desk:safe_input/llm:0"].name == "input-judge"
    assert keys["llm:0/call:c1/guardrail:tool_input:safe_args/llm:0"].name == "args-judge"
    assert keys["guardrail:input:desk:safe_input"].output["output_info"] == "safe"
    assert sorted(judged) == ["args-judge", "input-judge"] and done == ["look 7"]

    judged.clear()
    done.clear()
    copy_id = copy_of(handle.id, [k for k in keys if k != "llm:1"])  # killed before the last model call
    assert agentspan.resume(copy_id, agent).result(timeout=20).final_output == "30 USD"
    assert judged == [] and done == []  # both guardrails checked again, their judges answered from the journal
