"""The in-memory reference store: the contract of `Store` in plain Python, for tests and demos.

Nothing survives the process. Every call holds one lock, so the store is safe to share between
threads; records are copied on the way in and out: JSON values go in through a JSON round trip (a deep
copy that also turns tuples into lists and refuses non-JSON values, as a persistent store would;
the other fields are immutable scalars: checkpoint ``data`` is ``bytes``) and come out deep-copied.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

from agentspan.errors import (
    ConfigurationError,
    LeaseLostError,
    RunCancelledSignal,
    RunNotFound,
    RunStateError,
    StepNotFound,
)
from agentspan.records import (
    JSON,
    Approval,
    ApprovalStatus,
    Run,
    RunStatus,
    Step,
    StepResult,
    StepStatus,
)
from agentspan.stores.base import CANCELLED_RUN_APPROVALS, ENDED, Store, check_deletion
from agentspan.stores.memory_approvals import MemoryApprovals, json_copy, limited, utf8_only
from agentspan.stores.memory_checkpoints import MemoryCheckpoints
from agentspan.stores.reopening import reopen_refusal, reopened_options

_ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)


class MemoryStore(MemoryApprovals, MemoryCheckpoints, Store):
    """Keeps runs, steps, approvals and checkpoints in dictionaries guarded by one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}
        self._by_key: dict[str, str] = {}
        self._steps: dict[str, dict[str, Step]] = {}
        self._approvals: dict[str, Approval] = {}
        self._by_step: dict[tuple[str, str], str] = {}
        self._announced: dict[str, str] = {}
        self._checkpoints = {}
        self._cp_writes = {}

    # ---- helpers (called with the lock held) ----------------------------------------------
    def _run(self, run_id: str) -> Run:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    def _fenced(self, run_id: str, epoch: int, *, cancelling: bool = False) -> Run:
        run = self._run(run_id)
        if run.status == RunStatus.CANCELLED and not cancelling:
            raise RunCancelledSignal(run_id, run.error)
        if run.lease_epoch != epoch:
            raise LeaseLostError(
                f"run {run_id!r} is held at lease epoch {run.lease_epoch}; the write carried epoch {epoch}"
            )
        return run

    # ---- runs -----------------------------------------------------------------------------
    def create_run(self, run: Run) -> tuple[Run, bool]:
        """See `Store.create_run`."""
        stored = run.model_copy(
            update={"input": json_copy(run.input), "output": json_copy(run.output), "options": json_copy(run.options)}
        )
        # Each text refused where SQLite first binds it: the idempotency key it looks up by before
        # anything else, the id before its duplicate check, the others only when the run is new.
        utf8_only(run.idempotency_key)
        with self._lock:
            if run.idempotency_key is not None and run.idempotency_key in self._by_key:
                return self._runs[self._by_key[run.idempotency_key]].model_copy(deep=True), False
            utf8_only(run.id)
            if run.id in self._runs:
                raise ConfigurationError(f"a run with id {run.id!r} already exists")
            utf8_only(run.framework, run.agent, run.error, run.session_id, run.parent_run_id, run.lease_owner)
            self._runs[run.id] = stored
            self._steps[run.id] = {}
            if run.idempotency_key is not None:
                self._by_key[run.idempotency_key] = run.id
            return stored.model_copy(deep=True), True

    def get_run(self, run_id: str) -> Run:
        """See `Store.get_run`."""
        utf8_only(run_id)
        with self._lock:
            return self._run(run_id).model_copy(deep=True)

    def list_runs(
        self, *, status: RunStatus | None = None, agent: str | None = None, limit: int = 100,
        session_id: str | None = None, before: str | None = None,
    ) -> list[Run]:
        """See `Store.list_runs`."""
        utf8_only(agent, session_id, before)  # (a before= holding one is a position no UTF-8 text has)
        with self._lock:
            runs = [
                r
                for r in self._runs.values()
                if (status is None or r.status == status) and (agent is None or r.agent == agent)
                and (session_id is None or r.session_id == session_id) and (before is None or r.id < before)
            ]
            runs.sort(key=lambda r: r.id, reverse=True)
            return [r.model_copy(deep=True) for r in limited(runs, limit)]

    def update_run(
        self,
        run_id: str,
        *,
        epoch: int,
        status: RunStatus | None = None,
        output: JSON = None,
        error: str | None = None,
        release_lease: bool = False,
    ) -> Run:
        """See `Store.update_run`."""
        new_status = None if status is None else RunStatus(status)
        new_output = json_copy(output)
        utf8_only(run_id, error)  # before the fence, as SQLite binds them with it
        with self._lock:
            run = self._fenced(run_id, epoch, cancelling=new_status == RunStatus.CANCELLED)
            if new_status is RunStatus.CANCELLED:
                self._expire_approvals_of(run_id)
            if new_status is not None:
                run.status = new_status
            if new_output is not None:
                run.output = new_output
            if error is not None:
                run.error = error
            if release_lease:
                run.lease_owner = None
                run.lease_expires_at = None
            run.updated_at = time.time()
            return run.model_copy(deep=True)

    def cancel_run(self, run_id: str, *, reason: str | None = None) -> Run:
        """See `Store.cancel_run`."""
        utf8_only(run_id, reason)  # before any other check, as SQLite binds them at once
        with self._lock:
            run = self._run(run_id)
            if run.status.terminal:
                raise RunStateError(f"run {run_id!r} already ended ({run.status}); it cannot be cancelled")
            run.status = RunStatus.CANCELLED
            run.error = reason
            run.updated_at = time.time()
            self._expire_approvals_of(run_id)
            return run.model_copy(deep=True)

    def _expire_approvals_of(self, run_id: str) -> None:
        """A cancelled run's pending approvals expire (no decision of them would be delivered)."""
        at = time.time()
        for approval in self._approvals.values():
            if approval.run_id == run_id and approval.status is ApprovalStatus.PENDING:
                approval.status, approval.decided_at, approval.reason = (
                    ApprovalStatus.EXPIRED, at, CANCELLED_RUN_APPROVALS)

    def reopen_run(self, run_id: str, *, owner: str | None, lease_expires_at: float | None,
                   options: Mapping[str, JSON] | None = None, by: str | None = None) -> Run:
        """See `Store.reopen_run`."""
        utf8_only(run_id)
        with self._lock:
            run = self._run(run_id)
            if run.status is not RunStatus.FAILED:
                raise reopen_refusal(run_id, run.status.value)
            utf8_only(owner)  # (SQLite binds it only to reopen a failed run: after those checks)
            now = time.time()
            run.options = reopened_options(run.options, json_copy(dict(options or {})), error=run.error,
                                           failed_at=run.updated_at, owner=owner, now=now, by=by)
            run.status = RunStatus.PENDING if owner is None else RunStatus.RUNNING
            run.lease_owner = owner
            run.lease_expires_at = None if owner is None else lease_expires_at
            run.lease_epoch += 1
            run.error = run.output = None
            run.updated_at = now
            return run.model_copy(deep=True)

    # ---- leases ---------------------------------------------------------------------------
    def delete_runs(self, *, ended_before: float, statuses: Sequence[RunStatus] = ENDED,
                    limit: int = 1000) -> list[str]:
        """See `Store.delete_runs`."""
        wanted = set(check_deletion(statuses, limit))
        with self._lock:
            old = sorted((r for r in self._runs.values() if r.status.value in wanted and r.updated_at < ended_before),
                         key=lambda r: (r.updated_at, r.id))[:limit]  # fmt: skip
            ids = [r.id for r in old]
            for run in old:
                del self._runs[run.id]
                del self._steps[run.id]
                if run.idempotency_key is not None and self._by_key.get(run.idempotency_key) == run.id:
                    del self._by_key[run.idempotency_key]
            for (of_run, step_key), approval_id in list(self._by_step.items()):
                if of_run in ids:
                    del self._by_step[(of_run, step_key)]
                    del self._approvals[approval_id]
                    self._announced.pop(approval_id, None)
            return ids

    def claim_run(self, run_id: str, *, owner: str, expected_epoch: int, lease_expires_at: float) -> Run:
        """See `Store.claim_run`."""
        utf8_only(run_id, owner)  # before any other check, as SQLite binds them at once
        with self._lock:
            run = self._run(run_id)
            if run.status.terminal:
                raise LeaseLostError(f"run {run_id!r} already ended ({run.status})")
            if run.lease_epoch != expected_epoch:
                raise LeaseLostError(
                    f"run {run_id!r} was claimed by another worker "
                    f"(epoch {run.lease_epoch}, expected {expected_epoch})"
                )
            run.lease_owner = owner
            run.lease_expires_at = lease_expires_at
            run.lease_epoch = expected_epoch + 1
            run.updated_at = time.time()
            return run.model_copy(deep=True)

    def renew_lease(self, run_id: str, *, epoch: int, lease_expires_at: float) -> bool:
        """See `Store.renew_lease`. Raises `RunNotFound` for an unknown run."""
        utf8_only(run_id)
        with self._lock:
            run = self._run(run_id)
            if run.lease_epoch != epoch:
                return False
            run.lease_expires_at = lease_expires_at
            return True

    def claimable_runs(self, *, agents: Sequence[str] | None, now: float, limit: int = 10,
                       after: str | None = None) -> list[Run]:
        """See `Store.claimable_runs`.

        An empty ``agents`` sequence matches no run. A pending approval whose ``expires_at`` has
        passed (``<= now``) no longer holds its run back: it counts as expired.
        """
        wanted = None if agents is None else set(agents)
        utf8_only(*(wanted or ()), after)
        with self._lock:
            waiting_on = {
                a.run_id
                for a in self._approvals.values()
                if a.status == ApprovalStatus.PENDING and (a.expires_at is None or a.expires_at > now)
            }
            runs = [
                r
                for r in self._runs.values()
                if r.status in _ACTIVE
                and (r.lease_owner is None or r.lease_expires_at is None or r.lease_expires_at < now)
                and (r.status != RunStatus.WAITING or r.id not in waiting_on)
                and (wanted is None or r.agent in wanted)
                and (after is None or r.id > after)
            ]
            runs.sort(key=lambda r: r.id)
            return [r.model_copy(deep=True) for r in limited(runs, limit)]

    # ---- steps ----------------------------------------------------------------------------
    def start_step(self, step: Step, *, epoch: int, durable: bool = True) -> None:
        """See `Store.start_step`."""
        stored = step.model_copy(update={"input": json_copy(step.input), "output": json_copy(step.output)})
        # Before any other check, as SQLite binds them at once; whatever ``durable`` (SQLite may
        # hold a start back and meet the refusal at a later write; PostgreSQL refuses at once).
        utf8_only(step.run_id, step.key, step.name, step.input_hash, step.error, step.provider, step.model)
        with self._lock:
            run = self._fenced(step.run_id, epoch)
            journal = self._steps[step.run_id]
            existing = journal.get(step.key)
            if existing is None:
                run.steps += 1
            elif existing.status == StepStatus.COMPLETED:
                raise ConfigurationError(
                    f"step {step.key!r} of run {step.run_id!r} is already completed; "
                    "a journal entry is never rewritten"
                )
            else:
                stored.seq = existing.seq
            journal[step.key] = stored
            run.updated_at = time.time()

    def finish_step(self, run_id: str, key: str, result: StepResult, *, epoch: int) -> None:
        """See `Store.finish_step`.

        ``duration_ms`` defaults to ``ended_at - started_at``; ``provider``, ``model`` and the
        token/cost fields keep the started step's values when the result leaves them None.
        """
        if result.status == StepStatus.STARTED:
            raise ConfigurationError("finish_step needs a 'completed' or 'failed' result")
        output = json_copy(result.output)
        utf8_only(run_id, key, result.error, result.provider, result.model)  # before any other check, as SQLite
        with self._lock:
            run = self._fenced(run_id, epoch)
            step = self._steps[run_id].get(key)
            if step is None or step.status != StepStatus.STARTED:
                raise StepNotFound(run_id, key)
            step.status = StepStatus(result.status)
            step.output = output
            step.error = result.error
            step.ended_at = result.ended_at
            step.duration_ms = (
                result.duration_ms
                if result.duration_ms is not None
                else (result.ended_at - step.started_at) * 1000.0
            )
            for field in ("provider", "model", "input_tokens", "output_tokens", "cost_usd"):
                value = getattr(result, field)
                if value is not None:
                    setattr(step, field, value)
            run.input_tokens += result.input_tokens or 0
            run.output_tokens += result.output_tokens or 0
            run.cost_usd += result.cost_usd or 0.0
            run.updated_at = time.time()

    def record_step(self, step: Step, result: StepResult, *, epoch: int) -> None:
        """See `Store.record_step` (`start_step`, then `finish_step`; the result's text is checked
        first, so a refused one leaves no started step behind, as SQLite's one transaction does)."""
        utf8_only(result.error, result.provider, result.model)
        super().record_step(step, result, epoch=epoch)

    def list_steps(self, run_id: str) -> list[Step]:
        """See `Store.list_steps`."""
        utf8_only(run_id)
        with self._lock:
            self._run(run_id)
            steps = sorted(self._steps[run_id].values(), key=lambda s: s.seq)
            return [s.model_copy(deep=True) for s in steps]

    def supersede_steps(self, run_id: str, keys: Sequence[str], *, prefix: str, reason: str, epoch: int) -> None:
        """See `Store.supersede_steps`."""
        if not prefix:
            raise ConfigurationError("supersede_steps needs a non-empty prefix")
        utf8_only(run_id)
        with self._lock:
            run = self._fenced(run_id, epoch)
            if keys:  # SQLite looks each key and prefix + key up after the fence; the reason it binds to move one
                utf8_only(prefix, *keys)
            journal = self._steps[run_id]
            moving = [key for key in dict.fromkeys(keys) if key in journal]
            for key in keys:
                if key not in journal and prefix + key not in journal:
                    raise StepNotFound(run_id, key)
            approvals = [(step_key, approval_id) for (of_run, step_key), approval_id in self._by_step.items()
                         if of_run == run_id and any(step_key == k or step_key.startswith(k + "/") for k in moving)]
            for taken in [prefix + key for key in moving] + [prefix + step_key for step_key, _ in approvals]:
                if taken in journal or (run_id, taken) in self._by_step:
                    raise ConfigurationError(f"the journal of run {run_id!r} holds {taken!r} already")
            if moving:
                utf8_only(reason)
            moved_at = time.time()
            for key in moving:
                step = journal.pop(key)
                step.key = prefix + key
                if step.status == StepStatus.STARTED:
                    step.status, step.error, step.ended_at = StepStatus.FAILED, reason, moved_at
                journal[step.key] = step
            for step_key, approval_id in approvals:
                approval = self._approvals[approval_id]
                del self._by_step[(run_id, step_key)]
                approval.step_key = prefix + step_key
                if approval.status == ApprovalStatus.PENDING:
                    approval.status, approval.reason, approval.decided_at = ApprovalStatus.EXPIRED, reason, moved_at
                self._by_step[(run_id, approval.step_key)] = approval_id
            if moving:
                run.updated_at = moved_at
