"""Slack approvals: each new approval is posted to a channel and decided with its buttons.

`SlackSettings.from_env` reads the ``AGENTSPAN_SLACK_*`` variables (Slack is off unless they are
set). `install_slack` adds ``POST /slack/interactions`` to an app and returns the `SlackApprovals`
that posts a message (Web API ``chat.postMessage``) for each approval newly requested through the
server. The message's Approve/Reject buttons come back to ``/slack/interactions``, authenticated by
Slack's request signature instead of an API key (`exempt_interactions`). Only a Slack user listed in
``AGENTSPAN_SLACK_APPROVERS`` may decide, with the rules of the web UI and the CLI (decided once,
expiry), recorded ``by`` ``slack:<name> (<member id>)``. Every call to Slack runs in the
background: a Slack failure is logged and never fails or delays an API request; a post that failed
for a passing reason (no connection, a timeout, HTTP 429 or 5xx) is tried again a few times within
about a minute. The messages are built by `agentspan_server.slack_messages`.

An approval is posted once across every server process sharing the store (replicas, restarts):
before posting, the process claims the approval's announcement in the store
(`Store.claim_announcement`); only the first claimant posts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from agentspan import errors
from agentspan.approvals import decide_by_id
from agentspan.leases import owner_id
from agentspan.records import Approval
from agentspan.secrets import redact_url
from agentspan.stores.base import Store, call_store
from agentspan.wire import Role
from agentspan_server.problems import new_problem, problem_response
from agentspan_server.slack_messages import APPROVE as APPROVE  # re-exported
from agentspan_server.slack_messages import REJECT as REJECT  # re-exported
from agentspan_server.slack_messages import SlackAction, decided_message, ephemeral, parse_action, request_message
from agentspan_server.slack_messages import approval_blocks as approval_blocks  # re-exported
from agentspan_server.slack_messages import escape as escape  # re-exported

log = logging.getLogger("agentspan")

INTERACTIONS_PATH = "/slack/interactions"
DEFAULT_API_URL = "https://slack.com/api"
MAX_SKEW = 300
"""Oldest (or furthest in the future) request timestamp accepted, in seconds."""
_ENV = {"bot_token": "AGENTSPAN_SLACK_BOT_TOKEN", "channel": "AGENTSPAN_SLACK_CHANNEL",
        "signing_secret": "AGENTSPAN_SLACK_SIGNING_SECRET", "approvers": "AGENTSPAN_SLACK_APPROVERS"}  # fmt: skip
_API_URL_ENV = "AGENTSPAN_SLACK_API_URL"
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_TIMEOUT = httpx.Timeout(5.0)
RETRY_DELAYS = (1.0, 3.0, 8.0, 20.0)
"""Seconds between the attempts to post an approval (5 attempts; with their 5 s timeouts, within
about a minute). A 429's ``Retry-After`` is waited for instead when it is longer."""
RETRY_WITHIN = 60.0
"""The attempts to post an approval stop once a wait would end later than this after the first."""
_PASSING = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})
"""Slack Web API errors that may pass: worth another attempt."""
_REMEMBERED = 10_000


