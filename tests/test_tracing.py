"""OpenTelemetry spans of durable runs (`agentspan.tracing`): an ``invoke_agent`` span per attempt,
a ``gen_ai.*`` span per live step, timed by the journal, into the application's tracer provider."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from agents import Agent, function_tool, set_tracing_disabled
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import agentspan
import agentspan.config
from agentspan.errors import ConfigurationError
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from journal_utils import crashed_copy

set_tracing_disabled(True)  # the SDK's own traces: nothing to export them to
_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The process's global tracer provider, with an in-memory exporter of this module's."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # nothing set yet in this process: set one
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    return _exporter


@pytest.fixture(autouse=True)
def _clean(home, exporter):
    exporter.clear()
    yield


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def agent_with(turns, tools) -> Agent:
    return Agent(name="calc", instructions="add", tools=tools, model=ScriptedModel(turns, name="gpt-test"))


def spans_by_name(exporter: InMemorySpanExporter) -> dict[str, list]:
    found: dict[str, list] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def test_a_run_is_an_invoke_agent_span_with_a_gen_ai_span_per_step(exporter):
    agentspan.configure(otel=True)
    agent = agent_with([ToolCall("add", {"a": 2, "b": 3}), "5"], [add])
    result = agentspan.run(agent, "2+3?", session_id="conv-1")
    assert result.final_output == "5"
    run = agentspan.get_store().list_runs()[0]
    steps = {s.key: s for s in agentspan.get(run.id).steps()}
    spans = spans_by_name(exporter)
    assert sorted(spans) == ["chat gpt-test", "execute_tool add", "invoke_agent calc"]
    (root,) = spans["invoke_agent calc"]
    assert dict(root.attributes) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "calc", "gen_ai.conversation.id": "conv-1",
        "agentspan.run_id": run.id, "agentspan.framework": "openai-agents", "agentspan.outcome": "completed"}
    assert root.parent is None and root.status.status_code is StatusCode.UNSET
    chats = sorted(spans["chat gpt-test"], key=lambda s: s.start_time)
    assert [s.attributes["agentspan.step.key"] for s in chats] == ["llm:0", "llm:1"]
    first = chats[0]
    assert first.kind is SpanKind.CLIENT and first.parent.span_id == root.context.span_id
    assert first.context.trace_id == root.context.trace_id
    assert {k: first.attributes[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                                             "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": steps["llm:0"].provider,
        "gen_ai.request.model": "gpt-test", "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}
    (tool,) = spans["execute_tool add"]
    tool_step = steps[tool.attributes["agentspan.step.key"]]
    assert tool.kind is SpanKind.INTERNAL and tool.parent.span_id == root.context.span_id
    assert tool.attributes["gen_ai.tool.name"] == "add" and tool.attributes["agentspan.step.status"] == "completed"
    assert tool.attributes["gen_ai.tool.call.id"] == "call_0_0"  # the model's id of the call
    assert "gen_ai.tool.call.arguments" not in tool.attributes  # content is opt-in
    # timed by the journal: the span ends when the step ended, and lasts as long as it took
    assert tool.end_time == int(tool_step.ended_at * 1e9)
    assert abs((tool.end_time - tool.start_time) / 1e6 - tool_step.duration_ms) < 0.01
    assert root.start_time <= first.start_time and tool.end_time <= root.end_time


def test_content_mode_adds_tool_arguments_and_results(exporter):
    agentspan.configure(otel="content")
    agentspan.run(agent_with([ToolCall("add", {"a": 2, "b": 3}), "5"], [add]), "2+3?")
    (tool,) = spans_by_name(exporter)["execute_tool add"]
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"a": 2, "b": 3}
    assert json.loads(tool.attributes["gen_ai.tool.call.result"]) == 5


def _broken(x: int) -> int:
    """Always fails."""
    raise RuntimeError("disk on fire")


def test_a_failed_run_marks_its_span_as_an_error(exporter):
    agentspan.configure(otel=True)
    failing = function_tool(_broken, name_override="broken", failure_error_function=None)  # raised, not told
    with pytest.raises(Exception, match="disk on fire"):
        agentspan.run(agent_with([ToolCall("broken", {"x": 1}), "never"], [failing]), "go")
    spans = spans_by_name(exporter)
    (root,) = spans["invoke_agent calc"]
    assert root.status.status_code is StatusCode.ERROR and root.attributes["agentspan.outcome"] == "error"
    (tool,) = spans["execute_tool broken"]
    assert tool.status.status_code is StatusCode.ERROR and tool.attributes["error.type"] == "RuntimeError"
    assert tool.attributes["agentspan.step.status"] == "failed"


def test_a_resumed_run_makes_spans_only_for_what_it_runs_live(exporter):
    agentspan.configure(otel=True)
    agent = agent_with([ToolCall("add", {"a": 1, "b": 1}), "2"], [add])
    handle = agentspan.start(agent, "1+1")
    handle.result(timeout=20)
    clone_id = crashed_copy(handle.id, keep=2)  # killed after the tool call
    exporter.clear()
    assert agentspan.resume(clone_id, agent_with([ToolCall("add", {"a": 1, "b": 1}), "2"], [add])).result(
        timeout=20).final_output == "2"
    spans = spans_by_name(exporter)
    assert sorted(spans) == ["chat gpt-test", "invoke_agent calc"]  # the replayed llm:0 and tool: none
    assert [s.attributes["agentspan.step.key"] for s in spans["chat gpt-test"]] == ["llm:1"]
    assert spans["invoke_agent calc"][0].attributes["agentspan.run_id"] == clone_id


def test_off_by_default_and_a_bad_setting_is_refused(exporter, monkeypatch):
    agentspan.run(agent_with(["hi"], []), "hello")
    assert exporter.get_finished_spans() == ()
    with pytest.raises(ConfigurationError, match="otel='loud'"):
        agentspan.configure(otel="loud")  # type: ignore[arg-type]
    monkeypatch.setenv("AGENTSPAN_OTEL", "sometimes")
    agentspan.config.reset()
    with pytest.raises(ConfigurationError, match="AGENTSPAN_OTEL='sometimes'"):
        agentspan.config.settings()
    monkeypatch.setenv("AGENTSPAN_OTEL", "1")
    agentspan.config.reset()
    assert agentspan.config.settings().otel == "on"


def test_import_agentspan_does_not_import_opentelemetry():
    code = "import sys, agentspan; agentspan.run; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_an_adk_run_is_traced_alike(exporter):
    """Through `agentspan.run(adk_agent, ...)`: the same spans (ADK's own spans, which it sends to
    the same provider, are told apart by ``agentspan.run_id``)."""
    from google.adk.agents import LlmAgent

    from agentspan_adk.testing import Call, ScriptedLlm

    def double(n: int) -> int:
        """Doubles a number."""
        return 2 * n

    agentspan.configure(otel=True)
    agent = LlmAgent(name="doubler", model=ScriptedLlm(model="gemini-test", turns=[Call("double", {"n": 4}), "8"]),
                     tools=[double])
    assert agentspan.run(agent, "double 4", session_id="s1").text == "8"
    ours = [s for s in exporter.get_finished_spans() if "agentspan.run_id" in (s.attributes or {})]
    names = sorted(s.name for s in ours)
    assert names == ["chat gemini-test", "chat gemini-test", "checkpoint session", "execute_tool double",
                     "invoke_agent doubler"]  # (the session snapshot the run started from is a checkpoint step)
    (root,) = [s for s in ours if s.name == "invoke_agent doubler"]
    assert all(s.parent.span_id == root.context.span_id for s in ours if s is not root)
    (tool,) = [s for s in ours if s.name == "execute_tool double"]
    assert tool.attributes["agentspan.step.key"] == "doubler/llm:0/call:0"
    assert tool.attributes["gen_ai.tool.call.id"]  # ADK's id of the call (the key holds its index)


def test_a_langgraph_run_names_each_tool_span_by_its_tool_call_id(exporter):
    import lgr_support

    agentspan.configure(otel=True)
    from langchain_core.messages import HumanMessage

    agentspan.run(lgr_support.support_graph(), {"messages": [HumanMessage(lgr_support.PROMPT)]})
    tools = [s for s in exporter.get_finished_spans() if s.name == "execute_tool lookup_order"]
    assert sorted(s.attributes["gen_ai.tool.call.id"] for s in tools) == ["call_a", "call_b"]


def test_a_graph_invoked_directly_with_the_saver_is_traced_as_a_run(exporter):
    from langchain_core.messages import HumanMessage

    from agentspan_langgraph import AgentspanSaver

    import lgr_support

    agentspan.configure(otel=True)
    graph = lgr_support.support_graph().copy(update={"checkpointer": AgentspanSaver()})
    graph.invoke({"messages": [HumanMessage(lgr_support.PROMPT)]}, {"configurable": {"thread_id": "t-otel"}})
    found = spans_by_name(exporter)
    (root,) = found["invoke_agent support"]
    assert root.attributes["gen_ai.conversation.id"] == "t-otel"
    assert root.attributes["agentspan.outcome"] == "completed"
    assert len(found["chat agent"]) == 2 and len(found["chat writer"]) == 2
    tools = found["execute_tool lookup_order"]
    assert sorted(s.attributes["gen_ai.tool.call.id"] for s in tools) == ["call_a", "call_b"]


def test_the_adk_plugin_on_a_runner_you_built_is_traced_too(exporter):
    """`AgentspanPlugin` on the user's own Runner opens its run itself; its attempt is traced the
    same way, and a call waiting for an approval ends the attempt's span as waiting, not an error."""
    import asyncio

    from google.adk.agents import LlmAgent
    from google.adk.apps import App
    from google.adk.runners import InMemoryRunner
    from google.genai import types

    from agentspan_adk import AgentspanPlugin
    from agentspan_adk.testing import Call, ScriptedLlm

    def double(n: int) -> int:
        """Doubles a number."""
        return 2 * n

    @agentspan.tool(approval_required=True)
    def pay(amount: int) -> str:
        """Pays an amount."""
        return "paid"

    agentspan.configure(otel=True)
    model = ScriptedLlm(model="gemini-test", turns=[Call("double", {"n": 4}), Call("pay", {"amount": 8}), "done"])
    app = App(name="shop", root_agent=LlmAgent(name="cashier", model=model, tools=[double, pay]),
              plugins=[AgentspanPlugin()])
    runner = InMemoryRunner(app=app)

    async def send() -> None:
        await runner.session_service.create_session(app_name="shop", user_id="u", session_id="s")
        message = types.Content(role="user", parts=[types.Part(text="double 4 and pay it")])
        async for _ in runner.run_async(user_id="u", session_id="s", new_message=message):
            pass

    with pytest.raises(agentspan.errors.ApprovalPending):
        asyncio.run(send())
    ours = [s for s in exporter.get_finished_spans() if "agentspan.run_id" in (s.attributes or {})]
    (root,) = [s for s in ours if s.name.startswith("invoke_agent")]
    assert root.name == "invoke_agent shop/cashier" and root.attributes["agentspan.outcome"] == "waiting"
    assert root.status.status_code is StatusCode.UNSET
    assert sorted(s.name for s in ours if s is not root) == ["chat gemini-test", "chat gemini-test",
                                                              "execute_tool double"]
    assert all(s.parent.span_id == root.context.span_id for s in ours if s is not root)


