"""The script of a `mock_run`: what the model answers, call after call, and how approvals are decided.

A script is a list of entries, consumed in order as the run goes:

- ``reply("text")`` (or a plain ``"text"``): a model response with a final text;
- ``call("tool", **args)``: a model response asking for one tool (or handoff) call;
- ``[call(...), call(...)]``: one model response asking for several calls at once (parallel);
- ``approve()`` / ``reject("reason")``: the decision on the next approval the run requests.

Each model call takes the next entry, which must be a model response. Each approval request takes
the next entry if it is a decision, and otherwise gets the run's default decision (approve,
unless ``mock_run(default_approval="reject")``), so decisions only need scripting when they
matter. A script that does not fit the run raises `ScriptError` naming the entry's position.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentspan.errors import ConfigurationError, ScriptError
from agentspan.records import JSON

SCRIPT_INPUT_TOKENS = 100
"""The input tokens each scripted model response reports."""
SCRIPT_OUTPUT_TOKENS = 20
"""The output tokens each scripted model response reports."""
DECIDED_BY = "agentspan.testing"
"""``decided_by`` of the approvals a mock run decides."""


@dataclass(frozen=True)
class Reply:
    """A model response with a final text."""

    text: str

    def __repr__(self) -> str:
        return f"reply({self.text!r})"


@dataclass(frozen=True)
class Call:
    """A model response (part) asking for a tool or handoff call.

    Attributes:
        name: The tool's name as the model sees it (a handoff's tool name, e.g. ``transfer_to_billing``).
        args: The call's arguments.
        id: The call id the model gives (default: ``call_<position>_<n>``, stable across runs).
    """

    name: str
    args: dict[str, JSON] = field(default_factory=dict)
    id: str | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"call({self.name!r}{', ' if args else ''}{args})"


@dataclass(frozen=True)
class Decision:
    """The decision on an approval the run requests."""

    approved: bool
    reason: str | None = None
    by: str = DECIDED_BY

    def __repr__(self) -> str:
        word = "approve" if self.approved else "reject"
        return f"{word}({self.reason!r})" if self.reason else f"{word}()"


Part = Reply | Call
Entry = Reply | Call | Decision | str | Sequence[Reply | Call | str]
"""What a script holds (a ``str`` is short for ``reply(str)``; a list is one response)."""


def reply(text: str) -> Reply:
    """A model response with the final text ``text``."""
    return Reply(text)


def call(tool: str, /, **args: JSON) -> Call:
    """A model response asking for the tool (or handoff) ``tool`` with ``args``.

    Put several in a list for one response with parallel calls: ``[call("a"), call("b")]``.
    """
    return Call(tool, dict(args))


def approve(reason: str | None = None, *, by: str = DECIDED_BY) -> Decision:
    """Approves the next approval the run requests."""
    return Decision(True, reason, by)


def reject(reason: str | None = None, *, by: str = DECIDED_BY) -> Decision:
    """Rejects the next approval the run requests; the model is told ``reason``."""
    return Decision(False, reason, by)


@dataclass(frozen=True)
class Turn:
    """One scripted model response, as an adapter turns it into its framework's response type.

    Attributes:
        position: The script entry it comes from.
        parts: Texts and calls in response order; every call has its id filled in.
        input_tokens: Usage to report.
        output_tokens: Usage to report.
    """

    position: int
    parts: tuple[Part, ...]
    input_tokens: int = SCRIPT_INPUT_TOKENS
    output_tokens: int = SCRIPT_OUTPUT_TOKENS

    @property
    def text(self) -> str:
        """The response's text (its replies joined)."""
        return "".join(p.text for p in self.parts if isinstance(p, Reply))

    @property
    def calls(self) -> tuple[Call, ...]:
        """The calls the response asks for."""
        return tuple(p for p in self.parts if isinstance(p, Call))

    def to_json(self) -> dict[str, JSON]:
        """The turn as JSON (crosses to a crash-test child process)."""
        return {"position": self.position, "parts": [
            {"text": p.text} if isinstance(p, Reply) else {"name": p.name, "args": p.args, "id": p.id}
            for p in self.parts]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Turn:
        """Rebuilds a turn written by `to_json`."""
        parts = tuple(Reply(p["text"]) if "text" in p else Call(p["name"], p["args"], p["id"]) for p in data["parts"])
        return cls(data["position"], parts)


def _normalize(entry: Any, position: int) -> Reply | Call | Decision | tuple[Part, ...]:
    if isinstance(entry, str):
        return Reply(entry)
    if isinstance(entry, (Reply, Decision)):
        return entry
    if isinstance(entry, Call):
        return _json_args(entry, position)
    if isinstance(entry, Sequence) and not isinstance(entry, (bytes, bytearray)):
        parts: list[Part] = []
        for part in entry:
            if isinstance(part, str):
                part = Reply(part)
            if not isinstance(part, (Reply, Call)):
                raise ConfigurationError(
                    f"script[{position}]: a list is one model response and holds reply(...)/call(...) "
                    f"entries only, not {part!r}")
            parts.append(_json_args(part, position) if isinstance(part, Call) else part)
        if not parts:
            raise ConfigurationError(f"script[{position}] is an empty list: a model response needs a reply or a call")
        return tuple(parts)
    raise ConfigurationError(
        f"script[{position}] is {entry!r}: expected reply(...), call(...), a list of them, approve() or reject()")


class ScriptArgumentsError(ScriptError, ConfigurationError):
    """A script's call has arguments no model could send: a `ScriptError` naming its position, and
    still the `ConfigurationError` it was raised as before."""


def _json_args(part: Call, position: int) -> Call:
    """``part``, its arguments checked to be JSON, as a model's always are (a set, a date: refused
    here, by its place in the script, instead of failing inside the framework or reaching the tool
    as no model could send it).

    Raises:
        ScriptArgumentsError: The arguments are not JSON (a `ScriptError` and a `ConfigurationError`).
    """
    import json

    try:
        json.dumps(part.args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ScriptArgumentsError(f"script[{position}]: {part!r} has arguments a model cannot send, not JSON "
                                   f"({exc})", position=position, entry=part) from None
    return part


def describe(entry: object) -> str:
    """A script entry as written in a test (``call('refund', order_id='42')``)."""
    if isinstance(entry, tuple):
        return "[" + ", ".join(repr(p) for p in entry) + "]"
    return repr(entry)


ApprovalDefault = Literal["approve", "reject"]


class Script:
    """The cursor over a script, shared by every model call and approval of a run (thread-safe).

    Args:
        entries: The script.
        default_approval: The decision on approvals the script does not decide.
    """

    def __init__(self, entries: Sequence[Entry], *, default_approval: ApprovalDefault = "approve") -> None:
        if isinstance(entries, (str, Reply, Call, Decision)):
            raise ConfigurationError("script must be a list of entries, e.g. script=[call('lookup', id='42'), "
                                     "reply('Done')]")
        if default_approval not in ("approve", "reject"):
            raise ConfigurationError(f"default_approval={default_approval!r}: expected 'approve' or 'reject'")
        self.entries = [_normalize(entry, i) for i, entry in enumerate(entries)]
        self.default_approval = default_approval
        self.position = 0
        self.model_calls = 0
        self.error: ScriptError | None = None
        """The first script error raised (re-raised by mock_run if the agent swallowed it)."""
        self._lock = threading.Lock()

    def _fail(self, message: str, position: int, entry: object = None) -> ScriptError:
        error = ScriptError(message, position=position, entry=entry)
        if self.error is None:
            self.error = error
        return error

    def next_turn(self, *, tools: Collection[str] | None) -> Turn:
        """Consumes the model response for the next model call.

        Args:
            tools: The names of the tools (and handoffs) offered to the model in this call; None
                when unknown (calls are then not checked).

        Raises:
            ScriptError: The script ran out, the next entry is a decision, or a call names a tool
                that was not offered.
        """
        with self._lock:
            self.model_calls += 1
            number, position = self.model_calls, self.position
            if position >= len(self.entries):
                used = ", ".join(f"[{i}] {describe(e)}" for i, e in enumerate(self.entries)) or "none"
                raise self._fail(
                    f"script exhausted at position {position}: model call #{number} has no scripted response "
                    f"(the script has {len(self.entries)} entries, all used: {used})", position)
            entry = self.entries[position]
            if isinstance(entry, Decision):
                raise self._fail(
                    f"script[{position}] is {describe(entry)}, but the agent made model call #{number} "
                    "(a decision answers an approval request, and none was pending)", position, entry)
            parts = entry if isinstance(entry, tuple) else (entry,)
            if tools is not None:
                offered = set(tools)
                for part in parts:
                    if isinstance(part, Call) and part.name not in offered:
                        names = ", ".join(sorted(offered)) or "none"
                        raise self._fail(
                            f"script[{position}] {describe(entry)} calls {part.name!r}, a tool the agent does not "
                            f"have (tools offered to the model at call #{number}: {names})", position, entry)
            self.position += 1
        filled = tuple(
            Call(p.name, p.args, p.id or f"call_{position}_{n}") if isinstance(p, Call) else p
            for n, p in enumerate(parts))
        return Turn(position, filled)

    def decide(self, tool: str) -> tuple[Decision, int | None]:
        """Consumes the decision on an approval of ``tool``: the next entry if it is a decision,
        else the default. Returns the decision and the entry's position (None: the default)."""
        with self._lock:
            position = self.position
            if position < len(self.entries) and isinstance(self.entries[position], Decision):
                self.position += 1
                entry = self.entries[position]
                assert isinstance(entry, Decision)
                return entry, position
        if self.default_approval == "approve":
            return Decision(True), None
        return Decision(False, f"the call of {tool!r} was rejected by mock_run(default_approval='reject')"), None

    def unused(self) -> list[tuple[int, str]]:
        """The entries never reached, as ``(position, description)``."""
        return [(i, describe(e)) for i, e in enumerate(self.entries) if i >= self.position]


class Stubs:
    """Tool stand-ins given as ``tools={"refund": lambda **args: "ok"}``.

    Raises:
        ConfigurationError: A stand-in is not callable.
    """

    def __init__(self, stubs: Mapping[str, Callable[..., Any]] | None) -> None:
        self.stubs = dict(stubs or {})
        for name, stub in self.stubs.items():
            if not callable(stub):
                raise ConfigurationError(f"tools[{name!r}] must be a callable taking the tool's arguments, "
                                         f"not {type(stub).__name__}")

    @property
    def names(self) -> frozenset[str]:
        """The stubbed tool names."""
        return frozenset(self.stubs)

    def call(self, tool: str, args: JSON) -> Any:
        """Calls the stand-in of ``tool`` with the model's arguments (as keywords when a dict)."""
        stub = self.stubs[tool]
        return stub(**args) if isinstance(args, dict) else stub(args)
