"""The first difference between two JSON values, for divergence messages.

Only called when something already differs (an error path), so it may walk both values.
"""

from __future__ import annotations

import json
import re
from typing import Any

VALUE_CHARS = 120
"""How many characters of each differing value a message shows."""

MISSING = object()
"""Stands for "absent on this side" in a `first_difference` result."""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def child_path(path: str, key: str | int) -> str:
    """The JSON path of ``key`` under ``path`` (``$.a``, ``$[0]``, ``$["a-b"]``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if _IDENTIFIER.match(key) else f"{path}[{json.dumps(key)}]"


def _same(a: Any, b: Any, numbers_by_value: bool) -> bool:
    if numbers_by_value and not isinstance(a, bool) and not isinstance(b, bool) \
            and isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def first_difference(recorded: Any, live: Any, path: str = "$", *,
                     numbers_by_value: bool = False) -> tuple[str, Any, Any] | None:
    """Returns ``(json_path, recorded_value, live_value)`` of the first difference, or None.

    Object keys are visited in sorted order, list items in order; a key or item present on one
    side only differs with `MISSING` on the other. Types count (``1`` is not ``true``; nor is it
    ``1.0``, unless ``numbers_by_value``).
    """
    if isinstance(recorded, dict) and isinstance(live, dict):
        for key in sorted(recorded.keys() | live.keys()):
            found = first_difference(recorded.get(key, MISSING), live.get(key, MISSING), child_path(path, key),
                                     numbers_by_value=numbers_by_value)
            if found is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(live, list):
        for index in range(max(len(recorded), len(live))):
            left = recorded[index] if index < len(recorded) else MISSING
            right = live[index] if index < len(live) else MISSING
            found = first_difference(left, right, child_path(path, index), numbers_by_value=numbers_by_value)
            if found is not None:
                return found
        return None
    if recorded is MISSING or live is MISSING or not _same(recorded, live, numbers_by_value):
        return path, recorded, live
    return None


def shorten(value: Any, limit: int = VALUE_CHARS) -> str:
    """Returns a one-line JSON rendering of ``value``, cut to ``limit`` characters."""
    if value is MISSING:
        return "(missing)"
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_difference(recorded: Any, live: Any) -> str:
    """Returns ``"at $.path: recorded X, live Y"``, or a note that the JSON shown is equal."""
    return describe_found(first_difference(recorded, live))


def describe_found(found: tuple[str, Any, Any] | None) -> str:
    """`describe_difference` of a `first_difference` result already at hand."""
    if found is None:
        return ("the journaled inputs are equal; the difference is in what is hashed but not journaled "
                "(offered tools, output schema, call options or earlier conversation)")
    path, left, right = found
    return f"first difference at {path}: recorded {shorten(left)}, live {shorten(right)}"
