"""The store contract every backend implements (in-memory, SQLite, PostgreSQL, HTTP).

Rules every backend follows (the conformance suite in `agentspan.testing.conformance` checks them):

- Writes that advance a run are *fenced*: they carry the writer's lease epoch and are refused with
  `LeaseLostError` when the run's current ``lease_epoch`` differs, and with `RunCancelledSignal`
  when the run was cancelled. A refused write changes nothing.
- Each write is atomic (one transaction). Records returned are copies: mutating them never changes
  the store.
- Only JSON crosses the boundary: ``input``, ``output``, ``args`` and ``options`` are JSON values.
- Listings are newest first (ids are UUIDv7, so id order is creation order).
"""

from __future__ import annotations

import abc
import asyncio
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar

from agentspan.errors import ConfigurationError, StoreError
from agentspan.records import JSON, Approval, Run, RunStatus, Step, StepResult
from agentspan.stores.checkpoint_contract import CheckpointContract

_T = TypeVar("_T")
ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
"""The statuses of runs that have ended."""
CANCELLED_RUN_APPROVALS = "the run was cancelled"
"""The reason of the approvals a run waited on when it was cancelled: they become ``expired``
(`Store.cancel_run`, `Store.update_run`), so no decision is asked for that would go nowhere."""


def unstorable(where: str, exc: UnicodeEncodeError) -> ConfigurationError:
    """The error for text a store cannot bind: SQLite and PostgreSQL take text as UTF-8, and a lone
    surrogate (``"\\udcff"``) in an id, a name or a message is not (JSON values escape it,
    `agentspan.jsontext`)."""
    bad = exc.object[max(exc.start - 20, 0):exc.end + 20] if isinstance(exc.object, str) else exc.object
    return ConfigurationError(f"Agentspan store {where}: text that is not valid UTF-8 (a lone surrogate) cannot "
                              f"be stored or looked up: {bad!r}")


def check_storable(where: str, *texts: object) -> None:
    """Refuses text no UTF-8 store holds (a lone surrogate) in an id, a name or a message, with
    `unstorable`'s error: for stores that do not bind text themselves (the in-memory store, a
    server's client), so that every store refuses it alike. JSON values are not checked: every
    store keeps a lone surrogate in them as its escape (`agentspan.jsontext`).

    Args:
        where: The store, as its errors name it.
        texts: The texts (anything else, None included, is skipped).

    Raises:
        ConfigurationError: A text holds a lone surrogate.
    """
    for text in texts:
        # isascii() is O(1) in CPython (a flag of the string): the common case costs no encode
        if isinstance(text, str) and not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError as exc:
                raise unstorable(where, exc) from exc


def check_deletion(statuses: Sequence[RunStatus], limit: int) -> list[str]:
    """Validates `Store.delete_runs` arguments; the statuses as plain strings.

    Raises:
        ConfigurationError: Not a run status, a status of a run that has not ended, or ``limit`` < 1.
    """
    if isinstance(statuses, str):
        raise ConfigurationError("statuses must be a sequence of run statuses, not one string")
    try:
        values = [RunStatus(s).value for s in statuses]
    except ValueError as exc:
        raise ConfigurationError(f"statuses: {exc}") from None
    unended = sorted(set(values) - {s.value for s in ENDED})
    if unended:
        raise ConfigurationError(f"only ended runs are deleted; statuses {', '.join(unended)} have not ended")
    if limit < 1:
        raise ConfigurationError(f"limit must be at least 1, not {limit}")
    return values


MAX_CLAIMANT = 200
"""Longest `Store.claim_announcement` claimant name."""


def check_claimant(claimant: str) -> None:
    """Validates a `Store.claim_announcement` claimant.

    Raises:
        ConfigurationError: Not a non-empty string of at most `MAX_CLAIMANT` characters.
    """
    if not isinstance(claimant, str) or not claimant or len(claimant) > MAX_CLAIMANT:
        raise ConfigurationError(f"claimant must be a non-empty string of at most {MAX_CLAIMANT} characters, "
                                 f"not {str(claimant)[:40]!r}")


