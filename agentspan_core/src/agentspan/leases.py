"""Leases with fencing epochs: who may advance a run, and the heartbeat that keeps the claim."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from agentspan.errors import LeaseLostError
from agentspan.records import Run, now
from agentspan.stores.base import Store

log = logging.getLogger(__name__)

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


def _owner_is_dead(owner: str, store: Store | None) -> bool:
    """True when the owner is a process on this host that no longer exists, and no helper of it
    still writes its steps to ``store`` (`Store.still_writing`)."""
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
        return store is None or not store.still_writing(owner)  # its last steps may still be on their way
    except PermissionError:
        return False
    return False


def lease_is_free(run: Run, *, at: float | None = None, store: Store | None = None) -> bool:
    """Whether another process may claim the run now.

    True when nobody holds the lease, it expired, or its owner is a dead process on this host
    (a SIGKILLed process is recognised at once instead of after the lease expires) whose helper
    no longer writes its steps to ``store`` (`Store.still_writing`; give the store the run is
    claimed from). A run this process is executing right now is never free.
    """
    with _executing_lock:
        if run.id in _executing:
            return False
    if run.lease_owner is None or run.lease_expires_at is None:
        return True
    if run.lease_expires_at < (at if at is not None else now()):
        return True
    return _owner_is_dead(run.lease_owner, store)


def claim(store: Store, run_id: str, *, ttl: float, wait: float = 0.0, poll: float = 0.1) -> Run:
    """Claims a run's lease, waiting up to ``wait`` seconds for a live owner's lease to lapse.

    Raises:
        RunNotFound: Unknown run.
        LeaseLostError: Another live process holds the lease, or won the race to claim it.
    """
    deadline = time.monotonic() + wait
    while True:
        run = store.get_run(run_id)
        if lease_is_free(run, store=store):
            return store.claim_run(run_id, owner=owner_id(), expected_epoch=run.lease_epoch,
                                   lease_expires_at=now() + ttl)
        if time.monotonic() >= deadline:
            raise LeaseLostError(
                f"run {run_id!r} is being executed by {run.lease_owner} (lease epoch {run.lease_epoch}, "
                f"expires in {max(0.0, (run.lease_expires_at or 0) - now()):.1f}s)"
            )
        time.sleep(poll)


class Heartbeat:
    """Renews a run's lease every ``ttl / 3`` seconds while this process executes it.

    All heartbeats of a process share one background thread (`_Renewer`), started once: starting
    and joining a thread per run cost more than the run's own store writes on short runs.
    """

    def __init__(self, store: Store, run_id: str, epoch: int, ttl: float, expires_at: float | None = None) -> None:
        self.store, self._run_id, self._epoch, self._ttl = store, run_id, epoch, ttl
        self._expires_at = expires_at
        """When the lease runs out now (set when it was claimed, perhaps a while ago)."""
        self._lock = threading.Lock()  # held while this lease is renewed
        self._stopped = False
        self.due = 0.0
        """`time.monotonic` time of the next renewal."""
        self.lost = False
        """The store refused a renewal (another process holds the run now)."""
        left = ttl if expires_at is None else max(0.0, expires_at - now())
        self.valid_until = time.monotonic() + left
        """`time.monotonic` time until which the lease is known to be this process's: the start
        of the last renewal the store took, plus the TTL (`confirm`)."""
        self._while: Callable[[], bool] | None = None

    def __enter__(self) -> Heartbeat:
        with _executing_lock:
            _executing.add(self._run_id)
        # the first renewal a third of the way to the lease's end: a lease claimed a while before
        # this execution began (a thread that started late on a busy machine) is renewed sooner
        left = self._ttl if self._expires_at is None else min(self._ttl, max(0.0, self._expires_at - now()))
        self.due = time.monotonic() + left / 3
        _renewer.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:  # waits for a renewal under way: none is sent after this returns
            self._stopped = True
        _renewer.remove(self)
        with _executing_lock:
            _executing.discard(self._run_id)

    def linger(self, still_needed: Callable[[], bool]) -> None:
        """Stops the heartbeat once ``still_needed()`` is false instead of at once: until then
        (asked before each renewal, on the renewer thread) the lease stays this process's, then
        it lapses. For a run whose caller gave up while a call it cannot stop still runs here (a
        sync tool's thread): no other process takes the run up and makes the call again alongside
        it (`agentspan.call_threads`)."""
        with self._lock:
            if self._stopped:
                return
            self._while = still_needed
            if self._lingers():
                return
        self.__exit__()

    def beat(self) -> bool:
        """Renews the lease once (called by the renewer thread). Returns False when it stops."""
        with self._lock:
            if self._stopped:
                return False
            if self._while is not None and not self._lingers():
                self._end_lingering()
                return False
            try:
                renewed = self._renew()
            except Exception:  # a transient store error: try again at the next beat
                renewed = True
            self.due = time.monotonic() + self._ttl / 3
            if not renewed and self._while is not None:  # nobody else ends a lingering heartbeat
                self._end_lingering()
            return renewed

    def _end_lingering(self) -> None:
        self._stopped = True
        with _executing_lock:
            _executing.discard(self._run_id)

    def _lingers(self) -> bool:
        try:
            return bool(self._while is not None and self._while())
        except Exception:  # the check itself failed: the lease lapses, as without it
            log.debug("run %s: the lingering lease's check failed", self._run_id, exc_info=True)
            return False

    def stale(self) -> bool:
        """Whether the lease may no longer be this process's: a renewal was refused, or the last
        one the store took is older than the TTL (`confirm` then finds out)."""
        return self.lost or time.monotonic() >= self.valid_until

    def _renew(self) -> bool:
        """One fenced renewal (under ``_lock``): `valid_until` moves on, or the lease is `lost`."""
        started = time.monotonic()
        if self.store.renew_lease(self._run_id, epoch=self._epoch, lease_expires_at=now() + self._ttl):
            self.valid_until = started + self._ttl
            return True
        self.lost = True
        return False

    def confirm(self) -> None:
        """Makes sure the lease is still this process's before the run acts on it (a live call).

        Cheap while renewals keep up (`valid_until` ahead); after the process was stopped or
        starved past it (SIGSTOP, a GIL-holding tool, a suspended VM), another process may have
        taken the run over meanwhile: the lease is renewed here at once, fenced by its epoch.

        Raises:
            LeaseLostError: A renewal was refused: another process holds the run.
        """
        if not self.lost and time.monotonic() >= self.valid_until:
            with self._lock:
                self._renew()
        if self.lost:
            raise LeaseLostError(f"run {self._run_id!r}: another process took it over (this one did not renew its "
                                 "lease in time: stopped or starved); it goes on there")


class _Renewer:
    """The thread that renews every `Heartbeat` of this process, each when it is due.

    It sleeps while nothing is due and holds no run when idle; after a fork the child starts its
    own thread on its first heartbeat.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beats: dict[int, Heartbeat] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._next_wake = math.inf
        """`time.monotonic` time the thread wakes next (guarded by ``_lock``)."""

    def add(self, beat: Heartbeat) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                self._beats.clear()  # after a fork: the parent's runs are the parent's to renew
                self._pid = os.getpid()
                self._wake = threading.Event()
                self._next_wake = math.inf
                self._thread = threading.Thread(target=self._loop, name="agentspan-lease-renewer", daemon=True)
                self._thread.start()
            self._beats[id(beat)] = beat
            if beat.due >= self._next_wake:
                return  # the thread wakes in time anyway: waking a thread costs the caller the GIL
            self._next_wake = beat.due
        self._wake.set()  # the thread recomputes when it must wake next

    def remove(self, beat: Heartbeat) -> None:
        with self._lock:
            self._beats.pop(id(beat), None)

    def on(self, store: Store) -> int:
        """How many runs this process executes on ``store`` now."""
        with self._lock:
            if self._pid != os.getpid():
                return 0
            return sum(1 for beat in self._beats.values() if beat.store is store)

    def _loop(self) -> None:
        while True:
            with self._lock:
                beats = list(self._beats.values())
                wake = self._wake
                # Idle, it still wakes every `IDLE_WAKE` seconds, so a heartbeat added later is
                # usually due after that and needs no wake-up call of its own.
                due = min((b.due for b in beats), default=time.monotonic() + IDLE_WAKE)
                self._next_wake = due
            timeout = due - time.monotonic()
            if timeout > 0:
                wake.wait(timeout)
                wake.clear()
                continue
            moment = time.monotonic()
            for beat in beats:
                if beat.due <= moment and not beat.beat():
                    self.remove(beat)


def executing_on(store: Store) -> int:
    """How many runs this process executes on ``store`` now (each holds its lease)."""
    return _renewer.on(store)


IDLE_WAKE = 1.0
"""Seconds between two wake-ups of the idle renewer thread (a few microseconds of CPU each)."""

_renewer = _Renewer()
