"""Offline models for tests and demos: a scripted `Model` that needs no provider or network."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents import Model, ModelResponse, Usage
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
)
from pydantic import BaseModel

import agentspan
from agentspan_openai_agents._stream import response_of


@dataclass(frozen=True)
class ToolCall:
    """A tool (or handoff) call the scripted model asks for.

    ``call_id`` defaults to ``call_<turn>_<n>`` (the model's turn, the call's place in it): give
    explicit ids when two scripted models of one run (a handoff, an agent tool) call tools in
    turns of the same number, as the SDK refuses a call id it has seen completed.
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None


Turn = str | ToolCall | BaseModel | Sequence[str | ToolCall | BaseModel]
"""One model response: a final text, one tool call, or several outputs (parallel tool calls). A
pydantic model is a Responses API output item given as it is (e.g. a ``shell_call``)."""


def build_response(index: int, parts: Sequence[str | ToolCall | BaseModel], *, input_tokens: int,
                   output_tokens: int) -> ModelResponse:
    """Builds a `ModelResponse` with texts and function calls, as a provider would return it.

    Args:
        index: Makes the item ids and default call ids (``call_<index>_<n>``) unique.
        parts: Texts (message outputs), tool calls and output items given as they are, in order.
        input_tokens: Usage to report.
        output_tokens: Usage to report.
    """
    output: list[Any] = []
    for n, part in enumerate(parts):
        if isinstance(part, ToolCall):
            output.append(ResponseFunctionToolCall(
                arguments=json.dumps(part.args), call_id=part.call_id or f"call_{index}_{n}",
                name=part.name, type="function_call", id=f"fc_{index}_{n}", status="completed"))
        elif isinstance(part, BaseModel):
            output.append(part)
        else:
            output.append(ResponseOutputMessage(
                id=f"msg_{index}_{n}", role="assistant", status="completed", type="message",
                content=[ResponseOutputText(annotations=[], text=part, type="output_text")]))
    usage = Usage(requests=1, input_tokens=input_tokens, output_tokens=output_tokens,
                  total_tokens=input_tokens + output_tokens)
    return ModelResponse(output=output, usage=usage, response_id=None)


class ScriptedModel(Model):
    """Answers model calls from a script, one turn per call.

    Inside a durable run the turn is chosen by the journal (how many calls to a model of this
    name precede this one), so a resumed run's first live call gets the right turn after
    replayed ones; elsewhere an internal counter is used. So each durable run starts at the first
    turn, also a conversation's next turn (``agentspan.run(result.last_agent,
    result.to_input_list() + [...])``), where plain runs of the same model go on through the
    script: give each turn of a conversation a model of its own.

    Args:
        turns: The responses, in order.
        name: The model name recorded in the trail.
        latency: Seconds each call sleeps (to make a crash window in demos).
        on_call: Called with the turn index before each live call (counting side effects).
    """

    agentspan_model_id: str

    def __init__(self, turns: Sequence[Turn], *, name: str = "scripted", latency: float = 0.0,
                 on_call: Callable[[int], None] | None = None) -> None:
        self.turns = list(turns)
        self.agentspan_model_id = f"scripted/{name}"
        self.latency = latency
        self.on_call = on_call
        self.calls = 0
        self._last_index: dict[str, tuple[int, int]] = {}  # run id -> (seq, index) of the last call

    def _index(self) -> int:
        """This call's turn: the count of earlier journaled calls to a model of the same name."""
        step, run = agentspan.current_step(), agentspan.active_run()
        if step is None or run is None or step.kind != "llm":
            return self.calls
        current = run.journal[step.key]
        cached = self._last_index.get(run.run_id)
        start_seq, count = cached if cached is not None and cached[0] < current.seq else (-1, 0)
        for s in reversed(run.journal.values()):  # the journal is in seq order: scan back to the cache
            if s.seq <= start_seq:
                break
            if s.kind is agentspan.StepKind.LLM and s.name == current.name and s.seq < current.seq:
                count += 1
        if cached is not None and cached[0] < current.seq:
            count += 1  # the cached step itself is an earlier call to this model
        self._last_index[run.run_id] = (current.seq, count)
        return count

    def response(self, index: int) -> ModelResponse:
        """Builds the `ModelResponse` of turn ``index``."""
        if index >= len(self.turns):
            raise IndexError(f"ScriptedModel has {len(self.turns)} turns; call {index + 1} has no script")
        turn = self.turns[index]
        parts = [turn] if isinstance(turn, (str, ToolCall, BaseModel)) else list(turn)
        return build_response(index, parts, input_tokens=100 + 10 * index, output_tokens=20)

    async def get_response(self, system_instructions: str | None, input: Any, model_settings: Any,
                           tools: list[Any], output_schema: Any, handoffs: list[Any], tracing: Any, *,
                           previous_response_id: str | None = None, conversation_id: str | None = None,
                           prompt: Any = None) -> ModelResponse:
        return await self._answer()

    async def stream_response(self, system_instructions: str | None, input: Any, model_settings: Any,
                              tools: list[Any], output_schema: Any, handoffs: list[Any], tracing: Any, *,
                              previous_response_id: str | None = None, conversation_id: str | None = None,
                              prompt: Any = None) -> AsyncIterator[Any]:
        """Streams the turn as the Responses API would: each message's text word by word
        (``response.output_text.delta``), a ``response.output_item.done`` per output item, then
        ``response.completed``."""
        response = await self._answer()
        for event in stream_events(response, self.agentspan_model_id):
            yield event

    async def _answer(self) -> ModelResponse:
        index = self._index()
        self.calls += 1
        if self.on_call is not None:
            self.on_call(index)
        if self.latency:
            await asyncio.sleep(self.latency)
        return self.response(index)


def stream_events(response: ModelResponse, model: str) -> list[Any]:
    """The Responses-API stream events of ``response``: text deltas, items done, completed."""
    events: list[Any] = []
    for index, item in enumerate(response.output):
        if isinstance(item, ResponseOutputMessage):
            for part in item.content:
                for word in re.findall(r"\S+\s*", getattr(part, "text", "")):
                    events.append(ResponseTextDeltaEvent(
                        content_index=0, delta=word, item_id=item.id, logprobs=[], output_index=index,
                        sequence_number=len(events), type="response.output_text.delta"))
        events.append(ResponseOutputItemDoneEvent(item=item, output_index=index, sequence_number=len(events),
                                                  type="response.output_item.done"))
    events.append(ResponseCompletedEvent(response=response_of(response, model), sequence_number=len(events),
                                         type="response.completed"))
    return events