class Store(CheckpointContract, abc.ABC):
    """Durable storage of runs, their journal and their approvals."""

    blocking_io: bool = False
    """Whether calls wait on the network (a server, PostgreSQL). Async callers then run them on a
    worker thread; an embedded store's calls (microseconds) are made inline."""

    # ---- runs -----------------------------------------------------------------------------
    @abc.abstractmethod
    def create_run(self, run: Run) -> tuple[Run, bool]:
        """Inserts a run.

        Args:
            run: The run to insert.

        Returns:
            ``(run, True)`` when inserted; ``(existing, False)`` when ``run.idempotency_key`` is
            set and a run with the same key already exists (nothing is inserted then).

        Raises:
            ConfigurationError: A run with the same id exists.
        """

    @abc.abstractmethod
    def get_run(self, run_id: str) -> Run:
        """Returns the run. Raises `RunNotFound`."""

    @abc.abstractmethod
    def list_runs(
        self, *, status: RunStatus | None = None, agent: str | None = None, limit: int = 100,
        session_id: str | None = None, before: str | None = None,
    ) -> list[Run]:
        """Returns runs newest first, optionally filtered by status, agent name and session (a
        conversation: a LangGraph run's thread).

        Newest first is by run id, descending: generated ids are UUIDv7 (time ordered); a custom
        run id sorts as text (by code point). ``before`` pages through them (keyset paging): pass
        the last id of a page to get the next, older, page. It is a position, not a lookup: it
        need not name a run (not even any more).

        Args:
            status: Only runs with this status.
            agent: Only runs of this agent name.
            limit: At most this many runs (negative: no limit).
            session_id: Only runs of this session.
            before: Only runs whose id sorts strictly before this one.

        Returns:
            The runs, newest (greatest id) first.
        """

    @abc.abstractmethod
    def update_run(
        self,
        run_id: str,
        *,
        epoch: int,
        status: RunStatus | None = None,
        output: JSON = None,
        error: str | None = None,
        release_lease: bool = False,
    ) -> Run:
        """Fenced update of a run's status/output/error.

        Only the fields given (not None) change; ``updated_at`` is set. With ``release_lease`` the
        lease owner and expiry are cleared (the epoch stays). Setting ``cancelled`` also expires
        the run's pending approvals (reason `CANCELLED_RUN_APPROVALS`), in the same transaction.

        Raises:
            RunNotFound: Unknown run.
            LeaseLostError: ``epoch`` is not the run's current lease epoch.
            RunCancelledSignal: The run was cancelled (unless ``status`` is cancelled).
        """

    @abc.abstractmethod
    def cancel_run(self, run_id: str, *, reason: str | None = None) -> Run:
        """Unfenced: marks a non-terminal run ``cancelled`` (error = reason), from any process; its
        pending approvals expire with it (reason `CANCELLED_RUN_APPROVALS`).

        Raises:
            RunNotFound: Unknown run.
            RunStateError: The run already ended (completed, failed or cancelled).
        """

    def delete_runs(self, *, ended_before: float, statuses: Sequence[RunStatus] = ENDED,
                    limit: int = 1000) -> list[str]:
        """Unfenced: deletes ended runs, with their steps and approvals (retention).

        In one transaction: the runs whose status is in ``statuses`` and whose ``updated_at`` (for
        an ended run, when it ended) is before ``ended_before`` (epoch seconds), oldest first
        (``updated_at``, then id), at most ``limit``. A run that has not ended is never deleted.
        Checkpoints are kept: they hold a thread's state (a LangGraph thread, an ADK session),
        which later runs continue; delete those with `delete_checkpoints`.

        Returns:
            The deleted runs' ids, oldest first.

        Raises:
            ConfigurationError: A status of a run that has not ended (pending, running, waiting),
                or ``limit`` < 1 (nothing deleted).
        """
        raise StoreError(f"{type(self).__name__} cannot delete runs")

    def reopen_run(self, run_id: str, *, owner: str | None, lease_expires_at: float | None,
                   options: Mapping[str, JSON] | None = None, by: str | None = None) -> Run:
        """Unfenced: takes a ``failed`` run up again, to retry it from where it failed.

        In one transaction, and only while the run is ``failed``: with an ``owner``, the run
        becomes ``running`` under that owner's lease until ``lease_expires_at``; without one it
        becomes ``pending`` with no lease, for a worker (`agentspan.serve`) to claim. The lease
        epoch moves on by one (a straggler of the failed attempt is fenced off), ``error`` and
        ``output`` are cleared, ``updated_at`` is set, and ``options`` (when given) are merged
        into the run's stored options. Steps and approvals stay as they are: the next attempt
        replays the completed steps and runs the failed or unfinished ones again.

        The failure it is retried from is appended to the run's retry history
        (``options["agentspan.retries"]``, `agentspan.stores.reopening.reopened_options`): its
        error, when it failed, when it was retried, ``owner`` and ``by``.

        Args:
            run_id: The failed run.
            owner: The lease owner taking it up; None leaves it ``pending`` for a worker.
            lease_expires_at: When that owner's lease expires (ignored without an owner).
            options: Options merged into the run's stored ones.
            by: Who asked for the retry, as the audit trail names them (``cli:USER`` from
                ``agentspan runs retry``, ``api:ROLE`` for an API key, the web UI's user); None
                when unknown.

        Raises:
            RunNotFound: Unknown run.
            RunStateError: The run is not ``failed`` (its status named; nothing changed).
        """
        raise StoreError(f"{type(self).__name__} cannot reopen runs")

    # ---- leases ---------------------------------------------------------------------------
    @abc.abstractmethod
    def claim_run(
        self, run_id: str, *, owner: str, expected_epoch: int, lease_expires_at: float
    ) -> Run:
        """Atomically takes the run's lease (compare-and-set on the epoch).

        Sets ``lease_owner``, ``lease_expires_at`` and ``lease_epoch = expected_epoch + 1`` if and
        only if the run's epoch is still ``expected_epoch`` and the run has not ended. The caller
        decides beforehand whether the current lease may be taken (expired, released, dead owner).

        Raises:
            RunNotFound: Unknown run.
            LeaseLostError: The epoch moved on (someone else claimed first) or the run ended.
        """

    def still_writing(self, owner: str) -> bool:
        """Whether a helper process of the lease owner ``owner`` (a process of this host that
        died) may still write its step rows to this store: its runs are not taken over until it
        has (`agentspan.leases`). Stores that write in the caller's process say False."""
        return False

    @abc.abstractmethod
    def renew_lease(self, run_id: str, *, epoch: int, lease_expires_at: float) -> bool:
        """Extends the lease held at ``epoch``. Returns False if the epoch is stale."""

    @abc.abstractmethod
    def claimable_runs(self, *, agents: Sequence[str] | None, now: float, limit: int = 10,
                       after: str | None = None) -> list[Run]:
        """Returns runs a worker may claim, oldest first.

        A run is claimable when its status is ``pending``, ``running`` or ``waiting``, its lease is
        free (no owner, or ``lease_expires_at < now``), and, for ``waiting`` runs, it has no
        ``pending`` approval left. ``agents`` filters on the run's agent name.

        Oldest first is by run id, ascending (as `list_runs` orders, reversed). ``after`` pages
        through them (keyset paging): pass the last id of a page to get the next, newer, page, so a
        worker looks past runs it cannot take up (`agentspan.serve`). It is a position, not a
        lookup: it need not name a run.

        Args:
            agents: Only runs of these agent names (None: every agent; empty: none).
            now: The time leases and approval deadlines are compared with.
            limit: At most this many runs.
            after: Only runs whose id sorts strictly after this one (None: from the oldest).
        """

    # ---- steps ----------------------------------------------------------------------------
    @abc.abstractmethod
    def start_step(self, step: Step, *, epoch: int, durable: bool = True) -> None:
        """Fenced: journals a step as ``started``.

        Inserts the step, or, when a step with the same ``(run_id, key)`` exists and is not
        ``completed`` (an in-doubt or failed attempt), replaces it keeping its ``seq`` (the caller
        passes ``attempt`` incremented). Inserting a new key increments the run's ``steps`` total.

        With ``durable=False`` the caller says that losing this in-flight marker changes nothing
        (a tool whose in-doubt policy is to run again anyway). The store may then skip forcing it
        to stable storage (SQLite ``full``: no fsync; the next durable write covers it), or hold it
        back briefly and write it together with the step's end (the HTTP client: one round trip
        per call). A refusal (stale epoch) then surfaces at the latest from `finish_step`.

        Raises:
            LeaseLostError, RunCancelledSignal: As for `update_run`.
            ConfigurationError: The key is already ``completed`` (a journal entry is never rewritten).
        """

    @abc.abstractmethod
    def finish_step(self, run_id: str, key: str, result: StepResult, *, epoch: int) -> None:
        """Fenced: records a started step's end (``completed`` or ``failed``) and its metrics.

        Adds the step's ``input_tokens``, ``output_tokens`` and ``cost_usd`` (when given) to the
        run's totals in the same transaction.

        Raises:
            StepNotFound: No started step with that key.
            LeaseLostError, RunCancelledSignal: As for `update_run`.
        """

    def record_step(self, step: Step, result: StepResult, *, epoch: int) -> None:
        """Fenced: journals a step that already ended (`start_step` + `finish_step` at once).

        Used for calls that need no in-flight record, such as model calls (an interrupted model
        call is simply made again). Backends override it to use one transaction.
        """
        self.start_step(step, epoch=epoch)
        self.finish_step(step.run_id, step.key, result, epoch=epoch)

    @abc.abstractmethod
    def list_steps(self, run_id: str) -> list[Step]:
        """Returns the run's steps ordered by ``seq``. Raises `RunNotFound` for an unknown run."""

    def supersede_steps(self, run_id: str, keys: Sequence[str], *, prefix: str, reason: str, epoch: int) -> None:
        """Fenced: moves journal entries out of the way of a run that goes on live
        (``on_divergence="live"``), keeping them in the trail.

        In one transaction, the step of each key is re-keyed to ``prefix + key`` and keeps all
        else (``seq``, input, output, metrics: the trail still shows what ran and what it cost;
        the run's totals do not change). A step that had not ended also becomes ``failed`` with
        ``error=reason`` (it never will end). The approvals of each key and of the keys under it
        (``key + "/..."``: a tool call asked for by a superseded model call may wait for a decision
        without a step of its own yet) move along to ``prefix + their key``; a pending one
        becomes ``expired`` with ``reason``. A key whose step is already at ``prefix + key`` is
        skipped, so a retried call changes nothing.

        Raises:
            StepNotFound: A key has no step, at its key or at ``prefix + key`` (nothing changed).
            ConfigurationError: ``prefix`` is empty, or a step or approval to move would land on
                one already there (nothing changed).
            LeaseLostError, RunCancelledSignal: As for `update_run`.
        """
        raise StoreError(f"{type(self).__name__} cannot supersede journal entries (on_divergence='live')")

    # ---- approvals ------------------------------------------------------------------------
    @abc.abstractmethod
    def request_approval(self, approval: Approval, *, epoch: int) -> Approval:
        """Fenced: stores a pending approval and sets the run's status to ``waiting``.

        Idempotent per ``(run_id, step_key)``: if an approval for that step exists, it is returned
        unchanged and nothing is written.
        """

    @abc.abstractmethod
    def get_approval(self, approval_id: str) -> Approval:
        """Returns the approval. Raises `ApprovalNotFound`."""

    @abc.abstractmethod
    def find_approval(self, run_id: str, step_key: str) -> Approval | None:
        """Returns the approval requested for a step, if any."""

    @abc.abstractmethod
    def list_approvals(
        self, *, run_id: str | None = None, status: str | None = None, limit: int = 100,
        before: str | None = None,
    ) -> list[Approval]:
        """Returns approvals newest first, optionally filtered by run and status.

        Newest first is by approval id, descending (generated ids are UUIDv7: time ordered; a
        custom id sorts as text, by code point): a total order, so ``before`` pages through them
        (keyset paging), as `list_runs` does: pass the last id of a page to get the next, older,
        page. It is a position, not a lookup: it need not name an approval.

        Args:
            run_id: Only approvals of this run.
            status: Only approvals with this stored status.
            limit: At most this many approvals (negative: no limit).
            before: Only approvals whose id sorts strictly before this one.

        Returns:
            The approvals, newest (greatest id) first.
        """

    @abc.abstractmethod
    def decide_approval(
        self,
        approval_id: str,
        *,
        approved: bool,
        by: str | None,
        reason: str | None,
        decided_at: float,
    ) -> Approval:
        """Decides a pending approval exactly once (unfenced: any process may decide).

        Raises:
            ApprovalNotFound: Unknown approval.
            ApprovalConflict: It was already decided (or expired); nothing changes.
        """

    @abc.abstractmethod
    def claim_announcement(self, approval_id: str, *, claimant: str) -> bool:
        """Claims the announcement of an approval (a message to a chat channel) for ``claimant``.

        The first claim wins, across every process sharing the store, so replicas that each see
        the same request announce it once. The same claimant claiming again (a retried call) gets
        True again. The claim is kept with the approval, whatever its status.

        Args:
            approval_id: The approval.
            claimant: Who announces: a name no other announcer uses (the Slack poster takes a
                new id per server process).

        Returns:
            True if the announcement is ``claimant``'s to make, False if another claimant has it.

        Raises:
            ApprovalNotFound: Unknown approval.
            ConfigurationError: ``claimant`` is empty or longer than `MAX_CLAIMANT`.
        """

    def wait_durable(self, run_id: str | None = None) -> None:
        """Returns once every step write made so far is as durable as the store promises.

        A store may acknowledge a step write before it is on stable storage (SQLite opened with
        ``defer_step_sync``: a helper process commits it, `agentspan.stores.step_writer`, or
        fsyncs it, `agentspan.stores.wal_sync`); the runtime calls this before it acts on a step:
        before each live model or tool call, before handing out a streamed event and before it
        records the run completed. Stores whose writes are durable when they return (the
        default) do nothing here.

        Args:
            run_id: The run whose step writes' refusals to raise (a write handed off is refused,
                if at all, here and not where it was made).

        Raises:
            StoreError: The store could not make the writes durable.
            LeaseLostError: A step write of ``run_id`` was refused: another attempt holds the run.
            RunCancelledSignal: A step write of ``run_id`` was refused: the run was cancelled.
        """

    # ---- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Releases resources (connections, files)."""


async def call_store(store: Store, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """Calls ``fn`` (a store method, or a core function that reads or writes ``store``) from async
    code: on a worker thread when the store waits on the network (`Store.blocking_io`), so the
    event loop runs other tasks meanwhile; inline otherwise (an embedded store answers in
    microseconds, less than a thread hop costs).
    """
    if store.blocking_io:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


class _AskedBy(TypedDict, total=False):
    """`asked_by`'s keywords (typed so that ``**asked_by(...)`` cannot pass as ``options``)."""

    by: str


def asked_by(store: Store, by: str | None) -> _AskedBy:
    """``store.reopen_run``'s ``by`` keyword when someone is named and the store takes it, else
    nothing: a store written against the contract before ``by`` still reopens runs (its history
    then names nobody)."""
    if by is None:
        return {}
    try:
        parameters = inspect.signature(store.reopen_run).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a callable of C): the contract's
        return {"by": by}
    takes = any(p.name == "by" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    return {"by": by} if takes else {}


def after_position(before: str | None) -> dict[str, str]:
    """``list_runs``' ``before`` keyword when a position is given, else nothing: a store written
    against the contract before paging (a ``list_runs`` without ``before``) still lists the first page."""
    return {} if before is None else {"before": before}
