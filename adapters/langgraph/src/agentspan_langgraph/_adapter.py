"""The LangGraph adapter: ``agentspan.run(graph, input, thread_id=...)`` for compiled graphs.

A run is ``graph.ainvoke(input, config)`` on a thread whose checkpoints live in the Agentspan
store, with every model and tool call inside the nodes journaled:

- **Checkpoints.** A graph compiled without a checkpointer, or with LangGraph's in-memory one,
  runs as a copy compiled with an ``AgentspanSaver`` on the run's store; a graph compiled with a
  durable checkpointer (``AgentspanSaver``, ``SqliteSaver``, ``PostgresSaver``, ...) keeps it.
  Checkpoints are written with ``durability="sync"`` (each superstep is stored before the next one
  starts). The ``durability`` option can trade that for speed (``"async"``, ``"exit"``); a crash
  may then lose checkpoints, and the calls of the steps they would have recorded run again.
- **Thread.** ``thread_id`` (option, or ``config["configurable"]["thread_id"]``) defaults to the
  run id. Every checkpoint of the run carries ``agentspan_run_id`` in its metadata.
- **Resume.** A run whose input is already on its thread (a checkpoint of the thread carries its
  run id) continues with ``ainvoke(None)``:
  LangGraph restarts at the node that had not finished, and the journal replays the model and
  tool calls that node had already made. A run waiting on ``interrupt()`` continues with the
  human decision (see `agentspan_langgraph._approvals`).
- **Result.** ``agentspan.run`` returns what ``graph.invoke`` returns; the run's stored output is
  that value as JSON (messages in langchain-core's format: ``langchain_core.load.load`` revives
  them).
- **Trail.** Model calls are ``llm`` steps (provider, model, tokens from ``usage_metadata``,
  duration), tool calls ``tool`` steps, finished nodes ``checkpoint`` steps.

Options (keyword arguments of ``agentspan.run``/``start``/``resume``): ``thread_id``, ``config``
(a ``RunnableConfig``: ``configurable``, ``callbacks``, ``recursion_limit``, ``tags``,
``metadata``), ``context`` (LangGraph's runtime context) and ``durability``. The JSON-compatible
parts are stored with the run, so a worker (``agentspan.serve``) resumes on the same thread
with the same settings.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any, cast

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from langgraph.types import Command

import agentspan
from agentspan.adapters import Adapter
from agentspan.errors import ConfigurationError
from agentspan.events import EventSink
from agentspan.secrets import looks_secret
from agentspan.stores.base import Store
from agentspan_langgraph import _context, _patches
from agentspan_langgraph._approvals import resume_command
from agentspan_langgraph._codec import from_json, to_json
from agentspan_langgraph._nodes import NodeRecorder
from agentspan_langgraph.saver import AgentspanSaver

if TYPE_CHECKING:
    from agentspan.testing import MockSetup, StandIns

RUN_ID_METADATA = "agentspan_run_id"
"""The checkpoint metadata key naming the Agentspan run that wrote a checkpoint."""

_OPTIONS = ("thread_id", "config", "context", "durability", "stream_mode")
_DURABILITY = ("sync", "async", "exit")
_STORED_CONFIG = ("configurable", "recursion_limit", "tags", "metadata")
_BY_ENTRY = ("configurable", "metadata")  # stored entry by entry; given again, merged entry by entry


class LangGraphAdapter(Adapter):
    """Makes compiled LangGraph graphs durable: ``agentspan.run(graph, input, thread_id=...)``."""

    framework = "langgraph"
    preload = ("langgraph.graph", "langgraph.prebuilt")
    streams = True

    def __init__(self) -> None:
        self._durable: weakref.WeakKeyDictionary[Pregel, tuple[Store, Pregel]] = weakref.WeakKeyDictionary()

    def accepts(self, target: Any) -> bool:
        return isinstance(target, (Pregel, StateGraph))

    def agent_name(self, target: Any) -> str:
        _check_graph(target)
        return graph_name(target)

    def encode_input(self, input: Any) -> Any:
        if isinstance(input, Command):
            raise ConfigurationError(
                "agentspan.run(graph, Command(...)) is not supported: a run starts from an input, and "
                "interrupts are resumed by approving or rejecting them (handle.approve()/reject())")
        return to_json(input)

    def encode_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise ConfigurationError(f"unknown option(s) for a LangGraph run: {', '.join(sorted(unknown))} "
                                     f"(known: {', '.join(_OPTIONS)})")
        durability = options.get("durability")
        if durability is not None and durability not in _DURABILITY:
            raise ConfigurationError(f"durability={durability!r}: expected one of {', '.join(_DURABILITY)}")
        config = options.get("config")
        if config is not None and not isinstance(config, Mapping):
            raise ConfigurationError(f"config must be a RunnableConfig dict, not {type(config).__name__}")
        _check_configurable((config or {}).get("configurable") or {})
        thread_id = options.get("thread_id")
        if thread_id is not None and not isinstance(thread_id, (str, int)):
            raise ConfigurationError(f"thread_id must be a str or int, not {type(thread_id).__name__}")
        stored: dict[str, Any] = {}
        if thread_id is not None:
            stored["thread_id"] = str(thread_id)
        if durability is not None:
            stored["durability"] = durability
        # Given, but not kept with the run (no JSON keeps them, or a credential: `looks_secret`,
        # never stored): a resume, retry or worker must give them again.
        unstored: list[str] = []
        if config:
            kept: dict[str, Any] = {}
            for key in _STORED_CONFIG:
                if key not in config:
                    continue
                if key in _BY_ENTRY and isinstance(config[key], Mapping):
                    entries = {k: v for k, v in config[key].items()
                               if isinstance(k, str) and _is_json(v) and not looks_secret(k)}
                    unstored += [f"config.{key}.{k}" for k in config[key] if k not in entries]
                    if entries:
                        kept[key] = entries
                elif _is_json(config[key]):
                    kept[key] = config[key]
                else:
                    unstored.append(f"config.{key}")
            if kept:
                stored["config"] = kept
        if options.get("context") is not None:
            context = to_json(options["context"])
            if _round_trips(options["context"], context) and not _holds_secret(context):
                stored["context"] = context
            else:
                unstored.append("context")
        if unstored:
            stored[UNSTORED] = unstored
        return stored

    def check_options(self, run: agentspan.Run, options: dict[str, Any]) -> None:
        """A run started with options not stored with it (a context holding a client object, a
        ``configurable`` entry that is one, an ``api_key`` entry) goes on only when they are given again."""
        missing = [path for path in run.options.get(UNSTORED) or [] if not _given(options, path)]
        if missing:
            raise ConfigurationError(
                f"run {run.id!r} was started with {', '.join(missing)} that is not stored with the run (not "
                "JSON, or a credential by its name): give the same value(s) again to resume or retry it (a worker: "
                "serve(..., options_for=))")

    def encode_output(self, result: Any) -> Any:
        return to_json(result)

    def default_session(self, options: dict[str, Any]) -> str | None:
        """A run's session is its thread (``thread_id``, or the config's), as for a direct invocation."""
        config = options.get("config")
        configurable = (config.get("configurable") or {}) if isinstance(config, Mapping) else {}
        thread_id = options.get("thread_id") or configurable.get("thread_id")
        return None if thread_id is None else str(thread_id)

    async def execute(self, run: agentspan.ActiveRun, target: Any, input: Any, options: dict[str, Any]) -> Any:
        _check_graph(target)
        _patches.install()
        graph = self._durable_graph(target, run.store)
        settings = _settings(run, options)
        config = _config(run, settings)
        if await _input_taken(graph, config, run.run_id):
            payload: Any = resume_command(run, await graph.aget_state(config))  # None: continue
        else:
            payload = from_json(input)
        while True:
            result = await _invoke(graph, run, payload, config, settings)
            if not (isinstance(result, dict) and result.get("__interrupt__")):
                return result
            payload = resume_command(run, await graph.aget_state(config))
            if payload is None:  # interrupts answered meanwhile by another path: nothing to deliver
                return result

    def mock(self, target: Any, stand_ins: StandIns, options: dict[str, Any]) -> MockSetup:
        """`agentspan.testing.mock_run` support: scripted answers for every chat model the graph calls."""
        from agentspan_langgraph._mock import mock_setup

        _check_graph(target)
        return mock_setup(target, stand_ins, options)

    def _durable_graph(self, graph: Pregel, store: Store) -> Pregel:
        """The graph itself if its checkpointer is durable, else a copy checkpointing to ``store``."""
        checkpointer = graph.checkpointer
        if isinstance(checkpointer, BaseCheckpointSaver) and not isinstance(checkpointer, InMemorySaver):
            return graph
        cached = self._durable.get(graph)
        if cached is not None and cached[0] is store:
            return cached[1]
        durable = graph.copy(update={"checkpointer": AgentspanSaver(store)})
        self._durable[graph] = (store, durable)
        return durable


DEFAULT_NAME = "LangGraph"
"""The name LangGraph gives a graph that was given none."""


def graph_name(graph: Pregel) -> str:
    """The agent name a graph's runs are recorded under: its name; for a functional-API workflow
    left with LangGraph's default name (``@entrypoint`` builds an unnamed graph), its function's
    (the name of its one node), so that workflows are told apart in the trail and by workers."""
    name = str(getattr(graph, "name", None) or DEFAULT_NAME)
    if name != DEFAULT_NAME or getattr(graph, "builder", None) is not None:  # (a StateGraph keeps its builder)
        return name
    nodes = [n for n in getattr(graph, "nodes", None) or () if not str(n).startswith("__")]
    return str(nodes[0]) if len(nodes) == 1 else name


async def _input_taken(graph: Pregel, config: RunnableConfig, run_id: str) -> bool:
    """Whether the run already gave its input to the thread (some checkpoint carries its id)."""
    checkpointer = cast(BaseCheckpointSaver, graph.checkpointer)  # made durable by _durable_graph
    async for _ in checkpointer.alist(config, filter={RUN_ID_METADATA: run_id}, limit=1):
        return True
    return False


def _check_graph(target: Any) -> None:
    if isinstance(target, StateGraph):
        raise ConfigurationError("agentspan.run() takes a compiled graph: pass builder.compile(), not the StateGraph")
    before, after = target.interrupt_before_nodes, target.interrupt_after_nodes
    if before or after:
        raise ConfigurationError(
            f"graph {getattr(target, 'name', '?')!r} was compiled with static breakpoints "
            f"(interrupt_before={before!r}, interrupt_after={after!r}); durable runs take human decisions "
            "through interrupt() inside a node or tool, which becomes an Agentspan approval")


def _check_configurable(configurable: Mapping[str, Any]) -> None:
    if configurable.get("checkpoint_id"):
        raise ConfigurationError("config['configurable']['checkpoint_id'] (time travel) is not supported by "
                                 "durable runs: a run always continues from its thread's latest checkpoint")


def _settings(run: agentspan.ActiveRun, options: Mapping[str, Any]) -> dict[str, Any]:
    """The run's options: those stored when it started, overridden by the ones given now."""
    stored = dict(run.run.options)
    if "context" in stored:
        stored["context"] = from_json(stored["context"])
    merged = {**stored, **options}
    kept, given = stored.get("config"), options.get("config")
    if isinstance(kept, Mapping) and isinstance(given, Mapping):  # a config given again adds to the stored one
        entries = {key: {**(kept.get(key) or {}), **(given.get(key) or {})} for key in _BY_ENTRY}
        merged["config"] = {**kept, **given, **{key: value for key, value in entries.items() if value}}
    return merged


