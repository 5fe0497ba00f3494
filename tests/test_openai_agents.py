"""In-process behaviour of `agentspan.run` with real openai-agents runners and scripted models."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import math
import time
from typing import Any

import pytest
from agents import (
    Agent,
    Handoff,
    ModelProvider,
    RunConfig,
    RunContextWrapper,
    Runner,
    function_tool,
    handoff,
    set_tracing_disabled,
)
from agents.exceptions import MaxTurnsExceeded
from pydantic import BaseModel

import agentspan
from agentspan.errors import (
    ApprovalConflict,
    ConfigurationError,
    InDoubtStepError,
    NoPendingApproval,
    ReplayDivergenceError,
    RunCancelledError,
    RunNotFound,
    RunStateError,
)
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from journal_utils import crashed_copy

set_tracing_disabled(True)
effects: list[str] = []


@pytest.fixture(autouse=True)
def _clean(home):
    effects.clear()
    yield


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    step = agentspan.current_step()
    effects.append(f"add {a} {b} {step.key if step else None}")
    return a + b


@function_tool
@agentspan.tool(approval_required=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    effects.append(f"refund {order_id} {amount}")
    return "refunded"


@function_tool
@agentspan.tool(approval_required=True, on_reject="stop")
def wipe(disk: str) -> str:
    """Wipe a disk."""
    effects.append(f"wipe {disk}")
    return "wiped"


@function_tool(needs_approval=True)
def sdk_gated(item: str) -> str:
    """A tool gated by the SDK's own needs_approval flag."""
    effects.append(f"sdk_gated {item}")
    return f"done {item}"


def agent_with(turns, tools, name="calc", **kw) -> Agent:
    return Agent(name=name, instructions="be helpful", tools=tools, model=ScriptedModel(turns, name="m"), **kw)


def wait_status(handle, status, timeout=20.0):
    deadline = time.monotonic() + timeout
    while handle.status() is not status:
        assert time.monotonic() < deadline, f"status stayed {handle.status()}"
        time.sleep(0.01)


def test_run_returns_a_real_run_result_and_records_the_trail():
    agent = agent_with([ToolCall("add", {"a": 2, "b": 3}), "5"], [add])
    result = agentspan.run(agent, "2+3?")
    assert type(result).__name__ == "RunResult"
    assert result.final_output == "5"
    assert result.context_wrapper.usage.requests == 2
    runs = agentspan.get_store().list_runs()
    assert len(runs) == 1 and runs[0].status is agentspan.RunStatus.COMPLETED and runs[0].output == "5"
    steps = agentspan.get(runs[0].id).steps()
    assert [(s.kind.value, s.key) for s in steps] == [("llm", "llm:0"), ("tool", "llm:0/call:call_0_0"),
                                                      ("llm", "llm:1")]
    llm = steps[0]
    assert (llm.provider, llm.model, llm.input_tokens, llm.output_tokens) == ("scripted", "m", 100, 20)
    assert llm.duration_ms is not None and llm.input_hash
    tool = steps[1]
    assert tool.name == "add" and tool.input == {"a": 2, "b": 3} and tool.output == 5
    assert runs[0].input_tokens == 210 and runs[0].output_tokens == 40 and runs[0].steps == 3


def test_tool_sees_its_step_and_idempotency_key():
    seen = []

    @function_tool
    def probe() -> str:
        """Probe."""
        step = agentspan.current_step()
        seen.append(step)
        return "ok"

    handle = agentspan.start(agent_with([ToolCall("probe"), "done"], [probe]), "go")
    handle.result(timeout=20)
    (step,) = seen
    assert step.key == "llm:0/call:call_0_0" and step.idempotency_key == f"{handle.id}:{step.key}"
    assert step.attempt == 1 and agentspan.current_step() is None


def test_parallel_tool_calls_keep_stable_keys_and_replay_in_any_order():
    turns = [[ToolCall("add", {"a": 1, "b": 1}, "c1"), ToolCall("add", {"a": 2, "b": 2}, "c2"),
              ToolCall("add", {"a": 3, "b": 3}, "c3")], "done"]
    handle = agentspan.start(agent_with(turns, [add]), "go")
    handle.result(timeout=20)
    keys = sorted(s.key for s in handle.steps() if s.kind is agentspan.StepKind.TOOL)
    assert keys == ["llm:0/call:c1", "llm:0/call:c2", "llm:0/call:c3"]
    outputs = {s.key: s.output for s in handle.steps() if s.kind is agentspan.StepKind.TOOL}
    assert outputs == {"llm:0/call:c1": 2, "llm:0/call:c2": 4, "llm:0/call:c3": 6}


def slow_tool(kind: str) -> Any:
    """A tool that takes a while (run on a thread by the SDK when sync)."""
    if kind == "async":
        @function_tool
        async def slow(n: int) -> str:
            """Work slowly."""
            effects.append(f"slow {n} start")
            await asyncio.sleep(0.3)
            effects.append(f"slow {n} end")
            return "slow done"
    else:
        @function_tool
        def slow(n: int) -> str:
            """Work slowly."""
            effects.append(f"slow {n} start")
            time.sleep(0.3)
            effects.append(f"slow {n} end")
            return "slow done"
    return slow


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_parallel_call_the_sdk_cancels_for_an_approval_ends_and_is_not_made_again(kind):
    """The SDK cancels a gated call's siblings when the call waits for its approval (it raises):
    the sibling still ends and is journaled (a sync tool's thread cannot be stopped anyway), so
    the attempt after the decision replays it instead of making it a second time."""
    turns = [[ToolCall("slow", {"n": 1}, "s1"), ToolCall("refund", {"order_id": "7", "amount": 1.0}, "r1")], "done"]
    handle = agentspan.start(agent_with(turns, [slow_tool(kind), refund]), "go")
    wait_status(handle, agentspan.RunStatus.WAITING)
    deadline = time.monotonic() + 10  # journaled while the run waits: no decision needed for it
    while (agentspan.StepStatus.COMPLETED, "slow done") not in [
            (s.status, s.output) for s in handle.steps() if s.key == "llm:0/call:s1"]:
        assert time.monotonic() < deadline, handle.steps()
        time.sleep(0.01)
    handle.approve()
    assert handle.result(timeout=20).final_output == "done"
    assert effects == ["slow 1 start", "slow 1 end", "refund 7 1.0"]


def test_a_worker_gives_a_run_waiting_for_an_approval_back_once_its_cancelled_calls_ended():
    """A worker releases a run that waits for a decision: not before the parallel calls the SDK
    cancelled have ended and are journaled, or the worker that takes the run up (here at once:
    the approval is decided right away) would find them in doubt and make them again."""
    import threading

    store = agentspan.get_store()
    run, _ = store.create_run(agentspan.Run(framework="openai-agents", agent="calc", input="go",
                                            status=agentspan.RunStatus.PENDING))
    turns = [[ToolCall("slow", {"n": 1}, "s1"), ToolCall("refund", {"order_id": "7", "amount": 1.0}, "r1")], "done"]
    stop = threading.Event()
    worker = threading.Thread(target=agentspan.serve, args=(agent_with(turns, [slow_tool("sync"), refund]),),
                              kwargs={"stop": stop, "concurrency": 2})
    worker.start()
    try:
        handle = agentspan.get(run.id)
        deadline = time.monotonic() + 20
        while not handle.pending_approvals():
            assert time.monotonic() < deadline, handle.status()
            time.sleep(0.005)
        handle.approve()
        assert handle.result(timeout=20) == "done"  # the stored output: the run ran in the worker
    finally:
        stop.set()
        worker.join(timeout=20)
    assert effects == ["slow 1 start", "slow 1 end", "refund 7 1.0"]


def test_a_parallel_call_the_sdk_cancels_for_a_failed_sibling_is_replayed_by_the_retry():
    failing = [True]

    @function_tool(failure_error_function=None)
    def flaky(x: int) -> str:
        """Fails while the service is down."""
        if failing:
            raise RuntimeError("service down")
        effects.append(f"flaky {x}")
        return "flaky done"

    def agent() -> Agent:
        return agent_with([[ToolCall("slow", {"n": 1}, "s1"), ToolCall("flaky", {"x": 1}, "f1")], "done"],
                          [slow_tool("sync"), flaky])

    handle = agentspan.start(agent(), "go")
    with pytest.raises(Exception, match="service down"):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.FAILED
    assert {s.key: s.status for s in handle.steps() if s.kind is agentspan.StepKind.TOOL} == {
        "llm:0/call:s1": agentspan.StepStatus.COMPLETED, "llm:0/call:f1": agentspan.StepStatus.FAILED}
    failing.clear()
    assert agentspan.retry(handle.id, agent()).result(timeout=20).final_output == "done"
    assert effects == ["slow 1 start", "slow 1 end", "flaky 1"]


