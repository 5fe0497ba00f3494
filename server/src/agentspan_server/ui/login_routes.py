"""The web UI's login and logout (``/ui/login``, ``/ui/logout``), when the app has API keys.

A visitor logs in with an API key: the key is checked against the app's `KeyRing` and never
stored; the browser gets a signed session cookie (`session.Signer`) carrying the key's role and an
optional display name. The login form carries a CSRF token bound to a per-visitor nonce (a login
CSRF would need the victim's own form), and logging out is a CSRF-checked post.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from agentspan_server.ui.render import read_form, safe_next
from agentspan_server.ui.session import LOGIN_COOKIE, MAX_NAME, SESSION_COOKIE, SESSION_TTL

if TYPE_CHECKING:
    from agentspan_server.ui.routes import WebUi

log = logging.getLogger("agentspan_server")


def _login_form(ui: WebUi, request: Request, *, next_url: str, error: str | None = None,
                code: int = 200) -> Response:
    nonce = secrets.token_urlsafe(18)  # per visitor: a login CSRF needs the victim's own form
    response = ui.render(
        request,
        "login.html",
        session=None,
        code=code,
        error=error,
        next=next_url,
        login_csrf=ui.signer.csrf(f"login:{nonce}"),
    )
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=int(SESSION_TTL), path="/ui/login",
                        secure=request.url.scheme == "https", httponly=True, samesite="strict")
    return response


def login_page(ui: WebUi, request: Request) -> Response:
    """``GET /ui/login``: the login form (straight to the runs when not needed)."""
    next_url = safe_next(request.query_params.get("next"), "/ui/runs")
    if ui.keys is None or ui.signer.session(request.cookies.get(SESSION_COOKIE)) is not None:
        return RedirectResponse(next_url, status_code=303)
    return _login_form(ui, request, next_url=next_url)


async def login(ui: WebUi, request: Request) -> Response:
    """``POST /ui/login``: checks the key, sets the session cookie (never the key)."""
    if ui.keys is None:
        return RedirectResponse("/ui/runs", status_code=303)
    form = await read_form(request)
    nonce = request.cookies.get(LOGIN_COOKIE)
    if form is None or not nonce or not ui.signer.csrf_ok(f"login:{nonce}", form.get("csrf")):
        return ui.error(request, None, 403, "Forbidden", "The login form expired; reload it and try again.")
    next_url = safe_next(form.get("next"), "/ui/runs")
    key = form.get("key", "")
    role = ui.keys.role_of(key) if key else None
    if role is None:
        log.info("web UI: failed login from %s", request.client.host if request.client else "?")
        return _login_form(ui, request, next_url=next_url, error="That API key is not valid.", code=401)
    name = " ".join("".join(c for c in form.get("name", "") if c.isprintable()).split())[:MAX_NAME]
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        ui.signer.issue(role, name or None),
        max_age=int(SESSION_TTL),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/ui/login", httponly=True, samesite="strict")
    return response


async def logout(ui: WebUi, request: Request) -> Response:
    """``POST /ui/logout``: ends the session (CSRF-checked) and clears its cookie."""
    form = await read_form(request) or {}
    session = ui.signer.session(request.cookies.get(SESSION_COOKIE)) if ui.keys is not None else None
    if session is not None:
        if not ui.signer.csrf_ok(session.nonce, form.get("csrf")):
            return ui.error(request, session, 403, "Forbidden", "The form's security token is missing or wrong.")
        ui.signer.revoke(session)
    response = RedirectResponse("/ui/login" if ui.keys is not None else "/ui/runs", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
