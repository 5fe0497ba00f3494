"""`Handle`: a run seen from this or any other process (status, result, journal, approvals)."""

from __future__ import annotations

import concurrent.futures
import math
import time
from typing import TYPE_CHECKING, Any

from agentspan import approvals
from agentspan.attempt import Counters
from agentspan.config import get_store, settings, time_limit
from agentspan.errors import ConfigurationError, RunCancelledError, RunFailed
from agentspan.records import JSON, Approval, Run, RunStatus, Step
from agentspan.stores.base import Store

if TYPE_CHECKING:
    from agentspan.executor import Outcome


class Handle:
    """A run, seen from this or any other process.

    A handle from `start`/`resume` also holds the live execution in this process, so `result`
    returns the framework's own result object; a handle from `get` reads the store only.
    """

    def __init__(self, run_id: str, *, store: Store | None = None,
                 future: concurrent.futures.Future[Outcome] | None = None) -> None:
        self.id = run_id
        self._store = store
        self._future = future

    @property
    def store(self) -> Store:
        """The store this handle reads."""
        return self._store or get_store(create=False)

    def __repr__(self) -> str:
        return f"<agentspan.Handle {self.id}>"

    def run(self) -> Run:
        """Returns the run record as stored now."""
        return self.store.get_run(self.id)

    def status(self) -> RunStatus:
        """Returns the run's status now."""
        return self.run().status

    def counters(self) -> Counters | None:
        """Calls replayed vs. made live by this process's execution (None for `get` handles)."""
        if self._future is None or not self._future.done() or self._future.exception():
            return None
        return self._future.result().counters

    def result(self, timeout: float | None = None) -> Any:
        """Waits for the run to end and returns its result.

        From the executing process this is the framework's own result (an openai-agents
        ``RunResult``, ...); from another process, the JSON output stored on the run.

        Raises:
            TimeoutError: Not ended within ``timeout`` seconds.
            RunFailed: The run failed (from another process; the executing process's handle raises
                the run's own error, as the framework's entry point would).
            RunCancelledError: The run was cancelled.
            LeaseLostError: This process's execution lost the run to another process.
        """
        limit = time_limit("timeout", timeout)
        if limit == math.inf:
            limit = None
        if self._future is not None:
            try:
                outcome = self._future.result(limit)
            except concurrent.futures.TimeoutError:
                raise TimeoutError(f"run {self.id!r} is still {self.status().value} after {timeout}s") from None
            if outcome.status is RunStatus.COMPLETED:
                return outcome.result
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            run = self.run()
            if run.status is RunStatus.COMPLETED:
                return run.output
            if run.status is RunStatus.FAILED:
                raise RunFailed(run.id, run.error)
            if run.status is RunStatus.CANCELLED:
                raise RunCancelledError(run.id, run.error)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.id!r} is still {run.status.value} after {timeout}s")
            time.sleep(settings().poll_interval)

    def pending_approvals(self) -> list[Approval]:
        """Returns the approvals the run waits on."""
        self.run()  # RunNotFound for an unknown id
        return approvals.pending_for_run(self.store, self.id)

    def approve(self, approval_id: str | None = None, *, by: str | None = None,
                reason: str | None = None) -> Approval:
        """Approves a pending tool call (the only one when ``approval_id`` is None).

        Raises:
            NoPendingApproval: The run waits on nothing.
            ApprovalConflict: Already decided.
        """
        self.run()
        return approvals.decide(self.store, self.id, approval_id, approved=True, by=by, reason=reason)

    def reject(self, approval_id: str | None = None, *, by: str | None = None,
               reason: str | None = None) -> Approval:
        """Rejects a pending tool call; the model is told (or the run stops, per the tool)."""
        self.run()
        return approvals.decide(self.store, self.id, approval_id, approved=False, by=by, reason=reason)

    def cancel(self, reason: str | None = None) -> Run:
        """Cancels the run; the executing process stops at its next journal write."""
        if reason is not None and not isinstance(reason, str):
            raise ConfigurationError(f"reason of type {type(reason).__name__}: expected a str or None")
        return self.store.cancel_run(self.id, reason=reason)

    def steps(self) -> list[Step]:
        """Returns the run's journal, in order."""
        return self.store.list_steps(self.id)

    def usage(self) -> dict[str, JSON]:
        """Returns the run's totals: tokens, cost and step count."""
        run = self.run()
        return {"input_tokens": run.input_tokens, "output_tokens": run.output_tokens,
                "cost_usd": run.cost_usd, "steps": run.steps}
