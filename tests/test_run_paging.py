"""Paging through runs past the first page (``before``: keyset paging by run id, newest first).

The store contract is in the conformance suite (`RunConformance`); here the surfaces: the web UI's
"Older runs" / "Newest" links, ``agentspan runs list --before`` and its next-page hint, the HTTP
API's ``before`` and `RemoteStore` asking page after page for a limit above the server's page.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import httpx
import pytest

from agentspan.cli_render import printable
from agentspan.errors import ConfigurationError
from agentspan.records import Run, RunStatus
from agentspan.stores import remote
from agentspan.stores.memory import MemoryStore
from agentspan.stores.remote import RemoteStore
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import make_run
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


def seed(store: SqliteStore) -> list[str]:
    """Eight runs of session ``t1`` (one with `NASTY` for id) and two of another; returns the
    ``t1`` ids newest first."""
    ids = [store.create_run(make_run(session_id="t1" if n % 5 else "t2"))[0].id for n in range(9)]
    store.create_run(make_run(id=NASTY, session_id="t1"))
    return sorted([NASTY, *(i for n, i in enumerate(ids) if n % 5)], reverse=True)


def listed(page: str) -> list[str]:
    return [html.unescape(i) for i in re.findall(r'<tr data-run="([^"]*)">', page)]


# ---- web UI -------------------------------------------------------------------------------------------
def test_ui_older_runs_links_page_through_every_run_with_the_filters(store: SqliteStore) -> None:
    expected = seed(store)  # 9 runs of t1: pages of 4, 4 and 1
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        first = http.get("/ui/runs", params={"session": "t1", "limit": "4"})
        assert first.status_code == 200
        assert "first" not in links(first.text)  # already the newest page
        seen, pages, answer = listed(first.text), 1, first
        while "next" in links(answer.text) and pages < 5:  # bounded: a link to itself would loop
            older = links(answer.text)["next"]
            assert older.startswith("/ui/runs?") and "session=t1" in older and "limit=4" in older
            answer = http.get(older)
            assert answer.status_code == 200
            assert links(answer.text)["first"] == "/ui/runs?session=t1&limit=4"  # back to the newest
            seen += listed(answer.text)
            pages += 1
        assert seen == expected and pages == 3  # each run once, in order; the last page is not full
        assert listed(http.get(links(answer.text)["first"]).text) == expected[:4]
        # the id is escaped: percent-encoded in the URL, and that URL escaped in the HTML
        assert listed(first.text)[0] == NASTY and NASTY not in first.text
        one = http.get("/ui/runs", params={"session": "t1", "limit": "1"}).text
        assert listed(one) == [NASTY] and NASTY not in one
        assert (
            '<a href="/ui/runs?session=t1&amp;limit=1&amp;before=z%22%3E%3Cb%3E%26amp%3B%3Fbefore%3Dx%23%2F%20y"'
            ' rel="next">Older runs</a>'
        ) in one
        second = http.get(links(one)["next"]).text
        assert listed(second) == expected[1:2] and NASTY not in second and "&lt;b&gt;" in second  # its heading
        # a full last page links to an empty one, which says so
        full = http.get("/ui/runs", params={"session": "t2", "limit": "2"})
        assert len(listed(full.text)) == 2
        empty = http.get(links(full.text)["next"])
        assert listed(empty.text) == [] and "No older runs of session t2." in empty.text
        assert http.get("/ui/runs?before=a%00b").status_code == 400  # refused, not handed to the store


def test_ui_paging_keeps_the_status_filter(store: SqliteStore) -> None:
    ids = [store.create_run(make_run())[0].id for _ in range(5)]
    for rid in ids[1::2]:
        store.cancel_run(rid)
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        page = http.get("/ui/runs", params={"status": "pending", "limit": "2"}).text
        assert listed(page) == [ids[4], ids[2]]
        assert links(page)["next"] == f"/ui/runs?status=pending&limit=2&before={ids[2]}"
        assert listed(http.get(links(page)["next"]).text) == [ids[0]]


# ---- CLI ----------------------------------------------------------------------------------------------
def test_cli_hint_gives_the_next_page_until_the_last(store: SqliteStore) -> None:
    expected = seed(store)  # 9 runs of t1: pages of 4, 4 and 1
    args = ["runs", "list", "--session", "t1", "--limit", "4"]
    seen, pages = [], 0
    while pages < 5:  # bounded: a hint for the same page would loop
        pages += 1
        seen += [r["id"] for r in json.loads(cli(*args, "--json"))]
        lines = cli(*args).splitlines()
        hints = [line for line in lines if line.startswith("Older runs: ")]
        if not hints:
            break
        assert hints == [lines[-1]]
        command = shlex.split(hints[0].removeprefix("Older runs: "))  # what a shell makes of it
        assert command[:3] == ["agentspan", "runs", "list"] and "--session=t1" in command and "--limit=4" in command
        args = command[1:]
    assert seen == expected and pages == 3  # each run once, in order
    assert f"--before={NASTY}" in shlex.split(cli("runs", "list", "--session", "t1", "--limit", "1").splitlines()[-1])


def test_cli_before_and_json_unchanged(store: SqliteStore) -> None:
    ids = [store.create_run(make_run(agent="-dash"))[0].id for _ in range(3)]
    listed_json = json.loads(cli("runs", "list", "--limit", "2", "--json"))
    assert isinstance(listed_json, list) and [r["id"] for r in listed_json] == [ids[2], ids[1]]  # no hint in JSON
    assert [r["id"] for r in json.loads(cli("runs", "list", "--before", ids[1], "--json"))] == [ids[0]]
    table = cli("runs", "list", "--agent=-dash", "--limit", "2")
    assert table.splitlines()[-1] == f"Older runs: agentspan runs list --agent=-dash --limit=2 --before={ids[1]}"
    assert "Older runs" in cli("runs", "list", "--limit", "3")  # a full page: there may be more
    assert "Older runs" not in cli("runs", "list", "--limit", "4")  # not full: the oldest run is on it
    assert "Older runs" not in cli("runs", "list")


# ---- HTTP API and RemoteStore ------------------------------------------------------------------------
def test_api_before_and_remote_limit_above_a_page(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [store.create_run(make_run())[0].id for _ in range(5)]
    store.cancel_run(ids[3])
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        answer = http.get("/api/runs", params={"before": ids[3], "limit": 2})
        assert [r["id"] for r in answer.json()["runs"]] == [ids[2], ids[1]]
        assert http.get("/api/runs", params={"before": "a\x00b"}).status_code == 422
        client = RemoteStore(url)
        monkeypatch.setattr(remote, "MAX_LIMIT", 2)  # the server's largest page, made small
        asked: list[str] = []
        real_get = client._get

        def spy(path: str, model: type, params: object = None) -> object:
            asked.append(path)
            return real_get(path, model, params)

        monkeypatch.setattr(client, "_get", spy)
        assert [r.id for r in client.list_runs(limit=-1)] == ids[::-1]
        assert len(asked) == 3  # pages of 2, 2 and 1
        assert [r.id for r in client.list_runs(limit=3)] == ids[:1:-1]
        assert [r.id for r in client.list_runs(limit=4, before=ids[4], status=RunStatus.PENDING)] == [
            ids[2],
            ids[1],
            ids[0],
        ]
        asked.clear()
        assert [r.id for r in client.list_runs(limit=4)] == ids[:0:-1] and len(asked) == 2  # no empty third ask
        client.close()


def test_remote_against_a_server_that_ignores_before(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server older than paging drops the unknown ``before`` and answers the newest runs: an
    explicit ``before`` is refused, not answered with the wrong runs; a limit above a page stops
    at the first page (as it did), never loops on it."""
    ids = [store.create_run(make_run())[0].id for _ in range(5)]
    real = store.list_runs

    def old_server(**kwargs: object) -> object:
        kwargs.pop("before", None)
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "list_runs", old_server)
    with thread_server(create_app(store)) as url:
        client = RemoteStore(url)
        monkeypatch.setattr(remote, "MAX_LIMIT", 2)
        with pytest.raises(ConfigurationError, match="ignores before"):
            client.list_runs(before=ids[2])
        assert [r.id for r in client.list_runs(limit=-1)] == [ids[4], ids[3]]
        client.close()


