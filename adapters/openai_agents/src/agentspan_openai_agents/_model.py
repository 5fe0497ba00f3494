"""Model calls: a `Model` wrapper and a `ModelProvider` wrapper that route every model call of a
run through the Agentspan journal."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from typing import Any

from agents import Model, ModelProvider, ModelResponse, Usage
from agents.items import TResponseOutputItem
from agents.models import get_default_model
from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

import agentspan
from agentspan.models import OPENAI_COMPATIBLE_HOSTS, ModelId, explicit_model_id, parse_model_id, provider_of_host
from agentspan_openai_agents._stream import journaled_stream


@cache
def _adapters() -> tuple[TypeAdapter[list[TResponseOutputItem]], TypeAdapter[Usage]]:
    return TypeAdapter(list[TResponseOutputItem]), TypeAdapter(Usage)


def dump_response(response: ModelResponse) -> dict[str, Any]:
    """Serializes a `ModelResponse` to JSON (round-trips through `load_response`)."""
    output, usage = _adapters()
    return {
        "output": output.dump_python(response.output, mode="json", exclude_unset=True),
        "usage": usage.dump_python(response.usage, mode="json"),
        "response_id": response.response_id,
        "request_id": response.request_id,
        "raw_usage": response.raw_usage,
    }


def load_response(data: dict[str, Any]) -> ModelResponse:
    """Rebuilds the `ModelResponse` journaled by `dump_response`."""
    output, usage = _adapters()
    return ModelResponse(
        output=output.validate_python(data["output"]),
        usage=usage.validate_python(data["usage"]),
        response_id=data.get("response_id"),
        request_id=data.get("request_id"),
        raw_usage=data.get("raw_usage"),
    )


def add_nested_usage(run: agentspan.ActiveRun, key: str, usage: Usage) -> None:
    """Adds the usage of the model calls journaled under tool call ``key`` to ``usage``: an agent
    tool's run shares its caller's `Usage` (the SDK's ``Agent.as_tool``), so a replayed agent tool
    call, whose run is not made again, gives the caller what that run had added to it."""
    prefix = f"{key}/"
    _, usage_adapter = _adapters()
    for step in run.journal.values():
        if step.kind is agentspan.StepKind.LLM and step.status is agentspan.StepStatus.COMPLETED \
                and step.key.startswith(prefix) and isinstance(step.output, dict) and "usage" in step.output:
            usage.add(usage_adapter.validate_python(step.output["usage"]))


def _metrics(response: ModelResponse) -> agentspan.LlmMetrics:
    usage = response.usage
    if not usage.input_tokens and not usage.output_tokens and not usage.total_tokens:
        # no usage reported (a stream without ``include_usage``, a server that sends none: the SDK
        # then counts zeros): unknown, not a free call (a model reads one token at least)
        return _NO_USAGE
    details = usage.input_tokens_details  # (of input_tokens: OpenAI's and the SDK's count)
    return agentspan.LlmMetrics(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                cached_input_tokens=getattr(details, "cached_tokens", None),
                                cache_write_tokens=getattr(details, "cache_write_tokens", None))


def _metrics_thinking_apart(response: ModelResponse) -> agentspan.LlmMetrics:
    """`_metrics` of a provider whose OpenAI-compatible API leaves the model's thinking out of
    ``completion_tokens`` but not out of ``total_tokens`` (Gemini's, xAI's): billed as output.
    Only there: elsewhere a total above the two added up may hold input tokens (LiteLLM's Gemini
    leaves out the prompt of its grounding tools, billed as input)."""
    metrics = _metrics(response)
    usage = response.usage
    if metrics is not _NO_USAGE and usage.total_tokens > usage.input_tokens + usage.output_tokens:
        return dataclasses.replace(metrics, output_tokens=usage.total_tokens - usage.input_tokens)
    return metrics


_NO_USAGE = agentspan.LlmMetrics()
_THINKING_APART = frozenset({"google", "xai"})
"""Providers whose OpenAI-compatible API counts thinking in ``total_tokens`` only (`_metrics_thinking_apart`)."""


def model_identity(model: Model, name: str | None = None) -> ModelId:
    """Labels a model for the trail: ``provider/model``."""
    module = type(model).__module__
    openai_class = module.startswith("agents.models.openai")
    host = _provider_of_client(model) if openai_class else None
    if name is not None:  # resolved by name through a provider: the SDK's names default to OpenAI's API
        return _named(name, host or "openai")
    explicit = getattr(model, "agentspan_model_id", None)
    if isinstance(explicit, str):
        return explicit_model_id(explicit)  # the user's provider, whatever it is ("custom/local-llm")
    label = getattr(model, "model", None)
    default = host or ("litellm" if "litellm" in module else "custom")
    if isinstance(label, str):
        return _named(label, default)
    return ModelId(default, type(model).__name__)


def _named(name: str, provider: str) -> ModelId:
    """A model name as the provider it is sent to reads it: on another provider's OpenAI-compatible
    API a ``vendor/`` prefix is part of that provider's name for the model (Groq's
    ``openai/gpt-oss-120b``, OpenRouter's ``anthropic/claude-sonnet-4-5``: billed by Groq and
    OpenRouter); on OpenAI's own API, a local server or a class of another library, a known
    provider's prefix names the provider (``mistral/some-model``)."""
    if provider in _COMPATIBLE_PROVIDERS:
        return ModelId(provider, name)
    return parse_model_id(name, default_provider=provider)


