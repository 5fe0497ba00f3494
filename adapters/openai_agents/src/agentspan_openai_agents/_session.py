"""The SDK's conversation memory (``Runner.run(..., session=...)``) inside a durable run.

A session is a store of its own that the SDK reads at the start of a run (the conversation so far,
put before the new input) and writes at the end of every turn (the turn's items). Both are side
effects a resumed run must not repeat: read again, the history would hold what the crashed
attempt already wrote, so the first model call's input would differ from the journal's; written
again, the session would hold the turn twice. `JournaledSession` wraps the app's session so that
each call is a ``checkpoint`` step of the run, keyed by order (``session:0``, ``session:1``, ...):
a completed read is served from the journal, a completed write is not made again. A write's start
is journaled before the write, so one a process died in is known to be in doubt: it is made again
only if the session does not already end with its items.

Runs of one session must not overlap. An attempt that goes on with a run whose journal holds
session calls (a resume, a worker, a retry) checks, before its first live call of the session,
that the session still ends where the run left it: with what the run last read there and wrote
after (for a write in doubt, either with or without it; items gone from its front, which expire
in some sessions, do not count). If another run wrote to it meanwhile, or popped its last item, the
run fails with `RunStateError` and nothing is written to the session. That costs one read of the
session's tail at a resume; a run's first attempt pays nothing.

A run started with a session records that session's id; resuming it needs the same session
(``agentspan.resume(run_id, agent, session=session)``; a worker makes it from the run's record:
``agentspan.serve(agent, options_for=lambda run: {"session": SQLiteSession(run.session_id, ...)})``).
Sessions that compact themselves through a model (``run_compaction``,
`OpenAIResponsesCompactionSession`) are refused: compaction rewrites the store outside the calls
journaled here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_core import to_jsonable_python

import agentspan
from agentspan.errors import ConfigurationError, RunStateError
from agentspan.records import Step, StepStatus
from agentspan_openai_agents._local_tools import value_of

SESSION_OPTION = "session_id"
"""The stored run option naming the session a run was started with."""


class SessionChecks:
    """The overlap checks of one attempt of a run: one per session id, made before the attempt's
    first live call of that session, whichever `JournaledSession` makes it (the run's own, an
    agent tool's; parallel agent tool calls sharing one session wait for the same check, made
    before any of them writes).

    Args:
        run: The attempt's run.
    """

    def __init__(self, run: agentspan.ActiveRun) -> None:
        self.run = run
        self.journaled = frozenset(key for key in run.recorded if "session:" in key)
        """Keys of the session calls journaled before this attempt (a divergence may move them aside)."""
        self._checks: dict[str, asyncio.Future[None]] = {}

    async def before_live_call(self, session: JournaledSession) -> None:
        """Waits for the check of ``session``'s id (started by the first caller); raises its refusal.

        Raises:
            RunStateError: The session no longer ends where the run left it.
        """
        if not self.journaled:  # a run's first attempt (or one with no session call journaled): nothing to check
            return
        check = self._checks.get(session.session_id)
        if check is not None and not check.done() and check.get_loop() is not asyncio.get_running_loop():
            check = None  # running on another loop (a sync tool's `Runner.run_sync`): one of its own here
        if check is None:
            check = self._checks[session.session_id] = asyncio.ensure_future(self._check(session))
        await asyncio.shield(check)  # (a caller cancelled does not cancel the others' check)

    async def _check(self, session: JournaledSession) -> None:
        """Refuses to go on with the run on a session that no longer ends where the run left it:
        every call of the session (the session id) journaled before this attempt counts, under
        any key (the run's own turn, its agent tools'), in the order they were made.

        Raises:
            RunStateError: Another run (or a pop) changed the session's end since.
        """
        run = self.run
        steps = sorted((step for step in list(run.journal.values())
                        if step.key in run.recorded and (step.name or "").startswith("session.")
                        and isinstance(step.input, dict) and step.input.get("session_id") == session.session_id),
                       key=_seq)
        # calls journaled before this attempt that a divergence moved aside (`on_divergence="live"`)
        set_aside = any(key not in run.journal for key in self.journaled)
        if not steps:
            return
        limit_setting = getattr(session.session_settings, "limit", None)
        ends = _session_ends(steps, limit_setting if isinstance(limit_setting, int) else None)
        # exact: the last len(items) + 1 items are read (more would show as one item too many)
        window = max(len(items) + exact for items, exact in ends)
        if window == 0:  # nothing known of the session's end to check
            return
        tail = to_jsonable_python(await value_of(session.inner.get_items(window)), fallback=str)
        if any(_ends_as(tail, items, exact) for items, exact in ends):
            return
        why = ("this run's own earlier calls of it were set aside by on_divergence='live' while the session "
               "still holds what they wrote" if set_aside else
               "another run wrote to it, or popped its last item, since this run's last call of it; runs of "
               "one session must not overlap")
        refused = RunStateError(
            f"run {run.run_id!r} cannot go on with the session {session.session_id!r}: the session no longer "
            f"ends where this run left it ({why}). Nothing was written to the session; a retry of this run is "
            "refused the same way: run the turn again as a new run on the session as it is")
        if run.fatal is None:  # what the attempt fails with, though the SDK swallowed the read that raised it
            run.fatal = refused
        raise refused


def _seq(step: Step) -> int:
    return step.seq


class JournaledSession:
    """A `Session` whose calls are journaled steps of the active run (see the module).

    One is made per attempt of the run (`session_for_attempt`), and per agent tool's run
    (`nested_session`); its first live call waits for the attempt's check of the session.
    """

    def __init__(self, inner: Any, checks: SessionChecks | None = None) -> None:
        self.inner = inner
        self.session_id = inner.session_id
        self.session_settings = getattr(inner, "session_settings", None)
        self._checks = checks
        self._checked = False

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The session's items (the last ``limit``), replayed from the journal when read before."""
        return await self._step("get_items", {"limit": limit}, lambda: self.inner.get_items(limit))

    async def add_items(self, items: list[Any]) -> None:
        """Adds ``items`` unless a completed step of the journal already added them, or the attempt
        that died in this step did (the session ends with them)."""
        payload = to_jsonable_python(items, fallback=str)

        async def add() -> None:
            step = agentspan.current_step()
            if step is not None and step.attempt > 1 and items and await self._ends_with(payload):
                return  # written by the attempt that died before journaling it
            await value_of(self.inner.add_items(items))

        # Its start is written before the session is (`durable_start`): a resumed run then knows
        # the write may have happened.
        await self._step("add_items", {"items": payload}, add, durable_start=True)

    async def _ends_with(self, payload: list[Any]) -> bool:
        tail = await value_of(self.inner.get_items(len(payload)))
        return bool(to_jsonable_python(tail, fallback=str) == payload)

    async def pop_item(self) -> Any:
        """Removes and returns the last item (the journaled one, on replay)."""
        return await self._step("pop_item", {}, self.inner.pop_item)

    async def clear_session(self) -> None:
        """Clears the session unless a completed step of the journal already did."""
        await self._step("clear_session", {}, self.inner.clear_session)

    async def _step(self, method: str, args: dict[str, Any], call: Any, *, durable_start: bool = False) -> Any:
        run = agentspan.active_run()
        if run is None:
            return await value_of(call())

        async def invoke() -> Any:
            return to_jsonable_python(await value_of(call()), fallback=str)

        key = run.next_key("session")
        # Every live call waits for the check (the SDK swallows some read errors, its retry
        # cleanup: a refusal is raised again by the next call); a replayed one needs none.
        if self._checks is not None and (self._checked or not run.will_replay(key)):
            self._checked = True
            await self._checks.before_live_call(self)
        return await run.step(kind=agentspan.StepKind.CHECKPOINT, key=key,
                              name=f"session.{method}", input={"session_id": self.session_id, **args},
                              input_hash=None, invoke=invoke, dump=_same, load=_same, durable_start=durable_start)


