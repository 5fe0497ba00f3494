"""The HTTP protocol between the SDK (`agentspan.stores.remote`) and the server (`agentspan_server`).

One endpoint per `Store` operation, so every behaviour of the embedded store holds unchanged
through a server; bodies and answers are the pydantic models below (JSON only, never pickles).

| Store method       | HTTP                                                        | answer              |
|--------------------|-------------------------------------------------------------|---------------------|
| create_run         | ``POST   /api/runs``                    body `Run`          | `CreatedRun` (201/200) |
| list_runs          | ``GET    /api/runs?status=&agent=&session_id=&before=&limit=`` | `RunList`        |
| get_run            | ``GET    /api/runs/{run_id}``                               | `Run`               |
| update_run         | ``PATCH  /api/runs/{run_id}``           body `UpdateRun`    | `Run`               |
| cancel_run         | ``POST   /api/runs/{run_id}/cancel``    body `CancelRun`    | `Run`               |
| delete_runs        | ``POST   /api/runs/prune``              body `DeleteRuns`   | `DeletedRuns` (admin) |
| reopen_run         | ``POST   /api/runs/{run_id}/reopen``    body `ReopenRun`    | `Run`               |
| claim_run          | ``POST   /api/runs/{run_id}/claim``     body `ClaimRun`     | `Run`               |
| renew_lease        | ``POST   /api/runs/{run_id}/lease``     body `RenewLease`   | `Renewed`           |
| claimable_runs     | ``GET    /api/claimable?agent=a&agent=b&now=&after=&limit=`` | `RunList`          |
| start_step         | ``POST   /api/runs/{run_id}/steps/start``  body `StartStep` | 204                 |
| finish_step        | ``POST   /api/runs/{run_id}/steps/finish`` body `FinishStep`| 204                 |
| record_step        | ``POST   /api/runs/{run_id}/steps/record`` body `RecordStep`| 204                 |
| supersede_steps    | ``POST   /api/runs/{run_id}/steps/supersede`` body `SupersedeSteps` | 204       |
| list_steps         | ``GET    /api/runs/{run_id}/steps``                         | `StepList`          |
| request_approval   | ``POST   /api/runs/{run_id}/approvals`` body `RequestApproval` | `Approval`     |
| find_approval      | ``GET    /api/runs/{run_id}/approvals/{step_key}``          | `FoundApproval`     |
| list_approvals     | ``GET    /api/approvals?run_id=&status=&before=&limit=``    | `ApprovalList`      |
| get_approval       | ``GET    /api/approvals/{approval_id}``                     | `Approval`          |
| decide_approval    | ``POST   /api/approvals/{approval_id}/decision`` body `Decision` | `Approval`     |
| claim_announcement | ``POST /api/approvals/{approval_id}/announcement`` `ClaimAnnouncement` | `AnnouncementClaim` |

Checkpoints (frameworks that keep their own state: LangGraph). Thread ids, namespaces and
checkpoint ids are free text (empty included), so they travel in bodies and queries, not paths.

| Store method                | HTTP                                                   | answer          |
|-----------------------------|--------------------------------------------------------|-----------------|
| put_checkpoint              | ``PUT  /api/checkpoints``            `CheckpointRecord` | 204             |
| put_checkpoint_writes       | ``PUT  /api/checkpoints/writes``     `PutCheckpointWrites` | 204          |
| put_checkpoint_with_writes  | ``PUT  /api/checkpoints/with-writes`` `PutCheckpointWithWrites` | 204     |
| get_checkpoint              | ``GET  /api/checkpoints/find?thread_id=&namespace=&checkpoint_id=`` | `FoundCheckpoint`|
| list_checkpoints            | ``POST /api/checkpoints/search``     `ListCheckpoints`  | `CheckpointList` |
| copy_checkpoints            | ``POST /api/checkpoints/copy``       `CopyCheckpoints`  | 204             |
| delete_checkpoints          | ``POST /api/checkpoints/delete``     `DeleteCheckpoints` | 204 (admin)    |
| delete_checkpoints_for_runs | ``POST /api/checkpoints/delete-for-runs`` `DeleteCheckpointsForRuns` | 204 (admin) |
| prune_checkpoints           | ``POST /api/checkpoints/prune``      `PruneCheckpoints` | 204 (admin)     |

Checkpoint and write ``data`` travel as base64 strings (URL-safe alphabet on answers; both
alphabets, padding optional, accepted in bodies); the server stores the bytes as given, never interpreting them.
Deleting checkpoints needs the admin role: an agent's key may write and read them, and copy a
thread, but not destroy a thread's history. So does deleting runs (retention: ``POST
/api/runs/prune``, a fixed path; no route takes a POST at ``/api/runs/{run_id}``, so ``prune`` is
never read as a run id there).

Errors are RFC 9457 problem documents (``application/problem+json``, `Problem`) whose ``error``
field names the `agentspan.errors` class, so the client raises the same exception the embedded
store would have raised. Status codes: 400 malformed JSON, 401 missing/invalid key, 403 wrong role,
404 unknown id, 409 stale lease epoch / double decision / wrong run state, 413 body too large,
422 wrong types or invalid values, 503 store unavailable.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from agentspan import errors
from agentspan.records import JSON, Approval, CheckpointRecord, CheckpointWrite, Run, RunStatus, Step, StepResult
from agentspan.stores.base import ENDED, MAX_CLAIMANT

API_PREFIX = "/api"
PROBLEM_CONTENT_TYPE = "application/problem+json"
ROLES = ("agent", "approver", "admin")
Role = Literal["agent", "approver", "admin"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- request bodies ---------------------------------------------------------------------------
class UpdateRun(_Body):
    """`Store.update_run`. A field left out (or null) is not changed."""

    epoch: int
    status: RunStatus | None = None
    output: JSON = None
    error: str | None = None
    release_lease: bool = False


class CancelRun(_Body):
    """`Store.cancel_run`."""

    reason: str | None = None


class DeleteRuns(_Body):
    """`Store.delete_runs`: ended runs whose ``updated_at`` is before ``ended_before`` (epoch
    seconds, finite), oldest first, at most ``limit``."""

    ended_before: float
    statuses: list[RunStatus] = list(ENDED)
    limit: int = Field(default=1000, ge=1)


class ReopenRun(_Body):
    """`Store.reopen_run`: with an ``owner``, the run goes on ``running`` under its lease until
    ``lease_expires_at``; without one, ``pending`` for a worker. ``options`` are merged into the
    run's. ``by`` names who asked for the retry (recorded in the run's retry history); left out,
    the server records the role of the API key that sent it (``api:ROLE``)."""

    owner: str | None = None
    lease_expires_at: float | None = None
    options: dict[str, JSON] | None = None
    by: str | None = None

    @model_serializer(mode="wrap")
    def _without_unnamed_by(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A body naming nobody leaves ``by`` out: a server from before ``by`` (whose bodies
        # forbid unknown fields) still accepts the reopens of a newer client.
        data: dict[str, Any] = handler(self)
        if data.get("by") is None:
            data.pop("by", None)
        return data


class ClaimRun(_Body):
    """`Store.claim_run`."""

    owner: str = Field(min_length=1)
    expected_epoch: int = Field(ge=0)
    lease_expires_at: float


class RenewLease(_Body):
    """`Store.renew_lease`."""

    epoch: int
    lease_expires_at: float


class StartStep(_Body):
    """`Store.start_step`."""

    step: Step
    epoch: int
    durable: bool = True


class FinishStep(_Body):
    """`Store.finish_step`."""

    key: str = Field(min_length=1)
    result: StepResult
    epoch: int


class RecordStep(_Body):
    """`Store.record_step`."""

    step: Step
    result: StepResult
    epoch: int


class SupersedeSteps(_Body):
    """`Store.supersede_steps`."""

    keys: list[str]
    prefix: str = Field(min_length=1)
    reason: str
    epoch: int


class RequestApproval(_Body):
    """`Store.request_approval`."""

    approval: Approval
    epoch: int


class ClaimAnnouncement(_Body):
    """`Store.claim_announcement`."""

    claimant: str = Field(min_length=1, max_length=MAX_CLAIMANT)


class Decision(_Body):
    """`Store.decide_approval`. ``decided_at`` defaults to the server's clock."""

    approved: bool
    by: str | None = None
    reason: str | None = None
    decided_at: float | None = None


