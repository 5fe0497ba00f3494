"""Signed tokens of the web UI: sessions, CSRF tokens and one-shot flash messages.

Every token is ``base64url(payload) "." base64url(HMAC-SHA256(secret, purpose NUL payload))``,
signed with a random per-app secret (`secrets.token_bytes`), so tokens die with the process and a
token made for one purpose (a flash message) is never accepted for another (a session).

A session token carries the role of the API key that logged in, an optional display name, a random
nonce and an expiry; never the key itself. A CSRF token is an HMAC of the session's nonce (or of a
fixed label where there is no session: the login form, and every form of an open UI), so only a
page served by this app can hold one. Logging out revokes the session's nonce until it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass

from agentspan.wire import ROLES, Role

SESSION_COOKIE = "agentspan_session"
FLASH_COOKIE = "agentspan_flash"
LOGIN_COOKIE = "agentspan_login"
"""A random nonce the login form is bound to (its CSRF token is the nonce's): a page of another
site can neither read it nor, the cookie being ``SameSite=strict``, send it with a login."""
SESSION_TTL = 8 * 3600.0
"""Seconds a login lasts."""
FLASH_TTL = 120.0
"""Seconds a flash message waits for the page it is shown on."""
MAX_NAME = 80
"""Longest display name kept in a session."""
_MAX_TOKEN = 2048
_MAX_FLASH_PAYLOAD = (_MAX_TOKEN - 44) * 3 // 4
"""Bytes of a flash message's claims that sign into a token `unsign` accepts (base64 and a MAC)."""
_DECIDERS: frozenset[str] = frozenset({"approver", "admin"})


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A logged-in browser (or, with no API keys, everyone).

    Attributes:
        role: The role of the key that logged in (``admin`` for an open UI).
        name: Who logged in, as they typed it (recorded as ``decided_by``), or None.
        nonce: Random id of this login; CSRF tokens and logout are bound to it.
        expires_at: When the login ends (epoch seconds; infinite for an open UI).
        open: True when the app has no API keys (no login at all).
    """

    role: Role
    name: str | None
    nonce: str
    expires_at: float
    open: bool = False

    @property
    def may_decide(self) -> bool:
        """Whether this session may approve or reject (the ``approver`` or ``admin`` role)."""
        return self.role in _DECIDERS

    @property
    def actor(self) -> str:
        """Who this session acts as in the audit trail (a decision's ``decided_by``, a cancelled
        run's reason, a retry's ``by``): its name, else ``web-ui`` for an open UI, else
        ``web-ui:ROLE`` (a login that gave no name)."""
        return self.name or ("web-ui" if self.open else f"web-ui:{self.role}")


class Signer:
    """Issues and checks the UI's signed tokens with one random secret.

    Args:
        secret: The HMAC key; a fresh 32 random bytes when None (the normal case: one per app).
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()

    # ---- generic signing ------------------------------------------------------------------------
    def _mac(self, purpose: str, payload: bytes) -> bytes:
        return hmac.new(self._secret, purpose.encode("ascii") + b"\x00" + payload, hashlib.sha256).digest()

    def sign(self, purpose: str, payload: bytes) -> str:
        """Returns ``payload`` signed for ``purpose``."""
        return f"{_b64(payload)}.{_b64(self._mac(purpose, payload))}"

    def unsign(self, purpose: str, token: str | None) -> bytes | None:
        """Returns the payload of a token signed for ``purpose``, or None when it is not one."""
        if not token or len(token) > _MAX_TOKEN or token.count(".") != 1:
            return None
        body, _, mac = token.partition(".")
        try:
            payload, presented = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        return payload if hmac.compare_digest(presented, self._mac(purpose, payload)) else None

    # ---- sessions ---------------------------------------------------------------------------------
    def issue(self, role: Role, name: str | None = None, *, ttl: float = SESSION_TTL) -> str:
        """Returns a new session token for a role (the cookie's value).

        Args:
            role: The role of the key that logged in.
            name: An optional display name (cut to `MAX_NAME` characters).
            ttl: Seconds the session lasts.
        """
        claims = {"r": role, "n": secrets.token_urlsafe(16), "e": round(time.time() + ttl, 3)}
        if name:
            claims["u"] = name[:MAX_NAME]
        return self.sign("session", json.dumps(claims, separators=(",", ":")).encode("utf-8"))

    def session(self, token: str | None) -> Session | None:
        """Returns the session a token stands for, or None (forged, expired or logged out)."""
        payload = self.unsign("session", token)
        if payload is None:
            return None
        try:
            claims = json.loads(payload)
            role, nonce, expires_at = claims["r"], claims["n"], float(claims["e"])
            name = claims.get("u")
        except (ValueError, KeyError, TypeError):
            return None
        if role not in ROLES or not isinstance(nonce, str) or not isinstance(name, str | None):
            return None
        if expires_at <= time.time():
            return None
        with self._lock:
            if nonce in self._revoked:
                return None
        return Session(role=role, name=name, nonce=nonce, expires_at=expires_at)

    def revoke(self, session: Session) -> None:
        """Ends a session before its expiry (logout): its token is refused from now on."""
        if session.open:
            return
        at = time.time()
        with self._lock:
            for nonce in [n for n, until in self._revoked.items() if until <= at]:
                del self._revoked[nonce]
            self._revoked[session.nonce] = session.expires_at

    # ---- CSRF ---------------------------------------------------------------------------------
    def csrf(self, binding: str) -> str:
        """The CSRF token of a session nonce (or of a fixed label such as ``login``)."""
        return _b64(self._mac("csrf", binding.encode("utf-8")))

    def csrf_ok(self, binding: str, presented: str | None) -> bool:
        """Whether ``presented`` is the CSRF token of ``binding`` (constant-time comparison)."""
        return bool(presented) and hmac.compare_digest(str(presented).encode("utf-8"), self.csrf(binding).encode())

    # ---- flash messages -------------------------------------------------------------------------
    def flash(self, kind: str, text: str) -> str:
        """A signed one-shot message (``ok`` or ``error``) for the next page shown; a text too long
        for a token (`_MAX_TOKEN` characters, whatever its script) is cut, with an ellipsis."""
        expires_at = round(time.time() + FLASH_TTL, 3)
        kind = kind[:16]  # "ok" or "error": with any text cut, the claims fit
        shown = text.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate cannot be UTF-8
        while True:
            claims = {"k": kind, "t": shown, "e": expires_at}
            payload = json.dumps(claims, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            if len(payload) <= _MAX_FLASH_PAYLOAD:
                return self.sign("flash", payload)
            shown = shown[:len(shown) * 3 // 4 - 1] + "…"

    def read_flash(self, token: str | None) -> tuple[str, str] | None:
        """Returns ``(kind, text)`` of a flash token, or None when absent, forged or stale."""
        payload = self.unsign("flash", token)
        if payload is None:
            return None
        try:
            claims = json.loads(payload)
            kind, text, expires_at = str(claims["k"]), str(claims["t"]), float(claims["e"])
        except (ValueError, KeyError, TypeError):
            return None
        return (kind, text) if expires_at > time.time() else None


OPEN_SESSION = Session(role="admin", name=None, nonce="open", expires_at=float("inf"), open=True)
"""The session of every request to a UI without API keys (its CSRF binding is ``open``)."""
