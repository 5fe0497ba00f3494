"""ADK's events compaction (``App(events_compaction_config=...)``) under Agentspan: each summary
the summarizer's model writes is an ``llm`` step of the run, replayed on resume (the summarizer is
not called again, the replayed model calls see the summary they saw), with ``agentspan.run`` and
with a user-built Runner.

The summarizer's answer differs on every call (as a real model's does): a summary made again on
resume would change the next model request, a `ReplayDivergenceError`.

Also the child process of the SIGKILL tests: ``python test_adk_compaction.py start|resume|runner RUN_ID``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator
from functools import partial

import pytest
from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.apps._configs import EventsCompactionConfig
from google.adk.apps.base_events_summarizer import BaseEventsSummarizer
from google.adk.apps.llm_event_summarizer import LlmEventSummarizer
from google.adk.events import Event
from google.adk.events.event_actions import EventActions, EventCompaction
from google.adk.models import BaseLlm, LlmRequest, LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.genai import types

import agentspan
from agentspan_adk import AgentspanPlugin

from crash_support import crash_if, final_line, home, lines, log, run_child
from journal_utils import crashed_copy

CHAIN = ["step1", "step2", "step3", "step4", "step5"]
FINAL = "done after " + ",".join(CHAIN)
SUMMARIES = ["worker/llm:3/compaction", "worker/llm:5/compaction"]
FAILING: set[int] = set()
"""Calls of the summarizer's model that fail (in this process)."""
"""The compactions ADK makes before model calls in the uncrashed run (token threshold 2000)."""


@pytest.fixture(autouse=True)
def _home(home):
    yield home


# ---- the app ------------------------------------------------------------------------------------
def usage(prompt: int, output: int = 20) -> types.GenerateContentResponseUsageMetadata:
    return types.GenerateContentResponseUsageMetadata(prompt_token_count=prompt, candidates_token_count=output,
                                                      total_token_count=prompt + output)


class ChainLlm(BaseLlm):
    """Asks for step1 ... step5 in turn (the next after the last function response it was sent),
    then answers `FINAL`; its prompt size grows with the messages sent (400 tokens each)."""

    model: str = "chain"

    async def generate_content_async(self, llm_request: LlmRequest,
                                     stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
        done = [p.function_response.name for c in llm_request.contents for p in c.parts or []
                if p.function_response is not None]
        turn = CHAIN.index(done[-1]) + 1 if done else 0
        log("model-calls", f"worker {turn}")
        crash_if(f"model:worker:{turn}")
        prompt = 400 * len(llm_request.contents)
        if turn < len(CHAIN):
            part = types.Part(function_call=types.FunctionCall(name=CHAIN[turn], args={}))
        else:
            part = types.Part(text=FINAL)
        yield LlmResponse(content=types.Content(role="model", parts=[part]), usage_metadata=usage(prompt))


class SummarizerLlm(BaseLlm):
    """A summarizer model whose summary differs on every call, in every process."""

    model: str = "summarizer"

    async def generate_content_async(self, llm_request: LlmRequest,
                                     stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
        n = len(lines("summaries")) + 1
        log("summaries", f"call {n}")
        crash_if(f"summary:{n}")
        if n in FAILING:
            raise RuntimeError(f"the summarizer's call {n} failed (a 429)")
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=f"SUMMARY v{n}")]),
                          usage_metadata=usage(300, 30))


def make_step(name: str):
    def step() -> dict[str, str]:
        log("effects", name)
        return {"tool": name, "payload": "x" * 3000}

    step.__name__ = step.__qualname__ = name
    step.__doc__ = f"Run {name}."
    return step


def config(**trigger: int) -> EventsCompactionConfig:
    return EventsCompactionConfig(summarizer=LlmEventSummarizer(llm=SummarizerLlm()),
                                  **(trigger or {"token_threshold": 2000, "event_retention_size": 2}))


def app(*, plugin: bool = False, **trigger: int) -> App:
    agent = LlmAgent(name="worker", model=ChainLlm(), instruction="Work.", tools=[make_step(n) for n in CHAIN])
    return App(name="capp", root_agent=agent, events_compaction_config=config(**trigger),
               plugins=[AgentspanPlugin()] if plugin else [])


