"""Side effects of the testing-kit tests' real tools, counted across processes: appended to the
file named by ``TK_EFFECTS`` (a crash test's child process writes there too)."""

from __future__ import annotations

import os


def effect(line: str) -> None:
    """Records a real tool's side effect (in the process that ran it)."""
    with open(os.environ["TK_EFFECTS"], "a") as f:
        f.write(line + "\n")


def effects() -> list[str]:
    """The side effects recorded so far, in order."""
    path = os.environ["TK_EFFECTS"]
    return open(path).read().splitlines() if os.path.exists(path) else []