def test_a_tracing_failure_never_breaks_the_run(exporter, monkeypatch, caplog):
    from agentspan import tracing

    def broken_exporter(self, step, result):
        raise ValueError("exporter down")

    monkeypatch.setattr(tracing.RunTrace, "_step_span", broken_exporter)
    agentspan.configure(otel=True)
    result = agentspan.run(agent_with([ToolCall("add", {"a": 2, "b": 3}), "5"], [add]), "2+3?")
    assert result.final_output == "5"
    assert agentspan.get_store().list_runs()[0].status is agentspan.RunStatus.COMPLETED
    assert caplog.text.count("could not trace step") == 3  # llm:0, the tool, llm:1: logged, not raised
    (root,) = exporter.get_finished_spans()  # the attempt's own span still ends
    assert root.attributes["agentspan.outcome"] == "completed"


def test_a_run_that_waits_for_a_decision_in_process_has_one_span_per_attempt(exporter):
    """``agentspan.run`` waits for the approval itself: its first attempt ends as ``waiting`` when
    the second (after the decision) starts; both belong to the same run."""
    import threading
    import time

    @function_tool
    @agentspan.tool(approval_required=True)
    def pay(amount: int) -> str:
        """Pays an amount."""
        return "paid"

    def approve_when_asked() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            runs = agentspan.get_store().list_runs()
            if runs and agentspan.get(runs[0].id).pending_approvals():
                agentspan.get(runs[0].id).approve(by="test")
                return
            time.sleep(0.02)

    agentspan.configure(otel=True)
    approver = threading.Thread(target=approve_when_asked)
    approver.start()
    with trace.get_tracer("app").start_as_current_span("handle request") as request:
        result = agentspan.run(agent_with([ToolCall("pay", {"amount": 5}), "done"], [pay]), "pay 5")
        assert trace.get_current_span() is request
    assert result.final_output == "done"
    approver.join()
    attempts = sorted(spans_by_name(exporter)["invoke_agent calc"], key=lambda s: s.start_time)
    assert [s.attributes["agentspan.outcome"] for s in attempts] == ["waiting", "completed"]
    assert len({s.attributes["agentspan.run_id"] for s in attempts}) == 1
    assert attempts[0].end_time <= attempts[1].start_time
    # each attempt under the caller's span (the second was under the first, which had ended)
    assert [s.parent.span_id for s in attempts] == [request.get_span_context().span_id] * 2


