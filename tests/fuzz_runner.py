"""Starting, watching, approving and SIGKILLing the crash fuzzer's child processes (`crash_fuzz`).

`drive_run` takes one run through its children: the first starts it, each later one takes it up
(``resume`` or ``serve``), and the fuzzer kills them as a seed's `Plan` says until one finishes it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fuzz_checks import ProcessRecord, read_lines
from zygote import fork_enabled

import agentspan
import agentspan.config
from agentspan.testing._forkserver import ForkServer

TESTS = Path(__file__).parent
CHILD_SCRIPT = TESTS / "fuzz_child.py"
PRELOAD = ("agentspan", "agentspan.runtime", "agentspan.api", "agentspan_openai_agents",
           "agentspan_openai_agents.testing", "agents", "agents.models.openai_provider")
"""What the fork server imports for the children (openai-agents only: ~3 s, not the zygote's ~9 s)."""
LEASE_TTL = 1.5
"""``AGENTSPAN_LEASE_TTL`` of the fuzzed runs, as the crash tests' (seconds)."""
CHILD_TIMEOUT = 60.0
"""Seconds a child may run before the seed fails."""
MAX_PROCESSES = 10
"""Children a run may take before the seed fails."""
KILL_SETTLE = 0.3
"""Seconds after a kill before the journal is read (a step helper finishes its commits)."""
NOT_YET = (agentspan.errors.RunNotFound, agentspan.errors.StoreError)
"""What reading a run raises before its first process created the store and the run."""
PROGRESS_SPAN = 27
"""Live calls a progress kill may wait for (fewer as the run goes on)."""


@contextmanager
def fuzz_environment(home: Path) -> Iterator[Path]:
    """Points this process's Agentspan (and children's env) at the embedded store in ``home``.

    Short leases and fast polling as the crash tests' `home` fixture; no server, no API keys. The
    fuzzer's own process only reads and approves, with no step helper. Restores the environment.
    """
    names = ("AGENTSPAN_HOME", "AGENTSPAN_LEASE_TTL", "AGENTSPAN_POLL_INTERVAL", "AGENTSPAN_STEP_HELPER",
             "AGENTSPAN_SERVER_URL", "AGENTSPAN_API_KEY", "OPENAI_API_KEY")
    saved = {name: os.environ.get(name) for name in names}
    home.mkdir(parents=True, exist_ok=True)
    for name in names[4:]:
        os.environ.pop(name, None)
    os.environ.update(AGENTSPAN_HOME=str(home), AGENTSPAN_LEASE_TTL=str(LEASE_TTL),
                      AGENTSPAN_POLL_INTERVAL="0.02", AGENTSPAN_STEP_HELPER="off")
    agentspan.config.reset()
    try:
        yield home
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        agentspan.config.reset()


class Child(Protocol):
    """What the fuzzer uses of a child: `subprocess.Popen` or a forked `ForkedChild`."""

    pid: int

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Children:
    """Starts `fuzz_child` processes: forked from a `ForkServer` (started on first use), or fresh
    interpreters when ``AGENTSPAN_TESTS_FORK=0`` or forking is unsupported."""

    def spawn(self, mode: str, run_id: str, latency_seed: int, home: Path, helper: str, index: int) -> Child:
        """Starts ``fuzz_child.py mode run_id latency_seed``; stdout and stderr go to ``home/child<index>.*``.

        Args:
            mode: ``start``, ``resume``, ``serve`` or ``plain``.
            run_id: The run.
            latency_seed: Seed of the agent's random sleeps.
            home: The store's home (the child's ``AGENTSPAN_HOME``).
            helper: The child's ``AGENTSPAN_STEP_HELPER`` (``on`` / ``off``).
            index: The child's number, naming its output files.
        """
        env = {**os.environ, "AGENTSPAN_HOME": str(home), "AGENTSPAN_STEP_HELPER": helper, "PYTHONPATH": str(TESTS)}
        args = [mode, run_id, str(latency_seed)]
        with open(home / f"child{index}.out", "w") as out, open(home / f"child{index}.err", "w") as err:
            if fork_enabled():
                return ForkServer.get(PRELOAD).spawn(script=str(CHILD_SCRIPT), args=args, env=env, cwd=str(TESTS),
                                                     fds=[out.fileno(), err.fileno()])
            return subprocess.Popen([sys.executable, str(CHILD_SCRIPT), *args], env=env, cwd=str(TESTS),
                                    stdout=out, stderr=err)


@dataclass
class ProcessPlan:
    """What a seed decided for one child: how it takes the run up and whether and how it is killed."""

    resume_mode: str
    kill: bool
    by_progress: bool
    progress_fraction: float
    delay: float
    time_fraction: float


class Plan:
    """A seed's decisions, drawn in a fixed order so the seed alone fixes them (not the timing).

    Args:
        rng: The seed's generator.
        kill_budget: How many children may be killed.
        reference_seconds: How long an uncrashed run takes (the scale of time-based kills).
    """

    def __init__(self, rng: random.Random, kill_budget: int, reference_seconds: float) -> None:
        self.rng = rng
        self.kills_left = kill_budget
        self.reference_seconds = reference_seconds

    def next_process(self) -> ProcessPlan:
        """The next child's decisions (92%: killed; of those 70% after further live calls, else by time)."""
        r = self.rng
        return ProcessPlan(resume_mode=r.choice(["resume", "serve"]), kill=r.random() < 0.92,
                           by_progress=r.random() < 0.7, progress_fraction=r.random(), delay=r.uniform(0, 0.03),
                           time_fraction=r.random())


def live_call_count(home: Path) -> int:
    """Live tool side effects and model calls logged so far, by every process."""
    return len(read_lines(home, "effects")) + len(read_lines(home, "model-calls"))


def journal_statuses(run_id: str) -> dict[str, str]:
    """Step key to status of the run's journal ({} when the run does not exist yet)."""
    try:
        return {s.key: s.status.value for s in agentspan.get(run_id).steps()}
    except NOT_YET:
        return {}


def run_status(run_id: str) -> agentspan.RunStatus | None:
    """The run's status, or None when it does not exist yet."""
    try:
        return agentspan.get(run_id).status()
    except NOT_YET:
        return None


def approve_if_waiting(run_id: str) -> bool:
    """Approves the run's pending approvals if it waits for one; whether it approved any."""
    try:
        handle = agentspan.get(run_id)
        if handle.status() is not agentspan.RunStatus.WAITING:
            return False
        for approval in handle.pending_approvals():
            handle.approve(approval.id, by="crash-fuzz")
            return True
    except (*NOT_YET, agentspan.errors.ApprovalConflict, agentspan.errors.NoPendingApproval):
        pass
    return False


def read_summary(home: Path, index: int) -> dict[str, Any] | None:
    """The ``SUMMARY:`` a child printed (None if it printed none)."""
    lines = [line for line in read_lines(home, f"child{index}.out") if line.startswith("SUMMARY: ")]
    return json.loads(lines[-1].removeprefix("SUMMARY: ")) if lines else None


def drive_run(run_id: str, seed: int, home: Path, helper: str, plan: Plan,
              children: Children) -> tuple[list[ProcessRecord], dict[str, Any] | None, str | None]:
    """Takes run ``run_id`` through children, killing them as ``plan`` says, until one finishes it.

    Returns:
        The children, the summary of the one that finished the run (a stored-output summary when a
        killed child had finished it already), and why the run could not be driven (None if it was).
    """
    processes: list[ProcessRecord] = []
    lease_free_at = 0.0
    for index in range(MAX_PROCESSES):
        status = run_status(run_id)
        if status is agentspan.RunStatus.COMPLETED:  # the killed child had finished it
            return processes, {"final": agentspan.get(run_id).run().output, "mode": "stored"}, None
        if status is not None and status.terminal:
            return processes, None, f"run is {status.value} before a child finished it"
        decided = plan.next_process()
        mode = "start" if status is None else decided.resume_mode
        record = ProcessRecord(index=index, pid=0, mode=mode, steps_before=journal_statuses(run_id))
        started = time.monotonic()
        kill_at: float | None = None
        kill_after_calls: int | None = None
        if plan.kills_left > 0 and decided.kill:
            if decided.by_progress:
                done = live_call_count(home)
                kill_after_calls = done + int(decided.progress_fraction * (max(0, PROGRESS_SPAN - done // 2) + 1))
            else:
                lease_wait = max(0.0, lease_free_at - started) if mode != "start" else 0.0
                scale = plan.reference_seconds * (1.0 if mode == "start" else 0.6)
                kill_at = started + lease_wait + decided.time_fraction * scale
        child = children.spawn(mode, run_id, seed * 100 + index, home, helper, index)
        record.pid = child.pid
        processes.append(record)
        while (returncode := child.poll()) is None:
            now = time.monotonic()
            if kill_after_calls is not None and live_call_count(home) >= kill_after_calls:
                kill_at, kill_after_calls = now + decided.delay, None
            if kill_at is not None and now >= kill_at:
                child.kill()
                returncode = child.wait()
                if returncode == -9:
                    record.killed, record.kill_offset = True, round(time.monotonic() - started, 3)
                    plan.kills_left -= 1
                    lease_free_at = time.monotonic() + LEASE_TTL
                    time.sleep(KILL_SETTLE)
                    record.steps_after_kill = journal_statuses(run_id)
                break
            if now > started + CHILD_TIMEOUT:
                child.kill()
                record.returncode = child.wait()
                return processes, None, f"child {index} ({mode}) timed out"
            record.approved |= approve_if_waiting(run_id)
            time.sleep(0.002)
        record.returncode = returncode
        if record.killed:
            continue
        if returncode != 0:
            error = read_lines(home, f"child{index}.err")
            return processes, None, f"child {index} ({mode}) exit {returncode}: " + "\n".join(error)[-1500:]
        return processes, read_summary(home, index), None
    return processes, None, f"the run took more than {MAX_PROCESSES} processes"


def run_reference_child(children: Children, mode: str, run_id: str, home: Path) -> dict[str, Any]:
    """Runs one uncrashed child (``plain`` or ``start``, helper off) to its end; its summary."""
    plan = Plan(random.Random(0), kill_budget=0, reference_seconds=0.0)
    if mode == "start":
        processes, summary, failure = drive_run(run_id, 0, home, "off", plan, children)
    else:
        child = children.spawn(mode, run_id, 0, home, "off", 0)
        returncode = child.wait(timeout=CHILD_TIMEOUT)
        summary, failure = read_summary(home, 0), None if returncode == 0 else f"exit {returncode}"
    assert failure is None and summary is not None, f"reference {mode} run failed: {failure}"
    return summary
