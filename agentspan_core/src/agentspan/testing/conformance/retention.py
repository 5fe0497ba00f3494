"""Conformance tests for `Store.delete_runs`: ended runs deleted with their journal and approvals."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentspan.errors import ApprovalNotFound, ConfigurationError, RunNotFound
from agentspan.records import Run, RunStatus, StepResult, StepStatus
from agentspan.stores.base import Store
from agentspan.testing.conformance.records import ConformanceBase, make_approval, make_run, make_step

__all__ = ["RetentionConformance"]


class RetentionConformance(ConformanceBase):
    """Contract tests for `Store.delete_runs`."""

    def ended(self, store: Store, status: RunStatus, **fields: Any) -> Run:
        """A claimed run with a completed step and a decided approval, then ended with ``status``."""
        run = self.claimed(store, **fields)
        store.start_step(make_step(run.id, "tool:0", 0), epoch=1)
        store.finish_step(run.id, "tool:0", StepResult(status=StepStatus.COMPLETED, output=1), epoch=1)
        approval = store.request_approval(make_approval(run.id, "tool:1"), epoch=1)
        store.decide_approval(approval.id, approved=True, by="ann", reason=None, decided_at=time.time())
        if status is RunStatus.CANCELLED:
            return store.cancel_run(run.id, reason="no")
        return store.update_run(run.id, epoch=1, status=status, release_lease=True)

    def kept(self, store: Store, runs: list[Run]) -> list[object]:
        """What a deletion must leave exactly as it was: the runs, journals and approvals."""
        return [(self.snapshot(store, r.id), [a.model_dump() for a in store.list_approvals(run_id=r.id)]) for r in runs]

    def test_delete_runs_deletes_ended_runs_oldest_first_with_journal_and_approvals(self, store: Store) -> None:
        old = [self.ended(store, status, idempotency_key=f"key-{status.value}")
               for status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)]
        running = self.claimed(store)
        waiting = self.claimed(store)
        store.request_approval(make_approval(waiting.id, "tool:9"), epoch=1)
        approvals = [a.id for r in old for a in store.list_approvals(run_id=r.id)]
        time.sleep(0.01)
        cutoff = time.time()
        time.sleep(0.01)
        recent = self.ended(store, RunStatus.COMPLETED)
        keep = [running, waiting, recent]
        before = self.kept(store, keep)
        assert store.delete_runs(ended_before=cutoff) == [r.id for r in old]
        for run in old:
            with pytest.raises(RunNotFound):
                store.get_run(run.id)
            with pytest.raises(RunNotFound):
                store.list_steps(run.id)
            assert store.list_approvals(run_id=run.id) == []
        for approval_id in approvals:
            with pytest.raises(ApprovalNotFound):
                store.get_approval(approval_id)
        assert self.kept(store, keep) == before
        assert {r.id for r in store.list_runs()} == {r.id for r in keep}
        assert store.delete_runs(ended_before=cutoff) == []
        again, created = store.create_run(make_run(idempotency_key="key-completed"))  # the key is free again
        assert created and again.id != old[0].id

    def test_delete_runs_by_status_and_limit(self, store: Store) -> None:
        first, second, failed = (self.ended(store, s) for s in (RunStatus.COMPLETED, RunStatus.COMPLETED,
                                                                  RunStatus.FAILED))
        cutoff = time.time() + 1
        assert store.delete_runs(ended_before=cutoff, statuses=[RunStatus.FAILED]) == [failed.id]
        assert store.delete_runs(ended_before=cutoff, limit=1) == [first.id]
        assert [r.id for r in store.list_runs()] == [second.id]

    def test_delete_runs_refuses_runs_that_have_not_ended(self, store: Store) -> None:
        done = self.ended(store, RunStatus.COMPLETED)
        running = self.claimed(store)
        before = self.kept(store, [done, running])
        for statuses, limit in (([RunStatus.RUNNING], 10), ([RunStatus.COMPLETED, RunStatus.WAITING], 10),
                                ([RunStatus.COMPLETED], 0), (["finished"], 10)):
            with pytest.raises(ConfigurationError):
                store.delete_runs(ended_before=time.time() + 60, statuses=statuses, limit=limit)  # type: ignore[arg-type]
        assert self.kept(store, [done, running]) == before