@dataclass(frozen=True)
class SlackSettings:
    """Where and how approvals go to Slack (secrets stay out of ``repr``).

    Raises:
        ConfigurationError: A setting is empty, an approver is not a Slack user id, or the API URL
            is not http(s); the message names the variable, never a secret.
    """

    bot_token: str = field(repr=False)
    """The bot's ``xoxb-`` token (scope ``chat:write``)."""
    channel: str
    """The id of the channel approvals are posted to."""
    signing_secret: str = field(repr=False)
    """The app's signing secret, to verify interaction requests."""
    approvers: frozenset[str]
    """The Slack user ids allowed to approve or reject."""
    api_url: str = DEFAULT_API_URL
    """The Slack Web API's base URL."""

    def __post_init__(self) -> None:
        missing = [_ENV[name] for name in ("bot_token", "channel", "signing_secret") if not getattr(self, name).strip()]
        object.__setattr__(self, "approvers", frozenset(a.strip() for a in self.approvers if a.strip()))
        if not self.approvers:
            missing.append(_ENV["approvers"])
        if missing:
            raise errors.ConfigurationError(f"Slack approvals are configured incompletely: set {', '.join(missing)}")
        if not all(_USER_ID.fullmatch(a) for a in self.approvers):
            raise errors.ConfigurationError(
                f"{_ENV['approvers']} must list Slack user ids (like U012AB3CD: profile > Copy member ID), not names"
            )
        parts = urlsplit(self.api_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise errors.ConfigurationError(f"{_API_URL_ENV} must be an http(s) URL such as {DEFAULT_API_URL}")
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlackSettings | None:
        """Reads the settings from ``AGENTSPAN_SLACK_*`` variables.

        Args:
            env: The environment (default: ``os.environ``).

        Returns:
            The settings, or None when no Slack variable is set (Slack is off).

        Raises:
            ConfigurationError: Some variables are set but not all (the message names the missing ones).
        """
        source = os.environ if env is None else env
        values = {name: source.get(var, "").strip() for name, var in _ENV.items()}
        if not any(values.values()):
            return None
        approvers = frozenset(values.pop("approvers").split(","))
        return cls(**values, approvers=approvers, api_url=source.get(_API_URL_ENV, "").strip() or DEFAULT_API_URL)


# ---- interactions -----------------------------------------------------------------------------
def exempt_interactions(required_role: Callable[[Scope], Role | None]) -> Callable[[Scope], Role | None]:
    """Wraps an app's ``required_role``: ``/slack/interactions`` (and only it) needs no API key, as
    it checks Slack's request signature itself."""

    def role(scope: Scope) -> Role | None:
        return None if scope["path"] == INTERACTIONS_PATH else required_role(scope)

    return role


class SlackApprovals:
    """Slack approvals of one app: posts new approvals, answers button clicks.

    Args:
        store: The store decisions are written to.
        settings: The Slack settings.
    """

    def __init__(self, store: Store, settings: SlackSettings) -> None:
        self.store = store
        self.settings = settings
        self._tasks: set[asyncio.Task[object]] = set()
        self._waiting: set[asyncio.Task[Any]] = set()  # tasks between two attempts: a stop cancels them at once
        self._posted: OrderedDict[str, None] = OrderedDict()  # approval ids already posted (a bounded memory)
        self._claimant = f"slack:{owner_id()}:{uuid.uuid4().hex[:12]}"  # new in every process, pid 1 too
        self.retry_delays: tuple[float, ...] = RETRY_DELAYS
        """The waits between attempts to post an approval (`RETRY_DELAYS`)."""
        self.retry_within = RETRY_WITHIN
        """The attempts stop once a wait would end later than this after the first (`RETRY_WITHIN`)."""

    @property
    def in_flight(self) -> int:
        """How many calls to Slack are still running in the background."""
        return len(self._tasks)

    def approval_requested(self, requested: Approval, stored: Approval) -> None:
        """Posts ``stored`` to Slack in the background if it is the approval just requested (not one
        that existed for the step, nor a retry of a request already posted, here or by another
        server process). Call on the event loop."""
        if stored.id != requested.id or stored.id in self._posted:
            return
        self._posted[stored.id] = None
        if len(self._posted) > _REMEMBERED:
            self._posted.popitem(last=False)
        self._spawn(self._announce(stored))

    async def _announce(self, approval: Approval) -> None:
        """Claims the approval's announcement in the store, then posts it if the claim is ours.

        A store that fails to record the claim does not stop the post (a second message, deciding
        the same approval, is better than none).
        """
        try:
            ours = await call_store(self.store, self.store.claim_announcement, approval.id, claimant=self._claimant)
        except errors.AgentspanError as exc:
            log.warning("Slack: claiming the announcement of approval %s failed (%s); posting it anyway",
                        approval.id, exc)  # fmt: skip
            ours = True
        if not ours:
            log.info("Slack: approval %s is posted by another server process (it claimed it first)", approval.id)
            return
        url = f"{self.settings.api_url}/chat.postMessage"
        body = request_message(approval, self.settings.channel)
        what = f"posting approval {approval.id} to Slack"
        started = time.monotonic()
        try:
            for delay in (*self.retry_delays, None):
                retry_after = await self._send(what, url, body, token=True, final=delay is None)
                if retry_after is None or delay is None:
                    return
                wait = max(delay, retry_after)
                if time.monotonic() + wait - started > self.retry_within:
                    log.warning("Slack: gave up %s (Slack asks to wait %.0f s more); decide it from the web UI, "
                                "CLI or API", what, wait)  # fmt: skip
                    return
                task = asyncio.current_task()
                assert task is not None  # a coroutine of a task (`_spawn`)
                self._waiting.add(task)
                try:
                    await asyncio.sleep(wait)
                finally:
                    self._waiting.discard(task)
        except asyncio.CancelledError:  # the server stops: the message is lost
            log.warning("Slack: %s stopped at shutdown; decide it from the web UI, CLI or API", what)
            raise

    def _spawn(self, call: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Waits (up to ``timeout`` seconds) for the calls to Slack still running, then cancels the rest
        (a post waiting to be tried again is cancelled at once)."""
        for task in self._waiting:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()

    async def _send(self, what: str, url: str, body: dict[str, Any], *, token: bool,
                    final: bool = True) -> float | None:  # fmt: skip
        """POSTs JSON to Slack; logs when it fails (never the token, the URL's path or credentials).

        Returns:
            None when done (posted, or failed for good); when the failure may pass (no connection, a
            timeout, HTTP 429 or 5xx, Slack's ``ratelimited``), the seconds Slack asks to wait
            (``Retry-After``, else 0). A failure is a warning when ``final``, else logged at INFO.
        """
        headers = {"Authorization": f"Bearer {self.settings.bot_token}"} if token else {}
        retry_after: float | None = None
        try:
            async with httpx.AsyncClient(timeout=_TIMEOUT, follow_redirects=False) as client:
                response = await client.post(url, json=body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
            if response.status_code == 429 or response.status_code >= 500:
                retry_after = _seconds(response.headers.get("retry-after"))
            answer = response.json() if error is None and "json" in response.headers.get("content-type", "") else None
            if isinstance(answer, dict) and answer.get("ok") is False:
                error = f"Slack answered {str(answer.get('error'))[:100]!r}"
                if answer.get("error") in _PASSING:
                    retry_after = _seconds(response.headers.get("retry-after"))
        except Exception as exc:  # a background task: report everything, raise nothing
            error = f"{type(exc).__name__}: {str(exc)[:200]}".replace(url, "<url>")
            retry_after = 0.0 if isinstance(exc, httpx.TransportError) else None
        if error is None:
            return None
        parts = urlsplit(url)
        # the host only: the path may be a secret (a response_url), the userinfo a proxy's password
        host = redact_url(f"{parts.scheme}://{parts.netloc}")
        final = final or retry_after is None
        log.log(logging.WARNING if final else logging.INFO, "Slack: %s failed (%s): %s%s", what, host, error,
                "" if final else "; trying again")  # fmt: skip
        return None if final else retry_after

    async def interactions(self, request: Request) -> Response:
        """``POST /slack/interactions``: verifies the signature, decides, answers 200 at once.

        The decision is written before answering; the message update (or the ephemeral reply) goes
        to the payload's ``response_url`` in the background.
        """
        body = await request.body()
        if not self._signed(request.headers, body):
            log.info("Slack: refused an interaction request with a missing, stale or wrong signature")
            problem = new_problem(401, "Unauthorized", "missing, stale or invalid Slack request signature", "AuthError")
            return problem_response(problem)
        try:
            action = parse_action(body)
        except ValueError as exc:
            return problem_response(new_problem(400, "Bad Request", f"malformed Slack payload: {exc}",
                                                "ConfigurationError"))  # fmt: skip
        if action is not None:
            if action.user_id in self.settings.approvers:
                reply = await anyio.to_thread.run_sync(functools.partial(self._decide, action))
            else:
                log.info("Slack: user %s, not an approver, tried to decide approval %s", action.user_id,
                         action.approval_id[:100])  # fmt: skip
                reply = ephemeral("You are not an Agentspan approver, so you may not approve or reject tool calls.")
            self._spawn(self._send(f"answering a Slack action on approval {action.approval_id[:100]}",
                                   action.response_url, reply, token=False))  # fmt: skip
        return Response(status_code=200)

    def _signed(self, headers: Headers, body: bytes) -> bool:
        """Whether the request carries Slack's ``v0`` signature of this body, made within `MAX_SKEW`."""
        timestamp = headers.get("x-slack-request-timestamp", "")
        if not re.fullmatch(r"[0-9]{1,12}", timestamp) or abs(time.time() - int(timestamp)) > MAX_SKEW:
            return False
        base = b"v0:" + timestamp.encode() + b":" + body
        expected = "v0=" + hmac.new(self.settings.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), headers.get("x-slack-signature", "").encode("latin-1"))

    def _decide(self, action: SlackAction) -> dict[str, Any]:
        """Decides through the core's `decide_by_id` (once; an expired approval is refused there);
        returns the reply for Slack."""
        aid = action.approval_id[:100]
        # the name is the payload's (a user may change it; another may take it later): the member
        # id, the one checked against the approvers, goes with it into the trail
        decider = f"{action.user_name} ({action.user_id})"
        reason = None if action.approve else f"rejected in Slack by {decider}"
        try:
            decided = decide_by_id(self.store, action.approval_id, approved=action.approve,
                                   by=f"slack:{decider}", reason=reason)  # fmt: skip
        except errors.ApprovalNotFound:
            return ephemeral(f"There is no approval {aid}.")
        except errors.ApprovalConflict as exc:
            return ephemeral(f"Not decided: {exc}.")
        except errors.AgentspanError as exc:
            log.warning("Slack: deciding approval %s failed: %s", aid, exc)
            return ephemeral("The store failed while deciding; try again in a moment.")
        return decided_message(decided, action.approve, decider)


def _seconds(header: str | None) -> float:
    """A ``Retry-After`` header's delay in seconds (0 when missing or not a number of seconds)."""
    try:
        seconds = float(header or 0)
    except ValueError:
        return 0.0
    return seconds if 0 <= seconds < 86_400 else 0.0


def install_slack(app: FastAPI, store: Store, settings: SlackSettings) -> SlackApprovals:
    """Adds Slack approvals to an app: ``POST /slack/interactions`` (outside the OpenAPI document).

    The app must call `SlackApprovals.approval_requested` after each ``request_approval``, and
    authenticate requests with `exempt_interactions` around its ``required_role``.

    Args:
        app: The app.
        store: The store decisions are written to.
        settings: The Slack settings.

    Returns:
        The Slack approvals (also kept as ``app.state.slack``); the app's shutdown waits for their
        calls to Slack still running.
    """
    slack = SlackApprovals(store, settings)
    app.state.slack = slack
    app.add_api_route(INTERACTIONS_PATH, slack.interactions, methods=["POST"], include_in_schema=False)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                yield state
            finally:
                await slack.aclose()

    app.router.lifespan_context = lifespan
    return slack
