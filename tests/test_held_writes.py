"""`RemoteStore` holding a LangGraph task's writes for the thread's next checkpoint: one request per
super-step, a timer for writes no checkpoint follows, read-your-writes through the same client,
interrupts and errors never held, and failures of held writes reported, never silently lost."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph._internal._constants import ERROR, ERROR_SOURCE_NODE, INTERRUPT
from langgraph.checkpoint.base import WRITES_IDX_MAP, empty_checkpoint

from agentspan.errors import ConfigurationError
from agentspan.stores.held_writes import HOLD_WRITES_FOR
from agentspan.stores.remote import RemoteStore
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import make_checkpoint, make_checkpoint_write
from agentspan_langgraph import AgentspanSaver
from agentspan_langgraph.saver import URGENT_CHANNELS

from lg_support import Effects, approval_graph, counter_graph, counter_input
from server_support import CountingTransport, sqlite_server

LONG = 60.0
"""A hold no test waits for: what is visible at once was not left to the timer."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, SqliteStore]]:
    """A server (uvicorn in a thread) over SQLite, and its store (what any other client sees)."""
    with sqlite_server(tmp_path / "server.db") as served:
        yield served


def client(url: str, hold: float = HOLD_WRITES_FOR) -> tuple[RemoteStore, CountingTransport]:
    counting = CountingTransport()
    return RemoteStore(url, transport=counting, retry_for=2.0, hold_writes_for=hold), counting


