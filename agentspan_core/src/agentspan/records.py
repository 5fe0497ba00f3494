"""The durable records: runs, steps (journal entries) and approvals.

Field names are the contract of `design.md` section 3.1; they appear unchanged in the CLI's JSON,
the HTTP API and the stores' columns.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field
from uuid6 import uuid7

JSON = Any
"""A JSON-compatible value (dict, list, str, int, float, bool or None)."""


def new_id() -> str:
    """Returns a new time-sortable id (UUIDv7, canonical text form)."""
    return str(uuid7())


UNADDRESSABLE_IDS = frozenset({".", ".."})
"""Ids a URL path cannot hold: HTTP clients and browsers resolve ``/runs/..`` as a dot segment (to
``/``), so neither the server's API nor the web UI could reach such a run."""


def now() -> float:
    """Returns the current wall-clock time in seconds since the epoch."""
    return time.time()


class RunStatus(StrEnum):
    """Lifecycle of a run: pending → running ⇄ waiting → completed | failed | cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the run can no longer change."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class StepKind(StrEnum):
    """What a journal entry records."""

    LLM = "llm"
    TOOL = "tool"
    HANDOFF = "handoff"
    GUARDRAIL = "guardrail"
    APPROVAL = "approval"
    AGENT = "agent"
    CHECKPOINT = "checkpoint"


class StepStatus(StrEnum):
    """A step is journaled ``started`` before the call and ``completed``/``failed`` after it."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"


class ApprovalStatus(StrEnum):
    """An approval is decided once."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    @classmethod
    def unchecked(cls, **fields: Any) -> Self:
        """Builds a record from field values the caller knows to be valid, without validation.

        For the per-call hot path only (a step and its result per journaled call): what
        ``cls(**fields)`` builds, defaults and default factories included, in about a third of
        the time. ``fields`` must hold every required field. Anything read from outside (the
        wire, a file, a user) goes through ``cls(...)``.
        """
        defaults, factories = _defaults_of(cls)
        values = defaults.copy()
        for name, factory in factories:
            if name not in fields:
                values[name] = factory()
        values.update(fields)
        record = cls.__new__(cls)
        _set(record, "__dict__", values)
        _set(record, "__pydantic_fields_set__", set(fields))
        _set(record, "__pydantic_extra__", None)
        _set(record, "__pydantic_private__", None)
        return record


_set = object.__setattr__
_DEFAULTS: dict[type, tuple[dict[str, Any], tuple[tuple[str, Any], ...]]] = {}


def _defaults_of(cls: type[BaseModel]) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """A model's plain defaults and its default factories (computed once per class)."""
    found = _DEFAULTS.get(cls)
    if found is None:
        fields = cls.model_fields
        # Every field, in declaration order (``update`` keeps a key's place, so the values come
        # out in the order validation stores them); required ones have no default to fill in.
        found = _DEFAULTS[cls] = (
            {n: None if f.is_required() or f.default_factory is not None else f.default for n, f in fields.items()},
            tuple((n, f.default_factory) for n, f in fields.items() if f.default_factory is not None),
        )
    return found


class Run(_Record):
    """One durable execution of an agent."""

    id: str = Field(default_factory=new_id, min_length=1)
    framework: str
    agent: str
    input: JSON = None
    status: RunStatus = RunStatus.PENDING
    output: JSON = None
    error: str | None = None
    session_id: str | None = None
    idempotency_key: str | None = None
    parent_run_id: str | None = None
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    lease_epoch: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    steps: int = 0
    options: dict[str, JSON] = Field(default_factory=dict)
    """Framework-neutral run options the adapter needs again on resume (JSON only)."""


class Step(_Record):
    """One journal entry: a model call, tool call, handoff, guardrail, approval, ..."""

    run_id: str = Field(min_length=1)
    key: str = Field(min_length=1)
    seq: int = Field(ge=0)
    kind: StepKind
    name: str | None = None
    status: StepStatus = StepStatus.STARTED
    input: JSON = None
    input_hash: str | None = None
    output: JSON = None
    error: str | None = None
    attempt: int = 1
    started_at: float = Field(default_factory=now)
    ended_at: float | None = None
    duration_ms: float | None = None
    provider: str | None = None
    model: str | None = None
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)


class StepResult(_Record):
    """What completes (or fails) a started step."""

    status: StepStatus
    output: JSON = None
    error: str | None = None
    ended_at: float = Field(default_factory=now)
    duration_ms: float | None = None
    provider: str | None = None
    model: str | None = None
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)


_new = object.__new__
_STARTED_FIELDS = frozenset(("run_id", "key", "seq", "kind", "name", "input", "input_hash", "attempt", "provider",
                             "model"))
