"""Offline models for tests, demos and benchmarks: a scripted ADK `BaseLlm` that needs no provider.

``ScriptedLlm(turns=[Call("lookup", {"order_id": "42"}), "Done."])`` answers the first model call
of its agent with a function call and the second with a final text. Each response carries
``usage_metadata`` (prompt ``100 + 10 * turn`` tokens, ``20`` candidate tokens), so token
accounting can be asserted.

Which turn answers a call is read off the request, not off a counter: it is the number of the
agent's own earlier model turns (``role="model"`` contents) in ``llm_request.contents``. The
same conversation therefore always gets the same answer: in a run replayed after a crash, in a
new process, and in a session that goes on over several invocations (the script then covers the
whole session). ``calls`` counts the calls this instance actually answered (live calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.adk.models import BaseLlm, LlmCapabilities, LlmRequest, LlmResponse
from google.genai import types
from pydantic import ConfigDict, Field

__all__ = ["Call", "ScriptedLlm", "Turn", "usage"]


@dataclass(frozen=True)
class Call:
    """A function call the scripted model asks for.

    Attributes:
        name: The tool (or ``transfer_to_agent``) to call.
        args: The call's arguments.
        id: The call id the model gives; None leaves it to ADK (which then makes up an
            ``adk-<uuid>`` id, different on every execution, as for providers that give none).
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


Turn = str | Call | LlmResponse | Sequence[str | Call]
"""One model response: a final text, one function call, a ready-made `LlmResponse`, or a list of
texts and calls (several calls in one response are ADK's parallel function calls)."""


def usage(index: int) -> types.GenerateContentResponseUsageMetadata:
    """The usage a scripted response of turn ``index`` reports."""
    prompt = 100 + 10 * index
    return types.GenerateContentResponseUsageMetadata(
        prompt_token_count=prompt, candidates_token_count=20, total_token_count=prompt + 20)


class ScriptedLlm(BaseLlm):
    """A `BaseLlm` answering from a script, one turn per model call (see the module docstring).

    Attributes:
        model: The model name (labels the trail; ``"scripted"`` by default).
        turns: The responses, in order.
        latency: Seconds each call waits before answering (a window to crash in).
        on_call: Called with the turn index before each live call (to count calls across
            processes, or to kill the process mid-call in crash tests).
        calls: How many calls this instance answered.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str = "scripted"
    turns: list[Any] = Field(default_factory=list)
    latency: float = 0.0
    on_call: Callable[[int], None] | None = Field(default=None, exclude=True)
    calls: int = 0

    @property
    def capabilities(self) -> LlmCapabilities:
        return LlmCapabilities(output_schema_and_tools=True)

    def turn_index(self, llm_request: LlmRequest) -> int:
        """The turn answering ``llm_request``: how many model turns its conversation already has."""
        return sum(1 for content in llm_request.contents if content.role == "model")

    def response(self, index: int) -> LlmResponse:
        """Builds the `LlmResponse` of turn ``index``.

        Raises:
            IndexError: The script has no turn ``index``.
        """
        if index >= len(self.turns):
            raise IndexError(f"ScriptedLlm {self.model!r} has {len(self.turns)} turns; call {index + 1} has no script")
        turn = self.turns[index]
        if isinstance(turn, LlmResponse):
            return turn.model_copy(deep=True)
        parts: list[types.Part] = []
        for item in [turn] if isinstance(turn, (str, Call)) else list(turn):
            if isinstance(item, Call):
                parts.append(types.Part(function_call=types.FunctionCall(
                    name=item.name, args=dict(item.args), id=item.id)))
            else:
                parts.append(types.Part(text=str(item)))
        return LlmResponse(content=types.Content(role="model", parts=parts), usage_metadata=usage(index),
                           model_version=self.model, finish_reason=types.FinishReason.STOP)

    async def generate_content_async(self, llm_request: LlmRequest,
                                     stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
        index = self.turn_index(llm_request)
        self.calls += 1
        if self.on_call is not None:
            self.on_call(index)
        if self.latency:
            await asyncio.sleep(self.latency)
        yield self.response(index)
