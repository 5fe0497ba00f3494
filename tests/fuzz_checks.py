"""The invariants the crash fuzzer (`crash_fuzz`) checks of a run it killed and resumed.

`check_run` compares a finished run, its journal, its children's summaries and the side-effect
logs of its home (``effects`` and ``model-calls``, written by `fuzz_agent`) with a `Reference`:
what the SDK's own runner and an uncrashed durable run of the same agent gave. See `crash_fuzz`
for the list of invariants.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import agentspan
from agentspan.cli import app

CALLER_VIEW = ("final", "items", "last_agent", "usage", "raw")
"""What a caller of ``agentspan.run`` / ``resume`` gets that must equal the plain runner's."""


@dataclass
class Reference:
    """What an uncrashed run of `fuzz_agent` gives.

    Attributes:
        plain: The summary of the SDK's own ``Runner.run_sync`` (`fuzz_child.summarize`).
        output: The stored output of an uncrashed durable run.
        step_keys: Its journal's step keys.
        totals: Its run record's (input tokens, output tokens).
        step_count: Its run record's ``steps``.
        effect_keys: The step keys of its tools' side effects.
        seconds: How long it took (the scale of time-based kills).
        run_id: The uncrashed durable run.
        home: Its store's home.
    """

    plain: dict[str, Any]
    output: Any
    step_keys: list[str]
    totals: tuple[int | None, int | None]
    step_count: int
    effect_keys: list[str]
    seconds: float
    run_id: str
    home: Path


@dataclass
class ProcessRecord:
    """One child process of a fuzzed run.

    Attributes:
        index: Its place among the run's processes (0: the one that started the run).
        pid: Its process id.
        mode: ``start``, ``resume`` or ``serve`` (`fuzz_child`).
        steps_before: Step key to status of the run's journal just before it started.
        killed: Whether the fuzzer SIGKILLed it.
        steps_after_kill: Step key to status, once the kill settled (killed processes only).
        kill_offset: Seconds from its start to its kill.
        approved: Whether the fuzzer decided the run's approval while it ran.
        returncode: Its exit code (-9: killed).
    """

    index: int
    pid: int
    mode: str
    steps_before: dict[str, str]
    killed: bool = False
    steps_after_kill: dict[str, str] = field(default_factory=dict)
    kill_offset: float | None = None
    approved: bool = False
    returncode: int | None = None

    def label(self) -> str:
        """``mode``, ``+A`` when it saw the approval decided, ``:K<seconds>`` when killed."""
        return f"{self.mode}{'+A' if self.approved else ''}{f':K{self.kill_offset}' if self.killed else ''}"


def read_lines(home: Path, name: str) -> list[str]:
    """The lines of file ``name`` in ``home`` (none when it does not exist)."""
    path = home / name
    return path.read_text().splitlines() if path.exists() else []


def live_executions(home: Path) -> dict[tuple[str, str], list[int]]:
    """(``"tool"`` or ``"model"``, step key) to the pids that executed that call live, in order."""
    executions: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for line in read_lines(home, "effects"):  # "<tool> <key> <pid> <idempotency key>"
        _, key, pid, _ = line.split()
        executions["tool", key].append(int(pid))
    for line in read_lines(home, "model-calls"):  # "<model> <turn> <key> <pid>"
        _, _, key, pid = line.split()
        executions["model", key].append(int(pid))
    return executions


def check_summary(summary: dict[str, Any] | None, reference: Reference) -> list[str]:
    """Violations of the caller's view: the final output, and for ``agentspan.run`` / ``resume``
    callers the items, last agent, usage and raw responses, against the plain runner's."""
    if summary is None:
        return ["no process reported the run's result"]
    wanted = CALLER_VIEW if summary["mode"] in ("start", "resume") else ("final",)
    return [f"{name} {summary[name]!r} != plain runner's {reference.plain[name]!r}"
            for name in wanted if summary[name] != reference.plain[name]]


