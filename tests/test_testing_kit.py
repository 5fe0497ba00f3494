"""The testing kit: `mock_run`, `expect`, crash tests and the pytest plugin, for openai-agents and
LangGraph (agents in `tk_agents`, graphs in `tk_graphs`; their models would fail if ever called)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from agents import Agent, RunHooks

import agentspan
from agentspan.errors import ConfigurationError, ModelRequestBlocked, ScriptError
from agentspan.testing import approve, call, expect, mock_run, reject, reply
from agentspan.testing.script import SCRIPT_INPUT_TOKENS, SCRIPT_OUTPUT_TOKENS

import tk_agents as oa
import tk_graphs as lg
from tk_effects import effects

pytest_plugins = ("pytester",)

REFUND_SCRIPT = [call("lookup_order", order_id="42"), call("transfer_to_billing"),
                 call("refund", order_id="42", amount=30.0), reply("Refunded $30.00 on order 42.")]


pytestmark = pytest.mark.usefixtures("effects_file")


# ---- openai-agents ---------------------------------------------------------------------------
def test_openai_script_drives_the_real_agent_tree_tools_and_handoff() -> None:
    started = time.perf_counter()
    result = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT)
    elapsed = time.perf_counter() - started
    assert result.status is agentspan.RunStatus.COMPLETED
    assert result.output == "Refunded $30.00 on order 42."
    assert [(c.name, c.args, c.result) for c in result.tool_calls] == [
        ("lookup_order", {"order_id": "42"}, "order 42: paid $30.00"),
        ("refund", {"order_id": "42", "amount": 30.0}, "refunded $30.00 on order 42"),
    ]
    assert effects() == ["lookup 42", "refund 42 30.0"]  # the real tools ran, once each
    assert result.handoffs == ["billing"]
    # The handoff target's model ("gpt-4o") was replaced as well as the triage agent's.
    assert [s.key for s in result.steps] == [
        "llm:0", "llm:0/call:call_0_0", "llm:1", "llm:1/handoff:transfer_to_billing", "llm:2",
        "llm:2/call:call_2_0", "llm:3"]
    assert {(s.provider, s.model) for s in result.model_calls} == {("scripted", "mock_run")}
    (approval,) = result.approvals
    assert (approval.tool, approval.status.value, approval.decided_by) == ("refund", "approved", "agentspan.testing")
    assert result.usage["input_tokens"] == 4 * SCRIPT_INPUT_TOKENS
    assert result.usage["output_tokens"] == 4 * SCRIPT_OUTPUT_TOKENS
    assert result.usage["model_calls"] == 4
    assert result.store.get_run(result.run_id).output == result.output
    assert result.raw.final_output == result.output  # the SDK's own RunResult
    assert elapsed < 5.0


def test_openai_stubs_replace_tools_and_receive_the_model_arguments() -> None:
    seen: list[dict] = []
    result = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT,
                      tools={"refund": lambda **args: seen.append(args) or {"refund_id": "r-1"}})
    assert seen == [{"order_id": "42", "amount": 30.0}]
    assert effects() == ["lookup 42"]  # the real refund never ran; lookup_order is not stubbed
    assert result.tool_calls[1].result == {"refund_id": "r-1"}
    (approval,) = result.approvals  # a stubbed tool still goes through its approval
    assert approval.status.value == "approved"


def test_openai_stub_for_a_tool_the_agent_does_not_have_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"stand-ins for 'refnd'.*its tools: lookup_order, refund"):
        mock_run(oa.support, "hi", script=[reply("hi")], tools={"refnd": lambda **a: "ok"})


def test_openai_scripted_rejection_reaches_the_model_and_the_tool_never_runs() -> None:
    script = [*REFUND_SCRIPT[:3], reject("over the limit"), reply("I could not refund it.")]
    result = mock_run(oa.support, "Refund order 42", script=script)
    assert effects() == ["lookup 42"]
    refund = result.tool_calls[1]
    assert refund.rejected and "over the limit" in refund.result
    (approval,) = result.approvals
    assert (approval.status.value, approval.reason) == ("rejected", "over the limit")
    # The rejection message is what the model saw as the tool's answer.
    last_input = result.model_calls[-1].input["new_items"]
    assert any("over the limit" in str(item.get("output", "")) for item in last_input)


def test_openai_default_approval_reject_and_on_reject_stop_cancels() -> None:
    result = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT[:3] + [reply("No refund.")],
                      default_approval="reject")
    assert result.approvals[0].status.value == "rejected"
    assert result.tool_calls[1].rejected
    cancelled = mock_run(oa.closer, "Close account 7", script=[call("close_account", account_id="7"), reject("no")])
    assert cancelled.status is agentspan.RunStatus.CANCELLED
    assert not any(e.startswith("close") for e in effects())
    with pytest.raises(AssertionError, match=r"expected the run to complete, but it is cancelled: .*rejected"):
        expect(cancelled).completed()


def test_openai_parallel_calls_are_one_response() -> None:
    result = mock_run(oa.support, "Are 42 and 43 paid?",
                      script=[[call("lookup_order", order_id="42"), call("lookup_order", order_id="43")],
                              reply("Both are paid.")])
    assert len(result.model_calls) == 2
    assert sorted(effects()) == ["lookup 42", "lookup 43"]
    assert [c.key for c in result.tool_calls] == ["llm:0/call:call_0_0", "llm:0/call:call_0_1"]
    expect(result).max_turns(2).tool_order(["lookup_order", "lookup_order"])


def test_script_exhaustion_names_the_position() -> None:
    with pytest.raises(ScriptError) as raised:
        mock_run(oa.support, "hi", script=[call("lookup_order", order_id="42")])
    assert str(raised.value) == (
        "script exhausted at position 1: model call #2 has no scripted response "
        "(the script has 1 entries, all used: [0] call('lookup_order', order_id='42'))")
    assert raised.value.position == 1


def test_call_of_an_unknown_tool_names_the_position_and_the_offered_tools() -> None:
    with pytest.raises(ScriptError) as raised:
        mock_run(oa.support, "hi", script=[call("lookup_order", order_id="1"), call("refund", order_id="1")])
    assert str(raised.value) == (
        "script[1] call('refund', order_id='1') calls 'refund', a tool the agent does not have "
        "(tools offered to the model at call #2: lookup_order, transfer_to_billing)")
    assert raised.value.position == 1 and raised.value.entry == call("refund", order_id="1")


def test_decision_where_a_model_response_is_due_and_unused_entries_fail() -> None:
    with pytest.raises(ScriptError, match=r"script\[0\] is approve\(\), but the agent made model call #1"):
        mock_run(oa.support, "hi", script=[approve(), reply("x")])
    with pytest.raises(ScriptError, match=r"script entries never used: \[1\] reply\('again'\)"):
        mock_run(oa.support, "hi", script=[reply("done"), reply("again")])
    assert mock_run(oa.support, "hi", script=[reply("done"), reply("again")], strict=False).output == "done"
    with pytest.raises(ConfigurationError, match=r"script\[0\] is 42"):
        mock_run(oa.support, "hi", script=[42])
    # arguments no model could send (was: a bare TypeError inside the SDK, or a set reaching the tool)
    for target, script in ((oa.support, [call("lookup_order", order_id={1})]),
                           (lg.support_graph, [reply("x"), [call("lookup_order", order_id=float("nan"))]])):
        with pytest.raises(ConfigurationError, match=r"script\[\d\]: call\('lookup_order'.*not JSON"):
            mock_run(target, "hi", script=script)


def test_call_arguments_no_model_could_send_are_a_script_error_naming_the_position() -> None:
    """(was: a ConfigurationError only, not caught by pytest.raises(ScriptError))"""
    unsendable = object()
    with pytest.raises(ScriptError, match=r"^script\[1\]: call\('lookup_order', x=<object .*not JSON") as raised:
        mock_run(oa.support, "hi", script=[reply("x"), [call("lookup_order", x=unsendable)]])
    assert raised.value.position == 1 and raised.value.entry == call("lookup_order", x=unsendable)
    assert isinstance(raised.value, ConfigurationError)  # as it was raised before


class RaisingHooks(RunHooks):
    async def on_agent_start(self, context, agent) -> None:
        raise ValueError("bad context")


def test_an_agent_error_is_raised_or_recorded() -> None:
    def broken(**args: object) -> str:
        raise KeyError("boom")

    agent = Agent(name="plain", instructions="x", model="gpt-4o")
    result = mock_run(agent, "hi", script=[reply("fine")])
    expect(result).completed().output_contains("fine").did_not_use_tool("lookup_order")
    # A stand-in's error is reported to the model as the tool's own would be; the run goes on.
    result = mock_run(oa.support, "hi", script=[call("lookup_order", order_id="1"), reply("sorry")],
                      tools={"lookup_order": broken})
    assert result.tool_calls[0].result.startswith("An error occurred while running the tool")  # the SDK's words
    assert "An error occurred" in str(result.model_calls[1].input["new_items"])
    expect(result).completed().output_contains("sorry")
    # What the agent raises out of the run is re-raised, or recorded with raise_errors=False.
    with pytest.raises(ValueError, match="bad context"):
        mock_run(oa.support, "hi", script=[reply("x")], hooks=RaisingHooks())
    failed = mock_run(oa.support, "hi", script=[reply("x")], hooks=RaisingHooks(), raise_errors=False)
    assert failed.status is agentspan.RunStatus.FAILED and "bad context" in failed.error
    with pytest.raises(AssertionError, match=r"expected the run to complete, but it is failed: ValueError: bad"):
        expect(failed).completed()


# ---- expectations ----------------------------------------------------------------------------
@pytest.fixture
def refund_result():
    return mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT)


def test_expectations_pass_and_chain(refund_result) -> None:
    (expect(refund_result).completed().used_tool("lookup_order").used_tool("refund", args={"amount": 30.0})
     .did_not_use_tool("cancel_order").tool_order(["lookup_order", "refund"]).output_contains("Refunded")
     .handoff_to("billing").approval_requested("refund").max_turns(4))


ACTUAL_CALLS = ("actual tool calls:\n"
                "  1. lookup_order(order_id='42') -> 'order 42: paid $30.00'\n"
                "  2. refund(order_id='42', amount=30.0) -> 'refunded $30.00 on order 42'")


@pytest.mark.parametrize(("check", "message"), [
    (lambda e: e.used_tool("cancel_order"), "expected a call of tool 'cancel_order', but there was none\n"),
    (lambda e: e.used_tool("refund", args={"order_id": "43", "amount": 30.0}),
     "expected a call of tool 'refund' with args {'order_id': '43', 'amount': 30.0}, but none of its 1 call(s) "
     "matched:\n  call 1 of 'refund':\n    - order_id: expected '43', got '42'\n"),
    (lambda e: e.used_tool("refund", args={"currency": "EUR"}),
     "expected a call of tool 'refund' with args {'currency': 'EUR'}, but none of its 1 call(s) matched:\n"
     "  call 1 of 'refund':\n    - currency: expected 'EUR', missing\n"),
    (lambda e: e.did_not_use_tool("refund"), "expected no call of tool 'refund', but it ran 1 time(s)\n"),
    (lambda e: e.tool_order(["refund", "lookup_order"]),
     "expected the tools to run in the order ['refund', 'lookup_order'], but they ran as "
     "['lookup_order', 'refund']\ndiff (- expected, + actual):\n  + lookup_order\n    refund\n  - lookup_order\n"),
    (lambda e: e.output_contains("declined"),
     "expected the output to contain 'declined'\nactual output: 'Refunded $30.00 on order 42.'\n"),
    (lambda e: e.handoff_to("shipping"), "expected a handoff to 'shipping'; handoffs: 'billing'\n"),
    (lambda e: e.approval_requested("lookup_order"),
     "expected an approval request for 'lookup_order'; approvals requested:\n"
     "  - refund({'order_id': '42', 'amount': 30.0}): approved\n"),
    (lambda e: e.max_turns(3),
     "expected at most 3 model calls, but the run made 4 (llm:0, llm:1, llm:2, llm:3)\n"),
])
def test_each_failing_expectation_shows_expected_actual_and_the_calls(refund_result, check, message) -> None:
    with pytest.raises(AssertionError) as raised:
        check(expect(refund_result))
    assert str(raised.value) == message + ACTUAL_CALLS


def test_expectations_do_not_take_true_for_1_nor_a_missing_output_for_text() -> None:
    from agents import Agent, function_tool

    @function_tool
    def set_count(count: int) -> str:
        """Set the count."""
        return f"count {count}"

    agent = Agent(name="counter", tools=[set_count])
    result = mock_run(agent, "set it", script=[call("set_count", count=1), reply("done")])
    expect(result).used_tool("set_count", args={"count": 1})
    with pytest.raises(AssertionError, match="- count: expected True, got 1"):
        expect(result).used_tool("set_count", args={"count": True})
    @function_tool(failure_error_function=None)
    def break_it() -> str:
        """Fail."""
        raise RuntimeError("broken")

    failed = mock_run(Agent(name="breaker", tools=[break_it]), "go", script=[call("break_it")], raise_errors=False)
    with pytest.raises(AssertionError, match="expected the output to contain 'None', but the run has no output "
                                             r"\(it is failed\)"):
        expect(failed).output_contains("None")


def test_stand_ins_reach_the_tools_of_an_agent_run_as_a_tool() -> None:
    from agents import Agent, function_tool

    looked_up: list[str] = []

    @function_tool
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        looked_up.append(order_id)
        return "the real answer"

    inner = Agent(name="inner", tools=[lookup_order])
    outer = Agent(name="outer", tools=[inner.as_tool("ask_inner", "Ask the inner agent.")])
    result = mock_run(outer, "is 42 paid?", script=[call("ask_inner", input="is 42 paid?"),
                                                   call("lookup_order", order_id="42"), reply("inner: paid"),
                                                   reply("outer: paid")],
                      tools={"lookup_order": lambda **args: "stand-in"})
    assert result.output == "outer: paid" and looked_up == []
    expect(result).used_tool("lookup_order", args={"order_id": "42"})
    assert [c.result for c in result.tool_calls if c.name == "lookup_order"] == ["stand-in"]


def test_used_tool_tells_a_rejected_call_apart() -> None:
    result = mock_run(oa.support, "x", script=[*REFUND_SCRIPT[:3], reject(), reply("no")])
    expect(result).did_not_use_tool("refund").approval_requested("refund")
    with pytest.raises(AssertionError, match=r"it was called 1 time\(s\) but rejected"):
        expect(result).used_tool("refund")


# ---- LangGraph -------------------------------------------------------------------------------
def test_langgraph_every_chat_model_is_scripted_and_real_tools_run() -> None:
    result = mock_run(lg.support_graph, "Is order 42 paid?",
                      script=[call("lookup_order", order_id="42"), reply("It is paid."), reply("Summary: paid.")])
    expect(result).completed().used_tool("lookup_order", args={"order_id": "42"}).output_contains("Summary")
    assert result.output == "Summary: paid."
    assert effects() == ["lookup 42"]
    assert [c.result for c in result.tool_calls] == ["order 42: paid $30.00"]
    # The trail keeps the graph's own model names: two models, both answered from the script.
    assert [s.model for s in result.model_calls] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]
    assert result.handoffs == ["agent", "tools", "agent", "summarize"]
    expect(result).handoff_to("summarize").max_turns(3)


def test_langgraph_stubs_parallel_calls_and_scripted_approval() -> None:
    refunds: list[dict] = []
    result = mock_run(lg.support_graph, "Refund 42, check 43",
                      script=[[call("refund", order_id="42", amount=30.0), call("lookup_order", order_id="43")],
                              reject("needs a manager"), reply("Refund declined."), reply("Summary.")],
                      tools={"refund": lambda **args: refunds.append(args) or "ok"})
    assert refunds == []  # rejected: the stand-in never ran
    assert effects() == ["lookup 43"]
    refund = next(c for c in result.tool_calls if c.name == "refund")
    assert refund.rejected and "needs a manager" in refund.result
    approved = mock_run(lg.support_graph, "Refund 42",
                        script=[call("refund", order_id="42", amount=30.0), reply("Done."), reply("Summary.")],
                        tools={"refund": lambda **args: refunds.append(args) or {"ok": True}})
    assert refunds == [{"order_id": "42", "amount": 30.0}]
    assert approved.tool_calls[0].result == '{"ok": true}'
    expect(approved).approval_requested("refund").used_tool("refund")


def test_langgraph_interrupt_is_decided_by_the_script() -> None:
    rejected = mock_run(lg.review_graph, "Refund order 42", script=[reply("Refund $30?"), reject("too late")])
    assert rejected.output == "Not refunded: too late"
    approved = mock_run(lg.review_graph, "Refund order 42", script=[reply("Refund $30?")])  # default: approve
    assert approved.output == "Refunded."
    assert effects() == ["refund 42"]
    expect(approved).approval_requested("review")
    assert approved.approvals[0].args == {"action": "refund", "order_id": "42", "note": "Refund $30?"}


def test_langgraph_script_errors_name_the_position() -> None:
    with pytest.raises(ScriptError) as raised:
        mock_run(lg.support_graph, "x", script=[call("lookup_order", order_id="1"), call("cancel", order_id="1")])
    assert str(raised.value) == ("script[1] call('cancel', order_id='1') calls 'cancel', a tool the agent does not "
                                 "have (tools offered to the model at call #2: lookup_order, refund)")
    with pytest.raises(ScriptError, match=r"^script exhausted at position 2: model call #3"):
        mock_run(lg.support_graph, "x", script=[call("lookup_order", order_id="1"), reply("paid")])


def test_langgraph_async_nodes_and_a_factory_named_by_string() -> None:
    result = mock_run("tk_graphs:build_async_graph", "Is 42 paid?",
                      script=[call("lookup_order", order_id="42"), reply("Paid.")],
                      tools={"lookup_order": lambda order_id: f"stub {order_id}"})
    assert result.output == "Paid."
    assert [(c.name, c.result) for c in result.tool_calls] == [("lookup_order", "stub 42")]
    assert effects() == []


def test_mock_run_inside_a_running_event_loop() -> None:
    async def main() -> str:
        return mock_run(oa.support, "hi", script=[reply("from a loop")]).output

    assert asyncio.run(main()) == "from a loop"


def test_an_adapter_without_the_hook_is_refused_and_the_kit_needs_no_framework() -> None:
    code = textwrap.dedent("""
        import sys
        for name in ("agents", "langgraph", "langchain_core", "google"):
            sys.modules[name] = None  # as if no framework were installed
        import agentspan.testing.pytest_plugin
        from agentspan.adapters import Adapter, register
        from agentspan.testing import expect, mock_run, reply

        class Toy(Adapter):
            framework = "toy"
            def accepts(self, target): return target == {"toy": True}
            def agent_name(self, target): return "toy"
            async def execute(self, run, target, input, options): return "done"
            def encode_output(self, result): return result

        register(Toy())
        try:
            mock_run({"toy": True}, "hi", script=[reply("x")])
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == ("ConfigurationError agentspan.testing.mock_run does not support toy targets: "
                                  "the toy adapter has no mock() hook"), out.stderr


