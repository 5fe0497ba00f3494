"""The server's asyncio path to PostgreSQL (`postgres_async`): the store conformance suite through a
server over PostgreSQL, every refusal of the hot calls answered exactly as the synchronous store
raises it, the slow paths (transactions of several statements), the pool's lifecycle, a call from
another event loop, and a lost database connection."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from agentspan.errors import ConfigurationError
from agentspan.records import Run, StepResult, StepStatus
from agentspan.stores.base import Store
from agentspan.stores.remote import RemoteStore
from agentspan.testing.conformance import (
    StoreConformance,
    make_checkpoint,
    make_checkpoint_write,
    make_run,
    make_step,
)
from agentspan.wire import PROBLEM_CONTENT_TYPE, status_of
from agentspan_server.app import create_app
from agentspan_server.stores.postgres import PostgresStore
from agentspan_server.stores.postgres_async import HOT_CALLS, AsyncPostgresPath

from server_support import thread_server

DONE = StepResult(status=StepStatus.COMPLETED, output={"ok": True}, input_tokens=3, output_tokens=4, cost_usd=0.5)


class TestRemoteStoreOverPostgres(StoreConformance):
    """The whole store contract through a server whose hot calls take the asyncio path."""

    @pytest.fixture
    def store(self, pg_db: str) -> Iterator[Store]:
        backing = PostgresStore(pg_db)
        with thread_server(create_app(backing)) as url:
            store = RemoteStore(url, retry_for=2.0)
            yield store
            store.close()
        backing.close()


def test_hot_calls_take_the_store_methods_arguments() -> None:
    for name, plan in HOT_CALLS.items():
        expected = list(inspect.signature(getattr(Store, name)).parameters.values())[1:]  # without self
        assert list(inspect.signature(plan).parameters.values()) == expected, name


# ---- a server over PostgreSQL, counting the calls its asyncio path serves ------------------------
class Served:
    def __init__(self, url: str, store: PostgresStore, path: AsyncPostgresPath) -> None:
        self.url, self.store, self.path = url, store, path
        self.hot_calls: list[str] = []

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/api{path}", json=body)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}/api{path}")

    def claimed_run(self) -> Run:
        run, _ = self.store.create_run(make_run())
        return self.store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 60)


@pytest.fixture
def served(pg_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    store = PostgresStore(pg_db)
    app = create_app(store)
    path = app.state.store_async
    assert isinstance(path, AsyncPostgresPath)
    with thread_server(app) as url:
        served = Served(url, store, path)
        real_call = path.call

        async def counting_call(name: str, *args: Any, **kwargs: Any) -> Any:
            served.hot_calls.append(name)
            return await real_call(name, *args, **kwargs)

        monkeypatch.setattr(path, "call", counting_call)
        yield served
    store.close()


def _json(model: Any) -> Any:
    return model.model_dump(mode="json")


def _step_body(run_id: str, key: str, epoch: int, **step: Any) -> dict[str, Any]:
    return {"step": _json(make_step(run_id, key, 0, **step)), "epoch": epoch}


def _requests(run_id: str, epoch: int) -> list[tuple[str, str, str, Any, Callable[[PostgresStore], Any]]]:
    """(hot call, method, path, body, the same call on the synchronous store) for a run and epoch."""
    step = make_step(run_id, "k", 0)
    result = _json(DONE)
    return [
        ("start_step", "POST", f"/runs/{run_id}/steps/start", _step_body(run_id, "k", epoch),
         lambda s: s.start_step(step, epoch=epoch)),
        ("finish_step", "POST", f"/runs/{run_id}/steps/finish", {"key": "k", "result": result, "epoch": epoch},
         lambda s: s.finish_step(run_id, "k", DONE, epoch=epoch)),
        ("record_step", "POST", f"/runs/{run_id}/steps/record", {**_step_body(run_id, "k", epoch), "result": result},
         lambda s: s.record_step(step, DONE, epoch=epoch)),
    ]  # fmt: skip


def _assert_same_refusal(served: Served, name: str, method: str, path: str, body: Any, sync: Any) -> int:
    """Asserts the server answers with the problem the synchronous store's exception maps to."""
    with pytest.raises(BaseException) as raised:
        sync(served.store)
    answer = httpx.request(method, f"{served.url}/api{path}", json=body)
    assert answer.status_code == status_of(raised.value), (name, answer.text)
    assert answer.headers["content-type"].startswith(PROBLEM_CONTENT_TYPE)
    problem = answer.json()
    assert (problem["error"], problem["detail"]) == (type(raised.value).__name__, str(raised.value)), name
    assert served.hot_calls[-1] == name
    return answer.status_code


