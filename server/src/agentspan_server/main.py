"""Starting a server: open the store, gather the API keys and Slack settings, check the bind address, run
uvicorn."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agentspan.config import settings
from agentspan.errors import ConfigurationError
from agentspan.stores.base import Store
from agentspan_server.app import create_app
from agentspan_server.auth import KeyRing
from agentspan_server.slack import SlackSettings

_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def open_store(db: str | None) -> tuple[Store, str]:
    """Opens the store a ``--db`` value names.

    Args:
        db: None for the embedded store of ``$AGENTSPAN_HOME``; ``sqlite:///path`` or a plain path
            for a SQLite file; ``postgresql://user:password@host/db`` for PostgreSQL.

    Returns:
        The store and a description of it fit to print (passwords masked).

    Raises:
        ConfigurationError: Unknown URL scheme or empty path.
        StoreError: The store cannot be opened.
    """
    from agentspan.stores.sqlite import SqliteStore

    if db is None:
        current = settings()
        return SqliteStore(current.db_path, durability=current.durability), f"sqlite {current.db_path}"
    scheme = db.split("://", 1)[0].lower() if "://" in db else ""
    if scheme in _POSTGRES_SCHEMES:
        from agentspan_server.stores.postgres import PostgresStore

        return PostgresStore(db), f"postgresql {mask_url(db)}"
    if scheme == "sqlite":
        path = db[len("sqlite://") :]
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel, sqlite:////abs (SQLAlchemy style)
    elif scheme:
        raise ConfigurationError(f"unknown database URL scheme {scheme!r}: use sqlite:///PATH, a path or postgresql://")
    else:
        path = db
    if not path:
        raise ConfigurationError("the SQLite database path is empty")
    path = os.path.expanduser(path)
    return SqliteStore(path, durability=settings().durability), f"sqlite {path}"


def mask_url(url: str) -> str:
    """Returns a database URL with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:  # unparseable: show nothing that could be a secret
        return url.split("://", 1)[0] + "://***"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    db: str | None,
    host: str,
    port: int,
    api_keys: list[str],
    keys_file: str | None,
    max_body_bytes: int,
) -> None:
    """Runs the Agentspan server until interrupted.

    Args:
        db: The store (see `open_store`).
        host: Address to bind. Without API keys only a loopback address is allowed.
        port: TCP port.
        api_keys: ``KEY[:ROLE]`` values (role defaults to ``admin``); ``$AGENTSPAN_SERVER_KEYS``
            and ``keys_file`` add more.
        keys_file: File of ``KEY ROLE`` / ``KEY:ROLE`` lines, or None.
        max_body_bytes: Largest request body accepted.

    Slack approvals are on when ``AGENTSPAN_SLACK_*`` variables are set (`SlackSettings.from_env`).

    Raises:
        ConfigurationError: Bad keys, a non-loopback host without keys, incomplete Slack settings,
            a bad ``db``, or an address that cannot be bound (a port in use).
        StoreError: The store cannot be opened.
    """
    import uvicorn

    keys = KeyRing.from_sources(api_keys, keys_file)
    if not keys and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to listen on {host} without API keys: anyone who can reach it could read and change "
            "every run. Pass --api-key KEY[:ROLE] (or --keys-file, or set AGENTSPAN_SERVER_KEYS), or bind "
            "a loopback address such as 127.0.0.1"
        )
    if max_body_bytes < 1:
        raise ConfigurationError(f"--max-body-bytes must be positive, not {max_body_bytes}")
    slack = SlackSettings.from_env()
    store, described = open_store(db)
    try:
        app = create_app(store, keys=keys if keys else None, max_body_bytes=max_body_bytes, slack=slack)
        shown_host = f"[{host}]" if ":" in host else host
        auth = f"auth on ({len(keys)} API key{'s' if len(keys) != 1 else ''})" if keys else "no API keys: loopback only"
        if slack is not None:
            auth += f"; Slack approvals in channel {slack.channel}"
        sockets = listening_sockets(host, port)  # bound before it says so: a port in use is an error
        print(f"agentspan server listening on http://{shown_host}:{port} (store: {described}; {auth})", flush=True)
        try:
            # uvicorn shuts down gracefully on Ctrl-C and SIGTERM (`docker stop`, systemd), then
            # raises the signal again: here it ends the run, and the store is closed as it should be
            with _terminated_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
                uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=sockets)
        finally:
            for sock in sockets:
                sock.close()
    finally:
        store.close()


@contextlib.contextmanager
def _terminated_as_interrupt() -> Iterator[None]:
    """Makes SIGTERM raise `KeyboardInterrupt` in the block, as SIGINT does (from the main thread
    only, where Python runs signal handlers; elsewhere the block runs as it is)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        # None: the previous handler was installed from C (an embedding application), which Python
        # cannot reinstall (`signal.signal` raises TypeError for None); the default is the nearest
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """TCP sockets bound to every address ``host`` resolves to, listening (as uvicorn's
    ``host=`` binds them through asyncio: ``localhost`` is ``127.0.0.1`` and ``::1``, ``""`` every
    interface; an IPv6 socket is IPv6 only).

    Raises:
        ConfigurationError: An address cannot be bound (in use, not this machine's, not allowed)
            or ``host`` does not resolve.
    """
    sockets: list[socket.socket] = []
    try:
        seen: set[tuple[int, Any]] = set()
        for family, kind, proto, _name, address in socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(2048)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sockets
