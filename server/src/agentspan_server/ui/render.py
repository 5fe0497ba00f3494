"""Rendering and request helpers of the web UI: templates, value formats, forms, headers.

`environment` is the Jinja2 environment of the UI's templates (autoescape on, strict undefined)
with the filters that format records: times in UTC, JSON pretty-printed, tokens, costs and
durations; every value a page shows has its bidirectional formatting characters made visible
(`visible_bidi`). `UiHeadersMiddleware` puts the UI's security headers (a strict
Content-Security-Policy, ``nosniff``, no framing, no caching of pages) on every answer under
`is_ui_path`.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import jinja2
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# the CLI's bidi set (both show the same characters as escapes) and cost formats (both show the same costs)
from agentspan.cli_render import _BIDI, model_calls, run_cost
from agentspan.cli_render import cost as cli_cost
from agentspan_server.middleware import is_loopback_name

HERE = Path(__file__).parent
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
"""The Content-Security-Policy of every UI answer: no scripts at all, forms post to this server only."""
MAX_FORM_BYTES = 65_536  # a reason of 2,000 four-byte characters, percent-encoded, and the other fields
"""Largest form post read."""
_FORM_TYPES = ("application/x-www-form-urlencoded", "")
_HEADERS = [
    (b"content-security-policy", CSP.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
_PAGE_HEADERS = [*_HEADERS, (b"cache-control", b"no-store")]
_BIDI_ESCAPES = {c: f"\\u{c:04x}" for c in _BIDI}


def is_ui_path(path: str) -> bool:
    """Whether a (raw) request path belongs to the web UI: ``/``, ``/ui``, ``/ui/...``, ``/static/...``
    and ``/favicon.ico`` (none: 204)."""
    return path in ("/", "/ui", "/favicon.ico") or path.startswith(("/ui/", "/static/"))


class UiHeadersMiddleware:
    """ASGI middleware adding the UI's security headers to answers under `is_ui_path`.

    Args:
        app: The wrapped application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_ui_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        extra = _HEADERS if scope["path"].startswith("/static/") else _PAGE_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---- template filters ---------------------------------------------------------------------------
def visible_bidi(value: Any) -> Any:
    """A value a template outputs, its bidirectional formatting characters (U+202E RIGHT-TO-LEFT
    OVERRIDE, the other embeddings, overrides and isolates, the LRM/RLM/ALM marks) written as
    ``\\u202e``-style escapes, as the CLI shows them (`agentspan.cli_render.printable`).

    The environment's ``finalize``: every ``{{ ... }}`` of a page passes through it before it is
    HTML-escaped, so a run's agent name, an end user's message, a tool's result or an approval's
    arguments cannot reorder what an approver reads (``refund 1000`` shown as another amount).
    Markup (a macro's output) is left as is: its values went through here already. None stays
    None (Jinja shows it as before).
    """
    if value is None or hasattr(value, "__html__"):
        return value
    return (value if isinstance(value, str) else str(value)).translate(_BIDI_ESCAPES)


def format_ts(value: float | None) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` in UTC (``—`` for none)."""
    if value is None:
        return "—"
    try:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return str(value)


def format_json(value: Any) -> str:
    """A JSON value pretty-printed (a string as its plain text)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def preview(text: str, width: int = 80) -> str:
    """The start of a text on one line (whitespace collapsed), at most ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_usd(value: float | None) -> str:
    """A cost in US dollars as the CLI shows it (`agentspan.cli_render.cost`: more decimals below
    a cent, ``<$0.000001`` below a millionth; ``—`` for none)."""
    if value is None or not math.isfinite(value):
        return "—" if value is None else str(value)
    return cli_cost(value)


def format_int(value: int | None) -> str:
    """A count with thousands separators (``—`` for none)."""
    return "—" if value is None else f"{value:,}"


def format_ms(value: float | None) -> str:
    """A duration in milliseconds, as ms below a second and seconds above."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:,.0f} ms" if value < 1000 else f"{value / 1000:,.2f} s"


def short_id(value: str) -> str:
    """The distinctive tail of a long id (UUIDv7 ids share their leading time digits)."""
    return value if len(value) <= 14 else "…" + value[-12:]


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the UI's templates: autoescape on, undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=visible_bidi,
    )
    env.filters.update(
        ts=format_ts,
        pretty=format_json,
        preview=preview,
        usd=format_usd,
        # a run's cost with its model calls counted (`model_calls`): a lower bound where some are unpriced
        run_usd=run_cost,
        calls=model_calls,
        num=format_int,
        ms=format_ms,
        short=short_id,
        q=lambda v: quote(str(v), safe=""),
    )
    return env


# ---- request helpers ----------------------------------------------------------------------------
def safe_next(value: str | None, default: str) -> str:
    """``value`` when it is a local UI path (``/ui/...``) to go back to, else ``default``."""
    if not value or len(value) > 2000 or not value.startswith("/ui/") or "\\" in value:
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path in ("/ui/login", "/ui/logout"):
        return default
    return value


def here(request: Request) -> str:
    """The request's path and query as sent (still percent-encoded), to come back to."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    return request.scope["path"] + (f"?{query}" if query else "")


def loopback_host(request: Request) -> bool:
    """Whether the request's ``Host`` names this machine (``localhost`` or a loopback address)."""
    return is_loopback_name(request.headers.get("host", ""))


def clean_text(text: str | None, limit: int) -> str | None:
    """Form text trimmed; None when blank. Raises ValueError when too long or holding NUL."""
    text = (text or "").strip()
    if len(text) > limit or "\x00" in text:
        raise ValueError(text)
    return text or None


async def read_form(request: Request) -> dict[str, str] | None:
    """The fields of a URL-encoded form post (first value of each), or None when malformed."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind not in _FORM_TYPES:
        return None
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, errors="strict", max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def decoded_id(raw: str) -> str | None:
    """A percent-encoded path segment decoded (None when it is not UTF-8, empty or holds NUL)."""
    try:
        value = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return None
    return value if value and "\x00" not in value else None
