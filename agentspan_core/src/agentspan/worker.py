"""`agentspan.serve`: a worker that claims runs whose owner died (lease expired) and runs whose
approvals were decided, and executes each on a thread of its own (`agentspan.api._spawn`)."""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from agentspan import attached, leases
from agentspan.adapters import Adapter, adapter_for
from agentspan.api import _spawn
from agentspan.config import get_store, seconds_setting, settings
from agentspan.errors import AgentspanError, ConfigurationError, LeaseLostError, ProcessExiting, ServerUnreachable
from agentspan.handle import Handle
from agentspan.records import Run, RunStatus, now
from agentspan.stores.base import Store

log = logging.getLogger("agentspan")


def serve(*targets: Any, stop: threading.Event | None = None, poll_interval: float | None = None,
          max_runs: int | None = None, concurrency: int | None = None,
          options_for: Callable[[Run], dict[str, Any]] | None = None) -> int:
    """Runs a worker: claims orphaned runs (lease expired) and runs whose approvals were decided.

    Args:
        *targets: The agents this worker can run (matched on the run's framework and agent name),
            or mappings of agent names to agents (runs started with ``agent_name=``).
        stop: Set it to stop the worker: it claims no more runs and returns once the runs it
            took up have ended or wait for a decision (a `KeyboardInterrupt` while it serves or
            waits stops it at once: the runs make no new call, the calls in flight end and are
            journaled, and each run is given back for the next worker; see `_stop_at_once`).
            ``agentspan worker`` sets it on Ctrl-C and SIGTERM; a process of your own that calls
            `serve` sets it from its own signal handler.
        poll_interval: Seconds between polls of the store (default: the setting's).
        max_runs: Return after this many runs (None: serve until ``stop``); no more are claimed.
        concurrency: At most this many runs executing in this worker at once (None: no limit);
            runs beyond it are not claimed, so other workers can take them.
        options_for: The runner options to go on with a run (what `resume` takes as ``**options``:
            an openai-agents run's ``session``, a ``context`` object), made from its record;
            None: none. A run its options do not satisfy (`Adapter.check_options`), or whose
            options cannot be made (the callable raised), is left alone, with one warning; it
            does not hold back newer runs (the worker pages past it: `_Scan`).

    Returns:
        How many runs this worker took to their end or to a wait for a decision (not those it
        lost to another process or left to their leases).

    Raises:
        ConfigurationError: No agent, two agents of one name, or an argument of the wrong kind
            (naming it).
    """
    table = _serve_table(targets)
    interval = _serve_args(stop, poll_interval, max_runs, concurrency, options_for)
    store = get_store()
    stop = stop or threading.Event()
    active: dict[str, Handle] = {}
    try:
        return _serve_until_stopped(store, table, stop, interval, max_runs, concurrency, options_for, active)
    except KeyboardInterrupt:
        _stop_at_once(active)
        raise


def _serve_until_stopped(store: Store, table: dict[str, tuple[Adapter, Any]], stop: threading.Event,
                         interval: float, max_runs: int | None, concurrency: int | None,
                         options_for: Callable[[Run], dict[str, Any]] | None, active: dict[str, Handle]) -> int:
    """`serve`'s loop: claims runs until ``stop`` (or ``max_runs``), then waits for those it took up."""
    finished = 0
    scan = _Scan(store, table, options_for, active)
    while not stop.is_set() and (max_runs is None or finished < max_runs):
        finished += _collect(active)
        free = 10 if concurrency is None else min(10, concurrency - len(active))
        if max_runs is not None:
            free = min(free, max_runs - finished - len(active))
        if free > 0:
            try:
                scan.take_up(free)
            except ServerUnreachable as exc:  # an outage: a worker outlives it and polls again
                log.warning("agentspan worker: %s; polling again", exc)
        stop.wait(interval)
    while active:  # the runs taken up go on to their end (or to a wait for a decision)
        concurrent.futures.wait([h._future for h in active.values()], timeout=interval,  # type: ignore[misc]
                                return_when=concurrent.futures.FIRST_COMPLETED)
        finished += _collect(active, store)
    return finished


_PAGE = 100
"""Claimable runs a worker reads per request once a page held none it could take up."""
_PAGES_PER_POLL = 10
"""At most this many pages a poll (1,000 runs): a poll stays cheap however many claimable runs
the worker cannot take up; the next poll goes on from where this one stopped."""
_POLLS_PAST = 10
"""Polls a worker goes on from where it stopped before it reads from the oldest again, whether or
not it read the newest run meanwhile: a run behind the cursor (an approval decided, a lease that
lapsed) waits at most this many polls, even while newer runs keep the worker busy."""
_WINDOW = 1000
"""The largest page a store answers over HTTP (`agentspan.stores.remote_leases.MAX_LIMIT`)."""


