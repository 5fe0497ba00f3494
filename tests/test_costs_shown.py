"""Costs as the CLI and the web UI show them (unpriced model calls, tiny costs, calls without
usage), the price table's own rows and long-context tiers, and explicit ``provider/model`` labels."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from agentspan import cli_render
from agentspan.cli import app
from agentspan.models import ModelId, explicit_model_id, price_usd
from agentspan.records import Run, RunStatus, Step, StepKind, StepResult, StepStatus
from agentspan.stores.sqlite import SqliteStore
from agentspan_server.app import create_app
from agentspan_server.ui.render import format_usd


@pytest.fixture(autouse=True)
def home(cli_home: Path) -> Path:
    """An empty AGENTSPAN_HOME and a wide terminal (`conftest.cli_home`): nothing touches ~/.agentspan."""
    return cli_home


Call = tuple[str, int | None, int | None, float | None]


def seed(store: SqliteStore, calls: list[Call], *, tool: bool = False) -> str:
    """A run with one completed llm step per ``(model, input, output, cost)`` (and a tool step)."""
    run, _ = store.create_run(Run(framework="test", agent="a", input="hi", status=RunStatus.RUNNING))
    for seq, (model, tokens_in, tokens_out, usd) in enumerate(calls, 1):
        step = Step(run_id=run.id, key=f"llm:{seq}", seq=seq, kind=StepKind.LLM, name=model, provider="openai",
                    model=model, input={})  # fmt: skip
        done = StepResult(status=StepStatus.COMPLETED, output={}, provider="openai", model=model,
                          input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=usd)  # fmt: skip
        store.record_step(step, done, epoch=0)
    if tool:
        step = Step(run_id=run.id, key="tool:t", seq=len(calls) + 1, kind=StepKind.TOOL, name="t", input={})
        store.record_step(step, StepResult(status=StepStatus.COMPLETED, output="ok"), epoch=0)
    return run.id


MIXED: list[Call] = [("gpt-4o-mini", 100, 20, 2.7e-05), ("my-model", 500_000, 100_000, None)]
UNPRICED: list[Call] = [("my-model", 1000, 200, None), ("my-model", 10, 2, None)]
NO_USAGE: list[Call] = [("gpt-4o", None, None, None)]


def ui_page(store: SqliteStore, run_id: str) -> tuple[str, str, list[str]]:
    """The web UI's run page: its Cost and Tokens facts and its steps' costs (as text)."""
    client = TestClient(create_app(store), base_url="http://127.0.0.1")
    page = client.get(f"/ui/runs/{run_id}")
    assert page.status_code == 200
    cost = re.search(r"<dt>Cost</dt><dd>(.*?)</dd>", page.text)
    tokens = re.search(r"<dt>Tokens in / out</dt><dd>(.*?)</dd>", page.text)
    assert cost and tokens
    steps = re.findall(r'<td class="num cost">(.*?)</td>', page.text)
    return unescape(cost.group(1)), unescape(tokens.group(1)), [unescape(s) for s in steps]


def runs_show(run_id: str) -> str:
    result = CliRunner().invoke(app, ["runs", "show", run_id])
    assert result.exit_code == 0, result.output
    return result.output


# ---- 1. a run's cost where some of its model calls are unpriced ---------------------------------
def test_the_run_page_shows_a_mixed_runs_cost_as_a_lower_bound(cli_store: SqliteStore) -> None:
    cost, tokens, steps = ui_page(cli_store, seed(cli_store, MIXED))
    assert cost == "≥ $0.000027 (1 of 2 model calls unpriced)"  # was "$0.000027", most of it unpriced
    assert tokens == "500,100 / 100,020"
    assert steps == ["$0.000027", "—"]


def test_the_run_page_shows_a_run_with_no_priced_call_as_unpriced(cli_store: SqliteStore) -> None:
    cost, _, _ = ui_page(cli_store, seed(cli_store, UNPRICED))
    assert cost == "— (2 of 2 model calls unpriced)"  # was "$0"


def test_the_run_page_shows_unknown_tokens_when_no_call_reported_usage(cli_store: SqliteStore) -> None:
    cost, tokens, _ = ui_page(cli_store, seed(cli_store, NO_USAGE))
    assert tokens == "—"  # was "0 / 0"
    assert cost == "— (1 of 1 model call unpriced)"


def test_the_run_page_of_a_fully_priced_run_shows_its_cost_plainly(cli_store: SqliteStore) -> None:
    cost, tokens, _ = ui_page(cli_store, seed(cli_store, [("gpt-4o-mini", 100, 20, 2.7e-05)], tool=True))
    assert (cost, tokens) == ("$0.000027", "100 / 20")


def test_runs_show_says_how_many_model_calls_its_cost_leaves_out(cli_store: SqliteStore) -> None:
    out = runs_show(seed(cli_store, MIXED, tool=True))
    assert re.search(r"cost\s+≥ \$0\.000027 \(1 of 2 model calls unpriced\)", out)
    # the steps table has a cost column: the priced call's cost, "—" for the unpriced one, nothing for the tool
    header = next(line for line in out.splitlines() if line.split()[:2] == ["seq", "kind"])
    assert "cost" in header.split()
    rows = {line.split()[2]: line for line in out.splitlines() if re.match(r"\s+\d+\s+(llm|tool)\s", line)}
    assert "$0.000027" in rows["llm:1"] and " — " in rows["llm:2"]
    assert "$" not in rows["tool:t"] and "—" not in rows["tool:t"]


def test_runs_show_of_runs_without_priced_calls_or_usage(cli_store: SqliteStore) -> None:
    out = runs_show(seed(cli_store, UNPRICED))
    assert re.search(r"cost\s+— \(2 of 2 model calls unpriced\)", out)
    out = runs_show(seed(cli_store, NO_USAGE))
    assert re.search(r"tokens in/out\s+—", out)  # was "0/0"


def test_run_cost_without_steps_is_the_cost_as_stored() -> None:
    assert cli_render.run_cost(2.7e-05, None) == "$0.000027"
    assert cli_render.run_cost(0.0, cli_render.ModelCalls(0, 0, 0, 0)) == "$0"
    assert cli_render.run_cost(2e-7, cli_render.ModelCalls(2, 2, 1, 2)) == "> $0 (1 of 2 model calls unpriced)"


# ---- 2. tiny costs -------------------------------------------------------------------------------
@pytest.mark.parametrize(("usd", "shown"), [(2e-7, "<$0.000001"), (5e-8, "<$0.000001"), (1e-6, "$0.000001"),
                                            (2.7e-05, "$0.000027"), (0.0, "$0"), (0.0123, "$0.0123")])
def test_a_cost_under_a_millionth_is_not_shown_as_free_and_the_ui_agrees(usd: float, shown: str) -> None:
    assert cli_render.cost(usd) == shown
    assert format_usd(usd) == shown


# ---- 3. the price table --------------------------------------------------------------------------
def test_the_first_gpt_4o_snapshot_has_its_own_list_price() -> None:
    assert price_usd("openai", "gpt-4o-2024-05-13", 1_000_000, 1_000_000) == pytest.approx(5.00 + 15.00)
    assert price_usd("openai", "gpt-4o-2024-08-06", 1_000_000, 1_000_000) == pytest.approx(2.50 + 10.00)
    # no cached price listed for it: its cached tokens bill as input
    assert price_usd("openai", "gpt-4o-2024-05-13", 1_000_000, 0, 500_000) == pytest.approx(5.00)


def test_gemini_2_5_pro_bills_a_prompt_over_200k_tokens_at_its_long_context_prices() -> None:
    assert price_usd("google", "gemini-2.5-pro", 200_000, 1_000_000) == pytest.approx(0.2 * 1.25 + 10.00)
    assert price_usd("google", "gemini-2.5-pro", 200_001, 1_000_000) == pytest.approx(200_001 * 2.50 / 1e6 + 15.00)
    # cached tokens count toward the prompt and bill at twice the short tier's cached price
    assert price_usd("google", "gemini-2.5-pro", 400_000, 0, 300_000) == pytest.approx(
        0.1 * 2.50 + 0.3 * 0.31 * 2)
    assert price_usd("google", "gemini-2.5-pro-preview-05-06", 300_000, 0) is None  # (not a snapshot: unpriced)


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-sonnet-4",
                                   "claude-sonnet-4-20250514"])
def test_claude_sonnet_4_bills_a_prompt_over_200k_tokens_at_its_long_context_prices(model: str) -> None:
    assert price_usd("anthropic", model, 200_000, 1_000_000) == pytest.approx(0.2 * 3.00 + 15.00)
    assert price_usd("anthropic", model, 300_000, 1_000_000) == pytest.approx(0.3 * 6.00 + 22.50)
    # the prompt counts cache reads and writes; their prices are the long input price's multiples
    got = price_usd("anthropic", model, 300_000, 0, 100_000, 150_000, 50_000)
    assert got == pytest.approx(0.05 * 6.00 + 0.1 * 0.60 + 0.1 * 7.50 + 0.05 * 12.00)
    assert price_usd("anthropic", model, 150_000, 0, 100_000) == pytest.approx(0.05 * 3.00 + 0.1 * 0.30)


def test_models_without_a_long_context_tier_price_long_prompts_as_short_ones() -> None:
    assert price_usd("openai", "gpt-4.1", 1_000_000, 1_000_000) == pytest.approx(2.00 + 8.00)
    assert price_usd("anthropic", "claude-haiku-4-5", 300_000, 0) == pytest.approx(0.3 * 1.00)


# ---- 4. explicit provider/model labels -----------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("custom/local-llm", ModelId("custom", "local-llm")),
    ("my-lab/llama/8b", ModelId("my-lab", "llama/8b")),
    ("openai/gpt-4o-mini", ModelId("openai", "gpt-4o-mini")),
    ("Gemini/gemini-2.5-pro", ModelId("google", "gemini-2.5-pro")),
    ("groq/openai/gpt-oss-120b", ModelId("groq", "openai/gpt-oss-120b")),
    ("local-llm", ModelId("custom", "local-llm")),
    ("anthropic:claude-haiku-4-5", ModelId("anthropic", "claude-haiku-4-5")),
])  # fmt: skip
def test_an_explicit_label_names_its_provider_whatever_it_is(text: str, expected: ModelId) -> None:
    assert explicit_model_id(text) == expected


def test_adk_labels_a_model_with_its_explicit_provider() -> None:
    from agentspan_adk._codec import model_identity

    class Labelled:
        agentspan_model_id = "custom/local-llm"
        model = "whatever"

    assert model_identity(cast(Any, Labelled()), None) == ("custom", "local-llm")  # was openai/custom/local-llm
