"""The web UI shows bidirectional formatting characters of stored text as visible ``\\u202e``
escapes, as the CLI does, on every page (a real uvicorn server, read with httpx)."""

from __future__ import annotations

import time

import httpx
import pytest

from agentspan.records import StepResult, StepStatus
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import make_approval, make_run, make_step
from agentspan_server.app import create_app
from agentspan_server.ui.render import visible_bidi

from server_support import thread_server

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
"""Every bidirectional formatting character: embeddings, overrides, isolates and marks."""
ESCAPED = "".join(f"\\u{ord(c):04x}" for c in BIDI)


pytestmark = pytest.mark.usefixtures("cli_home")  # an empty AGENTSPAN_HOME: nothing touches ~/.agentspan


def test_visible_bidi_escapes_each_character_and_leaves_markup_alone() -> None:
    assert visible_bidi("refund \u202e0001") == "refund \\u202e0001"
    assert visible_bidi(BIDI) == ESCAPED
    assert visible_bidi({"k": "\u2067"}) == "{'k': '\\u2067'}"  # any value shown as its text
    assert visible_bidi("plain\nנתון عربي") == "plain\nנתון عربي"  # right-to-left letters are text, kept
    assert visible_bidi(None) is None


def test_every_page_shows_bidi_characters_as_escapes(cli_store: SqliteStore) -> None:
    store = cli_store
    run, _ = store.create_run(make_run(agent=f"agent{BIDI}", input={"message": f"pay \u202e0001 {BIDI}"},
                                       session_id=f"thread{BIDI}"))  # fmt: skip
    store.claim_run(run.id, owner="w1", expected_epoch=0, lease_expires_at=time.time() + 60)
    store.record_step(make_step(run.id, "tool:lookup:0", 0, name=f"lookup{BIDI}", input={"q": BIDI}),
                      StepResult(status=StepStatus.COMPLETED, output=f"result {BIDI}"), epoch=1)  # fmt: skip
    store.record_step(make_step(run.id, "tool:fail:1", 1, name="fail"),
                      StepResult(status=StepStatus.FAILED, error=f"boom {BIDI}"), epoch=1)  # fmt: skip
    pending = store.request_approval(
        make_approval(run.id, "tool:refund:2", tool=f"refund{BIDI}", args={"usd": f"refund \u202e0001{BIDI}"}), epoch=1
    )
    rejected = store.request_approval(make_approval(run.id, "tool:send:3"), epoch=1)
    store.decide_approval(rejected.id, approved=False, by=f"carol{BIDI}", reason=f"no {BIDI}", decided_at=time.time())
    with thread_server(create_app(cli_store)) as url, httpx.Client(base_url=url) as http:
        pages = {path: http.get(path) for path in (
            "/ui/runs", f"/ui/runs/{run.id}", "/ui/approvals", f"/ui/runs?session=thread{BIDI}",
            f"/ui/runs?before=z{BIDI}", f"/ui/runs/nothing{BIDI}",
        )}  # fmt: skip
        # a flash message quoting a stored value (the approval's tool) after a decision
        csrf = http.get("/ui/approvals").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        answer = http.post(f"/ui/approvals/{pending.id}/approve", data={"csrf": csrf, "next": "/ui/approvals"})
        assert answer.status_code == 303
        pages["flash"] = http.get("/ui/approvals")
    for path, page in pages.items():
        assert page.status_code == (404 if "nothing" in path else 200), path
        shown = page.text
        assert not set(BIDI) & set(shown), f"{path} holds a raw bidi character"
        assert ESCAPED in shown or f"\\u202e0001{ESCAPED}" in shown, path
    run_page = pages[f"/ui/runs/{run.id}"].text
    for text in (f"agent{ESCAPED}", f"pay \\u202e0001 {ESCAPED}", f"result {ESCAPED}", f"boom {ESCAPED}",
                 f"lookup{ESCAPED}", f"refund \\u202e0001{ESCAPED}", f"thread{ESCAPED}", f"no {ESCAPED}",
                 f"carol{ESCAPED}"):  # fmt: skip
        assert text in run_page, text
    assert f"refund{ESCAPED}" in pages["flash"].text and "Approved" in pages["flash"].text
