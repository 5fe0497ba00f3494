"""Agentspan runs opened by `AgentspanPlugin` itself, for invocations of a user-built ``Runner``.

Without ``agentspan.run`` around it, the plugin opens one Agentspan run per ADK invocation and
holds its lease (with a heartbeat) while the invocation executes. The run is found again, and
resumed, when the same session is run again after a crash:

- **Identity.** A run's idempotency key is ``adk:<app>:<user>:<session>:<n>:<digest>``: the
  session, how many user messages the session held before this one (``n``), and the digest of
  the message. ADK's invocation ids are random (``e-<uuid>``) and cannot identify a retry.
- **Resume.** When a message arrives whose run exists and did not finish (its process died, or
  it waits for a human), that run is claimed and its journal replays: completed model and tool
  calls are not made again. If the session service is durable and still holds the events the
  dead invocation had appended (the same message is then the session's last user message), the
  session is first rewound to before that invocation with ADK's own rewind (state and artifact
  changes are reverted too), so the model sees the conversation it saw the first time.
- **Continuation.** A message answering a paused invocation (an ``adk_request_confirmation``
  function response) continues the run of that invocation (found by its ADK invocation id).
- **Recorded as** agent ``<app>/<root agent>``, so ``agentspan.serve`` workers (which match runs
  on agent names, and ADK agent names cannot contain ``/``) never claim them: only the user's
  Runner, with its session service, can continue such a run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any, TypeVar

from google.adk.agents import BaseAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events import Event
from google.adk.events._rewind_events import _apply_rewinds
from google.adk.sessions._rewind_utils import rewind_session
from google.genai import types

import agentspan
from agentspan import leases
from agentspan.config import get_store, settings
from agentspan.hashing import digest
from agentspan.records import JSON, Run, RunStatus, now
from agentspan.stores.base import Store
from agentspan_adk import _codec

T = TypeVar("T")
FRAMEWORK = "adk"
RUNNER_OPTION = "adk_runner"
"""Key of ``Run.options`` naming the ADK app, user, session and invocation of a plugin-opened run."""


async def call_store(store: Store, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Calls a store method, on a worker thread when the store does network I/O."""
    if getattr(store, "blocking_io", False):
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


def root_of(agent: BaseAgent) -> BaseAgent:
    """The root of an agent's tree."""
    while agent.parent_agent is not None:
        agent = agent.parent_agent
    return agent


def run_label(ic: InvocationContext) -> str:
    """The agent name plugin-opened runs are recorded under: ``<app>/<root agent>``."""
    return f"{ic.app_name}/{root_of(ic.agent).name}"


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
    """A run this plugin opened and executes, with the heartbeat that keeps its lease."""

    run: agentspan.ActiveRun
    heartbeat: leases.Heartbeat
    ended: bool = False
    waiting_on: list[str] = field(default_factory=list)
    rewound: bool = False
    """The session was rewound to before the dead attempt (ADK must pick the agent to run again)."""

    @property
    def store(self) -> Store:
        return self.run.store

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.heartbeat.__exit__(None, None, None)

    async def complete(self, text: str | None, ic: InvocationContext) -> None:
        """Records the invocation's end: completed, or waiting (lease released) on approvals."""
        if self.ended:
            return
        try:
            if self.waiting_on:
                await call_store(self.store, self.store.update_run, self.run.run_id, epoch=self.run.epoch,
                                 status=RunStatus.WAITING, release_lease=True)
            else:
                output = {"text": text, "app_name": ic.app_name, "user_id": ic.user_id,
                          "session_id": ic.session.id}
                await call_store(self.store, self.store.update_run, self.run.run_id, epoch=self.run.epoch,
                                 status=RunStatus.COMPLETED, output=output, release_lease=True)
        finally:
            self._end()

    async def fail(self, error: BaseException) -> None:
        """Records the invocation's failure."""
        if self.ended:
            return
        try:
            await call_store(self.store, self.store.update_run, self.run.run_id, epoch=self.run.epoch,
                             status=RunStatus.FAILED, error=f"{type(error).__name__}: {error}", release_lease=True)
        finally:
            self._end()

    def suspend(self) -> None:
        """A tool call waits for an approval: give the lease back now (the signal unwinds ADK)."""
        if self.ended:
            return
        try:
            self.store.update_run(self.run.run_id, epoch=self.run.epoch, status=RunStatus.WAITING,
                                  release_lease=True)
        finally:
            self._end()


