"""A LangGraph model call's usage and provider label, as the chat model integrations report them.

- A response with several choices (``ChatOpenAI(n=2)``, Gemini's ``candidate_count``) is one call,
  billed once, though langchain-openai and langchain-google-genai put the whole response's usage
  on every choice's message.
- ``ChatOpenAI(base_url=...)`` on another provider's OpenAI-compatible API is that provider's call.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, MessagesState, StateGraph

import agentspan
from agentspan.models import price_usd


@pytest.fixture(autouse=True)
def _home(home):
    return home


def _openai_usage(token_usage: dict[str, Any]) -> dict[str, Any]:
    """langchain-openai's ``_create_usage_metadata`` (the parts counted here)."""
    cached = (token_usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    usage: dict[str, Any] = {"input_tokens": token_usage["prompt_tokens"],
                             "output_tokens": token_usage["completion_tokens"],
                             "total_tokens": token_usage["total_tokens"]}
    if cached is not None:
        usage["input_token_details"] = {"cache_read": cached}
    return usage


class _ChatOpenAILike(BaseChatModel):
    """Builds its `ChatResult` as langchain-openai's ``_create_chat_result`` does: each choice's
    ``AIMessage`` gets its own ``usage_metadata`` made from the response's ``usage``, which is also
    ``llm_output["token_usage"]``; its tracing params say ``openai`` whatever ``base_url`` is."""

    model_name: str = "gpt-4o-mini"
    n: int = 1
    openai_api_base: str | None = None
    root_client: Any = None
    token_usage: dict[str, Any] = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}

    @property
    def _llm_type(self) -> str:
        return "openai-chat-like"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": "openai", "ls_model_name": self.model_name, "ls_model_type": "chat"}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        generations = [
            ChatGeneration(message=AIMessage(f"choice {i}", usage_metadata=_openai_usage(self.token_usage),
                                             response_metadata={"model_name": self.model_name}),
                           generation_info={"finish_reason": "stop"})
            for i in range(self.n)]
        return ChatResult(generations=generations,
                          llm_output={"token_usage": self.token_usage, "model_provider": "openai",
                                      "model_name": self.model_name})


class _GeminiLike(BaseChatModel):
    """Builds its `ChatResult` as langchain-google-genai's ``_response_to_result`` does: the one
    ``lc_usage`` of the response set on every candidate's message, no ``token_usage``."""

    candidates: int = 2
    usage: dict[str, Any] = {}

    @property
    def _llm_type(self) -> str:
        return "gemini-like"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": "google_genai", "ls_model_name": "gemini-2.5-flash", "ls_model_type": "chat"}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        lc_usage = dict(self.usage)
        generations = []
        for i in range(self.candidates):
            message = AIMessage(f"candidate {i}")
            message.usage_metadata = lc_usage  # type: ignore[assignment]
            generations.append(ChatGeneration(message=message))
        return ChatResult(generations=generations, llm_output={"prompt_feedback": {}})


class _PerChoice(BaseChatModel):
    """An integration that reports each choice's own usage (they differ), with or without the
    response's total in ``llm_output["token_usage"]``."""

    usages: list[dict[str, Any]] = []
    token_usage: dict[str, Any] | None = None

    @property
    def _llm_type(self) -> str:
        return "per-choice"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini", "ls_model_type": "chat"}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        generations = [ChatGeneration(message=AIMessage(f"choice {i}", usage_metadata=usage))  # type: ignore[arg-type]
                       for i, usage in enumerate(self.usages)]
        return ChatResult(generations=generations,
                          llm_output=None if self.token_usage is None else {"token_usage": self.token_usage})


def _llm_step(model: BaseChatModel, run_id: str) -> Any:
    """Runs a one-node graph calling ``model`` once; returns the call's journaled step."""
    builder = StateGraph(MessagesState)
    builder.add_node("chat", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    agentspan.run(builder.compile(name="chat"), {"messages": [HumanMessage("hello")]}, run_id=run_id)
    (step,) = [s for s in agentspan.get(run_id).steps() if s.kind == agentspan.StepKind.LLM]
    return step


# ---- usage: one response, billed once ------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_chatopenai_response_with_n_choices_is_billed_once(n):
    token_usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
                   "prompt_tokens_details": {"cached_tokens": 400}}
    step = _llm_step(_ChatOpenAILike(n=n, token_usage=token_usage), f"n{n}")
    # was 1000 * n in, 100 * n out, 400 * n cached: every choice's copy of the response's usage added up
    assert (step.provider, step.model, step.input_tokens, step.output_tokens) == ("openai", "gpt-4o-mini", 1000, 100)
    assert step.cost_usd == pytest.approx(price_usd("openai", "gpt-4o-mini", 1000, 100, 400))


def test_gemini_candidates_sharing_the_responses_usage_are_billed_once():
    usage = {"input_tokens": 2000, "output_tokens": 300, "total_tokens": 2300}
    step = _llm_step(_GeminiLike(candidates=2, usage=usage), "gemini")
    assert (step.provider, step.model, step.input_tokens, step.output_tokens) == ("google", "gemini-2.5-flash",
                                                                                  2000, 300)
    assert step.cost_usd == pytest.approx(price_usd("google", "gemini-2.5-flash", 2000, 300))


