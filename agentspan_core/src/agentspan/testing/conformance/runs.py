"""Conformance tests for run records and their leases: create, read, list, update, cancel, claim, renew."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial

import pytest

from agentspan.errors import (
    ApprovalNotFound,
    ConfigurationError,
    LeaseLostError,
    RunCancelledSignal,
    RunNotFound,
    RunStateError,
)
from agentspan.records import RunStatus, StepResult, StepStatus
from agentspan.stores.base import Store
from agentspan.testing.conformance.records import (
    ConformanceBase,
    make_approval,
    make_run,
    make_step,
    refused_as_not_utf8,
)

__all__ = ["RunConformance"]


class RunConformance(ConformanceBase):
    """Contract tests for the run and lease methods of a `Store`."""

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

    def test_list_runs_of_a_session(self, store: Store) -> None:
        first = store.create_run(make_run(agent="a", session_id="thread-1"))[0]
        store.create_run(make_run(agent="a", session_id="thread-2"))
        store.create_run(make_run(agent="a"))
        latest = store.create_run(make_run(agent="b", session_id="thread-1"))[0]
        assert [r.id for r in store.list_runs(session_id="thread-1")] == [latest.id, first.id]
        assert [r.id for r in store.list_runs(session_id="thread-1", agent="a")] == [first.id]
        assert [r.id for r in store.list_runs(session_id="thread-1", limit=1)] == [latest.id]
        assert store.list_runs(session_id="nobody") == []

    def test_list_runs_before_pages_newest_first(self, store: Store) -> None:
        ids = [store.create_run(make_run())[0].id for _ in range(5)]
        newest_first = ids[::-1]
        assert [r.id for r in store.list_runs(before=ids[3])] == newest_first[2:]  # strictly before
        assert [r.id for r in store.list_runs(before=ids[3], limit=1)] == [ids[2]]
        assert store.list_runs(before=ids[0]) == []
        assert store.list_runs(before=ids[3], limit=0) == []
        # a position, not a lookup: an id that names no run (here: one sorting between two) pages too
        assert [r.id for r in store.list_runs(before=ids[3] + "!")] == newest_first[1:]
        assert [r.id for r in store.list_runs(before="\uffff")] == newest_first
        assert store.list_runs(before="") == []

    def test_list_runs_before_that_is_not_utf8_is_refused(self, store: Store) -> None:
        store.create_run(make_run())
        for before in ("\ud800", "a\udcff"):  # a lone surrogate sorts nowhere among UTF-8 ids
            with pytest.raises(ConfigurationError, match=r"not valid UTF-8.*lone surrogate"):
                store.list_runs(before=before)

    @pytest.mark.parametrize("lookup", ["get_run", "list_runs agent", "list_runs session_id", "claimable_runs",
                                        "claimable_runs after"])
    def test_run_lookups_by_text_that_is_not_utf8_are_refused(self, store: Store, lookup: str) -> None:
        """A lone surrogate is no stored run's id, agent or session: an error (as SQLite and
        PostgreSQL, which take text as UTF-8, cannot bind it), not a miss."""
        store.create_run(make_run(agent="a", session_id="s"))
        calls = {
            "get_run": lambda bad: store.get_run(bad),
            "list_runs agent": lambda bad: store.list_runs(agent=bad),
            "list_runs session_id": lambda bad: store.list_runs(session_id=bad),
            "claimable_runs": lambda bad: store.claimable_runs(agents=["a", bad], now=time.time()),
            "claimable_runs after": lambda bad: store.claimable_runs(agents=None, now=time.time(), after=bad),
        }
        for bad in ("\ud800", "a\udcff"):
            with pytest.raises(ConfigurationError, match=r"not valid UTF-8.*lone surrogate"):
                calls[lookup](bad)

    _RUN_FIELDS = ("framework", "agent", "session_id", "idempotency_key", "parent_run_id", "error", "lease_owner")

    @pytest.mark.parametrize("write", [
        "create_run id", *(f"create_run {field}" for field in _RUN_FIELDS),
        "update_run run_id", "update_run error", "update_run error, stale epoch",
        "cancel_run run_id", "cancel_run reason", "cancel_run reason, ended run",
        "reopen_run run_id", "reopen_run owner",
        "claim_run run_id", "claim_run owner", "claim_run owner, stale epoch", "claim_run owner, ended run",
        "renew_lease run_id",
    ])  # fmt: skip
    def test_run_writes_of_text_that_is_not_utf8_are_refused(self, store: Store, write: str) -> None:
        """A lone surrogate in an id, a name or a message (not in a JSON value, where it is kept
        escaped) is refused as SQLite and PostgreSQL, which take text as UTF-8, refuse to bind
        it: before the other checks of the write (a stale epoch, an ended run), changing nothing."""
        bad = "a\udcff"
        run = self.claimed(store)
        ended = self.claimed(store)
        store.update_run(ended.id, epoch=1, status=RunStatus.FAILED, error="boom", release_lease=True)
        before = [r.model_dump() for r in store.list_runs()]
        later = time.time() + 60
        calls: dict[str, Callable[[], object]] = {
            # (pydantic refuses a lone surrogate in ``Run(id=...)``: a record built without validation)
            "create_run id": lambda: store.create_run(make_run().model_copy(update={"id": bad})),
            **{f"create_run {field}": partial(lambda field: store.create_run(make_run(**{field: bad})), field)
               for field in self._RUN_FIELDS},
            "update_run run_id": lambda: store.update_run(bad, epoch=1),
            "update_run error": lambda: store.update_run(run.id, epoch=1, error=bad),
            "update_run error, stale epoch": lambda: store.update_run(run.id, epoch=7, error=bad),
            "cancel_run run_id": lambda: store.cancel_run(bad),
            "cancel_run reason": lambda: store.cancel_run(run.id, reason=bad),
            "cancel_run reason, ended run": lambda: store.cancel_run(ended.id, reason=bad),
            "reopen_run run_id": lambda: store.reopen_run(bad, owner=None, lease_expires_at=None),
            "reopen_run owner": lambda: store.reopen_run(ended.id, owner=bad, lease_expires_at=later),
            "claim_run run_id": lambda: store.claim_run(bad, owner="w2", expected_epoch=1, lease_expires_at=later),
            "claim_run owner": lambda: store.claim_run(run.id, owner=bad, expected_epoch=1, lease_expires_at=later),
            "claim_run owner, stale epoch": lambda: store.claim_run(
                run.id, owner=bad, expected_epoch=5, lease_expires_at=later),
            "claim_run owner, ended run": lambda: store.claim_run(
                ended.id, owner=bad, expected_epoch=1, lease_expires_at=later),
            "renew_lease run_id": lambda: store.renew_lease(bad, epoch=1, lease_expires_at=later),
        }
        refused_as_not_utf8(store, calls[write])
        assert [r.model_dump() for r in store.list_runs()] == before

    def test_list_runs_before_custom_ids_sort_as_text(self, store: Store) -> None:
        for rid in ("b", "a-2", "a-10", "Z", "é", "😀"):
            store.create_run(make_run(id=rid))
        order = sorted(("b", "a-2", "a-10", "Z", "é", "😀"), reverse=True)  # by code point, as UTF-8 bytes
        assert [r.id for r in store.list_runs()] == order
        assert [r.id for r in store.list_runs(before="é")] == order[2:]
        assert [r.id for r in store.list_runs(before="a-2")] == ["a-10", "Z"]

    @pytest.mark.parametrize("filters", [
        {}, {"agent": "a"}, {"status": RunStatus.RUNNING}, {"session_id": "t1"},
        {"agent": "a", "status": RunStatus.PENDING, "session_id": "t1"},
    ], ids=["all", "agent", "status", "session", "combined"])  # fmt: skip
    def test_list_runs_paging_visits_every_run_once(self, store: Store, filters: dict[str, object]) -> None:
        for n in range(25):  # combined: agent a, session t1, pending is n in (6, 12, 18, 24)
            run = store.create_run(make_run(agent="ab"[n % 2], session_id=("t1", "t2", None)[n % 3]))[0]
            if n % 5 == 0:
                claimed = store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 60)
                store.update_run(run.id, epoch=claimed.lease_epoch, status=RunStatus.RUNNING)
        expected = [r.id for r in store.list_runs(**filters)]  # type: ignore[arg-type]
        assert len(expected) >= 4, filters
        pages: list[list[str]] = []
        before: str | None = None
        for _ in range(len(expected)):  # bounded: a store ignoring before would page forever
            page = [r.id for r in store.list_runs(limit=2, before=before, **filters)]  # type: ignore[arg-type]
            if not page:
                break
            pages.append(page)
            before = page[-1]
        assert [i for page in pages for i in page] == expected  # each once, in order, none skipped
        assert all(len(page) == 2 for page in pages[:-1])

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

    def test_claimable_runs_after(self, store: Store) -> None:
        """``after`` pages through the claimable runs oldest first (keyset paging): a worker looks
        past runs it cannot take up."""
        runs = [store.create_run(make_run(agent="a" if i % 2 else "b"))[0] for i in range(6)]
        ids = sorted(r.id for r in runs)
        now = time.time()
        assert [r.id for r in store.claimable_runs(agents=None, now=now, after=ids[1])] == ids[2:]
        assert [r.id for r in store.claimable_runs(agents=None, now=now, after=ids[1], limit=2)] == ids[2:4]
        assert store.claimable_runs(agents=None, now=now, after=ids[-1]) == []
        assert [r.id for r in store.claimable_runs(agents=None, now=now, after=None, limit=2)] == ids[:2]
        assert [r.id for r in store.claimable_runs(agents=None, now=now, after="")] == ids  # before every id
        a_ids = sorted(r.id for r in runs if r.agent == "a")
        assert [r.id for r in store.claimable_runs(agents=["a"], now=now, after=a_ids[0], limit=1)] == a_ids[1:2]
        assert [r.id for r in store.claimable_runs(agents=["a"], now=now, after=a_ids[0])] == a_ids[1:]
        assert store.claimable_runs(agents=["a"], now=now, after=a_ids[-1]) == []
        assert store.claimable_runs(agents=[], now=now, after=ids[0]) == []

    def test_claimable_runs_after_a_position(self, store: Store) -> None:
        """``after`` is a position, not a lookup: an id no run has (one between two runs, or a
        run's that is no longer claimable) pages on from there."""
        first, second, third = (store.create_run(make_run(id=f"run-{n}"))[0] for n in (1, 3, 5))
        now = time.time()
        assert [r.id for r in store.claimable_runs(agents=None, now=now, after="run-2")] == [second.id, third.id]
        store.cancel_run(second.id)
        assert [r.id for r in store.claimable_runs(agents=None, now=now, after=second.id)] == [third.id]
        assert [r.id for r in store.claimable_runs(agents=None, now=now, after="run-0")] == [first.id, third.id]
