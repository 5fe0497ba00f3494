"""`RemoteStore` refuses text holding a lone surrogate (in an id, a name or a message) as every
store does (`agentspan.stores.base.unstorable`), in the client, before anything is sent: not with
pydantic's ``ValidationError`` (a body field with a length limit) nor the server's 422 (``unable to
parse raw data as a unicode string``). A lone surrogate in a JSON value is still sent and kept."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from agentspan import wire
from agentspan.errors import ConfigurationError
from agentspan.records import RunStatus, StepResult, StepStatus
from agentspan.stores.remote import RemoteStore
from agentspan.stores.remote_texts import check_texts, refuse_unstorable
from agentspan.testing.conformance import make_approval, make_checkpoint, make_checkpoint_write, make_run, make_step

from server_support import sqlite_server

BAD = "a\udcff"


@pytest.fixture(autouse=True)
def _home(home: Path) -> Path:
    """A fresh AGENTSPAN_HOME (nothing touches ~/.agentspan)."""
    return home


class Recording(httpx.HTTPTransport):
    """httpx's transport, keeping the requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RemoteStore, Recording, str]]:
    """A client of a server over SQLite, the requests it sends, and the server's URL."""
    transport = Recording()
    with sqlite_server(tmp_path / "server.db") as (url, _):
        store = RemoteStore(url, retry_for=2.0, transport=transport)
        yield store, transport, url
        store.close()


def _calls(store: RemoteStore) -> dict[str, Callable[[], object]]:
    """Writes whose text (not JSON) holds a lone surrogate, against a claimed run, a started step
    and a pending approval."""
    run, _ = store.create_run(make_run())
    run = store.claim_run(run.id, owner="w1", expected_epoch=0, lease_expires_at=time.time() + 60)
    store.start_step(make_step(run.id, "a", 0), epoch=1)
    pending = store.request_approval(make_approval(run.id, "tool:0"), epoch=1)
    store.put_checkpoint(make_checkpoint("t", "cp-1"))
    done = StepResult(status=StepStatus.COMPLETED, output={"ok": 1})
    later = time.time() + 60
    return {
        # refused by pydantic building the body (a field with a length limit): ValidationError before
        "claim_run owner": lambda: store.claim_run(run.id, owner=BAD, expected_epoch=1, lease_expires_at=later),
        "finish_step key": lambda: store.finish_step(run.id, "a" + BAD, done, epoch=1),
        "supersede_steps prefix": lambda: store.supersede_steps(run.id, ["a"], prefix=BAD, reason="r", epoch=1),
        "claim_announcement claimant": lambda: store.claim_announcement(pending.id, claimant=BAD),
        # refused by the server parsing the body: "unable to parse raw data as a unicode string" before
        "create_run agent": lambda: store.create_run(make_run(agent=BAD)),
        "create_run id": lambda: store.create_run(make_run().model_copy(update={"id": BAD})),
        "update_run error": lambda: store.update_run(run.id, epoch=1, status=RunStatus.FAILED, error=BAD),
        "cancel_run reason": lambda: store.cancel_run(run.id, reason=BAD),
        "reopen_run by": lambda: store.reopen_run(run.id, owner=None, lease_expires_at=None, by=BAD),
        "start_step name": lambda: store.start_step(make_step(run.id, "b", 1, name=BAD), epoch=1),
        "record_step result error": lambda: store.record_step(
            make_step(run.id, "b", 1), done.model_copy(update={"error": BAD}), epoch=1),
        "supersede_steps key": lambda: store.supersede_steps(run.id, ["a", BAD], prefix="p:", reason="r", epoch=1),
        "supersede_steps reason": lambda: store.supersede_steps(run.id, ["a"], prefix="p:", reason=BAD, epoch=1),
        "request_approval tool": lambda: store.request_approval(make_approval(run.id, "tool:1", tool=BAD), epoch=1),
        "decide_approval by": lambda: store.decide_approval(
            pending.id, approved=True, by=BAD, reason=None, decided_at=time.time()),
        "decide_approval reason": lambda: store.decide_approval(
            pending.id, approved=True, by=None, reason=BAD, decided_at=time.time()),
        "put_checkpoint type": lambda: store.put_checkpoint(make_checkpoint("t", "cp-2", type=BAD)),
        "put_checkpoint_writes channel": lambda: store.put_checkpoint_writes(
            [make_checkpoint_write("t", "cp-1", "task", 0, channel=BAD)], replace=False),
        "delete_checkpoints": lambda: store.delete_checkpoints(BAD),
        "copy_checkpoints target": lambda: store.copy_checkpoints("t", BAD),
    }


CASES = [
    "claim_run owner", "finish_step key", "supersede_steps prefix", "claim_announcement claimant",
    "create_run agent", "create_run id", "update_run error", "cancel_run reason", "reopen_run by",
    "start_step name", "record_step result error", "supersede_steps key", "supersede_steps reason",
    "request_approval tool", "decide_approval by", "decide_approval reason", "put_checkpoint type",
    "put_checkpoint_writes channel", "delete_checkpoints", "copy_checkpoints target",
]  # fmt: skip


