"""`AgentspanSaver`: a LangGraph checkpointer that keeps checkpoints in the Agentspan store.

``builder.compile(checkpointer=AgentspanSaver())`` puts a graph's checkpoints next to Agentspan's
runs: in the embedded SQLite store under ``AGENTSPAN_HOME``, or on the Agentspan server when
``AGENTSPAN_SERVER_URL`` is set. Semantics are those of LangGraph's ``SqliteSaver`` (one blob per
checkpoint, JSON metadata, pending writes with special writes replacing their predecessors),
plus the extended operations ``delete_for_runs``, ``copy_thread`` and ``prune``.
"""

from __future__ import annotations

import asyncio
import builtins  # `list` in the class below is its method: annotations there say builtins.list
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_id,
)

import agentspan
from agentspan.errors import ConfigurationError
from agentspan.records import CheckpointRecord
from agentspan.stores.base import Store
from agentspan_langgraph import _patches
from agentspan_langgraph._records import checkpoint_record, config_for, target, to_tuple, write_records

__all__ = ["PRUNE_STRATEGIES", "URGENT_CHANNELS", "AgentspanSaver"]

PRUNE_STRATEGIES = ("keep_latest", "delete")
"""The strategies `AgentspanSaver.prune` knows (LangGraph's names)."""

_DELTA_MARKERS = ("counters_since_delta_snapshot", "delta_writes_versioned")
"""Metadata keys LangGraph (Python, JS) leaves on checkpoints whose DeltaChannels have unsnapshotted
updates: such a checkpoint's state needs its ancestors, so ``keep_latest`` must not drop them."""

URGENT_CHANNELS = frozenset({*WRITES_IDX_MAP, "__error_source_node__"})
"""Channels whose writes are stored at once, never held for the next checkpoint: LangGraph's
special writes (error, interrupt, resume, scheduled) and the failed node's name, which LangGraph
waits on before running an error handler (``ERROR_SOURCE_NODE``, a private constant)."""

_T = TypeVar("_T")


