"""Names that carry credentials, and URLs with them taken out.

One rule for every place Agentspan might write a value somewhere it stays (a run's stored options,
a cassette, an error message): a name that looks like it holds a credential (``api_key``,
``OPENAI_API_KEY``, ``access_token``, ``Key``, ``client_secret``, ``password``) is a secret,
whatever its case and separators. It errs on the side of a secret: a value kept out by mistake is
asked for again (a resume names what it needs), a key written by mistake cannot be taken back.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"

_EXACT = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "pwd", "sig", "signature",
                    "credential", "credentials", "auth", "authorization", "cookie", "xamzsecuritytoken",
                    "xgoogapikey"})
_ENDINGS = ("apikey", "token", "secret", "secretkey", "password", "privatekey", "credential", "credentials",
            "accesskey", "subscriptionkey", "authkey", "applicationkey", "auth", "authorization")
_NOT_SECRET_ENDINGS = (
    "pagetoken", "continuationtoken", "synctoken", "nexttoken", "cursortoken",  # pagination
    "bostoken", "eostoken", "padtoken", "unktoken", "septoken", "clstoken", "masktoken", "stoptoken",  # a tokenizer's
    "specialtoken", "inputtoken", "outputtoken", "prompttoken", "completiontoken", "reasoningtoken",  # counted
)
_SEPARATORS = re.compile(r"[^a-z0-9]")


def looks_secret(name: str) -> bool:
    """Whether a parameter, option or field named ``name`` holds a credential.

    Case and separators do not count (``api_key``, ``API-KEY``, ``apiKey`` alike).

    Args:
        name: The name as given (a query parameter, a dict key, a field name).

    Returns:
        True for names such as ``key``, ``api_key``, ``openai_api_key``, ``access_token``,
        ``client_secret``, ``password``, ``X-Amz-Security-Token``, ``Ocp-Apim-Subscription-Key``,
        ``Helicone-Auth``, ``cf-aig-authorization``;
        False for ``max_tokens``, ``page_token``, ``nextToken``, ``eos_token``, ``thread_id``.
    """
    normal = _SEPARATORS.sub("", name.lower())
    if normal in _EXACT:
        return True
    return normal.endswith(_ENDINGS) and not normal.endswith(_NOT_SECRET_ENDINGS)


def redact_url(url: str) -> str:
    """``url`` with its password (``https://user:pw@host``) and the values of its secret query
    parameters (`looks_secret`) replaced by ``REDACTED``: fit for an error message or a log.

    Args:
        url: Any URL (a string that is not one comes back as it was).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(looks_secret(name) for name, _ in pairs):
            query = urlencode([(name, REDACTED if looks_secret(name) else value) for name, value in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
