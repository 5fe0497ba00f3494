"""How much work a turn is, counted instead of timed: Python and C calls per turn of a 100-turn run.

Run with ``uv run python bench/bench_call_counts.py [--turns 100] [--top 20]``.

Timings on this VM move by more than half between periods (`bench/HISTORY.md`); call counts do
not. This bench runs the same zero-latency `ScriptedModel` agent as ``bench_openai_agents.py``
(one ``add`` tool call per turn), once with the plain ``Runner.run_sync`` and once with
``agentspan.run`` on the embedded SQLite store (durability "normal", the step writer's helper
started), after three warm-up runs of each, with a profile hook (`sys.setprofile`) that counts
every Python function call and every C function call of the run's threads. It prints the calls
per turn of each variant, Agentspan's own (functions of the ``agentspan`` and adapter packages),
and the functions whose count per turn differs most between the two: what the SDK does
differently because Agentspan is there, and what Agentspan adds. A hot-path change that does
less work shows here whatever the VM's speed of the day.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from agents import Runner, set_tracing_disabled

import agentspan
import agentspan.config
from agentspan.stores.sqlite import SqliteStore

from bench_openai_agents import FINAL, PROMPT, add, make_agent

Calls = collections.Counter[tuple[str, str]]
"""(where, function) -> calls; ``where`` is a package-relative file, or ``C``."""

_OURS = ("agentspan/", "agentspan_openai_agents/")


def _where(filename: str) -> str:
    for marker in ("site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker)[-1]
    return filename


def count_one_run(run: Any) -> Calls:
    """Calls of one ``run()``, in every thread it starts or uses (the event loop's included)."""
    calls: Calls = collections.Counter()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            calls[(_where(frame.f_code.co_filename), frame.f_code.co_name)] += 1
        elif event == "c_call":
            calls[("C", getattr(arg, "__qualname__", repr(arg)))] += 1

    threading.setprofile(hook)
    sys.setprofile(hook)
    try:
        run()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--top", type=int, default=20, help="functions listed by the change in their count")
    args = parser.parse_args()
    set_tracing_disabled(True)
    store = SqliteStore(Path(tempfile.mkdtemp(prefix="as-calls-")) / "journal.db", durability="normal",
                        defer_step_sync=True)
    agentspan.config._store = store  # as `EmbeddedHomes.configure`
    max_turns = max(200, 2 * args.turns)

    def plain() -> None:
        assert Runner.run_sync(make_agent(args.turns, add), PROMPT, max_turns=max_turns).final_output == FINAL

    def durable() -> None:
        assert agentspan.run(make_agent(args.turns, add), PROMPT, max_turns=max_turns).final_output == FINAL

    counted: dict[str, Calls] = {}
    try:
        for name, run in (("plain", plain), ("agentspan", durable)):
            for _ in range(3):  # imports, caches, the step writer's helper
                run()
            counted[name] = count_one_run(run)
    finally:
        agentspan.config.reset()
        store.close()
    turns = args.turns
    plain_calls, durable_calls = counted["plain"], counted["agentspan"]
    ours = sum(n for (where, _), n in durable_calls.items() if where.startswith(_OURS))
    print(f"calls per turn ({turns} turns): plain Runner.run_sync {sum(plain_calls.values()) / turns:,.1f}; "
          f"agentspan.run {sum(durable_calls.values()) / turns:,.1f}, of them {ours / turns:,.1f} to "
          "Agentspan's own Python functions")
    changes = sorted(((durable_calls[k] - plain_calls[k]) / turns, k) for k in set(plain_calls) | set(durable_calls)
                     if not k[0].startswith(_OURS))
    print("other functions whose calls per turn change most (agentspan - plain; plain's count):")
    for change, (where, function) in sorted(changes, key=lambda c: -abs(c[0]))[:args.top]:
        print(f"  {change:+9.2f}  ({plain_calls[(where, function)] / turns:9.2f})  {where}:{function}")


if __name__ == "__main__":
    main()
