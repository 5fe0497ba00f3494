"""Journaling one model call (`BaseChatModel`) or tool call (`BaseTool`) made inside a graph.

A replayed model call returns a real `ChatResult` holding the `AIMessage` recorded live (same
content, tool calls, usage and id), revived from langchain-core's JSON; a replayed tool call
returns the recorded `ToolMessage` (or `Command`, or plain value). The framework cannot tell a
replay from a live call, so the state a node builds is identical either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

import agentspan
from agentspan.hashing import digest
from agentspan.models import parse_model_id, provider_of_host
from agentspan.tools import DEFAULT_TOOL_OPTIONS, ToolOptions, tool_options
from agentspan_langgraph._codec import from_json, to_exact_json, to_json
from agentspan_langgraph._context import Invocation
from agentspan_langgraph._interrupts import task_interrupts

_PROVIDERS = {
    "google_genai": "google", "google_vertexai": "google", "google_anthropic_vertex": "anthropic",
    "mistralai": "mistral", "azure_openai": "azure", "amazon_bedrock": "bedrock", "bedrock_converse": "bedrock",
}
"""LangChain's ``ls_provider`` names where they differ from Agentspan's ``provider/model`` prefixes."""


# ---- model calls -------------------------------------------------------------------------
def model_identity(model: BaseChatModel, stop: list[str] | None, kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """Labels a chat model as ``(provider, model)`` from LangChain's tracing params: what a model
    call's input hash holds (unchanged since runs were first journaled); the trail's provider is
    `billed_by`'s."""
    try:
        params: Mapping[str, Any] = model._get_ls_params(stop=stop, **kwargs)
    except Exception:  # a model whose tracing params cannot be computed still gets journaled
        params = {}
    name = params.get("ls_model_name") or getattr(model, "model_name", None) or getattr(model, "model", None)
    provider = params.get("ls_provider")
    if not isinstance(name, str) or not name:
        name = type(model).__name__
    if isinstance(provider, str) and provider:
        return _PROVIDERS.get(provider, provider), name
    return parse_model_id(name, default_provider="custom")


def billed_by(model: BaseChatModel, provider: str) -> str:
    """The provider the trail names for a call of ``model``, which LangChain labels ``provider``.

    An OpenAI chat model (``ChatOpenAI``) pointed at another provider's OpenAI-compatible API by
    its ``base_url`` is labelled with that provider, which bills the call; a ``vendor/`` prefix is
    then part of that provider's name for the model (OpenRouter's ``anthropic/claude-sonnet-4-5``,
    Groq's ``openai/gpt-oss-120b``).
    """
    return _provider_of_base_url(model) if provider == "openai" else provider


def _provider_of_base_url(model: BaseChatModel) -> str:
    """The provider an OpenAI chat model talks to, by its base URL's host (``openai`` otherwise, a
    local or unknown OpenAI-compatible server included)."""
    host = ""
    try:
        # ``ChatOpenAI(base_url=...)`` keeps it as ``openai_api_base``; else its OpenAI client's
        # (``root_client``, or the chat completions resource's ``_client``) says where it goes
        base_url = getattr(model, "openai_api_base", None)
        if isinstance(base_url, str) and base_url:
            host = urlsplit(base_url if "//" in base_url else f"//{base_url}").hostname or ""
        else:
            client = getattr(model, "root_client", None) or getattr(getattr(model, "client", None), "_client", None)
            host = str(getattr(getattr(client, "base_url", None), "host", "") or "")
    except Exception:  # a model whose URL cannot be read is labelled as it says (openai)
        host = ""
    return provider_of_host(host)


def dump_chat_result(result: ChatResult) -> dict[str, Any]:
    """Serializes a `ChatResult` to JSON (round-trips through `load_chat_result`)."""
    return {
        "generations": [{"message": to_exact_json(g.message), "generation_info": to_exact_json(g.generation_info)}
                        for g in result.generations],
        "llm_output": to_exact_json(result.llm_output),
    }


