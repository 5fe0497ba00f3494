"""`agentspan.testing.mock_run` for Google ADK: scripted model turns for every agent of the tree,
and tool stand-ins.

- **Model.** In a mock run (a context variable set for the run's scope, inherited by every task
  ADK starts: parallel branches, tool calls, an ``AgentTool``'s inner runner), the plugin's
  ``before_model_callback`` answers each live model call with the next scripted turn as an
  `LlmResponse`, the way it already answers replayed calls from the journal. The call is
  journaled when its event reaches the runner, as a live call is; the trail keeps the agents' own
  model names. The tools offered to the model (``llm_request.tools_dict``, with
  ``transfer_to_agent`` for agent transfers) are checked against the turn's calls.

  Why the plugin callback rather than swapping each agent's ``model`` (as the openai-agents kit
  sets ``RunConfig.model``): ADK has no run-level model override, so a swap would mutate the
  user's agent objects (and race with any other use of them), or patch ADK internals
  (``BaseLlmFlow._get_llm``). The callback touches neither, and the real model object is never
  called. The price: as with any plugin answer (ADK's rule, and Agentspan's replay), the agents'
  own ``before_model_callback``/``after_model_callback`` functions do not run for scripted turns.
- **Tools.** A stubbed tool goes through the journal as usual (``@agentspan.tool`` approvals,
  replay); only the final call is the stand-in's. A ``FunctionTool(require_confirmation=...)``
  keeps ADK's own confirmation gate: the original ``run_async`` runs until the confirmation is
  granted (it requests it, or answers a rejection), and the stand-in replaces the function only
  when ADK would call it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from google.adk.agents import BaseAgent
from google.adk.apps import App
from google.adk.models import LlmRequest, LlmResponse
from google.adk.tools import BaseTool, FunctionTool, ToolContext
from google.adk.tools.agent_tool import AgentTool
from google.genai import types

from agentspan.testing import Call, MockSetup, StandIns, context_scope
from agentspan_adk import _codec

_stand_ins: ContextVar[StandIns | None] = ContextVar("agentspan_adk_stand_ins", default=None)


def scripted_response(llm_request: LlmRequest) -> LlmResponse | None:
    """In a mock run, the next scripted turn as the response to this model call; else None.

    Raises:
        ScriptError: The script ran out, or the turn calls a tool not offered to the model.
    """
    stand_ins = _stand_ins.get()
    if stand_ins is None:
        return None
    turn = stand_ins.next_turn(tools=list(llm_request.tools_dict))
    parts = [types.Part(function_call=types.FunctionCall(name=p.name, args=dict(p.args), id=p.id))
             if isinstance(p, Call) else types.Part(text=p.text) for p in turn.parts]
    usage = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=turn.input_tokens, candidates_token_count=turn.output_tokens,
        total_token_count=turn.input_tokens + turn.output_tokens)
    return LlmResponse(content=types.Content(role="model", parts=parts), usage_metadata=usage,
                       finish_reason=types.FinishReason.STOP)


def active() -> bool:
    """Whether a mock run (`agentspan.testing.mock_run`) executes in this context."""
    return _stand_ins.get() is not None


def live_call(tool: BaseTool, args: dict[str, Any], tool_context: ToolContext,
              original: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """What runs a live tool call: ``original``, or, in a mock run, `stubbed_call` of it."""
    if _stand_ins.get() is None:
        return original
    return lambda: stubbed_call(tool, args, tool_context, original)


async def stubbed_call(tool: BaseTool, args: dict[str, Any], tool_context: ToolContext,
                       original: Callable[[], Awaitable[Any]]) -> Any:
    """Runs a live tool call: the tool's stand-in in a mock run (see the module), else ``original``."""
    stand_ins = _stand_ins.get()
    if stand_ins is None or tool.name not in stand_ins.stubbed:
        return await original()
    if isinstance(tool, FunctionTool) and await tool.check_require_confirmation(args, tool_context):
        confirmation = tool_context.tool_confirmation
        if confirmation is None or not confirmation.confirmed:
            return await original()  # ADK requests the confirmation, or answers the rejection
    return stand_ins.call_stub(tool.name, args)


def agents_of(root: Any) -> list[BaseAgent]:
    """The agent and every agent below it: sub-agents and the agents of ``AgentTool``s; of a
    graph workflow (``root`` a ``Workflow``), the agents among its nodes, nested workflows' too."""
    found: dict[int, BaseAgent] = {}
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        graph = getattr(node, "graph", None)
        if graph is not None and not isinstance(node, BaseAgent):  # a workflow: its nodes
            todo.extend(graph.nodes)
            continue
        if not isinstance(node, BaseAgent):  # a function or tool node
            continue
        found[id(node)] = node
        todo.extend(node.sub_agents)
        todo.extend(t.agent for t in getattr(node, "tools", None) or [] if isinstance(t, AgentTool))
    return list(found.values())


def tool_names(root: Any) -> frozenset[str] | None:
    """The names of the tools of every agent in the tree (None when a toolset hides some)."""
    names: set[str] = set()
    for agent in agents_of(root):
        for tool in getattr(agent, "tools", None) or []:
            if isinstance(tool, BaseTool):
                names.add(tool.name)
            elif callable(tool) and isinstance(getattr(tool, "__name__", None), str):
                names.add(tool.__name__)
            else:
                return None  # a toolset: its tools are only known when ADK asks it
    return frozenset(names)


def _final_output(result: Any) -> Any:
    return result.text


def _tool_result(output: Any) -> Any:
    return _codec.unpack(output)[0]


def mock_setup(target: Any, stand_ins: StandIns, options: dict[str, Any]) -> MockSetup:
    """The adapter's `Adapter.mock` hook.

    The output is the final response text (`ADKResult.text`); ``handoff_to(name)`` checks an
    agent transfer (a ``transfer_to_agent`` call) to ``name``.
    """
    root: Any = target.root_agent if isinstance(target, App) else target

    return MockSetup(scope=context_scope(_stand_ins, stand_ins), tools=tool_names(root), final_output=_final_output,
                     tool_result=_tool_result)
