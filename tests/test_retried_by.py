"""Who asked for a failed run's retry (``by`` in ``run.options["agentspan.retries"]``).

The store contract (each store records ``by``; None when not given; entries written before it
stay as they were) is in the conformance suite (`ReopenConformance`); here the callers: the web
UI's Retry records its user as Cancel does, ``agentspan runs retry`` records ``cli:USER``, the
HTTP API records the body's ``by`` or ``api:ROLE`` of the key, and ``agentspan runs show`` and the
run page show it, escaped.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import field_validator
from pydantic_core import PydanticCustomError
from typer.testing import CliRunner

from agentspan import cli
from agentspan.cli import app
from agentspan.errors import ConfigurationError
from agentspan.jsontext import model_json
from agentspan.records import Run, RunStatus
from agentspan.stores.remote import RemoteStore
from agentspan.stores.reopening import RETRIES, retries_of
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import make_run
from agentspan.wire import ReopenRun
from agentspan_server import app as server_app
from agentspan_server.app import create_app
from agentspan_server.auth import KeyRing

from server_support import thread_server

ADMIN, AGENT, APPROVER = "rb-admin-key-0123456789", "rb-agent-key-0123456789", "rb-approver-key-0123456789"
KEYS = KeyRing([(ADMIN, "admin"), (AGENT, "agent"), (APPROVER, "approver")])
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
runner = CliRunner()


@pytest.fixture(autouse=True)
def home(cli_home: Path) -> Path:
    """An empty AGENTSPAN_HOME (nothing touches ~/.agentspan), fresh settings, a wide terminal."""
    return cli_home


@pytest.fixture
def store(cli_store: SqliteStore) -> SqliteStore:
    """The embedded store the CLI uses."""
    return cli_store


def failed_run(store: SqliteStore, **options: Any) -> Run:
    run, _ = store.create_run(make_run(options=options))
    store.claim_run(run.id, owner="w1", expected_epoch=0, lease_expires_at=time.time() + 60)
    return store.update_run(run.id, epoch=1, status=RunStatus.FAILED, error="ConnectionError: down", release_lease=True)


def asked_by(store: SqliteStore, run_id: str) -> list[Any]:
    return [entry["by"] for entry in retries_of(store.get_run(run_id).options)]


# ---- agentspan runs retry / runs show ---------------------------------------------------------------
def test_cli_retry_records_the_os_user(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.getpass, "getuser", lambda: "ann")
    run = failed_run(store)
    assert runner.invoke(app, ["runs", "retry", run.id]).exit_code == 0
    (entry,) = store.get_run(run.id).options[RETRIES]
    assert (entry["owner"], entry["by"]) == (None, "cli:ann")


def test_cli_retry_without_a_user_name_records_none(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_user() -> str:
        raise OSError("no user name")

    monkeypatch.setattr(cli.getpass, "getuser", no_user)
    run = failed_run(store)
    assert runner.invoke(app, ["runs", "retry", run.id]).exit_code == 0
    assert asked_by(store, run.id) == [None]


def test_runs_show_prints_who_asked_escaped(store: SqliteStore) -> None:
    old = {"error": "E: old", "failed_at": 1.0, "retried_at": 2.0, "owner": None}  # from before "by"
    run = failed_run(store, **{RETRIES: [old]})
    store.reopen_run(run.id, owner=None, lease_expires_at=None, by="cli:eve\x1b[2J [bold]x[/bold]\nretry 9")
    result = runner.invoke(app, ["runs", "show", run.id])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "retry " in line]
    assert len(lines) == 2 and "asked by" not in lines[0]  # the old entry names nobody
    # no markup, no escape sequence, one line (a line end in a name must not read as a retry of its own)
    assert "(left to a worker) (asked by cli:eve\\x1b[2J [bold]x[/bold]\\nretry 9)" in lines[1]
    assert "\x1b" not in result.stdout


# ---- the HTTP API ------------------------------------------------------------------------------------
def test_the_api_records_the_bodys_by_else_the_keys_role(store: SqliteStore) -> None:
    first, second, third, fourth, fifth = (failed_run(store) for _ in range(5))
    with thread_server(create_app(store, keys=KEYS)) as url:
        agent = {"Authorization": f"Bearer {AGENT}"}  # an agent key may reopen runs, as before
        assert httpx.post(f"{url}/api/runs/{first.id}/reopen", headers=agent).status_code == 200
        answer = httpx.post(f"{url}/api/runs/{second.id}/reopen", headers=agent, json={"by": "bot for ann"})
        assert answer.status_code == 200  # an agent key's word on who asked is recorded as its claim
        assert answer.json()["options"][RETRIES][0]["by"] == "api:agent (for bot for ann)"
        approver = {"Authorization": f"Bearer {APPROVER}"}
        for run, by in ((fourth, "ann"), (fifth, "")):  # an approver names who asked; an empty name names nobody
            assert httpx.post(f"{url}/api/runs/{run.id}/reopen", headers=approver, json={"by": by}).status_code == 200
        remote = RemoteStore(url, api_key=ADMIN, retry_for=2.0)
        try:  # the remote store sends nothing for by=None: the server names the key's role
            assert remote.reopen_run(third.id, owner=None, lease_expires_at=None).options[RETRIES][0]["by"] == (
                "api:admin")
        finally:
            remote.close()
    assert asked_by(store, first.id) == ["api:agent"]
    assert asked_by(store, second.id) == ["api:agent (for bot for ann)"]
    assert (asked_by(store, fourth.id), asked_by(store, fifth.id)) == (["ann"], ["api:approver"])
    unkeyed = failed_run(store)
    with thread_server(create_app(store)) as url:  # no keys: no principal
        assert httpx.post(f"{url}/api/runs/{unkeyed.id}/reopen").status_code == 200
    assert asked_by(store, unkeyed.id) == [None]


def test_a_reopen_body_naming_nobody_leaves_by_out() -> None:
    """A server from before ``by`` forbids unknown body fields: a newer client's plain reopen still passes."""
    assert b'"by"' not in model_json(ReopenRun())
    assert b'"by":"x"' in model_json(ReopenRun(by="x"))


