"""`MockResult`: what a mock run did, read back from its journal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentspan.records import JSON, Approval, ApprovalStatus, Run, RunStatus, Step, StepKind, StepStatus
from agentspan.stores.base import Store
from agentspan.testing._crash_keys import names
from agentspan.testing.stand_ins import MockSetup


@dataclass(frozen=True)
class ToolCallRecord:
    """One tool call of a run, in the order the agent made them.

    Attributes:
        name: The tool's name.
        args: The arguments the model gave.
        result: What the tool returned (the model saw this), or the rejection message.
        key: The call's step key in the journal.
        error: The error when the tool raised.
        rejected: A human (or the script) rejected the call: the tool did not run.
    """

    name: str
    args: JSON
    result: Any
    key: str
    error: str | None = None
    rejected: bool = False

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items()) if isinstance(self.args, dict) else repr(self.args)
        outcome = (f"rejected: {self.result!r}" if self.rejected
                   else f"raised {self.error}" if self.error else repr(self.result))
        return f"{self.name}({args}) -> {outcome}"


@dataclass
class MockResult:
    """The outcome of `agentspan.testing.mock_run`.

    Attributes:
        run_id: The run's id (in ``store``).
        status: The run's final status.
        output: The agent's answer (openai-agents: ``final_output``; LangGraph: the last
            message's content, or the output state when it has no messages).
        raw: What the framework's own entry point returned (a ``RunResult``, the graph output).
        error: Why the run failed or was cancelled.
        tool_calls: Every tool call, in order (rejected ones included, marked ``rejected``).
        steps: The run's journal, in order.
        approvals: The approvals the run requested, with their decisions.
        handoffs: The agents the run handed off to, in order.
        usage: Tokens, cost and step count of the run.
        store: The store holding the run.
        crashed_at: The key of the step at which a crash test killed the first process.
        replayed: Steps served from the journal after the crash, per kind (``{"llm": 2, ...}``).
        live: Steps executed live after the crash, per kind.
        crash_points: What ``crash_at`` takes for each of `steps`, in order: the step's key, or,
            for a framework whose keys change from run to run (LangGraph's task ids), its
            stable name (``agent/llm:0``; ``agent/llm:0#1`` for the node's next run), which names
            the same step in the next run.
    """

    run_id: str
    status: RunStatus
    output: Any
    raw: Any
    error: str | None
    tool_calls: list[ToolCallRecord]
    steps: list[Step]
    approvals: list[Approval]
    handoffs: list[str]
    usage: dict[str, JSON]
    store: Store
    crashed_at: str | None = None
    replayed: dict[str, int] = field(default_factory=dict)
    live: dict[str, int] = field(default_factory=dict)
    crash_points: list[str] = field(default_factory=list)
    _keep: Any = field(default=None, repr=False)  # e.g. the temporary folder of a crash test's store

    @property
    def model_calls(self) -> list[Step]:
        """The run's model calls (``llm`` steps), in order."""
        return [s for s in self.steps if s.kind is StepKind.LLM]

    def used(self) -> list[ToolCallRecord]:
        """The tool calls that ran (not rejected)."""
        return [c for c in self.tool_calls if not c.rejected]


def build_result(store: Store, run_id: str, setup: MockSetup, *, raw: Any, crashed_at: str | None = None,
                 replayed: dict[str, int] | None = None, live: dict[str, int] | None = None,
                 keep: Any = None) -> MockResult:
    """Reads a finished mock run back from ``store``."""
    run: Run = store.get_run(run_id)
    steps = store.list_steps(run_id)
    approvals = sorted(store.list_approvals(run_id=run_id, limit=10_000), key=lambda a: a.id)
    rejected = {a.step_key for a in approvals
                if a.status in (ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED)}
    calls = [ToolCallRecord(name=s.name or "", args=s.input, result=setup.tool_result(s.output), key=s.key,
                            error=s.error, rejected=s.key in rejected)
             for s in steps if s.kind is StepKind.TOOL and s.status is not StepStatus.STARTED]
    if run.status is RunStatus.COMPLETED:
        output = setup.final_output(raw) if raw is not None else run.output
    else:
        output = None
    return MockResult(
        run_id=run_id, status=run.status, output=output, raw=raw, error=run.error, tool_calls=calls, steps=steps,
        approvals=approvals, handoffs=setup.handoffs(steps),
        usage={"input_tokens": run.input_tokens, "output_tokens": run.output_tokens, "cost_usd": run.cost_usd,
               "steps": run.steps, "model_calls": sum(1 for s in steps if s.kind is StepKind.LLM)},
        store=store, crashed_at=crashed_at, replayed=replayed or {}, live=live or {},
        crash_points=[s.key for s in steps] if setup.stable_key is None else names([s.key for s in steps],
                                                                                    setup.stable_key),
        _keep=keep)
