"""Slack approvals (`agentspan_server.slack`) against a fake Slack Web API, both over real HTTP.

The fake (a Starlette app under uvicorn) records ``chat.postMessage`` calls and the posts to the
interaction payloads' ``response_url``; the Agentspan server runs over a SQLite store. Interaction
requests are signed here, independently of the server's code, as Slack signs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agentspan.errors import ConfigurationError, StoreError
from agentspan.hashing import digest
from agentspan.records import Approval, Run
from agentspan.stores.sqlite import SqliteStore
from agentspan_server.app import create_app
from agentspan_server.auth import KeyRing
from agentspan_server.main import serve
from agentspan_server.slack import SlackSettings, approval_blocks

from server_support import free_port, thread_server

TOKEN, SECRET, CHANNEL = "xoxb-test-token-5f3e9a", "signing-secret-8c1d", "C0APPROVALS"
ALICE, BOB, MALLORY = "UALICE01", "UBOB0002", "UMALLORY9"
SCRIPT = "<script>alert('x') & <!channel></script>"
ADMIN, AGENT = "slack-admin-key-0123456789", "slack-agent-key-0123456789"
KEYS = KeyRing([(ADMIN, "admin"), (AGENT, "agent")])


# ---- the fake Slack -----------------------------------------------------------------------------
@dataclass
class FakeSlack:
    """Records what the server sends to Slack; ``answer``/``delay`` shape ``chat.postMessage``'s reply."""

    answer: dict[str, Any] = field(default_factory=lambda: {"ok": True, "ts": "1.0"})
    delay: float = 0.0
    messages: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def app(self) -> Starlette:
        async def post_message(request: Request) -> Response:
            self.messages.append((dict(request.headers), await request.json()))
            await asyncio.sleep(self.delay)
            return JSONResponse(self.answer)

        async def respond(request: Request) -> Response:
            self.replies.append(await request.json())
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/api/chat.postMessage", post_message, methods=["POST"]),
                                 Route("/respond", respond, methods=["POST"])])  # fmt: skip


@dataclass
class Agentspan:
    http: httpx.Client
    store: SqliteStore
    app: Any
    fake: FakeSlack

    def settle(self) -> None:
        """Waits until the server's background calls to Slack are done."""
        wait_for(lambda: self.app.state.slack.in_flight == 0)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def settings(api_url: str, **changes: Any) -> SlackSettings:
    values: dict[str, Any] = {"bot_token": TOKEN, "channel": CHANNEL, "signing_secret": SECRET,
                              "approvers": frozenset({ALICE, BOB}), "api_url": api_url}  # fmt: skip
    return SlackSettings(**{**values, **changes})


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack()
    with thread_server(slack.app()) as url:
        slack.url = url
        yield slack


@contextmanager
def agentspan(tmp_path: Path, fake: FakeSlack, *, api_url: str | None = None, **app_args: Any) -> Iterator[Agentspan]:
    """An Agentspan server with Slack approvals pointed at ``fake`` (or at ``api_url``)."""
    store = SqliteStore(tmp_path / "slack.db")
    app = create_app(store, slack=settings(api_url or f"{fake.url}/api"), **app_args)
    app.state.slack.retry_delays = (0.01, 0.02)  # a failed post is tried again, quickly here
    try:
        with thread_server(app) as url, httpx.Client(base_url=url, timeout=10) as http:
            yield Agentspan(http, store, app, fake)
    finally:
        store.close()


@pytest.fixture
def server(tmp_path: Path, fake: FakeSlack) -> Iterator[Agentspan]:
    with agentspan(tmp_path, fake) as served:
        yield served


def claimed(http: httpx.Client, headers: dict[str, str] | None = None) -> Run:
    """A run created and claimed (epoch 1) over HTTP."""
    run = Run(framework="test", agent="mailer")
    assert http.post("/api/runs", json=run.model_dump(mode="json"), headers=headers).status_code == 201
    body = {"owner": "w1", "expected_epoch": 0, "lease_expires_at": time.time() + 60}
    assert http.post(f"/api/runs/{run.id}/claim", json=body, headers=headers).status_code == 200
    return run


