"""Process-wide configuration: environment variables, overridable by `agentspan.configure`."""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from agentspan.errors import ConfigurationError
from agentspan.stores.base import Store

Durability = Literal["normal", "full"]
OtelMode = Literal["off", "on", "content"]
StepHelper = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class Settings:
    """Agentspan settings.

    Attributes:
        home: Folder of the embedded store (``$AGENTSPAN_HOME``, default ``~/.agentspan``).
        server_url: Agentspan server to use instead of the embedded store (``$AGENTSPAN_SERVER_URL``).
        api_key: Key for the server (``$AGENTSPAN_API_KEY``); never logged or stored.
        durability: ``"normal"`` (SQLite WAL, synchronous=NORMAL: survives process crashes) or
            ``"full"`` (synchronous=FULL: also survives power loss). ``$AGENTSPAN_DURABILITY``.
        lease_ttl: Seconds a run's lease lasts without a heartbeat (``$AGENTSPAN_LEASE_TTL``).
        poll_interval: Seconds between store polls while waiting for a decision or a run.
        otel: OpenTelemetry spans of runs (`agentspan.tracing`): ``"off"``, ``"on"``, or
            ``"content"`` (also tool arguments and results). ``$AGENTSPAN_OTEL``.
        step_helper: Whether the embedded store commits new steps in a helper process, off the
            agent's path: ``"auto"`` (when the process may use two CPUs or more), ``"on"`` or
            ``"off"``. ``$AGENTSPAN_STEP_HELPER``.
    """

    home: Path
    server_url: str | None = None
    api_key: str | None = None
    durability: Durability = "normal"
    lease_ttl: float = 5.0
    poll_interval: float = 0.2
    otel: OtelMode = "off"
    step_helper: StepHelper = "auto"

    @property
    def db_path(self) -> Path:
        """The embedded SQLite store file."""
        return self.home / "agentspan.db"

    @property
    def step_helper_choice(self) -> bool | None:
        """`step_helper` as `SqliteStore` takes it: None (``"auto"``), True or False."""
        return None if self.step_helper == "auto" else self.step_helper == "on"


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    return seconds_setting(name, value, raw)


MAX_SECONDS = 365 * 86400.0
"""The longest lease or poll interval accepted (a year): a longer one is a mistake."""


def seconds_setting(name: str, value: float, shown: object) -> float:
    """Checks a setting in seconds: a positive, finite number, at most `MAX_SECONDS` (NaN compares
    false with everything: a NaN lease would never be checked against, so another process could
    take a run its owner still runs). ``shown``: the value as given, for the error.

    Raises:
        ConfigurationError: Not such a number (naming ``name``).
    """
    if not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        raise ConfigurationError(f"{name}={shown!r} must be a number of seconds above 0 and at most {MAX_SECONDS:g}")
    return value


