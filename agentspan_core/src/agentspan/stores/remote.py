"""The store contract over HTTP: an SDK process talking to an Agentspan server (`agentspan.wire`).

`RemoteStore` is what ``AGENTSPAN_SERVER_URL`` selects. It keeps keep-alive connections (and,
for the step writes of async code, an ``httpx.AsyncClient`` per event loop: `remote_async`),
sends ``Authorization: Bearer <AGENTSPAN_API_KEY>`` when a key is set, and retries with
exponential backoff and jitter on connection errors and 5xx answers, for up to ``retry_for``
seconds. Several server URLs may be given (comma-separated); a failing server makes the client
move on to the next one, so a replica dying mid-run does not stop the run.

A write whose answer was lost (the connection broke after the request went out) may have been
applied. Every operation is therefore retried in a way that is safe to repeat: on a retry, an
answer that means "already done" (a step already completed, a claim already ours, a decision
already recorded as ours) is checked against the server's state and accepted when it matches.

Requests to an ``http://`` server go out on the standard library's `http.client` (`plain_http`:
about a third of httpx's CPU per request); httpx sends the rest (``https://``, credentials in the
URL, a transport given by the caller). Either way each request goes out in one write, headers and
body together (`plain_http`, `one_write`).

One round trip per journaled call: an in-flight marker the caller marks ``durable=False`` (a
tool call whose in-doubt policy is to run again anyway) is held back for up to ``defer_start_for``
seconds. When the call ends sooner, which is most calls, its start and end go to the server as one
`record_step`; a longer call's marker is sent by a timer, so a slow tool still shows as running.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from agentspan import wire
from agentspan.errors import (
    ConfigurationError,
    RunStateError,
    StepNotFound,
)
from agentspan.records import (
    JSON,
    Run,
    RunStatus,
    Step,
    StepResult,
    StepStatus,
)
from agentspan.stores.base import ENDED, Store, check_deletion
from agentspan.stores.deferred import DeferredStarts
from agentspan.stores.held_writes import HOLD_WRITES_FOR, HeldWrites
from agentspan.stores.one_write import one_write_transport
from agentspan.stores.plain_http import Answer
from agentspan.stores.remote_answers import (
    Backoff,
    Retryable,
    checked,
    error_from,
    failed_attempt,
    newest_first_pages,
    parsed,
    seg,
)
from agentspan.stores.remote_async import RemoteAsyncSteps
from agentspan.stores.remote_checkpoints import RemoteCheckpoints
from agentspan.stores.remote_leases import MAX_LIMIT, RemoteLeasesAndApprovals
from agentspan.stores.remote_texts import check_texts, refuse_unstorable, request_json
from agentspan.stores.remote_urls import parsed_url, plain_http_for, query_string, split_urls

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


_OLD_SERVER_BY = "body.by: Extra inputs are not permitted"
"""How a server from before `Store.reopen_run`'s ``by`` refuses it (pydantic's ``extra_forbidden``)."""


class RemoteStore(RemoteAsyncSteps, RemoteCheckpoints, RemoteLeasesAndApprovals, Store):
    """A `Store` served by one or more Agentspan servers.

    Args:
        server_url: ``http://host:port``, or several separated by commas (replicas).
        api_key: Sent as a bearer token; never logged.
        timeout: Seconds per HTTP attempt.
        retry_for: Seconds to keep retrying connection errors and 5xx answers before raising
            `TransportError`.
        transport: An httpx transport (tests pass a mock or an ASGI transport).
        defer_start_for: Seconds a ``durable=False`` start may wait to be merged with its end.
        hold_writes_for: Seconds deferred checkpoint writes (``defer=True``) may wait to be sent
            with their thread's next checkpoint (`remote_checkpoints`); 0 sends them at once.
        async_transport: An httpx async transport for the step writes of async code
            (`remote_async`; tests pass a mock).
    """

    blocking_io = True
    """Calls wait on the network: async callers run them on a worker thread."""

    def __init__(
        self,
        server_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry_for: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        defer_start_for: float = 0.2,
        hold_writes_for: float = HOLD_WRITES_FOR,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if api_key is not None and not all("!" <= char <= "~" for char in api_key):
            raise ConfigurationError(
                "the API key (AGENTSPAN_API_KEY) holds a character an HTTP header cannot carry: a space, a control "
                "character (a line end read from a key file?) or a non-ASCII one (the key is not shown)")
        self.urls = split_urls(server_url)
        self._shown = [str(httpx.URL(u).copy_with(username=None, password=None)) for u in self.urls]
        self.retry_for = retry_for
        self.defer_start_for = defer_start_for
        self._current = 0
        self._deferred = DeferredStarts(defer_start_for, lambda step, epoch: self._send_start(step, epoch, False))
        self._held = HeldWrites(hold_writes_for, self._send_writes)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._plain_headers = [*headers.items(), ("User-Agent", "agentspan")]
        self._plain_json_headers = [*self._plain_headers, ("Content-Type", "application/json")]
        # Loading the CA bundle costs ~20 ms; with no https:// URL there is no TLS to verify at all.
        uses_tls = any(url.startswith("https://") for url in self.urls)
        given = transport is not None
        if transport is None:  # httpx's own, each request sent in one write (`one_write`)
            transport = one_write_transport(verify=uses_tls)
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport, verify=uses_tls)
        self._async_options = {"headers": headers, "timeout": timeout, "verify": uses_tls, "transport": async_transport}
        self._async_clients: dict[Any, httpx.AsyncClient] = {}
        self._plain = [None if given else plain_http_for(url, timeout) for url in self.urls]

    def __repr__(self) -> str:
        return f"RemoteStore({','.join(self._shown)!r})"

    @property
    def shown_urls(self) -> list[str]:
        """The server URLs without their credentials, as errors and ``repr`` name them."""
        return list(self._shown)

    # ---- plumbing -------------------------------------------------------------------------
    def _attempt(self, method: str, path: str, body: BaseModel | None, params: Any) -> Answer:
        # text holding a lone surrogate: refused here as every store refuses it (`remote_texts`)
        content = request_json(body, self._shown[self._current]) if body is not None else None
        plain = self._plain[self._current]
        try:
            if plain is not None:
                client, prefix = plain
                target = prefix + wire.API_PREFIX + path + (query_string(params) if params else "")
                headers = self._plain_headers if content is None else self._plain_json_headers
                response = client.request(method, target, headers, content)
            else:
                response = self._httpx_request(method, path, content, params)
        except httpx.TransportError as exc:
            raise failed_attempt(self._shown[self._current], exc) from exc
        return checked(response, self._shown[self._current])

    def _refuse_unstorable(self, exc: ValidationError) -> None:
        """Raises the stores' `ConfigurationError` for pydantic's refusal, building a request body,
        of text holding a lone surrogate (`remote_texts.refuse_unstorable`); returns for another error."""
        refuse_unstorable(exc, self._shown[self._current])

    def _httpx_request(self, method: str, path: str, content: bytes | None, params: Any) -> Answer:
        url = parsed_url(self.urls[self._current] + wire.API_PREFIX + path)
        headers = {"Content-Type": "application/json"} if content is not None else None
        response = self._http.request(method, url, content=content, params=params, headers=headers)
        where = str(response.request.url.copy_with(username=None, password=None))
        return Answer(response.status_code, response.content, where)

    def _call(
        self,
        method: str,
        path: str,
        body: BaseModel | None = None,
        params: Any = None,
        *,
        already_done: Callable[[BaseException], bool] | None = None,
    ) -> Answer | None:
        """Sends a request, retrying as described in the module docstring.

        Returns the successful response, or None when a retried write was refused with an error
        that ``already_done`` recognises as the effect of an earlier attempt.
        """
        backoff = Backoff(self)
        while True:
            try:
                response = self._attempt(method, path, body, params)
            except Retryable as exc:
                time.sleep(backoff.pause(exc))
                continue
            if response.is_success:
                return response
            error = error_from(response)
            if backoff.maybe_applied and already_done is not None and already_done(error):
                return None
            raise error

    def _get(self, path: str, model: type[_M], params: Any = None) -> _M:
        response = self._call("GET", path, params=params)
        assert response is not None
        return parsed(response, model)

    def _ask(self, method: str, path: str, body: BaseModel, model: type[_M]) -> _M:
        """Sends a body and parses the answer (a read that needs a body)."""
        response = self._call(method, path, body)
        assert response is not None
        return parsed(response, model)

    # ---- runs -----------------------------------------------------------------------------
    def create_run(self, run: Run) -> tuple[Run, bool]:
        def mine(exc: BaseException) -> bool:  # our first attempt inserted it
            return isinstance(exc, ConfigurationError) and self.get_run(run.id).created_at == run.created_at

        response = self._call("POST", "/runs", run, already_done=mine)
        if response is None:
            return self.get_run(run.id), True
        created = parsed(response, wire.CreatedRun)
        return created.run, created.created

    def get_run(self, run_id: str) -> Run:
        return self._get(f"/runs/{seg(run_id)}", Run)

    def list_runs(self, *, status: RunStatus | None = None, agent: str | None = None, limit: int = 100,
                  session_id: str | None = None, before: str | None = None) -> list[Run]:
        """See `Store.list_runs`: ``GET /api/runs``, one page of at most `MAX_LIMIT` runs per
        request; a larger (or negative: no) limit asks for the next, older, page after the last
        run received (``before``) until the limit or the oldest run, as the embedded stores answer.

        Raises:
            ConfigurationError: ``before`` was given and the server ignored it (a server older than
                paging answers the newest runs instead).
        """
        def page(want: int, after: str | None) -> list[Run]:
            params = {k: v for k, v in (("status", status), ("agent", agent), ("limit", want),
                                        ("session_id", session_id), ("before", after)) if v is not None}
            return self._get("/runs", wire.RunList, params).runs

        return newest_first_pages(page, limit=limit, before=before, page_size=MAX_LIMIT, what="runs")

    def update_run(self, run_id: str, *, epoch: int, status: RunStatus | None = None, output: JSON = None,
                   error: str | None = None, release_lease: bool = False) -> Run:
        body = wire.UpdateRun(epoch=epoch, status=status, output=output, error=error, release_lease=release_lease)
        response = self._call("PATCH", f"/runs/{seg(run_id)}", body)
        assert response is not None
        return parsed(response, Run)

    def cancel_run(self, run_id: str, *, reason: str | None = None) -> Run:
        def done(exc: BaseException) -> bool:
            return isinstance(exc, RunStateError) and self.get_run(run_id).status is RunStatus.CANCELLED

        response = self._call("POST", f"/runs/{seg(run_id)}/cancel", wire.CancelRun(reason=reason), already_done=done)
        return self.get_run(run_id) if response is None else parsed(response, Run)

    def delete_runs(
        self, *, ended_before: float, statuses: Sequence[RunStatus] = ENDED, limit: int = 1000
    ) -> list[str]:
        """See `Store.delete_runs` (``POST /api/runs/prune``; the API key needs the admin role).

        The arguments are checked first, so bad ones raise before any request. An infinite
        ``ended_before`` (JSON has none) is sent as the largest finite number, which selects the
        same runs; NaN deletes nothing (nothing is before it), as in the embedded stores, and sends
        nothing.

        Not idempotent in its answer: a request whose answer was lost is retried like every call,
        and the retry answers only the runs it deleted itself, not those the lost attempt deleted
        (gone all the same). When the lost attempt reached ``limit``, the retry deletes up to
        ``limit`` more (the next oldest that match): everything deleted matched the request.

        Raises:
            ConfigurationError: As `check_deletion`.
            AuthError: The API key lacks the admin role.
        """
        wanted = check_deletion(statuses, limit)
        if not wanted or math.isnan(ended_before):
            return []
        before = math.copysign(sys.float_info.max, ended_before) if math.isinf(ended_before) else ended_before
        body = wire.DeleteRuns(ended_before=before, statuses=[RunStatus(s) for s in wanted], limit=limit)
        return self._ask("POST", "/runs/prune", body, wire.DeletedRuns).deleted

    def reopen_run(self, run_id: str, *, owner: str | None, lease_expires_at: float | None,
                   options: Mapping[str, JSON] | None = None, by: str | None = None) -> Run:
        """See `Store.reopen_run` (``POST /api/runs/{run_id}/reopen``).

        A retry after a lost answer is refused (the run is no longer ``failed``); the refusal is
        taken as our reopen when the run now has the status and owner this call gives it.
        """
        status = RunStatus.PENDING if owner is None else RunStatus.RUNNING

        def done(exc: BaseException) -> bool:
            if not isinstance(exc, RunStateError):
                return False
            run = self.get_run(run_id)
            return run.status is status and (owner is None or run.lease_owner == owner)

        body = wire.ReopenRun(owner=owner, lease_expires_at=lease_expires_at,
                              options=None if options is None else dict(options), by=by)  # fmt: skip
        try:
            response = self._call("POST", f"/runs/{seg(run_id)}/reopen", body, already_done=done)
        except ConfigurationError as exc:
            if by is None or _OLD_SERVER_BY not in str(exc):  # (a `by` the server checked and refused: raised)
                raise
            # a server older than `by` refuses the field (its 422 changed nothing): sent again
            # without it, the server records the key's role, or nobody. A refusal of the run's
            # state then may be an earlier try of this reopen applied by a newer replica
            body = body.model_copy(update={"by": None})
            try:
                response = self._call("POST", f"/runs/{seg(run_id)}/reopen", body, already_done=done)
            except RunStateError as refused:
                if not done(refused):
                    raise
                response = None
        return self.get_run(run_id) if response is None else parsed(response, Run)

    # ---- steps ----------------------------------------------------------------------------
    def start_step(self, step: Step, *, epoch: int, durable: bool = True) -> None:
        if durable or not self._deferred.hold(step, epoch):
            self._send_start(step, epoch, durable)

    def _send_start(self, step: Step, epoch: int, durable: bool) -> None:
        self._call("POST", f"/runs/{seg(step.run_id)}/steps/start",
                   wire.StartStep(step=step, epoch=epoch, durable=durable),
                   already_done=self._step_done(step.run_id, step.key, StepStatus.STARTED))

    def finish_step(self, run_id: str, key: str, result: StepResult, *, epoch: int) -> None:
        held = self._deferred.take(run_id, key)
        if held is not None:
            self.record_step(held[0], result, epoch=epoch)
            return
        try:  # (free unless raised)
            body = wire.FinishStep(key=key, result=result, epoch=epoch)
        except ValidationError as exc:
            self._refuse_unstorable(exc)
            raise
        self._call("POST", f"/runs/{seg(run_id)}/steps/finish", body,
                   already_done=self._step_done(run_id, key, result.status))

    def record_step(self, step: Step, result: StepResult, *, epoch: int) -> None:
        self._call("POST", f"/runs/{seg(step.run_id)}/steps/record",
                   wire.RecordStep(step=step, result=result, epoch=epoch),
                   already_done=self._step_done(step.run_id, step.key, result.status))

    def _step_done(self, run_id: str, key: str, status: StepStatus) -> Callable[[BaseException], bool]:
        """Whether a refused retry of a step write found the step as our earlier attempt left it."""

        def done(exc: BaseException) -> bool:
            if not isinstance(exc, (ConfigurationError, StepNotFound)):
                return False
            found = [s for s in self.list_steps(run_id) if s.key == key]
            return bool(found) and found[0].status in (status, StepStatus.COMPLETED)

        return done

    def list_steps(self, run_id: str) -> list[Step]:
        return self._get(f"/runs/{seg(run_id)}/steps", wire.StepList).steps

    def supersede_steps(self, run_id: str, keys: Sequence[str], *, prefix: str, reason: str, epoch: int) -> None:
        """See `Store.supersede_steps`.

        Starts of those steps still held back (``durable=False``) are written first, so the server
        finds every step the caller started. A retried request is harmless: the steps moved by an
        attempt whose answer was lost are skipped.
        """
        if not prefix:
            raise ConfigurationError("supersede_steps needs a non-empty prefix")
        try:
            body = wire.SupersedeSteps(keys=list(keys), prefix=prefix, reason=reason, epoch=epoch)
        except ValidationError as exc:
            self._refuse_unstorable(exc)
            raise
        check_texts(body, self._shown[self._current])  # refused before the held starts go out
        for key in dict.fromkeys(keys):
            held = self._deferred.take(run_id, key)
            if held is not None:
                self._send_start(held[0], held[1], False)
        self._call("POST", f"/runs/{seg(run_id)}/steps/supersede", body)

    # ---- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Sends the held checkpoint writes, drops held step starts and closes the connections."""
        self._deferred.close(write=False)
        try:
            self._held.close()
        finally:
            for plain in self._plain:
                if plain is not None:
                    plain[0].close()
            self._http.close()
            self._close_async_clients()