def test_configure_while_a_run_executes_keeps_its_store_or_is_refused(tmp_path):
    """Was: any `configure` closed the store under the run (a raw sqlite3 error, the run left
    ``running`` and its finished tool call ``started``, to run again on resume)."""
    outcomes: list[str] = []

    @function_tool
    def reconfigure() -> str:
        """Changes settings mid-run."""
        agentspan.configure(poll_interval=0.5)  # the store stays open
        try:
            agentspan.configure(home=tmp_path / "elsewhere")
        except ConfigurationError as exc:
            outcomes.append(str(exc))
        return "reconfigured"

    store = agentspan.get_store()
    agent = agent_with([ToolCall("reconfigure", {}), "done"], [reconfigure])
    assert agentspan.run(agent, "go", run_id="reconfigured").final_output == "done"
    assert len(outcomes) == 1 and "1 run(s) of this process are executing on" in outcomes[0]
    assert agentspan.get_store() is store and agentspan.config.settings().poll_interval == 0.5
    assert [s.status for s in agentspan.get("reconfigured").steps()] == [agentspan.StepStatus.COMPLETED] * 3


class Unprintable(Exception):
    """An exception whose ``str`` raises (a library's broken ``__str__``)."""

    def __str__(self) -> str:
        raise RuntimeError("str failed")


@pytest.mark.parametrize(("where", "raised", "run_error"), [
    ("hook", Unprintable, "Unprintable: Unprintable()"),
    # the SDK itself takes ``str`` of a tool's error: the plain runner raises that RuntimeError too
    ("tool", RuntimeError, "RuntimeError: str failed"),
])
def test_an_error_whose_text_cannot_be_made_still_fails_the_run(where, raised, run_error):
    """Was: the run left ``running`` (a worker would repeat it), the error describing the user's
    exception raised instead of it, and a tool's failure unjournaled."""
    from agents import RunHooks

    @function_tool(failure_error_function=None)
    def breaks() -> str:
        """Breaks."""
        raise Unprintable()

    class Hooks(RunHooks):
        async def on_llm_end(self, context, agent, response) -> None:
            raise Unprintable()

    agent = agent_with([ToolCall("breaks", {}), "done"], [breaks])
    with pytest.raises(raised):
        agentspan.run(agent, "go", run_id="unprintable", **({"hooks": Hooks()} if where == "hook" else {}))
    handle = agentspan.get("unprintable")
    assert handle.status() is agentspan.RunStatus.FAILED and handle.run().error == run_error
    if where == "tool":
        (tool,) = [s for s in handle.steps() if s.kind is agentspan.StepKind.TOOL]
        assert tool.status is agentspan.StepStatus.FAILED and tool.error == "Unprintable: Unprintable()"


class Point(BaseModel):
    x: int
    y: int


@dataclasses.dataclass
class Pair:
    a: int
    b: int


class Listening(ScriptedModel):
    """A scripted model that keeps the tool outputs it was shown."""

    def __init__(self, turns: list[Any]) -> None:
        super().__init__(turns, name="m")
        self.shown: list[Any] = []

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
        self.shown += [item["output"] for item in input if isinstance(item, dict)
                       and item.get("type") == "function_call_output"]
        return await super().get_response(system_instructions, input, *args, **kwargs)


def shown_three_ways(agent: Any) -> tuple[Any, list[Any]]:
    """Runs ``agent()`` (an agent and its `Listening` model, answering "done") under the plain
    ``Runner``, durably, and resumed from a copy of the durable run killed after its tool call;
    asserts the model was shown the same tool outputs in all three. Returns the durable run's
    handle and what the model was shown."""
    plain_agent, plain_model = agent()
    assert Runner.run_sync(plain_agent, "go").final_output == "done"
    durable_agent, durable_model = agent()
    handle = agentspan.start(durable_agent, "go")
    assert handle.result(timeout=20).final_output == "done"
    resumed_agent, resumed_model = agent()
    assert agentspan.resume(crashed_copy(handle.id, keep=2), resumed_agent).result(timeout=20).final_output == "done"
    assert durable_model.shown == resumed_model.shown == plain_model.shown
    return handle, plain_model.shown


TYPED_RESULTS = {
    "pydantic": (Point, Point(x=1, y=2)),
    "dataclass": (Pair, Pair(1, 2)),
    "tuple": (tuple[int, int], (1, 2)),
    "set": (set[int], {3}),
    "datetime": (datetime.datetime, datetime.datetime(2024, 1, 2, 3, 4, 5)),
    "bytes": (bytes, b"abc"),
    "infinity": (float, math.inf),
}


@pytest.mark.parametrize("kind", list(TYPED_RESULTS))
def test_a_tools_typed_result_reaches_the_sdk_as_under_the_plain_runner_live_and_replayed(kind):
    """The model reads the same text of a tool's result, and the SDK (a ``tool_use_behavior``)
    gets the same object, under the plain ``Runner``, a durable run and a resumed one: the
    journaled JSON comes back as the function's declared return type."""
    declared, value = TYPED_RESULTS[kind]

    def agent() -> tuple[Agent, Listening]:
        def make() -> Any:
            return value

        make.__annotations__ = {"return": declared}
        model = Listening([ToolCall("make", {}, "c1"), "done"])

        def behavior(context: Any, results: list[Any]) -> Any:
            from agents.agent import ToolsToFinalOutputResult
            return ToolsToFinalOutputResult(is_final_output=False) if results[0].output == value else (
                ToolsToFinalOutputResult(is_final_output=True, final_output=f"got {results[0].output!r}"))

        return Agent(name="typed", tools=[function_tool(make)], model=model, tool_use_behavior=behavior), model

    handle, shown = shown_three_ways(agent)
    assert shown == [str(value)]


UNDECLARED_RESULTS = {
    "pydantic": Point(x=1, y=2),
    "dataclass": Pair(1, 2),
    "tuple": (1, 2),
    "plain dict": {"a": [1, 2.5, None, True]},
}


def undeclared_tool(value: Any) -> Any:
    def make():  # undeclared on purpose
        return value

    return function_tool(make)


@pytest.mark.parametrize("kind", list(UNDECLARED_RESULTS))
def test_an_undeclared_result_reads_to_the_model_as_under_the_plain_runner_live_and_replayed(kind):
    """A tool declaring no return type whose result is an object (not text, a number, a dict or a
    list) with a JSON form that reads otherwise: the model reads ``str(result)``, as under the
    plain ``Runner``, live and replayed (was: the JSON form's text, ``{'x': 1, 'y': 2}`` for
    ``x=1 y=2``); a plain JSON result is still journaled as JSON."""
    value = UNDECLARED_RESULTS[kind]

    def agent() -> tuple[Agent, Listening]:
        model = Listening([ToolCall("make", {}, "c1"), "done"])
        return Agent(name="undeclared", tools=[undeclared_tool(value)], model=model), model

    handle, shown = shown_three_ways(agent)
    assert shown == [str(value)]
    (tool,) = [s for s in handle.steps() if s.kind is agentspan.StepKind.TOOL]
    assert tool.output == (value if kind == "plain dict" else str(value))


def test_a_dict_result_reaches_hooks_as_a_dict_and_a_programs_call_as_json():
    """A dict (here holding a datetime, so its text differs) stays its JSON form for a
    ``tool_use_behavior`` that indexes it; a call a hosted program made (``caller.type ==
    "program"``) is sent to the model as JSON, as the plain ``Runner`` sends it, not as text."""
    from agents.agent import ToolsToFinalOutputResult
    from agents.tool_context import ToolContext
    from openai.types.responses import ResponseFunctionToolCall

    seen: list[Any] = []

    def behavior(context: Any, results: list[Any]) -> Any:
        seen.append(results[0].output)
        return ToolsToFinalOutputResult(is_final_output=False)

    when = {"at": datetime.datetime(2024, 1, 2, 3, 4, 5)}
    agent = Agent(name="dated", tools=[undeclared_tool(when)], tool_use_behavior=behavior,
                  model=ScriptedModel([ToolCall("make", {}, "c1"), "done"], name="m"))
    assert agentspan.run(agent, "go").final_output == "done"
    assert seen == [{"at": "2024-01-02T03:04:05"}]  # was: its text, a str

    # a hosted program's call (the SDK runs those only beside its programmatic tool calling tool)
    from agentspan_openai_agents._results import programmatic

    def call(caller: Any) -> Any:
        return ResponseFunctionToolCall(type="function_call", name="make", arguments="{}", call_id="p1",
                                        id="fc_p1", status="completed", caller=caller)

    assert programmatic(ToolContext(context=None, tool_name="make", tool_call_id="p1", tool_arguments="{}",
                                    tool_call=call({"type": "program", "caller_id": "prog"})))
    assert not programmatic(ToolContext(context=None, tool_name="make", tool_call_id="p1", tool_arguments="{}",
                                        tool_call=call(None)))


def test_an_agent_tool_with_a_structured_output_reads_to_the_model_as_under_the_plain_runner():
    """``Agent.as_tool`` of an agent with an ``output_type``: its tool result is that type's object."""
    def agent() -> tuple[Agent, Listening]:
        inner = Agent(name="pointer", model=ScriptedModel(['{"x": 1, "y": 2}'], name="inner"), output_type=Point)
        model = Listening([ToolCall("point", {"input": "where"}, "c1"), "done"])
        return Agent(name="outer", tools=[inner.as_tool("point", "Finds a point.")], model=model), model

    plain_agent, plain_model = agent()
    assert Runner.run_sync(plain_agent, "go").final_output == "done"
    durable_agent, durable_model = agent()
    assert agentspan.run(durable_agent, "go").final_output == "done"
    assert durable_model.shown == plain_model.shown == ["x=1 y=2"]