def request(http: httpx.Client, approval: Approval, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Requests an approval over HTTP; returns the approval the server answered with."""
    body = {"approval": approval.model_dump(mode="json"), "epoch": 1}
    answer = http.post(f"/api/runs/{approval.run_id}/approvals", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def new_approval(run: Run, key: str = "tool:send_email:0", **fields: Any) -> Approval:
    fields.setdefault("args", {"to": "ann@example.com", "body": SCRIPT})
    return Approval(run_id=run.id, step_key=key, tool=fields.pop("tool", "send_email"),
                    args_hash=digest(fields["args"]), **fields)


def signature(body: bytes, timestamp: str, secret: str = SECRET) -> str:
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def click(
    served: Agentspan,
    approval_id: str,
    *,
    user: str = ALICE,
    name: dict[str, str] | None = None,
    action: str = "agentspan_approve",
    secret: str = SECRET,
    age: float = 0,
    payload: Any = None,
    headers: dict[str, str] | None = None,
    path: str = "/slack/interactions",
) -> httpx.Response:
    """POSTs a signed ``block_actions`` interaction, as Slack sends a button click."""
    if payload is None:
        payload = {"type": "block_actions", "user": {"id": user, **(name or {"username": "alice"})},
                   "actions": [{"action_id": action, "value": approval_id, "type": "button"}],
                   "response_url": f"{served.fake.url}/respond", "team": {"id": "T1"}}  # fmt: skip
    body = payload if isinstance(payload, bytes) else urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time() - age))
    sent = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature(body, timestamp, secret),
            "Content-Type": "application/x-www-form-urlencoded", **(headers or {})}  # fmt: skip
    return served.http.post(path, content=body, headers=sent)


# ---- posting approvals ----------------------------------------------------------------------------
def test_a_new_approval_is_posted_once(server: Agentspan) -> None:
    run = claimed(server.http)
    approval = request(server.http, new_approval(run))
    server.settle()
    assert len(server.fake.messages) == 1
    headers, message = server.fake.messages[0]
    assert headers["authorization"] == f"Bearer {TOKEN}" and message["channel"] == CHANNEL
    shown = json.dumps(message, ensure_ascii=False)
    for text in ("send_email", run.id, "tool:send_email:0", "ann@example.com"):
        assert text in shown
    assert "&lt;script&gt;alert('x') &amp; &lt;!channel&gt;&lt;/script&gt;" in shown
    assert "<" not in shown and ">" not in shown  # nothing user-supplied reaches Slack unescaped
    assert "send_email" in message["text"]
    buttons = [b for b in message["blocks"] if b["type"] == "actions"][0]["elements"]
    assert [(b["action_id"], b["value"], b["style"]) for b in buttons] == [
        ("agentspan_approve", approval["id"], "primary"), ("agentspan_reject", approval["id"], "danger")
    ]  # fmt: skip

    again = request(server.http, new_approval(run))  # the same step: the existing approval comes back
    assert again["id"] == approval["id"]
    request(server.http, Approval.model_validate(approval))  # a retry of the very same request
    elsewhere = server.store.request_approval(new_approval(run, "tool:send_email:9"), epoch=1)  # not via the server
    assert request(server.http, new_approval(run, "tool:send_email:9"))["id"] == elsewhere.id
    server.settle()
    assert len(server.fake.messages) == 1
    other = request(server.http, new_approval(run, "tool:send_email:1"))
    server.settle()
    assert [m["blocks"][-1]["elements"][0]["value"] for _, m in server.fake.messages] == [approval["id"], other["id"]]


def test_replicas_sharing_the_store_post_an_approval_once(tmp_path: Path, fake: FakeSlack) -> None:
    with agentspan(tmp_path, fake) as first, agentspan(tmp_path, fake) as second:
        run = claimed(first.http)
        approval = new_approval(run)
        request(first.http, approval)
        first.settle()
        request(second.http, approval)  # the agent's retry of the same request reached the other replica
        second.settle()
        assert len(fake.messages) == 1
        other = request(second.http, new_approval(run, "tool:send_email:1"))  # a new one: whichever replica
        second.settle()
        assert len(fake.messages) == 2 and fake.messages[1][1]["blocks"][-1]["elements"][0]["value"] == other["id"]
    with agentspan(tmp_path, fake) as restarted:  # a new server process: it knows the first was posted
        request(restarted.http, approval)
        restarted.settle()
    assert len(fake.messages) == 2


def test_a_store_that_cannot_record_the_claim_still_posts(
    server: Agentspan, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(approval_id: str, *, claimant: str) -> bool:
        raise StoreError("disk I/O error")

    monkeypatch.setattr(server.store, "claim_announcement", broken)
    run = claimed(server.http)
    with caplog.at_level(logging.WARNING, logger="agentspan"):
        request(server.http, new_approval(run))
        server.settle()
    assert len(server.fake.messages) == 1
    assert "claiming the announcement of approval" in caplog.text and "posting it anyway" in caplog.text


def test_long_arguments_are_clipped() -> None:
    blocks = approval_blocks(Approval(run_id="r", step_key="k", tool="t", args={"x": "<" * 10_000}, args_hash="h"))
    text = blocks[1]["text"]["text"]
    assert len(text) < 3000 and "(clipped)" in text and "&lt;" in text and "<" not in text
    assert "see the full arguments in the web UI (`/ui/runs/r`)" in blocks[-1]["elements"][0]["text"]


def test_a_question_to_run_an_interrupted_call_again_says_so() -> None:
    """``on_in_doubt="ask"``: the approver learns the call ran (in part) before deciding."""
    def facts(step_key: str) -> str:
        approval = Approval(run_id="r", step_key=step_key, tool="t", args={}, args_hash="h")
        return approval_blocks(approval)[0]["text"]["text"]

    assert "may have taken effect" in facts("llm:0/call:c1/in-doubt:1")
    assert "may have taken effect" not in facts("llm:0/call:c1")


# ---- deciding from Slack ------------------------------------------------------------------------
def test_approve_and_reject_from_slack(server: Agentspan) -> None:
    run = claimed(server.http)
    send, wire = request(server.http, new_approval(run)), request(server.http, new_approval(run, "tool:wire:1"))
    answer = click(server, send["id"])
    assert answer.status_code == 200
    decided = server.store.get_approval(send["id"])
    assert (decided.status, decided.decided_by, decided.reason) == ("approved", f"slack:alice ({ALICE})", None)
    server.settle()
    assert len(server.fake.replies) == 1
    update = server.fake.replies[0]
    assert update["replace_original"] is True and "Approved by alice" in update["text"]
    assert all(b["type"] != "actions" for b in update["blocks"])  # the buttons are gone
    assert "Approved" in json.dumps(update["blocks"]) and "&lt;script&gt;" in json.dumps(update["blocks"])

    answer = click(server, wire["id"], user=BOB, name={"name": "bob"}, action="agentspan_reject")
    assert answer.status_code == 200
    rejected = server.store.get_approval(wire["id"])
    assert (rejected.status, rejected.decided_by) == ("rejected", f"slack:bob ({BOB})")
    assert rejected.reason == f"rejected in Slack by bob ({BOB})"
    server.settle()
    assert server.fake.replies[1]["replace_original"] is True and "Rejected by bob" in server.fake.replies[1]["text"]


def test_bad_or_stale_signatures_are_refused(server: Agentspan) -> None:
    run = claimed(server.http)
    approval = request(server.http, new_approval(run))
    refused = [
        click(server, approval["id"], secret="wrong-secret"),
        click(server, approval["id"], age=600),  # correctly signed, 10 minutes old
        click(server, approval["id"], age=-600),  # from the future
        click(server, approval["id"], headers={"X-Slack-Signature": "v0=" + "0" * 64}),
        server.http.post("/slack/interactions", content=b"payload=%7B%7D"),  # no signature at all
    ]
    assert [r.status_code for r in refused] == [401] * 5
    assert all(r.json()["error"] == "AuthError" for r in refused)
    server.settle()
    assert server.store.get_approval(approval["id"]).status == "pending" and server.fake.replies == []


def test_only_approvers_decide(server: Agentspan) -> None:
    run = claimed(server.http)
    approval = request(server.http, new_approval(run))
    assert click(server, approval["id"], user=MALLORY, name={"username": "alice"}).status_code == 200
    assert server.store.get_approval(approval["id"]).status == "pending"
    server.settle()
    [reply] = server.fake.replies
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
    assert "not an Agentspan approver" in reply["text"]


def test_a_decision_is_final(server: Agentspan) -> None:
    run = claimed(server.http)
    approval = request(server.http, new_approval(run))
    assert click(server, approval["id"]).status_code == 200
    server.settle()
    second = click(server, approval["id"], user=BOB, name={"username": "bob"}, action="agentspan_reject")
    assert second.status_code == 200
    stored = server.store.get_approval(approval["id"])
    assert (stored.status, stored.decided_by) == ("approved", f"slack:alice ({ALICE})")
    server.settle()
    reply = server.fake.replies[1]
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
    assert f"already approved by slack:alice ({ALICE})" in reply["text"]


def test_an_expired_approval_is_not_decided(server: Agentspan) -> None:
    run = claimed(server.http)
    approval = request(server.http, new_approval(run, expires_at=time.time() - 1))
    assert click(server, approval["id"]).status_code == 200
    assert server.store.get_approval(approval["id"]).status == "pending"  # pending past its deadline: expired
    server.settle()
    assert "expired" in server.fake.replies[0]["text"] and server.fake.replies[0]["replace_original"] is False


def test_malformed_payloads(server: Agentspan) -> None:
    run = claimed(server.http)
    approval = request(server.http, new_approval(run))
    assert click(server, approval["id"], payload=b"nothing=here").status_code == 400
    assert click(server, approval["id"], payload=b"payload=not-json").status_code == 400
    assert click(server, approval["id"], payload=b"payload=%FF%FE").status_code == 400
    assert click(server, approval["id"], payload=b"payload=" + b"%5B" * 100_000).status_code == 400  # was a 500
    no_user = {"type": "block_actions", "actions": [{"action_id": "agentspan_approve", "value": approval["id"]}],
               "response_url": f"{server.fake.url}/respond"}  # fmt: skip
    assert click(server, approval["id"], payload=no_user).status_code == 400
    assert click(server, approval["id"], payload={"type": "view_submission", "user": {"id": ALICE}}).status_code == 200
    server.settle()
    assert server.store.get_approval(approval["id"]).status == "pending" and server.fake.replies == []


# ---- Slack failures -------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", ["refused", "down"])
def test_a_slack_failure_never_fails_the_api(
    tmp_path: Path, fake: FakeSlack, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.answer, fake.delay = {"ok": False, "error": "channel_not_found"}, 2.0
    api_url = f"http://127.0.0.1:{free_port()}/api" if failure == "down" else None
    with agentspan(tmp_path, fake, api_url=api_url) as served:
        run = claimed(served.http)
        started = time.monotonic()
        approval = request(served.http, new_approval(run))
        assert time.monotonic() - started < 1.0  # not waiting for Slack (which takes 2 s to answer)
        assert served.store.get_approval(approval["id"]).status == "pending"
        served.settle()
    warnings = [r for r in caplog.records if r.name == "agentspan" and r.levelno == logging.WARNING
                and approval["id"] in r.getMessage()]  # (a thread an earlier test left may log too)
    assert len(warnings) == 1
    if failure == "refused":
        assert len(fake.messages) == 1 and "channel_not_found" in warnings[0].getMessage()
    else:
        assert fake.messages == []
    assert all(TOKEN not in r.getMessage() and TOKEN not in str(r.args) for r in caplog.records)
    assert TOKEN not in caplog.text


# ---- access -------------------------------------------------------------------------------------
def test_interactions_need_a_signature_not_a_key(tmp_path: Path, fake: FakeSlack) -> None:
    agent = {"Authorization": f"Bearer {AGENT}"}
    with agentspan(tmp_path, fake, keys=KEYS) as served:
        run = claimed(served.http, agent)
        approval = request(served.http, new_approval(run), agent)
        assert served.http.get("/api/approvals").status_code == 401  # other endpoints still need a key
        assert served.http.get("/api/approvals", headers=agent).status_code == 200
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert click(served, approval["id"], secret="wrong", headers=admin).status_code == 401  # a key is no signature
        assert click(served, approval["id"], path="/slack/interactions/").status_code == 401  # only the one path
        assert served.store.get_approval(approval["id"]).status == "pending"
        assert click(served, approval["id"]).status_code == 200  # no key, a valid signature
        assert served.store.get_approval(approval["id"]).decided_by == f"slack:alice ({ALICE})"
        assert not any("slack" in p for p in served.http.get("/openapi.json", headers=admin).json()["paths"])


def test_without_slack_there_is_no_route(tmp_path: Path, fake: FakeSlack) -> None:
    store = SqliteStore(tmp_path / "plain.db")
    try:
        for keys, headers in ((None, {}), (KEYS, {"Authorization": f"Bearer {ADMIN}"})):
            app = create_app(store, keys=keys)
            with thread_server(app) as url, httpx.Client(base_url=url) as http:
                served = Agentspan(http, store, app, fake)
                run = claimed(http, headers)
                approval = request(http, new_approval(run), headers)
                assert click(served, approval["id"], headers=headers).status_code == 404
        assert fake.messages == [] and not hasattr(app.state, "slack")
    finally:
        store.close()


# ---- settings -----------------------------------------------------------------------------------
def test_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = {"AGENTSPAN_SLACK_BOT_TOKEN": TOKEN, "AGENTSPAN_SLACK_CHANNEL": CHANNEL,
            "AGENTSPAN_SLACK_SIGNING_SECRET": SECRET, "AGENTSPAN_SLACK_APPROVERS": f" {ALICE}, {BOB} ,"}  # fmt: skip
    assert SlackSettings.from_env({}) is None
    read = SlackSettings.from_env(full)
    assert read is not None and read.approvers == {ALICE, BOB} and read.api_url == "https://slack.com/api"
    assert TOKEN not in repr(read) and SECRET not in repr(read)
    fake_api = SlackSettings.from_env({**full, "AGENTSPAN_SLACK_API_URL": "http://127.0.0.1:9/api/"})
    assert fake_api is not None and fake_api.api_url == "http://127.0.0.1:9/api"
    for missing in ("AGENTSPAN_SLACK_SIGNING_SECRET", "AGENTSPAN_SLACK_APPROVERS", "AGENTSPAN_SLACK_CHANNEL"):
        with pytest.raises(ConfigurationError, match=missing) as caught:
            SlackSettings.from_env({k: v for k, v in full.items() if k != missing})
        assert TOKEN not in str(caught.value) and SECRET not in str(caught.value)
    with pytest.raises(ConfigurationError, match="AGENTSPAN_SLACK_APPROVERS"):
        SlackSettings.from_env({**full, "AGENTSPAN_SLACK_APPROVERS": " , "})
    with pytest.raises(ConfigurationError, match="user ids"):
        SlackSettings.from_env({**full, "AGENTSPAN_SLACK_APPROVERS": "alice"})
    with pytest.raises(ConfigurationError, match="AGENTSPAN_SLACK_API_URL"):
        SlackSettings.from_env({**full, "AGENTSPAN_SLACK_API_URL": "slack.com"})

    # `agentspan server start` refuses to start on an incomplete configuration.
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("the server started"))
    for name in ("AGENTSPAN_SLACK_BOT_TOKEN", "AGENTSPAN_SLACK_SIGNING_SECRET", "AGENTSPAN_SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENTSPAN_SLACK_CHANNEL", CHANNEL)
    monkeypatch.setenv("AGENTSPAN_SLACK_APPROVERS", ALICE)
    with pytest.raises(ConfigurationError, match="AGENTSPAN_SLACK_BOT_TOKEN, AGENTSPAN_SLACK_SIGNING_SECRET"):
        serve(str(tmp_path / "s.db"), "127.0.0.1", free_port(), [], None, 1_048_576)
