"""`AgentspanSaver` through an Agentspan server: LangGraph's conformance suite against a
`RemoteStore` talking to a real server (uvicorn on loopback) over SQLite and over PostgreSQL, real
graphs through a server process found via ``AGENTSPAN_SERVER_URL``, and the server's roles as the
saver sees them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.types import Command

import agentspan
from agentspan.errors import AuthError
from agentspan.stores.base import Store
from agentspan.stores.remote import RemoteStore
from agentspan.stores.sqlite import SqliteStore
from agentspan_langgraph import AgentspanSaver
from agentspan_server.app import create_app
from agentspan_server.auth import KeyRing
from agentspan_server.stores.postgres import PostgresStore

from lg_support import Effects, approval_graph, counter_graph, counter_input, fanout_graph
from server_support import CountingTransport, thread_server

ADMIN, AGENT = "admin-key-0123456789", "agent-key-0123456789"
KEYS = KeyRing([(ADMIN, "admin"), (AGENT, "agent")])
BACKENDS = ("sqlite", "postgres")


def backing_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "sqlite":
        return SqliteStore(tmp_path / "server.db")
    return PostgresStore(request.getfixturevalue("pg_db"))


@pytest.fixture(params=BACKENDS)
def backing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The store behind the server: a SQLite file or a fresh PostgreSQL database."""
    store = backing_store(request.param, tmp_path, request)
    yield store
    store.close()


@pytest.fixture
def server_url(backing: Store) -> Iterator[str]:
    """A server (uvicorn in a thread, no API keys: loopback) over ``backing``."""
    with thread_server(create_app(backing)) as url:
        yield url


def cfg(thread_id: str = "t1", **configurable: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, **configurable}}