# ---- crash tests -----------------------------------------------------------------------------
def test_openai_crash_after_resumes_without_repeating_steps() -> None:
    refunds: list[dict] = []
    result = mock_run(oa.support, "Refund order 42", script=REFUND_SCRIPT, crash_after=3,
                      tools={"refund": lambda **args: refunds.append(args) or "ok"})
    assert result.crashed_at == "llm:1"  # llm:0, the lookup, llm:1 were journaled, then SIGKILL
    assert result.replayed == {"handoff": 0, "llm": 2, "tool": 1}
    assert result.live == {"handoff": 1, "llm": 2, "tool": 1}
    assert effects() == ["lookup 42"]  # the child ran the real lookup; the resume replayed it
    assert refunds == [{"order_id": "42", "amount": 30.0}]  # stand-ins run in the test process
    expect(result).completed().tool_order(["lookup_order", "refund"]).handoff_to("billing")
    assert [s.key for s in result.steps] == [s.key for s in mock_run(oa.support, "x", script=REFUND_SCRIPT).steps]


def test_openai_crash_at_a_tool_in_flight_runs_it_once_after_the_resume() -> None:
    result = mock_run("tk_agents:support", "Is 42 paid?", crash_at="llm:0/call:call_0_0",
                      script=[call("lookup_order", order_id="42"), reply("Paid.")])
    assert result.crashed_at == "llm:0/call:call_0_0"
    assert effects() == ["lookup 42"]  # killed before the tool ran; run once, after the resume
    assert result.replayed == {"llm": 1, "tool": 0} and result.live == {"llm": 1, "tool": 1}
    assert result.output == "Paid."


