"""``on_divergence``: a resumed run whose code changed raises by default, or goes on live from the
first differing step with the journal from there on kept aside (`agentspan.divergence`)."""

from __future__ import annotations

import logging
import time

import pytest
from agents import Agent, function_tool, set_tracing_disabled

import agentspan
from agentspan.errors import ConfigurationError, ReplayDivergenceError
from agentspan.records import ApprovalStatus, StepStatus
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from journal_utils import crashed_copy

set_tracing_disabled(True)
effects: list[str] = []
SCRIPT = [ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4}), "done"]


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
    return "refunded"


def calc(script, instructions="be helpful", name="m", tools=(add,)) -> tuple[Agent, ScriptedModel]:
    model = ScriptedModel(script, name=name)
    return Agent(name="calc", instructions=instructions, tools=list(tools), model=model), model


def finished_run(**options) -> str:
    agent, _ = calc(SCRIPT)
    handle = agentspan.start(agent, "add things", **options)
    handle.result(timeout=20)
    effects.clear()
    return handle.id


@pytest.mark.parametrize("transport", ["embedded", "server-sqlite"])
def test_live_goes_on_from_the_first_differing_step_and_keeps_the_old_journal(caplog):
    store = agentspan.get_store()
    original = finished_run()
    failing = crashed_copy(original, keep=3)  # llm:0, its add call, llm:1: killed before llm:1's add
    recorded = {s.key: s for s in store.list_steps(failing)}
    changed, model = calc([ToolCall("add", {"a": 10, "b": 20}), "new answer"], instructions="NEW instructions")
    with pytest.raises(ReplayDivergenceError, match=r"llm:0.*on_divergence='live'"):
        agentspan.resume(failing, changed).result(timeout=20)
    assert [s.key for s in store.list_steps(failing)] == list(recorded) and model.calls == 0

    copy = crashed_copy(original, keep=3)

    with caplog.at_level(logging.WARNING, logger="agentspan"):
        result = agentspan.resume(copy, changed, on_divergence="live").result(timeout=20)
    assert result.final_output == "new answer"
    assert model.calls == 2 and effects == ["add 10 20"]  # everything from llm:0 on ran live
    steps = store.list_steps(copy)
    aside = {s.key: s for s in steps if s.key.startswith("superseded:")}
    assert {k: (s.seq, s.output) for k, s in aside.items()} == {
        f"superseded:{recorded['llm:0'].seq}/{key}": (step.seq, step.output) for key, step in recorded.items()}
    live = [s for s in steps if not s.key.startswith("superseded:")]
    assert [s.key.split("/")[0] for s in live] == ["llm:0", "llm:0", "llm:1"]
    assert min(s.seq for s in live) > max(s.seq for s in aside.values())
    assert live[1].output == 30 and all(s.status is StepStatus.COMPLETED for s in steps)
    run = store.get_run(copy)
    assert run.status is agentspan.RunStatus.COMPLETED and run.steps == len(steps) == 6
    assert run.input_tokens == sum(s.input_tokens or 0 for s in steps)  # what the old calls cost stays counted
    assert any("diverged from its journal at step llm:0" in r.getMessage() for r in caplog.records)


def test_the_policy_given_at_start_is_kept_with_the_run_and_a_later_step_can_diverge():
    store = agentspan.get_store()
    original = finished_run(on_divergence="live")
    assert store.get_run(original).options == {"agentspan.on_divergence": "live"}
    copy = crashed_copy(original, keep=3)
    prompts = []

    def instructions(ctx, agent) -> str:  # the same first prompt, another one from the second call on
        prompts.append(len(prompts))
        return "be helpful" if len(prompts) == 1 else "be brief"

    changed, model = calc(["unused", ToolCall("add", {"a": 5, "b": 5}), "brief"], instructions=instructions)
    result = agentspan.resume(copy, changed).result(timeout=20)  # the run's own policy: live
    assert result.final_output == "brief" and model.calls == 2 and effects == ["add 5 5"]
    keys = [s.key for s in store.list_steps(copy)]
    first_call = keys[1]
    assert keys[:2] == ["llm:0", first_call] and first_call.startswith("llm:0/call:")  # replayed, kept
    assert keys[2] == f"superseded:{store.list_steps(original)[2].seq}/llm:1"
    assert keys[3] == "llm:1" and keys[4].startswith("llm:1/call:") and keys[5] == "llm:2"


def test_a_superseded_pending_approval_expires_and_the_new_call_asks_again():
    store = agentspan.get_store()
    agent, _ = calc([ToolCall("refund", {"order_id": "7"}), "refunded 7"], tools=(refund,))
    handle = agentspan.start(agent, "refund 7", on_divergence="live")
    while not handle.pending_approvals():
        time.sleep(0.01)
    (waiting,) = handle.pending_approvals()
    handle.cancel()
    copy = crashed_copy(handle.id, keep=1)  # llm:0 asked for the refund, which waits for a decision
    store.request_approval(waiting.model_copy(update={"id": agentspan.Approval(
        run_id=copy, step_key="k", tool="t", args_hash="h").id, "run_id": copy}), epoch=0)
    changed, model = calc([ToolCall("refund", {"order_id": "8"}), "refunded 8"], instructions="new", tools=(refund,))
    resumed = agentspan.resume(copy, changed)
    while not [a for a in resumed.pending_approvals() if a.args == {"order_id": "8"}]:
        time.sleep(0.01)
    aside = f"superseded:{store.list_steps(copy)[0].seq}/"
    old = store.find_approval(copy, aside + waiting.step_key)
    assert old is not None and old.status is ApprovalStatus.EXPIRED and "diverged" in (old.reason or "")
    (new,) = resumed.pending_approvals()
    assert (new.step_key, new.args) == (waiting.step_key, {"order_id": "8"})
    resumed.approve()
    assert resumed.result(timeout=20).final_output == "refunded 8" and effects == ["refund 8"]
    assert model.calls == 2


def test_a_bad_policy_is_refused_before_anything_is_stored():
    agent, _ = calc(SCRIPT)
    with pytest.raises(ConfigurationError, match="on_divergence='sometimes'"):
        agentspan.run(agent, "x", on_divergence="sometimes")
    assert agentspan.get_store().list_runs() == []
    original = finished_run()
    copy = crashed_copy(original, keep=1)
    with pytest.raises(ConfigurationError, match="on_divergence"):
        agentspan.resume(copy, agent, on_divergence="yes")
    assert agentspan.get_store().get_run(copy).lease_owner is None


def test_a_worker_follows_the_policy_stored_with_the_run():
    store = agentspan.get_store()
    original = finished_run(on_divergence="live")
    copy = crashed_copy(original, keep=3)  # a run whose owner died: any worker may claim it
    changed, model = calc([ToolCall("add", {"a": 2, "b": 2}), "four"], instructions="NEW instructions")
    assert agentspan.serve(changed, poll_interval=0.05, max_runs=1) == 1
    assert agentspan.get(copy).result(timeout=5) == "four"
    assert model.calls == 2 and effects == ["add 2 2"]
    assert [s.key for s in store.list_steps(copy)][:3] == [
        f"superseded:{store.list_steps(original)[0].seq}/{s.key}" for s in store.list_steps(original)[:3]]
