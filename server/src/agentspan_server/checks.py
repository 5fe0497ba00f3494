"""Input checks of the Agentspan HTTP API beyond its pydantic models.

Input is checked completely before the store is called, so bad input gets a 4xx answer and writes
nothing. Beyond what the `agentspan.wire` models check, strings (bodies, path segments, query
parameters, JSON keys) must be valid Unicode without NUL characters, numbers finite, typed
integers within 64 bits and JSON values nested at most `MAX_JSON_DEPTH` levels: what every
backend, PostgreSQL included, can store and every answer can encode. A failed check raises a 422
problem (`problems.invalid_input`) listing every issue found, up to `problems.MAX_LISTED_ERRORS`.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote_to_bytes

from fastapi import Query
from pydantic import BaseModel

from agentspan.hashing import digest
from agentspan.jsontext import MAX_DEPTH
from agentspan.records import Approval, ApprovalStatus
from agentspan_server.problems import MAX_LISTED_ERRORS, input_issue, invalid_input

Limit = Annotated[int, Query(ge=0, le=1000, description="Most items to return (0..1000; 0 answers an empty list).")]
"""The ``limit`` query parameter of the list routes."""

MAX_JSON_DEPTH = MAX_DEPTH + 28
"""Deepest nesting of a request body accepted (deeper values cannot be encoded reliably): a
journaled value's `agentspan.jsontext.MAX_DEPTH` plus room for the body's own levels
(``body.result.output...``)."""
INT64_RANGE = (-(2**63), 2**63 - 1)
"""Smallest and largest typed integer accepted (a signed 64-bit integer)."""
_T = TypeVar("_T")
_FINITE_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False, check_circular=False)
"""Encodes a JSON value in C, raising `ValueError` at a NaN or infinity (see `_is_clean_json`)."""


def check_text(text: str, loc: tuple[Any, ...], issues: list[dict[str, str]], *, surrogates_ok: bool = False) -> None:
    """Adds an issue when a string is not valid Unicode or holds a NUL character.

    Args:
        text: The string to check.
        loc: Where it is (named in the issue).
        issues: The issues found so far; appended to.
        surrogates_ok: Accept a lone surrogate (text inside a journaled JSON value, which the
            stores hold as its escape, `agentspan.jsontext`).
    """
    if text.isascii():
        if "\x00" in text:
            issues.append(input_issue(loc, "must not contain NUL characters", "string_nul"))
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        if not surrogates_ok:
            issues.append(input_issue(loc, "must be valid Unicode (no lone surrogates)", "string_unicode"))
            return
    if "\x00" in text:
        issues.append(input_issue(loc, "must not contain NUL characters", "string_nul"))


def _is_clean_json(value: dict[Any, Any] | list[Any]) -> bool:
    """Whether a JSON container surely holds nothing the checks refuse, found without walking it
    in Python: its encoding (in C) meets no NaN or infinity, escapes no NUL (``\\u0000``), holds
    no lone surrogate and has at most `MAX_JSON_DEPTH` brackets. False means "walk it": a string
    holding ``\\u0000`` or brackets, or a value json cannot encode, is walked and may be fine.
    """
    try:
        text = _FINITE_JSON.encode(value)
    except (ValueError, TypeError, RecursionError):
        return False
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH or "\\u0000" in text:
        return False
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            return False
    return True


JSON_FIELDS = frozenset({"input", "output", "args", "options"})
"""The records' journaled JSON values: a lone surrogate in their text is stored as its escape (the
stores encode them with `agentspan.jsontext`); text columns and checkpoint metadata (which
PostgreSQL reads with its JSON functions) refuse it."""


def _check_json(value: Any, loc: tuple[Any, ...], issues: list[dict[str, str]], depth: int,
                surrogates_ok: bool = False) -> None:
    if len(issues) >= MAX_LISTED_ERRORS:
        return
    if isinstance(value, str):
        check_text(value, loc, issues, surrogates_ok=surrogates_ok)
    elif isinstance(value, float):
        if not math.isfinite(value):
            issues.append(input_issue(loc, "must be a finite number", "float_finite"))
    elif isinstance(value, BaseModel):  # a record inside a list (a batch of writes)
        _check_model(value, loc, issues)
    elif isinstance(value, (dict, list)):
        if depth >= MAX_JSON_DEPTH:
            issues.append(input_issue(loc, f"is nested deeper than {MAX_JSON_DEPTH} levels", "json_depth"))
            return
        if isinstance(value, dict):
            for key, item in value.items():
                check_text(key, (*loc, key), issues, surrogates_ok=surrogates_ok)
                _check_json(item, (*loc, key), issues, depth + 1, surrogates_ok)
        else:
            for index, item in enumerate(value):
                _check_json(item, (*loc, index), issues, depth + 1, surrogates_ok)


def _check_model(model: BaseModel, loc: tuple[Any, ...], issues: list[dict[str, str]]) -> None:
    for name in type(model).model_fields:
        _check_field(getattr(model, name), (*loc, name), issues, name in JSON_FIELDS)


def _check_field(value: Any, loc: tuple[Any, ...], issues: list[dict[str, str]], json_value: bool = False) -> None:
    if isinstance(value, BaseModel):
        _check_model(value, loc, issues)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            issues.append(input_issue(loc, "must fit in a signed 64-bit integer", "int_range"))
    elif not isinstance(value, (dict, list)) or not _is_clean_json(value):
        _check_json(value, loc, issues, 0, json_value)


def check_json(value: Any, loc: tuple[Any, ...], issues: list[dict[str, str]]) -> None:
    """Adds an issue for each part of a JSON value that no backend can store (see the module).

    Args:
        value: The JSON value.
        loc: Where it is (named in the issues).
        issues: The issues found so far; appended to.
    """
    if not isinstance(value, (dict, list)) or not _is_clean_json(value):
        _check_json(value, loc, issues, 0)


def check_record(
    model: BaseModel, loc: tuple[Any, ...], issues: list[dict[str, str]], *, skip: tuple[str, ...] = ()
) -> None:
    """Adds an issue for each value of a record (but the ``skip`` fields) that no backend can store.

    Args:
        model: The record (nested records and JSON values are checked too).
        loc: Where it is (named in the issues).
        issues: The issues found so far; appended to.
        skip: Fields not to check.
    """
    for name in type(model).model_fields:
        if name not in skip and len(issues) < MAX_LISTED_ERRORS:
            _check_field(getattr(model, name), (*loc, name), issues, name in JSON_FIELDS)


def _check_parsed(model: BaseModel, loc: tuple[Any, ...], issues: list[dict[str, str]]) -> None:
    """`_check_model` for a model parsed from text `raw_text_is_clean` passed: numbers are checked
    as usual, text not at all; a JSON value is walked only when `_is_clean_json` doubts it.

    Reads the field values from the model's ``__dict__`` (pydantic keeps them there, in field
    order) and builds a field's location only for an issue: about half the time of walking
    ``model_fields`` with ``getattr``.
    """
    for name, value in model.__dict__.items():
        kind = type(value)
        if value is None or kind is str or kind is bool:
            continue
        if kind is int:
            if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
                issues.append(input_issue((*loc, name), "must fit in a signed 64-bit integer", "int_range"))
        elif kind is float:
            if not math.isfinite(value) and len(issues) < MAX_LISTED_ERRORS:
                issues.append(input_issue((*loc, name), "must be a finite number", "float_finite"))
        elif isinstance(value, BaseModel):
            _check_parsed(value, (*loc, name), issues)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):  # a batch of records
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    _check_parsed(item, (*loc, name, index), issues)
                else:
                    _check_json(item, (*loc, name, index), issues, 1)
        elif isinstance(value, (dict, list)):
            if not _is_clean_json(value):
                _check_json(value, (*loc, name), issues, 0, name in JSON_FIELDS)
        elif not isinstance(value, (str, bytes)):  # text: clean already
            _check_field(value, (*loc, name), issues)


def raw_text_is_clean(raw: bytes) -> bool:
    """Whether a raw JSON body, once parsed, holds no NUL, no lone surrogate and no value nested
    deeper than `MAX_JSON_DEPTH`.

    Valid UTF-8 JSON (``raw`` must have parsed) without ``\\u`` escapes holds no NUL and no lone
    surrogate, and with at most `MAX_JSON_DEPTH` brackets in all nothing is nested deeper. A body
    that fails this (rarely: an escaped character, a deep value) gets the full checks.
    """
    return b"\\u" not in raw and b"\x00" not in raw and raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH


def checked_body(body: _T, raw: bytes | None = None) -> _T:
    """Returns a validated request body after the checks beyond its model (raises a 422 problem).

    Args:
        body: The validated body.
        raw: The UTF-8 JSON the body was parsed from, when known: a body whose raw text
            `raw_text_is_clean` only needs its numbers checked (the same answer, faster).
    """
    issues: list[dict[str, str]] = []
    if isinstance(body, BaseModel):
        if raw is not None and raw_text_is_clean(raw):
            _check_parsed(body, ("body",), issues)
        else:
            _check_model(body, ("body",), issues)
    if issues:
        raise invalid_input(issues)
    return body


def path_param(name: str, raw: str) -> str:
    """Decodes one percent-encoded path segment (routing runs on the raw path)."""
    try:
        value = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_input([input_issue(("path", name), "must be percent-encoded UTF-8", "string_unicode")]) from None
    issues: list[dict[str, str]] = []
    check_text(value, ("path", name), issues)
    if issues:
        raise invalid_input(issues)
    return value


def query_text(name: str, value: str | None) -> str | None:
    """Checks a text query parameter (raises a 422 problem)."""
    if value is not None:
        issues: list[dict[str, str]] = []
        check_text(value, ("query", name), issues)
        if issues:
            raise invalid_input(issues)
    return value


def same_run(run_id: str, body_run_id: str, field: str) -> None:
    """Refuses (422) a body whose record names another run than the path.

    Raises:
        ProblemError: ``body_run_id`` differs from ``run_id``; ``field`` is the body field's dotted path.
    """
    if body_run_id != run_id:
        issue = input_issue(("body", *field.split(".")), "must equal the run id of the path", "run_id_mismatch")
        raise invalid_input([issue])


def undecided_request(approval: Approval) -> None:
    """Refuses (422) a requested approval that is not a plain request: one that comes already
    decided (a decision goes through the decision route, which needs the approver role), or whose
    ``args_hash`` is not the hash of its ``args`` (the gate matches calls by the hash, so an
    approver would decide other arguments than the ones that run).

    Raises:
        ProblemError: Every such field, under ``body.approval``.
    """
    issues = []
    if approval.status is not ApprovalStatus.PENDING:
        issues.append(input_issue(("body", "approval", "status"), "must be 'pending': an approval is decided "
                                  "through POST /api/approvals/{approval_id}/decision", "approval_decided"))
    for name in ("decided_by", "decided_at", "reason"):
        if getattr(approval, name) is not None:
            issues.append(input_issue(("body", "approval", name), "must be null in a request", "approval_decided"))
    if approval.args_hash != digest(approval.args):
        issues.append(input_issue(("body", "approval", "args_hash"), "must be the SHA-256 of approval.args "
                                  "(agentspan.hashing.digest)", "args_hash_mismatch"))
    if issues:
        raise invalid_input(issues)

