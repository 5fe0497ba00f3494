"""The checkpoint conformance suite against MemoryStore and SqliteStore, plus SQLite specifics."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentspan.stores import sqlite_schema
from agentspan.stores.base import Store
from agentspan.stores.memory import MemoryStore
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import CheckpointConformance, make_checkpoint, make_checkpoint_write, make_run


class TestMemoryStoreCheckpoints(CheckpointConformance):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = MemoryStore()
        yield store
        store.close()


class TestSqliteStoreCheckpoints(CheckpointConformance):
    @pytest.fixture(params=["normal", "full"])
    def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
        store = SqliteStore(tmp_path / "agentspan.db", durability=request.param)
        yield store
        store.close()


# ---- SQLite specifics ------------------------------------------------------------------------
def test_version_1_file_upgrades_keeping_its_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agentspan.db"
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_schema, "MIGRATIONS", sqlite_schema.MIGRATIONS[:1])
        old = SqliteStore(path)
        run, _ = old.create_run(make_run())
        old.close()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert "checkpoints" not in tables
    store, other = SqliteStore(path, create=False), SqliteStore(path, create=False)
    try:
        assert store.get_run(run.id).id == run.id
        store.put_checkpoint(make_checkpoint("t", "cp-1", run_id=run.id))
        store.put_checkpoint_writes([make_checkpoint_write("t", "cp-1", "task", 0)], replace=False)
        seen = other.get_checkpoint("t")
        assert seen is not None and (seen.run_id, len(seen.writes)) == (run.id, 1)
    finally:
        store.close()
        other.close()
