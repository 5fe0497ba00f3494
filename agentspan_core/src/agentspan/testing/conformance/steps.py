"""Conformance tests for the step journal: start, finish, record and list steps, and JSON round trips."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from operator import attrgetter

import pytest

from agentspan.errors import ConfigurationError, LeaseLostError, StepNotFound
from agentspan.records import RunStatus, Step, StepKind, StepResult, StepStatus
from agentspan.stores.base import Store
from agentspan.testing.conformance.records import (
    PAYLOAD,
    ConformanceBase,
    make_approval,
    make_step,
    refused_as_not_utf8,
)

__all__ = ["StepConformance"]


class StepConformance(ConformanceBase):
    """Contract tests for the step methods of a `Store`."""

    # ---- steps ----------------------------------------------------------------------------
    def test_start_step_inserts(self, store: Store) -> None:
        run = self.claimed(store)
        step = make_step(run.id, "llm:0", 0, kind=StepKind.LLM, provider="openai", model="gpt")
        store.start_step(step, epoch=1)
        assert [s.model_dump() for s in store.list_steps(run.id)] == [step.model_dump()]
        assert store.get_run(run.id).steps == 1

    def test_start_step_not_durable_is_journaled_alike(self, store: Store) -> None:
        run = self.claimed(store)
        step = make_step(run.id, "tool:0", 0)
        store.start_step(step, epoch=1, durable=False)  # a store may hold it back until the end
        store.finish_step(run.id, "tool:0", StepResult(status=StepStatus.COMPLETED, output=1), epoch=1)
        (journaled,) = store.list_steps(run.id)
        assert (journaled.key, journaled.status, journaled.output, journaled.input) == (
            "tool:0", StepStatus.COMPLETED, 1, step.input)
        assert store.get_run(run.id).steps == 1
        with pytest.raises(LeaseLostError):  # refused at the start, or at the latest at the end
            store.start_step(make_step(run.id, "tool:1", 1), epoch=0, durable=False)
            store.finish_step(run.id, "tool:1", StepResult(status=StepStatus.COMPLETED, output=2), epoch=0)
        assert [s.key for s in store.list_steps(run.id)] == ["tool:0"]

    def test_start_step_reattempt_replaces_keeping_seq(self, store: Store) -> None:
        run = self.claimed(store)
        store.start_step(make_step(run.id, "a", 0), epoch=1)
        store.start_step(make_step(run.id, "b", 1), epoch=1)
        store.finish_step(run.id, "a", StepResult(status=StepStatus.FAILED, error="timeout"), epoch=1)
        retry = make_step(run.id, "a", 7, attempt=2, input={"retry": True})
        store.start_step(retry, epoch=1)
        steps = {s.key: s for s in store.list_steps(run.id)}
        assert steps["a"].model_dump() == retry.model_copy(update={"seq": 0}).model_dump()
        in_doubt = make_step(run.id, "b", 9, attempt=2)
        store.start_step(in_doubt, epoch=1)
        assert [(s.key, s.seq, s.attempt) for s in store.list_steps(run.id)] == [("a", 0, 2), ("b", 1, 2)]
        assert store.get_run(run.id).steps == 2

    def test_start_completed_step_refused(self, store: Store) -> None:
        run = self.claimed(store)
        store.start_step(make_step(run.id, "a", 0), epoch=1)
        store.finish_step(run.id, "a", StepResult(status=StepStatus.COMPLETED, output="done"), epoch=1)
        before = self.snapshot(store, run.id)
        with pytest.raises(ConfigurationError):
            store.start_step(make_step(run.id, "a", 0, attempt=2), epoch=1)
        assert self.snapshot(store, run.id) == before

    def test_step_writes_refused_with_stale_epoch(self, store: Store) -> None:
        run = self.claimed(store)
        store.start_step(make_step(run.id, "a", 0), epoch=1)
        store.claim_run(run.id, owner="w2", expected_epoch=1, lease_expires_at=time.time() + 60)
        before = self.snapshot(store, run.id)
        with pytest.raises(LeaseLostError):
            store.start_step(make_step(run.id, "b", 1), epoch=1)
        with pytest.raises(LeaseLostError):
            store.start_step(make_step(run.id, "a", 0, attempt=2), epoch=1)
        done = StepResult(status=StepStatus.COMPLETED, input_tokens=5, output_tokens=5, cost_usd=1.0)
        with pytest.raises(LeaseLostError):
            store.finish_step(run.id, "a", done, epoch=1)
        with pytest.raises(LeaseLostError):
            store.request_approval(make_approval(run.id, "a"), epoch=1)
        assert self.snapshot(store, run.id) == before
        assert store.find_approval(run.id, "a") is None
        store.finish_step(run.id, "a", done, epoch=2)
        assert store.get_run(run.id).input_tokens == 5

    def test_finish_step_records_result_and_totals(self, store: Store) -> None:
        run = self.claimed(store)
        store.start_step(make_step(run.id, "llm:0", 0, kind=StepKind.LLM), epoch=1)
        store.start_step(make_step(run.id, "tool:1", 1), epoch=1)
        ended = time.time()
        first = StepResult(
            status=StepStatus.COMPLETED,
            output={"text": "hello"},
            ended_at=ended,
            duration_ms=12.5,
            provider="openai",
            model="gpt-x",
            input_tokens=10,
            output_tokens=5,
            cost_usd=0.25,
        )
        store.finish_step(run.id, "llm:0", first, epoch=1)
        second = StepResult(status=StepStatus.FAILED, error="ValueError: bad", input_tokens=3, cost_usd=0.5)
        store.finish_step(run.id, "tool:1", second, epoch=1)
        llm, tool = store.list_steps(run.id)
        assert (llm.status, llm.output, llm.ended_at, llm.duration_ms) == (
            StepStatus.COMPLETED,
            {"text": "hello"},
            ended,
            12.5,
        )
        assert (llm.provider, llm.model, llm.input_tokens, llm.output_tokens, llm.cost_usd) == (
            "openai",
            "gpt-x",
            10,
            5,
            0.25,
        )
        assert (tool.status, tool.error, tool.output, tool.input_tokens) == (
            StepStatus.FAILED,
            "ValueError: bad",
            None,
            3,
        )
        totals = store.get_run(run.id)
        assert (totals.input_tokens, totals.output_tokens, totals.cost_usd, totals.steps) == (13, 5, 0.75, 2)

    def test_run_totals_read_alike_everywhere_and_outlive_the_run(self, store: Store) -> None:
        totals = attrgetter("steps", "input_tokens", "output_tokens", "cost_usd")
        done = StepResult(status=StepStatus.COMPLETED, input_tokens=7, output_tokens=2, cost_usd=0.5)
        for end in ("complete", "cancel"):
            run = self.claimed(store, agent=f"totals-{end}")
            store.record_step(make_step(run.id, "llm:0", 0, kind=StepKind.LLM), done, epoch=1)
            store.start_step(make_step(run.id, "tool:1", 1), epoch=1)
            store.finish_step(run.id, "tool:1", done, epoch=1)
            expected = (2, 14, 4, 1.0)
            assert totals(store.get_run(run.id)) == expected
            assert [totals(r) for r in store.list_runs(agent=f"totals-{end}")] == [expected]
            assert [totals(r) for r in store.claimable_runs(agents=[f"totals-{end}"], now=time.time() + 3600)] == [
                expected]
            if end == "complete":
                ended = store.update_run(run.id, epoch=1, status=RunStatus.COMPLETED, release_lease=True)
            else:
                ended = store.cancel_run(run.id, reason="enough")
            assert totals(ended) == expected
            assert totals(store.get_run(run.id)) == expected
            assert [totals(r) for r in store.list_runs(agent=f"totals-{end}")] == [expected]

    def test_finish_step_needs_a_started_step(self, store: Store) -> None:
        run = self.claimed(store)
        with pytest.raises(StepNotFound):
            store.finish_step(run.id, "missing", StepResult(status=StepStatus.COMPLETED), epoch=1)
        store.start_step(make_step(run.id, "a", 0), epoch=1)
        store.finish_step(run.id, "a", StepResult(status=StepStatus.COMPLETED, input_tokens=1), epoch=1)
        before = self.snapshot(store, run.id)
        with pytest.raises(StepNotFound):
            store.finish_step(run.id, "a", StepResult(status=StepStatus.FAILED, input_tokens=1), epoch=1)
        assert self.snapshot(store, run.id) == before

    def test_record_step_journals_an_ended_step_at_once(self, store: Store) -> None:
        run = self.claimed(store)
        result = StepResult(status=StepStatus.COMPLETED, output={"text": "hi"}, duration_ms=3.0,
                            provider="openai", model="gpt-x", input_tokens=7, output_tokens=2, cost_usd=0.5)
        store.record_step(make_step(run.id, "llm:0", 0, kind=StepKind.LLM), result, epoch=1)
        (step,) = store.list_steps(run.id)
        assert (step.status, step.output, step.input_tokens, step.model) == (
            StepStatus.COMPLETED, {"text": "hi"}, 7, "gpt-x")
        totals = store.get_run(run.id)
        assert (totals.input_tokens, totals.output_tokens, totals.cost_usd, totals.steps) == (7, 2, 0.5, 1)
        before = self.snapshot(store, run.id)
        with pytest.raises(LeaseLostError):
            store.record_step(make_step(run.id, "llm:1", 1, kind=StepKind.LLM), result, epoch=0)
        with pytest.raises(ConfigurationError):
            store.record_step(make_step(run.id, "llm:0", 0, kind=StepKind.LLM), result, epoch=1)
        assert self.snapshot(store, run.id) == before

    def test_list_steps_ordered_by_seq(self, store: Store) -> None:
        run = self.claimed(store)
        assert store.list_steps(run.id) == []
        for seq in (2, 0, 3, 1):
            store.start_step(make_step(run.id, f"k{seq}", seq), epoch=1)
        assert [s.seq for s in store.list_steps(run.id)] == [0, 1, 2, 3]
        assert [s.key for s in store.list_steps(run.id)] == ["k0", "k1", "k2", "k3"]

    def test_list_steps_of_a_run_id_that_is_not_utf8_is_refused(self, store: Store) -> None:
        """A lone surrogate is no run's id: an error (as SQLite and PostgreSQL cannot bind it), not
        a missing run."""
        run = self.claimed(store)
        store.start_step(make_step(run.id, "a", 0), epoch=1)
        for bad in ("\ud800", run.id + "\udcff"):
            with pytest.raises(ConfigurationError, match=r"not valid UTF-8.*lone surrogate"):
                store.list_steps(bad)

    _STEP_TEXTS = ("run_id", "key", "name", "input_hash", "error", "provider", "model")
    _RESULT_TEXTS = ("error", "provider", "model")

    @pytest.mark.parametrize("write", [
        *(f"start_step {field}" for field in _STEP_TEXTS), "start_step name, stale epoch",
        "finish_step run_id", "finish_step key", *(f"finish_step {field}" for field in _RESULT_TEXTS),
        "finish_step error, stale epoch", "finish_step error, ended step",
        "record_step key", "record_step name", *(f"record_step result {field}" for field in _RESULT_TEXTS),
        "supersede_steps run_id", "supersede_steps key", "supersede_steps key, after a missing one",
        "supersede_steps prefix", "supersede_steps reason",
    ])  # fmt: skip
    def test_step_writes_of_text_that_is_not_utf8_are_refused(self, store: Store, write: str) -> None:
        """A lone surrogate in an id, a key, a name or a message (not in a JSON value, where it is
        kept escaped) is refused as SQLite and PostgreSQL, which take text as UTF-8, refuse to bind
        it, changing nothing: before the fence and the step's state are checked (a write of an
        ended step, on a stale epoch); a `record_step` whose result holds one starts no step."""
        bad = "a\udcff"
        run = self.claimed(store)
        store.start_step(make_step(run.id, "a", 0), epoch=1)
        store.record_step(make_step(run.id, "done", 1), StepResult(status=StepStatus.COMPLETED, output=1), epoch=1)
        before = self.snapshot(store, run.id)

        def step(**fields: object) -> Step:  # (pydantic refuses a lone surrogate in a run id or key)
            return make_step(run.id, "b", 2).model_copy(update=fields)

        def result(**fields: object) -> StepResult:
            return StepResult(status=StepStatus.COMPLETED, output={"ok": 1}).model_copy(update=fields)

        calls: dict[str, Callable[[], object]] = {
            **{f"start_step {field}": partial(lambda field: store.start_step(step(**{field: bad}), epoch=1), field)
               for field in self._STEP_TEXTS},
            "start_step name, stale epoch": lambda: store.start_step(step(name=bad), epoch=9),
            "finish_step run_id": lambda: store.finish_step(bad, "a", result(), epoch=1),
            "finish_step key": lambda: store.finish_step(run.id, "a" + bad, result(), epoch=1),
            **{f"finish_step {field}": partial(
                lambda field: store.finish_step(run.id, "a", result(**{field: bad}), epoch=1), field)
               for field in self._RESULT_TEXTS},
            "finish_step error, stale epoch": lambda: store.finish_step(run.id, "a", result(error=bad), epoch=9),
            "finish_step error, ended step": lambda: store.finish_step(run.id, "done", result(error=bad), epoch=1),
            "record_step key": lambda: store.record_step(step(key=bad), result(), epoch=1),
            "record_step name": lambda: store.record_step(step(name=bad), result(), epoch=1),
            **{f"record_step result {field}": partial(
                lambda field: store.record_step(step(), result(**{field: bad}), epoch=1), field)
               for field in self._RESULT_TEXTS},
            "supersede_steps run_id": lambda: store.supersede_steps(bad, ["a"], prefix="p:", reason="r", epoch=1),
            "supersede_steps key": lambda: store.supersede_steps(run.id, [bad], prefix="p:", reason="r", epoch=1),
            "supersede_steps key, after a missing one": lambda: store.supersede_steps(
                run.id, ["missing", bad], prefix="p:", reason="r", epoch=1),
            "supersede_steps prefix": lambda: store.supersede_steps(run.id, ["a"], prefix=bad, reason="r", epoch=1),
            "supersede_steps reason": lambda: store.supersede_steps(run.id, ["a"], prefix="p:", reason=bad, epoch=1),
        }
        refused_as_not_utf8(store, calls[write])
        assert self.snapshot(store, run.id) == before

    def test_json_values_holding_a_lone_surrogate_round_trip(self, store: Store) -> None:
        """A lone surrogate in a JSON value (a tool result quoting a file name decoded with
        ``surrogateescape``, say) is kept, as its escape: unlike one in an id, a name or a message."""
        value = {"text": "a\udcff", "list": ["\ud800", 1]}
        run = self.claimed(store, input=value, options={"o": value})
        store.start_step(make_step(run.id, "a", 0, input=value), epoch=1)
        store.finish_step(run.id, "a", StepResult(status=StepStatus.COMPLETED, output=value), epoch=1)
        store.record_step(make_step(run.id, "b", 1, input=[value]), StepResult(status=StepStatus.COMPLETED,
                                                                                output=[value]), epoch=1)
        store.request_approval(make_approval(run.id, "c", args=value), epoch=1)
        store.update_run(run.id, epoch=1, status=RunStatus.FAILED, output=value, error="boom", release_lease=True)
        got = store.get_run(run.id)
        assert (got.input, got.options, got.output) == (value, {"o": value}, value)
        assert [(s.input, s.output) for s in store.list_steps(run.id)] == [(value, value), ([value], [value])]
        assert store.find_approval(run.id, "c").args == value  # type: ignore[union-attr]
        reopened = store.reopen_run(run.id, owner=None, lease_expires_at=None, options={"p": value})
        assert (reopened.options["o"], reopened.options["p"]) == (value, value)

    def test_json_round_trip(self, store: Store) -> None:
        run = self.claimed(store, input=PAYLOAD, options={"payload": PAYLOAD})
        assert store.get_run(run.id).input == PAYLOAD
        store.start_step(make_step(run.id, "a", 0, input=[PAYLOAD, "x", 1.5, None]), epoch=1)
        store.finish_step(run.id, "a", StepResult(status=StepStatus.COMPLETED, output=PAYLOAD), epoch=1)
        store.start_step(make_step(run.id, "b", 1, input="plain string"), epoch=1)
        store.finish_step(run.id, "b", StepResult(status=StepStatus.COMPLETED, output=0.1 + 0.2), epoch=1)
        store.request_approval(make_approval(run.id, "c", args=PAYLOAD), epoch=1)
        store.update_run(run.id, epoch=1, output=[PAYLOAD])
        got = store.get_run(run.id)
        assert (got.input, got.options, got.output) == (PAYLOAD, {"payload": PAYLOAD}, [PAYLOAD])
        a, b = store.list_steps(run.id)
        assert (a.input, a.output) == ([PAYLOAD, "x", 1.5, None], PAYLOAD)
        assert (b.input, b.output) == ("plain string", 0.1 + 0.2)
        assert store.find_approval(run.id, "c").args == PAYLOAD  # type: ignore[union-attr]

    def test_json_tuples_become_lists(self, store: Store) -> None:
        run = self.claimed(store, input={"pair": (1, 2)})
        assert store.get_run(run.id).input == {"pair": [1, 2]}