def test_a_result_with_numbers_json_lacks_replays_without_a_divergence():
    """NaN and infinities (no JSON numbers: the journal's encoder would write ``null``) are
    journaled as ``"NaN"`` / ``"Infinity"``, and the live call hands the SDK that form too: a
    resumed run's model calls read what the first attempt's read."""
    @function_tool
    def ratio(n: int) -> dict:
        """A ratio that may be infinite."""
        effects.append(f"ratio {n}")
        return {"ratio": math.inf if n else math.nan}

    def agent() -> tuple[Agent, Listening]:
        model = Listening([ToolCall("ratio", {"n": 1}, "c1"), ToolCall("ratio", {"n": 0}, "c2"), "done"])
        return Agent(name="ratios", tools=[ratio], model=model), model

    first, first_model = agent()
    handle = agentspan.start(first, "go")
    assert handle.result(timeout=20).final_output == "done"
    assert [s.output for s in handle.steps() if s.kind is agentspan.StepKind.TOOL] == [
        {"ratio": "Infinity"}, {"ratio": "NaN"}]
    resumed, resumed_model = agent()  # killed after the second model call: the first tool call replays
    assert agentspan.resume(crashed_copy(handle.id, keep=3), resumed).result(timeout=20).final_output == "done"
    assert resumed_model.shown == first_model.shown[1:] and effects == ["ratio 1", "ratio 0", "ratio 0"]


def test_approval_waits_then_approve_runs_the_tool_once(caplog):
    agent = agent_with([ToolCall("refund", {"order_id": "42", "amount": 30.0}), "ok"], [refund])
    caplog.set_level(logging.WARNING, logger="agentspan")  # seen without logging set up (was INFO)
    handle = agentspan.start(agent, "refund 42")
    wait_status(handle, agentspan.RunStatus.WAITING)
    (pending,) = handle.pending_approvals()
    assert pending.tool == "refund" and pending.args == {"order_id": "42", "amount": 30.0}
    assert effects == []
    deadline = time.monotonic() + 5  # the waiting run says once what it waits for and how to decide it
    while f"agentspan approve {pending.id}" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert caplog.text.count(f"waits for approval {pending.id} of tool 'refund'") == 1
    decided = agentspan.get(handle.id).approve(by="alice", reason="fine")
    assert decided.status is agentspan.ApprovalStatus.APPROVED and decided.decided_by == "alice"
    assert handle.result(timeout=20).final_output == "ok"
    assert effects == ["refund 42 30.0"]
    with pytest.raises(ApprovalConflict, match="already approved"):
        agentspan.get(handle.id).approve(pending.id)
    with pytest.raises(NoPendingApproval, match=handle.id):
        agentspan.get(handle.id).approve()


def test_rejection_tells_the_model_and_the_agent_continues():
    model = ScriptedModel([ToolCall("refund", {"order_id": "7", "amount": 5.0}), "sorry"], name="m")
    agent = Agent(name="a", tools=[refund], model=model)
    handle = agentspan.start(agent, "refund 7")
    wait_status(handle, agentspan.RunStatus.WAITING)
    handle.reject(by="bob", reason="not eligible")
    result = handle.result(timeout=20)
    assert result.final_output == "sorry" and effects == []
    tool_step = [s for s in handle.steps() if s.kind is agentspan.StepKind.TOOL][0]
    assert "rejected by bob: not eligible" in tool_step.output
    outputs = [i for i in result.new_items if type(i).__name__ == "ToolCallOutputItem"]
    assert "not eligible" in str(outputs[0].output)


@dataclasses.dataclass
class Notes:
    user: str
    facts: list[str] = dataclasses.field(default_factory=list)


def test_a_tool_that_changes_the_context_the_prompt_reads_does_not_break_the_wait_for_an_approval():
    @function_tool
    def remember(ctx: RunContextWrapper[Notes], fact: str) -> str:
        """Remembers a fact."""
        ctx.context.facts.append(fact)
        effects.append(f"remember {fact}")
        return "ok"

    @function_tool(needs_approval=True)
    def refund_order(order_id: str) -> str:
        """Refunds an order."""
        effects.append(f"refund {order_id}")
        return "refunded"

    def instructions(ctx: RunContextWrapper[Notes], agent: Agent[Notes]) -> str:
        return f"User {ctx.context.user}. Known facts: {ctx.context.facts}"

    agent = Agent[Notes](name="support", instructions=instructions, tools=[remember, refund_order],
                         model=ScriptedModel([ToolCall("remember", {"fact": "damaged"}),
                                              ToolCall("refund_order", {"order_id": "42"}), "done"]))
    notes = Notes(user="alice")
    handle = agentspan.start(agent, "refund 42", context=notes)
    wait_status(handle, agentspan.RunStatus.WAITING)
    handle.approve()
    # the attempt after the decision replays the first model call, whose prompt now reads the
    # fact the tool added: the same process, the same objects: not a divergence (was one)
    assert handle.result(timeout=20).final_output == "done"
    assert effects == ["remember damaged", "refund 42"] and notes.facts == ["damaged"]
    assert not any(s.key.startswith("superseded:") for s in handle.steps())


def test_rejection_with_stop_policy_cancels_the_run():
    handle = agentspan.start(agent_with([ToolCall("wipe", {"disk": "sda"}), "gone"], [wipe]), "wipe it")
    wait_status(handle, agentspan.RunStatus.WAITING)
    handle.reject(reason="no way")
    with pytest.raises(RunCancelledError):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.CANCELLED and effects == []


def test_sdk_needs_approval_flag_becomes_an_agentspan_approval():
    handle = agentspan.start(agent_with([ToolCall("sdk_gated", {"item": "x"}), "fin"], [sdk_gated]), "go")
    wait_status(handle, agentspan.RunStatus.WAITING)
    assert handle.pending_approvals()[0].tool == "sdk_gated"
    handle.approve()
    assert handle.result(timeout=20).final_output == "fin" and effects == ["sdk_gated x"]


def test_handoffs_are_journaled_and_replayed():
    billing = Agent(name="billing", instructions="billing", model=ScriptedModel(["billing says hi"], name="b"))
    triage = Agent(name="triage", instructions="route", handoffs=[handoff(billing)],
                   model=ScriptedModel([ToolCall("transfer_to_billing", {})], name="t"))
    result = agentspan.run(triage, "I have a billing question")
    assert result.final_output == "billing says hi" and result.last_agent.name == "billing"
    run = agentspan.get_store().list_runs()[0]
    kinds = [(s.kind.value, s.name) for s in agentspan.get(run.id).steps()]
    assert kinds == [("llm", "t"), ("handoff", "billing"), ("llm", "b")]


@pytest.mark.parametrize("streamed", [False, True])
def test_a_result_holds_the_users_agents_for_the_next_turn(streamed):
    """As the plain runner's: ``result.last_agent`` (and each item's agent) is the agent given, not
    the durable clone (was: the clone, whose next ``agentspan.run`` failed with StepNotFound after
    its tool had run, and which the plain ``Runner`` ran past its ``needs_approval``)."""
    billing_model = ScriptedModel(["billing says hi"], name="b")
    billing = Agent(name="billing", instructions="billing", tools=[add], model=billing_model)
    triage = Agent(name="triage", instructions="route", handoffs=[handoff(billing)],
                   model=ScriptedModel([ToolCall("transfer_to_billing", {})], name="t"))

    async def stream() -> Any:
        result = agentspan.run_streamed(triage, "a billing question", run_id="first")
        async for _ in result.stream_events():
            pass
        return result

    first = asyncio.run(stream()) if streamed else agentspan.run(triage, "a billing question", run_id="first")
    assert first.last_agent is billing
    assert {item.agent.name: item.agent for item in first.new_items} == {"triage": triage, "billing": billing}
    (handed,) = [item for item in first.new_items if item.type == "handoff_output_item"]
    assert handed.source_agent is triage and handed.target_agent is billing  # (a clone's tools skip the gate)
    follow_up = first.to_input_list() + [{"role": "user", "content": "1 + 2?"}]
    billing_model.turns = [ToolCall("add", {"a": 1, "b": 2}), "3"]  # (turns counted per run)
    assert agentspan.run(first.last_agent, follow_up, run_id="second").final_output == "3"
    assert effects == ["add 1 2 llm:0/call:call_0_0"]  # once, journaled under the second run's first call


def test_an_sdk_error_carries_the_users_agents_out_of_the_run():
    """``run_data`` of an SDK exception (here ``MaxTurnsExceeded``) holds the agents given, as the
    plain runner's does: going on from ``exc.run_data.last_agent`` with the plain ``Runner`` (the
    SDK's recovery pattern) stops at the tool's ``needs_approval`` (was: the durable clone, whose
    wrapped tool ran the refund without asking)."""
    refunds: list[str] = []

    @function_tool(needs_approval=True)
    def refund(order_id: str) -> str:
        """Refund an order."""
        refunds.append(order_id)
        return "refunded"

    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), ToolCall("refund", {"order_id": "1"}), "done"])
    agent = Agent(name="desk", instructions="x", tools=[add, refund], model=model)
    with pytest.raises(MaxTurnsExceeded) as stopped:
        agentspan.run(agent, "go", max_turns=1)
    data = stopped.value.run_data
    assert data is not None and data.last_agent is agent
    assert data.new_items and all(item.agent is agent for item in data.new_items)
    goes_on = Runner.run_sync(data.last_agent, [{"role": "user", "content": "go"}]
                              + [item.to_input_item() for item in data.new_items], max_turns=3)
    assert [item.name for item in goes_on.interruptions] == ["refund"] and refunds == []


