"""Step writes committed by a helper process (`agentspan.stores.step_writer`).

A ``durability="normal"`` store opened with ``defer_step_sync`` (as `agentspan.get_store` opens it)
hands the row of each new step to a helper process and returns; `wait_durable` (before each live
call) and every other statement of the store wait for the helper's commit. The tests slow the
helper down (it sleeps before each commit) so that a missing wait shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, function_tool

import agentspan
import agentspan.config
from agentspan import leases
from agentspan.errors import ConfigurationError, LeaseLostError, RunCancelledSignal
from agentspan.records import Run, RunStatus, Step, StepKind, StepResult, StepStatus
from agentspan.stores import step_writer
from agentspan.stores.sqlite import SqliteStore
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

import oa_support
from crash_support import gone

EXECUTE = "count = cur.execute(statement, params).rowcount"  # the helper's own code, changed for a test
SLOWED = f"time.sleep(0.05); {EXECUTE}"
SLOW_HELPER = step_writer._HELPER.replace(EXECUTE, SLOWED)
ANSWER = "            WORD.pack_into(shared, 16, seq)\n"
DIES_AFTER_SECOND_COMMIT = step_writer._HELPER.replace(  # commits the 2nd write, then dies unanswered
    ANSWER, "            if seq == 2:\n                os._exit(9)\n" + ANSWER)
assert SLOW_HELPER != step_writer._HELPER and DIES_AFTER_SECOND_COMMIT != step_writer._HELPER


def normal_store(path: Path, helper: str | None = None, durability: str = "normal") -> SqliteStore:
    """A store whose helper is running and ready (started at once, not after a few writes)."""
    store = SqliteStore(path, durability=durability, defer_step_sync=True, step_helper=True)  # type: ignore[arg-type]
    writer = store._writer
    assert writer is not None
    if helper is not None:
        writer.helper_code = helper
    writer.start(timeout=20)
    return store


def claimed_run(store: SqliteStore) -> str:
    run, _ = store.create_run(Run(framework="test", agent="a", input="x"))
    store.claim_run(run.id, owner="me", expected_epoch=0, lease_expires_at=time.time() + 60)
    return run.id


def record(store: SqliteStore, run_id: str, index: int, *, epoch: int = 1, attempt: int = 1) -> None:
    step = Step(run_id=run_id, key=f"tool:{index}", seq=index, kind=StepKind.TOOL, input={"i": index},
                attempt=attempt)
    store.record_step(step, StepResult(status=StepStatus.COMPLETED, output={"ok": index}), epoch=epoch)


def committed_keys(path: Path, run_id: str) -> list[str]:
    """The step keys another connection sees committed (not through the store under test)."""
    reader = SqliteStore(path, durability="normal")
    try:
        return [s.key for s in reader.list_steps(run_id)]
    finally:
        reader.close()


# ---- the store ------------------------------------------------------------------------------
def test_only_a_store_that_asks_for_it_hands_steps_to_a_helper(tmp_path: Path) -> None:
    assert SqliteStore(tmp_path / "a.db", durability="normal")._writer is None  # the server's
    assert SqliteStore(tmp_path / "b.db", durability="full")._writer is None
    store = SqliteStore(tmp_path / "c.db", durability="normal", defer_step_sync=True, step_helper=True)
    writer = store._writer
    assert writer is not None
    run_id = claimed_run(store)
    for index in range(writer.start_after):  # a process that journals a handful of calls starts no helper
        record(store, run_id, index)
    assert writer.helper_pid is None and writer.sent == 0
    assert committed_keys(tmp_path / "c.db", run_id) == [f"tool:{i}" for i in range(writer.start_after)]
    store.close()


REPORTS_SYNCHRONOUS = step_writer._HELPER.replace(  # writes its connection's setting beside the database
    "    hold_owner_lock(owner_lock)\n",
    "    hold_owner_lock(owner_lock)\n"
    "    open(path + '.synchronous', 'w').write(str(cur.execute('PRAGMA synchronous').fetchone()[0]))\n")
assert REPORTS_SYNCHRONOUS != step_writer._HELPER


@pytest.mark.parametrize(("durability", "setting"), [("normal", "1"), ("full", "2")])
def test_the_helper_of_a_full_store_fsyncs_each_commit_before_it_answers(tmp_path: Path, durability: str,
                                                                          setting: str) -> None:
    """``synchronous=FULL`` (2): SQLite fsyncs the WAL in the commit, and the helper answers
    after it, so a wait of a ``"full"`` store returns once the step is power-loss safe."""
    store = SqliteStore(tmp_path / "f.db", durability=durability, defer_step_sync=True, step_helper=True)  # type: ignore[arg-type]
    writer = store._writer
    assert writer is not None
    writer.helper_code = REPORTS_SYNCHRONOUS
    writer.start(timeout=20)
    run_id = claimed_run(store)
    record(store, run_id, 0)
    store.wait_durable(run_id)
    assert writer.applied == writer.sent == 1
    assert (tmp_path / "f.db.synchronous").read_text() == setting
    assert committed_keys(tmp_path / "f.db", run_id) == ["tool:0"]
    store.close()


def test_a_step_write_returns_before_its_commit_and_every_wait_comes_after_it(tmp_path: Path) -> None:
    store = normal_store(tmp_path / "s.db", SLOW_HELPER)
    run_id = claimed_run(store)
    started = time.perf_counter()
    record(store, run_id, 0)
    record(store, run_id, 1)
    assert time.perf_counter() - started < 0.05  # the helper sleeps 0.05 s before each commit
    assert committed_keys(tmp_path / "s.db", run_id) == []  # another process sees nothing yet
    assert [s.key for s in store.list_steps(run_id)] == ["tool:0", "tool:1"]  # this store sees its writes
    record(store, run_id, 2)
    store.wait_durable(run_id)
    assert committed_keys(tmp_path / "s.db", run_id) == ["tool:0", "tool:1", "tool:2"]
    writer = store._writer
    assert writer is not None and writer.applied == writer.sent == 3
    helper = writer.helper_pid
    assert helper is not None
    store.close()
    assert gone(helper)


def test_a_refused_step_write_is_raised_at_the_next_wait_of_its_run(tmp_path: Path) -> None:
    store = normal_store(tmp_path / "r.db")
    run_id, other = claimed_run(store), claimed_run(store)
    store.claim_run(run_id, owner="them", expected_epoch=1, lease_expires_at=time.time() + 60)  # taken over
    record(store, run_id, 0, epoch=1)  # the old attempt's write: handed over, refused by the fence
    record(store, other, 0)
    store.wait_durable(other)  # another run's refusal is not this one's
    with pytest.raises(LeaseLostError, match="epoch 2"):
        store.wait_durable(run_id)
    store.wait_durable(run_id)  # raised once; the attempt keeps it (`ActiveRun.fatal`)
    assert committed_keys(tmp_path / "r.db", run_id) == [] and committed_keys(tmp_path / "r.db", other) == ["tool:0"]
    store.cancel_run(other, reason="stop")
    record(store, other, 1)
    with pytest.raises(RunCancelledSignal):
        store.wait_durable(other)
    assert committed_keys(tmp_path / "r.db", other) == ["tool:0"]
    store.close()


def test_a_key_with_an_unfinished_attempt_is_finished_by_the_store(tmp_path: Path) -> None:
    store = normal_store(tmp_path / "u.db")
    run_id = claimed_run(store)
    store.start_step(Step(run_id=run_id, key="tool:0", seq=0, kind=StepKind.TOOL, input={"i": 0}), epoch=1)
    record(store, run_id, 0, attempt=2)  # the helper's insert finds the key: the store writes it itself
    store.wait_durable(run_id)
    (step,) = store.list_steps(run_id)
    assert (step.status, step.output, step.attempt) == (StepStatus.COMPLETED, {"ok": 0}, 2)
    writer = store._writer
    assert writer is not None and (writer.sent, writer.applied) == (1, 0)
    store.close()


def test_a_write_the_helper_hands_back_is_the_row_an_inline_write_makes(tmp_path: Path) -> None:
    """A step with an earlier unfinished attempt (the helper's insert does nothing, the store writes
    it itself from the values it sent) ends as the same row as on a store without the helper:
    every column, the step's and the result's fields merged as `finish_step` merges them."""
    cases = [
        ({"kind": StepKind.TOOL, "input": {"a": 1}}, {"status": StepStatus.COMPLETED, "output": {"ok": 1}}),
        ({"kind": StepKind.TOOL, "input": {"a": "\udcff"}}, {"status": StepStatus.FAILED, "error": "E: \\udcff"}),
        ({"kind": StepKind.LLM, "input": [1], "name": "m", "provider": "openai", "model": "gpt-4o"},
         {"status": StepStatus.COMPLETED, "output": {"m": 1}, "model": "gpt-4o-2024-08-06", "input_tokens": 5,
          "output_tokens": 2, "cost_usd": 0.1, "duration_ms": 12.5}),
        ({"kind": StepKind.LLM, "input": None, "provider": "x", "model": "y", "input_tokens": 3},
         {"status": StepStatus.COMPLETED, "output": None}),
        ({"kind": StepKind.TOOL, "input": {"n": -(2**63) - 1, "m": 2**70}},
         {"status": StepStatus.COMPLETED, "output": [-(2**63) - 1]}),
    ]

    def rows(store: SqliteStore) -> list[tuple[Any, ...]]:
        run_id = claimed_run(store)
        for seq, (step_fields, result_fields) in enumerate(cases):
            store.start_step(Step(run_id=run_id, key=f"k{seq}", seq=seq, started_at=1000.0, **step_fields), epoch=1)
            store.record_step(Step(run_id=run_id, key=f"k{seq}", seq=seq, attempt=2, started_at=2000.0, **step_fields),
                              StepResult(ended_at=2000.5, **result_fields), epoch=1)
        store.wait_durable(run_id)
        found = [tuple(row)[1:] for row in store._query("SELECT * FROM steps WHERE run_id=? ORDER BY seq", (run_id,))]
        store.close()
        return found  # (without the run id)

    helper = normal_store(tmp_path / "h.db")
    writer = helper._writer
    handed = rows(helper)
    assert writer is not None and (writer.sent, writer.applied) == (len(cases), 0)  # all handed back
    assert handed == rows(SqliteStore(tmp_path / "i.db"))


def test_a_killed_helper_gives_its_writes_back_and_none_is_lost_or_doubled(tmp_path: Path) -> None:
    store = normal_store(tmp_path / "k.db", SLOW_HELPER)
    writer = store._writer
    assert writer is not None and writer.helper_pid is not None
    run_id = claimed_run(store)
    for index in range(4):
        record(store, run_id, index)
    time.sleep(0.07)  # the first is committed, the second on its way
    os.kill(writer.helper_pid, signal.SIGKILL)
    store.wait_durable(run_id)  # the rest written inline, the first recognised as committed
    record(store, run_id, 4)  # no helper from now on: written inline
    assert writer.helper_pid is None and writer.sent == 4
    steps = store.list_steps(run_id)
    assert [s.key for s in steps] == [f"tool:{i}" for i in range(5)]
    assert all(s.status is StepStatus.COMPLETED for s in steps)
    store.close()


@pytest.mark.parametrize("where", ["in the write", "before the write"])
def test_a_signal_that_raises_inside_a_large_frames_write_stops_the_helper_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A signal handler raised (``SystemExit`` from a SIGTERM handler, ``KeyboardInterrupt``)
    while a frame larger than the pipe was half written: the helper is stopped (it commits the
    whole frames before, drops the cut one) and the store writes the rest itself (was: the helper
    waited for the frame's rest and every later statement of the store for the helper, for ever:
    a service's graceful shutdown hung)."""
    store = normal_store(tmp_path / "cut.db")
    writer = store._writer
    assert writer is not None
    run_id = claimed_run(store)
    record(store, run_id, 0)
    real_write = os.write
    cut: list[int] = []

    def write_then_interrupted(fd: int, data: Any) -> int:
        if fd == writer._to_helper and len(data) > 200_000 and not cut:
            cut.append(real_write(fd, bytes(data[:50_000])))  # part of the frame, then the signal's error
            raise KeyboardInterrupt
        return real_write(fd, data)

    class InterruptedSize:  # the frame's size packed, then the signal's error before the write
        size = step_writer._SIZE.size

        def pack(self, size: int) -> bytes:
            cut.append(size)
            raise KeyboardInterrupt

    if where == "in the write":
        monkeypatch.setattr(step_writer.os, "write", write_then_interrupted)
    else:
        monkeypatch.setattr(step_writer, "_SIZE", InterruptedSize())
    big = Step(run_id=run_id, key="tool:1", seq=1, kind=StepKind.TOOL, input={"i": "x" * 300_000})
    with pytest.raises(KeyboardInterrupt):
        store.record_step(big, StepResult(status=StepStatus.COMPLETED, output={"ok": 1}), epoch=1)
    monkeypatch.undo()
    assert cut
    waited = threading.Thread(target=store.wait_durable, args=(run_id,), daemon=True)
    waited.start()
    waited.join(timeout=20)
    assert not waited.is_alive()  # was: blocked for ever
    record(store, run_id, 2)  # inline from now on
    assert writer.helper_pid is None
    steps = store.list_steps(run_id)
    assert [s.key for s in steps] == ["tool:0", "tool:1", "tool:2"]
    assert steps[1].input == {"i": "x" * 300_000} and all(s.status is StepStatus.COMPLETED for s in steps)
    assert committed_keys(tmp_path / "cut.db", run_id) == ["tool:0", "tool:1", "tool:2"]
    store.close()


