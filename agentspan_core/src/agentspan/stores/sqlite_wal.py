"""WAL checkpoints off the hot path.

SQLite's automatic checkpoint runs inside the commit that pushes the WAL past 1000 pages: that
commit copies the WAL into the database file and fsyncs both, which costs milliseconds (far more
on a busy disk). Measured in a 100-turn agent run, 1% of commits took 57% of all commit time. The
store therefore moves the automatic checkpoint's threshold to `BACKSTOP_PAGES` (a backstop for
writers faster than the thread: a WAL is only rewound once a checkpoint has caught up with it)
and lets a background thread, on a connection of its own, run ``PRAGMA wal_checkpoint(PASSIVE)``
every ``every_commits`` commits. A passive checkpoint never blocks writers, and the thread waits
on the disk without the GIL (``sqlite3`` releases it while a statement runs). The thread starts
at the first checkpoint, so a short-lived process (the CLI) never starts it.
"""

from __future__ import annotations

import sqlite3
import threading

DEFAULT_EVERY_COMMITS = 400
"""About 2,000 WAL pages at the 4-6 pages a journal write touches (SQLite's own default is
1,000 pages): the WAL file stays a few MB."""

CATCH_UP_TRIES = 8
"""Checkpoints one wake-up may run to copy the frames committed while the previous one ran."""

BACKSTOP_PAGES = 10_000
"""SQLite's automatic checkpoint (in the commit path) only past this many WAL pages (~40 MB)."""


class WalCheckpointer:
    """Checkpoints one database file's WAL from a background thread.

    Args:
        path: The database file.
        every_commits: Commits between two checkpoints.
    """

    def __init__(self, path: str, *, every_commits: int = DEFAULT_EVERY_COMMITS) -> None:
        self.path = path
        self.every_commits = every_commits
        self.commits = 0
        self.checkpoints = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def committed(self, count: int = 1) -> None:
        """Counts ``count`` commits; every ``every_commits`` commits wakes the thread. Called
        under the store's lock, so the counter needs none of its own."""
        before = self.commits
        self.commits += count
        if before // self.every_commits != self.commits // self.every_commits:
            self._start_once()
            self._wake.set()

    def _start_once(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="agentspan-wal-checkpoint", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return  # the store's own connection reports problems with the file
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closed:
                    return
                try:
                    self._catch_up(conn)
                except sqlite3.Error:
                    continue  # busy or closing: the next wake-up tries again
        finally:
            conn.close()

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        """Checkpoints until every frame of the WAL is in the database file (or `CATCH_UP_TRIES`).

        SQLite rewinds the WAL (the next commit writes at its start again, over blocks the file
        already has) only when a checkpoint has copied all of it. A single checkpoint under a
        steady stream of commits never gets there: the commits made while it copies are left
        over, the WAL keeps growing up to `BACKSTOP_PAGES`, and every commit appends (a pwrite
        that extends a file costs about twice one that overwrites). The frames left over by one
        checkpoint are few, so the next one is short and usually catches up. (A checkpoint's
        frame count is the WAL as it began; only a second checkpoint that finds no new frame
        tells that nothing was committed meanwhile.)
        """
        seen = -1
        for _ in range(CATCH_UP_TRIES):
            _busy, in_wal, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
            # ``in_wal`` counts the frames when this checkpoint began: the WAL is caught up once a
            # checkpoint copied them all and no commit came while the one before it ran.
            if self._closed or in_wal <= 0 or (copied >= in_wal and in_wal == seen):
                return
            seen = in_wal

    def close(self) -> None:
        """Stops the thread (waiting for a checkpoint under way). SQLite checkpoints the WAL
        itself when the last connection to the file closes."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=10.0)
