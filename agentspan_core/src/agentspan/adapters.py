"""The adapter registry: framework adapters register under the entry-point group
``agentspan.adapters``; the core picks the one that accepts a given agent object."""

from __future__ import annotations

import abc
import threading
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agentspan.errors import ConfigurationError
from agentspan.records import JSON, Run
from agentspan.runtime import ActiveRun

if TYPE_CHECKING:
    from agentspan.testing.stand_ins import MockSetup, StandIns

ENTRY_POINT_GROUP = "agentspan.adapters"


class Adapter(abc.ABC):
    """Translates one framework's runner into journaled core calls.

    An adapter only translates: storage, leases, replay and approvals live in the core.
    """

    framework: str
    """The framework's name as stored on runs (``"openai-agents"``, ``"langgraph"``, ``"adk"``)."""
    streams: bool = False
    """Whether `execute` streams the framework's events into ``run.events`` when it is set
    (`agentspan.run_streamed`)."""
    preload: tuple[str, ...] = ()
    """Modules of the framework that running a target imports besides this adapter's own module:
    the crash kit's fork server imports them once, so a crash test's child does not."""
    continued_elsewhere: Mapping[str, str] = MappingProxyType({})
    """Frameworks recorded on runs of this framework that only the framework's own runner can
    continue (a plugin's runs in a user-built runner), each with how to continue one: `resume`
    and `retry` of such a run with this adapter's targets refuse with that text."""

    @abc.abstractmethod
    def accepts(self, target: Any) -> bool:
        """Whether ``target`` (an agent, graph, ...) belongs to this framework."""

    @abc.abstractmethod
    def agent_name(self, target: Any) -> str:
        """The name runs of ``target`` are recorded under (workers match on it)."""

    def encode_input(self, input: Any) -> JSON:
        """Converts the user's input to the JSON stored on the run."""
        return input

    def encode_options(self, options: dict[str, Any]) -> dict[str, JSON]:
        """Keeps the JSON-compatible runner options needed again on resume."""
        return {}

    def check_options(self, run: Run, options: dict[str, Any]) -> None:
        """Refuses, before a stored run is taken up again (`agentspan.resume`, `agentspan.retry`, a
        worker's claim, which passes no options), runner ``options`` its execution cannot go on
        with; accepts anything by default.

        Raises:
            ConfigurationError: What the run needs and ``options`` lack (named in the message).
        """
        return None

    def default_session(self, options: dict[str, Any]) -> str | None:
        """The session a run is recorded under when the caller names none (a conversation the
        framework's own options name, such as a LangGraph thread); None by default."""
        return None

    @abc.abstractmethod
    async def execute(self, run: ActiveRun, target: Any, input: JSON, options: dict[str, Any]) -> Any:
        """Runs the framework's own loop from the start with every call routed through ``run``.

        Called again for each attempt (after a crash or an approval): completed calls replay
        from the journal.
        """

    @abc.abstractmethod
    def encode_output(self, result: Any) -> JSON:
        """Converts the framework's result to the JSON stored as the run's output."""

    def mock(self, target: Any, stand_ins: StandIns, options: dict[str, Any]) -> MockSetup:
        """Prepares a run of ``target`` for `agentspan.testing.mock_run` (optional hook).

        The returned setup makes every model call of the run take its response from
        ``stand_ins.next_turn(...)`` and every tool named in ``stand_ins.stubbed`` call
        ``stand_ins.call_stub(...)``; nothing else changes. Called once per process that
        executes the run (a crash test's child process too).

        Args:
            target: The agent or graph under test.
            stand_ins: The scripted model responses and tool stand-ins.
            options: The runner options the test gave.

        Raises:
            ConfigurationError: The adapter has no testing support, or a stand-in names a tool
                the target does not have.
        """
        raise ConfigurationError(
            f"agentspan.testing.mock_run does not support {self.framework} targets: the {self.framework} "
            "adapter has no mock() hook")

    def instrument(self, on: bool) -> str | None:
        """Patches (``on``) or restores (not ``on``) the framework's own entry points so that
        unchanged code runs durably (`agentspan.instrument`). Both directions are idempotent.

        Returns:
            What the patch does, for the caller's log; None when this adapter has no such hook.
        """
        return None

    def demo(self) -> None:  # pragma: no cover - optional
        """Runs this adapter's self-contained demo (``agentspan demo``)."""
        raise ConfigurationError(f"the {self.framework} adapter has no demo")


_lock = threading.Lock()
_explicit: list[Adapter] = []
_loaded: dict[str, Adapter | None] = {}  # entry point name -> adapter (None: framework missing)


_found: list[EntryPoint] | None = None


def _entry_points() -> list[EntryPoint]:
    global _found
    if _found is None:  # scanning the installed distributions costs milliseconds: once
        _found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    return _found


def _load(ep: EntryPoint) -> Adapter | None:
    with _lock:
        if ep.name not in _loaded:
            try:
                _loaded[ep.name] = ep.load()()
            except ImportError:
                _loaded[ep.name] = None  # the framework itself is not installed
        return _loaded[ep.name]


def _all() -> list[Adapter]:
    loaded = [a for a in (_load(ep) for ep in _entry_points()) if a is not None]
    return [*_explicit, *[a for a in loaded if a.framework not in {e.framework for e in _explicit}]]


def registered() -> list[Adapter]:
    """Returns the installed adapters (each entry point is loaded once, on first need)."""
    return _all()


def register(adapter: Adapter) -> None:
    """Registers an adapter explicitly (ahead of those from entry points)."""
    with _lock:
        _explicit[:] = [adapter, *[a for a in _explicit if a.framework != adapter.framework]]


def adapter_for(target: Any) -> Adapter:
    """Returns the adapter that accepts ``target``.

    An entry point is named after the top-level package of the framework its adapter serves
    (``agents``, ``langgraph``, ``google``): the adapters of the frameworks ``target``'s classes
    come from are tried first, so a run does not import every installed framework (LangGraph
    alone takes ~0.7 s to import). The others are tried after them.

    Raises:
        ConfigurationError: No installed adapter accepts it.
    """
    adapter: Adapter | None
    for adapter in _explicit:
        if adapter.accepts(target):
            return adapter
    roots = {cls.__module__.partition(".")[0] for cls in type(target).__mro__}
    eps = _entry_points()
    for ep in sorted(eps, key=lambda ep: ep.name not in roots):
        adapter = _load(ep)
        if adapter is not None and adapter.accepts(target):
            return adapter
    names = ", ".join(a.framework for a in registered()) or "none"
    raise ConfigurationError(
        f"no Agentspan adapter accepts {type(target).__module__}.{type(target).__qualname__} "
        f"(installed adapters: {names}); install e.g. 'agentspan[openai-agents]'"
    )


def adapter_named(framework: str) -> Adapter:
    """Returns the adapter for a framework name stored on a run."""
    for adapter in _all():
        if adapter.framework == framework:
            return adapter
    raise ConfigurationError(f"no Agentspan adapter for framework {framework!r} is installed")
