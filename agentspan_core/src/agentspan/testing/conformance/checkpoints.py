"""Conformance tests for checkpoint storage: put, writes, get and list (delete, copy and prune:
`checkpoint_maintenance`).

The methods mirror LangGraph's ``BaseCheckpointSaver`` (``put``, ``put_writes``, ``get_tuple``,
``list``, ``delete_thread``, ``delete_for_runs``, ``copy_thread``, ``prune``); a saver sits on
them, serializing itself, so the store only sees bytes and JSON metadata.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from agentspan.errors import ConfigurationError
from agentspan.records import CheckpointRecord, CheckpointWrite
from agentspan.stores.base import Store
from agentspan.testing.conformance.checkpoint_maintenance import CheckpointMaintenanceConformance
from agentspan.testing.conformance.records import (
    PAYLOAD,
    ids_of,
    make_checkpoint,
    make_checkpoint_write,
    refused_as_not_utf8,
    writes_of,
)

__all__ = ["CheckpointConformance", "make_checkpoint", "make_checkpoint_write"]

ALL_BYTES = bytes(range(256)) * 3
"""Binary data that is not UTF-8 and holds NUL bytes."""


class CheckpointConformance(CheckpointMaintenanceConformance):
    """Contract tests for the checkpoint methods of a `Store`."""

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
        assert writes_of(store, "t", "cp-1") == [("task", -1, b"e1"), ("task", 0, b"v1"), ("task", 1, b"w1")]
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
        assert writes_of(store, "t", "cp-1") == [("keep", 0, b"first"), ("swap", 0, b"second")]

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
        assert writes_of(store, "t", "cp-1") == [("task", 0, b"root")]
        assert writes_of(store, "t", "cp-1", "child") == [("task", 0, b"child")]
        assert writes_of(store, "u", "cp-1") == [("task", 0, b"other thread")]
        assert writes_of(store, "t", "cp-3") == []
        assert writes_of(store, "t", "cp-2") == [("task", 0, b"next")]

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
        assert writes_of(store, "t", "cp-1") == [("task", 0, b"stored"), ("task", 1, ALL_BYTES)]
        assert writes_of(store, "t", "cp-2", "child") == [("next", 0, b"of a checkpoint not put")]
        assert writes_of(store, "u", "cp-1") == [("other", 0, b"of another thread")]
        store.put_checkpoint_with_writes(
            make_checkpoint("t", "cp-3"), [make_checkpoint_write("t", "cp-1", "task", 0, data=b"new")], replace=True
        )
        assert writes_of(store, "t", "cp-1")[0] == ("task", 0, b"new")
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
        assert ids_of(store.list_checkpoints()) == ["cp-5", "cp-4", "cp-3", "cp-2", "cp-1", "cp-0"]
        assert ids_of(store.list_checkpoints(thread_id="a")) == ["cp-4", "cp-3", "cp-2", "cp-1", "cp-0"]
        assert ids_of(store.list_checkpoints(thread_id="a", namespace="")) == ["cp-3", "cp-2", "cp-1", "cp-0"]
        assert ids_of(store.list_checkpoints(namespace="child:1")) == ["cp-4"]
        assert ids_of(store.list_checkpoints(thread_id="a", checkpoint_id="cp-2")) == ["cp-2"]
        assert ids_of(store.list_checkpoints(thread_id="a", namespace="child:1", checkpoint_id="cp-2")) == []
        assert ids_of(store.list_checkpoints(thread_id="a", before="cp-2")) == ["cp-1", "cp-0"]
        assert ids_of(store.list_checkpoints(before="cp-5", limit=2)) == ["cp-4", "cp-3"]
        assert ids_of(store.list_checkpoints(thread_id="a", namespace="", limit=1)) == ["cp-3"]
        assert ids_of(store.list_checkpoints(limit=0)) == []
        assert ids_of(store.list_checkpoints(limit=100)) == ids_of(store.list_checkpoints())
        assert store.list_checkpoints(thread_id="nope") == []
        assert store.list_checkpoints(thread_id="a", namespace="nope") == []
        (cp2,) = store.list_checkpoints(checkpoint_id="cp-2")
        assert cp2.model_dump() == store.get_checkpoint("a", "", "cp-2").model_dump()  # type: ignore[union-attr]
        assert [(w.task_id, w.idx) for w in cp2.writes] == [("task", 0)]
        assert (cp2.parent_id, cp2.metadata) == ("cp-1", {"source": "input", "step": 2})

    def test_list_metadata_filter(self, store: Store) -> None:
        self._list_data(store)
        assert ids_of(store.list_checkpoints(metadata={"source": "loop"})) == ["cp-5", "cp-3", "cp-1"]
        assert ids_of(store.list_checkpoints(thread_id="a", metadata={"source": "loop"})) == ["cp-3", "cp-1"]
        assert ids_of(store.list_checkpoints(metadata={"source": "input", "step": 2})) == ["cp-2"]
        assert ids_of(store.list_checkpoints(metadata={"source": "loop"}, limit=2)) == ["cp-5", "cp-3"]
        assert ids_of(store.list_checkpoints(metadata={"source": "loop"}, before="cp-5", limit=1)) == ["cp-3"]
        assert ids_of(store.list_checkpoints(metadata={"source": "update", "step": 99})) == []
        assert ids_of(store.list_checkpoints(metadata={"step": 0})) == ["cp-4", "cp-0"]
        assert ids_of(store.list_checkpoints(metadata={"step": 0}, limit=1)) == ["cp-4"]  # the limit counts matches
        assert ids_of(store.list_checkpoints(metadata={"step": 3, "source": "loop"}, limit=1)) == ["cp-3"]
        unfiltered = ids_of(store.list_checkpoints(thread_id="a"))
        assert ids_of(store.list_checkpoints(thread_id="a", metadata={})) == unfiltered

    def test_list_metadata_filter_compares_json_values(self, store: Store) -> None:
        metadata = {
            "cfg": {"x": 1, "y": [1, {"z": None}]}, "tags": ["a", "b"], "flag": True, "step": 1, "none": None,
            "score": 1.5, "text": "1", "a.b": "dotted", 'q"k': "quoted", "": "empty", "uni": "🚀 é",
            "big": 2**63 + 12345, "payload": PAYLOAD,
        }  # fmt: skip
        store.put_checkpoint(make_checkpoint("t", "cp-1", metadata=metadata))
        store.put_checkpoint(make_checkpoint("t", "cp-0", metadata={"a": {"b": "dotted"}, "text": 1}))
        matching: list[dict[str, Any]] = [
            {"cfg": {"y": [1, {"z": None}], "x": 1}}, {"tags": ["a", "b"]}, {"flag": True}, {"step": 1},
            {"step": 1.0}, {"none": None, "flag": True}, {"score": 1.5}, {"text": "1"}, {"a.b": "dotted"},
            {'q"k': "quoted"}, {"": "empty"}, {"uni": "🚀 é"}, {"big": 2**63 + 12345}, {"payload": PAYLOAD},
            {"tags": ("a", "b")}, {"cfg": {"x": 1, "y": [1.0, {"z": None}]}}, {"flag": True, "step": 1},
        ]  # fmt: skip
        for query in matching:
            assert ids_of(store.list_checkpoints(metadata=query)) == ["cp-1"], query
        failing: list[dict[str, Any]] = [
            {"cfg": {"x": 1}}, {"cfg": {"x": 1, "y": [1, {"z": None}], "w": 2}}, {"tags": ["b", "a"]},
            {"tags": ["a"]}, {"flag": 1}, {"step": True}, {"step": "1"}, {"none": False}, {"none": 0},
            {"missing": "x"}, {"text": 1.5}, {"uni": "🚀 e"}, {"big": 2**63 + 12346}, {"a": "dotted"},
            {"cfg": '{"x":1,"y":[1,{"z":null}]}'}, {"tags": '["a","b"]'}, {"flag": True, "step": 2},
        ]  # fmt: skip
        for query in failing:
            assert store.list_checkpoints(thread_id="t", namespace="", metadata=query) == [], query
        assert ids_of(store.list_checkpoints(metadata={"text": 1})) == ["cp-0"]
        assert ids_of(store.list_checkpoints(metadata={"none": None})) == ["cp-1", "cp-0"]  # missing is null
        assert ids_of(store.list_checkpoints(metadata={"missing": None})) == ["cp-1", "cp-0"]
        assert ids_of(store.list_checkpoints(metadata={"a": {"b": "dotted"}})) == ["cp-0"]

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

    _CHECKPOINT_TEXTS = ("thread_id", "namespace", "checkpoint_id", "parent_id", "type", "run_id")
    _WRITE_TEXTS = ("thread_id", "namespace", "checkpoint_id", "task_id", "task_path", "channel", "type")

    @pytest.mark.parametrize("call", [
        *(f"put_checkpoint {field}" for field in _CHECKPOINT_TEXTS),
        *(f"put_checkpoint_writes {field}" for field in _WRITE_TEXTS),
        "put_checkpoint_with_writes checkpoint", "put_checkpoint_with_writes write",
        "get_checkpoint thread_id", "get_checkpoint namespace", "get_checkpoint checkpoint_id",
        "list_checkpoints thread_id", "list_checkpoints namespace", "list_checkpoints checkpoint_id",
        "list_checkpoints before", "delete_checkpoints", "copy_checkpoints source", "copy_checkpoints target",
    ])  # fmt: skip
    def test_text_that_is_not_utf8_is_refused(self, store: Store, call: str) -> None:
        """A lone surrogate in an id, a name or a type, to store or to look up by, is refused as
        SQLite and PostgreSQL, which take text as UTF-8, refuse to bind it: an error, not a miss,
        and nothing of the call is stored (a batch of writes holding one: none of it)."""
        bad = "a\udcff"
        store.put_checkpoint(make_checkpoint("t", "cp-1"))
        store.put_checkpoint_writes([make_checkpoint_write("t", "cp-1", "task", 0)], replace=False)
        before = self.everything(store)

        def checkpoint(**fields: object) -> CheckpointRecord:
            return make_checkpoint("t", "cp-2").model_copy(update=fields)

        def writes(**fields: object) -> list[CheckpointWrite]:  # a good write, then one holding the text
            return [make_checkpoint_write("t", "cp-1", "task", 1),
                    make_checkpoint_write("t", "cp-1", "task", 2).model_copy(update=fields)]

        calls: dict[str, Callable[[], object]] = {
            **{f"put_checkpoint {field}": partial(lambda field: store.put_checkpoint(checkpoint(**{field: bad})), field)
               for field in self._CHECKPOINT_TEXTS},
            **{f"put_checkpoint_writes {field}": partial(
                lambda field: store.put_checkpoint_writes(writes(**{field: bad}), replace=False), field)
               for field in self._WRITE_TEXTS},
            "put_checkpoint_with_writes checkpoint": lambda: store.put_checkpoint_with_writes(
                checkpoint(type=bad), [make_checkpoint_write("t", "cp-2", "task", 0)], replace=False),
            "put_checkpoint_with_writes write": lambda: store.put_checkpoint_with_writes(
                checkpoint(), writes(channel=bad), replace=False),
            "get_checkpoint thread_id": lambda: store.get_checkpoint(bad),
            "get_checkpoint namespace": lambda: store.get_checkpoint("t", bad),
            "get_checkpoint checkpoint_id": lambda: store.get_checkpoint("t", "", "cp-1" + bad),
            "list_checkpoints thread_id": lambda: store.list_checkpoints(thread_id=bad),
            "list_checkpoints namespace": lambda: store.list_checkpoints(namespace=bad),
            "list_checkpoints checkpoint_id": lambda: store.list_checkpoints(checkpoint_id="cp-1" + bad),
            "list_checkpoints before": lambda: store.list_checkpoints(before="cp-1" + bad),
            "delete_checkpoints": lambda: store.delete_checkpoints(bad),
            "copy_checkpoints source": lambda: store.copy_checkpoints(bad, "t2"),
            "copy_checkpoints target": lambda: store.copy_checkpoints("t", bad),
        }
        refused_as_not_utf8(store, calls[call])
        assert self.everything(store) == before

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
            assert ids_of(listed) == [f"cp-{i:03d}" for i in reversed(range(30))]
            assert all(len(cp.writes) == 2 for cp in listed)
