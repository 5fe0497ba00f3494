"""The journal of one ADK invocation inside one Agentspan run: step keys, replay, recording.

Keys never use ADK's own ids (``adk-<uuid>`` call ids and ``e-<uuid>`` invocation ids are new on
every execution). They are derived from where a call happens:

- a model call is ``<agent path>/llm:<n>``: the agent's path from the root of its tree
  (``support/billing``) and how many model calls that agent made before in this run
  (``LoopAgent`` iterations keep counting);
- a tool call hangs off the journaled model response that asked for it, by its position in that
  response: ``support/llm:0/call:1`` is the second function call of the first response, so the
  parallel calls of one response keep their keys whatever order they run in; a call running
  again with a human's `ToolConfirmation` is ``.../call:1/confirmed``;
- calls inside a journaled tool (an ``AgentTool``'s agent runs its own invocation) are prefixed
  with that tool's key.

Replay: a completed model call's `LlmResponse` is returned from ``before_model_callback`` (the
model is not called), a completed tool call's result from ``before_tool_callback`` (the tool does
not run). Both also restore the `EventActions` the live call left (state changes, agent transfers,
confirmation requests), since ADK applies those when it appends the call's event.

Recording: a live model call is journaled when its response event reaches the runner (so agent
``after_model_callback`` rewrites and the state they set are part of it), with the time from
``before_model_callback`` as its duration. A live tool call runs inside the journal step itself:
the tool's ``run_async`` is wrapped (see `agentspan_adk._tools`), so ``agentspan.current_step()``
works in the tool and an in-flight call is known after a crash.

Divergence: a model call's input hash covers the model, the instruction, the tool names and the
*set* of messages it was sent, summed message by message as the conversation grows (flat cost per
call). The sum ignores order on purpose: a ``ParallelAgent``'s branches append their events in
the order they finish, which differs between a live run and its replay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from google.adk.agents import BaseAgent
from google.adk.agents.callback_context import CallbackContext
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events import Event
from google.adk.models import BaseLlm, LlmRequest, LlmResponse
from google.adk.tools import BaseTool, ToolContext

import agentspan
from agentspan import LlmMetrics
from agentspan.divergence import SUPERSEDED
from agentspan.errors import AgentspanError
from agentspan.hashing import digest
from agentspan.models import ModelId
from agentspan.records import JSON, StepKind, StepStatus
from agentspan_adk import _codec
from agentspan_adk._held_step import HeldStep
from agentspan_adk._reading import agent_path, is_model_turn, live_events, model_turns, options_of, to_json

TRANSFER_TOOL = "transfer_to_agent"
_NO_USAGE = LlmMetrics()
_MODEL_EVENT_ACTIONS = ("state_delta", "artifact_delta")
"""What a model call's event may carry from agent model callbacks, restored on replay."""


class ModelCallFailed(Exception):
    """A live model call ended by ADK's error event instead of a response (journaled ``failed``,
    with the event's error code as the error's type: ``IndexError: ...`` for an exception the
    model raised)."""

    def __init__(self, error_code: str | None, message: str | None) -> None:
        super().__init__(message or "")
        self.agentspan_error_type = error_code or type(self).__name__

    def __reduce__(self) -> tuple[type[ModelCallFailed], tuple[str, str]]:  # (copied and pickled as made)
        return type(self), (self.agentspan_error_type, str(self))


_ModelCall = tuple[dict[str, JSON], dict[str, JSON]]
"""A model call's value in its journal step: the response and the `EventActions` it carried, as JSON."""


async def _replayed_only() -> _ModelCall:
    raise AgentspanError("a model call checked as replayed was about to be made live")


@dataclass(slots=True)
class _ModelStep:
    """What journals one model call: its key, journal input, input hash, model, and the agent
    (branch, name) whose response event ends a live call."""

    key: str
    input: dict[str, JSON]
    input_hash: str
    identity: ModelId
    agent: tuple[str | None, str]


@dataclass(slots=True)
class _PendingModelCall:
    key: str
    future: asyncio.Future[_ModelCall]
    step: HeldStep[_ModelCall]
    answered: bool = False
    """The model gave a response (``after_model_callback``): an error event is then its answer."""


@dataclass(slots=True)
class ToolCall:
    """A live tool call on its way from ``before_tool_callback`` to the tool's ``run_async``."""

    journal: Journal
    key: str
    kind: StepKind
    tool: BaseTool
    args: dict[str, JSON]
    tool_context: ToolContext