# ---- the web UI ----------------------------------------------------------------------------------------
def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def login(http: httpx.Client, key: str, name: str = "") -> str:
    form = http.get("/ui/login")
    answer = http.post("/ui/login", data={"csrf": csrf_of(form.text), "key": key, "name": name, "next": "/ui/runs"})
    assert answer.status_code == 303, answer.text
    return csrf_of(http.get("/ui/runs").text)


def retries_card(page: str) -> str:
    start = page.index('class="card retries"')
    return page[start:page.index("</section>", start)]


def test_the_ui_retry_records_its_user_and_the_run_page_shows_it(store: SqliteStore) -> None:
    named, unnamed, opened = failed_run(store), failed_run(store), failed_run(store)
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        csrf = login(http, APPROVER, name="Ann <b>")
        assert http.post(f"/ui/runs/{named.id}/retry", data={"csrf": csrf}).status_code == 303
        page = http.get(f"/ui/runs/{named.id}").text
        card = retries_card(page)
        assert "Asked by" in card and "Ann &lt;b&gt;" in card and "Ann <b>" not in card
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        csrf = login(http, ADMIN)
        assert http.post(f"/ui/runs/{unnamed.id}/retry", data={"csrf": csrf}).status_code == 303
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        csrf = csrf_of(http.get(f"/ui/runs/{opened.id}").text)
        assert http.post(f"/ui/runs/{opened.id}/retry", data={"csrf": csrf}).status_code == 303
    assert asked_by(store, named.id) == ["Ann <b>"]
    assert asked_by(store, unnamed.id) == ["web-ui:admin"]  # named as Cancel names a login without a name
    assert asked_by(store, opened.id) == ["web-ui"]


def test_the_run_page_shows_an_entry_from_before_by(store: SqliteStore) -> None:
    old = {"error": "E: old", "failed_at": 1.0, "retried_at": 2.0, "owner": None}
    run = failed_run(store, **{RETRIES: [old]})
    with thread_server(create_app(store)) as url:
        answer = httpx.get(f"{url}/ui/runs/{run.id}")
    assert answer.status_code == 200
    card = retries_card(answer.text)
    assert "Retried 1 time" in card and "<td>a worker</td>" in card and "<td>unknown</td>" in card


class _ReopenBeforeBy(ReopenRun):
    """A server from before ``by``: its reopen body refuses the field as `extra="forbid"` did."""

    @field_validator("by", mode="before")
    @classmethod
    def _unknown(cls, value: object) -> None:
        if value is not None:
            raise PydanticCustomError("extra_forbidden", "Extra inputs are not permitted")


def test_the_remote_store_retries_on_a_server_from_before_by(store: SqliteStore,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Its 422 changed nothing: the reopen is sent again without ``by`` (was: every ``agentspan runs
    retry`` against such a server failed, the CLI always naming its user)."""
    monkeypatch.setattr(server_app, "ReopenRun", _ReopenBeforeBy)
    run = failed_run(store)
    with thread_server(create_app(store)) as url:
        remote = RemoteStore(url, retry_for=2.0)
        try:
            reopened = remote.reopen_run(run.id, owner=None, lease_expires_at=None, by="cli:ann")
        finally:
            remote.close()
    assert reopened.status is RunStatus.PENDING and asked_by(store, run.id) == [None]


class _StoreBeforeBy(SqliteStore):
    """A store written against the contract before ``by``: its ``reopen_run`` takes no ``by``."""

    def reopen_run(self, run_id: str, *, owner: str | None, lease_expires_at: float | None,  # type: ignore[override]
                   options: Any = None) -> Run:
        return super().reopen_run(run_id, owner=owner, lease_expires_at=lease_expires_at, options=options)


def test_a_store_without_by_is_still_reopened_by_the_api_the_ui_and_the_cli(home: Path) -> None:
    old = _StoreBeforeBy(home / "old.db")
    runs = [failed_run(old) for _ in range(3)]
    with thread_server(create_app(old)) as url, httpx.Client(base_url=url) as http:
        assert http.post(f"/api/runs/{runs[0].id}/reopen").status_code == 200  # names api:... or nobody
        csrf = csrf_of(http.get(f"/ui/runs/{runs[1].id}").text)
        assert http.post(f"/ui/runs/{runs[1].id}/retry", data={"csrf": csrf}).status_code == 303
    assert [old.get_run(r.id).status for r in runs[:2]] == [RunStatus.PENDING] * 2
    old.close()


def test_a_by_the_server_refuses_is_raised_not_dropped(store: SqliteStore) -> None:
    """Only a server from before ``by`` is sent the reopen again without it: a ``by`` the server
    checked and refused (a NUL) is an error, not a retry recorded under another name."""
    run = failed_run(store)
    with thread_server(create_app(store)) as url:
        remote = RemoteStore(url, retry_for=2.0)
        try:
            with pytest.raises(ConfigurationError, match="body.by"):
                remote.reopen_run(run.id, owner=None, lease_expires_at=None, by="x\x00")
        finally:
            remote.close()
    assert store.get_run(run.id).status is RunStatus.FAILED  # nothing changed
