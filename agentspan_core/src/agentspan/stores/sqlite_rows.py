"""Row mapping of the SQLite store: records to column values and back, and the JSON columns.

JSON values (``input``, ``output``, ``options``, ``args``) are TEXT columns holding compact JSON;
``NULL`` stands for the JSON value ``null``. The column lists (``*_FIELDS``, ``*_COLUMNS``) fix
the order in which `sqlite_schema`'s statements name the columns and these functions bind and read
them; the PostgreSQL store's columns mirror them one for one, so it maps its rows with the same
functions.

Importing this module registers `sqlite3` adapters for the records' enums and ``None`` (see
below); `sqlite_schema`, which opens the connections, imports it, so they are in place before
any statement runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from agentspan import jsontext
from agentspan.errors import ConfigurationError, StoreError
from agentspan.records import (
    Approval,
    ApprovalStatus,
    Run,
    RunStatus,
    Step,
    StepKind,
    StepResult,
    StepStatus,
)

# ---- JSON ----------------------------------------------------------------------------------
_encode = jsontext.dumps
_decode = jsontext.loads


def dump_json(value: Any) -> str | None:
    """Encodes a JSON value compactly; ``None`` becomes SQL ``NULL``.

    Raises:
        ConfigurationError: The value is not JSON-serialisable.
    """
    if value is None:
        return None
    try:
        return _encode(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"only JSON values can be stored: {exc}") from exc


def load_json(text: str | None) -> Any:
    """Decodes a JSON column (``NULL`` is ``None``)."""
    return None if text is None else _decode(text)


# ---- rows ----------------------------------------------------------------------------------
# The records' status and kind fields are `StrEnum`s. Bound as they are, `sqlite3` looks for an
# adapter, then for ``__adapt__`` and ``__conform__`` on each, raising and clearing two
# AttributeErrors per value (~1.5 us each); the hot path binds their ``_value_`` (plain str), and
# an adapter registered per enum makes every other statement skip the search. ``None`` (NULL) takes
# the same search (one AttributeError each, and a step row binds several): an identity adapter.
for _enum in (RunStatus, StepKind, StepStatus, ApprovalStatus):
    sqlite3.register_adapter(_enum, str)


def _null(value: None) -> None:
    return None


sqlite3.register_adapter(type(None), _null)

# Scalar columns first, JSON columns last: the hot path binds `attrgetter(*SCALARS)(record)` and
# appends the encoded JSON values.
RUN_SCALARS = (
    "id", "framework", "agent", "status", "error", "session_id", "idempotency_key", "parent_run_id",
    "created_at", "updated_at", "lease_owner", "lease_expires_at", "lease_epoch", "input_tokens",
    "output_tokens", "cost_usd", "steps",
)  # fmt: skip
RUN_FIELDS = (*RUN_SCALARS, "input", "output", "options")
STEP_SCALARS = (
    "run_id", "key", "seq", "kind", "name", "status", "input_hash", "error", "attempt",
    "started_at", "ended_at", "duration_ms", "provider", "model", "input_tokens", "output_tokens",
    "cost_usd",
)  # fmt: skip
STEP_FIELDS = (*STEP_SCALARS, "input", "output")
APPROVAL_SCALARS = (
    "id", "run_id", "step_key", "tool", "args_hash", "status", "requested_at", "expires_at",
    "decided_by", "decided_at", "reason",
)  # fmt: skip
APPROVAL_FIELDS = (*APPROVAL_SCALARS, "args")

RUN_COLUMNS = ", ".join(RUN_FIELDS)
STEP_COLUMNS = ", ".join(STEP_FIELDS)
APPROVAL_COLUMNS = ", ".join(APPROVAL_FIELDS)

run_scalars = attrgetter(*RUN_SCALARS)
step_scalars = attrgetter(*STEP_SCALARS)
approval_scalars = attrgetter(*APPROVAL_SCALARS)


def run_values(run: Run) -> tuple[Any, ...]:
    """Returns a run's column values in `RUN_FIELDS` order."""
    return (*run_scalars(run), dump_json(run.input), dump_json(run.output), dump_json(run.options) or "{}")


def step_values(step: Step) -> tuple[Any, ...]:
    """Returns a step's column values in `STEP_FIELDS` order."""
    return (*step_scalars(step), dump_json(step.input), dump_json(step.output))


def recorded_step_values(step: Step, result: StepResult) -> tuple[Any, ...]:
    """Returns the column values of a step that already ended (`Store.record_step`): the started
    step with the result applied as `sqlite_schema.FINISH_STEP` applies it.

    Reads the records' fields from their ``__dict__``: every attribute read on a pydantic model
    goes through its ``__getattr__`` hook (~10x a plain read), and this runs per journaled call.
    """
    s, r = step.__dict__, result.__dict__
    ended_at, duration_ms, started_at = r["ended_at"], r["duration_ms"], s["started_at"]
    provider, model, input_tokens, output_tokens, cost_usd = (
        r["provider"], r["model"], r["input_tokens"], r["output_tokens"], r["cost_usd"])
    return (
        s["run_id"], s["key"], s["seq"], s["kind"]._value_, s["name"], r["status"]._value_, s["input_hash"],
        r["error"], s["attempt"], started_at, ended_at,
        duration_ms if duration_ms is not None else (ended_at - started_at) * 1000.0,
        provider if provider is not None else s["provider"],
        model if model is not None else s["model"],
        input_tokens if input_tokens is not None else s["input_tokens"],
        output_tokens if output_tokens is not None else s["output_tokens"],
        cost_usd if cost_usd is not None else s["cost_usd"],
        dump_json(s["input"]), dump_json(r["output"]),
    )  # fmt: skip


