"""Paging through approvals past the first page (``before``: keyset paging by approval id, newest first).

The store contract is in the conformance suite (`ApprovalConformance`); here the surfaces: the web
UI's "Older approvals" / "Newest" links, ``agentspan approvals list --before`` and its next-page
hint, the HTTP API's ``before`` and `RemoteStore` asking page after page for a limit above the
server's page (was: 1,000 at most through a server, the oldest pending approvals silently left out).
"""

from __future__ import annotations

import html
import json
import re
import shlex
from pathlib import Path

import httpx
import pytest

from agentspan import config
from agentspan.errors import ConfigurationError
from agentspan.records import ApprovalStatus
from agentspan.stores import remote_leases
from agentspan.stores.remote import RemoteStore
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import make_approval, make_run
from agentspan_server.app import create_app

from paging_support import NASTY, cli, links
from server_support import thread_server


@pytest.fixture(autouse=True)
def home(cli_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty AGENTSPAN_HOME, fresh settings, no server, and a terminal wide enough for a page's hint."""
    monkeypatch.setenv("COLUMNS", "400")
    return cli_home


@pytest.fixture
def store(cli_store: SqliteStore) -> SqliteStore:
    """The home's embedded store (what the CLI reads; the UI's server is given it)."""
    return cli_store


def seed(store: SqliteStore, pending: int = 8, *, nasty: bool = True) -> tuple[str, list[str]]:
    """A waiting run with ``pending`` pending approvals (one with `NASTY` for id) and one decided;
    returns the run id and the pending approval ids, newest first."""
    run = store.create_run(make_run(status="running", lease_owner="w", lease_expires_at=9e9, lease_epoch=1))[0]
    ids = [store.request_approval(make_approval(run.id, f"s{n}"), epoch=1).id for n in range(pending - nasty)]
    if nasty:
        ids.append(store.request_approval(make_approval(run.id, "nasty", id=NASTY), epoch=1).id)
    decided = store.request_approval(make_approval(run.id, "decided"), epoch=1)
    store.decide_approval(decided.id, approved=True, by="ann", reason=None, decided_at=decided.requested_at + 1)
    return run.id, sorted(ids, reverse=True)


def pending_ids(page: str) -> list[str]:
    """The approval ids of the pending table (the first table; the decided one follows its heading)."""
    pending = page.split("<h2>Recently decided</h2>")[0]
    return [html.unescape(i) for i in re.findall(r'data-approval="([^"]*)"', pending)]


# ---- web UI -------------------------------------------------------------------------------------------
def test_ui_older_approvals_links_page_through_every_pending_approval(store: SqliteStore) -> None:
    _, expected = seed(store, 9)  # pages of 4, 4 and 1
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        first = http.get("/ui/approvals", params={"limit": "4"})
        assert first.status_code == 200
        assert "first" not in links(first.text)  # already the newest page
        assert '<span class="count">4+</span>' in first.text  # a full page says there may be more
        assert "Recently decided" in first.text
        seen, pages, answer = pending_ids(first.text), 1, first
        while "next" in links(answer.text) and pages < 5:  # bounded: a link to itself would loop
            older = links(answer.text)["next"]
            assert older.startswith("/ui/approvals?") and "limit=4" in older and "before=" in older
            answer = http.get(older)
            assert answer.status_code == 200
            assert links(answer.text)["first"] == "/ui/approvals?limit=4"  # back to the newest
            seen += pending_ids(answer.text)
            pages += 1
        assert seen == expected and pages == 3  # each once, in order; the last page is not full
        assert '<span class="count">1</span>' in answer.text
        # the id is escaped: percent-encoded in the URL, and that URL escaped in the HTML
        one = http.get("/ui/approvals", params={"limit": "1"}).text
        assert pending_ids(one) == [NASTY] and NASTY not in one
        assert ('<a href="/ui/approvals?limit=1&amp;before=z%22%3E%3Cb%3E%26amp%3B%3Fbefore%3Dx%23%2F%20y"'
                ' rel="next">Older approvals</a>') in one
        assert pending_ids(http.get(links(one)["next"]).text) == expected[1:2]
        # a full last page links to an empty one, which says so
        last = http.get("/ui/approvals", params={"limit": "3", "before": expected[5]})
        assert pending_ids(last.text) == expected[6:]
        empty = http.get(links(last.text)["next"])
        assert pending_ids(empty.text) == [] and "No older pending approvals." in empty.text
        assert http.get("/ui/approvals?before=a%00b").status_code == 400  # refused, not handed to the store


def test_ui_default_page_shows_every_approval_below_a_page(store: SqliteStore) -> None:
    _, expected = seed(store, 3)
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        page = http.get("/ui/approvals").text
        assert pending_ids(page) == expected and links(page) == {}
        assert '<span class="count">3</span>' in page


# ---- CLI ----------------------------------------------------------------------------------------------
def test_cli_hint_gives_the_next_page_until_the_last(store: SqliteStore) -> None:
    run_id, expected = seed(store, 9)  # pages of 4, 4 and 1
    args = ["approvals", "list", "--run", run_id, "--limit", "4"]
    seen, pages = [], 0
    while pages < 5:  # bounded: a hint for the same page would loop
        pages += 1
        seen += [a["id"] for a in json.loads(cli(*args, "--json"))]
        lines = cli(*args).splitlines()
        hints = [line for line in lines if line.startswith("Older approvals: ")]
        if not hints:
            break
        assert hints == [lines[-1]]
        command = shlex.split(hints[0].removeprefix("Older approvals: "))  # what a shell makes of it
        assert command[:3] == ["agentspan", "approvals", "list"]
        assert f"--run={run_id}" in command and "--limit=4" in command
        args = command[1:]
    assert seen == expected and pages == 3  # each once, in order
    last = shlex.split(cli("approvals", "list", "--limit", "1").splitlines()[-1].removeprefix("Older approvals: "))
    assert last == ["agentspan", "approvals", "list", "--limit=1", f"--before={NASTY}"]


def test_cli_before_status_and_json_unchanged(store: SqliteStore) -> None:
    _, expected = seed(store, 3, nasty=False)
    listed_json = json.loads(cli("approvals", "list", "--limit", "2", "--json"))
    assert isinstance(listed_json, list) and [a["id"] for a in listed_json] == expected[:2]  # no hint in JSON
    assert [a["id"] for a in json.loads(cli("approvals", "list", "--before", expected[1], "--json"))] == expected[2:]
    table = cli("approvals", "list", "--status", "all", "--limit", "2")
    second = json.loads(cli("approvals", "list", "--status", "all", "--limit", "2", "--json"))[-1]["id"]
    hint = f"Older approvals: agentspan approvals list --status=all --limit=2 --before={second}"
    assert table.splitlines()[-1] == hint  # the filters kept
    assert "Older approvals" in cli("approvals", "list", "--limit", "3")  # a full page: there may be more
    assert "Older approvals" not in cli("approvals", "list", "--limit", "4")  # not full: the oldest is on it
    assert "Older approvals" not in cli("approvals", "list")
    approved = json.loads(cli("approvals", "list", "--status", "approved", "--before", "\uffff", "--json"))
    assert [a["status"] for a in approved] == ["approved"]
    assert json.loads(cli("approvals", "list", "--status", "approved", "--before", approved[0]["id"], "--json")) == []


def test_cli_through_a_server_lists_past_the_servers_page(store: SqliteStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The scale probe, made small: more pending approvals than the server's largest page."""
    _, expected = seed(store, 5, nasty=False)
    monkeypatch.setattr(remote_leases, "MAX_LIMIT", 2)  # the server's largest page, made small
    with thread_server(create_app(store)) as url:
        monkeypatch.setenv("AGENTSPAN_SERVER_URL", url)
        config.reset()
        assert [a["id"] for a in json.loads(cli("approvals", "list", "--limit", "5000", "--json"))] == expected
        assert [a["id"] for a in json.loads(cli("approvals", "list", "--before", expected[0], "--json"))] == (
            expected[1:])
        config.reset()


# ---- HTTP API and RemoteStore ------------------------------------------------------------------------
def test_api_before_and_remote_limit_above_a_page(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, newest_first = seed(store, 5, nasty=False)
    ids = newest_first[::-1]
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        answer = http.get("/api/approvals", params={"before": ids[3], "limit": 2, "status": "pending"})
        assert [a["id"] for a in answer.json()["approvals"]] == [ids[2], ids[1]]
        assert http.get("/api/approvals", params={"before": ""}).json() == {"approvals": []}
        assert http.get("/api/approvals", params={"before": "a\x00b"}).status_code == 422
        (param,) = [p for p in http.get("/openapi.json").json()["paths"]["/api/approvals"]["get"]["parameters"]
                    if p["name"] == "before"]  # fmt: skip
        assert "only approvals whose id sorts before this one" in param["description"]
        client = RemoteStore(url)
        monkeypatch.setattr(remote_leases, "MAX_LIMIT", 2)  # the server's largest page, made small
        asked: list[dict[str, object]] = []
        real_get = client._get

        def spy(path: str, model: type, params: dict[str, object] | None = None) -> object:
            asked.append(dict(params or {}))
            return real_get(path, model, params)

        monkeypatch.setattr(client, "_get", spy)
        pending = ApprovalStatus.PENDING.value
        assert [a.id for a in client.list_approvals(status=pending, limit=-1)] == newest_first
        assert len(asked) == 3 and "before" not in asked[0]  # pages of 2, 2 and 1; the first without before=
        assert [a.id for a in client.list_approvals(status=pending, limit=3)] == newest_first[:3]
        assert [a.id for a in client.list_approvals(run_id=run_id, status=pending, limit=4, before=ids[4])] == [
            ids[3], ids[2], ids[1], ids[0]]  # fmt: skip
        asked.clear()
        assert [a.id for a in client.list_approvals(status=pending, limit=4)] == newest_first[:4]
        assert len(asked) == 2  # no empty third ask
        assert len(client.list_approvals(limit=5000)) == 6  # every one, the decided one too
        client.close()


def test_remote_against_a_server_that_ignores_before(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server older than paging drops the unknown ``before`` and answers the newest approvals:
    an explicit ``before`` is refused, not answered with the wrong ones; a limit above a page stops
    at the first page (as it did), never loops on it."""
    _, newest_first = seed(store, 5, nasty=False)
    real = store.list_approvals

    def old_server(**kwargs: object) -> object:
        kwargs.pop("before", None)
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "list_approvals", old_server)
    with thread_server(create_app(store)) as url:
        client = RemoteStore(url)
        monkeypatch.setattr(remote_leases, "MAX_LIMIT", 2)
        with pytest.raises(ConfigurationError, match="ignores before"):
            client.list_approvals(before=newest_first[2])
        assert [a.id for a in client.list_approvals(status="pending", limit=-1)] == newest_first[:2]
        client.close()
