"""Rules of checkpoint storage shared by the stores: argument checks, metadata JSON, filtering.

Every backend encodes metadata with `dump_metadata`, checks its arguments with `id_list` and
`check_limit`, and decides a metadata filter with `metadata_matches` (a backend may narrow the
candidates in its query language first, but the final word is this function's, so all backends
agree on what "equal" means).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentspan.errors import ConfigurationError
from agentspan.records import JSON, CheckpointWrite

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dump_metadata(metadata: Any, *, what: str = "checkpoint metadata") -> str:
    """Encodes metadata (or a metadata filter) as compact JSON.

    Raises:
        ConfigurationError: It is not JSON: a value of another type, or a non-finite number.
    """
    try:
        return _ENCODER.encode(metadata)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{what} must be JSON (finite numbers only): {exc}") from exc


def load_filter(metadata: dict[str, JSON] | None) -> dict[str, JSON] | None:
    """Returns a metadata filter as plain JSON (tuples become lists), or None for no filter.

    Raises:
        ConfigurationError: A value is not JSON.
    """
    if not metadata:
        return None
    return json.loads(dump_metadata(metadata, what="the metadata filter"))


def id_list(ids: Sequence[str], name: str) -> list[str]:
    """Returns ``ids`` as a list, refusing a single string (which would be read as its letters).

    Raises:
        ConfigurationError: ``ids`` is a string.
    """
    if isinstance(ids, str):
        raise ConfigurationError(f"{name} must be a sequence of ids, not the single string {ids!r}")
    return [str(i) for i in ids]


def check_limit(limit: int | None) -> None:
    """Refuses a negative listing limit.

    Raises:
        ConfigurationError: ``limit`` is negative.
    """
    if limit is not None and limit < 0:
        raise ConfigurationError(f"limit must be None or at least 0, not {limit}")


def json_equal(a: Any, b: Any) -> bool:
    """Whether two decoded JSON values are equal: objects whatever their key order, arrays
    element by element, numbers by value (``1 == 1.0``), booleans only to booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(json_equal(value, b[key]) for key, value in a.items())
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(json_equal, a, b))
    if isinstance(b, (dict, list)):
        return False
    return bool(a == b)


def metadata_matches(metadata: dict[str, JSON], wanted: dict[str, JSON] | None) -> bool:
    """Whether ``metadata`` has each top-level key of ``wanted`` equal to its value (`json_equal`;
    a missing key counts as ``None``). ``wanted`` comes from `load_filter`."""
    if not wanted:
        return True
    return all(json_equal(metadata.get(key), value) for key, value in wanted.items())


def write_sort_key(write: CheckpointWrite) -> tuple[str, str, int]:
    """The order of a checkpoint's writes: ``(task_path, task_id, idx)``, LangGraph's
    ``writes_sort_key`` (the order a super-step applies its tasks' writes)."""
    return (write.task_path, write.task_id, write.idx)

