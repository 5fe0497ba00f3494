"""Recorded HTTP cassettes for real model traffic, built on vcrpy.

```python
from agentspan.testing import cassette

with cassette("tests/cassettes/refund.yaml"):
    result = agentspan.run(agent, "Refund order 42")   # the SDK's real model class, over "HTTP"
```

The first run records the model requests and responses into the YAML file (when recording is
allowed); later runs replay them without a server, a network or an API key. Requests are
matched the way LLM calls differ: method, path (scheme, host and port do not matter), query
(minus secret keys) and the JSON body compared as a value (see `agentspan.testing._cassette_match`).
A request without a recording raises `CassetteMismatch`, naming the closest recorded request and
the first differing field (``body.messages[2].content``) with both values.

**Record modes** (``record=``): ``"none"`` replays only; ``"once"`` records a cassette that does
not exist yet and replays an existing one; ``"new_episodes"`` replays what matches and records
the rest; ``"all"`` re-records everything (the file then holds exactly the new recording). By
default (``record=None``) an existing cassette is replayed (``"none"``) and a missing one is
recorded (``"once"``) only when recording is allowed: ``AGENTSPAN_RECORD=1`` in the environment,
or ``pytest --agentspan-record``; otherwise `CassetteError` says how to record it.
``AGENTSPAN_RECORD=all`` re-records every cassette. A block that raises saves nothing, so a
failing test never leaves a half-recorded cassette behind (nor overwrites a good one).

**Secrets are scrubbed before anything is written** (`agentspan.testing._cassette_scrub`): request
headers `SECRET_REQUEST_HEADERS` and every header whose name holds a credential
(`agentspan.secrets.looks_secret`, whatever the case: ``Ocp-Apim-Subscription-Key``,
``Helicone-Auth``, ``x-portkey-api-key``) are replaced by ``REDACTED``, query parameters whose name
holds one too (``key``, ``Key``, ``api_key``, ``apiKey``, ``access_token``, ``code``; left out of
matching), the secret top-level fields of form and JSON bodies, requests' and responses' (an OAuth
token exchange's ``refresh_token``, ``client_secret``, ``access_token``, ``id_token``), and
response headers `SECRET_RESPONSE_HEADERS` (cookies, organization ids) are dropped.

**Network guard.** Replaying never reaches the network, so it works under the pytest plugin's
guard even for provider hosts. Recording sends real requests: against a local server it needs
nothing, against a real provider it needs the guard's opt-in (``@pytest.mark.agentspan_allow_network``
or ``--agentspan-allow-network``), else `ModelRequestBlocked`. Requests to the Agentspan server
(``AGENTSPAN_SERVER_URL``) are never recorded.

vcrpy patches the transports of httpx and httpx2 (``HTTPTransport.handle_request`` and its async
twin; the OpenAI SDK 3.x uses httpx2, the Google and Anthropic SDKs httpx), and http.client,
requests, urllib3 and aiohttp. The patches are process-wide: every thread's requests go through the
cassette while it is in use.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from agentspan.errors import CassetteError, ConfigurationError
from agentspan.secrets import REDACTED
from agentspan.testing import network
from agentspan.testing._cassette_match import BodyMatcher, describe, mismatch, query_matcher
from agentspan.testing._cassette_scrub import (
    SECRET_REQUEST_HEADERS,
    SECRET_RESPONSE_HEADERS,  # noqa: F401 - named by the docstring, kept importable from here
    scrub_request,
    scrub_response,
)

RecordMode = Literal["none", "once", "new_episodes", "all"]
RECORD_MODES: tuple[str, ...] = ("none", "once", "new_episodes", "all")
RECORD_ENV = "AGENTSPAN_RECORD"
"""``1`` (or ``true``, ``once``): record missing cassettes; ``all``: re-record every cassette."""

HOW_TO_RECORD = ("To record it again: run pytest with --agentspan-record (tests marked "
                 "@pytest.mark.agentspan_cassette), or set AGENTSPAN_RECORD=all, or pass record='all' "
                 "(record='new_episodes' adds new requests and keeps the rest).")

_F = TypeVar("_F", bound=Callable[..., Any])


class _Recording:
    """Set by the pytest plugin for ``--agentspan-record``."""

    requested = False


def set_recording(requested: bool) -> None:
    """Lets missing cassettes be recorded in this process (the pytest plugin's ``--agentspan-record``)."""
    _Recording.requested = requested


def recording_allowed() -> bool:
    """Whether a missing cassette may be recorded (``AGENTSPAN_RECORD`` or ``--agentspan-record``)."""
    value = os.environ.get(RECORD_ENV, "").strip().lower()
    return _Recording.requested or value in ("1", "true", "yes", "once", "all")


def resolve_mode(path: Path, record: str | None) -> RecordMode:
    """The record mode to use for the cassette at ``path`` (see the module docstring).

    Raises:
        ConfigurationError: ``record`` is not a record mode.
        CassetteError: The cassette is missing and cannot be recorded.
    """
    if record is not None:
        if record not in RECORD_MODES:
            raise ConfigurationError(f"record={record!r}: expected one of {', '.join(RECORD_MODES)} (or None)")
        if record == "none" and not path.exists():
            raise CassetteError(f"cassette {path} does not exist, and record='none' only replays. "
                                "Check the path, or record it first.", path=str(path))
        return record  # type: ignore[return-value]
    if os.environ.get(RECORD_ENV, "").strip().lower() == "all":
        return "all"
    if path.exists():
        return "none"
    if recording_allowed():
        return "once"
    raise CassetteError(
        f"cassette {path} does not exist and recording is off. Record it once with AGENTSPAN_RECORD=1 "
        "(or pytest --agentspan-record): against a local server as is, against a real model provider "
        "with the network opt-in (@pytest.mark.agentspan_allow_network or --agentspan-allow-network).",
        path=str(path))


def _not_the_agentspan_server(request: Any) -> Any:
    """Leaves requests to the Agentspan server (``AGENTSPAN_SERVER_URL``, read at each request:
    a test may set it after the cassette started) out of the cassette; scrubs the others
    (`agentspan.testing._cassette_scrub`)."""
    import httpx

    import agentspan.config

    for url in (agentspan.config.settings().server_url or "").split(","):
        if url.strip():
            server = httpx.URL(url.strip())
            port = server.port or (443 if server.scheme == "https" else 80)
            if (request.scheme, request.host, request.port) == (server.scheme, server.host, port):
                return None
    return scrub_request(request)


@functools.cache
def _cassette_class() -> type[Any]:
    """vcrpy's Cassette, answering an unmatched request with `CassetteMismatch` and checking the
    network guard before recording one (built on first use: vcrpy is an optional dependency)."""
    try:
        from vcr.cassette import Cassette as VcrCassette
    except ImportError:
        raise ConfigurationError("agentspan.testing.cassette needs vcrpy: pip install 'agentspan[testing]'") from None

    class LlmCassette(VcrCassette):  # type: ignore[misc]
        def can_play_response_for(self, request: Any) -> bool:
            if super().can_play_response_for(request):
                return True
            filtered = self.filter_request(request)
            if not filtered:  # not recorded (the Agentspan server): goes through
                return False
            if self.write_protected:  # vcrpy would raise CannotOverwriteExistingCassetteException next
                matcher = next(m for m in self._match_on if isinstance(m, BodyMatcher))
                raise mismatch(self, request, matcher, how_to_record=HOW_TO_RECORD)
            network.check(filtered.host, describe(filtered))  # about to record a real request
            return False

    return LlmCassette


class Cassette:
    """A cassette in use: a context manager (yielding vcrpy's ``Cassette``, with ``play_count``,
    ``all_played``, ``requests``, ``responses``) and a decorator for sync and async functions.
    Made by `cassette`; each ``with`` (or decorated call) loads the file afresh."""

    def __init__(self, path: str | os.PathLike[str], *, record: RecordMode | None = None,
                 ignore: Sequence[str] = ()) -> None:
        if record is not None and record not in RECORD_MODES:
            raise ConfigurationError(f"record={record!r}: expected one of {', '.join(RECORD_MODES)} (or None)")
        self.path = Path(path)
        self.record = record
        self.ignore = tuple(ignore)
        self.mode: RecordMode | None = None
        self._context: Any = None

    def _vcr_context(self, mode: RecordMode) -> Any:
        cassette_class = _cassette_class()  # first: a clear error when vcrpy is not installed
        import vcr

        config = vcr.VCR(
            record_mode=mode, match_on=("method", "path", "agentspan_query", "llm_body"),
            filter_headers=[(name, REDACTED) for name in SECRET_REQUEST_HEADERS],
            before_record_request=_not_the_agentspan_server,
            before_record_response=scrub_response, decode_compressed_response=True,
            record_on_exception=False, drop_unused_requests=mode == "all")
        config.register_matcher("agentspan_query", query_matcher)
        config.register_matcher("llm_body", BodyMatcher(self.ignore))
        return cassette_class.use(**config.get_merged_config(path=str(self.path)))

    def __enter__(self) -> Any:
        if self._context is not None:
            raise ConfigurationError(f"cassette {self.path} is already in use by this object")
        self.mode = resolve_mode(self.path, self.record)
        existed = self.path.exists()
        context = self._vcr_context(self.mode)
        unreadable = CassetteError(f"cassette {self.path} exists but cannot be read as a vcrpy YAML cassette; "
                                   "fix or delete it (recording over it is refused)", path=str(self.path))
        try:
            used = context.__enter__()
        except Exception as exc:  # the YAML parser's or vcrpy's own errors
            if existed:
                raise unreadable from exc
            raise
        if existed and not used.rewound:  # vcrpy treats an empty or undecodable file as missing
            context.__exit__(None, None, None)
            raise unreadable
        self._context = context
        return used

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        context, self._context = self._context, None
        context.__exit__(exc_type, exc, tb)

    def __call__(self, function: _F) -> _F:
        def fresh() -> Cassette:
            return Cassette(self.path, record=self.record, ignore=self.ignore)

        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with fresh():
                    return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with fresh():
                return function(*args, **kwargs)

        return run  # type: ignore[return-value]


def cassette(path: str | os.PathLike[str], *, record: RecordMode | None = None,
             ignore: Sequence[str] = ()) -> Cassette:
    """Records or replays the HTTP traffic of a block (``with``) or function (decorator).

    Args:
        path: The YAML cassette file (relative paths are relative to the working directory).
        record: ``"none"``, ``"once"``, ``"new_episodes"`` or ``"all"``; None picks replay for an
            existing file and, when recording is allowed, ``"once"`` for a missing one.
        ignore: Body fields left out of matching, as dotted paths (``*`` matches any key or list
            index), e.g. ``["metadata.request_id", "messages.*.id"]``. None are by default: the
            SDKs send deterministic bodies, and ids they send back come from recorded responses.

    Returns:
        A `Cassette`; ``with`` yields vcrpy's cassette (``play_count``, ``all_played``).

    Raises:
        CassetteError: (on entry) The cassette is missing and recording is off, or unreadable.
        CassetteMismatch: (during replay) A request has no recording.
        ModelRequestBlocked: (during recording) A request to a model provider under the pytest
            plugin's network guard without the opt-in.
    """
    return Cassette(path, record=record, ignore=ignore)


def marker_path(test_file: str | os.PathLike[str], test_name: str, name: str | os.PathLike[str] | None) -> Path:
    """Where ``@pytest.mark.agentspan_cassette(name)`` keeps its cassette: ``name`` under the
    ``cassettes`` folder next to the test file (an absolute ``name`` as is), or, without a name,
    ``cassettes/<test name>.yaml``."""
    folder = Path(test_file).parent / "cassettes"
    if name is None:
        return folder / (re.sub(r"[^\w.-]+", "_", test_name).strip("_") + ".yaml")
    path = Path(name)
    return path if path.is_absolute() else folder / path
