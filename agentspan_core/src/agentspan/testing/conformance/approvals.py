"""Conformance tests for approvals: request, decide (once, before expiry), find, list, announce."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import pytest

from agentspan.errors import ApprovalConflict, ApprovalNotFound, ConfigurationError
from agentspan.records import Approval, ApprovalStatus, RunStatus
from agentspan.stores.base import CANCELLED_RUN_APPROVALS, Store
from agentspan.testing.conformance.records import ConformanceBase, make_approval, refused_as_not_utf8

__all__ = ["ApprovalConformance"]


class ApprovalConformance(ConformanceBase):
    """Contract tests for the approval methods of a `Store`."""

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

    @pytest.mark.parametrize("how", ["cancel_run", "update_run"])
    def test_cancelling_a_run_expires_its_pending_approvals_only(self, store: Store, how: str) -> None:
        run = self.claimed(store)
        decided = store.request_approval(make_approval(run.id, "a"), epoch=1)
        store.decide_approval(decided.id, approved=True, by="ann", reason="ok", decided_at=1.0)
        pending = store.request_approval(make_approval(run.id, "b"), epoch=1)
        other = self.claimed(store)
        elsewhere = store.request_approval(make_approval(other.id, "a"), epoch=1)
        if how == "cancel_run":
            store.cancel_run(run.id, reason="stop")
        else:
            store.update_run(run.id, epoch=1, status=RunStatus.CANCELLED, release_lease=True)
        expired = store.get_approval(pending.id)
        assert (expired.status, expired.reason, expired.decided_by) == (
            ApprovalStatus.EXPIRED, CANCELLED_RUN_APPROVALS, None)
        assert expired.decided_at is not None
        with pytest.raises(ApprovalConflict):
            store.decide_approval(pending.id, approved=True, by="bob", reason=None, decided_at=time.time())
        assert store.get_approval(decided.id).status is ApprovalStatus.APPROVED  # a decision stays
        assert store.get_approval(elsewhere.id).status is ApprovalStatus.PENDING  # other runs' too
        assert [a.id for a in store.list_approvals(status=ApprovalStatus.PENDING.value)] == [elsewhere.id]

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

    def test_list_approvals_before_pages_newest_first(self, store: Store) -> None:
        run = self.claimed(store)
        ids = [store.request_approval(make_approval(run.id, f"s{n}"), epoch=1).id for n in range(5)]
        newest_first = ids[::-1]
        assert [a.id for a in store.list_approvals(before=ids[3])] == newest_first[2:]  # strictly before
        assert [a.id for a in store.list_approvals(before=ids[3], limit=1)] == [ids[2]]
        assert store.list_approvals(before=ids[0]) == []
        assert store.list_approvals(before=ids[3], limit=0) == []
        # a position, not a lookup: an id that names no approval (here: one sorting between two) pages too
        assert [a.id for a in store.list_approvals(before=ids[3] + "!")] == newest_first[1:]
        assert [a.id for a in store.list_approvals(before="\uffff")] == newest_first
        assert store.list_approvals(before="") == []

    def test_list_approvals_pages_cover_each_approval_once_with_the_filters(self, store: Store) -> None:
        r1, r2 = self.claimed(store), self.claimed(store)
        made = [store.request_approval(make_approval((r1, r2)[n % 2].id, f"s{n}"), epoch=1) for n in range(9)]
        for a in made[::3]:
            store.decide_approval(a.id, approved=False, by=None, reason=None, decided_at=time.time())
        for run_id, status in [(None, None), (r1.id, None), (None, "pending"), (r2.id, "pending"), (r1.id, "rejected")]:
            expected = [a.id for a in store.list_approvals(run_id=run_id, status=status, limit=-1)]
            assert expected == sorted(expected, reverse=True) and expected  # newest (greatest id) first
            seen: list[str] = []
            before: str | None = None
            for _ in range(len(expected) + 1):  # bounded: a page repeating itself would loop
                page = store.list_approvals(run_id=run_id, status=status, limit=2, **({} if before is None
                                                                                     else {"before": before}))
                seen += [a.id for a in page]
                if len(page) < 2:
                    break
                before = page[-1].id
            assert seen == expected, (run_id, status)  # every approval exactly once, in order
            assert all((run_id is None or a.run_id == run_id) and (status is None or a.status == status)
                       for a in store.list_approvals(run_id=run_id, status=status, before=expected[0]))

    def test_list_approvals_before_that_is_not_utf8_is_refused(self, store: Store) -> None:
        run = self.claimed(store)
        store.request_approval(make_approval(run.id, "s"), epoch=1)
        for before in ("\ud800", "a\udcff"):  # a lone surrogate sorts nowhere among UTF-8 ids
            with pytest.raises(ConfigurationError, match=r"not valid UTF-8.*lone surrogate"):
                store.list_approvals(before=before)

    @pytest.mark.parametrize("lookup", ["get_approval", "find_approval run_id", "find_approval step_key",
                                        "list_approvals run_id", "list_approvals status"])
    def test_approval_lookups_by_text_that_is_not_utf8_are_refused(self, store: Store, lookup: str) -> None:
        """A lone surrogate is no stored id, key or status: an error (as SQLite and PostgreSQL,
        which take text as UTF-8, cannot bind it), not a miss."""
        run = self.claimed(store)
        approval = store.request_approval(make_approval(run.id, "tool:0"), epoch=1)
        calls = {
            "get_approval": lambda bad: store.get_approval(approval.id + bad),
            "find_approval run_id": lambda bad: store.find_approval(run.id + bad, "tool:0"),
            "find_approval step_key": lambda bad: store.find_approval(run.id, "tool:0" + bad),
            "list_approvals run_id": lambda bad: store.list_approvals(run_id=run.id + bad),
            "list_approvals status": lambda bad: store.list_approvals(status=bad),
        }
        for bad in ("\ud800", "\udcff"):
            with pytest.raises(ConfigurationError, match=r"not valid UTF-8.*lone surrogate"):
                calls[lookup](bad)

    @pytest.mark.parametrize("write", [
        "request_approval id", "request_approval run_id", "request_approval step_key", "request_approval tool",
        "request_approval args_hash", "decide_approval approval_id", "decide_approval by", "decide_approval reason",
        "decide_approval by, decided already", "claim_announcement approval_id", "claim_announcement claimant",
    ])  # fmt: skip
    def test_approval_writes_of_text_that_is_not_utf8_are_refused(self, store: Store, write: str) -> None:
        """A lone surrogate in an id, a key, a name or a reason (not in the JSON ``args``, where it
        is kept escaped) is refused as SQLite and PostgreSQL, which take text as UTF-8, refuse to
        bind it, changing nothing (a decision: before its approval is found, or found decided)."""
        bad = "a\udcff"
        run = self.claimed(store)
        pending = store.request_approval(make_approval(run.id, "tool:0"), epoch=1)
        decided = store.request_approval(make_approval(run.id, "tool:1"), epoch=1)
        store.decide_approval(decided.id, approved=True, by="ann", reason=None, decided_at=time.time())
        before = [a.model_dump() for a in store.list_approvals()], store.get_run(run.id).model_dump()

        def request(**fields: object) -> Approval:
            return store.request_approval(make_approval(run.id, "tool:2").model_copy(update=fields), epoch=1)

        def decide(approval_id: str, by: str | None = "ann", reason: str | None = None) -> Approval:
            return store.decide_approval(approval_id, approved=False, by=by, reason=reason, decided_at=time.time())

        calls: dict[str, Callable[[], object]] = {
            **{f"request_approval {field}": partial(lambda field: request(**{field: bad}), field)
               for field in ("id", "run_id", "step_key", "tool", "args_hash")},
            "decide_approval approval_id": lambda: decide(pending.id + bad),
            "decide_approval by": lambda: decide(pending.id, by=bad),
            "decide_approval reason": lambda: decide(pending.id, reason=bad),
            "decide_approval by, decided already": lambda: decide(decided.id, by=bad),
            "claim_announcement approval_id": lambda: store.claim_announcement(pending.id + bad, claimant="r:1"),
            "claim_announcement claimant": lambda: store.claim_announcement(pending.id, claimant=bad),
        }
        refused_as_not_utf8(store, calls[write])
        assert ([a.model_dump() for a in store.list_approvals()], store.get_run(run.id).model_dump()) == before
        assert store.claim_announcement(pending.id, claimant="r:2") is True  # no claim was made

    def test_claim_announcement_first_claimant_wins(self, store: Store) -> None:
        run = self.claimed(store)
        approval = store.request_approval(make_approval(run.id, "s"), epoch=1)
        other = store.request_approval(make_approval(run.id, "t"), epoch=1)
        assert store.claim_announcement(approval.id, claimant="replica-a:1") is True
        assert store.claim_announcement(approval.id, claimant="replica-a:1") is True  # the same claimant again
        assert store.claim_announcement(approval.id, claimant="replica-b:7") is False
        assert store.claim_announcement(other.id, claimant="replica-b:7") is True  # claims are per approval
        store.decide_approval(approval.id, approved=True, by="ann", reason=None, decided_at=time.time())
        assert store.claim_announcement(approval.id, claimant="replica-c:2") is False  # kept once decided
        assert store.get_approval(other.id).model_dump() == other.model_dump()  # the record is unchanged
        with pytest.raises(ApprovalNotFound):
            store.claim_announcement("no-such-approval", claimant="replica-a:1")
        for bad in ("", "x" * 201):
            with pytest.raises(ConfigurationError, match="claimant"):
                store.claim_announcement(other.id, claimant=bad)
