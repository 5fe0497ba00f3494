"""A throwaway PostgreSQL cluster for tests, as a class and as pytest fixtures.

Import the fixtures into a test module (the tests directory is on ``sys.path``)::

    from pg_cluster import pg_db, postgres_url  # noqa: F401

``postgres_url`` (session scope) starts one cluster for the whole session and yields the URL of a
database on it; ``pg_db`` (function scope) creates a fresh database per test and yields its URL.
`PgCluster` starts further clusters directly (``start()``, ``create_database()``, ``stop()``).

PostgreSQL refuses to run as root, so as root the binaries run as the ``postgres`` user (through
``runuser``). Without PostgreSQL binaries the fixtures skip the test, except when the ``CI``
environment variable is set: CI installs PostgreSQL, so its absence there is an error.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

__all__ = ["PgCluster", "PgUnavailable", "find_bindir", "free_port", "pg_db", "postgres_url", "session_cluster"]

_SUPERUSER = "postgres"
_names = itertools.count(1)


class PgUnavailable(RuntimeError):
    """No usable PostgreSQL installation (binaries or the ``postgres`` user are missing)."""


def _version(bindir: str) -> tuple[int, ...]:
    match = re.search(r"/(\d+(?:\.\d+)*)/bin/?$", bindir)
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)


def find_bindir() -> Path:
    """Returns the directory of ``initdb``/``pg_ctl``: ``pg_config --bindir``, else the newest
    ``/usr/lib/postgresql/*/bin``, else the ``PATH``.

    Raises:
        PgUnavailable: No PostgreSQL server binaries are installed.
    """
    candidates: list[str] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).parent))
    for bindir in candidates:
        if bindir and all((Path(bindir) / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(bindir)
    raise PgUnavailable("no PostgreSQL server binaries found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH)")


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that nothing listens on (at the time of the call)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only, trust auth.

    Args:
        bindir: Where ``initdb`` and ``pg_ctl`` live; found with `find_bindir` when omitted.

    Raises:
        PgUnavailable: No PostgreSQL binaries, or running as root without a ``postgres`` user.
    """

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("running as root and there is no 'postgres' user to run PostgreSQL") from None
        self.root: Path | None = None
        self.port: int | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Initialises the cluster in a new temporary directory and starts the server.

        Raises:
            RuntimeError: ``initdb`` or ``pg_ctl start`` failed (the server log is in the message).
        """
        if self.root is not None:
            raise RuntimeError("the cluster is already started")
        # /tmp: readable by the postgres user, and short enough for the Unix socket path
        self.root = Path(tempfile.mkdtemp(prefix="agentspan-pg-", dir="/tmp" if Path("/tmp").is_dir() else None))
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        try:
            self._run("initdb", "-D", str(self.datadir), "-A", "trust", "-U", _SUPERUSER, "-E", "UTF8",
                      "--no-locale", "--no-sync")  # fmt: skip
            for _attempt in range(3):  # the free port may be taken between the probe and the bind
                port = free_port()
                options = f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200"
                try:
                    self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-o", options,
                              "-w", "-t", "60", "start")  # fmt: skip
                except RuntimeError:
                    if "Address already in use" not in self._log():
                        raise
                    continue
                self.port = port
                return
            raise RuntimeError(f"PostgreSQL could not bind a free port:\n{self._log()}")
        except BaseException:
            if self.datadir.joinpath("postmaster.pid").exists():  # e.g. `pg_ctl -w` timed out
                with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                    self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
            self._remove()
            raise

    def stop(self) -> None:
        """Stops the server at once (``-m immediate``) and removes its directory."""
        if self.root is None:
            return
        if self.port is not None:
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
            self.port = None
        self._remove()

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- databases ------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        """The cluster's data directory."""
        if self.root is None:
            raise RuntimeError("the cluster is not started")
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        """The server log."""
        return self.datadir.parent / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        """Returns the URL of a database on this cluster (user ``postgres``, no password)."""
        if self.port is None:
            raise RuntimeError("the cluster is not running")
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Creates a database (a new unique name when ``name`` is None) and returns its URL."""
        name = name or f"agentspan_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drops a database, disconnecting its remaining sessions."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # ---- plumbing -------------------------------------------------------------------------
    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/tmp")
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}\n{self._log()}".rstrip()
            )

    def _log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:]
        except (OSError, RuntimeError):
            return ""

    def _remove(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


# ---- pytest fixtures ---------------------------------------------------------------------------
_session: PgCluster | None = None
_spares: _Spares | None = None


def session_cluster() -> PgCluster:
    """Returns the cluster the ``postgres_url`` fixture started for this test session."""
    if _session is None:
        raise RuntimeError("no session cluster: request the postgres_url fixture first")
    return _session


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Starts one PostgreSQL cluster for the session and yields the URL of a database on it.

    Skips the test when PostgreSQL is not installed, unless ``CI`` is set (then it fails).
    """
    global _session, _spares
    try:
        cluster = PgCluster()
    except PgUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL is not installed: {exc}")
    cluster.start()
    spares = _Spares(cluster)
    _session, _spares = cluster, spares
    try:
        yield cluster.create_database("agentspan")
    finally:
        spares.close()
        _session = _spares = None
        cluster.stop()


@pytest.fixture
def pg_db(postgres_url: str) -> str:
    """Creates a fresh database on the session cluster for one test and returns its URL.

    The next test's database is created in the background while this test runs. Databases are
    not dropped (about 8 MB each; dropping costs more time than it saves): the whole cluster
    directory goes at the end of the session.
    """
    assert _spares is not None
    return _spares.take()


class _Spares:
    """Creates databases one ahead, on a background thread."""

    def __init__(self, cluster: PgCluster) -> None:
        self._cluster = cluster
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-spare-db")
        self._next: Future[str] | None = None

    def take(self) -> str:
        current = self._next or self._executor.submit(self._cluster.create_database)
        self._next = self._executor.submit(self._cluster.create_database)
        return current.result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
