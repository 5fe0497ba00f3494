"""The store contract over HTTP: the conformance suite against `RemoteStore` talking to a real
server (uvicorn on loopback) over SQLite, plus the client's retry and failover behaviour."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentspan.errors import AuthError, ConfigurationError, LeaseLostError, RunNotFound, TransportError
from agentspan.records import RunStatus, StepResult, StepStatus
from agentspan.stores.base import Store
from agentspan.stores.remote import RemoteStore
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import StoreConformance, make_run, make_step
from agentspan_server.app import create_app
from agentspan_server.auth import KeyRing

from server_support import free_port, sqlite_server, thread_server


class TestRemoteStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        backing = SqliteStore(tmp_path / "server.db")
        with thread_server(create_app(backing)) as url:
            store = RemoteStore(url, retry_for=2.0)
            yield store
            store.close()
        backing.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, SqliteStore]]:
    """A server (uvicorn in a thread) over SQLite, and its store (what any other client sees)."""
    with sqlite_server(tmp_path / "server.db") as served:
        yield served


def test_step_keys_with_slashes_and_colons_round_trip(served):
    url, _ = served
    store = RemoteStore(url)
    run, _ = store.create_run(make_run())
    run = store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 30)
    key = "llm:0/call:call_1/llm:0/handoff:transfer to x"
    store.start_step(make_step(run.id, key, 0), epoch=1)
    store.finish_step(run.id, key, StepResult(status=StepStatus.COMPLETED, output={"ok": 1}), epoch=1)
    assert [(s.key, s.output) for s in store.list_steps(run.id)] == [(key, {"ok": 1})]
    assert store.find_approval(run.id, key) is None


def test_errors_cross_the_wire_as_the_same_exceptions(served):
    url, _ = served
    store = RemoteStore(url)
    with pytest.raises(RunNotFound, match="nope"):
        store.get_run("nope")
    run, _ = store.create_run(make_run())
    with pytest.raises(LeaseLostError):
        store.claim_run(run.id, owner="w", expected_epoch=5, lease_expires_at=time.time() + 30)


def test_bad_server_url_is_a_configuration_error():
    for bad in ("", "ftp://x", "localhost:6767", "http://a:1,,http://b:2"):
        with pytest.raises(ConfigurationError, match="AGENTSPAN_SERVER_URL"):
            RemoteStore(bad)


def test_unreachable_server_raises_transport_error_after_retrying():
    store = RemoteStore(f"http://127.0.0.1:{free_port()}", retry_for=0.5)
    started = time.monotonic()
    with pytest.raises(TransportError, match="unreachable"):
        store.get_run("r")
    assert 0.4 < time.monotonic() - started < 5


def test_fails_over_to_the_next_server(served):
    url, _ = served
    store = RemoteStore(f"http://127.0.0.1:{free_port()},{url}", retry_for=5)
    run, created = store.create_run(make_run())
    assert created and store.get_run(run.id).id == run.id


def test_retries_5xx_then_succeeds(served):
    url, backing = served
    calls = {"n": 0}
    real = httpx.HTTPTransport()

    class Flaky(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            calls["n"] += 1
            if calls["n"] <= 2:
                return httpx.Response(503, json={"title": "x", "status": 503, "detail": "busy", "error": "StoreError"})
            return real.handle_request(request)

    store = RemoteStore(url, transport=Flaky(), retry_for=5)
    run, created = store.create_run(make_run())
    assert created and calls["n"] == 3
    assert backing.get_run(run.id).id == run.id


def test_a_lost_answer_to_an_applied_write_is_recognised_on_retry(served):
    """The server applied finish_step but the answer never arrived: the retry must not fail."""
    url, backing = served
    real = httpx.HTTPTransport()
    drop = threading.Event()

    class LosesAnswers(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = real.handle_request(request)
            if drop.is_set() and request.method == "POST":
                drop.clear()
                response.read()
                raise httpx.ReadError("connection reset by peer", request=request)
            return response

    store = RemoteStore(url, transport=LosesAnswers(), retry_for=5)
    run, _ = store.create_run(make_run())
    run = store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 30)
    store.start_step(make_step(run.id, "tool:0", 0), epoch=1)
    drop.set()
    store.finish_step(run.id, "tool:0", StepResult(status=StepStatus.COMPLETED, output=7, input_tokens=3), epoch=1)
    assert [(s.status, s.output) for s in backing.list_steps(run.id)] == [(StepStatus.COMPLETED, 7)]
    assert backing.get_run(run.id).input_tokens == 3  # counted once
    drop.set()
    claimed = store.claim_run(run.id, owner="w2", expected_epoch=1, lease_expires_at=time.time() + 30)
    assert (claimed.lease_owner, claimed.lease_epoch) == ("w2", 2)
    store.update_run(run.id, epoch=2, status=RunStatus.FAILED, error="boom", release_lease=True)
    drop.set()  # reopened by the server, the answer lost: the refused retry is recognised as ours
    reopened = store.reopen_run(run.id, owner="w3", lease_expires_at=time.time() + 30)
    assert (reopened.status, reopened.lease_owner, reopened.lease_epoch) == (RunStatus.RUNNING, "w3", 3)


def test_api_key_is_sent_and_required(tmp_path: Path):
    backing = SqliteStore(tmp_path / "server.db")
    keys = KeyRing.from_specs(["s3cret-agent:agent"])
    with thread_server(create_app(backing, keys=keys)) as url:
        with pytest.raises(AuthError):
            RemoteStore(url).list_runs()
        with pytest.raises(AuthError):
            RemoteStore(url, api_key="wrong").list_runs()
        assert RemoteStore(url, api_key="s3cret-agent").list_runs() == []
    backing.close()


def test_non_durable_start_rides_with_the_finish_or_is_sent_by_the_timer(served):
    url, backing = served
    store = RemoteStore(url, defer_start_for=0.2)
    run, _ = store.create_run(make_run())
    run = store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 30)
    store.start_step(make_step(run.id, "quick", 0), epoch=1, durable=False)
    assert backing.list_steps(run.id) == []  # held back...
    store.finish_step(run.id, "quick", StepResult(status=StepStatus.COMPLETED, output=1), epoch=1)
    assert [(s.key, s.status) for s in backing.list_steps(run.id)] == [("quick", StepStatus.COMPLETED)]
    store.start_step(make_step(run.id, "slow", 1), epoch=1, durable=False)
    deadline = time.monotonic() + 5
    while len(backing.list_steps(run.id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(s.key, s.status) for s in backing.list_steps(run.id)][1] == ("slow", StepStatus.STARTED)
    store.finish_step(run.id, "slow", StepResult(status=StepStatus.COMPLETED, output=2), epoch=1)
    assert [s.status for s in backing.list_steps(run.id)] == [StepStatus.COMPLETED] * 2
    assert backing.get_run(run.id).steps == 2
    store.close()


def test_credentials_in_the_url_never_appear_in_errors_or_repr():
    store = RemoteStore(f"http://user:pa55word@127.0.0.1:{free_port()}", retry_for=0.2)
    assert "pa55word" not in repr(store)
    with pytest.raises(TransportError) as caught:
        store.list_runs()
    assert "pa55word" not in str(caught.value)


def test_async_runs_keep_the_loop_free_through_a_server(served, home):
    """Inside `run_async`, HTTP journal writes are awaited on an async client in the caller's
    event loop (no worker thread), and every other store call of the run (create, attach, the
    approval it waits on, the polls, the end) runs on a worker thread: no synchronous HTTP
    request is ever made on the loop's thread, and the loop keeps running other tasks."""
    import asyncio

    import agentspan

    import oa_support

    url, backing = served
    loop_threads: set[int] = set()
    write_threads: list[int] = []
    sync_requests: list[tuple[int, str, str]] = []

    class Recording(RemoteStore):
        async def arecord_step(self, *args, **kwargs):
            write_threads.append(threading.get_ident())
            return await super().arecord_step(*args, **kwargs)

        def _attempt(self, method, path, body, params):
            sync_requests.append((threading.get_ident(), method, path))
            return super()._attempt(method, path, body, params)

    agentspan.configure(store=Recording(url), poll_interval=0.05)

    def approve_when_asked() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for run in backing.list_runs():
                pending = backing.list_approvals(run_id=run.id, status="pending")
                if pending:
                    backing.decide_approval(pending[0].id, approved=True, by="test", reason=None,
                                            decided_at=time.time())
                    return
            time.sleep(0.02)

    async def main():
        loop_threads.add(threading.get_ident())
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        approver = threading.Thread(target=approve_when_asked)
        approver.start()
        result = await agentspan.run_async(oa_support.support_agent(approval=True), oa_support.PROMPT)
        approver.join()
        task.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result.final_output == oa_support.FINAL
    # every step write was awaited on the async client in the caller's loop (no worker thread)
    assert write_threads and set(write_threads) == loop_threads
    # the run's other calls were made, all of them off the loop's thread
    paths = [path for _, _, path in sync_requests]
    assert any(path == "/runs" for path in paths)  # created
    assert any(path.endswith("/approvals") for path in paths)  # the approval it waited on
    assert sum(path.startswith("/runs/") and "/steps" not in path for path in paths) >= 3  # attach, polls, end
    assert not {thread for thread, _, _ in sync_requests} & loop_threads, sync_requests
    assert ticks > len(write_threads)
    (run,) = backing.list_runs()
    assert run.status.value == "completed"
    assert [a.status.value for a in backing.list_approvals(run_id=run.id)] == ["approved"]


