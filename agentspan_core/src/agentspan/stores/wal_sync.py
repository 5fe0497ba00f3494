"""Power-loss safe step writes without waiting for the disk on the agent's path.

A ``durability="full"`` SQLite store fsyncs every commit before it returns: two fsyncs per agent
turn (the model call, the tool call), 0.1-0.4 ms each on a cloud VM's disk. What durable
execution needs is weaker: a journaled call must be on stable storage before the run does
anything that depends on it, i.e. before its next model or tool call, its result, or an event it
hands out ("output commit", as in Nightingale et al., *Rethink the Sync*, OSDI 2006).

A store opened with ``defer_step_sync=True`` (the store `agentspan.get_store` opens for the
runtime) therefore commits step writes without an fsync and has a helper process fsync the WAL
file; the runtime calls `Store.wait_durable` before each live call, which returns at once when
the helper has caught up (the framework's own work between two calls, milliseconds, hides the
fsync) and otherwise waits for it. Every other write of the store stays a ``synchronous=FULL``
commit, which also covers the step writes before it.

Why a process and not a thread: a thread needs the GIL to start the fsync and again to report
it, and the agent's thread holds the GIL for milliseconds at a time (measured: a thread made
runs slower than fsyncing inline). The helper is a few lines of Python (stdin: the sequence
numbers of commits to cover; stdout: the highest one covered, or a negative errno) that exits
when its stdin closes: when the store closes or its process dies, after covering what it was
asked to. If it cannot be started or dies, the caller fsyncs inline (slower, as safe). A failed
fsync makes every later wait raise `StoreError`: Linux may drop dirty pages it could not write,
so nothing written since can be trusted to be on disk.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import threading

from agentspan.errors import StoreError

__all__ = ["WalSyncer"]

_SEQ = struct.Struct("<q")

HELPER_PATIENCE = 0.05
"""Seconds a barrier waits for the helper's answer before it fsyncs inline (a machine too busy
to run the helper soon: the barrier never waits much longer than an inline fsync would)."""

_HELPER = r"""
import os, struct, sys
wal = sys.argv[1]
fd = None
os.write(1, struct.pack("<q", 0))  # ready
while True:
    data = os.read(0, 65536)  # requests are 8 bytes, written atomically: whole ones arrive
    if not data:
        break
    seq = struct.unpack_from("<q", data, len(data) - 8)[0]
    try:
        if fd is None:
            fd = os.open(wal, os.O_RDONLY)
            folder = os.open(os.path.dirname(wal) or ".", os.O_RDONLY)
            try:
                os.fsync(folder)  # a WAL file created since the last checkpoint: its name too
            finally:
                os.close(folder)
        getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync
    except OSError as exc:
        os.write(1, struct.pack("<q", -(exc.errno or 5)))
        break
    os.write(1, struct.pack("<q", seq))
