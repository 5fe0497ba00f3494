"""`agentspan.testing.mock_run` for openai-agents: a scripted model for the whole agent tree and
tool stand-ins.

- **Model.** ``RunConfig.model`` set to a `ScriptModel` overrides the model of every agent of the
  run, handoff targets included (the SDK resolves ``run_config.model`` before ``agent.model``). It
  is journaled like any model (labelled ``scripted/mock_run``) and answers each call with the next
  scripted turn; the tools and handoffs offered to it are checked against the turn's calls.
- **Tools.** A stubbed tool goes through the adapter's journaled wrapper as usual (approvals,
  replay), and only the final call is the stand-in's instead of the tool's ``on_invoke_tool``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from agents import Agent, FunctionTool, Model, ModelResponse, RunConfig
from agents.tool import maybe_invoke_function_tool_failure_error_function

from agentspan.errors import ConfigurationError
from agentspan.testing import Call, MockSetup, StandIns, context_scope
from agentspan_openai_agents._local_tools import note_handled
from agentspan_openai_agents.testing import ToolCall, build_response

_stand_ins: ContextVar[StandIns | None] = ContextVar("agentspan_openai_agents_stand_ins", default=None)


class ScriptModel(Model):
    """Answers every model call of a mock run with the next scripted turn."""

    agentspan_model_id = "scripted/mock_run"

    def __init__(self, stand_ins: StandIns) -> None:
        self.stand_ins = stand_ins

    async def get_response(self, system_instructions: str | None, input: Any, model_settings: Any,
                           tools: list[Any], output_schema: Any, handoffs: list[Any], tracing: Any, *,
                           previous_response_id: str | None = None, conversation_id: str | None = None,
                           prompt: Any = None) -> ModelResponse:
        offered = [getattr(t, "name", None) for t in tools] + [h.tool_name for h in handoffs]
        turn = self.stand_ins.next_turn(tools=[name for name in offered if isinstance(name, str)])
        parts = [ToolCall(p.name, p.args, p.id) if isinstance(p, Call) else p.text for p in turn.parts]
        return build_response(turn.position, parts, input_tokens=turn.input_tokens, output_tokens=turn.output_tokens)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise ConfigurationError("mock_run runs agents with Runner.run; the scripted model does not stream")


def agents_of(agent: Agent[Any]) -> list[Agent[Any]]:
    """The agent and every agent reachable from it through handoffs and agent tools
    (``agent.as_tool(...)``, which the SDK marks with the agent it runs)."""
    found: dict[int, Agent[Any]] = {}
    todo = [agent]
    while todo:
        current = todo.pop()
        if id(current) in found:
            continue
        found[id(current)] = current
        for handoff in current.handoffs:
            if isinstance(handoff, Agent):
                todo.append(handoff)
            else:
                ref = getattr(handoff, "_agent_ref", None)
                target = ref() if ref is not None else None
                if isinstance(target, Agent):
                    todo.append(target)
        for tool in current.tools:
            inner = getattr(tool, "_agent_instance", None) if getattr(tool, "_is_agent_tool", False) else None
            if isinstance(inner, Agent):
                todo.append(inner)
    return list(found.values())


def tool_names(agent: Agent[Any]) -> frozenset[str]:
    """The names of the tools of every agent in the tree."""
    return frozenset(t.name for a in agents_of(agent) for t in a.tools if isinstance(getattr(t, "name", None), str))


def live_tool_call(tool: FunctionTool, ctx: Any, args: Any,
                   live: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """The call a journaled tool step makes: the tool's stand-in in a mock run, else ``live``.

    A stand-in that raises is handled as the tool's own error would be (the tool's
    ``failure_error_function`` turns it into a message for the model).
    """
    stand_ins = _stand_ins.get()
    if stand_ins is None or tool.name not in stand_ins.stubbed:
        return live

    async def stub() -> Any:
        try:
            return stand_ins.call_stub(tool.name, args)
        except Exception as exc:
            message = await maybe_invoke_function_tool_failure_error_function(function_tool=tool, context=ctx,
                                                                              error=exc)
            if message is None:
                raise
            note_handled(exc)  # as the SDK's own handling of a live tool's error (`_wrap`)
            return message

    return stub


def mock_setup(target: Agent[Any], stand_ins: StandIns, options: dict[str, Any]) -> MockSetup:
    """The adapter's `Adapter.mock` hook."""
    config = options.get("run_config")
    if config is None:
        config = RunConfig(tracing_disabled=True)  # a test exports no traces
    elif isinstance(config, dict):
        config = RunConfig(**config)
    config = dataclasses.replace(config, model=ScriptModel(stand_ins))

    return MockSetup(options={"run_config": config}, scope=context_scope(_stand_ins, stand_ins),
                     tools=tool_names(target), final_output=lambda result: result.final_output)

