"""The checkpoint conformance suite against MemoryStore and SqliteStore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentspan.stores.base import Store
from agentspan.stores.memory import MemoryStore
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import CheckpointConformance


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
