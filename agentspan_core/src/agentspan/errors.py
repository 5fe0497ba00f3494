"""The one error hierarchy of Agentspan.

```
AgentspanError
├── ConfigurationError        bad settings or arguments (unknown framework, bad option value)
├── RunNotFound               no run with that id
├── StepNotFound              no step with that key in a run
├── ApprovalNotFound          no approval with that id
├── RunStateError             the run is in the wrong state for the call (resume a completed run, ...)
│   └── NoPendingApproval     approve/reject on a run that waits on nothing
├── ApprovalConflict          an approval was already decided
├── ReplayDivergenceError     a journaled step no longer matches the live call
├── InDoubtStepError          a step started but never completed, and its policy is "fail"
├── LeaseLostError            another process owns the run (stale fencing epoch)
├── RunFailed                 handle.result() on a run that failed
├── RunCancelledError         handle.result() on a run that was cancelled
├── StoreError                the store is missing, corrupted or unusable
├── TransportError            the transport to an Agentspan server failed
│   ├── AuthError             the server refused the API key (401) or its role (403)
│   └── ServerUnreachable     no server answered for `retry_for` seconds (the run is left to a worker)
├── ScriptError               a mock_run script does not fit the run (ran out, unknown tool, ...)
├── InvalidExportError        a run export (`agentspan runs export`) is not valid or of an unknown format
├── RecordedStepFailure       a replayed step failed in the recorded run (raised again by `replay`)
├── CassetteError             a recorded HTTP cassette is missing (and recording is off) or unreadable
└── ForkServerUnavailable     a crash test's child cannot be forked here (it starts as a fresh interpreter)

AgentspanSignal (BaseException)   control flow that user code and frameworks must not swallow
├── ApprovalPending           a tool waits for a human decision: unwind the framework's loop
├── RunCancelledSignal        the run was cancelled while it executed
├── ProcessExiting            a background run's call failed as the process exited (left to its lease)
├── ModelRequestBlocked       a test made a real request to a model provider (pytest plugin)
└── CassetteMismatch          a request under a replayed cassette has no recording
```
Control-flow signals derive from `BaseException` because frameworks catch `Exception` inside
tool calls.
"""

from __future__ import annotations


class AgentspanError(Exception):
    """Base class of every error Agentspan raises."""


class ConfigurationError(AgentspanError):
    """Invalid configuration or arguments."""


class RunNotFound(AgentspanError):
    """No run with the given id exists in the store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found")
        self.run_id = run_id


class StepNotFound(AgentspanError):
    """No step with the given key exists in the run."""

    def __init__(self, run_id: str, key: str) -> None:
        super().__init__(f"step {key!r} not found in run {run_id!r}")
        self.run_id = run_id
        self.key = key


class ApprovalNotFound(AgentspanError):
    """No approval with the given id exists."""

    def __init__(self, approval_id: str) -> None:
        super().__init__(f"approval {approval_id!r} not found")
        self.approval_id = approval_id


class RunStateError(AgentspanError):
    """The run's status does not allow the requested operation."""


class NoPendingApproval(RunStateError):
    """An approve/reject call on a run that waits on no approval."""


class ApprovalConflict(AgentspanError):
    """An approval was already decided; a decision is final."""


class ReplayDivergenceError(AgentspanError):
    """A journaled step's input differs from the live call's input on replay.

    Attributes:
        run_id: The run being replayed.
        key: The step key whose input changed.
        detail: What differs (recorded vs. live).
    """

    def __init__(self, run_id: str, key: str, detail: str) -> None:
        super().__init__(f"run {run_id!r} diverged from its journal at step {key!r}: {detail}")
        self.run_id = run_id
        self.key = key
        self.detail = detail


class InDoubtStepError(AgentspanError):
    """A step started but never completed, and its in-doubt policy is ``"fail"``."""

    def __init__(self, run_id: str, key: str, name: str | None = None) -> None:
        of = f" (tool {name!r})" if name else ""
        super().__init__(
            f"step {key!r}{of} of run {run_id!r} was in flight when its process died and its tool's "
            "policy is on_in_doubt='fail'; it may or may not have taken effect"
        )
        self.run_id = run_id
        self.key = key
        self.name = name


class LeaseLostError(AgentspanError):
    """Another process owns the run: a write carried a stale fencing epoch, or a claim lost."""


class RunFailed(AgentspanError):
    """The run ended in status ``failed``; ``error`` holds the recorded error."""

    def __init__(self, run_id: str, error: str | None) -> None:
        super().__init__(f"run {run_id!r} failed: {error}")
        self.run_id = run_id
        self.error = error


class RunCancelledError(AgentspanError):
    """The run ended in status ``cancelled``."""

    def __init__(self, run_id: str, reason: str | None = None) -> None:
        super().__init__(f"run {run_id!r} was cancelled" + (f": {reason}" if reason else ""))
        self.run_id = run_id
        self.reason = reason


