"""The Agentspan HTTP server (`agentspan_server`) against a real uvicorn over a SQLite store.

Every endpoint of `agentspan.wire` is exercised over real HTTP (httpx), with the refusals the
protocol promises (401/403/404/409/413/422/400, each an RFC 9457 problem) and the guarantee that a
refused call writes nothing. A schemathesis fuzz run checks that no generated request, valid or
not, makes the server answer 5xx.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from agentspan.errors import ConfigurationError
from agentspan.hashing import digest
from agentspan.records import Approval, ApprovalStatus, Run, Step, StepResult
from agentspan.stores.sqlite import SqliteStore
from agentspan.wire import PROBLEM_CONTENT_TYPE
from agentspan_server.app import create_app, required_role
from agentspan_server.auth import KeyRing
from agentspan_server.main import is_loopback, mask_url, open_store, serve

ADMIN, AGENT, APPROVER = "admin-key-0123456789", "agent-key-0123456789", "approver-key-0123456789"
KEYS = KeyRing([(ADMIN, "admin"), (AGENT, "agent"), (APPROVER, "approver")])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Runs ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "server.db")
    yield store
    store.close()


@pytest.fixture
def client(store: SqliteStore) -> Iterator[httpx.Client]:
    """A client of an open (no keys) server."""
    with serving(create_app(store, max_body_bytes=4096)) as url, httpx.Client(base_url=url) as http:
        yield http


@pytest.fixture
def keyed(store: SqliteStore) -> Iterator[httpx.Client]:
    """A client (sending no key by default) of a server with admin, agent and approver keys."""
    with serving(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        yield http


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def problem(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """Asserts ``response`` is a problem document with that status and error; returns it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_CONTENT_TYPE)
    body = response.json()
    assert body["status"] == status and body["error"] == error and body["detail"]
    assert "Traceback" not in response.text
    return body


def new_run(**fields: Any) -> dict[str, Any]:
    fields.setdefault("framework", "test")
    fields.setdefault("agent", "agent-a")
    fields.setdefault("input", {"q": "hi", "big": 2**70, "text": "héllo 🚀"})
    return Run(**fields).model_dump(mode="json")


def claimed(http: httpx.Client, store: SqliteStore, **fields: Any) -> Run:
    """Creates a run over HTTP and claims it (epoch 1)."""
    run = new_run(**fields)
    assert http.post("/api/runs", json=run).status_code == 201
    answer = http.post(
        f"/api/runs/{run['id']}/claim", json={"owner": "w1", "expected_epoch": 0, "lease_expires_at": time.time() + 60}
    )
    assert answer.status_code == 200, answer.text
    return Run.model_validate(answer.json())


def step_json(run_id: str, key: str, seq: int, kind: str = "tool") -> dict[str, Any]:
    return Step(run_id=run_id, key=key, seq=seq, kind=kind, name="lookup", input={"k": key}).model_dump(mode="json")


