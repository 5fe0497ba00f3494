"""Stable content hashes for divergence checks and approval binding."""

from __future__ import annotations

import hashlib
from typing import Any

from agentspan import jsontext


def canonical_json(value: Any) -> str:
    """Serializes a JSON value with sorted keys and no whitespace (stable across runs).

    Raises:
        TypeError: The value is not JSON-serializable.
    """
    return jsontext.canonical_text(value)


def digest(value: Any) -> str:
    """Returns the hex SHA-256 of a JSON value's canonical form."""
    return hashlib.sha256(jsontext.canonical(value)).hexdigest()


def chain(previous: str, value: Any) -> str:
    """Extends a hash chain with a JSON value: ``sha256(previous || canonical(value))``.

    A model call's input is the whole conversation so far; hashing only what is new since the
    previous call, chained onto the previous call's hash, keeps the per-call cost flat.
    """
    h = hashlib.sha256(previous.encode())
    h.update(jsontext.canonical(value))
    return h.hexdigest()