def test_a_helper_that_cannot_start_leaves_every_write_to_the_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "n.db", durability="normal", defer_step_sync=True, step_helper=True)
    writer = store._writer
    assert writer is not None
    writer.helper_code = "import sys; sys.exit(1)"  # as one that cannot open the store or its lock
    run_id = claimed_run(store)
    for index in range(200):
        record(store, run_id, index)
        if index == 20:
            time.sleep(0.5)  # it has exited by now
    store.wait_durable(run_id)
    assert writer.sent == 0 and writer.helper_pid is None  # given up on: no zombie, no retry per write
    assert len(committed_keys(tmp_path / "n.db", run_id)) == 200
    store.close()


def test_a_write_the_helper_committed_but_never_answered_is_not_written_again(tmp_path: Path) -> None:
    store = normal_store(tmp_path / "c.db", DIES_AFTER_SECOND_COMMIT)
    run_id = claimed_run(store)
    for index in range(3):
        record(store, run_id, index)
    store.wait_durable(run_id)  # the 2nd and 3rd come back in doubt: the 2nd is found committed
    steps = store.list_steps(run_id)
    assert [(s.key, s.status, s.output) for s in steps] == [
        (f"tool:{i}", StepStatus.COMPLETED, {"ok": i}) for i in range(3)]
    writer = store._writer
    assert writer is not None and writer.helper_pid is None and writer.applied == 1
    store.close()


