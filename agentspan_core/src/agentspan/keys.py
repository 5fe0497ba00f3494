"""Step keys of one execution attempt (`StepKeys`, a part of `agentspan.ActiveRun`).

A resumed run re-enters the framework's loop from the start, so every journaled call must get the
same key on every attempt: model calls are counted within their scope (the run, or a tool call or
guardrail inside it), tool and handoff calls are keyed by the model response that asked for them,
and other calls an adapter can only tell apart by their order are counted by name. The time and
random draws `agentspan.clock` gives what feeds a model call are kept by that call's key.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from agentspan.attempt import Scope
from agentspan.hashing import chain
from agentspan.records import JSON, Step

_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("agentspan_scope", default=None)
"""The key scope of the calls made in this context (None: the run's own)."""


class StepKeys:
    """The key-giving half of `agentspan.ActiveRun`, with what is read by model-call key: the time
    and the random draws of `agentspan.now` / `agentspan.random` (`agentspan.clock`)."""

    _root: Scope
    _call_keys: dict[str, str]
    _batched: set[str]
    journal: dict[str, Step]
    next_model_key: Callable[[], str | None] | None = None
    """Set by the adapter: the key the next model call made in the current context will take
    (`peek_llm_key` for an adapter keying its calls with `llm_key`), or None where no model call
    is on its way; `clock` reads the wall clock without it."""
    _clocks: dict[str, float]
    """The time `clock` gave out for the model call of each key until its step takes it as its
    ``started_at``."""
    _randoms: dict[str, random.Random]
    """The generator `random_source` gave out for the model call of each key."""

    def _current_scope(self) -> Scope:
        scope = _scope.get()
        return scope if scope is not None else self._root

    def llm_key(self) -> str:
        """Returns the key of the next model call in the current scope (``llm:0``, ``llm:1``...)."""
        scope = self._current_scope()
        scope.before_call = (scope.llm_calls, scope.seen_items, scope.first_item, scope.chain_hash)
        key = f"{scope.prefix}llm:{scope.llm_calls}"
        scope.llm_calls += 1
        return key

    def peek_llm_key(self) -> str:
        """The key `llm_key` gives next in the current scope (without giving it)."""
        scope = self._current_scope()
        return f"{scope.prefix}llm:{scope.llm_calls}"

    def clock(self) -> float:
        """The run's time for what feeds the next model call made in this context (`agentspan.now`).

        The time that call was first made: its journaled step's ``started_at`` when the journal has
        it, else the wall clock, read once and kept for the call's step to take as its
        ``started_at``, so a replay of the run reads what the first attempt read.
        """
        key = self._next_call()
        return time.time() if key is None else self._clock_at(key)

    def random_source(self) -> random.Random | None:
        """The random numbers for what feeds the next model call made in this context
        (`agentspan.random`): one generator per call, seeded with the call's key and journaled time
        (`clock`), so a replay draws what the first attempt drew. None where no call is on its way."""
        key = self._next_call()
        if key is None:
            return None
        source = self._randoms.get(key)
        if source is None:
            source = self._randoms[key] = random.Random(f"{key}@{self._clock_at(key)!r}")
        return source

    def _next_call(self) -> str | None:
        return self.next_model_key() if self.next_model_key is not None else None

    def _clock_at(self, key: str) -> float:
        read = self._clocks.get(key)
        if read is None:
            recorded = self.journal.get(key)
            read = self._clocks[key] = recorded.started_at if recorded is not None else time.time()
        return read

    def model_call_failed(self, key: str) -> None:
        """Gives back the key of the model call that just raised, and the conversation hash as it was
        before it: the scope's next model call (the framework retrying it) is that step's next
        attempt, with the same input hash, so a run that retried a failed call replays as it ran."""
        scope = self._current_scope()
        if scope.before_call is not None and key == f"{scope.prefix}llm:{scope.before_call[0]}":
            scope.llm_calls, scope.seen_items, scope.first_item, scope.chain_hash = scope.before_call
            scope.before_call = None

    @contextlib.contextmanager
    def scoped(self, key: str) -> Iterator[None]:
        """Keys the calls made in the block under ``key`` (``<key>/llm:0``, ...): for a framework
        callback that is not a journaled call itself but makes some (a guardrail running an agent),
        so its calls keep their keys whatever runs beside it."""
        token = _scope.set(Scope(prefix=f"{key}/"))
        try:
            yield
        finally:
            _scope.reset(token)

    def next_key(self, name: str) -> str:
        """Returns the key of the next ``name`` step in the current scope (``name:0``, ...), for
        calls an adapter can only tell apart by their order (a conversation store's reads)."""
        scope = self._current_scope()
        index = scope.counts.get(name, 0)
        scope.counts[name] = index + 1
        return f"{scope.prefix}{name}:{index}"

    def conversation_hash(self, items: Sequence[Any], dump: Callable[[Any], JSON], extra: JSON) -> tuple[JSON, str]:
        """Chains the hash of a model call's input over what is new since the previous call.

        Args:
            items: The conversation passed to the model.
            dump: Converts one item to JSON.
            extra: Small per-call JSON hashed in full (instructions, tool names).

        Returns:
            ``(new_items_json, input_hash)``; the per-call cost is proportional to the new items.
            Items are new after the previous call's when they continue it (as long, and the same
            first item); otherwise (a server-side conversation sends only what it lacks, an input
            filter keeps a window) all of them are.
        """
        scope = self._current_scope()
        continues = len(items) >= scope.seen_items and bool(items) and items[0] == scope.first_item
        delta = [dump(item) for item in items[scope.seen_items if continues else 0:]]
        scope.seen_items = len(items)
        scope.first_item = items[0] if items else None
        scope.chain_hash = chain(scope.chain_hash, [extra, delta])
        return delta, scope.chain_hash

    def register_calls(self, llm_key: str, call_ids: Sequence[str | None], *, parallel: bool = False) -> None:
        """Records the tool/handoff call ids a model response asked for, in response order.
        ``parallel``: the calls run alongside others even if the response asked for one (a
        parallel branch of the agent tree)."""
        for index, call_id in enumerate(call_ids):
            key = self._call_keys[call_id or f"#{llm_key}/{index}"] = f"{llm_key}/call:{call_id or index}"
            if parallel or len(call_ids) > 1:
                self._batched.add(key)  # one of parallel calls: the framework may cancel it with the rest

    def call_key(self, call_id: str | None, kind: str = "tool") -> str:
        """Returns the key of a tool/handoff call, derived from the response that asked for it."""
        key = self._call_keys.get(call_id) if call_id else None
        if key is not None:
            return key
        return f"{self._current_scope().prefix}{kind}:{call_id}"
