"""The public entry points: `run`, `run_async`, `start`, `resume`, `retry` and `get` (`serve`: `agentspan.worker`)
(`Handle` is in `agentspan.handle`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import warnings
from collections.abc import Callable
from typing import Any

from agentspan import attached, divergence, executor, leases, runtime, tracing
from agentspan.adapters import Adapter, adapter_for, adapter_named
from agentspan.beside_loop import BesideLoop
from agentspan.config import get_store, settings
from agentspan.divergence import OnDivergence
from agentspan.errors import (
    AgentspanError,
    ConfigurationError,
    LeaseLostError,
    RunCancelledSignal,
    RunStateError,
)
from agentspan.handle import Handle
from agentspan.jsontext import utf8_text
from agentspan.records import UNADDRESSABLE_IDS, Run, RunStatus, now
from agentspan.stores.base import Store, call_store


def _new_run(adapter: Adapter, target: Any, input: Any, options: dict[str, Any], *, run_id: str | None,
             session_id: str | None, idempotency_key: str | None, agent_name: str | None,
             store: Store, on_divergence: OnDivergence = "raise") -> tuple[Run, bool]:
    for name, value in (("run_id", run_id), ("session_id", session_id), ("idempotency_key", idempotency_key)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError(f"{name} must be a non-empty str, not {value!r}")
        if value is not None and utf8_text(value) != value:
            raise ConfigurationError(f"{name} {value!r} is not valid UTF-8 text (it holds a lone surrogate)")
    if run_id in UNADDRESSABLE_IDS:
        raise ConfigurationError(f"run_id {run_id!r} cannot name a run: a URL resolves it as a dot segment, so "
                                 "the server and the web UI could not address the run")
    stored = divergence.run_options(adapter.encode_options(options), divergence.check_policy(on_divergence))
    run = attached.new_run(framework=adapter.framework, agent=agent_name or adapter.agent_name(target),
                           input=adapter.encode_input(input), options=stored,
                           session_id=session_id if session_id is not None else adapter.default_session(options),
                           idempotency_key=idempotency_key, run_id=run_id)
    return store.create_run(run)


def _spawn(store: Store, run: Run, adapter: Adapter, target: Any, options: dict[str, Any],
           on_wait: executor.OnWait = "block", fresh: bool = False,
           on_divergence: OnDivergence | None = None) -> Handle:
    future: concurrent.futures.Future[executor.Outcome] = concurrent.futures.Future()
    parent = tracing.caller_context()  # the run's span goes under the caller's, as with `run`

    def main() -> None:
        try:
            outcome = tracing.run_within(parent, lambda: asyncio.run(executor.execute(
                store, run, adapter, target, options, on_wait=on_wait, fresh=fresh, on_divergence=on_divergence)))
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(outcome)

    threading.Thread(target=main, name=f"agentspan-run-{run.id[:8]}", daemon=True).start()
    return Handle(run.id, store=store, future=future)


def start(target: Any, input: Any, *, run_id: str | None = None, session_id: str | None = None,
          idempotency_key: str | None = None, agent_name: str | None = None,
          on_divergence: OnDivergence = "raise", **options: Any) -> Handle:
    """Starts a durable run in a background thread of this process and returns at once.

    Args:
        target: The agent (openai-agents ``Agent``, a compiled LangGraph graph, an ADK agent).
        input: The input, as the framework's own entry point takes it.
        run_id: Use this id instead of a new UUIDv7.
        session_id: Groups runs of one conversation.
        idempotency_key: A second start with the same key returns the existing run.
        agent_name: Record the run under this name instead of the agent's own.
        on_divergence: When a resumed run's calls no longer match its journal (the code or
            prompt changed): ``"raise"`` `ReplayDivergenceError`, or go on ``"live"`` from the
            first differing step (the journal from there on is kept aside as
            ``superseded:<seq>/<key>``; see `agentspan.divergence`). Stored with the run.
        **options: Passed to the framework's runner (e.g. ``max_turns``, ``context``).

    Returns:
        The run's `Handle`.

    Raises:
        ConfigurationError: An option the framework's runner does not take, or a bad
            ``on_divergence``.
    """
    store = get_store()
    adapter = adapter_for(target)
    run, created = _new_run(adapter, target, input, options, run_id=run_id, session_id=session_id,
                            idempotency_key=idempotency_key, agent_name=agent_name,
                            on_divergence=on_divergence, store=store)
    if not created:
        orphan = _claimed_if_orphaned(store, run)
        if orphan is None:
            return Handle(run.id, store=store)
        return _spawn(store, _marked_running(store, orphan), adapter, target, options)
    return _spawn(store, run, adapter, target, options, fresh=True)


def _claimed_if_orphaned(store: Store, run: Run) -> Run | None:
    """The run holding an idempotency key, claimed by this process when it is unfinished and its
    owner is gone (as `resume` would take it); None when it ended or a live process executes it."""
    current = store.get_run(run.id)
    if current.status.terminal or not leases.lease_is_free(current, store=store):
        return None
    try:
        return attached.take_over(store, current, wait=0)
    except LeaseLostError:  # another process took it first
        return None


async def run_async(target: Any, input: Any, *, run_id: str | None = None, session_id: str | None = None,
                    idempotency_key: str | None = None, agent_name: str | None = None,
                    on_divergence: OnDivergence = "raise", **options: Any) -> Any:
    """Runs an agent durably in the running event loop and returns the framework's result.

    Same arguments as `start`. With an ``idempotency_key`` of an existing run, waits for that run
    and returns its stored output. A server store's step writes are awaited in this loop.
    """
    return await run_in_loop(target, input, run_id=run_id, session_id=session_id,
                              idempotency_key=idempotency_key, agent_name=agent_name,
                              on_divergence=on_divergence, awaited_writes=True, **options)


async def run_in_loop(target: Any, input: Any, *, run_id: str | None = None, session_id: str | None = None,
                      idempotency_key: str | None = None, agent_name: str | None = None,
                      on_divergence: OnDivergence = "raise", awaited_writes: bool, streamed: bool = False,
                      **options: Any) -> Any:
    """The run in the current event loop: `run_async`, `run`'s loop and `agentspan.streaming`.

    ``awaited_writes``: the loop is the caller's (else one `run` made for itself, where the
    synchronous client on a worker thread costs less). ``streamed``: a run whose idempotency key
    an existing run has is refused (its events are not this stream's), not awaited.
    """
    store = get_store()
    adapter = adapter_for(target)
    run, created = await call_store(store, _new_run, adapter, target, input, options, run_id=run_id,
                                    session_id=session_id, idempotency_key=idempotency_key,
                                    agent_name=agent_name, on_divergence=on_divergence, store=store)
    if not created:
        if streamed:
            raise RunStateError(f"run {run.id!r} has the idempotency key {idempotency_key!r} already, and a second "
                                f"run_streamed does not stream it: read it with agentspan.get({run.id!r})")
        return await _join(store, run, adapter, target, options, awaited_writes=awaited_writes)
    return await _execute_in_loop(store, run, adapter, target, options, awaited_writes=awaited_writes, fresh=True)


async def _join(store: Store, run: Run, adapter: Adapter, target: Any, options: dict[str, Any], *,
                awaited_writes: bool) -> Any:
    """The result of the run that holds the idempotency key: waited for while another process
    executes it, executed here once its owner is gone (a crash), and read once it ended."""
    interval = settings().poll_interval
    while True:
        current = await call_store(store, store.get_run, run.id)
        if current.status.terminal:
            return await asyncio.to_thread(Handle(run.id, store=store).result)
        orphan = await asyncio.to_thread(_claimed_if_orphaned, store, current)
        if orphan is not None:
            return await _execute_in_loop(store, orphan, adapter, target, options, awaited_writes=awaited_writes)
        await asyncio.sleep(interval)


async def _execute_in_loop(store: Store, run: Run, adapter: Adapter, target: Any, options: dict[str, Any], *,
                           awaited_writes: bool, **execution: Any) -> Any:
    """Executes a claimed run in the running event loop; returns the framework's result."""
    token = runtime.async_writes.set(awaited_writes)
    try:
        outcome = await executor.execute(store, run, adapter, target, options, **execution)
    finally:
        runtime.async_writes.reset(token)
    return outcome.result


def run(target: Any, input: Any, **kwargs: Any) -> Any:
    """Runs an agent durably and returns what the framework's own entry point returns.

    The drop-in for ``Runner.run_sync(agent, input)``. Works inside a running event loop too
    (the run then executes on a helper thread; prefer ``await agentspan.run_async(...)`` there).
    Arguments as for `start`.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_thread_loop(target, input, kwargs)
    return BesideLoop(lambda: run_in_loop(target, input, awaited_writes=False, **kwargs)).run()


def _run_on_thread_loop(target: Any, input: Any, kwargs: dict[str, Any]) -> Any:
    """Runs `run_async` on this thread's default event loop, left open for the next run.

    As ``Runner.run_sync`` of openai-agents does: loop-bound objects a program keeps between runs
    (an ``AsyncOpenAI`` client, a session's locks) stay usable, and the loop's thread pool (sync
    tools run there) is not started and shut down again for every run.
    """
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = policy.get_event_loop()
        except RuntimeError:
            loop = None
    if loop is None or loop.is_closed():
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
    task = loop.create_task(run_in_loop(target, input, awaited_writes=False, **kwargs))
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():  # KeyboardInterrupt and the like: leave nothing running on the loop
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        raise
    finally:
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.run_until_complete(loop.shutdown_asyncgens())
            # The loop stays open for the next run, which is to track (and finalize) its async
            # generators as a new loop would: else each one an ADK or LangGraph run starts there
            # warns "scheduled after loop.shutdown_asyncgens() call" and is never finalized.
            if getattr(loop, "_asyncgens_shutdown_called", False):
                loop._asyncgens_shutdown_called = False  # type: ignore[attr-defined]


def get(run_id: str) -> Handle:
    """Returns a read-only handle on any run (from any process).

    Raises:
        RunNotFound: Unknown run id.
        StoreError: No store exists yet.
    """
    store = get_store(create=False)
    store.get_run(run_id)
    return Handle(run_id, store=store)


def resume(run_id: str, target: Any, *, wait: float | None = None, on_divergence: OnDivergence | None = None,
           **options: Any) -> Handle:
    """Takes over a run (after a crash, or one waiting for approval) and continues it here.

    The framework's loop replays from the start: completed model and tool calls come from the
    journal; execution continues live from the first call that did not complete.

    Args:
        run_id: The run.
        target: The same agent the run was started with.
        wait: Seconds to wait for a live owner's lease to lapse (default: the lease TTL).
        on_divergence: This execution's divergence policy (default: the run's own, as given to
            `start`): ``"live"`` goes on live from the first call that no longer matches the
            journal, e.g. after a fix to the agent's code.
        **options: Runner options, as given to `start`.

    Raises:
        RunNotFound: Unknown run id.
        RunStateError: The run already ended.
        ConfigurationError: ``target`` belongs to another framework than the run.
        LeaseLostError: Another live process holds the run, or claimed it first.
    """
    store, adapter, policy = resumable(run_id, target, on_divergence, options)
    claimed = attached.claim(store, run_id, wait=wait)
    return _spawn(store, _marked_running(store, claimed), adapter, target, options, on_divergence=policy)


def _marked_running(store: Store, claimed: Run) -> Run:
    """``claimed`` (a run whose lease this process just took) marked ``running`` before its handle
    is returned, so ``handle.status()`` reads ``running`` at once, here and in any other process.

    The claim alone leaves the status as it was (``waiting``, ``pending``), and the execution
    thread `_spawn` starts marked it only when it got to `attached.attach` (was: ``waiting`` for a
    few ms after `resume` returned). Not an extra write: `attach` skips its own for a run already
    ``running``. Fenced by the claimed lease epoch, so a run another process took meanwhile is not
    touched; when the write is refused (taken over, cancelled, an outage) the run is returned as
    claimed and `attach`, in the execution thread, meets the same refusal and ends the execution
    as it always did (the handle's `result` raises it).
    """
    if claimed.status is RunStatus.RUNNING:
        return claimed
    try:
        return store.update_run(claimed.id, epoch=claimed.lease_epoch, status=RunStatus.RUNNING)
    except (AgentspanError, RunCancelledSignal):
        return claimed


async def resume_async(run_id: str, target: Any, *, wait: float | None = None,
                       on_divergence: OnDivergence | None = None, **options: Any) -> Any:
    """`resume` in the running event loop: continues the run here and returns the framework's
    result, as `run_async` runs a new one.

    For an agent whose resources belong to the caller's loop, which the background thread of
    `resume` cannot use: an openai-agents agent's MCP servers (connected with ``async with``).
    Same arguments and errors as `resume`.
    """
    store, adapter, policy = await asyncio.to_thread(resumable, run_id, target, on_divergence, options)
    claimed = await _claimed_for_caller(store, lambda: attached.claim(store, run_id, wait=wait))  # may wait
    return await _execute_in_loop(store, claimed, adapter, target, options, awaited_writes=True,
                                  on_divergence=policy)


async def _claimed_for_caller(store: Store, claim: Callable[[], Run]) -> Run:
    """``claim`` on a worker thread (it may wait for a lease to lapse). When the caller is cancelled
    meanwhile, the lease the claim takes is given back (was: held with nothing executing the run,
    so the next resume waited a whole lease TTL more)."""
    lock = threading.Lock()
    state: dict[str, Any] = {"given_up": False, "claimed": None}

    def claim_unless_given_up() -> Run:
        run = claim()
        with lock:
            state["claimed"] = run
            given_up = state["given_up"]
        if given_up:
            _give_back(store, run)
        return run

    try:
        return await asyncio.to_thread(claim_unless_given_up)
    except asyncio.CancelledError:
        with lock:
            state["given_up"] = True
            claimed = state["claimed"]
        if claimed is not None:  # claimed just before the cancel reached this task
            threading.Thread(target=_give_back, args=(store, claimed), daemon=True).start()
        raise


def _give_back(store: Store, run: Run) -> None:
    with contextlib.suppress(AgentspanError):  # taken over or ended meanwhile: nothing to give back
        store.update_run(run.id, epoch=run.lease_epoch, release_lease=True)


def resumable(run_id: str, target: Any, on_divergence: OnDivergence | None,
              options: dict[str, Any]) -> tuple[Store, Adapter, OnDivergence | None]:
    """The checks of `resume` before its claim: the store, ``target``'s adapter and the policy.

    Raises:
        RunNotFound: Unknown run id.
        RunStateError: The run already ended.
        ConfigurationError: ``target`` belongs to another framework than the run, a bad policy, or
            runner ``options`` the run cannot go on with (`Adapter.check_options`).
    """
    store = get_store(create=False)
    existing = store.get_run(run_id)
    if existing.status.terminal:
        failed = existing.status is RunStatus.FAILED
        retry_hint = f", or retry it with agentspan.retry({run_id!r}, agent)" if failed else ""
        raise RunStateError(f"run {run_id!r} is already {existing.status.value}; "
                            f"read it with agentspan.get({run_id!r}).result(){retry_hint}")
    policy = None if on_divergence is None else divergence.check_policy(on_divergence)
    return store, _adapter_of(existing, target, options), policy


def retry(run_id: str, target: Any, *, on_divergence: OnDivergence | None = None, **options: Any) -> Handle:
    """Takes a failed run up again here and continues it from where it failed.

    The journal is kept: completed model and tool calls are served from it, the call that failed
    (and everything after it) runs again live, in a new lease epoch. For a run that failed on a
    `ReplayDivergenceError` (the agent changed since its journal was written), pass
    ``on_divergence="live"`` to go on live from the first call that differs. Without the agent at
    hand, ``agentspan runs retry RUN_ID`` leaves the run for a worker (`serve`) instead.

    Args:
        run_id: The failed run.
        target: The agent, as for `resume` (fixed, typically).
        on_divergence: This execution's divergence policy (default: the run's own).
        **options: Runner options, as given to `start`, for this execution only (a later
            `resume`, or a worker, runs with the options stored when the run started).

    Raises:
        RunNotFound: Unknown run id.
        RunStateError: The run is not ``failed`` (nothing changed).
        ConfigurationError: ``target`` belongs to another framework than the run.
    """
    store = get_store(create=False)
    adapter = _adapter_of(store.get_run(run_id), target, options)
    policy = None if on_divergence is None else divergence.check_policy(on_divergence)
    reopened = store.reopen_run(run_id, owner=leases.owner_id(), lease_expires_at=now() + settings().lease_ttl)
    return _spawn(store, reopened, adapter, target, options, on_divergence=policy)


def _adapter_of(run: Run, target: Any, options: dict[str, Any]) -> Adapter:
    """The adapter of ``target``, which must be of the run's framework and accept ``options`` for it."""
    adapter = adapter_for(target)
    how = adapter.continued_elsewhere.get(run.framework)
    if how is not None:
        raise ConfigurationError(f"run {run.id!r} is a {run.framework} run: {how}")
    if adapter.framework != run.framework:
        raise ConfigurationError(f"run {run.id!r} is a {run.framework} run; "
                                 f"{type(target).__name__} is a {adapter.framework} object")
    adapter.check_options(run, options)
    return adapter


def adapter_for_run(run: Run) -> Adapter:
    """Returns the installed adapter of a stored run's framework."""
    return adapter_named(run.framework)
