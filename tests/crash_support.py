"""Cross-process bookkeeping and child-process control for the crash tests and their agents.

A SIGKILLed child cannot report anything itself, so live model calls and tool side effects are
appended to files in AGENTSPAN_HOME (`log`, read back with `lines`), where the test process and
every child can count them. `crash_if` is the kill switch a child's agent code calls at its
crash points; `run_child` starts a child script with ``CRASH_AT`` set (forked by the session's
`zygote`, which has the frameworks imported, or a fresh interpreter with ``AGENTSPAN_TESTS_FORK=0``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from zygote import Zygote, fork_enabled

import agentspan

CHILD_TIMEOUT = 90.0
"""Seconds a child process may take before the test fails."""


def home() -> Path:
    """The AGENTSPAN_HOME of this test (created if missing): where the bookkeeping files live."""
    path = Path(os.environ["AGENTSPAN_HOME"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def log(name: str, line: str) -> None:
    """Appends ``line`` to the file ``name`` in the home, flushed to disk before returning."""
    with (home() / name).open("a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def lines(name: str) -> list[str]:
    """The lines logged to ``name`` so far, by every process (none when the file does not exist)."""
    path = home() / name
    return path.read_text().splitlines() if path.exists() else []


def calls_of(model: str) -> list[int]:
    """The live calls of scripted model ``model`` (their turn numbers), in every process, in order.

    Scripted models log each live call to ``model-calls`` as ``"<model> <turn>"``.
    """
    return [int(line.split()[1]) for line in lines("model-calls") if line.split()[0] == model]


def crash_if(point: str) -> None:
    """SIGKILLs this process when CRASH_AT names ``point`` (only once per store: a marker file)."""
    if os.environ.get("CRASH_AT") == point and not (home() / "crashed").exists():
        (home() / "crashed").write_text(point)
        os.kill(os.getpid(), signal.SIGKILL)


def stop_if(point: str) -> None:
    """SIGSTOPs this process when STOP_AT names ``point`` (once per store: the ``stopped`` file,
    which holds the pid to SIGCONT)."""
    if os.environ.get("STOP_AT") == point and not (home() / "stopped").exists():
        (home() / "stopped").write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGSTOP)


def run_child(script: str, env: dict[str, str], *args: str, crash_at: str | None = None,
              wait: bool = True) -> subprocess.Popen[str] | subprocess.CompletedProcess[str]:
    """Runs ``python script *args`` with ``env`` (plus ``CRASH_AT=crash_at`` when given).

    Args:
        script: Path of the child script.
        env: The child's environment (the ``child_env`` fixture: it shares the test's store).
        *args: The script's arguments.
        crash_at: The crash point at which the child SIGKILLs itself (see `crash_if`).
        wait: Wait for the child to exit (output captured); when False, return the running
            `subprocess.Popen` with its stdout and stderr piped.
    """
    env = {**env, **({"CRASH_AT": crash_at} if crash_at else {})}
    if fork_enabled():  # a fork of a process that has the frameworks imported (`zygote`)
        child = Zygote.get().spawn(script, list(args), env)
        if not wait:
            return child  # type: ignore[return-value] - what the tests use of a Popen
        try:
            out, err = child.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise
        return subprocess.CompletedProcess(child.args, child.wait(), out, err)
    cmd = [sys.executable, script, *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=CHILD_TIMEOUT)


def final_line(stdout: str) -> str:
    """The text after ``FINAL: `` on the one line of a child's output that starts with it."""
    (line,) = [line for line in stdout.splitlines() if line.startswith("FINAL: ")]
    return line.removeprefix("FINAL: ")


def wait_until_waiting(run_id: str, timeout: float = 60.0) -> None:
    """Waits until run ``run_id`` (in another process) waits for an approval; fails the test if it never does."""
    import pytest  # here, not at the top: child processes import this module too

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if agentspan.get(run_id).status() is agentspan.RunStatus.WAITING:
                return
        except (agentspan.errors.RunNotFound, agentspan.errors.StoreError):
            pass
        time.sleep(0.05)
    pytest.fail("run never waited for approval")


def kill_when_waiting(process: subprocess.Popen[str], run_id: str) -> None:
    """Kills ``process`` once the run ``run_id`` it runs waits for an approval (or when waiting fails)."""
    try:
        wait_until_waiting(run_id)
    finally:
        process.kill()
        process.wait()


def wait_status(handle: agentspan.Handle, status: agentspan.RunStatus, timeout: float = 20.0) -> None:
    """Waits until the run of ``handle`` has ``status``; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while handle.status() is not status:
        assert time.monotonic() < deadline, f"status stayed {handle.status()}"
        time.sleep(0.01)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m agentspan.cli *args`` with ``env``; output captured."""
    return subprocess.run([sys.executable, "-m", "agentspan.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` exits (or is a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False