def _config(run: agentspan.ActiveRun, settings: Mapping[str, Any]) -> RunnableConfig:
    """The ``RunnableConfig`` of every invoke of the run: thread, run id metadata, node recorder."""
    user: Mapping[str, Any] = settings.get("config") or {}
    configurable = dict(user.get("configurable") or {})
    _check_configurable(configurable)
    configurable["thread_id"] = str(settings.get("thread_id") or configurable.get("thread_id") or run.run_id)
    config: dict[str, Any] = {**user, "configurable": configurable,
                              "metadata": {**(user.get("metadata") or {}), RUN_ID_METADATA: run.run_id}}
    return RunnableConfig(**config)  # type: ignore[typeddict-item]


async def _invoke(graph: Pregel, run: agentspan.ActiveRun, payload: Any, config: RunnableConfig,
                  settings: Mapping[str, Any]) -> Any:
    """One ``ainvoke`` with its calls journaled and its nodes recorded."""
    invocation = _context.Invocation(run)
    invoke_config = RunnableConfig(**{**config, "callbacks": with_recorder(config.get("callbacks"), invocation)})
    kwargs: dict[str, Any] = {"durability": settings.get("durability") or "sync"}
    if settings.get("context") is not None:
        kwargs["context"] = settings["context"]
    token = _context.begin(invocation)
    try:
        if run.events is None:
            return await graph.ainvoke(payload, invoke_config, **kwargs)
        return await _streamed(graph, run.events, payload, invoke_config, settings.get("stream_mode") or "updates",
                               kwargs)
    finally:
        _context.end(token)


