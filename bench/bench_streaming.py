"""Overhead of streamed durable openai-agents runs: ``Runner.run_streamed`` vs ``agentspan.run_streamed``.

Run with ``uv run python bench/bench_streaming.py [--turns 100] [--repeats 5]``.

One run is ``--turns`` model calls against a zero-latency `ScriptedModel` whose stream is the
Responses API's (text deltas word by word, an item-done event per output item, the completed
response): every turn but the last asks for one ``add(a, b)`` call, the last answers with a
short text. Every event of a run is consumed (``async for event in result.stream_events()``).
The variants run interleaved round-robin in one process after an untimed warm-up each, all on
the embedded SQLite store at the default durability ("normal"), sharing one store:

1. ``Runner.run_streamed`` (plain openai-agents, nothing journaled);
2. ``agentspan.run_streamed`` (journaled: the same steps as ``agentspan.run``);
3. ``Runner.run`` and 4. ``agentspan.run_async`` (the same runs not streamed, for comparison).

It prints the time a streamed run adds per turn over the plain streamed run, next to the time a
non-streamed durable run adds over the plain one, and the events delivered per run (which must be
the same count with and without Agentspan).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from agents import Agent, Runner, function_tool, set_tracing_disabled

import agentspan
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from bench_support import (
    Clock,
    Column,
    EmbeddedHomes,
    framework_bench_args,
    machine,
    print_markdown_table,
    print_variant_table,
    run_rounds,
    summarize,
)

set_tracing_disabled(True)

PROMPT = "Add up the numbers, one call at a time."
FINAL = "All the numbers are added up now."
PLAIN_STREAMED, DURABLE_STREAMED = "Runner.run_streamed", "agentspan.run_streamed"
PLAIN, DURABLE = "Runner.run", "agentspan.run_async"


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def make_agent(turns: int) -> Agent[Any]:
    """A new agent with a new `ScriptedModel`: ``turns - 1`` tool calls, then the final text."""
    script: list[str | ToolCall] = [ToolCall("add", {"a": i, "b": 1}) for i in range(turns - 1)]
    return Agent(name="calc", instructions="Add numbers.", tools=[add], model=ScriptedModel([*script, FINAL]))


class Bench:
    """The four variants; each times one run."""

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self.max_turns = max(200, 2 * turns)
        self.events: dict[str, int] = {}

    def _timed(self, name: str, run: Any) -> Clock:
        async def consume() -> None:
            result = run(make_agent(self.turns))
            if hasattr(result, "stream_events"):
                count = 0
                async for _ in result.stream_events():
                    count += 1
                self.events[name] = count
            else:
                result = await result
            assert result.final_output == FINAL, result.final_output

        with Clock() as clock:
            asyncio.run(consume())
        return clock

    def variants(self) -> dict[str, Any]:
        options = {"max_turns": self.max_turns}
        return {
            PLAIN_STREAMED: lambda: self._timed(PLAIN_STREAMED, lambda a: Runner.run_streamed(a, PROMPT, **options)),
            DURABLE_STREAMED: lambda: self._timed(DURABLE_STREAMED,
                                                  lambda a: agentspan.run_streamed(a, PROMPT, **options)),
            PLAIN: lambda: self._timed(PLAIN, lambda a: Runner.run(a, PROMPT, **options)),
            DURABLE: lambda: self._timed(DURABLE, lambda a: agentspan.run_async(a, PROMPT, **options)),
        }


def main() -> None:
    args = framework_bench_args(__doc__, default_turns=100)
    if args.processes != 1:
        raise SystemExit("bench_streaming.py runs in this process only (--processes 1)")
    started = time.perf_counter()
    tmp_root = Path(tempfile.mkdtemp(prefix="agentspan-bench-stream-", dir=args.tmp))
    homes = EmbeddedHomes(tmp_root)
    try:
        homes.configure("normal")
        bench = Bench(args.turns)
        variants = bench.variants()
        for fn in variants.values():  # warm-up: imports, the store's first writes, caches
            fn()
        clocks = run_rounds(variants, args.repeats)
    finally:
        homes.close()
        shutil.rmtree(tmp_root, ignore_errors=True)
    stream_summary = summarize({k: clocks[k] for k in (PLAIN_STREAMED, DURABLE_STREAMED)}, PLAIN_STREAMED,
                               args.turns)
    plain_summary = summarize({k: clocks[k] for k in (PLAIN, DURABLE)}, PLAIN, args.turns)
    print(f"{args.turns} turns per run, {args.repeats} interleaved repeats; {machine()}")
    for summary in (stream_summary, plain_summary):
        print_variant_table(summary, 24, [
            Column("ms/turn", 8, lambda name, s=summary: s.median[name] / s.units, on_base=True),
            Column("added/turn", 10, lambda name, s=summary: s.added[name]),
            Column("paired", 8, lambda name, s=summary: s.paired[name]),
        ])
    if bench.events[PLAIN_STREAMED] != bench.events[DURABLE_STREAMED]:
        raise SystemExit(f"event counts differ: {bench.events}")
    print(f"events per run: {bench.events[DURABLE_STREAMED]} (the same with and without Agentspan)")
    print(f"total bench wall time: {time.perf_counter() - started:.1f} s")
    print(f"\n<!-- bench/bench_streaming.py --turns {args.turns} --repeats {args.repeats}; plain "
          f"Runner.run_streamed: {stream_summary.median[PLAIN_STREAMED] / args.turns:.3f} ms/turn -->")
    print_markdown_table([
        ("Streamed run, added per turn (normal)", f"{stream_summary.added[DURABLE_STREAMED]:.3f} ms", "", ""),
        ("Non-streamed run, added per turn (normal)", f"{plain_summary.added[DURABLE]:.3f} ms", "", ""),
    ])


if __name__ == "__main__":
    main()
