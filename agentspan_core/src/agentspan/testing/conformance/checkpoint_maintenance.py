"""Conformance tests for removing and duplicating checkpoints: delete, delete for runs, copy, prune."""

from __future__ import annotations

from typing import Any

from agentspan.stores.base import Store
from agentspan.testing.conformance.records import (
    ConformanceBase,
    ids_of,
    keys_of,
    make_checkpoint,
    make_checkpoint_write,
    writes_of,
)

__all__ = ["CheckpointMaintenanceConformance"]


class CheckpointMaintenanceConformance(ConformanceBase):
    """Contract tests for `Store.delete_checkpoints`, `delete_checkpoints_for_runs`,
    `copy_checkpoints` and `prune_checkpoints` (a mixin of `CheckpointConformance`)."""

    def everything(self, store: Store) -> list[dict[str, Any]]:
        """Every checkpoint of the store, with its writes, as plain data."""
        return [r.model_dump() for r in store.list_checkpoints()]

    # ---- delete -----------------------------------------------------------------------------
    def test_delete_thread(self, store: Store) -> None:
        for thread in ("t", "u"):
            for namespace in ("", "child:1"):
                store.put_checkpoint(make_checkpoint(thread, "cp-1", namespace=namespace))
                store.put_checkpoint_writes(
                    [make_checkpoint_write(thread, "cp-1", "task", 0, namespace=namespace)], replace=False
                )
        before = self.everything(store)
        store.delete_checkpoints("t")
        assert store.get_checkpoint("t") is None and store.get_checkpoint("t", "child:1") is None
        assert self.everything(store) == [cp for cp in before if cp["thread_id"] == "u"]
        assert writes_of(store, "t", "cp-1") == [] and writes_of(store, "t", "cp-1", "child:1") == []
        store.delete_checkpoints("t")
        store.delete_checkpoints("nope")
        assert self.everything(store) == [cp for cp in before if cp["thread_id"] == "u"]

    def test_delete_for_runs(self, store: Store) -> None:
        put = store.put_checkpoint
        put(make_checkpoint("t", "cp-1", run_id="r1"))
        put(make_checkpoint("t", "cp-2", run_id="r2", parent_id="cp-1"))
        put(make_checkpoint("t", "cp-3", run_id="r1", namespace="child:1"))
        put(make_checkpoint("u", "cp-4", run_id="r1"))
        put(make_checkpoint("u", "cp-5", run_id=None, metadata={"run_id": "r1"}))
        put(make_checkpoint("u", "cp-6", run_id="r3"))
        store.put_checkpoint_writes(
            [make_checkpoint_write("t", "cp-1", "task", 0), make_checkpoint_write("t", "cp-2", "task", 0)],
            replace=False,
        )
        store.delete_checkpoints_for_runs(["r1", "r3"])
        assert keys_of(store.list_checkpoints()) == [("u", "", "cp-5"), ("t", "", "cp-2")]
        assert writes_of(store, "t", "cp-2") == [("task", 0, b"task:0")]
        assert writes_of(store, "t", "cp-1") == []  # its writes went with it
        before = self.everything(store)
        store.delete_checkpoints_for_runs([])
        store.delete_checkpoints_for_runs(["nope"])
        store.delete_checkpoints_for_runs(("r2",))
        assert self.everything(store) == [cp for cp in before if cp["run_id"] != "r2"]

    # ---- copy -------------------------------------------------------------------------------
    def test_copy_thread(self, store: Store) -> None:
        for namespace, cp_id in (("", "cp-1"), ("", "cp-2"), ("child:1", "cp-3")):
            store.put_checkpoint(make_checkpoint("src", cp_id, namespace=namespace, run_id="r", created_at=7.0))
            store.put_checkpoint_writes(
                [make_checkpoint_write("src", cp_id, "task", i, namespace=namespace, task_path="p") for i in (1, 0)],
                replace=False,
            )
        store.put_checkpoint(make_checkpoint("other", "cp-9"))
        source = [r.model_dump() for r in store.list_checkpoints(thread_id="src")]
        store.copy_checkpoints("src", "dst")
        copied = [r.model_dump() for r in store.list_checkpoints(thread_id="dst")]
        for cp in source:
            cp["thread_id"] = "dst"
            for write in cp["writes"]:
                write["thread_id"] = "dst"
        assert copied == source and len(copied) == 3
        assert [len(cp["writes"]) for cp in copied] == [2, 2, 2]
        assert [r.model_dump() for r in store.list_checkpoints(thread_id="src")] == [
            {**cp, "thread_id": "src", "writes": [{**w, "thread_id": "src"} for w in cp["writes"]]} for cp in source
        ]
        assert keys_of(store.list_checkpoints(checkpoint_id="cp-1")) == [("dst", "", "cp-1"), ("src", "", "cp-1")]
        assert ids_of(store.list_checkpoints(thread_id="other")) == ["cp-9"]

    def test_copy_thread_into_existing_target(self, store: Store) -> None:
        store.put_checkpoint(make_checkpoint("src", "cp-2", data=b"source"))
        store.put_checkpoint_writes([make_checkpoint_write("src", "cp-2", "task", 0, data=b"source")], replace=False)
        store.put_checkpoint(make_checkpoint("dst", "cp-1", data=b"target"))
        store.put_checkpoint(make_checkpoint("dst", "cp-2", data=b"target"))
        store.put_checkpoint_writes([make_checkpoint_write("dst", "cp-2", "task", 0, data=b"target")], replace=False)
        store.copy_checkpoints("src", "dst")
        assert [(r.checkpoint_id, r.data) for r in store.list_checkpoints(thread_id="dst")] == [
            ("cp-2", b"source"), ("cp-1", b"target"),
        ]  # fmt: skip
        assert writes_of(store, "dst", "cp-2") == [("task", 0, b"source")]
        before = self.everything(store)
        store.copy_checkpoints("nope", "dst")
        store.copy_checkpoints("src", "src")
        assert self.everything(store) == before

    # ---- prune ------------------------------------------------------------------------------
    def _prune_data(self, store: Store) -> None:
        for thread in ("t", "u"):
            for namespace, count in (("", 3), ("child:1", 2)):
                for i in range(count):
                    cp_id = f"cp-{namespace}{i}"
                    store.put_checkpoint(make_checkpoint(thread, cp_id, namespace=namespace))
                    store.put_checkpoint_writes(
                        [make_checkpoint_write(thread, cp_id, "task", 0, namespace=namespace)], replace=False
                    )

    def test_prune_keep_latest(self, store: Store) -> None:
        self._prune_data(store)
        others = [cp for cp in self.everything(store) if cp["thread_id"] == "u"]
        store.prune_checkpoints(["t", "nope"], keep_latest=True)
        kept = store.list_checkpoints(thread_id="t")
        assert keys_of(kept) == [("t", "child:1", "cp-child:11"), ("t", "", "cp-2")]
        assert [[(w.task_id, w.idx) for w in cp.writes] for cp in kept] == [[("task", 0)], [("task", 0)]]
        assert [cp for cp in self.everything(store) if cp["thread_id"] == "u"] == others
        before = self.everything(store)
        store.prune_checkpoints(["t"], keep_latest=True)  # again: only the latest are left
        assert self.everything(store) == before
        assert writes_of(store, "t", "cp-0") == [] and writes_of(store, "t", "cp-child:10", "child:1") == []

    def test_prune_keep_latest_keeps_writes_of_checkpoints_not_put_yet(self, store: Store) -> None:
        # A live run may store a task's writes before the checkpoint they belong to: a prune
        # running meanwhile deletes only the writes of the checkpoints it deletes.
        self._prune_data(store)
        early = [
            make_checkpoint_write("t", "cp-3", "task", 0, data=b"ahead"),  # the next checkpoint's
            make_checkpoint_write("t", "cp-child:12", "task", 1, namespace="child:1", data=b"child ahead"),
            make_checkpoint_write("t", "cp-00", "task", 0, data=b"older id"),  # older than the latest
        ]
        store.put_checkpoint_writes(early, replace=False)
        store.prune_checkpoints(["t"], keep_latest=True)
        assert keys_of(store.list_checkpoints(thread_id="t")) == [("t", "child:1", "cp-child:11"), ("t", "", "cp-2")]
        assert writes_of(store, "t", "cp-2") == [("task", 0, b"task:0")]
        assert writes_of(store, "t", "cp-1") == []  # deleted with its checkpoint
        store.put_checkpoint(make_checkpoint("t", "cp-3", parent_id="cp-2"))  # the run goes on
        assert writes_of(store, "t", "cp-3") == [("task", 0, b"ahead")]
        latest = store.get_checkpoint("t")
        assert latest is not None and [w.model_dump() for w in latest.writes] == [early[0].model_dump()]
        assert writes_of(store, "t", "cp-child:12", "child:1") == [("task", 1, b"child ahead")]
        assert writes_of(store, "t", "cp-00") == [("task", 0, b"older id")]  # puts cp-00 (older than cp-3)
        store.prune_checkpoints(["t"], keep_latest=True)  # now cp-2, cp-00 and cp-child:11 go
        assert keys_of(store.list_checkpoints(thread_id="t")) == [("t", "child:1", "cp-child:12"), ("t", "", "cp-3")]
        assert writes_of(store, "t", "cp-3") == [("task", 0, b"ahead")]
        assert writes_of(store, "t", "cp-child:12", "child:1") == [("task", 1, b"child ahead")]
        assert writes_of(store, "t", "cp-2") == [] and writes_of(store, "t", "cp-00") == []

    def test_prune_delete_all(self, store: Store) -> None:
        self._prune_data(store)
        store.put_checkpoint_writes([make_checkpoint_write("t", "cp-9", "task", 0)], replace=False)  # no checkpoint
        others = [cp for cp in self.everything(store) if cp["thread_id"] == "u"]
        store.prune_checkpoints(("t",), keep_latest=False)
        assert store.list_checkpoints(thread_id="t") == []
        assert self.everything(store) == others
        assert writes_of(store, "t", "cp-2") == [] and writes_of(store, "t", "cp-9") == []
        store.prune_checkpoints(["t", "u"], keep_latest=False)
        assert store.list_checkpoints() == []

