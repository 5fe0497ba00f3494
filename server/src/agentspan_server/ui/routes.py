"""The pages of the web UI: runs, one run's audit trail, pending approvals, and decisions.

`install_ui` adds server-rendered pages (Jinja2, autoescaped, no JavaScript) to the app, outside
its OpenAPI document: ``/ui/runs``, ``/ui/runs/{run_id}``, ``/ui/approvals``, the approve/reject
and retry form posts, and login/logout (`login_routes`) when the app has API keys. Pages read the
store directly; a decision goes through `agentspan.approvals.decide_by_id`, as the CLI's ``approve``/``reject`` do.

Access: with API keys, every page needs a session (`session.Signer`, logged in with a key at
``/ui/login``) and deciding (or retrying a failed run, `run_actions`) needs the ``approver`` or
``admin`` role. Without keys the UI is open
(the server then listens on loopback only), so it answers only requests whose ``Host`` is a
loopback name (no DNS rebinding). Every form post carries a CSRF token either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from agentspan import errors
from agentspan.approvals import decide_by_id, effective_status
from agentspan.records import Approval, ApprovalStatus, RunStatus
from agentspan.stores.base import Store, after_position
from agentspan.stores.reopening import retries_of
from agentspan_server.auth import KeyRing
from agentspan_server.ui.login_routes import login, login_page, logout
from agentspan_server.ui.render import (
    HERE,
    UiHeadersMiddleware,
    clean_text,
    decoded_id,
    environment,
    format_ts,
    here,
    loopback_host,
    read_form,
    safe_next,
)
from agentspan_server.ui.run_actions import cancel_run, retry_run
from agentspan_server.ui.session import (
    FLASH_COOKIE,
    FLASH_TTL,
    MAX_NAME,
    OPEN_SESSION,
    SESSION_COOKIE,
    Session,
    Signer,
)

log = logging.getLogger("agentspan_server")

MAX_REASON = 2000
"""Longest rejection (or approval) reason accepted."""
DEFAULT_PAGE = 100
"""Runs on a page of ``/ui/runs`` unless ``?limit=`` says otherwise (1..1000)."""


APPROVALS_PAGE = 500
"""Pending approvals on a page of ``/ui/approvals`` unless ``?limit=`` says otherwise (1..1000)."""


def page_url(path: str, query: dict[str, str | None]) -> str:
    """``path`` (``/ui/runs``, ``/ui/approvals``) with the given (non-None) query parameters, each
    percent-encoded (a run or approval id or a session may hold ``&``, ``#``, ``/``...); the
    template escapes the URL for HTML."""
    given = {name: value for name, value in query.items() if value is not None}
    return path + ("?" + urlencode(given, quote_via=quote) if given else "")


def page_links(path: str, kept: dict[str, str | None], before: str | None, page: list[Any],
               limit: int) -> dict[str, Any]:
    """A listing's ``newest_url`` (on an older page) and ``older_url`` (after a full page: there may
    be older items, ``?before=`` its last id), the filters in ``kept`` kept."""
    return {"newest_url": page_url(path, kept) if before else None,
            "older_url": page_url(path, {**kept, "before": page[-1].id}) if page and len(page) >= limit else None}


def page_size(request: Request, default: int) -> int:
    """A listing page's ``?limit=``: 1..1000, ``default`` when absent or not a number."""
    try:
        return min(max(int(request.query_params.get("limit", str(default))), 1), 1000)
    except ValueError:
        return default


