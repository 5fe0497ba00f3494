"""Step commits off the agent's path: a helper process writes the journal's step rows.

Every model and tool call of a run ends in one step write. On the embedded SQLite store that is a
commit of ~30 µs in a tight loop, but 60-150 µs in a run (measured, `bench/bench_own_time.py`):
between two of them the framework's own work evicts SQLite from the CPU's caches. A durable run
does not need the commit before the call returns, only before the run acts on it: before its next
model or tool call, its result or an event it hands out (the "output commit" of
`agentspan.stores.wal_sync`, which does the same for the fsyncs of a ``"full"`` store). The runtime
calls `Store.wait_durable` at exactly those points.

A store opened with ``defer_step_sync`` (the store `agentspan.get_store` opens for the runtime)
therefore hands the row of a new step to a helper process through a pipe and returns; the helper
(`agentspan.stores.step_writer_helper`) commits it, with the same fenced ``INSERT`` the store runs
itself, on the machine's other core while the framework goes on. On a ``"full"`` store the helper's
commits are fsynced (``synchronous=FULL``) before it answers: the commit and its fsync both leave
the agent's path (before, the run committed and a `WalSyncer` fsynced). `settle` (called by
`wait_durable` and before every other statement of the store: a reader sees its own writes, and
writes stay in order) waits for its answers. A write the helper did not apply (the fence refused it,
its key was written before, SQLite failed) comes back to the store, which writes it the usual way in
the caller's thread: the usual error, raised at the run's next wait.

No system call on the agent's path: the helper publishes its answers in shared memory (the store
reads a word), and while frames keep coming it polls its pipe instead of sleeping on it, so the
store's ``write`` wakes nobody. On this VM waking a process that sleeps on a pipe costs the writer
16-37 µs, and reading an answer from a pipe in a run 25-48 µs: with both, the helper was
measured no faster than committing inline (sessions 13-15, `bench/HISTORY.md`).

Why this is as safe as the commit it replaces: once ``os.write`` returned, the row is in the pipe,
which outlives the store's process. A SIGKILLed run's helper reads what is left, commits it and
exits (a row cut off mid-frame was never handed over: the run had not gone on past it). While it
does, it holds a lock file named after its owner, and a dead owner's runs are not taken over
before the lock is free (`still_committing`, `agentspan.leases`): a resumed attempt does not
repeat a call whose step is on its way. A row that arrives after another attempt claimed the run
(a lease that expired) is refused by the fence, as if the crash had come before its commit. And
nothing happens that depends on a row before `settle` has seen it committed.

Why a process: a thread needs the GIL to report its commit, and the agent's thread holds it for
milliseconds at a time (a writer thread was measured slower than committing inline, three times).
Why only after a few writes (`StepWriter.start_after`): a process that journals a handful of calls
would spend more starting the helper (~20 ms of CPU) than it saves. Until the helper is ready, and
if it cannot start or dies, the store commits inline.
"""

from __future__ import annotations

import collections
import itertools
import marshal
import mmap
import os
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from agentspan.errors import StoreError

__all__ = ["StepWriter", "still_committing"]

_WORD = struct.Struct("<q")
_READY, _GIVEN_BACK, _ANSWERED = 0, 8, 16  # offsets of the shared words (written by the helper)
_SHARED_SIZE = 24
_RETURN = struct.Struct("<qi")  # a write not applied: its sequence number, its row count (-1: failed)
_SIZE = struct.Struct("<I")

MAX_FRAME = 1 << 20
"""Bytes of the largest row handed to the helper: a larger one is committed inline (a pipe moves
it no faster than SQLite writes it, and the run would wait on the pipe)."""

HELPER_PATIENCE = 0.05
"""Seconds a wait blocks on the helper's pipe before it checks whether the helper is still alive."""

_HELPER = (Path(__file__).parent / "step_writer_helper.py").read_text(encoding="utf-8")
"""The helper's code (`agentspan.stores.step_writer_helper`), run with ``python -I -S -c``."""


_ALL: weakref.WeakSet[StepWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_ALL):
        writer._adopt()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_SERIALS = itertools.count(1)
"""Numbers the helpers this process starts (one lock file each)."""


def _lock_folder(db_path: str) -> str:
    """Where the helpers of a database hold their lock files: beside it, so that every process
    that opens the database sees them (whatever its temporary folder or user)."""
    folder, name = os.path.split(os.path.abspath(db_path))
    return os.path.join(folder, f".{name}-writers")


