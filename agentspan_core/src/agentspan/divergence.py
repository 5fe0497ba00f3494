"""What a run does when its code no longer matches its journal: ``on_divergence``.

A resumed run replays its framework's loop against the journal. When a journaled step's input
differs from the live call's (the prompt, the tools or the code changed since the run started),
the policy decides:

- ``"raise"`` (default): `ReplayDivergenceError` naming the step and the first difference; the
  journal is left as it is, so the run can be resumed again with the old code.
- ``"live"``: the run goes on live from that step. Every step journaled at or after it (in journal
  order) by an earlier attempt is moved aside to ``superseded:<seq>/<key>`` (`Store.supersede_steps`):
  it stays in the trail with what it returned and cost, but is never replayed again, and the
  pending approvals among them expire. The live calls are journaled under the keys they freed.

The policy is chosen per run (``agentspan.run(..., on_divergence="live")``, stored with the run
so a worker resuming it follows it too) or per execution (``agentspan.resume(...,
on_divergence="live")``, e.g. after deploying a fix for a run that failed).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Literal

from agentspan.diffing import describe_found, first_difference
from agentspan.errors import ConfigurationError, ReplayDivergenceError
from agentspan.records import JSON, Run, Step, StepKind, StepStatus
from agentspan.stores.reopening import RETRIES

if TYPE_CHECKING:
    from agentspan.runtime import ActiveRun

OnDivergence = Literal["raise", "live"]
POLICIES: tuple[OnDivergence, ...] = ("raise", "live")
OPTION = "agentspan.on_divergence"
"""Key of ``Run.options`` holding a run's policy when it is not the default."""
SUPERSEDED = "superseded:"
"""Prefix of the keys of superseded steps: ``superseded:<seq of the diverging step>/<key>``."""

log = logging.getLogger("agentspan")


def check_policy(value: object) -> OnDivergence:
    """Validates an ``on_divergence`` argument.

    Raises:
        ConfigurationError: Not ``"raise"`` or ``"live"``.
    """
    if value not in POLICIES:
        raise ConfigurationError(f"on_divergence={value!r}: expected 'raise' or 'live'")
    return value  # type: ignore[return-value]


def run_options(options: dict[str, object], policy: OnDivergence) -> dict[str, object]:
    """A run's stored options with its policy (stored only when it is not the default)."""
    return options if policy == "raise" else {**options, OPTION: policy}


def policy_of(options: dict[str, object], override: OnDivergence | None) -> OnDivergence:
    """The policy of an execution: ``override`` (given to ``resume``), else the run's own."""
    if override is not None:
        return override
    stored = options.get(OPTION, "raise")
    return stored if stored in POLICIES else "raise"  # type: ignore[return-value]


def without_core_options(run: Run) -> Run:
    """``run`` as an adapter sees it: without the core's own options, its policy and its retry
    history (`agentspan.stores.reopening.RETRIES`); a copy only when one is there."""
    if OPTION not in run.options and RETRIES not in run.options:
        return run
    return run.model_copy(update={"options": {k: v for k, v in run.options.items() if k not in (OPTION, RETRIES)}})


def diverged(active: ActiveRun, key: str, detail: str) -> None:
    """Handles the divergence of step ``key``: raises, or moves the journal from ``key`` on aside.

    Blocks on the store: call it through `call_store` from async code.

    Raises:
        ReplayDivergenceError: The policy is ``"raise"``, the run is a strict replay (a test), or
            the step was journaled by this attempt (its own calls cannot diverge from each other).
    """
    recorded = active.journal.get(key)
    if active.on_divergence != "live" or active.strict is not None or recorded is None or key not in active.recorded:
        hint = "" if active.strict is not None else (
            "; a run started or resumed with on_divergence='live' goes on live from such a step instead")
        raise ReplayDivergenceError(active.run_id, key, detail + hint)
    reason = f"superseded: the run diverged from its journal at step {key!r} and went on live ({detail})"
    moving, prefix = _move_aside(active, recorded, reason, earlier_attempts_only=True)
    log.warning("run %s diverged from its journal at step %s (%s); going on live: %d journaled step(s) from "
                "there on are kept as %s<key>", active.run_id, key, detail, len(moving), prefix)


def set_aside(active: ActiveRun, key: str, reason: str) -> None:
    """Moves step ``key`` and every step journaled after it aside (kept as
    ``superseded:<seq>/<key>``, with ``reason``), so the run's next attempt makes those calls
    live: a model answer the framework refused (the SDK's `ModelBehaviorError`) is asked for again
    by a retry instead of being replayed into the same failure. Nothing happens when the journal
    has no step ``key``. Blocks on the store.
    """
    recorded = active.journal.get(key)
    if recorded is not None:
        _move_aside(active, recorded, reason, earlier_attempts_only=False)


def _move_aside(active: ActiveRun, first: Step, reason: str, *, earlier_attempts_only: bool) -> tuple[list[Step], str]:
    moving = sorted((s for k, s in active.journal.items()
                     if (k in active.recorded or not earlier_attempts_only) and s.seq >= first.seq
                     and not k.startswith(SUPERSEDED) and not _never_written(s)), key=_seq)
    prefix = f"{SUPERSEDED}{first.seq}/"
    active.store.supersede_steps(active.run_id, [s.key for s in moving], prefix=prefix, reason=reason,
                                 epoch=active.epoch)
    for step in moving:
        del active.journal[step.key]
        active.recorded.discard(step.key)
    moved = tuple(s.key for s in moving)  # their approvals moved aside with them: no longer asked
    active.asked = frozenset(k for k in active.asked if not any(k == m or k.startswith(f"{m}/") for m in moved))
    return moving, prefix


def _never_written(step: Step) -> bool:
    """A model call still in flight, or cut off: journaled only when it ends (`ActiveRun.step`)."""
    return step.kind is StepKind.LLM and step.status is StepStatus.STARTED


def _seq(step: Step) -> int:
    return step.seq


def input_change(recorded: Step, name: str | None, input: JSON, input_hash: str) -> str:
    """The detail of a divergence on a step's input: the kind, the name and the first difference
    (with a hint at `agentspan.now` when only digits of a text differ: a time read in a prompt)."""
    recorded_hash = (recorded.input_hash or "")[:12]
    found = first_difference(recorded.input, input)
    hint = ""
    if found is not None and isinstance(found[1], str) and isinstance(found[2], str) \
            and _DIGIT.sub("0", found[1]) == _DIGIT.sub("0", found[2]):
        hint = ("; only digits differ there: if the prompt says the time or date, read it with "
                "agentspan.now(), which gives a resumed run the time its first attempt read")
    return (f"recorded {recorded.kind} call {recorded.name or name!r} had input hash {recorded_hash}, "
            f"the live call has {input_hash[:12]} (the agent's code, prompt or tools changed since the run "
            f"started); {describe_found(found)}{hint}")


_DIGIT = re.compile(r"[0-9]")