PUBLISHED_BACK = "                WORD.pack_into(shared, 8, given_back)\n"
SLOW_BETWEEN_ITS_TWO_ANSWERS = step_writer._HELPER.replace(  # a store may read between the two words
    PUBLISHED_BACK, PUBLISHED_BACK + "                time.sleep(0.3)\n")
assert SLOW_BETWEEN_ITS_TWO_ANSWERS != step_writer._HELPER


def test_a_write_handed_back_is_written_though_the_store_looked_between_the_helpers_two_answers(
        tmp_path: Path) -> None:
    store = normal_store(tmp_path / "w.db", SLOW_BETWEEN_ITS_TWO_ANSWERS)
    run_id = claimed_run(store)
    store.start_step(Step(run_id=run_id, key="tool:0", seq=0, kind=StepKind.TOOL, input={"i": 0}), epoch=1)
    record(store, run_id, 0, attempt=2)  # handed back: the key has an earlier attempt
    time.sleep(0.1)  # the helper said "one handed back", not yet which write it answered for last
    store.wait_durable(run_id)
    (step,) = store.list_steps(run_id)
    assert (step.status, step.output, step.attempt) == (StepStatus.COMPLETED, {"ok": 0}, 2)
    store.close()


def test_a_wait_waits_for_the_writes_another_thread_is_writing_back(tmp_path: Path) -> None:
    store = normal_store(tmp_path / "t.db")
    run_id = claimed_run(store)
    write_returned = store._write_returned

    def slowly(record: Any, in_doubt: bool) -> None:
        time.sleep(0.3)  # as while SQLite's write lock is held by another process
        write_returned(record, in_doubt)

    store._write_returned = slowly  # type: ignore[method-assign]
    store.cancel_run(run_id, reason="stop")
    record(store, run_id, 0)  # refused by the fence: handed back
    time.sleep(0.05)
    heartbeat = threading.Thread(target=store.list_runs)  # another thread's statement writes it back
    heartbeat.start()
    time.sleep(0.1)
    with pytest.raises(RunCancelledSignal):  # the run's wait: after the write back, with its refusal
        store.wait_durable(run_id)
    heartbeat.join()
    store.close()


