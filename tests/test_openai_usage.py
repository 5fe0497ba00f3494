"""What a model call's step records of its usage: tokens and cost as reported, and unknown (null),
not zero, when the provider reported none (a stream without ``include_usage``, a compatible server
that sends no usage: the SDK then counts zeros)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from agents import Agent, ModelResponse, Usage, set_tracing_disabled
from openai.types.responses.response_usage import InputTokensDetails

import agentspan
from agentspan.models import price_usd
from agentspan_openai_agents.testing import ScriptedModel

set_tracing_disabled(True)


@pytest.fixture(autouse=True)
def _home(home):
    return home


class _NoUsage(ScriptedModel):
    async def get_response(self, *args, **kwargs) -> ModelResponse:
        response = await super().get_response(*args, **kwargs)
        return ModelResponse(output=response.output, usage=Usage(requests=1), response_id=None)


@pytest.mark.parametrize("reported", [True, False])
def test_a_priced_calls_tokens_and_cost_are_null_when_the_provider_reports_no_usage(reported):
    model = (ScriptedModel if reported else _NoUsage)(["hello"], name="m")
    model.agentspan_model_id = "openai/gpt-4o-mini"  # in the price table
    handle = agentspan.start(Agent(name="a", instructions="x", model=model), "hi")
    assert handle.result(timeout=20).final_output == "hello"
    (step,) = handle.steps()
    if reported:
        assert (step.input_tokens, step.output_tokens) == (100, 20) and step.cost_usd > 0
    else:
        assert (step.input_tokens, step.output_tokens, step.cost_usd) == (None, None, None)  # was 0, 0, $0


class _Cached(ScriptedModel):
    """Reports 100 input tokens, ``cached`` of them read from OpenAI's prompt cache."""

    cached = 80

    async def get_response(self, *args, **kwargs) -> ModelResponse:
        response = await super().get_response(*args, **kwargs)
        usage = Usage(requests=1, input_tokens=100, output_tokens=20, total_tokens=120,
                      input_tokens_details=InputTokensDetails(cached_tokens=self.cached,
                                                                 cache_write_tokens=0))
        return ModelResponse(output=response.output, usage=usage, response_id=None)


def test_cached_input_tokens_are_priced_at_the_cached_price():
    """gpt-4o-mini: $0.15 per million input tokens, $0.075 cached, $0.60 output: 20 uncached, 80
    cached and 20 output tokens cost (20 * 0.15 + 80 * 0.075 + 20 * 0.60) / 1e6 (was 100 * 0.15)."""
    model = _Cached(["hello"], name="m")
    model.agentspan_model_id = "openai/gpt-4o-mini"
    handle = agentspan.start(Agent(name="a", instructions="x", model=model), "hi")
    assert handle.result(timeout=20).final_output == "hello"
    (step,) = handle.steps()
    assert (step.input_tokens, step.output_tokens) == (100, 20)
    assert step.cost_usd == pytest.approx((20 * 0.15 + 80 * 0.075 + 20 * 0.60) / 1e6)


@pytest.mark.parametrize(("provider", "model", "args", "expected"), [
    # Anthropic: reads at 10% of the input price, writes (5-minute cache) at 125%
    ("anthropic", "claude-sonnet-4-5-20250929", (1000, 100, 600, 300), (100 * 3 + 600 * 0.30 + 300 * 3.75 + 100 * 15)),
    ("openai", "gpt-5", (1000, 0, 1000, None), 1000 * 0.125),  # all of it cached
    ("openai", "gpt-4o", (1000, 10, None, None), 1000 * 2.5 + 10 * 10),  # no cache report: as before
    ("google", "gemini-2.5-flash", (400, 0, 100, None), 300 * 0.30 + 100 * 0.075),
    ("groq", "llama-3.3-70b-versatile", (1000, 0, 500, None), 1000 * 0.59),  # no cached price: ordinary input
    ("openai", "gpt-4o-mini", (10, 0, 50, None), 10 * 0.075),  # more cached than input (a bad report): never negative
])
def test_price_usd_bills_cache_reads_and_writes_at_their_prices(provider, model, args, expected):
    assert price_usd(provider, model, *args) == pytest.approx(expected / 1e6)


class _GapInTotal(ScriptedModel):
    """Reports a total above input + output, as Gemini's OpenAI-compatible API does for its
    thinking, and LiteLLM's Gemini for the prompt of its grounding tools (input)."""

    async def get_response(self, *args, **kwargs) -> ModelResponse:
        response = await super().get_response(*args, **kwargs)
        usage = Usage(requests=1, input_tokens=66, output_tokens=6, total_tokens=100)
        return ModelResponse(output=response.output, usage=usage, response_id=None)


def _gemini_compatible_model() -> Any:
    """The SDK's chat completions model on Gemini's OpenAI-compatible API, answered offline with the
    usage recorded in ``openai-chat/test_compatible_api_with_tool_calls_without_id.yaml``: its
    thinking left out of ``completion_tokens`` and counted in ``total_tokens``."""
    from agents import OpenAIChatCompletionsModel
    from openai import AsyncOpenAI

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 0, "model": "gemini-2.5-pro",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 66, "completion_tokens": 6, "total_tokens": 100}})

    client = AsyncOpenAI(api_key="test", base_url="https://generativelanguage.googleapis.com/v1beta/openai/",
                         http_client=httpx.AsyncClient(transport=httpx.MockTransport(answer)))
    return OpenAIChatCompletionsModel("gemini-2.5-pro", client)


def test_thinking_left_out_of_the_output_count_but_in_the_total_is_billed_as_output():
    handle = agentspan.start(Agent(name="a", instructions="x", model=_gemini_compatible_model()), "hi")
    assert handle.result(timeout=20).final_output == "hello"
    (step,) = handle.steps()
    assert (step.provider, step.model) == ("google", "gemini-2.5-pro")
    assert (step.input_tokens, step.output_tokens) == (66, 34)  # was 66, 6: a third of the bill
    assert step.cost_usd == pytest.approx(price_usd("google", "gemini-2.5-pro", 66, 34))


def test_a_total_above_input_and_output_elsewhere_is_not_counted_as_output():
    """Another model class (LiteLLM's Gemini, say) may leave input out of both counts (the prompt of
    its grounding tools): the gap is not billed at the output price there."""
    model = _GapInTotal(["hello"], name="m")
    model.agentspan_model_id = "google/gemini-2.5-pro"
    handle = agentspan.start(Agent(name="a", instructions="x", model=model), "hi")
    assert handle.result(timeout=20).final_output == "hello"
    (step,) = handle.steps()
    assert (step.input_tokens, step.output_tokens) == (66, 6)


def test_a_models_own_label_names_its_provider_whatever_it_is():
    model = ScriptedModel(["hello"], name="m")
    model.agentspan_model_id = "custom/local-llm"
    handle = agentspan.start(Agent(name="a", instructions="x", model=model), "hi")
    assert handle.result(timeout=20).final_output == "hello"
    (step,) = handle.steps()
    assert (step.provider, step.model) == ("custom", "local-llm")  # was openai / custom/local-llm
