"""Checkpoints through the server: the checkpoint conformance suite against `PostgresStore` and
against `RemoteStore` talking to a real server (uvicorn on loopback) over SQLite and over
PostgreSQL, plus the HTTP API's answers to bad input (problems, never 5xx) and its roles."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from agentspan.errors import AuthError, ConfigurationError
from agentspan.records import CheckpointRecord
from agentspan.stores.base import Store
from agentspan.stores.remote import RemoteStore
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import CheckpointConformance, make_checkpoint, make_checkpoint_write
from agentspan.wire import PROBLEM_CONTENT_TYPE
from agentspan_server.app import create_app
from agentspan_server.auth import KeyRing
from agentspan_server.stores.postgres import PostgresStore
from agentspan_server.stores.postgres_checkpoints import MAX_VALUES_ROWS

from server_support import thread_server

BODY_LIMIT = 4 << 20
"""The conformance suite stores a 1 MiB checkpoint: 1.4 MB of base64, over the 1 MiB default."""
ADMIN, AGENT, APPROVER = "admin-key-0123456789", "agent-key-0123456789", "approver-key-0123456789"
KEYS = KeyRing([(ADMIN, "admin"), (AGENT, "agent"), (APPROVER, "approver")])


class TestPostgresStoreCheckpoints(CheckpointConformance):
    @pytest.fixture
    def store(self, pg_db: str) -> Iterator[Store]:
        store = PostgresStore(pg_db)
        yield store
        store.close()


class TestRemoteStoreCheckpointsOverSqlite(CheckpointConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        backing = SqliteStore(tmp_path / "server.db")
        with thread_server(create_app(backing, max_body_bytes=BODY_LIMIT)) as url:
            store = RemoteStore(url, retry_for=2.0)
            yield store
            store.close()
        backing.close()


class TestRemoteStoreCheckpointsOverPostgres(CheckpointConformance):
    @pytest.fixture
    def store(self, pg_db: str) -> Iterator[Store]:
        backing = PostgresStore(pg_db)
        with thread_server(create_app(backing, max_body_bytes=BODY_LIMIT)) as url:
            store = RemoteStore(url, retry_for=2.0)
            yield store
            store.close()
        backing.close()


# ---- PostgreSQL specifics ---------------------------------------------------------------------------
def test_postgres_keeps_bytes_as_bytea_and_metadata_as_text(pg_db: str) -> None:
    store = PostgresStore(pg_db)
    store.put_checkpoint(make_checkpoint("t", "cp-1", data=b"\x00\xff", metadata={"huge": 1e308, "e": "\\u0000"}))
    store.put_checkpoint_writes([make_checkpoint_write("t", "cp-1", "task", 0, data=b"\x80")], replace=False)
    got = store.get_checkpoint("t")
    assert got is not None and got.metadata == {"huge": 1e308, "e": "\\u0000"}  # jsonb would rewrite 1e308
    assert store.list_checkpoints(metadata={"huge": 1e308, "e": "\\u0000"}) == [got]
    store.close()
    with psycopg.connect(pg_db, autocommit=True) as conn:
        assert conn.execute("SELECT data, metadata FROM checkpoints").fetchall() == [
            (b"\x00\xff", '{"huge":1e+308,"e":"\\\\u0000"}')
        ]
        assert conn.execute("SELECT data FROM checkpoint_writes").fetchall() == [(b"\x80",)]


def test_postgres_refuses_text_it_cannot_hold_storing_nothing(pg_db: str) -> None:
    """NUL and lone surrogates (which PostgreSQL's JSON functions cannot read either), as the server does."""
    store = PostgresStore(pg_db)
    store.put_checkpoint(make_checkpoint("t", "cp-1", data=b"kept"))
    store.put_checkpoint_writes([make_checkpoint_write("t", "cp-1", "task", 0)], replace=False)
    before = store.list_checkpoints()
    bad_checkpoints = [
        make_checkpoint("t", "cp-1", metadata={"s": "a\u0000"}), make_checkpoint("t", "cp-2", metadata={"\ud800": 1}),
        make_checkpoint("t\u0000", "cp-1"), make_checkpoint("t", "cp-1", parent_id="\udfff"),
    ]  # fmt: skip
    for bad in bad_checkpoints:
        with pytest.raises(ConfigurationError, match="cannot store this checkpoint"):
            store.put_checkpoint(bad)
    with pytest.raises(ConfigurationError, match=r"checkpoint write\[1\]\.task_id must not contain NUL"):
        store.put_checkpoint_writes(
            [make_checkpoint_write("t", "cp-1", "task", 1), make_checkpoint_write("t", "cp-1", "a\u0000", 0)],
            replace=True,
        )
    with pytest.raises(ConfigurationError, match="signed 64-bit"):
        store.put_checkpoint_writes([make_checkpoint_write("t", "cp-1", "task", 2**63)], replace=True)
    with pytest.raises(ConfigurationError, match="metadata filter"):
        store.list_checkpoints(metadata={"s": ["\u0000"]})
    assert store.list_checkpoints() == before
    store.close()


@pytest.mark.parametrize("replace", [False, True])
def test_postgres_large_batches_of_writes(pg_db: str, replace: bool) -> None:
    """Batches past `MAX_VALUES_ROWS` take the ``unnest`` statement: same rules, same result, also
    inside `put_checkpoint_with_writes` (even sizes)."""
    store = PostgresStore(pg_db)
    for size in (MAX_VALUES_ROWS, MAX_VALUES_ROWS + 1, 1000):
        cp_id = f"cp-{size}"
        store.put_checkpoint(make_checkpoint("t", cp_id))
        first = [make_checkpoint_write("t", cp_id, f"task-{i % 7}", i, data=b"first") for i in range(size)]
        store.put_checkpoint_writes(first[: size // 2], replace=replace)
        second = [w.model_copy(update={"data": b"second"}) for w in first]
        third = [w.model_copy(update={"data": b"third"}) for w in first]
        if size % 2:  # twice the size, collapsed to one each: alone, or with the next checkpoint
            store.put_checkpoint_writes([*second, *third], replace=replace)
        else:
            store.put_checkpoint_with_writes(make_checkpoint("t", f"{cp_id}-next"), [*second, *third], replace=replace)
            assert store.get_checkpoint("t", "", f"{cp_id}-next") is not None
        got = store.get_checkpoint("t", "", cp_id)
        assert got is not None and len(got.writes) == size
        expected = ["third" if replace else ("first" if i < size // 2 else "second") for i in range(size)]
        assert sorted((w.idx, w.data.decode()) for w in got.writes) == list(enumerate(expected))
    store.close()


# ---- the HTTP API -------------------------------------------------------------------------------
@pytest.fixture
def backing(pg_db: str) -> Iterator[PostgresStore]:
    store = PostgresStore(pg_db)
    yield store
    store.close()


@pytest.fixture
def keyed(backing: PostgresStore) -> Iterator[str]:
    """The URL of a server with admin, agent and approver keys and a 4096-byte body limit."""
    with thread_server(create_app(backing, keys=KEYS, max_body_bytes=4096)) as url:
        yield url


def call(url: str, method: str, path: str, key: str = ADMIN, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{url}/api{path}", headers=headers, **kwargs)


def problem(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """Asserts ``response`` is a problem document with that status and error; returns it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_CONTENT_TYPE)
    body = response.json()
    assert body["status"] == status and body["error"] == error and body["detail"]
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


def checkpoint_json(thread_id: str = "t", checkpoint_id: str = "cp-1", **changes: Any) -> dict[str, Any]:
    return {**make_checkpoint(thread_id, checkpoint_id).model_dump(mode="json", exclude={"writes"}), **changes}


def write_json(**changes: Any) -> dict[str, Any]:
    return {**make_checkpoint_write("t", "cp-1", "task", 0).model_dump(mode="json"), **changes}


def test_bytes_travel_as_base64_both_alphabets(keyed: str, backing: PostgresStore) -> None:
    raw = b"\xfb\xff\xfe\x00"
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        answer = call(keyed, "PUT", "/checkpoints", AGENT, json=checkpoint_json(data=encoded))
        assert answer.status_code == 204, answer.text
        assert backing.get_checkpoint("t").data == raw  # type: ignore[union-attr]
    found = call(keyed, "GET", "/checkpoints/find", AGENT, params={"thread_id": "t"}).json()["checkpoint"]
    assert base64.urlsafe_b64decode(found["data"]) == raw


def test_wrong_base64_is_422_naming_the_field_and_stores_nothing(keyed: str, backing: PostgresStore) -> None:
    for bad in ("!!!!", "A", "AP8=\n", 12, None):
        body = problem(call(keyed, "PUT", "/checkpoints", json=checkpoint_json(data=bad)), 422, "ConfigurationError")
        assert fields(body) == ["body.data"]
        writes = {"writes": [write_json(), write_json(idx=1, data=bad)], "replace": True}
        body = problem(call(keyed, "PUT", "/checkpoints/writes", json=writes), 422, "ConfigurationError")
        assert fields(body) == ["body.writes.1.data"]
        both = {**writes, "checkpoint": checkpoint_json()}
        body = problem(call(keyed, "PUT", "/checkpoints/with-writes", json=both), 422, "ConfigurationError")
        assert fields(body) == ["body.writes.1.data"]
    assert backing.list_checkpoints() == [] and backing.get_checkpoint("t") is None
    backing.put_checkpoint(make_checkpoint("t", "cp-1"))
    assert backing.get_checkpoint("t").writes == []  # type: ignore[union-attr]


def test_missing_or_wrong_fields_are_422(keyed: str, backing: PostgresStore) -> None:
    no_data = {k: v for k, v in checkpoint_json().items() if k != "data"}
    assert fields(problem(call(keyed, "PUT", "/checkpoints", json=no_data), 422, "ConfigurationError")) == [
        "body.data"
    ]
    extra = checkpoint_json(surprise=1)
    assert fields(problem(call(keyed, "PUT", "/checkpoints", json=extra), 422, "ConfigurationError")) == [
        "body.surprise"
    ]
    cases = [
        ("PUT", "/checkpoints/writes", {"writes": [write_json()]}, "body.replace"),
        ("PUT", "/checkpoints/writes", {"writes": [{**write_json(), "idx": 2**63}], "replace": False},
         "body.writes.0.idx"),
        ("PUT", "/checkpoints/writes", {"writes": [write_json(task_id="a\u0000")], "replace": False},
         "body.writes.0.task_id"),
        ("PUT", "/checkpoints", checkpoint_json(thread_id="t\u0000"), "body.thread_id"),
        ("PUT", "/checkpoints/with-writes", {"checkpoint": checkpoint_json(), "writes": []}, "body.replace"),
        ("PUT", "/checkpoints/with-writes", {"writes": [write_json()], "replace": False}, "body.checkpoint"),
        ("PUT", "/checkpoints/with-writes",  # a good checkpoint, a bad write: neither is stored
         {"checkpoint": checkpoint_json(), "writes": [write_json(), write_json(task_id="a\u0000")], "replace": False},
         "body.writes.1.task_id"),
        ("PUT", "/checkpoints/with-writes",
         {"checkpoint": checkpoint_json(metadata={"s": "a\u0000"}), "writes": [write_json()], "replace": True},
         "body.checkpoint.metadata.s"),
        ("POST", "/checkpoints/search", {"limit": -1}, "body.limit"),
        ("POST", "/checkpoints/search", {"metadata": {"step": "x\u0000"}}, "body.metadata.step"),
        ("POST", "/checkpoints/copy", {"source_thread_id": "t"}, "body.target_thread_id"),
        ("POST", "/checkpoints/delete", {}, "body.thread_id"),
        ("POST", "/checkpoints/delete-for-runs", {"run_ids": "r1"}, "body.run_ids"),
        ("POST", "/checkpoints/prune", {"thread_ids": "t", "keep_latest": True}, "body.thread_ids"),
        ("POST", "/checkpoints/prune", {"thread_ids": ["t"]}, "body.keep_latest"),
    ]  # fmt: skip
    for method, path, body, field in cases:
        found = problem(call(keyed, method, path, json=body), 422, "ConfigurationError")
        assert fields(found) == [field], (path, body)
    nan = '{"thread_id":"t","checkpoint_id":"cp-1","type":"m","data":"","metadata":{"x":NaN}}'
    found = problem(call(keyed, "PUT", "/checkpoints", content=nan, headers={"Content-Type": "application/json"}),
                    422, "ConfigurationError")  # fmt: skip
    assert fields(found) == ["body.metadata.x"]
    assert fields(problem(call(keyed, "GET", "/checkpoints/find"), 422, "ConfigurationError")) == ["query.thread_id"]
    problem(call(keyed, "PUT", "/checkpoints", content=b"{", headers={"Content-Type": "application/json"}),
            400, "ConfigurationError")  # fmt: skip
    assert backing.list_checkpoints() == []


def test_oversized_body_is_413_and_stores_nothing(keyed: str, backing: PostgresStore) -> None:
    big = checkpoint_json(data=base64.b64encode(bytes(4096)).decode())
    problem(call(keyed, "PUT", "/checkpoints", json=big), 413, "ConfigurationError")
    store = RemoteStore(keyed, api_key=AGENT, retry_for=1.0)
    with pytest.raises(ConfigurationError, match="exceeds 4096 bytes"):
        store.put_checkpoint(make_checkpoint("t", "cp-1", data=bytes(4096)))
    store.put_checkpoint(make_checkpoint("t", "cp-1", data=bytes(1024)))  # under the limit
    store.close()
    assert [len(cp.data) for cp in backing.list_checkpoints()] == [1024]


def test_roles_deleting_needs_admin(keyed: str, backing: PostgresStore) -> None:
    backing.put_checkpoint(make_checkpoint("t", "cp-1", run_id="r1"))
    agent = RemoteStore(keyed, api_key=AGENT, retry_for=1.0)
    agent.put_checkpoint(make_checkpoint("t", "cp-2", run_id="r1"))
    agent.put_checkpoint_writes([make_checkpoint_write("t", "cp-2", "task", 0)], replace=False)
    agent.copy_checkpoints("t", "u")
    assert [cp.checkpoint_id for cp in agent.list_checkpoints(thread_id="u")] == ["cp-2", "cp-1"]
    before = [cp.model_dump() for cp in backing.list_checkpoints()]
    deletions = [
        ("/checkpoints/delete", {"thread_id": "t"}),
        ("/checkpoints/delete-for-runs", {"run_ids": ["r1"]}),
        ("/checkpoints/prune", {"thread_ids": ["t"], "keep_latest": False}),
    ]
    for path, body in deletions:
        for key in (AGENT, APPROVER):
            problem(call(keyed, "POST", path, key, json=body), 403, "AuthError")
        problem(call(keyed, "POST", path, "wrong-key", json=body), 401, "AuthError")
        problem(httpx.post(f"{keyed}/api{path}", json=body), 401, "AuthError")
    for delete in (
        lambda: agent.delete_checkpoints("t"), lambda: agent.delete_checkpoints_for_runs(["r1"]),
        lambda: agent.prune_checkpoints(["t"], keep_latest=True),
    ):  # fmt: skip
        with pytest.raises(AuthError, match="admin"):
            delete()
    assert [cp.model_dump() for cp in backing.list_checkpoints()] == before
    agent.close()
    admin = RemoteStore(keyed, api_key=ADMIN, retry_for=1.0)
    admin.prune_checkpoints(["t"], keep_latest=True)
    admin.delete_checkpoints_for_runs(["r1"])
    admin.delete_checkpoints("t")
    assert admin.list_checkpoints() == []
    admin.close()


def test_store_failure_is_503_not_500(tmp_path: Path) -> None:
    """A backend without checkpoints answers StoreError: a 503 problem, which the client retries."""

    class NoCheckpoints(SqliteStore):
        put_checkpoint = Store.put_checkpoint
        get_checkpoint = Store.get_checkpoint

    store = NoCheckpoints(tmp_path / "server.db")
    with thread_server(create_app(store)) as url:
        problem(httpx.put(f"{url}/api/checkpoints", json=checkpoint_json()), 503, "StoreError")
        problem(httpx.get(f"{url}/api/checkpoints/find", params={"thread_id": "t"}), 503, "StoreError")
    store.close()


def test_a_lost_answer_to_an_applied_checkpoint_write_is_retried_safely(backing: PostgresStore) -> None:
    """The server applied the write but the answer never arrived: the retry applies it again."""
    real = httpx.HTTPTransport()
    lost: list[str] = []
    sent = [0]

    class LosesFirstAnswers(httpx.BaseTransport):  # every write's first attempt: applied, answer lost
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = real.handle_request(request)
            if request.method != "GET":
                sent[0] += 1
            if request.method != "GET" and sent[0] % 2:
                lost.append(request.url.path)
                response.read()
                raise httpx.ReadError("connection reset by peer", request=request)
            return response

    with thread_server(create_app(backing)) as url:
        store = RemoteStore(url, transport=LosesFirstAnswers(), retry_for=5)
        store.put_checkpoint(make_checkpoint("t", "cp-1", run_id="r"))
        store.put_checkpoint_writes(
            [make_checkpoint_write("t", "cp-1", "task", 0, data=b"first"),
             make_checkpoint_write("t", "cp-1", "task", -1, data=b"error")], replace=False,
        )  # fmt: skip
        store.put_checkpoint_writes([make_checkpoint_write("t", "cp-1", "task", -1, data=b"again")], replace=True)
        store.copy_checkpoints("t", "u")
        got = store.get_checkpoint("u")
        assert got is not None and [(w.idx, w.data) for w in got.writes] == [(-1, b"again"), (0, b"first")]
        store.prune_checkpoints(["u"], keep_latest=False)
        store.delete_checkpoints_for_runs(["r"])
        store.close()
    assert len(lost) == 6 and backing.list_checkpoints() == []


def test_concurrent_savers_through_one_client(backing: PostgresStore) -> None:
    """One RemoteStore shared by threads (a LangGraph saver under ``ainvoke``) over PostgreSQL."""
    with thread_server(create_app(backing)) as url:
        store = RemoteStore(url)
        failures: list[BaseException] = []

        def save(n: int) -> None:
            try:
                for i in range(20):
                    cp = make_checkpoint(f"t{n}", f"cp-{i:02d}", data=bytes([n, i]) * 100)
                    store.put_checkpoint(cp)
                    write = make_checkpoint_write(f"t{n}", cp.checkpoint_id, "x", 0)
                    store.put_checkpoint_writes([write], replace=True)
                    latest = store.get_checkpoint(f"t{n}")
                    assert isinstance(latest, CheckpointRecord) and latest.data == cp.data and len(latest.writes) == 1
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)

        threads = [threading.Thread(target=save, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        store.close()
    assert failures == []
    assert len(backing.list_checkpoints()) == 80
