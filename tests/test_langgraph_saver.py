"""`AgentspanSaver`: LangGraph's conformance suite, the saver's own contract, and real graphs, on
the in-memory and the SQLite store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import WRITES_IDX_MAP
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT
from langgraph.types import Command

import agentspan
from agentspan.errors import ConfigurationError
from agentspan.records import CheckpointRecord
from agentspan.stores.base import Store
from agentspan.stores.memory import MemoryStore
from agentspan.stores.sqlite import SqliteStore
from agentspan_langgraph import AgentspanSaver

from lg_support import (
    Effects,
    agent_graph,
    approval_graph,
    counter_graph,
    counter_input,
    delta_graph,
    fanout_graph,
    parent_graph,
    tool_call,
)

STORES = ("memory", "sqlite")


class BlockingSqliteStore(SqliteStore):
    """A SQLite store that claims to wait on the network, and records the threads it ran on."""

    blocking_io = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: set[int] = set()

    def put_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        self.threads.add(threading.get_ident())
        super().put_checkpoint(checkpoint)


def new_store(kind: str, folder: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    index = len(list(folder.glob("*.db")))
    cls = BlockingSqliteStore if kind == "blocking" else SqliteStore
    return cls(folder / f"checkpoints-{index}.db")


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store = new_store(request.param, tmp_path)
    yield store
    store.close()


@pytest.fixture
def saver(store: Store) -> AgentspanSaver:
    return AgentspanSaver(store)


def cfg(thread_id: str = "t1", **configurable: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, **configurable}}


def put(
    saver: AgentspanSaver, thread_id: str, parent: dict[str, Any] | None = None, ns: str = "", **meta: Any
) -> dict[str, Any]:
    """Stores a fresh checkpoint (child of ``parent``) and returns its config."""
    config = cfg(thread_id, checkpoint_ns=ns)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    checkpoint = generate_checkpoint(channel_values={"x": len(meta)}, channel_versions={"x": 1})
    return saver.put(config, checkpoint, {"source": "loop", "step": 0, "parents": {}, **meta}, {"x": 1})


# ---- LangGraph's conformance suite ---------------------------------------------------------------
@pytest.mark.parametrize("kind", [*STORES, "blocking"])
def test_conformance_suite_passes_every_capability(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores: list[Store] = []

    @checkpointer_test(name=f"AgentspanSaver[{kind}]")
    async def factory() -> AsyncIterator[AgentspanSaver]:
        stores.append(new_store(kind, tmp_path))  # a fresh store per capability suite
        yield AgentspanSaver(stores[-1])

    report = asyncio.run(validate(factory))
    for s in stores:
        s.close()
    report.print_report()
    failures = [f"{name}: {failure}" for name, r in report.results.items() for failure in r.failures]
    assert report.passed_all_base(), failures
    assert {c.value for c in ALL_CAPABILITIES} == set(report.results)
    assert all(r.detected and r.passed is True for r in report.results.values()), failures
    assert "FULL (8/8)" in capsys.readouterr().out
    if kind == "blocking":  # async calls went to worker threads, never the event loop's thread
        assert stores and all(s.threads and threading.get_ident() not in s.threads for s in stores)  # type: ignore[attr-defined]


# ---- the saver's contract (sync API; the suite above drives the async one) -----------------------
def test_put_get_round_trip_keeps_checkpoint_metadata_parent_and_stores_only_bytes_and_json(
    saver: AgentspanSaver, store: Store
) -> None:
    first = put(saver, "t1", run_id="r1")
    checkpoint = generate_checkpoint(
        channel_values={"messages": [HumanMessage("hi", id="h1")], "n": 2},
        channel_versions={"messages": "1.0", "n": "1.0"},
    )
    config = {
        "configurable": {
            "thread_id": "t1",
            "checkpoint_ns": "",
            "checkpoint_id": first["configurable"]["checkpoint_id"],
        },
        "metadata": {"user": "ann", "ignored": object()},
    }
    second = saver.put(config, checkpoint, {"source": "loop", "step": 1, "parents": {}, "run_id": "r2"}, {})
    assert second == cfg("t1", checkpoint_ns="", checkpoint_id=checkpoint["id"])

    latest = saver.get_tuple(cfg("t1"))
    assert latest is not None
    assert latest.config == second
    assert latest.checkpoint["channel_values"] == {"messages": [HumanMessage("hi", id="h1")], "n": 2}
    assert latest.checkpoint["channel_versions"] == {"messages": "1.0", "n": "1.0"}
    assert latest.metadata == {"source": "loop", "step": 1, "parents": {}, "run_id": "r2", "user": "ann"}
    assert latest.parent_config == first
    assert latest.pending_writes == []
    assert saver.get_tuple(first).parent_config is None  # type: ignore[union-attr]

    raw = store.get_checkpoint("t1")
    assert raw is not None and raw.run_id == "r2" and raw.parent_id == first["configurable"]["checkpoint_id"]
    assert isinstance(raw.data, bytes) and raw.type == "msgpack"
    assert raw.metadata["user"] == "ann"


def test_get_tuple_with_an_id_returns_the_callers_config_and_none_when_missing(saver: AgentspanSaver) -> None:
    assert saver.get_tuple(cfg("nobody")) is None
    stored = put(saver, 7)  # type: ignore[arg-type]  # LangGraph users pass numbers as thread ids
    asked = {"configurable": {"thread_id": 7, "checkpoint_id": stored["configurable"]["checkpoint_id"], "extra": 1}}
    found = saver.get_tuple(asked)
    assert found is not None and found.config is asked
    assert saver.get_tuple(cfg("7", checkpoint_id="1f0-no-such-id")) is None
    assert saver.get_tuple(cfg("7", checkpoint_ns="child:1")) is None


def test_put_writes_keeps_the_first_regular_write_and_replaces_special_ones(saver: AgentspanSaver) -> None:
    stored = put(saver, "t1")
    saver.put_writes(stored, [("a", 1), ("b", 2)], "task-1")
    saver.put_writes(stored, [("a", 10), ("b", 20)], "task-1")  # a re-run of the task: kept as first written
    saver.put_writes(stored, [(ERROR, "boom")], "task-2")
    saver.put_writes(stored, [(ERROR, "boom again")], "task-2")  # special writes replace
    saver.put_writes(stored, [(INTERRUPT, "ask"), ("c", 3)], "task-3")
    saver.put_writes(stored, [(INTERRUPT, "ask again"), ("c", 30)], "task-3")  # mixed batch: kept (as SqliteSaver)
    saver.put_writes(stored, [], "task-4")
    found = saver.get_tuple(stored)
    assert found is not None
    assert found.pending_writes == [
        ("task-1", "a", 1), ("task-1", "b", 2),
        ("task-2", ERROR, "boom again"),
        ("task-3", INTERRUPT, "ask"), ("task-3", "c", 3),
    ]  # fmt: skip
    assert WRITES_IDX_MAP[INTERRUPT] < 0


def test_pending_writes_come_in_task_path_order(saver: AgentspanSaver) -> None:
    stored = put(saver, "t1")
    saver.put_writes(stored, [("x", "second")], "task-a", task_path="~__pregel_pull, b")
    saver.put_writes(stored, [("x", "first")], "task-z", task_path="~__pregel_pull, a")
    found = saver.get_tuple(stored)
    assert found is not None
    assert [w[2] for w in found.pending_writes] == ["first", "second"]


def test_put_writes_needs_a_checkpoint_id(saver: AgentspanSaver) -> None:
    with pytest.raises(ConfigurationError, match="checkpoint_id"):
        saver.put_writes(cfg("t1"), [("a", 1)], "task-1")


def test_list_filters_by_thread_namespace_metadata_before_and_limit(saver: AgentspanSaver) -> None:
    a1 = put(saver, "a", run_id="r1")
    a2 = put(saver, "a", a1, run_id="r2", tag="x")
    a3 = put(saver, "a", a2, run_id="r2")
    sub = put(saver, "a", ns="child:1", run_id="r2")
    b1 = put(saver, "b", run_id="r3", tag="x")

    def ids(config: dict[str, Any] | None, **kwargs: Any) -> list[str]:
        return [t.config["configurable"]["checkpoint_id"] for t in saver.list(config, **kwargs)]

    def id_of(*configs: dict[str, Any]) -> list[str]:
        return [c["configurable"]["checkpoint_id"] for c in configs]

    assert ids(cfg("a")) == id_of(sub, a3, a2, a1)  # no namespace given: all of them
    assert ids(cfg("a", checkpoint_ns="")) == id_of(a3, a2, a1)
    assert ids(cfg("a", checkpoint_ns="child:1")) == id_of(sub)
    assert ids(None) == id_of(b1, sub, a3, a2, a1)
    assert ids(None, filter={"tag": "x"}) == id_of(b1, a2)
    assert ids(cfg("a"), filter={"run_id": "r2", "tag": None}) == id_of(sub, a3)  # None: missing key
    assert ids(cfg("a", checkpoint_ns=""), before=a3) == id_of(a2, a1)
    assert ids(cfg("a", checkpoint_ns=""), before=a3, limit=1) == id_of(a2)
    assert ids(cfg("a"), limit=0) == []
    assert ids(cfg("a", checkpoint_id=a2["configurable"]["checkpoint_id"])) == id_of(a2)
    listed = next(saver.list(cfg("a", checkpoint_ns=""), limit=1))
    assert listed.parent_config == a2 and listed.metadata["run_id"] == "r2"


def test_delete_copy_and_prune_threads(saver: AgentspanSaver) -> None:
    a1 = put(saver, "a", run_id="r1")
    a2 = put(saver, "a", a1, run_id="r2")
    saver.put_writes(a1, [("x", 1)], "task-1")
    saver.put_writes(a2, [("x", 2)], "task-2")
    put(saver, "a", ns="child:1", run_id="r2")
    put(saver, "b", run_id="r1")

    saver.copy_thread("a", "c")
    copied = [t for t in saver.list(cfg("c"))]
    assert [t.config["configurable"]["checkpoint_id"] for t in copied] == [
        t.config["configurable"]["checkpoint_id"] for t in saver.list(cfg("a"))
    ]
    assert saver.get_tuple(cfg("c")).pending_writes == [("task-2", "x", 2)]  # type: ignore[union-attr]
    assert saver.get_tuple(cfg("c")).parent_config == cfg(
        "c", checkpoint_ns="", checkpoint_id=a1["configurable"]["checkpoint_id"]
    )  # type: ignore[union-attr]

    saver.delete_for_runs(["r1"])
    assert [t.metadata["run_id"] for t in saver.list(cfg("a"))] == ["r2", "r2"]
    assert list(saver.list(cfg("b"))) == []
    assert len(list(saver.list(cfg("c")))) == 2  # the copy's r1 checkpoint went too

    put(saver, "c", saver.get_tuple(cfg("c")).config, run_id="r4")  # type: ignore[union-attr]
    saver.prune(["c"])
    kept = list(saver.list(cfg("c")))
    assert sorted((t.config["configurable"]["checkpoint_ns"], t.metadata["run_id"]) for t in kept) == [
        ("", "r4"),
        ("child:1", "r2"),
    ]
    saver.prune(["c"], strategy="delete")
    assert list(saver.list(cfg("c"))) == []

    saver.delete_thread("a")
    assert list(saver.list(None)) == []
    saver.delete_thread("nobody")
    saver.delete_for_runs([])
    saver.prune([])


def test_prune_refuses_to_cut_a_delta_channel_history(saver: AgentspanSaver) -> None:
    first = put(saver, "t1")
    put(saver, "t1", first, counters_since_delta_snapshot={"messages": [1, 1]})
    with pytest.raises(ConfigurationError, match="DeltaChannel.*t1"):
        saver.prune(["t1"])
    assert len(list(saver.list(cfg("t1")))) == 2  # nothing was pruned
    saver.prune(["t1"], strategy="delete")
    assert list(saver.list(cfg("t1"))) == []


def test_bad_arguments_are_refused_with_what_was_wrong(saver: AgentspanSaver) -> None:
    stored = put(saver, "t1")
    with pytest.raises(ConfigurationError, match="thread_id"):
        saver.get_tuple({"configurable": {}})
    with pytest.raises(ConfigurationError, match="thread_id"):
        put(saver, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown prune strategy 'oldest'"):
        saver.prune(["t1"], strategy="oldest")
    with pytest.raises(ConfigurationError, match="thread_ids must be a sequence"):
        saver.prune("t1")
    with pytest.raises(ConfigurationError, match="run_ids must be a sequence"):
        saver.delete_for_runs("r1")
    with pytest.raises(ConfigurationError, match="JSON"):
        saver.put(cfg("t1", checkpoint_ns=""), generate_checkpoint(), {"step": 1, "bad": float("nan")}, {})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ConfigurationError, match="needs an agentspan Store"):
        AgentspanSaver({})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"runs=\.\.\.\) takes True or False, not 'no'"):
        AgentspanSaver(runs="no")  # type: ignore[arg-type]
    assert [t.config for t in saver.list(cfg("t1"))] == [stored]  # nothing else was stored


def test_next_versions_increase_as_strings(saver: AgentspanSaver) -> None:
    versions = [saver.get_next_version(None, None)]
    for _ in range(12):
        versions.append(saver.get_next_version(versions[-1], None))
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert versions[0].startswith("0" * 31 + "1.")
    assert saver.get_next_version(5, None).startswith("0" * 31 + "6.")  # type: ignore[arg-type]


def test_the_configured_store_is_looked_up_on_first_use(home: Path) -> None:
    saver = AgentspanSaver()
    assert not (home / "agentspan.db").exists()  # nothing opened at construction
    graph = counter_graph(3, checkpointer=saver)
    assert graph.invoke(counter_input(), cfg("t1"))["count"] == 3
    assert saver.store is agentspan.get_store()
    assert (home / "agentspan.db").exists()
    assert len(saver.store.list_checkpoints(thread_id="t1")) == 5  # steps -1 (input), 0 (start), 1-3 (ticks)


def test_async_calls_run_inline_on_an_embedded_store(tmp_path: Path) -> None:
    class Recording(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.threads: set[int] = set()

        def put_checkpoint(self, checkpoint: CheckpointRecord) -> None:
            self.threads.add(threading.get_ident())
            super().put_checkpoint(checkpoint)

    store = Recording()
    graph = counter_graph(3, checkpointer=AgentspanSaver(store))
    assert asyncio.run(graph.ainvoke(counter_input(), cfg("t1"), durability="sync"))["count"] == 3
    assert store.threads == {threading.get_ident()}


# ---- real graphs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_invoke_get_state_and_history(saver: AgentspanSaver, durability: str) -> None:
    graph = counter_graph(5, checkpointer=saver)
    result = graph.invoke(counter_input(), cfg("t1"), durability=durability)  # type: ignore[arg-type]
    assert result["count"] == 5
    state = graph.get_state(cfg("t1"))
    assert state.values["count"] == 5 and state.next == ()
    assert [m.content for m in state.values["messages"]] == ["count", "tick 5", "tick 2", "tick 3", "tick 4"]
    history = list(graph.get_state_history(cfg("t1")))
    if durability == "exit":  # only the last checkpoint is saved
        assert [h.metadata["step"] for h in history] == [5]  # type: ignore[index]
    else:
        assert [h.metadata["step"] for h in history] == [5, 4, 3, 2, 1, 0, -1]  # type: ignore[index]
        assert [h.values.get("count") for h in history] == [5, 4, 3, 2, 1, 0, None]
        assert history[-1].metadata["source"] == "input"  # type: ignore[index]
        assert all(h.parent_config == p.config for h, p in zip(history, history[1:], strict=False))


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_sync_and_async_entry_points_continue_the_thread(saver: AgentspanSaver, mode: str) -> None:
    effects = Effects()
    script = [tool_call("add", {"a": 2, "b": 3}, "call-1"), AIMessage("It is 5."), AIMessage("Bye.")]
    graph = agent_graph(effects, script, checkpointer=saver)

    def run(message: str) -> list[Any]:
        payload = {"messages": [HumanMessage(message)]}
        if mode == "invoke":
            return [graph.invoke(payload, cfg("t1"))]
        if mode == "stream":
            return list(graph.stream(payload, cfg("t1"), stream_mode="updates"))

        async def arun() -> list[Any]:
            if mode == "ainvoke":
                return [await graph.ainvoke(payload, cfg("t1"))]
            return [chunk async for chunk in graph.astream(payload, cfg("t1"), stream_mode="updates")]

        return asyncio.run(arun())

    first = run("What is 2 + 3?")
    if mode.endswith("stream"):
        assert [next(iter(chunk)) for chunk in first] == ["model", "tools", "model"]
    run("Thanks!")  # a second turn on the same thread starts from the saved conversation
    messages = graph.get_state(cfg("t1")).values["messages"]
    assert [type(m).__name__ for m in messages] == [
        "HumanMessage", "AIMessage", "ToolMessage", "AIMessage", "HumanMessage", "AIMessage"
    ]  # fmt: skip
    assert messages[1].tool_calls[0]["args"] == {"a": 2, "b": 3}
    assert isinstance(messages[2], ToolMessage) and messages[2].content == "5"
    assert messages[1].usage_metadata["total_tokens"] == 15
    assert [messages[3].content, messages[5].content] == ["It is 5.", "Bye."]
    assert effects == {"model": 3, "add": 1}


@pytest.mark.parametrize("use_async", [False, True])
def test_interrupt_and_resume_with_command(saver: AgentspanSaver, use_async: bool) -> None:
    effects = Effects()
    graph = approval_graph(effects, checkpointer=saver)

    def call(payload: Any) -> dict[str, Any]:
        if use_async:
            return asyncio.run(graph.ainvoke(payload, cfg("t1")))
        return graph.invoke(payload, cfg("t1"))

    paused = call({"topic": "owls", "log": []})
    assert paused["__interrupt__"][0].value == {"question": "Publish this?", "draft": "About owls"}
    state = graph.get_state(cfg("t1"))
    assert state.next == ("review",)
    assert state.tasks[0].interrupts[0].value["draft"] == "About owls"

    done = call(Command(resume="yes"))
    assert done["log"] == ["draft", "review:yes", "publish"]
    assert "__interrupt__" not in done
    # The interrupted node runs again from its start on resume; nothing before it does.
    assert effects == {"draft": 1, "review:before": 2, "review:after": 1, "publish": 1}
    assert graph.get_state(cfg("t1")).next == ()


def test_update_state_changes_what_the_resumed_run_sees(saver: AgentspanSaver) -> None:
    effects = Effects()
    graph = approval_graph(effects, checkpointer=saver)
    graph.invoke({"topic": "owls", "log": []}, cfg("t1"))
    updated = graph.update_state(cfg("t1"), {"draft": "About barn owls"}, as_node="draft")
    state = graph.get_state(cfg("t1"))
    assert state.config == updated and state.metadata["source"] == "update"  # type: ignore[index]
    assert state.values["draft"] == "About barn owls" and state.next == ("review",)

    paused = graph.invoke(None, cfg("t1"))
    assert paused["__interrupt__"][0].value["draft"] == "About barn owls"
    done = graph.invoke(Command(resume="no"), cfg("t1"))
    assert done["log"] == ["draft", "review:no"] and effects["publish"] == 0

    # Time travel: resume from the checkpoint before the update, which still holds the old draft.
    before_update = next(
        s for s in graph.get_state_history(cfg("t1")) if s.next == ("review",) and s.values["draft"] == "About owls"
    )
    forked = graph.invoke(None, before_update.config)
    assert forked["__interrupt__"][0].value["draft"] == "About owls"


def test_subgraph_checkpoints_live_in_a_child_namespace(saver: AgentspanSaver, store: Store) -> None:
    effects = Effects()
    graph = parent_graph(effects, checkpointer=saver)
    paused = graph.invoke({"question": "rain?", "log": []}, cfg("t1"))
    assert paused["__interrupt__"][0].value == {"proposed": "maybe rain?"}

    state = graph.get_state(cfg("t1"), subgraphs=True)
    assert state.next == ("ask",)
    sub_state = state.tasks[0].state
    assert sub_state is not None and sub_state.next == ("confirm",)  # type: ignore[union-attr]
    assert sub_state.values["answer"] == "maybe rain?"  # type: ignore[union-attr]
    namespaces = {r.namespace for r in store.list_checkpoints(thread_id="t1")}
    assert "" in namespaces and any(ns.startswith("ask:") for ns in namespaces)

    done = graph.invoke(Command(resume="yes, bring an umbrella"), cfg("t1"))
    assert done["answer"] == "yes, bring an umbrella"
    assert done["log"] == ["prepare", "finish:yes, bring an umbrella"]
    assert effects == {"prepare": 1, "think": 1, "confirm": 2, "finish": 1}


def test_send_fan_out_resumes_only_the_failed_branch(saver: AgentspanSaver) -> None:
    effects = Effects()
    graph = fanout_graph(effects, fail_once="b", checkpointer=saver)
    with pytest.raises(RuntimeError, match="work on b failed"):
        graph.invoke({"items": ["a", "b", "c"], "results": []}, cfg("t1"))
    state = graph.get_state(cfg("t1"))
    assert state.next == ("work",)
    assert [(t.error is not None, t.result) for t in state.tasks] == [
        (False, {"results": ["A"]}), (True, None), (False, {"results": ["C"]})
    ]  # fmt: skip

    done = graph.invoke(None, cfg("t1"))
    assert sorted(done["results"][:3]) == ["A", "B", "C"] and done["results"][3] == "total:3"
    # The branches that had succeeded kept their saved writes and did not run again.
    assert effects == {"work:a": 1, "work:b": 2, "work:c": 1, "summarize": 1}


def test_a_new_saver_on_the_same_sqlite_file_continues_where_the_run_stopped(tmp_path: Path) -> None:
    effects = Effects()
    first_store = SqliteStore(tmp_path / "graph.db")
    paused = approval_graph(effects, checkpointer=AgentspanSaver(first_store)).invoke(
        {"topic": "owls", "log": []}, cfg("t1")
    )
    assert "__interrupt__" in paused
    first_store.close()

    second_store = SqliteStore(tmp_path / "graph.db")
    graph = approval_graph(effects, checkpointer=AgentspanSaver(second_store))
    assert graph.get_state(cfg("t1")).next == ("review",)
    done = graph.invoke(Command(resume="yes"), cfg("t1"))
    assert done["log"] == ["draft", "review:yes", "publish"]
    assert effects == {"draft": 1, "review:before": 2, "review:after": 1, "publish": 1}
    assert [h.metadata["step"] for h in graph.get_state_history(cfg("t1"))] == [3, 2, 1, 0, -1]  # type: ignore[index]
    second_store.close()


def test_delete_for_runs_removes_what_one_invocation_saved(saver: AgentspanSaver) -> None:
    graph = counter_graph(2, checkpointer=saver)
    graph.invoke(counter_input(), {**cfg("t1"), "metadata": {"run_id": "first"}})
    graph.invoke(counter_input(), {**cfg("t1"), "metadata": {"run_id": "second"}})
    assert {h.metadata["run_id"] for h in graph.get_state_history(cfg("t1"))} == {"first", "second"}  # type: ignore[index]
    saver.delete_for_runs(["second"])
    history = list(graph.get_state_history(cfg("t1")))
    assert len(history) == 4 and {h.metadata["run_id"] for h in history} == {"first"}  # type: ignore[index]
    assert graph.get_state(cfg("t1")).values["count"] == 2


def test_delta_channel_state_is_rebuilt_from_ancestors_and_prune_keeps_it(saver: AgentspanSaver) -> None:
    graph = delta_graph(7, checkpointer=saver)
    assert graph.invoke({"n": 0, "items": []}, cfg("t1"))["items"] == [0, 1, 2, 3, 4, 5, 6]
    assert graph.get_state(cfg("t1")).values["items"] == [0, 1, 2, 3, 4, 5, 6]
    # The latest checkpoint holds no snapshot of `items`: keep_latest would lose it, so it is refused.
    with pytest.raises(ConfigurationError, match="DeltaChannel.*t1"):
        saver.prune(["t1"])
    again = AgentspanSaver(saver.store)  # a new saver rebuilds the same state from the store
    assert delta_graph(9, checkpointer=again).invoke({"n": 7}, cfg("t1"))["items"] == list(range(9))
