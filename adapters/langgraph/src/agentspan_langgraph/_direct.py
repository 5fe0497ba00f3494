"""Graphs invoked directly with an `AgentspanSaver`: each invocation is an Agentspan run.

``graph = builder.compile(checkpointer=AgentspanSaver())`` and then ``graph.invoke`` /
``ainvoke`` / ``stream`` / ``astream`` as before: every top-level invocation on a thread opens an
Agentspan run (framework ``langgraph``, agent the graph's name, session the thread id), so its
model and tool calls are journaled and replayed after a crash, and it is listed, traced, approved
and retried like a run of ``agentspan.run(graph, ...)``. Unlike ``agentspan.run``, it does not
journal each finished node as a ``checkpoint`` step: the thread's checkpoints hold them
(``graph.get_state_history``), and a step write per node would add a commit to every super-step:

- **New input** opens a new run. An unfinished run the thread's latest checkpoint belongs to
  (its process died, or it waits on an interrupt) is claimed and ended ``cancelled``
  ("superseded"; its approvals still pending expire): LangGraph starts from the new input, not
  from where that run stopped. A run
  still executing (in another live process, or in this one: a stream not yet exhausted or closed)
  is not taken: the invocation fails with `LeaseLostError`.
- **``None`` or ``Command(resume=...)``** continues the unfinished run of the thread's latest
  checkpoint (claimed from a dead owner, or from ``waiting``): LangGraph restarts at the node that
  had not finished and the journal replays the model and tool calls that node had made. With
  ``None`` and interrupts decided in Agentspan (``handle.approve()``, the CLI, the web UI, Slack),
  the graph resumes with those decisions, as under ``agentspan.run``. With the application's own
  ``Command(resume=value)``, LangGraph delivers ``value``; the interrupts' approvals still pending
  are closed as decided by ``"langgraph"`` (rejected only when ``value`` is ``False`` or a dict whose
  ``"approved"`` is ``False``). On a thread with no unfinished run and no task left (it finished,
  or has no checkpoint), ``None`` or a bare ``Command(resume=...)`` is no run: LangGraph runs no
  node and answers as it would without Agentspan (`DirectRun.runs_nothing`).
- **Endings.** Returned: ``completed`` (output: the graph's values as JSON), or ``waiting`` with an
  approval per pending interrupt (the caller still gets LangGraph's ``__interrupt__``). An error:
  ``failed``; `ApprovalPending` from an ``@agentspan.tool(approval_required=True)`` tool:
  ``waiting`` (the signal reaches the caller); anything else (a stream closed early, Ctrl-C): the
  lease is given back and the next ``None`` invocation continues the run.

Invocations default to ``durability="sync"`` (as ``agentspan.run``): journal keys come from the
checkpoint a task started from, and a checkpoint written late may be lost in a crash. Not opened
as runs: subgraph invocations (their calls belong to the parent's run), time travel (a
``checkpoint_id`` in the config), and graphs whose saver was made with ``runs=False``.

The run's contextvars live in a context of their own, entered for each step of the invocation
(``Context.run`` for the sync forms, a task created in it for the async ones), so nothing leaks
into the caller's context between the chunks of a stream.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config
from langgraph.pregel import Pregel
from langgraph.types import Command, GraphOutput, Interrupt

import agentspan
from agentspan import approvals, attached
from agentspan.attached import AttachedRun
from agentspan.errors import ApprovalPending, LeaseLostError, RunNotFound
from agentspan.records import Run, RunStatus
from agentspan.stores.base import Store, call_store
from agentspan_langgraph import _context
from agentspan_langgraph._adapter import RUN_ID_METADATA, LangGraphAdapter, graph_name, with_recorder
from agentspan_langgraph._approvals import ANSWER, pending_interrupts, resume_command, step_key
from agentspan_langgraph._codec import from_json, to_json
from agentspan_langgraph.saver import AgentspanSaver

_adapter = LangGraphAdapter()


class DirectRun:
    """One top-level invocation of a graph whose checkpointer is an `AgentspanSaver`."""

    def __init__(self, graph: Pregel, saver: AgentspanSaver, input: Any, config: RunnableConfig,
                 thread_id: str, rest: dict[str, Any]) -> None:
        self.graph = graph
        self.saver = saver
        self.store: Store = saver.store
        self.input = input
        self.thread_id = thread_id
        self.rest = rest
        """The invocation's other keyword arguments (``durability`` defaulted to ``"sync"``)."""
        self._user_config = config
        self.payload: Any = input
        self.config: RunnableConfig = config
        self.attached: AttachedRun | None = None
        self.continued = False
        """The invocation continues the thread's unfinished run (``None`` or a ``Command``)."""
        self.refused = False
        """The invocation's ``Command(resume=...)`` names no interrupt of several (LangGraph refuses it)."""

    # ---- opening (store work, any thread) -------------------------------------------------
    def open(self) -> bool:
        """Opens the invocation's run: continues the thread's unfinished run or creates one.

        Returns:
            False when the invocation is no run and nothing was opened: it continues a thread that
            has no unfinished run and nothing left to run (`runs_nothing`), so LangGraph runs no
            node and returns the thread's state as it is (was: an empty ``completed`` run).
        """
        previous = self._unfinished_previous()
        if previous is None and self.runs_nothing():
            return False
        continues = self.input is None or isinstance(self.input, Command)
        if previous is not None:
            here = attached.attached_here(previous.id)
            if here is not None and not here.ended:
                raise LeaseLostError(
                    f"run {previous.id!r} of thread {self.thread_id!r} is still executing in this process (an "
                    "invoke or stream of this thread that has not ended): finish or close it first")
            claimed = attached.take_over(self.store, previous)
            if continues:
                self.attached = attached.attach(self.store, claimed)
                self.continued = True
                return True
            run_id = claimed.id
            self.store.update_run(run_id, epoch=claimed.lease_epoch, status=RunStatus.CANCELLED, release_lease=True,
                                  error=f"superseded: thread {self.thread_id!r} was invoked with a new input")
        options = _adapter.encode_options({"thread_id": self.thread_id, "config": self._user_config,
                                           "durability": self.rest.get("durability"),
                                           "context": self.rest.get("context")})
        run = attached.new_run(framework=_adapter.framework, agent=graph_name(self.graph), input=to_json(self.input),
                               options=options, session_id=self.thread_id)
        stored, _ = self.store.create_run(run)
        self.attached = attached.attach(self.store, stored, fresh=True)
        return True

    def runs_nothing(self) -> bool:
        """Whether LangGraph runs no node for this invocation: it brings nothing new (``None``, or a
        ``Command`` that only answers interrupts) and the thread's state has no task left (the
        thread finished; or it has no checkpoint, where LangGraph raises ``EmptyInputError``).

        Asked only when the thread has no unfinished run, so it costs a continued run nothing.
        """
        given = self.input
        if given is not None and not (isinstance(given, Command) and given.update is None and not given.goto
                                      and given.graph is None):
            return False
        return not self.graph.get_state(self._user_config).next

    def _unfinished_previous(self) -> Run | None:
        """The thread's run an invocation continues (or supersedes): the one its newest checkpoint
        names, else the thread's newest run (a run may write no checkpoint of its own: one that
        only interrupted in its first step, or one an ``update_state`` checkpoint came after)."""
        record = self.store.get_checkpoint(self.thread_id, "", None)
        # no checkpoint: a new thread, or one whose only run wrote none (``durability="exit"``,
        # a crash before the end)
        run_id = record.metadata.get(RUN_ID_METADATA) if record is not None else None
        if isinstance(run_id, str):
            try:
                run = self.store.get_run(run_id)
            except RunNotFound:  # pruned, or deleted: the thread goes on without it
                pass
            else:
                if not run.status.terminal:
                    return run
        newest = next((run for run in self.store.list_runs(session_id=self.thread_id, limit=5)
                       if run.framework == _adapter.framework), None)
        return None if newest is None or newest.status.terminal else newest

    # ---- inside the invocation's context --------------------------------------------------
    def enter(self) -> None:
        """Activates the run in the current context (the invocation's own) and builds its config."""
        assert self.attached is not None
        active = self.attached.active
        active.activate()
        invocation = _context.Invocation(active)
        _context.begin(invocation)
        config: dict[str, Any] = dict(self._user_config)
        config["metadata"] = {**(config.get("metadata") or {}), RUN_ID_METADATA: self.attached.run_id}
        # Nodes are not journaled here: the thread's checkpoints hold them, and a step write per
        # node would add a commit to every super-step of the graph (`agentspan.run` records them).
        config["callbacks"] = with_recorder(config.get("callbacks"), invocation, record=False)
        self.config = RunnableConfig(**config)  # type: ignore[typeddict-item]

    def resume_payload(self, snapshot: Any) -> None:
        """For a continued run: Agentspan's decisions instead of ``None``, or the approvals the
        application's own ``Command(resume=...)`` answers closed."""
        if not self.continued:
            return
        pending = list(pending_interrupts(snapshot))
        assert self.attached is not None
        if not pending:
            if isinstance(self.input, Command) and self.input.resume is not None:
                _close_superseded(self.attached.active, self.input.resume)
            elif self.input is None and not snapshot.next and not self._input_taken():
                self.payload = self._stored_input()
            return
        if self.input is None:
            try:
                self.payload = resume_command(self.attached.active, snapshot)
            except ApprovalPending:
                pass  # still undecided: LangGraph runs the node again and it interrupts again
            return
        if isinstance(self.input, Command) and self.input.resume is not None:
            if len(pending) > 1 and not _per_interrupt(pending, self.input.resume):
                self.refused = True  # LangGraph refuses it before running anything: the run still waits
                return
            _close_answered(self.attached.active, pending, self.input.resume)

    def _input_taken(self) -> bool:
        """Whether the continued run gave its input to the thread (a checkpoint carries its id).
        One that died under ``durability="exit"`` wrote none: it starts again from its input."""
        assert self.attached is not None
        config = RunnableConfig(configurable={"thread_id": self.thread_id})
        found = self.saver.list(config, filter={RUN_ID_METADATA: self.attached.run_id}, limit=1)
        return next(iter(found), None) is not None

    def _stored_input(self) -> Any:
        """The continued run's own input, as its first invocation gave it (None if it had none)."""
        assert self.attached is not None
        stored = self.attached.active.run.input
        payload = from_json(stored) if stored is not None else None
        return None if isinstance(payload, Command) else payload

    def ended(self, interrupted: bool, values: Any) -> None:
        """Records the invocation's end: ``waiting`` on its interrupts, else ``completed``."""
        assert self.attached is not None
        if interrupted:
            self.attached.suspend()
        else:
            self.attached.complete(to_json(values.value if isinstance(values, GraphOutput) else values))

    def request_approvals(self, snapshot: Any) -> bool:
        """Gives every pending interrupt an approval; whether the graph waits on any."""
        assert self.attached is not None
        try:
            return resume_command(self.attached.active, snapshot) is not None
        except ApprovalPending:
            return True

    def failed(self, exc: BaseException) -> None:
        """Records how the invocation stopped on ``exc`` (see the module)."""
        assert self.attached is not None
        if isinstance(exc, ApprovalPending) or self.refused:
            self.attached.suspend()
        elif isinstance(exc, Exception) and not isinstance(exc, LeaseLostError):
            self.attached.fail(exc)
        else:
            self.attached.end_after_error(exc)


