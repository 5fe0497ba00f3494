"""Durable ADK sessions for ``agentspan.run``: one snapshot per completed run, in the Agentspan store.

Why not ADK's ``DatabaseSessionService``: its SQLite driver (aiosqlite) is installed, but a
session file next to the embedded store would not follow a run to a server
(``AGENTSPAN_SERVER_URL``, possibly on PostgreSQL): a worker on another machine could not resume
the conversation. The store's checkpoint records work on every backend (embedded SQLite, the
server, PostgreSQL), so the session lives where the run's journal lives.

How:

- The session of ``(app_name, user_id, session_id)`` is the checkpoint thread
  ``adk:<app>:<user>:<session>``; each completed run stores the whole session (events and state,
  as ADK's pydantic JSON) as one checkpoint whose id is the run id, and older snapshots are pruned.
- A run starts from the snapshot that was latest when it first executed; the journal records
  which (a ``checkpoint`` step), so every re-execution after a crash or an approval starts from
  the very same conversation, while the run's own events come back from the journal.
- A session only moves forward when a run completes: a crashed run leaves no half-written events.
- Runs of one session must not overlap: a run that finds the session advanced by another run
  since it started fails with `RunStateError` (the other run's snapshot stays).
- ``app:`` and ``user:`` state is kept with each session (not shared between sessions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.adk.sessions import InMemorySessionService, Session
from pydantic import ConfigDict

from agentspan import jsontext
from agentspan.errors import RunStateError
from agentspan.records import CheckpointRecord
from agentspan.stores.base import Store

SNAPSHOT_TYPE = "adk-session/json"


@dataclass(frozen=True)
class SessionSnapshots:
    """The snapshots of one ADK session in the store."""

    store: Store
    app_name: str
    user_id: str
    session_id: str

    @property
    def thread_id(self) -> str:
        return f"adk:{self.app_name}:{self.user_id}:{self.session_id}"

    def latest_id(self) -> str | None:
        """The id of the latest snapshot (None for a new session)."""
        record = self.store.get_checkpoint(self.thread_id)
        return record.checkpoint_id if record is not None else None

    def load(self, snapshot_id: str | None) -> Session | None:
        """The session as of a snapshot.

        Raises:
            RunStateError: The snapshot is gone (another run of the session replaced it).
        """
        if snapshot_id is None:
            return None
        record = self.store.get_checkpoint(self.thread_id, checkpoint_id=snapshot_id)
        if record is None:
            raise RunStateError(
                f"session {self.session_id!r} of app {self.app_name!r} (user {self.user_id!r}) no longer has "
                f"snapshot {snapshot_id!r} this run started from: another run of the session completed meanwhile")
        return jsontext.parse_model(Session, record.data)

    def save(self, run_id: str, base_id: str | None, session: Session) -> None:
        """Stores the session after run ``run_id`` (idempotent for that run).

        Raises:
            RunStateError: Another run advanced the session since this run started.
        """
        latest = self.latest_id()
        if latest not in (None, base_id, run_id):
            raise RunStateError(
                f"session {self.session_id!r} of app {self.app_name!r} (user {self.user_id!r}) was advanced by run "
                f"{latest!r} while run {run_id!r} executed; runs of one session must not overlap")
        self.store.put_checkpoint(CheckpointRecord(
            thread_id=self.thread_id, checkpoint_id=run_id, parent_id=base_id, type=SNAPSHOT_TYPE,
            data=session_json(session), metadata={"run_id": run_id, "events": len(session.events)},
            run_id=run_id))
        self.store.prune_checkpoints([self.thread_id], keep_latest=True)


class _Base64Session(Session):
    """A `Session` whose bytes are written as base64 (a ``Blob`` is, by its own model, but bytes in
    untyped fields, an event's ``output`` or the state, follow the outermost model's setting)."""

    model_config = ConfigDict(**{**Session.model_config, "ser_json_bytes": "base64"})  # type: ignore[typeddict-item]


def session_json(session: Session) -> bytes:
    """The session as ADK's pydantic JSON; when some bytes in it are no UTF-8 text (a node's binary
    output, an image in the state), all its bytes as base64 (as `agentspan_adk._reading.to_json`
    does for a tool result) instead of an error after the run's work was done."""
    try:
        return jsontext.model_json(session)
    except UnicodeDecodeError:
        return jsontext.model_json(_Base64Session.model_construct(session.model_fields_set, **dict(session)))


class SeededSessionService(InMemorySessionService):
    """An in-memory session service holding one session restored from a snapshot."""

    async def seed(self, snapshot: Session | None, *, app_name: str, user_id: str, session_id: str,
                   state: dict[str, Any] | None = None) -> None:
        """Puts the session in (a new, empty one with ``state`` when there is no snapshot)."""
        initial = dict(snapshot.state) if snapshot is not None else dict(state or {})
        await self.create_session(app_name=app_name, user_id=user_id, state=initial, session_id=session_id)
        if snapshot is not None:
            self.sessions[app_name][user_id][session_id].events = list(snapshot.events)