@pytest.mark.parametrize("write", CASES)
def test_refused_in_the_client_as_every_store_refuses_it(served, write: str) -> None:
    store, transport, url = served
    call = _calls(store)[write]
    transport.sent.clear()
    with pytest.raises(ConfigurationError) as refused:
        call()
    expected = f"Agentspan store {url}: text that is not valid UTF-8 (a lone surrogate) cannot be stored or looked up: "
    assert str(refused.value).startswith(expected)
    assert re.search(r"a\\udcff", str(refused.value))  # the text, escaped
    assert transport.sent == []  # refused before anything was sent


def test_held_starts_stay_held_when_supersede_steps_is_refused(served) -> None:
    store, transport, _ = served
    run, _ = store.create_run(make_run())
    run = store.claim_run(run.id, owner="w1", expected_epoch=0, lease_expires_at=time.time() + 60)
    store.start_step(make_step(run.id, "a", 0), epoch=1, durable=False)  # held back (`defer_start_for`)
    transport.sent.clear()
    with pytest.raises(ConfigurationError, match="not valid UTF-8"):
        store.supersede_steps(run.id, ["a"], prefix="p:", reason=BAD, epoch=1)
    assert transport.sent == []  # its held start was not sent for a refused call
    store.finish_step(run.id, "a", StepResult(status=StepStatus.COMPLETED, output=1), epoch=1)
    assert [(s.key, s.status) for s in store.list_steps(run.id)] == [("a", StepStatus.COMPLETED)]


@pytest.mark.parametrize("value", [BAD, {"text": BAD, "list": ["\ud800"]}])
def test_json_values_holding_one_are_sent_and_kept(served, value: object) -> None:
    store, transport, _ = served
    run, _ = store.create_run(make_run(input=value, options={"o": value}))
    run = store.claim_run(run.id, owner="w1", expected_epoch=0, lease_expires_at=time.time() + 60)
    store.start_step(make_step(run.id, "a", 0, input=value), epoch=1)
    store.finish_step(run.id, "a", StepResult(status=StepStatus.COMPLETED, output=value), epoch=1)
    stored = store.get_run(run.id)
    assert (stored.input, stored.options) == (value, {"o": value})
    assert [(s.input, s.output) for s in store.list_steps(run.id)] == [(value, value)]


def test_other_validation_errors_are_left_to_the_caller() -> None:
    """Only pydantic's refusal of a lone surrogate becomes the stores' error (an empty owner is not one)."""
    with pytest.raises(ValidationError) as empty:
        wire.ClaimRun(owner="", expected_epoch=0, lease_expires_at=1.0)
    refuse_unstorable(empty.value, "here")  # returns: the caller raises pydantic's error
    with pytest.raises(ValidationError) as bad:
        wire.ClaimRun(owner=BAD, expected_epoch=0, lease_expires_at=1.0)
    with pytest.raises(ConfigurationError, match=r"^Agentspan store here: text that is not valid UTF-8"):
        refuse_unstorable(bad.value, "here")


def test_json_values_are_not_checked_as_texts() -> None:
    """`check_texts` reads the annotations: a JSON value (``Any``, a dict) holding a lone surrogate
    is no text, a nested record's and a list's texts are."""
    step, done = make_step("r", "k", 0, input=BAD, name="n"), StepResult(status=StepStatus.COMPLETED)
    check_texts(wire.RecordStep(step=step, result=done.model_copy(update={"output": {BAD: BAD}}), epoch=1), "here")
    check_texts(make_run(options={BAD: [BAD]}, input=BAD), "here")
    for refused in (
        wire.RecordStep(step=step.model_copy(update={"model": BAD}), result=done, epoch=1),
        wire.RecordStep(step=step, result=done.model_copy(update={"error": BAD}), epoch=1),
        wire.SupersedeSteps(keys=["a", BAD], prefix="p", reason="r", epoch=1),
        wire.PutCheckpointWrites(writes=[make_checkpoint_write("t", "c", "x", 0, task_path=BAD)], replace=False),
    ):
        with pytest.raises(ConfigurationError, match="not valid UTF-8"):
            check_texts(refused, "here")


def test_async_step_writes_refuse_text_that_is_not_utf8_before_sending(served):
    """The awaitable step writes (runs in the caller's event loop, `RemoteStore.arecord_step` ...)
    refuse it as the blocking ones do (was: sent, and the server's 422)."""
    import asyncio

    store, transport, _ = served
    run, _ = store.create_run(make_run())
    store.claim_run(run.id, owner="me", expected_epoch=0, lease_expires_at=time.time() + 60)
    done = StepResult(status=StepStatus.COMPLETED, output={"x": 1})
    sent = len(transport.sent)
    named = make_step(run.id, "tool:0", 0).model_copy(update={"name": BAD})  # (a model refuses it as a key)
    for write in (lambda: store.astart_step(named, epoch=1), lambda: store.arecord_step(named, done, epoch=1)):
        with pytest.raises(ConfigurationError, match=r"not valid UTF-8 \(a lone surrogate\)"):  # the client's
            asyncio.run(write())  # (was: sent, and refused by the server: "invalid request: ... no lone surrogates")
    assert len(transport.sent) == sent
    assert store.list_steps(run.id) == []
