"""The ``agentspan`` command line: inspect runs, decide approvals, check the installation.

Every ``AgentspanError`` raised by a command is caught in one place (`AgentspanGroup.invoke`) and
printed as ``error: <message>`` on stderr with exit code 1, without a traceback. ``--json`` output
is plain ``json.dumps`` on stdout (no rich markup), so it always parses.

Note: no ``from __future__ import annotations`` here; typer reads the real annotations.
"""

import getpass
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from agentspan import cli_ops, divergence
from agentspan import cli_render as render
from agentspan.approvals import decide_by_id, effective_status, expired_conflict
from agentspan.cli_doctor import doctor_report
from agentspan.errors import AgentspanError, ConfigurationError
from agentspan.export import APPROVAL_LIMIT
from agentspan.records import JSON, Approval, ApprovalStatus, RunStatus, now
from agentspan.stores.base import ENDED, Store, after_position, asked_by, check_deletion

if TYPE_CHECKING:  # (typer 0.29+ vendors click and no longer installs it: never imported at run time)
    import click


class AgentspanGroup(TyperGroup):
    """The root command group: turns every `AgentspanError` into a clean one-line error."""

    # the ignores: newer typer (0.29 here) types this with its vendored copy of click
    # (typer._click), older ones (typer>=0.12 is allowed) with click itself
    def invoke(self, ctx: "click.Context") -> Any:  # type: ignore[override]
        """Runs the command; an `AgentspanError` prints ``error: ...`` and exits with code 1."""
        try:
            return super().invoke(ctx)  # type: ignore[arg-type]
        except AgentspanError as exc:
            _err().print(f"[bold red]error:[/bold red] {escape(render.printable(str(exc)))}", soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=AgentspanGroup,
    name="agentspan",
    help="Agentspan: durable runs, human approvals and an audit trail for AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the API key
)
runs_app = typer.Typer(help="List, inspect, cancel, retry and prune runs.", no_args_is_help=True)
approvals_app = typer.Typer(
    help="List approvals (decide them with `approve` / `reject`).", no_args_is_help=True
)
app.add_typer(runs_app, name="runs")
app.add_typer(approvals_app, name="approvals")
app.add_typer(cli_ops.server_app, name="server")
app.command("worker")(cli_ops.worker)


class ApprovalFilter(StrEnum):
    """The ``--status`` choices of ``approvals list``."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ALL = "all"


PIPE_WIDTH = 200
"""Table width when stdout is not a terminal and ``COLUMNS`` is unset."""

RUNS_PAGE = 50
"""``runs list``'s default ``--limit``: the runs on one page."""

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


# ---- helpers --------------------------------------------------------------------------------------
def _out() -> Console:
    # Created per call: rich reads COLUMNS and the stream when a Console is built. Piped output
    # (not a terminal, no COLUMNS) gets wide rows instead of rich's 80-column default, so
    # `agentspan runs list | grep ...` sees whole lines.
    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _echo_json(value: JSON) -> None:
    typer.echo(render.dumps(value))


def _store() -> Store:
    """Returns the existing store (read commands never create one)."""
    from agentspan.config import get_store

    return get_store(create=False)


def _default_decider() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return None


# ---- demo -----------------------------------------------------------------------------------------
@app.command()
def demo() -> None:
    """Run the openai-agents adapter's self-contained demo (no API key needed)."""
    from agentspan.adapters import adapter_named

    try:
        adapter = adapter_named("openai-agents")
    except ConfigurationError:
        raise ConfigurationError(
            "the demo needs the openai-agents adapter, which is not installed; "
            "install it with: pip install 'agentspan[openai-agents]'"
        ) from None
    adapter.demo()


