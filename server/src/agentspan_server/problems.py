"""Error answers of the Agentspan HTTP API: every error is an RFC 9457 problem document.

A problem (``application/problem+json``, `wire.Problem`) is built with `new_problem` or, for bad
input, from a list of per-field issues with `invalid_input`; code inside the app raises it as a
`ProblemError`. `install_problem_handlers` makes an app answer with a problem for everything that
can go wrong: a raised `ProblemError` as is, request validation failures as 422 (malformed JSON as
400), HTTP exceptions (unknown endpoint, wrong method) with their status, and any other exception
as a logged 500. Client-supplied text echoed in a problem is made printable and bounded first.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from agentspan.wire import PROBLEM_CONTENT_TYPE, Problem

log = logging.getLogger("agentspan_server")

MAX_LISTED_ERRORS = 50
"""Most per-field issues listed in one problem (and collected by the input checks)."""


class ProblemError(Exception):
    """Raised inside the app to answer with a problem document."""

    def __init__(self, problem: Problem, headers: dict[str, str] | None = None) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.headers = headers


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    """Renders a problem (``ensure_ascii``: any text, even a lone surrogate, encodes)."""
    body = json.dumps(problem.model_dump(exclude_none=True), ensure_ascii=True, separators=(",", ":"))
    return Response(body, status_code=problem.status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def new_problem(status: int, title: str, detail: str, error: str, **extra: Any) -> Problem:
    """Builds a problem document.

    Args:
        status: The HTTP status code.
        title: The status' short, fixed title.
        detail: What went wrong with this request.
        error: The name of the `agentspan.errors` class it stands for.
        **extra: Further `Problem` fields (``errors``, ``run_id``, ...).

    Returns:
        The problem.
    """
    return Problem(title=title, status=status, detail=detail, error=error, **extra)


def invalid_input(issues: list[dict[str, str]], *, status: int = 422) -> ProblemError:
    """The problem for bad input, listing (at most `MAX_LISTED_ERRORS` of) its issues.

    Args:
        issues: Per-field issues made by `input_issue`.
        status: 422 for invalid values, 400 for a malformed request.

    Returns:
        The error to raise.
    """
    shown = "; ".join(f"{i['field']}: {i['message']}" for i in issues[:5])
    more = f" (and {len(issues) - 5} more)" if len(issues) > 5 else ""
    title = "Unprocessable Content" if status == 422 else "Bad Request"
    detail = f"invalid request: {shown}{more}"
    return ProblemError(new_problem(status, title, detail, "ConfigurationError", errors=issues[:MAX_LISTED_ERRORS]))


def input_issue(loc: tuple[Any, ...] | list[Any], message: str, kind: str) -> dict[str, str]:
    """One per-field issue of bad input (``field``, ``message``, ``type``), safe to echo.

    Args:
        loc: Where the bad value is (``("body", "run", "id")``).
        message: What is wrong with it.
        kind: A short machine-readable type (``string_nul``).

    Returns:
        The issue, as listed in a problem's ``errors``.
    """
    field = printable(".".join(printable(str(p), 80) for p in loc), 300)
    return {"field": field, "message": printable(message, 300), "type": kind}


def printable(text: str, limit: int) -> str:
    """Client-supplied text made safe to echo: valid Unicode, bounded length."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = ascii(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- exception handlers -----------------------------------------------------------------------
async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.problem, exc.headers)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    found = list(exc.errors())
    for error in found:
        if error.get("type") == "json_invalid":
            reason = printable(str((error.get("ctx") or {}).get("error", "invalid JSON")), 200)
            position = error.get("loc", ("body", "?"))[-1]
            problem = new_problem(400, "Bad Request", f"malformed JSON body: {reason} at position {position}",
                                  "ConfigurationError")  # fmt: skip
            return problem_response(problem)
    issues = [input_issue(tuple(e.get("loc", ())), str(e.get("msg", "invalid")), str(e.get("type", "invalid")))
              for e in found]  # fmt: skip
    return problem_response(invalid_input(issues).problem)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        detail = f"no such endpoint: {request.method} {printable(request.url.path, 200)}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {printable(request.url.path, 200)}"
    else:
        detail = printable(str(exc.detail), 300)
    error = "ConfigurationError" if status in (400, 413, 422) else "TransportError"
    title = {404: "Not Found", 405: "Method Not Allowed"}.get(status, "Bad Request" if status == 400 else "Error")
    return problem_response(new_problem(status, title, detail, error), dict(exc.headers or {}) or None)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    problem = new_problem(500, "Internal Server Error", "the server failed to handle the request; see its log",
                          "TransportError")  # fmt: skip
    return problem_response(problem)


def install_problem_handlers(app: FastAPI) -> None:
    """Makes every error of an app answer with a problem document.

    Args:
        app: The app to install the exception handlers on.
    """
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