def test_usages_reported_per_choice_add_up():
    usages = [{"input_tokens": 500, "output_tokens": 40, "total_tokens": 540},
              {"input_tokens": 500, "output_tokens": 60, "total_tokens": 560}]
    step = _llm_step(_PerChoice(usages=usages), "per-choice")
    assert (step.input_tokens, step.output_tokens) == (1000, 100)


def test_the_responses_own_token_usage_wins_over_differing_choices():
    usages = [{"input_tokens": 1000, "output_tokens": 40, "total_tokens": 1040},
              {"input_tokens": 1000, "output_tokens": 60, "total_tokens": 1060}]
    token_usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
                   "prompt_tokens_details": {"cached_tokens": 200}}
    step = _llm_step(_PerChoice(usages=usages, token_usage=token_usage), "token-usage")
    assert (step.input_tokens, step.output_tokens) == (1000, 100)  # not 2000: the prompt is read once
    assert step.cost_usd == pytest.approx(price_usd("openai", "gpt-4o-mini", 1000, 100, 200))


# ---- provider: ChatOpenAI on another provider's OpenAI-compatible API ----------------------
@pytest.mark.parametrize(("base_url", "name", "label"), [
    ("https://api.groq.com/openai/v1", "llama-3.3-70b-versatile", ("groq", "llama-3.3-70b-versatile")),
    ("https://api.groq.com/openai/v1", "openai/gpt-oss-120b", ("groq", "openai/gpt-oss-120b")),
    ("https://openrouter.ai/api/v1", "anthropic/claude-sonnet-4-5", ("openrouter", "anthropic/claude-sonnet-4-5")),
    ("https://api.mistral.ai/v1", "mistral-large-latest", ("mistral", "mistral-large-latest")),
    ("https://api.deepseek.com", "deepseek-chat", ("deepseek", "deepseek-chat")),
    ("https://generativelanguage.googleapis.com/v1beta/openai/", "gemini-2.5-flash", ("google", "gemini-2.5-flash")),
    ("https://api.x.ai/v1", "grok-4", ("xai", "grok-4")),
    ("https://api.together.xyz/v1", "meta-llama/Llama-3.3-70B-Instruct-Turbo",
     ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo")),
    ("https://acme.openai.azure.com/openai/v1", "gpt-4o-mini", ("azure", "gpt-4o-mini")),
    ("http://localhost:8000/v1", "gpt-4o-mini", ("openai", "gpt-4o-mini")),
    (None, "gpt-4o-mini", ("openai", "gpt-4o-mini")),
])
def test_chatopenai_on_a_compatible_api_is_labelled_with_its_provider(base_url, name, label):
    step = _llm_step(_ChatOpenAILike(model_name=name, openai_api_base=base_url), "compatible")
    assert (step.provider, step.model) == label
    assert step.cost_usd == (None if price_usd(*label, 1000, 100) is None else
                             pytest.approx(price_usd(*label, 1000, 100)))


def test_groq_through_chatopenai_is_priced_as_groq():
    step = _llm_step(_ChatOpenAILike(model_name="llama-3.3-70b-versatile",
                                     openai_api_base="https://api.groq.com/openai/v1"), "groq")
    assert (step.provider, step.model) == ("groq", "llama-3.3-70b-versatile")
    assert step.cost_usd is not None  # was None: labelled openai/llama-3.3-70b-versatile, not in the table
    assert step.cost_usd == pytest.approx(price_usd("groq", "llama-3.3-70b-versatile", 1000, 100))


def test_the_openai_clients_base_url_says_where_the_calls_go():
    """With no ``openai_api_base`` (set by an environment variable or on the client passed in),
    the OpenAI client's own ``base_url`` is read."""
    client = openai.OpenAI(api_key="sk-test", base_url="https://api.groq.com/openai/v1")
    step = _llm_step(_ChatOpenAILike(model_name="llama-3.3-70b-versatile", root_client=client), "client")
    assert (step.provider, step.model) == ("groq", "llama-3.3-70b-versatile")


def test_a_run_journaled_before_the_host_labelling_replays_its_model_call(monkeypatch: pytest.MonkeyPatch):
    """The model call's input hash holds LangChain's own label (``openai`` for a ChatOpenAI), not
    the host's provider the trail now names: a run journaled when the trail said ``openai`` is
    retried after the upgrade without a divergence (was: `ReplayDivergenceError`, the run failed)."""
    import agentspan_langgraph._calls as calls

    made: list[int] = []

    class Counting(_ChatOpenAILike):
        def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> ChatResult:
            made.append(1)
            return super()._generate(messages, stop, run_manager, **kwargs)

    model = Counting(model_name="llama-3.3-70b-versatile", openai_api_base="https://api.groq.com/openai/v1")
    failing = [True]

    def chat(state: MessagesState) -> dict[str, Any]:
        reply = model.invoke(state["messages"])
        if failing[0]:  # fails after its model call: the node runs again on the retry
            raise RuntimeError("transient failure")
        return {"messages": [reply]}

    builder = StateGraph(MessagesState)
    builder.add_node("chat", chat)
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    graph = builder.compile(name="g")
    with monkeypatch.context() as before:
        before.setattr(calls, "_provider_of_base_url", lambda model: "openai")  # the labelling of old
        with pytest.raises(RuntimeError):
            agentspan.run(graph, {"messages": [HumanMessage("hi")]}, run_id="old")
    failing[0] = False
    result = agentspan.retry("old", graph).result(timeout=30)
    assert result["messages"][-1].content == "choice 0" and made == [1]  # replayed, not made again