def test_a_run_error_handler_is_handed_the_users_agents():
    """``error_handlers=`` (the SDK's): the handler's ``data.run_data`` holds the agents given, as
    under the plain runner (was: the durable clones)."""
    seen: list[bool] = []

    def on_max_turns(data: Any) -> str:
        seen.append(data.run_data.last_agent is agent and all(i.agent is agent for i in data.run_data.new_items))
        return "stopped"

    agent = Agent(name="desk", instructions="x", tools=[add],
                  model=ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4}), "done"]))
    result = agentspan.run(agent, "go", max_turns=1, error_handlers={"max_turns": on_max_turns})
    assert result.final_output == "stopped" and seen == [True]
    with pytest.raises(MaxTurnsExceeded):  # a kind mapped to None has no handler, as for the SDK
        agentspan.run(agent, "go", max_turns=1, error_handlers={"max_turns": None})


def test_a_decision_stands_when_the_tools_approval_policy_changes_its_answer():
    """A callable ``needs_approval`` is asked again on every execution of the run; a call it
    gated before is gated again whatever it answers now (was: rejected, then run once the policy
    said no approval was needed)."""
    strict = [True]

    async def policy(context, params, call_id) -> bool:
        return strict[0]

    @function_tool(needs_approval=policy)
    def wire(amount: int) -> str:
        """Wire money."""
        effects.append(f"wire {amount}")
        return "wired"

    agent = agent_with([ToolCall("wire", {"amount": 5}), "done"], [wire])
    handle = agentspan.start(agent, "wire 5", run_id="wire")
    wait_status(handle, agentspan.RunStatus.WAITING)
    handle.reject(by="ops", reason="no")
    assert handle.result(timeout=20).final_output == "done"
    retried = crashed_copy(handle.id, keep=1)  # killed after the model call, the decision kept
    store = agentspan.get_store()
    (decided,) = store.list_approvals(run_id=handle.id)
    store.request_approval(decided.model_copy(update={"id": agentspan.records.new_id(), "run_id": retried}), epoch=0)
    strict[0] = False
    result = agentspan.resume(retried, agent).result(timeout=20)
    assert result.final_output == "done" and effects == []  # the rejection stood
    (wire_step,) = [s for s in agentspan.get(retried).steps() if s.kind is agentspan.StepKind.TOOL]
    assert wire_step.output.startswith("Tool call 'wire' was rejected by ops: no.")


def test_a_call_whose_approval_was_set_aside_is_not_gated_by_it():
    """Under ``on_divergence="live"`` the steps from the divergence on, and their approvals, are
    set aside; a new call under the same key (a deterministic call id) that needs no approval is
    not gated by the old one's (was: a pending approval for it)."""
    turns = [ToolCall("refund", {"order_id": "1", "amount": 1.0}, "c1"), "done"]
    handle = agentspan.start(agent_with(turns, [refund, add]), "refund 1", run_id="asked")
    wait_status(handle, agentspan.RunStatus.WAITING)
    copy_id = crashed_copy(handle.id, keep=1)  # killed while it waited: its model call and approval kept
    store = agentspan.get_store()
    (asked,) = store.list_approvals(run_id=handle.id)
    store.request_approval(asked.model_copy(update={"id": agentspan.records.new_id(), "run_id": copy_id}), epoch=0)
    handle.cancel()
    changed = Agent(name="calc", instructions="add instead", tools=[refund, add],
                    model=ScriptedModel([ToolCall("add", {"a": 1, "b": 2}, "c1"), "3"], name="m"))
    result = agentspan.resume(copy_id, changed, on_divergence="live").result(timeout=20)
    assert result.final_output == "3" and effects == ["add 1 2 llm:0/call:c1"]


def test_hooks_see_a_handoff_as_the_plain_runner_gives_it():
    """The SDK calls ``on_handoff`` with keyword arguments (was: a TypeError from the hooks'
    wrapper at the first handoff of any run given hooks)."""
    from agents import AgentHooks, RunHooks

    seen: list[str] = []

    class Hooks(RunHooks):
        async def on_handoff(self, context, from_agent, to_agent) -> None:
            seen.append(f"run: {from_agent.name} -> {to_agent.name} ({agentspan.replaying()})")

    class OnTriage(AgentHooks):  # the SDK calls the agent handing off
        async def on_handoff(self, context, agent, source) -> None:
            seen.append(f"agent: {source.name} -> {agent.name}")

    billing = Agent(name="billing", instructions="billing", model=ScriptedModel(["billing says hi"], name="b"))
    triage = Agent(name="triage", instructions="route", handoffs=[handoff(billing)], hooks=OnTriage(),
                   model=ScriptedModel([ToolCall("transfer_to_billing", {})], name="t"))
    assert agentspan.run(triage, "a billing question", hooks=Hooks()).final_output == "billing says hi"
    assert seen == ["run: triage -> billing (False)", "agent: triage -> billing"]


def test_a_handoff_built_by_hand_is_journaled_and_its_function_gives_the_target_on_replay():
    def billing_down_once(index: int) -> None:
        effects.append("billing model")
        if effects.count("billing model") == 1:
            raise RuntimeError("billing model down")

    billing = Agent(name="billing", instructions="billing",
                    model=ScriptedModel(["billing says hi"], name="b", on_call=billing_down_once))
    opened: list[str] = []

    async def open_ticket(ctx: Any, args_json: str) -> Agent[Any]:
        opened.append("ticket")
        return billing

    custom = Handoff(tool_name="transfer_to_billing", tool_description="to billing", agent_name="billing",
                     input_json_schema={"type": "object", "properties": {}, "additionalProperties": False},
                     on_invoke_handoff=open_ticket)
    triage_model = ScriptedModel([ToolCall("transfer_to_billing", {})], name="t")
    triage = Agent(name="triage", instructions="route", handoffs=[custom], model=triage_model)
    with pytest.raises(RuntimeError, match="billing model down"):
        agentspan.run(triage, "I have a billing question", run_id="hand-made")
    result = agentspan.retry("hand-made", triage).result(timeout=20)
    assert result.final_output == "billing says hi" and result.last_agent.name == "billing"
    steps = agentspan.get("hand-made").steps()  # the handoff is in the trail (was: no step at all)
    assert [(s.kind.value, s.name, s.attempt) for s in steps] == [
        ("llm", "t", 1), ("handoff", "billing", 1), ("llm", "b", 2)]
    assert triage_model.calls == 1  # replayed
    # replayed too, but such a handoff holds no agent: its function runs again to give it (documented)
    assert opened == ["ticket", "ticket"]


def test_model_named_by_string_is_journaled_through_the_run_config_provider():
    class Provider(ModelProvider):
        def __init__(self):
            self.model = ScriptedModel(["from provider"], name="unused")

        def get_model(self, model_name):
            return self.model

    agent = Agent(name="named", instructions="x", model="gpt-4o-mini")
    result = agentspan.run(agent, "hi", run_config=RunConfig(model_provider=Provider()))
    assert result.final_output == "from provider"
    step = agentspan.get(agentspan.get_store().list_runs()[0].id).steps()[0]
    assert (step.provider, step.model) == ("openai", "gpt-4o-mini")
    assert step.cost_usd == pytest.approx((100 * 0.15 + 20 * 0.60) / 1e6)


def test_run_async_and_run_inside_a_running_event_loop():
    async def main():
        first = await agentspan.run_async(agent_with(["async ok"], []), "hi")
        second = agentspan.run(agent_with(["sync in loop ok"], []), "hi")
        return first.final_output, second.final_output

    assert asyncio.run(main()) == ("async ok", "sync in loop ok")


def crashed_calc() -> tuple[ScriptedModel, Agent, str, int]:
    """A finished ``1+2`` run's copy as a process killed after its tool call leaves it: the
    model, the agent, the copy's run id and the model's call count so far."""
    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"], name="m")
    agent = Agent(name="calc", tools=[add], model=model)
    handle = agentspan.start(agent, "1+2")
    handle.result(timeout=20)
    clone_id = crashed_copy(handle.id, keep=2)
    effects.clear()
    return model, agent, clone_id, model.calls


def test_resume_replays_without_calling_the_model_again():
    model, agent, clone_id, calls_before = crashed_calc()
    result = agentspan.resume(clone_id, agent).result(timeout=20)
    assert result.final_output == "3"
    assert model.calls - calls_before == 1 and effects == []  # only llm:1 was live
    assert result.context_wrapper.usage.requests == 2  # the replayed call's usage is counted too


def test_resume_async_continues_in_the_callers_loop():
    model, agent, clone_id, calls_before = crashed_calc()

    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        model.on_call = lambda index: seen.append(asyncio.get_running_loop() is loop)
        return await agentspan.resume_async(clone_id, agent), seen

    result, seen = asyncio.run(main())
    assert result.final_output == "3" and seen == [True]  # the live model call ran in the caller's loop
    assert model.calls - calls_before == 1 and effects == []
    assert agentspan.get(clone_id).status() is agentspan.RunStatus.COMPLETED
    with pytest.raises(RunStateError, match="already completed"):
        asyncio.run(agentspan.resume_async(clone_id, agent))
    with pytest.raises(RunNotFound, match="nope"):
        asyncio.run(agentspan.resume_async("nope", agent))