def summaries(events: list[Event]) -> list[str]:
    return [e.actions.compaction.compacted_content.parts[0].text for e in events
            if e.actions and e.actions.compaction]


def effects() -> list[str]:
    return lines("effects")


# ---- agentspan.run ------------------------------------------------------------------------------
def test_each_summary_is_an_llm_step_of_the_run():
    result = agentspan.run(app(), "go", run_id="r1", session_id="s1")
    assert result.text == FINAL
    assert summaries(result.session.events) == ["SUMMARY v1", "SUMMARY v2"]
    steps = {s.key: s for s in agentspan.get("r1").steps()}
    for key in SUMMARIES:
        step = steps[key]
        assert step.kind is agentspan.StepKind.LLM and step.status is agentspan.StepStatus.COMPLETED
        assert (step.name, step.input_tokens, step.output_tokens) == ("summarizer", 300, 30)
    keys = list(steps)
    assert keys.index("worker/llm:2/call:0") < keys.index(SUMMARIES[0]) < keys.index("worker/llm:3")


@pytest.mark.parametrize("cut", ["worker/llm:3/compaction", "worker/llm:3", "worker/llm:4/call:0",
                                 "worker/llm:5/compaction"])
def test_a_resumed_run_replays_its_summaries(cut):
    first = agentspan.run(app(), "go", run_id="first", session_id="first")
    assert len(lines("summaries")) == 2
    assert first.text == FINAL
    keys = [s.key for s in agentspan.get("first").steps()]
    copy = crashed_copy("first", keys.index(cut) + 1)  # the process died right after step `cut`
    before_calls, before_effects = len(lines("summaries")), len(effects())

    resumed = agentspan.resume(copy, app()).result(timeout=60)

    assert resumed.text == FINAL  # no ReplayDivergenceError: the replayed calls saw the same summaries
    journaled = len([k for k in SUMMARIES if keys.index(k) <= keys.index(cut)])
    assert len(lines("summaries")) - before_calls == len(SUMMARIES) - journaled  # only those not journaled
    made = [f"SUMMARY v{n}" for n in range(before_calls + 1, len(lines("summaries")) + 1)]
    assert summaries(resumed.session.events) == ["SUMMARY v1", "SUMMARY v2"][:journaled] + made
    assert effects()[before_effects:] == [n for i, n in enumerate(CHAIN) if keys.index(f"worker/llm:{i}/call:0")
                                          > keys.index(cut)]
    handle = agentspan.get(copy)
    assert handle.status() is agentspan.RunStatus.COMPLETED
    assert [s.key for s in handle.steps()] == keys


def test_a_compaction_after_the_invocation_is_journaled_and_replayed():
    # sliding window: a summary after every invocation
    first = agentspan.run(app(compaction_interval=1, overlap_size=0), "go", run_id="first", session_id="first")
    assert summaries(first.session.events) == ["SUMMARY v1"]
    steps = agentspan.get("first").steps()
    assert steps[-1].key == "adk:compaction:0" and steps[-1].name == "summarizer"
    copy = crashed_copy("first", len(steps))  # died after the summary, before the run ended
    resumed = agentspan.resume(copy, app(compaction_interval=1, overlap_size=0)).result(timeout=60)
    assert summaries(resumed.session.events) == ["SUMMARY v1"]
    assert lines("summaries") == ["call 1"] and effects() == CHAIN


def test_the_apps_config_is_left_as_it_was():
    target = app()
    summarizer = target.events_compaction_config.summarizer
    agentspan.run(target, "go", session_id="s1")
    assert target.events_compaction_config.summarizer is summarizer


