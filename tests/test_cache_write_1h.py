"""Anthropic bills a write to its 1-hour prompt cache at twice the input price, one to its
5-minute cache at 1.25 times: a call's cost prices each at its own price (it priced them all as
5-minute writes)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

import agentspan
from agentspan.models import CACHE_PRICES_PER_MTOK, price_usd

from lgr_support import ScriptedChatModel


@pytest.fixture(autouse=True)
def _home(home):
    return home


def test_anthropics_cache_write_prices_are_its_list_prices():
    """Reads at 10% of the input price, 5-minute writes at 125%, 1-hour writes at 200%."""
    inputs = {"claude-sonnet-4-5": 3.00, "claude-haiku-4-5": 1.00, "claude-opus-4-1": 15.00}
    for model, price in inputs.items():
        assert CACHE_PRICES_PER_MTOK["anthropic", model] == pytest.approx((price * 0.1, price * 1.25, price * 2))


@pytest.mark.parametrize(("args", "expected"), [
    # 1000 input: 600 read, 300 written (100 of them to the 1-hour cache), 100 uncached; 100 output
    ((1000, 100, 600, 300, 100), 100 * 3 + 600 * 0.30 + 200 * 3.75 + 100 * 6.00 + 100 * 15),
    ((1000, 0, 0, 1000, 1000), 1000 * 6.00),  # all 1-hour writes
    ((1000, 0, 0, 300, None), 300 * 3.75 + 700 * 3),  # no split reported: 5-minute writes, as before
    ((1000, 0, 0, 300, 500), 300 * 6.00 + 700 * 3),  # more 1-hour writes than writes: no more than the writes
    ((1000, 0, 900, 300, 300), 900 * 0.30 + 100 * 6.00),  # writes beyond the input left by the reads: no more than it
    ((1000, 0, 0, 300, -50), 300 * 3.75 + 700 * 3),  # a negative count: none
    ((1000, 0, 0, None, 200), 1000 * 3),  # 1-hour writes without writes: of no writes, none
])
def test_price_usd_bills_one_hour_cache_writes_at_their_price(args, expected):
    assert price_usd("anthropic", "claude-sonnet-4-5-20250929", *args) == pytest.approx(expected / 1e6)


def test_a_model_without_a_one_hour_price_bills_it_as_its_other_writes():
    """OpenAI bills no cache writes apart: 1-hour writes are ordinary input there too."""
    assert price_usd("openai", "gpt-4o", 1000, 0, 0, 300, 300) == pytest.approx(1000 * 2.50 / 1e6)


class _Claude(ScriptedChatModel):
    model_name: str = "claude-sonnet-4-5"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": "anthropic", "ls_model_name": self.model_name, "ls_model_type": "chat"}


def test_a_langgraph_calls_cost_prices_its_one_hour_cache_writes_apart():
    """langchain-anthropic's ``usage_metadata``: writes under ``ephemeral_5m/1h_input_tokens``
    (``cache_creation`` then 0), all of them in ``input_tokens``."""
    usage = {"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100,
             "input_token_details": {"cache_read": 600, "cache_creation": 0,
                                     "ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100}}
    model = _Claude(responses=[AIMessage("hi", usage_metadata=usage)])
    builder = StateGraph(MessagesState)
    builder.add_node("chat", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    agentspan.run(builder.compile(name="claude"), {"messages": [HumanMessage("hello")]}, run_id="cached")
    (step,) = [s for s in agentspan.get("cached").steps() if s.kind == agentspan.StepKind.LLM]
    assert (step.provider, step.model, step.input_tokens, step.output_tokens) == (
        "anthropic", "claude-sonnet-4-5", 1000, 100)
    # was 100 * 3 + 600 * 0.30 + 300 * 3.75 + 100 * 15 (the 1-hour writes at the 5-minute price)
    assert step.cost_usd == pytest.approx((100 * 3 + 600 * 0.30 + 200 * 3.75 + 100 * 6.00 + 100 * 15) / 1e6)
