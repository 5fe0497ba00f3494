"""The store a mock run executes on: the real store, with approvals decided the moment they are
requested and the journal writes observed (crash tests count them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentspan.records import Approval, ApprovalStatus, RunStatus, Step, StepResult, now
from agentspan.stores.base import Store
from agentspan.stores.checkpoint_contract import CheckpointContract
from agentspan.testing.script import Decision

StepHook = Callable[[str], None]


def _noop(key: str) -> None:
    return None


class MockStore(Store):
    """Delegates everything to ``inner``, except that:

    - an approval is decided by ``decide`` as soon as it is requested (the run never waits);
    - ``on_started(key)`` is called after a step's in-flight record is written, and
      ``on_done(key)`` after a step is journaled completed or failed.

    Args:
        inner: The store the run's records live in.
        decide: Returns the decision on a just-requested approval.
        on_started: Called with a step's key once it is in flight.
        on_done: Called with a step's key once it is journaled.
    """

    def __init__(self, inner: Store, *, decide: Callable[[Approval], Decision],
                 on_started: StepHook = _noop, on_done: StepHook = _noop) -> None:
        self.inner = inner
        self.blocking_io = inner.blocking_io
        self._decide = decide
        self._on_started = on_started
        self._on_done = on_done

    if TYPE_CHECKING:  # set at import by `_delegate` (below), as every other method of the contract
        cancel_run = Store.cancel_run
        claim_announcement = Store.claim_announcement
        claim_run = Store.claim_run
        claimable_runs = Store.claimable_runs
        create_run = Store.create_run
        decide_approval = Store.decide_approval
        find_approval = Store.find_approval
        get_approval = Store.get_approval
        get_run = Store.get_run
        list_approvals = Store.list_approvals
        list_runs = Store.list_runs
        list_steps = Store.list_steps
        renew_lease = Store.renew_lease
        update_run = Store.update_run

    def __repr__(self) -> str:
        return f"MockStore({self.inner!r})"

    def __getattr__(self, name: str) -> Any:  # backend-specific extras (a SQLite store's path, ...)
        return getattr(self.inner, name)

    def request_approval(self, approval: Approval, *, epoch: int) -> Approval:
        requested = self.inner.request_approval(approval, epoch=epoch)
        if requested.status is not ApprovalStatus.PENDING:
            return requested
        decision = self._decide(requested)
        decided = self.inner.decide_approval(requested.id, approved=decision.approved, by=decision.by,
                                             reason=decision.reason, decided_at=now())
        self.inner.update_run(approval.run_id, epoch=epoch, status=RunStatus.RUNNING)
        return decided

    def start_step(self, step: Step, *, epoch: int, durable: bool = True) -> None:
        self.inner.start_step(step, epoch=epoch, durable=durable)
        self._on_started(step.key)

    def finish_step(self, run_id: str, key: str, result: StepResult, *, epoch: int) -> None:
        self.inner.finish_step(run_id, key, result, epoch=epoch)
        self._on_done(key)

    def record_step(self, step: Step, result: StepResult, *, epoch: int) -> None:
        self.inner.record_step(step, result, epoch=epoch)
        self._on_started(step.key)
        self._on_done(step.key)

    def close(self) -> None:
        """Leaves the inner store open (it belongs to the test)."""


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: MockStore, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.inner, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"See `Store.{name}`."
    return method


_CONTRACT = {n for cls in (CheckpointContract, Store) for n in vars(cls)}  # the whole store contract
for _name in [n for n in sorted(_CONTRACT) if not n.startswith("_") and callable(getattr(Store, n))]:
    if _name not in vars(MockStore):
        setattr(MockStore, _name, _delegate(_name))
MockStore.__abstractmethods__ = frozenset()
