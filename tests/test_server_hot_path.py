"""The server's fast path for hot endpoints (`agentspan_server.hot_path`).

It must answer exactly as the FastAPI routes do. Each request below is sent to two servers over
identical stores: once as ``application/json`` (what the SDK sends: the fast path takes it) and
once as ``application/json; charset=utf-8`` (the fast path hands it to the route). Answers and
stored steps and checkpoints must be the same.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.responses import Response

from agentspan.records import Run
from agentspan.stores.sqlite import SqliteStore
from agentspan.wire import RenewLease
from agentspan_server.app import create_app
from agentspan_server.checks import MAX_JSON_DEPTH, _check_json, check_json
from agentspan_server.hot_path import HotEndpoint, HotPathMiddleware

from server_support import thread_server

RUN = "run-1"
FAST, ROUTED = "application/json", "application/json; charset=utf-8"


def _step(key: str, **extra: Any) -> dict[str, Any]:
    return {"run_id": RUN, "key": key, "seq": 0, "kind": "llm", "attempt": 1, "started_at": 1.0,
            "status": "started", **extra}  # fmt: skip


def _record(key: str, output: Any = "ok", epoch: int | str = 1, **step: Any) -> str:
    result = {"status": "completed", "output": output, "ended_at": 2.0}
    return json.dumps({"step": _step(key, **step), "result": result, "epoch": epoch})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _checkpoint(cid: str, **extra: Any) -> dict[str, Any]:
    return {"thread_id": "t", "checkpoint_id": cid, "type": "msgpack", "data": _b64(b"\x00\x01state"),
            "metadata": {"step": 1}, **extra}  # fmt: skip


_RECORD = f"/api/runs/{RUN}/steps/record"
REQUESTS: list[tuple[str, str, str]] = [
    ("POST", _RECORD, _record("a")),
    ("POST", _RECORD, _record("a")),  # already completed: refused
    ("POST", _RECORD, _record("b", output={"text": "info on inference", "n": 1.5})),  # suspect text, clean values
    ("POST", _RECORD, _record("c", output={"v": 123456789012345678901234567890})),  # a JSON int past 64 bits
    ("POST", _RECORD, _record("d", output={"v": "\u00e9t\u00e9 \U0001f600"})),
    ("POST", _RECORD, _record("e", output={"v": 1e300})),
    ("POST", _RECORD, _record("f", output="a\u0000b")),
    ("POST", _RECORD, '{"step": ' + json.dumps(_step("g")) + ', "result": {"status": "completed", '
                      '"output": NaN}, "epoch": 1}'),
    ("POST", _RECORD, '{"step": ' + json.dumps(_step("h")) + ', "result": {"status": "completed", '
                      '"output": {"x": 1e999}}, "epoch": 1}'),
    ("POST", _RECORD, '{"step": ' + json.dumps(_step("i")) + ', "result": {"status": "completed", '
                      '"output": "a\\ud800b", "ended_at": 2.0}, "epoch": 1}'),  # kept, as its escape
    ("POST", _RECORD, _record("j", output=json.loads("[" * 140 + "]" * 140))),
    ("POST", _RECORD, _record("k", seq=2**70)),
    ("POST", _RECORD, _record("l", cost_usd="inf")),
    ("POST", _RECORD, _record("l", cost_usd=" 1e400")),
    ("POST", _RECORD, _record("l", cost_usd="1_0e400")),
    ("POST", _RECORD, _record("l", duration_ms="\u00a0-Infinity")),
    ("POST", _RECORD, _record("l", cost_usd="1" + "_000" * 103)),
    ("POST", _RECORD, _record("l", cost_usd=" 2.5 ", output={"id": "0199e5a1-9e4f-7c1d-8e2a-1234e5678f9b"})),
    ("POST", _RECORD, _record("m", epoch=2**64)),
    ("POST", _RECORD, _record("n", run_id="other-run")),
    ("POST", _RECORD, _record("o", epoch=7)),  # stale epoch
    ("POST", _RECORD, _record("p", surprise=True)),  # unknown field
    ("POST", _RECORD, '{"step": '),  # malformed JSON
    ("POST", _RECORD, ""),
    ("POST", _RECORD, "[]"),
    ("POST", "/api/runs/nope/steps/record", _record("q").replace(RUN, "nope")),
    ("POST", "/api/runs/%FF/steps/record", _record("r")),
    ("POST", f"/api/runs/{RUN}/steps/start", json.dumps({"step": _step("s"), "epoch": 1})),
    ("POST", f"/api/runs/{RUN}/steps/finish",
     json.dumps({"key": "s", "result": {"status": "completed", "output": 3, "ended_at": 4.0}, "epoch": 1})),
    ("POST", f"/api/runs/{RUN}/steps/finish",
     json.dumps({"key": "zz", "result": {"status": "completed", "ended_at": 4.0}, "epoch": 1})),
    ("POST", f"/api/runs/{RUN}/steps/finish", json.dumps({"key": "", "result": {"status": "completed"}, "epoch": 1})),
    ("POST", f"/api/runs/{RUN}/lease", json.dumps({"epoch": 1, "lease_expires_at": 9e9})),
    ("POST", f"/api/runs/{RUN}/lease", json.dumps({"epoch": 0, "lease_expires_at": 9e9})),
    ("POST", "/api/runs/nope/lease", json.dumps({"epoch": 1, "lease_expires_at": 9e9})),
    ("PUT", "/api/checkpoints", json.dumps(_checkpoint("c1"))),
    ("PUT", "/api/checkpoints", json.dumps(_checkpoint("c2", data="not base64!"))),
    ("PUT", "/api/checkpoints", json.dumps(_checkpoint("c3", metadata={"k": "a\u0000"}))),
    ("PUT", "/api/checkpoints/writes", json.dumps({"writes": [
        {"thread_id": "t", "checkpoint_id": "c1", "task_id": "x", "idx": 0, "channel": "ch", "type": "msgpack",
         "data": _b64(b"w")}], "replace": False})),
    ("PUT", "/api/checkpoints/with-writes", json.dumps({"checkpoint": _checkpoint("c4", parent_id="c1"), "writes": [
        {"thread_id": "t", "checkpoint_id": "c1", "task_id": "y", "idx": 0, "channel": "ch", "type": "msgpack",
         "data": _b64(b"v")},
        {"thread_id": "t", "checkpoint_id": "c1", "task_id": "y", "idx": -1, "channel": "ch", "type": "m",
         "data": _b64(b"v")}], "replace": True})),
    ("PUT", "/api/checkpoints/with-writes", json.dumps({"checkpoint": _checkpoint("c6"), "writes": [
        {"thread_id": "t", "checkpoint_id": "c1", "task_id": "y", "idx": 2**63, "channel": "ch", "type": "m",
         "data": _b64(b"v")}], "replace": True})),
    ("PUT", "/api/checkpoints/with-writes", json.dumps({"checkpoint": _checkpoint("c5"), "writes": [], "replace": 1})),
]  # fmt: skip


def _answer(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, response.json() if response.content else None


def _serve_all(store: SqliteStore, content_type: str) -> list[tuple[int, Any]]:
    run, _ = store.create_run(Run(id=RUN, framework="t", agent="a", created_at=1.0, updated_at=1.0))
    store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=9e9)
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        return [_answer(http.request(method, path, content=body.encode(), headers={"Content-Type": content_type}))
                for method, path, body in REQUESTS]  # fmt: skip


def test_hot_endpoints_answer_as_their_routes_do(tmp_path: Path) -> None:
    fast_store, routed_store = SqliteStore(tmp_path / "fast.db"), SqliteStore(tmp_path / "routed.db")
    try:
        fast, routed = _serve_all(fast_store, FAST), _serve_all(routed_store, ROUTED)
        for (method, path, body), got, expected in zip(REQUESTS, fast, routed, strict=True):
            assert got == expected, f"{method} {path} {body[:200]}"
        assert {status for status, _ in fast} >= {200, 204, 400, 404, 409, 422}
        assert fast_store.list_steps(RUN) == routed_store.list_steps(RUN)
        assert [s.key for s in fast_store.list_steps(RUN)] == ["a", "b", "c", "d", "e", "i", "l", "s"]
        assert fast_store.list_steps(RUN)[2].output == {"v": 123456789012345678901234567890}
        for cid in ("c1", "c4"):  # created_at is the server's clock
            saved = [s.get_checkpoint("t", "", cid) for s in (fast_store, routed_store)]
            fast_one, routed_one = (c.model_dump(exclude={"created_at"}) for c in saved if c is not None)
            assert fast_one == routed_one
        assert fast_store.get_checkpoint("t", "", "c6") is None
        assert fast_store.get_checkpoint("t", "", "c1").data == b"\x00\x01state"  # type: ignore[union-attr]
    finally:
        fast_store.close()
        routed_store.close()


# ---- the middleware on its own --------------------------------------------------------------
def _call(middleware: HotPathMiddleware, body: bytes, content_type: bytes = b"application/json",
          path: str = "/runs/r%2F1/lease") -> tuple[list[dict[str, Any]], list[bytes]]:  # fmt: skip
    """Sends one request in two body chunks; returns what was sent back and the bodies the
    wrapped app read."""
    chunks = [{"type": "http.request", "body": body[:3], "more_body": True},
              {"type": "http.request", "body": body[3:], "more_body": False}]  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", content_type)]}
    asyncio.run(middleware(scope, receive, send))  # type: ignore[arg-type]
    return sent, downstream_bodies


downstream_bodies: list[bytes] = []


async def _downstream(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        downstream_bodies.append(message["body"])
        if not message["more_body"]:
            break
    await Response(status_code=599)(scope, receive, send)


@pytest.fixture
def middleware() -> HotPathMiddleware:
    downstream_bodies.clear()
    handled: list[tuple[str, BaseModel]] = []

    async def renew(run_id: str, body: BaseModel) -> Response:
        handled.append((run_id, body))
        return Response(status_code=204)

    hot = HotPathMiddleware(_downstream, endpoints=[HotEndpoint("POST", "/runs/{run_id}/lease", RenewLease, renew)],
                            routes=[])  # fmt: skip
    hot.handled = handled  # type: ignore[attr-defined]
    return hot


def test_a_valid_request_is_answered_without_the_wrapped_app(middleware: HotPathMiddleware) -> None:
    sent, bodies = _call(middleware, b'{"epoch": 3, "lease_expires_at": 5.5}')
    assert sent[0]["status"] == 204 and bodies == []
    assert middleware.handled == [("r/1", RenewLease(epoch=3, lease_expires_at=5.5))]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "content_type", "path"),
    [
        (b'{"epoch": 3, "lease_expires_at": ', b"application/json", "/runs/r/lease"),  # malformed
        (b'{"epoch": "x", "lease_expires_at": 1}', b"application/json", "/runs/r/lease"),  # invalid
        (b'{"epoch": 3, "lease_expires_at": 5.5}', b"text/plain", "/runs/r/lease"),  # not JSON
        (b'{"epoch": 3, "lease_expires_at": 5.5}', b"application/json", "/runs/r/lease/x"),  # another path
    ],
)
def test_anything_else_reaches_the_wrapped_app_with_its_whole_body(
    middleware: HotPathMiddleware, body: bytes, content_type: bytes, path: str
) -> None:
    sent, bodies = _call(middleware, body, content_type, path)
    assert sent[0]["status"] == 599
    assert b"".join(bodies) == body
    assert middleware.handled == []  # type: ignore[attr-defined]



# ---- the checks' shortcut for JSON values -----------------------------------------------------
_texts = st.lists(st.sampled_from(["a", "é", "😀", "\x00", "\ud800", "\\u0000", "[", "{", '"', "\\"]),
                  max_size=4).map("".join)
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | _texts
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts, inner, max_size=4),
                       max_leaves=30)  # fmt: skip


@given(_values)
@settings(max_examples=400, deadline=None)
def test_json_values_get_the_issues_the_walk_finds(value: Any) -> None:
    issues: list[dict[str, str]] = []
    check_json(value, ("v",), issues)
    walked: list[dict[str, str]] = []
    _check_json(value, ("v",), walked, 0)
    assert issues == walked


@pytest.mark.parametrize("depth", [99, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 250])
def test_deep_json_values_get_the_issues_the_walk_finds(depth: int) -> None:
    value = json.loads("[" * depth + "]" * depth)
    issues: list[dict[str, str]] = []
    check_json({"deep": value}, ("v",), issues)
    walked: list[dict[str, str]] = []
    _check_json({"deep": value}, ("v",), walked, 0)
    assert issues == walked and bool(issues) == (depth >= MAX_JSON_DEPTH)
