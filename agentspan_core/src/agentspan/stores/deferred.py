"""Holding back in-flight markers that may be lost, so a quick call costs one write, not two.

`Store.start_step` with ``durable=False`` is a caller's promise that losing the marker changes
nothing (a tool call whose in-doubt policy is to run again anyway). Most such calls end within
milliseconds; their start and end are then written together as one `Store.record_step`. A call
still running after ``delay`` seconds gets its marker written by a background thread, so a slow
tool shows as running to other processes.

The thread is started once per store and sleeps while nothing is held: starting a thread per call
would cost more than the write it saves (``Thread.start`` waits for the new thread to get the GIL,
milliseconds when the caller is busy).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agentspan.errors import AgentspanSignal
from agentspan.records import Step


class DeferredStarts:
    """The held-back starts of one store.

    Args:
        delay: Seconds a start may wait for its end before the background thread writes it.
        write: Writes one start (``step, epoch``); called from the background thread. An exception
            (or a signal such as `RunCancelledSignal`) keeps the start held, so the step's end
            carries it (and reports the refusal).
    """

    def __init__(self, delay: float, write: Callable[[Step, int], None]) -> None:
        self.delay = delay
        self._write = write
        self._held: dict[tuple[str, str], tuple[Step, int, float]] = {}
        self._failed: set[tuple[str, str]] = set()  # written once without success: left to the end
        self._lock = threading.Lock()  # also held while writing, so `take` waits for a write under way
        self._pending = threading.Event()  # set while something is held
        self._thread: threading.Thread | None = None
        self._closed = False

    def hold(self, step: Step, epoch: int) -> bool:
        """Holds ``step``'s start back. Returns False when holding is off (write it now)."""
        if self.delay <= 0 or self._closed:
            return False
        key = (step.run_id, step.key)
        with self._lock:
            self._held[key] = (step, epoch, time.monotonic())
            self._failed.discard(key)
            if not self._pending.is_set():
                self._pending.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="agentspan-deferred-starts", daemon=True)
                self._thread.start()
        return True

    def take(self, run_id: str, key: str) -> tuple[Step, int] | None:
        """Removes and returns a start still held back (its end is being written now)."""
        with self._lock:
            held = self._held.pop((run_id, key), None)
            self._failed.discard((run_id, key))
        return None if held is None else (held[0], held[1])

    def _loop(self) -> None:
        while not self._closed:
            self._pending.wait()
            time.sleep(self.delay)
            self.flush(older_than=self.delay)

    def flush(self, *, older_than: float = 0.0) -> None:
        """Writes the starts held back for at least ``older_than`` seconds."""
        with self._lock:
            due = time.monotonic() - older_than
            for key, (step, epoch, held_at) in list(self._held.items()):
                if held_at > due or key in self._failed:
                    continue
                try:
                    self._write(step, epoch)
                except (Exception, AgentspanSignal):  # a refusal (a cancelled run's signal too): the
                    # step's end will carry the start instead; the thread goes on for the other runs
                    self._failed.add(key)
                else:
                    del self._held[key]
            if len(self._held) == len(self._failed):
                self._pending.clear()

    def close(self, *, write: bool) -> None:
        """Stops holding; with ``write`` the held starts are written first, else dropped."""
        if write:
            self.flush()
        with self._lock:
            self._closed = True
            self._held.clear()
            self._failed.clear()
            self._pending.set()  # lets the thread see `_closed` and end
