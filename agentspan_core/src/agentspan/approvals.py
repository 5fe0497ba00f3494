"""Durable human approvals: the gate a tool call passes, and decisions from any process."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentspan.errors import (
    ApprovalConflict,
    ApprovalPending,
    ConfigurationError,
    NoPendingApproval,
    ReplayDivergenceError,
    RunCancelledSignal,
    StoreError,
)
from agentspan.hashing import digest
from agentspan.records import JSON, Approval, ApprovalStatus, RunStatus, StepKind, now
from agentspan.stores.base import Store
from agentspan.tools import ToolOptions

if TYPE_CHECKING:
    from agentspan.runtime import ActiveRun


def effective_status(approval: Approval, at: float | None = None) -> ApprovalStatus:
    """An approval still pending after ``expires_at`` counts as expired (i.e. rejected)."""
    if approval.status is ApprovalStatus.PENDING and approval.expires_at is not None:
        if (at if at is not None else now()) >= approval.expires_at:
            return ApprovalStatus.EXPIRED
    return approval.status


IN_DOUBT = "in-doubt:"
"""How the last part of an in-doubt question's step key begins (`in_doubt_key`)."""


def in_doubt_key(key: str, attempt: int) -> str:
    """The approval key of the question whether to run call ``key`` again after its execution
    ``attempt`` was interrupted (``on_in_doubt="ask"``): ``<key>/in-doubt:<attempt>``."""
    return f"{key}/{IN_DOUBT}{attempt}"


def is_in_doubt_question(approval: Approval) -> bool:
    """Whether ``approval`` asks to run an interrupted call again (not to run a call at all)."""
    return approval.step_key.rpartition("/")[2].startswith(IN_DOUBT)


def rejection_message(approval: Approval) -> str:
    """What the model is told when a human rejected (or let expire) a tool call."""
    who = f" by {approval.decided_by}" if approval.decided_by else ""
    expired = effective_status(approval) is ApprovalStatus.EXPIRED
    reason = f": {approval.reason}" if approval.reason else ""
    if is_in_doubt_question(approval):  # the call ran, at least in part: do not say it did not
        outcome = "was not approved before its deadline" if expired else f"was rejected{who}{reason}"
        return (f"Tool call {approval.tool!r} was interrupted before it finished and may have taken effect; "
                f"running it again {outcome}.")
    if expired:
        return f"Tool call {approval.tool!r} was not approved before its deadline; it was not executed."
    return f"Tool call {approval.tool!r} was rejected{who}{reason}. It was not executed."


def gate(
    run: ActiveRun, *, key: str, tool: str, args: JSON, args_hash: str, options: ToolOptions,
    expires_at: float | None = None,
) -> str | None:
    """Lets an approved tool call through, or suspends/stops the run.

    Returns:
        None when the call is approved (run it), or the rejection message to give the model.

    Raises:
        ApprovalPending: No decision yet; the run is now ``waiting``.
        RunCancelledSignal: Rejected and the tool's policy is ``on_reject="stop"``.
        ReplayDivergenceError: The approved arguments differ from the live call's.
    """
    store = run.store
    approval = store.find_approval(run.run_id, key)
    if approval is None:
        approval = store.request_approval(
            Approval(run_id=run.run_id, step_key=key, tool=tool, args=args, args_hash=args_hash,
                     expires_at=expires_at),
            epoch=run.epoch,
        )
    if approval.args_hash != args_hash:
        raise ReplayDivergenceError(
            run.run_id, key,
            f"approval {approval.id} was requested for arguments {approval.args!r}; the live call "
            f"has {args!r}. A decision binds to the exact arguments it was made for.",
        )
    status = effective_status(approval)
    if status is ApprovalStatus.PENDING:
        store.update_run(run.run_id, epoch=run.epoch, status=RunStatus.WAITING)
        raise ApprovalPending(run.run_id, approval.id, key)
    if status is ApprovalStatus.APPROVED:
        return None
    if options.on_reject == "stop":
        raise RunCancelledSignal(run.run_id, rejection_message(approval))
    return rejection_message(approval)


def decision_payload(approval: Approval) -> dict[str, JSON]:
    """A decided approval as the framework's code receives it::

        {"approved": True, "status": "approved", "by": "alice", "reason": "ok", "approval_id": "0190..."}

    ``status`` is ``"approved"``, ``"rejected"`` or ``"expired"`` (``approved`` is True only for
    the first); ``by`` and ``reason`` are None when not given.
    """
    status = effective_status(approval)
    return {"approved": status is ApprovalStatus.APPROVED, "status": status.value, "by": approval.decided_by,
            "reason": approval.reason, "approval_id": approval.id}


@dataclass(frozen=True)
class ApprovalRequest:
    """A human decision a framework paused for (an ADK confirmation, a LangGraph interrupt)."""

    key: str
    """The approval's step key (deterministic, as every journal key)."""
    tool: str
    """What the decision is about (a tool or node name)."""
    args: JSON
    """What the decision is bound to."""
    options: ToolOptions
    """``on_reject="stop"`` cancels the run on a rejection."""


