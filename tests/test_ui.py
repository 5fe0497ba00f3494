"""The web UI (`agentspan_server.ui`) in a real Chromium (Playwright) against a real uvicorn server.

Each test seeds a SQLite store through the store API, serves `create_app` over it in a thread and
drives Debian's Chromium headless (never a downloaded browser) or plain httpx: the runs list, the
run's audit trail, escaping, approving and rejecting from the browser, login sessions with roles,
CSRF tokens, and the redirects, error pages and security headers.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from agentspan.approvals import effective_status
from agentspan.records import Approval, ApprovalStatus, Run, RunStatus, StepKind, StepResult, StepStatus
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import make_approval, make_run, make_step
from agentspan_server.app import create_app
from agentspan_server.auth import KeyRing
from agentspan_server.ui.render import CSP
from agentspan_server.ui.session import SESSION_COOKIE, Signer

from server_support import thread_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ADMIN, AGENT, APPROVER = "ui-admin-key-0123456789", "ui-agent-key-0123456789", "ui-approver-key-0123456789"
KEYS = KeyRing([(ADMIN, "admin"), (AGENT, "agent"), (APPROVER, "approver")])
SCRIPT = "<script>alert(1)</script>"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "s.db")
    yield store
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Debian Chromium for the module (skipped without it, except on CI)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing on CI: .ci/run installs the Debian chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) and page; dialogs are recorded on ``page.dialogs``."""
    context = browser.new_context()
    context.set_default_timeout(5000)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    yield page
    context.close()


# ---- seeding ----------------------------------------------------------------------------------------
def seed(store: SqliteStore, **fields: Any) -> tuple[Run, list[Approval]]:
    """A waiting run with three journaled steps (written out of seq order) and two pending approvals."""
    fields.setdefault("framework", "openai-agents")
    fields.setdefault("agent", "mailer")
    run, _ = store.create_run(make_run(**fields))
    store.claim_run(run.id, owner="w1", expected_epoch=0, lease_expires_at=time.time() + 60)
    store.record_step(
        make_step(run.id, "tool:notify:2", 2, name="notify", input={"to": "ops"}),
        StepResult(status=StepStatus.FAILED, error="boom: <b>failed</b>", duration_ms=3),
        epoch=1,
    )
    store.record_step(
        make_step(run.id, "llm:0", 0, kind=StepKind.LLM, name="model", input={"messages": ["x" * 400]}),
        StepResult(status=StepStatus.COMPLETED, output={"text": "call lookup"}, provider="openai", model="gpt-test",
                   input_tokens=1200, output_tokens=34, cost_usd=0.0125, duration_ms=812),
        epoch=1,
    )  # fmt: skip
    store.record_step(
        make_step(run.id, "tool:lookup:1", 1, name="lookup", input={"q": "weather"}),
        StepResult(status=StepStatus.COMPLETED, output=SCRIPT, duration_ms=4.5),
        epoch=1,
    )
    approvals = [
        store.request_approval(make_approval(run.id, "tool:send:3", args={"to": "a@example.com"}), epoch=1),
        store.request_approval(make_approval(run.id, "tool:wire:4", tool="wire_money", args={"usd": 10}), epoch=1),
    ]
    return store.get_run(run.id), approvals


def finished_run(store: SqliteStore, **fields: Any) -> Run:
    run, _ = store.create_run(make_run(**fields))
    store.claim_run(run.id, owner="w1", expected_epoch=0, lease_expires_at=time.time() + 60)
    return store.update_run(run.id, epoch=1, status=RunStatus.COMPLETED, output={"answer": 42}, release_lease=True)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def http_login(http: httpx.Client, key: str) -> str:
    """Logs an httpx client in (it keeps the cookie); returns the session's CSRF token."""
    form = http.get("/ui/login")
    answer = http.post("/ui/login", data={"csrf": csrf_of(form.text), "key": key, "next": "/ui/runs"})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/runs", answer.text
    assert key not in answer.headers["set-cookie"]
    return csrf_of(http.get("/ui/runs").text)


def browser_login(page: Page, url: str, key: str, name: str = "") -> None:
    page.get_by_label("API key").fill(key)
    if name:
        page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Log in").click()


def row(page: Page, approval: Approval) -> Any:
    return page.locator(f'tr[data-approval="{approval.id}"]')


