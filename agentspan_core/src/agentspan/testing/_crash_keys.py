"""How ``crash_at`` names a step when a framework's keys change from run to run.

A LangGraph key carries the id of its task, which LangGraph derives from the checkpoint the task
started from, so the same call has another key in every run (``agent:2fea…/llm:0``, then
``agent:b6c9…/llm:0``), and a key copied from an earlier run's `MockResult.steps` is never met
again. For such a framework the adapter gives a stable form of a key (`MockSetup.stable_key`:
``agent/llm:0``), and a step is named by it, with ``#n`` for its n-th repeat in the run (a node
that runs again: ``agent/llm:0#1``), in the order the run meets the steps.

``crash_at`` takes a key of the run itself, such a name, or a key of another run: the latter is
read as its stable form, and fails as ambiguous when that form names more than one step.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable

from agentspan.errors import ConfigurationError

StableKey = Callable[[str], str]

_REPEAT = re.compile(r"^(?P<base>.*)#(?P<n>\d+)$")


class StepNames:
    """Names the steps of one run as they are met: the stable form, ``#n`` from its second one on.

    Args:
        stable: The adapter's `MockSetup.stable_key`.
    """

    def __init__(self, stable: StableKey) -> None:
        self.stable = stable
        self._names: dict[str, str] = {}
        self._repeats: Counter[str] = Counter()
        self._lock = threading.Lock()

    def name(self, key: str) -> str:
        """The name of the step ``key`` (the same every time ``key`` is asked about)."""
        with self._lock:
            found = self._names.get(key)
            if found is None:
                form = self.stable(key)
                repeat = self._repeats[form]
                self._repeats[form] += 1
                found = self._names[key] = form if repeat == 0 else f"{form}#{repeat}"
            return found


def names(keys: Iterable[str], stable: StableKey) -> list[str]:
    """The names of ``keys`` (a run's step keys, in journal order)."""
    namer = StepNames(stable)
    return [namer.name(k) for k in keys]


def crash_target(crash_at: str, stable: StableKey) -> str:
    """The name ``crash_at`` stands for: its stable form, keeping a ``#n`` repeat (``#0``: the first)."""
    match = _REPEAT.match(crash_at)
    if match is None:
        return stable(crash_at)
    base, repeat = stable(match["base"]), int(match["n"])
    return base if repeat == 0 else f"{base}#{repeat}"


def from_another_run(crash_at: str, stable: StableKey) -> bool:
    """Whether ``crash_at`` is a full key (it has ids a stable form leaves out)."""
    match = _REPEAT.match(crash_at)
    base = crash_at if match is None else match["base"]
    return stable(base) != base


def check_unambiguous(crash_at: str, keys: list[str], stable: StableKey) -> None:
    """Raises when ``crash_at``, a key of another run, names more than one step of this run.

    Args:
        crash_at: What the test passed.
        keys: The run's step keys, in journal order (after the resume: the whole run).
        stable: The adapter's `MockSetup.stable_key`.

    Raises:
        ConfigurationError: The key's stable form fits several steps, so which one it meant is
            unknown (the crash was at the first of them).
    """
    if crash_at in keys or not from_another_run(crash_at, stable):
        return
    form = crash_target(crash_at, stable)
    fits = [n for n in names(keys, stable) if n == form or n.startswith(f"{form}#")]
    if len(fits) > 1:
        raise ConfigurationError(
            f"crash_at={crash_at!r} is ambiguous: it is a key of another run (its ids change from run to run), and "
            f"its stable form {form!r} names {len(fits)} steps of this run: {', '.join(fits)}; pass the one you mean")


def explain(keys: list[str], stable: StableKey | None) -> str:
    """The steps a run journaled, in the form ``crash_at`` takes (for an error)."""
    shown = keys if stable is None else names(keys, stable)
    return ", ".join(shown) or "none"