def _close_superseded(run: agentspan.ActiveRun, resume: Any) -> None:
    """A ``Command(resume=...)`` when the graph's state shows no pending interrupt (an
    ``update_state`` came after it, so the node asks again and LangGraph hands it this value):
    the one interrupt approval the run still waits on is answered by it."""
    waiting = [a for a in approvals.pending_for_run(run.store, run.run_id) if a.step_key.startswith("interrupt:")]
    if len(waiting) != 1:
        return  # none, or several: which one the value answers is not known
    (approval,) = waiting
    approvals.answered(run, key=approval.step_key, tool=approval.tool, args=approval.args,
                       approved=_approves(resume), by="langgraph",
                       reason="answered by the application with Command(resume=...) after an update of the state",
                       note={ANSWER: to_json(resume)})


def _approves(value: Any) -> bool:
    """Whether an application's resume value approves (anything but ``False`` or ``{"approved": False}``)."""
    return not (value is False or (isinstance(value, dict) and value.get("approved") is False))


def _per_interrupt(pending: list[tuple[str, Interrupt]], resume: Any) -> bool:
    """Whether ``resume`` answers interrupts by their ids."""
    return isinstance(resume, dict) and bool(resume) and set(resume) <= {interrupt.id for _, interrupt in pending}


def _close_answered(run: agentspan.ActiveRun, pending: list[tuple[str, Interrupt]], resume: Any) -> None:
    """Closes the approvals of the interrupts the application answered itself (`approvals.answered`)."""
    per_id = _per_interrupt(pending, resume)
    for node, interrupt in pending:
        if per_id and interrupt.id not in resume:
            continue
        value = resume[interrupt.id] if per_id else resume
        approvals.answered(run, key=step_key(interrupt), tool=node, args=to_json(interrupt.value),
                           approved=_approves(value), by="langgraph",
                           reason="answered by the application with Command(resume=...)",
                           note={ANSWER: to_json(value)})


