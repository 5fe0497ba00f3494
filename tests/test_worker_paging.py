"""`agentspan.serve` pages through the claimable runs (`Store.claimable_runs`' ``after``): runs it
cannot take up, however many and however old, do not hold back a newer run it can."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from agents import Agent, set_tracing_disabled

import agentspan
import agentspan.worker
from agentspan.records import Run, RunStatus
from agentspan.stores.base import Store
from agentspan.stores.memory import MemoryStore
from agentspan.testing.conformance.records import make_run
from agentspan_openai_agents.testing import ScriptedModel

set_tracing_disabled(True)

UNSERVABLE = 1000


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> str:
    """The embedded store, or a server over SQLite where a test asks (``indirect``)."""
    return str(getattr(request, "param", "embedded"))


@pytest.fixture(autouse=True)
def _home(home):
    return home


def _agent() -> Agent:
    return Agent(name="w", instructions="x", model=ScriptedModel(["done"] * 5, name="m"))


def _backlog(store: Store, count: int = UNSERVABLE) -> Run:
    """``count`` older runs the worker cannot take up (`_options_for` refuses them), then one it can."""
    for _ in range(count):
        store.create_run(make_run(framework="openai-agents", agent="w", input="skip me"))
    return store.create_run(make_run(framework="openai-agents", agent="w", input="serve me"))[0]


class _CountingStop(threading.Event):
    """``serve``'s ``stop``: counts the worker's polls (it waits on it once a poll)."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.polls += 1
        return super().wait(timeout)


def _serve(store: Store, asked: list[str], timeout: float, **kwargs: Any) -> int:
    """Serves (``max_runs=1`` unless given) on a thread, recording which runs ``options_for`` was
    asked about; returns the poll (0 for the first) in which it was first asked about a run it
    can take up."""
    first_servable: list[int] = []

    def options_for(run: Run) -> dict[str, Any]:
        asked.append(str(run.input))
        if run.input == "skip me":
            raise ValueError("tenant not configured here")
        first_servable.append(stop.polls)
        return {}

    stop = _CountingStop()
    kwargs = {"stop": stop, "max_runs": 1, "options_for": options_for, **kwargs}
    worker = threading.Thread(target=agentspan.serve, args=(_agent(),), kwargs=kwargs)
    worker.start()
    worker.join(timeout)
    stop.set()
    worker.join(30)
    return first_servable[0] if first_servable else stop.polls


@pytest.mark.parametrize("transport", ["embedded", "server-sqlite"], indirect=True)
def test_a_worker_takes_up_a_newer_run_behind_a_thousand_it_cannot(transport):
    """Was: the worker read the oldest runs in a window that grew by at most 10 a poll and stopped
    at 1,000, so the run behind 1,000 unservable ones was never taken up (behind 500: ~10 s)."""
    store = agentspan.get_store()
    good = _backlog(store)
    asked: list[str] = []
    poll = _serve(store, asked, timeout=10, poll_interval=0.05)
    assert store.get_run(good.id).status == RunStatus.COMPLETED
    assert poll <= 1  # taken up in the second poll at the latest: 1,000 runs a poll at most
    # each run it cannot take up was asked about once: remembered, not asked again each poll
    assert asked.count("skip me") == UNSERVABLE and asked.count("serve me") == 1


class _PlainStore(MemoryStore):
    """A store written before ``after``: its ``claimable_runs`` does not take it."""

    def claimable_runs(self, *, agents: Sequence[str] | None, now: float,  # type: ignore[override]
                       limit: int = 10) -> list[Run]:
        return super().claimable_runs(agents=agents, now=now, limit=limit)


class _IgnoringStore(MemoryStore):
    """What a server that predates ``after`` answers: the oldest runs, whatever ``after`` says."""

    def __init__(self) -> None:
        super().__init__()
        self.ignored = 0

    def claimable_runs(self, *, agents: Sequence[str] | None, now: float, limit: int = 10,
                       after: str | None = None) -> list[Run]:
        self.ignored += after is not None
        return super().claimable_runs(agents=agents, now=now, limit=limit)