def test_a_run_async_cancelled_through_a_server_ends_off_the_loop(served, home):
    """A run cancelled while it executes ends through the error path of the executor (the
    cancellation recorded, the run read back for its reason) on a worker thread too: the
    caller's loop makes no synchronous request, and `run_async` raises RunCancelledError."""
    import asyncio

    from agents import Agent, function_tool, set_tracing_disabled

    import agentspan
    from agentspan.errors import RunCancelledError
    from agentspan_openai_agents.testing import ScriptedModel, ToolCall

    url, backing = served
    loop_threads: set[int] = set()
    sync_requests: list[tuple[int, str, str]] = []

    class Recording(RemoteStore):
        def _attempt(self, method, path, body, params):
            sync_requests.append((threading.get_ident(), method, path))
            return super()._attempt(method, path, body, params)

    agentspan.configure(store=Recording(url))
    set_tracing_disabled(True)  # nothing to export to

    @function_tool
    def stop_here() -> str:
        """Cancels the run it runs in, as an operator would from elsewhere."""
        backing.cancel_run(agentspan.current_step().run_id, reason="operator stop")
        return "stopped"

    agent = Agent(name="a", tools=[stop_here], model=ScriptedModel([ToolCall("stop_here", {}), "never"]))

    async def main():
        loop_threads.add(threading.get_ident())
        await agentspan.run_async(agent, "go")

    with pytest.raises(RunCancelledError, match="operator stop"):
        asyncio.run(main())
    (run,) = backing.list_runs()
    assert run.status.value == "cancelled" and run.error == "operator stop"
    assert sync_requests  # the lifecycle went over HTTP, none of it on the loop's thread
    assert not {thread for thread, _, _ in sync_requests} & loop_threads, sync_requests