# ---- browser: open UI -------------------------------------------------------------------------------
def test_runs_list_and_audit_trail(store: SqliteStore, page: Page) -> None:
    run, _ = seed(store)
    done = finished_run(store, agent="<img src=x onerror=alert(2)>")
    with thread_server(create_app(store)) as url:
        page.goto(f"{url}/")
        assert page.url == f"{url}/ui/runs"
        ids = page.locator("tr[data-run]").evaluate_all("rows => rows.map(r => r.dataset.run)")
        assert ids == [done.id, run.id]  # newest first
        mailer = page.locator(f'tr[data-run="{run.id}"]')
        for text in ("mailer", "openai-agents", "waiting", "1,200", "34", "$0.0125"):
            assert text in mailer.inner_text()
        assert page.get_by_text("<img src=x onerror=alert(2)>").is_visible()  # shown as text, not an image
        assert page.locator("main img").count() == 0

        page.get_by_role("link", name="completed").click()
        assert page.locator("tr[data-run]").evaluate_all("rows => rows.map(r => r.dataset.run)") == [done.id]

        page.goto(f"{url}/ui/runs")
        page.get_by_role("link", name=run.id).click()
        assert page.url == f"{url}/ui/runs/{run.id}"
        steps = page.locator("tbody.step")
        assert steps.evaluate_all("bodies => bodies.map(b => b.dataset.seq)") == ["0", "1", "2"]
        llm = steps.nth(0).inner_text()
        for text in ("llm", "llm:0", "model", "completed", "openai / gpt-test", "812 ms", "1,200 / 34", "$0.0125"):
            assert text in llm
        assert "boom: <b>failed</b>" in steps.nth(2).inner_text()
        assert page.locator("tbody.step details").count() == 1  # the long model input is folded away
        script = page.get_by_text(SCRIPT, exact=True)
        assert script.is_visible()
        assert page.locator("script").count() == 0 and page.dialogs == []  # type: ignore[attr-defined]
        assert "$0.0125" in page.locator(".facts").inner_text()

        store.supersede_steps(run.id, ["tool:notify:2"], prefix="superseded:2/", reason="diverged", epoch=1)
        page.reload()  # a step moved aside by on_divergence="live" is shown dimmed
        aside = page.locator("tbody.step.superseded")
        assert aside.count() == 1 and "superseded:2/tool:notify:2" in aside.inner_text()
        assert float(aside.locator("tr.meta").evaluate("row => getComputedStyle(row).opacity")) < 1
        assert float(steps.nth(0).locator("tr.meta").evaluate("row => getComputedStyle(row).opacity")) == 1


def test_runs_of_one_session(store: SqliteStore, page: Page) -> None:
    """A run's session links to the session's runs; the status filters keep the session."""
    thread = "thread <7>&x"
    first = finished_run(store, session_id=thread)
    failed, _ = store.create_run(make_run(session_id=thread))
    store.claim_run(failed.id, owner="w1", expected_epoch=0, lease_expires_at=time.time() + 60)
    store.update_run(failed.id, epoch=1, status=RunStatus.FAILED, error="boom", release_lease=True)
    other = finished_run(store, session_id="another")
    alone = finished_run(store)
    shown = "rows => rows.map(r => r.dataset.run)"
    with thread_server(create_app(store)) as url:
        page.goto(f"{url}/ui/runs/{first.id}")
        page.get_by_role("link", name=thread).click()
        assert page.locator("tr[data-run]").evaluate_all(shown) == [failed.id, first.id]
        assert page.locator("strong.session").inner_text() == thread  # shown as text
        page.get_by_role("link", name="completed").click()
        assert page.locator("tr[data-run]").evaluate_all(shown) == [first.id]
        page.get_by_role("link", name="all sessions").click()
        assert page.locator("tr[data-run]").evaluate_all(shown) == [alone.id, other.id, first.id]
        page.goto(f"{url}/ui/runs?session=nobody")
        assert page.locator("tr[data-run]").count() == 0 and "No runs of session nobody" in page.inner_text("main")


