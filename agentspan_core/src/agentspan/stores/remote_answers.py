"""How `RemoteStore` retries a call and reads a server's answer (shared by its sync and async calls)."""

from __future__ import annotations

import json
import random
import re
import shlex
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import quote, unquote

import httpx
from pydantic import BaseModel, ValidationError

from agentspan import wire
from agentspan.errors import ConfigurationError, ServerUnreachable, TransportError
from agentspan.jsontext import parse_model
from agentspan.stores.plain_http import Answer

if TYPE_CHECKING:
    from agentspan.stores.remote import RemoteStore

__all__ = [
    "RETRYABLE_STATUS", "Backoff", "Retryable", "checked", "detail", "error_from", "failed_attempt",
    "newest_first_pages", "parsed", "seg",
]  # fmt: skip

RETRYABLE_STATUS = frozenset({502, 503, 504})
"""Answers worth another attempt (a 500 is a bug, not a passing state: not retried)."""


class Retryable(Exception):
    """An attempt failed in a way worth retrying; ``sent`` tells whether it may have been applied."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def failed_attempt(where: str, exc: httpx.TransportError) -> Retryable:
    """The retryable failure an httpx error stands for: a connection that could not be made sent
    nothing; any later error may have come after the request was applied."""
    if isinstance(exc, httpx.ConnectError):
        return Retryable(f"cannot connect to {where}: {exc}", sent=False)
    return Retryable(f"{where} failed mid-request: {exc}", sent=True)


def checked(answer: Answer, where: str) -> Answer:
    """``answer``, unless its status is worth another attempt.

    Raises:
        Retryable: A 502, 503 or 504 from ``where``.
    """
    if answer.status_code in RETRYABLE_STATUS:
        raise Retryable(f"{where} answered {answer.status_code}: {detail(answer)}", sent=True)
    return answer


class Backoff:
    """One call's retries: exponential backoff with jitter, moving on to the next server URL.

    Args:
        store: The store making the call (its ``urls``, ``retry_for`` and current URL).
    """

    def __init__(self, store: RemoteStore) -> None:
        self.store = store
        self.deadline = time.monotonic() + store.retry_for
        self.delay = 0.05
        self.maybe_applied = False
        """Whether an attempt may have been applied (its request went out)."""

    def pause(self, failure: Retryable) -> float:
        """Seconds to wait before the next attempt after ``failure``.

        Raises:
            ServerUnreachable: ``retry_for`` is spent.
        """
        store = self.store
        self.maybe_applied = self.maybe_applied or failure.sent
        if len(store.urls) > 1:
            store._current = (store._current + 1) % len(store.urls)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ServerUnreachable(f"Agentspan server unreachable after {store.retry_for:g}s: {failure}") from None
        pause = min(remaining, self.delay * (0.5 + random.random()))
        self.delay = min(self.delay * 2, 2.0)
        return pause


def seg(value: str) -> str:
    """Escapes one path segment (step keys hold ``/`` and ``:``).

    Raises:
        ConfigurationError: The value is not valid UTF-8 text (a lone surrogate): no URL holds it.
    """
    try:
        return quote(value, safe="")
    except UnicodeEncodeError:
        raise ConfigurationError(f"{value!r} is not valid UTF-8 text (it holds a lone surrogate)") from None


def detail(response: Answer) -> str:
    """The ``detail`` of a problem answer (else the start of its body), for messages."""
    try:
        return str(json.loads(response.content).get("detail", response.text[:200]))
    except (ValueError, AttributeError):
        return response.text[:200]


def error_from(response: Answer) -> BaseException:
    """The `agentspan.errors` exception a non-2xx answer stands for (its ``status`` attribute is
    the HTTP status)."""
    try:
        problem = wire.Problem.model_validate_json(response.content)
    except ValidationError:
        error: BaseException = TransportError(
            f"unexpected answer {response.status_code} from {response.url}: {response.text[:200]}")
    else:
        if response.status_code == 413:
            problem = problem.model_copy(update={"detail": _too_large(problem.detail, response.url)})
        error = wire.error_of(problem)
    error.status = response.status_code  # type: ignore[attr-defined]
    return error


_STEP_WRITE = re.compile(r"/runs/([^/?]+)/steps/")


def _too_large(detail: str | None, url: str) -> str:
    """A 413's message, with what to do: the server's limit is its ``--max-body-bytes``; a step
    write refused so fails its run, which a retry on a server taking more goes on with."""
    said = detail or "the request body is too large"
    found = _STEP_WRITE.search(url)
    if found is None:
        return f"{said} (the server's --max-body-bytes)"
    run_id = unquote(found.group(1))
    return (f"{said}: a step of run {run_id!r} is larger than the server takes; start the server with a larger "
            f"--max-body-bytes, then retry the run (agentspan runs retry {shlex.quote(run_id)})")


_M = TypeVar("_M", bound=BaseModel)


def parsed(response: Answer, model: type[_M]) -> _M:
    """A successful answer's body as ``model``.

    Raises:
        TransportError: The body is not a valid ``model`` (the server is not an Agentspan server of
            this version, or a proxy answered).
    """
    try:
        return parse_model(model, response.content)
    except ValidationError as exc:
        raise TransportError(f"malformed answer from {response.url}: {exc}") from exc


class _Keyed(Protocol):
    id: str


_K = TypeVar("_K", bound=_Keyed)


def newest_first_pages(fetch: Callable[[int, str | None], list[_K]], *, limit: int, before: str | None,
                       page_size: int, what: str) -> list[_K]:
    """Up to ``limit`` items (negative: all) of a newest-first listing read in keyset pages.

    Args:
        fetch: One request: ``(how many, before)`` to a page of items (``before`` None: left out of
            the request, so a server older than paging still answers a first page).
        limit: How many items in all (negative: every one).
        before: Where the listing starts (an item's id, or any position), or None.
        page_size: The largest page the server answers.
        what: The listing, as its URL names it (``runs``, ``approvals``), for the error.

    Raises:
        ConfigurationError: ``before`` was given and the server ignored it (a server older than
            paging answers the newest items instead).
    """
    items: list[_K] = []
    asked = before
    while True:
        want = page_size if limit < 0 else min(limit - len(items), page_size)
        page = fetch(want, before)
        if before is not None and page and page[0].id >= before:  # an older server drops unknown params
            if before == asked:
                raise ConfigurationError(f"the server ignores before= in GET /api/{what} (it predates "
                                         f"paging through {what}); upgrade agentspan-server")
            return items  # its first page, as that server answers a larger limit
        items += page
        if len(page) < want or not page or len(items) == limit:
            return items
        before = page[-1].id
