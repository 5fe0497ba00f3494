"""LangGraph's ``interrupt()`` as Agentspan approvals.

When a durable graph run stops at ``interrupt(value)`` (in a node, or in a tool a node runs),
every pending interrupt becomes one Agentspan approval:

- ``step_key``: ``"interrupt:<Interrupt.id>"``. LangGraph derives the id from the interrupted
  task's namespace and how many answers that task already had, so it is the same in every
  process and two interrupts of one node never share it;
- ``tool``: the name of the node that was interrupted (``"tools"`` for a ``ToolNode``);
- ``args``: the interrupt value as JSON (the approval is bound to it).

The run becomes ``waiting`` (listed by ``agentspan approvals list``, shown in the web UI) and
survives restarts while it waits. ``handle.approve()`` / ``handle.reject()`` (or ``agentspan
approve ID`` / ``reject ID``) decide it; the graph then resumes with
``Command(resume={interrupt_id: decision})``, so ``interrupt()`` returns the decision::

    {"approved": True, "status": "approved", "by": "alice", "reason": "ok", "approval_id": "0190..."}

``status`` is ``"approved"``, ``"rejected"`` or ``"expired"`` (``approved`` is True only for
the first); ``by`` and ``reason`` are None when not given. A rejection never stops the run by
itself: the node decides what a rejection means. Each delivered decision is also journaled as an
``approval`` step (same key) holding the interrupt value and the decision. An interrupt the
application answered itself (``graph.invoke(Command(resume=value))``) gets ``value``, also when
the process died after delivering it and ``invoke(None)`` continues the run (the value as JSON).

Tools marked ``@agentspan.tool(approval_required=True)`` do not interrupt the graph: they go
through the core's approval gate (bound to their arguments) inside the tool call, exactly as in
the other adapters.
"""

from __future__ import annotations

from collections.abc import Iterator

from langgraph.types import Command, Interrupt, StateSnapshot

import agentspan
from agentspan import approvals
from agentspan.tools import ToolOptions
from agentspan_langgraph._codec import to_json

_INTERRUPT_OPTIONS = ToolOptions(on_reject="continue")


def step_key(interrupt: Interrupt) -> str:
    """The approval's step key for one pending interrupt."""
    return f"interrupt:{interrupt.id}"


def pending_interrupts(snapshot: StateSnapshot) -> Iterator[tuple[str, Interrupt]]:
    """The interrupts a graph's state waits on, each with the name of the node it came from."""
    seen: set[str] = set()
    for task in snapshot.tasks:
        for interrupt in task.interrupts:
            if interrupt.id not in seen:
                seen.add(interrupt.id)
                yield task.name, interrupt
    for interrupt in snapshot.interrupts:
        if interrupt.id not in seen:
            seen.add(interrupt.id)
            yield "graph", interrupt


def resume_command(run: agentspan.ActiveRun, snapshot: StateSnapshot) -> Command | None:
    """Turns the graph's pending interrupts into approvals and their decisions into a resume.

    Returns:
        None when the graph waits on no interrupt; else the `Command` delivering every decision.

    Raises:
        ApprovalPending: Some interrupt is not decided yet (all of them now have an approval,
            and the run is ``waiting``).
        ReplayDivergenceError: An approval exists for the interrupt but with another value.
    """
    pending = list(pending_interrupts(snapshot))
    decided = approvals.decide_all(run, [
        approvals.ApprovalRequest(key=step_key(interrupt), tool=node, args=to_json(interrupt.value),
                                  options=_INTERRUPT_OPTIONS)
        for node, interrupt in pending])
    decisions = {interrupt.id: _delivered(run, interrupt, decision)
                 for (_, interrupt), decision in zip(pending, decided, strict=True)}
    return Command(resume=decisions) if decisions else None


ANSWER = "resume"
"""Where an approval step keeps the application's own ``Command(resume=...)`` value (its note)."""


def _delivered(run: agentspan.ActiveRun, interrupt: Interrupt, decision: object) -> object:
    """What ``interrupt()`` returns: the application's own answer when it gave one (journaled with
    the approval step; a process that died after delivering it delivers it again), else the
    decision made in Agentspan."""
    step = run.journal.get(step_key(interrupt))
    output = step.output if step is not None else None
    if isinstance(output, dict) and ANSWER in output:
        return output[ANSWER]
    return decision
