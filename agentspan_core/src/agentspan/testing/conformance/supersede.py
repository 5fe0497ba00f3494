"""Conformance tests for `Store.supersede_steps`: journal entries moved aside, kept in the trail."""

from __future__ import annotations

import time

import pytest

from agentspan.errors import ConfigurationError, LeaseLostError, StepNotFound
from agentspan.records import ApprovalStatus, Run, RunStatus, StepKind, StepResult, StepStatus
from agentspan.stores.base import Store
from agentspan.testing.conformance.records import ConformanceBase, make_approval, make_step

__all__ = ["SupersedeConformance"]

PREFIX = "superseded:1/"
REASON = "the run diverged at step 'b'"


class SupersedeConformance(ConformanceBase):
    """Contract tests for `Store.supersede_steps`."""

    def journal(self, store: Store) -> Run:
        """A claimed run with ``a`` (completed llm step), ``b`` (in flight, pending approval), ``c``
        (completed, approved), a pending approval of ``c/call:x_1`` (no step) and one of ``cc``."""
        run = self.claimed(store)
        store.start_step(make_step(run.id, "a", 0, kind=StepKind.LLM, provider="openai", model="m"), epoch=1)
        store.finish_step(run.id, "a", StepResult(status=StepStatus.COMPLETED, output="A", input_tokens=3,
                                                  output_tokens=4, cost_usd=0.5), epoch=1)
        store.start_step(make_step(run.id, "b", 1), epoch=1)
        store.request_approval(make_approval(run.id, "b"), epoch=1)
        store.start_step(make_step(run.id, "c", 2, kind=StepKind.LLM), epoch=1)
        store.finish_step(run.id, "c", StepResult(status=StepStatus.COMPLETED, output={"c": [1]}, input_tokens=10,
                                                  output_tokens=20, cost_usd=1.0), epoch=1)
        approved = store.request_approval(make_approval(run.id, "c"), epoch=1)
        store.decide_approval(approved.id, approved=True, by="ann", reason=None, decided_at=time.time())
        store.request_approval(make_approval(run.id, "c/call:x_1"), epoch=1)  # a call c asked for, no step yet
        store.request_approval(make_approval(run.id, "cc"), epoch=1)  # not under c: stays
        store.update_run(run.id, epoch=1, status=RunStatus.RUNNING)
        return run

    def test_supersede_moves_steps_and_their_approvals(self, store: Store) -> None:
        run = self.journal(store)
        before = {s.key: s for s in store.list_steps(run.id)}
        totals = store.get_run(run.id)
        store.supersede_steps(run.id, ["b", "c"], prefix=PREFIX, reason=REASON, epoch=1)
        after = store.list_steps(run.id)
        assert [(s.key, s.seq) for s in after] == [("a", 0), (PREFIX + "b", 1), (PREFIX + "c", 2)]
        a, b, c = after
        assert a.model_dump() == before["a"].model_dump()
        assert (b.status, b.error) == (StepStatus.FAILED, REASON)  # it never ends now
        assert c.model_dump() == before["c"].model_copy(update={"key": PREFIX + "c"}).model_dump()
        run_now = store.get_run(run.id)
        assert (run_now.steps, run_now.input_tokens, run_now.output_tokens, run_now.cost_usd) == (
            totals.steps, totals.input_tokens, totals.output_tokens, totals.cost_usd) == (3, 13, 24, 1.5)
        assert store.find_approval(run.id, "b") is None and store.find_approval(run.id, "c") is None
        pending = store.find_approval(run.id, PREFIX + "b")
        assert pending is not None and (pending.status, pending.reason) == (ApprovalStatus.EXPIRED, REASON)
        assert pending.decided_at is not None
        approved = store.find_approval(run.id, PREFIX + "c")
        assert approved is not None and (approved.status, approved.decided_by) == (ApprovalStatus.APPROVED, "ann")
        assert store.get_approval(approved.id).step_key == PREFIX + "c"
        child = store.find_approval(run.id, PREFIX + "c/call:x_1")
        assert child is not None and child.status == ApprovalStatus.EXPIRED
        assert store.find_approval(run.id, "c/call:x_1") is None
        assert store.find_approval(run.id, "cc").status == ApprovalStatus.PENDING  # type: ignore[union-attr]
        # the keys are free again: the run journals its live calls there
        store.start_step(make_step(run.id, "b", 3, input={"new": True}), epoch=1)
        store.finish_step(run.id, "b", StepResult(status=StepStatus.COMPLETED, output="B2"), epoch=1)
        assert {s.key: s.output for s in store.list_steps(run.id)}["b"] == "B2"
        assert store.get_run(run.id).steps == 4

    def test_supersede_retried_changes_nothing(self, store: Store) -> None:
        run = self.journal(store)
        store.supersede_steps(run.id, ["b", "c"], prefix=PREFIX, reason=REASON, epoch=1)
        once = self.snapshot(store, run.id), [a.model_dump() for a in store.list_approvals(run_id=run.id)]
        store.supersede_steps(run.id, ["b", "c"], prefix=PREFIX, reason="again", epoch=1)
        assert (self.snapshot(store, run.id), [a.model_dump() for a in store.list_approvals(run_id=run.id)]) == once

    def test_supersede_refusals_change_nothing(self, store: Store) -> None:
        run = self.journal(store)
        before = self.snapshot(store, run.id), [a.model_dump() for a in store.list_approvals(run_id=run.id)]
        with pytest.raises(StepNotFound):
            store.supersede_steps(run.id, ["b", "missing"], prefix=PREFIX, reason=REASON, epoch=1)
        with pytest.raises(ConfigurationError):
            store.supersede_steps(run.id, ["b"], prefix="", reason=REASON, epoch=1)
        assert (self.snapshot(store, run.id), [a.model_dump() for a in store.list_approvals(run_id=run.id)]) == before
        store.start_step(make_step(run.id, PREFIX + "c", 5), epoch=1)  # the new key is taken
        before = self.snapshot(store, run.id), [a.model_dump() for a in store.list_approvals(run_id=run.id)]
        with pytest.raises(ConfigurationError):
            store.supersede_steps(run.id, ["b", "c"], prefix=PREFIX, reason=REASON, epoch=1)
        assert (self.snapshot(store, run.id), [a.model_dump() for a in store.list_approvals(run_id=run.id)]) == before
        store.request_approval(make_approval(run.id, "other/c/call:x_1"), epoch=1)  # where c's child would go
        store.update_run(run.id, epoch=1, status=RunStatus.RUNNING)
        before = self.snapshot(store, run.id), [a.model_dump() for a in store.list_approvals(run_id=run.id)]
        with pytest.raises(ConfigurationError):
            store.supersede_steps(run.id, ["c"], prefix="other/", reason=REASON, epoch=1)  # ("other/c" is free)
        assert (self.snapshot(store, run.id), [a.model_dump() for a in store.list_approvals(run_id=run.id)]) == before
        store.claim_run(run.id, owner="w2", expected_epoch=1, lease_expires_at=time.time() + 60)
        before = self.snapshot(store, run.id), [a.model_dump() for a in store.list_approvals(run_id=run.id)]
        with pytest.raises(LeaseLostError):
            store.supersede_steps(run.id, ["b"], prefix=PREFIX, reason=REASON, epoch=1)
        assert (self.snapshot(store, run.id), [a.model_dump() for a in store.list_approvals(run_id=run.id)]) == before