class _Scan:
    """How a worker reads the claimable runs: oldest first, in keyset pages
    (`Store.claimable_runs`' ``after``), so runs it cannot take up never hold back newer ones.

    ``cursor`` moves on past a full page only when it held nothing to take up (the runs there are
    ones this worker cannot take up, remembered in ``unservable`` so ``options_for`` is not asked
    again, or leased); a page it took runs from is read again by the next poll (it may hold more).
    Once the newest run was read, or after `_POLLS_PAST` polls on from the cursor (newer runs
    keeping the worker busy), the next poll starts from the oldest again (runs whose lease lapsed
    or whose approval was decided behind the cursor are found then). A store whose
    ``claimable_runs`` takes no ``after`` (one written before it, or a server that ignores it) is
    read as before: one window from the oldest, widened by the runs it cannot take up.
    """

    def __init__(self, store: Store, table: dict[str, tuple[Adapter, Any]],
                 options_for: Callable[[Run], dict[str, Any]] | None, active: dict[str, Handle]) -> None:
        self.store = store
        self.table = table
        self.options_for = options_for
        self.active = active
        self.cursor: str | None = None
        self.paging = _takes_after(store)
        self.unservable: set[str] = set()  # claimable runs this worker cannot take up
        self.seen: set[str] = set()  # claimable runs read since the scan last started from the oldest
        self.polls_past = 0  # polls that went on from the cursor since the scan last started from the oldest

    def take_up(self, free: int) -> None:
        """Takes up at most ``free`` claimable runs, reading at most `_PAGES_PER_POLL` pages.

        Raises:
            ServerUnreachable: The store's server cannot be reached.
        """
        if not self.paging:
            page = self._page(min(free + len(self.unservable), _WINDOW), None)
            self.unservable &= {run.id for run in page}
            self._take_from(page, free)
            return
        if self.cursor is not None:
            self.polls_past += 1
            if self.polls_past > _POLLS_PAST:  # back to the oldest: what came up behind the cursor
                self.cursor = None
        if self.cursor is None:
            self.polls_past = 0
        after, moving = self.cursor, True
        size = min(_PAGE, free + len(self.unservable))
        for _ in range(_PAGES_PER_POLL):
            page = self._page(size, after)
            if after is not None and page and page[0].id <= after:  # a server that predates ``after``
                log.warning("agentspan worker: the server ignores after= in GET /api/claimable (upgrade "
                            "agentspan-server): runs this worker cannot take up may hold back the others")
                self.paging, self.cursor = False, None
                return
            self.seen.update(run.id for run in page)
            took, free, whole = self._take_from(page, free)
            moving = moving and not took  # the next poll reads again from the first page that gave runs
            if not whole:
                return  # stopped within the page (no room for more): the rest of it is read again
            if len(page) < size:  # the newest run read: the next poll starts from the oldest
                self.cursor = None
                self.unservable &= self.seen  # (the others are no longer claimable)
                self.seen = set()
                return
            after, size = page[-1].id, _PAGE
            if moving:
                self.cursor = after
            if free <= 0:
                return

    def _page(self, size: int, after: str | None) -> list[Run]:
        """One page of claimable runs of the served agents (``after`` is passed only when given,
        so a store written before it is still called as it expects)."""
        return self.store.claimable_runs(agents=list(self.table), now=now(), limit=size,
                                         **({} if after is None else {"after": after}))

    def _take_from(self, page: list[Run], free: int) -> tuple[bool, int, bool]:
        """Takes up runs of ``page`` while ``free`` allows; returns whether it took any, how many
        more it may take, and whether it went through the whole page."""
        took = False
        for run in page:
            if free <= 0:
                return took, free, False
            if _take_up(self.store, self.table, run, self.options_for, self.active, self.unservable):
                took, free = True, free - 1
        return took, free, True


