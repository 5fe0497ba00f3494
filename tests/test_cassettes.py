"""Recorded HTTP cassettes (`agentspan.testing.cassette`): the SDKs' real model classes recorded
against local servers, then replayed with the servers stopped; LLM-aware matching and its
mismatch signal; secrets scrubbed on write; the network guard; the pytest marker and flag."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents import Agent, OpenAIChatCompletionsModel, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

import agentspan
from agentspan.errors import CassetteError, CassetteMismatch, ConfigurationError, ModelRequestBlocked
from agentspan.testing import cassette, network
from agentspan.testing._cassette_match import MISSING, drop_fields, first_difference

from adk_gemini_support import MODEL
from adk_gemini_support import make_agent as make_gemini_agent
from gemini_server import GeminiServer, Usage, call_reply, loopback_only
from gemini_server import text_reply as gemini_text
from openai_compat_server import ChatServer, text_reply, tool_call_reply

pytest_plugins = ("pytester",)
set_tracing_disabled(True)
COMMITTED = Path(__file__).parent / "cassettes"
OPENAI_KEY = "sk-secret-oa-7f3a91"
GOOGLE_KEY = "goog-secret-key-55c2e0"
weather_calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    weather_calls.append(city)
    return f"sunny in {city}"


def openai_agent(base_url: str) -> Agent:
    client = AsyncOpenAI(base_url=base_url, api_key=OPENAI_KEY, max_retries=2)
    return Agent(name="weather", instructions="Answer about weather.", tools=[get_weather],
                 model=OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client))


def llm_rows(handle: agentspan.Handle) -> list[tuple[Any, ...]]:
    return [(s.key, s.provider, s.model, s.input_tokens, s.output_tokens)
            for s in handle.steps() if s.kind is agentspan.StepKind.LLM]


def record_weather(path: Path) -> list[tuple[Any, ...]]:
    """Records the weather agent's two model calls against a local server (stopped on return)."""
    replies = [tool_call_reply("get_weather", {"city": "Paris"}, "call_abc"), text_reply("It is sunny in Paris.")]
    with ChatServer(replies) as server, cassette(path, record="once") as used:
        handle = agentspan.start(openai_agent(server.base_url), "Weather in Paris?")
        assert handle.result(timeout=30).final_output == "It is sunny in Paris."
        assert len(server.requests) == 2 and len(used) == 2
    return llm_rows(handle)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTSPAN_RECORD", raising=False)
    weather_calls.clear()


# ---- the real SDK model classes, recorded and replayed ---------------------------------------

@pytest.mark.parametrize("transport", ["embedded", "server-sqlite"])
def test_openai_chat_model_replays_with_the_server_stopped(home: Path, tmp_path: Path) -> None:
    # on an Agentspan server, the store's own HTTP requests go through: neither recorded nor replayed
    path = tmp_path / "cassettes" / "weather.yaml"
    recorded = record_weather(path)
    assert path.read_text().count("- request:") == 2 and "/api/" not in path.read_text()
    assert recorded == [("llm:0", "openai", "gpt-4o-mini", 50, 7), ("llm:1", "openai", "gpt-4o-mini", 51, 7)]
    with loopback_only() as refused, cassette(path) as used:  # default mode: the file exists, replay only
        # the server's port is closed now: every answer must come from the cassette
        handle = agentspan.start(openai_agent("http://127.0.0.1:9/v1"), "Weather in Paris?")
        assert handle.result(timeout=30).final_output == "It is sunny in Paris."
    assert refused == [] and used.play_count == 2 and used.all_played
    assert llm_rows(handle) == recorded  # journaled like a live run: provider, model, tokens
    assert weather_calls == ["Paris", "Paris"]  # the tool really ran both times


