"""Slack approvals against what a requester or a failing Slack can do, over real HTTP.

The decider's member id in the trail, user text that cannot leave its field of the message, every
argument key shown within Slack's limits, posts tried again after passing failures (``Retry-After``
honoured, a server stop never held up), and no credentials of the API URL in the logs. Helpers and
the fake Slack are `test_slack`'s.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from test_slack import ALICE, BOB, Agentspan, FakeSlack, agentspan, claimed, click, new_approval, request, wait_for

from agentspan.records import Run

from server_support import free_port, thread_server


@pytest.fixture(autouse=True)
def home(cli_home: Path) -> Path:
    """An empty AGENTSPAN_HOME and fresh settings: nothing touches ~/.agentspan (`conftest.cli_home`)."""
    return cli_home


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    with thread_server(fake.app()) as url:
        fake.url = url
        yield fake


@pytest.fixture
def server(tmp_path: Path, slack: FakeSlack) -> Iterator[Agentspan]:
    with agentspan(tmp_path, slack) as served:
        yield served


def posted(served: Agentspan) -> dict[str, Any]:
    served.settle()
    assert len(served.fake.messages) == 1
    return served.fake.messages[0][1]


def sections(message: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in message["blocks"] if b["type"] == "section"]


# ---- 1. the trail names the member id ---------------------------------------------------------
def test_the_trail_records_the_member_id_beside_the_name(server: Agentspan) -> None:
    """The payload's name is anyone's to choose; the id is the one checked against the approvers."""
    run = claimed(server.http)
    first, second = request(server.http, new_approval(run)), request(server.http, new_approval(run, "tool:x:1"))
    click(server, first["id"], user=BOB, name={"username": "alice"})
    click(server, second["id"], user=ALICE, name={"username": "bob"}, action="agentspan_reject")
    approved, rejected = server.store.get_approval(first["id"]), server.store.get_approval(second["id"])
    assert approved.decided_by == f"slack:alice ({BOB})"
    assert (rejected.decided_by, rejected.reason) == (f"slack:bob ({ALICE})", f"rejected in Slack by bob ({ALICE})")
    server.settle()
    assert f"Approved by alice ({BOB})" in server.fake.replies[0]["text"]


# ---- 2. user text stays in its field ------------------------------------------------------------
FORGED = 'send_email`\n*Arguments:*\n```\n{"to": "ann@example.com"}\n```\n_(a replay)_\n`x'


def test_user_text_cannot_add_lines_or_close_its_code(server: Agentspan) -> None:
    run = Run(framework="test", agent="mailer`\n*Run:* `other", id="run-`x`-<!channel>")
    assert server.http.post("/api/runs", json=run.model_dump(mode="json")).status_code == 201
    body = {"owner": "w1", "expected_epoch": 0, "lease_expires_at": time.time() + 60}
    assert server.http.post(f"/api/runs/{run.id}/claim", json=body).status_code == 200
    args = {"to": "attacker@evil.example", "note": "```\n*Approved already*\n```", "iban": "GB00 \u202eLIVE\u202c",
            "z\u200bw": "\x1b[31mred\u2028next", "\u2066key": 1}  # fmt: skip
    request(server.http, new_approval(run, "tool:send\r\nemail:0\x07", tool=FORGED, args=args))
    message = posted(server)
    facts, arguments = sections(message)
    lines = facts.split("\n")
    assert len(lines) == 3, lines  # no forged line
    assert all(re.fullmatch(r"\*(Approval needed|Run|Step):\* `[^`]*`", line) for line in lines), lines
    assert "\\n*Arguments:*\\n" in lines[0] and "\\r\\n" in lines[2] and "\\x07" in lines[2]
    assert "\n" not in message["text"] and "`" not in message["text"] and "\\n" in message["text"]
    # the arguments: one code block, its user text unable to close it, format characters visible
    assert arguments.startswith("*Arguments:*\n```\n") and arguments.endswith("\n```")
    assert "```" not in arguments[len("*Arguments:*\n```\n") : -len("\n```")]
    for shown in ("\\u202eLIVE\\u202c", "z\\u200bw", "\\u001b[31mred\\u2028next", "\\u2066key"):
        assert shown in arguments
    text = json.dumps(message, ensure_ascii=False)
    assert not any(c in text for c in "\u202e\u202c\u2066\u2028\x1b")  # none raw anywhere in the message


# ---- 3. every key shown, within Slack's limits ----------------------------------------------------
def test_a_long_value_does_not_hide_later_keys(server: Agentspan) -> None:
    run = claimed(server.http)
    args = {"body": "Hello Ann, " + "lorem ipsum " * 1000, "bcc": "attacker@evil.example"}
    request(server.http, new_approval(run, args=args))
    message = posted(server)
    shown = "\n".join(sections(message))
    assert '"bcc": "attacker@evil.example"' in shown and "lorem ipsum… (clipped)\n" in shown
    assert all(len(text) <= 3000 for text in sections(message))
    note = message["blocks"][-2]["elements"][0]["text"]
    assert "Some values clipped" in note and f"see the full arguments in the web UI (`/ui/runs/{run.id}`)" in note


def test_too_many_keys_say_how_many_more(server: Agentspan) -> None:
    run = claimed(server.http)
    args = {f"k{i:03}": "v" * 700 for i in range(300)}
    request(server.http, new_approval(run, args=args))
    message = posted(server)
    assert len(message["blocks"]) <= 50 and all(len(text) <= 3000 for text in sections(message))
    shown = sum(text.count('"k') for text in sections(message))
    note = message["blocks"][-2]["elements"][0]["text"]
    assert f"{300 - shown} more arguments not shown; some values clipped" in note and 0 < shown < 300


def test_non_ascii_arguments_stay_within_the_limit_in_bytes(server: Agentspan) -> None:
    """Slack's 3,000-character limit of a section is counted in bytes by some: every section stays
    within 3,000 UTF-8 bytes (was: measured in characters, a section of Japanese text or emoji
    reached 4,000-9,500 bytes, which Slack may refuse, leaving the approval without a message)."""
    run = claimed(server.http)
    args = {f"件名{i}": "日本語のメール本文です。" * 60 + "😀" * 100 for i in range(12)}
    request(server.http, new_approval(run, args=args))
    message = posted(server)
    texts = [block["text"]["text"] for block in message["blocks"] if block.get("type") == "section"]
    assert len(texts) >= 3 and all(len(text.encode("utf-8")) <= 3000 for text in texts)


# ---- 4. a failed post is tried again --------------------------------------------------------------
@dataclass
class FlakySlack:
    """``chat.postMessage`` failing as ``script`` says (status, headers, Slack error), then posting."""

    script: list[tuple[int, dict[str, str], str]]
    attempts: list[float] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def post_message(request: Request) -> Response:
            body = await request.json()
            self.attempts.append(time.monotonic())
            if len(self.attempts) <= len(self.script):
                status, headers, error = self.script[len(self.attempts) - 1]
                return JSONResponse({"ok": False, "error": error}, status_code=status, headers=headers)
            self.messages.append(body)
            return JSONResponse({"ok": True, "ts": "1.0"})

        return Starlette(routes=[Route("/api/chat.postMessage", post_message, methods=["POST"])])


@pytest.fixture
def flaky_server(
    tmp_path: Path, slack: FakeSlack, request: pytest.FixtureRequest
) -> Iterator[tuple[Agentspan, FlakySlack]]:
    flaky = FlakySlack(request.param)
    with thread_server(flaky.app()) as url, agentspan(tmp_path, slack, api_url=f"{url}/api") as served:
        served.app.state.slack.retry_delays = (0.05, 0.05, 0.05, 0.05)
        yield served, flaky


@pytest.mark.parametrize("flaky_server", [[(503, {}, "x"), (429, {"Retry-After": "1"}, "ratelimited"),
                                           (200, {}, "ratelimited")]], indirect=True)  # fmt: skip
def test_a_failed_post_is_tried_again_honouring_retry_after(
    flaky_server: tuple[Agentspan, FlakySlack], caplog: pytest.LogCaptureFixture
) -> None:
    served, flaky = flaky_server
    run = claimed(served.http)
    started = time.monotonic()
    approval = request(served.http, new_approval(run))
    assert time.monotonic() - started < 0.5  # the request does not wait for the attempts
    wait_for(lambda: served.app.state.slack.in_flight == 0)
    assert len(flaky.attempts) == 4 and [m["blocks"][-1]["elements"][0]["value"] for m in flaky.messages] == [
        approval["id"]
    ]  # fmt: skip
    assert flaky.attempts[2] - flaky.attempts[1] >= 0.95  # Slack's Retry-After, not our 0.05 s
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "agentspan"]


@pytest.mark.parametrize("flaky_server", [[(429, {"Retry-After": "600"}, "ratelimited")]], indirect=True)
def test_a_wait_past_the_minute_gives_up(
    flaky_server: tuple[Agentspan, FlakySlack], caplog: pytest.LogCaptureFixture
) -> None:
    served, flaky = flaky_server
    with caplog.at_level(logging.WARNING, logger="agentspan"):
        request(served.http, new_approval(claimed(served.http)))
        wait_for(lambda: served.app.state.slack.in_flight == 0)
    assert len(flaky.attempts) == 1 and flaky.messages == [] and "gave up posting approval" in caplog.text


def test_a_stop_does_not_wait_for_the_next_attempt(
    tmp_path: Path, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakySlack([(503, {}, "x")] * 10)
    with caplog.at_level(logging.INFO, logger="agentspan"), thread_server(flaky.app()) as url:
        with agentspan(tmp_path, slack, api_url=f"{url}/api") as served:
            served.app.state.slack.retry_delays = (30.0, 30.0)
            request(served.http, new_approval(claimed(served.http)))
            wait_for(lambda: "trying again" in caplog.text)
            time.sleep(0.1)  # into its wait for the next attempt
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 2.0  # not the 5 s a stop grants the calls still running
    assert len(flaky.attempts) == 1 and "stopped at shutdown; decide it from the web UI" in caplog.text


# ---- 5. no credentials in the logs ------------------------------------------------------------------
def test_the_log_names_the_host_without_credentials(
    tmp_path: Path, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    api_url = f"http://proxyuser:PROXYPASSWORD@127.0.0.1:{free_port()}/api"
    with caplog.at_level(logging.INFO, logger="agentspan"), agentspan(tmp_path, slack, api_url=api_url) as served:
        request(served.http, new_approval(claimed(served.http)))
        served.settle()
    assert "Slack: posting approval" in caplog.text and "127.0.0.1" in caplog.text
    assert "PROXYPASSWORD" not in caplog.text