def test_a_summary_that_failed_is_journaled_as_none_and_replayed_so(monkeypatch):
    """ADK goes on uncompacted when its summarizer fails: the journal says so, and a resumed run
    does not summarize there again (was: the step journaled failed, made again on resume, and
    a summary that then came made the replayed model calls diverge)."""
    monkeypatch.setattr(sys.modules[__name__], "FAILING", {1})
    first = agentspan.run(app(), "go", run_id="first", session_id="first")
    assert first.text == FINAL
    steps = {s.key: s for s in agentspan.get("first").steps()}
    failed = steps[SUMMARIES[0]]
    assert failed.status is agentspan.StepStatus.COMPLETED and "a 429" in (failed.error or "")
    keys = list(steps)
    copy = crashed_copy("first", keys.index("worker/llm:3") + 1)
    monkeypatch.setattr(sys.modules[__name__], "FAILING", set())
    calls = len(lines("summaries"))
    assert agentspan.resume(copy, app()).result(timeout=60).text == FINAL  # no ReplayDivergenceError
    resumed = {s.key: s for s in agentspan.get(copy).steps()}
    assert "a 429" in (resumed[SUMMARIES[0]].error or "")  # replayed as journaled, not summarized again
    later = [k for k in resumed if "compaction" in k and keys.index(k) > keys.index("worker/llm:3")]
    assert len(lines("summaries")) - calls == len(later)  # only the summaries after the cut are made


class ExactlyNotSummarizer(BaseEventsSummarizer):
    """A summarizer of one's own whose range ends just past the last event's time (not any
    event's exact time), answering a new text on every call."""

    def __init__(self) -> None:
        self.calls = 0

    async def maybe_summarize_events(self, *, events: list[Event]) -> Event | None:
        self.calls += 1
        text = f"CUSTOM {len(lines('custom')) + 1}"
        log("custom", text)
        compaction = EventCompaction(start_timestamp=events[0].timestamp, end_timestamp=events[-1].timestamp + 1e-6,
                                     compacted_content=types.Content(role="model", parts=[types.Part(text=text)]))
        return Event(author="user", invocation_id=Event.new_id(), actions=EventActions(compaction=compaction))


def test_a_summary_whose_range_is_not_on_event_times_is_placed_over_the_replayed_events():
    def custom_app() -> App:
        target = app()
        target.events_compaction_config.summarizer = ExactlyNotSummarizer()
        return target

    assert agentspan.run(custom_app(), "go", run_id="first", session_id="first").text == FINAL
    keys = [s.key for s in agentspan.get("first").steps()]
    copy = crashed_copy("first", keys.index("worker/llm:3") + 1)  # after the model call the summary preceded
    assert agentspan.resume(copy, custom_app()).result(timeout=60).text == FINAL  # was: ReplayDivergenceError


def test_a_mock_run_makes_no_summary_through_a_real_model():
    """`mock_run` scripts every model the agent calls: ADK's default summarizer would call the
    agent's real model object (a billed call outside tests), so a mock run does not compact."""
    from agentspan.testing import call, mock_run, reply

    class RealModel(BaseLlm):
        model: str = "gemini-2.5-flash"

        async def generate_content_async(self, llm_request: LlmRequest,
                                         stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
            log("real", "called")
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text="REAL")]))

    agent = LlmAgent(name="worker", model=RealModel(), instruction="Work.", tools=[make_step("step1")])
    target = App(name="mapp", root_agent=agent,
                 events_compaction_config=EventsCompactionConfig(compaction_interval=1, overlap_size=0))
    result = mock_run(target, "go", script=[call("step1"), reply("done")])
    assert result.output == "done"
    assert lines("real") == []  # was: the summarizer called the real model after the invocation


