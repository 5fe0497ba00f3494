"""Power-loss safe step writes fsynced by a helper process (`agentspan.stores.wal_sync`).

A ``durability="full"`` store opened with ``defer_step_sync`` (as `agentspan.get_store` opens it)
commits step writes without an fsync and has a helper process fsync the WAL; the runtime waits
for it before each live call and before a streamed event. The tests slow the helper down (it
sleeps before each fsync) so that a missing wait shows: without it, the next call would see
step writes not yet fsynced.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, function_tool

import agentspan
import agentspan.config
from agentspan.errors import StoreError
from agentspan.records import Run, RunStatus, Step, StepKind, StepResult, StepStatus
from agentspan.stores import wal_sync
from agentspan.stores.sqlite import SqliteStore
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

import oa_support
from crash_support import gone

FSYNC = 'getattr(os, "fdatasync", os.fsync)(fd)'
SLOW_HELPER = wal_sync._HELPER.replace(FSYNC, f"time.sleep(0.03); {FSYNC}").replace(
    "import os, struct, sys", "import os, struct, sys, time")
SLOWER_HELPER = SLOW_HELPER.replace("time.sleep(0.03)", "time.sleep(0.5)")
FAILING_HELPER = wal_sync._HELPER.replace(FSYNC, "raise OSError(5, 'Input/output error')")
assert SLOW_HELPER != wal_sync._HELPER != SLOWER_HELPER != SLOW_HELPER and FAILING_HELPER != wal_sync._HELPER


def full_store(path: Path, helper: str | None = None) -> SqliteStore:
    store = SqliteStore(path, durability="full", defer_step_sync=True)
    if helper is not None:
        store._syncer.helper_code = helper  # type: ignore[union-attr]
    return store


def claimed_run(store: SqliteStore) -> str:
    run, _ = store.create_run(Run(framework="test", agent="a", input="x"))
    store.claim_run(run.id, owner="me", expected_epoch=0, lease_expires_at=time.time() + 60)
    return run.id


def record(store: SqliteStore, run_id: str, index: int) -> None:
    step = Step(run_id=run_id, key=f"llm:{index}", seq=index, kind=StepKind.LLM, input={"i": index})
    store.record_step(step, StepResult(status=StepStatus.COMPLETED, output={"ok": index}), epoch=1)


def helper_up(store: SqliteStore) -> tuple[wal_sync.WalSyncer, str]:
    """A claimed run with one step written, and the store's helper started and ready."""
    syncer = store._syncer
    assert syncer is not None
    run_id = claimed_run(store)
    record(store, run_id, 0)
    store.wait_durable()  # fsynced inline: the helper is still starting
    assert syncer.synced == syncer.requested == 1
    deadline = time.monotonic() + 20
    while not syncer.helper_ready:
        assert time.monotonic() < deadline, "the helper did not start"
        time.sleep(0.02)
    return syncer, run_id


# ---- the store ------------------------------------------------------------------------------
def test_only_a_full_store_that_asks_for_it_defers(tmp_path: Path) -> None:
    assert SqliteStore(tmp_path / "a.db", durability="full")._syncer is None  # the server's: fsync per commit
    assert SqliteStore(tmp_path / "b.db", durability="normal", defer_step_sync=True)._syncer is None
    store = full_store(tmp_path / "c.db")
    run_id = claimed_run(store)
    record(store, run_id, 0)
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # other writes stay FULL
    store.wait_durable()
    assert store._syncer.synced == store._syncer.requested == 1  # type: ignore[union-attr]
    store.close()


def test_step_writes_wait_for_the_helper_and_durable_writes_cover_them(tmp_path: Path) -> None:
    store = full_store(tmp_path / "s.db", SLOW_HELPER)
    syncer, run_id = helper_up(store)
    record(store, run_id, 1)
    record(store, run_id, 2)
    assert syncer.synced < syncer.requested == 3  # the helper sleeps before its fsync
    started = time.perf_counter()
    store.wait_durable()
    assert syncer.synced == 3 and time.perf_counter() - started > 0.005
    helper = syncer.helper_pid
    assert helper is not None and not gone(helper, within=0.1)
    record(store, run_id, 3)
    store.update_run(run_id, epoch=1, status=RunStatus.COMPLETED, output="done")  # fsynced by SQLite
    assert syncer.synced == syncer.requested == 4
    assert [s.key for s in store.list_steps(run_id)] == ["llm:0", "llm:1", "llm:2", "llm:3"]
    store.close()
    assert gone(helper)