def time_limit(name: str, value: object) -> float | None:
    """Checks a caller's time limit in seconds (``Handle.result(timeout=)``, ``resume(wait=)``):
    None stays None (the call's default); below 0 counts as 0; ``math.inf``, or more than
    `MAX_SECONDS`, is no limit (``math.inf``: a clock or a lock would refuse such a number).

    Raises:
        ConfigurationError: Not a number, or NaN (it compares false with every deadline: the
            wait would never end), naming ``name``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name}={value!r}: expected a number of seconds or None")
    try:
        seconds = float(value)
    except OverflowError:  # an int past any float
        return math.inf
    if math.isnan(seconds):
        raise ConfigurationError(f"{name}=nan: expected a number of seconds or None")
    return math.inf if seconds > MAX_SECONDS else max(0.0, seconds)


def parse_mode(value: str | bool | None, *, source: str) -> OtelMode:
    """Reads an ``otel`` setting: off (default), on, or content (also tool arguments and results).

    Raises:
        ConfigurationError: Not one of ``0/1``, ``false/true``, ``off/on``, ``no/yes``, ``content``.
    """
    if value is None or value is False or value == "":
        return "off"
    if value is True:
        return "on"
    lowered = str(value).strip().lower()
    if lowered in ("0", "false", "off", "no"):
        return "off"
    if lowered in ("1", "true", "on", "yes"):
        return "on"
    if lowered == "content":
        return "content"
    raise ConfigurationError(f"{source}={value!r}: expected 'off', 'on' or 'content'")


def settings_from_env() -> Settings:
    """Reads the settings from the environment."""
    durability = os.environ.get("AGENTSPAN_DURABILITY", "normal") or "normal"
    if durability not in ("normal", "full"):
        raise ConfigurationError(f"AGENTSPAN_DURABILITY={durability!r}: expected 'normal' or 'full'")
    return Settings(
        home=Path(os.environ.get("AGENTSPAN_HOME") or Path.home() / ".agentspan").expanduser(),
        server_url=os.environ.get("AGENTSPAN_SERVER_URL") or None,
        api_key=os.environ.get("AGENTSPAN_API_KEY") or None,
        durability=durability,  # type: ignore[arg-type]
        lease_ttl=_float_env("AGENTSPAN_LEASE_TTL", 5.0),
        poll_interval=_float_env("AGENTSPAN_POLL_INTERVAL", 0.2),
        otel=parse_mode(os.environ.get("AGENTSPAN_OTEL"), source="AGENTSPAN_OTEL"),
        step_helper=parse_step_helper(os.environ.get("AGENTSPAN_STEP_HELPER"), source="AGENTSPAN_STEP_HELPER"),
    )


def parse_step_helper(value: str | bool | None, *, source: str) -> StepHelper:
    """Reads a ``step_helper`` setting: auto (default), on, or off.

    Raises:
        ConfigurationError: Not one of ``auto``, ``on``/``1``/``true``/``yes``,
            ``off``/``0``/``false``/``no``.
    """
    if value is None or value == "":
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    lowered = str(value).strip().lower()
    if lowered == "auto":
        return "auto"
    if lowered in ("1", "true", "on", "yes"):
        return "on"
    if lowered in ("0", "false", "off", "no"):
        return "off"
    raise ConfigurationError(f"{source}={value!r}: expected 'auto', 'on' or 'off'")


_lock = threading.Lock()
_settings: Settings | None = None
_store: Store | None = None
_store_opened: bool = False  # by `get_store` (not given to `configure`)


def _after_fork_in_child() -> None:
    """A forked child must not use the parent's store: its connection (SQLite says one must not
    cross a fork) and its locks, which a thread of the parent may have held at the fork and no
    thread of the child will release. It opens its own on first use."""
    global _lock, _store, _store_opened
    _lock = threading.Lock()
    if _store_opened:
        _store, _store_opened = None, False  # dropped, not closed: the parent's connection is the parent's


os.register_at_fork(after_in_child=_after_fork_in_child)


def settings() -> Settings:
    """Returns the current settings (read from the environment on first use)."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = settings_from_env()
        return _settings