@dataclass
class _AgentCalls:
    """The model calls of one agent (by path) in a journal."""

    next_index: int
    """The number of the agent's next model call (its ``llm:N`` key)."""
    seen: int = 0
    """How many messages of the agent's requests are hashed into ``total``."""
    total: int = 0
    """Order-free sum of those messages' digests (`_codec.add_digests`)."""
    hasher: _codec.RequestHasher = field(default_factory=_codec.RequestHasher)
    model: tuple[BaseLlm | None, str | None, ModelId] | None = None
    """The agent's model object, the requested model name, and their `_codec.model_identity`."""

    def identity(self, llm: BaseLlm | None, name: str | None) -> ModelId:
        """`_codec.model_identity`, again only when the model object or name changes."""
        model = self.model
        if model is None or model[0] is not llm or model[1] != name:
            model = self.model = (llm, name, _codec.model_identity(llm, name))
        return model[2]


@dataclass
class Journal:
    """Journaling state of one ADK invocation (and its continuations) in one run attempt.

    Args:
        run: The Agentspan run the calls belong to.
        prefix: Prepended to every key (the enclosing tool's key and ``/`` for nested runners).
    """

    run: agentspan.ActiveRun
    prefix: str = ""
    on_suspend: Callable[[], None] | None = None
    """Called when a tool call suspends the run for an approval (before the signal unwinds)."""
    last_text: str | None = None
    _agents: dict[str, _AgentCalls] = field(default_factory=dict)
    _paths: dict[int, tuple[BaseAgent, str]] = field(default_factory=dict)
    _pending: dict[tuple[str | None, str], _PendingModelCall] = field(default_factory=dict)
    _call_keys: dict[str, str] = field(default_factory=dict)
    _root_checked: bool = False
    workflow: bool = False
    """The invocation runs an ADK 2 graph workflow: its agents are keyed by node path (`_key_path`)."""

    # ---- model calls ----------------------------------------------------------------------
    def before_model(self, callback_context: CallbackContext, llm_request: LlmRequest,
                     ic: InvocationContext) -> Awaitable[LlmResponse | None] | None:
        """What gives the journaled response of this model call, or None to let ADK call the model."""
        # (the ignores on ic.agent here: ADK 2 types it BaseAgent | BaseNode | None for its workflow
        # nodes; in an agent's model and tool callbacks it is that agent)
        agent: BaseAgent = ic.agent  # type: ignore[assignment]
        path = self._key_path(ic)
        calls = self._agents.get(path)
        if calls is None:  # (a continuation of an invocation journaled by another process counts on)
            calls = self._agents[path] = _AgentCalls(model_turns(ic.session.events, ic.invocation_id, agent.name,
                                                                 ic.branch))
        index = calls.next_index
        calls.next_index = index + 1
        key = f"{self.prefix}{path}/llm:{index}"
        extra = _codec.request_extra(llm_request)
        new, input_hash = _hash(calls, llm_request.contents, extra)
        step_input: dict[str, JSON] = {"agent": path, "new": new}
        if index == 0:
            step_input["system"] = extra["system"]
        identity = calls.identity(getattr(agent, "canonical_model", None), llm_request.model)
        recorded = self.run.journal.get(key)
        call = _ModelStep(key, step_input, input_hash, identity, (ic.branch, agent.name))
        if recorded is not None and recorded.status is StepStatus.COMPLETED:
            return self._replay_model_call(call, callback_context)
        if not self._root_checked:
            self._root_checked = True
            if self.run.recorded:  # (a new run has no journal to check against)
                return self._check_root_then_live(call, path.partition("/")[0])
        self._start_live_model_call(call)
        return None

    async def _check_root_then_live(self, call: _ModelStep, root: str) -> None:
        """Before the first live model call of an attempt that has earlier ones' steps: model
        calls journaled under another root agent (the root renamed) would never be reached, and
        their tools would run again: a divergence at the first of them (raised, or, under
        ``on_divergence="live"``, the journal from there on moved aside)."""
        await self._check_root(root)
        self._start_live_model_call(call)

    async def check_workflow_root(self, node_path: str) -> None:
        """Before a graph workflow's first function node step of an attempt (`agentspan_adk._nodes`):
        steps journaled under another root (the workflow renamed, or the run started with an agent
        tree) would never be reached, and their effects would happen again: a divergence."""
        if not self._root_checked:
            self._root_checked = True
            if self.run.recorded:
                await self._check_root(node_path.partition("/")[0])

    async def _check_root(self, root: str) -> None:
        """A divergence at the first completed model call or function node journaled under
        another root than ``root`` (raised, or, under ``on_divergence="live"``, the journal
        from there on moved aside)."""
        mark = f"{self.prefix}{root}/"
        journal = self.run.journal
        other = sorted((step for key in self.run.recorded if (step := journal.get(key)) is not None
                        and step.kind in (StepKind.LLM, StepKind.TOOL) and step.status is StepStatus.COMPLETED
                        and key.startswith(self.prefix) and not key.startswith(mark)
                        and not key.startswith(SUPERSEDED) and _agent_model_key(key[len(self.prefix):])),
                       key=lambda step: step.seq)
        if other:
            first = other[0]
            was = first.key[len(self.prefix):].partition("/")[0]
            kind = "workflow" if "@" in was else "agent"  # (a workflow's node paths: `flow@1/...`)
            await self.run.diverge(first.key, f"the journal has calls of root {kind} {was!r}; the agent tree or "
                                              f"graph workflow now has root {root!r} (renamed, or another kind of "
                                              "root, since the run started?)")

    def next_model_key(self, ic: InvocationContext) -> str:
        """The key the next model call of the invocation's current agent takes (`before_model`
        gives it), without taking it: what `agentspan.now` reads the time of."""
        path = self._key_path(ic)
        calls = self._agents.get(path)
        index = calls.next_index if calls is not None else model_turns(
            ic.session.events, ic.invocation_id, ic.agent.name, ic.branch)  # type: ignore[union-attr]
        return f"{self.prefix}{path}/llm:{index}"

    def _model_step(self, call: _ModelStep,
                    invoke: Callable[[], Awaitable[_ModelCall]]) -> Coroutine[Any, Any, _ModelCall]:
        return self.run.step(
            kind=StepKind.LLM, key=call.key, name=call.identity.model, input=call.input, input_hash=call.input_hash,
            invoke=invoke, dump=_dump_model_call, load=_load_model_call, provider=call.identity.provider,
            model=call.identity.model, metrics=_usage)

    def _start_live_model_call(self, call: _ModelStep) -> None:
        """Enters the step of a model call ADK makes now; the response's event ends it (`on_event`)."""
        future: asyncio.Future[_ModelCall] = asyncio.get_running_loop().create_future()
        stale = self._pending.pop(call.agent, None)
        if stale is not None:  # a call whose response never became an event (no journal entry)
            stale.step.cancel()
        step = HeldStep(self._model_step(call, lambda: future))
        self._pending[call.agent] = _PendingModelCall(call.key, future, step)

    async def _replay_model_call(self, call: _ModelStep, callback_context: CallbackContext) -> LlmResponse | None:
        """The journaled response; None (ADK calls the model) when the run went on live here
        (``on_divergence="live"``)."""
        if not await self.run.replays(key=call.key, name=call.identity.model, input=call.input,
                                      input_hash=call.input_hash):
            self._start_live_model_call(call)
            return None
        response, actions = await self._model_step(call, _replayed_only)
        _codec.restore_actions(callback_context.actions, actions)
        self._register_calls(call.key, response, call.agent[0])
        return _codec.load_response(response)

    def _key_path(self, ic: InvocationContext) -> str:
        """Where the invocation's current agent's calls are keyed: its path in the agent tree, or,
        in a graph workflow (whose agents are nodes, each the root of its own tree), its node's
        path (``flow@1/triage@1``; an agent the node's agent transferred to adds its name)."""
        agent: BaseAgent = ic.agent  # type: ignore[assignment]  # (an agent: see before_model)
        if not self.workflow or not ic.node_path:
            return self._path_of(agent)
        node = ic.node_path.rpartition("/")[2].partition("@")[0]
        return ic.node_path if node == agent.name else f"{ic.node_path}/{agent.name}"

    def _path_of(self, agent: BaseAgent) -> str:
        """`agent_path`, once per agent object."""
        cached = self._paths.get(id(agent))
        if cached is not None and cached[0] is agent:
            return cached[1]
        path = agent_path(agent)
        self._paths[id(agent)] = (agent, path)
        return path

    def on_event(self, event: Event) -> Awaitable[None] | None:
        """Remembers final texts; for the response event of a live model call, what journals the
        call (to be awaited)."""
        if event.partial:
            return None
        pending = self._pending.pop((event.branch, event.author), None)
        if pending is not None and not pending.answered and event.content is None and event.error_code:
            # ADK's event of an error raised before the model answered (the model call raised, or ADK
            # refused the call: max_llm_calls): the call failed, it is not the model's response
            pending.future.set_exception(ModelCallFailed(event.error_code, event.error_message))
            return self._fail_model_call(pending)
        if pending is not None and not pending.future.done():
            response = _codec.dump_response(event)
            pending.future.set_result((response, _codec.dump_actions(event.actions, _MODEL_EVENT_ACTIONS)))
            return self._end_model_call(pending, response, event)
        if event.author != "user":
            self._note_text(_codec.final_text(event), event)
        return None

    def model_answered(self, ic: InvocationContext) -> None:
        """The model gave the response ADK is about to make an event of (``after_model_callback``)."""
        pending = self._pending.get((ic.branch, ic.agent.name))  # type: ignore[union-attr]
        if pending is not None:
            pending.answered = True

    @staticmethod
    async def _fail_model_call(pending: _PendingModelCall) -> None:
        with contextlib.suppress(ModelCallFailed):  # journaled failed; ADK raises the error itself
            await pending.step.finish()

    async def _end_model_call(self, pending: _PendingModelCall, response: dict[str, JSON], event: Event) -> None:
        await pending.step.finish()
        self._note_text(self._register_calls(pending.key, response, event.branch), event)

    def _note_text(self, text: str | None, event: Event) -> None:
        if text is not None and event.is_final_response():  # (most events have no text: checked first)
            self.last_text = text

    def _register_calls(self, llm_key: str, response: dict[str, JSON], branch: str | None) -> str | None:
        """Keys the function calls of a response by their ids; returns the response's text.

        Calls that run alongside others (several in the response, or any in a ``ParallelAgent``'s
        branch) are told to the run too: ADK cancels them when a sibling raises (waits for an
        approval), and the run then lets them end and journals them instead of leaving them in
        doubt, to be made again.
        """
        call_ids, text = _codec.calls_and_text(response)
        for index, call_id in enumerate(call_ids):
            if call_id:
                self._call_keys[call_id] = f"{llm_key}/call:{index}"
        if call_ids and (branch is not None or len(call_ids) > 1):
            self.run.register_calls(llm_key, [None] * len(call_ids), parallel=True)
        return text

    def call_key(self, call_id: str | None, ic: InvocationContext) -> str:
        """The key of the function call ``call_id`` made by the invocation's current agent."""
        known = self._call_keys.get(call_id or "")
        return known if known is not None else self.call_key_by_path(call_id, self._key_path(ic), ic)

    def call_key_by_path(self, call_id: str | None, path: str, ic: InvocationContext | None = None,
                         author: str | None = None) -> str:
        """The key of the function call ``call_id`` (from the response that asked for it).

        A call this journal did not see asked for (an invocation continued in another process)
        is found in the session: the response that holds it, counted among its agent's model
        turns (``author``'s: by default the invocation's current agent, which is the root, a
        workflow agent perhaps, while a message is received). A call found nowhere is keyed by
        its id (stable only if the model gave it).
        """
        known = self._call_keys.get(call_id or "")
        if known is not None:
            return known
        if ic is not None and call_id:
            turns = 0
            author = author or ic.agent.name  # type: ignore[union-attr]
            for event in live_events(ic.session.events):  # (a rewound attempt's calls counted no turn)
                if event.invocation_id != ic.invocation_id or event.author != author:
                    continue
                ids = [c.id for c in event.get_function_calls()]
                if call_id in ids:
                    return f"{self.prefix}{path}/llm:{turns}/call:{ids.index(call_id)}"
                if is_model_turn(event):
                    turns += 1
        return f"{self.prefix}{path}/call:{call_id}"

    def cancel_pending(self) -> None:
        """Drops model calls that never produced an event (their runner stopped)."""
        for pending in self._pending.values():
            pending.step.cancel()
        self._pending.clear()

    # ---- tool calls -----------------------------------------------------------------------
    def before_tool(self, tool: BaseTool, tool_args: dict[str, Any], tool_context: ToolContext,
                    ic: InvocationContext) -> tuple[ToolCall, bool]:
        """The call, and whether the journal has it completed (then `replay_tool` gives its result)."""
        if ic.agent is None:  # a tool as a graph workflow node (ADK's _ToolNode): a new call id every run
            key = f"{self.prefix}{tool_context.node_path}/tool"
        else:
            key = self.call_key(tool_context.function_call_id, ic)
        if tool_context.tool_confirmation is not None:
            key += "/confirmed"
        kind = StepKind.HANDOFF if tool.name == TRANSFER_TOOL else StepKind.TOOL
        call = ToolCall(self, key, kind, tool, to_json(tool_args), tool_context)
        recorded = self.run.journal.get(key)
        return call, recorded is not None and recorded.status is StepStatus.COMPLETED

    async def replay_tool(self, call: ToolCall) -> Any:
        """The journaled result of a completed call, as ``before_tool_callback`` returns it."""
        output = await self._journal_call(call, _never)
        result, actions = _codec.unpack(output)
        _codec.restore_actions(call.tool_context.actions, actions)
        return _as_tool_response(call.tool, result)

    async def execute(self, call: ToolCall, invoke: Callable[[], Awaitable[Any]]) -> Any:
        """Runs a live tool call inside its journal step; returns the result ADK gets."""
        try:
            output = await self._journal_call(call, invoke)
        except agentspan.errors.ApprovalPending:
            if self.on_suspend is not None:
                self.on_suspend()
            raise
        result, _ = _codec.unpack(output)  # (the live call set its actions on the context itself)
        return result

    def _journal_call(self, call: ToolCall, invoke: Callable[[], Awaitable[Any]]) -> Awaitable[JSON]:
        def dump(value: Any) -> JSON:
            converted = to_json(value)
            if isinstance(converted, dict) and not isinstance(value, dict):
                converted = {"result": converted}  # ADK's shape for a result that is no dict (a pydantic model)
            return _codec.pack(converted, _codec.dump_actions(call.tool_context.actions))

        if call.kind is StepKind.HANDOFF:
            target = call.args.get("agent_name") if isinstance(call.args, dict) else None
            return self.run.step(kind=StepKind.HANDOFF, key=call.key, name=str(target), input=call.args,
                                 input_hash=digest(call.args), invoke=invoke, dump=dump, load=_identity)
        return self.run.tool(key=call.key, name=call.tool.name, args=call.args, invoke=invoke,
                             options=options_of(call.tool), dump=dump, call_id=call.tool_context.function_call_id)


