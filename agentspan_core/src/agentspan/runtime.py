"""`ActiveRun`: the journal cursor of one execution attempt of a run.

Adapters route every intercepted call through `ActiveRun.step` (or `ActiveRun.tool`). A
completed step returns its recorded output without calling anything; anything else runs live and
is journaled when it ends (a tool call also ``started`` before it runs, held back while that
marker may be lost: `agentspan.stores.deferred`). Re-execution replays the framework's loop from
the start, so step keys must be deterministic (`agentspan.keys`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook registered first, so that ours (`_on_exit`) runs first
import contextlib
import contextvars
import functools
import logging
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agentspan.attempt import Counters, LlmMetrics, Scope, current_strict_replay
from agentspan.divergence import OnDivergence, diverged, input_change, policy_of, set_aside, without_core_options
from agentspan.errors import AgentspanError, InDoubtStepError, ProcessExiting, RecordedStepFailure
from agentspan.events import EventSink, sink_of
from agentspan.jsontext import error_text, utf8_text
from agentspan.keys import _scope
from agentspan.models import price_usd
from agentspan.records import JSON, Run, Step, StepKind, StepResult, StepStatus, completed_result, started_step
from agentspan.stores.base import Store, call_store
from agentspan.tool_steps import ToolSteps
from agentspan.tools import StepInfo, _current_step

if TYPE_CHECKING:
    from agentspan.leases import Heartbeat
    from agentspan.tracing import RunTrace

T = TypeVar("T")
log = logging.getLogger("agentspan")
_ENDED_FIELDS = ("status", "output", "error", "ended_at")
_exiting = False


def failed_for_exit(error: BaseException | str) -> bool:
    """Whether a call failed because the process is exiting, not for a reason of its own: its main
    thread ended, the runs of background threads (`agentspan.start`, a worker's) go on while the
    interpreter shuts down around them, and the error (or the text the framework answered with
    for it) is the interpreter's refusal ("cannot schedule new futures after interpreter
    shutdown", "can't create new thread at interpreter shutdown")."""
    if not (_exiting or getattr(sys.modules.get("concurrent.futures.thread"), "_shutdown", False)):
        return False
    if isinstance(error, str):
        return error.startswith("RuntimeError: ") and "shutdown" in error
    seen: BaseException | None = error
    for _ in range(8):  # through the framework's wrapping (`raise ... from`)
        if seen is None:
            return False
        if isinstance(seen, RuntimeError) and "shutdown" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _on_exit() -> None:
    global _exiting
    _exiting = True


try:  # called when the main thread ends (as the executors' own exit hook, which marks them shut down)
    threading._register_atexit(_on_exit)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # not CPython's threading, or already shutting down
    atexit.register(_on_exit)

_active: contextvars.ContextVar[ActiveRun | None] = contextvars.ContextVar("agentspan_active_run", default=None)
async_writes: contextvars.ContextVar[bool] = contextvars.ContextVar("agentspan_async_writes", default=False)
"""True while a run executes in the caller's own event loop (``await agentspan.run_async``): a
store with awaitable step writes (`RemoteStore`) is awaited there instead of called on a worker
thread."""


def active_run() -> ActiveRun | None:
    """Returns the durable run executing in this context, or None (calls then pass through)."""
    return _active.get()


def replaying() -> bool:
    """Whether the durable run executing in this context is serving its journal: from the start of a
    resumed attempt until its first live call. Inside a framework hook about one call, whether that
    call is (was) served from the journal, when the adapter tells (`told_replaying`).

    A framework runs its own loop again on resume, so its hooks and callbacks (openai-agents'
    ``RunHooks.on_tool_end``, ...) fire for replayed calls too: a hook with an outside effect (a
    message, a bill) skips it while this is True; one that rebuilds in-memory state does not.
    """
    told = _told.get()
    if told is not None:
        return told
    run = _active.get()
    return run is not None and not run.live_started and bool(run.recorded)


_told: contextvars.ContextVar[bool | None] = contextvars.ContextVar("agentspan_told_replaying", default=None)


@contextlib.contextmanager
def told_replaying(replayed: bool | None) -> Iterator[None]:
    """For adapters: inside the block, `replaying` answers ``replayed`` (None: its own answer). An
    adapter runs a framework hook about one call in it, a hook that fires before the call starts
    included (the first live call's ``on_llm_start`` sees False)."""
    token = _told.set(replayed)
    try:
        yield
    finally:
        _told.reset(token)


def tell_replaying(replayed: bool | None) -> None:
    """For adapters whose framework calls the user's hooks about a call after the adapter's own
    callback has returned, with no block around them to wrap (ADK's plugin callbacks run before
    the agent's): from here on in the current context, `replaying` answers ``replayed`` (None:
    its own answer again). A value set inside a task stays in that task (ADK runs parallel calls
    in tasks of their own); the adapter sets None again when the invocation ends, so the caller's
    code after it reads no stale answer."""
    _told.set(replayed)


class ActiveRun(ToolSteps):
    """The journal of one run as seen by one execution attempt holding the run's lease.

    Args:
        store: Where the journal lives.
        run: The run record (its lease already claimed by this process).
        steps: The run's journal, loaded in one bulk read before the attempt.
    """

    def __init__(self, store: Store, run: Run, steps: Sequence[Step], *,
                 on_divergence: OnDivergence | None = None) -> None:
        self.store = store
        # A store that talks to a server is called from a worker thread inside async code, so
        # other tasks on the event loop run while a journal write is on the wire.
        self._offload = bool(getattr(store, "blocking_io", False))
        # In the caller's own event loop, a store with awaitable step writes is awaited instead.
        awaitable = self._offload and getattr(store, "async_steps", False) and async_writes.get()
        self._awaited: Any = store if awaitable else None
        self.on_divergence = policy_of(run.options, on_divergence)
        """What a divergence from the journal does (`agentspan.divergence`)."""
        self.run = without_core_options(run)
        """The run record, its options as the adapter gave them (the core's own left out)."""
        self.run_id = run.id
        self.epoch = run.lease_epoch
        self.journal: dict[str, Step] = {s.key: s for s in steps}
        self.recorded: set[str] = set(self.journal)
        """Keys journaled before this attempt (only those can diverge from the live calls)."""
        self._next_seq = max((s.seq for s in steps), default=0) + 1
        self._root = Scope(prefix="")
        self._call_keys: dict[str, str] = {}
        self._batched: set[str] = set()
        self._in_flight: dict[str, asyncio.Future[Any]] = {}
        """Live calls that end (and are journaled) even if the framework cancels them (`settle`)."""
        self._clocks: dict[str, float] = {}
        self._randoms: dict[str, random.Random] = {}
        self.call_ids: dict[str, str] = {}
        """The framework's call id of each traced tool call until its step ends (its
        ``gen_ai.tool.call.id``; keys may hold an index instead)."""
        self.counters = Counters()
        self.live_started = False
        """Whether a call went live in this attempt (`replaying`)."""
        self.cut_off = False
        """Whether a live call was cancelled or interrupted in flight (the caller's task cancelled,
        Ctrl-C): what it runs on, a sync tool's thread, may still be running."""
        self.stopping = False
        """Set when the process stops at once (a worker's hard stop, `agentspan.worker`): the
        calls in flight end and are journaled, a new one raises `ProcessExiting` (the run is left
        to its next owner, as at a crash, without a lease to wait out)."""
        self.trusted: frozenset[str] = frozenset()
        """Keys this process served or made in an earlier attempt of the same execution (before it
        waited here for a decision): the same agent objects made those calls, so an input that
        differs now is state they changed (a tool that wrote to the run context the prompt reads),
        not changed code. They replay without a divergence check."""
        self.strict = current_strict_replay()
        """The strict replay serving this run's would-be live calls (None: a normal run)."""
        self.trace: RunTrace | None = None
        """The OpenTelemetry spans of this attempt, while it is traced (`agentspan.tracing`)."""
        self.asked: frozenset[str] = frozenset()
        """Keys of the calls an approval was asked for before this attempt: gated again whatever
        the tool's policy answers now (a callable ``needs_approval`` may change its mind)."""
        self.lease: Heartbeat | None = None
        """The lease's heartbeat (set by `agentspan.attached`): confirmed before each live call."""
        self.fatal: AgentspanError | None = None
        """The first error the core itself raised in this attempt (a store that failed, a lease
        lost, a divergence, a step in doubt): what the attempt fails with, even where the
        framework wrapped it (the SDK's ``UserError("Error running tool ...")``) or swallowed it
        (a ``ToolNode(handle_tool_errors=True)``); every later live call raises it again."""

    # ---- context ------------------------------------------------------------------------
    def activate(self) -> contextvars.Token[ActiveRun | None]:
        """Makes this run the active one in the current context."""
        _scope.set(self._root)
        if self.strict is not None:
            self.strict.attach(self)
        sink = sink_of(self.run_id)
        if sink is not None:  # a streamed run: its reader gets no event ahead of the disk
            sink.barrier = self.wait_durable
        if self.trace is not None:  # what the attempt's calls open goes under its span
            self.trace.make_current()
        return _active.set(self)

    @staticmethod
    def deactivate(token: contextvars.Token[ActiveRun | None]) -> None:
        """Undoes `activate`."""
        run = _active.get()
        if run is not None and run.trace is not None:
            run.trace.release_current()
        _active.reset(token)

    def will_replay(self, key: str) -> bool:
        """Whether the call ``key`` (not made yet) is served from the journal: completed there."""
        step = self.journal.get(key)
        return step is not None and step.status is StepStatus.COMPLETED

    def was_replayed(self, kind: str, key: str) -> bool:
        """Whether this attempt served the call ``key`` (of ``kind``) from the journal.

        The counters span the attempts of this process: a call made live in an attempt that then
        waited here for a decision is served from the journal by the next one (it is journaled
        before that attempt began: `recorded`)."""
        counters = self.counters
        return key in counters.replayed_keys.get(kind, ()) and (
            key not in counters.live_keys.get(kind, ()) or key in self.recorded)

    async def diverge(self, key: str, reason: str) -> None:
        """A divergence from the journal at ``key`` that an adapter found itself (``reason`` says
        how): raised as `ReplayDivergenceError` (and kept as the attempt's `fatal` error), or,
        under ``on_divergence="live"``, the journal from ``key`` on moved aside."""
        try:
            await call_store(self.store, diverged, self, key, reason)
        except AgentspanError as exc:
            self._keep_fatal(exc)
            raise

    def set_aside(self, key: str, reason: str) -> None:
        """Moves step ``key`` and every later step aside for the next attempt to make live again
        (`agentspan.divergence.set_aside`). Blocks on the store: call it through `call_store`."""
        set_aside(self, key, reason)

    def wait_durable(self) -> None:
        """`Store.wait_durable` of this run: for an adapter about to hand the caller a framework
        event (live calls through `step` wait by themselves)."""
        self.store.wait_durable(self.run_id)

    @property
    def events(self) -> EventSink | None:
        """Where a streaming adapter puts the framework's events (None: the run is not streamed)."""
        return sink_of(self.run_id)

    def calls_running(self, *, on_running_loops: bool = False) -> bool:
        """Whether a live call this attempt stopped waiting for still runs (the caller's task was
        cancelled, or Ctrl-C, while parallel calls ran): it ends and is journaled on its own, so
        another process must not make it again alongside it (the lease is kept while it runs).

        Args:
            on_running_loops: Count only calls whose event loop runs (one left open but idle makes
                no progress, as a crashed process).
        """
        return any(not call.done() and (not on_running_loops or call.get_loop().is_running())
                   for call in list(self._in_flight.values()))  # (a copy: read off the loop too)

    def _call_ended(self, key: str, call: asyncio.Future[Any]) -> None:
        self._in_flight.pop(key, None)
        error = None if call.cancelled() else call.exception()  # retrieved: a call left running has no awaiter
        if error is not None:
            log.debug("run %s: call %s ended with %r", self.run_id, key, error)

    async def settle(self) -> None:
        """Waits until the live calls a framework cancelled with their siblings (a parallel call
        that raised, or waits for an approval) have ended and are journaled: the next attempt
        replays them instead of making them again."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    # ---- the journaled call -------------------------------------------------------------
    async def replays(self, *, key: str, name: str | None, input: JSON, input_hash: str | None) -> bool:
        """Whether `step` will serve ``key`` from the journal (completed there, same input).

        For adapters that must choose how to call before they call `step` (a framework callback
        that either returns the recorded value or lets the framework make the call). A divergence
        is handled first, as `step` handles it: raised, or, under ``on_divergence="live"``, the
        journal from this step on moved aside (then False: the call goes live).

        Raises:
            ReplayDivergenceError: The journaled input differs and the run does not go on live.
        """
        if self.fatal is not None:
            raise self.fatal
        try:
            recorded = self.journal.get(key)
            if recorded is not None and input_hash is not None and recorded.input_hash not in (None, input_hash) \
                    and key not in self.trusted:
                await call_store(self.store, diverged, self, key, input_change(recorded, name, input, input_hash))
                recorded = None
            if recorded is not None and recorded.status is StepStatus.COMPLETED:
                return True
            if self.lease is not None and self.lease.stale():  # stopped or starved past its lease
                await call_store(self.store, self.lease.confirm)
            self.store.wait_durable(self.run_id)  # the framework makes the call next: what it acts on is on disk first
        except AgentspanError as exc:
            self._keep_fatal(exc)
            raise
        self.live_started = True
        return False

    async def step(
        self,
        *,
        kind: StepKind,
        key: str,
        name: str | None,
        input: JSON,
        input_hash: str | None,
        invoke: Callable[[], Awaitable[T]],
        dump: Callable[[T], JSON],
        load: Callable[[JSON], T],
        provider: str | None = None,
        model: str | None = None,
        metrics: Callable[[T], LlmMetrics] | None = None,
        on_in_doubt: str = "retry",
        child_scope: bool = False,
        durable_start: bool = True,
        shield: bool = False,
    ) -> T:
        """Replays ``key`` from the journal, or calls ``invoke`` live and journals it.

        Raises:
            ReplayDivergenceError: The journaled input hash differs from ``input_hash`` (unless the
                run goes on live then: ``on_divergence="live"``, `agentspan.divergence`).
            InDoubtStepError: The step was in flight when a process died and the policy is
                ``"fail"``.
        """
        if self.fatal is not None:
            raise self.fatal
        if self.stopping:
            raise ProcessExiting(self.run_id)
        try:
            recorded = self.journal.get(key)
            attempt = 1
            if recorded is not None and input_hash is not None and recorded.input_hash not in (None, input_hash) and (
                key in self.recorded or recorded.status is not StepStatus.FAILED  # a call failed just now: not a record
            ) and key not in self.trusted:
                await call_store(self.store, diverged, self, key, input_change(recorded, name, input, input_hash))
                recorded = None  # going on live (on_divergence="live"): the journal from here on is aside
            if recorded is not None:
                if recorded.status is StepStatus.COMPLETED:
                    self.counters.mark(False, kind.value, key)
                    return load(recorded.output)
                if recorded.status is StepStatus.STARTED and on_in_doubt == "fail":
                    raise InDoubtStepError(self.run_id, key, name)
                attempt = recorded.attempt + 1
                seq = recorded.seq
            else:
                seq = self._next_seq
                self._next_seq += 1
            if self.strict is not None:
                return self.strict.serve(self, kind=kind, key=key, name=name, input=input, input_hash=input_hash,
                                         load=load, recorded=recorded)
            if self.lease is not None and self.lease.stale():  # stopped or starved past its lease
                await call_store(self.store, self.lease.confirm)
            # Built unchecked (no validation): every value is the core's own or typed by this signature.
            step = started_step(self.run_id, key, seq, kind, name, input, input_hash, attempt, provider, model)
            if self._clocks and key in self._clocks:  # the time `agentspan.now` gave what feeds this call
                step.__dict__["started_at"] = self._clocks[key]  # (kept: a retried call is started again)
            # A model call is journaled once, when it ends: an interrupted one is simply made again,
            # so it needs no in-flight record (one transaction per call instead of two).
            in_flight_record = kind is not StepKind.LLM
            if in_flight_record:
                if self._awaited is not None:
                    await self._awaited.astart_step(step, epoch=self.epoch, durable=durable_start)
                elif self._offload:
                    await asyncio.to_thread(self.store.start_step, step, epoch=self.epoch, durable=durable_start)
                else:
                    self.store.start_step(step, epoch=self.epoch, durable=durable_start)
            self.journal[key] = step
            self.store.wait_durable(self.run_id)  # what the live call acts on is on disk first (`Store.wait_durable`)
        except AgentspanError as exc:
            self._keep_fatal(exc)
            raise
        if shield:  # a framework may cancel it with its siblings: it ends (and is journaled) regardless
            call = asyncio.ensure_future(self._live(step, invoke, dump, metrics, child_scope, in_flight_record))
            self._in_flight[key] = call
            call.add_done_callback(functools.partial(self._call_ended, key))
            return await asyncio.shield(call)
        return await self._live(step, invoke, dump, metrics, child_scope, in_flight_record)

    async def _live(self, step: Step, invoke: Callable[[], Awaitable[T]], dump: Callable[[T], JSON],
                    metrics: Callable[[T], LlmMetrics] | None, child_scope: bool, in_flight_record: bool) -> T:
        """Makes the call of ``step`` (journaled as started, or a model call) and journals its end."""
        key = step.key
        info = StepInfo(self.run_id, key, f"{self.run_id}:{key}", step.attempt, step.kind._value_, step.name)
        info_token = _current_step.set(info)
        scope_token = _scope.set(Scope(prefix=f"{key}/")) if child_scope else None
        self.live_started = True
        started = time.perf_counter()
        try:
            value = await invoke()
        except BaseException as exc:
            if not isinstance(exc, Exception):
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
                    self.cut_off = True  # a sync tool's thread may still run: `AttachedRun.__exit__`
                raise  # signals and interrupts leave the step in doubt, as a crash would
            if failed_for_exit(exc):  # in doubt, as at a crash (not the call's own failure)
                self.cut_off = True
                raise ProcessExiting(self.run_id) from exc
            await self._end_failed(step, exc, time.perf_counter() - started, in_flight_record)
            raise
        finally:
            try:
                _current_step.reset(info_token)
                if scope_token is not None:
                    _scope.reset(scope_token)
            except ValueError:  # closed in another context (a held step the garbage collector drops)
                pass
        if self.fatal is not None:  # the core failed inside this call (a nested call) and the call went on
            await self._end_failed(step, self.fatal, time.perf_counter() - started, in_flight_record)
            raise self.fatal
        duration_ms = (time.perf_counter() - started) * 1000
        output = dump(value)
        if metrics is None:
            result = completed_result(output, duration_ms, step.provider, step.model)
        else:
            m = metrics(value)
            used = m.model or step.model
            result = completed_result(output, duration_ms, step.provider, used, m.input_tokens, m.output_tokens,
                                      price_usd(step.provider, used, m.input_tokens, m.output_tokens,
                                                m.cached_input_tokens, m.cache_write_tokens, m.cache_write_1h_tokens),
                                      metered=True)
        if info.handled:  # failed, and the framework answered for it: replayed as answered, shown failed
            if failed_for_exit(info.handled[-1]):  # the failure was the exit's: in doubt, as at a crash
                self.cut_off = True
                raise ProcessExiting(self.run_id)
            result.__dict__["error"] = utf8_text(info.handled[-1])
            result.__pydantic_fields_set__.add("error")
        try:
            await self._finish_async(step, result, in_flight_record)
        except AgentspanError as exc:
            self._keep_fatal(exc)
            raise
        self.counters.mark(True, step.kind._value_, key)
        return value

    async def _end_failed(self, step: Step, exc: Exception, seconds: float, started: bool) -> None:
        """Journals the live call's failure (a failure to journal it is the core's own)."""
        result = StepResult(status=StepStatus.FAILED, error=error_text(exc),
                            duration_ms=seconds * 1000)
        try:
            await self._finish_async(step, result, started)
        except AgentspanError as failure:
            self._keep_fatal(failure)
            raise

    def _keep_fatal(self, exc: AgentspanError) -> None:
        """Keeps the core's first own error as `fatal` (a replayed recorded failure is the
        tool's, handed to the framework as the first run's was)."""
        if self.fatal is None and not isinstance(exc, RecordedStepFailure):
            self.fatal = exc

    async def _finish_async(self, step: Step, result: StepResult, started: bool = True) -> None:
        """`_finish`, awaited on the store's async client in the caller's loop, or on a worker thread
        when the store does network I/O (either way the event loop stays free)."""
        if self._awaited is not None:
            if started:
                await self._awaited.afinish_step(self.run_id, step.key, result, epoch=self.epoch)
            else:
                await self._awaited.arecord_step(step, result, epoch=self.epoch)
            self._ended(step, result)
        elif self._offload:
            await asyncio.to_thread(self._finish, step, result, started)
        else:
            self._finish(step, result, started)

    def _finish(self, step: Step, result: StepResult, started: bool = True) -> None:
        if started:
            self.store.finish_step(self.run_id, step.key, result, epoch=self.epoch)
        else:
            self.store.record_step(step, result, epoch=self.epoch)
        self._ended(step, result)

    def _ended(self, step: Step, result: StepResult) -> None:
        """After the step's end is written: the journal's copy ends too (set as pydantic's
        __setattr__ would, without its per-attribute checks: this runs per journaled call), and
        its span, if the attempt is traced."""
        step.__dict__.update(status=result.status, output=result.output, error=result.error,
                             ended_at=result.ended_at)
        step.__pydantic_fields_set__.update(_ENDED_FIELDS)
        if self.trace is not None:
            self.trace.step_ended(step, result, self.call_ids.pop(step.key, None))
