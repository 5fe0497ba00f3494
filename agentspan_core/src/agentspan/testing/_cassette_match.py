"""Request matching for `agentspan.testing.cassettes`: LLM request bodies compared as JSON.

A live request matches a recorded one when the method, the path (scheme, host and port are
ignored, so a replay may point at another server) and the query (without its secret keys, whether
present or not) are equal, and the bodies are equal as JSON values: key order and
whitespace do not matter, types do (``1`` is not ``true``; ``1`` and ``1.0`` are the same number).
Bodies that are not JSON are compared byte for byte.

When nothing matches, `mismatch` builds the `CassetteMismatch` signal naming the closest
recorded request and the first differing field as a JSON path (``body.messages[2].content``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from agentspan import diffing
from agentspan.errors import CassetteMismatch
from agentspan.testing._cassette_scrub import secret_query_parameter

MISSING = diffing.MISSING
_PREVIEW = 160


def body_bytes(request: Any) -> bytes:
    """The body of a vcrpy request as bytes (empty when it has none)."""
    body = request.body
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else bytes(body)


def parse_body(request: Any) -> Any:
    """The body as a JSON value, or the raw bytes when it is not JSON (or is empty)."""
    raw = body_bytes(request)
    if not raw:
        return raw
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw


def drop_fields(value: Any, paths: Iterable[str]) -> Any:
    """A copy of ``value`` without the fields at ``paths`` (dotted keys; ``*`` matches any key or
    list index, e.g. ``"metadata.request_id"`` or ``"messages.*.id"``)."""
    for path in paths:
        value = _drop(value, path.split("."))
    return value


def _drop(value: Any, parts: list[str]) -> Any:
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        items = [(k, v, head in ("*", k)) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(i, v, head in ("*", str(i))) for i, v in enumerate(value)]
    else:
        return value
    kept = [(k, _drop(v, rest) if hit else v) for k, v, hit in items if not (hit and not rest)]
    return dict(kept) if isinstance(value, dict) else [v for _, v in kept]


def first_difference(recorded: Any, live: Any) -> tuple[str, Any, Any] | None:
    """The first place where two bodies differ, as ``(json_path, recorded, live)`` under ``body``
    (numbers compared by value); None when they are equal."""
    return diffing.first_difference(recorded, live, "body", numbers_by_value=True)


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, diffing.child_path(path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, diffing.child_path(path, index))
    else:
        yield path, json.dumps(value) if not isinstance(value, bytes) else value.hex()


def similarity(a: Any, b: Any) -> float:
    """How alike two bodies are, from 0 to 1: the share of equal leaves (path and value)."""
    left, right = dict(_leaves(a)), dict(_leaves(b))
    if not left and not right:
        return 1.0
    same = sum(1 for key, value in left.items() if right.get(key) == value)
    return same / max(len(left), len(right))


def public_query(request: Any) -> list[tuple[str, str]]:
    """The request's query parameters (sorted) without those that carry credentials
    (`secret_query_parameter`: ``key``, ``api_key``, ``Key``, ``apiKey``, ``access_token``, ``code``, ...)."""
    return [(k, v) for k, v in request.query if not secret_query_parameter(k)]


def query_matcher(live: Any, recorded: Any) -> None:
    """A vcrpy matcher: the queries are equal once secret keys are left out."""
    if public_query(live) != public_query(recorded):
        raise AssertionError(f"query: recorded {public_query(recorded)}, live {public_query(live)}")


query_matcher.__name__ = "query"


class BodyMatcher:
    """A vcrpy matcher (``register_matcher``): raises AssertionError naming the first differing
    JSON field, ignoring the fields in ``ignore``."""

    __name__ = "llm_body"

    def __init__(self, ignore: Sequence[str] = ()) -> None:
        self.ignore = tuple(ignore)

    def difference(self, live: Any, recorded: Any) -> tuple[str, Any, Any] | None:
        """The first difference between two vcrpy requests' bodies, as in `first_difference`."""
        left, right = parse_body(recorded), parse_body(live)
        if isinstance(left, bytes) or isinstance(right, bytes):
            return None if left == right else ("body", left, right)
        return first_difference(drop_fields(left, self.ignore), drop_fields(right, self.ignore))

    def __call__(self, live: Any, recorded: Any) -> None:
        found = self.difference(live, recorded)
        if found:
            field, old, new = found
            raise AssertionError(f"{field}: recorded {preview(old)}, live {preview(new)}")


def preview(value: Any) -> str:
    """A short printable form of a body value."""
    if value is MISSING:
        return "(absent)"
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        return repr(text if len(text) <= _PREVIEW else text[:_PREVIEW] + "...") + f" ({len(value)} bytes)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + f"... ({len(text)} characters)"


def describe(request: Any) -> str:
    """``METHOD URL`` of a vcrpy request."""
    return f"{request.method} {request.uri}"


def mismatch(cassette: Any, request: Any, matcher: BodyMatcher, *, how_to_record: str) -> CassetteMismatch:
    """The signal for a live request that no recorded interaction of ``cassette`` answers.

    The closest recorded request is the one with the same method and path if any (then the most
    similar body, preferring unplayed ones); its first differing field is named.
    """
    live = cassette.filter_request(request) or request
    live_body = parse_body(live)
    candidates: list[tuple[tuple[bool, bool, float, bool], int, Any]] = []
    for index, recorded in enumerate(cassette.requests):
        unplayed = cassette.play_counts[index] == 0
        key = (recorded.method == live.method, recorded.path == live.path,
               similarity(parse_body(recorded), live_body), unplayed)
        candidates.append((key, index, recorded))
    where = f"cassette {cassette._path}"
    counts = f"{len(cassette)} recorded, {sum(1 for n in cassette.play_counts.values() if n)} played"
    head = f"no recorded interaction in {where} ({counts}) answers {describe(live)}"
    if not candidates:
        return CassetteMismatch(f"{head}: the cassette is empty\n{how_to_record}", path=str(cassette._path),
                                request=describe(live))
    _, index, closest = max(candidates, key=lambda c: c[0])
    field, old, new = _first_field(closest, live, matcher)
    if field is None:
        detail = (f"  it matches recorded interaction #{index + 1}, which was already played back: the code "
                  "made this request more times than when the cassette was recorded")
    else:
        detail = (f"  closest recorded request: #{index + 1} {describe(closest)}\n"
                  f"  first difference at {field}:\n    recorded: {preview(old)}\n    live:     {preview(new)}")
    return CassetteMismatch(f"{head}\n{detail}\n{how_to_record}", path=str(cassette._path),
                            request=describe(live), closest=describe(closest), field=field,
                            recorded=old, live=new)


def _first_field(recorded: Any, live: Any, matcher: BodyMatcher) -> tuple[str | None, Any, Any]:
    if recorded.method != live.method:
        return "method", recorded.method, live.method
    if recorded.path != live.path:
        return "path", recorded.path, live.path
    if public_query(recorded) != public_query(live):
        return "query", dict(public_query(recorded)), dict(public_query(live))
    found = matcher.difference(live, recorded)
    return found if found else (None, None, None)