# ---- round trip ----------------------------------------------------------------------------------
def test_every_endpoint_round_trip(client: httpx.Client, store: SqliteStore) -> None:
    run = new_run(idempotency_key="idem-1")
    created = client.post("/api/runs", json=run)
    assert created.status_code == 201 and created.json()["created"] is True
    again = client.post("/api/runs", json=new_run(idempotency_key="idem-1"))
    assert again.status_code == 200 and again.json() == {"run": created.json()["run"], "created": False}
    rid = run["id"]
    assert client.get(f"/api/runs/{rid}").json() == created.json()["run"]
    assert client.get(f"/api/runs/{rid}").json()["input"]["big"] == 2**70
    assert [
        r["id"] for r in client.get("/api/runs", params={"status": "pending", "agent": "agent-a"}).json()["runs"]
    ] == [rid]
    assert client.get("/api/runs", params={"agent": "other"}).json() == {"runs": []}
    assert [r["id"] for r in client.get("/api/claimable", params={"agent": ["x", "agent-a"]}).json()["runs"]] == [rid]

    body = {"owner": "w1", "expected_epoch": 0, "lease_expires_at": time.time() + 60}
    claim = client.post(f"/api/runs/{rid}/claim", json=body)
    assert claim.status_code == 200 and claim.json()["lease_epoch"] == 1 and claim.json()["lease_owner"] == "w1"
    renewed = client.post(f"/api/runs/{rid}/lease", json={"epoch": 1, "lease_expires_at": time.time() + 90})
    assert renewed.json() == {"renewed": True}
    assert client.post(f"/api/runs/{rid}/lease", json={"epoch": 0, "lease_expires_at": 1.0}).json() == {
        "renewed": False
    }
    assert client.get("/api/claimable", params={"now": time.time()}).json() == {"runs": []}
    updated = client.patch(f"/api/runs/{rid}", json={"epoch": 1, "status": "running"})
    assert updated.status_code == 200 and updated.json()["status"] == "running"

    start = client.post(f"/api/runs/{rid}/steps/start", json={"step": step_json(rid, "tool:a", 0), "epoch": 1})
    assert start.status_code == 204 and start.content == b""
    result = StepResult(status="completed", output={"ok": True}, input_tokens=3).model_dump(mode="json")
    finish = client.post(f"/api/runs/{rid}/steps/finish", json={"key": "tool:a", "result": result, "epoch": 1})
    assert finish.status_code == 204
    llm = step_json(rid, "llm:0", 1, kind="llm")
    record = client.post(f"/api/runs/{rid}/steps/record", json={"step": llm, "result": result, "epoch": 1})
    assert record.status_code == 204
    steps = client.get(f"/api/runs/{rid}/steps").json()["steps"]
    assert [(s["key"], s["status"]) for s in steps] == [("tool:a", "completed"), ("llm:0", "completed")]
    assert client.get(f"/api/runs/{rid}").json()["input_tokens"] == 6

    key = "llm:0/call:abc"  # step keys hold "/" and ":": one %2F-encoded path segment
    approval = Approval(run_id=rid, step_key=key, tool="send", args={"to": "x"},
                        args_hash=digest({"to": "x"})).model_dump(mode="json")
    requested = client.post(f"/api/runs/{rid}/approvals", json={"approval": approval, "epoch": 1})
    assert requested.status_code == 200 and requested.json()["status"] == "pending"
    assert client.get(f"/api/runs/{rid}").json()["status"] == "waiting"
    found = client.get(f"/api/runs/{rid}/approvals/llm%3A0%2Fcall%3Aabc").json()
    assert found["approval"]["id"] == approval["id"]
    assert client.get(f"/api/runs/{rid}/approvals/nothing").json() == {"approval": None}
    listed = client.get("/api/approvals", params={"run_id": rid, "status": "pending", "limit": 5}).json()
    assert [a["id"] for a in listed["approvals"]] == [approval["id"]]
    assert client.get(f"/api/approvals/{approval['id']}").json()["step_key"] == key
    before = time.time()
    decided = client.post(f"/api/approvals/{approval['id']}/decision", json={"approved": True, "by": "ann"})
    assert decided.status_code == 200
    assert decided.json()["status"] == "approved" and decided.json()["decided_at"] >= before  # server time

    cancelled = client.post(f"/api/runs/{rid}/cancel", json={"reason": "enough"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert store.get_run(rid).status == "cancelled"  # the server wrote to the store it was given


def test_ids_holding_slashes_stay_one_segment(client: httpx.Client) -> None:
    run = new_run(id="team/x/steps")
    assert client.post("/api/runs", json=run).status_code == 201
    assert client.get("/api/runs/team%2Fx%2Fsteps").json()["id"] == "team/x/steps"
    assert client.get("/api/runs/team%2Fx%2Fsteps/steps").json() == {"steps": []}
    problem(client.get("/api/runs/team/x"), 404, "TransportError")  # no such route


# ---- authentication ------------------------------------------------------------------------------
def test_missing_or_invalid_key_is_401(keyed: httpx.Client, store: SqliteStore) -> None:
    for headers in ({}, bearer("wrong-key"), {"Authorization": f"Basic {ADMIN}"}, {"Authorization": "Bearer"}):
        answer = keyed.post("/api/runs", json=new_run(), headers=headers)
        body = problem(answer, 401, "AuthError")
        assert answer.headers["www-authenticate"] == "Bearer"
        assert ADMIN not in answer.text and "wrong-key" not in answer.text
        assert body["title"] == "Unauthorized"
    problem(keyed.get("/openapi.json"), 401, "AuthError")
    problem(keyed.get("/metrics"), 401, "AuthError")
    problem(keyed.get("/api/nothing-here"), 401, "AuthError")  # no route discovery without a key
    assert keyed.get("/healthz").json() == {"status": "ok"}
    # a browser asks for /favicon.ico on every page: nothing there, and no refusal to count
    # (`agentspan_http_requests_total{status="401"}`: an auth-failure alert)
    assert keyed.get("/favicon.ico").status_code == 204
    assert store.list_runs() == []
    assert keyed.get("/openapi.json", headers=bearer(AGENT)).status_code == 200
    assert keyed.get("/api/runs", headers=bearer(AGENT)).json() == {"runs": []}


def test_agent_may_not_decide_but_approver_may(keyed: httpx.Client, store: SqliteStore) -> None:
    run = Run(framework="test", agent="a")
    store.create_run(run)
    store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 60)
    approval = store.request_approval(Approval(run_id=run.id, step_key="t:1", tool="x", args_hash="h"), epoch=1)
    url = f"/api/approvals/{approval.id}/decision"
    body = problem(keyed.post(url, json={"approved": True}, headers=bearer(AGENT)), 403, "AuthError")
    assert "approver" in body["detail"]
    assert store.get_approval(approval.id).status == "pending"
    # the agent key does everything else, e.g. reading the approval
    assert keyed.get(f"/api/approvals/{approval.id}", headers=bearer(AGENT)).status_code == 200
    decided = keyed.post(url, json={"approved": False, "reason": "no"}, headers=bearer(APPROVER))
    assert decided.status_code == 200 and decided.json()["status"] == "rejected"


@pytest.mark.parametrize(("change", "field"), [
    ({"status": "approved", "decided_by": "ops-team", "decided_at": 1.0}, "status"),  # a self-approval
    ({"reason": "fine"}, "reason"),
    ({"args_hash": digest({"order_id": "42", "amount": 1.0})}, "args_hash"),  # shown 1.0, runs with 30.0
])
def test_a_requested_approval_must_be_pending_and_bound_to_its_own_args(keyed: httpx.Client, store: SqliteStore,
                                                                        change, field) -> None:
    run = Run(framework="test", agent="a")
    store.create_run(run)
    store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 60)
    args = {"order_id": "42", "amount": 30.0}
    approval = Approval(run_id=run.id, step_key="t:1", tool="refund", args=args, args_hash=digest(args))
    body = {**approval.model_dump(mode="json"), **change}
    refused = keyed.post(f"/api/runs/{run.id}/approvals", json={"approval": body, "epoch": 1}, headers=bearer(AGENT))
    issues = problem(refused, 422, "ConfigurationError")["errors"]
    assert f"body.approval.{field}" in {issue["field"] for issue in issues}
    assert store.list_approvals(run_id=run.id) == []  # nothing stored
    requested = keyed.post(f"/api/runs/{run.id}/approvals", json={"approval": approval.model_dump(mode="json"),
                                                                  "epoch": 1}, headers=bearer(AGENT))
    assert requested.status_code == 200 and requested.json()["status"] == "pending"