def test_stale_epoch_is_409_as_the_sync_store_refuses_it(served: Served) -> None:
    run = served.claimed_run()
    for name, method, path, body, sync in _requests(run.id, run.lease_epoch + 1):
        assert _assert_same_refusal(served, name, method, path, body, sync) == 409
    assert served.store.list_steps(run.id) == []
    assert served.store.get_run(run.id).steps == 0


def test_cancelled_run_is_409_run_cancelled(served: Served) -> None:
    run = served.claimed_run()
    served.store.cancel_run(run.id, reason="stop")
    for name, method, path, body, sync in _requests(run.id, run.lease_epoch):
        assert _assert_same_refusal(served, name, method, path, body, sync) == 409
        assert served.post(path, body).json()["error"] == "RunCancelledSignal"
    assert served.store.list_steps(run.id) == []


def test_unknown_run_is_404_for_every_hot_call(served: Served) -> None:
    for name, method, path, body, sync in _requests("nope", 1):
        assert _assert_same_refusal(served, name, method, path, body, sync) == 404
    lease = {"epoch": 1, "lease_expires_at": time.time() + 30}
    reads: list[tuple[str, str, str, Any, Callable[[PostgresStore], Any]]] = [
        ("get_run", "GET", "/runs/nope", None, lambda s: s.get_run("nope")),
        ("list_steps", "GET", "/runs/nope/steps", None, lambda s: s.list_steps("nope")),
        ("renew_lease", "POST", "/runs/nope/lease", lease, lambda s: s.renew_lease("nope", **lease)),
    ]
    for name, method, path, body, sync in reads:
        assert _assert_same_refusal(served, name, method, path, body, sync) == 404


def test_completed_step_is_never_rewritten(served: Served) -> None:
    run = served.claimed_run()
    served.store.record_step(make_step(run.id, "k", 0), DONE, epoch=run.lease_epoch)
    for name, method, path, body, sync in _requests(run.id, run.lease_epoch):
        if name != "finish_step":  # finishing a completed step again is a transaction's StepNotFound
            assert _assert_same_refusal(served, name, method, path, body, sync) == 422
    [step] = served.store.list_steps(run.id)
    assert step.status == StepStatus.COMPLETED and step.output == {"ok": True}


def test_journal_writes_and_reads_through_the_asyncio_path(served: Served) -> None:
    run = served.claimed_run()
    epoch = run.lease_epoch
    assert served.post(f"/runs/{run.id}/steps/start", _step_body(run.id, "a", epoch)).status_code == 204
    finish = {"key": "a", "result": _json(DONE), "epoch": epoch}
    assert served.post(f"/runs/{run.id}/steps/finish", finish).status_code == 204
    record = {**_step_body(run.id, "b", epoch), "result": _json(DONE)}
    assert served.post(f"/runs/{run.id}/steps/record", record).status_code == 204
    lease = {"epoch": epoch, "lease_expires_at": time.time() + 90}
    assert served.post(f"/runs/{run.id}/lease", lease).json() == {"renewed": True}
    assert served.post(f"/runs/{run.id}/lease", {**lease, "epoch": epoch + 1}).json() == {"renewed": False}
    got = served.get(f"/runs/{run.id}").json()
    assert (got["steps"], got["input_tokens"], got["output_tokens"], got["cost_usd"]) == (2, 6, 8, 1.0)
    steps = served.get(f"/runs/{run.id}/steps").json()["steps"]
    assert [(s["key"], s["status"]) for s in steps] == [("a", "completed"), ("b", "completed")]
    assert [_json(s) for s in served.store.list_steps(run.id)] == steps
    assert served.hot_calls == ["start_step", "finish_step", "record_step", "renew_lease", "renew_lease",
                                "get_run", "list_steps"]  # fmt: skip