@pytest.mark.parametrize("awkward", ["a\tb", "\x1b[31mred", "\x85nel", "new\nline", "q'uote\\", "dash-\x7f",
                                     "rtl\u202egnp"])
def test_cli_hint_is_the_command_a_shell_reads_back_for_any_id(store: SqliteStore, awkward: str) -> None:
    """A run id (or a filter) holding a tab or a control character: the printed command, pasted
    into a shell, names that same id (was: shown as ``\\x1b`` or with the tab expanded, which the
    shell read as another position, so the next page repeated one or cycled)."""
    oldest = store.create_run(make_run(agent=f"agent {awkward}"))[0].id
    store.create_run(make_run(id=f"z{awkward} id", agent=f"agent {awkward}"))  # sorts after the UUIDv7 id: newest
    hint = cli("runs", "list", "--agent", f"agent {awkward}", "--limit", "1").splitlines()[-1]
    assert hint.startswith("Older runs: agentspan runs list ")
    assert printable(hint) == hint and "\t" not in hint  # nothing raw reaches the terminal (an escape sequence)
    shell = subprocess.run(["bash", "-c", "printf '%s\\0' " + hint.removeprefix("Older runs: ")],
                           capture_output=True, check=True, env={**os.environ, "LC_ALL": "C"})  # any locale
    words = shell.stdout.decode().split("\0")[:-1]
    assert words[3:] == [f"--agent=agent {awkward}", "--limit=1", f"--before=z{awkward} id"]
    assert [r["id"] for r in json.loads(cli(*words[1:], "--json"))] == [oldest]


class _StoreBeforePaging(MemoryStore):
    """A store written against the contract before paging: its ``list_runs`` takes no ``before``."""

    def list_runs(self, *, status: RunStatus | None = None, agent: str | None = None, limit: int = 100,  # type: ignore[override]
                  session_id: str | None = None) -> list[Run]:
        return super().list_runs(status=status, agent=agent, limit=limit, session_id=session_id)


def test_a_store_without_before_still_lists_its_first_page() -> None:
    store = _StoreBeforePaging()
    ids = [store.create_run(make_run())[0].id for _ in range(2)]
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        assert [r["id"] for r in http.get("/api/runs").json()["runs"]] == ids[::-1]
        assert http.get("/ui/runs").status_code == 200


def test_ui_filter_links_keep_the_page_size_and_start_over(store: SqliteStore) -> None:
    seed(store)
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        page = http.get("/ui/runs", params={"session": "t1", "limit": "3", "before": "z", "status": "pending"}).text
        hrefs = {html.unescape(h) for h in re.findall(r'<a href="(/ui/runs[^"]*)"', page)}
        assert "/ui/runs?status=cancelled&session=t1&limit=3" in hrefs  # a status: the session and size kept
        assert "/ui/runs?session=t1&limit=3" in hrefs  # all statuses
        assert "/ui/runs?status=pending&limit=3" in hrefs  # all sessions (was: the size went back to 100)
        assert all("before=" not in h for h in hrefs if "status=cancelled" in h)  # a filter starts over