def test_a_user_built_runner_gets_adks_default_summarizer_stored_as_adk_stores_it():
    """With no summarizer in the config, ADK makes one on the compacting agent's model and keeps
    it in the App's config, where its compaction after the invocation finds it (was: the plugin
    left the config without one, and that compaction raised ValueError out of run_async for a
    root that is no LlmAgent)."""
    from google.adk.agents import SequentialAgent
    from google.adk.sessions import InMemorySessionService

    class SummarizingChain(ChainLlm):
        async def generate_content_async(self, llm_request: LlmRequest,
                                         stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
            first = llm_request.contents[0].parts[0].text if llm_request.contents[0].parts else None
            if first and first.startswith("The following is a conversation history"):
                yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text="SUMMARY by chain")]),
                                  usage_metadata=usage(300, 30))
                return
            async for response in super().generate_content_async(llm_request, stream):
                yield response

    worker = LlmAgent(name="worker", model=SummarizingChain(), instruction="Work.",
                      tools=[make_step(n) for n in CHAIN])
    target = App(name="capp", root_agent=SequentialAgent(name="seq", sub_agents=[worker]),
                 events_compaction_config=EventsCompactionConfig(token_threshold=2000, event_retention_size=2,
                                                                 compaction_interval=1, overlap_size=0),
                 plugins=[AgentspanPlugin()])

    async def main() -> list[Event]:
        runner = Runner(app=target, session_service=InMemorySessionService())
        await runner.session_service.create_session(app_name="capp", user_id="u", session_id="s")
        message = types.Content(role="user", parts=[types.Part(text="go")])
        return [e async for e in runner.run_async(user_id="u", session_id="s", new_message=message)]

    events = asyncio.run(main())
    assert any(e.is_final_response() and e.content and e.content.parts[0].text == FINAL for e in events)
    assert isinstance(target.events_compaction_config.summarizer, LlmEventSummarizer)


# ---- SIGKILL, both entry points ---------------------------------------------------------------
child = partial(run_child, __file__)


@pytest.mark.crash
@pytest.mark.parametrize("crash_at", ["model:worker:4", "model:worker:5"])
def test_sigkill_after_a_summary_then_agentspan_resume(child_env, crash_at):
    assert child(child_env, "start", "r1", crash_at=crash_at).returncode == -9
    resumed = child(child_env, "resume", "r1")
    assert resumed.returncode == 0, resumed.stderr
    assert final_line(resumed.stdout) == FINAL
    assert lines("summaries") == ["call 1", "call 2"]  # once per compaction overall
    assert effects() == CHAIN  # every tool once
    assert "summaries: SUMMARY v1,SUMMARY v2" in resumed.stdout


@pytest.mark.crash
def test_sigkill_after_a_summary_then_the_same_message_through_the_runner(child_env):
    assert child(child_env, "runner", "s1", crash_at="model:worker:4").returncode == -9
    again = child(child_env, "runner", "s1")
    assert again.returncode == 0, again.stderr
    assert final_line(again.stdout) == FINAL
    assert lines("summaries") == ["call 1", "call 2"]
    assert effects() == CHAIN
    (run,) = agentspan.get_store().list_runs()
    assert run.status is agentspan.RunStatus.COMPLETED
    keys = [s.key for s in agentspan.get(run.id).steps()]
    assert [k for k in keys if k.endswith("/compaction")] == SUMMARIES


async def _through_runner(session_id: str) -> list[Event]:
    runner = Runner(app=app(plugin=True), session_service=SqliteSessionService(str(home() / "sessions.db")))
    service = runner.session_service
    if await service.get_session(app_name="capp", user_id="u", session_id=session_id) is None:
        await service.create_session(app_name="capp", user_id="u", session_id=session_id)
    message = types.Content(role="user", parts=[types.Part(text="go")])
    events = [e async for e in runner.run_async(user_id="u", session_id=session_id, new_message=message)]
    session = await service.get_session(app_name="capp", user_id="u", session_id=session_id)
    assert session is not None
    return [*events, *[e for e in session.events if e.actions.compaction]]


if __name__ == "__main__":
    mode, ident = sys.argv[1], sys.argv[2]
    if mode == "start":
        result = agentspan.run(app(), "go", run_id=ident, session_id=ident)
    elif mode == "resume":
        result = agentspan.resume(ident, app()).result(timeout=60)
    if mode in ("start", "resume"):
        text, events = result.text, result.session.events
    else:
        events = asyncio.run(_through_runner(ident))
        text = next(e.content.parts[0].text for e in events if e.is_final_response() and e.content)
    print("summaries:", ",".join(summaries(events)))
    print("FINAL:", text)
