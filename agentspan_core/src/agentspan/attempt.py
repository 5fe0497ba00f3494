"""What one execution attempt of a run keeps besides its journal: the scopes that number its
model calls, the counts of replayed and live calls, the metrics an adapter reads off a model
response, and the strict-replay hook of `agentspan.testing.replay`."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agentspan.records import JSON, Step, StepKind

if TYPE_CHECKING:
    from agentspan.runtime import ActiveRun

GENESIS = "agentspan/v1"
"""The first link of every model-call hash chain."""


@dataclass
class Scope:
    """A counter scope for model-call keys: the run itself, or one tool call inside it."""

    prefix: str
    llm_calls: int = 0
    seen_items: int = 0
    first_item: Any = None
    chain_hash: str = GENESIS
    counts: dict[str, int] = field(default_factory=dict)
    """Steps of other kinds keyed by order (`ActiveRun.next_key`), by name."""
    before_call: tuple[int, int, Any, str] | None = None
    """``(llm_calls, seen_items, first_item, chain_hash)`` before the last model call's key was
    given out (`ActiveRun.model_call_failed` puts them back)."""


@dataclass(frozen=True)
class LlmMetrics:
    """What an adapter reads off a model response for the trail.

    ``input_tokens`` counts every input token, those the provider read from or wrote to its
    prompt cache included; ``cached_input_tokens`` and ``cache_write_tokens`` say how many of them
    were (they price the call: `agentspan.models.price_usd`), ``cache_write_1h_tokens`` how many
    of the writes went to Anthropic's 1-hour cache (billed higher than its 5-minute one; counted
    in ``cache_write_tokens`` too)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None


@dataclass
class Counters:
    """Distinct steps served from the journal vs. executed live by this process, per kind."""

    replayed_keys: dict[str, set[str]] = field(default_factory=dict)
    live_keys: dict[str, set[str]] = field(default_factory=dict)

    def mark(self, live: bool, kind: str, key: str) -> None:
        """Counts one call of step ``key``."""
        (self.live_keys if live else self.replayed_keys).setdefault(kind, set()).add(key)

    def replayed(self, kind: str) -> int:
        """Steps of ``kind`` that were only ever replayed here (completed by an earlier process)."""
        return len(self.replayed_keys.get(kind, set()) - self.live_keys.get(kind, set()))

    def live(self, kind: str) -> int:
        """Steps of ``kind`` executed live here."""
        return len(self.live_keys.get(kind, set()))


class StrictReplay(Protocol):
    """Serves every call a run would make live from a recorded journal (`agentspan.testing.replay`).

    An `ActiveRun` created while `strict_replay` is in effect never goes live: a call that is not
    a completed step of its own journal is handed to `serve`, which returns the recorded output
    or raises (`ReplayDivergenceError`, or the recorded failure).
    """

    def attach(self, run: ActiveRun) -> None:
        """Called when an execution attempt of the replayed run starts."""

    def serve(self, run: ActiveRun, *, kind: StepKind, key: str, name: str | None, input: JSON,
              input_hash: str | None, load: Callable[[JSON], Any], recorded: Step | None) -> Any:
        """Returns the recorded result of a call the run's own journal did not answer, or raises."""

    def has_record(self, run: ActiveRun, key: str) -> bool:
        """Whether a record-only step (checkpoint, guardrail, ...) is already in the recording."""

    def check_gate(self, key: str, tool: str, gated: bool) -> None:
        """Raises when a replayed tool call's approval gate differs from the recording's (the
        current code asks for an approval the recorded run did not ask for, or no longer asks)."""


_strict: contextvars.ContextVar[StrictReplay | None] = contextvars.ContextVar("agentspan_strict_replay",
                                                                              default=None)


@contextlib.contextmanager
def strict_replay(guard: StrictReplay) -> Iterator[StrictReplay]:
    """Runs created in this context replay strictly through ``guard`` (they never go live)."""
    token = _strict.set(guard)
    try:
        yield guard
    finally:
        _strict.reset(token)


def current_strict_replay() -> StrictReplay | None:
    """The strict replay in effect in this context (`strict_replay`), or None."""
    return _strict.get()