@pytest.mark.parametrize("nothing_written", ["a lease renewal refused", "a create found by its key",
                                             "a delete of nothing"])
def test_a_commit_that_wrote_nothing_covers_no_step_write(tmp_path: Path, nothing_written: str) -> None:
    """A full commit covers the relaxed step commits before it (SQLite fsyncs the WAL in it), but
    one that changed nothing writes and fsyncs nothing: the step write still waits for its fsync."""
    store = full_store(tmp_path / "e.db", SLOWER_HELPER)
    syncer, run_id = helper_up(store)
    store.create_run(Run(framework="test", agent="a", input="x", idempotency_key="once"))
    record(store, run_id, 1)
    assert syncer.synced == 1 and syncer.requested == 2  # the helper sleeps before its fsync
    if nothing_written == "a lease renewal refused":
        assert not store.renew_lease(run_id, epoch=99, lease_expires_at=time.time() + 60)
    elif nothing_written == "a create found by its key":
        assert not store.create_run(Run(framework="test", agent="a", input="y", idempotency_key="once"))[1]
    else:
        assert store.delete_runs(ended_before=0) == []
    assert syncer.synced < syncer.requested == 2
    store.wait_durable()
    assert syncer.synced == syncer.requested == 2
    store.close()


def test_a_failed_fsync_fails_every_later_wait(tmp_path: Path) -> None:
    store = full_store(tmp_path / "f.db", FAILING_HELPER)
    _syncer, run_id = helper_up(store)
    record(store, run_id, 1)
    with pytest.raises(StoreError, match=r"fsync of .*f\.db-wal failed: Input/output error"):
        store.wait_durable()
    with pytest.raises(StoreError, match="fsync"):
        store.wait_durable()
    store.close()


