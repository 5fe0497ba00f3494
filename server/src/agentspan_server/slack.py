"""Slack approvals: each new approval is posted to a channel and decided with its buttons.

`SlackSettings.from_env` reads the ``AGENTSPAN_SLACK_*`` variables (Slack is off unless they are
set). `install_slack` adds ``POST /slack/interactions`` to an app and returns the `SlackApprovals`
that posts a message (Web API ``chat.postMessage``) for each approval newly requested through the
server. The message's Approve/Reject buttons come back to ``/slack/interactions``, authenticated by
Slack's request signature instead of an API key (`exempt_interactions`). Only a Slack user listed in
``AGENTSPAN_SLACK_APPROVERS`` may decide, with the rules of the web UI and the CLI (decided once,
expiry), recorded ``by`` ``slack:<name>``. Every call to Slack runs in the background: a Slack
failure is logged and never fails or delays an API request. User-supplied text in a message is
escaped for Slack mrkdwn.

An approval is posted once across every server process sharing the store (replicas, restarts):
before posting, the process claims the approval's announcement in the store
(`Store.claim_announcement`); only the first claimant posts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
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
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from agentspan import errors
from agentspan.approvals import decide_by_id, is_in_doubt_question
from agentspan.jsontext import utf8_text
from agentspan.leases import owner_id
from agentspan.records import Approval
from agentspan.stores.base import Store, call_store
from agentspan.wire import Role
from agentspan_server.problems import new_problem, problem_response

log = logging.getLogger("agentspan")

INTERACTIONS_PATH = "/slack/interactions"
APPROVE, REJECT = "agentspan_approve", "agentspan_reject"
DEFAULT_API_URL = "https://slack.com/api"
MAX_SKEW = 300
"""Oldest (or furthest in the future) request timestamp accepted, in seconds."""
MAX_ARGS_CHARS = 2500
_ENV = {"bot_token": "AGENTSPAN_SLACK_BOT_TOKEN", "channel": "AGENTSPAN_SLACK_CHANNEL",
        "signing_secret": "AGENTSPAN_SLACK_SIGNING_SECRET", "approvers": "AGENTSPAN_SLACK_APPROVERS"}  # fmt: skip
_API_URL_ENV = "AGENTSPAN_SLACK_API_URL"
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_TIMEOUT = httpx.Timeout(5.0)
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


# ---- messages ---------------------------------------------------------------------------------
def escape(text: str, limit: int = 200) -> str:
    """Escapes Slack mrkdwn's control characters (``&``, ``<``, ``>``), clipped to ``limit`` characters."""
    out: list[str] = []
    size = 0
    for char in text:
        piece = _ESCAPES.get(char, char)
        size += len(piece)
        if size > limit:
            out.append("… (truncated)")
            break
        out.append(piece)
    return "".join(out)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def approval_blocks(approval: Approval) -> list[dict[str, Any]]:
    """The message blocks describing an approval (its tool, run, step and arguments), without buttons."""
    args = utf8_text(json.dumps(approval.args, indent=2, ensure_ascii=False)).replace("```", "`\u200b`\u200b`")
    facts = (f"*Approval needed:* `{escape(approval.tool)}`\n*Run:* `{escape(approval.run_id)}`\n"
             f"*Step:* `{escape(approval.step_key)}`")  # fmt: skip
    if is_in_doubt_question(approval):
        facts += "\n*Asks to run it again:* a process died while it ran; it may have taken effect"
    if approval.expires_at is not None:
        facts += "\n*Expires:* " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(approval.expires_at))
    return [_section(facts), _section(f"*Arguments:*\n```\n{escape(args, MAX_ARGS_CHARS)}\n```")]


def request_message(approval: Approval, channel: str) -> dict[str, Any]:
    """The ``chat.postMessage`` body asking to decide an approval (buttons carry its id)."""

    def button(action_id: str, label: str, style: str) -> dict[str, Any]:
        text = {"type": "plain_text", "text": label}
        return {"type": "button", "action_id": action_id, "text": text, "style": style, "value": approval.id}

    actions = {"type": "actions", "block_id": "agentspan_decision",
               "elements": [button(APPROVE, "Approve", "primary"), button(REJECT, "Reject", "danger")]}  # fmt: skip
    text = f"Approval needed: {escape(approval.tool)} (run {escape(approval.run_id)})"
    return {"channel": channel, "text": text, "blocks": [*approval_blocks(approval), actions]}