def test_reopen_needs_the_role_of_cancel_and_refuses_a_run_that_did_not_fail(
    keyed: httpx.Client, store: SqliteStore
) -> None:
    failed, completed = Run(framework="test", agent="a"), Run(framework="test", agent="a")
    for run, status in ((failed, "failed"), (completed, "completed")):
        store.create_run(run)
        store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 60)
        store.update_run(run.id, epoch=1, status=status, error="boom", release_lease=True)
    reopen, cancel = (f"/api/runs/{failed.id}/{action}" for action in ("reopen", "cancel"))
    assert required_role({"path": reopen, "method": "POST"}) == required_role({"path": cancel, "method": "POST"})
    for headers in ({}, bearer("wrong-key"), bearer(AGENT), bearer(APPROVER), bearer(ADMIN)):
        reopened = keyed.post("/api/runs/no-such-run/reopen", json={}, headers=headers)
        cancelled = keyed.post("/api/runs/no-such-run/cancel", headers=headers)
        assert (reopened.status_code, reopened.json()["error"]) == (cancelled.status_code, cancelled.json()["error"])
    assert store.get_run(failed.id).status == "failed"
    expires = time.time() + 60
    body = {"owner": "w2", "lease_expires_at": expires, "options": {"agentspan.on_divergence": "live"}}
    answer = keyed.post(reopen, json=body, headers=bearer(AGENT))
    assert answer.status_code == 200, answer.text
    run = Run.model_validate(answer.json())
    assert (run.status, run.lease_owner, run.lease_expires_at, run.lease_epoch, run.error) == (
        "running", "w2", expires, 2, None
    )
    (retry,) = run.options.pop("agentspan.retries")  # the failure it was retried from, with the new owner
    assert (retry["error"], retry["owner"]) == ("boom", "w2")
    assert run.options == {"agentspan.on_divergence": "live"}
    assert store.get_run(failed.id) == run.model_copy(update={"options": {**run.options, "agentspan.retries": [retry]}})
    before = store.get_run(completed.id)
    url = f"/api/runs/{completed.id}/reopen"
    refused = problem(keyed.post(url, json={"owner": None, "lease_expires_at": None}, headers=bearer(AGENT)),
                      409, "RunStateError")  # fmt: skip
    assert f"run {completed.id!r} is completed" in refused["detail"]
    assert store.get_run(completed.id) == before