"""


class WalSyncer:
    """Makes the commits to one WAL file durable in a helper process.

    Args:
        wal_path: The database's ``-wal`` file (it exists once the database has a commit).
    """

    helper_code = _HELPER

    def __init__(self, wal_path: str) -> None:
        self.wal_path = wal_path
        self.requested = 0
        """Commits asked to be made durable so far."""
        self.synced = 0
        """The highest of them known to be on stable storage."""
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_helper = -1
        self._from_helper = -1
        self._ready = False
        self._no_helper = False  # could not start one, or it died: the caller fsyncs inline
        self._inline_fd = -1
        self._failure: str | None = None

    @property
    def helper_pid(self) -> int | None:
        """The helper process's id (None while none runs)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def helper_ready(self) -> bool:
        """Whether a helper runs and has said it is ready (takes its answers so far)."""
        with self._lock:
            if self._ours():
                self._read(block=False)
            return self._ours() and self._ready

    def request(self) -> None:
        """Asks for the commit just made (and all before it) to be made durable; returns at once."""
        with self._lock:
            self.requested += 1
            if self._failure is None and self._helper():
                try:
                    os.write(self._to_helper, _SEQ.pack(self.requested))
                except OSError:
                    self._lose_helper()

    def covered(self) -> None:
        """Says that a commit fsynced by SQLite itself (after every requested one) covered them all."""
        with self._lock:
            self.synced = self.requested

    def wait(self) -> None:
        """Returns once every requested commit is on stable storage.

        Raises:
            StoreError: An fsync of the WAL failed (now or earlier).
        """
        if self.synced >= self.requested and self._failure is None:
            return
        with self._lock:
            target = self.requested
            if self._ours():
                self._read(block=False)
            while self.synced < target and self._failure is None:
                if not (self._ours() and self._ready):
                    self._sync_inline(target)  # also while the helper starts: never wait for that
                elif not self._read(block=True):
                    self._sync_inline(target)  # no answer in time (a busy machine)
            if self._failure is not None:
                raise StoreError(self._failure)

    def close(self) -> None:
        """Stops the helper once it has covered what it was asked to (or covers it inline)."""
        with self._lock:
            if self._ours():
                os.close(self._to_helper)  # the helper fsyncs what is queued, then sees the end
                self._to_helper = -1
                proc = self._proc
                assert proc is not None  # _ours() says so
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                self._lose_helper()  # takes its last answers
            if self.synced < self.requested and self._failure is None:
                self._sync_inline(self.requested)
            if self._inline_fd >= 0:
                os.close(self._inline_fd)
                self._inline_fd = -1

    # ---- under the lock -------------------------------------------------------------------
    def _ours(self) -> bool:
        """Whether a helper runs for this process (a forked child's is its parent's)."""
        return self._proc is not None and self._pid == os.getpid()

    def _helper(self) -> bool:
        """Whether a helper runs (started on first use, and again in a forked child)."""
        if self._pid != os.getpid():  # a forked child: the inherited pipes are the parent's
            if self._proc is not None:
                os.close(self._to_helper)
                os.close(self._from_helper)
            self._proc, self._pid, self._ready, self._no_helper = None, os.getpid(), False, False
        if self._proc is not None:
            return True
        if self._no_helper or not sys.executable:
            return False
        helper_in, self._to_helper = os.pipe()
        self._from_helper, helper_out = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", self.helper_code, self.wal_path],
                stdin=helper_in, stdout=helper_out, stderr=subprocess.DEVNULL, close_fds=True)
        except OSError:
            os.close(self._to_helper)
            os.close(self._from_helper)
            self._no_helper = True
            return False
        finally:
            os.close(helper_in)
            os.close(helper_out)
        os.set_blocking(self._from_helper, False)
        return True

    def _read(self, *, block: bool) -> bool:
        """Takes the helper's answers (waiting up to `HELPER_PATIENCE` for one when ``block``);
        whether there were any."""
        if block:
            select.select([self._from_helper], [], [], HELPER_PATIENCE)
        try:
            data = os.read(self._from_helper, 65536)
        except BlockingIOError:
            if block and self._proc is not None and self._proc.poll() is not None:
                self._lose_helper()
            return False
        if not data:  # the helper is gone: what it did not confirm is fsynced inline
            self._lose_helper()
            return False
        self._take(data)
        return True

    def _take(self, data: bytes) -> None:
        for (seq,) in _SEQ.iter_unpack(data):
            if seq < 0:
                self._failure = f"fsync of {self.wal_path} failed: {os.strerror(-seq)}"
            elif seq == 0:
                self._ready = True
            elif seq > self.synced:
                self.synced = seq

    def _lose_helper(self) -> None:
        """Stops using the helper (gone, or its pipe broke), keeping what it answered last: a
        failed fsync it reported must not be covered by an inline one that succeeds."""
        if self._proc is not None:
            try:
                while data := os.read(self._from_helper, 65536):
                    self._take(data)
            except OSError:
                pass
            for fd in (self._to_helper, self._from_helper):
                if fd >= 0:
                    os.close(fd)
            self._to_helper = self._from_helper = -1
            self._proc.poll()
            self._proc = None
        self._no_helper = True

    def _sync_inline(self, target: int) -> None:
        try:
            if self._inline_fd < 0:
                self._inline_fd = os.open(self.wal_path, os.O_RDONLY)
                folder = os.open(os.path.dirname(self.wal_path) or ".", os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
            getattr(os, "fdatasync", os.fsync)(self._inline_fd)
        except OSError as exc:
            self._failure = f"fsync of {self.wal_path} failed: {exc.strerror or exc}"
            return
        self.synced = max(self.synced, target)
