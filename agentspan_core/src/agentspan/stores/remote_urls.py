"""The server URLs of `RemoteStore`: checking ``AGENTSPAN_SERVER_URL``, the plain-HTTP client of
a URL, query strings and parsed URLs."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from agentspan.errors import ConfigurationError
from agentspan.jsontext import utf8_text
from agentspan.stores.plain_http import PlainHttp


def split_urls(server_url: str, *, source: str = "AGENTSPAN_SERVER_URL") -> list[str]:
    """Splits ``AGENTSPAN_SERVER_URL`` (one URL or several, comma-separated) and checks each.

    Args:
        server_url: The setting's value.
        source: The setting's name in an error.

    Raises:
        ConfigurationError: A URL is empty or not ``http(s)://host[:port]``.
    """
    urls = [u.strip().rstrip("/") for u in server_url.split(",")]
    for url in urls:
        try:
            parsed = httpx.URL(url) if url else None
        except httpx.InvalidURL:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigurationError(
                f"{source} must be http(s)://host[:port] (comma-separated for several servers), got {url!r}"
            )
    return urls


def plain_http_for(url: str, timeout: float) -> tuple[PlainHttp, str] | None:
    """`PlainHttp` for a server URL and the URL's path prefix, or None when httpx sends its
    requests: ``https://`` or credentials in the URL. (Proxies from the environment are not used,
    as before: httpx uses none when it is given a transport, as it always was here.)"""
    parsed = httpx.URL(url)
    if parsed.scheme != "http" or parsed.userinfo or parsed.query:
        return None
    return PlainHttp(parsed.host, parsed.port or 80, timeout=timeout), parsed.raw_path.decode("ascii").rstrip("/")


def query_string(params: Any) -> str:
    """A query string (with its ``?``) encoding parameters as httpx does (True as ``true``, None as
    empty)."""
    items = params.items() if isinstance(params, dict) else params
    pairs = [(k, "true" if v is True else "false" if v is False else "" if v is None else str(v)) for k, v in items]
    try:
        return "?" + urlencode(pairs, quote_via=quote)
    except UnicodeEncodeError:
        bad = next(v for _, v in pairs if utf8_text(v) != v)
        raise ConfigurationError(f"{bad!r} is not valid UTF-8 text (it holds a lone surrogate)") from None


@functools.lru_cache(maxsize=1024)
def parsed_url(url: str) -> httpx.URL:
    """The URL parsed once: a run's steps all go to the same few URLs (httpx would parse each
    request's URL again, ~13 us). `httpx.URL` is immutable."""
    return httpx.URL(url)
