"""Conversions between LangGraph's checkpoint types and the Agentspan store's records.

The store only ever sees bytes (the saver's ``serde.dumps_typed`` output, with its type tag) and
JSON (the metadata); LangGraph objects are built back from them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    SerializerProtocol,
    get_checkpoint_metadata,
)

from agentspan.errors import ConfigurationError
from agentspan.records import CheckpointRecord, CheckpointWrite
from agentspan.secrets import looks_secret

__all__ = ["checkpoint_record", "config_for", "target", "to_tuple", "write_records"]


def target(config: RunnableConfig) -> tuple[str, str, str | None]:
    """Returns ``(thread_id, checkpoint_ns, checkpoint_id)`` of a config.

    ``thread_id`` is required (as text: LangGraph users often pass numbers); the namespace
    defaults to the root graph's ``""``; the checkpoint id is None when absent.

    Raises:
        ConfigurationError: ``config["configurable"]["thread_id"]`` is missing.
    """
    configurable = config.get("configurable") or {}
    thread_id = configurable.get("thread_id")
    if thread_id is None:
        raise ConfigurationError(
            "AgentspanSaver needs config['configurable']['thread_id'] (the conversation the "
            "checkpoints belong to), e.g. {'configurable': {'thread_id': 'user-42'}}"
        )
    return str(thread_id), str(configurable.get("checkpoint_ns") or ""), configurable.get("checkpoint_id") or None


def config_for(thread_id: str, namespace: str, checkpoint_id: str) -> RunnableConfig:
    """Returns the config that addresses one stored checkpoint."""
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": namespace, "checkpoint_id": checkpoint_id}}


def checkpoint_record(
    config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, serde: SerializerProtocol
) -> CheckpointRecord:
    """Serializes a checkpoint for `Store.put_checkpoint` (``SqliteSaver.put``'s layout: one blob
    holding the whole checkpoint, channel values included; JSON metadata; the parent from the
    config's ``checkpoint_id``; the run id from the metadata; no credential, `looks_secret`)."""
    thread_id, namespace, parent_id = target(config)
    type_, data = serde.dumps_typed(checkpoint)
    # LangGraph copies the config's string and number entries (``configurable``, ``metadata``) into
    # every checkpoint's metadata, credentials too (its own savers store them): those are left out.
    meta: dict[str, Any] = {key: value for key, value in get_checkpoint_metadata(config, metadata).items()
                            if key in metadata or not looks_secret(key)}
    run_id = meta.get("run_id")
    return CheckpointRecord(
        thread_id=thread_id,
        namespace=namespace,
        checkpoint_id=checkpoint["id"],
        parent_id=parent_id,
        type=type_,
        data=data,
        metadata=meta,
        run_id=None if run_id is None else str(run_id),
    )


def write_records(
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
    serde: SerializerProtocol,
) -> tuple[list[CheckpointWrite], bool]:
    """Serializes a task's writes for `Store.put_checkpoint_writes`.

    Returns the records and ``replace``: as in ``SqliteSaver``/``PostgresSaver``, a batch made only
    of special writes (error, interrupt, resume, scheduled: fixed negative indexes) replaces what is
    stored at those indexes; any other batch keeps existing writes (a task that runs again after a
    crash writes the same values again).

    Raises:
        ConfigurationError: The config names no checkpoint to attach the writes to.
    """
    thread_id, namespace, checkpoint_id = target(config)
    if checkpoint_id is None:
        raise ConfigurationError(
            "put_writes needs config['configurable']['checkpoint_id'] (the checkpoint the writes belong to)"
        )
    records = []
    for idx, (channel, value) in enumerate(writes):
        type_, data = serde.dumps_typed(value)
        records.append(
            CheckpointWrite(
                thread_id=thread_id,
                namespace=namespace,
                checkpoint_id=checkpoint_id,
                task_id=task_id,
                task_path=task_path,
                idx=WRITES_IDX_MAP.get(channel, idx),
                channel=channel,
                type=type_,
                data=data,
            )
        )
    return records, all(channel in WRITES_IDX_MAP for channel, _ in writes)


def to_tuple(
    record: CheckpointRecord, serde: SerializerProtocol, config: RunnableConfig | None = None
) -> CheckpointTuple:
    """Builds LangGraph's `CheckpointTuple` from a stored checkpoint.

    Args:
        record: The checkpoint, with its writes.
        serde: The saver's serializer.
        config: The caller's config when it named this very checkpoint (returned as given, as the
            reference savers do); otherwise a config addressing the record is built.
    """
    # The store returns writes in LangGraph's `writes_sort_key` order (task path, task id, index).
    pending: list[PendingWrite] = [(w.task_id, w.channel, serde.loads_typed((w.type, w.data))) for w in record.writes]
    return CheckpointTuple(
        config=config or config_for(record.thread_id, record.namespace, record.checkpoint_id),
        checkpoint=serde.loads_typed((record.type, record.data)),
        metadata=record.metadata,  # type: ignore[arg-type]  # JSON dict as stored
        parent_config=(config_for(record.thread_id, record.namespace, record.parent_id) if record.parent_id else None),
        pending_writes=pending,
    )
