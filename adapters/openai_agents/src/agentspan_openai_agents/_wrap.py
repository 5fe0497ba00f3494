"""Clones an agent tree so every tool call, handoff and model call goes through the journal, and
every guardrail result into the trail.

Only the SDK's own extension points are used: `FunctionTool.on_invoke_tool`,
`FunctionTool.needs_approval`, the executors of `ShellTool` and `LocalShellTool`
(`agentspan_openai_agents._local_tools`), `Handoff.on_invoke_handoff`, `Model` instances, the
``guardrail_function`` of agent input/output guardrails and of tool input/output guardrails, and
an agent's ``get_mcp_tools`` (the function tools the SDK makes of its MCP servers' tools).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import inspect
import time
import typing
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agents import (
    Agent,
    FunctionTool,
    Handoff,
    InputGuardrail,
    Model,
    OutputGuardrail,
    RunConfig,
    ToolInputGuardrail,
    ToolOutputGuardrail,
    handoff,
)
from agents import tool as agents_tool
from agents.exceptions import ToolTimeoutError
from agents.tool_context import ToolContext

import agentspan
from agentspan import jsontext
from agentspan.hashing import digest
from agentspan.tools import DEFAULT_TOOL_OPTIONS, ToolOptions, tool_options
from agentspan_openai_agents._hooks import agent_hooks
from agentspan_openai_agents._local_tools import approval_required, journaled_local_tool, note_handled, value_of
from agentspan_openai_agents._mock import live_tool_call
from agentspan_openai_agents._model import (
    CallTracker,
    JournalingModel,
    JournalingProvider,
    add_nested_usage,
    model_identity,
)
from agentspan_openai_agents._nested import checking
from agentspan_openai_agents._results import programmatic, result_loader, text_dump

if TYPE_CHECKING:
    from agentspan_openai_agents._session import SessionChecks

_Guardrail = typing.TypeVar("_Guardrail", InputGuardrail[Any], OutputGuardrail[Any])
_ToolGuardrail = typing.TypeVar("_ToolGuardrail", ToolInputGuardrail[Any], ToolOutputGuardrail[Any])


def _options_of(tool: FunctionTool) -> ToolOptions:
    found = tool_options(tool)
    if found is None:
        try:
            found = tool_options(tool.__wrapped__)
        except AttributeError:
            found = None
    return found or DEFAULT_TOOL_OPTIONS


_Copied = typing.TypeVar("_Copied")
_SDK_POST_INIT = {Agent: Agent.__post_init__, FunctionTool: FunctionTool.__post_init__}
_CHOICES: dict[int, tuple[Any, Callable[[ToolContext[Any]], Any] | None]] = {}
_CHOICES_MAX = 1024
_RECORDED = "_agentspan_recorded"  # set on the guardrail functions `AgentWrapper.guardrail` made
_WRAPPER_SIGNATURE = inspect.Signature([
    inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ToolContext),
    inspect.Parameter("args_json", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
])
# The SDK's choice of a tool's context object (a private helper: without it, the SDK makes none).
_sdk_context_choice: Callable[[FunctionTool, ToolContext[Any]], Any] | None = getattr(
    agents_tool, "_get_function_tool_invoke_context", None)


def _copy(obj: _Copied, base: type, **changes: Any) -> _Copied:
    """``dataclasses.replace(obj, **changes)`` without running the SDK's ``__post_init__`` again.

    ``obj`` passed it when it was made, and the fields that change here are Agentspan's own
    wrappers, so running it again only costs time: it re-validates every field of an `Agent`
    (~80 µs) and deep-copies a `FunctionTool`'s JSON schema (~25 µs), once per agent and tool and
    run. A subclass with a ``__post_init__`` (or ``clone``) of its own, or without a
    ``__dict__``, gets the SDK's own path so its hook still runs.
    """
    cls: type[Any] = type(obj)
    if getattr(cls, "__post_init__", None) is not _SDK_POST_INIT[base] or not hasattr(obj, "__dict__") or (
        base is Agent and cls.clone is not Agent.clone
    ):
        return obj.clone(**changes) if base is Agent else dataclasses.replace(obj, **changes)  # type: ignore[attr-defined, type-var]
    copied = object.__new__(cls)
    copied.__dict__.update(obj.__dict__)
    copied.__dict__.update(changes)
    return copied


def _context_for(tool: FunctionTool) -> Callable[[ToolContext[Any]], Any] | None:
    """How to turn the `ToolContext` the wrapper gets into the object the SDK would pass the
    tool's original ``on_invoke_tool``: None when that is the `ToolContext` itself (every
    ``function_tool``), else the SDK's own choice, made on each call as the SDK makes it (a
    first parameter declared `RunContextWrapper` gets a plain one).

    The wrapper itself always declares a `ToolContext` (it needs the call id). The SDK's choice
    depends only on the original's signature, so it is asked once per original (`_CHOICES`: a
    tool is wrapped again for every run) with a probe context.
    """
    original = tool.on_invoke_tool
    cached = _CHOICES.get(id(original))
    if cached is not None and cached[0] is original:
        return cached[1]
    choose = _sdk_context_choice
    convert: Callable[[ToolContext[Any]], Any] | None = None
    if choose is not None:
        try:
            probe = ToolContext(context=None, tool_name=tool.name, tool_call_id="probe", tool_arguments="{}")
            passes_through = choose(tool, probe) is probe
        except Exception:  # the SDK's choice is then made on each call, as the SDK makes it
            passes_through = False
        if not passes_through:
            convert = functools.partial(choose, tool)
    if len(_CHOICES) >= _CHOICES_MAX:
        _CHOICES.clear()
    _CHOICES[id(original)] = (original, convert)  # holds it: the id stays its own
    return convert


def _declare_tool_context(wrapper: Any) -> None:
    """Declares a tool wrapper's ``(ctx: ToolContext, args_json: str)`` for the SDK, which reads
    ``inspect.signature`` and ``typing.get_type_hints`` of it on every call: a ready
    ``__signature__`` (returned as it is, instead of one built from the code object) and one
    annotation, the bare class (resolved without walking a subscript)."""
    wrapper.__annotations__ = {"ctx": ToolContext}
    wrapper.__signature__ = _WRAPPER_SIGNATURE


def _parse_args(args_json: str) -> Any:
    try:
        return jsontext.loads(args_json) if args_json else {}
    except ValueError:
        return args_json  # the SDK reports malformed arguments to the model itself


def noting_failures(invoker: Any) -> Any:
    """A copy of a `function_tool`'s invoker that notes on the step (`agentspan.StepInfo.handled_error`)
    an exception of the tool the SDK then answers for: its ``failure_error_function`` (by default
    a message without the exception's text) turns it into the tool's answer, and the step is
    journaled completed with that answer (replayed as the model saw it) and shown failed. A
    failure the SDK raises fails the step as before.

    The invoker of openai-agents 0.24 (`agents.tool._FailureHandlingFunctionToolInvoker`) keeps the
    tool's own call in ``_invoke_tool_impl`` and catches around it; any other (a hand-made
    `FunctionTool`'s, a test's mock) is returned as it is.
    """
    sdk_invoker = getattr(agents_tool, "_FailureHandlingFunctionToolInvoker", None)
    impl = getattr(invoker, "_invoke_tool_impl", None)
    if sdk_invoker is None or not isinstance(invoker, sdk_invoker) or not callable(impl):
        return invoker  # not the SDK's own (a test's mock, say): called as it is

    async def noting(ctx: Any, input: str) -> Any:
        try:
            return await impl(ctx, input)
        except Exception as exc:
            note_handled(exc)
            raise

    prepare = getattr(impl, "__agents_prepare_arguments__", None)
    if prepare is not None:
        noting.__agents_prepare_arguments__ = prepare  # type: ignore[attr-defined]
    noted = copy.copy(invoker)
    noted._invoke_tool_impl = noting
    return noted


def within_timeout(tool: FunctionTool, ctx: ToolContext[Any],
                   call: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """``call`` under the tool's own ``timeout_seconds``, as the SDK applies it, but inside the
    journaled step (the copy the SDK sees has none): what a timeout gives the model (the SDK's
    message, the tool's ``timeout_error_function``'s, or a raised `ToolTimeoutError`) is what the
    journal holds, so a resumed run replays it instead of calling the tool again and sending the
    model something else."""
    seconds = tool.timeout_seconds
    if seconds is None:
        return call

    async def timed() -> Any:
        task = asyncio.ensure_future(call())
        try:
            return await asyncio.wait_for(task, timeout=seconds)
        except TimeoutError as exc:
            if task.done() and not task.cancelled():
                return task.result()  # it ended as the time ran out (an error of its own is raised)
            error = ToolTimeoutError(tool_name=tool.name, timeout_seconds=seconds)
            if tool.timeout_behavior == "raise_exception":
                raise error from exc
            note_handled(error)
            if tool.timeout_error_function is None:
                return agents_tool.default_tool_timeout_error_message(tool_name=tool.name, timeout_seconds=seconds)
            return await value_of(tool.timeout_error_function(ctx, error))

    return timed


_ORIGINAL = "_agentspan_original"
"""The attribute of a durable clone that holds the agent it was made from."""


def restore_originals(result: Any) -> None:
    """Puts the user's agents back where a run's result holds the durable clones (its last agent,
    each item's agent, the interruptions'), as the plain runner's result holds the agents it was
    given: the next turn (``agentspan.run(result.last_agent, result.to_input_list() + [...])``,
    or the plain ``Runner``) runs the agents the user wrote (a clone's tools are journaling
    wrappers whose approval gate is Agentspan's)."""
    _swap(result, "_last_agent", "_last_agent_ref")
    _swap(result, "current_agent", "_current_agent_ref")  # a streamed result's
    _swap(result, "_starting_agent_for_state", "")  # `to_state()`'s
    for item in [*getattr(result, "new_items", ()), *getattr(result, "interruptions", ())]:
        _restore_item(item)


def restore_originals_in_error(exc: Exception) -> None:
    """`restore_originals` for what an SDK exception carries out of a run (``run_data``: its last
    agent, each item's agent; a tripped output guardrail's result): the SDK's recovery pattern,
    going on from ``exc.run_data.last_agent`` with the plain ``Runner``, must run the user's agents,
    not the durable clones (whose tools are journaling wrappers with Agentspan's approval gate)."""
    data = getattr(exc, "run_data", None)
    if data is not None:
        _swap(data, "last_agent", "")
        for item in getattr(data, "new_items", None) or ():
            _restore_item(item)
        for result in getattr(data, "output_guardrail_results", None) or ():
            _swap(result, "agent", "")
    result = getattr(exc, "guardrail_result", None)
    if result is not None:
        _swap(result, "agent", "")


def _restore_item(item: Any) -> None:
    """A run item's agent, and a handoff's source and target, back to the user's."""
    _swap(item, "agent", "_agent_ref")
    _swap(item, "source_agent", "_source_agent_ref")
    _swap(item, "target_agent", "_target_agent_ref")


def _swap(holder: Any, name: str, ref: str) -> None:
    fields: Any = getattr(holder, "__dict__", None)  # (not None past the return below)
    original = getattr(fields.get(name), _ORIGINAL, None) if fields is not None else None
    if original is None:
        return
    fields[name] = original
    if ref and fields.get(ref) is not None:
        fields[ref] = weakref.ref(original)


class AgentWrapper:
    """Makes durable clones of an agent tree, once per execution attempt (memoized by identity)."""

    def __init__(self, tracker: CallTracker) -> None:
        self.tracker = tracker
        self._clones: dict[int, Agent[Any]] = {}
        self.session_checks: SessionChecks | None = None
        """The attempt's session overlap checks (`agentspan_openai_agents._session`), for its
        agent tools' sessions too."""

    def agent(self, agent: Agent[Any]) -> Agent[Any]:
        """Returns the durable clone of ``agent`` (the same clone for the same agent); a clone an
        earlier run made (its result's agents, before `restore_originals`) stands for its original."""
        agent = getattr(agent, _ORIGINAL, None) or agent
        clone = self._clones.get(id(agent))
        if clone is not None:
            return clone
        clone = _copy(agent, Agent)
        with contextlib.suppress(AttributeError):  # (a subclass without a __dict__ keeps no link)
            setattr(clone, _ORIGINAL, agent)
        self._clones[id(agent)] = clone
        self._clones[id(clone)] = clone
        clone.tools = [self.tool(t) if isinstance(t, FunctionTool) else journaled_local_tool(t) for t in agent.tools]
        clone.handoffs = [self.handoff(h) for h in agent.handoffs]
        clone.input_guardrails = [self.guardrail(g, "input") for g in agent.input_guardrails]
        clone.output_guardrails = [self.guardrail(g, "output") for g in agent.output_guardrails]
        clone.hooks = agent_hooks(agent.hooks, self.tracker)
        if isinstance(agent.model, Model) and not isinstance(agent.model, JournalingModel):
            clone.model = self.model(agent.model)
        if getattr(agent, "mcp_servers", None):
            clone.get_mcp_tools = self.mcp_tools(clone)  # type: ignore[method-assign]
        return clone

    def mcp_tools(self, clone: Agent[Any]) -> Callable[[Any], Awaitable[list[Any]]]:
        """The clone's ``get_mcp_tools``: its MCP servers' tools as the SDK makes them (function
        tools, listed again on every turn), each journaled, replayed and approval-gated as `tool`
        makes a function tool (a server's ``require_approval`` becomes an Agentspan approval)."""
        listed = type(clone).get_mcp_tools.__get__(clone)  # the class's own (or a subclass's) listing

        async def get_mcp_tools(run_context: Any) -> list[Any]:
            # new tool objects on every listing (the SDK converts the server's list each turn)
            return [self.tool(t) if isinstance(t, FunctionTool) else t for t in await listed(run_context)]

        return get_mcp_tools

    def is_clone(self, agent: Agent[Any]) -> bool:
        """Whether ``agent`` is one of this wrapper's durable clones."""
        return self._clones.get(id(agent)) is agent  # an original maps to its clone, a clone to itself

    def model(self, model: Model) -> Model:
        """Wraps a `Model` instance held by an agent or a run config."""
        return JournalingModel(model, model_identity(model), self.tracker)

    def run_config(self, config: RunConfig) -> RunConfig:
        """An app's run config of a nested ``Runner`` call (`_nested`), with its provider and model
        journaling too."""
        provider = config.model_provider
        if not isinstance(provider, JournalingProvider):
            provider = JournalingProvider(provider, self.tracker)
        model = config.model
        if isinstance(model, Model) and not isinstance(model, JournalingModel):
            model = self.model(model)
        # the ignore: mypy cannot see that config_guardrails's keys are the two *_guardrails fields
        return dataclasses.replace(config, model_provider=provider, model=model,
                                   **self.config_guardrails(config))  # type: ignore[arg-type]

    def config_guardrails(self, config: RunConfig) -> dict[str, list[Any]]:
        """A run config's own input and output guardrails, recorded (and their ``Runner`` calls
        journaled) as an agent's are; those already wrapped are kept as they are."""
        return {f"{side}_guardrails": [g if getattr(g.guardrail_function, _RECORDED, False) else self.guardrail(g, side)
                                       for g in getattr(config, f"{side}_guardrails") or []]
                for side in ("input", "output")}

    def tool(self, tool: FunctionTool) -> FunctionTool:
        """Returns a copy of ``tool`` whose calls are journaled, replayed and approval-gated."""
        options = _options_of(tool)
        original = noting_failures(tool.on_invoke_tool)
        needs_approval = tool.needs_approval
        context_for = _context_for(tool)
        load_result = result_loader(tool)
        dump_result = text_dump(tool, load_result)
        agent_tool = getattr(tool, "_is_agent_tool", False)  # `Agent.as_tool`'s (openai-agents 0.24)

        async def on_invoke_tool(ctx: ToolContext[Any], args_json: str) -> Any:
            given = ctx if context_for is None else context_for(ctx)
            live = within_timeout(tool, ctx, lambda: original(given, args_json))
            run = agentspan.active_run()
            if run is None:
                return await live()
            args = _parse_args(args_json)
            # a plain flag is read as it is: no coroutine per call
            required = bool(needs_approval) if not callable(needs_approval) else await approval_required(
                needs_approval, ctx, args if isinstance(args, dict) else {}, ctx.tool_call_id)
            invoke = live_tool_call(tool, ctx, args, live)
            key = run.call_key(ctx.tool_call_id)
            result = await run.tool(key=key, name=tool.name, args=args, invoke=invoke, options=options,
                                    needs_approval=required, call_id=ctx.tool_call_id,
                                    dump=None if dump_result is None or programmatic(ctx) else dump_result)
            if agent_tool and run.was_replayed("tool", key):
                add_nested_usage(run, key, ctx.usage)
            return result if load_result is None else load_result(result)

        _declare_tool_context(on_invoke_tool)
        guardrails: dict[str, Any] = {}
        if tool.tool_input_guardrails:
            guardrails["tool_input_guardrails"] = [self.tool_guardrail(g, "tool_input")
                                                   for g in tool.tool_input_guardrails]
        if tool.tool_output_guardrails:
            guardrails["tool_output_guardrails"] = [self.tool_guardrail(g, "tool_output")
                                                    for g in tool.tool_output_guardrails]
        return _copy(tool, FunctionTool, on_invoke_tool=on_invoke_tool, needs_approval=False, timeout_seconds=None,
                     **guardrails)

    def handoff(self, target: Agent[Any] | Handoff[Any, Any]) -> Handoff[Any, Any]:
        """Returns a handoff to the durable clone of its agent, journaled as a ``handoff`` step."""
        if isinstance(target, Agent):
            target = handoff(target)
        original = target.on_invoke_handoff
        ref = getattr(target, "_agent_ref", None)
        tracker = self.tracker

        async def on_invoke_handoff(ctx: Any, args_json: str) -> Agent[Any]:
            run = agentspan.active_run()
            if run is None:
                return self.agent(await original(ctx, args_json))
            known = ref() if ref is not None else None
            # the response that asked for this handoff: its agent's last model call, not whichever
            # answered last (an agent tool's run, asked for in the same response, answers after it
            # on the first attempt but is replayed whole, without its model calls, on a resume)
            key = f"{tracker.last_llm_key(run)}/handoff:{target.tool_name}"
            args = _parse_args(args_json)

            async def invoke() -> Agent[Any]:
                return self.agent(await original(ctx, args_json))

            recorded = run.journal.get(key)
            if known is None and recorded is not None and recorded.status is agentspan.StepStatus.COMPLETED:
                # a `Handoff` built by hand holds no agent: only its function gives it (it runs again)
                known = await original(ctx, args_json)

            def load(data: Any) -> Agent[Any]:
                return self.agent(known)  # type: ignore[arg-type]  # set above when the journal has the step

            return await run.step(kind=agentspan.StepKind.HANDOFF, key=key, name=target.agent_name,
                                  input=args, input_hash=digest(args), invoke=invoke,
                                  dump=lambda agent: {"agent": agent.name}, load=load)

        return dataclasses.replace(target, on_invoke_handoff=on_invoke_handoff)

    def guardrail(self, guardrail: _Guardrail, side: str) -> _Guardrail:
        """Returns a copy of an input or output guardrail whose result goes into the trail
        (`agentspan.ActiveRun.guardrail`) and whose own ``Runner`` calls are journaled (`checking`)."""
        check = guardrail.guardrail_function
        name = guardrail.get_name()

        async def guardrail_function(context: Any, agent: Agent[Any], value: Any) -> Any:
            run = agentspan.active_run()
            if run is None:
                return await value_of(check(context, agent, value))
            started_at = time.time()
            with checking(run, run.call_key(f"{side}:{agent.name}:{name}", kind="guardrail")):
                output = await value_of(check(context, agent, value))
            await run.guardrail(side=side, agent=agent.name, name=name, started_at=started_at,
                                tripwire_triggered=bool(output.tripwire_triggered), info=output.output_info)
            return output

        setattr(guardrail_function, _RECORDED, True)
        return dataclasses.replace(guardrail, guardrail_function=guardrail_function, name=name)

    @staticmethod
    def tool_guardrail(guardrail: _ToolGuardrail, side: str) -> _ToolGuardrail:
        """Returns a copy of a tool input or output guardrail whose result goes into the trail,
        under the key of the tool call it checked (its own ``Runner`` calls journaled there too)."""
        check = guardrail.guardrail_function
        name = guardrail.get_name()

        async def guardrail_function(data: Any) -> Any:
            run = agentspan.active_run()
            if run is None:
                return await value_of(check(data))
            call_id = data.context.tool_call_id
            started_at = time.time()
            with checking(run, f"{run.call_key(call_id)}/guardrail:{side}:{name}"):
                output = await value_of(check(data))
            behavior = dict(output.behavior)  # a TypedDict: {"type": "allow" | "reject_content" | ...}
            await run.guardrail(side=side, agent=data.agent.name, name=name, started_at=started_at,
                                tripwire_triggered=behavior.get("type") != "allow", info=output.output_info,
                                call_id=call_id, behavior=behavior)
            return output

        return dataclasses.replace(guardrail, guardrail_function=guardrail_function, name=name)