def test_langgraph_crash_after_resumes_the_graph() -> None:
    result = mock_run(lg.support_graph, "Is 42 paid?", crash_after=3,
                      script=[call("lookup_order", order_id="42"), reply("Paid."), reply("Summary: paid.")])
    assert result.crashed_at.endswith("/call:call_0_0")  # the model call, the agent node, the lookup
    assert effects() == ["lookup 42"]  # the tools node ran again on resume; the lookup replayed
    assert result.replayed["tool"] == 1 and result.live["tool"] == 0
    assert result.output == "Summary: paid."
    expect(result).completed().used_tool("lookup_order")


def test_crash_points_that_cannot_work_are_explained() -> None:
    with pytest.raises(ConfigurationError, match=r"completed in the child process without reaching crash_at='llm:9': "
                                                 r"it journaled 3 steps \(llm:0, llm:0/call:call_0_0, llm:1\)"):
        mock_run(oa.support, "x", script=[call("lookup_order", order_id="1"), reply("ok")], crash_at="llm:9")
    local = Agent(name="local", instructions="x", model="gpt-4o")
    with pytest.raises(ConfigurationError, match=r"is not a module-level name of any imported module; pass it as "
                                                 r"'package.module:attribute'"):
        mock_run(local, "x", script=[reply("ok")], crash_after=1)
    with pytest.raises(ConfigurationError, match=r"cannot import module 'no_such_module'"):
        mock_run("no_such_module:agent", "x", script=[reply("ok")], crash_after=1)
    with pytest.raises(ConfigurationError, match="crash_after=0"):
        mock_run(oa.support, "x", script=[reply("ok")], crash_after=0)


