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

The tests are grouped by topic: `runs` (runs and leases), `steps` (the step journal), `supersede`
(journal entries moved aside by `on_divergence="live"`), `retention` (deleting ended runs), `reopen`
(retrying failed runs), `approvals`,
and `suite` (isolation, concurrency, and `StoreConformance`, which combines them); `records` holds
the record builders (`make_run`, `make_step`, `make_approval`) and shared helpers.
`CheckpointConformance` (checkpoint storage; its delete, copy and prune tests in
`checkpoint_maintenance`; builders `make_checkpoint` and `make_checkpoint_write` in `records`) is a
separate mixin, not yet part of `StoreConformance`.
"""

from agentspan.testing.conformance.approvals import ApprovalConformance
from agentspan.testing.conformance.checkpoints import CheckpointConformance
from agentspan.testing.conformance.records import (
    PAYLOAD,
    ConformanceBase,
    make_approval,
    make_checkpoint,
    make_checkpoint_write,
    make_run,
    make_step,
)
from agentspan.testing.conformance.reopen import ReopenConformance
from agentspan.testing.conformance.retention import RetentionConformance
from agentspan.testing.conformance.runs import RunConformance
from agentspan.testing.conformance.steps import StepConformance
from agentspan.testing.conformance.suite import StoreConformance
from agentspan.testing.conformance.supersede import SupersedeConformance

__all__ = [
    "PAYLOAD",
    "ApprovalConformance",
    "CheckpointConformance",
    "ConformanceBase",
    "ReopenConformance",
    "RetentionConformance",
    "RunConformance",
    "StepConformance",
    "StoreConformance",
    "SupersedeConformance",
    "make_approval",
    "make_checkpoint",
    "make_checkpoint_write",
    "make_run",
    "make_step",
]