# ---- runs -----------------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(
    status: Annotated[RunStatus | None, typer.Option(help="Only runs with this status.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only runs of this agent name.")] = None,
    session: Annotated[str | None, typer.Option(
        help="Only runs of this session (a conversation; for LangGraph, the thread id).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="At most this many runs (a page).")] = RUNS_PAGE,
    before: Annotated[str | None, typer.Option(
        help="The next page: the runs listed after this run id (the last one of the previous page).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List runs, newest first (by id: a custom run id sorts as text), a page at a time.

    A full page ends with the command for the next, older, page (--before its last run id).
    """
    runs = _store().list_runs(status=status, agent=agent, limit=limit, session_id=session, **after_position(before))
    if as_json:
        _echo_json([render.run_json(run) for run in runs])
    else:
        console = _out()
        console.print(render.runs_table(runs, narrow=console.width < render.NARROW))
        if runs and len(runs) >= limit:
            options = {"status": status.value if status else None, "agent": agent, "session": session,
                       "limit": None if limit == RUNS_PAGE else str(limit)}
            console.print(render.next_page_hint(runs[-1].id, options), soft_wrap=True)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Show one run: its record, its journal of steps and its approvals."""
    store = _store()
    run = store.get_run(run_id)
    steps = store.list_steps(run_id)
    approvals = store.list_approvals(run_id=run_id, limit=APPROVAL_LIMIT)  # all of them, as the export
    if as_json:
        _echo_json(render.run_detail_json(run, steps, approvals))
    else:
        render.print_run(_out(), run, steps, approvals)


@runs_app.command("export")
def runs_export(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Write to this file, creating its folders (default: stdout).")] = None,
) -> None:
    """Export a run with its whole journal and approvals as JSON (for agentspan.testing.replay)."""
    from agentspan.export import export_run

    text = render.dumps(export_run(_store(), run_id))
    if output is None:
        typer.echo(text)
        return
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        with open(output, "w", encoding="utf-8") as file:
            file.write(text + "\n")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {output!r}: {exc.strerror or exc}") from None
    _err().print(f"exported run [cyan]{escape(render.printable(run_id))}[/cyan] to "
                 f"{escape(render.printable(output))}", soft_wrap=True)


@runs_app.command("cancel")
def runs_cancel(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    reason: Annotated[str | None, typer.Option(help="Why (stored as the run's error).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Cancel a run; the process executing it stops at its next journal write."""
    run = _store().cancel_run(run_id, reason=reason)
    if as_json:
        _echo_json(render.run_json(run))
    else:
        _out().print(f"cancelled run [cyan]{escape(render.printable(run.id))}[/cyan]", soft_wrap=True)


class DivergencePolicy(StrEnum):
    """``--on-divergence``: what a retried run does where its journal and the agent differ."""

    RAISE = "raise"
    LIVE = "live"


@runs_app.command("retry")
def runs_retry(
    run_id: Annotated[str, typer.Argument(help="The failed run's id.")],
    on_divergence: Annotated[DivergencePolicy | None, typer.Option(
        "--on-divergence", help="Store this policy with the run: 'live' goes on live from the first call "
        "that no longer matches the journal (the agent was fixed).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Take a failed run up again: a worker (agentspan.serve) continues it from where it failed."""
    options = None if on_divergence is None else {divergence.OPTION: on_divergence.value}
    user = _default_decider()
    # recorded in the run's retry history as who asked (``cli:`` tells it from an API key's ``api:ROLE``)
    by = None if user is None else f"cli:{user}"
    store = _store()
    run = store.reopen_run(run_id, owner=None, lease_expires_at=None, options=options, **asked_by(store, by))
    if as_json:
        _echo_json(render.run_json(run))
    else:
        _out().print(f"run [cyan]{escape(render.printable(run.id))}[/cyan] is pending again: a worker serving agent "
                     f"{escape(repr(run.agent))} continues it from where it failed (a run an ADK "
                     "AgentspanPlugin opened in your own Runner: run the same message on the same "
                     "session there; a LangGraph graph with AgentspanSaver: also graph.invoke(None) on "
                     "its thread)", soft_wrap=True)


_AGE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _age_seconds(text: str) -> float:
    found = _AGE.fullmatch(text.strip())
    if found is None:
        raise ConfigurationError(f"--older-than {text!r}: expected a number and a unit, as 30d, 12h, 90m or 3600s")
    seconds = float(found.group(1)) * _SECONDS[found.group(2)]
    if seconds > _MAX_AGE:
        raise ConfigurationError(f"--older-than {text!r}: at most 100 years")
    return seconds


_MAX_AGE = 100 * 365 * 86400.0


class EndedStatus(StrEnum):
    """The ``--status`` choices of ``runs prune``: the statuses of ended runs (`ENDED`)."""

    COMPLETED = RunStatus.COMPLETED.value
    FAILED = RunStatus.FAILED.value
    CANCELLED = RunStatus.CANCELLED.value


@runs_app.command("prune")
def runs_prune(
    older_than: Annotated[str, typer.Option(
        "--older-than", help="Delete runs that ended longer ago than this: 30d, 12h, 90m, 3600s.")],
    status: Annotated[list[EndedStatus] | None, typer.Option(
        help="Only runs with this status (repeatable; default: completed, failed and cancelled).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="At most this many runs, oldest first.")] = 1000,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete ended runs with their journals and approvals (retention). Checkpoints (LangGraph
    threads, ADK sessions) stay: later runs continue from them."""
    statuses = [RunStatus(s) for s in status] if status else list(ENDED)
    check_deletion(statuses, limit)
    cutoff = now() - _age_seconds(older_than)
    if not yes:
        typer.confirm(f"Delete up to {limit} {'/'.join(s.value for s in statuses)} runs that ended before "
                      f"{render.timestamp(cutoff)}, with their journals and approvals?", abort=True)  # fmt: skip
    deleted = _store().delete_runs(ended_before=cutoff, statuses=statuses, limit=limit)
    if as_json:
        _echo_json({"deleted": deleted})
    else:
        _out().print(f"deleted {len(deleted)} run(s) that ended before {render.timestamp(cutoff)}", soft_wrap=True)


# ---- approvals ------------------------------------------------------------------------------------
def _list_approvals(store: Store, run_id: str | None, wanted: ApprovalFilter, limit: int,
                    before: str | None = None) -> list[Approval]:
    position = after_position(before)  # (nothing for the first page: a store from before paging lists it)
    if wanted is ApprovalFilter.ALL:
        return store.list_approvals(run_id=run_id, limit=limit, **position)
    if wanted in (ApprovalFilter.APPROVED, ApprovalFilter.REJECTED):
        return store.list_approvals(run_id=run_id, status=wanted.value, limit=limit, **position)
    # A stored "pending" approval past its expires_at counts as expired: read them all before the
    # limit (the newest stored "pending" ones may all be past their deadline)
    at = now()
    candidates = store.list_approvals(run_id=run_id, status=ApprovalStatus.PENDING.value, limit=_ALL_PENDING,
                                      **position)  # fmt: skip
    if wanted is ApprovalFilter.EXPIRED:
        candidates += store.list_approvals(run_id=run_id, status=ApprovalStatus.EXPIRED.value, limit=limit,
                                           **position)  # fmt: skip
    found = [a for a in candidates if effective_status(a, at).value == wanted.value]
    return sorted(found, key=lambda a: a.id, reverse=True)[:limit]


_ALL_PENDING = 100_000
"""How many stored "pending" approvals a list reads before it applies its limit."""

_APPROVALS_PAGE = 100
"""``approvals list``'s default ``--limit`` (its next-page hint leaves it out)."""


@approvals_app.command("list")
def approvals_list(
    run: Annotated[str | None, typer.Option("--run", help="Only approvals of this run.")] = None,
    status: Annotated[ApprovalFilter, typer.Option(help="Which approvals to show.")] = ApprovalFilter.PENDING,
    limit: Annotated[int, typer.Option(
        min=1, max=1_000_000, help="At most this many approvals (a page).")] = _APPROVALS_PAGE,
    before: Annotated[str | None, typer.Option(
        help="The next page: the approvals listed after this approval id (the last one of the previous page).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List approvals, newest first (by id; pending ones by default), a page at a time.

    A full page ends with the command for the next, older, page (--before its last approval id).
    """
    store = _store()
    if run is not None:
        store.get_run(run)  # RunNotFound for an unknown id
    approvals = _list_approvals(store, run, status, limit, before)
    if as_json:
        at = now()
        _echo_json([render.approval_json(a, at) for a in approvals])
    else:
        console = _out()
        which = "" if status is ApprovalFilter.ALL else f" {status.value}"
        title = f"{len(approvals)}{which} approval(s)"
        narrow = console.width < render.NARROW
        console.print(render.approvals_table(approvals, title=title, show_run=run is None, narrow=narrow))
        if approvals and len(approvals) >= limit:  # there may be older ones: say how to list them
            options = {"run": run, "status": None if status is ApprovalFilter.PENDING else status.value,
                       "limit": None if limit == _APPROVALS_PAGE else str(limit)}
            console.print(render.next_page_hint(approvals[-1].id, options, what="approvals"), soft_wrap=True)


def _decide(approval_id: str, *, approved: bool, by: str | None, reason: str | None, as_json: bool) -> None:
    store = _store()
    current = store.get_approval(approval_id)  # ApprovalNotFound for an unknown id
    if effective_status(current) is ApprovalStatus.EXPIRED:
        raise expired_conflict(current, render.timestamp)
    decided = decide_by_id(store, approval_id, approved=approved, by=by, reason=reason)
    if as_json:
        _echo_json(render.approval_json(decided))
    else:
        _out().print(render.approval_summary(decided))


DecidedBy = Annotated[
    str | None,
    typer.Option("--by", help="Who decides (recorded on the approval). Default: the current OS user."),
]


@app.command()
def approve(
    approval_id: Annotated[str, typer.Argument(help="The approval's id.")],
    by: DecidedBy = None,
    reason: Annotated[str | None, typer.Option(help="Why (recorded on the approval).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve a pending tool call; a worker (or the waiting process) then runs it."""
    _decide(approval_id, approved=True, by=by or _default_decider(), reason=reason, as_json=as_json)


@app.command()
def reject(
    approval_id: Annotated[str, typer.Argument(help="The approval's id.")],
    reason: Annotated[str, typer.Option(help="Why (required; the model is told).")],
    by: DecidedBy = None,
    as_json: JsonFlag = False,
) -> None:
    """Reject a pending tool call; the model receives the reason (or the run stops, per the tool)."""
    if not reason.strip():
        raise ConfigurationError("--reason must not be empty")
    _decide(approval_id, approved=False, by=by or _default_decider(), reason=reason, as_json=as_json)


# ---- doctor ---------------------------------------------------------------------------------------
@app.command()
def doctor(as_json: JsonFlag = False) -> None:
    """Show the settings, the store and the installed adapters (never the API key); exits 1 when
    the store or the server fails its check."""
    report = doctor_report(_store)
    if as_json:
        _echo_json(report)
    else:
        _out().print(render.doctor_table(report))
    if any(str(report[check]).startswith("error:") for check in ("store", "server")):
        raise typer.Exit(1)  # for scripts: a check failed


def main() -> None:
    """Console entry point (``agentspan``)."""
    app(prog_name="agentspan")


if __name__ == "__main__":
    main()
