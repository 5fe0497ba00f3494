"""Checkpoint storage of the in-memory store (`MemoryCheckpoints`, a mixin of `MemoryStore`).

Checkpoints are nested by thread, namespace and id, writes by thread, ``(namespace, checkpoint id)``
and ``(task_id, idx)``; every call holds the store's one lock. Metadata goes in through a JSON
round trip and comes out deep-copied; ``data`` is immutable ``bytes``. Text holding a lone surrogate
in an id, a name or a type is refused (`utf8_only`), to store or to look up by, as SQLite refuses it;
in metadata, a JSON value, it is kept, as SQLite keeps it.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Sequence

from agentspan.records import JSON, CheckpointRecord, CheckpointWrite
from agentspan.stores.checkpoint_rules import (
    check_limit,
    dump_metadata,
    id_list,
    load_filter,
    metadata_matches,
    write_sort_key,
)
from agentspan.stores.memory_approvals import utf8_only

__all__ = ["MemoryCheckpoints"]

_Namespaces = dict[str, dict[str, CheckpointRecord]]
"""A thread's checkpoints: namespace -> checkpoint id -> checkpoint."""
_Writes = dict[tuple[str, str], dict[tuple[str, int], CheckpointWrite]]
"""A thread's pending writes: (namespace, checkpoint id) -> (task id, idx) -> write."""


def _check_writes(writes: Sequence[CheckpointWrite]) -> None:
    """Refuses (`utf8_only`) a batch of writes any of whose texts holds a lone surrogate, before
    any is stored: SQLite stores none of such a batch."""
    for w in writes:
        utf8_only(w.thread_id, w.namespace, w.checkpoint_id, w.task_id, w.task_path, w.channel, w.type)


