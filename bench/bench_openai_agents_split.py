"""Where `agentspan.run`'s added time per turn goes: the store's step writes against everything else.

Run with ``uv run python bench/bench_openai_agents_split.py [--turns 100] [--repeats 20] [--processes 3]``.

The same 100-turn run as ``bench_openai_agents.py`` (a zero-latency `ScriptedModel`, one ``add``
tool call per turn), three variants in one process, their order shuffled in every round (a fixed
order would give one variant the caches another leaves behind):

1. ``Runner.run_sync`` (plain openai-agents);
2. ``agentspan.run`` on the embedded SQLite store, durability "normal" (as the main benchmark);
3. the same with the store's step writes dropped (``start_step``, ``finish_step`` and
   ``record_step`` return at once): everything Agentspan does per call except the SQL.

It prints the added ms per turn of 2 and 3 on wall time and on process CPU time (all threads; CPU
time leaves out the VM's stolen time and waits), so 2 - 3 is what the two SQLite commits per turn
cost in a run, their after-effects on the SDK's next work included; and the median time of one
step write timed inside the runs (``record_step``, the usual write of a journaled call). A
measuring tool for the team, with no target of its own: the targets are ``bench_openai_agents.py``'s.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agents import Runner

import agentspan
import agentspan.config
from agentspan.records import Step, StepResult
from agentspan.stores.sqlite import SqliteStore

from bench_openai_agents import PROMPT, add, make_agent
from bench_support import Clock, child_bench_args, child_measurements, machine, run_rounds, summarize


class TimedStore(SqliteStore):
    """The embedded store, its ``record_step`` calls timed (ns)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_ns: list[int] = []

    def record_step(self, step: Step, result: StepResult, *, epoch: int) -> None:
        started = time.perf_counter_ns()
        super().record_step(step, result, epoch=epoch)
        self.write_ns.append(time.perf_counter_ns() - started)


class DroppingStore(SqliteStore):
    """The embedded store with its step writes dropped (everything else as it is)."""

    def start_step(self, step: Step, *, epoch: int, durable: bool = True) -> None:
        return None

    def finish_step(self, run_id: str, key: str, result: StepResult, *, epoch: int) -> None:
        return None

    def record_step(self, step: Step, result: StepResult, *, epoch: int) -> None:
        return None


def measure(turns: int, repeats: int, seed: int) -> dict[str, float]:
    """One process: the three variants, ``repeats`` shuffled rounds after one warm-up run each."""
    home = Path(tempfile.mkdtemp(prefix="as-split-"))
    sqlite = TimedStore(home / "journal.db", durability="normal", defer_step_sync=True)
    dropping = DroppingStore(home / "dropped.db", durability="normal", defer_step_sync=True)
    max_turns = max(200, 2 * turns)

    def plain() -> Clock:
        agent = make_agent(turns, add)
        with Clock() as clock:
            Runner.run_sync(agent, PROMPT, max_turns=max_turns)
        return clock

    def durable(store: SqliteStore) -> Clock:
        agentspan.config._store = store  # as `EmbeddedHomes.configure`: swap without closing
        agent = make_agent(turns, add)
        with Clock() as clock:
            agentspan.run(agent, PROMPT, max_turns=max_turns)
        return clock

    variants = {"plain": plain, "sqlite": lambda: durable(sqlite), "dropped": lambda: durable(dropping)}
    for run in variants.values():
        run()
    sqlite.write_ns.clear()
    clocks = run_rounds(variants, repeats, shuffle=random.Random(seed))
    # every journaled call went through the timed write: the SQLite variant measured what it says
    assert len(sqlite.write_ns) == repeats * (2 * turns - 1), len(sqlite.write_ns)
    agentspan.config.reset()
    sqlite.close()
    dropping.close()
    summary = summarize(clocks, "plain", turns)
    return {
        "plain_ms_per_turn": summary.median["plain"] / turns,
        "sqlite_wall": summary.added["sqlite"], "dropped_wall": summary.added["dropped"],
        "sqlite_cpu": summary.cpu_added["sqlite"], "dropped_cpu": summary.cpu_added["dropped"],
        "write_us": statistics.median(sqlite.write_ns) / 1e3,
    }


def main() -> None:
    args = child_bench_args(__doc__, "repeats", "shuffled rounds per process")
    if args.one:
        print(json.dumps(measure(args.turns, args.repeats, args.seed)))
        return
    print(f"{args.turns} turns per run, {args.repeats} shuffled rounds per process; {machine()}")
    print("added ms per turn over the plain runner: SQLite store / step writes dropped (difference: the writes)")

    def describe(row: dict[str, float]) -> str:
        return (f"plain {row['plain_ms_per_turn']:.2f} ms per turn; "
                f"wall +{row['sqlite_wall']:.3f} / +{row['dropped_wall']:.3f} "
                f"({row['sqlite_wall'] - row['dropped_wall']:+.3f}); "
                f"CPU +{row['sqlite_cpu']:.3f} / +{row['dropped_cpu']:.3f} "
                f"({row['sqlite_cpu'] - row['dropped_cpu']:+.3f}); "
                f"one step write in a run {row['write_us']:.1f} µs")

    child_measurements(__file__, args, "repeats", describe)


if __name__ == "__main__":
    main()