@pytest.mark.parametrize("entry", ["run", "start"])
def test_a_run_started_in_the_background_is_traced_under_the_callers_span(exporter, entry):
    agentspan.configure(otel=True)
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("handle request") as request:
        agent = agent_with([ToolCall("add", {"a": 1, "b": 2}), "3"], [add])
        if entry == "run":
            agentspan.run(agent, "1+2")
        else:  # its own thread (was: a new trace, cut off from the request)
            agentspan.start(agent, "1+2").result(timeout=20)
    (run_span,) = spans_by_name(exporter)["invoke_agent calc"]
    assert run_span.parent is not None and run_span.parent.span_id == request.get_span_context().span_id
    assert run_span.context.trace_id == request.get_span_context().trace_id


@pytest.mark.parametrize(("provider", "conventions"), [("google", "gcp.gemini"), ("bedrock", "aws.bedrock"),
                                                       ("mistral", "mistral_ai"), ("openai", "openai")])
def test_a_chat_span_is_named_by_the_requested_model_with_the_conventions_provider_name(exporter, provider,
                                                                                     conventions):
    from agentspan.records import Run, Step, StepKind, StepResult, StepStatus
    from agentspan.tracing import RunTrace

    run_trace = RunTrace(Run(framework="test", agent="a"))
    step = Step(run_id=run_trace.run_id, key="llm:0", seq=1, kind=StepKind.LLM, name="m", provider=provider,
                model="gpt-4o-mini")
    run_trace.step_ended(step, StepResult(status=StepStatus.COMPLETED, model="gpt-4o-mini-2024-07-18",
                                          input_tokens=1, output_tokens=1))
    run_trace.end("completed")
    (chat,) = spans_by_name(exporter)["chat gpt-4o-mini"]  # the requested model, not the dated one answered
    assert chat.attributes["gen_ai.provider.name"] == conventions
    assert chat.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"