def test_approve_and_reject_from_the_browser(store: SqliteStore, page: Page) -> None:
    run, (send, wire) = seed(store)
    with thread_server(create_app(store)) as url:
        page.goto(f"{url}/ui/approvals")
        assert page.locator("tr[data-approval]").count() == 2
        row(page, send).get_by_role("button", name="Approve").click()
        assert page.url == f"{url}/ui/approvals"
        assert "Approved send_email" in page.locator(".flash.ok").inner_text()
        decided = store.get_approval(send.id)
        assert decided.status is ApprovalStatus.APPROVED and decided.decided_by == "web-ui"

        page.goto(f"{url}/ui/runs/{run.id}")
        assert "approved" in row(page, send).inner_text()
        wire_row = row(page, wire)
        wire_row.get_by_placeholder("Reason to reject").fill("too much <money>")
        wire_row.get_by_role("button", name="Reject").click()
        assert page.url == f"{url}/ui/runs/{run.id}"  # back where the form was
        rejected = store.get_approval(wire.id)
        assert rejected.status is ApprovalStatus.REJECTED and rejected.reason == "too much <money>"
        assert "rejected" in row(page, wire).inner_text() and "too much <money>" in row(page, wire).inner_text()
        assert page.get_by_role("button", name="Approve").count() == 0
        page.reload()
        assert page.locator(".flash").count() == 0  # a flash message is shown once


def test_conflict_shows_a_message(store: SqliteStore, page: Page) -> None:
    _, (send, _) = seed(store)
    with thread_server(create_app(store)) as url:
        page.goto(f"{url}/ui/approvals")
        store.decide_approval(send.id, approved=False, by="bob", reason="no", decided_at=time.time())
        row(page, send).get_by_role("button", name="Approve").click()
        message = page.locator(".flash.error").inner_text()
        assert "already rejected by bob" in message
        assert store.get_approval(send.id).status is ApprovalStatus.REJECTED


# ---- browser: with API keys -------------------------------------------------------------------------
def test_login_then_approve_as_approver(store: SqliteStore, page: Page) -> None:
    _, (send, _) = seed(store)
    with thread_server(create_app(store, keys=KEYS)) as url:
        page.goto(f"{url}/ui/approvals")
        assert page.url.startswith(f"{url}/ui/login")
        browser_login(page, url, "not-a-key")
        assert "not valid" in page.locator(".flash.error").inner_text()
        browser_login(page, url, APPROVER, name="alice")
        assert page.url == f"{url}/ui/approvals"  # back to the page asked for
        (cookie,) = page.context.cookies()
        assert cookie["name"] == SESSION_COOKIE and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/" and APPROVER not in cookie["value"]
        row(page, send).get_by_role("button", name="Approve").click()
        decided = store.get_approval(send.id)
        assert decided.status is ApprovalStatus.APPROVED and decided.decided_by == "alice"

        page.get_by_role("button", name="Log out").click()
        assert page.url == f"{url}/ui/login"
        page.goto(f"{url}/ui/runs")
        assert page.url.startswith(f"{url}/ui/login")


def test_agent_session_sees_but_cannot_decide(store: SqliteStore, page: Page) -> None:
    _, (send, _) = seed(store)
    with thread_server(create_app(store, keys=KEYS)) as url:
        page.goto(f"{url}/ui/login")
        browser_login(page, url, AGENT)
        page.goto(f"{url}/ui/approvals")
        assert page.locator("tr[data-approval]").count() == 2
        assert page.get_by_role("button", name="Approve").count() == 0
        assert page.get_by_role("button", name="Reject").count() == 0
        assert "may not decide" in row(page, send).inner_text()
        csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
        (cookie,) = page.context.cookies()
        with httpx.Client(base_url=url, cookies={cookie["name"]: cookie["value"]}) as http:
            forged = http.post(f"/ui/approvals/{send.id}/approve", data={"csrf": csrf, "next": "/ui/approvals"})
        assert forged.status_code == 403 and "may not approve" in forged.text
        assert store.get_approval(send.id).status is ApprovalStatus.PENDING


# ---- plain HTTP -----------------------------------------------------------------------------------
def test_another_sites_form_cannot_log_a_browser_in(store: SqliteStore) -> None:
    """Login CSRF: the login form's token is bound to a nonce cookie of the visitor's own
    (``SameSite=strict``), so an attacker's token (from their own visit) logs nobody else in."""
    with thread_server(create_app(store, keys=KEYS)) as url:
        with httpx.Client(base_url=url) as attacker:
            token = csrf_of(attacker.get("/ui/login").text)
        with httpx.Client(base_url=url) as victim:
            victim.get("/ui/login")  # the victim's own nonce: not the one the attacker's token is for
            forged = victim.post("/ui/login", data={"csrf": token, "key": AGENT, "name": "(victim)"})
            assert forged.status_code == 403 and "agentspan_session" not in forged.headers.get("set-cookie", "")
        with httpx.Client(base_url=url) as cross_site:  # no cookie at all: a cross-site post sends none
            assert cross_site.post("/ui/login", data={"csrf": token, "key": AGENT}).status_code == 403
        with httpx.Client(base_url=url) as http:
            assert http_login(http, AGENT)  # a visitor's own form still logs in


