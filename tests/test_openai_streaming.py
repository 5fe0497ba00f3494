"""Streamed durable runs of openai-agents (`agentspan.run_streamed`, `agentspan.resume_streamed`):
the SDK's own stream events, journaled like `agentspan.run`, each delivered once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from agents import (
    Agent,
    RunResultStreaming,
    function_tool,
    handoff,
    set_tracing_disabled,
)

import agentspan
from agentspan.errors import ConfigurationError, RunStateError
from agentspan.events import ApprovalRequested
from agentspan.records import new_id
from agentspan_openai_agents import OpenAIAgentsAdapter
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

import oa_support
from crash_support import calls_of, lines, run_child
from journal_utils import crashed_copy
from openai_compat_server import ChatServer, weather_agent, weather_calls, weather_replies

set_tracing_disabled(True)
effects: list[str] = []


@pytest.fixture(autouse=True)
def _clean(home):
    effects.clear()
    yield


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    effects.append(f"add {a} {b}")
    return a + b


@function_tool
@agentspan.tool(approval_required=True)
def refund(order_id: str) -> str:
    """Refund an order."""
    effects.append(f"refund {order_id}")
    return f"refunded {order_id}"


def adder(model: ScriptedModel | None = None) -> Agent:
    model = model or ScriptedModel([ToolCall("add", {"a": 2, "b": 3}), "The sum is 5."])
    return Agent(name="adder", instructions="Add.", tools=[add], model=model)


async def collect(streamed: agentspan.StreamedRun) -> list[str]:
    return [oa_support.describe_event(event) async for event in streamed.stream_events()]


@pytest.fixture(params=["embedded", "server-sqlite"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


def test_streamed_run_delivers_the_sdk_events_and_journals_as_a_plain_run(transport):
    model = ScriptedModel([ToolCall("add", {"a": 2, "b": 3}), "The sum is 5."])

    async def main() -> tuple[agentspan.StreamedRun, list[str]]:
        streamed = agentspan.run_streamed(adder(model), "2 + 3?")
        assert not streamed.is_complete
        with pytest.raises(RunStateError, match="still streaming"):
            streamed.final_output  # noqa: B018
        return streamed, await collect(streamed)

    streamed, events = asyncio.run(main())
    assert events == [
        "agent adder",
        "raw response.output_item.done", "raw response.completed",
        "item tool_called call_0_0", "item tool_output call_0_0",
        "raw response.output_text.delta The", "raw response.output_text.delta sum",
        "raw response.output_text.delta is", "raw response.output_text.delta 5.",
        "raw response.output_item.done", "raw response.completed",
        "item message_output_created",
    ]
    assert isinstance(streamed.result, RunResultStreaming) and streamed.final_output == "The sum is 5."
    assert streamed.is_complete and model.calls == 2 and effects == ["add 2 3"]
    handle = agentspan.get(streamed.id)
    assert handle.status() is agentspan.RunStatus.COMPLETED and handle.result() == "The sum is 5."
    streamed_steps = [(s.key, s.kind, s.status, s.input_tokens, s.output) for s in handle.steps()]
    plain = agentspan.run(adder(), "2 + 3?")  # the same agent, not streamed: the same journal
    assert plain.final_output == "The sum is 5."
    plain_run = agentspan.get(agentspan.get_store().list_runs(limit=1)[0].id)
    assert streamed_steps == [(s.key, s.kind, s.status, s.input_tokens, s.output) for s in plain_run.steps()]
    assert streamed_steps[0][3] == 100  # the scripted usage reached the llm step


def test_streamed_run_waits_for_approval_and_delivers_each_event_once():
    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 1}), ToolCall("refund", {"order_id": "42"}), "Done."])
    agent = Agent(name="support", instructions="Help.", tools=[add, refund], model=model)
    seen_waiting: list[agentspan.RunStatus] = []

    async def main() -> list[Any]:
        streamed = agentspan.run_streamed(agent, "refund 42")
        events = []
        async for event in streamed.stream_events():
            events.append(event)
            if isinstance(event, ApprovalRequested):
                seen_waiting.append(streamed.handle.status())
                assert event.approval.tool == "refund" and event.approval.args == {"order_id": "42"}
                streamed.handle.approve(event.approval.id, by="alice")
        assert streamed.final_output == "Done."
        return events

    events = asyncio.run(main())
    described = [oa_support.describe_event(e) for e in events]
    # the run was executed again after the decision, replaying its first two model calls and the
    # first tool call: nothing already delivered came again
    assert Counter(described)["item tool_called call_0_0"] == 1
    assert Counter(described)["item tool_called call_1_0"] == 1
    assert Counter(described)["raw response.completed"] == 3
    assert described.index("agentspan_approval_requested") < described.index("item tool_output call_1_0")
    assert seen_waiting == [agentspan.RunStatus.WAITING]
    assert model.calls == 3 and effects == ["add 1 1", "refund 42"]


def test_streamed_run_rejected_tool_tells_the_model_and_goes_on():
    model = ScriptedModel([ToolCall("refund", {"order_id": "7"}), "Not refunded."])
    agent = Agent(name="support", instructions="Help.", tools=[refund], model=model)

    async def main() -> list[Any]:
        streamed = agentspan.run_streamed(agent, "refund 7")
        events = []
        async for event in streamed.stream_events():
            events.append(event)
            if isinstance(event, ApprovalRequested):
                streamed.handle.reject(reason="not eligible")
        return events

    events = asyncio.run(main())
    outputs = [e.item.output for e in events if getattr(e, "name", None) == "tool_output"]
    assert len(outputs) == 1 and "not eligible" in str(outputs[0]) and effects == []


def test_streamed_handoff_and_parallel_tool_calls_journal_as_a_plain_run_does():
    billing = Agent(name="billing", instructions="billing", tools=[add], model=ScriptedModel(
        [[ToolCall("add", {"a": 1, "b": 1}, "c1"), ToolCall("add", {"a": 2, "b": 2}, "c2")], "billing done"],
        name="b"))
    triage = Agent(name="triage", instructions="route", handoffs=[handoff(billing)],
                   model=ScriptedModel([ToolCall("transfer_to_billing", {})], name="t"))

    async def main() -> tuple[agentspan.StreamedRun, list[str]]:
        streamed = agentspan.run_streamed(triage, "a billing question")
        return streamed, await collect(streamed)

    streamed, events = asyncio.run(main())
    assert streamed.final_output == "billing done" and streamed.last_agent.name == "billing"
    assert [e for e in events if e.startswith("agent")] == ["agent triage", "agent billing"]
    assert sorted(e for e in events if "tool_output" in e) == ["item tool_output c1", "item tool_output c2"]
    steps = [(s.kind.value, s.name, s.key) for s in agentspan.get(streamed.id).steps()]
    assert steps[:3] == [("llm", "t", "llm:0"), ("handoff", "billing", "llm:0/handoff:transfer_to_billing"),
                         ("llm", "b", "llm:1")]
    assert sorted(k for kind, _, k in steps if kind == "tool") == ["llm:1/call:c1", "llm:1/call:c2"]
    assert sorted(effects) == ["add 1 1", "add 2 2"]


def test_resume_streamed_replays_the_journal_then_streams_live():
    model = ScriptedModel([ToolCall("add", {"a": 2, "b": 3}), "The sum is 5."])

    async def first() -> str:
        streamed = agentspan.run_streamed(adder(model), "2 + 3?")
        await collect(streamed)
        return streamed.id

    copy_id = crashed_copy(asyncio.run(first()), keep=2)  # as if killed before the 2nd model call
    effects.clear()

    async def resumed() -> tuple[list[str], Any]:
        streamed = agentspan.resume_streamed(copy_id, adder(model))
        return await collect(streamed), streamed.final_output

    events, final = asyncio.run(resumed())
    assert final == "The sum is 5." and model.calls == 3 and effects == []
    # the journaled model call comes whole (no deltas), the journaled tool call as recorded
    assert events[:5] == ["agent adder", "raw response.completed", "item tool_called call_0_0",
                          "item tool_output call_0_0", "raw response.output_text.delta The"]
    assert agentspan.get(copy_id).status() is agentspan.RunStatus.COMPLETED


class FailingStream(ScriptedModel):
    """Streams one delta, then the provider connection breaks."""

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for event in super().stream_response(*args, **kwargs):
            yield event
            raise ConnectionError("stream broken")


class NullInputDetails(ScriptedModel):
    """Ends its stream with usage whose ``input_tokens_details`` is null (as an OpenAI-compatible
    Responses server may send it)."""

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for event in super().stream_response(*args, **kwargs):
            if getattr(event, "type", None) == "response.completed":
                event.response.usage.input_tokens_details = None
            yield event


def test_a_stream_reporting_no_input_token_details_completes_as_the_plain_sdks_does():
    async def main() -> agentspan.StreamedRun:
        streamed = agentspan.run_streamed(adder(NullInputDetails(["Hello there."])), "hi")
        async for _ in streamed.stream_events():
            pass
        return streamed

    streamed = asyncio.run(main())  # was: a pydantic ValidationError (cache_write_tokens required), the run failed
    assert streamed.final_output == "Hello there."
    assert agentspan.get(streamed.id).status() is agentspan.RunStatus.COMPLETED


def test_a_broken_model_stream_fails_the_run_and_records_the_failed_call():
    async def main() -> tuple[agentspan.StreamedRun, list[str]]:
        streamed = agentspan.run_streamed(adder(FailingStream(["Hello there."])), "hi")
        events: list[str] = []
        with pytest.raises(ConnectionError, match="stream broken"):
            async for event in streamed.stream_events():
                events.append(oa_support.describe_event(event))
        return streamed, events

    streamed, events = asyncio.run(main())
    assert "raw response.output_text.delta Hello" in events and "raw response.completed" not in events
    handle = agentspan.get(streamed.id)
    assert handle.status() is agentspan.RunStatus.FAILED
    (step,) = handle.steps()
    assert (step.key, step.status) == ("llm:0", agentspan.StepStatus.FAILED) and "stream broken" in step.error


def test_bad_calls_are_refused_with_clear_errors(monkeypatch):
    with pytest.raises(ConfigurationError, match="running event loop"):
        agentspan.run_streamed(adder(), "hi")

    async def not_streaming() -> None:
        agentspan.run_streamed(adder(), "hi")

    with monkeypatch.context() as patch:  # an adapter that does not stream is refused, nothing stored
        patch.setattr(OpenAIAgentsAdapter, "streams", False)
        with pytest.raises(ConfigurationError, match="openai-agents runs are not streamed"):
            asyncio.run(not_streaming())
    assert agentspan.get_store().list_runs() == []
    done = agentspan.run(adder(), "2 + 3?")
    assert done.final_output == "The sum is 5."
    run_id = agentspan.get_store().list_runs(limit=1)[0].id

    async def resume_done() -> None:
        agentspan.resume_streamed(run_id, adder())

    with pytest.raises(RunStateError, match="already completed"):
        asyncio.run(resume_done())

    async def bad_input() -> None:
        with pytest.raises(ConfigurationError, match="unknown Runner option"):
            agentspan.run_streamed(adder(), "hi", max_turn=3)  # refused at once, nothing stored
        with pytest.raises(ConfigurationError, match="takes a str or a list"):
            agentspan.run_streamed(adder(), {"not": "input"})
        with pytest.raises(ConfigurationError, match="on_divergence"):
            agentspan.run_streamed(adder(), "hi", on_divergence="sometimes")

    asyncio.run(bad_input())
    assert len(agentspan.get_store().list_runs()) == 1


# ---- the SDK's real Chat Completions model, streaming over HTTP from a local server -------------------
def test_real_chat_completions_stream_is_journaled_and_resumed():
    weather_calls.clear()
    with ChatServer(weather_replies()) as server:
        async def first() -> tuple[str, list[Any]]:
            streamed = agentspan.run_streamed(weather_agent(server.base_url), "Weather in Paris?")
            return streamed.id, [event async for event in streamed.stream_events()]

        run_id, events = asyncio.run(first())
        assert [r.get("stream") for r in server.requests] == [True, True]
        deltas = [e.data.delta for e in events if getattr(e, "data", None) is not None
                  and e.data.type == "response.output_text.delta"]
        assert deltas == ["It ", "is ", "sunny ", "in ", "Paris."]
        llm = [s for s in agentspan.get(run_id).steps() if s.kind is agentspan.StepKind.LLM]
        assert [(s.model, s.input_tokens, s.output_tokens) for s in llm] == [("gpt-4o-mini", 50, 7),
                                                                              ("gpt-4o-mini", 51, 7)]
        copy_id = crashed_copy(run_id, keep=2)

        async def resumed() -> Any:
            streamed = agentspan.resume_streamed(copy_id, weather_agent(server.base_url))
            await collect(streamed)
            return streamed.final_output

        assert asyncio.run(resumed()) == "It is sunny in Paris."
        assert len(server.requests) == 3 and weather_calls == ["Paris"]
        assert server.requests[2]["messages"] == server.requests[1]["messages"]


# ---- a streamed run killed with SIGKILL, resumed as a stream in another process ------------------------
child = partial(run_child, str(Path(__file__).parent / "oa_child.py"))


@pytest.mark.crash
def test_sigkilled_streamed_run_is_resumed_streamed_by_another_process(child_env):
    run_id = new_id()
    crashed = child(child_env, "stream", run_id, crash_at="model:1")  # inside the 2nd model call
    assert crashed.returncode == -9, crashed.stderr
    streamed_before = [line.split(" ", 1)[1] for line in lines("stream-events")]
    assert "item tool_output call_0_0" in streamed_before  # the child had streamed the first turn
    resumed = child(child_env, "resume-stream", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"FINAL: {oa_support.FINAL}" in resumed.stdout
    assert calls_of("m") == [0, 1, 1]  # the completed model call is replayed, the interrupted one made again
    assert [line for line in lines("effects") if line.startswith("lookup")] and len(lines("effects")) == 1
    pids = {line.split(" ", 1)[0] for line in lines("stream-events")}
    assert len(pids) == 2
    assert agentspan.get(run_id).status() is agentspan.RunStatus.COMPLETED


def test_cancelling_a_streamed_run_ends_its_stream_with_run_cancelled():
    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"], latency=0.05)

    async def main() -> tuple[agentspan.StreamedRun, list[str]]:
        streamed = agentspan.run_streamed(adder(model), "1+2?")
        events: list[str] = []
        with pytest.raises(agentspan.errors.RunCancelledError):
            async for event in streamed.stream_events():
                events.append(oa_support.describe_event(event))
                if len(events) == 1:
                    with pytest.raises(ConfigurationError, match="mode must be 'immediate' or 'after_turn'"):
                        streamed.cancel(mode="later")
                    streamed.cancel("user left", mode="after_turn")  # the SDK's keyword, for drop-in code
        streamed.cancel()  # ended: nothing, as the SDK's
        return streamed, events

    streamed, events = asyncio.run(main())
    handle = agentspan.get(streamed.id)
    assert handle.status() is agentspan.RunStatus.CANCELLED and handle.run().error == "user left"
    assert effects == [] and "item tool_output call_0_0" not in events


@pytest.mark.crash
def test_sigkilled_streamed_run_is_taken_over_by_a_worker(child_env):
    run_id = new_id()
    crashed = child(child_env, "stream", run_id, crash_at="lookup:before")  # inside the tool call
    assert crashed.returncode == -9, crashed.stderr
    served = child(child_env, "serve", run_id)  # claims it once the dead owner's lease expired
    assert served.returncode == 0, served.stderr
    assert f"FINAL: {oa_support.FINAL}" in served.stdout
    assert calls_of("m") == [0, 1]  # no completed model call made again
    assert len(lines("effects")) == 1  # the in-doubt lookup ran again once, before its side effect
    assert agentspan.get(run_id).status() is agentspan.RunStatus.COMPLETED


def test_a_durable_run_started_in_a_tool_of_a_streamed_run_streams_nothing_into_it():
    """A tool of a streamed run that runs an agent durably itself (``agentspan.run_async``):
    that run is not streamed, and its events (named as the parent's are: ``llm:0``, ...) neither
    join the parent's stream nor hide any of the parent's."""
    @function_tool
    async def ask_helper(question: str) -> str:
        """Ask the helper agent."""
        helper = Agent(name="helper", tools=[add],
                       model=ScriptedModel([ToolCall("add", {"a": 1, "b": 1}), "two"], name="helper"))
        return str((await agentspan.run_async(helper, question)).final_output)

    parent = Agent(name="parent", tools=[ask_helper],
                   model=ScriptedModel([ToolCall("ask_helper", {"question": "1+1?"}), "It is two."], name="parent"))

    async def main() -> tuple[agentspan.StreamedRun, list[str], list[str]]:
        streamed = agentspan.run_streamed(parent, "ask")
        events = await collect(streamed)
        return streamed, events, [oa_support.describe_event(e) async for e in streamed.stream_events()]

    streamed, events, again = asyncio.run(main())
    assert events == [
        "agent parent",
        "raw response.output_item.done", "raw response.completed",
        "item tool_called call_0_0", "item tool_output call_0_0",
        "raw response.output_text.delta It", "raw response.output_text.delta is",
        "raw response.output_text.delta two.",
        "raw response.output_item.done", "raw response.completed",
        "item message_output_created",
    ]
    assert streamed.final_output == "It is two." and effects == ["add 1 1"]
    assert again == []  # a second pass over an ended stream ends at once, as the SDK's does


def test_a_second_streamed_run_with_an_idempotency_key_names_the_existing_run():
    async def main() -> str:
        first = agentspan.run_streamed(adder(), "2 + 3?", idempotency_key="order-42")
        await collect(first)
        second = agentspan.run_streamed(adder(), "2 + 3?", idempotency_key="order-42")
        with pytest.raises(RunStateError, match=f"run '{first.id}' has the idempotency key 'order-42' already"):
            await collect(second)
        return first.id

    first_id = asyncio.run(main())
    assert [r.id for r in agentspan.get_store().list_runs()] == [first_id]
