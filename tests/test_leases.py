"""`leases.Heartbeat`: one renewer thread keeps every lease this process holds, and stops cleanly."""

from __future__ import annotations

import os
import threading
import time

from agentspan import leases
from agentspan.records import Run
from agentspan.stores.memory import MemoryStore


def _claimed(store: MemoryStore, ttl: float) -> Run:
    run, _ = store.create_run(Run(framework="test", agent="a", input="hi"))
    return store.claim_run(run.id, owner="me", expected_epoch=run.lease_epoch, lease_expires_at=time.time() + ttl)


def _expiry(store: MemoryStore, run: Run) -> float:
    expires = store.get_run(run.id).lease_expires_at
    assert expires is not None
    return expires


def test_every_held_lease_is_renewed_until_its_heartbeat_stops() -> None:
    store, ttl = MemoryStore(), 0.3
    runs = [_claimed(store, ttl) for _ in range(3)]
    beats = [leases.Heartbeat(store, r.id, r.lease_epoch, ttl) for r in runs]
    for beat in beats:
        beat.__enter__()
    try:
        assert all(not leases.lease_is_free(store.get_run(r.id)) for r in runs)
        time.sleep(4 * ttl)  # past the first lease's expiry: only renewals keep them
        assert all(_expiry(store, r) > time.time() for r in runs)
        beats[0].__exit__(None, None, None)
        stopped_at = _expiry(store, runs[0])
        time.sleep(2 * ttl)
        assert _expiry(store, runs[0]) == stopped_at  # no renewal after __exit__ returned
        assert all(_expiry(store, r) > time.time() for r in runs[1:])
    finally:
        for beat in beats[1:]:
            beat.__exit__(None, None, None)
    renewers = [t for t in threading.enumerate() if t.name == "agentspan-lease-renewer"]
    assert len(renewers) == 1  # shared by all heartbeats, not one per run
    assert not any(b.lost for b in beats)


def test_a_lease_claimed_a_while_before_its_execution_began_is_renewed_before_it_runs_out() -> None:
    """A run whose executing thread started late on a busy machine (its lease nearly out when the
    heartbeat begins) is renewed within what is left, not a third of the TTL later."""
    store, ttl = MemoryStore(), 6.0
    run = _claimed(store, 0.45)  # claimed with 0.45 s left, as by a start() whose thread began late
    with leases.Heartbeat(store, run.id, run.lease_epoch, ttl, expires_at=run.lease_expires_at):
        time.sleep(0.6)  # past the claimed expiry: was renewed only after 2 s (ttl / 3)
        assert _expiry(store, run) > time.time() + ttl / 2
        assert not leases.lease_is_free(store.get_run(run.id), at=time.time() + 1)


def test_a_lease_taken_over_is_reported_lost_and_no_longer_renewed() -> None:
    store, ttl = MemoryStore(), 0.3
    run = _claimed(store, ttl)
    with leases.Heartbeat(store, run.id, run.lease_epoch, ttl) as beat:
        taken = store.claim_run(run.id, owner="other", expected_epoch=run.lease_epoch,
                                lease_expires_at=time.time() + 60)
        deadline = time.monotonic() + 3
        while not beat.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert beat.lost
        assert store.get_run(run.id).lease_epoch == taken.lease_epoch


def test_a_forked_child_does_not_renew_its_parents_leases() -> None:
    store = MemoryStore()
    parent_run, child_run = _claimed(store, 60.0), _claimed(store, 60.0)
    with leases.Heartbeat(store, parent_run.id, parent_run.lease_epoch, 60.0):
        pid = os.fork()
        if pid == 0:  # the child: its first heartbeat starts its own renewer
            code = 1
            try:
                with leases.Heartbeat(store, child_run.id, child_run.lease_epoch, 60.0) as beat:
                    code = 0 if list(leases._renewer._beats.values()) == [beat] else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