def test_keyring_sources_and_bad_roles(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# comment\nfile-key-1 approver\nfile-key-2:agent  # trailing\n\nfile-key-3\nfile#4 agent\n")
    ring = KeyRing.from_sources(
        ["cli-key", "cli-agent:agent"], keys_file, env={"AGENTSPAN_SERVER_KEYS": "e1:approver, e2"}
    )
    assert len(ring) == 8 and ring.role_of("file#4") == "agent"
    roles = {k: ring.role_of(k) for k in ("cli-key", "cli-agent", "file-key-1", "file-key-2", "file-key-3", "e1", "e2")}
    assert roles == {
        "cli-key": "admin", "cli-agent": "agent", "file-key-1": "approver", "file-key-2": "agent",
        "file-key-3": "admin", "e1": "approver", "e2": "admin",
    }  # fmt: skip
    assert ring.role_of("nope") is None and ring.role_of("cli-key:agent") is None
    assert "cli-key" not in repr(ring)
    for bad in (["secret-value:boss"], ["secret-value:"]):
        with pytest.raises(ConfigurationError) as info:
            KeyRing.from_sources(bad, env={})
        assert "secret-value" not in str(info.value) and "#1 of --api-key" in str(info.value)
    keys_file.write_text("secret-value superuser\n")
    with pytest.raises(ConfigurationError, match="line 1") as info:
        KeyRing.from_sources([], keys_file, env={})
    assert "secret-value" not in str(info.value)
    with pytest.raises(ConfigurationError, match="AGENTSPAN_SERVER_KEYS"):
        KeyRing.from_sources([], env={"AGENTSPAN_SERVER_KEYS": "k:root"})
    with pytest.raises(ConfigurationError, match="different role"):
        KeyRing.from_sources(["same:agent", "same:admin"], env={})


# ---- refusals ------------------------------------------------------------------------------------
def test_oversized_body_is_413_and_stores_nothing(client: httpx.Client, store: SqliteStore) -> None:
    big = new_run(input="x" * 5000)
    problem(client.post("/api/runs", json=big), 413, "ConfigurationError")  # by Content-Length

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        text = json.dumps(big).encode()
        for i in range(0, len(text), 1000):
            yield text[i : i + 1000]

    streamed = client.post("/api/runs", content=chunks(), headers={"Content-Type": "application/json"})
    problem(streamed, 413, "ConfigurationError")
    assert store.list_runs() == []
    assert client.post("/api/runs", json=new_run(input="x" * 1000)).status_code == 201  # under the limit


def test_malformed_json_is_400(client: httpx.Client, store: SqliteStore) -> None:
    headers = {"Content-Type": "application/json"}
    body = problem(client.post("/api/runs", content=b'{"framework": "x", ', headers=headers), 400, "ConfigurationError")
    assert "malformed JSON" in body["detail"]
    problem(client.post("/api/runs/r/claim", content=b"[1, 2", headers=headers), 400, "ConfigurationError")
    assert store.list_runs() == []


def test_a_server_without_keys_answers_only_requests_addressed_to_a_loopback_name(client: httpx.Client,
                                                                                  keyed: httpx.Client) -> None:
    """A web page of another site that a DNS rebinding pointed at 127.0.0.1 is its own origin
    there: its requests carry that site's name as ``Host``, and are refused (no key to guess)."""
    elsewhere = {"Host": "evil.example:6767"}
    body = problem(client.get("/api/runs", headers=elsewhere), 403, "HostNotAllowed")
    assert "loopback name" in body["detail"]
    problem(client.post("/api/approvals/a/decision", json={"approved": True}, headers=elsewhere), 403, "HostNotAllowed")
    problem(client.get("/metrics", headers=elsewhere), 403, "HostNotAllowed")
    assert client.get("/healthz", headers=elsewhere).status_code == 200
    for name in ("localhost:6767", "127.0.0.1", "[::1]:6767"):
        assert client.get("/api/runs", headers={"Host": name}).status_code == 200
    problem(keyed.get("/api/runs", headers=elsewhere), 401, "AuthError")  # with keys: the key decides


def test_invalid_values_are_422_naming_the_field(client: httpx.Client, store: SqliteStore) -> None:
    def fields(answer: httpx.Response) -> set[str]:
        return {e["field"] for e in problem(answer, 422, "ConfigurationError")["errors"]}

    assert "body.framework" in fields(client.post("/api/runs", json={"framework": 1, "agent": "a"}))
    assert "body.agent" in fields(client.post("/api/runs", json={"framework": "x"}))
    assert "body.surprise" in fields(client.post("/api/runs", json={**new_run(), "surprise": 1}))
    assert "body.id" in fields(client.post("/api/runs", json={**new_run(), "id": ""}))  # a run nothing could reach
    for dots in (".", ".."):  # /api/runs/.. is /api: no request could reach it either
        assert "body.id" in fields(client.post("/api/runs", json={**new_run(), "id": dots}))
    assert "body.step.key" in fields(
        client.post("/api/runs/r/steps/start", json={"step": {**step_json("r", "k", 0), "key": ""}, "epoch": 1}))
    assert "body.epoch" in fields(client.patch("/api/runs/r", json={"epoch": "one"}))
    assert "body.step.kind" in fields(
        client.post("/api/runs/r/steps/start", json={"step": {**step_json("r", "k", 0), "kind": "bogus"}, "epoch": 1})
    )
    assert "query.limit" in fields(client.get("/api/runs", params={"limit": -1}))
    assert "query.limit" in fields(client.get("/api/approvals", params={"limit": 1001}))
    assert "query.status" in fields(client.get("/api/runs", params={"status": "sleeping"}))
    assert "query.now" in fields(client.get("/api/claimable", params={"now": "nan"}))
    # beyond the models: what no backend can store or no answer can encode
    raw = {"Content-Type": "application/json"}
    assert "body.created_at" in fields(
        client.post("/api/runs", content=b'{"framework":"x","agent":"a","created_at":NaN}', headers=raw)
    )
    assert "body.agent" in fields(client.post("/api/runs", content=b'{"framework":"x","agent":"\\ud800"}', headers=raw))
    assert "body.input.k" in fields(client.post("/api/runs", json=new_run(input={"k": "a\x00b"})))
    assert "body.lease_epoch" in fields(client.post("/api/runs", json=new_run(lease_epoch=2**64)))
    deep: Any = 1
    for _ in range(150):
        deep = [deep]
    assert any(f.startswith("body.input") for f in fields(client.post("/api/runs", json=new_run(input=deep))))
    assert "path.run_id" in fields(client.get("/api/runs/a%00b"))
    # the path's run and the body's run must agree
    run = claimed(client, store)
    mismatch = client.post(f"/api/runs/{run.id}/steps/start", json={"step": step_json("other", "k", 0), "epoch": 1})
    assert "body.step.run_id" in fields(mismatch)
    assert [r.id for r in store.list_runs()] == [run.id] and store.list_steps(run.id) == []
    # counts and costs below zero (was: stored, and the run's totals went negative), a negative seq
    result = StepResult(status="completed").model_dump(mode="json")
    for field in ("input_tokens", "output_tokens", "cost_usd"):
        bad = {"step": step_json(run.id, "tool:t", 1), "result": {**result, field: -5}, "epoch": 1}
        assert f"body.result.{field}" in fields(client.post(f"/api/runs/{run.id}/steps/record", json=bad))
    bad_seq = {"step": {**step_json(run.id, "tool:t", 1), "seq": -5}, "epoch": 1}
    assert "body.step.seq" in fields(client.post(f"/api/runs/{run.id}/steps/start", json=bad_seq))
    assert store.list_steps(run.id) == [] and store.get_run(run.id).input_tokens == 0


def test_unknown_ids_are_404(client: httpx.Client) -> None:
    body = problem(client.get("/api/runs/no-such-run"), 404, "RunNotFound")
    assert body["run_id"] == "no-such-run"
    problem(client.get("/api/runs/no-such-run/steps"), 404, "RunNotFound")
    problem(client.patch("/api/runs/no-such-run", json={"epoch": 0}), 404, "RunNotFound")
    problem(client.post("/api/runs/no-such-run/cancel"), 404, "RunNotFound")
    assert problem(client.get("/api/approvals/nope"), 404, "ApprovalNotFound")["approval_id"] == "nope"
    problem(client.post("/api/approvals/nope/decision", json={"approved": True}), 404, "ApprovalNotFound")
    problem(client.get("/api/no/such/endpoint"), 404, "TransportError")
    problem(client.delete("/api/runs"), 405, "TransportError")


def test_stale_epoch_is_409_and_writes_nothing(client: httpx.Client, store: SqliteStore) -> None:
    run = claimed(client, store)
    before = store.get_run(run.id)
    problem(client.patch(f"/api/runs/{run.id}", json={"epoch": 0, "status": "completed"}), 409, "LeaseLostError")
    start = {"step": step_json(run.id, "tool:a", 0), "epoch": 0}
    problem(client.post(f"/api/runs/{run.id}/steps/start", json=start), 409, "LeaseLostError")
    result = StepResult(status="completed").model_dump(mode="json")
    record = {"step": step_json(run.id, "tool:b", 0), "result": result, "epoch": 7}
    problem(client.post(f"/api/runs/{run.id}/steps/record", json=record), 409, "LeaseLostError")
    lost = {"owner": "w2", "expected_epoch": 0, "lease_expires_at": time.time() + 60}
    problem(client.post(f"/api/runs/{run.id}/claim", json=lost), 409, "LeaseLostError")
    assert store.get_run(run.id) == before and store.list_steps(run.id) == []
    finish = {"key": "tool:zz", "result": result, "epoch": 1}
    problem(client.post(f"/api/runs/{run.id}/steps/finish", json=finish), 404, "StepNotFound")
    assert store.get_run(run.id).input_tokens == 0


def test_an_expired_approval_is_not_decided_by_sending_an_earlier_decided_at(client: httpx.Client,
                                                                            store: SqliteStore) -> None:
    """Expiry is read on the server's clock (was: an approver sending ``decided_at`` from before the
    deadline decided an approval past it)."""
    run = claimed(client, store)
    approval = Approval(run_id=run.id, step_key="t:1", tool="x", args_hash=digest(None),
                        expires_at=time.time() - 1).model_dump(mode="json")
    assert client.post(f"/api/runs/{run.id}/approvals", json={"approval": approval, "epoch": 1}).status_code == 200
    url = f"/api/approvals/{approval['id']}/decision"
    body = problem(client.post(url, json={"approved": True, "by": "a", "decided_at": time.time() - 100}), 409,
                   "ApprovalConflict")
    assert "expired" in body["detail"]
    assert store.get_approval(approval["id"]).status is not ApprovalStatus.APPROVED


def test_double_decision_is_409(client: httpx.Client, store: SqliteStore) -> None:
    run = claimed(client, store)
    approval = Approval(run_id=run.id, step_key="t:1", tool="x", args_hash=digest(None)).model_dump(mode="json")
    assert client.post(f"/api/runs/{run.id}/approvals", json={"approval": approval, "epoch": 1}).status_code == 200
    url = f"/api/approvals/{approval['id']}/decision"
    assert client.post(url, json={"approved": True, "by": "a", "decided_at": 123.0}).json()["decided_at"] == 123.0
    problem(client.post(url, json={"approved": False, "by": "b"}), 409, "ApprovalConflict")
    stored = store.get_approval(approval["id"])
    assert (stored.status, stored.decided_by, stored.decided_at) == ("approved", "a", 123.0)
    assert client.post(f"/api/runs/{run.id}/cancel").status_code == 200
    problem(client.post(f"/api/runs/{run.id}/cancel"), 409, "RunStateError")


# ---- operations ----------------------------------------------------------------------------------
def test_metrics_show_run_gauges_and_step_counters(client: httpx.Client, store: SqliteStore) -> None:
    run = claimed(client, store)
    client.patch(f"/api/runs/{run.id}", json={"epoch": 1, "status": "running"})
    client.post("/api/runs", json=new_run())
    client.post(f"/api/runs/{run.id}/steps/start", json={"step": step_json(run.id, "tool:a", 0), "epoch": 1})
    done = StepResult(status="completed", duration_ms=12.5, input_tokens=10, output_tokens=4, cost_usd=0.5)
    client.post(
        f"/api/runs/{run.id}/steps/finish", json={"key": "tool:a", "result": done.model_dump(mode="json"), "epoch": 1}
    )
    text = client.get("/metrics").text
    assert 'agentspan_runs{status="running"} 1.0' in text and 'agentspan_runs{status="pending"} 1.0' in text
    assert 'agentspan_steps_total{kind="tool",status="started"} 1.0' in text
    assert 'agentspan_steps_total{kind="tool",status="completed"} 1.0' in text
    assert 'agentspan_step_duration_seconds_count{kind="tool"} 1.0' in text
    assert 'agentspan_tokens_total{direction="input"} 10.0' in text and "agentspan_cost_usd_total 0.5" in text
    assert "agentspan_pending_approvals 0.0" in text
    assert 'route="/api/runs/{run_id}/steps/start",status="204"' in text
    # an approval past its deadline is expired, as the UI and every decision read it, not pending
    for key, deadline in (("t:1", None), ("t:2", time.time() - 1)):
        approval = Approval(run_id=run.id, step_key=key, tool="x", args_hash=digest(None), expires_at=deadline)
        client.post(f"/api/runs/{run.id}/approvals", json={"approval": approval.model_dump(mode="json"), "epoch": 1})
    assert "agentspan_pending_approvals 1.0" in client.get("/metrics").text


def test_openapi_lists_the_api(keyed: httpx.Client) -> None:
    schema = json.loads(keyed.get("/openapi.json", headers=bearer(ADMIN)).text)
    paths = set(schema["paths"])
    assert {
        "/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/cancel", "/api/runs/prune", "/api/runs/{run_id}/claim",
        "/api/runs/{run_id}/reopen",
        "/api/runs/{run_id}/lease", "/api/claimable", "/api/runs/{run_id}/steps/start",
        "/api/runs/{run_id}/steps/finish", "/api/runs/{run_id}/steps/record", "/api/runs/{run_id}/steps",
        "/api/runs/{run_id}/steps/supersede",
        "/api/runs/{run_id}/approvals", "/api/runs/{run_id}/approvals/{step_key}", "/api/approvals",
        "/api/approvals/{approval_id}", "/api/approvals/{approval_id}/decision",
        "/api/approvals/{approval_id}/announcement", "/api/checkpoints",
        "/api/checkpoints/writes", "/api/checkpoints/with-writes", "/api/checkpoints/find", "/api/checkpoints/search",
        "/api/checkpoints/copy",
        "/api/checkpoints/delete", "/api/checkpoints/delete-for-runs", "/api/checkpoints/prune",
    } <= paths  # fmt: skip
    assert "Problem" in schema["components"]["schemas"]
    assert schema["security"] == [{"apiKey": []}] and schema["paths"]["/healthz"]["get"]["security"] == []
    operations = [result.ok() for result in schemathesis.openapi.from_dict(schema).get_all_operations()]
    assert len(operations) == 32  # a valid OpenAPI document: every operation loads


class _BuggyStore(SqliteStore):
    def get_run(self, run_id: str) -> Run:
        raise RuntimeError("internal detail that must not leak")


def test_store_failures_are_problems(tmp_path: Path) -> None:
    broken = SqliteStore(tmp_path / "gone.db")
    broken.close()
    with serving(create_app(broken)) as url:
        problem(httpx.get(f"{url}/healthz"), 503, "StoreError")
        problem(httpx.get(f"{url}/api/runs"), 503, "StoreError")
        problem(httpx.get(f"{url}/metrics"), 503, "StoreError")
    buggy = _BuggyStore(tmp_path / "buggy.db")
    with serving(create_app(buggy)) as url:
        answer = httpx.get(f"{url}/api/runs/r1")
        problem(answer, 500, "TransportError")
        assert "must not leak" not in answer.text
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    buggy.close()


def test_serve_refuses_open_non_loopback_and_masks_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTSPAN_SERVER_KEYS", raising=False)
    with pytest.raises(ConfigurationError, match="without API keys"):
        serve(str(tmp_path / "x.db"), "0.0.0.0", 6767, [], None, 1000)
    assert not (tmp_path / "x.db").exists()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    assert (
        mask_url("postgresql://ann:s3cret@db.example:5432/agentspan")
        == "postgresql://ann:***@db.example:5432/agentspan"
    )
    store, described = open_store(f"sqlite:///{tmp_path}/y.db")
    store.close()
    assert described == f"sqlite {tmp_path}/y.db" and (tmp_path / "y.db").exists()
    with pytest.raises(ConfigurationError, match="scheme"):
        open_store("mysql://x/y")


# ---- fuzzing -------------------------------------------------------------------------------------
def _seed(store: SqliteStore) -> dict[str, str]:
    """A claimed run (epoch 1) with a started step and a pending approval: ids fuzzing can hit."""
    run = Run(framework="fuzz", agent="agent-a", input={"q": 1})
    store.create_run(run)
    store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 600)
    store.start_step(Step(run_id=run.id, key="tool:0", seq=0, kind="tool"), epoch=1)
    approval = store.request_approval(Approval(run_id=run.id, step_key="tool:1", tool="t", args_hash="h"), epoch=1)
    return {"run_id": run.id, "approval_id": approval.id, "step_key": "tool:1"}


