"""Step commits by the store's helper process against commits in the run: the same code, one process.

Run with ``uv run python bench/bench_step_writer.py [--turns 100] [--rounds 15] [--processes 3]``.

At durability "normal" the process's store hands step rows to a helper process that commits them
(`agentspan.stores.step_writer`). This bench measures what that saves a run, within one process so
that the VM's drift (its speed moves by half from one hour to the next) cancels out: each round
runs, in a shuffled order, the plain ``Runner.run_sync``, ``agentspan.run`` on a store that commits
inline (its step writer switched off: every step one SQLite commit in the run's thread, as before
the helper) and ``agentspan.run`` on a store whose helper runs (started and ready before the first
round). The same 100-turn agent as ``bench_openai_agents.py`` (a zero-latency `ScriptedModel`, one
tool call per turn). It prints each process's added ms per turn (the variant's median run minus the
plain runner's) and the median over processes.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agents import Runner

import agentspan
import agentspan.config
from agentspan.stores.sqlite import SqliteStore

from bench_openai_agents import FINAL, PROMPT, add, make_agent
from bench_support import child_bench_args, child_measurements, machine


def measure(turns: int, rounds: int, seed: int) -> dict[str, float]:
    """One process: ``rounds`` shuffled rounds after 3 warm-up ones; added ms per turn."""
    root = Path(tempfile.mkdtemp(prefix="as-writer-"))
    inline = SqliteStore(root / "inline.db", durability="normal", defer_step_sync=True)
    inline._writer = None  # every step committed in the run's thread
    helper = SqliteStore(root / "helper.db", durability="normal", defer_step_sync=True)
    assert helper._writer is not None
    helper._writer.start(timeout=30)

    def journaled(store: SqliteStore) -> Callable[[], float]:
        def run() -> float:
            agentspan.config._store = store  # as `EmbeddedHomes.configure`: both stores stay open
            started = time.perf_counter()
            result = agentspan.run(make_agent(turns, add), PROMPT, max_turns=max(200, 2 * turns))
            elapsed = time.perf_counter() - started
            assert result.final_output == FINAL, result.final_output
            return elapsed

        return run

    def plain() -> float:
        started = time.perf_counter()
        result = Runner.run_sync(make_agent(turns, add), PROMPT, max_turns=max(200, 2 * turns))
        elapsed = time.perf_counter() - started
        assert result.final_output == FINAL, result.final_output
        return elapsed

    variants = {"plain": plain, "inline": journaled(inline), "helper": journaled(helper)}
    for run in variants.values():  # warm-up: imports, caches, the helper's first commits
        for _ in range(3):
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    shuffle = random.Random(seed)
    for _ in range(rounds):
        order = list(variants)
        shuffle.shuffle(order)
        for name in order:
            times[name].append(variants[name]())
    agentspan.config.reset()
    inline.close()
    helper.close()
    plain_ms = statistics.median(times["plain"]) * 1e3 / turns
    return {"plain": plain_ms,
            **{name: statistics.median(times[name]) * 1e3 / turns - plain_ms for name in ("inline", "helper")}}


def main() -> None:
    args = child_bench_args(__doc__, "rounds", "shuffled rounds per process")
    if args.one:
        print(json.dumps(measure(args.turns, args.rounds, args.seed)))
        return
    print(f"{args.turns} turns per run, {args.rounds} shuffled rounds per process; {machine()}")

    def describe(row: dict[str, float]) -> str:
        return (f"plain runner {row['plain']:.2f} ms per turn; added: commits inline {row['inline']:+.3f}, "
                f"by the helper {row['helper']:+.3f} ms per turn")

    child_measurements(__file__, args, "rounds", describe)


if __name__ == "__main__":
    main()