def test_a_tool_failure_the_sdk_answered_for_is_an_error_span(exporter):
    @function_tool
    def broken(n: int) -> int:
        """Breaks."""
        raise ValueError(f"broke on {n}")

    agentspan.configure(otel=True)
    agent = agent_with([ToolCall("broken", {"n": 1}), ToolCall("add", {"a": 1, "b": 2}), "done"], [broken, add])
    assert agentspan.run(agent, "go").final_output == "done"
    spans = spans_by_name(exporter)
    (failed,), (ok,) = spans["execute_tool broken"], spans["execute_tool add"]
    assert failed.status.status_code is StatusCode.ERROR and failed.attributes["error.type"] == "ValueError"
    assert ok.status.status_code is StatusCode.UNSET and "error.type" not in ok.attributes


def test_spans_opened_during_a_run_go_under_its_span(exporter):
    """A tool's own span and a durable run started inside a tool are children of the run's
    ``invoke_agent`` span, in its trace, and the caller's context is as it was after the run (was:
    each in a trace of its own: the run's span was never the current one)."""
    agentspan.configure(otel=True)
    tracer = trace.get_tracer("test")

    @function_tool
    async def ask_helper(question: str) -> str:
        """Asks a helper agent."""
        with tracer.start_as_current_span("db.query"):
            pass
        helper = Agent(name="helper", model=ScriptedModel(["42"], name="gpt-helper"))
        return (await agentspan.run_async(helper, question)).final_output

    agent = Agent(name="parent", tools=[ask_helper],
                  model=ScriptedModel([ToolCall("ask_helper", {"question": "6*7?"}), "42"], name="gpt-test"))
    assert agentspan.run(agent, "go").final_output == "42"
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left current in the caller
    spans = spans_by_name(exporter)
    (root,) = spans["invoke_agent parent"]
    (query,) = spans["db.query"]
    (nested,) = spans["invoke_agent helper"]
    assert {query.context.trace_id, nested.context.trace_id} == {root.context.trace_id}
    assert query.parent.span_id == root.context.span_id and nested.parent.span_id == root.context.span_id


