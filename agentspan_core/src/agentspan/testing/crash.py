"""Crash tests: ``mock_run(..., crash_after=n)`` / ``crash_at=key``.

The run starts in a child process (which imports the target by name), is SIGKILLed at the crash
point, and is resumed in the test process, exactly as a production run is resumed after a crash:
completed steps replay from the journal, the rest runs live. The child gets its scripted turns,
tool stand-in results and approval decisions from the test process over a pipe, so the script is
consumed once across both processes and stand-ins run (and record their side effects) here.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python

from agentspan import attached
from agentspan.adapters import adapter_for
from agentspan.errors import ConfigurationError, RunFailed, ScriptError
from agentspan.records import new_id
from agentspan.stores.base import Store
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing import _crash_keys, targets
from agentspan.testing._channel import FDS_ENV, Channel
from agentspan.testing._forkserver import ForkedChild, ForkServer, ForkServerUnavailable, fork_supported
from agentspan.testing._store import MockStore
from agentspan.testing.mock import execute, finish, prepare
from agentspan.testing.result import MockResult, build_result
from agentspan.testing.script import Script, Stubs
from agentspan.testing.stand_ins import LocalStandIns

_STDERR_TAIL = 4000

FORK_ENV = "AGENTSPAN_CRASH_FORK"
"""``0`` starts every crash-test child as a fresh interpreter instead of forking it."""

_PRELOAD = ("agentspan.testing._child", "agentspan.testing.mock", "agentspan.stores.sqlite")
"""What a child imports anyway, besides its adapter's module (which imports the framework)."""

log = logging.getLogger("agentspan")


def _check_point(crash_after: int | None, crash_at: str | None) -> None:
    if crash_after is not None and crash_at is not None:
        raise ConfigurationError("pass crash_after or crash_at, not both")
    if crash_after is not None and (isinstance(crash_after, bool) or not isinstance(crash_after, int)
                                    or crash_after < 1):
        raise ConfigurationError(f"crash_after={crash_after!r}: expected a number of journaled steps >= 1")
    if crash_at is not None and (not isinstance(crash_at, str) or not crash_at):
        raise ConfigurationError(f"crash_at={crash_at!r}: expected a step key (see MockResult.steps)")


def _require_json(value: Any, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"a crash test sends the {what} to a child process, so it must be JSON; "
                                 f"{value!r} is not") from None


def _sqlite_store(store: Store | None) -> tuple[SqliteStore, Any]:
    if store is None:
        folder = tempfile.TemporaryDirectory(prefix="agentspan-mock-")
        return SqliteStore(Path(folder.name) / "agentspan.db"), folder
    if not isinstance(store, SqliteStore):
        raise ConfigurationError(f"a crash test shares the run's store with a child process, so it needs a SqliteStore "
                                 f"(or no store: a temporary one), not {type(store).__name__}")
    return store, None


def _forking() -> bool:
    """Whether crash-test children are forked from a fork server (``AGENTSPAN_CRASH_FORK``, default on)."""
    return os.environ.get(FORK_ENV, "1") != "0" and fork_supported()


class _Child:
    """The child process and the test process's side of its channel.

    The child is forked from a server process that has the target's framework imported
    (`agentspan.testing._forkserver`; a fresh interpreter spends seconds importing it), or, where
    that cannot be (``AGENTSPAN_CRASH_FORK=0``, not Linux, the server unavailable), started as
    ``python -m agentspan.testing._child``. Either way it is a process of its own, SIGKILLed for real.
    """

    def __init__(self, spec: dict[str, Any], preload: tuple[str, ...]) -> None:
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        self.output = tempfile.TemporaryFile()
        self.process: subprocess.Popen[bytes] | ForkedChild | None = None
        if _forking():
            try:
                self.process = ForkServer.get(preload).spawn(
                    call="agentspan.testing._child:main", env=dict(os.environ), cwd=os.getcwd(),
                    fds=[self.output.fileno(), self.output.fileno(), child_read, child_write], fds_env=FDS_ENV)
            except ForkServerUnavailable as exc:
                log.warning("agentspan: crash test child started as a fresh interpreter (%s)", exc)
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agentspan.testing._child"], pass_fds=(child_read, child_write),
                env={**os.environ, FDS_ENV: f"{child_read},{child_write}"}, stdin=subprocess.DEVNULL,
                stdout=self.output, stderr=self.output)
        os.close(child_read)
        os.close(child_write)
        self.channel = Channel(parent_read, parent_write)
        self.channel.send(spec)
        self.crashed_at: str | None = None
        self.failed: str | None = None

    def serve(self, script: Script, stubs: Stubs) -> int:
        """Answers the child until it is gone; returns its exit code."""
        try:
            for message in self.channel:
                answer = self._answer(message, script, stubs)
                if answer is not None:
                    self.channel.send(answer)
        except BrokenPipeError:
            pass  # the child died while we answered it
        finally:
            self.channel.close()
        assert self.process is not None  # __init__ started it
        return self.process.wait(timeout=60)

    def _answer(self, message: dict[str, Any], script: Script, stubs: Stubs) -> dict[str, Any] | None:
        op = message.get("op")
        if op == "turn":
            try:
                return {"turn": script.next_turn(tools=message["tools"]).to_json()}
            except ScriptError as exc:
                return {"error": str(exc), "position": exc.position}
        if op == "stub":
            try:
                return {"result": to_jsonable_python(stubs.call(message["tool"], message["args"]), fallback=str)}
            except Exception as exc:
                return {"error": f"{type(exc).__name__}: {exc}"}
        if op == "decide":
            decision, _ = script.decide(message["tool"])
            return {"approved": decision.approved, "reason": decision.reason, "by": decision.by}
        if op == "crash":
            self.crashed_at = message["key"]
        elif op == "failed":
            self.failed = message["error"]
        return None

    def stderr_tail(self) -> str:
        self.output.seek(0)
        return self.output.read().decode("utf-8", "replace")[-_STDERR_TAIL:]


