"""`agentspan.attached`: the run lifecycle for loops the core does not drive (framework plugins),
on the real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentspan import attached, leases
from agentspan.errors import ConfigurationError, LeaseLostError, RunCancelledError, RunCancelledSignal
from agentspan.records import RunStatus, StepKind
from agentspan.stores.sqlite import SqliteStore


@pytest.fixture
def store(home: Path) -> SqliteStore:
    return SqliteStore(home / "attached.db")


def _new(store: SqliteStore, key: str | None = None):
    run, created = store.create_run(attached.new_run(framework="toy", agent="toy", input="hi", idempotency_key=key))
    assert created
    return run


async def _noop() -> str:
    return "live"


def test_complete_records_output_and_releases_the_lease(store: SqliteStore) -> None:
    run = _new(store)
    at = attached.attach(store, run, fresh=True)
    assert attached.attached_here(run.id) is at
    assert not leases.lease_is_free(store.get_run(run.id))  # executing here
    at.complete({"text": "done"})
    stored = store.get_run(run.id)
    assert (stored.status, stored.output, stored.lease_owner) == (RunStatus.COMPLETED, {"text": "done"}, None)
    assert at.ended and attached.attached_here(run.id) is None
    at.fail(ValueError("late"))  # an ending after the end does nothing
    assert store.get_run(run.id).status is RunStatus.COMPLETED


def test_an_end_no_store_takes_fails_the_run_instead_of_leaving_it_running(store: SqliteStore) -> None:
    run = _new(store)
    at = attached.attach(store, run, fresh=True)
    with pytest.raises(ConfigurationError, match="only JSON values can be stored"):
        at.complete({"when": object()})
    stored = store.get_run(run.id)
    assert (stored.status, stored.lease_owner) == (RunStatus.FAILED, None)
    assert stored.error is not None and stored.error.startswith("the run's end could not be stored: only JSON values")


def test_fail_suspend_and_abandon(store: SqliteStore) -> None:
    failed, waiting, left = _new(store), _new(store), _new(store)
    attached.attach(store, failed, fresh=True).fail(KeyError("boom"))
    attached.attach(store, waiting, fresh=True).suspend()
    attached.attach(store, left, fresh=True).abandon()
    assert (store.get_run(failed.id).status, store.get_run(failed.id).error) == (RunStatus.FAILED, "KeyError: 'boom'")
    assert store.get_run(waiting.id).status is RunStatus.WAITING
    kept = store.get_run(left.id)
    assert (kept.status, kept.lease_owner) == (RunStatus.RUNNING, None)
    assert leases.lease_is_free(kept) and leases.lease_is_free(store.get_run(waiting.id))


def _tool_step(active):
    return asyncio.run(active.step(kind=StepKind.TOOL, key="t:0", name="t", input={}, input_hash=None,
                                   invoke=_noop, dump=str, load=str))


def test_journal_of_a_claimed_run_is_loaded_and_claiming_marks_it_running(store: SqliteStore) -> None:
    run = _new(store)
    first = attached.attach(store, run, fresh=True)
    assert _tool_step(first.active) == "live"
    first.suspend()
    claimed = attached.claim(store, run.id)
    again = attached.attach(store, claimed)
    assert store.get_run(run.id).status is RunStatus.RUNNING
    assert again.epoch == claimed.lease_epoch == 2
    assert list(again.active.journal) == ["t:0"]
    assert _tool_step(again.active) == "live"
    assert again.counters.replayed("tool") == 1
    again.complete(None)


def test_create_or_claim_finds_the_run_by_idempotency_key(store: SqliteStore) -> None:
    template = attached.new_run(framework="toy", agent="toy", input="hi", idempotency_key="k1")
    run, created = attached.create_or_claim(store, template)
    assert created
    first = attached.attach(store, run, fresh=True)
    # The same process opens it again (its loop vanished without a callback): the first
    # attachment is abandoned and the run claimed again at once.
    second_run, created = attached.create_or_claim(
        store, attached.new_run(framework="toy", agent="toy", input="hi", idempotency_key="k1"))
    assert (created, second_run.id, second_run.lease_epoch) == (False, run.id, 2)
    assert first.ended
    second = attached.attach(store, second_run)
    with pytest.raises(LeaseLostError):  # the first attachment is fenced off
        store.update_run(run.id, epoch=first.epoch, status=RunStatus.COMPLETED)
    second.complete("ok")
    assert attached.create_or_claim(
        store, attached.new_run(framework="toy", agent="toy", input="hi", idempotency_key="k1")) is None


def test_context_manager_abandons_cancels_or_leaves_the_run(store: SqliteStore) -> None:
    left = _new(store)
    with pytest.raises(ZeroDivisionError):
        with attached.attach(store, left, fresh=True):
            raise ZeroDivisionError
    assert store.get_run(left.id).lease_owner is None  # abandoned: a retry may claim it at once

    cancelled = _new(store)
    store.cancel_run(cancelled.id, reason="stop it")
    with pytest.raises(RunCancelledError, match="stop it"):
        with attached.attach(store, cancelled, fresh=True) as at:
            at.complete("never")  # the write finds the run cancelled
    assert store.get_run(cancelled.id).status is RunStatus.CANCELLED

    signalled = _new(store)
    with pytest.raises(RunCancelledError, match="by the test"):
        with attached.attach(store, signalled, fresh=True):
            raise RunCancelledSignal(signalled.id, "by the test")
    assert (store.get_run(signalled.id).status, store.get_run(signalled.id).error) == (
        RunStatus.CANCELLED, "by the test")

    taken = _new(store)
    with pytest.raises(LeaseLostError):
        with attached.attach(store, taken, fresh=True):
            store.claim_run(taken.id, owner="elsewhere:1:x", expected_epoch=1, lease_expires_at=1e12)
            raise LeaseLostError("taken over")
    stored = store.get_run(taken.id)
    assert (stored.status, stored.lease_owner, stored.lease_epoch) == (RunStatus.RUNNING, "elsewhere:1:x", 2)
