"""Agentspan runs opened by `AgentspanPlugin` itself, for invocations of a user-built ``Runner``.

Without ``agentspan.run`` around it, the plugin opens one Agentspan run per ADK invocation and
holds its lease (with a heartbeat) while the invocation executes. The run is found again, and
resumed, when the same session is run again after a crash:

- **Identity.** A run's idempotency key is ``adk:<app>:<user>:<session>:<n>:<digest>``: the
  session, how many user messages the session held before this one (``n``), and the digest of
  the message. ADK's invocation ids are random (``e-<uuid>``) and cannot identify a retry. DBOS's
  ADK plugin and Temporal's ADK integration need no such key: they run inside a workflow the user
  writes around ``runner.run_async``, whose id names the execution (and number its steps in call
  order; DBOS even serializes the start of parallel tool calls to keep that order). A plugin on a
  user-built Runner has no wrapper to take an id from; what identifies a retry is what the user
  sends again: the same message on the same session, at the same point of the conversation.
- **Resume.** When a message arrives whose run exists and did not finish (its process died, or
  it waits for a human), that run is claimed and its journal replays: completed model and tool
  calls are not made again. If the session service is durable and still holds the events the
  dead invocation had appended (the same message is then the session's last user message), the
  session is first rewound to before that invocation with ADK's own rewind (state and artifact
  changes are reverted too), so the model sees the conversation it saw the first time.
- **Retry.** A run that failed is taken up again the same way once it was reopened for a retry
  (`agentspan runs retry`, the web UI's Retry button, the API's reopen: the run is ``pending``
  again) and the same message is run on the same session: the session is rewound to before the
  failed invocation, the completed calls replay, the call that failed runs again. A failed run
  nobody reopened stays failed: the same message then opens a new run, as before.
- **Continuation.** A message answering a paused invocation (an ``adk_request_confirmation``
  function response) continues the run of that invocation (found by its ADK invocation id). When
  that answer was sent before and the invocation went on past it (its model made calls after the
  confirmed tools ran; then a tool waited for an approval, or the process died), the session still
  holds that attempt's events: it is rewound to just after the confirmed tools' results, so the
  model calls made since replay under their own keys (see `_rewind_to_answer`); the agent the
  answer went to runs again (a ``ParallelAgent``'s branch, not the root: see `answered_agent`).
- **Recorded as** framework ``adk-runner``, agent ``<app>/<root agent>``: ``agentspan.serve``
  workers (which match runs on agent names, and ADK agent names cannot contain ``/``) never claim
  them, and ``agentspan.resume`` refuses them: only the user's Runner, with its session service,
  can continue such a run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from google.adk.agents import BaseAgent, _agent_router
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events import Event
from google.adk.events._rewind_events import _apply_rewinds
from google.adk.platform import time as platform_time
from google.adk.sessions import Session
from google.adk.sessions._rewind_utils import (
    compute_state_delta_for_rewind,
    rewind_session,
)
from google.genai import types

import agentspan
from agentspan import attached
from agentspan.attached import AttachedRun
from agentspan.config import get_store
from agentspan.divergence import OnDivergence
from agentspan.errors import RunStateError
from agentspan.hashing import digest
from agentspan.records import JSON, Run, RunStatus
from agentspan.stores.base import Store, call_store
from agentspan_adk import _codec
from agentspan_adk._confirmations import REQUEST
from agentspan_adk._reading import is_model_turn

FRAMEWORK = "adk"
RUNNER_FRAMEWORK = "adk-runner"
"""The framework recorded on plugin-opened runs: ``agentspan.resume(run_id, agent)`` refuses them
before claiming them (only the user's Runner, with its session service, can continue them)."""
RUNNER_OPTION = "adk_runner"
"""Key of ``Run.options`` naming the ADK app, user, session and invocation of a plugin-opened run."""


def root_of(agent: BaseAgent) -> BaseAgent:
    """The root of an agent's tree."""
    while agent.parent_agent is not None:
        agent = agent.parent_agent
    return agent


def run_label(ic: InvocationContext) -> str:
    """The agent name plugin-opened runs are recorded under: ``<app>/<root agent>``."""
    # the ignore: ADK 2 types ic.agent BaseAgent | BaseNode | None; the plugin serves agent trees
    return f"{ic.app_name}/{root_of(ic.agent).name}"  # type: ignore[arg-type]


def is_user_text(event: Event) -> bool:
    """Whether an event is a message the user typed (not a function response)."""
    if event.author != "user" or event.content is None or not event.content.parts:
        return False
    return not any(part.function_response is not None for part in event.content.parts)


def answers_only(message: types.Content | None) -> bool:
    """Whether a message only carries function responses (it continues a paused invocation)."""
    parts = message.parts if message is not None and message.parts else []
    return bool(parts) and all(part.function_response is not None for part in parts)


@dataclass
class ManagedRun:
    """A run this plugin opened and executes: the core's `AttachedRun`, ended from ADK callbacks."""

    attached: AttachedRun
    waiting_on: list[str] = field(default_factory=list)
    rewound: bool = False
    """The session was rewound to before the dead attempt (ADK must pick the agent to run again)."""
    taken_over: bool = False
    """The run was taken over from a process that died while executing it."""
    resume_agent: BaseAgent | None = None
    """The agent an answer acted on before went to, to run again (`answered_agent`)."""

    @property
    def run(self) -> agentspan.ActiveRun:
        """The journal cursor the invocation's calls go through."""
        return self.attached.active

    @property
    def ended(self) -> bool:
        return self.attached.ended

    @property
    def store(self) -> Store:
        return self.attached.store

    async def complete(self, text: str | None, ic: InvocationContext) -> None:
        """Records the invocation's end: completed, or waiting (lease released) on approvals."""
        if self.waiting_on:
            await call_store(self.store, self.attached.suspend)
        else:
            await call_store(self.store, self.attached.complete, {
                "text": text, "app_name": ic.app_name, "user_id": ic.user_id, "session_id": ic.session.id})

    async def fail(self, error: BaseException) -> None:
        """Records the invocation's failure."""
        await call_store(self.store, self.attached.fail, error)

    def suspend(self) -> None:
        """A tool call waits for an approval: give the lease back now (the signal unwinds ADK)."""
        self.attached.suspend()


async def open_run(ic: InvocationContext, message: types.Content | None, *,
                   on_divergence: OnDivergence = "raise") -> ManagedRun:
    """Opens (or claims again, after a crash) the run of this invocation; rewinds the session if
    it still holds the events of the dead attempt. ``on_divergence``: the plugin's policy.

    Raises:
        LeaseLostError: The invocation's run is being executed by another live process.
    """
    store = get_store()
    label = run_label(ic)
    session = ic.session
    managed: ManagedRun | None
    base = f"adk:{ic.app_name}:{ic.user_id}:{session.id}:"
    if message is None or answers_only(message):
        key = f"{base}invocation:{ic.invocation_id}"
        found = await _unfinished(store, label, lambda r: _invocation_of(r) == ic.invocation_id)
        turn_key = _turn_key(base, session, ic.invocation_id) if found is None else None
        if turn_key is not None:
            # ADK's own resume of (or an answer to) an invocation that a message sent again
            # started: the run is the message's, which that message claimed (its options hold
            # the first invocation's id)
            found = await _unfinished(store, label, lambda r: _of_turn(r, turn_key))
        if found is not None:
            managed = await _attach(store, await asyncio.to_thread(attached.take_over, store, found), on_divergence)
            managed.taken_over = True
            if message is not None:
                await _rewind_to_answer(ic, message)
            return managed
        managed = await _create(store, ic, label, key, message, on_divergence)
        if managed is None:
            raise RunStateError(f"the Agentspan run of ADK invocation {ic.invocation_id!r} already ended; "
                                "it cannot be continued")
        return managed
    message_digest = digest(_codec.dump_content(message))
    turns = [e for e in _apply_rewinds(session.events) if is_user_text(e)]
    if turns and turns[-1].content is not None and digest(_codec.dump_content(turns[-1].content)) == message_digest:
        retry_key = f"{base}{len(turns) - 1}:{message_digest}"
        crashed = await _unfinished(store, label, lambda r: _of_turn(r, retry_key))
        if crashed is not None:
            managed = await _attach(store, await asyncio.to_thread(attached.take_over, store, crashed),
                                    on_divergence)
            # artifacts are not rewound: the replayed calls' artifact deltas name the versions
            # the dead attempt saved, which must stay the latest (a rewind saves an empty one over)
            await rewind_session(session_service=ic.session_service, session=session,
                                 rewind_before_invocation_id=turns[-1].invocation_id, app_name=ic.app_name)
            _drop_rewound_keys(session)
            managed.rewound = True
            return managed
    key = f"{base}{len(turns)}:{message_digest}"
    for n in count(1):  # `#n`: the key's earlier runs ended (a session deleted and made again with its id)
        managed = await _create(store, ic, label, key if n == 1 else f"{key}#{n}", message, on_divergence)
        if managed is not None:
            return managed
    raise AssertionError("unreachable")  # pragma: no cover - count() never ends


_TICK = 0.001
"""Seconds between the timestamps of the events `_rewind_to_answer` appends: session services
load events in timestamp order (``DatabaseSessionService`` breaks ties on random event ids), and
one of them stores microseconds at most."""


async def _rewind_to_answer(ic: InvocationContext, message: types.Content) -> None:
    """Rewinds the session of a continued invocation to just after the confirmed tools' results of
    an answer sent again, when the invocation went on past them.

    The first time the answer arrived, ADK ran the confirmed tools and the invocation went on: its
    model made more calls, until a tool waited for an approval (`ApprovalPending`) or the process
    died. The durable session keeps those events; the invocation must now go on from the journal,
    whose model calls are keyed by how many the agent made before (`_reading.model_turns`). Left
    in place, the model event of the interrupted call would count once more on every resend (the
    call made live again under a new key, opening a new approval), and ADK would send the model
    its function calls a second time. ADK rewinds only whole invocations, and a continuation keeps
    its invocation id: the invocation is rewound, and copies of its events up to the first model
    call after the answer are appended again (new ids and timestamps), so the session reads as it
    did when that call was made. The rewind event carries the state and artifact changes that undo
    what the dropped events did (ADK's own computation, up to that point); the copies carry none
    (``app:``/``user:`` state, which a rewind keeps, is not set back to older values).

    The answer itself stays among the copies, with the tools' results after it: ADK treats the
    confirmation as acted on (its processor reads the raw session, rewound events included), and
    the plugin passes it an empty message instead (`_confirmations.acted_on_before`).

    Nothing is done when the session shows no earlier answer to all of the message's
    confirmations, no model call after it, or events of other invocations after this one's first.
    """
    answering = {p.function_response.id for p in message.parts or []
                 if p.function_response is not None and p.function_response.name == REQUEST
                 and p.function_response.id}
    if not answering:
        return
    session = ic.session
    live = _apply_rewinds(session.events)
    start = next((i for i, e in enumerate(live) if e.invocation_id == ic.invocation_id), None)
    if start is None or any(e.invocation_id != ic.invocation_id for e in live[start:]):
        return
    mine = live[start:]
    answered_at: dict[str, int] = {}
    for index, event in enumerate(mine):
        if event.author == "user":
            for response in event.get_function_responses():
                if response.id in answering:
                    answered_at.setdefault(response.id, index)
    if set(answered_at) != answering:
        return
    after = max(answered_at.values())
    cut = next((i for i in range(after + 1, len(mine)) if mine[i].author != "user" and is_model_turn(mine[i])), None)
    if cut is None:
        return
    dropped = next(i for i, e in enumerate(session.events) if e is mine[cut])

    async def state_delta(rewound: Session, _: int) -> dict[str, Any]:
        return await compute_state_delta_for_rewind(rewound, dropped)

    await rewind_session(session_service=ic.session_service, session=session,
                         rewind_before_invocation_id=ic.invocation_id, app_name=ic.app_name,
                         compute_state_delta=state_delta)  # (artifacts not rewound: see `open_run`)
    _drop_rewound_keys(session)
    stamp = session.events[-1].timestamp
    for event in mine[:cut]:
        stamp = max(platform_time.get_time(), stamp + _TICK)
        actions = event.actions.model_copy(deep=True, update={"state_delta": {}, "artifact_delta": {}})
        copy = event.model_copy(deep=True, update={"id": Event.new_id(), "timestamp": stamp, "actions": actions})
        await ic.session_service.append_event(session=session, event=copy)
    late = stamp + _TICK - platform_time.get_time()
    if late > 0:  # the events ADK appends next must come after the copies
        await asyncio.sleep(late)


def answered_agent(ic: InvocationContext, message: types.Content) -> BaseAgent | None:
    """The agent ADK ran when ``message``, an answer it acted on before, first arrived; None when
    that is the root agent (or the answer is not found).

    The plugin passes ADK an empty message instead of such an answer (`_confirmations.acted_on_before`),
    and ADK picks the agent to run from the session with that message last: no function response
    routes it to the agent that asked for the confirmation, and it falls back to the root. When
    that agent is a workflow agent's sub-agent (a ``ParallelAgent``'s branch, a
    ``SequentialAgent``'s step), the root would run every sub-agent again: the finished ones would
    make new model calls (keyed after those the session shows, so never replayed) and run their
    tools again. ADK's own routing, on the session as it was when the answer arrived (up to the
    answer), names the agent it ran then.
    """
    answering = {p.function_response.id for p in message.parts or []
                 if p.function_response is not None and p.function_response.id}
    live = _apply_rewinds(ic.session.events)
    at = next((i for i in range(len(live) - 1, -1, -1)
               if live[i].invocation_id == ic.invocation_id and live[i].author == "user"
               and any(r.id in answering for r in live[i].get_function_responses())), None)
    if at is None:
        return None
    root = root_of(ic.agent)  # type: ignore[arg-type]  # (see run_label)
    view = ic.session.model_copy(update={"events": live[:at + 1]})  # (a shallow copy: the events are shared)
    agent = _agent_router.find_agent_to_run(view, root, resumability_config=ic.resumability_config)
    return None if agent is root else agent


def run_agent(ic: InvocationContext, agent: BaseAgent) -> None:
    """Makes the invocation run ``agent`` (on the branch it last ran on in this invocation), as
    ADK does for an agent it resumes with an answer."""
    if ic.agent is agent:
        return
    ic.agent = agent
    _agent_router.restore_branch_from_history(invocation_context=ic, node=agent, root=root_of(agent),
                                              invocation_id=ic.invocation_id)


async def _create(store: Store, ic: InvocationContext, label: str, key: str,
                  message: types.Content | None, on_divergence: OnDivergence) -> ManagedRun | None:
    """Creates the run with ``key``, or claims the existing one; None if that one already ended."""
    run = attached.new_run(
        framework=RUNNER_FRAMEWORK, agent=label, input=_codec.dump_content(message) if message else None,
        session_id=ic.session.id, idempotency_key=key,
        options={RUNNER_OPTION: {"app_name": ic.app_name, "user_id": ic.user_id, "session_id": ic.session.id,
                                 "invocation_id": ic.invocation_id}})
    # `attached.create_or_claim`, with the usual case (a new run: one insert) on the loop's thread
    # like every journal write; only a claim, which may wait for another owner's lease, goes to a
    # worker thread.
    stored, created = await call_store(store, store.create_run, run)
    if not created:
        if stored.status.terminal:
            return None
        stored = await asyncio.to_thread(attached.take_over, store, stored)
    return await _attach(store, stored, on_divergence)


async def _attach(store: Store, run: Run, on_divergence: OnDivergence) -> ManagedRun:
    return ManagedRun(await call_store(store, attached.attach, store, run, fresh=not run.steps,
                                       on_divergence=on_divergence))


def _drop_rewound_keys(session: Session) -> None:
    """Removes from the session's state (this invocation's copy) the keys the rewind just appended
    marks ``None``: those set after the point rewound to. ADK marks them so rather than removing
    them, and code that runs live before the replay sets them again (``state.get(k, 0) + 1`` in a
    callback) would read ``None`` where the first attempt found no key."""
    rewind = session.events[-1] if session.events else None
    if rewind is None or not rewind.actions.rewind_before_invocation_id:
        return
    for key, value in (rewind.actions.state_delta or {}).items():
        if value is None:
            session.state.pop(key, None)


def _turn_key(base: str, session: Session, invocation_id: str) -> str | None:
    """The key of the run of the user message that started invocation ``invocation_id`` (as
    `open_run` makes it: the message's place among the session's messages, and its digest), or
    None when no message of the session's live events started it."""
    turns = [e for e in _apply_rewinds(session.events) if is_user_text(e)]
    for index, event in enumerate(turns):
        if event.invocation_id == invocation_id and event.content is not None:
            return f"{base}{index}:{digest(_codec.dump_content(event.content))}"
    return None


def _of_turn(run: Run, key: str) -> bool:
    """Whether ``run`` is the run of the message keyed ``key`` (``key#n``: a later one, `open_run`)."""
    return run.idempotency_key is not None and (run.idempotency_key == key
                                                 or run.idempotency_key.startswith(f"{key}#"))


def _invocation_of(run: Run) -> str | None:
    info: JSON = run.options.get(RUNNER_OPTION) or {}
    return info.get("invocation_id") if isinstance(info, dict) else None


async def _unfinished(store: Store, label: str, match: Callable[[Run], bool]) -> Run | None:
    """The unfinished run of ``label`` that ``match`` picks (running with a dead owner, waiting, or
    pending: a failed run reopened for a retry)."""
    for status in (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PENDING):
        runs = await call_store(store, store.list_runs, status=status, agent=label, limit=1000)
        for run in runs:
            if match(run):
                return run
    return None
