"""`ActiveRun` directly: what a replayed tool call is checked against."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentspan.errors import ReplayDivergenceError
from agentspan.models import price_usd
from agentspan.records import Run, Step, StepKind, StepResult, StepStatus, completed_result, started_step
from agentspan.runtime import ActiveRun
from agentspan.stores.memory import MemoryStore


def _claimed(store: MemoryStore) -> Run:
    run, _ = store.create_run(Run(framework="test", agent="a", input="hi"))
    return store.claim_run(run.id, owner="me", expected_epoch=run.lease_epoch, lease_expires_at=time.time() + 60)


def test_a_journaled_tool_call_is_replayed_only_for_the_same_tool_and_arguments():
    store = MemoryStore()
    run = _claimed(store)
    calls: list[str] = []

    async def call_tool(active: ActiveRun, name: str, args: dict[str, int]) -> object:
        async def invoke() -> str:
            calls.append(name)
            return f"{name} ran"

        return await active.tool(key="llm:0/call:c1", name=name, args=args, invoke=invoke)

    first = ActiveRun(store, run, [])
    assert asyncio.run(call_tool(first, "refund", {"order": 1})) == "refund ran"
    replay = ActiveRun(store, run, store.list_steps(run.id))
    assert asyncio.run(call_tool(replay, "refund", {"order": 1})) == "refund ran"
    assert calls == ["refund"]  # served from the journal
    with pytest.raises(ReplayDivergenceError, match="tool 'refund' here; the live call is of tool 'lookup'"):
        asyncio.run(call_tool(ActiveRun(store, run, store.list_steps(run.id)), "lookup", {"order": 1}))
    with pytest.raises(ReplayDivergenceError, match="other arguments"):
        asyncio.run(call_tool(ActiveRun(store, run, store.list_steps(run.id)), "refund", {"order": 2}))
    assert calls == ["refund"]


def test_unchecked_records_are_what_validation_builds() -> None:
    """The hot path's `unchecked` records carry the same fields, defaults and set-field marks as
    validated ones (dumps, equality and copies agree)."""
    fields = {"run_id": "r1", "key": "llm:0/call:c1", "seq": 3, "kind": StepKind.TOOL, "name": "add",
              "input": {"a": 1}, "input_hash": "h", "attempt": 2, "provider": None, "model": None}
    checked, unchecked = Step(**fields), Step.unchecked(**fields)
    assert unchecked.started_at > 0 and unchecked.status is StepStatus.STARTED  # factory and default
    unchecked.__dict__["started_at"] = checked.started_at
    assert unchecked == checked and unchecked.model_dump_json() == checked.model_dump_json()
    assert unchecked.model_fields_set == checked.model_fields_set == set(fields)
    assert unchecked.model_dump(exclude_unset=True) == checked.model_dump(exclude_unset=True)
    result = StepResult.unchecked(status=StepStatus.COMPLETED, output=[1])
    assert result.ended_at is not None and result.error is None and result.model_fields_set == {"status", "output"}
    assert result.model_copy(update={"output": 2}).output == 2
    assert StepResult.unchecked(status=StepStatus.FAILED).ended_at >= result.ended_at  # a new factory call each


def test_the_hot_path_records_are_what_validation_builds() -> None:
    """`started_step` and `completed_result` (the per-call constructors) build what validation
    builds from the same fields: every field (a field added to the records must be added there
    too), the same defaults and the same set-field marks."""
    fields = {"run_id": "r1", "key": "llm:0", "seq": 3, "kind": StepKind.LLM, "name": "m", "input": {"a": [1]},
              "input_hash": "h", "attempt": 2, "provider": "openai", "model": "gpt-4o-mini"}
    checked, fast = Step(**fields), started_step(**fields)
    assert checked.started_at <= fast.started_at <= time.time()
    fast.__dict__["started_at"] = checked.started_at
    assert list(fast.__dict__) == list(checked.__dict__)  # every field, in declaration order
    assert fast == checked and fast.model_dump_json() == checked.model_dump_json()
    assert fast.model_fields_set == checked.model_fields_set == set(fields)
    plain = {"output": {"x": 1}, "duration_ms": 1.5, "provider": "openai", "model": "gpt-4o-mini"}
    metered = {**plain, "input_tokens": 3, "output_tokens": 4, "cost_usd": 0.25}
    built = ((plain, completed_result(**plain)), (metered, completed_result(**metered, metered=True)))
    for given, fast_result in built:
        checked_result = StepResult(status=StepStatus.COMPLETED, **given)
        assert abs(checked_result.ended_at - fast_result.ended_at) < 5  # now, not a default
        fast_result.__dict__["ended_at"] = checked_result.ended_at
        assert list(fast_result.__dict__) == list(checked_result.__dict__)
        assert fast_result == checked_result and fast_result.model_fields_set == checked_result.model_fields_set


@pytest.mark.parametrize(("provider", "model", "family"), [
    ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # not "gpt-4o", the first row it starts with
    ("openai", "gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
    ("openai", "gpt-5-mini-2025-08-07", "gpt-5-mini"),
    ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("google", "gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
])
def test_a_dated_snapshot_is_priced_as_its_own_family(provider, model, family):
    assert price_usd(provider, model, 1_000, 2_000) == price_usd(provider, family, 1_000, 2_000)
    assert price_usd(provider, family, 1_000, 2_000) is not None


def test_a_model_that_only_starts_with_a_priced_name_is_not_priced_as_it():
    assert price_usd("openai", "gpt-4o-audio-preview", 1_000, 2_000) is None
    assert price_usd("google", "gemini-2.5-flash-lite-preview-06-17", 1_000, 2_000) is None


def test_setting_aside_passes_over_a_model_call_still_in_flight() -> None:
    """A model call is journaled only when it ends: one in flight when the steps from an earlier
    one on are set aside is not in the store to move (was: `StepNotFound`, replacing the
    framework's error), and it is journaled under its own key when it ends."""
    store = MemoryStore()
    run = _claimed(store)
    active = ActiveRun(store, run, [])

    async def model_call(key: str, answer: str, release: asyncio.Event | None = None) -> object:
        async def invoke() -> str:
            if release is not None:
                await release.wait()
            return answer

        return await active.step(kind=StepKind.LLM, key=key, name="m", input={"q": key}, input_hash=key,
                                 invoke=invoke, dump=lambda v: v, load=lambda v: v)

    async def main() -> None:
        await model_call("llm:0", "first")
        release = asyncio.Event()
        in_flight = asyncio.ensure_future(model_call("llm:1", "second", release))
        await asyncio.sleep(0)
        assert active.journal["llm:1"].status is StepStatus.STARTED
        active.set_aside("llm:0", "superseded: refused")
        release.set()
        assert await in_flight == "second"

    asyncio.run(main())
    assert [(s.key, s.status) for s in store.list_steps(run.id)] == [
        ("superseded:1/llm:0", StepStatus.COMPLETED), ("llm:1", StepStatus.COMPLETED)]
