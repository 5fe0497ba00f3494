"""The local Gemini server speaks the recorded wire format, and ADK's real `Gemini` model works
against it (google-genai over httpx, plain ADK Runner, no Agentspan), without leaving 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.adk.agents import LlmAgent
from google.adk.models import Gemini
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import InMemoryRunner
from google.genai import errors, types

from gemini_server import (
    DEFAULT_SIGNATURE,
    GENERATE_PATH,
    EgressAttempt,
    GeminiServer,
    Reply,
    Usage,
    call_reply,
    error_reply,
    loopback_only,
    offline_gemini_env,
    response_body,
    text_reply,
)

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
API_KEY = "test-key-not-real"


def recorded(name: str) -> list[dict[str, Any]]:
    """The interactions of one cassette in ``tests/fixtures/gemini``."""
    return yaml.safe_load((FIXTURES / name).read_text())["interactions"]


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and value types, with lists reduced to their first item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def set_fields(model: Any) -> set[str]:
    return set(model.model_dump(exclude_none=True)) if model is not None else set()


@pytest.fixture
def gemini_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fake API key, nothing that could redirect google-genai, no proxies, no egress."""
    with offline_gemini_env(monkeypatch, API_KEY):
        yield


async def generate(server: GeminiServer, model: str = "gemini-2.5-flash") -> LlmResponse:
    """One non-streaming call through ADK's real `Gemini` (as an LlmAgent makes it)."""
    llm = Gemini(model=model, base_url=server.base_url)
    request = LlmRequest(model=model, contents=[types.Content(role="user", parts=[types.Part(text="hi")])],
                         config=types.GenerateContentConfig())
    responses = [response async for response in llm.generate_content_async(request, stream=False)]
    assert len(responses) == 1
    return responses[0]


def test_recorded_requests_use_the_path_the_server_answers() -> None:
    uris = [i["request"]["uri"] for name in ("tool_choice_matrix_auto_google.yaml", "google_model_retry.yaml",
                                              "google_model_max_tokens.yaml") for i in recorded(name)]
    assert len(uris) == 6
    for uri in uris:
        path = uri.removeprefix("https://generativelanguage.googleapis.com")
        assert GENERATE_PATH.match(path), uri


def test_server_bodies_have_the_shape_of_recorded_ones() -> None:
    call_turn, text_turn = (i["response"]["parsed_body"] for i in recorded("tool_choice_matrix_auto_google.yaml"))
    ours_call = response_body(call_reply("get_weather", {"city": "Paris"}, Usage(49, 15, 48)), "gemini-2.5-flash", 0)
    ours_text = response_body(text_reply("Sunny.", Usage(88, 15)), "gemini-2.5-flash", 1)
    assert shape(ours_call) == shape(call_turn)
    assert shape(ours_text) == shape(text_turn)
    assert ours_call["usageMetadata"] == call_turn["usageMetadata"]  # same numbers: same fields, same totals
    assert ours_text["usageMetadata"] == text_turn["usageMetadata"]
    for retry_turn in recorded("google_model_retry.yaml")[:2]:  # another model's function calls: same shape
        assert shape(retry_turn["response"]["parsed_body"]["candidates"][0]["content"]["parts"][0]) == shape(
            {**ours_call["candidates"][0]["content"]["parts"][0], "functionCall": {
                "args": {"country": "x"}, "name": "get_capital"}})
    # google-genai's own response type accepts both, with no unknown field (it forbids extras)
    for body in (ours_call, ours_text, call_turn, text_turn):
        types.GenerateContentResponse.model_validate_json(json.dumps(body))
    ours, theirs = (types.GenerateContentResponse.model_validate_json(json.dumps(b)) for b in (ours_call, call_turn))
    assert set_fields(ours.usage_metadata) == set_fields(theirs.usage_metadata) == {
        "prompt_token_count", "candidates_token_count", "thoughts_token_count", "total_token_count",
        "prompt_tokens_details"}
    assert ours.function_calls[0].id is None and theirs.function_calls[0].id is None  # Gemini sends no call id
    assert ours.candidates[0].content.parts[0].thought_signature == DEFAULT_SIGNATURE
    assert ours.candidates[0].finish_reason == theirs.candidates[0].finish_reason == types.FinishReason.STOP
    error = recorded("model_name_suggestion_google.yaml")[0]["response"]["parsed_body"]
    assert shape(response_body(error_reply(404, "NOT_FOUND", "gone"), "m", 0)) == shape(error)


def test_usage_field_google_genai_does_not_model_is_dropped_by_the_client(gemini_env: None) -> None:
    body = recorded("google_model_max_tokens.yaml")[0]["response"]["parsed_body"]
    with pytest.raises(ValueError, match="serviceTier"):  # a newer API field than google-genai 2.34 knows
        types.GenerateContentResponse.model_validate_json(json.dumps(body))
    with GeminiServer([Reply(body=body)]) as server:
        response = asyncio.run(generate(server))
    assert response.finish_reason == types.FinishReason.MAX_TOKENS
    assert response.content.parts[0].text == "The capital of France is"
    assert (response.usage_metadata.prompt_token_count, response.usage_metadata.candidates_token_count) == (15, 5)


