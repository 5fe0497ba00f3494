"""``agentspan server start`` and ``agentspan worker``: the long-running commands.

The server lives in the separate ``agentspan-server`` distribution and is imported only when the
command runs, so the core never depends on FastAPI, uvicorn or psycopg.

Note: no ``from __future__ import annotations`` here; typer reads the real annotations.
"""

import signal
import sys
import threading
from typing import Annotated, Any

import typer

from agentspan.errors import ConfigurationError
from agentspan.targets import load

server_app = typer.Typer(help="Run the Agentspan server (HTTP API over SQLite or PostgreSQL).", no_args_is_help=True)


@server_app.command("start")
def server_start(
    db: Annotated[str | None, typer.Option(
        help="Database: a SQLite path or sqlite:///path, or postgresql://user@host/db "
             "(default: the embedded store in AGENTSPAN_HOME).")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (a non-loopback one needs API keys).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 6767,
    api_key: Annotated[list[str] | None, typer.Option(
        "--api-key", help="KEY or KEY:ROLE (agent, approver, admin; default admin). Repeatable.")] = None,
    keys_file: Annotated[str | None, typer.Option(help="File of 'KEY ROLE' lines.")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted (413 above).")] = 1_048_576,
) -> None:
    """Serve the HTTP API on HOST:PORT until interrupted."""
    try:
        from agentspan_server.main import serve
    except ImportError as exc:
        raise ConfigurationError(
            "the server is not installed: pip install 'agentspan[server]' (agentspan-server)"
        ) from exc
    serve(db=db, host=host, port=port, api_keys=list(api_key or []), keys_file=keys_file,
          max_body_bytes=max_body_bytes)


def load_target(spec: str) -> Any:
    """Imports ``module:attribute`` (dots allowed in the attribute), with the current directory
    importable as under ``python -m``, and returns the object.

    Raises:
        ConfigurationError: The spec is malformed, or the module or attribute does not exist.
    """
    if "" not in sys.path:
        sys.path.insert(0, "")
    return load(spec, call_factory=False)


def worker(
    targets: Annotated[list[str], typer.Argument(help="Agents to serve, as MODULE:OBJECT.")],
    max_runs: Annotated[int | None, typer.Option(
        min=1, help="Exit after this many runs (default: serve forever).")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="At most this many runs at once in this worker (default: no limit).")] = None,
) -> None:
    """Claim and finish runs of these agents: orphaned ones (lease expired) and decided approvals."""
    import agentspan

    agents = [load_target(spec) for spec in targets]
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        if stop.is_set():  # the second time: do not wait for the runs in progress
            raise KeyboardInterrupt
        stop.set()
        typer.echo("agentspan worker: stopping once the runs in progress end (again: at once: no new call, "
                   "the calls in flight end, the runs are left for the next worker)", err=True)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    typer.echo(f"agentspan worker: serving {', '.join(targets)} (Ctrl-C to stop)", err=True)
    try:
        done = agentspan.serve(*agents, stop=stop, max_runs=max_runs, concurrency=concurrency)
    except KeyboardInterrupt:
        typer.echo("agentspan worker: stopped; the runs in progress are left for the next worker (the calls "
                   "they were making ended and are journaled)", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"agentspan worker: {done} run(s) handled", err=True)
