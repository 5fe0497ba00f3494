"""The OpenAI Agents SDK adapter: runs ``Runner.run`` with every call routed through the core."""

from __future__ import annotations

import dataclasses
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any

from agents import Agent, Model, RunConfig, Runner
from agents.exceptions import AgentsException, ModelBehaviorError, ModelRefusalError
from agents.models.multi_provider import MultiProvider
from pydantic_core import to_jsonable_python

import agentspan
from agentspan.adapters import Adapter
from agentspan.errors import ConfigurationError
from agentspan.stores.base import call_store
from agentspan_openai_agents._hooks import run_hooks
from agentspan_openai_agents._mcp import servers_connected
from agentspan_openai_agents._model import CallTracker, JournalingProvider
from agentspan_openai_agents._nested import attempt
from agentspan_openai_agents._session import (
    SESSION_OPTION,
    SessionChecks,
    check_resumed_session,
    check_session,
    session_for_attempt,
)
from agentspan_openai_agents._stream import event_key
from agentspan_openai_agents._wrap import AgentWrapper, restore_originals, restore_originals_in_error

if TYPE_CHECKING:
    from agentspan.testing import MockSetup, StandIns

_CONVERSATION_OPTIONS = ("previous_response_id", "conversation_id", "auto_previous_response_id")
"""A conversation kept by OpenAI's server (the model gets only what it lacks): plain values, stored."""
RUNNER_OPTIONS = ("context", "max_turns", "hooks", "error_handlers", "session", *_CONVERSATION_OPTIONS)
"""The ``Runner.run`` keyword arguments a durable run passes on (besides ``run_config``)."""
_STORED_OPTIONS = ("max_turns", *_CONVERSATION_OPTIONS)


