"""``agentspan.now()``: instructions that say what time it is read, in a resumed run, the time the
first attempt read, so the replayed model calls match their journal (`agentspan.clock`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from agents import Agent, RunHooks, function_tool, set_tracing_disabled

import agentspan
from agentspan.errors import ReplayDivergenceError
from agentspan.records import StepKind
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from journal_utils import crashed_copy

set_tracing_disabled(True)
SCRIPT = [ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4}), "done"]
effects: list[str] = []
seen: list[str] = []


@pytest.fixture(autouse=True)
def _clean(home):
    effects.clear()
    seen.clear()
    yield


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    effects.append(f"add {a} {b}")
    time.sleep(0.002)  # the wall clock moves between two model calls
    return a + b


def timed_agent(clock: Callable[[], datetime]) -> tuple[Agent, ScriptedModel]:
    def instructions(ctx, agent) -> str:
        text = f"Answer briefly. The time is {clock().isoformat()}."
        seen.append(text)
        return text

    model = ScriptedModel(SCRIPT)
    return Agent(name="clock", instructions=instructions, tools=[add], model=model), model


def wall_clock() -> datetime:
    return datetime.now(UTC)


def llm_steps(run_id: str) -> list[agentspan.Step]:
    return [s for s in agentspan.get_store().list_steps(run_id) if s.kind is StepKind.LLM]


@pytest.mark.parametrize("transport", ["embedded", "server-sqlite"])
def test_a_resumed_run_reads_the_times_its_first_attempt_read():
    agent, _ = timed_agent(agentspan.now)
    original = agentspan.start(agent, "add things")
    assert original.result(timeout=20).final_output == "done"
    first = list(seen)
    steps = llm_steps(original.id)
    assert [s.input["system"] for s in steps] == first and len(set(first)) == 3  # the time moved
    # each call's time is journaled as its step's start
    assert first == [f"Answer briefly. The time is {datetime.fromtimestamp(s.started_at, UTC).isoformat()}."
                     for s in steps]

    crashed = crashed_copy(original.id, keep=3)  # killed after llm:1, before its add call ran
    seen.clear()
    effects.clear()
    agent, model = timed_agent(agentspan.now)
    result = agentspan.resume(crashed, agent).result(timeout=20)
    assert result.final_output == "done"
    assert seen[:2] == first[:2]  # the two replayed calls read the times they were made at
    assert seen[2] > first[2]  # the call made live reads the time now
    assert model.calls == 1 and effects == ["add 3 4"]
    assert [s.input["system"] for s in llm_steps(crashed)] == seen


def test_the_wall_clock_in_instructions_makes_a_resumed_run_diverge():
    """What `agentspan.now` is for: the same agent reading the wall clock cannot be resumed."""
    agent, _ = timed_agent(wall_clock)
    original = agentspan.start(agent, "add things")
    original.result(timeout=20)
    crashed = crashed_copy(original.id, keep=3)
    agent, model = timed_agent(wall_clock)
    with pytest.raises(ReplayDivergenceError, match=r"llm:0.*only digits differ there.*agentspan\.now\(\)"):
        agentspan.resume(crashed, agent).result(timeout=20)
    assert model.calls == 0


def test_the_time_holds_until_the_next_model_call_and_hooks_read_it_too():
    hook_times: list[datetime] = []

    class Hooks(RunHooks):
        async def on_llm_start(self, context, agent, system_prompt, input_items) -> None:
            hook_times.append(agentspan.now())

    agent, _ = timed_agent(agentspan.now)
    agentspan.run(agent, "add things", hooks=Hooks())
    (run,) = agentspan.get_store().list_runs()
    starts = [datetime.fromtimestamp(s.started_at, UTC) for s in llm_steps(run.id)]
    assert hook_times == starts  # read after the instructions: the same time, the call's
    assert starts == sorted(starts) and len(set(starts)) == 3


def test_outside_a_run_it_is_the_wall_clock_in_utc():
    before = datetime.now(UTC)
    read = agentspan.now()
    assert before <= read <= datetime.now(UTC) and read.tzinfo is UTC


def test_an_agent_run_inside_a_tool_call_reads_its_own_calls_times_again():
    inner_seen: list[str] = []

    def inner_instructions(ctx, agent) -> str:
        inner_seen.append(text := f"Billing. The time is {agentspan.now().isoformat()}.")
        return text

    def front_desk() -> tuple[Agent, ScriptedModel]:
        inner = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}, call_id="a1"), "billing done"], name="inner")
        billing = Agent(name="billing", instructions=inner_instructions, tools=[add], model=inner)
        outer = ScriptedModel([ToolCall("billing", {"input": "sum"}, call_id="b1"), "all done"], name="outer")
        return Agent(name="front", instructions="Front desk.", tools=[billing.as_tool("billing", "Billing.")],
                     model=outer), inner

    front, _ = front_desk()
    handle = agentspan.start(front, "Sum it.")
    assert handle.result(timeout=20).final_output == "all done"
    first = list(inner_seen)
    assert len(set(first)) == 2
    # killed inside the agent tool: after its add call, before its second model call ended
    crashed = crashed_copy(handle.id, keep=None, keys={"llm:0", "llm:0/call:b1/llm:0", "llm:0/call:b1/llm:0/call:a1"})
    inner_seen.clear()
    front, inner = front_desk()
    assert agentspan.resume(crashed, front).result(timeout=20).final_output == "all done"
    assert inner_seen[0] == first[0] and inner.calls == 1  # the nested first call replayed as it was made


def test_a_recorded_run_replays_strictly_with_the_times_it_read(tmp_path):
    from agentspan.export import export_run
    from agentspan.testing import replay

    agent, _ = timed_agent(agentspan.now)
    handle = agentspan.start(agent, "add things")
    handle.result(timeout=20)
    recorded = list(seen)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(export_run(agentspan.get_store(), handle.id)))
    seen.clear()
    effects.clear()
    agent, model = timed_agent(agentspan.now)
    result = replay(path, agent)
    assert result.output == "done" and result.replayed == {"llm": 3, "tool": 2}
    assert seen == recorded and model.calls == 0 and effects == []


def test_a_model_call_the_sdk_retried_keeps_the_time_its_instructions_read():
    from agents import ModelSettings
    from agents.retry import ModelRetryBackoffSettings, ModelRetrySettings

    class Flaky(ScriptedModel):
        failed = False

        async def get_response(self, *args, **kwargs):
            if not Flaky.failed:
                Flaky.failed = True
                time.sleep(0.002)
                raise ConnectionError("network blip")
            return await super().get_response(*args, **kwargs)

    def flaky_agent() -> Agent:
        retry = ModelRetrySettings(max_retries=2, backoff=ModelRetryBackoffSettings(initial_delay=0.01),
                                   policy=lambda context: True)
        agent, _ = timed_agent(agentspan.now)
        return agent.clone(model=Flaky(SCRIPT), model_settings=ModelSettings(retry=retry))

    handle = agentspan.start(flaky_agent(), "add things")
    assert handle.result(timeout=20).final_output == "done"
    first = list(seen)
    (llm0, *_) = llm_steps(handle.id)
    assert llm0.attempt == 2 and first[0].endswith(f"{datetime.fromtimestamp(llm0.started_at, UTC).isoformat()}.")
    crashed = crashed_copy(handle.id, keep=2)
    seen.clear()
    assert agentspan.resume(crashed, flaky_agent()).result(timeout=20).final_output == "done"
    assert seen[0] == first[0]  # the replayed call (made twice in the first attempt) reads its time


def test_a_streamed_run_resumed_as_a_stream_reads_its_first_attempts_times():
    async def collect(streamed) -> None:
        async for _ in streamed.stream_events():
            pass

    async def first() -> str:
        agent, _ = timed_agent(agentspan.now)
        streamed = agentspan.run_streamed(agent, "add things")
        await collect(streamed)
        return streamed.id

    original = asyncio.run(first())
    recorded = list(seen)
    crashed = crashed_copy(original, keep=3)
    seen.clear()

    async def resumed():
        agent, model = timed_agent(agentspan.now)
        streamed = agentspan.resume_streamed(crashed, agent)
        await collect(streamed)
        return streamed.final_output, model.calls

    assert asyncio.run(resumed()) == ("done", 1)
    assert seen[:2] == recorded[:2] and seen[2] != recorded[2]


EXAMPLES = [f"example {n}" for n in range(1000)]


def drawn_agent() -> tuple[Agent, ScriptedModel]:
    def instructions(ctx, agent) -> str:
        picks = agentspan.random().sample(EXAMPLES, 3)
        text = f"Answer like {picks}. Request {agentspan.uuid4()}."
        seen.append(text)
        return text

    model = ScriptedModel(SCRIPT)
    return Agent(name="drawn", instructions=instructions, tools=[add], model=model), model


def test_random_draws_and_uuids_in_instructions_replay_on_resume():
    agent, _ = drawn_agent()
    original = agentspan.start(agent, "add things")
    original.result(timeout=20)
    first = list(seen)
    assert len(set(first)) == 3  # each call draws its own
    crashed = crashed_copy(original.id, keep=3)
    seen.clear()
    agent, model = drawn_agent()
    assert agentspan.resume(crashed, agent).result(timeout=20).final_output == "done"
    assert seen[:2] == first[:2] and seen[2] != first[2] and model.calls == 1

    another = agentspan.start(drawn_agent()[0], "add things")  # another run draws otherwise
    another.result(timeout=20)
    assert seen[3] != first[0]

    from agentspan.export import export_run
    from agentspan.testing import replay

    seen.clear()
    assert replay(export_run(agentspan.get_store(), original.id), drawn_agent()[0]).output == "done"
    assert seen == first  # a recording replayed draws what the recorded run drew


def test_random_and_uuid4_outside_a_run():
    assert agentspan.random().random() != agentspan.random().random()
    made = agentspan.uuid4()
    assert made.version == 4 and made != agentspan.uuid4()
    assert "random" not in agentspan.__all__ and "uuid4" in agentspan.__all__
