"""API keys with roles, and the ASGI middleware that enforces them.

Roles nest: ``agent`` may call every endpoint except deciding approvals, ``approver`` may also
decide approvals, ``admin`` may do everything. Keys come from ``--api-key KEY[:ROLE]`` flags, from
``$AGENTSPAN_SERVER_KEYS`` (comma-separated ``KEY[:ROLE]``) and from a keys file (one ``KEY ROLE``
or ``KEY:ROLE`` per line; ``#`` starts a comment at the start of a line or after a space); the role
defaults to ``admin``. A key holding ``:`` must be given with its role (``a:b:admin``).

Only SHA-256 digests of the keys are kept in memory. A presented key is hashed and compared with
every digest using `hmac.compare_digest` (no early exit), and keys never appear in messages, logs
or answers: configuration errors name the entry (source and position), never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from agentspan.errors import ConfigurationError
from agentspan.wire import PROBLEM_CONTENT_TYPE, ROLES, Problem, Role

ENV_VAR = "AGENTSPAN_SERVER_KEYS"
_COMMENT = re.compile(r"(^|\s)#.*$")
DEFAULT_ROLE: Role = "admin"

_GRANTS: dict[str, frozenset[str]] = {
    "agent": frozenset({"agent"}),
    "approver": frozenset({"agent", "approver"}),
    "admin": frozenset({"agent", "approver", "admin"}),
}
"""What each role may do: a key of role R passes a check requiring any role in ``_GRANTS[R]``."""


def _digest(key: str | bytes) -> bytes:
    raw = key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw).digest()


def _role_of_entry(raw_role: str, where: str) -> Role:
    role = raw_role.strip().lower()
    if role not in ROLES:
        # The "role" may be the tail of a key holding a colon: never echo it.
        raise ConfigurationError(
            f"API key {where} has an unknown role; expected KEY or KEY:ROLE with ROLE one of {', '.join(ROLES)}"
        )
    return role  # type: ignore[return-value]


def parse_entry(entry: str, where: str) -> tuple[str, Role]:
    """Parses one ``KEY[:ROLE]`` entry.

    Args:
        entry: The entry text.
        where: Which entry this is (source and position), for error messages.

    Returns:
        The key and its role (``admin`` when none is given).

    Raises:
        ConfigurationError: The key is empty or the role is unknown (the message names ``where``,
            never the key).
    """
    key, sep, role = entry.strip().rpartition(":")
    if not sep:
        key, role = role, DEFAULT_ROLE
    key = key.strip()
    if not key:
        raise ConfigurationError(f"API key {where} is empty")
    return key, _role_of_entry(role, where)


def _file_entries(path: str | os.PathLike[str]) -> Iterable[tuple[str, Role, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the keys file {os.fspath(path)}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        content = _COMMENT.sub("", line).strip()  # a "#" inside a key is part of the key
        if not content or content.startswith("#"):
            continue
        where = f"on line {number} of {os.fspath(path)}"
        fields = content.split()
        if len(fields) == 1:
            yield (*parse_entry(fields[0], where), where)
        elif len(fields) == 2:
            yield fields[0], _role_of_entry(fields[1], where), where
        else:
            raise ConfigurationError(f"API key {where} is malformed; expected 'KEY ROLE' or 'KEY:ROLE'")


class KeyRing:
    """The accepted API keys (as SHA-256 digests) and their roles.

    Args:
        entries: ``(key, role)`` pairs.

    Raises:
        ConfigurationError: A role is unknown, or one key is given two different roles.
    """

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        self._roles: dict[bytes, Role] = {}
        for number, (key, role) in enumerate(entries, start=1):
            self._add(key, role, f"#{number}")

    def _add(self, key: str, role: str, where: str) -> None:
        if not key:
            raise ConfigurationError(f"API key {where} is empty")
        checked = _role_of_entry(role, where)
        digest = _digest(key)
        if self._roles.get(digest, checked) != checked:
            raise ConfigurationError(f"API key {where} repeats an earlier key with a different role")
        self._roles[digest] = checked

    @classmethod
    def from_sources(
        cls,
        api_keys: Iterable[str] = (),
        keys_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> KeyRing:
        """Builds a key ring from ``--api-key`` values, a keys file and the environment.

        Args:
            api_keys: ``KEY[:ROLE]`` strings (command-line flags).
            keys_file: A file with one ``KEY ROLE`` or ``KEY:ROLE`` per line (``#`` comments).
            env: Environment to read ``AGENTSPAN_SERVER_KEYS`` from (default: ``os.environ``).

        Raises:
            ConfigurationError: An entry is malformed or has an unknown role, or the keys file
                cannot be read. The message names the entry, never the key.
        """
        ring = cls()
        for n, value in enumerate(api_keys, start=1):
            where = f"#{n} of --api-key"
            ring._add(*parse_entry(value, where), where)
        if keys_file is not None:
            for key, role, where in _file_entries(keys_file):
                ring._add(key, role, where)
        env_value = (os.environ if env is None else env).get(ENV_VAR, "")
        for n, value in enumerate(env_value.split(","), start=1):
            if value.strip():
                where = f"#{n} of ${ENV_VAR}"
                ring._add(*parse_entry(value, where), where)
        return ring

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> KeyRing:
        """Builds a key ring from ``KEY[:ROLE]`` strings only (no environment, no file).

        Raises:
            ConfigurationError: An entry is empty or has an unknown role (named by position).
        """
        return cls.from_sources(specs, env={})

    def __len__(self) -> int:
        return len(self._roles)

    def __repr__(self) -> str:
        return f"KeyRing({len(self)} keys)"

    def role_of(self, key: str | bytes) -> Role | None:
        """Returns the role of a presented key, or None when it is not accepted.

        Every stored digest is compared (constant time each, no early exit).
        """
        presented = _digest(key)
        found: Role | None = None
        for digest, role in self._roles.items():
            if hmac.compare_digest(presented, digest):
                found = role
        return found

    def check(self, authorization: str | bytes | None, required: Role) -> Problem | None:
        """Checks an ``Authorization`` header against a required role.

        Args:
            authorization: The header's value (None when absent); raw bytes are compared as sent.
            required: The role the endpoint needs.

        Returns:
            None when the request may proceed, else the 401 or 403 problem to answer with.
        """
        raw = authorization.encode("utf-8", "surrogateescape") if isinstance(authorization, str) else authorization
        scheme, _, key = (raw or b"").strip().partition(b" ")
        key = key.strip()
        if scheme.lower() != b"bearer" or not key:
            return _auth_problem(401, "missing API key: send 'Authorization: Bearer <key>'")
        role = self.role_of(key)
        if role is None:
            return _auth_problem(401, "invalid API key")
        if required not in _GRANTS[role]:
            return _auth_problem(403, f"the API key's role ({role}) may not do this; it needs the {required} role")
        return None


def requester(request: Request, keys: KeyRing | None) -> str | None:
    """Who sent a request, as the audit trail records it: ``api:ROLE`` for the role of its API key.

    Used for an approval decision and a run's retry sent without ``by``. Keys carry no names, so
    the role is what tells them apart (the web UI records ``web-ui:ROLE`` for a login that gave no
    name). A ``by`` a decision names is kept as given: an approver key may act on someone's behalf
    (a bot relaying a chat decision); a reopen's ``by`` from an ``agent`` key is recorded as that
    key's claim (``api:agent (for NAME)``).

    Args:
        request: The request; `AuthMiddleware` already accepted its key.
        keys: The app's key ring (the one the middleware checked the request against).

    Returns:
        ``api:ROLE``, or None when the app has no API keys (anyone on loopback: no principal) or
        the request carries no accepted key.
    """
    # (the middleware keeps no record of the key's role on the request: the key is looked up again)
    if not keys:
        return None
    for name, value in request.scope.get("headers", ()):
        if name == b"authorization":  # the first one, as the middleware reads it
            scheme, _, key = value.strip().partition(b" ")
            key = key.strip()
            role = keys.role_of(key) if scheme.lower() == b"bearer" and key else None
            return None if role is None else f"api:{role}"
    return None


def _auth_problem(status: int, detail: str) -> Problem:
    title = "Unauthorized" if status == 401 else "Forbidden"
    return Problem(title=title, status=status, detail=detail, error="AuthError")


class AuthMiddleware:
    """ASGI middleware answering 401/403 before the request body is read.

    Args:
        app: The wrapped application.
        keys: The accepted keys; None (or an empty ring) lets every request through.
        required_role: Maps a request scope to the role it needs, or None for an open endpoint.
    """

    def __init__(self, app: ASGIApp, *, keys: KeyRing | None, required_role: Callable[[Scope], Role | None]) -> None:
        self.app = app
        self.keys = keys if keys else None
        self.required_role = required_role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.keys is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        required = self.required_role(scope)
        if required is not None:
            header: bytes | None = None
            for name, value in scope.get("headers", ()):
                if name == b"authorization":
                    header = value
                    break
            problem = self.keys.check(header, required)
            if problem is not None:
                headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
                response = Response(
                    problem.model_dump_json(exclude_none=True),
                    status_code=problem.status,
                    media_type=PROBLEM_CONTENT_TYPE,
                    headers=headers,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
