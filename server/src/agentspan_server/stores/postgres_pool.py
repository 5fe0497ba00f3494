"""Connection plumbing for the PostgreSQL store: the pool, transactions, plans, and password-free errors.

`PostgresPool` opens a psycopg connection pool (after preparing the database on a first, separate
connection), runs callables and plans in a transaction or in autocommit mode, and turns every
`psycopg.Error` into a `StoreError` whose message names the server and database but never the
password (`redact_url` removes it from the URL). `PostgresStore` builds its `Store` methods on top.

A `Plan` is a store operation written once, free of I/O: a generator that yields the `Statement`
to run next and is sent its `Outcome` (rows and row count), returning the operation's result, or
`InTransaction` with a second plan to run as one transaction (a rare slow path). `drive` runs a
plan on a psycopg cursor; `postgres_async` runs the same plans on an asyncio connection, so the
server's hot endpoints and the synchronous store share every statement, fence and refusal.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from agentspan.errors import ConfigurationError, StoreError
from agentspan.stores.base import unstorable

__all__ = ["InTransaction", "Outcome", "Plan", "PostgresPool", "Statement", "drive", "redact_url"]

_T = TypeVar("_T")
_DEFAULT_CONNECT_TIMEOUT = 10

DEFAULT_POOL_TIMEOUT = 5.0
"""Seconds a call waits for a pooled connection by default: under the HTTP client's 10 s timeout
(`agentspan.stores.remote.RemoteStore`), so that while the database is down (or every connection
is busy) a client hears the server's 503 and backs off, instead of timing out and sending its
request again while the server still holds the first one (psycopg_pool's own default is 30 s)."""


# ---- plans ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a plan.

    Attributes:
        query: The SQL (a constant string, so psycopg prepares it once per connection).
        params: Its parameters.
        binary: Ask for results in binary format (the same Python values, less to parse).
        prepare: psycopg's ``prepare`` argument (None: after a few executions; False: never).
    """

    query: str
    params: Sequence[Any] | Mapping[str, Any]
    binary: bool = False
    prepare: bool | None = None


class Outcome(NamedTuple):
    """What a statement gave back: its rows (empty when it returns none) and its row count."""

    rows: list[Any]
    rowcount: int


@dataclass(frozen=True, slots=True)
class InTransaction(Generic[_T]):
    """A plan's answer meaning: run ``plan`` as one transaction (on a fresh connection); its result
    is the operation's result."""

    plan: Generator[Statement, Outcome, _T]


Plan: TypeAlias = Generator[Statement, Outcome, "_T | InTransaction[_T]"]
"""A store operation free of I/O (see the module docstring)."""


def drive(plan: Generator[Statement, Outcome, _T], cur: psycopg.Cursor[Any]) -> _T:
    """Runs a plan's statements on ``cur`` and returns what the plan returns (its errors propagate)."""
    try:
        statement = next(plan)
        while True:
            cur.execute(statement.query, statement.params, binary=statement.binary, prepare=statement.prepare)
            rows = cur.fetchall() if cur.rownumber is not None else []  # (not description: it builds columns)
            statement = plan.send(Outcome(rows, cur.rowcount))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def redact_url(url: str) -> str:
    """Returns the connection URL (or ``key=value`` string) with any password removed."""
    if re.match(r"^postgres(ql)?://", url):
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hosts = netloc.rsplit("@", 1)
            netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return re.sub(r"\s*\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", "", url).strip()


class _MostRecentFirst(deque[Any]):
    """psycopg_pool's queue of idle connections, served last in, first out.

    The pool appends a returned connection on the right and takes one from the left: every idle
    connection in turn, so with a few connections open each statement goes to the backend idle
    the longest, the one most likely descheduled and cold. Taken from the right instead, calls one
    after another keep using one backend (median statement latency here with a call every 2 ms:
    341 us on one connection, 461 us on three in turn). The pool also takes from the left to close a
    connection unused for ``max_idle``: it then closes the most recently used idle one instead,
    which is as idle as any.
    """

    def popleft(self) -> Any:
        return self.pop()


class PostgresPool:
    """Owns a connection pool to one PostgreSQL database and the error handling around it.

    Attributes:
        url: The connection URL with the password removed (safe to log or show).

    Args:
        url: A libpq connection URL or ``key=value`` string. ``connect_timeout`` defaults to 10
            seconds and ``application_name`` to ``agentspan``.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens (concurrent calls beyond it wait for one).
        prepare: Called once with a first autocommit connection, before the pool opens (to
            check or migrate the schema); it may raise `StoreError` or `psycopg.Error`.
        pool_timeout: Seconds a call waits for a connection (the database unreachable, or every
            connection in use) before it fails with `StoreError` (`DEFAULT_POOL_TIMEOUT`).

    Raises:
        StoreError: The URL is invalid, the server cannot be reached, or ``prepare`` failed.
            Messages name the server and database, never the password.
        ConfigurationError: Bad pool sizes or ``pool_timeout``.
    """

    def __init__(
        self, url: str, *, min_size: int, max_size: int, prepare: Callable[[psycopg.Connection[Any]], None],
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        self.url = redact_url(url)
        if min_size < 0 or max_size < max(min_size, 1):
            raise ConfigurationError(
                f"bad pool sizes min_size={min_size}, max_size={max_size} (need 0 <= min <= max, max >= 1)"
            )
        if isinstance(pool_timeout, bool) or not isinstance(pool_timeout, int | float) or not pool_timeout > 0:
            raise ConfigurationError(f"bad pool_timeout={pool_timeout!r} (need seconds > 0)")
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            detail = str(exc) if redact_url(url) == url else "check its syntax"  # the error may quote it
            raise StoreError(f"invalid PostgreSQL URL {self.url}: {detail}") from None
        self._password = str(params.get("password") or "")
        self._conninfo, self._sizes, self.pool_timeout = url, (min_size, max_size), float(pool_timeout)
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = _DEFAULT_CONNECT_TIMEOUT
        if "application_name" not in params:
            kwargs["application_name"] = "agentspan"
        try:
            with psycopg.connect(url, **kwargs) as conn:
                prepare(conn)
        except psycopg.Error as exc:
            error = self._error(exc, "cannot open the Agentspan store at")
            raise error from (None if self._password and self._password in str(exc) else exc)
        self._kwargs = kwargs
        self._pool = ConnectionPool(
            url, min_size=min_size, max_size=max_size, kwargs=kwargs, open=True, name="agentspan-store",
            timeout=self.pool_timeout,
        )

    def async_pool(self) -> AsyncConnectionPool:
        """A new, unopened asyncio pool to the same database, with the same sizes, timeout and settings,
        handing out its most recently used connection first (`_MostRecentFirst`)."""
        min_size, max_size = self._sizes
        from agentspan_server.stores.postgres_watch import WatchedConnection

        pool: AsyncConnectionPool = AsyncConnectionPool(
            self._conninfo, min_size=min_size, max_size=max_size, kwargs=self._kwargs, open=False,
            name="agentspan-store-async", connection_class=WatchedConnection, timeout=self.pool_timeout,
        )  # fmt: skip
        if type(getattr(pool, "_pool", None)) is deque:  # psycopg_pool's idle connections
            pool._pool = _MostRecentFirst(pool._pool)
        return pool

    def _scrub(self, text: str) -> str:
        """Returns ``text`` with the password, if any, replaced by ``***``."""
        return text.replace(self._password, "***") if self._password else text

    def _error(self, exc: psycopg.Error, prefix: str = "Agentspan store") -> StoreError:
        """Returns a `StoreError` for ``exc`` naming the database, with the password scrubbed."""
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return StoreError(f"{prefix} {self.url}: {self._scrub(detail)}")

    def _run(self, plan: Plan[_T], *, transaction: bool = False) -> _T:
        """Runs a plan on one connection, in autocommit mode or as one transaction; then the plan
        of its `InTransaction` answer, if any, as one transaction."""
        try:
            with self._pool.connection() as conn:
                if transaction:
                    with conn.transaction():
                        result = drive(plan, conn.cursor())
                else:
                    result = drive(plan, conn.cursor())
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        except UnicodeEncodeError as exc:  # text PostgreSQL cannot take (a lone surrogate)
            raise unstorable(self.url, exc) from exc
        if isinstance(result, InTransaction):
            return self._run(result.plan, transaction=True)
        return result

    def _one(self, fn: Callable[[psycopg.Cursor[Any]], _T], *, binary: bool = False) -> _T:
        """Runs ``fn`` on an autocommit connection: each statement is its own transaction.

        ``binary`` asks for results in binary format (the same Python values, less to parse).
        """
        try:
            with self._pool.connection() as conn:
                return fn(conn.cursor(binary=binary))
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        except UnicodeEncodeError as exc:  # text PostgreSQL cannot take (a lone surrogate)
            raise unstorable(self.url, exc) from exc

    def _query(self, statement: str, params: Sequence[Any] | dict[str, Any], *, binary: bool = False) -> list[Any]:
        """Runs one autocommitted statement and returns all its rows."""
        return self._one(lambda cur: cur.execute(statement, params).fetchall(), binary=binary)  # type: ignore[arg-type]

    def _select(self, table: str, columns: str, filters: dict[str, Any], order: str, limit: int, *,
                below: tuple[str, str | None] | None = None) -> list[Any]:
        """Selects ``columns`` of the rows matching the non-None ``filters`` (``limit < 0``: no
        limit); ``below``: (column, value), only rows whose column sorts before a non-None value
        (keyset paging)."""
        tests = [f"{name}=%s" for name, value in filters.items() if value is not None]
        params = [str(value) for value in filters.values() if value is not None]
        if below is not None and below[1] is not None:
            tests.append(f"{below[0]}<%s")
            params.append(below[1])
        statement = f"SELECT {columns} FROM {table}" + (f" WHERE {' AND '.join(tests)}" if tests else "")
        return self._query(f"{statement} ORDER BY {order} LIMIT %s", (*params, None if limit < 0 else limit))