class _ProviderDown(ScriptedModel):
    async def get_response(self, *args, **kwargs):
        raise ConnectionError("provider down")


def test_a_failed_model_call_is_an_error_span_without_a_response_model(exporter):
    agentspan.configure(otel=True)
    agent = Agent(name="calc", instructions="add", model=_ProviderDown(["never"], name="gpt-test"))
    with pytest.raises(ConnectionError, match="provider down"):
        agentspan.run(agent, "go")
    (chat,) = spans_by_name(exporter)["chat gpt-test"]
    assert chat.status.status_code is StatusCode.ERROR and chat.attributes["error.type"] == "ConnectionError"
    assert chat.attributes["gen_ai.request.model"] == "gpt-test"
    assert "gen_ai.response.model" not in chat.attributes  # no model answered


def test_an_adk_model_calls_failure_is_named_by_adks_error_code(exporter):
    """ADK reports a model call that raised as an error event; the step and its span name the
    error ADK reports (the exception's type), not the adapter's wrapper of it."""
    from google.adk.agents import LlmAgent

    from agentspan_adk.testing import ScriptedLlm

    agentspan.configure(otel=True)
    agent = LlmAgent(name="doubler", model=ScriptedLlm(model="gemini-test", turns=[]))  # no script: IndexError
    with pytest.raises(IndexError):
        agentspan.run(agent, "double 4", session_id="s1")
    (chat,) = [s for s in spans_by_name(exporter)["chat gemini-test"] if "agentspan.run_id" in s.attributes]
    assert chat.attributes["error.type"] == "IndexError" and chat.status.status_code is StatusCode.ERROR
    assert "gen_ai.response.model" not in chat.attributes
    run_id = chat.attributes["agentspan.run_id"]
    (step,) = [s for s in agentspan.get(run_id).steps() if s.kind is agentspan.StepKind.LLM]
    assert step.status is agentspan.StepStatus.FAILED and step.error.startswith("IndexError: "), step.error