def recorded_from_values(values: tuple[Any, ...]) -> tuple[Step, StepResult, int]:
    """The started step, its result and the writer's epoch of the parameters of an ended step's
    fenced insert (`recorded_step_values` followed by the run id and the epoch): for a write
    that must take the start-then-finish way after all (a step row the store's helper handed
    back), without holding the records themselves while the row is out."""
    (run_id, key, seq, kind, name, status, input_hash, error, attempt, started_at, ended_at, duration_ms,
     provider, model, input_tokens, output_tokens, cost_usd, input_text, output_text, _fence_run, epoch) = values
    step = Step.unchecked(run_id=run_id, key=key, seq=seq, kind=StepKind(kind), name=name, input=load_json(input_text),
                          input_hash=input_hash, attempt=attempt, started_at=started_at, provider=provider,
                          model=model)
    result = StepResult.unchecked(status=StepStatus(status), output=load_json(output_text), error=error,
                                  ended_at=ended_at, duration_ms=duration_ms, provider=provider, model=model,
                                  input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd)
    return step, result, epoch


def approval_values(approval: Approval) -> tuple[Any, ...]:
    """Returns an approval's column values in `APPROVAL_FIELDS` order."""
    return (*approval_scalars(approval), dump_json(approval.args))


_NUMBERS = (int, float, type(None))


def _numbers(fields: tuple[str, ...], *names: str) -> tuple[tuple[int, str], ...]:
    return tuple((fields.index(name), name) for name in names)


_RUN_NUMBERS = _numbers(RUN_FIELDS, "created_at", "updated_at", "lease_expires_at", "lease_epoch", "input_tokens",
                        "output_tokens", "cost_usd", "steps")
_STEP_NUMBERS = _numbers(STEP_FIELDS, "seq", "attempt", "started_at", "ended_at", "duration_ms", "input_tokens",
                         "output_tokens", "cost_usd")
_APPROVAL_NUMBERS = _numbers(APPROVAL_FIELDS, "requested_at", "expires_at", "decided_at")


def _check_numbers(row: Sequence[Any], numbers: tuple[tuple[int, str], ...]) -> None:
    for index, name in numbers:
        if type(row[index]) not in _NUMBERS:
            raise TypeError(f"{name} is {row[index]!r}, not a number")


def _damaged(what: str, exc: Exception) -> StoreError:
    """A row the store's own writes could not have made (the file was edited or damaged)."""
    return StoreError(f"the store holds a damaged row of {what}: {exc}")


def run_from_row(row: Sequence[Any]) -> Run:
    """Builds a `Run` from a row selected with `RUN_COLUMNS` (trusted: no re-validation beyond
    what a damaged file would break: the enums, the JSON, the numbers).

    Raises:
        StoreError: The row is damaged.
    """
    try:
        _check_numbers(row, _RUN_NUMBERS)
        d = dict(zip(RUN_FIELDS, row, strict=True))
        d["status"] = RunStatus(d["status"])
        d["input"], d["output"], d["options"] = (
            load_json(d["input"]),
            load_json(d["output"]),
            _decode(d["options"]),
        )
    except (ValueError, TypeError) as exc:
        raise _damaged(f"run {row[0]!r}", exc) from None
    return Run.model_construct(**d)


def step_from_row(row: Sequence[Any]) -> Step:
    """Builds a `Step` from a row selected with `STEP_COLUMNS` (checked as `run_from_row`).

    Raises:
        StoreError: The row is damaged.
    """
    try:
        _check_numbers(row, _STEP_NUMBERS)
        d = dict(zip(STEP_FIELDS, row, strict=True))
        d["kind"], d["status"] = StepKind(d["kind"]), StepStatus(d["status"])
        d["input"], d["output"] = load_json(d["input"]), load_json(d["output"])
    except (ValueError, TypeError) as exc:
        raise _damaged(f"step {row[1]!r} of run {row[0]!r}", exc) from None
    return Step.model_construct(**d)


def approval_from_row(row: Sequence[Any]) -> Approval:
    """Builds an `Approval` from a row selected with `APPROVAL_COLUMNS` (checked as `run_from_row`).

    Raises:
        StoreError: The row is damaged.
    """
    try:
        _check_numbers(row, _APPROVAL_NUMBERS)
        d = dict(zip(APPROVAL_FIELDS, row, strict=True))
        d["status"], d["args"] = ApprovalStatus(d["status"]), load_json(d["args"])
    except (ValueError, TypeError) as exc:
        raise _damaged(f"approval {row[0]!r}", exc) from None
    return Approval.model_construct(**d)
