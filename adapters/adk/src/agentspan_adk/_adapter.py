"""The Google ADK adapter: ``agentspan.run(agent, "prompt", session_id=...)`` without a Runner.

A run is one ADK invocation: the adapter builds a ``Runner`` with an `AgentspanPlugin` and a
session restored from the store (`agentspan_adk._session`), sends the input as the user message,
and, while the invocation pauses on confirmation requests, turns them into Agentspan approvals and
sends their decisions back (`agentspan_adk._confirmations`). Every attempt (after a crash, after
an approval) runs the invocation again from the same session snapshot, with completed model and
tool calls coming from the journal.

Returns an `ADKResult`: the final response text, every event of the invocation, and the session
after it. The run's stored output (what ``agentspan.get(run_id).result()`` returns in another
process) is ``{"text", "app_name", "user_id", "session_id"}``.

Options (keyword arguments of ``agentspan.run``/``start``/``resume``): ``user_id`` (default
``"user"``), ``app_name`` (default: the App's or the root agent's name), ``state`` (initial state
of a new session; JSON), ``run_config`` (ADK ``RunConfig``) and ``plugins`` (more ADK plugins).
The session id is ``agentspan.run``'s ``session_id`` (default: the run id). ``user_id``,
``app_name`` and ``state`` are stored with the run, so a worker resumes it in the same session.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from google.adk.agents import BaseAgent, RunConfig
from google.adk.agents.invocation_context import LlmCallsLimitExceededError
from google.adk.apps import App
from google.adk.apps.app import validate_app_name
from google.adk.artifacts import BaseArtifactService, InMemoryArtifactService
from google.adk.events import Event
from google.adk.memory import BaseMemoryService, InMemoryMemoryService
from google.adk.plugins import BasePlugin
from google.adk.runners import Runner
from google.adk.sessions import Session
from google.adk.tools import BaseTool
from google.adk.workflow import BaseNode, Workflow
from google.genai import types
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

import agentspan
from agentspan import jsontext
from agentspan.adapters import Adapter
from agentspan.errors import AgentspanError, ConfigurationError, StoreError
from agentspan.records import JSON, StepKind
from agentspan.testing import MockSetup, StandIns
from agentspan.tools import DEFAULT_TOOL_OPTIONS, ToolOptions, tool_options
from agentspan_adk import _codec, _compaction, _confirmations, _managed
from agentspan_adk._reading import agent_path, options_of
from agentspan_adk._roots import check_agent_root
from agentspan_adk._session import SeededSessionService, SessionSnapshots
from agentspan_adk.plugin import AgentspanPlugin

T = TypeVar("T")
DEFAULT_USER = "user"
SESSION_STEP = "adk:session"
_OPTIONS = ("user_id", "app_name", "state", "run_config", "plugins", "artifact_service", "memory_service")


@dataclass
class ADKResult:
    """What ``agentspan.run(adk_agent, ...)`` returns.

    Attributes:
        text: The final response text: the text of the last final-response event an agent
            produced (None when the invocation ended without text, e.g. on a long-running tool).
        events: Every event the invocation yielded, in order (model responses, function calls
            and responses, transfers, confirmation requests); replayed calls included.
        session: The ADK session after the run (its ``id``, ``state`` and all ``events``).
    """

    text: str | None
    events: list[Event]
    session: Session

    @property
    def session_id(self) -> str:
        return self.session.id


class ADKAdapter(Adapter):
    """Makes Google ADK agents durable: ``agentspan.run(agent_or_app, "prompt", session_id=...)``."""

    framework = _managed.FRAMEWORK
    preload = ("google.adk.agents", "google.adk.runners", "google.adk.flows.llm_flows.auto_flow",
               "google.adk.workflow._workflow", "google.genai.types")
    streams = True
    continued_elsewhere = MappingProxyType({
        _managed.RUNNER_FRAMEWORK: "AgentspanPlugin opened it in your own ADK Runner, and only that Runner (with "
        "its session service) continues it: run the same message on the same session there (a failed run once "
        "`agentspan runs retry RUN_ID` made it pending)"})

    def accepts(self, target: Any) -> bool:
        """Whether ``target`` is an ADK agent or App (any ADK ``BaseNode`` counts as ADK's).

        Raises:
            ConfigurationError: ``target`` is, or is an App rooted at, an ADK graph workflow
                other than a ``Workflow`` (`agentspan_adk._roots`). Raised here, where every entry point (``run``,
                ``start``, ``resume``, ``serve``, the testing kit) asks before storing anything,
                rather than from ``agent_name`` (skipped when the caller names the agent).
        """
        if isinstance(target, App):
            check_agent_root(target.root_agent, workflows=True)
            return True
        if isinstance(target, BaseNode):  # (BaseAgent is one)
            check_agent_root(target, workflows=True)
            return True
        return False

    def agent_name(self, target: Any) -> str:
        # the ignore: ADK 2 types App.root_agent as any BaseNode (None refused by App's validator)
        return str(target.root_agent.name if isinstance(target, App) else target.name)  # type: ignore[union-attr]

    def encode_input(self, input: Any) -> JSON:
        if isinstance(input, str):
            return input
        if isinstance(input, types.Content):
            if not input.parts:
                raise ConfigurationError("agentspan.run(adk_agent, input): the types.Content has no parts")
            return {"content": _codec.dump_content(input)}
        raise ConfigurationError(
            f"agentspan.run(adk_agent, input) takes a str or a google.genai types.Content, not {type(input).__name__}")

    def encode_options(self, options: dict[str, Any]) -> dict[str, JSON]:
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise ConfigurationError(f"unknown option(s) for an ADK run: {', '.join(sorted(unknown))} "
                                     f"(known: {', '.join(_OPTIONS)})")
        stored: dict[str, JSON] = {}
        for name in ("user_id", "app_name"):
            value = options.get(name)
            if value is not None:
                if not isinstance(value, str) or not value:
                    raise ConfigurationError(f"{name} must be a non-empty str, not {value!r}")
                stored[name] = value
        if "app_name" in stored:
            try:
                validate_app_name(stored["app_name"])
            except ValueError as error:
                raise ConfigurationError(f"app_name: {error}") from None
        state = options.get("state")
        if state is not None:
            if not isinstance(state, Mapping) or not _codec.is_json(dict(state)):
                raise ConfigurationError("state must be a dict of JSON values (the new session's initial state)")
            stored["state"] = dict(state)
        run_config = options.get("run_config")
        if run_config is not None and not isinstance(run_config, RunConfig):
            raise ConfigurationError(f"run_config must be a google.adk RunConfig, not {type(run_config).__name__}")
        plugins = options.get("plugins")
        if plugins is not None and not all(isinstance(p, BasePlugin) for p in plugins):
            raise ConfigurationError("plugins must be a list of google.adk BasePlugin instances")
        for name, kind in (("artifact_service", BaseArtifactService), ("memory_service", BaseMemoryService)):
            service = options.get(name)
            if service is not None and not isinstance(service, kind):
                raise ConfigurationError(f"{name} must be a google.adk {kind.__name__}, not {type(service).__name__}")
        return stored

    def instrument(self, on: bool) -> str:
        """`agentspan.instrument` support (see `agentspan_adk._instrument`)."""
        from agentspan_adk._instrument import instrument

        return instrument(on)

    def encode_output(self, result: Any) -> JSON:
        session: Session = result.session
        return {"text": result.text, "app_name": session.app_name, "user_id": session.user_id,
                "session_id": session.id}

    def mock(self, target: Any, stand_ins: StandIns, options: dict[str, Any]) -> MockSetup:
        """`agentspan.testing.mock_run` support: scripted turns for every agent of the tree (see
        `agentspan_adk._mock`)."""
        from agentspan_adk._mock import mock_setup

        return mock_setup(target, stand_ins, options)

    async def execute(self, run: agentspan.ActiveRun, target: Any, input: JSON, options: dict[str, Any]) -> Any:
        if _managed.RUNNER_OPTION in run.run.options:
            raise ConfigurationError(
                f"run {run.run_id!r} was opened by AgentspanPlugin in a user-built Runner; continue it by running "
                "that session again through the Runner (with the same message)")
        settings = {**run.run.options, **options}
        app = target if isinstance(target, App) else None
        # (a BaseAgent or a graph Workflow: `accepts` refused every other root)
        agent: BaseAgent | Workflow = app.root_agent if app is not None else target  # type: ignore[assignment]
        app_name = app.name if app is not None else settings.get("app_name") or agent.name
        user_id = settings.get("user_id") or DEFAULT_USER
        session_id = run.run.session_id or run.run_id
        snapshots = SessionSnapshots(run.store, app_name, user_id, session_id)
        base_id = await run.step(kind=StepKind.CHECKPOINT, key=SESSION_STEP, name="session",
                                 input={"thread": snapshots.thread_id}, input_hash=None,
                                 invoke=_later(snapshots.latest_id), dump=_identity, load=_identity,
                                 durable_start=False)
        service = SeededSessionService()
        await service.seed(snapshots.load(base_id), app_name=app_name, user_id=user_id, session_id=session_id,
                     state=settings.get("state"))
        plugin = AgentspanPlugin()
        plugin.keep_journals = True
        extra = [p for p in [*(app.plugins if app else []), *(settings.get("plugins") or [])]
                 if not isinstance(p, AgentspanPlugin)]
        if app is not None:
            # (ADK's compaction after the invocation reads the App's config, not the invocation's:
            # its summarizer journals into this run; see `agentspan_adk._compaction`)
            root = agent if isinstance(agent, BaseAgent) else None  # (a workflow: no root agent's model)
            app = app.model_copy(update={"plugins": [plugin, *extra], "events_compaction_config":
                                         _compaction.journaled(app.events_compaction_config, root, run)})
        else:
            app = App(name=app_name, root_agent=agent, plugins=[plugin, *extra])
        # As `InMemoryRunner`: artifact and memory services in this process unless given (a
        # replayed tool call does not save its artifact again: give a lasting service for those).
        runner = Runner(app=app, session_service=service,
                        artifact_service=settings.get("artifact_service") or InMemoryArtifactService(),
                        memory_service=settings.get("memory_service") or InMemoryMemoryService())
        try:
            events = await _invoke(run, runner, plugin, agent, user_id, session_id, _message(input),
                                   settings.get("run_config"))
        except RuntimeError as error:  # ADK wraps what a plugin raises: surface Agentspan's own error
            raise _agentspan_cause(error) or error from None
        session = await service.get_session(app_name=app_name, user_id=user_id, session_id=session_id)
        if session is None:
            raise StoreError(f"ADK session {session_id!r} vanished from the run's session service")
        snapshots.save(run.run_id, base_id, session)
        return ADKResult(text=_final_text(events), events=events, session=session)


async def _invoke(run: agentspan.ActiveRun, runner: Runner, plugin: AgentspanPlugin, root: BaseAgent | Workflow,
                  user_id: str,
                  session_id: str, message: types.Content, run_config: RunConfig | None) -> list[Event]:
    """Runs the invocation, answering its confirmation requests, until it ends without one.

    The answers of one agent (one branch) go in one message; those of parallel branches each in a
    message of its own, one after the other: ADK resumes one branch per message (the others'
    answers in the same message were dropped, their approved tools never ran)."""
    events: list[Event] = []
    sink, seen = run.events, Counter[Hashable]()
    queued: list[list[types.Part]] = []
    answered: set[str] = set()
    while True:
        batch = []
        async for event in runner.run_async(user_id=user_id, session_id=session_id, new_message=message,
                                            run_config=run_config):
            batch.append(event)
            if sink is not None:  # `agentspan.run_streamed`: each event once, however often the run is executed
                sink.emit(event, key=event_key(event, seen))
        events.extend(batch)
        requests = [r for r in _confirmations.pending_requests(batch) if r.call.id not in answered]
        if requests and isinstance(root, Workflow):
            raise ConfigurationError(
                f"a tool of ADK workflow {root.name!r} asked for a confirmation ({requests[0].tool}): human input "
                "inside a graph workflow is not made durable by Agentspan (use @agentspan.tool(approval_required=True) "
                "on the tool instead, or run the workflow without Agentspan)")
        if requests and isinstance(root, BaseAgent):
            queued.extend(_answers_by_branch(run, plugin, root, batch, requests))
            answered.update(str(r.call.id) for r in requests)
        if not queued:
            return events
        message = types.Content(role="user", parts=queued.pop(0))


def _answers_by_branch(run: agentspan.ActiveRun, plugin: AgentspanPlugin, root: BaseAgent, batch: list[Event],
                       requests: list[_confirmations.Request]) -> list[list[types.Part]]:
    """The decisions on ``requests`` as function responses, grouped by branch and agent."""
    planned = []
    for request in requests:
        journal = plugin.journal(_invocation_of(batch, request))
        if journal is None:  # pragma: no cover - the plugin journals every invocation it runs
            raise StoreError("an ADK confirmation request came from an invocation that was not journaled")
        author = root.find_agent(request.author) or root
        key = _confirmations.approval_key(journal, request, agent_path(author))
        planned.append((request, key, _tool_options(author, request.tool)))
    groups: dict[tuple[str | None, str], list[types.Part]] = {}
    for request, part in zip(requests, _confirmations.decide(run, planned), strict=True):
        groups.setdefault((request.branch, request.author), []).append(part)
    return list(groups.values())


def event_key(event: Event, seen: Counter[Hashable]) -> Hashable:
    """Names an event of a streamed run the same way in every execution of the run: its author,
    what its parts say (texts; function calls and responses by name and value, not by ADK's call
    ids, which are new in every execution) and how many such events came before it."""
    parts: list[tuple[str, ...]] = []
    for part in (event.content.parts or []) if event.content is not None else []:
        if part.function_call is not None:
            parts.append(("call", str(part.function_call.name), _canonical(part.function_call.args)))
        elif part.function_response is not None:
            parts.append(("response", str(part.function_response.name), _canonical(part.function_response.response)))
        else:
            parts.append(("text", part.text or ""))
    base = (event.author, tuple(parts), bool(event.partial))
    seen[base] += 1
    return (*base, seen[base])


def _canonical(value: Any) -> str:
    return jsontext.canonical_text(to_jsonable_python(value, fallback=str))


def _invocation_of(events: list[Event], request: _confirmations.Request) -> str:
    for event in events:
        if any(c.id == request.call.id for c in event.get_function_calls()):
            return event.invocation_id
    return ""  # pragma: no cover - the request came from one of these events


def _tool_options(agent: BaseAgent, name: str) -> ToolOptions:
    for tool in getattr(agent, "tools", None) or []:
        if isinstance(tool, BaseTool) and tool.name == name:
            return options_of(tool)
        if callable(tool) and getattr(tool, "__name__", None) == name:
            return tool_options(tool) or DEFAULT_TOOL_OPTIONS
    return DEFAULT_TOOL_OPTIONS


def _message(input: JSON) -> types.Content:
    if isinstance(input, str):
        return types.Content(role="user", parts=[types.Part(text=input)])
    try:
        return types.Content.model_validate(input["content"])
    except (KeyError, TypeError, ValidationError) as error:
        raise ConfigurationError(f"stored ADK run input is not a message: {error}") from None


def _final_text(events: list[Event]) -> str | None:
    for event in reversed(events):
        if event.author != "user" and event.is_final_response():
            text = _codec.final_text(event)
            if text is not None:
                return text
    return None


def _agentspan_cause(error: BaseException) -> Exception | None:
    """What the plugin raised in a callback, out of ADK's wrapping: Agentspan's errors, and ADK's
    own `max_llm_calls` error when the plugin counted a replayed model call past it."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, AgentspanError | LlmCallsLimitExceededError):
            return cause
        cause = cause.__cause__
    return None


def _later(fn: Callable[[], T]) -> Callable[[], Any]:
    async def call() -> T:
        return fn()

    return call


def _identity(value: T) -> T:
    return value