def test_a_value_sqlite_cannot_bind_fails_its_own_write_only(tmp_path: Path) -> None:
    store = normal_store(tmp_path / "v.db")
    run_id = claimed_run(store)
    record(store, run_id, 0)
    step = Step(run_id=run_id, key="tool:1", seq=1, kind=StepKind.TOOL)
    store.record_step(step, StepResult(status=StepStatus.FAILED, error="no such file: '\udcff.txt'"), epoch=1)
    record(store, run_id, 2)
    with pytest.raises(ConfigurationError, match="not valid UTF-8"):  # binding it inline, at the run's next wait
        store.wait_durable(run_id)
    writer = store._writer
    assert writer is not None and writer.helper_pid is not None  # the helper lives on
    record(store, run_id, 3)
    store.wait_durable(run_id)
    assert committed_keys(tmp_path / "v.db", run_id) == ["tool:0", "tool:2", "tool:3"]
    store.close()


def test_a_refusal_of_an_earlier_attempt_is_not_raised_in_a_later_one(tmp_path: Path) -> None:
    store = normal_store(tmp_path / "e.db")
    run_id = claimed_run(store)
    store.claim_run(run_id, owner="them", expected_epoch=1, lease_expires_at=time.time() + 60)
    record(store, run_id, 0, epoch=1)  # refused, and the attempt ends without waiting for it
    store.list_runs()
    store.claim_run(run_id, owner="me", expected_epoch=2, lease_expires_at=time.time() + 60)
    record(store, run_id, 1, epoch=3)
    store.wait_durable(run_id)  # the new attempt's own write went in: nothing to raise
    assert committed_keys(tmp_path / "e.db", run_id) == ["tool:1"]
    store.close()