def test_a_decision_made_in_the_ui_is_by_the_sessions_name_whatever_the_form_says(store: SqliteStore) -> None:
    _, (send, _wire) = seed(store)
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        form = http.get("/ui/login")
        http.post("/ui/login", data={"csrf": csrf_of(form.text), "key": APPROVER, "name": "alice"})
        csrf = csrf_of(http.get("/ui/runs").text)
        answer = http.post(f"/ui/approvals/{send.id}/approve", data={"csrf": csrf, "by": "slack:carol"})
        assert answer.status_code == 303
    assert store.get_approval(send.id).decided_by == "alice"  # was: "slack:carol", a Slack decision never made


def test_a_long_non_ascii_rejection_reason_within_the_limit_is_recorded(store: SqliteStore) -> None:
    """1,900 CJK characters (under the form's 2,000): ~17 KB percent-encoded (was: refused as a
    form that could not be read, the approval left pending)."""
    _, (send, _wire) = seed(store)
    reason = "拒" * 1900
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        csrf = http_login(http, APPROVER)
        answer = http.post(f"/ui/approvals/{send.id}/reject", data={"csrf": csrf, "reason": reason})
        assert answer.status_code == 303, answer.text
    decided = store.get_approval(send.id)
    assert decided.status is ApprovalStatus.REJECTED and decided.reason == reason


def test_csrf_token_is_required(store: SqliteStore) -> None:
    _, (send, wire) = seed(store)
    for keys in (KEYS, None):
        with thread_server(create_app(store, keys=keys)) as url, httpx.Client(base_url=url) as http:
            csrf = http_login(http, APPROVER) if keys else csrf_of(http.get("/ui/approvals").text)
            target = f"/ui/approvals/{send.id}/reject"
            for form in ({"reason": "r"}, {"reason": "r", "csrf": "forged"}, {"reason": "r", "csrf": csrf[:-2]}):
                answer = http.post(target, data=form)
                assert answer.status_code == 403 and "security token" in answer.text
            assert store.get_approval(send.id).status is ApprovalStatus.PENDING
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        csrf = http_login(http, ADMIN)
        answer = http.post(f"/ui/approvals/{wire.id}/reject", data={"csrf": csrf, "reason": "", "next": "/ui/runs"})
        assert answer.status_code == 303 and store.get_approval(wire.id).status is ApprovalStatus.PENDING
        assert "Give a reason" in http.get("/ui/runs").text
        login_form = {"csrf": "forged", "key": ADMIN}
        assert http.post("/ui/login", data=login_form).status_code == 403  # the login form has a token too
        logout = http.post("/ui/logout", data={})
        assert logout.status_code == 403  # no logout from another site either
        answer = http.post("/ui/logout", data={"csrf": csrf})
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
        assert http.get("/ui/runs").status_code == 303


def test_decisions_go_back_to_local_pages_only(store: SqliteStore) -> None:
    run, (send, wire) = seed(store)
    expiring = store.request_approval(make_approval(run.id, "tool:late:5", expires_at=time.time() - 1), epoch=1)
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        csrf = csrf_of(http.get("/ui/approvals").text)
        for next_url, expected in (("https://evil.example/", "/ui/approvals"), ("//evil.example/ui/", "/ui/approvals"),
                                   (f"/ui/runs/{run.id}", f"/ui/runs/{run.id}")):  # fmt: skip
            answer = http.post(f"/ui/approvals/{send.id}/approve", data={"csrf": csrf, "next": next_url})
            assert answer.status_code == 303 and answer.headers["location"] == expected
        assert "already approved by web-ui" in http.get("/ui/approvals").text  # the 2nd and 3rd posts
        answer = http.post(f"/ui/approvals/{expiring.id}/approve", data={"csrf": csrf, "by": "carol"})
        assert answer.status_code == 303
        shown = http.get("/ui/approvals").text
        assert "expired at" in shown and "counts as rejected" in shown
        # listed among the decided, not counted as pending (was: "Pending approvals 2")
        assert '<h1>Pending approvals <span class="count">1</span></h1>' in shown
        assert store.get_approval(expiring.id).status is ApprovalStatus.PENDING
        answer = http.post("/ui/approvals/no-such-id/approve", data={"csrf": csrf})
        assert answer.status_code == 303 and "no approval no-such-id" in http.get("/ui/approvals").text
        answer = http.post(f"/ui/approvals/{wire.id}/reject", data={"csrf": csrf, "reason": "no", "by": "dave"})
        assert store.get_approval(wire.id).decided_by == "dave"


