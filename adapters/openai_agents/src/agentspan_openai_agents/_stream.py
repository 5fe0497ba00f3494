"""Streamed model calls (``Model.stream_response``) as journaled ``llm`` steps.

A live call passes the model's stream events through as they come; its ``response.completed``
event is held back until the call's `ModelResponse` is journaled, so an event the SDK acted on
is always in the journal. A call served from the journal yields one ``response.completed``
event rebuilt from the recorded response (the SDK takes the turn's response from that event).
Both kinds carry the step's key (`JournaledResponseCompleted`), which lets a streamed run
deliver each model call's final event once however often the run is executed again.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any

from agents import AgentUpdatedStreamEvent, ModelResponse, RawResponsesStreamEvent, RunItemStreamEvent, Usage
from agents.exceptions import ModelBehaviorError
from agents.models._response_terminal import response_error_event_failure_error, response_terminal_failure_error
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseOutputItemDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from pydantic_core import to_jsonable_python

from agentspan import jsontext
from agentspan.events import StepValue, journaled_events


class JournaledResponseCompleted(ResponseCompletedEvent):
    """A ``response.completed`` event of a journaled model call; ``step_key`` names the call."""

    step_key: str


def _no_input_details() -> InputTokensDetails:
    """Input-token details of a response that reported none (a compatible server's ``null``):
    zeros, built unvalidated (openai's newer versions require ``cache_write_tokens`` too, older
    ones have no such field)."""
    return InputTokensDetails.model_construct(cached_tokens=0, cache_write_tokens=0)


def response_of(response: ModelResponse, model: str) -> Response:
    """The Responses-API `Response` a stream ends with, built from a `ModelResponse`."""
    usage = response.usage
    return Response.model_construct(
        id=response.response_id, created_at=0.0, model=model, object="response", output=list(response.output),
        parallel_tool_calls=True, tool_choice="auto", tools=[], status="completed",
        usage=ResponseUsage.model_construct(
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, total_tokens=usage.total_tokens,
            input_tokens_details=usage.input_tokens_details or _no_input_details(),
            output_tokens_details=usage.output_tokens_details or OutputTokensDetails(reasoning_tokens=0)))


def model_response_of(response: Response, streamed_items: list[Any]) -> ModelResponse:
    """The `ModelResponse` the SDK makes of a stream's final `Response` (journaled for the call).

    As the SDK does: a final response without output items takes the items of the stream's
    ``response.output_item.done`` events.
    """
    raw = response.usage
    usage = Usage(requests=1, input_tokens=raw.input_tokens, output_tokens=raw.output_tokens,
                  total_tokens=raw.total_tokens,
                  input_tokens_details=raw.input_tokens_details or _no_input_details(),
                  output_tokens_details=raw.output_tokens_details or OutputTokensDetails(reasoning_tokens=0),
                  ) if raw is not None else Usage()
    return ModelResponse(output=list(response.output) or list(streamed_items), usage=usage,
                         response_id=response.id, request_id=getattr(response, "_request_id", None))


_FAILED = frozenset({"response.failed", "response.incomplete", "error", "response.error"})
"""The events that end a stream as a failed call: the SDK's run raises on them."""


def _failure(kind: str, event: Any) -> ModelBehaviorError:
    """The error the SDK's streamed run raises on a failed stream's last event (raised here, in
    the call, the call is journaled failed with it, as the same failure of an unstreamed call is;
    raised by the SDK after the event, the call would be cut off unjournaled)."""
    if kind in ("error", "response.error"):
        return response_error_event_failure_error(kind, event)
    response = getattr(event, "response", None)
    return response_terminal_failure_error(kind, response if isinstance(response, Response) else None)


def _completed(key: str, event: ResponseCompletedEvent) -> JournaledResponseCompleted:
    return JournaledResponseCompleted.model_construct(
        response=event.response, sequence_number=event.sequence_number, type="response.completed", step_key=key)


async def journaled_stream(key: str, open_stream: Callable[[], AsyncIterator[Any]],
                           journal: Callable[[Callable[[], Awaitable[ModelResponse]]], Awaitable[ModelResponse]],
                           model: str, on_response: Callable[[ModelResponse], None]) -> AsyncIterator[Any]:
    """The events of one streamed model call of the active run, journaled as step ``key``
    (`agentspan.events.journaled_events`, with the final event kept back until it is journaled).

    Args:
        key: The call's step key.
        open_stream: Opens the wrapped model's own stream (called only for a live call).
        journal: ``run.step(...)`` of this call with the given ``invoke`` (awaitable).
        model: The model name put on a rebuilt final response.
        on_response: Called with the journaled or replayed response before its final event.
    """
    final: list[ResponseCompletedEvent] = []

    async def produce(emit: Callable[[Any], None]) -> ModelResponse:
        items: list[Any] = []
        async with contextlib.aclosing(open_stream()) as stream:  # type: ignore[type-var]
            async for event in stream:
                kind = getattr(event, "type", None)
                if kind in _FAILED:  # the call failed: journaled so, with the error the SDK raises for it
                    raise _failure(kind, event)
                if isinstance(event, ResponseCompletedEvent):
                    final.append(event)
                    continue
                if isinstance(event, ResponseOutputItemDoneEvent):
                    items.append(event.item)
                emit(event)
        if not final:
            raise ModelBehaviorError("Model did not produce a final response!")
        return model_response_of(final[-1].response, items)

    async with contextlib.aclosing(journaled_events(journal, produce)) as events:
        async for event in events:
            if isinstance(event, StepValue):
                response: ModelResponse = event.value
            else:
                yield event
    on_response(response)
    if final:  # the live call's own final event, now journaled
        yield _completed(key, final[-1])
    else:  # served from the journal
        rebuilt = response_of(response, model)
        yield _completed(key, ResponseCompletedEvent.model_construct(response=rebuilt, sequence_number=0))


def event_key(event: Any, seen: Counter[Hashable]) -> Hashable | None:
    """Names one event of a streamed run the same way in every execution of the run.

    A model call's final event is named by its step key, an item event by its name, the item's
    call id or id (its JSON without either) and how many such events came before it in this
    execution, an agent switch by the agent's name and count. Model deltas are not named: they
    come only from live calls, each once.

    Args:
        event: An event of ``RunResultStreaming.stream_events()``.
        seen: Counts of the names so far in this execution (updated).
    """
    if isinstance(event, RawResponsesStreamEvent):
        data = event.data
        return ("llm", data.step_key) if isinstance(data, JournaledResponseCompleted) else None
    if isinstance(event, RunItemStreamEvent):
        raw = event.item.raw_item
        get = raw.get if isinstance(raw, dict) else lambda name: getattr(raw, name, None)
        identity = get("call_id") or get("id") or jsontext.canonical(to_jsonable_python(raw, fallback=str))
        base: tuple[Hashable, ...] = ("item", event.name, identity)
    elif isinstance(event, AgentUpdatedStreamEvent):
        base = ("agent", event.new_agent.name)
    else:
        return None
    seen[base] += 1
    return (*base, seen[base])