def test_two_stores_of_one_process_each_have_a_helper_and_a_large_row_goes_inline(tmp_path: Path) -> None:
    # the same file twice (a store opened anew while the old one is still open): two helpers, two locks
    first, second = normal_store(tmp_path / "a.db"), normal_store(tmp_path / "a.db")
    owner = leases.owner_id()
    assert first.still_writing(owner) and second.still_writing(owner)
    run_id = claimed_run(second)
    step = Step(run_id=run_id, key="tool:0", seq=0, kind=StepKind.TOOL)
    second.record_step(step, StepResult(status=StepStatus.COMPLETED, output="x" * (step_writer.MAX_FRAME + 1)),
                       epoch=1)
    assert second._writer is not None and second._writer.sent == 0  # committed in the run's thread
    first_helper = first._writer.helper_pid  # type: ignore[union-attr]
    started = time.monotonic()
    first.close()
    assert time.monotonic() - started < 5 and first_helper is not None and gone(first_helper)
    assert second.still_writing(owner)  # the other helper's own lock
    second.close()
    assert not first.still_writing(owner) and not second.still_writing(owner)


OWNER_SCRIPT = """
import sys, time
from agentspan import leases
from agentspan.records import Run, Step, StepKind, StepResult, StepStatus
from agentspan.stores.sqlite import SqliteStore
from agentspan.stores import step_writer
store = SqliteStore(sys.argv[1], durability='normal', defer_step_sync=True, step_helper=True)
store._writer.helper_code = step_writer._HELPER.replace(sys.argv[3], sys.argv[4])  # slowed
store._writer.start(timeout=20)
run, _ = store.create_run(Run(framework='t', agent='a', input='x'))
store.claim_run(run.id, owner=leases.owner_id(), expected_epoch=0, lease_expires_at=time.time() + 60)
for i in range(int(sys.argv[2])):
    store.record_step(Step(run_id=run.id, key=f'k{i}', seq=i, kind=StepKind.TOOL),
                      StepResult(status=StepStatus.COMPLETED, output=i), epoch=1)
print(run.id, store._writer.helper_pid, flush=True)
time.sleep(60)
"""


def start_owner(path: Path, steps: int) -> tuple[subprocess.Popen[str], str, int]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, str(path), str(steps), EXECUTE, SLOWED],
                             stdout=subprocess.PIPE, text=True)
    run_id, helper = owner.stdout.readline().split()  # type: ignore[union-attr]
    return owner, run_id, int(helper)


def test_the_helper_commits_what_it_was_handed_when_its_owner_is_killed(tmp_path: Path) -> None:
    owner, run_id, helper = start_owner(tmp_path / "o.db", 10)
    owner.kill()
    owner.wait()
    assert committed_keys(tmp_path / "o.db", run_id) != [f"k{i}" for i in range(10)]  # 50 ms each: not yet
    assert gone(helper)  # its stdin closed with its owner: it commits what it was handed, then exits
    assert committed_keys(tmp_path / "o.db", run_id) == [f"k{i}" for i in range(10)]