def crash_run(target: Any, input: Any, *, script: Script, stubs: Stubs, crash_after: int | None,
              crash_at: str | None, store: Store | None, strict: bool, raise_errors: bool, run_id: str | None,
              options: dict[str, Any]) -> MockResult:
    """Runs ``target`` in a child process up to the crash point, then resumes it here (see `mock_run`)."""
    _check_point(crash_after, crash_at)
    name = targets.import_name(target)
    target_obj = targets.load(name) if isinstance(target, str) else target
    adapter = adapter_for(target_obj)
    setup = prepare(adapter, target_obj, LocalStandIns(script, stubs), dict(options))
    _require_json(options, "runner options")
    _require_json(input, "input")
    sqlite, keep = _sqlite_store(store)
    run_id = run_id or new_id()
    spec = {"target": name, "sys_path": list(sys.path), "store": sqlite.path, "run_id": run_id, "input": input,
            "options": options, "stubbed": sorted(stubs.names), "crash_after": crash_after, "crash_at": crash_at}
    child = _Child(spec, (*_PRELOAD, type(adapter).__module__, *adapter.preload))
    code = child.serve(script, stubs)
    if code != -signal.SIGKILL or child.crashed_at is None:
        _explain_no_crash(code, child, script, sqlite, run_id, crash_after, crash_at, setup.stable_key)
    claimed = attached.claim(sqlite, run_id)
    outcome, failure = execute(MockStore(sqlite, decide=lambda a: script.decide(a.tool)[0]), claimed, adapter,
                               target_obj, setup, fresh=False)
    finish(script, failure, strict=strict, raise_errors=raise_errors)
    if crash_at is not None and setup.stable_key is not None:  # a key of another run, read as its stable form
        _crash_keys.check_unambiguous(crash_at, [s.key for s in sqlite.list_steps(run_id)], setup.stable_key)
    counters = outcome.counters if outcome is not None else None
    kinds = set(counters.replayed_keys) | set(counters.live_keys) if counters is not None else set()
    return build_result(sqlite, run_id, setup, raw=outcome.result if outcome is not None else None,
                        crashed_at=child.crashed_at,
                        replayed={k: counters.replayed(k) for k in sorted(kinds)} if counters else {},
                        live={k: counters.live(k) for k in sorted(kinds)} if counters else {}, keep=keep)


def _explain_no_crash(code: int, child: _Child, script: Script, store: Store, run_id: str,
                      crash_after: int | None, crash_at: str | None, stable: _crash_keys.StableKey | None) -> None:
    """Raises the right error for a child that did not die at the crash point."""
    if script.error is not None:
        raise script.error
    point = f"crash_after={crash_after}" if crash_after is not None else f"crash_at={crash_at!r}"
    if code == 0:
        keys = [s.key for s in store.list_steps(run_id)]
        named = "" if stable is None else (", named as crash_at takes them, without the ids that change from run "
                                           "to run and with #n for a step's repeats")
        raise ConfigurationError(
            f"the run completed in the child process without reaching {point}: it journaled {len(keys)} steps"
            f"{named} ({_crash_keys.explain(keys, stable)})")
    reason = child.failed or f"exit code {code}; its output:\n{child.stderr_tail()}"
    raise RunFailed(run_id, f"the crash test's child process failed before {point}: {reason}")