def test_slow_paths_run_as_transactions(served: Served) -> None:
    run = served.claimed_run()
    epoch = run.lease_epoch
    # finish_step of a step that was never started: the one statement matches nothing, the
    # transaction of several statements then raises StepNotFound, as the synchronous store does
    finish = {"key": "never", "result": _json(DONE), "epoch": epoch}
    with pytest.raises(BaseException) as raised:
        served.store.finish_step(run.id, "never", DONE, epoch=epoch)
    answer = served.post(f"/runs/{run.id}/steps/finish", finish)
    assert answer.status_code == 404 and answer.json()["error"] == type(raised.value).__name__ == "StepNotFound"
    # record_step of a step passed as completed: the transaction of start and finish, whose finish
    # then finds no started step and rolls the start back, as the synchronous store does
    completed = make_step(run.id, "c", 0, status="completed")
    with pytest.raises(BaseException) as raised:
        served.store.record_step(completed, DONE, epoch=epoch)
    record = {"step": _json(completed), "result": _json(DONE), "epoch": epoch}
    answer = served.post(f"/runs/{run.id}/steps/record", record)
    assert answer.status_code == 404 and answer.json()["error"] == type(raised.value).__name__ == "StepNotFound"
    # ... and refused like the one-statement path when the epoch is stale
    stale = {**record, "epoch": epoch + 1}
    assert served.post(f"/runs/{run.id}/steps/record", stale).json()["error"] == "LeaseLostError"
    assert served.hot_calls == ["finish_step", "record_step", "record_step"]
    assert served.store.list_steps(run.id) == [] and served.store.get_run(run.id).steps == 0

def test_checkpoints_through_the_asyncio_path(served: Served) -> None:
    checkpoint = make_checkpoint("t", "cp-1", data=b"\x00\xff")
    answer = httpx.put(f"{served.url}/api/checkpoints", json=_json(checkpoint) | {"writes": []})
    assert answer.status_code == 204, answer.text
    found = served.get("/checkpoints/find?thread_id=t").json()["checkpoint"]
    assert found["checkpoint_id"] == "cp-1"
    assert served.store.get_checkpoint("t").data == b"\x00\xff"  # type: ignore[union-attr]
    # a super-step's writes and its next checkpoint: one statement on the event loop
    writes = [_json(make_checkpoint_write("t", "cp-1", "task", i, data=bytes([i]))) for i in range(3)]
    both = {"checkpoint": _json(make_checkpoint("t", "cp-2", parent_id="cp-1")), "writes": writes, "replace": False}
    answer = httpx.put(f"{served.url}/api/checkpoints/with-writes", json=both)
    assert answer.status_code == 204, answer.text
    first = served.store.get_checkpoint("t", "", "cp-1")
    assert first is not None and [w.data for w in first.writes] == [b"\x00", b"\x01", b"\x02"]
    assert served.store.get_checkpoint("t").checkpoint_id == "cp-2"  # type: ignore[union-attr]
    # refused whole: a write PostgreSQL cannot hold (the server's checks see it first) ...
    bad = {**both, "checkpoint": _json(make_checkpoint("t", "cp-3")), "writes": [{**writes[0], "task_id": "a\u0000"}]}
    assert httpx.put(f"{served.url}/api/checkpoints/with-writes", json=bad).status_code == 422
    # ... and, past them, the plan's own refusal (an integer beyond 64 bits) stores nothing either
    with pytest.raises(ConfigurationError, match="signed 64-bit"):
        served.store.put_checkpoint_with_writes(
            make_checkpoint("t", "cp-3"), [make_checkpoint_write("t", "cp-2", "task", 2**63)], replace=False
        )
    assert served.store.get_checkpoint("t").checkpoint_id == "cp-2"  # type: ignore[union-attr]
    assert served.hot_calls == ["put_checkpoint", "get_checkpoint", "put_checkpoint_with_writes"]


def test_lost_connections_are_503_then_the_pool_recovers(served: Served, pg_db: str) -> None:
    run = served.claimed_run()
    assert served.get(f"/runs/{run.id}").status_code == 200
    server, dbname = pg_db.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
    answers = [served.get(f"/runs/{run.id}") for _ in range(12)]
    lost = [a for a in answers if a.status_code != 200]
    assert lost, "a terminated connection was reused without an error"  # the pool does not check them
    for answer in lost:
        problem = answer.json()
        assert (answer.status_code, problem["error"]) == (503, "StoreError")
        assert problem["detail"].startswith(f"Agentspan store {pg_db}: ")
    assert answers[-1].status_code == 200 and answers[-1].json()["id"] == run.id