class PutCheckpointWrites(_Body):
    """`Store.put_checkpoint_writes`."""

    writes: list[CheckpointWrite]
    replace: bool


class PutCheckpointWithWrites(_Body):
    """`Store.put_checkpoint_with_writes`: the writes, then the checkpoint, in one transaction
    (``checkpoint.writes`` is ignored)."""

    checkpoint: CheckpointRecord
    writes: list[CheckpointWrite]
    replace: bool


class ListCheckpoints(_Body):
    """`Store.list_checkpoints`. A filter left out (or null) does not filter."""

    thread_id: str | None = None
    namespace: str | None = None
    checkpoint_id: str | None = None
    before: str | None = None
    metadata: dict[str, JSON] | None = None
    limit: int | None = Field(default=None, ge=0)


class CopyCheckpoints(_Body):
    """`Store.copy_checkpoints`."""

    source_thread_id: str
    target_thread_id: str


class DeleteCheckpoints(_Body):
    """`Store.delete_checkpoints`."""

    thread_id: str


class DeleteCheckpointsForRuns(_Body):
    """`Store.delete_checkpoints_for_runs`."""

    run_ids: list[str]


class PruneCheckpoints(_Body):
    """`Store.prune_checkpoints`."""

    thread_ids: list[str]
    keep_latest: bool


