"""The network guard: real requests to model providers raise `ModelRequestBlocked`.

Three layers, so that every client is covered: the transports of httpx and its fork httpx2 (the
OpenAI, Anthropic and Google SDKs and LangChain's models use one of them; the error names the
request, even behind a proxy), ``socket.getaddrinfo`` (any other client resolves the provider's
host name first), and the proxy tunnels of ``http.client`` and urllib3 (``requests`` and urllib
behind an ``HTTPS_PROXY`` resolve only the proxy's name, then ask it for a tunnel to the
provider). Only the providers' API hosts are blocked: local servers (an Ollama, a test server)
stay reachable.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from agentspan.errors import ModelRequestBlocked
from agentspan.secrets import redact_url

PROVIDER_HOSTS = frozenset({
    "api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", "aiplatform.googleapis.com",
    "api.groq.com", "api.mistral.ai", "api.cohere.com", "api.cohere.ai", "api.together.xyz", "api.together.ai",
    "api.fireworks.ai", "openrouter.ai", "api.deepseek.com", "api.x.ai", "api.perplexity.ai",
    "api-inference.huggingface.co", "router.huggingface.co", "api.voyageai.com", "api.cerebras.ai",
})
"""Model provider API hosts."""
PROVIDER_SUFFIXES = (".openai.azure.com", "-aiplatform.googleapis.com", ".aiplatform.googleapis.com",
                     ".cognitiveservices.azure.com", ".services.ai.azure.com")
"""Host name endings of providers with per-resource or per-region hosts."""


def is_provider_host(host: str) -> bool:
    """Whether ``host`` is a model provider's API host."""
    host = host.lower().rstrip(".")
    if host in PROVIDER_HOSTS or host.endswith(PROVIDER_SUFFIXES):
        return True
    return host.startswith("bedrock-runtime.") and host.endswith(".amazonaws.com")


class _Guard:
    installs = 0
    allowed = False
    test: str | None = None
    originals: dict[str, Any] = {}


_lock = threading.Lock()


def check(host: str | bytes | None, request: str) -> None:
    """Raises `ModelRequestBlocked` when the guard is installed, not opened by `policy`, and
    ``host`` is a provider's; ``request`` describes the request in the error (cassettes call this
    before recording a request)."""
    if not _Guard.installs or _Guard.allowed or not host:
        return
    name = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
    if is_provider_host(name):
        raise ModelRequestBlocked(request, _Guard.test)


def _guarded_getaddrinfo(original: Callable[..., Any]) -> Callable[..., Any]:
    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        check(host, f"a connection to {host!r}")
        return original(host, *args, **kwargs)

    return getaddrinfo


HTTPX_MODULES = ("httpx", "httpx2")
"""httpx and its fork httpx2 (the OpenAI SDK 3.x sends through httpx2's transports)."""


def _guard_transports(module: Any) -> dict[tuple[type, str], Any]:
    """Wraps ``module``'s transports with `check`; returns the originals to restore."""
    sync_send = module.HTTPTransport.handle_request
    async_send = module.AsyncHTTPTransport.handle_async_request

    def handle_request(self: Any, request: Any) -> Any:
        check(request.url.host, f"{request.method} {redact_url(str(request.url))}")
        return sync_send(self, request)

    async def handle_async_request(self: Any, request: Any) -> Any:
        check(request.url.host, f"{request.method} {redact_url(str(request.url))}")
        return await async_send(self, request)

    module.HTTPTransport.handle_request = handle_request
    module.AsyncHTTPTransport.handle_async_request = handle_async_request
    return {(module.HTTPTransport, "handle_request"): sync_send,
            (module.AsyncHTTPTransport, "handle_async_request"): async_send}


TUNNEL_CLASSES = (("http.client", "HTTPConnection"), ("urllib3.connection", "HTTPConnection"))
"""Connection classes whose ``set_tunnel`` (a CONNECT through a proxy) names the real host."""


def _guard_tunnels() -> dict[tuple[type, str], Any]:
    """Wraps the ``set_tunnel`` of `TUNNEL_CLASSES` with `check`; returns the originals to restore."""
    originals: dict[tuple[type, str], Any] = {}
    for module_name, class_name in TUNNEL_CLASSES:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if "set_tunnel" not in vars(cls):
            continue  # inherits one already wrapped
        original = cls.set_tunnel

        def set_tunnel(self: Any, host: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            check(host, f"a connection to {host!r} through a proxy")
            return _original(self, host, *args, **kwargs)

        cls.set_tunnel = set_tunnel
        originals[(cls, "set_tunnel")] = original
    return originals


def install() -> None:
    """Installs the guard in this process (nested installs are counted; see `uninstall`)."""
    with _lock:
        _Guard.installs += 1
        if _Guard.installs > 1:
            return
        originals: dict[Any, Any] = {"getaddrinfo": socket.getaddrinfo}
        for name in HTTPX_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            originals.update(_guard_transports(module))
        originals.update(_guard_tunnels())
        _Guard.originals = originals
        socket.getaddrinfo = _guarded_getaddrinfo(socket.getaddrinfo)


def uninstall() -> None:
    """Undoes one `install`; the last one restores the originals."""
    with _lock:
        if _Guard.installs == 0:
            return
        _Guard.installs -= 1
        if _Guard.installs:
            return
        for key, original in _Guard.originals.items():
            if key == "getaddrinfo":
                socket.getaddrinfo = original
            else:
                setattr(key[0], key[1], original)


def installed() -> bool:
    """Whether the guard is installed in this process."""
    return _Guard.installs > 0


@contextlib.contextmanager
def policy(*, allowed: bool, test: str | None = None) -> Iterator[None]:
    """Lets requests through (``allowed``) or blocks them for a block of code; ``test`` names the
    test in the error message."""
    previous = _Guard.allowed, _Guard.test
    _Guard.allowed, _Guard.test = allowed, test
    try:
        yield
    finally:
        _Guard.allowed, _Guard.test = previous
