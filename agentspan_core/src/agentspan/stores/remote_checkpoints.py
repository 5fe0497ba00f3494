"""The checkpoint methods of `RemoteStore` (a mixin): the `Store` checkpoint contract over HTTP.

Writes the caller lets the store defer (``defer=True``: LangGraph task writes that may be lost in a
crash, `AgentspanSaver` decides) are held back (`held_writes`) and sent with the thread's next
checkpoint as one ``PUT /api/checkpoints/with-writes``: one request and one server transaction per
LangGraph super-step instead of two. Every other call for a thread sends its held writes first, so
a client always reads what it wrote: a read, copy or prune of the thread, and a write that cannot
wait (its held writes go in the same request when they keep stored writes as it does). Deleting a
whole thread drops its held writes instead (they would be deleted with it).

A server older than ``/checkpoints/with-writes`` (it answers 404) gets the writes and the
checkpoint as two requests, writes first, as before that endpoint existed; the client remembers
and stops asking (one warning in the log).

Retried like every call, with no "already done" check: each checkpoint write is an upsert by id or
a deletion, so repeating one whose answer was lost leaves the state it left (a copy copies the same
rows again; a prune keeping the latest prunes what is older than the latest at the time of the
retry, as a second prune would).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from agentspan import wire
from agentspan.errors import ConfigurationError, TransportError
from agentspan.records import JSON, CheckpointRecord, CheckpointWrite
from agentspan.stores.checkpoint_rules import check_limit, dump_metadata, id_list, load_filter
from agentspan.stores.held_writes import HeldWrites

if TYPE_CHECKING:
    from agentspan.stores.plain_http import Answer

__all__ = ["RemoteCheckpoints"]

_M = TypeVar("_M", bound=BaseModel)
_WITH_WRITES = "/checkpoints/with-writes"
log = logging.getLogger("agentspan")


def _endpoint_missing(exc: BaseException) -> bool:
    """Whether a refusal says the server has no such endpoint (a server older than the client)."""
    return isinstance(exc, TransportError) and getattr(exc, "status", None) in (404, 405)


class RemoteCheckpoints:
    """The checkpoint methods of `RemoteStore`, which provides ``_call``, ``_get`` and ``_held``."""

    if TYPE_CHECKING:
        _held: HeldWrites

        def _call(
            self, method: str, path: str, body: BaseModel | None = None, params: Any = None, *,
            already_done: Callable[[BaseException], bool] | None = None,
        ) -> Answer | None: ...  # fmt: skip
        def _get(self, path: str, model: type[_M], params: Any = None) -> _M: ...
        def _ask(self, method: str, path: str, body: BaseModel, model: type[_M]) -> _M: ...

    _separate_writes = False
    """Set once the server turned out to lack ``/checkpoints/with-writes``."""

    def _send_with_writes(self, checkpoint: CheckpointRecord, writes: list[CheckpointWrite], replace: bool) -> None:
        """One ``PUT /api/checkpoints/with-writes``, or, to a server without it, the writes and
        then the checkpoint."""
        if not self._separate_writes:
            body = wire.PutCheckpointWithWrites(checkpoint=checkpoint, writes=writes, replace=replace)
            try:
                self._call("PUT", _WITH_WRITES, body)
                return
            except TransportError as exc:
                if not _endpoint_missing(exc):
                    raise
                self._separate_writes = True
                log.warning("the Agentspan server has no PUT /api%s (an older version): a checkpoint and "
                            "its writes are sent as two requests", _WITH_WRITES)
        if writes:
            self._send_writes(writes, replace=replace)
        self._call("PUT", "/checkpoints", checkpoint)

    def _send_writes(self, writes: list[CheckpointWrite], replace: bool = False) -> None:
        """One ``PUT /api/checkpoints/writes`` (also what `HeldWrites` sends)."""
        self._call("PUT", "/checkpoints/writes", wire.PutCheckpointWrites(writes=writes, replace=replace))

    # ---- writes ---------------------------------------------------------------------------
    def put_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """See `Store.put_checkpoint`; the thread's held writes go in the same request.

        Raises:
            ConfigurationError: As `Store.put_checkpoint`. When the server refuses a request with
                held writes, the writes and the checkpoint are sent apart, so each refusal names
                its own record and whatever is valid is stored; the checkpoint's refusal is raised
                first, else the writes'.
        """
        dump_metadata(checkpoint.metadata)  # refuses what the server would never see as sent
        if checkpoint.writes:  # ignored by the store: not worth sending
            checkpoint = checkpoint.model_copy(update={"writes": []})
        held = self._held.take(checkpoint.thread_id)
        if not held:
            self._call("PUT", "/checkpoints", checkpoint)
            return
        try:
            self._send_with_writes(checkpoint, held, replace=False)
        except ConfigurationError:
            refused: ConfigurationError | None = None
            try:
                self._send_writes(held)
            except ConfigurationError as exc:
                refused = exc
            self._call("PUT", "/checkpoints", checkpoint)
            if refused is not None:
                raise refused from None

    def put_checkpoint_with_writes(
        self, checkpoint: CheckpointRecord, writes: Sequence[CheckpointWrite], *, replace: bool
    ) -> None:
        """See `Store.put_checkpoint_with_writes`: one request (held writes of the checkpoint's
        thread are sent first). A server without the endpoint gets two, writes first, so there
        the pair is not all or nothing."""
        dump_metadata(checkpoint.metadata)
        self._held.flush([checkpoint.thread_id])
        checkpoint = checkpoint.model_copy(update={"writes": []}) if checkpoint.writes else checkpoint
        self._send_with_writes(checkpoint, list(writes), replace=replace)

    def put_checkpoint_writes(self, writes: Sequence[CheckpointWrite], *, replace: bool, defer: bool = False) -> None:
        """See `Store.put_checkpoint_writes`. With ``defer`` (and not ``replace``) the writes are
        held for the thread's next checkpoint, at most ``hold_writes_for`` seconds."""
        if not writes or (defer and not replace and self._held.hold(writes)):
            return
        threads = dict.fromkeys(w.thread_id for w in writes)
        if replace:  # what was held was written before: it goes first
            self._held.flush(threads)
            self._send_writes(list(writes), replace=True)
        else:  # kept-if-present writes in one batch apply in order: the held ones are earlier
            self._send_writes([*(w for t in threads for w in self._held.take(t)), *writes])

    # ---- reads ----------------------------------------------------------------------------
    def get_checkpoint(
        self, thread_id: str, namespace: str = "", checkpoint_id: str | None = None
    ) -> CheckpointRecord | None:
        """See `Store.get_checkpoint` (the thread's held writes are sent first)."""
        self._held.flush([thread_id])
        params = {"thread_id": thread_id, "namespace": namespace}
        if checkpoint_id is not None:
            params["checkpoint_id"] = checkpoint_id
        return self._get("/checkpoints/find", wire.FoundCheckpoint, params).checkpoint

    def list_checkpoints(
        self,
        *,
        thread_id: str | None = None,
        namespace: str | None = None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        metadata: dict[str, JSON] | None = None,
        limit: int | None = None,
    ) -> list[CheckpointRecord]:
        """See `Store.list_checkpoints` (held writes of the thread, or of all threads, are sent first)."""
        check_limit(limit)
        metadata = load_filter(metadata)
        body = wire.ListCheckpoints(
            thread_id=thread_id, namespace=namespace, checkpoint_id=checkpoint_id, before=before,
            metadata=metadata, limit=limit,
        )  # fmt: skip
        self._held.flush(None if thread_id is None else [thread_id])
        return self._ask("POST", "/checkpoints/search", body, wire.CheckpointList).checkpoints

    # ---- deletes and copies -----------------------------------------------------------------
    def delete_checkpoints(self, thread_id: str) -> None:
        """See `Store.delete_checkpoints` (the thread's held writes are dropped: deleted anyway)."""
        self._held.take(thread_id)
        self._call("POST", "/checkpoints/delete", wire.DeleteCheckpoints(thread_id=thread_id))

    def delete_checkpoints_for_runs(self, run_ids: Sequence[str]) -> None:
        """See `Store.delete_checkpoints_for_runs` (every held write is sent first)."""
        body = wire.DeleteCheckpointsForRuns(run_ids=id_list(run_ids, "run_ids"))
        if body.run_ids:
            self._held.flush()
            self._call("POST", "/checkpoints/delete-for-runs", body)

    def copy_checkpoints(self, source_thread_id: str, target_thread_id: str) -> None:
        """See `Store.copy_checkpoints` (held writes of both threads are sent first)."""
        body = wire.CopyCheckpoints(source_thread_id=source_thread_id, target_thread_id=target_thread_id)
        self._held.flush([source_thread_id, target_thread_id])
        self._call("POST", "/checkpoints/copy", body)

    def prune_checkpoints(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """See `Store.prune_checkpoints` (held writes of the threads are sent first, or dropped
        when every checkpoint goes)."""
        body = wire.PruneCheckpoints(thread_ids=id_list(thread_ids, "thread_ids"), keep_latest=keep_latest)
        if not body.thread_ids:
            return
        if keep_latest:
            self._held.flush(body.thread_ids)
        else:
            for thread_id in body.thread_ids:
                self._held.take(thread_id)
        self._call("POST", "/checkpoints/prune", body)