# ---- the pool's lifecycle ------------------------------------------------------------------------
def test_pool_opens_with_the_app_and_closes_at_shutdown(pg_db: str) -> None:
    store = PostgresStore(pg_db)
    app = create_app(store)
    path: AsyncPostgresPath = app.state.store_async
    with thread_server(app) as url:
        pool = path._pool
        assert pool is not None and not pool.closed  # opened by the lifespan, before any request
        run, _ = store.create_run(make_run())
        assert httpx.get(f"{url}/api/runs/{run.id}").json()["id"] == run.id
    assert pool.closed and path._pool is None
    assert store.get_run(run.id).id == run.id  # the synchronous store is the caller's to close
    store.close()


def test_without_lifespan_the_pool_opens_on_the_first_hot_call(pg_db: str) -> None:
    store = PostgresStore(pg_db)
    run, _ = store.create_run(make_run())
    app = create_app(store)
    path: AsyncPostgresPath = app.state.store_async

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)  # runs no lifespan
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert path._pool is None
            assert (await client.get(f"/api/runs/{run.id}")).json()["id"] == run.id
            pool = path._pool
            assert pool is not None and not pool.closed
            assert (await client.get(f"/api/runs/{run.id}/steps")).json() == {"steps": []}
            assert path._pool is pool  # one pool for the loop
        await path.aclose()
        assert pool.closed

    asyncio.run(scenario())
    store.close()


def test_call_from_another_event_loop_uses_the_synchronous_store(pg_db: str) -> None:
    store = PostgresStore(pg_db)
    run, _ = store.create_run(make_run())
    path = store.async_path()
    owner = asyncio.new_event_loop()
    thread = threading.Thread(target=owner.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(path.open(), owner).result(10)
        assert asyncio.run(path.call("get_run", run.id)).id == run.id  # another loop: served in a thread
        assert asyncio.run_coroutine_threadsafe(path.call("get_run", run.id), owner).result(10).id == run.id
        asyncio.run_coroutine_threadsafe(path.aclose(), owner).result(10)
    finally:
        owner.call_soon_threadsafe(owner.stop)
        thread.join(10)
        owner.close()
        store.close()



def test_calls_one_after_another_reuse_the_most_recent_connection(pg_db: str, monkeypatch) -> None:
    """With several idle connections, the asyncio pool hands out the last one returned."""
    from agentspan_server.stores import postgres_async

    backing = PostgresStore(pg_db, min_size=3, max_size=3)
    run, _ = backing.create_run(make_run())
    used: list[int] = []
    real = postgres_async.adrive

    async def recording(plan: Any, cur: psycopg.AsyncCursor[Any]) -> Any:
        used.append(id(cur.connection))
        return await real(plan, cur)

    monkeypatch.setattr(postgres_async, "adrive", recording)

    async def main() -> None:
        path = AsyncPostgresPath(backing)
        await path.open()
        assert path._pool is not None
        await path._pool.wait()  # all three connections open and idle
        for _ in range(6):
            await path.call("get_run", run.id)
        await path.aclose()

    try:
        asyncio.run(main())
    finally:
        backing.close()
    assert len(used) == 6 and len(set(used)) == 1


def test_no_connection_in_time_is_a_store_error(pg_db: str) -> None:
    """A pool that cannot hand out a connection in time fails the call with `StoreError` (503)."""
    from agentspan.errors import StoreError

    backing = PostgresStore(pg_db, min_size=1, max_size=1)
    run, _ = backing.create_run(make_run())

    async def main() -> None:
        path = AsyncPostgresPath(backing)
        await path.open()
        assert path._pool is not None
        path._pool.timeout = 0.2
        held = await path._pool.getconn()  # the only connection
        try:
            with pytest.raises(StoreError, match="couldn't get a connection"):
                await path.call("get_run", run.id)
        finally:
            await path._pool.putconn(held)
        assert (await path.call("get_run", run.id)).id == run.id
        await path.aclose()

    try:
        asyncio.run(main())
    finally:
        backing.close()