def test_redirects_error_pages_and_headers(store: SqliteStore) -> None:
    run, _ = seed(store)
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        for path in ("/", "/ui", "/ui/"):
            answer = http.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/ui/runs"
        for path in ("/ui/runs", f"/ui/runs/{run.id}", "/ui/approvals", "/static/style.css"):
            answer = http.get(path)
            assert answer.status_code == 200
            assert answer.headers["content-security-policy"] == CSP
            assert answer.headers["x-content-type-options"] == "nosniff"
        assert http.get("/ui/runs").headers["content-type"] == "text/html; charset=utf-8"
        missing = http.get("/ui/runs/no%3Cb%3Esuch")
        assert missing.status_code == 404 and "Run not found" in missing.text
        assert "no&lt;b&gt;such" in missing.text and missing.headers["content-security-policy"] == CSP
        assert http.get("/ui/nothing-here").status_code == 404
        assert http.get("/ui/runs?status=bogus").status_code == 400
        assert http.get("/ui/runs?session=a%00b").status_code == 400  # refused, not handed to the store
        assert http.get("/ui/login").headers["location"] == "/ui/runs"  # nothing to log in to
        assert http.get("/ui/runs", headers={"Host": "evil.example"}).status_code == 403  # DNS rebinding
        assert "content-security-policy" not in http.get("/api/runs").headers
        schema = json.loads(http.get("/openapi.json").text)
        assert not [p for p in schema["paths"] if p == "/" or p.startswith(("/ui", "/static"))]
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        assert http.get("/api/runs").status_code == 401  # the API still wants a bearer key
        assert http.get("/ui/runs", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 303
        assert http.get("/ui/runs/x").headers["location"] == "/ui/login?next=%2Fui%2Fruns%2Fx"
        assert http.get("/static/style.css").status_code == 200
        assert http.get("/").headers["location"] == "/ui/runs"
        assert http.post("/ui/approvals/x/approve", data={"csrf": "x"}).headers["location"] == "/ui/login"


def test_session_tokens_are_signed(store: SqliteStore) -> None:
    signer = Signer()
    token = signer.issue("agent", "eve")
    session = signer.session(token)
    assert session is not None and session.role == "agent" and not session.may_decide and session.name == "eve"
    body, mac = token.split(".")
    forged = body.replace(body[:8], body[:7] + ("A" if body[7] != "A" else "B")) + "." + mac
    assert signer.session(forged) is None and Signer().session(token) is None
    assert signer.session(signer.sign("flash", b'{"r":"admin","n":"x","e":1e12}')) is None  # wrong purpose
    assert signer.session(signer.issue("admin", ttl=-1)) is None  # expired
    signer.revoke(session)
    assert signer.session(token) is None
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        http.cookies.set(SESSION_COOKIE, token)
        assert http.get("/ui/runs").status_code == 303  # another app's secret: not a session here


# ---- retrying a failed run ------------------------------------------------------------------------
def failed_run(store: SqliteStore, **fields: Any) -> Run:
    run, _ = store.create_run(make_run(**fields))
    store.claim_run(run.id, owner="w1", expected_epoch=0, lease_expires_at=time.time() + 60)
    return store.update_run(run.id, epoch=1, status=RunStatus.FAILED, error="ConnectionError: down", release_lease=True)


@pytest.mark.parametrize("text", ["é" * 1000, "承認を拒否しました。" * 200, "🙂" * 700, '"\\\n' * 900, "x" * 5000,
                                  "短いメッセージ", "a lone \ud800 surrogate"])
def test_a_flash_message_of_any_script_and_length_fits_in_its_token(text: str) -> None:
    """A flash token is read back only up to `_MAX_TOKEN` characters: ``\\uXXXX`` escapes of a long
    non-ASCII message once made it too long, and the message was silently not shown."""
    signer = Signer()
    token = signer.flash("error", text)
    shown = signer.read_flash(token)
    assert shown is not None and shown[0] == "error", len(token)
    if len(text) < 100:
        assert shown[1] == text.encode("utf-8", "replace").decode("utf-8")
    else:
        assert shown[1].endswith("…") and text.startswith(shown[1][:-1]) and len(shown[1]) > 200


def test_retry_a_failed_run_from_the_browser(store: SqliteStore, page: Page) -> None:
    run = failed_run(store, agent=SCRIPT)
    done = finished_run(store)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with thread_server(create_app(store)) as url:
        page.goto(f"{url}/ui/runs/{done.id}")
        assert page.get_by_role("button", name="Retry").count() == 0  # only a failed run has one
        page.goto(f"{url}/ui/runs/{run.id}")
        page.get_by_role("button", name="Retry").click()
        page.wait_for_load_state()
        assert page.url == f"{url}/ui/runs/{run.id}"
        text = page.locator("body").inner_text()
        assert "is pending again: a worker serving agent" in text and SCRIPT in text  # shown, escaped
        assert page.get_by_role("button", name="Retry").count() == 0
        # the failure it was retried from stays on the page
        retries = page.locator("section.retries").inner_text().lower()
        assert "retried 1 time" in retries and "connectionerror: down" in retries and "a worker" in retries
    reopened = store.get_run(run.id)
    assert (reopened.status, reopened.error, reopened.lease_epoch) == (RunStatus.PENDING, None, 2)
    assert dialogs == []


def test_retry_needs_a_deciding_role_a_token_and_a_failed_run(store: SqliteStore) -> None:
    run = failed_run(store)
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        csrf = http_login(http, AGENT)
        assert "An approver or admin may retry it" in http.get(f"/ui/runs/{run.id}").text
        answer = http.post(f"/ui/runs/{run.id}/retry", data={"csrf": csrf})
        assert answer.status_code == 403 and "may not retry runs" in answer.text
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        csrf = http_login(http, APPROVER)
        for form in ({}, {"csrf": "forged"}):
            answer = http.post(f"/ui/runs/{run.id}/retry", data=form)
            assert answer.status_code == 403 and "security token" in answer.text
        assert store.get_run(run.id).status is RunStatus.FAILED  # nothing changed so far
        answer = http.post(f"/ui/runs/{run.id}/retry", data={"csrf": csrf})
        assert answer.status_code == 303 and answer.headers["location"] == f"/ui/runs/{run.id}"
        assert store.get_run(run.id).status is RunStatus.PENDING
        http.post(f"/ui/runs/{run.id}/retry", data={"csrf": csrf})  # pending now: refused, shown on the page
        assert "only a failed run can be retried" in http.get(f"/ui/runs/{run.id}").text
        answer = http.post("/ui/runs/no-such-run/retry", data={"csrf": csrf})
        assert answer.headers["location"] == "/ui/runs" and "There is no run no-such-run" in http.get("/ui/runs").text
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:  # open UI: loopback only
        answer = http.post(f"/ui/runs/{run.id}/retry", data={"csrf": "x"}, headers={"Host": "evil.example"})
        assert answer.status_code == 403


def test_an_approver_cancels_a_run_that_has_not_ended(store: SqliteStore) -> None:
    run, (send, _wire) = seed(store)
    page = f"/ui/runs/{run.id}"
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        csrf = http_login(http, AGENT)
        assert "Cancel run" not in http.get(page).text  # an agent key may look, not act
        answer = http.post(f"{page}/cancel", data={"csrf": csrf})
        assert answer.status_code == 403 and "may not cancel runs" in answer.text
        assert store.get_run(run.id).status is RunStatus.WAITING
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        csrf = http_login(http, APPROVER)
        assert "Cancel run" in http.get(page).text
        assert http.post(f"{page}/cancel", data={}).status_code == 403  # no token: another site's form
        answer = http.post(f"{page}/cancel", data={"csrf": csrf})
        assert answer.status_code == 303 and answer.headers["location"] == page
        cancelled = store.get_run(run.id)
        assert cancelled.status is RunStatus.CANCELLED
        assert "cancelled in the web UI by web-ui:approver" in (cancelled.error or "")
        assert effective_status(store.get_approval(send.id)) is ApprovalStatus.EXPIRED
        shown = http.get(page).text
        assert "is cancelled" in shown and "Cancel run" not in shown
        http.post(f"{page}/cancel", data={"csrf": csrf})
        assert "Not cancelled: run" in http.get(page).text