def check_journal(run_id: str, reference: Reference) -> list[str]:
    """Violations of the run record and its journal: status, output, steps, token totals."""
    handle = agentspan.get(run_id)
    run, steps = handle.run(), handle.steps()
    violations = []
    if run.status is not agentspan.RunStatus.COMPLETED:
        violations.append(f"run status {run.status.value}: {run.error}")
    if run.output != reference.output:
        violations.append(f"stored output {run.output!r} != uncrashed run's {reference.output!r}")
    keys = [s.key for s in steps]
    duplicates = sorted(k for k, n in collections.Counter(keys).items() if n > 1)
    if duplicates:
        violations.append(f"duplicate step keys {duplicates}")
    dangling = [(s.key, s.status.value) for s in steps if s.status is not agentspan.StepStatus.COMPLETED]
    if dangling:
        violations.append(f"steps not completed: {dangling}")
    if set(keys) != set(reference.step_keys):
        violations.append(f"step keys differ: extra {sorted(set(keys) - set(reference.step_keys))} "
                          f"missing {sorted(set(reference.step_keys) - set(keys))}")
    step_sums = (sum(s.input_tokens or 0 for s in steps), sum(s.output_tokens or 0 for s in steps))
    totals = (run.input_tokens, run.output_tokens)
    if totals != step_sums:
        violations.append(f"run token totals {totals} != sums over its steps {step_sums}")
    if totals != reference.totals:
        violations.append(f"run token totals {totals} != uncrashed run's {reference.totals}")
    if run.steps != reference.step_count:
        violations.append(f"run.steps {run.steps} != uncrashed run's {reference.step_count}")
    return violations


def check_executions(run_id: str, home: Path, processes: list[ProcessRecord],
                     reference: Reference) -> tuple[list[str], list[str]]:
    """Violations of at-most-once execution, and notes (not violations) on attempts.

    A model or tool call may run once, plus once more for each kill of a process that had run it
    while its step was not yet completed (in flight at the kill); never in a process that started
    after its step was completed; every tool side effect of the uncrashed run happened.
    """
    violations: list[str] = []
    notes: list[str] = []
    attempts = {s.key: s.attempt for s in agentspan.get(run_id).steps()}
    executions = live_executions(home)
    for (kind, key), pids in sorted(executions.items()):
        in_flight = sum(1 for p in processes if p.killed and p.pid in pids
                        and p.steps_after_kill.get(key) != "completed")
        if len(pids) > 1 + in_flight:
            violations.append(f"{kind} {key} executed {len(pids)}x by {pids}, in flight at {in_flight} kill(s)")
        for p in processes:
            if p.pid in pids and p.steps_before.get(key) == "completed":
                violations.append(f"{kind} {key} executed by pid {p.pid} ({p.mode}), "
                                  "though completed before it started")
        if kind == "tool" and len(pids) > 1 and attempts.get(key, len(pids)) < len(pids):
            # a call killed within ~0.2 s of its start may not have its `started` marker written yet
            notes.append(f"tool {key} executed {len(pids)}x but its attempt is {attempts[key]}")
    tool_keys = {key for kind, key in executions if kind == "tool"}
    if tool_keys != set(reference.effect_keys):
        violations.append(f"tool side effects differ: extra {sorted(tool_keys - set(reference.effect_keys))} "
                          f"missing {sorted(set(reference.effect_keys) - tool_keys)}")
    return violations, notes


def check_cli(run_id: str) -> list[str]:
    """Violations of the audit trail's tooling: ``agentspan runs show RUN_ID --json`` must parse."""
    result = CliRunner().invoke(app, ["runs", "show", run_id, "--json"])
    try:
        json.loads(result.stdout)
    except ValueError as exc:
        return [f"runs show --json does not parse ({exc}): exit {result.exit_code} {result.output[-300:]}"]
    return [] if result.exit_code == 0 else [f"runs show --json exited {result.exit_code}"]


def check_run(run_id: str, home: Path, processes: list[ProcessRecord], summary: dict[str, Any] | None,
              reference: Reference) -> tuple[list[str], list[str]]:
    """Every invariant of a fuzzed run: its violations (none when it held up) and notes."""
    violations = check_summary(summary, reference) + check_journal(run_id, reference)
    execution_violations, notes = check_executions(run_id, home, processes, reference)
    return violations + execution_violations + check_cli(run_id), notes
