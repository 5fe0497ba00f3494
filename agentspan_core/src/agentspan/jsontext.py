"""JSON text for the journal: compact and canonical (sorted-key) encodings, and decoding.

Every journaled call encodes its input and output for the store and its input again for the
divergence hash, so these run several times per call. orjson does them about ten times faster
than the standard library on the journal's small documents (a ``ModelResponse`` of one tool call:
6 µs → 0.5 µs); where the two libraries disagree, the standard library's rules win:

- values orjson refuses but ``json`` accepts (integers past 64 bits, dictionaries with non-string
  keys) are encoded by ``json``, with its output;
- values ``json`` refuses (datetimes, dataclasses, any object) are refused with ``json``'s
  ``TypeError``: orjson's own encoders for them are turned off;
- text orjson cannot decode (``NaN`` and ``Infinity``, which ``json`` writes) is decoded by ``json``;
- text with a run of 20 digits or more, or of 19 after a minus sign, is decoded by ``json``: orjson
  turns an integer past its range (64 bits, unsigned above zero) into a float
  (``123456789012345678901234567890`` -> ``1.2345678901234568e+29``,
  ``-9223372036854775809`` -> ``-9.223372036854776e+18``), silently.

Text holding a lone surrogate (``"\udcff"``: a file name decoded with ``surrogateescape``, a
broken emoji) is not UTF-8: orjson refuses it, and ``json`` then writes it as the escape
``\udcff`` (ASCII JSON), which SQLite and PostgreSQL store and `loads` reads back as it was.

Two differences remain: orjson writes floats below 1e-4 without an exponent sign's leading zero
(``2.5e-7``, ``json``: ``2.5e-07``) and NaN/infinity as ``null`` (``json``: ``NaN``, not JSON).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

if TYPE_CHECKING:
    from pydantic import BaseModel

_M = TypeVar("_M", bound="BaseModel")

__all__ = ["MAX_DEPTH", "canonical", "canonical_text", "dumps", "loads", "model_json", "nested_deeper", "parse_model",
           "utf8_text"]

MAX_DEPTH = 100
"""Deepest nesting of a tool result the journal holds as JSON (`agentspan.tools.jsonable_result`
journals a deeper one as its text): what every store, and a server, takes as it is."""

_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_SORTED = _STRICT | orjson.OPT_SORT_KEYS
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False)
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"))
_CANONICAL_ASCII = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
_encode = orjson.dumps
_LONG_DIGITS = re.compile(rb"-[0-9]{19}|[0-9]{20}")  # past int64 below zero, past uint64 above (orjson's range)
_LONG_DIGITS_TEXT = re.compile(r"-[0-9]{19}|[0-9]{20}")


def utf8_text(text: str) -> str:
    """``text`` with each lone surrogate written as its escape (``\\udcff``): a message that
    quotes a file name decoded with ``surrogateescape``, say, as text a store can hold."""
    return text if _is_utf8(text) else text.encode("utf-8", "backslashreplace").decode()


def error_text(exc: BaseException) -> str:
    """``"Type: message"`` of an exception, as a store can hold it (`utf8_text`). An exception
    whose ``str`` raises gives its ``repr`` instead, or its type name alone: describing the
    user's error must not replace it with one of its own. An adapter's exception that stands for
    a framework's error report (not an exception of its own type) names that error's type in an
    ``agentspan_error_type`` attribute (the step's error, and its span's ``error.type``)."""
    try:  # its own attribute only: a user's exception may answer any name (``__getattr__``), or raise
        named = exc.__dict__.get("agentspan_error_type")
    except Exception:
        named = None
    name = named if isinstance(named, str) and named else type(exc).__name__
    for describe in (str, repr):
        try:
            return utf8_text(f"{name}: {describe(exc)}")
        except Exception:  # the user's __str__/__repr__, whatever it raises
            continue
    return name


def model_json(model: Any) -> bytes:
    """A pydantic model's JSON as UTF-8 bytes (pydantic's own encoder; a lone surrogate, which it
    refuses, written as its escape instead).

    Raises:
        ValueError: The model holds a value JSON cannot encode.
    """
    try:
        return model.model_dump_json().encode()
    except ValueError:  # pydantic's PydanticSerializationError (a lone surrogate) is a ValueError
        return _COMPACT_ASCII.encode(model.model_dump(mode="json")).encode()


def parse_model(model: type[_M], data: str | bytes) -> _M:
    """Validates JSON text as ``model`` (pydantic's parser; text escaping a lone surrogate, which it
    refuses, parsed by `json` instead).

    Raises:
        pydantic.ValidationError: The text is not a valid ``model``.
    """
    try:
        return model.model_validate_json(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        if "surrogate" not in str(exc):
            raise
        return model.model_validate(json.loads(data))


def _is_utf8(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (no lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """Encodes a JSON value compactly (no whitespace, keys in their order, UTF-8 unescaped).

    Raises:
        TypeError: The value is not JSON-serializable.
        ValueError: The value contains itself.
    """
    try:
        return _encode(value, default=_refuse, option=_STRICT).decode()
    except orjson.JSONEncodeError:
        text = _COMPACT.encode(value)
        return text if _is_utf8(text) else _COMPACT_ASCII.encode(value)


def canonical(value: Any) -> bytes:
    """Encodes a JSON value canonically (sorted keys, no whitespace) as UTF-8 bytes, for hashing.

    Raises:
        TypeError: The value is not JSON-serializable.
        ValueError: The value contains itself.
    """
    try:
        return _encode(value, default=_refuse, option=_SORTED)
    except orjson.JSONEncodeError:
        text = _CANONICAL.encode(value)
        return (text if _is_utf8(text) else _CANONICAL_ASCII.encode(value)).encode()


def canonical_text(value: Any) -> str:
    """`canonical` as text."""
    return canonical(value).decode()


def loads(text: str | bytes) -> Any:
    """Decodes JSON text.

    Raises:
        ValueError: The text is not JSON.
    """
    long_digits = _LONG_DIGITS if isinstance(text, bytes) else _LONG_DIGITS_TEXT
    # maybe an integer past 64 bits: orjson makes it a float (the ignore: mypy cannot pair the
    # pattern isinstance picked with the type of text)
    if long_digits.search(text) is not None:  # type: ignore[arg-type]
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def nested_deeper(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a JSON value nests objects and arrays more than ``limit`` levels deep."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