def test_refused_calls_raise_clear_errors_and_change_nothing():
    with pytest.raises(RunNotFound, match="nope"):
        agentspan.get("nope") if agentspan.get_store() else None
    handle = agentspan.start(agent_with(["done"], []), "x")
    handle.result(timeout=20)
    before = agentspan.get_store().get_run(handle.id)
    with pytest.raises(RunStateError, match="already completed"):
        agentspan.resume(handle.id, agent_with(["done"], []))
    with pytest.raises(NoPendingApproval):
        agentspan.get(handle.id).approve()
    with pytest.raises(ConfigurationError, match="no Agentspan adapter"):
        agentspan.run(object(), "x")
    for option in ("run_id", "session_id", "idempotency_key"):
        with pytest.raises(ConfigurationError, match=f"{option} must be a non-empty str, not ''"):
            agentspan.start(agent_with(["done"], []), "x", **{option: ""})
    for dots in (".", ".."):  # a URL resolves /runs/.. to /: the server and the UI could not reach it
        with pytest.raises(ConfigurationError, match=f"run_id '{dots}' cannot name a run"):
            agentspan.start(agent_with(["done"], []), "x", run_id=dots)
    assert agentspan.get_store().get_run(handle.id) == before and len(agentspan.get_store().list_runs()) == 1


def test_resuming_with_a_diverging_agent_raises_and_keeps_the_journal():
    agent = agent_with([ToolCall("refund", {"order_id": "1", "amount": 1.0}), "ok"], [refund])
    handle = agentspan.start(agent, "refund")
    wait_status(handle, agentspan.RunStatus.WAITING)
    steps_before = handle.steps()
    other = Agent(name="calc", instructions="a different prompt", tools=[refund],
                  model=ScriptedModel(["x"], name="m"))
    # the original owner is this process and still executing: take the run over by cancelling it
    # is not wanted; instead wait for the lease in a second handle after stopping the first
    handle.cancel()
    with pytest.raises(RunCancelledError):
        handle.result(timeout=20)
    assert handle.steps() == steps_before
    with pytest.raises(RunStateError):
        agentspan.resume(handle.id, other)


def test_divergence_is_detected_on_replay():
    store = agentspan.get_store()
    agent = agent_with([ToolCall("add", {"a": 1, "b": 1}), "2"], [add])
    handle = agentspan.start(agent, "1+1")
    handle.result(timeout=20)
    clone_id = crashed_copy(handle.id, keep=1)
    changed = Agent(name="calc", instructions="NEW instructions", tools=[add],
                    model=ScriptedModel([ToolCall("add", {"a": 1, "b": 1}), "2"], name="m"))
    with pytest.raises(ReplayDivergenceError, match="llm:0"):
        agentspan.resume(clone_id, changed).result(timeout=20)
    assert [s.key for s in store.list_steps(clone_id)] == ["llm:0"]


@function_tool
@agentspan.tool(on_in_doubt="fail")
def charge(amount: int) -> str:
    """Charge a card (must never run twice)."""
    effects.append(f"charge {amount}")
    return "charged"


def test_an_error_of_the_core_inside_a_tool_call_is_what_the_run_raises():
    """The SDK wraps whatever a tool raises in its ``UserError("Error running tool ...")``: the
    core's own error (here a call in doubt under ``on_in_doubt="fail"``) is raised as itself."""
    store = agentspan.get_store()
    model = ScriptedModel([ToolCall("charge", {"amount": 9}), "charged"], name="m")
    agent = Agent(name="shop", tools=[charge], model=model)
    handle = agentspan.start(agent, "charge 9")
    handle.result(timeout=20)
    clone_id = crashed_copy(handle.id, keep=1)  # the model's call; then the charge, started only
    started = store.list_steps(handle.id)[1]
    store.start_step(started.model_copy(update={"run_id": clone_id, "status": agentspan.StepStatus.STARTED}),
                     epoch=0)
    effects.clear()
    calls_before = model.calls
    with pytest.raises(InDoubtStepError, match=r"step 'llm:0/call:call_0_0' \(tool 'charge'\)"):
        agentspan.resume(clone_id, agent).result(timeout=20)
    run = store.get_run(clone_id)
    assert run.status is agentspan.RunStatus.FAILED and run.error.startswith("InDoubtStepError")
    assert effects == [] and model.calls == calls_before


def test_cancel_stops_a_waiting_run():
    handle = agentspan.start(agent_with([ToolCall("refund", {"order_id": "1", "amount": 1.0}), "ok"],
                                        [refund]), "x")
    wait_status(handle, agentspan.RunStatus.WAITING)
    (approval,) = handle.pending_approvals()
    for bad in ({"by": {"x": 1}}, {"reason": ["x"]}, {"approval_id": 7}):  # was: a StoreError, "binding parameter"
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            handle.approve(**{"approval_id": approval.id, **bad})
    with pytest.raises(ConfigurationError, match="reason"):
        handle.cancel(reason=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="timeout"):
        handle.result(timeout="1")  # type: ignore[arg-type] - was: a bare TypeError
    assert handle.pending_approvals() == [approval] and handle.status() is agentspan.RunStatus.WAITING
    handle.cancel(reason="changed my mind")
    with pytest.raises(RunCancelledError):
        handle.result(timeout=20)
    assert handle.status() is agentspan.RunStatus.CANCELLED and effects == []
    # as the CLI says it (was only "expired before a decision")
    with pytest.raises(ApprovalConflict, match=r"expired \(the run was cancelled\) before a decision; it counts as"):
        handle.approve(approval.id)


def test_idempotency_key_returns_the_existing_run():
    first = agentspan.start(agent_with(["one"], []), "x", idempotency_key="order-42")
    first.result(timeout=20)
    second = agentspan.start(agent_with(["two"], []), "x", idempotency_key="order-42")
    assert second.id == first.id and second.result(timeout=20) == "one"


@pytest.mark.parametrize("entry", ["run", "start"])
def test_the_run_holding_an_idempotency_key_is_taken_over_when_its_owner_died(entry):
    """The run of an idempotency key whose process died (here: its lease long expired) is not
    waited for forever: a second call with the key executes it, as `resume` would."""
    store = agentspan.get_store()
    orphan = agentspan.Run(framework="openai-agents", agent="calc", input="1+2", idempotency_key="order-42",
                           status=agentspan.RunStatus.RUNNING, lease_owner="gone:1:0", lease_epoch=1,
                           lease_expires_at=time.time() - 60)
    store.create_run(orphan)
    agent = agent_with([ToolCall("add", {"a": 1, "b": 2}), "3"], [add])
    if entry == "run":
        assert agentspan.run(agent, "1+2", idempotency_key="order-42").final_output == "3"
    else:
        handle = agentspan.start(agent, "1+2", idempotency_key="order-42")
        assert handle.id == orphan.id and handle.result(timeout=20).final_output == "3"
    assert [(r.id, r.status) for r in store.list_runs()] == [(orphan.id, agentspan.RunStatus.COMPLETED)]
    assert len(effects) == 1


def test_a_result_not_ready_in_time_says_so():
    handle = agentspan.start(Agent(name="slow", model=ScriptedModel(["late"], name="m", latency=1.0)), "x")
    with pytest.raises(TimeoutError, match=rf"run '{handle.id}' is still running after 0.05s"):
        handle.result(timeout=0.05)
    assert handle.result(timeout=20).final_output == "late"


def test_plain_runner_is_unaffected_outside_a_durable_run():
    result = Runner.run_sync(agent_with(["plain"], []), "x")
    assert result.final_output == "plain"


def test_sync_runs_share_the_threads_event_loop_like_run_sync():
    """Loop-bound objects kept between runs (an AsyncOpenAI client, locks) stay usable."""
    lock = asyncio.Lock()
    loops: list[int] = []

    @function_tool
    async def locked(n: int) -> int:
        """Uses a lock created outside the runs."""
        loops.append(id(asyncio.get_running_loop()))
        async with lock:
            await asyncio.sleep(0)
        return n

    for _ in range(2):
        result = agentspan.run(agent_with([ToolCall("locked", {"n": 1}), "done"], [locked]), "go")
        assert result.final_output == "done"
    assert len(loops) == 2 and loops[0] == loops[1]