async def _streamed(graph: Pregel, sink: EventSink, payload: Any, config: RunnableConfig, mode: Any,
                    kwargs: dict[str, Any]) -> Any:
    """What ``ainvoke`` returns (the latest values, with ``__interrupt__`` when interrupted),
    while the chunks of the caller's ``stream_mode`` go to ``sink`` as ``astream`` yields them
    (``(mode, chunk)`` pairs when several modes were asked for).

    A graph goes on from its checkpoint when it is executed again, so its chunks are new, but for
    the messages of a node that runs again: its model calls are served from the journal with the
    same message ids, and a message id is delivered once (its first chunk; `_message_key`).
    """
    modes = [mode] if isinstance(mode, str) else list(mode)
    latest: Any = None
    interrupts: list[Any] = []
    seen: Counter[Hashable] = Counter()
    asked: list[Any] = list(dict.fromkeys([*modes, "updates", "values"]))  # the caller's modes, as given
    async for kind, chunk in graph.astream(payload, config, stream_mode=asked, **kwargs):
        if kind in modes:
            key = _message_key(chunk, seen) if kind == "messages" else None
            sink.emit(chunk if isinstance(mode, str) else (kind, chunk), key=key)
        if kind == "updates" and isinstance(chunk, dict) and chunk.get("__interrupt__") is not None:
            interrupts.extend(chunk["__interrupt__"])
        elif kind == "values":
            latest = chunk
    return {**latest, "__interrupt__": interrupts} if interrupts else latest


