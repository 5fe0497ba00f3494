"""Run exports (``agentspan runs export``): one run, its whole journal and its approvals as one
JSON document, read back by `agentspan.testing.replay`.

```json
{"format": "agentspan.run/1", "exported_at": 1767225600.0,
 "run": {...the run record as `runs show --json` prints it, "step_count": 7...},
 "steps": [...every step in seq order, all fields...],
 "approvals": [...]}
```

Everything goes through the `Store` API, so an export reads the embedded store and a server alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agentspan.approvals import effective_status
from agentspan.errors import InvalidExportError
from agentspan.records import JSON, Approval, Run, Step, now
from agentspan.stores.base import Store

M = TypeVar("M", bound=BaseModel)

FORMAT = "agentspan.run/1"
"""The ``format`` field of the current export format."""

APPROVAL_LIMIT = 100_000
"""The most approvals of one run an export reads."""


@dataclass(frozen=True)
class RunExport:
    """A validated run export.

    Attributes:
        run: The run record.
        steps: Its journal, in seq order.
        approvals: Its approvals (``status`` as exported: an expired pending one reads ``expired``).
        exported_at: When it was exported (seconds since the epoch).
    """

    run: Run
    steps: list[Step]
    approvals: list[Approval]
    exported_at: float | None = None


def export_run(store: Store, run_id: str) -> dict[str, JSON]:
    """Returns the export document of one run.

    Raises:
        RunNotFound: Unknown run id.
    """
    run = store.get_run(run_id)
    steps = sorted(store.list_steps(run_id), key=lambda s: s.seq)
    approvals = sorted(store.list_approvals(run_id=run_id, limit=APPROVAL_LIMIT), key=lambda a: a.id)
    at = now()
    return {
        "format": FORMAT,
        "exported_at": at,
        "run": run_record_json(run),
        "steps": [step.model_dump(mode="json") for step in steps],
        "approvals": [_approval_json(a, at) for a in approvals],
    }


def run_record_json(run: Run) -> dict[str, JSON]:
    """The run record as ``runs show --json`` prints it (its ``steps`` count as ``step_count``)."""
    data = run.model_dump(mode="json")
    data["step_count"] = data.pop("steps")
    return data


def _approval_json(approval: Approval, at: float) -> dict[str, JSON]:
    data = approval.model_dump(mode="json")
    data["status"] = effective_status(approval, at).value
    return data


def load_export(source: str | Path | Mapping[str, Any]) -> RunExport:
    """Reads and validates an export: a file path, or the document itself.

    Raises:
        InvalidExportError: The file is missing or not JSON, the format is unknown, or a field
            is missing or invalid (the message names the field).
    """
    if isinstance(source, Mapping):
        document: Any = source
        where = "the export"
    else:
        path = Path(source)
        where = f"export file {str(path)!r}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidExportError(f"cannot read {where}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise InvalidExportError(f"{where} is not UTF-8 text (byte {exc.start}): an export is JSON in UTF-8") \
                from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidExportError(f"{where} is not JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise InvalidExportError(f"{where} must be a JSON object, not {type(document).__name__}")
    fmt = document.get("format")
    if fmt is None:
        raise InvalidExportError(f"{where} has no 'format' field (expected {FORMAT!r}); "
                                 "make one with `agentspan runs export RUN_ID`", field="format")
    if fmt != FORMAT:
        raise InvalidExportError(f"{where} has an unknown format {fmt!r} in field 'format' (expected {FORMAT!r})",
                                 field="format")
    run_data = document.get("run")
    if not isinstance(run_data, Mapping):
        raise InvalidExportError(f"{where}: field 'run' must be an object", field="run")
    run_fields = dict(run_data)
    if "step_count" in run_fields:
        run_fields["steps"] = run_fields.pop("step_count")
    run = _validate(Run, run_fields, "run", where)
    steps = [_validate(Step, item, f"steps[{i}]", where) for i, item in enumerate(_list(document, "steps", where))]
    approvals = [_validate(Approval, item, f"approvals[{i}]", where)
                 for i, item in enumerate(_list(document, "approvals", where))]
    kinds: tuple[tuple[str, Sequence[Step | Approval]], ...] = (("steps", steps), ("approvals", approvals))
    for field_name, records in kinds:
        for index, record in enumerate(records):
            if record.run_id != run.id:
                raise InvalidExportError(
                    f"{where}: field '{field_name}[{index}].run_id' is {record.run_id!r}, not the run's id {run.id!r}",
                    field=f"{field_name}[{index}].run_id")
    first_of: dict[str, int] = {}
    for index, step in enumerate(steps):
        earlier = first_of.setdefault(step.key, index)
        if earlier != index:
            raise InvalidExportError(f"{where}: field 'steps[{index}].key' is {step.key!r}, the key of "
                                     f"steps[{earlier}] too (a journal has one step per key)",
                                     field=f"steps[{index}].key")
    exported_at = document.get("exported_at")
    return RunExport(run=run, steps=sorted(steps, key=lambda s: s.seq), approvals=approvals,
                     exported_at=exported_at if isinstance(exported_at, (int, float)) else None)


def _list(document: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = document.get(name)
    if not isinstance(value, list):
        raise InvalidExportError(f"{where}: field {name!r} must be a list", field=name)
    return value


def _validate(model: type[M], data: Any, field: str, where: str) -> M:
    if not isinstance(data, Mapping):
        raise InvalidExportError(f"{where}: field {field!r} must be an object", field=field)
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"])
        path = f"{field}.{location}" if location else field
        raise InvalidExportError(f"{where}: field {path!r}: {error['msg']}", field=path) from None
