"""What a model call's step records of its usage: tokens and cost as reported, and unknown (null),
not zero, when the provider reported none (a stream without ``include_usage``, a compatible server
that sends no usage: the SDK then counts zeros)."""

from __future__ import annotations

import pytest
from agents import Agent, ModelResponse, Usage, set_tracing_disabled

import agentspan
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
