"""The helper process of `agentspan.stores.step_writer`: commits the step rows a store hands it.

Run as ``python -I -S -c <this file's text> PATH STATEMENT TIMEOUT PAGES SHARED_FD RETURNS_FD
OWNER_LOCK SYNCHRONOUS POLL`` (standard library only: it starts in ~20 ms; ``SYNCHRONOUS`` is
``FULL`` for a ``"full"`` store, whose every commit it fsyncs, else ``NORMAL``; ``POLL`` is ``1``
when it may poll its pipe, ``0`` when it shares one CPU with the store's process and must sleep
on it instead). Its stdin carries
length-prefixed `marshal` frames ``(sequence number, parameters)``; each is bound to ``STATEMENT``
and committed on its own. It publishes in the shared mapping (``SHARED_FD``, three 8-byte words):
ready, how many writes it did not apply (each first written as ``(seq, row count)`` to
``RETURNS_FD``) and the last sequence number it answered for; then it writes a byte to its stdout
for a store that waits. It holds ``OWNER_LOCK`` locked while it lives, and exits at the end of its
stdin, when every frame handed over is committed.
"""

import fcntl
import marshal
import mmap
import os
import select
import sqlite3
import struct
import sys
import time

WORD, RETURN, SIZE = struct.Struct("<q"), struct.Struct("<qi"), struct.Struct("<I")
POLL, AWAKE = 0.0002, 0.02
"""Seconds between two looks at the pipe, for this long after the last frame (then it sleeps on
the pipe): a store that finds this process asleep on the pipe pays for waking it (tens of
microseconds on a VM), one that finds it polling does not. Not on a shared CPU: there each look
takes the CPU from the agent (measured: +2.2 ms per turn, `agentspan.stores.cores`)."""


def open_database(path: str, timeout: float, pages: int, synchronous: str) -> sqlite3.Cursor:
    """A cursor on the store's database, as the store's own connection is set up."""
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            sys.exit(1)
    except sqlite3.Error:
        sys.exit(1)
    return conn.cursor()


def hold_owner_lock(owner_lock: str) -> None:
    """Locks the owner's file for as long as this process lives (`step_writer.still_committing`)."""
    try:
        os.makedirs(os.path.dirname(owner_lock), mode=0o700, exist_ok=True)
        fcntl.flock(os.open(owner_lock, os.O_CREAT | os.O_RDWR, 0o644), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(1)


def main() -> None:
    path, statement, timeout, pages = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    shared, returns, owner_lock = mmap.mmap(int(sys.argv[5]), 3 * WORD.size), int(sys.argv[6]), sys.argv[7]
    cur = open_database(path, timeout, pages, sys.argv[8])
    hold_owner_lock(owner_lock)
    try:
        serve(cur, statement, shared, returns, AWAKE if sys.argv[9] == "1" else 0.0)
    finally:
        try:
            os.unlink(owner_lock)  # before the lock goes with this process
        except OSError:
            pass


def serve(cur: sqlite3.Cursor, statement: str, shared: mmap.mmap, returns: int, awake: float) -> None:
    """Commits the frames of stdin until it ends (polling the pipe for ``awake`` seconds after
    each frame, then sleeping on it)."""
    os.set_blocking(0, False)
    os.set_blocking(1, False)
    given_back = 0
    WORD.pack_into(shared, 0, 1)  # ready
    buffer, last = bytearray(), time.monotonic()
    while True:
        try:
            data = os.read(0, 1 << 16)
        except BlockingIOError:
            if time.monotonic() - last < awake:
                time.sleep(POLL)
            else:
                select.select([0], [], [])
            continue
        if not data:
            break  # the store closed, or its process died: a frame cut off was never handed over
        buffer += data
        at = 0
        while len(buffer) - at >= SIZE.size:
            size = SIZE.unpack_from(buffer, at)[0]
            if len(buffer) - at - SIZE.size < size:
                break
            seq, params = marshal.loads(memoryview(buffer)[at + SIZE.size:at + SIZE.size + size])
            at += SIZE.size + size
            try:
                count = cur.execute(statement, params).rowcount
            except Exception:  # SQLite failed, or a value it cannot bind: the store writes it and raises
                count = -1
            if count != 1:  # the store writes it itself: which one goes out before it is counted
                try:
                    os.write(returns, RETURN.pack(seq, count))
                except OSError:
                    pass  # the store's process is gone: the other frames are still committed
                given_back += 1
                WORD.pack_into(shared, 8, given_back)
            WORD.pack_into(shared, 16, seq)
            try:
                os.write(1, b"!")  # for a store that waits; a full pipe already says as much
            except OSError:
                pass
        del buffer[:at]
        last = time.monotonic()


if __name__ == "__main__":
    main()
