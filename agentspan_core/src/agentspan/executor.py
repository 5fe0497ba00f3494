"""Executes a claimed run: attempt after attempt until it completes, fails, is cancelled, or (in a
worker) suspends for a human decision."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from agentspan import approvals
from agentspan.adapters import Adapter
from agentspan.config import settings
from agentspan.errors import (
    ApprovalPending,
    LeaseLostError,
    RunCancelledError,
    RunCancelledSignal,
    RunStateError,
)
from agentspan.leases import Heartbeat
from agentspan.records import Run, RunStatus, Step
from agentspan.runtime import ActiveRun, Counters
from agentspan.stores.base import Store

log = logging.getLogger("agentspan")

OnWait = Literal["block", "release"]


@dataclass
class Outcome:
    """How an execution ended in this process."""

    status: RunStatus
    result: Any = None
    counters: Counters | None = None


async def execute(store: Store, run: Run, adapter: Adapter, target: Any, options: dict[str, Any],
                  *, on_wait: OnWait = "block", fresh: bool = False) -> Outcome:
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

    Raises:
        RunCancelledError: The run was cancelled.
        LeaseLostError: Another process took the run over.
        Exception: Whatever the agent raised (the run is recorded ``failed``).
    """
    epoch = run.lease_epoch
    ttl = settings().lease_ttl
    counters = Counters()
    with Heartbeat(store, run.id, epoch, ttl):
        try:
            if run.status is not RunStatus.RUNNING:
                run = store.update_run(run.id, epoch=epoch, status=RunStatus.RUNNING)
            known_journal: list[Step] | None = [] if fresh else None
            while True:
                journal = known_journal if known_journal is not None else store.list_steps(run.id)
                known_journal = None
                active = ActiveRun(store, run, journal)
                active.counters = counters
                token = active.activate()
                try:
                    result = await adapter.execute(active, target, run.input, options)
                except ApprovalPending:
                    if on_wait == "release":
                        store.update_run(run.id, epoch=epoch, status=RunStatus.WAITING, release_lease=True)
                        return Outcome(RunStatus.WAITING, counters=counters)
                    await _wait_for_decisions(store, run.id)
                    run = store.update_run(run.id, epoch=epoch, status=RunStatus.RUNNING)
                    continue
                except (LeaseLostError, RunCancelledSignal):
                    raise
                except Exception as exc:
                    store.update_run(run.id, epoch=epoch, status=RunStatus.FAILED,
                                     error=f"{type(exc).__name__}: {exc}", release_lease=True)
                    raise
                finally:
                    ActiveRun.deactivate(token)
                store.update_run(run.id, epoch=epoch, status=RunStatus.COMPLETED,
                                 output=adapter.encode_output(result), release_lease=True)
                return Outcome(RunStatus.COMPLETED, result, counters)
        except RunCancelledSignal as signal:
            _mark_cancelled(store, run.id, epoch, signal.reason)
            raise RunCancelledError(run.id, signal.reason or store.get_run(run.id).error) from None


def _mark_cancelled(store: Store, run_id: str, epoch: int, reason: str | None) -> None:
    try:
        store.update_run(run_id, epoch=epoch, status=RunStatus.CANCELLED, error=reason, release_lease=True)
    except (RunCancelledSignal, LeaseLostError, RunStateError):
        pass  # cancelled from elsewhere already


async def _wait_for_decisions(store: Store, run_id: str) -> None:
    """Polls the store until the run waits on no approval (or is cancelled)."""
    interval = settings().poll_interval
    while True:
        run = store.get_run(run_id)
        if run.status is RunStatus.CANCELLED:
            raise RunCancelledSignal(run_id, run.error)
        if not approvals.pending_for_run(store, run_id):
            return
        await asyncio.sleep(interval)