def test_adk_gemini_parses_recorded_and_served_bodies_alike(gemini_env: None) -> None:
    recorded_calls = [i["response"]["parsed_body"] for i in recorded("google_model_retry.yaml")[:2]]
    recorded_calls.append(recorded("tool_choice_matrix_auto_google.yaml")[0]["response"]["parsed_body"])
    replies = [Reply(body=body) for body in recorded_calls] + [call_reply("get_capital", {"country": "x"},
                                                                          Usage(57, 15, 124))]

    async def all_responses(server: GeminiServer) -> list[LlmResponse]:
        return [await generate(server) for _ in replies]

    with GeminiServer(replies) as server:
        responses = asyncio.run(all_responses(server))
    assert len(server.model_calls) == 4
    ours = responses[-1]
    for theirs in responses[:-1]:
        assert set_fields(theirs) == set_fields(ours)
        assert set_fields(theirs.usage_metadata) == set_fields(ours.usage_metadata)
        their_part, our_part = theirs.content.parts[0], ours.content.parts[0]
        assert set_fields(their_part) == set_fields(our_part) == {"function_call", "thought_signature"}
        assert set_fields(their_part.function_call) == set_fields(our_part.function_call) == {"name", "args"}
        assert isinstance(their_part.thought_signature, bytes) and isinstance(our_part.thought_signature, bytes)


def get_weather(city: str) -> str:
    """Weather for a city."""
    weather_calls.append(city)
    return f"sunny in {city}"


weather_calls: list[str] = []


def test_plain_adk_runner_drives_real_gemini_over_http(gemini_env: None) -> None:
    weather_calls.clear()
    replies = [call_reply("get_weather", {"city": "Paris"}, Usage(49, 15, 48)), text_reply("Sunny in Paris.")]

    async def run(server: GeminiServer) -> list[Any]:
        agent = LlmAgent(name="weather", instruction="Answer about weather.", tools=[get_weather],
                         model=Gemini(model="gemini-2.5-flash", base_url=server.base_url))
        runner = InMemoryRunner(agent, app_name="gemini-http")
        session = await runner.session_service.create_session(app_name="gemini-http", user_id="u")
        message = types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])
        return [event async for event in runner.run_async(user_id="u", session_id=session.id, new_message=message)]

    with GeminiServer(replies) as server:
        events = asyncio.run(run(server))
    assert weather_calls == ["Paris"]
    assert events[-1].content.parts[0].text == "Sunny in Paris."
    assert [e.usage_metadata.total_token_count for e in events if e.usage_metadata] == [112, 57]
    call_id = events[0].content.parts[0].function_call.id
    assert call_id.startswith("adk-")  # the API gave none: ADK made a random one up
    first, second = server.model_calls
    assert first.path == second.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert first.headers["x-goog-api-key"] == API_KEY
    assert first.body["contents"] == [{"parts": [{"text": "Weather in Paris?"}], "role": "user"}]
    model_turn, tool_turn = second.body["contents"][1:]
    # the thought signature goes back byte for byte; ADK's made-up call id does not go out at all
    assert base64.urlsafe_b64decode(model_turn["parts"][0]["thoughtSignature"]) == DEFAULT_SIGNATURE
    assert model_turn["parts"][0]["functionCall"] == {"args": {"city": "Paris"}, "name": "get_weather"}
    assert tool_turn["parts"][0]["functionResponse"] == {"name": "get_weather",
                                                         "response": {"result": "sunny in Paris"}}
    assert call_id not in json.dumps(second.body)


def test_api_errors_reach_adk_as_client_errors_without_retries(gemini_env: None) -> None:
    not_found = recorded("model_name_suggestion_google.yaml")[0]["response"]
    replies = [Reply(status=not_found["status"]["code"], body=not_found["parsed_body"]),
               error_reply(429, "RESOURCE_EXHAUSTED", "Quota exceeded.")]
    with GeminiServer(replies) as server:
        with pytest.raises(errors.ClientError) as missing:
            asyncio.run(generate(server, "gemini-3.6-flahs"))
        with pytest.raises(errors.ClientError) as quota:
            asyncio.run(generate(server))
        assert len(server.model_calls) == 2  # google-genai does not retry unless retry_options are set
    assert (missing.value.code, missing.value.status) == (404, "NOT_FOUND")
    assert (quota.value.code, quota.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert "Quota exceeded." in str(quota.value)


def test_unscripted_request_fails_loudly(gemini_env: None) -> None:
    with GeminiServer([text_reply("only one")]) as server:
        assert asyncio.run(generate(server)).content.parts[0].text == "only one"
        with pytest.raises(errors.ServerError, match="unexpected request #2"):
            asyncio.run(generate(server))


def test_loopback_only_refuses_dns_and_remote_connects() -> None:
    with loopback_only() as refused:
        with pytest.raises(EgressAttempt):
            socket.getaddrinfo("generativelanguage.googleapis.com", 443)
        with pytest.raises(EgressAttempt):
            socket.create_connection(("192.0.2.1", 9), timeout=1)  # TEST-NET-1: never routed anyway

        async def async_connect() -> None:
            await asyncio.open_connection("192.0.2.1", 9)

        with pytest.raises(EgressAttempt):
            asyncio.run(async_connect())
        with GeminiServer([text_reply("ok")]) as server, socket.create_connection(
                ("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])), timeout=5):
            pass
    assert refused == ["dns:generativelanguage.googleapis.com", "('192.0.2.1', 9)", "('192.0.2.1', 9)"]
