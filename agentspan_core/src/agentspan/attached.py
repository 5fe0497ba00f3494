"""Runs driven by someone else's loop: the lifecycle of a run this process executes.

`agentspan.executor.execute` drives a run itself (it calls the adapter and waits for the result),
but a framework plugin is driven by the framework: ADK's ``Runner`` calls an ADK plugin's
callbacks, and the run's end arrives in another callback than its start. Both use the same
transitions, defined here once:

- `new_run` / `create_or_claim` / `claim`: a run record owned by this process, found again by
  its idempotency key or claimed from a dead owner;
- `attach`: holds the run's lease (a heartbeat thread renews it), marks it ``running`` and gives
  the journal cursor (`ActiveRun`) the framework's calls go through;
- `AttachedRun.complete` / `fail` / `suspend` / `abandon` / `cancelled`: how the run ends in this
  process (each releases the lease and stops the heartbeat).

Each attempt's OpenTelemetry span (`agentspan.tracing`, when tracing is on) opens in
`AttachedRun.new_attempt` and ends with the attempt: at the run's ending, or, for a process that
waited for a human decision itself, when the next attempt starts.

A plugin keeps the `AttachedRun` between callbacks and calls one of the endings itself; code that
drives a run in one block uses it as a context manager::

    with attach(store, claimed) as attached:
        token = attached.active.activate()
        try:
            output = await my_loop()
        finally:
            ActiveRun.deactivate(token)
        attached.complete(output)

Leaving the block without an ending gives the lease back (`abandon`); a `RunCancelledSignal`
records the cancellation and becomes `RunCancelledError`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from agentspan import leases
from agentspan.attempt import Counters
from agentspan.config import settings, time_limit
from agentspan.divergence import OnDivergence
from agentspan.errors import (
    ConfigurationError,
    LeaseLostError,
    RunCancelledError,
    RunCancelledSignal,
    RunStateError,
    ServerUnreachable,
)
from agentspan.jsontext import error_text, utf8_text
from agentspan.records import JSON, Run, RunStatus, Step, StepStatus, now
from agentspan.runtime import ActiveRun
from agentspan.stores.base import Store
from agentspan.tracing import Outcome, start_trace

_here: dict[str, AttachedRun] = {}
"""The runs attached (and not ended) in this process, by run id."""
_here_lock = threading.Lock()


def new_run(*, framework: str, agent: str, input: JSON, options: dict[str, JSON] | None = None,
            session_id: str | None = None, idempotency_key: str | None = None, run_id: str | None = None) -> Run:
    """A run record owned by this process: ``running``, lease epoch 1, lease expiring after the TTL.

    Args:
        framework: The adapter's framework name.
        agent: The name the run is recorded under.
        input: The run's input (JSON).
        options: JSON runner options stored with the run.
        session_id: Groups runs of one conversation.
        idempotency_key: A second create with the same key finds this run.
        run_id: The run's id (default: a new UUIDv7).
    """
    fields: dict[str, Any] = {} if run_id is None else {"id": run_id}
    return Run(framework=framework, agent=agent, input=input, session_id=session_id,
               idempotency_key=idempotency_key, options=dict(options or {}), status=RunStatus.RUNNING,
               lease_owner=leases.owner_id(), lease_expires_at=now() + settings().lease_ttl, lease_epoch=1,
               **fields)


def claim(store: Store, run_id: str, *, wait: float | None = None) -> Run:
    """Takes a run's lease, waiting up to ``wait`` seconds (default: the lease TTL + 1) for a live
    owner's lease to lapse. Blocks: call it from a worker thread in async code.

    Raises:
        RunNotFound: Unknown run.
        LeaseLostError: Another live process holds the run, or claimed it first.
    """
    ttl = settings().lease_ttl
    limit = time_limit("wait", wait)
    return leases.claim(store, run_id, ttl=ttl, wait=ttl + 1 if limit is None else limit)


def create_or_claim(store: Store, run: Run, *, wait: float | None = None) -> tuple[Run, bool] | None:
    """Creates ``run`` (from `new_run`), or claims the unfinished run holding its idempotency key.

    A run of this process that was attached and never ended (its loop was abandoned without a
    callback) is abandoned first, so it can be claimed again. Blocks like `claim`.

    Returns:
        ``(run, True)`` when created, ``(existing run, False)`` when claimed, None when the run
        with that key already ended.

    Raises:
        LeaseLostError: Another live process executes the existing run.
    """
    stored, created = store.create_run(run)
    if created:
        return stored, True
    if stored.status.terminal:
        return None
    return take_over(store, stored, wait=wait), False


def take_over(store: Store, run: Run, *, wait: float | None = None) -> Run:
    """Claims ``run``, abandoning first an attachment of it in this process that never ended.

    An attachment whose loop is gone without telling (its task was cancelled, so no callback
    ran) would keep the run "executing here" forever. Should that loop still be running, its
    next journal write fails, fenced by the new lease epoch. Blocks like `claim`.
    """
    previous = attached_here(run.id)
    if previous is not None:
        previous.abandon()
    return claim(store, run.id, wait=wait)


def attached_here(run_id: str) -> AttachedRun | None:
    """The attachment of ``run_id`` in this process that has not ended, if any."""
    with _here_lock:
        return _here.get(run_id)


def attach(store: Store, run: Run, *, fresh: bool = False, on_divergence: OnDivergence | None = None) -> AttachedRun:
    """Starts executing a run whose lease this process holds (``run.lease_epoch`` is ours).

    Starts the heartbeat, marks the run ``running`` (if it is not) and loads its journal.

    Args:
        store: The store.
        run: The created or claimed run.
        fresh: The run's journal is known to be empty (saves reading it).
        on_divergence: This execution's divergence policy (default: the run's own; see
            `agentspan.divergence`).

    Raises:
        LeaseLostError: Another process took the run over.
        RunCancelledError: The run was cancelled (recorded ``cancelled``).
    """
    attached = AttachedRun(store, run)
    attached.on_divergence = on_divergence
    try:
        if run.status is not RunStatus.RUNNING:
            attached.run = store.update_run(run.id, epoch=attached.epoch, status=RunStatus.RUNNING)
        attached.new_attempt([] if fresh else None)
    except BaseException as exc:
        attached.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return attached


class AttachedRun:
    """A run this process executes, driven by its own loop or by a framework's (see the module).

    Create it with `attach`. Until one of the endings is called it holds the run's lease. Every
    ending is called at most once: later calls do nothing.

    Attributes:
        store: The store.
        run: The run record (as last written by this process).
        epoch: The lease epoch this process holds.
        active: The journal cursor of the current attempt.
        counters: Steps replayed vs. executed live, over all attempts.
        ended: An ending was called (the lease is no longer held).
    """

    def __init__(self, store: Store, run: Run) -> None:
        self.store = store
        self.run = run
        self.epoch = run.lease_epoch
        self.counters = Counters()
        self.ended = False
        self.on_divergence: OnDivergence | None = None
        """This execution's divergence policy, when it overrides the run's own."""
        self.active: ActiveRun
        self._stopped = False
        self._heartbeat = leases.Heartbeat(store, run.id, self.epoch, settings().lease_ttl,
                                           expires_at=run.lease_expires_at)
        self._heartbeat.__enter__()
        with _here_lock:
            _here[run.id] = self

    def __repr__(self) -> str:
        return f"<AttachedRun {self.run.id} epoch={self.epoch}{' ended' if self.ended else ''}>"

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.run.id

    def new_attempt(self, steps: Sequence[Step] | None = None) -> ActiveRun:
        """A journal cursor for a new attempt (the journal read again unless ``steps`` is given)."""
        journal = self.store.list_steps(self.run.id) if steps is None else steps
        self._end_trace("waiting")  # an attempt this process waited in for a human decision
        active = ActiveRun(self.store, self.run, journal, on_divergence=self.on_divergence)
        active.counters = self.counters
        active.lease = self._heartbeat
        if steps is None:  # a decision made stands, whatever a tool's approval policy says now
            active.asked = frozenset(a.step_key for a in self.store.list_approvals(run_id=self.run.id, limit=1000))
        start_trace(active)
        self.active = active
        return active

    def resume(self) -> ActiveRun:
        """After waiting here for decisions: marks the run ``running`` again and starts a new attempt,
        which trusts the calls this process served or made so far (`ActiveRun.trusted`)."""
        self.run = self.store.update_run(self.run.id, epoch=self.epoch, status=RunStatus.RUNNING)
        counted = self.counters
        active = self.new_attempt()
        active.trusted = frozenset().union(*counted.replayed_keys.values(), *counted.live_keys.values())
        return active

    # ---- endings ---------------------------------------------------------------------------
    def complete(self, output: JSON) -> None:
        """Records the run ``completed`` with ``output``.

        Raises:
            LeaseLostError: Another process took the run over.
            RunCancelledSignal: The run was cancelled meanwhile.
            AgentspanError: The core failed in this attempt and the framework went on to its end
                (`ActiveRun.fatal`): the run is recorded ``failed`` with that error instead.
        """
        fatal = self.active.fatal
        if fatal is not None:
            self.fail(fatal)
            raise fatal
        self.active.wait_durable()  # the refusal of a step write handed off since raises here
        self._end("completed", status=RunStatus.COMPLETED, output=output)

    def fail(self, error: BaseException) -> None:
        """Records the run ``failed`` with ``error`` (as ``"Type: message"``); raises like `complete`."""
        self._end("error", exc=error, status=RunStatus.FAILED, error=error_text(error))

    def suspend(self) -> None:
        """Records the run ``waiting`` (for a human decision); a worker or a retry claims it later.
        Raises like `complete`."""
        self._end("waiting", status=RunStatus.WAITING)

    def abandon(self) -> None:
        """Gives the lease back and leaves the run as it is (a retry claims it again at once).
        Raises like `complete`."""
        self._end("released")

    def cancelled(self, reason: str | None) -> None:
        """Records the run ``cancelled``; quietly does nothing more when it was cancelled, ended or
        taken over elsewhere already."""
        self.ended = True
        self._end_trace("cancelled")
        try:
            self.store.update_run(self.run.id, epoch=self.epoch, status=RunStatus.CANCELLED, error=reason,
                                  release_lease=True)
        except (RunCancelledSignal, LeaseLostError, RunStateError):
            pass
        finally:
            self._stop()

    def close(self, outcome: Outcome = "lease_lost", *, linger: bool = False) -> None:
        """Stops the heartbeat without writing anything (the lease lapses when it expires).

        Args:
            outcome: How the attempt's span ends.
            linger: Keep the lease while a call cut off in flight still runs in this process (a
                sync tool's thread, a shielded call on a loop still open), then let it lapse.
        """
        self.ended = True
        self._end_trace(outcome)
        self._stop(linger=linger)

    def _end(self, outcome: Outcome, *, exc: BaseException | None = None, **fields: Any) -> None:
        if self.ended:
            return
        self.ended = True
        self._end_trace(outcome, exc)
        try:
            self.run = self.store.update_run(self.run.id, epoch=self.epoch, release_lease=True, **fields)
        except ConfigurationError as refused:  # no store takes this end (an output that is not JSON):
            if fields.get("status") is RunStatus.FAILED:  # failed then, not left running for a worker
                raise
            self.run = self.store.update_run(self.run.id, epoch=self.epoch, release_lease=True,
                                             status=RunStatus.FAILED,
                                             error=utf8_text(f"the run's end could not be stored: {refused}"))
            raise
        finally:
            self._stop()

    def _end_trace(self, outcome: Outcome, error: BaseException | None = None) -> None:
        active: ActiveRun | None = getattr(self, "active", None)  # (unset when attaching failed)
        if active is not None and active.trace is not None:
            active.trace.end(outcome, error)

    def _stop(self, *, linger: bool = False) -> None:
        if self._stopped:
            return
        self._stopped = True
        if linger:
            self._heartbeat.linger(self._calls_still_run)
        else:
            self._heartbeat.__exit__(None, None, None)
        with _here_lock:
            if _here.get(self.run.id) is self:
                del _here[self.run.id]

    def _calls_still_run(self) -> bool:
        """Whether a call this attempt stopped waiting for still runs here: in a thread (which
        nothing can stop), or as a shielded call on an event loop that still runs (asked on the
        lease renewer's thread). A thread whose step ended (a tool's background job) is not the
        call; a loop left open but not running makes no progress (as a crashed process)."""
        from agentspan.call_threads import runs_call_in_thread

        journal = self.active.journal

        def in_flight(key: str) -> bool:
            step = journal.get(key)
            return step is not None and step.status is StepStatus.STARTED

        return runs_call_in_thread(self.run.id, in_flight) or self.active.calls_running(on_running_loops=True)

    # ---- context manager ---------------------------------------------------------------------
    def __enter__(self) -> AttachedRun:
        return self

    def end_after_error(self, exc: BaseException) -> None:
        """Ends the run as leaving a ``with`` block on ``exc`` does (see `__exit__`)."""
        self.__exit__(type(exc), exc, exc.__traceback__)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Ends a run the block did not end: cancelled on `RunCancelledSignal` (raised again as
        `RunCancelledError`), left to its new owner on `LeaseLostError` and to a worker on
        `ServerUnreachable` or after a call was cut off in flight (no write: the lease lapses),
        else abandoned."""
        if isinstance(exc, RunCancelledSignal):
            self.cancelled(exc.reason)  # also when an ending's write found the run cancelled
            raise RunCancelledError(self.run.id, exc.reason or self.store.get_run(self.run.id).error) from None
        if self.ended:
            return
        if isinstance(exc, LeaseLostError | ServerUnreachable):
            self.close()
            return
        if self.active.cut_off or self.active.calls_running():
            # a call cut off in flight (the caller's task cancelled, Ctrl-C) may go on in a thread
            # nothing can stop: the lease is kept while it runs, then left to lapse, so another
            # process does not run the call again alongside it
            self.close("released", linger=True)
            return
        try:
            self.abandon()
        except Exception:
            if exc is None:
                raise
            # the block's own error matters more than a failed release (the lease then expires)
