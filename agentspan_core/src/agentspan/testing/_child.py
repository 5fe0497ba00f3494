"""The child process of a crash test (``python -m agentspan.testing._child``).

It imports the target, runs it with stand-ins served by the test process over a pipe (so the
script's cursor and the tool stand-ins live in one place across both processes), and SIGKILLs
itself at the crash point. The test process then resumes the run.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Collection
from typing import Any

from agentspan.errors import AgentspanError, ScriptError
from agentspan.records import JSON, Approval
from agentspan.testing._channel import FDS_ENV, Channel
from agentspan.testing._crash_keys import StableKey, StepNames, crash_target
from agentspan.testing.script import Decision, Turn
from agentspan.testing.stand_ins import StandIns


class CrashPoint:
    """Kills this process at the crash point, after telling the test process where.

    ``at`` is matched against each step's key, and, when the adapter's keys change from run to
    run (`MockSetup.stable_key`, set by `use_stable_keys`), against the step's stable name
    (`agentspan.testing._crash_keys`).
    """

    def __init__(self, channel: Channel, *, after: int | None, at: str | None) -> None:
        self.channel = channel
        self.after = after
        self.at = at
        self.journaled = 0
        self._lock = threading.Lock()
        self._names: StepNames | None = None
        self._target: str | None = None

    def use_stable_keys(self, stable: StableKey | None) -> None:
        """Matches ``at`` against the steps' stable names too (given the adapter's `MockSetup.stable_key`)."""
        if stable is not None and self.at is not None:
            self._names = StepNames(stable)
            self._target = crash_target(self.at, stable)

    def _hit(self, key: str) -> bool:
        # Every key is named as it is met, in order, so that repeats are counted as a later run counts them.
        named = self._names.name(key) if self._names is not None else None
        return key == self.at or (named is not None and named == self._target)

    def crash(self, key: str) -> None:
        """Reports ``key`` and SIGKILLs this process."""
        self.channel.send({"op": "crash", "key": key})
        os.kill(os.getpid(), signal.SIGKILL)

    def started(self, key: str) -> None:
        """A step is in flight (its record is written)."""
        if self.at is not None and self._hit(key):
            self.crash(key)

    def done(self, key: str) -> None:
        """A step is journaled."""
        with self._lock:
            self.journaled += 1
            if self.after is not None and self.journaled >= self.after:
                self.crash(key)

    def model_call(self) -> None:
        """A model call is about to be answered (its step has no in-flight record)."""
        import agentspan

        step = agentspan.current_step()
        if self.at is not None and step is not None and self._hit(step.key):
            self.crash(step.key)


class RemoteStandIns(StandIns):
    """Stand-ins answered by the test process."""

    def __init__(self, channel: Channel, stubbed: Collection[str], crash: CrashPoint) -> None:
        self.channel = channel
        self.stubbed = frozenset(stubbed)
        self.crash = crash

    def next_turn(self, *, tools: Collection[str] | None) -> Turn:
        self.crash.model_call()
        answer = self.channel.request({"op": "turn", "tools": sorted(tools) if tools is not None else None})
        if "error" in answer:
            raise ScriptError(answer["error"], position=answer["position"])
        return Turn.from_json(answer["turn"])

    def call_stub(self, tool: str, args: JSON) -> Any:
        answer = self.channel.request({"op": "stub", "tool": tool, "args": args})
        if "error" in answer:
            raise AgentspanError(f"the stand-in of tool {tool!r} raised {answer['error']}")
        return answer["result"]

    def decide(self, approval: Approval) -> Decision:
        """The test process's decision on an approval (from the script, or the default)."""
        answer = self.channel.request({"op": "decide", "tool": approval.tool})
        return Decision(answer["approved"], answer["reason"], answer["by"])


def run(channel: Channel, spec: dict[str, Any]) -> None:
    """Runs the target as the spec says until the crash point (or its end)."""
    from agentspan.adapters import adapter_for
    from agentspan.stores.sqlite import SqliteStore
    from agentspan.testing import network, targets
    from agentspan.testing._store import MockStore
    from agentspan.testing.mock import create_run, execute, prepare

    network.install()  # a crash test never talks to a model provider either
    target = targets.load(spec["target"])
    adapter = adapter_for(target)
    crash = CrashPoint(channel, after=spec["crash_after"], at=spec["crash_at"])
    stand_ins = RemoteStandIns(channel, spec["stubbed"], crash)
    options = spec["options"]
    setup = prepare(adapter, target, stand_ins, dict(options))
    crash.use_stable_keys(setup.stable_key)
    store = SqliteStore(spec["store"])
    mock_store = MockStore(store, decide=stand_ins.decide, on_started=crash.started, on_done=crash.done)
    run = create_run(adapter, target, setup.input(spec["input"]), options, store=store, run_id=spec["run_id"])
    _, failure = execute(mock_store, run, adapter, target, setup, fresh=True)
    if failure is not None:
        raise failure


def main() -> None:
    """Entry point: reads the spec from the test process, runs, reports how it ended."""
    read_fd, write_fd = (int(fd) for fd in os.environ[FDS_ENV].split(","))
    channel = Channel(read_fd, write_fd)
    spec = channel.receive()
    if spec is None:
        sys.exit(2)
    sys.path[:0] = [p for p in spec["sys_path"] if p not in sys.path]
    try:
        run(channel, spec)
    except BaseException as exc:
        channel.send({"op": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    channel.send({"op": "done"})


if __name__ == "__main__":
    main()
