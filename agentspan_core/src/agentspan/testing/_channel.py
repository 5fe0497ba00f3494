"""JSON lines over a pair of pipes: how a crash test's child process asks the test process for
scripted turns, tool stand-in results and approval decisions."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from agentspan.errors import AgentspanError

FDS_ENV = "AGENTSPAN_MOCK_FDS"
"""Environment variable naming the child's pipe ends: ``"<read fd>,<write fd>"``."""


class Channel:
    """One end of the pipe pair: ``send`` a message, ``receive`` the next, ``request`` both.

    Args:
        read_fd: The file descriptor to read messages from.
        write_fd: The file descriptor to write messages to.
    """

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader = os.fdopen(read_fd, "r", encoding="utf-8")
        self._writer = os.fdopen(write_fd, "w", encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        """Writes one message."""
        self._writer.write(json.dumps(message) + "\n")
        self._writer.flush()

    def receive(self) -> dict[str, Any] | None:
        """Reads the next message (None at end of stream: the other process is gone)."""
        line = self._reader.readline()
        return json.loads(line) if line else None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (message := self.receive()) is not None:
            yield message

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Sends a message and returns the answer (one request at a time across threads)."""
        with self._lock:
            self.send(message)
            answer = self.receive()
        if answer is None:
            raise AgentspanError("the test process closed the mock_run channel")
        return answer

    def close(self) -> None:
        """Closes both ends."""
        for stream in (self._writer, self._reader):
            try:
                stream.close()
            except OSError:
                pass