def test_async_step_writes_retry_like_sync_ones(served):
    """The async client retries 5xx answers and connection errors like the sync one, and a
    retried write that the server refuses as already done is accepted."""
    import asyncio

    url, backing = served
    answers: list[int] = []
    real = httpx.AsyncHTTPTransport()

    class Flaky(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if len(answers) == 0:
                answers.append(503)
                return httpx.Response(503, json={"detail": "busy"})
            if len(answers) == 1:  # applied, but the answer is lost
                await real.handle_async_request(request)
                answers.append(-1)
                raise httpx.ReadError("connection reset")
            response = await real.handle_async_request(request)
            answers.append(response.status_code)
            return response

    store = RemoteStore(url, async_transport=Flaky(), retry_for=5.0)
    run, _ = store.create_run(make_run())
    store.claim_run(run.id, owner="me", expected_epoch=0, lease_expires_at=time.time() + 60)
    step = make_step(run.id, "llm:0", 1)

    async def main() -> None:
        await store.arecord_step(step, StepResult(status=StepStatus.COMPLETED, output={"x": 1}), epoch=1)

    asyncio.run(main())
    assert answers == [503, -1, 422]  # the third attempt was refused as a rewrite: it found it done
    (stored,) = backing.list_steps(run.id)
    assert stored.status is StepStatus.COMPLETED and stored.output == {"x": 1}
    store.close()