_COMPATIBLE_PROVIDERS = frozenset({*OPENAI_COMPATIBLE_HOSTS.values(), "azure"})
"""Providers other than OpenAI an OpenAI model class's client reaches (`_provider_of_client`)."""


def _provider_of_client(model: Model) -> str:
    """The provider an OpenAI model class talks to, by its client's host (``openai`` otherwise,
    a local or unknown OpenAI-compatible server included)."""
    base_url = getattr(getattr(model, "_client", None), "base_url", None)
    return provider_of_host(str(getattr(base_url, "host", "") or ""))


_CALL_TYPES = ("function_call", "custom_tool_call", "shell_call", "local_shell_call", "apply_patch_call")
"""The output items that ask for a call this process makes (and journals)."""


def call_ids(response: ModelResponse) -> list[str | None]:
    """The call ids of the tool/handoff calls a response asked for, in order."""
    return [getattr(item, "call_id", None) or None for item in response.output
            if getattr(item, "type", None) in _CALL_TYPES]


class JournalingModel(Model):
    """Wraps a `Model`: each `get_response` becomes a journaled ``llm`` step of the active run."""

    def __init__(self, inner: Model, identity: ModelId, tracker: CallTracker) -> None:
        self.inner = inner
        self.identity = identity
        self.tracker = tracker
        openai_class = type(inner).__module__.startswith("agents.models.openai")
        self._metrics = _metrics_thinking_apart if openai_class and _provider_of_client(inner) in _THINKING_APART \
            else _metrics

    async def get_response(self, system_instructions: str | None, input: Any, model_settings: Any,
                           tools: list[Any], output_schema: Any, handoffs: list[Any], tracing: Any, *,
                           previous_response_id: str | None = None, conversation_id: str | None = None,
                           prompt: Any = None) -> ModelResponse:
        async def invoke() -> ModelResponse:
            return await self.inner.get_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
                previous_response_id=previous_response_id, conversation_id=conversation_id, prompt=prompt)

        run = agentspan.active_run()
        if run is None:
            return await invoke()
        self.tracker.answered = None
        key, step_input, input_hash = self._request(run, system_instructions, input, tools, output_schema, handoffs)
        try:
            response = await self._journal(run, key, step_input, input_hash, invoke)
        except Exception:
            run.model_call_failed(key)  # the SDK's retry of this call is this step's next attempt
            raise
        self._responded(run, key, response)
        return response

    async def stream_response(self, system_instructions: str | None, input: Any, model_settings: Any,
                              tools: list[Any], output_schema: Any, handoffs: list[Any], tracing: Any, *,
                              previous_response_id: str | None = None, conversation_id: str | None = None,
                              prompt: Any = None) -> AsyncIterator[Any]:
        """The wrapped model's stream, journaled as one ``llm`` step (`agentspan_openai_agents._stream`)."""
        def open_stream() -> AsyncIterator[Any]:
            return self.inner.stream_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
                previous_response_id=previous_response_id, conversation_id=conversation_id, prompt=prompt)

        run = agentspan.active_run()
        if run is None:
            async for event in open_stream():
                yield event
            return
        self.tracker.answered = None
        key, step_input, input_hash = self._request(run, system_instructions, input, tools, output_schema, handoffs)
        journal = functools.partial(self._journal, run, key, step_input, input_hash)
        try:
            async for event in journaled_stream(key, open_stream, journal, self.identity.model,
                                                functools.partial(self._responded, run, key)):
                yield event
        except Exception:
            run.model_call_failed(key)
            raise

    def _request(self, run: agentspan.ActiveRun, system_instructions: str | None, input: Any, tools: list[Any],
                 output_schema: Any, handoffs: list[Any]) -> tuple[str, dict[str, Any], str]:
        """The next model call's key, its journaled input and the input's chained hash."""
        key = run.llm_key()
        items = [{"role": "user", "content": input}] if isinstance(input, str) else input
        extra = {
            "system": system_instructions,
            "tools": [getattr(t, "name", type(t).__name__) for t in tools],
            "handoffs": [h.tool_name for h in handoffs],
            "output": output_schema.name() if output_schema is not None else None,
        }
        new_items, input_hash = run.conversation_hash(items, to_jsonable_python, extra)
        return key, {"system": system_instructions, "new_items": new_items}, input_hash

    def _journal(self, run: agentspan.ActiveRun, key: str, step_input: dict[str, Any], input_hash: str,
                 invoke: Callable[[], Awaitable[ModelResponse]]) -> Awaitable[ModelResponse]:
        """``run.step`` of the model call ``key``: replayed from the journal, or ``invoke`` live."""
        return run.step(
            kind=agentspan.StepKind.LLM, key=key, name=self.identity.model, input=step_input,
            input_hash=input_hash, invoke=invoke, dump=dump_response, load=load_response,
            provider=self.identity.provider, model=self.identity.model, metrics=self._metrics)

    def _responded(self, run: agentspan.ActiveRun, key: str, response: ModelResponse) -> None:
        run.register_calls(key, call_ids(response))
        self.tracker.responded(key)