def cfg(thread_id: str = "t1", **configurable: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": "", **configurable}}


def stored_writes(store: Any, thread_id: str, checkpoint_id: str) -> list[tuple[str, int, bytes]]:
    """Writes stored against a checkpoint, as ``(task_id, idx, data)`` (the checkpoint must exist)."""
    found = store.get_checkpoint(thread_id, "", checkpoint_id)
    assert found is not None
    return [(w.task_id, w.idx, w.data) for w in found.writes]


def put_empty(saver: AgentspanSaver, config: dict[str, Any]) -> dict[str, Any]:
    checkpoint = empty_checkpoint()
    return saver.put(config, checkpoint, {"source": "loop", "step": 0}, {})  # type: ignore[arg-type]


# ---- one request per super-step ------------------------------------------------------------------
def test_writes_then_a_checkpoint_are_one_request_storing_both(served):
    url, backing = served
    store, counting = client(url, hold=LONG)
    saver = AgentspanSaver(store)
    first = put_empty(saver, cfg())
    assert counting.sent == ["PUT /api/checkpoints"]  # nothing held: the plain put
    saver.put_writes(first, [("count", 1), ("messages", ["a"])], "task-1", "~1")
    saver.put_writes(first, [("count", 2)], "task-2", "~2")
    assert len(counting.sent) == 1  # held
    second = put_empty(saver, first)
    assert counting.sent == ["PUT /api/checkpoints", "PUT /api/checkpoints/with-writes"]
    cp_1, cp_2 = first["configurable"]["checkpoint_id"], second["configurable"]["checkpoint_id"]
    assert [(t, i) for t, i, _ in stored_writes(backing, "t1", cp_1)] == [("task-1", 0), ("task-1", 1), ("task-2", 0)]
    assert backing.get_checkpoint("t1").checkpoint_id == cp_2  # type: ignore[union-attr]
    store.close()
    assert len(counting.sent) == 2  # nothing was left to send on close


@pytest.mark.parametrize("runs", [False, True], ids=["checkpoints-only", "runs"])
@pytest.mark.parametrize("durability", ["sync", "async"])
def test_a_graph_super_step_is_one_request(served, durability: str, runs: bool):
    """What the benchmark's "via server" rows pay: per super-step one request (the checkpoint,
    carrying the previous task's writes), plus one read of the thread when the run starts; an
    invocation that is an Agentspan run (`AgentspanSaver(runs=True)`, the default) adds three
    requests per invocation, none per super-step: the thread's latest checkpoint read to find an
    unfinished run of the thread, the run's creation and its end; a thread with no checkpoint yet
    (this one: its first invocation) also has its runs listed (a run that died under
    ``durability="exit"`` left none)."""
    url, backing = served
    # a hold no super-step outlasts, even on a machine busy with the rest of the suite (with the
    # default 0.2 s, one slow super-step there sent its writes on their own: a request more)
    store, counting = client(url, hold=5.0)
    graph = counter_graph(10, checkpointer=AgentspanSaver(store, runs=runs))
    assert graph.invoke(counter_input(), cfg(), durability=durability)["count"] == 10  # type: ignore[arg-type]
    sent = Counter({k: v for k, v in Counter(counting.sent).items() if not k.endswith("/lease")})  # heartbeats
    run_requests = Counter({k: v for k, v in sent.items() if k.startswith(("POST /api/runs", "PATCH /api/runs/"))})
    assert sent["GET /api/checkpoints/find"] == 1 + runs and sent["PUT /api/checkpoints/writes"] == 0, sent
    assert sorted(k.split("/")[0] + "/" + k.split("/")[1] for k in run_requests.elements()) == (
        ["PATCH /api", "POST /api"] if runs else []), sent
    assert sent["PUT /api/checkpoints"] + sent["PUT /api/checkpoints/with-writes"] == 12, sent  # input, __start__, 10
    assert sent["PUT /api/checkpoints/with-writes"] >= (11 if durability == "sync" else 1), sent
    assert sent["GET /api/runs"] == runs, sent
    assert sum(sent.values()) == 13 + 4 * runs, sent
    # every task's writes are stored against the checkpoint the task ran from (all but the last)
    checkpoints = backing.list_checkpoints(thread_id="t1")
    assert len(checkpoints) == 12 and checkpoints[0].writes == []
    assert all(cp.writes and {w.task_id for w in cp.writes} for cp in checkpoints[1:])
    store.close()


# ---- writes no checkpoint follows ------------------------------------------------------------------
def test_held_writes_reach_other_clients_within_the_hold_on_their_own(served):
    url, backing = served
    store, counting = client(url)
    saver = AgentspanSaver(store)
    config = put_empty(saver, cfg())
    cp_id = config["configurable"]["checkpoint_id"]
    started = time.monotonic()
    saver.put_writes(config, [("count", 1)], "task-1")
    assert stored_writes(backing, "t1", cp_id) == []  # held, not yet sent
    while not stored_writes(backing, "t1", cp_id) and time.monotonic() - started < 2:
        time.sleep(0.01)
    assert time.monotonic() - started < HOLD_WRITES_FOR + 0.3
    assert [t for t, _, _ in stored_writes(backing, "t1", cp_id)] == ["task-1"]
    assert counting.sent == ["PUT /api/checkpoints", "PUT /api/checkpoints/writes"]
    store.close()


def test_close_sends_held_writes_and_a_zero_hold_sends_at_once(served):
    url, backing = served
    store, counting = client(url, hold=LONG)
    store.put_checkpoint(make_checkpoint("t", "cp-1"))
    store.put_checkpoint_writes([make_checkpoint_write("t", "cp-1", "task", 0)], replace=False, defer=True)
    assert stored_writes(backing, "t", "cp-1") == []
    store.close()
    assert stored_writes(backing, "t", "cp-1") == [("task", 0, b"task:0")]
    eager, counting = client(url, hold=0)
    eager.put_checkpoint_writes([make_checkpoint_write("t", "cp-1", "task", 1)], replace=False, defer=True)
    assert counting.sent == ["PUT /api/checkpoints/writes"] and len(stored_writes(backing, "t", "cp-1")) == 2
    eager.close()


def test_the_end_of_the_process_sends_held_writes(served):
    url, backing = served
    code = (
        "from agentspan.stores.remote import RemoteStore\n"
        "from agentspan.testing.conformance import make_checkpoint, make_checkpoint_write\n"
        f"store = RemoteStore({url!r}, hold_writes_for=60)\n"
        "store.put_checkpoint(make_checkpoint('t', 'cp-1'))\n"
        "store.put_checkpoint_writes([make_checkpoint_write('t', 'cp-1', 'task', 0)], replace=False, defer=True)\n"
    )  # never closed: the interpreter's exit sends what is held
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert stored_writes(backing, "t", "cp-1") == [("task", 0, b"task:0")]


# ---- read-your-writes --------------------------------------------------------------------------------
def test_reads_through_the_same_client_see_held_writes_at_once(served):
    url, backing = served
    store, counting = client(url, hold=LONG)
    saver = AgentspanSaver(store)
    config = put_empty(saver, cfg())
    saver.put_writes(config, [("count", 1)], "task-1")
    got = saver.get_tuple(config)
    assert got is not None and [(t, c, v) for t, c, v in got.pending_writes] == [("task-1", "count", 1)]
    assert counting.sent[-2:] == ["PUT /api/checkpoints/writes", "GET /api/checkpoints/find"]

    saver.put_writes(config, [("count", 2)], "task-2")
    (listed,) = saver.list(cfg())
    assert [t for t, _, _ in listed.pending_writes] == ["task-1", "task-2"]
    saver.put_writes(config, [("count", 3)], "task-3")
    saver.copy_thread("t1", "t2")
    assert [t for t, _, _ in saver.get_tuple(cfg("t2")).pending_writes] == ["task-1", "task-2", "task-3"]  # type: ignore[union-attr]

    saver.put_writes(config, [("count", 4)], "task-4")  # deleting the thread drops what is held for it
    saver.delete_thread("t1")
    assert backing.list_checkpoints(thread_id="t1") == [] and backing.get_checkpoint("t2") is not None
    sent = len(counting.sent)
    store.close()
    assert len(counting.sent) == sent and backing.list_checkpoints(thread_id="t1") == []


# ---- interrupts and errors are never held -------------------------------------------------------------
def test_urgent_channels_are_langgraphs_special_and_error_channels():
    assert {*WRITES_IDX_MAP, ERROR_SOURCE_NODE} == URGENT_CHANNELS


def test_an_interrupt_is_visible_to_another_client_at_once(served):
    url, backing = served
    store, _ = client(url, hold=LONG)
    effects = Effects()
    graph = approval_graph(effects, checkpointer=AgentspanSaver(store))
    paused = graph.invoke({"topic": "owls", "log": []}, cfg())
    assert paused["__interrupt__"][0].value["draft"] == "About owls"
    # another client (its own connection, nothing held) sees the paused run as it is
    other, _ = client(url)
    state = approval_graph(effects, checkpointer=AgentspanSaver(other)).get_state(cfg())
    assert state.next == ("review",) and state.tasks[0].interrupts[0].value["draft"] == "About owls"
    assert state.values["log"] == ["draft"]  # the draft task's writes went with the checkpoint after it
    assert INTERRUPT in [w.channel for w in backing.get_checkpoint("t1").writes]  # type: ignore[union-attr]
    other.close()
    store.close()


def test_an_error_write_goes_at_once_after_the_held_writes_of_its_thread(served):
    url, backing = served
    store, counting = client(url, hold=LONG)
    saver = AgentspanSaver(store)
    config = put_empty(saver, cfg())
    cp_id = config["configurable"]["checkpoint_id"]
    saver.put_writes(config, [("count", 1)], "task-ok")
    saver.put_writes(config, [(ERROR, ValueError("boom"))], "task-failed")
    assert [(t, i) for t, i, _ in stored_writes(backing, "t1", cp_id)] == [("task-failed", -1), ("task-ok", 0)]
    assert counting.sent[1:] == ["PUT /api/checkpoints/writes", "PUT /api/checkpoints/writes"]  # held, then error
    saver.put_writes(config, [("count", 2), (ERROR_SOURCE_NODE, "node")], "task-handled")  # kept-if-present: one batch
    assert len(counting.sent) == 4 and len(stored_writes(backing, "t1", cp_id)) == 4
    store.close()


# ---- failures of held writes ---------------------------------------------------------------------------
def test_a_failed_timer_send_is_logged_kept_and_raised_by_the_threads_next_call(
    served, caplog: pytest.LogCaptureFixture
):
    url, backing = served
    store, counting = client(url, hold=0.05)
    store.put_checkpoint(make_checkpoint("t", "cp-1"))
    bad = make_checkpoint_write("t", "cp-1", "task\x00", 0)  # the server refuses NUL characters
    with caplog.at_level(logging.WARNING, logger="agentspan"):
        store.put_checkpoint_writes([bad], replace=False, defer=True)
        deadline = time.monotonic() + 5
        while "PUT /api/checkpoints/writes" not in counting.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
    assert "could not send the held checkpoint writes of thread 't'" in caplog.text
    assert counting.sent.count("PUT /api/checkpoints/writes") == 1  # the timer leaves it alone since
    good = make_checkpoint_write("t", "cp-1", "task", 0)
    with pytest.raises(ConfigurationError, match=r"task_id"):  # the thread's next call sends it again
        store.put_checkpoint_writes([good], replace=False, defer=True)
    assert stored_writes(backing, "t", "cp-1") == []  # one batch: refused whole
    store.put_checkpoint_writes([good], replace=False, defer=True)  # reported once: held again as usual
    store.close()
    assert stored_writes(backing, "t", "cp-1") == [("task", 0, b"task:0")]


def test_a_refused_write_held_for_a_checkpoint_does_not_cost_the_checkpoint(served):
    url, backing = served
    store, counting = client(url, hold=LONG)
    good = make_checkpoint_write("t", "cp-1", "task", 0)
    bad = make_checkpoint_write("t", "cp-1", "task\x00", 1)
    store.put_checkpoint_writes([good, bad], replace=False, defer=True)
    with pytest.raises(ConfigurationError, match=r"task_id"):
        store.put_checkpoint(make_checkpoint("t", "cp-2"))
    assert counting.sent == [
        "PUT /api/checkpoints/with-writes", "PUT /api/checkpoints/writes", "PUT /api/checkpoints",
    ]  # fmt: skip
    assert backing.get_checkpoint("t").checkpoint_id == "cp-2"  # type: ignore[union-attr]
    store.close()


# ---- a server older than /checkpoints/with-writes -----------------------------------------------
class _WithoutWithWrites:
    """ASGI wrapper: the server as it was before ``PUT /api/checkpoints/with-writes`` existed."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.refused = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/api/checkpoints/with-writes":
            self.refused += 1
            body = (b'{"type":"about:blank","title":"Not Found","status":404,'
                    b'"detail":"no such endpoint: PUT /api/checkpoints/with-writes","error":"TransportError"}')
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/problem+json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def test_an_older_server_gets_writes_and_checkpoint_apart(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from agentspan_server.app import create_app

    from server_support import thread_server

    backing = SqliteStore(tmp_path / "old.db")
    old = _WithoutWithWrites(create_app(backing))
    try:
        with thread_server(old) as url, caplog.at_level(logging.WARNING, logger="agentspan"):
            store, counting = client(url, hold=LONG)
            graph = counter_graph(5, checkpointer=AgentspanSaver(store))
            assert graph.invoke(counter_input(), cfg(), durability="sync")["count"] == 5  # type: ignore[arg-type]
            assert old.refused == 1  # asked once, then remembered
            sent = Counter(counting.sent)
            assert sent["PUT /api/checkpoints/writes"] >= 5, sent  # each task's writes, then its checkpoint
            checkpoints = backing.list_checkpoints(thread_id="t1")
            assert len(checkpoints) == 7 and all(cp.writes for cp in checkpoints[1:])
            # the two-request form of put_checkpoint_with_writes stores both too
            first = make_checkpoint("t2", "0001")
            store.put_checkpoint(first)
            store.put_checkpoint_with_writes(make_checkpoint("t2", "0002", parent_id="0001"),
                                             [make_checkpoint_write("t2", "0001", "task", 0)], replace=False)
            assert [(t, i) for t, i, _ in stored_writes(backing, "t2", "0001")] == [("task", 0)]
            assert backing.get_checkpoint("t2").checkpoint_id == "0002"  # type: ignore[union-attr]
            store.close()
        assert sum("no PUT /api/checkpoints/with-writes" in r.getMessage() for r in caplog.records) == 1
    finally:
        backing.close()