def session_for_attempt(run: agentspan.ActiveRun, session: Any, checks: SessionChecks) -> JournaledSession | None:
    """The journaled session of this attempt of ``run`` (None without one); see `check_resumed_session`.

    Args:
        run: The attempt's run.
        session: The session the caller gave (None: none).
        checks: The attempt's overlap checks (`SessionChecks`).
    """
    check_resumed_session(run.run_id, run.run.options, session)
    if session is None:
        return None
    return JournaledSession(session, checks)


def nested_session(session: Any, checks: SessionChecks | None) -> JournaledSession:
    """The journaled session of a run made inside a tool call of the active run (an agent tool's
    ``session=``): its calls are steps under the tool call's key, as the nested run's model calls.

    Args:
        session: The session the nested run was given.
        checks: The attempt's overlap checks (None: a check of the nested session's own).

    Raises:
        ConfigurationError: ``session`` is not one `JournaledSession` can make durable (also kept as
            the run's `fatal` error: the SDK would turn it into a message to the model).
    """
    run = agentspan.active_run()
    try:
        check_session(session)
    except ConfigurationError as refused:
        if run is not None and run.fatal is None:
            run.fatal = refused
        raise
    if checks is None and run is not None:
        checks = SessionChecks(run)
    return JournaledSession(session, checks)


