"""The SDK's real `OpenAIChatCompletionsModel`, over real HTTP to a local server, journaled and
replayed (no provider is contacted: the server runs on 127.0.0.1)."""

from __future__ import annotations

import pytest
from agents import set_tracing_disabled

import agentspan

from journal_utils import crashed_copy
from openai_compat_server import ChatServer, weather_agent, weather_calls, weather_replies

set_tracing_disabled(True)


@pytest.fixture
def server():
    with ChatServer(weather_replies()) as srv:
        yield srv


def test_real_chat_completions_model_is_journaled_and_replayed(home, server):
    weather_calls.clear()
    agent = weather_agent(server.base_url)
    handle = agentspan.start(agent, "Weather in Paris?")
    result = handle.result(timeout=30)
    assert result.final_output == "It is sunny in Paris." and len(server.requests) == 2
    llm = [s for s in handle.steps() if s.kind is agentspan.StepKind.LLM]
    assert [(s.provider, s.model, s.input_tokens, s.output_tokens) for s in llm] == [
        ("openai", "gpt-4o-mini", 50, 7), ("openai", "gpt-4o-mini", 51, 7)]
    assert llm[0].cost_usd == pytest.approx((50 * 0.15 + 7 * 0.6) / 1e6)
    # a process that died after the tool call: the first model call and the tool are replayed
    copy_id = crashed_copy(handle.id, keep=2)
    resumed = agentspan.resume(copy_id, weather_agent(server.base_url)).result(timeout=30)
    assert resumed.final_output == "It is sunny in Paris."
    assert len(server.requests) == 3 and weather_calls == ["Paris"]
    # the live request after the replay carries the replayed tool call and its journaled output
    messages = server.requests[2]["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == "call_abc"
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_abc", "content": "sunny in Paris"}
    assert server.requests[2]["messages"] == server.requests[1]["messages"]
    assert "sk-test-not-real" not in str([s.model_dump() for s in agentspan.get(copy_id).steps()])
