"""Shared fixtures: every test gets its own AGENTSPAN_HOME (embedded SQLite store)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pg_cluster import pg_db, postgres_url  # noqa: F401 - fixtures for every test module
from server_support import ServerProcess

TRANSPORTS = ("embedded", "server-sqlite", "server-postgres")
"""Where a test's runs live: the embedded SQLite store, or a real server (a subprocess) over SQLite
or PostgreSQL. Modules opt into all three with ``@pytest.fixture(params=TRANSPORTS)`` on a local
``transport`` fixture; the default is the embedded store."""


@pytest.fixture
def transport() -> str:
    return "embedded"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str, request: pytest.FixtureRequest) -> Path:
    """A fresh Agentspan home with short leases and fast polling, for this test and its children.

    With a server transport, a server process is started for the test (its own SQLite file or
    PostgreSQL database) and ``AGENTSPAN_SERVER_URL`` points at it; the home folder still holds
    the test's side-effect files.
    """
    import agentspan.config

    home = tmp_path / "agentspan-home"
    home.mkdir()
    monkeypatch.setenv("AGENTSPAN_HOME", str(home))
    monkeypatch.setenv("AGENTSPAN_LEASE_TTL", "1.5")
    monkeypatch.setenv("AGENTSPAN_POLL_INTERVAL", "0.02")
    monkeypatch.delenv("AGENTSPAN_SERVER_URL", raising=False)
    monkeypatch.delenv("AGENTSPAN_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server: ServerProcess | None = None
    if transport != "embedded":
        db = str(tmp_path / "server.db") if transport == "server-sqlite" else request.getfixturevalue("pg_db")
        server = ServerProcess(db).start()
        monkeypatch.setenv("AGENTSPAN_SERVER_URL", server.url)
    agentspan.config.reset()
    yield home
    agentspan.config.reset()
    if server is not None:
        server.stop()


@pytest.fixture
def child_env(home: Path) -> dict[str, str]:
    """Environment for subprocesses sharing this test's store."""
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}


@pytest.fixture
def effects_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the testing-kit tests' real tools record their side effects (`tk_effects`)."""
    path = tmp_path / "effects"
    monkeypatch.setenv("TK_EFFECTS", str(path))
    return path


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty AGENTSPAN_HOME for the CLI's (and the web UI's) tests: fresh settings, no server,
    key, durability or lease setting from the environment, and a wide terminal for tables."""
    from agentspan import config

    monkeypatch.setenv("AGENTSPAN_HOME", str(tmp_path))
    for name in ("AGENTSPAN_SERVER_URL", "AGENTSPAN_API_KEY", "AGENTSPAN_SERVER_KEYS", "AGENTSPAN_DURABILITY",
                 "AGENTSPAN_LEASE_TTL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    config.reset()
    yield tmp_path
    config.reset()


@pytest.fixture
def cli_store(cli_home: Path) -> Iterator[Any]:
    """The home's embedded store (what the CLI reads), opened directly to create data."""
    from agentspan.stores.sqlite import SqliteStore

    store = SqliteStore(cli_home / "agentspan.db")
    yield store
    store.close()
