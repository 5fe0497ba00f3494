"""The testing kit for Google ADK: `mock_run` drives real ADK agents (in `tk_adk_agents`, whose
Gemini models would fail if ever called) with a scripted model; approvals, stand-ins, crash tests."""

from __future__ import annotations

import time

import pytest

import agentspan
from agentspan.errors import ConfigurationError, ScriptError
from agentspan.testing import approve, call, expect, mock_run, reject, reply
from agentspan.testing.script import SCRIPT_INPUT_TOKENS, SCRIPT_OUTPUT_TOKENS

import tk_adk_agents as adk
from tk_effects import effects

REFUND_SCRIPT = [call("lookup_order", order_id="42"), call("transfer_to_agent", agent_name="billing"),
                 call("refund", order_id="42", amount=30.0), reply("Refunded $30.00 on order 42.")]
REFUND_KEYS = ["adk:session", "support/llm:0", "support/llm:0/call:0", "support/llm:1", "support/llm:1/call:0",
               "support/billing/llm:0", "support/billing/llm:0/call:0", "support/billing/llm:1"]


pytestmark = pytest.mark.usefixtures("effects_file")


def test_script_drives_the_real_agent_tree_tools_transfer_and_approval() -> None:
    started = time.perf_counter()
    result = mock_run(adk.support, "Refund order 42", script=REFUND_SCRIPT)
    elapsed = time.perf_counter() - started
    assert result.status is agentspan.RunStatus.COMPLETED
    assert result.output == "Refunded $30.00 on order 42."
    assert result.raw.text == result.output  # the adapter's own ADKResult
    assert [(c.name, c.args, c.result) for c in result.tool_calls] == [
        ("lookup_order", {"order_id": "42"}, "order 42: paid $30.00"),
        ("refund", {"order_id": "42", "amount": 30.0}, "refunded $30.00 on order 42"),
    ]
    assert effects() == ["lookup 42", "refund 42 30.0"]  # the real tools ran, once each
    assert result.handoffs == ["billing"]
    assert [s.key for s in result.steps] == REFUND_KEYS
    assert [s.kind.value for s in result.steps] == ["checkpoint", "llm", "tool", "llm", "handoff", "llm", "tool", "llm"]
    # Both agents' models were answered from the script; the trail keeps their own names.
    assert [s.model for s in result.model_calls] == ["gemini-2.5-flash-lite", "gemini-2.5-flash-lite",
                                                     "gemini-2.5-flash", "gemini-2.5-flash"]
    (approval,) = result.approvals
    assert (approval.tool, approval.status.value, approval.decided_by) == ("refund", "approved", "agentspan.testing")
    assert result.usage["input_tokens"] == 4 * SCRIPT_INPUT_TOKENS
    assert result.usage["output_tokens"] == 4 * SCRIPT_OUTPUT_TOKENS
    expect(result).completed().tool_order(["lookup_order", "refund"]).handoff_to("billing").max_turns(4)
    assert elapsed < 5.0


def test_stubs_replace_tools_and_receive_the_model_arguments() -> None:
    seen: list[dict] = []
    result = mock_run(adk.support, "Refund order 42", script=REFUND_SCRIPT,
                      tools={"refund": lambda **args: seen.append(args) or {"refund_id": "r-1"}})
    assert seen == [{"order_id": "42", "amount": 30.0}]
    assert effects() == ["lookup 42"]  # the real refund never ran; lookup_order is not stubbed
    assert result.tool_calls[1].result == {"refund_id": "r-1"}
    (approval,) = result.approvals  # a stubbed tool still goes through its approval
    assert approval.status.value == "approved"
    with pytest.raises(ConfigurationError, match=r"stand-ins for 'refnd'.*its tools: lookup_order, refund"):
        mock_run(adk.support, "hi", script=[reply("hi")], tools={"refnd": lambda **a: "ok"})


def test_scripted_rejection_of_an_agentspan_tool_reaches_the_model() -> None:
    result = mock_run(adk.support, "Refund order 42", script=[*REFUND_SCRIPT[:3], reject("over the limit"),
                                                               reply("I could not refund it.")])
    assert effects() == ["lookup 42"]
    refund = result.tool_calls[1]
    assert refund.rejected and "over the limit" in str(refund.result)
    (approval,) = result.approvals
    assert (approval.status.value, approval.reason) == ("rejected", "over the limit")
    assert "over the limit" in str(result.model_calls[-1].input["new"])  # what the model was told
    expect(result).completed().did_not_use_tool("refund").approval_requested("refund")