# ---- answers ----------------------------------------------------------------------------------
class CreatedRun(BaseModel):
    """Answer of ``POST /api/runs``: the run and whether it was inserted (False: idempotency hit)."""

    run: Run
    created: bool


class DeletedRuns(BaseModel):
    """Answer of ``POST /api/runs/prune``: the deleted runs' ids, oldest first."""

    deleted: list[str]


class RunList(BaseModel):
    runs: list[Run]


class StepList(BaseModel):
    steps: list[Step]


class ApprovalList(BaseModel):
    approvals: list[Approval]


class FoundApproval(BaseModel):
    approval: Approval | None


class Renewed(BaseModel):
    renewed: bool


class AnnouncementClaim(BaseModel):
    """The answer to `ClaimAnnouncement`: whether the announcement is the claimant's to make."""

    claimed: bool


class FoundCheckpoint(BaseModel):
    checkpoint: CheckpointRecord | None


class CheckpointList(BaseModel):
    checkpoints: list[CheckpointRecord]


class Problem(BaseModel):
    """An RFC 9457 problem document; ``error`` names the `agentspan.errors` class."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    error: str
    run_id: str | None = None
    key: str | None = None
    approval_id: str | None = None
    errors: list[dict[str, Any]] | None = None  # validation details: which field, what was wrong


# ---- errors <-> problems ----------------------------------------------------------------------
ERROR_STATUS: dict[type[BaseException], int] = {
    errors.RunNotFound: 404,
    errors.StepNotFound: 404,
    errors.ApprovalNotFound: 404,
    errors.LeaseLostError: 409,
    errors.ApprovalConflict: 409,
    errors.RunStateError: 409,
    errors.RunCancelledSignal: 409,
    errors.ConfigurationError: 422,
    errors.StoreError: 503,
    errors.AuthError: 401,
}
_BY_NAME: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        errors.AgentspanError, errors.ConfigurationError, errors.RunNotFound, errors.StepNotFound,
        errors.ApprovalNotFound, errors.RunStateError, errors.NoPendingApproval, errors.ApprovalConflict,
        errors.LeaseLostError, errors.StoreError, errors.TransportError, errors.AuthError,
        errors.RunCancelledSignal,
    )
}  # fmt: skip


def status_of(exc: BaseException) -> int:
    """The HTTP status for an exception raised by a store (500 for anything unexpected)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def problem_of(exc: BaseException) -> Problem:
    """The problem document describing a store exception."""
    status = status_of(exc)
    return Problem(
        title=type(exc).__name__, status=status, detail=str(exc), error=type(exc).__name__,
        run_id=getattr(exc, "run_id", None), key=getattr(exc, "key", None),
        approval_id=getattr(exc, "approval_id", None),
    )  # fmt: skip


def error_of(problem: Problem) -> BaseException:
    """Rebuilds the exception a problem document describes (`TransportError` when unknown).

    The message is the server's ``detail``; ``run_id``/``key``/``approval_id`` are set as
    attributes, so callers see what the embedded store would have raised.
    """
    cls = _BY_NAME.get(problem.error)
    if cls is None:
        cls = errors.AuthError if problem.status in (401, 403) else errors.TransportError
    exc = cls.__new__(cls)
    BaseException.__init__(exc, problem.detail)
    for name in ("run_id", "key", "approval_id"):
        value = getattr(problem, name)
        if value is not None:
            setattr(exc, name, value)
    if isinstance(exc, errors.RunCancelledSignal) and not hasattr(exc, "reason"):
        exc.reason = None
    return exc