# ---- when an invocation is a direct run ------------------------------------------------------
def plan(graph: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> DirectRun | None:
    """The direct run of ``graph.invoke(*args, **kwargs)`` (or stream...), None to pass through."""
    saver = getattr(graph, "checkpointer", None)
    if not isinstance(saver, AgentspanSaver) or not saver.runs:
        return None
    if agentspan.active_run() is not None:
        return None  # inside agentspan.run, or a graph invoked inside a run's node or tool
    input = args[0] if args else kwargs.get("input")
    config = args[1] if len(args) > 1 else kwargs.get("config")
    configurable = ensure_config(config).get("configurable") or {}
    if configurable.get("checkpoint_ns") or any(str(name).startswith("__pregel_") for name in configurable):
        return None  # a subgraph inside a graph's task
    thread_id = configurable.get("thread_id")
    if thread_id is None:
        return None  # LangGraph's own error tells what is missing
    if configurable.get("checkpoint_id"):
        if not _latest(saver, thread_id, configurable["checkpoint_id"]):
            return None  # time travel: a fork from an earlier checkpoint
        # the thread's latest checkpoint (``graph.get_state(thread).config``, as LangGraph's docs
        # resume with): the same as the thread itself, so the same run goes on
        config = {**(config or {}), "configurable": {k: v for k, v in configurable.items() if k != "checkpoint_id"}}
    rest = {k: v for k, v in kwargs.items() if k not in ("input", "config")}
    if rest.get("durability") is None:
        rest["durability"] = "sync"
    return DirectRun(graph, saver, input, RunnableConfig(**(config or {})), str(thread_id), rest)


def _latest(saver: AgentspanSaver, thread_id: Any, checkpoint_id: Any) -> bool:
    """Whether ``checkpoint_id`` is the latest checkpoint of thread ``thread_id``'s root graph (the
    stored record's id; nothing deserialized). One store read, made only for an invocation that
    names a checkpoint (with a store on the network, in the caller's thread or loop, as LangGraph's
    own ``get_state`` is)."""
    latest = saver.store.get_checkpoint(str(thread_id), "", None)
    return latest is not None and latest.checkpoint_id == checkpoint_id


def _interrupted(result: Any) -> bool | None:
    """Whether what ``invoke`` returned says the graph stopped at an interrupt; None when it
    cannot say (the chunks a ``stream_mode`` other than ``"values"`` returns: the state tells)."""
    if isinstance(result, dict):
        return bool(result.get("__interrupt__"))
    if hasattr(result, "interrupts"):  # version="v2"
        return bool(result.interrupts)
    return None


# ---- the four entry points -------------------------------------------------------------------
def invoke(direct: DirectRun, call: Callable[..., Any]) -> Any:
    """``graph.invoke`` as a direct run; ``call(input, config, **rest)`` is LangGraph's."""
    context = contextvars.copy_context()
    if not direct.open():
        return call(direct.payload, direct.config, **direct.rest)  # no run: LangGraph's own answer
    try:
        context.run(direct.enter)
        if direct.continued:
            context.run(direct.resume_payload, direct.graph.get_state(direct.config))
        result = context.run(call, direct.payload, direct.config, **direct.rest)
        told, output = _interrupted(result), result
        if told is not False:
            snapshot = direct.graph.get_state(direct.config)
            interrupted = context.run(direct.request_approvals, snapshot)
            output = result if told else snapshot.values
        else:
            interrupted = False
    except BaseException as exc:
        context.run(direct.failed, exc)
        raise
    context.run(direct.ended, interrupted, output)
    return result


async def ainvoke(direct: DirectRun, call: Callable[..., Coroutine[Any, Any, Any]]) -> Any:
    """``graph.ainvoke`` as a direct run."""
    context = contextvars.copy_context()
    if not await asyncio.to_thread(direct.open):  # may wait for another owner's lease
        return await call(direct.payload, direct.config, **direct.rest)  # no run: LangGraph's own answer
    try:
        context.run(direct.enter)
        if direct.continued:
            snapshot = await _in(context, direct.graph.aget_state(direct.config))
            await call_store(direct.store, context.run, direct.resume_payload, snapshot)
        result = await _in(context, call(direct.payload, direct.config, **direct.rest))
        told, output = _interrupted(result), result
        if told is not False:
            snapshot = await _in(context, direct.graph.aget_state(direct.config))
            interrupted = await call_store(direct.store, context.run, direct.request_approvals, snapshot)
            output = result if told else snapshot.values
        else:
            interrupted = False
    except BaseException as exc:
        await call_store(direct.store, context.run, direct.failed, exc)
        raise
    await call_store(direct.store, context.run, direct.ended, interrupted, output)
    return result


def stream(direct: DirectRun, call: Callable[..., Iterator[Any]]) -> Iterator[Any]:
    """``graph.stream`` as a direct run: LangGraph's chunks as they come."""
    context = contextvars.copy_context()
    if not direct.open():
        yield from call(direct.payload, direct.config, **direct.rest)  # no run: LangGraph's own chunks
        return
    chunks: Iterator[Any] | None = None
    try:
        context.run(direct.enter)
        if direct.continued:
            context.run(direct.resume_payload, direct.graph.get_state(direct.config))
        chunks = context.run(call, direct.payload, direct.config, **direct.rest)
        while True:
            try:
                chunk = context.run(next, chunks)
            except StopIteration:
                break
            yield chunk
        snapshot = direct.graph.get_state(direct.config)
        interrupted = context.run(direct.request_approvals, snapshot)
    except BaseException as exc:
        if isinstance(exc, GeneratorExit) and chunks is not None:
            context.run(getattr(chunks, "close", lambda: None))
        context.run(direct.failed, exc)
        raise
    context.run(direct.ended, interrupted, snapshot.values)


async def astream(direct: DirectRun, call: Callable[..., AsyncIterator[Any]]) -> AsyncIterator[Any]:
    """``graph.astream`` as a direct run: each step of LangGraph's stream runs in the run's context."""
    context = contextvars.copy_context()
    if not await asyncio.to_thread(direct.open):  # may wait for another owner's lease
        async for chunk in call(direct.payload, direct.config, **direct.rest):  # no run: LangGraph's own chunks
            yield chunk
        return
    chunks: AsyncIterator[Any] | None = None
    try:
        context.run(direct.enter)
        if direct.continued:
            snapshot = await _in(context, direct.graph.aget_state(direct.config))
            await call_store(direct.store, context.run, direct.resume_payload, snapshot)
        chunks = context.run(call, direct.payload, direct.config, **direct.rest)
        while True:
            try:
                chunk = await _in(context, chunks.__anext__())
            except StopAsyncIteration:
                break
            yield chunk
        snapshot = await _in(context, direct.graph.aget_state(direct.config))
        interrupted = await call_store(direct.store, context.run, direct.request_approvals, snapshot)
    except BaseException as exc:
        if isinstance(exc, GeneratorExit) and chunks is not None:
            closing = getattr(chunks, "aclose", None)
            if closing is not None:
                await _in(context, closing())
        await call_store(direct.store, context.run, direct.failed, exc)
        raise
    await call_store(direct.store, context.run, direct.ended, interrupted, snapshot.values)


# ---- helpers -----------------------------------------------------------------------------------
async def _in(context: contextvars.Context, coroutine: Any) -> Any:
    """Awaits ``coroutine`` as a task running in ``context`` (cancelling us cancels it)."""
    return await asyncio.get_running_loop().create_task(coroutine, context=context)