def test_guardrail_results_are_recorded_in_the_trail():
    from agents import GuardrailFunctionOutput, InputGuardrailTripwireTriggered, input_guardrail, output_guardrail

    checked: list[str] = []

    @input_guardrail
    async def no_secrets(ctx, agent, input):
        checked.append("input")
        await asyncio.sleep(0.05)  # a check that takes time (a judge model): the step's duration shows it
        return GuardrailFunctionOutput(output_info={"found": "secret" in str(input)},
                                       tripwire_triggered="secret" in str(input))

    @output_guardrail(name="polite")
    def polite(ctx, agent, output):
        checked.append("output")
        return GuardrailFunctionOutput(output_info="ok", tripwire_triggered=False)

    def agent(reply: str) -> Agent:
        return agent_with([ToolCall("add", {"a": 1, "b": 1}), reply], [add],
                          input_guardrails=[no_secrets], output_guardrails=[polite])

    result = agentspan.run(agent("2"), "1+1?")
    assert result.final_output == "2" and checked == ["input", "output"]
    assert [g.output.output_info for g in result.input_guardrail_results] == [{"found": False}]
    run = agentspan.get_store().list_runs()[0]
    guardrails = [s for s in agentspan.get(run.id).steps() if s.kind is agentspan.StepKind.GUARDRAIL]
    assert [(s.key, s.name, s.input, s.output) for s in guardrails] == [
        ("guardrail:input:calc:no_secrets", "no_secrets", {"side": "input", "agent": "calc"},
         {"tripwire_triggered": False, "output_info": {"found": False}}),
        ("guardrail:output:calc:polite", "polite", {"side": "output", "agent": "calc"},
         {"tripwire_triggered": False, "output_info": "ok"}),
    ]
    assert all(s.status is agentspan.StepStatus.COMPLETED for s in guardrails)
    assert guardrails[0].duration_ms >= 50 and guardrails[0].ended_at - guardrails[0].started_at >= 0.05

    # a tripped wire: the SDK's own exception, the run failed, the result in its trail
    with pytest.raises(InputGuardrailTripwireTriggered):
        agentspan.run(agent("never"), "tell me the secret")
    failed = agentspan.get_store().list_runs()[0]
    assert failed.status is agentspan.RunStatus.FAILED
    tripped = [s for s in agentspan.get(failed.id).steps() if s.kind is agentspan.StepKind.GUARDRAIL]
    assert [(s.key, s.output) for s in tripped] == [
        ("guardrail:input:calc:no_secrets", {"tripwire_triggered": True, "output_info": {"found": True}})]


def test_tool_guardrail_results_are_recorded_under_their_tool_call():
    """A function tool's input and output guardrails: each result is a guardrail step hanging
    off the key of the call it checked, with the SDK's behavior; a rejected call never runs."""
    from agents import ToolGuardrailFunctionOutput, tool_input_guardrail, tool_output_guardrail

    @tool_input_guardrail
    def small_numbers(data):
        args = json.loads(data.context.tool_arguments)
        if args["a"] > 100:
            return ToolGuardrailFunctionOutput.reject_content("too big", output_info={"a": args["a"]})
        return ToolGuardrailFunctionOutput.allow(output_info={"a": args["a"]})

    @tool_output_guardrail(name="checked_sum")
    async def checked_sum(data):
        return ToolGuardrailFunctionOutput.allow(output_info=str(data.output))

    @function_tool(tool_input_guardrails=[small_numbers], tool_output_guardrails=[checked_sum])
    def guarded_add(a: int, b: int) -> int:
        """Add two small numbers."""
        effects.append(f"guarded_add {a} {b}")
        return a + b

    agent = agent_with([ToolCall("guarded_add", {"a": 1, "b": 2}, call_id="c1"),
                        ToolCall("guarded_add", {"a": 500, "b": 2}, call_id="c2"), "done"], [guarded_add])
    assert agentspan.run(agent, "add").final_output == "done"
    assert effects == ["guarded_add 1 2"]  # the rejected call did not run
    run = agentspan.get_store().list_runs()[0]
    steps = agentspan.get(run.id).steps()
    assert [(s.key, s.name, s.output) for s in steps if s.kind is agentspan.StepKind.GUARDRAIL] == [
        ("llm:0/call:c1/guardrail:tool_input:small_numbers", "small_numbers",
         {"tripwire_triggered": False, "output_info": {"a": 1}, "behavior": {"type": "allow"}}),
        ("llm:0/call:c1/guardrail:tool_output:checked_sum", "checked_sum",
         {"tripwire_triggered": False, "output_info": "3", "behavior": {"type": "allow"}}),
        ("llm:1/call:c2/guardrail:tool_input:small_numbers", "small_numbers",
         {"tripwire_triggered": True, "output_info": {"a": 500},
          "behavior": {"type": "reject_content", "message": "too big"}}),
    ]
    assert [s.key for s in steps if s.kind is agentspan.StepKind.TOOL] == ["llm:0/call:c1"]


def test_a_resumed_run_checks_its_guardrails_again_and_keeps_one_record():
    from agents import GuardrailFunctionOutput, input_guardrail

    checked: list[str] = []

    @input_guardrail
    def allow(ctx, agent, input):
        checked.append("input")
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)

    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"], name="m")
    agent = Agent(name="calc", tools=[add], model=model, input_guardrails=[allow])
    handle = agentspan.start(agent, "1+2")
    handle.result(timeout=20)
    clone_id = crashed_copy(handle.id, keep=3)  # killed after the tool call
    result = agentspan.resume(clone_id, agent).result(timeout=20)
    assert result.final_output == "3" and checked == ["input", "input"]
    keys = [s.key for s in agentspan.get(clone_id).steps() if s.kind is agentspan.StepKind.GUARDRAIL]
    assert keys == ["guardrail:input:calc:allow"]


def test_durable_copies_of_agents_and_tools_keep_subclass_hooks_and_leave_the_originals_alone():
    from agentspan_openai_agents._model import CallTracker
    from agentspan_openai_agents._wrap import AgentWrapper

    post_inits: list[str] = []

    class AuditedAgent(Agent):
        def __post_init__(self) -> None:
            super().__post_init__()
            post_inits.append(self.name)

    original = Agent(name="calc", instructions="Add.", tools=[add], model=ScriptedModel(["done"]))
    clone = AgentWrapper(CallTracker()).agent(original)
    assert clone is not original and type(clone) is Agent
    assert original.tools == [add] and clone.tools[0] is not add  # the original keeps its own tool
    assert clone.tools[0].name == "add" and clone.tools[0].params_json_schema == add.params_json_schema
    assert clone.instructions == "Add." and clone.model is not original.model  # the model is wrapped

    audited = AuditedAgent(name="audited", tools=[add])
    post_inits.clear()
    audited_clone = AgentWrapper(CallTracker()).agent(audited)
    assert type(audited_clone) is AuditedAgent and post_inits == ["audited"]  # its own hook ran for the copy
    audited.model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"])
    assert agentspan.run(audited, "go").final_output == "3"



def test_tools_get_the_context_object_the_sdk_gives_them_without_agentspan():
    """The SDK passes a tool's ``on_invoke_tool`` a `ToolContext` or, when its first parameter
    says `RunContextWrapper` (here as text it cannot resolve: the names are imported locally), a
    plain one; the durable copy hands the original the same."""
    import inspect

    from agents import FunctionTool, RunContextWrapper
    from agents.tool_context import ToolContext

    from agentspan_openai_agents._model import CallTracker
    from agentspan_openai_agents._wrap import AgentWrapper

    seen: dict[str, object] = {}

    async def plain_ctx(ctx: RunContextWrapper[Any], args: str) -> str:
        seen["plain"] = ctx
        return "ok"

    async def tool_ctx(ctx: ToolContext[Any], args: str) -> str:
        seen["tool"] = ctx
        return "ok"

    async def unannotated(ctx, args):
        seen["bare"] = ctx
        return "ok"

    tools = [FunctionTool(name=name, description=name, params_json_schema={"type": "object", "properties": {}},
                          on_invoke_tool=invoke)
             for name, invoke in (("plain", plain_ctx), ("tool", tool_ctx), ("bare", unannotated))]
    calls = [ToolCall("plain"), ToolCall("tool"), ToolCall("bare")]
    for run in (Runner.run_sync, agentspan.run):
        seen.clear()
        assert run(agent_with([*calls, "done"], tools), "go").final_output == "done"
        assert type(seen["plain"]) is RunContextWrapper, run
        assert type(seen["tool"]) is ToolContext and seen["tool"].tool_call_id == "call_1_0", run
        assert type(seen["bare"]) is ToolContext, run

    wrapped = AgentWrapper(CallTracker()).tool(tools[0])  # the wrapper itself takes the ToolContext
    assert list(inspect.signature(wrapped.on_invoke_tool).parameters) == ["ctx", "args_json"]
    assert wrapped.on_invoke_tool.__annotations__ == {"ctx": ToolContext}

in_flight = {"now": 0, "most": 0}


@function_tool
def slow(n: int) -> int:
    """A slow call."""
    in_flight["now"] += 1
    in_flight["most"] = max(in_flight["most"], in_flight["now"])
    time.sleep(0.15)
    in_flight["now"] -= 1
    effects.append(f"slow {n}")
    return n


def test_a_worker_runs_at_most_concurrency_runs_at_once():
    import threading

    store = agentspan.get_store()
    ids = [store.create_run(agentspan.Run(framework="openai-agents", agent="slowpoke", input=f"run {n}",
                                          status=agentspan.RunStatus.PENDING))[0].id for n in range(3)]
    agent = agent_with([ToolCall("slow", {"n": 1}), "done"], [slow], name="slowpoke")
    in_flight.update(now=0, most=0)
    stop = threading.Event()
    worker = threading.Thread(target=agentspan.serve, args=(agent,),
                              kwargs={"stop": stop, "max_runs": 3, "concurrency": 1})
    worker.start()
    worker.join(timeout=30)
    stop.set()
    assert all(agentspan.get(i).status() is agentspan.RunStatus.COMPLETED for i in ids)
    assert in_flight["most"] == 1 and effects == ["slow 1"] * 3
    with pytest.raises(ConfigurationError, match="concurrency must be a whole number of at least 1"):
        agentspan.serve(agent, concurrency=0)


