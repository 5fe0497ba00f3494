"""Three server fixes: who a decision sent over the API without ``by`` records, the pending
approvals gauge past its cap of rows, and the SIGTERM handler restored after a C-installed one."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentspan.hashing import digest
from agentspan.records import Approval, Run
from agentspan.stores.base import Store
from agentspan.stores.memory import MemoryStore
from agentspan.stores.sqlite import SqliteStore
from agentspan_server import main
from agentspan_server.app import create_app
from agentspan_server.auth import KeyRing
from agentspan_server.metrics import GAUGE_CAP, ServerMetrics, live_pending_approvals

from pg_cluster import pg_db, postgres_url  # noqa: F401 - fixtures
from server_support import thread_server

ADMIN, AGENT, APPROVER = "admin-key-0123456789", "agent-key-0123456789", "approver-key-0123456789"
KEYS = KeyRing([(ADMIN, "admin"), (AGENT, "agent"), (APPROVER, "approver")])


@pytest.fixture(autouse=True)
def home(cli_home: Path) -> Path:
    """An empty AGENTSPAN_HOME and fresh settings: nothing touches ~/.agentspan (`conftest.cli_home`)."""
    return cli_home


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "server.db")
    yield store
    store.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def waiting_run(store: Store) -> Run:
    run = Run(framework="test", agent="a")
    store.create_run(run)
    store.claim_run(run.id, owner="w", expected_epoch=0, lease_expires_at=time.time() + 600)
    return run


def request(store: Store, run: Run, key: str, **fields: Any) -> Approval:
    return store.request_approval(Approval(run_id=run.id, step_key=key, tool="x", args_hash=digest(None),
                                           **fields), epoch=1)


# ---- 1. decided_by of a decision without `by` -------------------------------------------------
def test_a_keyed_decision_without_by_records_the_deciding_keys_role(store: SqliteStore) -> None:
    """Was: ``decided_by`` null, the audit trail not saying who decided."""
    run = waiting_run(store)
    first, second, third = (request(store, run, f"t:{n}") for n in range(3))
    with thread_server(create_app(store, keys=KEYS)) as url, httpx.Client(base_url=url) as http:
        def decide(approval: Approval, key: str, **body: Any) -> httpx.Response:
            return http.post(f"/api/approvals/{approval.id}/decision", json={"approved": True, **body},
                             headers=bearer(key))

        answer = decide(first, APPROVER)
        assert answer.status_code == 200 and answer.json()["decided_by"] == "api:approver"
        assert decide(second, ADMIN).json()["decided_by"] == "api:admin"
        # a `by` sent is kept as given, as before (a bot relaying someone's decision)
        assert decide(third, APPROVER, by="ann").json()["decided_by"] == "ann"
        assert decide(third, AGENT).status_code == 403  # an agent key still may not decide
    stored = {a.id: a.decided_by for a in store.list_approvals(run_id=run.id)}
    assert stored == {first.id: "api:approver", second.id: "api:admin", third.id: "ann"}
    assert APPROVER not in str(stored) and ADMIN not in str(stored)  # never the key itself


def test_a_keyless_decision_records_by_as_given(store: SqliteStore) -> None:
    run = waiting_run(store)
    named, unnamed = request(store, run, "t:1"), request(store, run, "t:2")
    with thread_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        # a bearer header a keyless server ignores names no principal
        assert http.post(f"/api/approvals/{named.id}/decision", json={"approved": True, "by": "bo"},
                         headers=bearer(APPROVER)).json()["decided_by"] == "bo"
        assert http.post(f"/api/approvals/{unnamed.id}/decision", json={"approved": False},
                         headers=bearer(APPROVER)).json()["decided_by"] is None
    assert store.get_approval(unnamed.id).decided_by is None


# ---- 2. the pending approvals gauge -----------------------------------------------------------
def fill(store: Store, *, live: int, expired: int) -> None:
    """``live`` approvals without a deadline, then ``expired`` newer ones past theirs (listed first:
    ids sort newest first)."""
    run = waiting_run(store)
    past = time.time() - 60
    for n in range(live):
        request(store, run, f"live:{n}", id=f"a-{n:05d}")
    for n in range(expired):
        request(store, run, f"gone:{n}", id=f"z-{n:05d}", expires_at=past)


def gauge(store: Store) -> str:
    text = ServerMetrics(store).render()[0].decode()
    return next(line for line in text.splitlines() if line.startswith("agentspan_pending_approvals "))


def test_the_gauge_counts_live_approvals_behind_more_than_the_cap_of_expired_ones(store: SqliteStore) -> None:
    """Was: the newest 1,000 pending rows were taken, then the expired ones dropped: 0 here."""
    fill(store, live=7, expired=GAUGE_CAP + 50)
    assert gauge(store) == "agentspan_pending_approvals 7.0"
    assert live_pending_approvals(store, time.time(), GAUGE_CAP) == 7


def test_the_gauge_counts_live_approvals_up_to_the_cap(store: SqliteStore) -> None:
    fill(store, live=GAUGE_CAP + 20, expired=30)
    assert gauge(store) == f"agentspan_pending_approvals {float(GAUGE_CAP)}"


@pytest.mark.parametrize(("live", "expired", "cap", "counted"), [
    (3, 25, 10, 3),  # listed in growing pages until nothing is left
    (30, 25, 10, 10),  # ... or the cap is reached
    (0, 0, 10, 0),
])
def test_a_store_without_a_count_is_listed_in_growing_pages(live: int, expired: int, cap: int, counted: int) -> None:
    memory = MemoryStore()
    assert not hasattr(memory, "count_pending_approvals")
    fill(memory, live=live, expired=expired)
    assert live_pending_approvals(memory, time.time(), cap) == counted


def test_the_deadline_itself_counts_as_expired(store: SqliteStore) -> None:
    """As `effective_status` reads it (``at >= expires_at``), in the query too."""
    run = waiting_run(store)
    at = time.time() + 100
    request(store, run, "t:at", expires_at=at)
    request(store, run, "t:after", expires_at=at + 1)
    assert store.count_pending_approvals(at=at, limit=10) == 1
    assert store.count_pending_approvals(at=at - 1, limit=10) == 2
    assert store.count_pending_approvals(at=at - 1, limit=1) == 1


def test_postgres_counts_live_pending_approvals(pg_db: str) -> None:  # noqa: F811 - the fixture
    from agentspan_server.stores.postgres import PostgresStore

    pg = PostgresStore(pg_db)
    try:
        fill(pg, live=4, expired=6)
        at = time.time()
        assert pg.count_pending_approvals(at=at, limit=100) == 4
        assert pg.count_pending_approvals(at=at, limit=3) == 3
        assert live_pending_approvals(pg, at, 100) == 4
    finally:
        pg.close()


# ---- 3. SIGTERM handler restored --------------------------------------------------------------
def test_a_sigterm_handler_installed_from_c_is_restored_as_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`signal.signal` returns None for a handler installed from C (an embedding application);
    setting None back raised TypeError when the server stopped."""
    real_signal, original = signal.signal, signal.getsignal(signal.SIGTERM)
    installed: list[Any] = []

    def from_c(signum: int, handler: Any) -> Any:
        installed.append(handler)
        real_signal(signum, handler)
        return None  # as for a handler C code installed

    monkeypatch.setattr(signal, "signal", from_c)
    try:
        with main._terminated_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is installed[0]  # SIGTERM interrupts in the block
        assert installed[-1] is signal.SIG_DFL and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        real_signal(signal.SIGTERM, original)


def test_a_python_sigterm_handler_is_restored() -> None:
    original = signal.getsignal(signal.SIGTERM)

    def mine(_signum: int, _frame: object) -> None:
        pass

    signal.signal(signal.SIGTERM, mine)
    try:
        with main._terminated_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, original)