def load_chat_result(data: dict[str, Any]) -> ChatResult:
    """Rebuilds the `ChatResult` journaled by `dump_chat_result`."""
    return ChatResult(
        generations=[ChatGeneration(message=from_json(g["message"]), generation_info=from_json(g["generation_info"]))
                     for g in data["generations"]],
        llm_output=from_json(data.get("llm_output")),
    )


_CACHE_LIFETIMES = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
"""The ``input_token_details`` keys langchain-anthropic counts prompt-cache writes under by their
lifetime (the others count them all under ``cache_creation``)."""


def _usage(result: ChatResult) -> agentspan.LlmMetrics:
    """The call's usage: one response, billed once, however many choices (``n``) it holds."""
    inputs = outputs = cache_reads = cache_writes = cache_writes_1h = None
    model = None
    for generation in result.generations:
        model = model or (generation.message.response_metadata or {}).get("model_name")
    for usage in _response_usages(result):
        inputs = (inputs or 0) + int(usage.get("input_tokens") or 0)
        outputs = (outputs or 0) + int(usage.get("output_tokens") or 0)
        # LangChain counts the prompt cache's reads and writes in input_tokens (its details say how many)
        details = usage.get("input_token_details") or {}
        if details.get("cache_read") is not None:
            cache_reads = (cache_reads or 0) + int(details["cache_read"] or 0)
        # Writes by lifetime when reported so (langchain-anthropic: ephemeral_5m/1h_input_tokens;
        # its cache_creation is 0 then in recent versions, their total in older ones: not added
        # to them), else cache_creation; the 1-hour ones are billed at their own, higher price.
        by_lifetime = [details.get(k) for k in _CACHE_LIFETIMES]
        if any(count is not None for count in by_lifetime):
            cache_writes = (cache_writes or 0) + sum(int(count or 0) for count in by_lifetime)
        elif details.get("cache_creation") is not None:
            cache_writes = (cache_writes or 0) + int(details["cache_creation"] or 0)
        if details.get("ephemeral_1h_input_tokens") is not None:
            cache_writes_1h = (cache_writes_1h or 0) + int(details["ephemeral_1h_input_tokens"] or 0)
    return agentspan.LlmMetrics(input_tokens=inputs, output_tokens=outputs, model=model,
                                cached_input_tokens=cache_reads, cache_write_tokens=cache_writes,
                                cache_write_1h_tokens=cache_writes_1h)


def _response_usages(result: ChatResult) -> list[Mapping[str, Any]]:
    """The usages (LangChain's ``usage_metadata`` shape) to add up for a response.

    A response with several choices (``ChatOpenAI(n=2)``, Gemini's ``candidate_count``) is one
    call, billed once, but langchain-openai and langchain-google-genai attach the whole response's
    usage to every choice's message: the same usage on every choice is counted once. Usages that
    differ were reported per choice, and add up, unless the response's own usage is in
    ``llm_output["token_usage"]`` (OpenAI's format, which langchain-openai and the integrations
    built on it keep there): that one is then the call's."""
    usages: list[Mapping[str, Any]] = [
        usage for g in result.generations if (usage := getattr(g.message, "usage_metadata", None))]
    if all(usage is usages[0] or usage == usages[0] for usage in usages[1:]):
        return usages[:1]
    token_usage = (result.llm_output or {}).get("token_usage")
    if isinstance(token_usage, Mapping):
        inputs, outputs = token_usage.get("prompt_tokens"), token_usage.get("completion_tokens")
        if isinstance(inputs, int) and isinstance(outputs, int):
            details = token_usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
            read = {"cache_read": cached} if isinstance(cached, int) else {}
            return [{"input_tokens": inputs, "output_tokens": outputs, "input_token_details": read}]
    return usages


def _message_content(message: BaseMessage) -> Any:
    """What identifies a message for the divergence check: everything but its bookkeeping id."""
    return to_jsonable_python(message.model_dump(exclude={"id"}), fallback=_type_name)


def _type_name(value: Any) -> str:
    return type(value).__qualname__


