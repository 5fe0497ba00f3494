"""`expect(result)`: fluent checks on a `MockResult` that fail with a readable diff.

Each check returns the same `Expectation`, so they chain::

    expect(result).completed().used_tool("lookup_order", args={"order_id": "42"}).output_contains("paid")

A failing check raises `AssertionError` with what was expected, what happened instead, and the
run's actual tool calls.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from agentspan.errors import ConfigurationError
from agentspan.records import RunStatus
from agentspan.testing.result import MockResult, ToolCallRecord

_MISSING = object()


def _calls_block(calls: Sequence[ToolCallRecord]) -> str:
    if not calls:
        return "actual tool calls: none"
    lines = [f"  {n}. {c}" for n, c in enumerate(calls, 1)]
    return "actual tool calls:\n" + "\n".join(lines)


def _args_diff(expected: Mapping[str, Any], actual: Any) -> list[str]:
    """The lines where ``actual`` (a call's args) does not match ``expected`` (a subset)."""
    if not isinstance(actual, dict):
        return [f"args are {actual!r}, not a dict"]
    lines = []
    for key, want in expected.items():
        got = actual.get(key, _MISSING)
        if got is _MISSING:
            lines.append(f"- {key}: expected {want!r}, missing")
        elif not _same(got, want):
            lines.append(f"- {key}: expected {want!r}, got {got!r}")
    return lines


def _same(got: Any, want: Any) -> bool:
    """JSON equality, where types matter: ``True`` is not ``1`` (Python's ``==`` says it is)."""
    if isinstance(got, bool) or isinstance(want, bool):
        return type(got) is type(want) and got == want
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in got)
    if isinstance(got, list | tuple) and isinstance(want, list | tuple):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want)


class Expectation:
    """Fluent checks on one `MockResult`."""

    def __init__(self, result: MockResult) -> None:
        self.result = result

    def _fail(self, message: str, *, calls: bool = True) -> AssertionError:
        if calls:
            message += "\n" + _calls_block(self.result.tool_calls)
        return AssertionError(message)

    def completed(self) -> Expectation:
        """The run completed."""
        if self.result.status is not RunStatus.COMPLETED:
            raise self._fail(f"expected the run to complete, but it is {self.result.status.value}"
                             + (f": {self.result.error}" if self.result.error else ""))
        return self

    def used_tool(self, name: str, *, args: Mapping[str, Any] | None = None) -> Expectation:
        """The agent called tool ``name`` (and it ran), with ``args`` if given.

        Args:
            name: The tool's name.
            args: Arguments that one call must have had (a subset: other arguments may differ).
        """
        calls = [c for c in self.result.used() if c.name == name]
        if not calls:
            rejected = [c for c in self.result.tool_calls if c.name == name and c.rejected]
            why = f" (it was called {len(rejected)} time(s) but rejected)" if rejected else ""
            raise self._fail(f"expected a call of tool {name!r}, but there was none{why}")
        if args is None or any(not _args_diff(args, c.args) for c in calls):
            return self
        lines = [f"expected a call of tool {name!r} with args {dict(args)!r}, "
                 f"but none of its {len(calls)} call(s) matched:"]
        for n, c in enumerate(calls, 1):
            lines.append(f"  call {n} of {name!r}:")
            lines.extend(f"    {line}" for line in _args_diff(args, c.args))
        raise self._fail("\n".join(lines))

    def did_not_use_tool(self, name: str) -> Expectation:
        """The agent never ran tool ``name`` (a rejected call does not count as use)."""
        calls = [c for c in self.result.used() if c.name == name]
        if calls:
            raise self._fail(f"expected no call of tool {name!r}, but it ran {len(calls)} time(s)")
        return self

    def tool_order(self, names: Sequence[str]) -> Expectation:
        """The tools that ran are exactly ``names``, in this order."""
        actual = [c.name for c in self.result.used()]
        if actual != list(names):
            diff = "\n".join(f"  {line}" for line in difflib.ndiff(list(names), actual) if not line.startswith("?"))
            raise self._fail(f"expected the tools to run in the order {list(names)!r}, but they ran as {actual!r}\n"
                             f"diff (- expected, + actual):\n{diff}")
        return self

    def output_contains(self, text: str) -> Expectation:
        """The agent's answer contains ``text``."""
        output = self.result.output
        if output is None:
            raise self._fail(f"expected the output to contain {text!r}, but the run has no output"
                             + (f" (it is {self.result.status.value})" if self.result.status is not RunStatus.COMPLETED
                                else ""))
        rendered = output if isinstance(output, str) else repr(output)
        if text not in rendered:
            raise self._fail(f"expected the output to contain {text!r}\nactual output: {rendered!r}")
        return self

    def handoff_to(self, agent: str) -> Expectation:
        """The run handed off to ``agent`` (LangGraph: the node ``agent`` ran)."""
        if agent not in self.result.handoffs:
            seen = ", ".join(map(repr, self.result.handoffs)) or "none"
            raise self._fail(f"expected a handoff to {agent!r}; handoffs: {seen}")
        return self

    def approval_requested(self, tool: str) -> Expectation:
        """The run asked for an approval of ``tool`` (LangGraph interrupts: the node's name)."""
        if not any(a.tool == tool for a in self.result.approvals):
            seen = "\n".join(f"  - {a.tool}({a.args!r}): {a.status.value}" for a in self.result.approvals) or "  none"
            raise self._fail(f"expected an approval request for {tool!r}; approvals requested:\n{seen}")
        return self

    def max_turns(self, n: int) -> Expectation:
        """The run made at most ``n`` model calls."""
        calls = self.result.model_calls
        if len(calls) > n:
            keys = ", ".join(s.key for s in calls)
            raise self._fail(f"expected at most {n} model calls, but the run made {len(calls)} ({keys})")
        return self


def expect(result: MockResult) -> Expectation:
    """Starts fluent checks on a mock run's result."""
    if not isinstance(result, MockResult):
        raise ConfigurationError(f"expect() takes the MockResult of mock_run(...), not {type(result).__name__}")
    return Expectation(result)