# ---- the UI -------------------------------------------------------------------------------------------
class WebUi:
    """The pages of one app, over its store and key ring.

    Args:
        store: The store pages read and decisions write.
        keys: The app's API keys; None or empty for an open UI.
    """

    def __init__(self, store: Store, keys: KeyRing | None) -> None:
        self.store = store
        self.keys = keys if keys else None
        self.signer = Signer()
        self.env = environment()

    # ---- responses ----------------------------------------------------------------------------
    def render(
        self, request: Request, template: str, *, session: Session | None, code: int = 200, **context: Any
    ) -> Response:
        """Renders a page (the pending flash message shown once)."""
        flash_token = request.cookies.get(FLASH_COOKIE)
        values: dict[str, Any] = {
            "session": session,
            "csrf": self.signer.csrf(session.nonce) if session else "",
            "nav": None,
            "flash": self.signer.read_flash(flash_token),
            "here": here(request),
        }
        values.update(context)
        html = self.env.get_template(template).render(values)
        response = Response(html.encode("utf-8", "backslashreplace"), status_code=code, media_type="text/html")
        if flash_token is not None:
            response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    def error(self, request: Request, session: Session | None, status: int, title: str, message: str) -> Response:
        """An error page."""
        return self.render(
            request, "error.html", session=session, code=status, status=status, title=title, message=message
        )

    def redirect(self, request: Request, url: str, flash: tuple[str, str] | None = None) -> Response:
        """A 303 to ``url``, carrying a one-shot message for the page there."""
        response = RedirectResponse(url, status_code=303)
        if flash is not None:
            response.set_cookie(
                FLASH_COOKIE,
                self.signer.flash(*flash),
                max_age=int(FLASH_TTL),
                path="/",
                secure=request.url.scheme == "https",
                httponly=True,
                samesite="strict",
            )
        return response

    # ---- access -------------------------------------------------------------------------------
    def guard(self, request: Request, *, come_back: bool = True) -> Session | Response:
        """The request's session, or the response to give instead (login redirect, 403).

        Args:
            request: The request.
            come_back: Whether the login page should lead back to this request's page (a page, not a post).
        """
        if self.keys is None:
            if not loopback_host(request):
                return self.error(
                    request,
                    None,
                    403,
                    "Forbidden",
                    "This server has no API keys, so its UI only answers on a loopback address.",
                )
            return OPEN_SESSION
        session = self.signer.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            target = "/ui/login?next=" + quote(here(request), safe="") if come_back else "/ui/login"
            return RedirectResponse(target, status_code=303)
        return session

    def page(self, request: Request, build: Callable[[Session], Response]) -> Response:
        """Answers a page: checks access, builds it, and turns store failures into a 503 page."""
        found = self.guard(request)
        if isinstance(found, Response):
            return found
        try:
            return build(found)
        except errors.AgentspanError as exc:
            log.warning("web UI: the store failed answering %s: %s", request.scope["path"], exc)
            return self.error(request, found, 503, "Store unavailable", "The store did not answer; try again.")

    def _with_status(self, approvals: list[Approval]) -> list[tuple[Approval, str]]:
        return [(a, effective_status(a).value) for a in approvals]

    # ---- pages --------------------------------------------------------------------------------
    def runs_page(self, request: Request) -> Response:
        """``GET /ui/runs``: runs newest first, filtered by ``?status=`` and ``?session=`` (the runs
        of one conversation, e.g. a LangGraph thread), a page of ``?limit=`` at a time: a full page
        links to the next, older, one (``?before=`` its last run id, the filters kept) and back to
        the newest."""

        def build(session: Session) -> Response:
            raw = request.query_params.get("status") or None
            session_id = request.query_params.get("session") or None
            if session_id is not None and ("\x00" in session_id or len(session_id) > 1000):
                return self.error(request, session, 400, "Bad session", "A session id holds no NUL and at most 1000 "
                                  "characters.")
            before = request.query_params.get("before") or None
            if before is not None and "\x00" in before:
                return self.error(request, session, 400, "Bad position", "A run id holds no NUL.")
            try:
                status = RunStatus(raw) if raw else None
            except ValueError:
                choices = ", ".join(s.value for s in RunStatus)
                return self.error(request, session, 400, "Unknown status", f"Use one of {choices}, not {raw!r}.")
            limit = page_size(request, DEFAULT_PAGE)
            runs = self.store.list_runs(status=status, limit=limit, session_id=session_id, **after_position(before))
            kept = {"status": status.value if status else None, "session": session_id,
                    "limit": None if limit == DEFAULT_PAGE else str(limit)}
            return self.render(
                request,
                "runs.html",
                session=session,
                nav="runs",
                runs=runs,
                limit=limit,
                status=status.value if status else None,
                statuses=[s.value for s in RunStatus],
                # the filters' links keep the page size (and drop the position: a filter starts over)
                status_urls={s.value: page_url("/ui/runs", {**kept, "status": s.value}) for s in RunStatus},
                all_statuses_url=page_url("/ui/runs", {**kept, "status": None}),
                all_sessions_url=page_url("/ui/runs", {**kept, "session": None}),
                session_id=session_id,
                before=before,
                **page_links("/ui/runs", kept, before, runs, limit),
            )

        return self.page(request, build)

    def run_page(self, request: Request, run_id: str) -> Response:
        """``GET /ui/runs/{run_id}``: the run, its approvals and its audit trail."""

        def build(session: Session) -> Response:
            rid = decoded_id(run_id)
            try:
                if rid is None:
                    raise errors.RunNotFound(run_id)
                run = self.store.get_run(rid)
            except errors.RunNotFound:
                return self.error(request, session, 404, "Run not found", f"There is no run {rid or run_id!r}.")
            steps = sorted(self.store.list_steps(rid), key=lambda s: s.seq)
            approvals = self._with_status(self.store.list_approvals(run_id=rid, limit=1000))
            return self.render(
                request, "run.html", session=session, nav="runs", run=run, steps=steps, approvals=approvals,
                retries=retries_of(run.options),
            )

        return self.page(request, build)

    def approvals_page(self, request: Request) -> Response:
        """``GET /ui/approvals``: pending approvals across runs, newest first, a page of ``?limit=``
        at a time (a full page links to the next, older, one: ``?before=`` its last approval id, and
        back to the newest), then the latest decisions."""

        def build(session: Session) -> Response:
            before = request.query_params.get("before") or None
            if before is not None and "\x00" in before:
                return self.error(request, session, 400, "Bad position", "An approval id holds no NUL.")
            limit = page_size(request, APPROVALS_PAGE)
            stored = self.store.list_approvals(status=ApprovalStatus.PENDING.value, limit=limit,
                                               **after_position(before))  # fmt: skip
            listed = self._with_status(stored)
            pending = [(a, status) for a, status in listed if status == ApprovalStatus.PENDING.value]
            past_deadline = [(a, status) for a, status in listed if status != ApprovalStatus.PENDING.value]
            # the latest decisions belong to the newest page only (an older page is about older requests)
            recent = [] if before else [a for a in self.store.list_approvals(limit=100)
                                        if a.status is not ApprovalStatus.PENDING]  # fmt: skip
            kept = {"limit": None if limit == APPROVALS_PAGE else str(limit)}
            return self.render(
                request,
                "approvals.html",
                session=session,
                nav="approvals",
                pending=pending,  # an approval past its deadline counts as rejected, not pending
                decided=(past_deadline + self._with_status(recent))[:20],
                limit=limit,
                before=before,
                # a full page of stored pending approvals: there may be older ones (was: hidden, unsaid)
                **page_links("/ui/approvals", kept, before, stored, limit),
            )

        return self.page(request, build)

    def not_found(self, request: Request, rest: str) -> Response:
        """``GET /ui/...`` matching no page."""
        if not rest:
            return RedirectResponse("/ui/runs", status_code=303)
        return self.page(request, lambda s: self.error(request, s, 404, "Not found", "There is no such page."))

    # ---- decisions ----------------------------------------------------------------------------
    async def deciding_post(self, request: Request, what: str) -> tuple[Session, dict[str, str]] | Response:
        """A form post that needs a decider, checked: the session (`guard`), the form, its CSRF token
        and the ``approver`` or ``admin`` role (``what``: what another role is told it may not do).

        Returns:
            The session and the form's fields, or the response to give instead.
        """
        found = self.guard(request, come_back=False)
        if isinstance(found, Response):
            return found
        form = await read_form(request)
        if form is None:
            return self.error(request, found, 400, "Bad request", "The form could not be read.")
        if not self.signer.csrf_ok(found.nonce, form.get("csrf")):
            return self.error(request, found, 403, "Forbidden",
                              "The form's security token is missing or wrong; reload the page and try again.")
        if not found.may_decide:
            return self.error(request, found, 403, "Forbidden",
                              f"Your role ({found.role}) may not {what}; log in with an approver or admin key.")
        return found, form

    async def decide(self, request: Request, approval_id: str, action: str) -> Response:
        """``POST /ui/approvals/{id}/approve|reject``: decides, then goes back to ``next``."""
        if action not in ("approve", "reject"):
            found = self.guard(request, come_back=False)
            if isinstance(found, Response):
                return found
            return self.error(request, found, 404, "Not found", "There is no such action.")
        checked = await self.deciding_post(request, "approve or reject tool calls")
        if isinstance(checked, Response):
            return checked
        found, form = checked
        back = safe_next(form.get("next"), "/ui/approvals")
        aid = decoded_id(approval_id)
        try:
            reason = clean_text(form.get("reason"), MAX_REASON)
            # a login session decides under its own name, never one the form gives (a keyless
            # UI has no login: there the form may name the decider)
            named = clean_text(form.get("by"), MAX_NAME) if found.open else None
            by = named or found.actor
        except ValueError:
            return self.redirect(request, back, ("error", "The reason or name is too long or holds a NUL character."))
        if aid is None:
            return self.redirect(request, back, ("error", f"There is no approval {approval_id!r}."))
        if action == "reject" and reason is None:
            return self.redirect(request, back, ("error", "Give a reason to reject: the model is told it."))
        outcome = await run_in_threadpool(self._decide, aid, approved=action == "approve", by=by, reason=reason)
        return self.redirect(request, back, outcome)

    def _decide(self, approval_id: str, *, approved: bool, by: str, reason: str | None) -> tuple[str, str]:
        """Decides like the CLI's ``approve``/``reject``; returns the message to show."""
        try:
            current = self.store.get_approval(approval_id)
            if effective_status(current) is ApprovalStatus.EXPIRED:
                return "error", (
                    f"Not decided: approval {approval_id} ({current.tool}) expired at "
                    f"{format_ts(current.expires_at)} UTC before a decision; it counts as rejected."
                )
            decided = decide_by_id(self.store, approval_id, approved=approved, by=by, reason=reason)
        except errors.ApprovalNotFound:
            return "error", f"There is no approval {approval_id}."
        except errors.ApprovalConflict as exc:
            return "error", f"Not decided: {exc}."
        except errors.AgentspanError as exc:
            log.warning("web UI: deciding approval %s failed: %s", approval_id, exc)
            return "error", "The store failed while deciding; reload to see whether the decision was recorded."
        verb = "Approved" if approved else "Rejected"
        why = f": {reason}" if reason else ""
        return "ok", f"{verb} {decided.tool} (approval {decided.id}, run {decided.run_id}){why}."