def _owner_prefix(owner: str) -> str | None:
    """``pid-nonce-`` of a lease owner id ``host:pid:nonce`` (None for another form)."""
    _host, _, rest = owner.partition(":")
    pid, _, nonce = rest.partition(":")
    return f"{pid}-{nonce}-" if pid.isdigit() and nonce.isalnum() else None


def still_committing(owner: str, db_path: str) -> bool:
    """Whether a helper of the (dead) lease owner ``owner`` on this host still commits its steps to
    the database at ``db_path``.

    A SIGKILLed owner's steps may still be in its helper's pipe: its runs are taken over only once
    the helper has committed them (else a resumed attempt would repeat a tool call the journal
    is about to hold, and the fence would then refuse the late row). Each helper holds a lock
    file of its own (``flock``) while it lives.
    """
    prefix = _owner_prefix(owner)
    folder = _lock_folder(db_path)
    if prefix is None or not os.path.isdir(folder):
        return False
    import fcntl

    for name in os.listdir(folder):
        if not name.startswith(prefix):
            continue
        try:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            pass
        finally:
            os.close(fd)
    return False


def _shared_file() -> int:
    """A file descriptor of a small file both processes map (memory only, where the OS allows)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("agentspan-step-writer")
    else:  # pragma: no cover - macOS
        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
    os.ftruncate(fd, _SHARED_SIZE)
    return fd


class StepWriter:
    """Commits one statement's rows in a helper process, for one SQLite store of this process.

    The helper reads length-prefixed `marshal` frames ``(sequence number, parameters)`` from its
    stdin and publishes, in a small shared mapping, the last sequence number it answered for and
    how many writes it did not apply; those (``(seq, row count)`` records) go out on a pipe of
    their own first. A byte on its stdout after each answer wakes a writer that waits for it.

    Args:
        path: The database file (already in WAL mode).
        statement: The write each row is bound to (the store's fenced step ``INSERT``).
        busy_timeout: Seconds the helper's statement waits for SQLite's write lock.
        autocheckpoint_pages: The helper connection's ``wal_autocheckpoint``.
        synchronous: The helper connection's ``synchronous``: ``"FULL"`` (each commit fsynced
            before its answer: a ``"full"`` store) or ``"NORMAL"``.
        poll: Whether the helper polls its pipe while frames keep coming (it has a CPU of its
            own) or always sleeps on it (it shares one with this process).
    """

    helper_code = _HELPER
    start_after = 8
    """Writes handed to `send` before the helper is started (the first ones commit inline)."""

    def __init__(self, path: str, statement: str, *, busy_timeout: float, autocheckpoint_pages: int,
                 synchronous: str = "NORMAL", poll: bool = True) -> None:
        self.path = path
        self.statement = statement
        self.busy_timeout = busy_timeout
        self.autocheckpoint_pages = autocheckpoint_pages
        self.synchronous = synchronous
        self.poll = poll
        self.sent = 0
        """Writes handed to the helper so far (their sequence numbers are 1..sent)."""
        self.answered = 0
        """Writes the helper answered for (it answers in order)."""
        self.applied = 0
        """Writes the helper answered as applied (the store counts them as commits)."""
        self.offered = 0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_helper = self._wakes = self._returns = -1
        self._shared: mmap.mmap | None = None
        self._ready = False
        self._no_helper = False
        self._given_back = 0
        self._waiting: collections.deque[tuple[int, Any]] = collections.deque()
        """(sequence number, the caller's record) of each write not answered yet, in order."""
        self._returned: list[tuple[Any, bool]] = []
        """(record, in doubt) of writes the helper did not apply, for the store to write."""
        self._in_hand = 0
        """Writes `settle` returned that the store has not said `written` yet (they keep `busy`)."""
        self._not_applied: set[int] = set()
        """Sequence numbers of the writes the helper said it did not apply, until their turn comes
        (it says so before it publishes them as answered)."""

        _ALL.add(self)

    @property
    def busy(self) -> bool:
        """Whether writes are out or handed back: cheap (a read of the shared mapping, no lock or
        system call), for the store to call before each statement."""
        if self._returned or self._in_hand:
            return True
        if self.sent == self.answered:
            return False
        shared = self._shared
        return shared is None or _WORD.unpack_from(shared, _ANSWERED)[0] < self.sent or \
            _WORD.unpack_from(shared, _GIVEN_BACK)[0] != self._given_back

    def start(self, timeout: float) -> None:
        """Starts the helper now (not after `start_after` writes) and waits until it is ready.

        Raises:
            StoreError: The helper did not start within ``timeout`` seconds.
        """
        with self._lock:
            self.offered = max(self.offered, self.start_after + 1)
            started = self._helper()
        deadline = time.monotonic() + timeout
        while not self.helper_ready:
            if not started or self._no_helper or time.monotonic() > deadline:
                raise StoreError(f"the step writer of {self.path} did not start")
            time.sleep(0.005)

    @property
    def helper_pid(self) -> int | None:
        """The helper process's id (None while none runs)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def helper_ready(self) -> bool:
        """Whether a helper runs for this process and has said it is ready."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is not None:
                self._lose_helper()
            return self._proc is not None and self._is_ready()

    def send(self, params: tuple[Any, ...], record: Any) -> bool:
        """Hands one row to the helper; returns False when the caller must write it itself (no
        helper ready yet, or none can run). ``record`` comes back from `settle` if the helper does
        not apply the row."""
        with self._lock:
            self.offered += 1
            if not self._ready and (self._no_helper or not self._helper() or not self._is_ready()):
                return False
            seq = self.sent + 1
            try:
                frame = marshal.dumps((seq, params))
            except ValueError:  # a value marshal cannot hold: the store binds it itself
                return False
            if len(frame) > MAX_FRAME:
                return False
            waiting = self._waiting
            if len(waiting) >= 64:
                self._take_answers()  # the records of answered writes go (no system call: shared memory)
            try:
                waiting.append((seq, record))  # (first: a record in the list comes back from `settle`)
                self.sent = seq
                data = _SIZE.pack(len(frame)) + frame
                written = os.write(self._to_helper, data)
                while written < len(data):  # a frame larger than the pipe's buffer
                    written += os.write(self._to_helper, data[written:])
            except OSError:  # the helper is gone: `settle` returns what it did not answer
                self._lose_helper()
            except BaseException:
                # A signal handler raised here (SystemExit from a SIGTERM handler,
                # KeyboardInterrupt): the frame may be counted but not handed over, or cut off in
                # the pipe, so the helper would wait for its rest for ever and `settle` for the
                # helper. It is stopped (it commits the whole frames, drops the cut one); what it
                # did not answer comes back in doubt.
                self._stop_helper()
                raise
            return True

    def settle(self) -> list[tuple[Any, bool]]:
        """Waits until the helper answered every write handed to it before this call; returns the
        ``(record, in_doubt)`` of those it did not apply, oldest first, for the caller to write
        (``in_doubt``: the helper died without an answer; the row may be committed already)."""
        with self._lock:
            target = self.sent
            while True:
                self._take_answers()
                if self.answered >= target:
                    break
                self._wait_for_helper()
            self._in_hand += len(self._returned)  # before the list empties: `busy` stays true
            returned, self._returned = self._returned, []
            return returned

    def written(self, count: int) -> None:
        """Says that the store wrote ``count`` writes `settle` or `close` returned (or failed to)."""
        with self._lock:
            self._in_hand -= count

    def close(self) -> list[tuple[Any, bool]]:
        """Stops the helper once it has written what it was handed; returns what the caller must
        still write (as `settle`)."""
        with self._lock:
            self._stop_helper()
            self._no_helper = True
            self._in_hand += len(self._returned)
            returned, self._returned = self._returned, []
            return returned

    # ---- under the lock -------------------------------------------------------------------
    def _stop_helper(self) -> None:
        """Ends the helper once it has written the whole frames it was handed, and takes its last
        answers (what it did not answer comes back from `settle`)."""
        if self._proc is not None:
            if self._to_helper >= 0:
                os.close(self._to_helper)  # the helper writes what is queued, then sees the end
                self._to_helper = -1
            try:
                self._proc.wait(timeout=self.busy_timeout + 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._lose_helper()  # takes its last answers

    def _adopt(self) -> None:
        """In a forked child (`os.register_at_fork`), forgets the parent's helper, pipes and writes
        (they are the parent's)."""
        self._lock = threading.Lock()  # the parent's may have been held by another thread
        for fd in (self._to_helper, self._wakes, self._returns):
            if fd >= 0:
                os.close(fd)
        self._proc, self._shared, self._ready, self._no_helper = None, None, False, False
        self._to_helper = self._wakes = self._returns = -1
        self.sent = self.answered = self.applied = self.offered = self._given_back = self._in_hand = 0
        self._waiting, self._returned, self._not_applied = collections.deque(), [], set()

    def _is_ready(self) -> bool:
        if not self._ready and self._shared is not None:
            if _WORD.unpack_from(self._shared, _READY)[0]:
                self._ready = True
            elif self.offered % 64 == 0 and self._proc is not None and self._proc.poll() is not None:
                self._lose_helper()  # it could not start (it exits at once): commit inline from now on
        return self._ready

    def _helper(self) -> bool:
        """Whether a helper runs (started once enough writes were offered)."""
        if self._proc is not None:
            return True
        if self.offered <= self.start_after or not sys.executable:
            return False
        from agentspan.leases import owner_id

        prefix = _owner_prefix(owner_id())
        if prefix is None:
            self._no_helper = True
            return False
        owner_lock = os.path.join(_lock_folder(self.path), f"{prefix}{next(_SERIALS)}.lock")
        shared_fd = -1
        pipes: list[int] = []
        try:
            shared_fd = _shared_file()
            self._shared = mmap.mmap(shared_fd, _SHARED_SIZE)
            pipes = [*os.pipe(), *os.pipe(), *os.pipe()]
            helper_in, self._to_helper, self._wakes, helper_out, self._returns, helper_returns = pipes
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", self.helper_code, self.path, self.statement,
                 repr(self.busy_timeout), str(self.autocheckpoint_pages), str(shared_fd), str(helper_returns),
                 owner_lock, self.synchronous, "1" if self.poll else "0"],
                stdin=helper_in, stdout=helper_out, stderr=subprocess.DEVNULL, close_fds=True,
                pass_fds=(shared_fd, helper_returns))
        except (OSError, ValueError):
            for fd in pipes:
                os.close(fd)
            self._to_helper = self._wakes = self._returns = -1
            self._shared = None
            self._no_helper = True
            return False
        finally:
            if shared_fd >= 0:
                os.close(shared_fd)
        for fd in (helper_in, helper_out, helper_returns):
            os.close(fd)
        os.set_blocking(self._wakes, False)
        return True

    def _take_answers(self) -> None:
        """Reads what the helper published: the writes it answered for and those it handed back."""
        if self._shared is None:
            self._give_back_unanswered()
            return
        answered = _WORD.unpack_from(self._shared, _ANSWERED)[0]  # before the count: it is written after
        given_back = _WORD.unpack_from(self._shared, _GIVEN_BACK)[0]
        not_applied = self._not_applied
        if given_back > self._given_back:
            needed = (given_back - self._given_back) * _RETURN.size
            data = b""
            while len(data) < needed:  # written before the count went up: there, or the helper is gone
                chunk = os.read(self._returns, needed - len(data))
                if not chunk:
                    break
                data += chunk
            not_applied.update(seq for seq, _count in _RETURN.iter_unpack(data[:len(data) - len(data) % _RETURN.size]))
            self._given_back = given_back
        while self._waiting and self._waiting[0][0] <= answered:
            seq, record = self._waiting.popleft()
            if seq in not_applied:
                not_applied.discard(seq)
                self._returned.append((record, False))
            else:
                self.applied += 1
        self.answered = max(self.answered, answered)

    def _wait_for_helper(self) -> None:
        """Blocks until the helper answers again (its byte on the wake pipe), or finds it gone."""
        proc = self._proc
        if proc is None:
            self._give_back_unanswered()
            return
        try:
            while os.read(self._wakes, 65536):
                pass
            else:
                self._lose_helper()  # end of file: the helper is gone
                return
        except BlockingIOError:
            pass
        if _WORD.unpack_from(self._shared, _ANSWERED)[0] >= self.sent:  # type: ignore[arg-type]
            return
        if not select.select([self._wakes], [], [], HELPER_PATIENCE)[0] and proc.poll() is not None:
            self._lose_helper()

    def _give_back_unanswered(self) -> None:
        """The helper is gone: every write it did not answer goes back to the caller, in doubt."""
        self._returned.extend((record, True) for _, record in self._waiting)
        self._waiting.clear()
        self._not_applied.clear()
        self.answered = self.sent

    def _lose_helper(self) -> None:
        """Stops using the helper (gone, or its pipe broke), after taking its last answers."""
        if self._proc is not None:
            self._proc.poll()
            self._take_answers()
            for fd in (self._to_helper, self._wakes, self._returns):
                if fd >= 0:
                    os.close(fd)
            self._to_helper = self._wakes = self._returns = -1
            self._proc = None
        self._shared = None
        self._ready = False
        self._no_helper = True
        self._give_back_unanswered()