def _scope_of(key: str) -> str:
    """The scope prefix of a model-call key: ``llm:0/call:t1/`` of ``llm:0/call:t1/llm:3`` (the
    call's own ``llm:<n>`` is always the key's last part)."""
    return key[:key.rindex("llm:")]


class CallTracker:
    """Per-attempt translation state: the key of the last model call that answered in each key
    scope (`last_llm_key`: handoffs hang off it), and the key of the last model call that answered
    anywhere while no model call has begun since (``answered``: the answer an SDK error raised
    after it refused, not a call that failed itself)."""

    answered: str | None = None

    def __init__(self) -> None:
        # by scope prefix ("" for the run's own calls): an agent tool's run (or a guardrail's
        # judge) answers in a scope of its own, between its caller's response and that
        # response's handoff, and only on the attempts that do not replay it whole
        self._last_in_scope: dict[str, str] = {}

    def responded(self, key: str) -> None:
        """Notes that a model call answered (live or from the journal).

        Args:
            key: The call's step key.
        """
        self._last_in_scope[_scope_of(key)] = key
        self.answered = key

    def last_llm_key(self, run: agentspan.ActiveRun) -> str:
        """The key of the last model call that answered in the current scope: the response the
        handoff (or the ``on_llm_end`` hook) now running is about, as the agent loop of one scope
        makes its model calls one after another. A nested run's calls, made in scopes of their
        own, whatever their order and whether or not they are made again on this attempt, do not
        change it.

        Args:
            run: The active run, whose current scope (the context's) is asked about.

        Returns:
            The key, or ``<scope>llm:?`` when no model call has answered in that scope.
        """
        scope = _scope_of(run.peek_llm_key())
        return self._last_in_scope.get(scope, f"{scope}llm:?")


class JournalingProvider(ModelProvider):
    """Wraps a `ModelProvider` so that every model it resolves is a `JournalingModel`."""

    def __init__(self, inner: ModelProvider, tracker: CallTracker) -> None:
        self.inner = inner
        self.tracker = tracker

    def get_model(self, model_name: str | None) -> Model:
        model = self.inner.get_model(model_name)
        if isinstance(model, JournalingModel):
            return model
        return JournalingModel(model, model_identity(model, model_name or get_default_model()), self.tracker)

    async def aclose(self) -> None:
        await self.inner.aclose()