def _message_key(chunk: Any, seen: Counter[Hashable]) -> Hashable | None:
    """A ``messages`` chunk's name: its message id and how many chunks of that id came before."""
    message = chunk[0] if isinstance(chunk, tuple) and chunk else chunk
    message_id = getattr(message, "id", None)
    if not message_id:
        return None
    seen[message_id] += 1
    return ("message", message_id, seen[message_id])


def with_recorder(callbacks: Any, invocation: _context.Invocation, *, record: bool = True) -> Any:
    recorder = NodeRecorder(invocation, record=record)
    if callbacks is None:
        return [recorder]
    if isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
        manager.add_handler(recorder, inherit=True)
        return manager
    return [*callbacks, recorder]


UNSTORED = "unstored"
"""The stored option listing the options a run was started with that no JSON keeps."""


def _round_trips(value: Any, encoded: Any) -> bool:
    """Whether ``encoded`` (``to_json(value)``) gives ``value`` back: not when a part of it was only
    kept as its text (an object of no JSON type)."""
    try:
        return _is_json(encoded) and bool(from_json(encoded) == value)
    except Exception:
        return False


def _given(options: Mapping[str, Any], path: str) -> bool:
    """Whether ``options`` hold the option at ``path`` (``context``, ``config.<key>``,
    ``config.configurable.<key>``)."""
    found: Any = options
    for part in path.split(".", 2):  # (a configurable key's own dots stay in its part)
        if not isinstance(found, Mapping) or part not in found:
            return False
        found = found[part]
    return True


def _holds_secret(value: Any) -> bool:
    """Whether a JSON value has a key that names a credential (`looks_secret`) at any depth."""
    if isinstance(value, dict):
        return any(looks_secret(k) or _holds_secret(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_secret(v) for v in value)
    return False


def _is_json(value: Any) -> bool:
    """Whether ``value`` is plain JSON (what can be stored with the run and given back as is)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False
