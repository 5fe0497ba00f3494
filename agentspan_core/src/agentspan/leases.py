"""Leases with fencing epochs: who may advance a run, and the heartbeat that keeps the claim."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

from agentspan.errors import LeaseLostError
from agentspan.records import Run, now
from agentspan.stores.base import Store

_HOST = socket.gethostname()
PROCESS_OWNER = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
"""This process's lease owner id: ``host:pid:nonce``."""

_executing: set[str] = set()
_executing_lock = threading.Lock()


def owner_id() -> str:
    """Returns this process's owner id (recomputed after a fork)."""
    global PROCESS_OWNER
    host, pid, _ = PROCESS_OWNER.split(":", 2)
    if int(pid) != os.getpid():
        PROCESS_OWNER = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return PROCESS_OWNER


def _owner_is_dead(owner: str) -> bool:
    """True when the owner is a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner != owner_id()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lease_is_free(run: Run, *, at: float | None = None) -> bool:
    """Whether another process may claim the run now.

    True when nobody holds the lease, it expired, or its owner is a dead process on this host
    (a SIGKILLed process is recognised at once instead of after the lease expires). A run this
    process is executing right now is never free.
    """
    with _executing_lock:
        if run.id in _executing:
            return False
    if run.lease_owner is None or run.lease_expires_at is None:
        return True
    if run.lease_expires_at < (at if at is not None else now()):
        return True
    return _owner_is_dead(run.lease_owner)


def claim(store: Store, run_id: str, *, ttl: float, wait: float = 0.0, poll: float = 0.1) -> Run:
    """Claims a run's lease, waiting up to ``wait`` seconds for a live owner's lease to lapse.

    Raises:
        RunNotFound: Unknown run.
        LeaseLostError: Another live process holds the lease, or won the race to claim it.
    """
    deadline = time.monotonic() + wait
    while True:
        run = store.get_run(run_id)
        if lease_is_free(run):
            return store.claim_run(run_id, owner=owner_id(), expected_epoch=run.lease_epoch,
                                   lease_expires_at=now() + ttl)
        if time.monotonic() >= deadline:
            raise LeaseLostError(
                f"run {run_id!r} is being executed by {run.lease_owner} (lease epoch {run.lease_epoch}, "
                f"expires in {max(0.0, (run.lease_expires_at or 0) - now()):.1f}s)"
            )
        time.sleep(poll)


class Heartbeat:
    """Renews a run's lease from a background thread while this process executes it."""

    def __init__(self, store: Store, run_id: str, epoch: int, ttl: float) -> None:
        self._store, self._run_id, self._epoch, self._ttl = store, run_id, epoch, ttl
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._loop, name=f"agentspan-lease-{run_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        with _executing_lock:
            _executing.add(self._run_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with _executing_lock:
            _executing.discard(self._run_id)

    def _loop(self) -> None:
        while not self._stop.wait(self._ttl / 3):
            try:
                if not self._store.renew_lease(self._run_id, epoch=self._epoch, lease_expires_at=now() + self._ttl):
                    self.lost = True
                    return
            except Exception:  # a transient store error: try again at the next beat
                continue
