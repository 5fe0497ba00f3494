"""Conformance tests for checkpoint storage: put, writes, get, list, delete, copy and prune.

The methods mirror LangGraph's ``BaseCheckpointSaver`` (``put``, ``put_writes``, ``get_tuple``,
``list``, ``delete_thread``, ``delete_for_runs``, ``copy_thread``, ``prune``); a saver sits on
them, serializing itself, so the store only sees bytes and JSON metadata.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agentspan.errors import ConfigurationError
from agentspan.records import CheckpointRecord, CheckpointWrite
from agentspan.stores.base import Store
from agentspan.testing.conformance.records import PAYLOAD, ConformanceBase

__all__ = ["CheckpointConformance", "make_checkpoint", "make_checkpoint_write"]

ALL_BYTES = bytes(range(256)) * 3
"""Binary data that is not UTF-8 and holds NUL bytes."""


def make_checkpoint(thread_id: str, checkpoint_id: str, **fields: Any) -> CheckpointRecord:
    """Returns a new (not stored) checkpoint with test defaults."""
    fields.setdefault("type", "msgpack")
    fields.setdefault("data", f"state of {thread_id}/{checkpoint_id}".encode())
    fields.setdefault("metadata", {"source": "loop", "step": 1})
    return CheckpointRecord(thread_id=thread_id, checkpoint_id=checkpoint_id, **fields)


def make_checkpoint_write(
    thread_id: str, checkpoint_id: str, task_id: str, idx: int, **fields: Any
) -> CheckpointWrite:
    """Returns a new pending write with test defaults."""
    fields.setdefault("channel", "messages")
    fields.setdefault("type", "msgpack")
    fields.setdefault("data", f"{task_id}:{idx}".encode())
    return CheckpointWrite(thread_id=thread_id, checkpoint_id=checkpoint_id, task_id=task_id, idx=idx, **fields)


def _ids(records: list[CheckpointRecord]) -> list[str]:
    return [r.checkpoint_id for r in records]


def _keys(records: list[CheckpointRecord]) -> list[tuple[str, str, str]]:
    return [(r.thread_id, r.namespace, r.checkpoint_id) for r in records]


def _writes(store: Store, thread_id: str, checkpoint_id: str, namespace: str = "") -> list[tuple[str, int, bytes]]:
    """The writes stored against a checkpoint as ``(task_id, idx, data)``, putting it first if absent."""
    if store.get_checkpoint(thread_id, namespace, checkpoint_id) is None:
        store.put_checkpoint(make_checkpoint(thread_id, checkpoint_id, namespace=namespace))
    got = store.get_checkpoint(thread_id, namespace, checkpoint_id)
    assert got is not None
    return [(w.task_id, w.idx, w.data) for w in got.writes]


class CheckpointConformance(ConformanceBase):
    """Contract tests for the checkpoint methods of a `Store`."""

    def everything(self, store: Store) -> list[dict[str, Any]]:
        """Every checkpoint of the store, with its writes, as plain data."""
        return [r.model_dump() for r in store.list_checkpoints()]

    # ---- put and get ------------------------------------------------------------------------
    def test_put_get_round_trip(self, store: Store) -> None:
        cp = make_checkpoint(
            "t-1", "cp-01", namespace="child:1|ns:é", parent_id="cp-00", run_id="run-9", type="pickle",
            data=ALL_BYTES, metadata={"payload": PAYLOAD, "step": -1, "source": "input"}, created_at=1234.5,
        )  # fmt: skip
        store.put_checkpoint(cp)
        got = store.get_checkpoint("t-1", "child:1|ns:é", "cp-01")
        assert got is not None and got.model_dump() == cp.model_dump()
        assert type(got.data) is bytes and got.data == ALL_BYTES
        assert store.get_checkpoint("t-1", "child:1|ns:é").model_dump() == cp.model_dump()  # type: ignore[union-attr]
        for data in (b"", b"\x00", bytes(1 << 20)):
            store.put_checkpoint(make_checkpoint("t-2", "cp-01", data=data, metadata={}))
            again = store.get_checkpoint("t-2")
            assert again is not None and (again.data, again.metadata, again.parent_id) == (data, {}, None)

    def test_get_missing(self, store: Store) -> None:
        store.put_checkpoint(make_checkpoint("t", "cp-1", namespace="child"))
        assert store.get_checkpoint("nope") is None
        assert store.get_checkpoint("t") is None  # only in another namespace
        assert store.get_checkpoint("t", "", "cp-1") is None
        assert store.get_checkpoint("t", "child", "cp-2") is None
        assert store.get_checkpoint("other", "child", "cp-1") is None

    def test_latest_per_thread_and_namespace(self, store: Store) -> None:
        for thread, namespace, cp_id in (
            ("t", "", "cp-3"), ("t", "", "cp-1"), ("t", "child:1", "cp-4"), ("t", "child:1", "cp-2"),
            ("t", "", "cp-0"), ("u", "", "cp-9"),
        ):  # fmt: skip
            store.put_checkpoint(make_checkpoint(thread, cp_id, namespace=namespace))
        assert store.get_checkpoint("t").checkpoint_id == "cp-3"  # type: ignore[union-attr]
        assert store.get_checkpoint("t", "child:1").checkpoint_id == "cp-4"  # type: ignore[union-attr]
        assert store.get_checkpoint("u").checkpoint_id == "cp-9"  # type: ignore[union-attr]
        store.put_checkpoint(make_checkpoint("v", "9"))
        store.put_checkpoint(make_checkpoint("v", "10"))
        assert store.get_checkpoint("v").checkpoint_id == "9"  # type: ignore[union-attr]  # ids compare as text

    def test_put_replaces_and_keeps_writes(self, store: Store) -> None:
        store.put_checkpoint(make_checkpoint("t", "cp-1", parent_id="cp-0", run_id="r1"))
        store.put_checkpoint_writes([make_checkpoint_write("t", "cp-1", "task", 0)], replace=False)
        ignored = make_checkpoint_write("t", "cp-1", "task", 1)
        new = make_checkpoint(
            "t", "cp-1", parent_id=None, run_id="r2", type="json", data=b"new", metadata={"v": 2},
            created_at=5.0, writes=[ignored],
        )  # fmt: skip
        store.put_checkpoint(new)
        got = store.get_checkpoint("t", "", "cp-1")
        assert got is not None
        assert got.model_dump(exclude={"writes"}) == new.model_dump(exclude={"writes"})
        assert [(w.task_id, w.idx) for w in got.writes] == [("task", 0)]
        assert len(store.list_checkpoints()) == 1

    # ---- writes -----------------------------------------------------------------------------
    def test_writes_round_trip_in_order(self, store: Store) -> None:
        store.put_checkpoint(make_checkpoint("t", "cp-1"))
        special = make_checkpoint_write("t", "cp-1", "task-b", -3, channel="__error__", data=b"")
        writes = [
            make_checkpoint_write("t", "cp-1", "task-b", 1, task_path="~1", data=ALL_BYTES),
            make_checkpoint_write("t", "cp-1", "task-b", 0, task_path="~1", type="json", channel="a"),
            make_checkpoint_write("t", "cp-1", "task-a", 0, task_path="~1"),
            make_checkpoint_write("t", "cp-1", "task-z", 0, task_path="~0"),
            make_checkpoint_write("t", "cp-1", "task-c", 0),
            special.model_copy(update={"task_path": "~1"}),
        ]
        store.put_checkpoint_writes(writes, replace=False)
        got = store.get_checkpoint("t")
        assert got is not None
        expected = [writes[4], writes[3], writes[2], writes[5], writes[1], writes[0]]
        assert [w.model_dump() for w in got.writes] == [w.model_dump() for w in expected]
        assert type(got.writes[5].data) is bytes and got.writes[5].data == ALL_BYTES
        (listed,) = store.list_checkpoints(thread_id="t")
        assert [w.model_dump() for w in listed.writes] == [w.model_dump() for w in expected]

    def test_writes_keep_or_replace(self, store: Store) -> None:
        def write(idx: int, data: bytes) -> CheckpointWrite:
            return make_checkpoint_write("t", "cp-1", "task", idx, data=data)

        store.put_checkpoint_writes([write(0, b"v1"), write(-1, b"e1")], replace=False)
        store.put_checkpoint_writes([write(0, b"v2"), write(1, b"w1"), write(-1, b"e2")], replace=False)
        assert _writes(store, "t", "cp-1") == [("task", -1, b"e1"), ("task", 0, b"v1"), ("task", 1, b"w1")]
        store.put_checkpoint_writes(
            [write(-1, b"e3"), make_checkpoint_write("t", "cp-1", "task", 0, channel="c", task_path="p", data=b"v3")],
            replace=True,
        )
        got = store.get_checkpoint("t")
        assert got is not None
        assert [(w.idx, w.data, w.channel, w.task_path) for w in got.writes] == [
            (-1, b"e3", "messages", ""), (1, b"w1", "messages", ""), (0, b"v3", "c", "p"),
        ]  # fmt: skip  # the replaced write took its new task_path: ("", 1) < ("p", 0)

    def test_writes_batch_applied_in_order(self, store: Store) -> None:
        def write(task: str, data: bytes) -> CheckpointWrite:
            return make_checkpoint_write("t", "cp-1", task, 0, data=data)

        store.put_checkpoint_writes([write("keep", b"first"), write("keep", b"second")], replace=False)
        store.put_checkpoint_writes([write("swap", b"first"), write("swap", b"second")], replace=True)
        assert _writes(store, "t", "cp-1") == [("keep", 0, b"first"), ("swap", 0, b"second")]

    def test_writes_belong_to_one_checkpoint(self, store: Store) -> None:
        store.put_checkpoint_writes(
            [
                make_checkpoint_write("t", "cp-1", "task", 0, data=b"root"),
                make_checkpoint_write("t", "cp-1", "task", 0, namespace="child", data=b"child"),
                make_checkpoint_write("u", "cp-1", "task", 0, data=b"other thread"),
                make_checkpoint_write("t", "cp-2", "task", 0, data=b"next"),
            ],
            replace=False,
        )  # stored before their checkpoints, shown once those are
        assert _writes(store, "t", "cp-1") == [("task", 0, b"root")]
        assert _writes(store, "t", "cp-1", "child") == [("task", 0, b"child")]
        assert _writes(store, "u", "cp-1") == [("task", 0, b"other thread")]
        assert _writes(store, "t", "cp-3") == []
        assert _writes(store, "t", "cp-2") == [("task", 0, b"next")]

    def test_put_with_writes_stores_both_or_nothing(self, store: Store) -> None:
        store.put_checkpoint_writes([make_checkpoint_write("t", "cp-1", "task", 0, data=b"stored")], replace=False)
        writes = [
            make_checkpoint_write("t", "cp-1", "task", 0, data=b"dropped: kept the stored one"),
            make_checkpoint_write("t", "cp-1", "task", 1, task_path="~1", data=ALL_BYTES),
            make_checkpoint_write("t", "cp-1", "task", 1, task_path="~1", data=b"dropped: first wins"),
            make_checkpoint_write("t", "cp-2", "next", 0, namespace="child", data=b"of a checkpoint not put"),
            make_checkpoint_write("u", "cp-1", "other", 0, data=b"of another thread"),
        ]
        cp = make_checkpoint("t", "cp-2", parent_id="cp-1", run_id="r", writes=[writes[3]])  # ``writes`` ignored
        store.put_checkpoint_with_writes(cp, writes, replace=False)
        got = store.get_checkpoint("t")
        assert got is not None and got.model_dump(exclude={"writes"}) == cp.model_dump(exclude={"writes"})
        assert got.writes == []
        assert _writes(store, "t", "cp-1") == [("task", 0, b"stored"), ("task", 1, ALL_BYTES)]
        assert _writes(store, "t", "cp-2", "child") == [("next", 0, b"of a checkpoint not put")]
        assert _writes(store, "u", "cp-1") == [("other", 0, b"of another thread")]
        store.put_checkpoint_with_writes(
            make_checkpoint("t", "cp-3"), [make_checkpoint_write("t", "cp-1", "task", 0, data=b"new")], replace=True
        )
        assert _writes(store, "t", "cp-1")[0] == ("task", 0, b"new")
        store.put_checkpoint_with_writes(make_checkpoint("t", "cp-4", data=b"no writes"), [], replace=False)
        assert store.get_checkpoint("t").data == b"no writes"  # type: ignore[union-attr]

        before = self.everything(store)
        with pytest.raises(ConfigurationError):  # a bad checkpoint: its writes are not stored either
            store.put_checkpoint_with_writes(
                make_checkpoint("t", "cp-5", metadata={"x": float("nan")}),
                [make_checkpoint_write("t", "cp-4", "task", 0)], replace=False,
            )  # fmt: skip
        assert self.everything(store) == before

    # ---- list -------------------------------------------------------------------------------
    def _list_data(self, store: Store) -> None:
        for i in range(4):
            store.put_checkpoint(
                make_checkpoint("a", f"cp-{i}", parent_id=f"cp-{i - 1}" if i else None,
                                metadata={"source": "input" if i % 2 == 0 else "loop", "step": i})
            )  # fmt: skip
        store.put_checkpoint(make_checkpoint("a", "cp-4", namespace="child:1", metadata={"step": 0}))
        store.put_checkpoint(make_checkpoint("b", "cp-5", metadata={"source": "loop", "step": 1}))
        store.put_checkpoint_writes([make_checkpoint_write("a", "cp-2", "task", 0)], replace=False)

    def test_list_filters_and_order(self, store: Store) -> None:
        self._list_data(store)
        assert _ids(store.list_checkpoints()) == ["cp-5", "cp-4", "cp-3", "cp-2", "cp-1", "cp-0"]
        assert _ids(store.list_checkpoints(thread_id="a")) == ["cp-4", "cp-3", "cp-2", "cp-1", "cp-0"]
        assert _ids(store.list_checkpoints(thread_id="a", namespace="")) == ["cp-3", "cp-2", "cp-1", "cp-0"]
        assert _ids(store.list_checkpoints(namespace="child:1")) == ["cp-4"]
        assert _ids(store.list_checkpoints(thread_id="a", checkpoint_id="cp-2")) == ["cp-2"]
        assert _ids(store.list_checkpoints(thread_id="a", namespace="child:1", checkpoint_id="cp-2")) == []
        assert _ids(store.list_checkpoints(thread_id="a", before="cp-2")) == ["cp-1", "cp-0"]
        assert _ids(store.list_checkpoints(before="cp-5", limit=2)) == ["cp-4", "cp-3"]
        assert _ids(store.list_checkpoints(thread_id="a", namespace="", limit=1)) == ["cp-3"]
        assert _ids(store.list_checkpoints(limit=0)) == []
        assert _ids(store.list_checkpoints(limit=100)) == _ids(store.list_checkpoints())
        assert store.list_checkpoints(thread_id="nope") == []
        assert store.list_checkpoints(thread_id="a", namespace="nope") == []
        (cp2,) = store.list_checkpoints(checkpoint_id="cp-2")
        assert cp2.model_dump() == store.get_checkpoint("a", "", "cp-2").model_dump()  # type: ignore[union-attr]
        assert [(w.task_id, w.idx) for w in cp2.writes] == [("task", 0)]
        assert (cp2.parent_id, cp2.metadata) == ("cp-1", {"source": "input", "step": 2})

    def test_list_metadata_filter(self, store: Store) -> None:
        self._list_data(store)
        assert _ids(store.list_checkpoints(metadata={"source": "loop"})) == ["cp-5", "cp-3", "cp-1"]
        assert _ids(store.list_checkpoints(thread_id="a", metadata={"source": "loop"})) == ["cp-3", "cp-1"]
        assert _ids(store.list_checkpoints(metadata={"source": "input", "step": 2})) == ["cp-2"]
        assert _ids(store.list_checkpoints(metadata={"source": "loop"}, limit=2)) == ["cp-5", "cp-3"]
        assert _ids(store.list_checkpoints(metadata={"source": "loop"}, before="cp-5", limit=1)) == ["cp-3"]
        assert _ids(store.list_checkpoints(metadata={"source": "update", "step": 99})) == []
        assert _ids(store.list_checkpoints(metadata={"step": 0})) == ["cp-4", "cp-0"]
        assert _ids(store.list_checkpoints(metadata={"step": 0}, limit=1)) == ["cp-4"]  # the limit counts matches
        assert _ids(store.list_checkpoints(metadata={"step": 3, "source": "loop"}, limit=1)) == ["cp-3"]
        assert _ids(store.list_checkpoints(thread_id="a", metadata={})) == _ids(store.list_checkpoints(thread_id="a"))

    def test_list_metadata_filter_compares_json_values(self, store: Store) -> None:
        metadata = {
            "cfg": {"x": 1, "y": [1, {"z": None}]}, "tags": ["a", "b"], "flag": True, "step": 1, "none": None,
            "score": 1.5, "text": "1", "a.b": "dotted", 'q"k': "quoted", "": "empty", "uni": "🚀 é",
            "big": 2**63 + 12345, "payload": PAYLOAD,
        }  # fmt: skip
        store.put_checkpoint(make_checkpoint("t", "cp-1", metadata=metadata))
        store.put_checkpoint(make_checkpoint("t", "cp-0", metadata={"a": {"b": "dotted"}, "text": 1}))
        matching = [
            {"cfg": {"y": [1, {"z": None}], "x": 1}}, {"tags": ["a", "b"]}, {"flag": True}, {"step": 1},
            {"step": 1.0}, {"none": None, "flag": True}, {"score": 1.5}, {"text": "1"}, {"a.b": "dotted"},
            {'q"k': "quoted"}, {"": "empty"}, {"uni": "🚀 é"}, {"big": 2**63 + 12345}, {"payload": PAYLOAD},
            {"tags": ("a", "b")}, {"cfg": {"x": 1, "y": [1.0, {"z": None}]}}, {"flag": True, "step": 1},
        ]  # fmt: skip
        for query in matching:
            assert _ids(store.list_checkpoints(metadata=query)) == ["cp-1"], query
        failing = [
            {"cfg": {"x": 1}}, {"cfg": {"x": 1, "y": [1, {"z": None}], "w": 2}}, {"tags": ["b", "a"]},
            {"tags": ["a"]}, {"flag": 1}, {"step": True}, {"step": "1"}, {"none": False}, {"none": 0},
            {"missing": "x"}, {"text": 1.5}, {"uni": "🚀 e"}, {"big": 2**63 + 12346}, {"a": "dotted"},
            {"cfg": '{"x":1,"y":[1,{"z":null}]}'}, {"tags": '["a","b"]'}, {"flag": True, "step": 2},
        ]  # fmt: skip
        for query in failing:
            assert store.list_checkpoints(thread_id="t", namespace="", metadata=query) == [], query
        assert _ids(store.list_checkpoints(metadata={"text": 1})) == ["cp-0"]
        assert _ids(store.list_checkpoints(metadata={"none": None})) == ["cp-1", "cp-0"]  # missing is null
        assert _ids(store.list_checkpoints(metadata={"missing": None})) == ["cp-1", "cp-0"]
        assert _ids(store.list_checkpoints(metadata={"a": {"b": "dotted"}})) == ["cp-0"]

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
        assert _writes(store, "t", "cp-1") == [] and _writes(store, "t", "cp-1", "child:1") == []
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
        assert _keys(store.list_checkpoints()) == [("u", "", "cp-5"), ("t", "", "cp-2")]
        assert _writes(store, "t", "cp-2") == [("task", 0, b"task:0")]
        assert _writes(store, "t", "cp-1") == []  # its writes went with it
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
        assert _keys(store.list_checkpoints(checkpoint_id="cp-1")) == [("dst", "", "cp-1"), ("src", "", "cp-1")]
        assert _ids(store.list_checkpoints(thread_id="other")) == ["cp-9"]

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
        assert _writes(store, "dst", "cp-2") == [("task", 0, b"source")]
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
        assert _keys(kept) == [("t", "child:1", "cp-child:11"), ("t", "", "cp-2")]
        assert [[(w.task_id, w.idx) for w in cp.writes] for cp in kept] == [[("task", 0)], [("task", 0)]]
        assert [cp for cp in self.everything(store) if cp["thread_id"] == "u"] == others
        before = self.everything(store)
        store.prune_checkpoints(["t"], keep_latest=True)  # again: only the latest are left
        assert self.everything(store) == before
        assert _writes(store, "t", "cp-0") == [] and _writes(store, "t", "cp-child:10", "child:1") == []

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
        assert _keys(store.list_checkpoints(thread_id="t")) == [("t", "child:1", "cp-child:11"), ("t", "", "cp-2")]
        assert _writes(store, "t", "cp-2") == [("task", 0, b"task:0")]
        assert _writes(store, "t", "cp-1") == []  # deleted with its checkpoint
        store.put_checkpoint(make_checkpoint("t", "cp-3", parent_id="cp-2"))  # the run goes on
        assert _writes(store, "t", "cp-3") == [("task", 0, b"ahead")]
        latest = store.get_checkpoint("t")
        assert latest is not None and [w.model_dump() for w in latest.writes] == [early[0].model_dump()]
        assert _writes(store, "t", "cp-child:12", "child:1") == [("task", 1, b"child ahead")]
        assert _writes(store, "t", "cp-00") == [("task", 0, b"older id")]  # puts cp-00 (older than cp-3)
        store.prune_checkpoints(["t"], keep_latest=True)  # now cp-2, cp-00 and cp-child:11 go
        assert _keys(store.list_checkpoints(thread_id="t")) == [("t", "child:1", "cp-child:12"), ("t", "", "cp-3")]
        assert _writes(store, "t", "cp-3") == [("task", 0, b"ahead")]
        assert _writes(store, "t", "cp-child:12", "child:1") == [("task", 1, b"child ahead")]
        assert _writes(store, "t", "cp-2") == [] and _writes(store, "t", "cp-00") == []

    def test_prune_delete_all(self, store: Store) -> None:
        self._prune_data(store)
        store.put_checkpoint_writes([make_checkpoint_write("t", "cp-9", "task", 0)], replace=False)  # no checkpoint
        others = [cp for cp in self.everything(store) if cp["thread_id"] == "u"]
        store.prune_checkpoints(("t",), keep_latest=False)
        assert store.list_checkpoints(thread_id="t") == []
        assert self.everything(store) == others
        assert _writes(store, "t", "cp-2") == [] and _writes(store, "t", "cp-9") == []
        store.prune_checkpoints(["t", "u"], keep_latest=False)
        assert store.list_checkpoints() == []

    # ---- edge cases ---------------------------------------------------------------------------
    def test_empty_inputs(self, store: Store) -> None:
        store.put_checkpoint(make_checkpoint("t", "cp-1", run_id="r"))
        before = self.everything(store)
        store.put_checkpoint_writes([], replace=False)
        store.put_checkpoint_writes([], replace=True)
        store.delete_checkpoints_for_runs([])
        store.prune_checkpoints([], keep_latest=True)
        store.prune_checkpoints([], keep_latest=False)
        assert self.everything(store) == before

    def test_records_are_copies(self, store: Store) -> None:
        cp = make_checkpoint("t", "cp-1", metadata={"tags": ["a"], "cfg": {"x": 1}})
        store.put_checkpoint(cp)
        cp.metadata["tags"].append("b")
        cp.metadata["new"] = 1
        writes = [make_checkpoint_write("t", "cp-1", "task", 0)]
        store.put_checkpoint_writes(writes, replace=False)
        writes.append(make_checkpoint_write("t", "cp-1", "task", 1))
        got = store.get_checkpoint("t")
        assert got is not None
        got.metadata["tags"].append("c")
        got.metadata["cfg"]["x"] = 2
        got.writes.append(writes[1])
        got.writes[0].idx = 5
        listed = store.list_checkpoints()[0]
        listed.metadata["cfg"]["y"] = 3
        listed.writes.clear()
        for again in (store.get_checkpoint("t"), store.list_checkpoints()[0]):
            assert again is not None and again.metadata == {"tags": ["a"], "cfg": {"x": 1}}
            assert [(w.task_id, w.idx) for w in again.writes] == [("task", 0)]

    def test_bad_metadata_refused(self, store: Store) -> None:
        store.put_checkpoint(make_checkpoint("t", "cp-1", data=b"kept"))
        before = self.everything(store)
        for bad in ({"x": object()}, {"x": {1, 2}}, {"x": float("nan")}, {"x": [float("inf")]}, {"x": b"raw"}):
            with pytest.raises(ConfigurationError):
                store.put_checkpoint(make_checkpoint("t", "cp-1", data=b"new", metadata=bad))
            with pytest.raises(ConfigurationError):
                store.put_checkpoint(make_checkpoint("t", "cp-2", metadata=bad))
            with pytest.raises(ConfigurationError):
                store.list_checkpoints(metadata=bad)
        assert self.everything(store) == before
        tuples = make_checkpoint("t", "cp-3", metadata={"pair": (1, 2)})
        store.put_checkpoint(tuples)
        assert store.get_checkpoint("t").metadata == {"pair": [1, 2]}  # type: ignore[union-attr]

    def test_single_string_ids_refused(self, store: Store) -> None:
        store.put_checkpoint(make_checkpoint("t", "cp-1", run_id="t"))
        before = self.everything(store)
        with pytest.raises(ConfigurationError):
            store.delete_checkpoints_for_runs("t")
        with pytest.raises(ConfigurationError):
            store.prune_checkpoints("t", keep_latest=False)
        with pytest.raises(ConfigurationError):
            store.list_checkpoints(limit=-1)
        assert self.everything(store) == before

    def test_concurrent_savers(self, store: Store) -> None:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(30):
                    cp_id = f"cp-{i:03d}"
                    store.put_checkpoint(make_checkpoint(f"t{n}", cp_id, parent_id=None, metadata={"step": i}))
                    store.put_checkpoint_writes(
                        [make_checkpoint_write(f"t{n}", cp_id, "task", idx) for idx in range(2)], replace=False
                    )
                    got = store.get_checkpoint(f"t{n}")
                    assert got is not None and got.checkpoint_id == cp_id
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for n in range(4):
            listed = store.list_checkpoints(thread_id=f"t{n}")
            assert _ids(listed) == [f"cp-{i:03d}" for i in reversed(range(30))]
            assert all(len(cp.writes) == 2 for cp in listed)
