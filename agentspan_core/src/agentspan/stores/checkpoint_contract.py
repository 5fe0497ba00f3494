"""The checkpoint part of the store contract (`Store` inherits it), for frameworks that keep
their own state (LangGraph's checkpointer, `AgentspanSaver`).

Unfenced: a checkpoint saver is called by the framework, outside any lease. Ids compare as
text (code point order) and sort in creation order, so the latest checkpoint of a namespace
has the greatest ``checkpoint_id``. ``data`` is kept byte for byte and never decoded;
``metadata`` must be JSON (finite numbers only), else `ConfigurationError` and nothing is
written. Writes are stored whether or not their checkpoint is (yet): LangGraph may store a
task's writes before the checkpoint they belong to. They go with their checkpoint when it is
deleted or pruned; only deleting the whole thread deletes writes of checkpoints not stored.

A store that keeps no checkpoints inherits these methods as they are: each raises `StoreError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentspan.errors import StoreError
from agentspan.records import JSON, CheckpointRecord, CheckpointWrite


class CheckpointContract:
    """`Store`'s checkpoint methods: unfenced, one transaction each."""

    def put_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Stores a checkpoint, replacing one with the same ``(thread_id, namespace,
        checkpoint_id)`` (its writes stay). ``checkpoint.writes`` is ignored.

        Raises:
            ConfigurationError: ``metadata`` is not JSON; nothing is written.
        """
        raise self._no_checkpoints()

    def put_checkpoint_writes(self, writes: Sequence[CheckpointWrite], *, replace: bool, defer: bool = False) -> None:
        """Stores pending writes (of one or more checkpoints) in one transaction, in order.

        A write is identified by ``(thread_id, namespace, checkpoint_id, task_id, idx)``. With
        ``replace`` an existing write with the same identity is overwritten (the framework's
        special writes: errors, interrupts); without, it is kept and the new one dropped (a task
        re-run after a crash writes the same values again). The same applies between writes of
        one batch: the last one wins with ``replace``, the first one without.

        With ``defer`` the caller lets the store hold the writes back for a moment and store them
        with the thread's next `put_checkpoint` (one round trip instead of two): the HTTP client
        does, for at most ``hold_writes_for`` seconds (a read or checkpoint put of the thread
        through the same store sends them first); embedded stores write at once. A caller passes
        it only for writes whose loss in a crash just makes their task run again, never for
        writes other processes must see at once (interrupts, errors).
        """
        raise self._no_checkpoints()

    def put_checkpoint_with_writes(
        self, checkpoint: CheckpointRecord, writes: Sequence[CheckpointWrite], *, replace: bool
    ) -> None:
        """Stores pending writes, then a checkpoint, in one transaction: `put_checkpoint_writes`
        followed by `put_checkpoint`, all or nothing. The writes may belong to any checkpoints
        (of any thread); ``checkpoint.writes`` is ignored.

        Raises:
            ConfigurationError: ``metadata`` is not JSON, or a record holds what the store cannot
                keep; nothing is written.
        """
        raise self._no_checkpoints()

    def get_checkpoint(
        self, thread_id: str, namespace: str = "", checkpoint_id: str | None = None
    ) -> CheckpointRecord | None:
        """Returns a checkpoint with its ``writes`` filled in: the one with ``checkpoint_id``, or
        the latest of the thread's namespace when it is None; None when there is none."""
        raise self._no_checkpoints()

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
        """Returns checkpoints with their ``writes``, newest (greatest id) first; checkpoints
        with the same id (copies in other threads or namespaces) by ``thread_id``, then
        ``namespace``, ascending.

        Args:
            thread_id: Only this thread's (all threads when None).
            namespace: Only this namespace (all namespaces when None).
            checkpoint_id: Only the checkpoint with this id.
            before: Only checkpoints whose id is less than this one.
            metadata: Only checkpoints whose metadata has each of these top-level keys equal to
                the given JSON value. Equal as JSON: objects whatever their key order, arrays
                element by element, numbers by value (``1`` equals ``1.0``), booleans only
                booleans (``true`` is not ``1``); ``None`` also matches a missing key. An empty
                filter matches every checkpoint.
            limit: At most this many (None: all).

        Raises:
            ConfigurationError: A negative ``limit``, or a ``metadata`` value that is not JSON.
        """
        raise self._no_checkpoints()

    def delete_checkpoints(self, thread_id: str) -> None:
        """Deletes every checkpoint and write of a thread (all namespaces). Unknown: no-op."""
        raise self._no_checkpoints()

    def delete_checkpoints_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints (and their writes) whose ``run_id`` is one of ``run_ids``, in
        every thread and namespace. Unknown ids: no-op.

        Raises:
            ConfigurationError: ``run_ids`` is a single string (not a sequence of ids).
        """
        raise self._no_checkpoints()

    def copy_checkpoints(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies every checkpoint and write of a thread (all namespaces, same ids, same fields
        but ``thread_id``) to another, in one transaction. A target checkpoint or write with the
        same identity is replaced; the target's others stay. Unknown source, or the source
        itself as target: no-op."""
        raise self._no_checkpoints()

    def prune_checkpoints(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """Deletes old checkpoints of the threads, in one transaction.

        With ``keep_latest``, every checkpoint of each ``(thread, namespace)`` but the latest, and
        exactly the writes of the checkpoints it deletes: the latest's writes stay, and so do
        writes of a checkpoint that is not stored (yet), which a live run may store before the
        checkpoint itself (they attach to it once it is put). Like LangGraph's ``PostgresSaver``.
        Without ``keep_latest``, every checkpoint and every write of the threads.

        Raises:
            ConfigurationError: ``thread_ids`` is a single string (not a sequence of ids).
        """
        raise self._no_checkpoints()

    def _no_checkpoints(self) -> StoreError:
        return StoreError(f"{type(self).__name__} does not keep checkpoints")
