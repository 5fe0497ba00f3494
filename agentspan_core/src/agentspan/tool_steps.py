"""The tool-call and record-only steps of an attempt (`ToolSteps`, a part of `agentspan.ActiveRun`).

A tool call is checked against the journal before it can run: replayed when the journal has it
with the same tool and arguments, a divergence when it has something else there, gated by an
approval when the tool (or its in-doubt policy) asks for one; only then is it a live `step`.
Records (guardrail results, events) are journaled once and never replayed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from agentspan import approvals
from agentspan.attempt import Counters
from agentspan.diffing import describe_difference
from agentspan.divergence import diverged
from agentspan.errors import AgentspanError
from agentspan.hashing import digest
from agentspan.keys import StepKeys
from agentspan.records import JSON, Step, StepKind, StepResult, StepStatus, now
from agentspan.stores.base import Store, call_store
from agentspan.tools import DEFAULT_TOOL_OPTIONS, ToolOptions, jsonable_result

if TYPE_CHECKING:
    from agentspan.tracing import RunTrace

T = TypeVar("T")


class ToolSteps(StepKeys):
    """Tool calls and record-only steps, on `agentspan.ActiveRun`'s journal and `step`."""

    store: Store
    run_id: str
    counters: Counters
    trace: RunTrace | None
    call_ids: dict[str, str]
    strict: Any
    _next_seq: int

    if TYPE_CHECKING:  # `agentspan.runtime.ActiveRun`'s
        step: Callable[..., Awaitable[Any]]  # a generic keyword-only method there
        def _keep_fatal(self, exc: AgentspanError) -> None: ...
        def _finish(self, step: Step, result: StepResult, started: bool = True) -> None: ...

        trusted: frozenset[str]
        asked: frozenset[str]

    # ---- tools --------------------------------------------------------------------------
    async def tool(
        self,
        *,
        key: str,
        name: str,
        args: JSON,
        invoke: Callable[[], Awaitable[Any]],
        options: ToolOptions = DEFAULT_TOOL_OPTIONS,
        needs_approval: bool = False,
        dump: Callable[[Any], JSON] | None = None,
        call_id: str | None = None,
    ) -> JSON:
        """Runs a tool call durably: replayed if journaled, gated by an approval if required.

        The returned value is always the JSON form of the tool's result, identical on live runs
        and replays, so the conversation the model sees never depends on whether a call was
        replayed. ``call_id``: the framework's id of the call, for its trace.
        """
        if call_id and self.trace is not None:
            self.call_ids[key] = call_id
        try:
            to_json = dump or jsonable_result
            args_hash = digest(args)
            recorded = self.journal.get(key)
            if recorded is not None and recorded.name not in (None, options.name or name):
                # the arguments' hash does not cover the tool's name
                await call_store(self.store, diverged, self, key, f"the journal has a call of tool {recorded.name!r} "
                                 f"here; the live call is of tool {options.name or name!r}")
                recorded = None
            if recorded is not None and recorded.status is StepStatus.COMPLETED:
                if recorded.input_hash in (None, args_hash) or key in self.trusted:
                    if self.strict is not None and options.on_in_doubt != "ask":  # a replay: its approval gate too
                        self.strict.check_gate(key, options.name or name, bool(options.approval_required
                                                                              or needs_approval))
                    self.counters.mark(False, "tool", key)
                    return recorded.output
                await call_store(self.store, diverged, self, key, f"tool {name!r} was journaled with other arguments; "
                                 f"{describe_difference(recorded.input, args)}")
                recorded = None
            rejection = None
            if options.approval_required or needs_approval or key in self.asked:
                rejection = await call_store(self.store, approvals.gate, self, key=key, tool=options.name or name,
                                             args=args, args_hash=args_hash, options=options)
            if rejection is None and recorded is not None and options.on_in_doubt == "ask":
                # a question of its own for each interrupted execution: a decision on the call,
                # or on an earlier re-run, is no decision on this one
                rejection = await call_store(self.store, approvals.gate, self, key=approvals.in_doubt_key(
                    key, recorded.attempt), tool=options.name or name, args=args, args_hash=args_hash, options=options)
        except AgentspanError as exc:
            self._keep_fatal(exc)
            raise
        if rejection is not None:
            return await self.step(kind=StepKind.TOOL, key=key, name=options.name or name, input=args,
                                   input_hash=args_hash, invoke=_constant(rejection),
                                   dump=_identity, load=_identity)

        async def call() -> JSON:
            return to_json(await invoke())

        return await self.step(kind=StepKind.TOOL, key=key, name=options.name or name, input=args,
                               input_hash=args_hash, invoke=call, dump=_identity, load=_identity,
                               on_in_doubt="retry" if options.on_in_doubt == "ask" else options.on_in_doubt,
                               child_scope=True, shield=key in self._batched,
                               # Under "retry", a lost in-flight marker changes nothing: the call
                               # runs again either way; "ask" and "fail" need the marker to survive.
                               durable_start=options.on_in_doubt != "retry")

    # ---- record-only steps --------------------------------------------------------------
    def record(self, *, kind: StepKind, key: str, name: str | None, input: JSON, output: JSON,
               started_at: float | None = None) -> None:
        """Journals a completed step that has nothing to replay (a guardrail result, an event);
        ``started_at``: when what it records began (its duration is then the time since)."""
        if key in self.journal or (self.strict is not None and self.strict.has_record(self, key)):
            return
        ended_at = now()
        started_at = ended_at if started_at is None else min(started_at, ended_at)
        step = Step(run_id=self.run_id, key=key, seq=self._next_seq, kind=kind, name=name, input=input,
                    started_at=started_at)
        self._next_seq += 1
        self.journal[key] = step
        try:
            self._finish(step, StepResult(status=StepStatus.COMPLETED, output=output, ended_at=ended_at,
                                          duration_ms=(ended_at - started_at) * 1000), started=False)
        except AgentspanError as exc:
            self._keep_fatal(exc)
            raise

    async def guardrail(self, *, side: str, agent: str, name: str, tripwire_triggered: bool, info: Any,
                        call_id: str | None = None, behavior: JSON = None, started_at: float | None = None) -> None:
        """Records a guardrail's result as a ``guardrail`` step.

        An agent's guardrail is ``guardrail:<side>:<agent>:<name>`` in the current scope; a tool
        call's guardrail (``call_id`` given) hangs off that call's key:
        ``<call key>/guardrail:<side>:<name>``. The output is ``{"tripwire_triggered",
        "output_info"}`` (the info as JSON), plus ``"behavior"`` when the framework says what it
        does with the result (a tool guardrail's allow / reject / raise). ``started_at``: when the
        check began (`agentspan.records.now`), for the step's duration.

        A record, not a replayed call: a resumed run checks its guardrails again (their result
        decides whether it goes on), and a result already in the journal is kept as it is.
        """
        if call_id is None:
            key = self.call_key(f"{side}:{agent}:{name}", kind="guardrail")
        else:
            key = f"{self.call_key(call_id)}/guardrail:{side}:{name}"
        output: dict[str, JSON] = {"tripwire_triggered": tripwire_triggered, "output_info": jsonable_result(info)}
        if behavior is not None:
            output["behavior"] = behavior
        await call_store(self.store, self.record, kind=StepKind.GUARDRAIL, key=key, name=name,
                         input={"side": side, "agent": agent}, output=output, started_at=started_at)


def _identity(value: T) -> T:
    return value


def _constant(value: T) -> Callable[[], Awaitable[T]]:
    async def call() -> T:
        return value

    return call
