"""The first difference between two JSON values, for divergence messages.

Only called when something already differs (an error path), so it may walk both values.
"""

from __future__ import annotations

import json
from typing import Any

VALUE_CHARS = 120
"""How many characters of each differing value a message shows."""

_MISSING = object()


def first_difference(recorded: Any, live: Any, path: str = "$") -> tuple[str, Any, Any] | None:
    """Returns ``(json_path, recorded_value, live_value)`` of the first difference, or None.

    Dicts are compared key by key (the recorded value's key order first), lists item by item; a
    key or item present on one side only differs with the other side's value shown as missing.
    """
    if isinstance(recorded, dict) and isinstance(live, dict):
        for key in [*recorded, *(k for k in live if k not in recorded)]:
            found = first_difference(recorded.get(key, _MISSING), live.get(key, _MISSING), f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(live, list):
        for index in range(max(len(recorded), len(live))):
            left = recorded[index] if index < len(recorded) else _MISSING
            right = live[index] if index < len(live) else _MISSING
            found = first_difference(left, right, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if type(recorded) is type(live) and recorded == live:
        return None
    return path, recorded, live


def shorten(value: Any, limit: int = VALUE_CHARS) -> str:
    """Returns a one-line JSON rendering of ``value``, cut to ``limit`` characters."""
    if value is _MISSING:
        return "(missing)"
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_difference(recorded: Any, live: Any) -> str:
    """Returns ``"at $.path: recorded X, live Y"``, or a note that the JSON shown is equal."""
    found = first_difference(recorded, live)
    if found is None:
        return ("the journaled inputs are equal; the difference is in what is hashed but not journaled "
                "(offered tools, output schema, call options or earlier conversation)")
    path, left, right = found
    return f"first difference at {path}: recorded {shorten(left)}, live {shorten(right)}"
