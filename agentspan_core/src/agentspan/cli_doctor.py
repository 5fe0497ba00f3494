"""``agentspan doctor``'s report: the installation, the settings and whether the store answers."""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from agentspan.errors import AgentspanError
from agentspan.records import JSON
from agentspan.stores.base import Store
from agentspan.stores.cores import spare_core, usable_cores


def doctor_report(open_store: Callable[[], Store]) -> dict[str, JSON]:
    """What ``agentspan doctor`` shows: versions, settings, the store's and the server's state,
    the installed adapters. The API key is reported as set or not, never shown.

    Args:
        open_store: Opens the configured embedded store (its error is reported, not raised).
    """
    from agentspan import __version__
    from agentspan.adapters import registered
    from agentspan.config import settings

    current = settings()
    db_exists = current.db_path.exists()
    store_state = "not created yet"
    server_state = "not used"
    if current.server_url:
        store_state = "not used (the server's store is used)"
        from agentspan.stores.remote import RemoteStore

        try:
            probe = RemoteStore(current.server_url, api_key=current.api_key, retry_for=2.0)
            try:
                probe.list_runs(limit=1)
            finally:
                probe.close()
            server_state = "reachable"
        except AgentspanError as exc:
            server_state = f"error: {exc}"
    elif current.home.exists() and not current.home.is_dir():  # no run could create the store there
        store_state = f"error: the Agentspan home {str(current.home)!r} is a file, not a folder"
    elif problem := home_problem(current.home, current.db_path):
        store_state = f"error: {problem}"
    elif db_exists:
        try:
            open_store()
            store_state = "ok"
        except AgentspanError as exc:
            store_state = f"error: {exc}"
    try:
        adapters: list[JSON] = [a.framework for a in registered()]
    except Exception as exc:  # a broken adapter package must not break the doctor
        adapters = [f"error loading adapters: {type(exc).__name__}: {exc}"]
    return {
        "agentspan_version": __version__,
        "python_version": platform.python_version(),
        "python": sys.executable,
        "platform": platform.platform(),
        "home": str(current.home),
        "db_path": str(current.db_path),
        "db_exists": db_exists,
        "store": store_state,
        "durability": current.durability,
        "lease_ttl": current.lease_ttl,
        "poll_interval": current.poll_interval,
        "otel": current.otel,
        "step_helper": step_helper_shown(current.step_helper, embedded=not current.server_url),
        "server_url": shown_url(current.server_url) if current.server_url else "not set",
        "server": server_state,
        "api_key": "set" if current.api_key else "not set",  # never the key itself
        "adapters": adapters,
    }


def home_problem(home: Path, db_path: Path) -> str | None:
    """Why the embedded store cannot be created or written in ``home``, or None.

    Tries what a run does rather than reading permission bits (root writes through them, a
    read-only mount refuses whatever they say): creates the folder as a run would (the demo's rule:
    ``mkdir(parents=True)``), creates and deletes a file in it (SQLite creates the ``-wal`` and
    ``-shm`` files and the step helper's lock folder there), and opens the store's existing files
    for writing without changing them. Whatever it creates it removes again, so the doctor leaves
    no trace.

    Args:
        home: The Agentspan home (``AGENTSPAN_HOME``).
        db_path: The embedded store's file in it.

    Returns:
        E.g. ``"cannot use the Agentspan home /x (AGENTSPAN_HOME): Permission denied"``.
    """
    made: list[Path] = []  # the folders this check created, innermost last
    try:
        try:
            for folder in reversed([home, *home.parents]):
                if not folder.exists():
                    folder.mkdir()
                    made.append(folder)
            fd, probe = tempfile.mkstemp(prefix=".agentspan-doctor-", dir=home)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return f"cannot use the Agentspan home {home} (AGENTSPAN_HOME): {exc.strerror or exc}"
        for path in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            try:
                with path.open("r+b"):  # opened for writing, nothing written
                    pass
            except FileNotFoundError:
                continue  # created when needed: the folder's check covers it
            except OSError as exc:
                return f"cannot write the Agentspan store file {path}: {exc.strerror or exc}"
        return None
    finally:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:  # something else put a file there meanwhile: it is theirs now
                break


def step_helper_shown(step_helper: str, *, embedded: bool) -> str:
    """The step-helper setting; ``"auto"`` with what it resolves to here for the embedded store.

    Args:
        step_helper: The setting: ``"auto"``, ``"on"`` or ``"off"``.
        embedded: Whether the embedded SQLite store is used (a server decides for its own store).

    Returns:
        The setting, e.g. ``"off"``, or ``"auto (on: 2 CPUs)"`` (the helper needs two CPUs or more,
        `agentspan.stores.cores`).
    """
    if step_helper != "auto" or not embedded:
        return step_helper
    cores = usable_cores()
    return f"auto ({'on' if spare_core(cores) else 'off'}: {cores:g} CPU{'' if cores == 1 else 's'})"


def shown_url(url: str) -> str:
    """The server URL(s) without any ``user:password@`` part (up to the authority's last ``@``, as
    httpx reads it: a password may hold a raw ``@``)."""
    return ",".join(re.sub(r"//[^/?#]*@", "//", part.strip()) for part in url.split(","))
