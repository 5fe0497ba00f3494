"""A reusable conformance suite for `agentspan.stores.base.Store` backends.

Subclass `StoreConformance` in a pytest module and provide a ``store`` fixture returning a fresh,
empty store::

    class TestSqliteStore(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            store = SqliteStore(tmp_path / "agentspan.db")
            yield store
            store.close()

Every rule of the `Store` docstrings has a test here; a backend that passes is interchangeable
with the others.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from agentspan.errors import (
    ApprovalConflict,
    ApprovalNotFound,
    ConfigurationError,
    LeaseLostError,
    RunCancelledSignal,
    RunNotFound,
    RunStateError,
    StepNotFound,
)
from agentspan.records import (
    Approval,
    ApprovalStatus,
    Run,
    RunStatus,
    Step,
    StepKind,
    StepResult,
    StepStatus,
)
from agentspan.stores.base import Store

__all__ = ["PAYLOAD", "StoreConformance", "make_approval", "make_run", "make_step"]

PAYLOAD: dict[str, Any] = {
    "text": 'héllo — 世界 🚀 "quoted" \\ back\nslash\t',
    "float": 0.1,
    "tiny": 5e-324,
    "huge": 1.7976931348623157e308,
    "negative": -3.25,
    "int": 2**63 + 12345,
    "none": None,
    "flags": [True, False],
    "list": [1, "two", None, [3.5, {"nested": [], "empty": {}}]],
    "": "empty key",
}
"""A nested JSON value exercising unicode, float precision, big ints, nulls and nesting."""


def make_run(**fields: Any) -> Run:
    """Returns a new (not stored) run with test defaults."""
    fields.setdefault("framework", "test")
    fields.setdefault("agent", "agent-a")
    fields.setdefault("input", {"question": "hi"})
    return Run(**fields)


def make_step(run_id: str, key: str, seq: int, **fields: Any) -> Step:
    """Returns a new ``started`` tool step."""
    fields.setdefault("kind", StepKind.TOOL)
    fields.setdefault("name", "lookup")
    fields.setdefault("input", {"key": key})
    return Step(run_id=run_id, key=key, seq=seq, **fields)


def make_approval(run_id: str, step_key: str, **fields: Any) -> Approval:
    """Returns a new pending approval."""
    fields.setdefault("tool", "send_email")
    fields.setdefault("args", {"to": "a@example.com"})
    fields.setdefault("args_hash", "hash-" + step_key)
    return Approval(run_id=run_id, step_key=step_key, **fields)


def _dump(record: Any) -> Any:
    return [r.model_dump() for r in record] if isinstance(record, list) else record.model_dump()


class StoreConformance:
    """Contract tests every `Store` passes; subclasses provide the ``store`` fixture."""

    # ---- helpers --------------------------------------------------------------------------
    def claimed(self, store: Store, *, owner: str = "w1", ttl: float = 60.0, **fields: Any) -> Run:
        """Creates a run and claims it (epoch 1)."""
        run, _ = store.create_run(make_run(**fields))
        return store.claim_run(
            run.id, owner=owner, expected_epoch=run.lease_epoch, lease_expires_at=time.time() + ttl
        )

    def snapshot(self, store: Store, run_id: str) -> tuple[Any, Any]:
        """The run and its journal, as plain data."""
        return _dump(store.get_run(run_id)), _dump(store.list_steps(run_id))

    # ---- runs -----------------------------------------------------------------------------
    def test_create_and_get_run(self, store: Store) -> None:
        run = make_run(session_id="s1", parent_run_id="p1", options={"max_turns": 3})
        created, inserted = store.create_run(run)
        assert inserted is True
        assert created.model_dump() == run.model_dump()
        assert store.get_run(run.id).model_dump() == run.model_dump()

    def test_create_run_duplicate_id(self, store: Store) -> None:
        run = make_run()
        store.create_run(run)
        with pytest.raises(ConfigurationError):
            store.create_run(make_run(id=run.id, agent="other"))
        assert store.get_run(run.id).agent == "agent-a"

    def test_create_run_idempotency_key(self, store: Store) -> None:
        first, inserted = store.create_run(make_run(idempotency_key="order-42"))
        again, inserted_again = store.create_run(make_run(idempotency_key="order-42", input="x"))
        assert (inserted, inserted_again) == (True, False)
        assert again.model_dump() == first.model_dump()
        assert [r.id for r in store.list_runs()] == [first.id]
        _, other = store.create_run(make_run(idempotency_key="order-43"))
        assert other is True

    def test_create_runs_without_idempotency_key(self, store: Store) -> None:
        store.create_run(make_run())
        store.create_run(make_run())
        assert len(store.list_runs()) == 2

    def test_unknown_ids(self, store: Store) -> None:
        with pytest.raises(RunNotFound):
            store.get_run("nope")
        with pytest.raises(RunNotFound):
            store.list_steps("nope")
        with pytest.raises(RunNotFound):
            store.update_run("nope", epoch=0, status=RunStatus.RUNNING)
        with pytest.raises(RunNotFound):
            store.cancel_run("nope")
        with pytest.raises(RunNotFound):
            store.claim_run("nope", owner="w", expected_epoch=0, lease_expires_at=time.time())
        with pytest.raises(RunNotFound):
            store.renew_lease("nope", epoch=0, lease_expires_at=time.time())
        with pytest.raises(RunNotFound):
            store.start_step(make_step("nope", "k", 0), epoch=0)
        with pytest.raises(RunNotFound):
            store.finish_step("nope", "k", StepResult(status=StepStatus.COMPLETED), epoch=0)
        with pytest.raises(RunNotFound):
            store.request_approval(make_approval("nope", "k"), epoch=0)
        with pytest.raises(ApprovalNotFound):
            store.get_approval("nope")
        with pytest.raises(ApprovalNotFound):
            store.decide_approval("nope", approved=True, by=None, reason=None, decided_at=time.time())
        assert store.find_approval("nope", "k") is None

    def test_list_runs_newest_first_with_limit(self, store: Store) -> None:
        ids = [store.create_run(make_run())[0].id for _ in range(5)]
        assert [r.id for r in store.list_runs()] == ids[::-1]
        assert [r.id for r in store.list_runs(limit=2)] == ids[::-1][:2]
        assert store.list_runs(limit=0) == []

    def test_list_runs_filters(self, store: Store) -> None:
        a = store.create_run(make_run(agent="a"))[0]
        b = store.create_run(make_run(agent="b"))[0]
        c = self.claimed(store, agent="a")
        store.update_run(c.id, epoch=c.lease_epoch, status=RunStatus.RUNNING)
        assert [r.id for r in store.list_runs(agent="a")] == [c.id, a.id]
        assert [r.id for r in store.list_runs(status=RunStatus.PENDING)] == [b.id, a.id]
        assert [r.id for r in store.list_runs(status=RunStatus.RUNNING, agent="a")] == [c.id]
        assert store.list_runs(status=RunStatus.RUNNING, agent="b") == []

    def test_update_run_changes_given_fields(self, store: Store) -> None:
        run = self.claimed(store)
        before = store.get_run(run.id)
        updated = store.update_run(run.id, epoch=1, status=RunStatus.RUNNING)
        assert updated.status == RunStatus.RUNNING
        assert updated.output is None and updated.error is None
        assert updated.updated_at >= before.updated_at
        done = store.update_run(run.id, epoch=1, status=RunStatus.COMPLETED, output={"answer": 42})
        assert (done.status, done.output, done.error) == (RunStatus.COMPLETED, {"answer": 42}, None)
        noted = store.update_run(run.id, epoch=1, error="note")
        assert (noted.status, noted.output, noted.error) == (RunStatus.COMPLETED, {"answer": 42}, "note")
        assert noted.lease_owner == "w1"
        assert store.get_run(run.id).model_dump() == noted.model_dump()

    def test_update_run_release_lease_keeps_epoch(self, store: Store) -> None:
        run = self.claimed(store)
        released = store.update_run(run.id, epoch=1, status=RunStatus.WAITING, release_lease=True)
        assert (released.lease_owner, released.lease_expires_at, released.lease_epoch) == (None, None, 1)

    def test_fenced_update_refused_with_stale_epoch(self, store: Store) -> None:
        run = self.claimed(store)
        store.claim_run(run.id, owner="w2", expected_epoch=1, lease_expires_at=time.time() + 60)
        before = self.snapshot(store, run.id)
        with pytest.raises(LeaseLostError):
            store.update_run(run.id, epoch=1, status=RunStatus.FAILED, output="x", error="boom")
        with pytest.raises(LeaseLostError):
            store.update_run(run.id, epoch=1, release_lease=True)
        assert self.snapshot(store, run.id) == before

    def test_cancel_run(self, store: Store) -> None:
        pending = store.create_run(make_run())[0]
        cancelled = store.cancel_run(pending.id, reason="user asked")
        assert (cancelled.status, cancelled.error) == (RunStatus.CANCELLED, "user asked")
        assert store.get_run(pending.id).status == RunStatus.CANCELLED
        running = self.claimed(store)
        store.update_run(running.id, epoch=1, status=RunStatus.RUNNING)
        assert store.cancel_run(running.id).status == RunStatus.CANCELLED

    @pytest.mark.parametrize("end", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED])
    def test_cancel_ended_run_refused(self, store: Store, end: RunStatus) -> None:
        run = self.claimed(store)
        store.update_run(run.id, epoch=1, status=end, error="ended")
        with pytest.raises(RunStateError):
            store.cancel_run(run.id, reason="late")
        after = store.get_run(run.id)
        assert (after.status, after.error) == (end, "ended")

    def test_fenced_writes_on_cancelled_run(self, store: Store) -> None:
        run = self.claimed(store)
        store.start_step(make_step(run.id, "s0", 0), epoch=1)
        store.cancel_run(run.id, reason="stop")
        before = self.snapshot(store, run.id)
        with pytest.raises(RunCancelledSignal):
            store.update_run(run.id, epoch=1, status=RunStatus.COMPLETED)
        with pytest.raises(RunCancelledSignal):
            store.start_step(make_step(run.id, "s1", 1), epoch=1)
        with pytest.raises(RunCancelledSignal):
            store.finish_step(run.id, "s0", StepResult(status=StepStatus.COMPLETED), epoch=1)
        with pytest.raises(RunCancelledSignal):
            store.request_approval(make_approval(run.id, "s1"), epoch=1)
        assert self.snapshot(store, run.id) == before
        assert store.list_approvals(run_id=run.id) == []
        final = store.update_run(run.id, epoch=1, status=RunStatus.CANCELLED, release_lease=True)
        assert (final.status, final.lease_owner) == (RunStatus.CANCELLED, None)

    # ---- leases ---------------------------------------------------------------------------
    def test_claim_run(self, store: Store) -> None:
        run = store.create_run(make_run())[0]
        assert (run.lease_owner, run.lease_epoch) == (None, 0)
        expires = time.time() + 30
        claimed = store.claim_run(run.id, owner="w1", expected_epoch=0, lease_expires_at=expires)
        assert (claimed.lease_owner, claimed.lease_expires_at, claimed.lease_epoch) == ("w1", expires, 1)
        assert claimed.status == RunStatus.PENDING
        again = store.claim_run(run.id, owner="w2", expected_epoch=1, lease_expires_at=expires + 1)
        assert (again.lease_owner, again.lease_epoch) == ("w2", 2)

    def test_claim_run_stale_epoch_refused(self, store: Store) -> None:
        run = self.claimed(store)
        before = self.snapshot(store, run.id)
        with pytest.raises(LeaseLostError):
            store.claim_run(run.id, owner="w2", expected_epoch=0, lease_expires_at=time.time() + 60)
        assert self.snapshot(store, run.id) == before

    def test_claim_ended_run_refused(self, store: Store) -> None:
        run = self.claimed(store)
        store.update_run(run.id, epoch=1, status=RunStatus.COMPLETED, release_lease=True)
        with pytest.raises(LeaseLostError):
            store.claim_run(run.id, owner="w2", expected_epoch=1, lease_expires_at=time.time() + 60)
        assert store.get_run(run.id).lease_epoch == 1

    def test_claim_race_has_one_winner(self, store: Store) -> None:
        run = store.create_run(make_run())[0]
        barrier = threading.Barrier(8)
        outcomes: list[str] = []

        def claim(n: int) -> None:
            barrier.wait()
            try:
                store.claim_run(run.id, owner=f"w{n}", expected_epoch=0, lease_expires_at=time.time() + 60)
                outcomes.append(f"w{n}")
            except LeaseLostError:
                outcomes.append("lost")

        threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [o for o in outcomes if o != "lost"]
        assert len(outcomes) == 8 and len(winners) == 1
        final = store.get_run(run.id)
        assert (final.lease_owner, final.lease_epoch) == (winners[0], 1)

    def test_renew_lease(self, store: Store) -> None:
        run = self.claimed(store)
        later = time.time() + 120
        assert store.renew_lease(run.id, epoch=1, lease_expires_at=later) is True
        assert store.get_run(run.id).lease_expires_at == later
        assert store.renew_lease(run.id, epoch=0, lease_expires_at=later + 5) is False
        store.claim_run(run.id, owner="w2", expected_epoch=1, lease_expires_at=later)
        assert store.renew_lease(run.id, epoch=1, lease_expires_at=later + 5) is False
        after = store.get_run(run.id)
        assert (after.lease_owner, after.lease_expires_at, after.lease_epoch) == ("w2", later, 2)

    def test_claimable_runs_lease_rules(self, store: Store) -> None:
        now = time.time()
        free = store.create_run(make_run())[0]
        held = self.claimed(store, ttl=60)
        expired = self.claimed(store, ttl=-10)
        released = self.claimed(store)
        store.update_run(released.id, epoch=1, status=RunStatus.RUNNING, release_lease=True)
        ids = [r.id for r in store.claimable_runs(agents=None, now=now)]
        assert ids == [free.id, expired.id, released.id]
        assert held.id not in ids
        assert [r.id for r in store.claimable_runs(agents=None, now=now + 120)] == [
            free.id,
            held.id,
            expired.id,
            released.id,
        ]
        assert [r.id for r in store.claimable_runs(agents=None, now=now, limit=2)] == [free.id, expired.id]

    def test_claimable_runs_excludes_ended_runs(self, store: Store) -> None:
        for end in (RunStatus.COMPLETED, RunStatus.FAILED):
            run = self.claimed(store)
            store.update_run(run.id, epoch=1, status=end, release_lease=True)
        store.cancel_run(store.create_run(make_run())[0].id)
        assert store.claimable_runs(agents=None, now=time.time()) == []

    def test_claimable_runs_waiting_on_approval(self, store: Store) -> None:
        run = self.claimed(store)
        approval = store.request_approval(make_approval(run.id, "s0"), epoch=1)
        store.update_run(run.id, epoch=1, release_lease=True)
        assert store.get_run(run.id).status == RunStatus.WAITING
        assert store.claimable_runs(agents=None, now=time.time()) == []
        store.decide_approval(approval.id, approved=True, by="ann", reason=None, decided_at=time.time())
        assert [r.id for r in store.claimable_runs(agents=None, now=time.time())] == [run.id]

    def test_claimable_runs_expired_approval_does_not_block(self, store: Store) -> None:
        run = self.claimed(store)
        deadline = time.time() + 30
        store.request_approval(make_approval(run.id, "s0", expires_at=deadline), epoch=1)
        store.update_run(run.id, epoch=1, release_lease=True)
        assert store.claimable_runs(agents=None, now=deadline - 1) == []
        assert [r.id for r in store.claimable_runs(agents=None, now=deadline)] == [run.id]
        assert [r.id for r in store.claimable_runs(agents=None, now=deadline + 60)] == [run.id]

    def test_claimable_runs_agent_filter(self, store: Store) -> None:
        a = store.create_run(make_run(agent="a"))[0]
        b = store.create_run(make_run(agent="b"))[0]
        store.create_run(make_run(agent="c"))
        now = time.time()
        assert [r.id for r in store.claimable_runs(agents=["a"], now=now)] == [a.id]
        assert [r.id for r in store.claimable_runs(agents=("b", "a"), now=now)] == [a.id, b.id]
        assert store.claimable_runs(agents=["zzz"], now=now) == []
        assert len(store.claimable_runs(agents=None, now=now)) == 3

    # ---- steps ----------------------------------------------------------------------------
    def test_start_step_inserts(self, store: Store) -> None:
        run = self.claimed(store)
        step = make_step(run.id, "llm:0", 0, kind=StepKind.LLM, provider="openai", model="gpt")
        store.start_step(step, epoch=1)
        assert [s.model_dump() for s in store.list_steps(run.id)] == [step.model_dump()]
        assert store.get_run(run.id).steps == 1

    def test_start_step_not_durable_is_journaled_alike(self, store: Store) -> None:
        run = self.claimed(store)
        step = make_step(run.id, "tool:0", 0)
        store.start_step(step, epoch=1, durable=False)  # a store may hold it back until the end
        store.finish_step(run.id, "tool:0", StepResult(status=StepStatus.COMPLETED, output=1), epoch=1)
        (journaled,) = store.list_steps(run.id)
        assert (journaled.key, journaled.status, journaled.output, journaled.input) == (
            "tool:0", StepStatus.COMPLETED, 1, step.input)
        assert store.get_run(run.id).steps == 1
        with pytest.raises(LeaseLostError):  # refused at the start, or at the latest at the end
            store.start_step(make_step(run.id, "tool:1", 1), epoch=0, durable=False)
            store.finish_step(run.id, "tool:1", StepResult(status=StepStatus.COMPLETED, output=2), epoch=0)
        assert [s.key for s in store.list_steps(run.id)] == ["tool:0"]

    def test_start_step_reattempt_replaces_keeping_seq(self, store: Store) -> None:
        run = self.claimed(store)
        store.start_step(make_step(run.id, "a", 0), epoch=1)
        store.start_step(make_step(run.id, "b", 1), epoch=1)
        store.finish_step(run.id, "a", StepResult(status=StepStatus.FAILED, error="timeout"), epoch=1)
        retry = make_step(run.id, "a", 7, attempt=2, input={"retry": True})
        store.start_step(retry, epoch=1)
        steps = {s.key: s for s in store.list_steps(run.id)}
        assert steps["a"].model_dump() == retry.model_copy(update={"seq": 0}).model_dump()
        in_doubt = make_step(run.id, "b", 9, attempt=2)
        store.start_step(in_doubt, epoch=1)
        assert [(s.key, s.seq, s.attempt) for s in store.list_steps(run.id)] == [("a", 0, 2), ("b", 1, 2)]
        assert store.get_run(run.id).steps == 2

    def test_start_completed_step_refused(self, store: Store) -> None:
        run = self.claimed(store)
        store.start_step(make_step(run.id, "a", 0), epoch=1)
        store.finish_step(run.id, "a", StepResult(status=StepStatus.COMPLETED, output="done"), epoch=1)
        before = self.snapshot(store, run.id)
        with pytest.raises(ConfigurationError):
            store.start_step(make_step(run.id, "a", 0, attempt=2), epoch=1)
        assert self.snapshot(store, run.id) == before

    def test_step_writes_refused_with_stale_epoch(self, store: Store) -> None:
        run = self.claimed(store)
        store.start_step(make_step(run.id, "a", 0), epoch=1)
        store.claim_run(run.id, owner="w2", expected_epoch=1, lease_expires_at=time.time() + 60)
        before = self.snapshot(store, run.id)
        with pytest.raises(LeaseLostError):
            store.start_step(make_step(run.id, "b", 1), epoch=1)
        with pytest.raises(LeaseLostError):
            store.start_step(make_step(run.id, "a", 0, attempt=2), epoch=1)
        done = StepResult(status=StepStatus.COMPLETED, input_tokens=5, output_tokens=5, cost_usd=1.0)
        with pytest.raises(LeaseLostError):
            store.finish_step(run.id, "a", done, epoch=1)
        with pytest.raises(LeaseLostError):
            store.request_approval(make_approval(run.id, "a"), epoch=1)
        assert self.snapshot(store, run.id) == before
        assert store.find_approval(run.id, "a") is None
        store.finish_step(run.id, "a", done, epoch=2)
        assert store.get_run(run.id).input_tokens == 5

    def test_finish_step_records_result_and_totals(self, store: Store) -> None:
        run = self.claimed(store)
        store.start_step(make_step(run.id, "llm:0", 0, kind=StepKind.LLM), epoch=1)
        store.start_step(make_step(run.id, "tool:1", 1), epoch=1)
        ended = time.time()
        first = StepResult(
            status=StepStatus.COMPLETED,
            output={"text": "hello"},
            ended_at=ended,
            duration_ms=12.5,
            provider="openai",
            model="gpt-x",
            input_tokens=10,
            output_tokens=5,
            cost_usd=0.25,
        )
        store.finish_step(run.id, "llm:0", first, epoch=1)
        second = StepResult(status=StepStatus.FAILED, error="ValueError: bad", input_tokens=3, cost_usd=0.5)
        store.finish_step(run.id, "tool:1", second, epoch=1)
        llm, tool = store.list_steps(run.id)
        assert (llm.status, llm.output, llm.ended_at, llm.duration_ms) == (
            StepStatus.COMPLETED,
            {"text": "hello"},
            ended,
            12.5,
        )
        assert (llm.provider, llm.model, llm.input_tokens, llm.output_tokens, llm.cost_usd) == (
            "openai",
            "gpt-x",
            10,
            5,
            0.25,
        )
        assert (tool.status, tool.error, tool.output, tool.input_tokens) == (
            StepStatus.FAILED,
            "ValueError: bad",
            None,
            3,
        )
        totals = store.get_run(run.id)
        assert (totals.input_tokens, totals.output_tokens, totals.cost_usd, totals.steps) == (13, 5, 0.75, 2)

    def test_finish_step_needs_a_started_step(self, store: Store) -> None:
        run = self.claimed(store)
        with pytest.raises(StepNotFound):
            store.finish_step(run.id, "missing", StepResult(status=StepStatus.COMPLETED), epoch=1)
        store.start_step(make_step(run.id, "a", 0), epoch=1)
        store.finish_step(run.id, "a", StepResult(status=StepStatus.COMPLETED, input_tokens=1), epoch=1)
        before = self.snapshot(store, run.id)
        with pytest.raises(StepNotFound):
            store.finish_step(run.id, "a", StepResult(status=StepStatus.FAILED, input_tokens=1), epoch=1)
        assert self.snapshot(store, run.id) == before

    def test_record_step_journals_an_ended_step_at_once(self, store: Store) -> None:
        run = self.claimed(store)
        result = StepResult(status=StepStatus.COMPLETED, output={"text": "hi"}, duration_ms=3.0,
                            provider="openai", model="gpt-x", input_tokens=7, output_tokens=2, cost_usd=0.5)
        store.record_step(make_step(run.id, "llm:0", 0, kind=StepKind.LLM), result, epoch=1)
        (step,) = store.list_steps(run.id)
        assert (step.status, step.output, step.input_tokens, step.model) == (
            StepStatus.COMPLETED, {"text": "hi"}, 7, "gpt-x")
        totals = store.get_run(run.id)
        assert (totals.input_tokens, totals.output_tokens, totals.cost_usd, totals.steps) == (7, 2, 0.5, 1)
        before = self.snapshot(store, run.id)
        with pytest.raises(LeaseLostError):
            store.record_step(make_step(run.id, "llm:1", 1, kind=StepKind.LLM), result, epoch=0)
        with pytest.raises(ConfigurationError):
            store.record_step(make_step(run.id, "llm:0", 0, kind=StepKind.LLM), result, epoch=1)
        assert self.snapshot(store, run.id) == before

    def test_list_steps_ordered_by_seq(self, store: Store) -> None:
        run = self.claimed(store)
        assert store.list_steps(run.id) == []
        for seq in (2, 0, 3, 1):
            store.start_step(make_step(run.id, f"k{seq}", seq), epoch=1)
        assert [s.seq for s in store.list_steps(run.id)] == [0, 1, 2, 3]
        assert [s.key for s in store.list_steps(run.id)] == ["k0", "k1", "k2", "k3"]

    def test_json_round_trip(self, store: Store) -> None:
        run = self.claimed(store, input=PAYLOAD, options={"payload": PAYLOAD})
        assert store.get_run(run.id).input == PAYLOAD
        store.start_step(make_step(run.id, "a", 0, input=[PAYLOAD, "x", 1.5, None]), epoch=1)
        store.finish_step(run.id, "a", StepResult(status=StepStatus.COMPLETED, output=PAYLOAD), epoch=1)
        store.start_step(make_step(run.id, "b", 1, input="plain string"), epoch=1)
        store.finish_step(run.id, "b", StepResult(status=StepStatus.COMPLETED, output=0.1 + 0.2), epoch=1)
        store.request_approval(make_approval(run.id, "c", args=PAYLOAD), epoch=1)
        store.update_run(run.id, epoch=1, output=[PAYLOAD])
        got = store.get_run(run.id)
        assert (got.input, got.options, got.output) == (PAYLOAD, {"payload": PAYLOAD}, [PAYLOAD])
        a, b = store.list_steps(run.id)
        assert (a.input, a.output) == ([PAYLOAD, "x", 1.5, None], PAYLOAD)
        assert (b.input, b.output) == ("plain string", 0.1 + 0.2)
        assert store.find_approval(run.id, "c").args == PAYLOAD  # type: ignore[union-attr]

    def test_json_tuples_become_lists(self, store: Store) -> None:
        run = self.claimed(store, input={"pair": (1, 2)})
        assert store.get_run(run.id).input == {"pair": [1, 2]}

    # ---- approvals ------------------------------------------------------------------------
    def test_request_approval_sets_waiting_and_is_idempotent(self, store: Store) -> None:
        run = self.claimed(store)
        store.update_run(run.id, epoch=1, status=RunStatus.RUNNING)
        approval = make_approval(run.id, "tool:3", expires_at=time.time() + 3600)
        stored = store.request_approval(approval, epoch=1)
        assert stored.model_dump() == approval.model_dump()
        assert store.get_run(run.id).status == RunStatus.WAITING
        assert store.get_approval(approval.id).model_dump() == approval.model_dump()
        assert store.find_approval(run.id, "tool:3").model_dump() == approval.model_dump()  # type: ignore[union-attr]
        store.update_run(run.id, epoch=1, status=RunStatus.RUNNING)
        again = store.request_approval(make_approval(run.id, "tool:3", args={"to": "b@x"}), epoch=1)
        assert again.model_dump() == approval.model_dump()
        assert store.get_run(run.id).status == RunStatus.RUNNING
        assert len(store.list_approvals(run_id=run.id)) == 1

    def test_decide_approval_once(self, store: Store) -> None:
        run = self.claimed(store)
        approval = store.request_approval(make_approval(run.id, "s"), epoch=1)
        decided_at = time.time()
        decided = store.decide_approval(
            approval.id, approved=True, by="ann", reason="ok", decided_at=decided_at
        )
        assert (decided.status, decided.decided_by, decided.reason, decided.decided_at) == (
            ApprovalStatus.APPROVED,
            "ann",
            "ok",
            decided_at,
        )
        for approved in (False, True):
            with pytest.raises(ApprovalConflict):
                store.decide_approval(
                    approval.id, approved=approved, by="bob", reason="no", decided_at=decided_at + 1
                )
        assert store.get_approval(approval.id).model_dump() == decided.model_dump()

    def test_reject_approval(self, store: Store) -> None:
        run = self.claimed(store)
        approval = store.request_approval(make_approval(run.id, "s"), epoch=1)
        rejected = store.decide_approval(approval.id, approved=False, by=None, reason="no", decided_at=1.0)
        assert (rejected.status, rejected.decided_by, rejected.reason) == (
            ApprovalStatus.REJECTED,
            None,
            "no",
        )

    def test_decide_expired_approval_refused(self, store: Store) -> None:
        run = self.claimed(store)
        deadline = time.time() + 10
        approval = store.request_approval(make_approval(run.id, "s", expires_at=deadline), epoch=1)
        with pytest.raises(ApprovalConflict):
            store.decide_approval(approval.id, approved=True, by="ann", reason=None, decided_at=deadline + 1)
        with pytest.raises(ApprovalConflict):
            store.decide_approval(approval.id, approved=False, by="ann", reason=None, decided_at=deadline)
        assert store.get_approval(approval.id).model_dump() == approval.model_dump()
        decided = store.decide_approval(
            approval.id, approved=True, by=None, reason=None, decided_at=deadline - 1
        )
        assert decided.status == ApprovalStatus.APPROVED

    def test_list_approvals(self, store: Store) -> None:
        r1, r2 = self.claimed(store), self.claimed(store)
        a1 = store.request_approval(make_approval(r1.id, "x"), epoch=1)
        a2 = store.request_approval(make_approval(r1.id, "y"), epoch=1)
        a3 = store.request_approval(make_approval(r2.id, "x"), epoch=1)
        store.decide_approval(a2.id, approved=True, by=None, reason=None, decided_at=time.time())
        assert [a.id for a in store.list_approvals()] == [a3.id, a2.id, a1.id]
        assert [a.id for a in store.list_approvals(limit=1)] == [a3.id]
        assert [a.id for a in store.list_approvals(run_id=r1.id)] == [a2.id, a1.id]
        assert [a.id for a in store.list_approvals(status="pending")] == [a3.id, a1.id]
        assert [a.id for a in store.list_approvals(run_id=r1.id, status="approved")] == [a2.id]
        assert store.list_approvals(run_id=r2.id, status="rejected") == []

    # ---- isolation and concurrency --------------------------------------------------------
    def test_records_are_copies(self, store: Store) -> None:
        run = make_run(input={"items": [1, 2]}, options={"o": {"deep": 1}})
        created, _ = store.create_run(run)
        run.input["items"].append(3)
        created.input["items"].append(4)
        created.options["o"]["deep"] = 2
        store.get_run(run.id).input["items"].append(5)
        got = store.get_run(run.id)
        assert (got.input, got.options) == ({"items": [1, 2]}, {"o": {"deep": 1}})
        claimed = store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 60)
        claimed.lease_epoch = 99
        step = make_step(run.id, "a", 0, input={"args": [1]})
        store.start_step(step, epoch=1)
        step.input["args"].append(2)
        store.list_steps(run.id)[0].input["args"].append(3)
        assert store.list_steps(run.id)[0].input == {"args": [1]}
        approval = make_approval(run.id, "a", args={"to": ["x"]})
        store.request_approval(approval, epoch=1).args["to"].append("y")
        approval.args["to"].append("z")
        store.list_approvals()[0].args["to"].append("w")
        assert store.get_approval(approval.id).args == {"to": ["x"]}
        assert store.get_run(run.id).lease_epoch == 1

    def test_concurrent_writers(self, store: Store) -> None:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                run = self.claimed(store, agent=f"agent-{n}")
                for i in range(50):
                    store.start_step(make_step(run.id, f"s{i}", i), epoch=1)
                    store.finish_step(
                        run.id,
                        f"s{i}",
                        StepResult(status=StepStatus.COMPLETED, output=i, input_tokens=1),
                        epoch=1,
                    )
                    store.renew_lease(run.id, epoch=1, lease_expires_at=time.time() + 60)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        runs = store.list_runs()
        assert len(runs) == 4
        for run in runs:
            assert (run.steps, run.input_tokens) == (50, 50)
            steps = store.list_steps(run.id)
            assert [s.output for s in steps] == list(range(50))
            assert all(s.status == StepStatus.COMPLETED for s in steps)