_COMPLETED_FIELDS = frozenset(("status", "output", "duration_ms", "provider", "model"))
_METERED_FIELDS = _COMPLETED_FIELDS | {"input_tokens", "output_tokens", "cost_usd"}


def started_step(run_id: str, key: str, seq: int, kind: StepKind, name: str | None, input: JSON,
                 input_hash: str | None, attempt: int, provider: str | None, model: str | None) -> Step:
    """The `Step` of a call about to be made, as ``Step.unchecked(...)`` with these fields builds it
    (started now), for the runtime's per-call path: its ``__dict__`` built in one go instead of
    from the defaults (about half the time of `_Record.unchecked`, which runs twice per journaled
    call). Nothing is validated: the values are the runtime's own."""
    step = _new(Step)
    _set(step, "__dict__", {
        "run_id": run_id, "key": key, "seq": seq, "kind": kind, "name": name, "status": StepStatus.STARTED,
        "input": input, "input_hash": input_hash, "output": None, "error": None, "attempt": attempt,
        "started_at": time.time(), "ended_at": None, "duration_ms": None, "provider": provider, "model": model,
        "input_tokens": None, "output_tokens": None, "cost_usd": None,
    })  # fmt: skip
    _set(step, "__pydantic_fields_set__", set(_STARTED_FIELDS))
    _set(step, "__pydantic_extra__", None)
    _set(step, "__pydantic_private__", None)
    return step


def completed_result(output: JSON, duration_ms: float, provider: str | None, model: str | None,
                     input_tokens: int | None = None, output_tokens: int | None = None,
                     cost_usd: float | None = None, *, metered: bool = False) -> StepResult:
    """The `StepResult` of a call that completed (ended now), as ``StepResult.unchecked(...)`` builds
    it, for the runtime's per-call path (see `started_step`). ``metered``: the token and cost
    fields count as set (a model call's), as when they are passed to ``unchecked``."""
    result = _new(StepResult)
    _set(result, "__dict__", {
        "status": StepStatus.COMPLETED, "output": output, "error": None, "ended_at": time.time(),
        "duration_ms": duration_ms, "provider": provider, "model": model, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "cost_usd": cost_usd,
    })  # fmt: skip
    _set(result, "__pydantic_fields_set__", set(_METERED_FIELDS if metered else _COMPLETED_FIELDS))
    _set(result, "__pydantic_extra__", None)
    _set(result, "__pydantic_private__", None)
    return result


class Approval(_Record):
    """A human decision a tool call waits for, bound to the exact tool arguments."""

    id: str = Field(default_factory=new_id)
    run_id: str
    step_key: str
    tool: str
    args: JSON = None
    args_hash: str
    status: ApprovalStatus = ApprovalStatus.PENDING
    requested_at: float = Field(default_factory=now)
    expires_at: float | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    reason: str | None = None


class _BinaryRecord(_Record):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=False, ser_json_bytes="base64", val_json_bytes="base64"
    )


class CheckpointWrite(_BinaryRecord):
    """One pending write of a task against a checkpoint (LangGraph's ``put_writes``)."""

    thread_id: str
    namespace: str = ""
    checkpoint_id: str
    task_id: str
    task_path: str = ""
    idx: int
    """The write's position in its task's batch; negative for the framework's special writes
    (errors, interrupts, resumes), which replace an earlier write at the same index."""
    channel: str
    type: str
    """The serializer's type tag for ``data`` (the store never decodes ``data``)."""
    data: bytes


class CheckpointRecord(_BinaryRecord):
    """An opaque snapshot of a thread's state, for frameworks that keep their own state.

    The adapter serializes; the store keeps the bytes as given (never decoding, unpickling or
    evaluating them) and answers by ``(thread_id, namespace, checkpoint_id)``. Checkpoint ids sort
    in creation order (LangGraph uses UUIDv6), so "latest" is the greatest id.
    """

    thread_id: str
    namespace: str = ""
    checkpoint_id: str
    parent_id: str | None = None
    type: str
    data: bytes
    metadata: dict[str, JSON] = Field(default_factory=dict)
    """JSON metadata, filterable by top-level key equality in `Store.list_checkpoints`."""
    run_id: str | None = None
    """The framework's run id that wrote it (``Store.delete_checkpoints_for_runs``)."""
    created_at: float = Field(default_factory=now)
    writes: list[CheckpointWrite] = Field(default_factory=list)
    """The pending writes stored against this checkpoint, ordered by ``(task_path, task_id,
    idx)`` (LangGraph's ``writes_sort_key``: the order a super-step applies its tasks' writes);
    filled in on reads, ignored by `Store.put_checkpoint`."""
