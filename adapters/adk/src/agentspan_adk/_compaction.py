"""ADK's events compaction (``App(events_compaction_config=...)``) journaled as steps of the run.

ADK summarizes old session events through a model of its own (the config's summarizer, an
``LlmEventSummarizer`` by default): before a model call when the prompt outgrew
``token_threshold`` (ADK's ``CompactionRequestProcessor``), and after an invocation (its
sliding window, or the same threshold). It calls that model directly, so no plugin callback sees
the call. Made live again on resume, a real model writes another summary, and the next replayed
model call's request no longer matches its journal.

`JournaledSummarizer` stands in for the summarizer in the config ADK reads: each summary is an
``llm`` step (provider, model, tokens), replayed on resume (the journaled summary event comes
back, the summarizer is not called). Keys:

- ``<agent path>/llm:<n>/compaction``: the compaction ADK makes before that model call of the
  agent (it runs in the agent's context: `agentspan_adk._clock` knows the agent and its journal);
- ``adk:compaction:<n>``: the ``n``-th compaction after an invocation of ``agentspan.run``
  (counted per execution of the run, which always starts from the same session snapshot).

A compaction after an invocation of a user-built Runner happens after the plugin's run ended: it
is not journaled (nothing of that run depends on it; the next invocation's run reads the summary
from the session).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from google.adk.agents import BaseAgent, LlmAgent
from google.adk.apps.base_events_summarizer import BaseEventsSummarizer
from google.adk.apps.llm_event_summarizer import LlmEventSummarizer
from google.adk.events import Event
from google.adk.models import BaseLlm

import agentspan
from agentspan import LlmMetrics
from agentspan.errors import AgentspanError
from agentspan.hashing import digest
from agentspan.models import ModelId
from agentspan.records import JSON, StepKind
from agentspan_adk import _clock, _codec, _mock
from agentspan_adk._journal import _usage

AFTER_INVOCATION = "adk:compaction:"
"""Key prefix of the compactions ADK makes after an invocation of ``agentspan.run``."""


@dataclass(slots=True)
class _Summary:
    """A summarizer's answer as journaled: the summary event (None: it did not compact), and the
    positions among the summarized events of the first and last one its range covers."""

    event: Event | None
    span: list[int | None] = field(default_factory=lambda: [None, None])
    replayed: bool = False


class JournaledSummarizer(BaseEventsSummarizer):
    """The summarizer of an ``EventsCompactionConfig``, with each summary journaled.

    Args:
        inner: The config's own summarizer; None for ADK's default (an ``LlmEventSummarizer`` on
            the model of the agent that compacts first, or of ``root``), made when first needed.
        root: The invocation's root agent.
        run: The run a compaction made outside any agent belongs to (``agentspan.run``'s, for
            ADK's compaction after the invocation); None: such a compaction is not journaled.
    """

    def __init__(self, inner: BaseEventsSummarizer | None, root: BaseAgent | None,
                 run: agentspan.ActiveRun | None = None, origin: Any = None) -> None:
        # (BaseEventsSummarizer.__init__ is not called: it sets nothing, and ADK's experimental
        # decorator on it would warn again)
        self.inner = inner
        self.root = root
        self.run = run
        self.origin = origin
        """The user's config: ADK's default summarizer, once made, is stored there as ADK stores it
        (its compaction after a user-built Runner's invocation reads it)."""
        self._after = 0

    async def maybe_summarize_events(self, *, events: list[Event]) -> Event | None:
        """The summary event of ``events``: made and journaled, or replayed from the journal."""
        running = _clock.current()
        if running is not None:  # before a model call, in the agent's context
            journal, ic = running
            run, key = journal.run, f"{journal.next_model_key(ic)}/compaction"
            agent: Any = ic.agent
        elif self.run is not None:  # after an invocation of agentspan.run
            run, key, agent = self.run, f"{AFTER_INVOCATION}{self._after}", self.root
            self._after += 1
        else:  # after an invocation of a user-built Runner: the plugin's run has ended
            return await self._summarizer(self.root).maybe_summarize_events(events=events)
        if _mock.active():  # a scripted run calls no real model: it does not compact
            return None
        summarizer = self._summarizer(agent)
        identity = _identity(summarizer)

        async def summarize() -> _Summary:
            try:
                summary = await summarizer.maybe_summarize_events(events=events)
            except AgentspanError:
                raise
            except Exception as exc:  # ADK goes on uncompacted: journaled so, a replay answers the same
                step = agentspan.current_step()
                if step is not None:
                    step.handled_error(exc)
                return _Summary(None)
            return _Summary(summary, _span_of(summary, events))

        # The hash covers what is summarized (authors and contents; not ADK's ids or timestamps,
        # new in every execution) and the summarizer's model.
        found = await run.step(
            kind=StepKind.LLM, key=key, name=identity.model, input={"events": len(events)},
            input_hash=digest([f"{identity.provider}/{identity.model}", [_event_json(e) for e in events]]),
            invoke=summarize, dump=_dump, load=_load, provider=identity.provider, model=identity.model,
            metrics=_metrics)
        if found.event is None or not found.replayed:
            return found.event
        return _placed(found, events)

    def _summarizer(self, agent: BaseAgent | None) -> BaseEventsSummarizer:
        """The config's summarizer, or ADK's default one (made once, as ADK makes it once)."""
        if self.inner is None:
            model_of = agent if isinstance(agent, LlmAgent) else self.root
            if not isinstance(model_of, LlmAgent):  # (ADK raises this too)
                raise ValueError("No LlmAgent model available for event compaction summarizer.")
            self.inner = LlmEventSummarizer(llm=model_of.canonical_model)
            if self.origin is not None and self.origin.summarizer is None:
                self.origin.summarizer = self.inner
        return self.inner


def journaled(config: Any, root: BaseAgent | None, run: agentspan.ActiveRun | None = None) -> Any:
    """A copy of an ``EventsCompactionConfig`` whose summarizer is journaled (the config itself
    when None or journaled already); the user's config is left as it is."""
    if config is None or isinstance(config.summarizer, JournaledSummarizer):
        return config
    return config.model_copy(update={"summarizer": JournaledSummarizer(config.summarizer, root, run, config)})


def _identity(summarizer: BaseEventsSummarizer) -> ModelId:
    llm = getattr(summarizer, "_llm", None)  # (LlmEventSummarizer's model)
    if isinstance(llm, BaseLlm):
        return _codec.model_identity(llm, llm.model)
    return _codec.model_identity(None, type(summarizer).__name__)


def _event_json(event: Event) -> JSON:
    """What a request carries of an event (a summary's text for a compaction event), without the
    function call ids ADK makes up in every execution."""
    compaction = event.actions.compaction if event.actions else None
    content = compaction.compacted_content if compaction is not None and compaction.compacted_content else event.content
    data: Any = _codec.dump_content(content) if content is not None else None
    for part in (data or {}).get("parts") or []:
        for name in ("function_call", "function_response"):
            if isinstance(part.get(name), dict):
                part[name].pop("id", None)
    return [event.author, data]


def _span_of(summary: Event | None, events: list[Event]) -> list[int | None]:
    """The positions in ``events`` of the first event at the summary's start time and the last at
    its end time (None when none is)."""
    compaction = summary.actions.compaction if summary is not None else None
    if compaction is None:
        return [None, None]
    stamps = [e.timestamp for e in events]
    # (the first event at or after its start and the last at or before its end: a summarizer of
    # one's own need not give the events' exact times)
    start = None if compaction.start_timestamp is None else next(
        (i for i, t in enumerate(stamps) if t >= compaction.start_timestamp), None)
    end = None if compaction.end_timestamp is None else next(
        (i for i in range(len(stamps) - 1, -1, -1) if stamps[i] <= compaction.end_timestamp), None)
    return [start, end]


def _placed(found: _Summary, events: list[Event]) -> Event:
    """A replayed summary event, made anew as the live summarizer would make it now: new ids (a
    durable session service may still hold the dead attempt's event, rewound, under the journaled
    id) and time, and its range over the events summarized in this execution (a replay's events
    are new events, with new timestamps: the journaled range would cover none of them)."""
    event = found.event.model_copy(deep=True, update={  # type: ignore[union-attr]
        "id": Event.new_id(), "invocation_id": Event.new_id(), "timestamp": time.time()})
    compaction = event.actions.compaction
    start, end = found.span
    if compaction is not None:
        if start is not None and start < len(events):
            compaction.start_timestamp = events[start].timestamp
        if end is not None and end < len(events):
            compaction.end_timestamp = events[end].timestamp
    return event


def _dump(found: _Summary) -> JSON:
    event = found.event.model_dump(mode="json", exclude_none=True) if found.event is not None else None
    return {"event": event, "span": list(found.span)}


def _load(data: JSON) -> _Summary:
    stored: Any = data
    event = Event.model_validate(stored["event"]) if stored.get("event") is not None else None
    return _Summary(event, list(stored.get("span") or [None, None]), replayed=True)


def _metrics(found: _Summary) -> LlmMetrics:
    usage = found.event.usage_metadata if found.event is not None else None
    return _usage(({"usage_metadata": usage.model_dump(mode="json", exclude_none=True)} if usage else {}, {}))