def _aim(case: Any, ids: dict[str, str]) -> None:
    """Points a generated write at the seeded run (the body's run ids must match the path's)."""
    body = case.body if isinstance(case.body, dict) else {}
    for part in ("step", "approval"):
        if isinstance(body.get(part), dict):
            body[part]["run_id"] = ids["run_id"]
    if isinstance(body.get("epoch"), int) and body["epoch"] % 2:
        body["epoch"] = 1  # half of the fenced writes carry the current epoch


def _fuzz(strategy: Any, session: requests.Session, aim_at: dict[str, str] | None) -> None:
    @given(case=strategy)
    @settings(max_examples=25, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        if aim_at is not None:
            _aim(case, aim_at)
        case.call_and_validate(session=session, checks=[not_a_server_error])

    fuzz()


def test_fuzz_no_server_errors(store: SqliteStore) -> None:
    """Schemathesis: valid and invalid requests to every operation; none may answer 5xx.

    Each operation gets 25 valid and 25 invalid requests with random ids, then 25 valid requests
    aimed at a freshly seeded run and approval (so fenced writes, decisions and cancellations
    reach the store). Hypothesis is driven per operation here, rather than through schemathesis'
    pytest plugin, so the schema comes from the real server this test starts.
    """
    failures: list[str] = []
    with serving(create_app(store, max_body_bytes=65_536)) as url, requests.Session() as session:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 32
        for operation in operations:
            names = {p.name for p in operation.path_parameters}
            ids = _seed(store)
            passes = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
            if names:
                passes.append((GenerationMode.POSITIVE, {n: ids[n] for n in names}))
            for mode, path_parameters in passes:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
                try:
                    _fuzz(strategy, session, ids if path_parameters else None)
                except Unsatisfiable:  # nothing to make invalid (plain-string path ids, no parameters)
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except Exception as exc:  # collect them all, then report
                    aimed = " at seeded ids" if path_parameters else ""
                    failures.append(f"{operation.label} [{mode.value}{aimed}]: {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ('"\\u0000"', "string_nul"),
        ('"a\\ud800b"', None),  # a lone surrogate inside a JSON value is kept (stored as its escape)
        ("NaN", "float_finite"),
        ("-Infinity", "float_finite"),
        ("1e999", "float_finite"),
        ("123456789012345678901234567890", None),  # a JSON int beyond 64 bits inside a JSON value is kept
    ],
)
def test_step_writes_check_values_before_the_store(client: httpx.Client, store: SqliteStore, token, kind):
    """NUL and non-finite numbers inside a step's JSON are refused; nothing is written. A lone
    surrogate there is kept: the stores hold it as its JSON escape (`agentspan.jsontext`)."""
    run, _ = store.create_run(Run(framework="t", agent="a", input=None))
    store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 60)
    step = {"run_id": run.id, "key": "k", "seq": 0, "kind": "tool", "attempt": 1, "started_at": 1.0,
            "status": "started"}
    result = '{"status": "completed", "output": {"v": ' + token + "}}"
    text = '{"step": ' + json.dumps(step) + ', "result": ' + result + ', "epoch": 1}'
    answer = client.post(f"/api/runs/{run.id}/steps/record", content=text,
                         headers={"Content-Type": "application/json"})
    if kind is None:
        assert answer.status_code == 204, answer.text
        assert store.list_steps(run.id)[0].output == {"v": json.loads(token)}
    else:
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["type"] == kind
        assert store.list_steps(run.id) == []