def _call_options(kwargs: Mapping[str, Any]) -> Any:
    """The call's keyword options (bound tools, tool choice, ...) as stable JSON."""
    return to_jsonable_python(
        {k: (v.model_json_schema() if isinstance(v, type) and issubclass(v, BaseModel) else v)
         for k, v in sorted(kwargs.items())},
        fallback=_type_name)


async def journal_model_call(
    invocation: Invocation, model: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None,
    metadata: Mapping[str, Any] | None, kwargs: Mapping[str, Any], live: Callable[[], Awaitable[ChatResult]],
) -> ChatResult:
    """Replays the model call from the journal, or makes it live and journals it as an ``llm`` step."""
    run = invocation.run
    scope = invocation.scope(metadata)
    key = f"{scope}/llm:{invocation.next_index(scope, 'llm')}"
    provider, name = model_identity(model, stop, kwargs)
    # LangChain's own label is hashed (a run journaled before the trail named the host's provider
    # must not diverge on it); the trail names the provider that bills the call
    input_hash = digest([provider, name, stop, _call_options(kwargs),
                         [invocation.digest_of(m, _message_content) for m in messages]])
    provider = billed_by(model, provider)
    last_ai = max((i for i, m in enumerate(messages) if isinstance(m, AIMessage)), default=-1)
    step_input = {"messages": len(messages), "new": to_json(messages[last_ai + 1:])}
    if stop:
        step_input["stop"] = list(stop)
    return await run.step(kind=agentspan.StepKind.LLM, key=key, name=name, input=step_input, input_hash=input_hash,
                          invoke=live, dump=dump_chat_result, load=load_chat_result, provider=provider,
                          model=name, metrics=_usage)


# ---- tool calls --------------------------------------------------------------------------
def options_of(tool: BaseTool) -> ToolOptions:
    """The ``@agentspan.tool`` options of a LangChain tool (set on the tool or on its function)."""
    for holder in (tool, getattr(tool, "func", None), getattr(tool, "coroutine", None)):
        found = tool_options(holder) if holder is not None else None
        if found is not None:
            return found
    return DEFAULT_TOOL_OPTIONS


def tool_args(tool: BaseTool, tool_input: Any) -> Any:
    """The arguments the model gave a tool, as JSON (values LangGraph injects, like the state, left out)."""
    if isinstance(tool_input, dict):
        try:
            schema = tool.tool_call_schema
        except Exception:  # a tool whose schema cannot be built: journal every argument
            schema = None
        fields = getattr(schema, "model_fields", None)
        if fields is None and isinstance(schema, dict):
            fields = schema.get("properties")
        if fields is not None:
            tool_input = {k: v for k, v in tool_input.items() if k in fields}
    return to_json(tool_input)


async def journal_tool_call(
    invocation: Invocation, tool: BaseTool, tool_input: Any, tool_call_id: str | None,
    metadata: Mapping[str, Any] | None, live: Callable[[], Awaitable[Any]],
) -> Any:
    """Replays the tool call from the journal, or runs it live (after an approval if the tool asks
    for one) and journals it as a ``tool`` step; returns what ``BaseTool.run`` returns."""
    run = invocation.run
    scope = invocation.scope(metadata)
    key = f"{scope}/call:{tool_call_id}" if tool_call_id else f"{scope}/tool:{invocation.next_index(scope, 'tool')}"
    interrupts = task_interrupts()  # the task's interrupt() count: a replayed call passes over its own
    ran = False

    async def invoke() -> Any:
        nonlocal ran
        ran = True
        return await (live() if interrupts is None else interrupts.counting(run, key, live)())

    output = await run.tool(key=key, name=tool.name, args=tool_args(tool, tool_input), invoke=invoke,
                            options=options_of(tool), dump=to_exact_json, call_id=tool_call_id)
    if not ran and interrupts is not None:
        interrupts.passed_over(run, key)
    result = from_json(output)
    if tool_call_id and isinstance(result, str):
        # A rejected approval: the model is told, as the tool's answer to its call.
        return ToolMessage(result, tool_call_id=tool_call_id, name=tool.name, status="error")
    return result