def test_a_failed_fsync_stops_the_run_before_its_next_call(home: Path) -> None:
    store = full_store(home / "f.db", FAILING_HELPER)
    agentspan.configure(store=store)
    helper_up(store)  # its first fsync failed
    calls: list[int] = []

    @function_tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append(a)
        return a + b

    agent = Agent(name="calc", tools=[add], model=ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"]))
    with pytest.raises(StoreError, match="fsync"):
        agentspan.run(agent, "add")
    assert calls == []
    failed = next(run for run in store.list_runs() if run.agent == "calc")
    assert failed.status is RunStatus.FAILED and "Input/output error" in (failed.error or "")


def test_a_killed_helper_is_replaced_by_inline_fsyncs(tmp_path: Path) -> None:
    store = full_store(tmp_path / "k.db", SLOW_HELPER)
    syncer, run_id = helper_up(store)
    record(store, run_id, 1)
    assert syncer.helper_pid is not None
    os.kill(syncer.helper_pid, signal.SIGKILL)
    store.wait_durable()
    assert syncer.synced == syncer.requested == 2 and syncer.helper_pid is None
    record(store, run_id, 2)  # no helper from now on: each wait fsyncs inline
    assert (syncer.requested, syncer.synced) == (3, 2)
    store.wait_durable()
    assert syncer.synced == syncer.requested == 3
    store.close()


def test_without_a_helper_the_wait_fsyncs_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    monkeypatch.chdir(tmp_path)
    store = full_store(Path("n.db"))  # a relative path: the WAL is found after a chdir too
    run_id = claimed_run(store)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for index in range(3):
        record(store, run_id, index)
        store.wait_durable()
    assert store._syncer.synced == store._syncer.requested == 3 and store._syncer.helper_pid is None  # type: ignore[union-attr]
    store.close()


def test_the_helper_finishes_and_exits_when_its_owner_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from agentspan.records import Run, Step, StepKind, StepResult, StepStatus\n"
        "from agentspan.stores.sqlite import SqliteStore\n"
        "store = SqliteStore(sys.argv[1], durability='full', defer_step_sync=True)\n"
        "run, _ = store.create_run(Run(framework='t', agent='a', input='x'))\n"
        "store.claim_run(run.id, owner='me', expected_epoch=0, lease_expires_at=time.time() + 60)\n"
        "for i in range(20):\n"
        "    store.record_step(Step(run_id=run.id, key=f'k{i}', seq=i, kind=StepKind.TOOL),\n"
        "                      StepResult(status=StepStatus.COMPLETED, output=i), epoch=1)\n"
        "print(store._syncer.helper_pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "o.db")], stdout=subprocess.PIPE, text=True)
    helper = int(child.stdout.readline())  # type: ignore[union-attr]
    child.kill()
    child.wait()
    assert gone(helper)  # its stdin closed with its owner: it fsyncs what was asked, then exits
    reader = SqliteStore(tmp_path / "o.db", durability="full")
    (run,) = reader.list_runs()
    assert len(reader.list_steps(run.id)) == 20
    reader.close()


# ---- the runtime waits before it acts on a step ----------------------------------------------
@pytest.fixture
def slow_full_store(home: Path) -> SqliteStore:
    store = full_store(home / "full.db", SLOW_HELPER)
    agentspan.configure(store=store)
    helper_up(store)  # before the runs under test
    return store


def synced_now(store: SqliteStore, seen: list[tuple[int, int]]) -> None:
    syncer = store._syncer
    assert syncer is not None
    seen.append((syncer.requested, syncer.synced))


def test_each_live_call_comes_after_the_fsync_of_the_steps_before_it(slow_full_store: SqliteStore) -> None:
    seen: list[tuple[int, int]] = []
    watch = partial(synced_now, slow_full_store, seen)

    assert oa_support.run_watched_adds(watch) == "7"
    # model 0, tool 0, model 1, tool 1, model 2: each saw every step before it written and fsynced
    assert seen == [(1 + n, 1 + n) for n in range(5)]


def test_a_streamed_run_hands_out_no_event_ahead_of_the_disk(slow_full_store: SqliteStore) -> None:
    seen: list[tuple[int, int]] = []

    @function_tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    async def read() -> Any:
        streamed = agentspan.run_streamed(
            Agent(name="calc", tools=[add], model=ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "three"])), "add")
        async for _event in streamed.stream_events():
            synced_now(slow_full_store, seen)
        return streamed.final_output

    assert asyncio.run(read()) == "three"
    assert len(seen) > 5 and all(requested == synced for requested, synced in seen)
    assert seen[-1][0] == 1 + 3  # the three steps of the run were all written


def test_the_adk_plugin_hands_the_caller_no_event_ahead_of_the_disk(slow_full_store: SqliteStore) -> None:
    from google.adk.agents import LlmAgent
    from google.adk.apps import App
    from google.adk.runners import InMemoryRunner
    from google.genai import types

    from agentspan_adk import AgentspanPlugin
    from agentspan_adk.testing import Call, ScriptedLlm

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    agent = LlmAgent(name="calc", model=ScriptedLlm(turns=[Call("add", {"a": 1, "b": 2}), "3"]), tools=[add])
    runner = InMemoryRunner(app=App(name="calculator", root_agent=agent, plugins=[AgentspanPlugin()]))
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        await runner.session_service.create_session(app_name="calculator", user_id="u", session_id="s")
        content = types.Content(role="user", parts=[types.Part(text="1+2?")])
        async for _event in runner.run_async(user_id="u", session_id="s", new_message=content):
            synced_now(slow_full_store, seen)

    asyncio.run(main())
    assert len(seen) == 3 and all(requested == synced for requested, synced in seen)  # call, result, answer
    assert seen[-1][0] == 1 + 3


# ---- crashes -------------------------------------------------------------------------------
@pytest.mark.crash
@pytest.mark.parametrize(("crash_at", "calls_after", "effects"),
                         [("lookup:after", [0, 1], 2), ("between:1", [0, 1], 1)])
def test_sigkill_on_a_full_store_then_resume(child_env: dict[str, str], crash_at: str, calls_after: list[int],
                                             effects: int) -> None:
    oa_support.crash_then_resume({**child_env, "AGENTSPAN_DURABILITY": "full"}, crash_at, calls_after, effects)
