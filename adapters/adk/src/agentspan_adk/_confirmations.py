"""ADK tool confirmations as Agentspan approvals.

A ``FunctionTool(..., require_confirmation=True)``, or a tool calling
``tool_context.request_confirmation()``, makes ADK pause the invocation with an
``adk_request_confirmation`` function call: ``{"originalFunctionCall": {id, name, args},
"toolConfirmation": {hint, confirmed, payload}}``. Each such request becomes one Agentspan
approval:

- ``step_key``: the journal key of the original call plus ``/approval``
  (``support/llm:0/call:0/approval``), never ADK's random call ids;
- ``tool`` and ``args``: the original call's name and arguments (the decision is bound to them);
- it is decided from any process (``handle.approve()``, ``agentspan approve ID``, the web UI).

The decision goes back into ADK the way ADK expects it, as the ``adk_request_confirmation``
function response ``{"confirmed": <bool>, "payload": <decision>}``; ``payload`` is
``{"approved", "status", "by", "reason", "approval_id"}`` (a tool calling
``request_confirmation()`` reads it from ``tool_context.tool_confirmation.payload``). ADK then
runs the original call (or answers the model that it was rejected). Each decision delivered is
journaled as an ``approval`` step with the same key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.adk.agents.invocation_context import InvocationContext
from google.adk.events import Event
from google.genai import types

import agentspan
from agentspan import approvals
from agentspan.records import JSON
from agentspan.tools import ToolOptions
from agentspan_adk._journal import Journal
from agentspan_adk._reading import to_json

REQUEST = "adk_request_confirmation"


@dataclass(frozen=True)
class Request:
    """One pending ``adk_request_confirmation`` call."""

    call: types.FunctionCall
    author: str
    branch: str | None

    @property
    def original(self) -> dict[str, Any]:
        args = self.call.args or {}
        original = args.get("originalFunctionCall") or {}
        return original if isinstance(original, dict) else {}

    @property
    def tool(self) -> str:
        return str(self.original.get("name") or "?")

    @property
    def args(self) -> JSON:
        return to_json(self.original.get("args") or {})


def pending_requests(events: Iterable[Event]) -> list[Request]:
    """The confirmation requests among ``events`` that no function response answered yet."""
    requests: dict[str, Request] = {}
    for event in events:  # (reads each event's parts in place: get_function_calls/responses copy)
        content = event.content
        parts = content.parts if content is not None else None
        if not parts:
            continue
        for part in parts:
            call = part.function_call
            if call is not None and call.name == REQUEST and call.id:
                requests[call.id] = Request(call, event.author, event.branch)
        for part in parts:
            response = part.function_response
            if response is not None and response.name == REQUEST and response.id:
                requests.pop(response.id, None)
    return list(requests.values())


def acted_on_before(events: Sequence[Event], message: types.Content) -> bool:
    """Whether ``message`` answers only confirmations that were answered, and whose tools then ran,
    earlier among ``events`` (one invocation's): an answer sent again after a process died while
    the invocation went on. ADK ends an invocation at such an answer (it ignores a confirmation it
    acted on already), so the invocation would end without its final answer."""
    answering = {p.function_response.id for p in message.parts or []
                 if p.function_response is not None and p.function_response.name == REQUEST}
    if not answering:
        return False
    originals = {r.call.id: r.original.get("id") for r in _requests(events) if r.call.id in answering}
    confirmed: set[str] = set()  # the original calls whose confirmation was answered so far
    acted: set[str] = set()  # ... and that then got their tool's result
    for event in events:
        for response in event.get_function_responses():
            if event.author == "user" and response.id in answering:
                if originals.get(response.id):
                    confirmed.add(originals[response.id])  # type: ignore[arg-type]  # not None: checked above
            elif response.id in confirmed:
                acted.add(response.id)
    return all(originals.get(a) in acted for a in answering)


def _requests(events: Iterable[Event]) -> Iterator[Request]:
    for event in events:
        for call in event.get_function_calls():
            if call.name == REQUEST and call.id:
                yield Request(call, event.author, event.branch)


def approval_key(journal: Journal, request: Request, agent_path: str, ic: InvocationContext | None = None) -> str:
    """The approval's step key: the original call's journal key plus ``/approval``."""
    return f"{journal.call_key_by_path(request.original.get('id'), agent_path, ic, request.author)}/approval"


def reply(request: Request, decision: dict[str, JSON]) -> types.Part:
    """The ``adk_request_confirmation`` function response carrying a decision."""
    return types.Part(function_response=types.FunctionResponse(
        id=request.call.id, name=REQUEST, response={"confirmed": bool(decision["approved"]), "payload": decision}))


def decide(run: agentspan.ActiveRun, requests: list[tuple[Request, str, ToolOptions]]) -> list[types.Part]:
    """Turns requests into approvals and their decisions into function responses.

    Args:
        run: The run that gets the approvals.
        requests: Each request with its approval key and its tool's options (``on_reject="stop"``
            cancels the run on a rejection).

    Raises:
        ApprovalPending: Some request is not decided yet (every one now has an approval, and the
            run is ``waiting``).
        RunCancelledSignal: A rejection with ``on_reject="stop"``.
        ReplayDivergenceError: An approval exists for the key but for other arguments.
    """
    decisions = approvals.decide_all(run, [
        approvals.ApprovalRequest(key=key, tool=request.tool, args=request.args, options=options)
        for request, key, options in requests])
    return [reply(request, decision) for (request, _, _), decision in zip(requests, decisions, strict=True)]