def _ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "replace_original": False, "text": escape(text, 2900)}


# ---- interactions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SlackAction:
    """One click on an Agentspan button, from a ``block_actions`` payload."""

    user_id: str
    user_name: str
    approve: bool
    approval_id: str
    response_url: str


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def parse_action(body: bytes) -> SlackAction | None:
    """Reads a form-encoded interaction request; None when it is no click on an Agentspan button.

    Raises:
        ValueError: The body has no ``payload`` JSON object, or it misses the user, actions or
            ``response_url`` (or the value of an Agentspan button).
    """
    found = parse_qs(body.decode("utf-8"), keep_blank_values=True).get("payload")
    if not found or len(found) != 1:
        raise ValueError("no payload field")
    try:
        payload = json.loads(found[0])
    except RecursionError:  # nested deeper than the interpreter's recursion limit
        raise ValueError("the payload is nested too deeply") from None
    if not isinstance(payload, dict):
        raise ValueError("the payload is not a JSON object")
    if payload.get("type") != "block_actions":
        return None
    user, actions, response_url = payload.get("user"), payload.get("actions"), payload.get("response_url")
    if not isinstance(user, dict) or not _text(user.get("id")) or not isinstance(actions, list):
        raise ValueError("the payload has no user id or actions")
    ours = [a for a in actions if isinstance(a, dict) and a.get("action_id") in (APPROVE, REJECT)]
    if not ours:
        return None
    if not _text(ours[0].get("value")):
        raise ValueError("the action has no approval id")
    if not isinstance(response_url, str) or urlsplit(response_url).scheme not in ("http", "https"):
        raise ValueError("the payload has no http(s) response_url")
    names = [n for n in (user.get("username"), user.get("name")) if isinstance(n, str) and n.strip()]
    raw_name: str = names[0] if names else user["id"]
    name = " ".join("".join(c for c in raw_name if c.isprintable()).split())[:80] or user["id"]
    return SlackAction(user["id"], name, ours[0]["action_id"] == APPROVE, ours[0]["value"], response_url)


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._posted: OrderedDict[str, None] = OrderedDict()  # approval ids already posted (a bounded memory)
        self._claimant = f"slack:{owner_id()}:{uuid.uuid4().hex[:12]}"  # new in every process, pid 1 too

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
        await self._send(f"posting approval {approval.id} to Slack", url, body, token=True)

    def _spawn(self, call: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Waits (up to ``timeout`` seconds) for the calls to Slack still running, then cancels the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()

    async def _send(self, what: str, url: str, body: dict[str, Any], *, token: bool) -> None:
        """POSTs JSON to Slack; logs a warning (never the token or the URL's path) when it fails."""
        headers = {"Authorization": f"Bearer {self.settings.bot_token}"} if token else {}
        try:
            async with httpx.AsyncClient(timeout=_TIMEOUT, follow_redirects=False) as client:
                response = await client.post(url, json=body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
            answer = response.json() if error is None and "json" in response.headers.get("content-type", "") else None
            if isinstance(answer, dict) and answer.get("ok") is False:
                error = f"Slack answered {str(answer.get('error'))[:100]!r}"
        except Exception as exc:  # a background task: report everything, raise nothing
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        if error is not None:
            log.warning("Slack: %s failed (%s): %s", what, urlsplit(url).netloc, error)

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
                reply = _ephemeral("You are not an Agentspan approver, so you may not approve or reject tool calls.")
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
        reason = None if action.approve else f"rejected in Slack by {action.user_name}"
        try:
            decided = decide_by_id(self.store, action.approval_id, approved=action.approve,
                                   by=f"slack:{action.user_name}", reason=reason)  # fmt: skip
        except errors.ApprovalNotFound:
            return _ephemeral(f"There is no approval {aid}.")
        except errors.ApprovalConflict as exc:
            return _ephemeral(f"Not decided: {exc}.")
        except errors.AgentspanError as exc:
            log.warning("Slack: deciding approval %s failed: %s", aid, exc)
            return _ephemeral("The store failed while deciding; try again in a moment.")
        verb = "Approved" if action.approve else "Rejected"
        outcome = f"{':white_check_mark:' if action.approve else ':x:'} *{verb}* by {escape(action.user_name)}"
        blocks = [*approval_blocks(decided), {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]}]
        text = f"{verb} by {escape(action.user_name)}: {escape(decided.tool)} (run {escape(decided.run_id)})"
        return {"replace_original": True, "text": text, "blocks": blocks}


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
