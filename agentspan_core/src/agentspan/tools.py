"""``@agentspan.tool`` options and ``agentspan.current_step()``."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

from agentspan.errors import ConfigurationError

InDoubtPolicy = Literal["retry", "fail", "ask"]
RejectPolicy = Literal["continue", "stop"]
TOOL_OPTIONS_ATTR = "__agentspan_tool__"

F = TypeVar("F")


@dataclass(frozen=True)
class ToolOptions:
    """How Agentspan treats one tool.

    Attributes:
        approval_required: Every call waits for a human decision bound to its exact arguments.
        on_in_doubt: What to do with a call that started but never completed (process died):
            ``"retry"`` re-runs it with the same idempotency key, ``"fail"`` fails the run,
            ``"ask"`` asks a human (an approval) whether to re-run it.
        on_reject: ``"continue"`` returns a rejection message to the model; ``"stop"`` ends the
            run as ``cancelled``.
        name: Overrides the tool name shown in the trail.
    """

    approval_required: bool = False
    on_in_doubt: InDoubtPolicy = "retry"
    on_reject: RejectPolicy = "continue"
    name: str | None = None


DEFAULT_TOOL_OPTIONS = ToolOptions()


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(
    *,
    approval_required: bool = False,
    on_in_doubt: InDoubtPolicy = "retry",
    on_reject: RejectPolicy = "continue",
    name: str | None = None,
) -> Callable[[F], F]: ...
def tool(
    fn: Any = None,
    /,
    *,
    approval_required: bool = False,
    on_in_doubt: InDoubtPolicy = "retry",
    on_reject: RejectPolicy = "continue",
    name: str | None = None,
) -> Any:
    """Marks a tool function (or a framework tool object) with Agentspan options.

    The function is returned unchanged apart from an attribute, so framework decorators stacked
    above it (``@function_tool``, ``@tool``) still see its signature and docstring::

        @function_tool
        @agentspan.tool(approval_required=True)
        def refund(order_id: str, amount: float) -> str: ...

    Raises:
        ConfigurationError: An option has an invalid value.
    """
    if on_in_doubt not in ("retry", "fail", "ask"):
        raise ConfigurationError(f"on_in_doubt={on_in_doubt!r}: expected 'retry', 'fail' or 'ask'")
    if on_reject not in ("continue", "stop"):
        raise ConfigurationError(f"on_reject={on_reject!r}: expected 'continue' or 'stop'")
    options = ToolOptions(approval_required, on_in_doubt, on_reject, name)

    def mark(target: F) -> F:
        try:
            setattr(target, TOOL_OPTIONS_ATTR, options)
        except (AttributeError, TypeError) as exc:
            raise ConfigurationError(f"@agentspan.tool cannot mark {target!r}: {exc}") from None
        return target

    return mark(fn) if fn is not None else mark


def tool_options(obj: Any) -> ToolOptions | None:
    """Returns the options set by ``@agentspan.tool`` on a function or tool object, if any."""
    return getattr(obj, TOOL_OPTIONS_ATTR, None)


@dataclass(frozen=True)
class StepInfo:
    """The journaled step being executed, as seen by the tool that runs in it.

    Attributes:
        run_id: The run.
        key: The step key (deterministic across re-executions).
        idempotency_key: ``"{run_id}:{key}"``: pass it to payment or email APIs so a retried
            in-doubt call is not applied twice.
        attempt: 1 for the first execution, 2+ when an in-doubt call is retried.
        kind: The step kind (``"tool"``, ``"llm"``, ...).
        name: The tool or model name.
    """

    run_id: str
    key: str
    idempotency_key: str
    attempt: int
    kind: str
    name: str | None
    handled: list[str] = field(default_factory=list, compare=False, repr=False)
    """What `handled_error` noted (the runtime reads it when the call ends)."""

    def handled_error(self, error: BaseException | str) -> None:
        """Notes that the call failed and the framework answered for it (the SDK's default
        ``failure_error_function`` turns a tool's exception into a message for the model): the step
        is journaled ``completed`` with the answer as its output, so a resumed run replays it as
        the model saw it, and with the error as its ``error``, so the trail shows the failure.

        Args:
            error: The exception (journaled as ``"Type: message"``) or the error's text.

        Raises:
            TypeError: ``error`` is neither an exception nor a string.
        """
        if isinstance(error, BaseException):
            from agentspan.jsontext import error_text

            error = error_text(error)
        elif not isinstance(error, str):
            raise TypeError(f"handled_error takes an exception or its text, not {type(error).__name__}")
        self.handled.append(error)


_current_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "agentspan_current_step", default=None
)


def current_step() -> StepInfo | None:
    """Returns the step being executed in this context, or None outside a durable run."""
    return _current_step.get()


def jsonable_result(value: Any) -> Any:
    """Converts a tool's result to JSON for the journal: pydantic models and dataclasses too,
    anything else as its ``str``.

    The value is exactly what the journal gives back when the call is replayed (what the live
    call hands the framework too): a dictionary's keys are strings, and NaN and infinities, which
    JSON has no numbers for, are ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the journal's
    encoder would write ``null``). A value nested deeper than `agentspan.jsontext.MAX_DEPTH` is
    journaled as its ``str``, on every store alike (a server refuses deeper JSON).
    """
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE[str(value)]
    from pydantic_core import to_json

    from agentspan import jsontext  # (not at import: `import agentspan` loads no JSON library)

    try:
        result = jsontext.loads(to_json(value, inf_nan_mode="strings"))
    except Exception:
        return str(value)
    # nested deeper than every store and a server take: its text, wherever the journal lives
    return str(value) if jsontext.nested_deeper(result) else result


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