def test_adk_confirmation_is_decided_by_the_script() -> None:
    approved = mock_run(adk.orders, "Cancel order 42", script=[call("cancel_order", order_id="42"), reply("Done.")])
    assert effects() == ["cancel 42"]
    expect(approved).completed().used_tool("cancel_order", args={"order_id": "42"}).approval_requested("cancel_order")
    assert approved.approvals[0].args == {"order_id": "42"}

    rejected = mock_run(adk.orders, "Cancel order 42",
                        script=[call("cancel_order", order_id="42"), reject("keep it"), reply("Not cancelled.")])
    assert effects() == ["cancel 42"]  # unchanged: the rejected call never ran
    assert rejected.output == "Not cancelled."
    assert rejected.approvals[0].status.value == "rejected"

    cancels: list[dict] = []
    stubbed = mock_run(adk.orders, "Cancel order 42", script=[call("cancel_order", order_id="42"), approve(),
                                                               reply("Done.")],
                       tools={"cancel_order": lambda **args: cancels.append(args) or {"cancelled": "stub"}})
    assert cancels == [{"order_id": "42"}]  # the stand-in ran once, after the confirmation
    assert effects() == ["cancel 42"]
    assert stubbed.tool_calls[-1].result == {"cancelled": "stub"}


def test_parallel_calls_are_one_response() -> None:
    result = mock_run(adk.support, "Are 42 and 43 paid?",
                      script=[[call("lookup_order", order_id="42"), call("lookup_order", order_id="43")],
                              reply("Both are paid.")])
    assert sorted(effects()) == ["lookup 42", "lookup 43"]
    assert [c.key for c in result.tool_calls] == ["support/llm:0/call:0", "support/llm:0/call:1"]
    expect(result).max_turns(2).tool_order(["lookup_order", "lookup_order"])


def test_script_errors_name_the_position() -> None:
    with pytest.raises(ScriptError) as raised:
        mock_run(adk.support, "hi", script=[call("lookup_order", order_id="42")])
    assert str(raised.value) == (
        "script exhausted at position 1: model call #2 has no scripted response "
        "(the script has 1 entries, all used: [0] call('lookup_order', order_id='42'))")
    assert raised.value.position == 1
    with pytest.raises(ScriptError) as raised:
        mock_run(adk.support, "hi", script=[call("lookup_order", order_id="1"), call("refund", order_id="1")])
    assert str(raised.value) == (
        "script[1] call('refund', order_id='1') calls 'refund', a tool the agent does not have "
        "(tools offered to the model at call #2: lookup_order, transfer_to_agent)")


def test_a_failing_expectation_shows_expected_and_actual() -> None:
    result = mock_run(adk.support, "Refund order 42", script=REFUND_SCRIPT)
    with pytest.raises(AssertionError) as raised:
        expect(result).handoff_to("shipping")
    assert str(raised.value) == (
        "expected a handoff to 'shipping'; handoffs: 'billing'\n"
        "actual tool calls:\n"
        "  1. lookup_order(order_id='42') -> 'order 42: paid $30.00'\n"
        "  2. refund(order_id='42', amount=30.0) -> 'refunded $30.00 on order 42'")


def test_crash_after_resumes_without_repeating_steps() -> None:
    refunds: list[dict] = []
    result = mock_run(adk.support, "Refund order 42", script=REFUND_SCRIPT, crash_after=4,
                      tools={"refund": lambda **args: refunds.append(args) or "ok"})
    assert result.crashed_at == "support/llm:1"  # session, llm:0, the lookup, llm:1 journaled, then SIGKILL
    assert effects() == ["lookup 42"]  # the child ran the real lookup; the resume replayed it
    assert refunds == [{"order_id": "42", "amount": 30.0}]  # stand-ins run in the test process
    assert result.replayed["llm"] == 2 and result.replayed["tool"] == 1
    assert result.live["llm"] == 2 and result.live["tool"] == 1
    expect(result).completed().tool_order(["lookup_order", "refund"]).handoff_to("billing")
    assert [s.key for s in result.steps] == REFUND_KEYS


def test_crash_at_a_tool_in_flight_runs_it_once_after_the_resume() -> None:
    result = mock_run("tk_adk_agents:support", "Is 42 paid?", crash_at="support/llm:0/call:0",
                      script=[call("lookup_order", order_id="42"), reply("Paid.")])
    assert result.crashed_at == "support/llm:0/call:0"
    assert effects() == ["lookup 42"]  # killed before the tool ran; run once, after the resume
    assert (result.replayed["llm"], result.live["llm"], result.live["tool"]) == (1, 1, 1)
    assert result.output == "Paid."


def test_scripted_model_calls_count_against_max_llm_calls() -> None:
    """A scripted answer stands in for the model's, so it counts as a model call does: a mock
    run stops at ``RunConfig(max_llm_calls=...)`` where a real run stops."""
    from google.adk.agents import RunConfig
    from google.adk.agents.invocation_context import LlmCallsLimitExceededError

    script = [call("lookup_order", order_id="42"), reply("Paid.")]
    with pytest.raises(LlmCallsLimitExceededError, match="limit of `1` exceeded"):
        mock_run(adk.support, "Is 42 paid?", script=script, run_config=RunConfig(max_llm_calls=1))
    assert mock_run(adk.support, "Is 42 paid?", script=script, run_config=RunConfig(max_llm_calls=2)).output == "Paid."
