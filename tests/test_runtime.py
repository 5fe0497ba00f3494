"""`ActiveRun` directly: what a replayed tool call is checked against."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentspan.errors import ReplayDivergenceError
from agentspan.records import Run
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