# ---- LangGraph's conformance suite through the server ------------------------------------------
def test_conformance_suite_passes_every_capability_through_the_server(
    server_url: str, backing: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    clients: list[RemoteStore] = []
    transports: list[CountingTransport] = []

    @checkpointer_test(name=f"AgentspanSaver[server on {type(backing).__name__}]")
    async def factory() -> AsyncIterator[AgentspanSaver]:
        transports.append(CountingTransport())  # a fresh client and saver per capability suite
        # writes held until their thread's next checkpoint or read, never by the timer: the suite
        # passing shows a client always reads what it wrote
        clients.append(RemoteStore(server_url, transport=transports[-1], retry_for=2.0, hold_writes_for=60))
        yield AgentspanSaver(clients[-1])

    report = asyncio.run(validate(factory))
    for client in clients:
        client.close()
    report.print_report()
    failures = [f"{name}: {failure}" for name, r in report.results.items() for failure in r.failures]
    assert report.passed_all_base(), failures
    assert {c.value for c in ALL_CAPABILITIES} == set(report.results)
    assert all(r.detected and r.passed is True for r in report.results.values()), failures
    assert "FULL (8/8)" in capsys.readouterr().out
    # Every capability went over HTTP, and the server's store holds what the suite left there.
    sent = {line for t in transports for line in t.sent}
    assert {"PUT /api/checkpoints", "PUT /api/checkpoints/with-writes", "PUT /api/checkpoints/writes",
            "GET /api/checkpoints/find",
            "POST /api/checkpoints/search", "POST /api/checkpoints/copy", "POST /api/checkpoints/delete",
            "POST /api/checkpoints/delete-for-runs", "POST /api/checkpoints/prune"} <= sent  # fmt: skip
    assert len(transports) == len(ALL_CAPABILITIES) and all(t.sent for t in transports)
    assert backing.list_checkpoints(limit=1)


# ---- roles: deleting needs an admin key ---------------------------------------------------------
def test_an_agent_key_saves_and_reads_but_deleting_needs_an_admin_key(backing: Store) -> None:
    with thread_server(create_app(backing, keys=KEYS)) as url:
        agent_store = RemoteStore(url, api_key=AGENT, retry_for=1.0)
        saver = AgentspanSaver(agent_store)
        graph = counter_graph(2, checkpointer=saver)
        assert graph.invoke(counter_input(), {**cfg("a"), "metadata": {"run_id": "r1"}})["count"] == 2
        saver.copy_thread("a", "b")  # copying is an agent's right
        stored = {t: [c.checkpoint_id for c in backing.list_checkpoints(thread_id=t)] for t in ("a", "b")}
        assert len(stored["a"]) == 4 and stored["a"] == stored["b"]

        for delete in (lambda: saver.delete_thread("a"), lambda: saver.delete_for_runs(["r1"]),
                       lambda: saver.prune(["a"]), lambda: saver.prune(["a"], strategy="delete")):  # fmt: skip
            with pytest.raises(AuthError, match="admin"):
                delete()
        with pytest.raises(AuthError, match="admin"):
            asyncio.run(saver.adelete_thread("a"))
        assert {t: [c.checkpoint_id for c in backing.list_checkpoints(thread_id=t)] for t in ("a", "b")} == stored
        assert graph.get_state(cfg("a")).values["count"] == 2
        agent_store.close()

        nobody = AgentspanSaver(RemoteStore(url, retry_for=1.0))  # no key at all: refused, even reading
        with pytest.raises(AuthError):
            nobody.get_tuple(cfg("a"))
        nobody.store.close()

        admin_store = RemoteStore(url, api_key=ADMIN, retry_for=1.0)
        admin = AgentspanSaver(admin_store)
        admin.prune(["a"])
        assert len(backing.list_checkpoints(thread_id="a")) == 1
        admin.delete_for_runs(["r1"])
        assert backing.list_checkpoints(thread_id="a") == []
        admin.delete_thread("b")
        assert backing.list_checkpoints() == []
        admin_store.close()


# ---- real graphs through a server process ------------------------------------------------------
@pytest.fixture(params=["server-sqlite", "server-postgres"])
def transport(request: pytest.FixtureRequest) -> str:
    """The `home` fixture starts a server process (on SQLite or PostgreSQL) and sets
    ``AGENTSPAN_SERVER_URL``: `AgentspanSaver()` finds it as the configured store."""
    return request.param


def test_interrupt_then_resume_in_a_new_process_state_through_the_server(home: Path, transport: str) -> None:
    effects = Effects()
    saver = AgentspanSaver()
    graph = approval_graph(effects, checkpointer=saver)
    paused = graph.invoke({"topic": "owls", "log": []}, cfg("t1"))
    assert paused["__interrupt__"][0].value == {"question": "Publish this?", "draft": "About owls"}
    assert isinstance(saver.store, RemoteStore) and not (home / "agentspan.db").exists()

    agentspan.config.reset()  # as a new process would: a new client, a new saver, the same server
    again = AgentspanSaver()
    graph = approval_graph(effects, checkpointer=again)
    assert again.store is not saver.store
    assert graph.get_state(cfg("t1")).next == ("review",)
    done = asyncio.run(graph.ainvoke(Command(resume="yes"), cfg("t1")))  # async: calls on worker threads
    assert done["log"] == ["draft", "review:yes", "publish"]
    assert effects == {"draft": 1, "review:before": 2, "review:after": 1, "publish": 1}
    history = list(graph.get_state_history(cfg("t1")))
    assert [h.metadata["step"] for h in history] == [3, 2, 1, 0, -1]  # type: ignore[index]

    # Time travel through the server: replay from before the draft, which forks the thread.
    before_draft = next(h for h in history if h.next == ("draft",))
    replayed = graph.invoke(None, before_draft.config)
    assert replayed["__interrupt__"][0].value["draft"] == "About owls"
    forked = graph.invoke(Command(resume="no"), cfg("t1"))
    assert forked["log"] == ["draft", "review:no"]
    assert effects == {"draft": 2, "review:before": 4, "review:after": 2, "publish": 1}  # as with InMemorySaver
    fork = [h for h in graph.get_state_history(cfg("t1")) if h.metadata["step"] == 1]  # type: ignore[index]
    assert len(fork) == 2 and {h.parent_config["configurable"]["checkpoint_id"] for h in fork} == {  # type: ignore[index]
        before_draft.config["configurable"]["checkpoint_id"]
    }
    saver.store.close()


def test_a_failed_branch_keeps_the_others_writes_on_the_server(home: Path, transport: str) -> None:
    effects = Effects()
    graph = fanout_graph(effects, fail_once="b", checkpointer=AgentspanSaver())
    with pytest.raises(RuntimeError, match="work on b failed"):
        graph.invoke({"items": ["a", "b", "c"], "results": []}, cfg("t1"), durability="sync")
    agentspan.config.reset()
    graph = fanout_graph(effects, fail_once="b", checkpointer=AgentspanSaver())
    done = graph.invoke(None, cfg("t1"))
    assert sorted(done["results"][:3]) == ["A", "B", "C"] and done["results"][3] == "total:3"
    assert effects == {"work:a": 1, "work:b": 2, "work:c": 1, "summarize": 1}
