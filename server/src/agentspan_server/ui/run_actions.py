"""The web UI's actions on one run: retrying a failed run (``POST /ui/runs/{run_id}/retry``) and
cancelling one that has not ended (``POST /ui/runs/{run_id}/cancel``, as ``agentspan runs cancel``:
its pending approvals expire and its executing process stops at its next step).

A retry from the UI does what ``agentspan runs retry RUN_ID`` does: `Store.reopen_run` without an
owner, so the run is ``pending`` again and a worker (``agentspan.serve``) serving its agent
continues it from where it failed. It re-executes the call that failed (a tool's side effects
included), so, like deciding an approval, it needs the ``approver`` or ``admin`` role when the app
has API keys, and every post carries the session's CSRF token. Cancelling needs the same role.
Both record the session's user (`Session.actor`): a retry as ``by`` in the run's retry history, a
cancellation in its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from agentspan import errors
from agentspan.stores.base import asked_by
from agentspan_server.ui.render import decoded_id

if TYPE_CHECKING:
    from agentspan_server.ui.routes import WebUi

log = logging.getLogger("agentspan_server")


async def retry_run(ui: WebUi, request: Request, run_id: str) -> Response:
    """``POST /ui/runs/{run_id}/retry``: makes a failed run pending for a worker, then shows the run."""
    checked = await ui.deciding_post(request, "retry runs")
    if isinstance(checked, Response):
        return checked
    session, _form = checked
    rid = decoded_id(run_id)
    if rid is None:
        return ui.redirect(request, "/ui/runs", ("error", f"There is no run {run_id!r}."))
    target, outcome = await run_in_threadpool(_reopen, ui, rid, session.actor)
    return ui.redirect(request, target, outcome)


def _reopen(ui: WebUi, run_id: str, by: str) -> tuple[str, tuple[str, str]]:
    """Reopens the run for a worker, recording ``by`` as who asked; returns the page to go to and
    the message to show there."""

    def reopen() -> str:
        run = ui.store.reopen_run(run_id, owner=None, lease_expires_at=None, **asked_by(ui.store, by))
        return (f"Run {run.id} is pending again: a worker serving agent {run.agent!r} continues it from where "
                "it failed (a run an ADK AgentspanPlugin opened in your own Runner: when the same message is "
                "run on the same session there; a LangGraph graph with AgentspanSaver: also "
                "graph.invoke(None) on its thread).")

    return _on_run(ui, run_id, "retrying", "retried", reopen)


def _on_run(ui: WebUi, run_id: str, doing: str, done: str, action: Callable[[], str]) -> tuple[str, tuple[str, str]]:
    """Does ``action`` on a run; returns the page to go to and the message to show there (the
    action's own, or why the run was not ``done``)."""
    page = f"/ui/runs/{quote(run_id, safe='')}"
    try:
        return page, ("ok", action())
    except errors.RunNotFound:
        return "/ui/runs", ("error", f"There is no run {run_id}.")
    except errors.RunStateError as exc:
        return page, ("error", f"Not {done}: {exc}.")
    except errors.AgentspanError as exc:
        log.warning("web UI: %s run %s failed: %s", doing, run_id, exc)
        return page, ("error", f"The store failed while {doing}; reload to see whether the run was {done}.")


async def cancel_run(ui: WebUi, request: Request, run_id: str) -> Response:
    """``POST /ui/runs/{run_id}/cancel``: cancels a run that has not ended, then shows the run."""
    checked = await ui.deciding_post(request, "cancel runs")
    if isinstance(checked, Response):
        return checked
    session, _form = checked
    rid = decoded_id(run_id)
    if rid is None:
        return ui.redirect(request, "/ui/runs", ("error", f"There is no run {run_id!r}."))
    target, outcome = await run_in_threadpool(_cancel, ui, rid, session.actor)
    return ui.redirect(request, target, outcome)


def _cancel(ui: WebUi, run_id: str, by: str) -> tuple[str, tuple[str, str]]:
    def cancel() -> str:
        run = ui.store.get_run(run_id)
        if run.status.terminal:
            raise errors.RunStateError(f"run {run_id} is {run.status.value} already")
        ui.store.cancel_run(run_id, reason=f"cancelled in the web UI by {by}")
        return (f"Run {run_id} is cancelled: its pending approvals expired, and the process executing it stops "
                "at its next step.")

    return _on_run(ui, run_id, "cancelling", "cancelled", cancel)
