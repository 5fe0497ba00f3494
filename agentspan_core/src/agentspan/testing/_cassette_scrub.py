"""What a cassette never holds (`agentspan.testing.cassettes`): credentials in a request's URL, query,
headers and body, and in a response's headers and body.

A name is a credential's by `agentspan.secrets.looks_secret` (whatever its case and separators), or
by the fixed lists below for the names that rule does not cover. Bodies are scrubbed where a
credential travels in one: a form or a JSON object whose top-level field is named like one (an
OAuth token exchange: ``refresh_token``, ``client_secret`` in the request, ``access_token`` and
``id_token`` in the response, which google-auth makes when it refreshes Vertex AI credentials);
a body without such a field is written as it came. Scrubbing is applied to a live request before it
is matched against the recording too (vcrpy's ``before_record_request``), so a recording replays
whatever credentials the replaying process holds.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

from agentspan.secrets import REDACTED, looks_secret

SECRET_REQUEST_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key",
                          "openai-organization", "openai-project", "anthropic-organization-id", "cookie",
                          "x-amz-security-token")
"""Request headers whose values are replaced by ``REDACTED`` before a request is written (besides
every header `looks_secret` names: ``Ocp-Apim-Subscription-Key``, ``Helicone-Auth``, ...)."""
SECRET_RESPONSE_HEADERS = frozenset({"set-cookie", "openai-organization", "openai-project",
                                     "anthropic-organization-id"})
"""Response headers dropped before a response is written."""
SECRET_QUERY_PARAMETERS = frozenset({"code"})
"""Query parameters that hold a credential although `looks_secret` does not name them: an Azure
Functions key (``?code=``), an OAuth authorization code."""


def secret_query_parameter(name: str) -> bool:
    """Whether the query parameter ``name`` holds a credential (written ``REDACTED``, left out of
    matching)."""
    return looks_secret(name) or name.lower() in SECRET_QUERY_PARAMETERS


def scrub_request(request: Any) -> Any:
    """``request`` (vcrpy's) without the credentials it carries: the URL's user name and password,
    and the values of secret query parameters, headers and body fields replaced by ``REDACTED``."""
    from vcr.filters import replace_headers, replace_query_parameters

    _drop_userinfo(request)
    secret_query = [(name, REDACTED) for name in dict(request.query) if secret_query_parameter(name)]
    if secret_query:
        request = replace_query_parameters(request, secret_query)
    secret_headers = [(name, REDACTED) for name in list(request.headers)
                      if name.lower() in SECRET_REQUEST_HEADERS or looks_secret(name)]
    if secret_headers:
        request = replace_headers(request, secret_headers)
    body = _scrubbed_body(request.body, request.headers.get("Content-Type") or "")
    if body is not request.body:
        request.body = body
    return request


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    """``response`` (vcrpy's dict) without `SECRET_RESPONSE_HEADERS`, and with the values of the
    secret fields of a form or JSON body replaced by ``REDACTED``."""
    headers = response.get("headers") or {}
    response["headers"] = {k: v for k, v in headers.items() if k.lower() not in SECRET_RESPONSE_HEADERS}
    body = response.get("body")
    if isinstance(body, dict) and "string" in body:
        content_type = next((v for k, v in response["headers"].items() if k.lower() == "content-type"), "")
        if isinstance(content_type, list):
            content_type = content_type[0] if content_type else ""
        body["string"] = _scrubbed_body(body["string"], str(content_type))
    return response


def _drop_userinfo(request: Any) -> None:
    """Takes the user name and password a URL may carry (``http://svc:pw@gateway``: a gateway
    behind basic auth) out of the request's ``uri``."""
    scheme, found, rest = request.uri.partition("://")
    authority, slash, path = rest.partition("/")
    if found and "@" in authority:
        request.uri = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def _scrubbed_body(body: Any, content_type: str) -> Any:
    """``body`` with its secret top-level fields redacted, of the same type; ``body`` itself when it
    has none (or is neither a form nor a JSON object)."""
    if not body or not isinstance(body, bytes | str):
        return body
    try:
        text = body.decode() if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        return body
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        pairs = parse_qsl(text, keep_blank_values=True)
        if not any(looks_secret(name) for name, _ in pairs):
            return body
        text = urlencode([(name, REDACTED if looks_secret(name) else value) for name, value in pairs])
    elif kind.endswith("json") or (not kind and text.lstrip().startswith("{")):
        try:
            value = json.loads(text)
        except ValueError:
            return body
        if not isinstance(value, dict) or not any(isinstance(k, str) and looks_secret(k) for k in value):
            return body
        text = json.dumps({k: REDACTED if looks_secret(k) else v for k, v in value.items()})
    else:
        return body
    return text.encode() if isinstance(body, bytes) else text