def test_a_worker_stopped_while_a_finished_run_winds_down_counts_it(monkeypatch):
    """The run's end is stored before its thread returns (its event loop still closing): a stop in
    between must not report the run as not handled (seen as "0 run(s) handled" from a CLI worker
    whose run had completed)."""
    import asyncio
    import threading

    from agentspan import api

    store = agentspan.get_store()
    run_id = store.create_run(agentspan.Run(framework="openai-agents", agent="calc", input="x",
                                            status=agentspan.RunStatus.PENDING))[0].id
    ended, wound_down = threading.Event(), threading.Event()
    execute = api.executor.execute

    async def slow_to_return(*args, **kwargs):
        outcome = await execute(*args, **kwargs)
        ended.set()
        await asyncio.to_thread(wound_down.wait, 20)
        return outcome

    monkeypatch.setattr(api.executor, "execute", slow_to_return)
    stop, handled = threading.Event(), []
    worker = threading.Thread(target=lambda: handled.append(
        agentspan.serve(agent_with(["done"], []), stop=stop, poll_interval=0.05)))
    worker.start()
    try:
        assert ended.wait(30)
        assert store.get_run(run_id).status is agentspan.RunStatus.COMPLETED
        stop.set()
        worker.join(timeout=30)
        assert handled == [1]
    finally:
        wound_down.set()


def test_a_stopped_worker_returns_once_its_runs_have_ended():
    """Was: it returned at once, its runs left mid-flight (to their leases, or worse as the
    process exited)."""
    import threading

    store = agentspan.get_store()
    run_id = store.create_run(agentspan.Run(framework="openai-agents", agent="calc", input="x",
                                            status=agentspan.RunStatus.PENDING))[0].id
    entered, release = threading.Event(), threading.Event()

    @function_tool
    def hold() -> str:
        """Holds until released."""
        entered.set()
        release.wait(20)
        return "held"

    stop, handled = threading.Event(), []
    worker = threading.Thread(target=lambda: handled.append(
        agentspan.serve(agent_with([ToolCall("hold", {}), "done"], [hold]), stop=stop, poll_interval=0.05)))
    worker.start()
    try:
        assert entered.wait(30)
        stop.set()
        worker.join(timeout=0.3)
        assert worker.is_alive()  # its run is still in its tool call
    finally:
        release.set()
    worker.join(timeout=30)
    assert handled == [1] and store.get_run(run_id).status is agentspan.RunStatus.COMPLETED


def test_a_worker_claims_no_more_runs_than_max_runs():
    """Was: it claimed up to 10 runs, returned after the first ended and left the others mid-run
    (to their leases, or worse as the process exited)."""
    store = agentspan.get_store()
    ids = [store.create_run(agentspan.Run(framework="openai-agents", agent="calc", input=f"run {n}",
                                          status=agentspan.RunStatus.PENDING))[0].id for n in range(3)]
    assert agentspan.serve(agent_with(["done"], []), max_runs=1, poll_interval=0.05) == 1
    runs = [store.get_run(i) for i in ids]
    assert sorted(r.status.value for r in runs) == ["completed", "pending", "pending"]
    assert all(r.lease_owner is None for r in runs if r.status is agentspan.RunStatus.PENDING)


@pytest.mark.parametrize(("arguments", "named"), [
    ({"poll_interval": -1}, "poll_interval"), ({"poll_interval": 0}, "poll_interval"),
    ({"poll_interval": "1"}, "poll_interval"), ({"max_runs": 0}, "max_runs"), ({"max_runs": "2"}, "max_runs"),
    ({"max_runs": 1.5}, "max_runs"), ({"stop": True}, "stop"), ({"options_for": 5}, "options_for"),
])
def test_a_worker_refuses_a_bad_argument_naming_it(arguments, named):
    # were: a busy loop (-1), the default (0), a bare TypeError, an AttributeError, or each run skipped
    with pytest.raises(ConfigurationError, match=named):
        agentspan.serve(agent_with(["done"], []), **arguments)


def test_a_worker_refuses_no_agent_or_two_of_one_name():
    with pytest.raises(ConfigurationError, match="at least one agent"):
        agentspan.serve({})  # was: served nothing, for ever
    with pytest.raises(ConfigurationError, match="two agents named 'calc'"):  # was: the last one won
        agentspan.serve(agent_with(["a"], []), agent_with(["b"], []))


def test_a_worker_passes_over_runs_it_cannot_take_up_and_serves_runs_started_under_another_name():
    """Runs a worker cannot take up (here: another framework's run of the same agent name) do not
    fill its claim window for good; ``serve({"name": agent})`` serves runs started with
    ``agent_name="name"``."""
    import threading

    store = agentspan.get_store()
    foreign = [store.create_run(agentspan.Run(framework="langgraph", agent="calc", input=f"graph {n}",
                                              status=agentspan.RunStatus.PENDING))[0].id for n in range(3)]
    plain, _ = store.create_run(agentspan.Run(framework="openai-agents", agent="calc", input="1+2",
                                              status=agentspan.RunStatus.PENDING))
    renamed, _ = store.create_run(agentspan.Run(framework="openai-agents", agent="calc-v2", input="1+2",
                                                status=agentspan.RunStatus.PENDING))
    agent = agent_with([ToolCall("add", {"a": 1, "b": 2}), "3"], [add])
    stop = threading.Event()
    worker = threading.Thread(target=agentspan.serve, args=(agent, {"calc-v2": agent}),
                              kwargs={"stop": stop, "max_runs": 2, "concurrency": 1})
    worker.start()
    worker.join(timeout=30)
    stop.set()
    assert [agentspan.get(i).status() for i in (plain.id, renamed.id)] == [agentspan.RunStatus.COMPLETED] * 2
    assert {agentspan.get(i).status() for i in foreign} == {agentspan.RunStatus.PENDING}


def test_hooks_fire_for_replayed_calls_and_replaying_tells_them_apart():
    """The SDK runs its loop again on resume, so its hooks fire for journaled calls too;
    `agentspan.replaying()` tells each hook whether its call is replayed, the start hooks of the
    first live call included (they fire before it starts); agent hooks alike."""
    from agents import AgentHooks, RunHooks

    fired: list[tuple[str, bool]] = []

    class Hooks(RunHooks):
        async def on_llm_start(self, context, agent, system_prompt, input_items) -> None:
            fired.append(("llm start", agentspan.replaying()))

        async def on_llm_end(self, context, agent, response) -> None:
            fired.append(("llm", agentspan.replaying()))

        async def on_tool_start(self, context, agent, tool) -> None:
            fired.append(("tool start", agentspan.replaying()))

        async def on_tool_end(self, context, agent, tool, result) -> None:
            fired.append(("tool", agentspan.replaying()))

    class OnAgent(AgentHooks):
        async def on_tool_end(self, context, agent, tool, result) -> None:
            fired.append(("agent's tool", agentspan.replaying()))

    agent = Agent(name="calc", tools=[add], hooks=OnAgent(), model=ScriptedModel(
        [ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4}), "3"], name="m"))
    handle = agentspan.start(agent, "1+2?", hooks=Hooks())
    assert handle.result(timeout=20).final_output == "3"
    assert {replayed for _, replayed in fired} == {False} and not agentspan.replaying()
    fired.clear()
    copy_id = crashed_copy(handle.id, keep=2)  # killed after the first tool call
    assert agentspan.resume(copy_id, agent, hooks=Hooks()).result(timeout=20).final_output == "3"
    assert fired == [("llm start", True), ("llm", True), ("tool start", True), ("tool", True), ("agent's tool", True),
                     ("llm start", False),  # the first live call: was True (nothing had gone live yet)
                     ("llm", False), ("tool start", False), ("tool", False), ("agent's tool", False),
                     ("llm start", False), ("llm", False)]


