"""`replay`: re-run the current code against a recorded run, as a determinism regression test.

```python
# agentspan runs export 0196... -o tests/runs/refund.json
from agentspan.testing import replay

def test_refund_flow_still_behaves_the_same():
    replay("tests/runs/refund.json", support_agent)
```

The export's journal is imported into an isolated in-memory store as a new run (same input and
options), and the target runs through the normal executor in strict replay mode: every model
and tool call is answered from the recording (no model is called, no tool runs). The replay fails
with `ReplayDivergenceError` at the first step where the current code behaves differently: a call
the recording does not have, a call whose input changed, a recorded call never made, or (with
``check_output``) another final output or status.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from agentspan import leases
from agentspan.adapters import Adapter, adapter_for
from agentspan.attempt import strict_replay
from agentspan.config import settings
from agentspan.diffing import describe_difference
from agentspan.errors import ConfigurationError, ReplayDivergenceError, RunCancelledError
from agentspan.export import RunExport, load_export
from agentspan.records import JSON, Approval, ApprovalStatus, Run, RunStatus, StepResult, StepStatus, now
from agentspan.stores.base import Store
from agentspan.testing import targets
from agentspan.testing._replay_guard import ReplayGuard, ReplayStore, describe
from agentspan.testing.mock import execute
from agentspan.testing.result import MockResult, build_result
from agentspan.testing.script import Turn
from agentspan.testing.stand_ins import MockSetup, StandIns

REPLAYABLE = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.WAITING)
"""Recorded runs a replay can check: ended, or stopped at an approval."""

FINAL_OUTPUT = "(final output)"
FINAL_STATUS = "(final status)"
"""The ``key`` of a divergence found once the run ended (no step is at fault)."""


def replay(source: str | Path | Mapping[str, Any], target: Any, *, check_output: bool = True,
           agent_name: str | None = None, **options: Any) -> MockResult:
    """Replays a recorded run (``agentspan runs export``) against the current code of ``target``.

    Args:
        source: The export file's path, or the export document itself.
        target: The agent or compiled graph (or its ``"module:attr"`` name); its framework and
            agent name must be the recorded run's.
        check_output: Also fail when the final output (or the final status) differs.
        agent_name: The name the run was recorded under, when it was started with one
            (``agentspan.start(..., agent_name=...)``) instead of the agent's own.
        **options: Runner options, as the recorded run was given them (``max_turns``, ...).

    Returns:
        The replayed run as a `MockResult` (``replayed`` counts the steps served from the
        recording per kind; ``live`` is empty).

    Raises:
        InvalidExportError: The export is not valid (the message names the field).
        ConfigurationError: The recorded run is still running, or belongs to another framework
            or agent than ``target``.
        ReplayDivergenceError: The current code diverges from the recording (the message names
            the first differing step, its kind and name, and what differs).
    """
    export = load_export(source)
    recorded = export.run
    target_obj = targets.load(target) if isinstance(target, str) else target
    adapter = adapter_for(target_obj)
    _check_replayable(export, adapter, target_obj, agent_name)
    guard = ReplayGuard(recorded.id, export.steps, export.approvals)
    from agentspan.stores.memory import MemoryStore

    memory = MemoryStore()
    store = ReplayStore(memory, guard)
    run = _import(memory, store, export)
    setup = _setup(adapter, target_obj, options, guard)
    outcome, failure = execute(store, run, adapter, target_obj, setup, fresh=False, on_wait="release")
    if isinstance(failure, ReplayDivergenceError):
        raise ReplayDivergenceError(recorded.id, failure.key, failure.detail) from None
    replayed_run = memory.get_run(run.id)
    _check_reached(guard, recorded, replayed_run, failure)
    if check_output:
        _check_outcome(recorded, replayed_run)
    replayed, live = guard.counts()  # over every attempt (was: none when the replayed run failed)
    return build_result(memory, run.id, setup, raw=outcome.result if outcome is not None else None,
                        replayed=replayed, live=live)


def _check_replayable(export: RunExport, adapter: Adapter, target: Any, agent_name: str | None) -> None:
    run = export.run
    if run.status not in REPLAYABLE:
        raise ConfigurationError(
            f"run {run.id!r} was exported while {run.status.value}; a replay needs a run that completed, failed, "
            "was cancelled or waits for an approval (export it again once it has)")
    if run.framework != adapter.framework:
        raise ConfigurationError(f"run {run.id!r} is a {run.framework} run; the target is a {adapter.framework} "
                                 f"{type(target).__name__}")
    name = agent_name or adapter.agent_name(target)
    if run.agent != name:
        hint = "" if agent_name else " (recorded under another name? pass agent_name=)"
        raise ConfigurationError(f"run {run.id!r} is a run of agent {run.agent!r}; the target is agent {name!r}{hint}")


def _import(memory: Store, store: ReplayStore, export: RunExport) -> Run:
    """Records the export as a new running run owned by this process, with its journal and approvals."""
    recorded = export.run
    run, _ = memory.create_run(Run(
        framework=recorded.framework, agent=recorded.agent, input=recorded.input, options=recorded.options,
        session_id=recorded.session_id, status=RunStatus.RUNNING, lease_owner=leases.owner_id(),
        lease_expires_at=now() + settings().lease_ttl, lease_epoch=1))
    for step in export.steps:
        copy = step.model_copy(update={"run_id": run.id, "status": StepStatus.STARTED, "output": None,
                                       "error": None, "ended_at": None})
        if step.status is StepStatus.STARTED:
            memory.start_step(copy, epoch=run.lease_epoch)
            continue
        memory.record_step(copy, StepResult(
            status=step.status, output=step.output, error=step.error, ended_at=step.ended_at or now(),
            duration_ms=step.duration_ms, provider=step.provider, model=step.model, input_tokens=step.input_tokens,
            output_tokens=step.output_tokens, cost_usd=step.cost_usd), epoch=run.lease_epoch)
    for approval in export.approvals:
        store.imported(approval.id, _import_approval(memory, run, approval).id)
    return memory.update_run(run.id, epoch=run.lease_epoch, status=RunStatus.RUNNING)


def _import_approval(memory: Store, run: Run, approval: Approval) -> Approval:
    pending = approval.status is ApprovalStatus.PENDING
    imported = memory.request_approval(Approval(
        run_id=run.id, step_key=approval.step_key, tool=approval.tool, args=approval.args,
        args_hash=approval.args_hash, requested_at=approval.requested_at,
        # A pending approval stays pending (it must not expire between the export and the replay);
        # an expired one keeps its past deadline, so it still counts as rejected.
        expires_at=None if pending else approval.expires_at), epoch=run.lease_epoch)
    if approval.status in (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED):
        imported = memory.decide_approval(imported.id, approved=approval.status is ApprovalStatus.APPROVED,
                                          by=approval.decided_by, reason=approval.reason,
                                          decided_at=approval.decided_at or now())
    return imported


class _NoModel(StandIns):
    """The stand-ins of a replay: never asked, since a strict replay never calls a model."""

    stubbed: frozenset[str] = frozenset()

    def next_turn(self, *, tools: Collection[str] | None) -> Turn:
        raise ConfigurationError("a strict replay called a model; this is a bug in agentspan.testing.replay")

    def call_stub(self, tool: str, args: JSON) -> Any:
        raise ConfigurationError("a strict replay called a tool stand-in; this is a bug in agentspan.testing.replay")


def _setup(adapter: Adapter, target: Any, options: dict[str, Any], guard: ReplayGuard) -> MockSetup:
    """The adapter's mock setup (no provider client is ever built), with strict replay entered."""
    if type(adapter).mock is Adapter.mock:  # no testing hook: run the target as it is
        setup = MockSetup(options=dict(options))
    else:
        setup = adapter.mock(target, _NoModel(), options)
        setup.options = {**options, **setup.options}
    inner: Callable[[], contextlib.AbstractContextManager[Any]] = setup.scope

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        with inner(), strict_replay(guard):
            yield

    setup.scope = scope
    return setup