class MemoryCheckpoints:
    """The checkpoint methods of `MemoryStore`, which creates the attributes below."""

    _lock: threading.Lock
    _checkpoints: dict[str, _Namespaces]
    """thread id -> its checkpoints."""
    _cp_writes: dict[str, _Writes]
    """thread id -> its pending writes."""

    # ---- checkpoints ----------------------------------------------------------------------
    def _checkpoint_out(self, checkpoint: CheckpointRecord) -> CheckpointRecord:
        """A copy of a stored checkpoint with its writes (called with the lock held)."""
        batch = self._cp_writes.get(checkpoint.thread_id, {}).get((checkpoint.namespace, checkpoint.checkpoint_id))
        writes = [] if not batch else [w.model_copy() for w in sorted(batch.values(), key=write_sort_key)]
        return checkpoint.model_copy(update={"metadata": copy.deepcopy(checkpoint.metadata), "writes": writes})

    def put_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """See `Store.put_checkpoint`."""
        self.put_checkpoint_with_writes(checkpoint, (), replace=False)

    def put_checkpoint_writes(self, writes: Sequence[CheckpointWrite], *, replace: bool, defer: bool = False) -> None:
        """See `Store.put_checkpoint_writes` (``defer`` changes nothing here)."""
        _check_writes(writes)
        copies = [w.model_copy() for w in writes]
        with self._lock:
            self._store_writes(copies, replace)

    def put_checkpoint_with_writes(
        self, checkpoint: CheckpointRecord, writes: Sequence[CheckpointWrite], *, replace: bool
    ) -> None:
        """See `Store.put_checkpoint_with_writes` (under the lock: all at once)."""
        utf8_only(checkpoint.thread_id, checkpoint.namespace, checkpoint.checkpoint_id, checkpoint.parent_id,
                  checkpoint.type, checkpoint.run_id)
        _check_writes(writes)
        metadata = json.loads(dump_metadata(checkpoint.metadata))
        stored = checkpoint.model_copy(update={"metadata": metadata, "writes": []})
        copies = [w.model_copy() for w in writes]
        with self._lock:
            self._store_writes(copies, replace)
            namespaces = self._checkpoints.setdefault(stored.thread_id, {})
            namespaces.setdefault(stored.namespace, {})[stored.checkpoint_id] = stored

    def _store_writes(self, writes: list[CheckpointWrite], replace: bool) -> None:
        """Stores copies of writes (called with the lock held)."""
        for write in writes:
            thread = self._cp_writes.setdefault(write.thread_id, {})
            batch = thread.setdefault((write.namespace, write.checkpoint_id), {})
            key = (write.task_id, write.idx)
            if replace or key not in batch:
                batch[key] = write

    def get_checkpoint(
        self, thread_id: str, namespace: str = "", checkpoint_id: str | None = None
    ) -> CheckpointRecord | None:
        """See `Store.get_checkpoint`."""
        utf8_only(thread_id, namespace, checkpoint_id)
        with self._lock:
            by_id = self._checkpoints.get(thread_id, {}).get(namespace)
            if not by_id:
                return None
            found = by_id.get(checkpoint_id) if checkpoint_id is not None else by_id[max(by_id)]
            return None if found is None else self._checkpoint_out(found)

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
        """See `Store.list_checkpoints`."""
        check_limit(limit)
        utf8_only(thread_id, namespace, checkpoint_id, before)  # (not the metadata filter: JSON, as SQLite)
        wanted = load_filter(metadata)
        with self._lock:
            threads = list(self._checkpoints) if thread_id is None else [thread_id]
            found = [
                checkpoint
                for thread in threads
                for ns, by_id in self._checkpoints.get(thread, {}).items()
                if namespace is None or ns == namespace
                for cp_id, checkpoint in by_id.items()
                if (checkpoint_id is None or cp_id == checkpoint_id)
                and (before is None or cp_id < before)
                and metadata_matches(checkpoint.metadata, wanted)
            ]
            found.sort(key=lambda c: (c.thread_id, c.namespace))
            found.sort(key=lambda c: c.checkpoint_id, reverse=True)  # stable: ties keep the order above
            return [self._checkpoint_out(c) for c in (found if limit is None else found[:limit])]

    def delete_checkpoints(self, thread_id: str) -> None:
        """See `Store.delete_checkpoints`."""
        utf8_only(thread_id)
        with self._lock:
            self._checkpoints.pop(thread_id, None)
            self._cp_writes.pop(thread_id, None)

    def delete_checkpoints_for_runs(self, run_ids: Sequence[str]) -> None:
        """See `Store.delete_checkpoints_for_runs`."""
        doomed = set(id_list(run_ids, "run_ids"))
        if not doomed:
            return
        with self._lock:
            for thread, namespaces in self._checkpoints.items():
                writes = self._cp_writes.get(thread, {})
                for ns, by_id in namespaces.items():
                    for cp_id in [i for i, c in by_id.items() if c.run_id in doomed]:
                        del by_id[cp_id]
                        writes.pop((ns, cp_id), None)

    def copy_checkpoints(self, source_thread_id: str, target_thread_id: str) -> None:
        """See `Store.copy_checkpoints`."""
        if source_thread_id == target_thread_id:
            return
        utf8_only(source_thread_id, target_thread_id)
        with self._lock:
            source = self._checkpoints.get(source_thread_id)
            if source:
                target = self._checkpoints.setdefault(target_thread_id, {})
                for ns, by_id in source.items():
                    target_ns = target.setdefault(ns, {})
                    for cp_id, checkpoint in by_id.items():
                        target_ns[cp_id] = checkpoint.model_copy(
                            update={"thread_id": target_thread_id, "metadata": copy.deepcopy(checkpoint.metadata)}
                        )
            source_writes = self._cp_writes.get(source_thread_id)
            if source_writes:
                target_writes = self._cp_writes.setdefault(target_thread_id, {})
                for key, batch in source_writes.items():
                    target_batch = target_writes.setdefault(key, {})
                    for write_key, write in batch.items():
                        target_batch[write_key] = write.model_copy(update={"thread_id": target_thread_id})

    def prune_checkpoints(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """See `Store.prune_checkpoints`."""
        threads = id_list(thread_ids, "thread_ids")
        with self._lock:
            for thread in threads:
                if not keep_latest:
                    self._checkpoints.pop(thread, None)
                    self._cp_writes.pop(thread, None)
                    continue
                writes = self._cp_writes.get(thread, {})
                for ns, by_id in self._checkpoints.get(thread, {}).items():
                    latest = max(by_id, default=None)
                    for cp_id in [i for i in by_id if i != latest]:
                        del by_id[cp_id]
                        writes.pop((ns, cp_id), None)