class OpenAIAgentsAdapter(Adapter):
    """Makes `agents.Agent` runs durable: ``agentspan.run(agent, input)``, streamed with
    ``agentspan.run_streamed(agent, input)`` (``Runner.run_streamed`` under the hood)."""

    framework = "openai-agents"
    preload = ("agents", "agents.models.openai_provider")
    streams = True

    def accepts(self, target: Any) -> bool:
        return isinstance(target, Agent)

    def agent_name(self, target: Any) -> str:
        return str(target.name)

    def encode_input(self, input: Any) -> Any:
        if isinstance(input, str):
            return input
        if isinstance(input, list):
            return to_jsonable_python(input)
        raise ConfigurationError(
            f"agentspan.run(agent, input) takes a str or a list of input items, not {type(input).__name__} "
            "(an SDK RunState is not needed: Agentspan keeps the run's state itself)")

    def encode_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = set(options) - {*RUNNER_OPTIONS, "run_config"}
        if unknown:
            raise ConfigurationError(f"unknown Runner option(s) for openai-agents: {', '.join(sorted(unknown))}")
        stored = {k: options[k] for k in _STORED_OPTIONS if k in options}
        if options.get("session") is not None:
            check_session(options["session"])
            stored[SESSION_OPTION] = options["session"].session_id
        return stored

    def check_options(self, run: agentspan.Run, options: dict[str, Any]) -> None:
        """A run started with an SDK session goes on only with that session (`_session`)."""
        check_resumed_session(run.id, run.options, options.get("session"))

    def default_session(self, options: dict[str, Any]) -> str | None:
        """A run with an SDK session (``session=``) is recorded under that session's id."""
        session_id = getattr(options.get("session"), "session_id", None)
        return None if session_id is None else str(session_id)

    def instrument(self, on: bool) -> str:
        """`agentspan.instrument` support (see `agentspan_openai_agents._instrument`)."""
        from agentspan_openai_agents._instrument import instrument

        return instrument(on)

    def encode_output(self, result: Any) -> Any:
        return to_jsonable_python(result.final_output, fallback=str)

    async def execute(self, run: agentspan.ActiveRun, target: Any, input: Any, options: dict[str, Any]) -> Any:
        run.next_model_key = run.peek_llm_key  # model calls take their keys from `run.llm_key` (`agentspan.now`)
        config = options.get("run_config") or RunConfig()
        if isinstance(config, dict):
            config = RunConfig(**config)
        tracker = CallTracker()
        wrapper = AgentWrapper(tracker)
        owns_provider = options.get("run_config") is None
        provider = JournalingProvider(config.model_provider if not owns_provider else MultiProvider(), tracker)
        model = wrapper.model(config.model) if isinstance(config.model, Model) else config.model
        config = dataclasses.replace(config, model_provider=provider, model=model,
                                     **wrapper.config_guardrails(config))
        kwargs = {**run.run.options, **{k: options[k] for k in RUNNER_OPTIONS if k in options}}
        kwargs.pop(SESSION_OPTION, None)
        wrapper.session_checks = SessionChecks(run)  # (an agent tool's session is checked with the run's)
        kwargs["session"] = session_for_attempt(run, options.get("session"), wrapper.session_checks)
        kwargs["hooks"] = run_hooks(kwargs.get("hooks"), tracker)  # told whether their call is replayed
        if kwargs.get("error_handlers"):
            kwargs["error_handlers"] = {kind: None if handler is None else _given_originals(handler)
                                        for kind, handler in kwargs["error_handlers"].items()}  # (None: no handler)
        try:
            async with servers_connected(target):
                with attempt(wrapper, config):  # a tool's own Runner calls are journaled too (`_nested`)
                    return await self._run(run, wrapper.agent(target), input, config, kwargs)
        except AgentsException as exc:
            restore_originals_in_error(exc)  # the SDK's recovery pattern goes on from `run_data`
            if isinstance(exc, ModelBehaviorError | ModelRefusalError) and tracker.answered is not None:
                # the SDK refused the model's answer (invalid JSON for the output type, a tool it
                # does not have, ...), or the model refused to give the output type: a retry asks
                # the model again instead of replaying the same answer into the same failure.
                # Raised by a model call itself (a failed or cut-off response), it is that call's
                # own failure: a retry makes that call again and replays the answers before it.
                await call_store(run.store, run.set_aside, tracker.answered,
                                 f"superseded: the SDK refused this answer of the model ({exc}); a retry asks again")
            raise
        finally:
            if owns_provider:
                await provider.aclose()

    @staticmethod
    async def _run(run: agentspan.ActiveRun, agent: Agent[Any], input: Any, config: RunConfig,
                   kwargs: dict[str, Any]) -> Any:
        """The SDK's run of the durable clone; streamed into the run's event sink when it has one."""
        if run.events is None:
            result = await Runner.run(agent, input, run_config=config, **kwargs)
            restore_originals(result)
            return result
        streamed = Runner.run_streamed(agent, input, run_config=config, **kwargs)
        seen: Counter[Hashable] = Counter()
        async for event in streamed.stream_events():
            run.events.emit(event, key=event_key(event, seen))
        restore_originals(streamed)
        return streamed

    def mock(self, target: Any, stand_ins: StandIns, options: dict[str, Any]) -> MockSetup:
        """`agentspan.testing.mock_run` support: a scripted model for every agent of the tree."""
        from agentspan_openai_agents._mock import mock_setup

        return mock_setup(target, stand_ins, options)

    def demo(self) -> None:
        from agentspan_openai_agents.demo import main

        main()


def _given_originals(handler: Callable[[Any], Any]) -> Callable[[Any], Awaitable[Any]]:
    """A run error handler (``error_handlers=``) that is handed the user's agents in its input's
    ``run_data`` (its last agent, the items'), as under the plain runner, not the durable clones:
    a handler that goes on from ``data.run_data.last_agent`` runs the agents the user wrote."""

    async def handle(data: Any) -> Any:
        restore_originals_in_error(data)  # (the run ends after its handler: the swap stays)
        result = handler(data)
        return await result if inspect.isawaitable(result) else result

    return handle