@pytest.fixture
def gemini_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GOOGLE_API_KEY", GOOGLE_KEY)
    for name in ("GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_CLOUD_PROJECT",
                 "GOOGLE_CLOUD_LOCATION", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with loopback_only() as refused:
        yield
    assert refused == []


def test_adk_gemini_model_replays_with_the_server_stopped(home: Path, gemini_env: None, tmp_path: Path) -> None:
    path, tool_log = tmp_path / "gemini.yaml", tmp_path / "tool.log"
    script = [call_reply("get_weather", {"city": "Paris"}, Usage(prompt=49, candidates=15, thoughts=48)),
              gemini_text("Sunny in Paris.", Usage(prompt=88, candidates=15))]
    with GeminiServer(script) as server, cassette(path, record="once"):
        first = agentspan.start(make_gemini_agent(server.base_url, tool_log), "Weather in Paris?")
        assert first.result(timeout=30).text == "Sunny in Paris."
        assert server.model_calls[0].headers["x-goog-api-key"] == GOOGLE_KEY
    text = path.read_text()
    assert GOOGLE_KEY not in text and "x-goog-api-key:\n      - REDACTED" in text
    assert "thoughtSignature" in text  # the second request sent the signature back; it was recorded

    with cassette(path) as used:
        replayed = agentspan.start(make_gemini_agent(server.base_url, tool_log), "Weather in Paris?")
        assert replayed.result(timeout=30).text == "Sunny in Paris."
    assert used.play_count == 2 and len(server.model_calls) == 2
    assert tool_log.read_text() == "Paris\nParis\n"
    assert llm_rows(replayed) == llm_rows(first) == [
        ("weather/llm:0", "google", MODEL, 49, 63), ("weather/llm:1", "google", MODEL, 88, 15)]


# ---- matching and its mismatch signal ---------------------------------------------------------

def test_a_changed_prompt_names_the_differing_field(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "weather.yaml"
    record_weather(path)
    with cassette(path):
        handle = agentspan.start(openai_agent("http://127.0.0.1:9/v1"), "Weather in Rome?")
        with pytest.raises(CassetteMismatch) as caught:  # not retried, not wrapped in APIConnectionError
            handle.result(timeout=30)
    error = caught.value
    assert (error.field, error.recorded, error.live) == ("body.messages[1].content", "Weather in Paris?",
                                                          "Weather in Rome?")
    assert error.closest is not None and error.closest.endswith("/v1/chat/completions")
    message = str(error)
    assert "POST http://127.0.0.1:9/v1/chat/completions" in message and str(path) in message
    assert "first difference at body.messages[1].content" in message
    assert 'recorded: "Weather in Paris?"' in message and 'live:     "Weather in Rome?"' in message
    assert "--agentspan-record" in message and weather_calls == ["Paris"]


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": {"request_id": "r1"}}


def test_matching_is_structural_and_ignores_host_and_listed_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with ChatServer([text_reply("hello")]) as server, cassette(path, record="once"):
        httpx.post(server.base_url + "/chat/completions", json=BODY)

    @cassette(path, ignore=["metadata.request_id"])
    async def replay(body: bytes) -> str:
        async with httpx.AsyncClient() as client:  # another host and port, same path
            response = await client.post("http://localhost:1/v1/chat/completions", content=body)
        return response.json()["choices"][0]["message"]["content"]

    # keys in another order, other whitespace, another volatile id: the same request
    reordered = json.dumps({"metadata": {"request_id": "r2"}, "messages": [{"content": "hi", "role": "user"}],
                            "model": "m"}, indent=2).encode()
    assert asyncio.run(replay(reordered)) == "hello"
    typed = json.dumps({**BODY, "messages": [{"role": "user", "content": "hi"}], "n": True}).encode()
    with pytest.raises(CassetteMismatch) as caught:
        asyncio.run(replay(typed))
    assert (caught.value.field, caught.value.live) == ("body.n", True)
    assert "recorded: (absent)" in str(caught.value)


def test_ignored_fields_and_first_difference_paths() -> None:
    body = {"messages": [{"id": "a", "content": "x"}, {"id": "b", "content": "y"}], "metadata": {"id": 1, "k": 2}}
    assert drop_fields(body, ["messages.*.id", "metadata.id"]) == {
        "messages": [{"content": "x"}, {"content": "y"}], "metadata": {"k": 2}}
    assert drop_fields(body, ["messages.1"])["messages"] == [{"id": "a", "content": "x"}]
    assert first_difference(body, drop_fields(body, ["messages.1.content"])) == (
        "body.messages[1].content", "y", MISSING)
    assert first_difference({"a-b": [1, 2]}, {"a-b": [1, 2.0]}) is None
    assert first_difference({"a-b": [1, 2]}, {"a-b": [1, 2, 3]}) == ('body["a-b"][2]', MISSING, 3)
    assert first_difference({"n": 0}, {"n": False}) == ("body.n", 0, False)


def test_a_request_made_more_often_than_recorded_says_so(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with ChatServer([text_reply("hello")]) as server, cassette(path, record="once"):
        httpx.post(server.base_url + "/chat/completions", json=BODY)
    with cassette(path), httpx.Client() as client:
        client.post("http://127.0.0.1:9/v1/chat/completions", json=BODY)
        with pytest.raises(CassetteMismatch, match="already played back") as caught:
            client.post("http://127.0.0.1:9/v1/chat/completions", json=BODY)
    assert caught.value.field is None and "interaction #1" in str(caught.value)


def test_missing_unreadable_and_bad_mode_cassettes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(CassetteError, match="does not exist and recording is off") as caught, cassette(missing):
        pass
    assert "AGENTSPAN_RECORD=1" in str(caught.value) and "--agentspan-record" in str(caught.value)
    with pytest.raises(CassetteError, match="only replays"), cassette(missing, record="none"):
        pass
    with pytest.raises(ConfigurationError, match="record='replay'"):
        cassette(missing, record="replay")  # type: ignore[arg-type]
    monkeypatch.setenv("AGENTSPAN_RECORD", "1")
    with cassette(missing) as used:  # allowed now: records (nothing, so no file is written)
        assert used.record_mode == "once"
    broken = tmp_path / "broken.yaml"
    broken.write_text("interactions: [ {{{ not yaml")
    with pytest.raises(CassetteError, match="cannot be read"), cassette(broken):
        pass
    assert broken.read_text() == "interactions: [ {{{ not yaml"  # never overwritten


# ---- secrets ------------------------------------------------------------------------------------

SECRETS = {"authorization": "Bearer sk-secret-auth-1b2c", "x-goog-api-key": "goog-secret-hdr-9d8e",
           "x-api-key": "anthropic-secret-x-3f4a", "api-key": "azure-secret-5e6f",
           "openai-organization": "org-secret-7a8b", "cookie": "session=cookie-secret-req-0c1d",
           "x-amz-security-token": "aws-session-secret-1f2e"}
QUERY_SECRETS = {"key": "query-secret-key-2e3f", "api_key": "query-secret-apikey-4a5b",
                 "X-Amz-Security-Token": "aws-query-secret-3a4b",
                 # any case or spelling of a credential's name (vcrpy's own filter matches names exactly)
                 "Key": "query-secret-Key-5c6d", "API_KEY": "query-secret-API-7e8f",
                 "apiKey": "query-secret-camel-9a0b", "access_token": "query-secret-token-1c2d"}
RESPONSE_SECRETS = ("cookie-secret-resp-6c7d", "org-secret-resp-8e9f")


class CookieServer:
    """Answers every POST with JSON, a ``Set-Cookie`` and an ``openai-organization`` header."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                payload = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Set-Cookie", f"session={RESPONSE_SECRETS[0]}; Path=/")
                self.send_header("openai-organization", RESPONSE_SECRETS[1])
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1beta/models/m:generateContent"

    def __enter__(self) -> CookieServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def test_secrets_are_scrubbed_before_the_cassette_is_written(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    with CookieServer() as server, cassette(path, record="once"), httpx.Client() as client:
        response = client.post(server.url, params={**QUERY_SECRETS, "alt": "json"}, json={"q": 1}, headers=SECRETS)
        assert response.cookies["session"] == RESPONSE_SECRETS[0]  # the live response kept them
    text = path.read_text()
    for secret in [*SECRETS.values(), *QUERY_SECRETS.values(), *RESPONSE_SECRETS, "secret"]:
        assert secret not in text, secret
    assert text.count("REDACTED") == len(SECRETS) + len(QUERY_SECRETS) and "alt=json" in text
    assert "set-cookie" not in text.lower() and '{"ok": true}' in text
    # a user name and password in the URL (a gateway behind basic auth) are not written either,
    # and the recording replays for the URL that carries them
    gateway = tmp_path / "gateway.yaml"
    with CookieServer() as server:
        with_password = server.url.replace("http://", "http://svc:gateway-secret-5c6d@")
        with cassette(gateway, record="once"), httpx.Client() as client:
            assert client.post(with_password, json={"q": 2}).json() == {"ok": True}
    assert "gateway-secret-5c6d" not in gateway.read_text() and "svc:" not in gateway.read_text()
    with cassette(gateway) as used, httpx.Client() as client:  # the server is gone: replayed
        assert client.post(with_password, json={"q": 2}).json() == {"ok": True} and used.play_count == 1
    # other keys, or none (moved to a header), replay the same recording: secret query keys are
    # left out of matching
    for params in ({"key": "another", "api_key": "other", "alt": "json"}, {"alt": "json"}):
        with cassette(path) as used, httpx.Client() as client:
            replayed = client.post(server.url, params=params, json={"q": 1}, headers={"x-goog-api-key": "k2"})
        assert replayed.json() == {"ok": True} and used.play_count == 1 and "session" not in replayed.cookies


# ---- the network guard ------------------------------------------------------------------------

def test_a_provider_cassette_replays_under_the_guard_and_recording_needs_the_opt_in(tmp_path: Path) -> None:
    assert network.installed()  # the plugin's guard is on in this test session
    client = AsyncOpenAI(api_key=OPENAI_KEY, max_retries=0)  # the real https://api.openai.com/v1

    async def ask(prompt: str) -> str | None:
        reply = await client.chat.completions.create(model="gpt-4o-mini",
                                                     messages=[{"role": "user", "content": prompt}])
        return reply.choices[0].message.content

    with loopback_only(), cassette(COMMITTED / "openai_provider.yaml"):
        assert asyncio.run(ask("Say hi.")) == "Hi!"
    with loopback_only(), cassette(tmp_path / "new.yaml", record="once"), \
            pytest.raises(ModelRequestBlocked, match="api.openai.com"):
        asyncio.run(ask("Say hi."))
    assert not (tmp_path / "new.yaml").exists()
    # with the opt-in the request goes out (here into a dead local proxy: nothing leaves the machine)
    with loopback_only(), network.policy(allowed=True), cassette(tmp_path / "new.yaml", record="once"), \
            httpx.Client(proxy="http://127.0.0.1:9") as proxied, pytest.raises((httpx.ProxyError, httpx.ConnectError)):
        proxied.post("https://api.openai.com/v1/chat/completions", json={})
    assert not (tmp_path / "new.yaml").exists()


def test_the_guard_covers_the_openai_sdks_httpx2_transport_behind_a_proxy() -> None:
    import httpx2  # the OpenAI SDK 3.x sends through httpx2, not httpx

    proxied = httpx2.AsyncClient(proxy="http://127.0.0.1:9")  # DNS of the provider never happens
    client = AsyncOpenAI(api_key=OPENAI_KEY, max_retries=0, http_client=proxied)
    with loopback_only(), pytest.raises(ModelRequestBlocked, match="POST https://api.openai.com/v1/chat/completions"):
        asyncio.run(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]))


def test_the_guard_names_a_blocked_request_without_its_key() -> None:
    url = "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent?alt=sse&key=AIza-secret-3e4f"
    with loopback_only(), pytest.raises(ModelRequestBlocked) as blocked:
        httpx.post(url, json={})
    assert "AIza-secret-3e4f" not in str(blocked.value) and "key=REDACTED" in str(blocked.value)
    assert "POST https://generativelanguage.googleapis.com/v1beta/models/g:generateContent?alt=sse" \
        in str(blocked.value)


def test_the_guard_covers_requests_and_urllib_behind_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    import requests

    # behind HTTPS_PROXY, only the proxy's name is resolved: the tunnel asked of it names the provider
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # a dead local proxy: nothing leaves the machine
    with loopback_only(), pytest.raises(ModelRequestBlocked, match="'api.openai.com' through a proxy"):
        requests.post("https://api.openai.com/v1/chat/completions", json={}, timeout=5)
    with loopback_only(), pytest.raises(ModelRequestBlocked, match="through a proxy"):
        urllib.request.urlopen("https://api.anthropic.com/v1/messages", timeout=5)
    with loopback_only(), network.policy(allowed=True), pytest.raises(requests.exceptions.ProxyError):
        requests.post("https://api.openai.com/v1/chat/completions", json={}, timeout=5)  # the opt-in lets it go


# ---- the pytest marker and --agentspan-record ------------------------------------------------

PLUGIN_TESTS = '''
import os
import httpx
import pytest

def ask():
    reply = httpx.post(os.environ["CHAT_URL"] + "/chat/completions",
                       headers={"Authorization": "Bearer sk-plugin-s3cret"},
                       json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    return reply.json()["choices"][0]["message"]["content"]

@pytest.mark.agentspan_cassette("chat.yaml")
def test_named():
    assert ask() == "hello"

@pytest.mark.agentspan_cassette
def test_default_name(agentspan_cassette):
    assert ask() == "hello" and agentspan_cassette.play_count + len(agentspan_cassette) >= 1

def test_unmarked(agentspan_cassette):
    assert agentspan_cassette is None
'''


def test_pytest_marker_records_with_the_flag_and_replays_without(pytester: pytest.Pytester,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # in a subprocess: an in-process pytester run breaks httpx for later tests (see test_testing_kit);
    # the plugin loaded by name, other plugins off: the entry point is tested there, and the
    # LangSmith and Hypothesis plugins would cost seconds of start-up per run
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    args = ("-q", "-p", "no:cacheprovider", "-p", "agentspan.testing.pytest_plugin")
    pytester.makepyfile(test_marked=PLUGIN_TESTS)
    folder = pytester.path / "cassettes"
    with ChatServer([text_reply("hello")]) as server:
        monkeypatch.setenv("CHAT_URL", server.base_url)
        pytester.runpytest_subprocess(*args, "--agentspan-record").assert_outcomes(passed=3)
        assert len(server.requests) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["chat.yaml", "test_default_name.yaml"]
    recorded = (folder / "chat.yaml").read_text()
    assert recorded.count("- request:") == 1 and "sk-plugin-s3cret" not in recorded
    (folder / "test_default_name.yaml").unlink()
    replay = pytester.runpytest_subprocess(*args)  # the server is stopped
    replay.assert_outcomes(passed=2, errors=1)
    replay.stdout.fnmatch_lines(["*CassetteError*test_default_name.yaml does not exist and recording is off*"])
    assert recorded == (folder / "chat.yaml").read_text()  # replaying wrote nothing


def test_record_all_replaces_the_recording_and_a_failure_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with ChatServer([text_reply("old")]) as server, cassette(path, record="once"):
        httpx.post(server.base_url + "/chat/completions", json=BODY)
        httpx.post(server.base_url + "/chat/completions", json={**BODY, "model": "other"})
    old = path.read_text()
    with ChatServer([text_reply("new")]) as server:
        with pytest.raises(ZeroDivisionError), cassette(path, record="all"):
            httpx.post(server.base_url + "/chat/completions", json=BODY)
            1 / 0  # noqa: B018 - a failing test
        assert path.read_text() == old  # a failing block saves nothing
        with cassette(path, record="all"):
            httpx.post(server.base_url + "/chat/completions", json=BODY)
    with cassette(path) as used:
        assert len(used) == 1  # exactly the new recording: the unused "other" request is gone
        reply = httpx.post("http://127.0.0.1:9/v1/chat/completions", json=BODY).json()
    assert reply["choices"][0]["message"]["content"] == "new"


def test_credential_names_whatever_their_spelling() -> None:
    from agentspan.secrets import looks_secret, redact_url

    for name in ("key", "Key", "api_key", "API-KEY", "apiKey", "openai_api_key", "access_token", "client_secret",
                 "password", "X-Amz-Security-Token", "hf_token", "Ocp-Apim-Subscription-Key", "auth_key"):
        assert looks_secret(name), name
    for name in ("max_tokens", "page_token", "pageToken", "nextToken", "eos_token", "tokenizer_eos_token",
                 "prompt_token", "completion_token", "thread_id", "tenant", "alt",
                 "model", "keys_count", "sort_key", "primary_key"):
        assert not looks_secret(name), name
    assert redact_url("https://u:pw-1@h.example/p?Key=k-2&alt=json#f") == "https://u:REDACTED@h.example/p?Key=REDACTED&alt=json#f"