@pytest.mark.parametrize("kind", [_PlainStore, _IgnoringStore])
def test_a_store_without_after_is_read_as_before(monkeypatch, kind):
    """A store (or server) without ``after`` is read from the oldest, the window widened by the
    runs the worker cannot take up (as before paging): a run behind a few of them is still served."""
    store = kind()
    monkeypatch.setattr(agentspan.worker, "get_store", lambda: store)
    good = _backlog(store, 110)  # more than a page: the second page asks with after=
    asked: list[str] = []
    _serve(store, asked, timeout=20, poll_interval=0.005)
    assert store.get_run(good.id).status == RunStatus.COMPLETED
    assert asked.count("skip me") == 110
    if isinstance(store, _IgnoringStore):
        assert store.ignored == 1  # noticed at once; then read as before


def test_runs_behind_the_cursor_are_found_once_the_newest_was_read(monkeypatch):
    """The scan starts from the oldest again once it read the newest run: a run older than where
    it went on from (here: one whose lease lapsed meanwhile) is taken up too."""
    monkeypatch.setattr(agentspan.worker, "_PAGE", 10)
    monkeypatch.setattr(agentspan.worker, "_PAGES_PER_POLL", 1)  # a few polls to the newest run
    store = MemoryStore()
    monkeypatch.setattr(agentspan.worker, "get_store", lambda: store)
    held = store.create_run(make_run(framework="openai-agents", agent="w", input="serve me"))[0]
    store.claim_run(held.id, owner="elsewhere", expected_epoch=0, lease_expires_at=time.time() + 0.3)
    good = _backlog(store, 50)
    asked: list[str] = []
    _serve(store, asked, timeout=20, poll_interval=0.02, max_runs=2)
    assert [store.get_run(r.id).status for r in (held, good)] == [RunStatus.COMPLETED] * 2
    assert asked.count("skip me") == 50


def test_a_run_behind_the_cursor_is_taken_up_while_newer_runs_keep_the_worker_busy(monkeypatch):
    """A steady backlog of newer runs keeps a worker of one slot from ever reading the newest run:
    it still goes back to the oldest after a bounded number of polls, so a run whose lease lapsed
    behind the cursor is taken up (was: never, while the backlog lasted)."""
    store = MemoryStore()
    table = agentspan.worker._serve_table((_agent(),))
    taken: list[str] = []

    class _Handle:
        _future = None

    def spawn(store: Store, run: Run, *args: Any, **kwargs: Any) -> Any:
        taken.append(str(run.input))
        return _Handle()

    monkeypatch.setattr(agentspan.worker, "_spawn", spawn)

    def options_for(run: Run) -> dict[str, Any]:
        if run.input == "skip me":
            raise ValueError("not this worker's")
        return {}

    def new(what: str) -> Run:
        return store.create_run(make_run(framework="openai-agents", agent="w", input=what))[0]

    for _ in range(100):
        new("skip me")
    behind = new("behind")
    store.claim_run(behind.id, owner="elsewhere", expected_epoch=0, lease_expires_at=time.time() + 0.2)
    for _ in range(100):
        new("skip me")
    for n in range(3):
        new(f"newer {n}")
    active: dict[str, Any] = {}
    scan = agentspan.worker._Scan(store, table, options_for, active)
    for poll in range(30):
        scan.take_up(1)  # one free slot a poll
        for run_id in list(active):  # the run taken up ends; a newer one comes (a steady backlog)
            store.cancel_run(run_id)
            del active[run_id]
        new(f"newer {poll + 3}")
        if poll == 0:
            time.sleep(0.3)  # the lease lapses: "behind" is claimable, older than every newer run
    assert "behind" in taken[:agentspan.worker._POLLS_PAST + 3]