class StoreError(AgentspanError):
    """The store is missing, corrupted or cannot be used."""


class TransportError(AgentspanError):
    """The transport to an Agentspan server failed."""


class AuthError(TransportError):
    """The server refused the request's API key (missing or invalid) or the key's role."""


class ServerUnreachable(TransportError):
    """No Agentspan server answered a request for the store's ``retry_for`` seconds (at any of
    its URLs). A run that meets it is left as it is, its lease to lapse, so that a worker goes on
    with it once the server is back; it is not recorded failed (that write could not be made
    either, or would record an outage as the agent's failure)."""


class ScriptError(AgentspanError):
    """A `agentspan.testing.mock_run` script does not fit what the agent did.

    Attributes:
        position: The index of the script entry concerned (``len(script)`` when it ran out).
        entry: That entry, or None when the script ran out.
    """

    def __init__(self, message: str, *, position: int, entry: object = None) -> None:
        super().__init__(message)
        self.position = position
        self.entry = entry


class InvalidExportError(AgentspanError):
    """A run export (``agentspan runs export``) is not valid JSON or not of a known format.

    Attributes:
        field: The JSON path of the offending field (``"format"``, ``"steps[3].kind"``, ...).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RecordedStepFailure(AgentspanError):
    """A replayed step failed in the recorded run: raised again with the recorded error."""


class CassetteError(AgentspanError):
    """A cassette (`agentspan.testing.cassette`) cannot be used: it is missing and recording is
    not allowed, or its file cannot be read.

    Attributes:
        path: The cassette file.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class ForkServerUnavailable(AgentspanError):
    """No crash-test child can be forked here (not Linux, a fork server that did not start or has
    threads): the caller starts a fresh interpreter instead."""


class AgentspanSignal(BaseException):
    """Base of control-flow signals that must unwind through user and framework code."""


class ApprovalPending(AgentspanSignal):
    """A tool call waits for a human decision; the run suspends until it is decided."""

    def __init__(self, run_id: str, approval_id: str, step_key: str) -> None:
        super().__init__(f"run {run_id!r} waits for approval {approval_id!r} (step {step_key!r})")
        self.run_id = run_id
        self.approval_id = approval_id
        self.step_key = step_key


class RunCancelledSignal(AgentspanSignal):
    """The run was cancelled (by a user, or by a rejected approval with ``on_reject="stop"``)."""

    def __init__(self, run_id: str, reason: str | None = None) -> None:
        super().__init__(f"run {run_id!r} cancelled" + (f": {reason}" if reason else ""))
        self.run_id = run_id
        self.reason = reason


class ProcessExiting(AgentspanSignal):
    """A call of a run executing in a background thread (`agentspan.start`, a worker) failed
    while the process was exiting (its main thread ended: no new threads, closed executors). Not
    the call's own failure: it is left in doubt, as at a crash, and the run to its lease."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r}: a call failed as the process exited; the run is left to its lease")
        self.run_id = run_id


class ModelRequestBlocked(AgentspanSignal):
    """A test made a real request to a model provider (Agentspan's pytest plugin blocks them).

    A signal rather than an error, so that SDK retry loops and ``except Exception`` in agent code
    cannot turn it into a silent retry or a message to the model.
    """

    def __init__(self, target: str, test: str | None = None) -> None:
        where = f" in test {test}" if test else ""
        super().__init__(
            f"blocked a real request to a model provider ({target}){where}. Tests run offline: use "
            "agentspan.testing.mock_run(...) or the mock_model fixture, or mark the test "
            "@pytest.mark.agentspan_allow_network (or run pytest --agentspan-allow-network) to let it through"
        )
        self.target = target
        self.test = test


class CassetteMismatch(AgentspanSignal):
    """A request made under a replayed cassette (`agentspan.testing.cassette`) has no recording.

    A signal rather than an error, like `ModelRequestBlocked`: it is raised inside the HTTP
    transport, where an ``Exception`` could be retried by an SDK's retry loop, wrapped into a vague
    connection error, or caught by ``except Exception`` in framework or agent code (a model call
    inside a tool, a fallback model); this one reaches the test with the details.

    Attributes:
        path: The cassette file.
        request: The live request, as ``METHOD URL``.
        closest: The closest recorded request (same method and path first, then the most
            similar body), or None when the cassette is empty.
        field: Where the closest recorded request first differs: ``method``, ``path``, ``query``
            or a JSON path into the body such as ``body.messages[2].content``; None when the
            request matches a recording that was already played back.
        recorded: That field's recorded value.
        live: That field's live value.
    """

    def __init__(self, message: str, *, path: str, request: str, closest: str | None = None,
                 field: str | None = None, recorded: object = None, live: object = None) -> None:
        super().__init__(message)
        self.path = path
        self.request = request
        self.closest = closest
        self.field = field
        self.recorded = recorded
        self.live = live
