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

A run started with a session records that session's id; resuming it needs the same session
(``agentspan.resume(run_id, agent, session=session)``; a worker makes it from the run's record:
``agentspan.serve(agent, options_for=lambda run: {"session": SQLiteSession(run.session_id, ...)})``).
Sessions that compact themselves through a model (``run_compaction``,
`OpenAIResponsesCompactionSession`) are refused: compaction rewrites the store outside the calls
journaled here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import to_jsonable_python

import agentspan
from agentspan.errors import ConfigurationError
from agentspan_openai_agents._local_tools import value_of

SESSION_OPTION = "session_id"
"""The stored run option naming the session a run was started with."""


class JournaledSession:
    """A `Session` whose calls are journaled steps of the active run (see the module)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session_id = inner.session_id
        self.session_settings = getattr(inner, "session_settings", None)

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

        return await run.step(kind=agentspan.StepKind.CHECKPOINT, key=run.next_key("session"),
                              name=f"session.{method}", input={"session_id": self.session_id, **args},
                              input_hash=None, invoke=invoke, dump=_same, load=_same, durable_start=durable_start)


def session_for_attempt(run: agentspan.ActiveRun, session: Any) -> JournaledSession | None:
    """The journaled session of this attempt of ``run`` (None without one); see `check_resumed_session`."""
    check_resumed_session(run.run_id, run.run.options, session)
    return None if session is None else JournaledSession(session)


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


def _same(value: Any) -> Any:
    return value

