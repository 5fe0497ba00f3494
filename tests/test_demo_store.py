"""`agentspan demo` prints the store its runs are really in (the server's with AGENTSPAN_SERVER_URL)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import agentspan
from agentspan.cli_doctor import shown_url
from agentspan.stores.remote import RemoteStore
from agentspan.stores.sqlite import SqliteStore
from agentspan_openai_agents.demo import _where


@pytest.fixture
def transport() -> str:
    """conftest's ``home`` starts a server (over SQLite) and sets AGENTSPAN_SERVER_URL to it."""
    return "server-sqlite"


@pytest.fixture(autouse=True)
def _home(home: Path) -> Path:
    """Every test gets conftest's fresh home (nothing touches ~/.agentspan)."""
    return home


def test_with_a_server_the_demo_prints_the_server_its_runs_are_in(home: Path) -> None:
    """(was: ``store: <home>/agentspan.db``, a file the demo never created)"""
    url = os.environ["AGENTSPAN_SERVER_URL"]
    env = {**os.environ, "COLUMNS": "200",
           "AGENTSPAN_SERVER_URL": url.replace("http://", "http://demo:s3cret@")}  # fmt: skip
    env.pop("OPENAI_API_KEY", None)
    agentspan_cli = Path(sys.executable).parent / "agentspan"
    out = subprocess.run([str(agentspan_cli), "demo"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    shown = re.search(r"store: (.*?)\s+run: ([0-9a-f-]{36})", out.stdout)
    assert shown is not None, out.stdout
    assert shown.group(1) == f"the server at {url}"  # without the credentials
    assert "s3cret" not in out.stdout + out.stderr
    assert not (home / "agentspan.db").exists()
    run = agentspan.get(shown.group(2)).run()  # on that server (this process's store is the server's)
    assert run.status is agentspan.RunStatus.COMPLETED


def test_the_embedded_store_is_shown_by_its_file(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    try:
        assert _where(store) == str(tmp_path / "x.db")
    finally:
        store.close()
    remote = RemoteStore("http://u:p@a.example:1,http://b.example:2")
    try:
        assert _where(remote) == "the server at http://a.example:1,http://b.example:2"
    finally:
        remote.close()


@pytest.mark.parametrize(("url", "shown"), [
    ("http://svc:hunter2@secret@host:8000", "http://host:8000"),  # a raw "@" in the password (httpx reads it so)
    ("http://u:p@a:1,https://v:q@b:2/x@y", "http://a:1,https://b:2/x@y"),  # an "@" in a path is the path's
    ("http://host:1?next=a@b", "http://host:1?next=a@b"),
])
def test_a_shown_server_url_holds_no_credentials(url: str, shown: str) -> None:
    assert shown_url(url) == shown