def configure(
    *,
    home: str | os.PathLike[str] | None = None,
    server_url: str | None = None,
    api_key: str | None = None,
    durability: Durability | None = None,
    lease_ttl: float | None = None,
    poll_interval: float | None = None,
    otel: bool | OtelMode | None = None,
    step_helper: bool | StepHelper | None = None,
    store: Store | None = None,
) -> Settings:
    """Overrides settings for this process; the next store access uses them.

    A change of a setting the store is opened with (``home``, ``server_url``, ``api_key``,
    ``durability``, ``step_helper``) or a new ``store`` closes the store in use; it is refused
    while runs of this process execute on it. Other changes keep it open.

    Args:
        home: Folder of the embedded store.
        server_url: Agentspan server URL.
        api_key: Server API key.
        durability: ``"normal"`` or ``"full"``.
        lease_ttl: Lease length in seconds.
        poll_interval: Poll interval in seconds.
        otel: OpenTelemetry spans: True/``"on"``, ``"content"`` (with tool arguments and results),
            False/``"off"``.
        step_helper: Commit new steps in a helper process: ``"auto"``, True/``"on"``,
            False/``"off"`` (`Settings.step_helper`).
        store: Use this store object directly (e.g. a `MemoryStore` in tests).

    Returns:
        The new settings.

    Raises:
        ConfigurationError: A value is not valid (naming it), or the store would be closed under
            runs this process executes. Nothing is changed then.
    """
    global _settings, _store, _store_opened
    current = settings()
    changes: dict[str, object] = {}
    if home is not None:
        if not isinstance(home, (str, os.PathLike)) or not os.fspath(home):
            raise ConfigurationError(f"home={home!r}: expected the path of a folder (str or os.PathLike)")
        changes["home"] = Path(home).expanduser()
    if server_url is not None:
        if not isinstance(server_url, str):
            raise ConfigurationError(f"server_url={server_url!r}: expected a URL (str)")
        if server_url:
            from agentspan.stores.remote_urls import split_urls

            split_urls(server_url, source="server_url")
        changes["server_url"] = server_url or None
    if api_key is not None:
        if not isinstance(api_key, str):
            raise ConfigurationError(f"api_key of type {type(api_key).__name__}: expected a str")
        changes["api_key"] = api_key or None
    if store is not None and not isinstance(store, Store):
        raise ConfigurationError(f"store={store!r}: expected an agentspan Store (e.g. agentspan.MemoryStore())")
    if durability is not None:
        if durability not in ("normal", "full"):
            raise ConfigurationError(f"durability={durability!r}: expected 'normal' or 'full'")
        changes["durability"] = durability
    for name, value in (("lease_ttl", lease_ttl), ("poll_interval", poll_interval)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigurationError(f"{name}={value!r}: expected a number of seconds")
            changes[name] = seconds_setting(name, float(value), value)
    if otel is not None:
        changes["otel"] = parse_mode(otel, source="otel")
    if step_helper is not None:
        changes["step_helper"] = parse_step_helper(step_helper, source="step_helper")
    updated = replace(current, **changes)  # type: ignore[arg-type]
    with _lock:
        old = _store
        keep = old is not None and (store is old or store is None and all(
            getattr(updated, name) == getattr(current, name) for name in _STORE_SETTINGS))
        if old is not None and not keep:
            from agentspan.leases import executing_on

            if executing_on(old):
                raise ConfigurationError(
                    f"configure() would close the store {executing_on(old)} run(s) of this process are "
                    "executing on; call it before they start or after they end (nothing was changed)")
        _settings = updated
        if not keep:
            _store, _store_opened = store, False
    if old is not None and not keep and old is not store:
        old.close()
    return updated


_STORE_SETTINGS = ("home", "server_url", "api_key", "durability", "step_helper")
"""The settings the process's store is opened with: changing another keeps it open."""


def get_store(*, create: bool = True) -> Store:
    """Returns the process's store: the server's when ``AGENTSPAN_SERVER_URL`` is set, else the
    embedded SQLite store, opened on first use.

    Args:
        create: Create the store file if it does not exist (read-only callers pass False).

    Raises:
        StoreError: The store file is missing (``create=False``) or not a valid store.
        ConfigurationError: ``AGENTSPAN_SERVER_URL`` is not a valid URL (list).
    """
    global _store, _store_opened
    current = settings()
    with _lock:
        if _store is not None:
            return _store
        if current.server_url:
            from agentspan.stores.remote import RemoteStore

            _store = RemoteStore(current.server_url, api_key=current.api_key)
        else:
            from agentspan.stores.sqlite import SqliteStore

            # The runtime waits for step writes before it acts on them (`Store.wait_durable`), so
            # a "full" store may fsync them off the agent's path.
            _store = SqliteStore(current.db_path, durability=current.durability, create=create,
                                 defer_step_sync=True, step_helper=current.step_helper_choice)
        _store_opened = True
        return _store


def reset() -> None:
    """Forgets settings and closes the store (tests use this between cases)."""
    global _settings, _store, _store_opened
    with _lock:
        old, _store, _settings, _store_opened = _store, None, None, False
    if old is not None:
        old.close()