@pytest.mark.parametrize("transport", ["embedded", "server-sqlite"])
def test_a_tool_result_nested_deeper_than_a_server_takes_is_journaled_as_its_text(transport):
    def deep(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {"leaf": 1}
        for _ in range(levels - 1):
            value = {"k": value}
        return value

    @function_tool
    def tree(levels: int) -> dict[str, Any]:
        """Returns a deeply nested tree."""
        effects.append(f"tree {levels}")
        return deep(levels)

    agent = agent_with([ToolCall("tree", {"levels": 150}), ToolCall("tree", {"levels": 3}), "done"], [tree])
    assert agentspan.run(agent, "grow", run_id="deep").final_output == "done"  # was: failed through a server
    steps = [s for s in agentspan.get("deep").steps() if s.kind is agentspan.StepKind.TOOL]
    assert isinstance(steps[0].output, str) and steps[0].output.startswith("{'k': {'k':")  # on every store alike
    assert steps[1].output == deep(3) and effects == ["tree 150", "tree 3"]


@pytest.mark.parametrize(("base_url", "provider"), [
    ("https://api.groq.com/openai/v1", "groq"), ("https://api.mistral.ai/v1", "mistral"),
    ("https://my-team.openai.azure.com/openai", "azure"), ("https://api.openai.com/v1", "openai"),
    ("http://127.0.0.1:8000/v1", "openai"),  # an OpenAI-compatible server of one's own
    ("https://api.anthropic.com/v1/", "anthropic"),  # Anthropic's OpenAI SDK compatibility (was "openai")
])
def test_an_openai_model_class_is_labelled_by_the_provider_its_client_reaches(base_url, provider):
    from agents import OpenAIChatCompletionsModel
    from openai import AsyncOpenAI

    from agentspan_openai_agents._model import model_identity

    model = OpenAIChatCompletionsModel("some-model", AsyncOpenAI(api_key="sk-test", base_url=base_url))
    assert model_identity(model) == (provider, "some-model")  # was "openai" for every one
    # named through a provider (`OpenAIProvider(base_url=...)`, a `RunConfig`'s model by name) too
    assert model_identity(model, "some-model") == (provider, "some-model")  # was "openai"
    if provider == "openai":  # OpenAI's API or a server of one's own (a proxy): a prefix names the provider
        assert model_identity(model, "mistral/some-model") == ("mistral", "some-model")
    else:  # another provider's API: the prefix is part of its name for the model (Groq's "openai/gpt-oss-120b")
        assert model_identity(model, "openai/gpt-oss-120b") == (provider, "openai/gpt-oss-120b")
        prefixed = OpenAIChatCompletionsModel("openai/gpt-oss-120b", AsyncOpenAI(api_key="sk-test", base_url=base_url))
        assert model_identity(prefixed) == (provider, "openai/gpt-oss-120b")  # was ("openai", "gpt-oss-120b")


def test_a_run_async_cancelled_in_a_sync_tool_keeps_its_lease_until_it_lapses():
    """The caller gave up (``asyncio.wait_for``) while a sync tool ran: its thread cannot be stopped,
    so the lease is left to lapse instead of given back at once, and a worker takes the run up only
    then, not while the first call is still running (was: both ran the tool at the same time)."""
    spans: list[tuple[str, float]] = []

    @function_tool
    def slow(order_id: str) -> str:
        """A slow call."""
        spans.append(("start", time.monotonic()))
        time.sleep(0.6)
        spans.append(("end", time.monotonic()))
        return f"done {order_id}"

    agent = agent_with([ToolCall("slow", {"order_id": "42"}), "fin"], [slow])

    async def give_up() -> None:
        run = asyncio.ensure_future(asyncio.wait_for(agentspan.run_async(agent, "go", run_id="given-up"), 30))
        while not spans:  # once the tool runs (a fixed timeout missed it on a busy machine)
            await asyncio.sleep(0.01)
        run.cancel()
        await run

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(give_up())
    run = agentspan.get("given-up").run()
    assert run.lease_owner is not None and run.lease_expires_at is not None  # was: released at once
    assert agentspan.serve(agent, max_runs=1) == 1
    assert agentspan.get("given-up").result(timeout=20) == "fin"
    starts = [at for what, at in spans if what == "start"]
    ends = [at for what, at in spans if what == "end"]
    assert len(starts) == 2 and starts[1] >= ends[0]  # the call ran again (in doubt), not alongside


def test_a_run_async_cancelled_during_parallel_tool_calls_keeps_its_lease_while_they_run():
    """The caller gave up while two tool calls of one response ran (an async one and a sync
    one): they go on and end on their own, so the lease is left to lapse and a resume makes
    neither again alongside them (was: the lease was given back at once, the resume ran both a
    second time while the first ones still ran, and their late writes logged "Task exception
    was never retrieved")."""
    spans: list[tuple[str, float]] = []

    @function_tool
    async def fetch(order_id: str) -> str:
        """An async call."""
        spans.append(("fetch", time.monotonic()))
        await asyncio.sleep(0.5)
        spans.append(("fetch end", time.monotonic()))
        return f"fetched {order_id}"

    @function_tool
    def write(order_id: str) -> str:
        """A sync call."""
        spans.append(("write", time.monotonic()))
        time.sleep(0.5)
        spans.append(("write end", time.monotonic()))
        return f"written {order_id}"

    def make() -> Agent:
        return agent_with([[ToolCall("fetch", {"order_id": "1"}), ToolCall("write", {"order_id": "2"})], "fin"],
                          [fetch, write])

    unretrieved: list[Any] = []

    async def give_up_then_resume() -> tuple[Any, Any]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))
        run = asyncio.ensure_future(agentspan.run_async(make(), "go", run_id="given-up-parallel"))
        while len(spans) < 2:  # both calls run
            await asyncio.sleep(0.01)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        left = agentspan.get("given-up-parallel").run()
        result = await agentspan.resume_async("given-up-parallel", make())
        await asyncio.sleep(0.1)
        return left, result

    left, result = asyncio.run(give_up_then_resume())
    assert left.lease_owner is not None and left.lease_expires_at is not None  # was: released at once
    assert result.final_output == "fin"
    for name in ("fetch", "write"):
        starts = [at for what, at in spans if what == name]
        ends = [at for what, at in spans if what == f"{name} end"]
        assert ends and all(start >= ends[0] for start in starts[1:]), (name, spans)  # never alongside
    assert not unretrieved


def test_a_resume_async_cancelled_while_it_waits_for_the_lease_gives_the_lease_back():
    """The caller gave up a `resume_async` while it waited for the previous owner's lease to
    lapse: the claim it left running gives the lease back once it gets it (was: held with nothing
    executing the run, so the next resume waited a whole lease TTL more)."""
    @function_tool
    def slow(order_id: str) -> str:
        """A slow call."""
        time.sleep(0.4)
        return f"done {order_id}"

    def make() -> Agent:
        return agent_with([ToolCall("slow", {"order_id": "42"}), "fin"], [slow])

    async def main() -> Any:
        with pytest.raises(TimeoutError):  # cut off in the sync tool: its lease is left to lapse
            await asyncio.wait_for(agentspan.run_async(make(), "go", run_id="resumed-twice"), 0.2)
        with pytest.raises(TimeoutError):  # gave up while waiting for that lease
            await asyncio.wait_for(agentspan.resume_async("resumed-twice", make()), 0.3)
        deadline = time.monotonic() + 10
        while True:
            run = agentspan.get("resumed-twice").run()
            if run.lease_epoch >= 2 and run.lease_owner is None:  # claimed, then given back
                break
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.05)
        return await agentspan.resume_async("resumed-twice", make(), wait=0)  # was: LeaseLostError

    assert asyncio.run(main()).final_output == "fin"


def test_time_limits_of_result_and_resume_are_checked():
    """``inf`` (or a number past any clock) waits without a limit, a negative one does not wait,
    NaN and non-numbers are refused by name (was: ``OverflowError`` from ``result(timeout=inf)``
    on a `start` handle, a `get` handle and ``resume(wait=nan)`` blocked for ever, and
    ``resume(wait="5")`` a bare ``TypeError``)."""
    handle = agentspan.start(agent_with([ToolCall("add", {"a": 1, "b": 2}), "3"], [add]), "1+2")
    assert handle.result(timeout=math.inf).final_output == "3"
    assert agentspan.get(handle.id).result(timeout=10**400) == "3"
    waiting = agentspan.start(agent_with([ToolCall("refund", {"order_id": "1", "amount": 1.0}), "ok"], [refund]), "x")
    wait_status(waiting, agentspan.RunStatus.WAITING)
    for bad in ("5", True, math.nan):  # (NaN last: before, it blocked for ever)
        with pytest.raises(ConfigurationError, match="timeout"):
            agentspan.get(waiting.id).result(timeout=bad)
        with pytest.raises(ConfigurationError, match="wait"):
            agentspan.resume(waiting.id, agent_with(["ok"], [refund]), wait=bad)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        agentspan.get(waiting.id).result(timeout=-1)
    assert time.monotonic() - started < 1
    assert waiting.status() is agentspan.RunStatus.WAITING  # nothing refused changed the run
    waiting.cancel()


def test_after_an_approval_wait_the_next_attempt_counts_replayed_calls_as_replayed():
    """The attempt after a decision (same process) replays the calls the first attempt made live:
    an agent tool's usage is added back (was: missing from ``context_wrapper.usage``) and hooks see
    ``replaying()`` true for them (was: false, so a hook's outside effect ran twice)."""
    from agents import RunHooks

    seen: list[tuple[str, bool]] = []

    class Watching(RunHooks):
        async def on_tool_end(self, context, agent, tool, result) -> None:
            seen.append((tool.name, agentspan.replaying()))

    def build() -> Agent:
        researcher = Agent(name="researcher", model=ScriptedModel(["found"], name="inner"))
        return Agent(name="triage", tools=[researcher.as_tool("research", "Researches."), refund],
                     model=ScriptedModel([ToolCall("research", {"input": "x"}, "a1"),
                                          ToolCall("refund", {"order_id": "1", "amount": 1.0}, "a2"), "done"],
                                         name="outer"))

    plain = Runner.run_sync(build(), "go").context_wrapper.usage
    handle = agentspan.start(build(), "go", hooks=Watching())
    wait_status(handle, agentspan.RunStatus.WAITING)
    handle.approve()
    usage = handle.result(timeout=20).context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (
        plain.requests, plain.input_tokens, plain.output_tokens)
    assert seen == [("research", False), ("research", True), ("refund", False)]