def decide_all(run: ActiveRun, requests: Sequence[ApprovalRequest]) -> list[dict[str, JSON]]:
    """Gives every request an approval, and returns the decisions (`decision_payload`, in order)
    once all are decided; each decision delivered is journaled as an ``approval`` step.

    Raises:
        ApprovalPending: Some request is not decided yet (every one now has an approval, and the
            run is ``waiting``).
        RunCancelledSignal: A rejection with ``on_reject="stop"``.
        ReplayDivergenceError: An approval exists for the key but for other arguments.
    """
    decisions: list[dict[str, JSON]] = []
    waiting: ApprovalPending | None = None
    for request in requests:
        try:
            gate(run, key=request.key, tool=request.tool, args=request.args, args_hash=digest(request.args),
                 options=request.options)
        except ApprovalPending as signal:
            waiting = waiting or signal  # request every approval before suspending
            continue
        approval = run.store.find_approval(run.run_id, request.key)
        if approval is None:  # gate() has just read or created it
            raise StoreError(f"approval of step {request.key!r} of run {run.run_id!r} vanished from the store")
        decision = decision_payload(approval)
        run.record(kind=StepKind.APPROVAL, key=request.key, name=request.tool, input=request.args, output=decision)
        decisions.append(decision)
    if waiting is not None:
        raise waiting
    return decisions


def answered(run: ActiveRun, *, key: str, tool: str, args: JSON, approved: bool, by: str,
             reason: str | None = None, note: dict[str, JSON] | None = None) -> dict[str, JSON] | None:
    """The framework's own answer to a request it paused for (an ADK confirmation answered by the
    app, a LangGraph interrupt resumed with the app's ``Command``): decides the request's approval
    with it if the approval is still pending (a decision made in Agentspan first stands), journals
    the decision as an ``approval`` step (plus ``note``), and returns it (`decision_payload`).

    Returns:
        None when the request has no approval.
    """
    approval = run.store.find_approval(run.run_id, key)
    if approval is None:
        return None
    if effective_status(approval) is ApprovalStatus.PENDING:
        approval = decide_by_id(run.store, approval.id, approved=approved, by=by, reason=reason)
    decision = decision_payload(approval)
    run.record(kind=StepKind.APPROVAL, key=key, name=tool, input=args, output={**decision, **(note or {})})
    return decision


def pending_for_run(store: Store, run_id: str) -> list[Approval]:
    """Returns the run's approvals that still wait for a decision (not expired)."""
    at = now()
    return [a for a in store.list_approvals(run_id=run_id, status=ApprovalStatus.PENDING.value)
            if effective_status(a, at) is ApprovalStatus.PENDING]


def decide(
    store: Store, run_id: str, approval_id: str | None, *, approved: bool, by: str | None,
    reason: str | None,
) -> Approval:
    """Decides one approval of a run (the only pending one when ``approval_id`` is None).

    Raises:
        NoPendingApproval: The run waits on no approval.
        ConfigurationError: Several approvals are pending and no ``approval_id`` was given, or the
            approval belongs to another run.
        ApprovalConflict: The approval was already decided.
    """
    if approval_id is None:
        pending = pending_for_run(store, run_id)
        if not pending:
            raise NoPendingApproval(f"run {run_id!r} waits on no approval")
        if len(pending) > 1:
            ids = ", ".join(a.id for a in pending)
            raise ConfigurationError(f"run {run_id!r} has {len(pending)} pending approvals ({ids}); "
                                     "pass approval_id")
        approval_id = pending[0].id
    for name, value in (("approval_id", approval_id), ("by", by), ("reason", reason)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{name} of type {type(value).__name__}: expected a str or None")
    approval = store.get_approval(approval_id)
    if approval.run_id != run_id:
        raise ConfigurationError(f"approval {approval_id!r} belongs to run {approval.run_id!r}, not {run_id!r}")
    if effective_status(approval) is ApprovalStatus.EXPIRED:
        raise expired_conflict(approval)
    return decide_by_id(store, approval_id, approved=approved, by=by, reason=reason)


def decide_by_id(store: Store, approval_id: str, *, approved: bool, by: str | None,
                 reason: str | None) -> Approval:
    """Decides an approval by id (the CLI's ``agentspan approve ID``)."""
    try:
        return store.decide_approval(approval_id, approved=approved, by=by, reason=reason, decided_at=now())
    except ApprovalConflict:
        current = store.get_approval(approval_id)
        if effective_status(current) is ApprovalStatus.EXPIRED:
            raise expired_conflict(current) from None
        raise ApprovalConflict(
            f"{_where(current)} was already {current.status.value}"
            + (f" by {current.decided_by}" if current.decided_by else "")
        ) from None


def expired_conflict(approval: Approval, timestamp: Callable[[float], str] | None = None) -> ApprovalConflict:
    """The error of a decision on an approval that expired: its run was cancelled (the stored
    reason says so) or its deadline passed (shown with ``timestamp``, UTC by default)."""
    if approval.status is ApprovalStatus.EXPIRED and approval.reason:
        when = f" ({approval.reason})"
    elif approval.expires_at is not None:
        shown = timestamp(approval.expires_at) if timestamp is not None else time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(approval.expires_at))
        when = f" at {shown}"
    else:
        when = ""
    return ApprovalConflict(f"{_where(approval)} expired{when} before a decision; it counts as rejected")


def _where(approval: Approval) -> str:
    return f"approval {approval.id!r} (run {approval.run_id!r}, step {approval.step_key!r})"
