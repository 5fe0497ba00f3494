"""Record builders and shared helpers for the store conformance suite.

`make_run`, `make_step` and `make_approval` build new (not stored) records with test defaults;
`PAYLOAD` is a JSON value that stresses serialisation; `ConformanceBase` gives every test mixin
the `claimed` and `snapshot` helpers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from agentspan.errors import ConfigurationError
from agentspan.hashing import digest
from agentspan.records import Approval, CheckpointRecord, CheckpointWrite, Run, Step, StepKind
from agentspan.stores.base import Store

__all__ = [
    "NOT_UTF8", "PAYLOAD", "ConformanceBase", "ids_of", "keys_of", "make_approval", "make_checkpoint",
    "make_checkpoint_write", "make_run", "make_step", "refused_as_not_utf8", "writes_of",
]  # fmt: skip

PAYLOAD: dict[str, Any] = {
    "text": 'héllo — 世界 🚀 "quoted" \\ back\nslash\t',
    "float": 0.1,
    "tiny": 5e-324,
    "huge": 1.7976931348623157e308,
    "negative": -3.25,
    "int": 2**63 + 12345,
    "none": None,
    "flags": [True, False],
    "list": [1, "two", None, [3.5, {"nested": [], "empty": {}}]],
    "": "empty key",
}
"""A nested JSON value exercising unicode, float precision, big ints, nulls and nesting."""


NOT_UTF8 = r"lone surrogate"
"""What the refusal of text holding a lone surrogate says: every store names it (``not valid UTF-8 (a
lone surrogate)``, `agentspan.stores.base.unstorable`; ``not valid UTF-8 text (it holds a lone
surrogate)`` in a `RemoteStore` URL; ``valid Unicode (no lone surrogates)`` in a checkpoint the
PostgreSQL store checks), not pydantic's ``unable to parse raw data as a unicode string``."""


def refused_as_not_utf8(store: Store, call: Callable[[], object]) -> None:
    """Asserts that ``call`` raises the `ConfigurationError` of text holding a lone surrogate (not,
    say, pydantic's ``ValidationError`` of a request body `RemoteStore` builds from it).

    Args:
        store: The store under test.
        call: The store call, with text holding a lone surrogate.
    """
    with pytest.raises(ConfigurationError, match=NOT_UTF8):
        call()


def make_run(**fields: Any) -> Run:
    """Returns a new (not stored) run with test defaults."""
    fields.setdefault("framework", "test")
    fields.setdefault("agent", "agent-a")
    fields.setdefault("input", {"question": "hi"})
    return Run(**fields)


def make_step(run_id: str, key: str, seq: int, **fields: Any) -> Step:
    """Returns a new ``started`` tool step."""
    fields.setdefault("kind", StepKind.TOOL)
    fields.setdefault("name", "lookup")
    fields.setdefault("input", {"key": key})
    return Step(run_id=run_id, key=key, seq=seq, **fields)


def make_approval(run_id: str, step_key: str, **fields: Any) -> Approval:
    """Returns a new pending approval."""
    fields.setdefault("tool", "send_email")
    fields.setdefault("args", {"to": "a@example.com"})
    fields.setdefault("args_hash", digest(fields["args"]))  # what a server checks
    return Approval(run_id=run_id, step_key=step_key, **fields)


def _dump(record: Any) -> Any:
    """Returns a record, or a list of records, as plain data."""
    return [r.model_dump() for r in record] if isinstance(record, list) else record.model_dump()


class ConformanceBase:
    """Helpers shared by the conformance test mixins; subclasses provide the ``store`` fixture."""

    # ---- helpers --------------------------------------------------------------------------
    def claimed(self, store: Store, *, owner: str = "w1", ttl: float = 60.0, **fields: Any) -> Run:
        """Creates a run and claims it (epoch 1)."""
        run, _ = store.create_run(make_run(**fields))
        return store.claim_run(
            run.id, owner=owner, expected_epoch=run.lease_epoch, lease_expires_at=time.time() + ttl
        )

    def snapshot(self, store: Store, run_id: str) -> tuple[Any, Any]:
        """The run and its journal, as plain data."""
        return _dump(store.get_run(run_id)), _dump(store.list_steps(run_id))


# ---- checkpoints ----------------------------------------------------------------------------
def make_checkpoint(thread_id: str, checkpoint_id: str, **fields: Any) -> CheckpointRecord:
    """Returns a new (not stored) checkpoint with test defaults."""
    fields.setdefault("type", "msgpack")
    fields.setdefault("data", f"state of {thread_id}/{checkpoint_id}".encode())
    fields.setdefault("metadata", {"source": "loop", "step": 1})
    return CheckpointRecord(thread_id=thread_id, checkpoint_id=checkpoint_id, **fields)


def make_checkpoint_write(
    thread_id: str, checkpoint_id: str, task_id: str, idx: int, **fields: Any
) -> CheckpointWrite:
    """Returns a new pending write with test defaults."""
    fields.setdefault("channel", "messages")
    fields.setdefault("type", "msgpack")
    fields.setdefault("data", f"{task_id}:{idx}".encode())
    return CheckpointWrite(thread_id=thread_id, checkpoint_id=checkpoint_id, task_id=task_id, idx=idx, **fields)


def ids_of(records: list[CheckpointRecord]) -> list[str]:
    """The checkpoints' ids, in order."""
    return [r.checkpoint_id for r in records]


def keys_of(records: list[CheckpointRecord]) -> list[tuple[str, str, str]]:
    """The checkpoints' ``(thread_id, namespace, checkpoint_id)``, in order."""
    return [(r.thread_id, r.namespace, r.checkpoint_id) for r in records]


def writes_of(store: Store, thread_id: str, checkpoint_id: str, namespace: str = "") -> list[tuple[str, int, bytes]]:
    """The writes stored against a checkpoint as ``(task_id, idx, data)``, putting it first if absent."""
    if store.get_checkpoint(thread_id, namespace, checkpoint_id) is None:
        store.put_checkpoint(make_checkpoint(thread_id, checkpoint_id, namespace=namespace))
    got = store.get_checkpoint(thread_id, namespace, checkpoint_id)
    assert got is not None
    return [(w.task_id, w.idx, w.data) for w in got.writes]
