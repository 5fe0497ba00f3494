"""Executes a claimed run: attempt after attempt until it completes, fails, is cancelled, or (in a
worker) suspends for a human decision. The run's transitions are `agentspan.attached`'s."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from agentspan import approvals
from agentspan.adapters import Adapter
from agentspan.attached import attach
from agentspan.attempt import Counters
from agentspan.config import settings
from agentspan.divergence import OnDivergence
from agentspan.errors import ApprovalPending, LeaseLostError, ProcessExiting, RunCancelledSignal, ServerUnreachable
from agentspan.events import ApprovalRequested, sink_of
from agentspan.records import Run, RunStatus
from agentspan.runtime import ActiveRun, failed_for_exit
from agentspan.stores.base import Store, call_store

log = logging.getLogger("agentspan")

OnWait = Literal["block", "release"]


@dataclass
class Outcome:
    """How an execution ended in this process."""

    status: RunStatus
    result: Any = None
    counters: Counters | None = None


async def execute(store: Store, run: Run, adapter: Adapter, target: Any, options: dict[str, Any],
                  *, on_wait: OnWait = "block", fresh: bool = False,
                  on_divergence: OnDivergence | None = None) -> Outcome:
    """Executes a run whose lease this process holds (``run.lease_epoch`` is ours).

    Args:
        store: The store.
        run: The claimed run.
        adapter: The framework adapter.
        target: The agent object.
        options: Runner options (not stored; passed to the adapter).
        on_wait: ``"block"``: wait here for approvals and go on; ``"release"``: give the lease
            back and return (a worker picks the run up again once it is decided).
        fresh: The run was just created by this process, so its journal is known to be empty
            (saves reading it: one round trip through a server).
        on_divergence: This execution's divergence policy (default: the run's own).

    Raises:
        RunCancelledError: The run was cancelled.
        LeaseLostError: Another process took the run over.
        ServerUnreachable: The store's server could not be reached (the run is left ``running``,
            its lease to lapse: a worker goes on with it).
        Exception: Whatever the agent raised (the run is recorded ``failed``).
    """
    # A server store's lifecycle calls (attach, resume, the endings, the error path's release)
    # run on a worker thread, as its step writes do: the caller's loop (``await
    # agentspan.run_async``) keeps running.
    attached = await call_store(store, attach, store, run, fresh=fresh, on_divergence=on_divergence)
    try:
        sink = sink_of(run.id)
        if sink is not None and sink.cancel_requested is not None:  # `StreamedRun.cancel` before it was stored
            raise RunCancelledSignal(run.id, sink.cancel_requested[0])
        while True:
            token, released = attached.active.activate(), False
            try:
                result = await _attempt(adapter, attached.active, target, run.input, options)
            except ApprovalPending:
                await attached.active.settle()
                # the next attempt's span goes under the caller's, not under this ended attempt's
                ActiveRun.deactivate(token)
                released = True
                if on_wait == "release":
                    await call_store(store, attached.suspend)
                    return Outcome(RunStatus.WAITING, counters=attached.counters)
                await _wait_for_decisions(store, run.id)
                await call_store(store, attached.resume)
                continue
            except (LeaseLostError, RunCancelledSignal):
                raise
            except ServerUnreachable:
                await attached.active.settle()
                raise  # an outage, not the agent's failure: left to a worker (`AttachedRun.__exit__`)
            except Exception as exc:
                await attached.active.settle()
                if failed_for_exit(exc):  # the process exits under the run: left to its lease, as at a crash
                    attached.active.cut_off = True
                    raise ProcessExiting(run.id) from exc
                await call_store(store, attached.fail, exc)
                raise
            finally:
                if not released:
                    ActiveRun.deactivate(token)
            await call_store(store, attached.complete, adapter.encode_output(result))
            return Outcome(RunStatus.COMPLETED, result, attached.counters)
    except BaseException as exc:
        if isinstance(exc, ProcessExiting) and attached.active.stopping:
            # a worker's hard stop: the calls in flight (parallel ones a sibling's stop left
            # running) end and are journaled before the lease is given back
            await attached.active.settle()
        # What `with attached:` would do, off the loop: cancelled (raised as RunCancelledError),
        # left to a new owner, or abandoned (the lease given back for a retry).
        await call_store(store, attached.end_after_error, exc)
        raise


async def _attempt(adapter: Adapter, active: ActiveRun, target: Any, input: Any, options: dict[str, Any]) -> Any:
    """One attempt through the adapter. An error the core raised in it (`ActiveRun.fatal`) is
    what the attempt raises, though the framework wrapped it in an error of its own (a run that
    went on to its end after it fails with it too: `AttachedRun.complete`)."""
    try:
        return await adapter.execute(active, target, input, options)
    except Exception:
        if active.fatal is not None:
            raise active.fatal  # noqa: B904 - the core's error itself, with its own cause
        raise


async def _wait_for_decisions(store: Store, run_id: str) -> None:
    """Polls the store until the run waits on no approval (or is cancelled)."""
    interval = settings().poll_interval
    told: set[str] = set()
    while True:
        run = await call_store(store, store.get_run, run_id)
        if run.status is RunStatus.CANCELLED:
            raise RunCancelledSignal(run_id, run.error)
        pending = await call_store(store, approvals.pending_for_run, store, run_id)
        if not pending:
            return
        for approval in pending:
            if approval.id not in told:  # once per approval: what the run waits for, and how to decide it
                told.add(approval.id)
                sink = sink_of(run_id)
                if sink is not None:  # a streamed run: its consumer learns it too
                    sink.emit(ApprovalRequested(approval), key=("approval", approval.id))
                # a warning: the caller blocks until someone decides (seen without logging set up)
                log.warning("run %s waits for approval %s of tool %r: decide it with `agentspan approve %s` "
                            "or `agentspan reject %s --reason ...`", run_id, approval.id, approval.tool,
                            approval.id, approval.id)
        await asyncio.sleep(interval)