def check_resumed_session(run_id: str, stored_options: Mapping[str, Any], session: Any) -> None:
    """Refuses to go on with a run without the session it was started with.

    Raises:
        ConfigurationError: The run was started with a session and ``session`` is none or another
            one; or ``session`` is not one `JournaledSession` can make durable.
    """
    started_with = stored_options.get(SESSION_OPTION)
    if session is None:
        if started_with is not None:
            raise ConfigurationError(
                f"run {run_id!r} was started with the session {started_with!r}; go on with it in a process "
                f"that has that session: agentspan.resume({run_id!r}, agent, session=session), or a worker's "
                "agentspan.serve(agent, options_for=lambda run: {'session': ...})")
        return
    check_session(session)
    if started_with is not None and session.session_id != started_with:
        raise ConfigurationError(f"run {run_id!r} was started with the session {started_with!r}, "
                                 f"not {session.session_id!r}")


def check_session(session: Any) -> None:
    """Refuses what `JournaledSession` cannot make durable (see the module)."""
    session_id = getattr(session, "session_id", _MISSING)
    if session_id is None:  # a Session made for a run without one (`options_for` from ``run.session_id``)
        raise ConfigurationError(f"session= was given a {type(session).__name__} whose session_id is None; give "
                                 "none for a run started without a session")
    if not isinstance(session_id, str):
        raise ConfigurationError(f"session= takes an openai-agents Session (with a session_id), "
                                 f"not {type(session).__name__}")
    if callable(getattr(session, "run_compaction", None)):
        raise ConfigurationError(
            f"{type(session).__name__} compacts itself through a model (run_compaction), which a durable run "
            "cannot journal; pass the session it wraps instead")


_MISSING = object()

_End = tuple[list[Any], bool]
"""What a run knows of a session's end: its last items, and whether they are all of it (exact)."""


def _session_ends(steps: Sequence[Step], limit_setting: int | None) -> list[_End]:
    """The ends the session may have after the journaled ``steps`` (its calls, in order): one,
    or more when a write was in doubt (made or not) or failed (it may have been made)."""
    ends: list[_End] = [([], False)]  # nothing known
    for step in steps:
        done = step.status is StepStatus.COMPLETED
        method = (step.name or "").removeprefix("session.")
        after: list[_End]
        if method == "get_items":
            if done and isinstance(step.output, list):
                limit = step.input.get("limit") if isinstance(step.input, dict) else None
                limit = limit_setting if limit is None else limit  # (the session's own limit for none)
                ends = [(list(step.output), limit is None or len(step.output) < limit)]
            continue  # a read that failed changed nothing
        if method == "add_items":
            added = step.input.get("items") if isinstance(step.input, dict) else None
            after = [(items + list(added or []), exact) for items, exact in ends]
        elif method == "pop_item":
            after = [(items[:-1], exact) if items else ([], exact) for items, exact in ends]
        elif method == "clear_session":
            after = [([], True)]
        else:
            continue
        ends = after if done else _unique(ends + after)
    return ends


def _unique(ends: list[_End]) -> list[_End]:
    kept: list[_End] = []
    for end in ends:
        if end not in kept:
            kept.append(end)
    return kept


def _ends_as(tail: list[Any], items: list[Any], exact: bool) -> bool:
    """Whether a session whose last items are ``tail`` (read with a window that fits ``items``)
    ends with ``items`` (and holds nothing before them, when ``exact``).

    A tail shorter than ``items`` that ends as they do is the same end with its oldest items gone:
    sessions whose items expire (``EncryptedSession(ttl=...)``, ``RedisSession(ttl=...)``) drop
    them from the front while a run waits for a decision. Only items after or instead of the
    run's own end are another run's.
    """
    if len(tail) <= len(items):
        return not tail or items[-len(tail):] == tail
    return not exact and (not items or tail[-len(items):] == items)


def _same(value: Any) -> Any:
    return value

