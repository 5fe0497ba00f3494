"""The strict side of `agentspan.testing.replay`: every call of the replayed run is answered from
the recorded journal, and anything the recording cannot answer is a divergence.

Step keys are deterministic, with one exception: LangGraph puts the task id of the node in the
key (``agent:<uuid>/llm:0``), and task ids derive from checkpoint ids, which are new for every
run; so do the ids of its interrupts (an interrupt's approval is ``interrupt:<id>``). Keys are
therefore compared in a canonical form where each ``node:<uuid>`` segment becomes ``node#<n>``
and each ``interrupt:<id>`` ``interrupt#<n>``, ``n`` counting the node's tasks (the interrupts) in
the order they appear (in the recording: in journal order; live: in the order the replay reaches
them). An interrupt made inside a tool call is not made again when the replay answers that call
from the recording, so the replay passes over its ordinal (`ReplayGuard.serve`).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agentspan.attempt import Counters
from agentspan.divergence import SUPERSEDED, input_change
from agentspan.errors import RecordedStepFailure, ReplayDivergenceError
from agentspan.records import JSON, Approval, Step, StepKind, StepStatus
from agentspan.runtime import ActiveRun
from agentspan.stores.base import Store
from agentspan.testing._store import MockStore
from agentspan.testing.script import Decision

CALL_KINDS = frozenset({StepKind.LLM, StepKind.TOOL, StepKind.HANDOFF, StepKind.AGENT})
"""The kinds of steps a replay must reach (the others only record what happened around them)."""

NAMED_KINDS = frozenset({StepKind.TOOL, StepKind.HANDOFF})
"""Kinds whose name (the tool, the agent handed off to) must match the recording's (an ``llm``
step's name is the model's, which a test may well replace)."""

SHOWN_STEPS = 3
"""How many upcoming recorded steps a divergence message lists."""

INTERRUPTS = "/interrupts"
"""The key suffix of the ``checkpoint`` step a tool call that made ``interrupt()`` calls journals
their number under (``<call key>/interrupts``; the LangGraph adapter's `_interrupts` module)."""

_INTERRUPT = "interrupt"
"""The node part of an interrupt's key (``interrupt:<id>``): all interrupts share one ordinal count."""

_TASK = re.compile(r"(?P<node>[^:/|]+):(?P<task>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                   r"|(?<=interrupt:)[0-9a-f]{32}(?![0-9a-f]))")


class CanonicalKeys:
    """Rewrites the per-run task ids in step keys as per-node ordinals (see the module doc)."""

    def __init__(self) -> None:
        self._ordinals: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def __call__(self, key: str) -> str:
        """Returns the canonical form of ``key`` (new task ids get the node's next ordinal)."""
        if ":" not in key:
            return key
        return _TASK.sub(self._replace, key)

    def _replace(self, match: re.Match[str]) -> str:
        task = match.group("task")
        name = self._ordinals.get(task)
        if name is None:
            node = match.group("node")
            count = self._counts.get(node, 0)
            self._counts[node] = count + 1
            name = self._ordinals[task] = f"{node}#{count}"
        return name

    def skip(self, node: str, count: int) -> None:
        """Passes over ``count`` ordinals of ``node``: the next new id of it gets the one after them."""
        self._counts[node] = self._counts.get(node, 0) + count


def describe(step: Step) -> str:
    """``key (kind name)`` of a recorded step."""
    return f"{step.key} ({step.kind.value} {step.name or '?'})"


class ReplayGuard:
    """Serves the calls of a strictly replayed run from its recording (`agentspan.attempt.StrictReplay`).

    Args:
        recorded_run_id: The id of the recorded run (named in divergence messages).
        steps: The recorded journal, in seq order.
        approvals: The recorded approvals.
    """

    def __init__(self, recorded_run_id: str, steps: Sequence[Step], approvals: Iterable[Approval]) -> None:
        self.recorded_run_id = recorded_run_id
        self.steps = list(steps)
        recorded_canon = CanonicalKeys()
        self._by_canon = {recorded_canon(s.key): s for s in self.steps}
        self._approvals = {recorded_canon(a.step_key): a for a in approvals}
        self._by_key = {s.key: s for s in self.steps}
        self._live_canon = CanonicalKeys()
        self._passed_over: set[str] = set()  # recorded tool calls whose interrupts the live ordinals skipped
        self._reached: set[str] = set()
        self._counters: list[Counters] = []

    # ---- StrictReplay ---------------------------------------------------------------------
    def attach(self, run: ActiveRun) -> None:
        """Keeps the attempt's counters: steps served from the run's own journal count as reached."""
        if not any(c is run.counters for c in self._counters):
            self._counters.append(run.counters)

    def serve(self, run: ActiveRun, *, kind: StepKind, key: str, name: str | None, input: JSON,
              input_hash: str | None, load: Callable[[JSON], Any], recorded: Step | None) -> Any:
        """Returns the recorded output of the call, or raises the divergence / recorded failure."""
        if recorded is None:
            recorded = self._by_canon.get(self._live_canon(key))
            if recorded is None or recorded.kind is not kind:
                raise self.unrecorded(kind.value, key, name)
            if kind in NAMED_KINDS and name is not None and recorded.name not in (None, name):
                raise ReplayDivergenceError(
                    self.recorded_run_id, recorded.key,
                    f"the recorded run made {describe(recorded)} here; the current code calls {name!r} instead")
            if input_hash is not None and recorded.input_hash not in (None, input_hash):
                raise ReplayDivergenceError(self.recorded_run_id, recorded.key,
                                            input_change(recorded, name, input, input_hash))
        self._reached.add(recorded.key)
        if recorded.status is StepStatus.COMPLETED:
            if kind is StepKind.TOOL:
                self._pass_over_interrupts(recorded)
            run.counters.mark(False, kind.value, key)
            return load(recorded.output)
        if recorded.status is StepStatus.FAILED:
            raise recorded_failure(recorded.error)
        raise ReplayDivergenceError(self.recorded_run_id, recorded.key,
                                    f"{describe(recorded)} was still in flight in the recording; "
                                    "a replay cannot tell what it returned")

    def _pass_over_interrupts(self, call: Step) -> None:
        """Notes a recorded tool call answered from the recording: the ``interrupt()`` calls it made
        in the recording (each an approval ``interrupt:<id>``) are not made again, so the next
        interrupt the replay reaches is matched with the recorded one after them (was: with the
        call's own, whose approval is bound to other values). Once per call: a node runs again from
        its start on every resume, and the call is answered again each time."""
        if call.key in self._passed_over:
            return
        self._passed_over.add(call.key)
        made = self._by_key.get(call.key + INTERRUPTS)
        if (made is not None and made.kind is StepKind.CHECKPOINT and made.status is StepStatus.COMPLETED
                and type(made.output) is int):
            self._live_canon.skip(_INTERRUPT, made.output)

    def has_record(self, run: ActiveRun, key: str) -> bool:
        """Whether a record-only step is in the recording under this key's canonical form."""
        recorded = self._by_canon.get(self._live_canon(key))
        if recorded is None:
            return False
        self._reached.add(recorded.key)
        return True

    # ---- approvals ------------------------------------------------------------------------
    def check_gate(self, key: str, tool: str, gated: bool) -> None:
        """Raises when the current code gates a replayed tool call otherwise than the recording did:
        an approval gate removed (or added) is a change a replay must not pass over."""
        asked = self.recorded_approval(key) is not None
        if gated and not asked:
            raise ReplayDivergenceError(self.recorded_run_id, key, f"the current code asks for an approval of tool "
                                        f"{tool!r} here; the recorded run ran it without one")
        if asked and not gated:
            raise ReplayDivergenceError(self.recorded_run_id, key, f"the recorded run asked for an approval of tool "
                                        f"{tool!r} here; the current code runs it without one")

    def recorded_approval(self, key: str) -> Approval | None:
        """The recorded approval of the tool call with this live key."""
        return self._approvals.get(self._live_canon(key))

    # ---- checks ---------------------------------------------------------------------------
    def reached(self) -> set[str]:
        """The recorded keys the replay reached (served by the guard or by the run's own journal)."""
        keys = set(self._reached)
        for counters in self._counters:
            for served in counters.replayed_keys.values():
                keys |= served
            for live in counters.live_keys.values():
                keys |= live
        return keys

    def never_reached(self) -> list[Step]:
        """The recorded completed calls the replay never made, in journal order: not those set
        aside (``superseded:``, never made again by any run), nor the calls made inside a tool call
        the replay answered from the recording (an agent tool's run: not run again)."""
        reached = self.reached()
        answered = {s.key for s in self.steps if s.kind is StepKind.TOOL and s.key in reached}
        return [s for s in self.steps
                if s.kind in CALL_KINDS and s.status is StepStatus.COMPLETED and s.key not in reached
                and not s.key.startswith(SUPERSEDED) and not _inside(s.key, answered)]

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """``(replayed, live)`` per kind over the replay's attempts (a run that failed or waits
        included)."""
        replayed: dict[str, set[str]] = {}
        live: dict[str, set[str]] = {}
        for counters in self._counters:
            for kind, keys in counters.replayed_keys.items():
                replayed.setdefault(kind, set()).update(keys)
            for kind, keys in counters.live_keys.items():
                live.setdefault(kind, set()).update(keys)
        return ({kind: len(keys - live.get(kind, set())) for kind, keys in replayed.items()},
                {kind: len(keys) for kind, keys in live.items()})

    def upcoming(self) -> str:
        """The next recorded calls not reached yet (the recording "at this point")."""
        pending = self.never_reached()
        if not pending:
            return "none (every recorded call was already made)"
        shown = ", ".join(describe(s) for s in pending[:SHOWN_STEPS])
        more = len(pending) - SHOWN_STEPS
        return shown + (f" and {more} more" if more > 0 else "")

    def unrecorded(self, kind: str, key: str, name: str | None) -> ReplayDivergenceError:
        """The divergence for a call the recorded run did not make."""
        return ReplayDivergenceError(
            self.recorded_run_id, key,
            f"the current code makes a {kind} call {key} ({name or '?'}) the recorded run did not make; "
            f"recorded steps at that point: {self.upcoming()}")


def _inside(key: str, calls: set[str]) -> bool:
    """Whether ``key`` was made inside one of the tool ``calls`` (``<call key>/...``)."""
    index = key.find("/")
    while index != -1:
        if key[:index] in calls:
            return True
        index = key.find("/", index + 1)
    return False


def recorded_failure(error: str | None) -> Exception:
    """The exception to raise again for a step journaled as ``"Type: message"``.

    A built-in exception type is raised as itself; any other becomes a `RecordedStepFailure`
    subclass of the same name, so ``str(exc)``, ``repr(exc)`` and the run's error read as in the
    recording (nothing read from an export is ever imported or evaluated).
    """
    if not error:
        return RecordedStepFailure("the step failed in the recorded run")
    head, sep, message = error.partition(": ")
    if not (sep and head.isidentifier()):
        return RecordedStepFailure(error)
    builtin = getattr(builtins, head, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except Exception:  # a built-in that takes other arguments
            pass
    return type(head, (RecordedStepFailure,), {"__module__": "agentspan.replayed"})(message)


class ReplayStore(MockStore):
    """The replay's store: approvals are looked up in the recording by canonical step key, and a
    tool call asking for an approval the recording does not have is a divergence."""

    def __init__(self, inner: Store, guard: ReplayGuard) -> None:
        super().__init__(inner, decide=self._unrecorded_approval)
        self.guard = guard
        self._imported: dict[str, str] = {}  # recorded approval id -> imported approval id

    def imported(self, recorded_id: str, imported_id: str) -> None:
        """Notes the id an approval of the recording got in the replay's store."""
        self._imported[recorded_id] = imported_id

    def find_approval(self, run_id: str, step_key: str) -> Approval | None:
        found = self.inner.find_approval(run_id, step_key)
        if found is not None:
            return found
        recorded = self.guard.recorded_approval(step_key)
        if recorded is None or recorded.id not in self._imported:
            return None
        return self.inner.get_approval(self._imported[recorded.id])

    def _unrecorded_approval(self, approval: Approval) -> Decision:
        raise self.guard.unrecorded("tool", approval.step_key, approval.tool)