def _takes_after(store: Store) -> bool:
    """Whether ``store.claimable_runs`` takes ``after`` (a store written before it does not)."""
    try:
        parameters = inspect.signature(store.claimable_runs).parameters.values()
    except (TypeError, ValueError):  # no signature to read: call it as the contract says
        return True
    return any(p.name == "after" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _take_up(store: Store, table: dict[str, tuple[Adapter, Any]], run: Run,
             options_for: Callable[[Run], dict[str, Any]] | None, active: dict[str, Handle],
             unservable: set[str]) -> bool:
    """Claims ``run`` and runs it on a thread of its own; False when it is not taken up (already
    here, leased, lost to another worker, or one this worker cannot take up: then remembered in
    ``unservable``)."""
    if run.id in active or run.id in unservable or not leases.lease_is_free(run, store=store):
        return False
    adapter, target = table[run.agent]
    options = _options_for(adapter, run, options_for) if adapter.framework == run.framework else None
    if options is None:
        unservable.add(run.id)
        return False
    try:
        claimed = store.claim_run(run.id, owner=leases.owner_id(), expected_epoch=run.lease_epoch,
                                  lease_expires_at=now() + settings().lease_ttl)
    except Exception:
        return False  # another worker won the race
    active[run.id] = _spawn(store, claimed, adapter, target, options, on_wait="release")
    return True


def _stop_at_once(active: dict[str, Handle]) -> None:
    """A hard stop (a `KeyboardInterrupt` while serving): the runs taken up make no new call
    (`ActiveRun.stopping`); the calls in flight, which cannot be stopped (a sync tool's thread),
    end and are journaled; then each run gives its lease back (`ProcessExiting`), for the next
    worker to go on with at once, repeating nothing that ended. Another `KeyboardInterrupt` stops
    waiting for them."""
    running = {run_id: h._future for run_id, h in active.items()  # type: ignore[misc]
               if h._future is not None and not h._future.done()}
    if not running:
        return
    log.warning("agentspan worker: stopping at once; %d run(s) end the calls they are making and are "
                "left for the next worker", len(running))
    while running:
        for run_id in list(running):  # (again and again: a run claimed just now attaches a moment later)
            here = attached.attached_here(run_id)
            if here is not None:
                here.active.stopping = True
        done, _ = concurrent.futures.wait(running.values(), timeout=0.05)
        running = {run_id: future for run_id, future in running.items() if future not in done}


def _serve_table(targets: tuple[Any, ...]) -> dict[str, tuple[Adapter, Any]]:
    """The agents `serve` runs, by agent name."""
    table: dict[str, tuple[Adapter, Any]] = {}
    for target in targets:
        named = target.items() if isinstance(target, Mapping) else [(None, target)]
        for name, agent in named:
            adapter = adapter_for(agent)
            key = adapter.agent_name(agent) if name is None else str(name)
            if key in table and table[key][1] is not agent:
                raise ConfigurationError(f"agentspan.serve() was given two agents named {key!r}; a run names "
                                         "one: give the other under another name ({name: agent})")
            table[key] = (adapter, agent)
    if not table:
        raise ConfigurationError("agentspan.serve() needs at least one agent to serve")
    return table


def _serve_args(stop: Any, poll_interval: Any, max_runs: Any, concurrency: Any, options_for: Any) -> float:
    """Checks `serve`'s arguments; returns the poll interval."""
    def whole(name: str, value: Any) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigurationError(f"{name} must be a whole number of at least 1 (or None), not {value!r}")

    whole("concurrency", concurrency)
    whole("max_runs", max_runs)
    if stop is not None and not (callable(getattr(stop, "is_set", None)) and callable(getattr(stop, "wait", None))):
        raise ConfigurationError(f"stop must be a threading.Event (or None), not {stop!r}")
    if options_for is not None and not callable(options_for):
        raise ConfigurationError(f"options_for must be a callable taking the run record (or None), not {options_for!r}")
    if poll_interval is None:
        return settings().poll_interval
    if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
        raise ConfigurationError(f"poll_interval must be a number of seconds (or None), not {poll_interval!r}")
    return seconds_setting("poll_interval", float(poll_interval), poll_interval)


def _collect(active: dict[str, Handle], store: Store | None = None) -> int:
    """Drops the runs whose attempt ended from ``active``; returns how many of them count as
    handled (ended, or waiting for a decision: not lost to another process or left to a lease).

    With ``store`` (a stopped worker), a run whose record says it ended or waits counts too while
    its thread still winds down (its event loop closing, its executor's threads joined)."""
    handled = 0
    for run_id, handle in list(active.items()):
        future = handle._future
        if future is None or not future.done():
            if store is not None and _record_ended(store, run_id):
                del active[run_id]
                handled += 1
            continue
        del active[run_id]
        error = future.exception()
        if isinstance(error, LeaseLostError | ServerUnreachable | ProcessExiting):
            log.info("agentspan worker: run %s left to another process or its lease (%s)", run_id, error)
            continue
        handled += 1
    return handled


def _record_ended(store: Store, run_id: str) -> bool:
    try:
        return store.get_run(run_id).status not in (RunStatus.PENDING, RunStatus.RUNNING)
    except AgentspanError:
        return False


def _options_for(adapter: Adapter, run: Run,
                 options_for: Callable[[Run], dict[str, Any]] | None) -> dict[str, Any] | None:
    """The runner options a worker goes on with ``run`` with, or None when it cannot (logged once a run)."""
    try:
        options = {} if options_for is None else dict(options_for(run))
        adapter.check_options(run, options)
    except Exception as exc:
        if run.id not in _told_unservable:
            _told_unservable.add(run.id)
            log.warning("a worker cannot take run %s up: %s", run.id, exc)
        return None
    return options


_told_unservable: set[str] = set()