def _dump_model_call(value: _ModelCall) -> JSON:
    response, actions = value
    return _codec.pack(response, actions, key="response")


def _load_model_call(data: JSON) -> _ModelCall:
    response, actions = _codec.unpack(data, key="response")
    return response, actions  # type: ignore[return-value]


def _hash(calls: _AgentCalls, contents: list[Any], extra: dict[str, JSON]) -> tuple[list[JSON], str]:
    """The messages new since the agent's previous call (as JSON) and the request's hash."""
    if len(contents) < calls.seen:  # the conversation was shortened (compaction): start over
        calls.seen, calls.total = 0, 0
    new = [_codec.dump_content(c) for c in contents[calls.seen:]]
    calls.total = _codec.add_digests(calls.total, new)
    calls.seen = len(contents)
    return new, calls.hasher(extra, calls.total)


def _usage(value: _ModelCall) -> LlmMetrics:
    usage: Any = value[0].get("usage_metadata")
    if usage is None:
        return _NO_USAGE
    candidates, thoughts = usage.get("candidates_token_count"), usage.get("thoughts_token_count")
    output = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return LlmMetrics(input_tokens=usage.get("prompt_token_count"), output_tokens=output,
                      # (of prompt_token_count: Gemini counts the cached content in it)
                      cached_input_tokens=usage.get("cached_content_token_count"))


def _as_tool_response(tool: BaseTool, result: JSON) -> Any:
    """A journaled result as ``before_tool_callback`` must return it (None would mean "run it")."""
    if result is None:
        return {} if tool.is_long_running else {"result": None}
    return result


def _identity(value: Any) -> Any:
    return value


async def _never() -> Any:  # pragma: no cover - only called on a completed step, which never runs
    raise AgentspanError("agentspan-adk asked a completed journal step to run again; this is a bug")


def _agent_model_key(key: str) -> bool:
    """Whether ``key`` is an ADK model call's (``<agent path>/llm:<n>``, agent names being Python
    identifiers; ``<node path>/llm:<n>`` in a graph workflow, node paths like ``flow@1/triage@1``)
    or a workflow function node's (``<node path>/node``), not another framework's in the same run
    (``agent:<id>/llm:0``, ``llm:0``)."""
    path, _, last = key.rpartition("/")
    return bool(path) and (last.startswith("llm:") or last == "node") and all(map(_path_part, path.split("/")))


def _path_part(part: str) -> bool:
    name, at, number = part.partition("@")
    return name.isidentifier() and (not at or number.isdigit())
