"""Holding back a thread's pending checkpoint writes, so a LangGraph super-step costs one request.

LangGraph stores a task's writes (``put_writes``) when the task ends and the super-step's checkpoint
(``put``) right after: two round trips to a server. Writes the caller lets the store defer
(`Store.put_checkpoint_writes` with ``defer=True``) are kept here instead, and `RemoteStore` sends
them with the thread's next checkpoint, in one request and one server transaction
(`Store.put_checkpoint_with_writes`). A read or other call through the same store for the thread
sends them first (read-your-writes). Writes held for ``delay`` seconds (no checkpoint came: the run
paused or ended) are sent by a background thread; `HeldWrites.close` and the end of the process
(``atexit``) send what is left.

A send by the background thread that fails is logged and its writes stay held, left alone by that
thread: the next call through the store for the thread carries them and raises what the server
answers then (as `DeferredStarts` leaves a failed start to the step's end). A send made on a
caller's behalf raises to that caller.

The background thread is started once per store and sleeps while nothing is held.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence

from agentspan.records import CheckpointWrite

__all__ = ["HOLD_WRITES_FOR", "HeldWrites"]

log = logging.getLogger("agentspan")

HOLD_WRITES_FOR = 0.2
"""Seconds a deferred write may wait for its thread's next checkpoint before it is sent alone."""


class HeldWrites:
    """The held-back pending writes of one store, per thread.

    Args:
        delay: Seconds writes may wait for their thread's next checkpoint (0: never hold).
        send: Sends writes (all of one thread, to be kept, not replacing stored ones) at once;
            called with the lock held, from the caller's thread or the background thread.
    """

    def __init__(self, delay: float, send: Callable[[list[CheckpointWrite]], None]) -> None:
        self.delay = delay
        self._send = send
        self._held: dict[str, list[CheckpointWrite]] = {}
        self._since: dict[str, float] = {}  # thread -> when its oldest held write came
        self._failed: set[str] = set()  # threads whose writes the timer failed to send once
        self._lock = threading.Lock()  # also held while sending, so a read waits for a send under way
        self._pending = threading.Event()  # set while the timer has something to send
        self._thread: threading.Thread | None = None
        self._at_exit: Callable[[], None] | None = None
        self._closed = False

    def hold(self, writes: Sequence[CheckpointWrite]) -> bool:
        """Holds writes of one thread back. Returns False when they must be sent now: holding
        is off or closed, they span threads, or an earlier send of the thread's held writes by
        the background thread failed (the caller then sends them all and sees the answer)."""
        if self.delay <= 0 or self._closed or not writes:
            return False
        thread_id = writes[0].thread_id
        if any(w.thread_id != thread_id for w in writes):
            return False
        with self._lock:
            if self._closed or thread_id in self._failed:
                return False
            held = self._held.get(thread_id)
            if held is None:
                self._held[thread_id] = list(writes)
                self._since[thread_id] = time.monotonic()
            else:
                held.extend(writes)
            self._pending.set()
            if self._thread is None:
                self._start()
        return True

    def take(self, thread_id: str) -> list[CheckpointWrite]:
        """Removes and returns a thread's held writes (the caller sends them itself)."""
        if thread_id not in self._held:  # most calls: nothing held (a send under way keeps them listed)
            return []
        with self._lock:
            return self._pop(thread_id)

    def flush(self, thread_ids: Iterable[str] | None = None) -> None:
        """Sends the held writes of these threads (every thread's when None) now.

        Raises:
            What the first failed send raised (after trying every thread); those writes are
            dropped: the caller has been told.
        """
        if not self._held:
            return
        with self._lock:
            wanted = list(self._held) if thread_ids is None else [t for t in thread_ids if t in self._held]
            first: BaseException | None = None
            for thread_id in wanted:
                try:
                    self._send(self._pop(thread_id))
                except Exception as exc:
                    first = first or exc
            if first is not None:
                raise first

    def close(self) -> None:
        """Sends every held write (failures are logged, not raised) and stops holding."""
        try:
            self.flush()
        except Exception as exc:
            log.error("agentspan: held checkpoint writes could not be sent on close and are lost: %s", exc)
        with self._lock:
            self._closed = True
            self._held.clear()
            self._since.clear()
            self._failed.clear()
            self._pending.set()  # lets the thread see `_closed` and end
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)

    # ---- internals ----------------------------------------------------------------------------
    def _pop(self, thread_id: str) -> list[CheckpointWrite]:
        """Removes a thread's held writes (called with the lock held)."""
        self._since.pop(thread_id, None)
        self._failed.discard(thread_id)
        return self._held.pop(thread_id, [])

    def _start(self) -> None:
        """Starts the background thread and the exit hook (called with the lock held)."""
        self._thread = threading.Thread(target=self._loop, name="agentspan-held-writes", daemon=True)
        self._thread.start()
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    def _loop(self) -> None:
        while True:
            self._pending.wait()
            if self._closed:
                return
            with self._lock:
                waiting = [since for t, since in self._since.items() if t not in self._failed]
                if not waiting:
                    self._pending.clear()
                    continue
                wait = min(waiting) + self.delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
                continue
            self._send_due()

    def _send_due(self) -> None:
        """Sends the writes held for ``delay`` seconds; a failure keeps them held for the thread's next call."""
        with self._lock:
            due = time.monotonic() - self.delay
            for thread_id in [t for t, since in self._since.items() if since <= due and t not in self._failed]:
                try:
                    self._send(self._held[thread_id])
                except Exception as exc:
                    self._failed.add(thread_id)
                    log.warning(
                        "agentspan: could not send the held checkpoint writes of thread %r (%s); they stay "
                        "held, and the next call for that thread sends them and raises if this persists",
                        thread_id, exc,
                    )  # fmt: skip
                else:
                    self._pop(thread_id)


def _close_at_exit(ref: weakref.ReferenceType[HeldWrites]) -> None:
    held = ref()
    if held is not None and not held._closed:
        held.close()
