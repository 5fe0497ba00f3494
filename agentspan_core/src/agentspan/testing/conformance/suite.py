"""The full store conformance suite: the topic mixins combined, plus isolation and concurrency tests."""

from __future__ import annotations

import threading
import time

from agentspan.records import StepResult, StepStatus
from agentspan.stores.base import Store
from agentspan.testing.conformance.approvals import ApprovalConformance
from agentspan.testing.conformance.records import make_approval, make_run, make_step
from agentspan.testing.conformance.reopen import ReopenConformance
from agentspan.testing.conformance.retention import RetentionConformance
from agentspan.testing.conformance.runs import RunConformance
from agentspan.testing.conformance.steps import StepConformance
from agentspan.testing.conformance.supersede import SupersedeConformance

__all__ = ["StoreConformance"]


class StoreConformance(RunConformance, StepConformance, ApprovalConformance, SupersedeConformance,
                       RetentionConformance, ReopenConformance):
    """Contract tests every `Store` passes; subclasses provide the ``store`` fixture."""

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
