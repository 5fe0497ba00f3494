"""The contract between `mock_run` and a framework adapter's ``mock`` hook.

`mock_run` hands the adapter a `StandIns`: where the scripted model responses and the tool
stand-ins come from. The adapter answers with a `MockSetup`: how to run its target so that every
model call takes the next scripted `Turn` (``stand_ins.next_turn(...)``) instead of reaching a
provider, and every stubbed tool calls ``stand_ins.call_stub(...)`` instead of the real tool.
Everything else (journal, approvals, replay, tools that are not stubbed) runs for real.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agentspan.records import JSON, Step, StepKind
from agentspan.testing.script import Script, Stubs, Turn

_V = TypeVar("_V")


class StandIns(abc.ABC):
    """The scripted model and the tool stand-ins of one mock run (as an adapter sees them)."""

    stubbed: frozenset[str]
    """The names of the tools to call `call_stub` for instead of the real tool."""

    @abc.abstractmethod
    def next_turn(self, *, tools: Collection[str] | None) -> Turn:
        """The response to the model call being made now.

        Args:
            tools: The names of the tools and handoffs offered to the model in this call (None
                when the adapter cannot tell).

        Raises:
            ScriptError: The script does not fit (ran out, or a call of a tool not offered).
        """

    @abc.abstractmethod
    def call_stub(self, tool: str, args: JSON) -> Any:
        """Runs the stand-in of ``tool`` (one of `stubbed`) with the model's arguments."""


class LocalStandIns(StandIns):
    """Stand-ins served in this process from a `Script` and `Stubs`."""

    def __init__(self, script: Script, stubs: Stubs) -> None:
        self.script = script
        self.stubs = stubs
        self.stubbed = stubs.names

    def next_turn(self, *, tools: Collection[str] | None) -> Turn:
        return self.script.next_turn(tools=tools)

    def call_stub(self, tool: str, args: JSON) -> Any:
        return self.stubs.call(tool, args)


def _identity(value: Any) -> Any:
    return value


def handoff_steps(steps: Sequence[Step]) -> list[str]:
    """The agents handed off to: the names of the run's ``handoff`` steps, in order."""
    return [s.name or "" for s in steps if s.kind is StepKind.HANDOFF]


@dataclass
class MockSetup:
    """How an adapter runs its target in a mock run (returned by `Adapter.mock`).

    Attributes:
        options: Runner options to run with (already merged with the user's).
        scope: Entered around every execution of the run (in the executing task); puts the
            stand-ins in place, e.g. by setting the adapter's context variables.
        tools: The names of the tools the target has, for checking ``tools={...}`` stand-ins
            (None when the adapter cannot list them).
        input: Turns the test's input into the framework's (e.g. a prompt into a graph state).
        final_output: The answer in the framework's result (`MockResult.output`).
        tool_result: A journaled tool output in readable form (`ToolCallRecord.result`).
        handoffs: The agents a run handed off to, from its journal.
        stable_key: A step key in a form that is the same in every run of the target, for a
            framework whose keys carry ids made anew by each run (LangGraph's task ids); None when
            the keys are stable as they are. ``crash_at`` matches keys in this form.
    """

    options: dict[str, Any] = field(default_factory=dict)
    scope: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    tools: frozenset[str] | None = None
    input: Callable[[Any], Any] = _identity
    final_output: Callable[[Any], Any] = _identity
    tool_result: Callable[[JSON], Any] = _identity
    handoffs: Callable[[Sequence[Step]], list[str]] = handoff_steps
    stable_key: Callable[[str], str] | None = None


def context_scope(var: ContextVar[_V], value: _V) -> Callable[[], AbstractContextManager[None]]:
    """A `MockSetup.scope` that sets the adapter's context variable ``var`` to ``value`` while the
    run executes (and restores it after)."""

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        token = var.set(value)
        try:
            yield
        finally:
            var.reset(token)

    return scope
