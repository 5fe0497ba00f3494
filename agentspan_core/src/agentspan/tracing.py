"""OpenTelemetry spans of durable runs, in the GenAI semantic conventions (``gen_ai.*``).

Off unless asked for (``AGENTSPAN_OTEL=1`` or ``agentspan.configure(otel=True)``), and then only
the OpenTelemetry API is used: spans go to the tracer provider the application configured (its
exporters, sampling and resource), or nowhere when it configured none. ``import agentspan`` never
imports OpenTelemetry.

Each execution attempt of a run is one ``invoke_agent <agent>`` span, opened and ended by the
core's run lifecycle (`agentspan.attached`: whoever drives the run, ``agentspan.run`` or a
framework plugin); every step the attempt journals live becomes a child span when the step ends,
timed by the journal's own timestamps:

- ``llm``: ``chat <request model>`` (kind CLIENT) with ``gen_ai.provider.name`` (the conventions'
  value: ``gcp.gemini`` for ``google``, ``aws.bedrock``, ...), ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``;
- ``tool``: ``execute_tool <name>`` with ``gen_ai.tool.name`` and ``gen_ai.tool.call.id`` (the
  framework's id of the call, when the adapter has one);
- ``handoff``, ``guardrail``, ``approval``, ``checkpoint``: ``<kind> <name>``.

Every span carries ``agentspan.run_id``; step spans ``agentspan.step.key``, ``.kind``, ``.attempt``,
``.status`` and ``agentspan.cost_usd`` when priced. A failed step or attempt sets the span's status
to ERROR with ``error.type``. Steps replayed from the journal make no span: the process that ran
them made it. With ``AGENTSPAN_OTEL=content`` a tool span also carries its arguments and result
(``gen_ai.tool.call.arguments`` / ``gen_ai.tool.call.result``, JSON), which OpenTelemetry's GenAI
conventions leave opt-in because they may hold personal data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from agentspan import jsontext
from agentspan.errors import ConfigurationError
from agentspan.records import Run, Step, StepKind, StepResult, StepStatus, now

if TYPE_CHECKING:
    from agentspan.config import OtelMode
    from agentspan.runtime import ActiveRun

Outcome = Literal["completed", "error", "waiting", "cancelled", "released", "lease_lost"]
"""How an attempt ended (``agentspan.outcome`` of its span): the ending `AttachedRun` recorded."""

log = logging.getLogger("agentspan")
_T = TypeVar("_T")

_OPERATIONS = {StepKind.LLM: "chat", StepKind.TOOL: "execute_tool"}
_PROVIDER_NAMES = {"google": "gcp.gemini", "bedrock": "aws.bedrock", "azure": "azure.ai.openai",
                   "mistral": "mistral_ai", "xai": "x_ai"}
"""``gen_ai.provider.name`` where the conventions' well-known value differs from Agentspan's
provider prefix (the trail keeps the prefix)."""


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class RunTrace:
    """The spans of one execution attempt: its ``invoke_agent`` span and its steps' spans.

    Args:
        run: The run being executed.
        content: Also record tool arguments and results.
    """

    def __init__(self, run: Run, *, content: bool = False) -> None:
        try:
            from opentelemetry import trace
        except ImportError:  # pragma: no cover - opentelemetry-api comes with the workspace
            raise ConfigurationError(
                "AGENTSPAN_OTEL is set but OpenTelemetry is not installed: pip install 'agentspan[otel]'") from None
        from agentspan import __version__

        self._trace = trace
        self._tracer = trace.get_tracer("agentspan", __version__)
        self._content = content
        self.run_id = run.id
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": run.agent,
            "agentspan.run_id": run.id, "agentspan.framework": run.framework,
        }
        if run.session_id:
            attributes["gen_ai.conversation.id"] = run.session_id
        self.span = self._tracer.start_span(f"invoke_agent {run.agent}", attributes=attributes,
                                            start_time=_ns(now()))
        self._context = trace.set_span_in_context(self.span)
        self._current: object | None = None
        self.ended = False

    def make_current(self) -> None:
        """Makes the attempt's span the current one in this context (`ActiveRun.activate`): spans
        a tool or a client library opens while the attempt runs, and a durable run started inside
        a tool, go under it. Never raises."""
        try:
            from opentelemetry import context

            self._current = context.attach(self._context)
        except Exception:
            log.warning("agentspan: could not make the span of run %s current", self.run_id, exc_info=True)

    def release_current(self) -> None:
        """Undoes `make_current` (`ActiveRun.deactivate`). Never raises."""
        token, self._current = self._current, None
        if token is not None:
            try:
                from opentelemetry import context

                context.detach(token)  # type: ignore[arg-type]
            except Exception:
                log.debug("agentspan: could not restore the caller's span after run %s", self.run_id, exc_info=True)

    def step_ended(self, step: Step, result: StepResult, call_id: str | None = None) -> None:
        """Emits the span of a step that ran live and just ended (called once per step).

        ``call_id``: a tool call's id as the framework gave it (``gen_ai.tool.call.id``). Never
        raises: a tracing failure is logged, and the run goes on.
        """
        try:
            self._step_span(step, result, call_id)
        except Exception:
            log.warning("agentspan: could not trace step %r of run %s", step.key, self.run_id, exc_info=True)

    def _step_span(self, step: Step, result: StepResult, call_id: str | None) -> None:
        kind = step.kind
        name = step.name or ""
        operation = _OPERATIONS.get(kind)
        attributes: dict[str, Any] = {
            "agentspan.run_id": self.run_id, "agentspan.step.key": step.key, "agentspan.step.kind": kind.value,
            "agentspan.step.attempt": step.attempt, "agentspan.step.status": result.status.value,
        }
        span_kind = self._trace.SpanKind.INTERNAL
        if kind is StepKind.LLM:
            span_kind = self._trace.SpanKind.CLIENT
            model = result.model or step.model
            requested = step.model or model
            provider = result.provider or step.provider
            _put(attributes, "gen_ai.operation.name", operation)
            _put(attributes, "gen_ai.provider.name", _PROVIDER_NAMES.get(provider or "", provider))
            _put(attributes, "gen_ai.request.model", requested)
            if result.status is StepStatus.COMPLETED:  # the model that answered (none did otherwise)
                _put(attributes, "gen_ai.response.model", model)
            _put(attributes, "gen_ai.usage.input_tokens", result.input_tokens)
            _put(attributes, "gen_ai.usage.output_tokens", result.output_tokens)
            span_name = f"chat {requested or name}".rstrip()  # "{operation} {request model}"
        elif kind is StepKind.TOOL:
            _put(attributes, "gen_ai.operation.name", operation)
            attributes["gen_ai.tool.name"] = name
            _put(attributes, "gen_ai.tool.call.id", call_id)
            if self._content:
                attributes["gen_ai.tool.call.arguments"] = jsontext.dumps(step.input)
                attributes["gen_ai.tool.call.result"] = jsontext.dumps(result.output)
            span_name = f"execute_tool {name}".rstrip()
        else:
            span_name = f"{kind.value} {name}".rstrip()
        _put(attributes, "agentspan.cost_usd", result.cost_usd)
        ended_at = result.ended_at if result.ended_at is not None else now()
        started_at = step.started_at
        if result.duration_ms is not None:
            started_at = ended_at - result.duration_ms / 1000.0
        span = self._tracer.start_span(span_name, context=self._context, kind=span_kind, attributes=attributes,
                                       start_time=_ns(started_at))
        if result.status is StepStatus.FAILED or result.error:  # an error the framework answered for too
            error = result.error or "failed"
            span.set_attribute("error.type", error.split(":", 1)[0])
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))
        span.end(end_time=_ns(ended_at))

    def end(self, outcome: Outcome, error: BaseException | None = None) -> None:
        """Ends the attempt's span (once; later calls do nothing), ERROR when ``outcome`` is
        ``"error"``. Never raises."""
        if self.ended:
            return
        self.ended = True
        try:
            self.span.set_attribute("agentspan.outcome", outcome)
            if outcome == "error":
                kind = type(error).__name__ if error is not None else "error"
                self.span.set_attribute("error.type", kind)
                self.span.set_status(self._trace.Status(self._trace.StatusCode.ERROR,
                                                        f"{kind}: {error}" if error is not None else kind))
            self.span.end(end_time=_ns(now()))
        except Exception:
            log.warning("agentspan: could not end the trace of run %s", self.run_id, exc_info=True)


def _put(attributes: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        attributes[key] = value


def caller_context() -> Any:
    """The caller's OpenTelemetry context, for a run that executes on a thread of its own
    (``agentspan.start``, ``resume``): its ``invoke_agent`` span is then a child of the caller's
    current span, as under ``agentspan.run``. None while tracing is off (OpenTelemetry stays
    unimported)."""
    from agentspan.config import settings

    if settings().otel == "off":
        return None
    from opentelemetry import context

    return context.get_current()


def run_within(parent: Any, fn: Callable[[], _T]) -> _T:
    """Calls ``fn`` with ``parent`` (from `caller_context`) as the current OpenTelemetry context."""
    if parent is None:
        return fn()
    from opentelemetry import context

    token = context.attach(parent)
    try:
        return fn()
    finally:
        context.detach(token)


def start_trace(active: ActiveRun, mode: OtelMode | None = None) -> RunTrace | None:
    """Starts tracing an execution attempt (`agentspan.attached.AttachedRun.new_attempt` calls it):
    its span opens now, and each step it runs live gets one. Returns None (nothing traced) when
    ``mode`` (default: the settings') is ``"off"``. The attempt's ending ends it (`RunTrace.end`).
    """
    if mode is None:
        from agentspan.config import settings

        mode = settings().otel
    if mode == "off":
        return None
    run_trace = RunTrace(active.run, content=mode == "content")
    active.trace = run_trace
    return run_trace
