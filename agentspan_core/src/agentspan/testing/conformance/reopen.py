"""Conformance tests for `Store.reopen_run`: a failed run taken up again, its journal kept."""

from __future__ import annotations

import time

import pytest

from agentspan.errors import LeaseLostError, RunNotFound, RunStateError
from agentspan.records import Run, RunStatus, StepResult, StepStatus
from agentspan.stores.base import Store
from agentspan.stores.reopening import RETRIES, retries_of
from agentspan.testing.conformance.records import ConformanceBase, make_approval, make_step

__all__ = ["ReopenConformance"]


class ReopenConformance(ConformanceBase):
    """Contract tests for `Store.reopen_run`."""

    def failed(self, store: Store) -> Run:
        """A run with a completed step, a failed one and a decided approval, then ended ``failed``."""
        run = self.claimed(store, options={"max_turns": 5})
        store.start_step(make_step(run.id, "llm:0", 0), epoch=1)
        store.finish_step(run.id, "llm:0", StepResult(status=StepStatus.COMPLETED, output="a", input_tokens=7), epoch=1)
        store.start_step(make_step(run.id, "llm:0/call:0", 1), epoch=1)
        store.finish_step(run.id, "llm:0/call:0", StepResult(status=StepStatus.FAILED, error="boom"), epoch=1)
        approval = store.request_approval(make_approval(run.id, "llm:0/call:1"), epoch=1)
        store.decide_approval(approval.id, approved=True, by="ann", reason=None, decided_at=time.time())
        return store.update_run(run.id, epoch=1, status=RunStatus.FAILED, error="ValueError: boom",
                                release_lease=True)

    def test_reopen_with_an_owner_runs_it_under_a_new_lease_and_keeps_the_journal(self, store: Store) -> None:
        failed = self.failed(store)
        steps_before = [s.model_dump() for s in store.list_steps(failed.id)]
        approvals_before = [a.model_dump() for a in store.list_approvals(run_id=failed.id)]
        expires = time.time() + 60
        reopened = store.reopen_run(failed.id, owner="w2", lease_expires_at=expires,
                                    options={"agentspan.on_divergence": "live"})
        assert reopened.status is RunStatus.RUNNING
        assert (reopened.lease_owner, reopened.lease_expires_at) == ("w2", pytest.approx(expires))
        assert reopened.lease_epoch == failed.lease_epoch + 1
        assert (reopened.error, reopened.output) == (None, None)
        (retry,) = reopened.options.pop(RETRIES)  # the failure it was retried from is kept
        assert retry == {"error": "ValueError: boom", "failed_at": pytest.approx(failed.updated_at),
                         "retried_at": pytest.approx(reopened.updated_at), "owner": "w2", "by": None}
        assert reopened.options == {"max_turns": 5, "agentspan.on_divergence": "live"}
        assert reopened.updated_at >= failed.updated_at
        reopened.options[RETRIES] = [retry]
        assert store.get_run(failed.id).model_dump() == reopened.model_dump()
        assert [s.model_dump() for s in store.list_steps(failed.id)] == steps_before
        assert [a.model_dump() for a in store.list_approvals(run_id=failed.id)] == approvals_before
        assert (reopened.steps, reopened.input_tokens) == (2, 7)
        # the new epoch writes; the failed attempt's epoch is fenced off
        store.start_step(make_step(failed.id, "llm:0/call:0", 1, attempt=2), epoch=reopened.lease_epoch)
        with pytest.raises(LeaseLostError):
            store.update_run(failed.id, epoch=failed.lease_epoch, status=RunStatus.COMPLETED)

    def test_reopen_without_an_owner_leaves_it_pending_for_a_worker(self, store: Store) -> None:
        failed = self.failed(store)
        reopened = store.reopen_run(failed.id, owner=None, lease_expires_at=time.time() + 60)
        assert reopened.status is RunStatus.PENDING
        assert (reopened.lease_owner, reopened.lease_expires_at) == (None, None)
        assert reopened.options == {"max_turns": 5, RETRIES: [
            {"error": "ValueError: boom", "failed_at": pytest.approx(failed.updated_at),
             "retried_at": pytest.approx(reopened.updated_at), "owner": None, "by": None}]}
        assert [r.id for r in store.claimable_runs(agents=None, now=time.time())] == [failed.id]
        claimed = store.claim_run(failed.id, owner="w3", expected_epoch=reopened.lease_epoch,
                                  lease_expires_at=time.time() + 60)
        assert (claimed.lease_owner, claimed.lease_epoch) == ("w3", reopened.lease_epoch + 1)

    @pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.RUNNING,
                                        RunStatus.WAITING])
    def test_reopen_refuses_a_run_that_is_not_failed_and_changes_nothing(self, store: Store,
                                                                         status: RunStatus) -> None:
        run = self.claimed(store)
        if status is RunStatus.CANCELLED:
            store.cancel_run(run.id, reason="no")
        else:
            store.update_run(run.id, epoch=1, status=status, release_lease=status.terminal)
        before = store.get_run(run.id).model_dump()
        with pytest.raises(RunStateError, match=f"is {status.value}; only a failed run can be retried"):
            store.reopen_run(run.id, owner="w2", lease_expires_at=time.time() + 60, options={"x": 1})
        assert store.get_run(run.id).model_dump() == before

    def test_each_retry_appends_the_failure_it_retried_from(self, store: Store) -> None:
        failed = self.failed(store)
        first = store.reopen_run(failed.id, owner="w2", lease_expires_at=time.time() + 60,
                                 options={RETRIES: "a caller cannot rewrite the history"})
        again = store.update_run(failed.id, epoch=first.lease_epoch, status=RunStatus.FAILED,
                                 error="KeyError: 'x'", release_lease=True)
        second = store.reopen_run(failed.id, owner=None, lease_expires_at=None)
        history = second.options[RETRIES]
        assert [(h["error"], h["owner"]) for h in history] == [("ValueError: boom", "w2"), ("KeyError: 'x'", None)]
        assert history[1]["failed_at"] == pytest.approx(again.updated_at)
        assert history[0]["retried_at"] <= history[1]["failed_at"] <= history[1]["retried_at"]

    def test_reopen_records_who_asked_for_the_retry(self, store: Store) -> None:
        failed = self.failed(store)
        reopened = store.reopen_run(failed.id, owner=None, lease_expires_at=None, by="cli:ann")
        (retry,) = reopened.options[RETRIES]
        assert (retry["owner"], retry["by"]) == (None, "cli:ann")
        assert store.get_run(failed.id).options[RETRIES] == [retry]

    def test_a_history_entry_from_before_by_is_kept_as_it_was(self, store: Store) -> None:
        old = {"error": "E: old", "failed_at": 1.0, "retried_at": 2.0, "owner": None}  # written without "by"
        run = self.claimed(store, options={RETRIES: [old]})
        store.update_run(run.id, epoch=1, status=RunStatus.FAILED, error="E: new", release_lease=True)
        reopened = store.reopen_run(run.id, owner=None, lease_expires_at=None, by="api:admin")
        assert reopened.options[RETRIES][0] == old
        assert [(h["error"], h["by"]) for h in retries_of(reopened.options)] == [("E: old", None),
                                                                                 ("E: new", "api:admin")]

    def test_reopen_of_an_unknown_run(self, store: Store) -> None:
        with pytest.raises(RunNotFound):
            store.reopen_run("no-such-run", owner=None, lease_expires_at=None)