async def open_run(ic: InvocationContext, message: types.Content | None) -> ManagedRun:
    """Opens (or claims again, after a crash) the run of this invocation; rewinds the session if
    it still holds the events of the dead attempt.

    Raises:
        LeaseLostError: The invocation's run is being executed by another live process.
    """
    store = get_store()
    label = run_label(ic)
    session = ic.session
    base = f"adk:{ic.app_name}:{ic.user_id}:{session.id}:"
    if message is None or answers_only(message):
        key = f"{base}invocation:{ic.invocation_id}"
        found = await _unfinished(store, label, lambda r: _invocation_of(r) == ic.invocation_id)
        return await _claim(store, found) if found is not None else await _create(store, ic, label, key, message)
    message_digest = digest(_codec.dump_content(message))
    turns = [e for e in _apply_rewinds(session.events) if is_user_text(e)]
    if turns and turns[-1].content is not None and digest(_codec.dump_content(turns[-1].content)) == message_digest:
        retry_key = f"{base}{len(turns) - 1}:{message_digest}"
        crashed = await _unfinished(store, label, lambda r: r.idempotency_key == retry_key)
        if crashed is not None:
            managed = await _claim(store, crashed)
            await rewind_session(session_service=ic.session_service, session=session,
                                 rewind_before_invocation_id=turns[-1].invocation_id,
                                 artifact_service=ic.artifact_service, app_name=ic.app_name)
            managed.rewound = True
            return managed
    key = f"{base}{len(turns)}:{message_digest}"
    for n in count(1):
        managed = await _create(store, ic, label, key if n == 1 else f"{key}#{n}", message)
        if managed is not None:
            return managed


async def _create(store: Store, ic: InvocationContext, label: str, key: str,
                  message: types.Content | None) -> ManagedRun | None:
    """Creates the run with ``key``, or claims the existing one; None if that one already ended."""
    run = Run(framework=FRAMEWORK, agent=label, input=_codec.dump_content(message) if message else None,
              session_id=ic.session.id, idempotency_key=key, status=RunStatus.RUNNING,
              options={RUNNER_OPTION: {"app_name": ic.app_name, "user_id": ic.user_id,
                                       "session_id": ic.session.id, "invocation_id": ic.invocation_id}},
              lease_owner=leases.owner_id(), lease_expires_at=now() + settings().lease_ttl, lease_epoch=1)
    stored, created = await call_store(store, store.create_run, run)
    if created:
        return await _start(store, stored)
    if stored.status.terminal:
        return None
    return await _claim(store, stored)


async def _claim(store: Store, run: Run) -> ManagedRun:
    ttl = settings().lease_ttl
    claimed = await asyncio.to_thread(leases.claim, store, run.id, ttl=ttl, wait=ttl + 1)
    if claimed.status is not RunStatus.RUNNING:
        claimed = await call_store(store, store.update_run, claimed.id, epoch=claimed.lease_epoch,
                                   status=RunStatus.RUNNING)
    return await _start(store, claimed)


async def _start(store: Store, run: Run) -> ManagedRun:
    steps = await call_store(store, store.list_steps, run.id) if run.steps else []
    heartbeat = leases.Heartbeat(store, run.id, run.lease_epoch, settings().lease_ttl).__enter__()
    return ManagedRun(agentspan.ActiveRun(store, run, steps), heartbeat)


def _invocation_of(run: Run) -> str | None:
    info: JSON = run.options.get(RUNNER_OPTION) or {}
    return info.get("invocation_id") if isinstance(info, dict) else None


async def _unfinished(store: Store, label: str, match: Callable[[Run], bool]) -> Run | None:
    """The unfinished run of ``label`` that ``match`` picks (running with a dead owner, or waiting)."""
    for status in (RunStatus.RUNNING, RunStatus.WAITING):
        runs = await call_store(store, store.list_runs, status=status, agent=label, limit=1000)
        for run in runs:
            if match(run):
                return run
    return None