class AgentspanSaver(BaseCheckpointSaver[str]):
    """Stores LangGraph checkpoints and pending writes in an Agentspan `Store`.

    Args:
        store: The store to use. When None, the process's configured store
            (`agentspan.get_store`: the embedded SQLite store under ``AGENTSPAN_HOME``, or the
            server at ``AGENTSPAN_SERVER_URL``) is looked up on first use, not at construction.
        serde: The serializer of checkpoints and writes (LangGraph's ``JsonPlusSerializer`` by
            default). Its output is stored as opaque bytes with its type tag; metadata is JSON.
        runs: Each top-level ``invoke`` / ``ainvoke`` / ``stream`` / ``astream`` of a graph
            compiled with this saver is an Agentspan run: its model and tool calls journaled and
            replayed after a crash, its interrupts approvals (`agentspan_langgraph._direct`).
            False keeps the saver a checkpointer only.

    Every method has a sync and an async form. The async forms call the store inline when it is
    embedded (``store.blocking_io`` false: a call takes microseconds) and on a worker thread when
    it waits on the network.

    Example:
        ```python
        from agentspan_langgraph import AgentspanSaver

        graph = builder.compile(checkpointer=AgentspanSaver())
        graph.invoke({"messages": [...]}, {"configurable": {"thread_id": "user-42"}})
        ```
    """

    def __init__(self, store: Store | None = None, *, serde: SerializerProtocol | None = None,
                 runs: bool = True) -> None:
        super().__init__(serde=serde)
        if store is not None and not isinstance(store, Store):
            raise ConfigurationError(f"AgentspanSaver(store=...) needs an agentspan Store, not {type(store).__name__}")
        if not isinstance(runs, bool):
            raise ConfigurationError(f"AgentspanSaver(runs=...) takes True or False, not {runs!r}")
        self._store = store
        self.runs = runs
        """Whether direct invocations of its graphs are Agentspan runs."""
        if runs:
            _patches.install()
        self._store_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AgentspanSaver({self._store!r})" if self._store is not None else "AgentspanSaver(<configured store>)"

    @property
    def store(self) -> Store:
        """The store the checkpoints live in (the configured one is looked up on first use)."""
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = agentspan.get_store()
                store = self._store
        return store

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Runs a sync method for an async one: inline on an embedded store, else on a thread."""
        if self.store.blocking_io:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    # ---- reads ----------------------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Returns a checkpoint with its metadata, parent and pending writes.

        Args:
            config: ``configurable.thread_id`` and optionally ``checkpoint_ns`` (default ``""``)
                and ``checkpoint_id`` (default: the namespace's latest checkpoint).

        Returns:
            The checkpoint tuple, or None when there is no such checkpoint.
        """
        thread_id, namespace, checkpoint_id = target(config)
        record = self.store.get_checkpoint(thread_id, namespace, checkpoint_id)
        if record is None:
            return None
        return to_tuple(record, self.serde, config if checkpoint_id is not None else None)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Lists checkpoints, newest first.

        Args:
            config: Only this ``thread_id``'s, and only its ``checkpoint_ns`` and
                ``checkpoint_id`` when given; None lists every thread's.
            filter: Only checkpoints whose metadata has each key equal to the given value.
            before: Only checkpoints older than this config's ``checkpoint_id``.
            limit: At most this many (none when it is 0 or less).

        Yields:
            Checkpoint tuples with their pending writes.
        """
        for record in self._list_records(config, filter=filter, before=before, limit=limit):
            yield to_tuple(record, self.serde)

    def _list_records(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> builtins.list[CheckpointRecord]:
        if limit is not None and limit <= 0:
            return []
        thread_id = namespace = checkpoint_id = None
        if config is not None:
            thread_id, _, checkpoint_id = target(config)
            namespace = config["configurable"].get("checkpoint_ns")  # None: every namespace
        return self.store.list_checkpoints(
            thread_id=thread_id,
            namespace=namespace,
            checkpoint_id=checkpoint_id,
            before=get_checkpoint_id(before) if before else None,
            metadata=filter or None,
            limit=limit,
        )

    # ---- writes ---------------------------------------------------------------------------
    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Stores a checkpoint (replacing one with the same id), its parent being the config's
        ``checkpoint_id``.

        Args:
            config: ``thread_id``, ``checkpoint_ns`` and the parent ``checkpoint_id``.
            checkpoint: The checkpoint, stored whole (channel values included).
            metadata: Its metadata (stored as JSON with the config's metadata added, as LangGraph's
                savers do); ``run_id`` in it tags the checkpoint for `delete_for_runs`.
            new_versions: Unused: every checkpoint carries all its channel values.

        Returns:
            The config addressing the stored checkpoint.

        Raises:
            ConfigurationError: The config has no ``thread_id``, or the metadata is not JSON.
        """
        record = checkpoint_record(config, checkpoint, metadata, self.serde)
        self.store.put_checkpoint(record)
        return config_for(record.thread_id, record.namespace, record.checkpoint_id)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Stores a task's pending writes against the config's checkpoint, in one transaction.

        A write already stored at the same ``(task_id, index)`` is kept, unless the batch is
        made of special writes only (error, interrupt, resume, scheduled), which replace it.

        Through a server the writes may travel with the thread's next checkpoint (at most 0.2 s
        later: `Store.put_checkpoint_writes` with ``defer``), unless they are on one of
        `URGENT_CHANNELS` (an interrupt, an error), which other processes must see at once.

        Args:
            config: The checkpoint the writes belong to (``checkpoint_id`` required).
            writes: ``(channel, value)`` pairs.
            task_id: The task that wrote them.
            task_path: The task's path (orders writes of one super-step on reads).
        """
        if not writes:
            return
        records, replace = write_records(config, writes, task_id, task_path, self.serde)
        urgent = replace or any(channel in URGENT_CHANNELS for channel, _ in writes)
        self.store.put_checkpoint_writes(records, replace=replace, defer=not urgent)

    # ---- deletes and copies ---------------------------------------------------------------
    def delete_thread(self, thread_id: str) -> None:
        """Deletes every checkpoint and write of a thread (all namespaces). Unknown: no-op."""
        self.store.delete_checkpoints(str(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints (and their writes) that the given runs saved.

        A run is identified by the ``run_id`` LangGraph puts in each checkpoint's metadata.

        Raises:
            ConfigurationError: ``run_ids`` is a single string rather than a sequence.
        """
        ids = _ids(run_ids, "run_ids")
        if ids:
            self.store.delete_checkpoints_for_runs(ids)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies every checkpoint and write of a thread (all namespaces, same ids, whole parent
        chains) to another thread. A missing source copies nothing."""
        self.store.copy_checkpoints(str(source_thread_id), str(target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Deletes old checkpoints of threads.

        Args:
            thread_ids: The threads to prune.
            strategy: ``"keep_latest"`` keeps the latest checkpoint of each namespace, with its
                pending writes; ``"delete"`` deletes every checkpoint of the threads.

        Raises:
            ConfigurationError: Unknown strategy; ``thread_ids`` is a single string; or, with
                ``"keep_latest"``, a thread's latest root checkpoint still depends on older ones
                (a DeltaChannel updated since its last snapshot): nothing is pruned then.
        """
        if strategy not in PRUNE_STRATEGIES:
            raise ConfigurationError(f"unknown prune strategy {strategy!r}: expected one of {PRUNE_STRATEGIES}")
        ids = _ids(thread_ids, "thread_ids")
        if not ids:
            return
        keep_latest = strategy == "keep_latest"
        if keep_latest:
            self._refuse_delta_threads(ids)
        self.store.prune_checkpoints(ids, keep_latest=keep_latest)

    def _refuse_delta_threads(self, thread_ids: builtins.list[str]) -> None:
        dependent = []
        for thread_id in thread_ids:
            latest = self.store.get_checkpoint(thread_id)
            if latest is not None and any(latest.metadata.get(key) for key in _DELTA_MARKERS):
                dependent.append(thread_id)
        if dependent:
            raise ConfigurationError(
                "prune(strategy='keep_latest') would cut the state of threads whose latest checkpoint "
                f"rebuilds a DeltaChannel from older ones: {', '.join(dependent)}; nothing was pruned"
            )

    # ---- async forms ----------------------------------------------------------------------
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async `get_tuple`."""
        return await self._call(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async `list`."""
        records = await self._call(self._list_records, config, filter=filter, before=before, limit=limit)
        for record in records:
            yield to_tuple(record, self.serde)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async `put`."""
        return await self._call(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async `put_writes`."""
        await self._call(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async `delete_thread`."""
        await self._call(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async `delete_for_runs`."""
        await self._call(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async `copy_thread`."""
        await self._call(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async `prune`."""
        await self._call(self.prune, thread_ids, strategy=strategy)

    # ---- versions -------------------------------------------------------------------------
    def get_next_version(self, current: str | None, channel: None) -> str:
        """Returns the next channel version: ``"<counter:032>.<random:016>"``, increasing, as
        LangGraph's ``InMemorySaver``/``SqliteSaver``/``PostgresSaver`` make them (so their
        checkpoints and this saver's compare alike)."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"


def _ids(values: Sequence[str], name: str) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise ConfigurationError(f"{name} must be a sequence of ids, not a single {type(values).__name__}: {values!r}")
    return [str(v) for v in values]
