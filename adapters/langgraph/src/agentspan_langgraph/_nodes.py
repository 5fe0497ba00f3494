"""Node executions in the trail: one ``checkpoint`` step per node that completed.

A LangGraph node is the unit LangGraph itself checkpoints: once a node has finished, its state
update is committed and a resumed run continues after it. Each finished node is therefore
journaled as a ``checkpoint``-kind step, keyed by its task's checkpoint namespace (the prefix of
the keys of the model and tool calls it made), named after the node, with the superstep as input
and the node's state update as output. The trail reads: the node's calls, then the node.

A node that fails or is interrupted records nothing; it runs again on resume and is recorded
when it finishes. A node is recorded once, even if a crash makes LangGraph run it again.
Observed through LangChain callbacks (observe-only is all a node record needs).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

import agentspan
from agentspan_langgraph._codec import to_json
from agentspan_langgraph._context import Invocation


class NodeRecorder(BaseCallbackHandler):
    """Journals every completed node of a durable run as a ``checkpoint`` step.

    Args:
        invocation: The invoke whose nodes are recorded (it also learns when a node starts).
        record: Journal the nodes (False: only tell the invocation when a node starts, which the
            keys of calls under a ``RetryPolicy`` need).
    """

    run_inline = True  # record in the node's own thread, in order with its calls
    raise_error = True  # a lost lease or a cancelled run must stop the graph, not be logged

    def __init__(self, invocation: Invocation, *, record: bool = True) -> None:
        self._invocation = invocation
        self._record = record
        self._open: dict[UUID, tuple[str, str, int | None]] = {}
        self._lock = threading.Lock()

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: list[str] | None = None,
                       metadata: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        metadata = metadata or {}
        node = metadata.get("langgraph_node")
        ns = metadata.get("langgraph_checkpoint_ns")
        step = metadata.get("langgraph_step")
        # The node's own run: named after the node and tagged with its superstep. Runnables
        # inside the node (branches, sequences) carry the same metadata under other names.
        if not node or not ns or kwargs.get("name") != node or f"graph:step:{step}" not in (tags or ()):
            return
        self._invocation.task_started(str(ns))
        if str(node).startswith("__") or not self._record:  # (__start__: LangGraph's own node)
            return
        with self._lock:
            self._open[run_id] = (str(ns), str(node), step)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            entry = self._open.pop(run_id, None)
        if entry is None:
            return
        ns, node, step = entry
        self._invocation.run.record(kind=agentspan.StepKind.CHECKPOINT, key=ns, name=node, input={"step": step},
                         output=to_json(outputs))

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._open.pop(run_id, None)
