"""Connection plumbing for the PostgreSQL store: the pool, transactions, and password-free errors.

`PostgresPool` opens a psycopg connection pool (after preparing the database on a first, separate
connection), runs callables in a transaction or in autocommit mode, and turns every `psycopg.Error`
into a `StoreError` whose message names the server and database but never the password
(`redact_url` removes it from the URL). `PostgresStore` builds its `Store` methods on top of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from agentspan.errors import ConfigurationError, StoreError

__all__ = ["PostgresPool", "redact_url"]

_T = TypeVar("_T")
_DEFAULT_CONNECT_TIMEOUT = 10


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

    Raises:
        StoreError: The URL is invalid, the server cannot be reached, or ``prepare`` failed.
            Messages name the server and database, never the password.
        ConfigurationError: Bad pool sizes.
    """

    def __init__(
        self, url: str, *, min_size: int, max_size: int, prepare: Callable[[psycopg.Connection[Any]], None]
    ) -> None:
        self.url = redact_url(url)
        if min_size < 0 or max_size < max(min_size, 1):
            raise ConfigurationError(
                f"bad pool sizes min_size={min_size}, max_size={max_size} (need 0 <= min <= max, max >= 1)"
            )
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            detail = str(exc) if redact_url(url) == url else "check its syntax"  # the error may quote it
            raise StoreError(f"invalid PostgreSQL URL {self.url}: {detail}") from None
        self._password = str(params.get("password") or "")
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
        self._pool = ConnectionPool(
            url, min_size=min_size, max_size=max_size, kwargs=kwargs, open=True, name="agentspan-store"
        )

    def _scrub(self, text: str) -> str:
        """Returns ``text`` with the password, if any, replaced by ``***``."""
        return text.replace(self._password, "***") if self._password else text

    def _error(self, exc: psycopg.Error, prefix: str = "Agentspan store") -> StoreError:
        """Returns a `StoreError` for ``exc`` naming the database, with the password scrubbed."""
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return StoreError(f"{prefix} {self.url}: {self._scrub(detail)}")

    def _tx(self, fn: Callable[[psycopg.Cursor[Any]], _T]) -> _T:
        """Runs ``fn`` in one transaction, rolled back on any error."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                return fn(conn.cursor())
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _one(self, fn: Callable[[psycopg.Cursor[Any]], _T], *, binary: bool = False) -> _T:
        """Runs ``fn`` on an autocommit connection: each statement is its own transaction.

        ``binary`` asks for results in binary format (the same Python values, less to parse).
        """
        try:
            with self._pool.connection() as conn:
                return fn(conn.cursor(binary=binary))
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _query(self, statement: str, params: Sequence[Any] | dict[str, Any], *, binary: bool = False) -> list[Any]:
        """Runs one autocommitted statement and returns all its rows."""
        return self._one(lambda cur: cur.execute(statement, params).fetchall(), binary=binary)  # type: ignore[arg-type]

    def _select(self, table: str, columns: str, filters: dict[str, Any], order: str, limit: int) -> list[Any]:
        """Selects ``columns`` of the rows matching the non-None ``filters`` (``limit < 0``: no limit)."""
        where = " AND ".join(f"{name}=%s" for name, value in filters.items() if value is not None)
        params = [str(value) for value in filters.values() if value is not None]
        statement = f"SELECT {columns} FROM {table}" + (f" WHERE {where}" if where else "")
        return self._query(f"{statement} ORDER BY {order} LIMIT %s", (*params, None if limit < 0 else limit))
