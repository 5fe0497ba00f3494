"""Shared fixtures: every test gets its own AGENTSPAN_HOME (embedded SQLite store)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh Agentspan home with short leases and fast polling, for this test and its children."""
    import agentspan.config

    home = tmp_path / "agentspan-home"
    monkeypatch.setenv("AGENTSPAN_HOME", str(home))
    monkeypatch.setenv("AGENTSPAN_LEASE_TTL", "1.5")
    monkeypatch.setenv("AGENTSPAN_POLL_INTERVAL", "0.02")
    monkeypatch.delenv("AGENTSPAN_SERVER_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    agentspan.config.reset()
    yield home
    agentspan.config.reset()


@pytest.fixture
def child_env(home: Path) -> dict[str, str]:
    """Environment for subprocesses sharing this test's store."""
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