def test_a_script_error_in_the_child_is_raised_here() -> None:
    with pytest.raises(ScriptError, match=r"^script\[1\] call\('nope'\) calls 'nope'"):
        mock_run(oa.support, "x", script=[call("lookup_order", order_id="1"), call("nope")], crash_after=5)


# ---- pytest plugin ---------------------------------------------------------------------------
def test_the_plugin_guards_this_suite_too(request: pytest.FixtureRequest) -> None:
    with pytest.raises(ModelRequestBlocked) as raised:
        socket.getaddrinfo("api.anthropic.com", 443)
    assert request.node.nodeid in str(raised.value)
    assert socket.getaddrinfo("localhost", 80)  # local hosts are never blocked


PLUGIN_TESTS = '''
    import os, socket
    from pathlib import Path

    import httpx
    import pytest
    from agents import Agent, RunConfig, Runner

    import agentspan
    from agentspan.errors import ModelRequestBlocked
    from agentspan.testing import call, expect, mock_run, reply
    import tk_agents as oa

    PROXY = "http://127.0.0.1:9"  # nothing listens: a request that gets past the guard fails to connect


    def test_store_is_isolated_and_the_default(agentspan_store, tmp_path):
        assert agentspan.get_store() is agentspan_store
        assert Path(agentspan_store.path).is_relative_to(tmp_path)
        assert Path(os.environ["AGENTSPAN_HOME"]).is_relative_to(tmp_path)
        result = mock_run(oa.support, "hi", script=[reply("hello")])
        assert result.store is agentspan_store
        assert agentspan.get(result.run_id).result() == "hello"


    def test_mock_model_queues_responses_across_runs(mock_model, agentspan_store):
        mock_model.call("lookup_order", order_id="42").reply("Paid.").reply("Hi again.")
        first = mock_model.run(oa.support, "Is 42 paid?")
        expect(first).completed().used_tool("lookup_order", args={"order_id": "42"})
        assert mock_model.queue == [reply("Hi again.")]
        assert mock_model.run(oa.support, "hello").output == "Hi again."
        assert [r.output for r in mock_model.results] == ["Paid.", "Hi again."]
        assert len(agentspan_store.list_runs()) == 2


    def test_httpx_request_to_a_provider_is_blocked():
        with httpx.Client(proxy=PROXY) as client, pytest.raises(ModelRequestBlocked) as raised:
            client.post("https://api.openai.com/v1/responses", json={})
        assert "POST https://api.openai.com/v1/responses" in str(raised.value)
        assert "test_plugin.py::test_httpx_request_to_a_provider_is_blocked" in str(raised.value)


    def test_a_real_sdk_model_is_blocked(monkeypatch):
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        agent = Agent(name="real", instructions="x", model="gpt-4o-mini")
        with pytest.raises(ModelRequestBlocked, match="api.openai.com"):
            Runner.run_sync(agent, "hi", run_config=RunConfig(tracing_disabled=True))


    @pytest.mark.agentspan_allow_network
    def test_opted_in_requests_go_through():
        with httpx.Client(proxy=PROXY) as client, pytest.raises((httpx.ProxyError, httpx.ConnectError)):
            client.post("https://api.openai.com/v1/responses", json={})
'''


def test_pytest_plugin_fixtures_and_network_guard(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # In a subprocess: an in-process run restores sys.modules afterwards, and modules it imported
    # fresh (httpcore's backends) would come back as second copies whose exception classes httpx
    # no longer recognises, breaking every later test that connects anywhere.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_plugin=textwrap.dedent(PLUGIN_TESTS))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_pytest_plugin_session_opt_in(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_open=textwrap.dedent('''
        import socket
        import pytest

        def test_resolving_a_provider_is_not_blocked():
            try:
                socket.getaddrinfo("api.openai.com", 443)
            except OSError:
                pass  # no network here: what matters is that the guard let it through
    '''))
    pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--agentspan-allow-network").assert_outcomes(
        passed=1)
    blocked = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    blocked.assert_outcomes(failed=1)
    blocked.stdout.fnmatch_lines(["*ModelRequestBlocked*api.openai.com*"])
