"""What a cassette never holds, besides the fixed headers `tests/test_cassettes.py` checks: the
headers API gateways take keys in, an Azure Functions ``?code=``, and the bodies of an OAuth token
exchange (google-auth refreshing Vertex AI credentials through ``requests`` inside a cassette)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import yaml

from agentspan.secrets import looks_secret
from agentspan.testing import cassette

TOKENS = {"access_token": "ya29.ACCESS-secret-1a2b", "id_token": "eyJ.ID-secret-3c4d", "expires_in": 3599,
          "token_type": "Bearer"}
GATEWAY_HEADERS = {"Ocp-Apim-Subscription-Key": "apim-secret-5e6f", "Helicone-Auth": "Bearer helicone-secret-7a8b",
                   "x-portkey-api-key": "portkey-secret-9c0d", "cf-aig-authorization": "Bearer cfaig-secret-1e2f"}
FORM = {"grant_type": "refresh_token", "client_id": "123.apps.example", "client_secret": "client-secret-3a4b",
        "refresh_token": "1//refresh-secret-5c6d"}


@pytest.fixture
def server() -> Iterator[str]:
    """Answers a form POST to /token with OAuth tokens (JSON), any other POST with ``{"ok": true}``."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            seen.append(dict(parse_qsl(body)) if self.path == "/token" else {})
            payload = json.dumps(TOKENS if self.path == "/token" else {"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_gateway_key_headers_and_an_azure_functions_code_are_not_written(server: str, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    with cassette(path, record="once"), httpx.Client() as client:
        client.post(f"{server}/v1/chat/completions", params={"code": "azfunc-secret-7e8f", "alt": "json"},
                    json={"model": "m", "max_tokens": 5}, headers=GATEWAY_HEADERS)
    text = path.read_text()
    for secret in [*GATEWAY_HEADERS.values(), "azfunc-secret-7e8f", "secret"]:
        assert secret not in text, secret
    assert "alt=json" in text and "max_tokens" in text
    with cassette(path) as used, httpx.Client() as client:  # other keys replay the same recording
        replayed = client.post(f"{server}/v1/chat/completions", params={"code": "other", "alt": "json"},
                               json={"model": "m", "max_tokens": 5},
                               headers={name: "another" for name in GATEWAY_HEADERS})
    assert replayed.json() == {"ok": True} and used.play_count == 1


def test_an_oauth_token_exchange_is_written_without_its_tokens_and_replays(server: str, tmp_path: Path) -> None:
    import requests  # what google-auth refreshes credentials with

    path = tmp_path / "oauth.yaml"
    with cassette(path, record="once"):
        live = requests.post(f"{server}/token", data=FORM, timeout=10).json()
    assert live == TOKENS  # the live caller got the real tokens
    text = path.read_text()
    for secret in ["client-secret-3a4b", "1//refresh-secret-5c6d", "ACCESS-secret-1a2b", "ID-secret-3c4d"]:
        assert secret not in text, secret
    assert "123.apps.example" in text and "3599" in text  # what is not a credential stays
    with cassette(path) as used:  # another refresh token replays it; the tokens come back redacted
        replayed = requests.post(f"{server}/token", data={**FORM, "refresh_token": "1//other"}, timeout=10).json()
    assert used.play_count == 1
    assert replayed == {**TOKENS, "access_token": "REDACTED", "id_token": "REDACTED"}


def test_a_model_request_body_is_written_as_it_came(server: str, tmp_path: Path) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 50, "max_completion_tokens": 50, "prompt_cache_key": "k1",
            "messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}}
    assert not any(looks_secret(name) for name in body)
    path = tmp_path / "model.yaml"
    with cassette(path, record="once"), httpx.Client() as client:
        client.post(f"{server}/v1/chat/completions", content=json.dumps(body),
                    headers={"content-type": "application/json"})
    (recorded,) = yaml.safe_load(path.read_text())["interactions"]
    assert recorded["request"]["body"] == json.dumps(body)  # the request's own bytes: nothing rewritten