def _check_reached(guard: ReplayGuard, recorded: Run, replayed: Run, failure: BaseException | None) -> None:
    """Fails when the replay ended (or failed) before making every recorded call."""
    missing = guard.never_reached()
    failed = (failure is not None and not isinstance(failure, RunCancelledError)
              and recorded.status is not RunStatus.FAILED)
    if not missing and not failed:
        return
    why = (f"the replayed run failed with {type(failure).__name__}: {failure}" if failed
           else f"the replayed run ended {replayed.status.value}")
    if missing:
        first = missing[0]
        raise ReplayDivergenceError(
            recorded.id, first.key,
            f"recorded step never reached: {describe(first)} ({why} after {len(guard.reached())} of the "
            f"recording's steps; {len(missing)} recorded call(s) were never made)")
    raise ReplayDivergenceError(recorded.id, FINAL_STATUS, f"{why}; the recorded run {recorded.status.value}")


def _check_outcome(recorded: Run, replayed: Run) -> None:
    """Fails when the final status or output differs from the recording's."""
    if replayed.status is not recorded.status:
        detail = f": {replayed.error}" if replayed.error else ""
        raise ReplayDivergenceError(recorded.id, FINAL_STATUS, f"the recorded run ended {recorded.status.value}, "
                                    f"the replay ended {replayed.status.value}{detail}")
    if recorded.error != replayed.error:
        raise ReplayDivergenceError(recorded.id, FINAL_STATUS, f"the recorded run ended {recorded.status.value} with "
                                    f"error {recorded.error!r}, the replay with {replayed.error!r}")
    before, after = comparable(recorded.output, recorded.id), comparable(replayed.output, replayed.id)
    if before != after:
        raise ReplayDivergenceError(recorded.id, FINAL_OUTPUT,
                                    f"the final output differs; {describe_difference(before, after)}")


RUN_ID = "<run id>"
"""What the run's own id reads as in a compared output (ADK's session id is the run id)."""


def comparable(output: JSON, run_id: str) -> JSON:
    """The output without what is new on every run: the run's own id, LangGraph's message ids."""
    if isinstance(output, str):
        return RUN_ID if output == run_id else output
    if isinstance(output, list):
        return [comparable(item, run_id) for item in output]
    if not isinstance(output, dict):
        return output
    if output.get("lc") == 1 and isinstance(output.get("kwargs"), dict):
        kwargs = {k: comparable(v, run_id) for k, v in output["kwargs"].items() if k != "id"}
        return {**output, "kwargs": kwargs}
    return {k: comparable(v, run_id) for k, v in output.items()}
