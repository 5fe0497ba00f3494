"""The adapter registry: framework adapters register under the entry-point group
``agentspan.adapters``; the core picks the one that accepts a given agent object."""

from __future__ import annotations

import abc
import threading
from importlib.metadata import entry_points
from typing import Any

from agentspan.errors import ConfigurationError
from agentspan.records import JSON
from agentspan.runtime import ActiveRun

ENTRY_POINT_GROUP = "agentspan.adapters"


class Adapter(abc.ABC):
    """Translates one framework's runner into journaled core calls.

    An adapter only translates: storage, leases, replay and approvals live in the core.
    """

    framework: str
    """The framework's name as stored on runs (``"openai-agents"``, ``"langgraph"``, ``"adk"``)."""

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

    @abc.abstractmethod
    async def execute(self, run: ActiveRun, target: Any, input: JSON, options: dict[str, Any]) -> Any:
        """Runs the framework's own loop from the start with every call routed through ``run``.

        Called again for each attempt (after a crash or an approval): completed calls replay
        from the journal.
        """

    @abc.abstractmethod
    def encode_output(self, result: Any) -> JSON:
        """Converts the framework's result to the JSON stored as the run's output."""

    def demo(self) -> None:  # pragma: no cover - optional
        """Runs this adapter's self-contained demo (``agentspan demo``)."""
        raise ConfigurationError(f"the {self.framework} adapter has no demo")


_lock = threading.Lock()
_adapters: list[Adapter] | None = None


def registered() -> list[Adapter]:
    """Returns the installed adapters (loaded from entry points once)."""
    global _adapters
    with _lock:
        if _adapters is None:
            found: list[Adapter] = []
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    found.append(ep.load()())
                except ImportError:
                    continue  # the framework itself is not installed
            _adapters = found
        return list(_adapters)


def register(adapter: Adapter) -> None:
    """Registers an adapter explicitly (in addition to entry points)."""
    current = registered()
    with _lock:
        global _adapters
        _adapters = [adapter, *[a for a in current if a.framework != adapter.framework]]


def adapter_for(target: Any) -> Adapter:
    """Returns the adapter that accepts ``target``.

    Raises:
        ConfigurationError: No installed adapter accepts it.
    """
    for adapter in registered():
        if adapter.accepts(target):
            return adapter
    names = ", ".join(a.framework for a in registered()) or "none"
    raise ConfigurationError(
        f"no Agentspan adapter accepts {type(target).__module__}.{type(target).__qualname__} "
        f"(installed adapters: {names}); install e.g. 'agentspan[openai-agents]'"
    )


def adapter_named(framework: str) -> Adapter:
    """Returns the adapter for a framework name stored on a run."""
    for adapter in registered():
        if adapter.framework == framework:
            return adapter
    raise ConfigurationError(f"no Agentspan adapter for framework {framework!r} is installed")