def test_a_dead_owner_is_not_taken_over_while_its_helper_commits(tmp_path: Path) -> None:
    owner, run_id, helper = start_owner(tmp_path / "d.db", 10)
    owner.kill()
    owner.wait()
    store = SqliteStore(tmp_path / "d.db", durability="normal")
    run = store.get_run(run_id)
    assert not leases.lease_is_free(run, store=store)  # the owner is dead, but what it journaled is still arriving
    assert leases.lease_is_free(run)  # (a store that is not named cannot tell)
    claimed = leases.claim(store, run_id, ttl=5, wait=20, poll=0.02)  # waits for the helper to finish
    assert gone(helper, within=0.1)
    assert claimed.lease_epoch == 2 and [s.key for s in store.list_steps(run_id)] == [f"k{i}" for i in range(10)]
    store.close()


# ---- the runtime ------------------------------------------------------------------------------
@pytest.mark.parametrize("durability", ["normal", "full"])
def test_a_long_run_on_the_default_store_is_journaled_through_the_helper(home: Path, durability: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSPAN_DURABILITY", durability)
    monkeypatch.setenv("AGENTSPAN_STEP_HELPER", "on")  # whatever this machine's CPUs

    @function_tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    turns = 30
    model = ScriptedModel([ToolCall("add", {"a": i, "b": 1}) for i in range(turns)] + ["done"])
    result = agentspan.run(Agent(name="calc", tools=[add], model=model), "add", max_turns=100)
    assert result.final_output == "done"
    store = agentspan.get_store()
    assert isinstance(store, SqliteStore) and store._writer is not None and store.durability == durability
    assert store._writer.sent > 20  # the first writes commit inline while the helper starts
    (run,) = store.list_runs()
    assert run.status is RunStatus.COMPLETED and run.steps == 2 * turns + 1
    assert committed_keys(home / "agentspan.db", run.id) == [s.key for s in store.list_steps(run.id)]


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_each_live_call_comes_after_the_commit_of_the_steps_before_it(home: Path, durability: str) -> None:
    store = normal_store(home / "slow.db", SLOW_HELPER, durability)
    agentspan.configure(store=store)
    seen: list[int] = []

    def watch() -> None:  # through another connection: the store's own reads wait for the helper
        reader = SqliteStore(home / "slow.db", durability="normal")
        try:
            seen.append(len(reader.list_steps(reader.list_runs(limit=1)[0].id)))
        finally:
            reader.close()

    assert oa_support.run_watched_adds(watch) == "7"
    assert seen == [0, 1, 2, 3, 4]  # model 0, tool 0, model 1, tool 1, model 2: the steps before on disk
    assert store._writer is not None and store._writer.applied == 5


@pytest.mark.parametrize("cancel_at", [1, 2])  # during a model call that asks for a tool; during the last one
def test_a_run_cancelled_during_a_call_stops_at_the_next_barrier(home: Path, cancel_at: int) -> None:
    store = normal_store(home / "cancel.db")
    agentspan.configure(store=store)
    calls: list[int] = []

    @function_tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append(a)
        return a + b

    def on_call(index: int) -> None:
        if index == cancel_at:  # the call's step is handed to the helper, which the fence refuses
            agentspan.get(store.list_runs(limit=1)[0].id).cancel(reason="enough")

    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4}), "7"], on_call=on_call)
    with pytest.raises(agentspan.errors.RunCancelledError, match="enough"):
        agentspan.run(Agent(name="calc", tools=[add], model=model), "add")
    assert calls == [1, 3][:cancel_at]  # no tool ran on a refused model call's answer
    (run,) = store.list_runs()
    assert run.status is RunStatus.CANCELLED and len(store.list_steps(run.id)) == 2 * cancel_at  # not the refused one


# ---- crashes -------------------------------------------------------------------------------
@pytest.mark.crash
@pytest.mark.parametrize(("crash_at", "calls_after", "effects", "durability"),
                         [("lookup:after", [0, 1], 2, "normal"), ("between:1", [0, 1], 1, "normal"),
                          ("model:1", [0, 1, 1], 1, "normal"), ("between:1", [0, 1], 1, "full")])
def test_sigkill_with_steps_in_the_helper_then_resume(child_env: dict[str, str], crash_at: str,
                                                      calls_after: list[int], effects: int, durability: str) -> None:
    env = {**child_env, "STEP_WRITER": "1", "AGENTSPAN_DURABILITY": durability}
    oa_support.crash_then_resume(env, crash_at, calls_after, effects)