def install_ui(app: FastAPI, store: Store, keys: KeyRing | None) -> WebUi:
    """Adds the web UI to an app: its pages, ``/static`` and its response headers.

    Args:
        app: The app (the pages stay out of its OpenAPI document).
        store: The store the pages read and decisions write.
        keys: The app's API keys; None (or empty) for an open UI.

    Returns:
        The UI (also kept as ``app.state.ui``).
    """
    ui = WebUi(store, keys)
    app.state.ui = ui

    def add(path: str, endpoint: Callable[..., Any], method: str) -> None:
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)

    def home() -> Response:
        return RedirectResponse("/ui/runs", status_code=303)

    add("/", home, "GET")
    add("/ui", home, "GET")

    def no_icon() -> Response:  # browsers ask on every page: no key needed, none to count as refused
        return Response(status_code=204)

    add("/favicon.ico", no_icon, "GET")

    def login_form(request: Request) -> Response:
        return login_page(ui, request)

    async def log_in(request: Request) -> Response:
        return await login(ui, request)

    async def log_out(request: Request) -> Response:
        return await logout(ui, request)

    add("/ui/login", login_form, "GET")
    add("/ui/login", log_in, "POST")
    add("/ui/logout", log_out, "POST")
    add("/ui/runs", ui.runs_page, "GET")
    add("/ui/runs/{run_id}", ui.run_page, "GET")

    async def retry(request: Request, run_id: str) -> Response:
        return await retry_run(ui, request, run_id)

    add("/ui/runs/{run_id}/retry", retry, "POST")

    async def cancel(request: Request, run_id: str) -> Response:
        return await cancel_run(ui, request, run_id)

    add("/ui/runs/{run_id}/cancel", cancel, "POST")
    add("/ui/approvals", ui.approvals_page, "GET")
    add("/ui/approvals/{approval_id}/{action}", ui.decide, "POST")
    add("/ui/{rest:path}", ui.not_found, "GET")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(UiHeadersMiddleware)
    return ui
