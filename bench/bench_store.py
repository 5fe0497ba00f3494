"""Microbenchmark of the store's hot path: one ``start_step`` + ``finish_step`` pair per tool call.

Run with ``uv run python bench/bench_store.py [PAIRS]``; prints microseconds per pair (and per
call) for the in-memory store and the SQLite store in both durability modes.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentspan.records import Run, Step, StepKind, StepResult, StepStatus
from agentspan.stores.base import Store
from agentspan.stores.memory import MemoryStore
from agentspan.stores.sqlite import SqliteStore

INPUT = {"messages": [{"role": "user", "content": "What is the weather in Paris?"}], "temperature": 0.2}
OUTPUT = {"role": "assistant", "content": "It is sunny, 21 °C.", "finish_reason": "stop"}


def bench(store: Store, pairs: int) -> float:
    """Returns the mean µs of a start_step + finish_step pair on a claimed run."""
    run, _ = store.create_run(Run(framework="bench", agent="bench", input=INPUT))
    epoch = store.claim_run(
        run.id, owner="bench", expected_epoch=0, lease_expires_at=time.time() + 3600
    ).lease_epoch
    steps = [
        Step(run_id=run.id, key=f"llm:{i}", seq=i, kind=StepKind.LLM, input=INPUT, input_hash="h")
        for i in range(pairs)
    ]
    result = StepResult(
        status=StepStatus.COMPLETED, output=OUTPUT, input_tokens=120, output_tokens=30, cost_usd=0.0004
    )
    warmup = min(100, pairs // 10)
    for step in steps[:warmup]:
        store.start_step(step, epoch=epoch)
        store.finish_step(run.id, step.key, result, epoch=epoch)
    start = time.perf_counter()
    for step in steps[warmup:]:
        store.start_step(step, epoch=epoch)
        store.finish_step(run.id, step.key, result, epoch=epoch)
    elapsed = time.perf_counter() - start
    assert store.get_run(run.id).steps == pairs
    return elapsed / (pairs - warmup) * 1e6


def main() -> None:
    """Prints µs per start_step+finish_step pair for each store."""
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    directory = sys.argv[2] if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory(prefix="agentspan-bench-", dir=directory) as tmp:
        stores: list[tuple[str, Callable[[], Store]]] = [
            ("memory", MemoryStore),
            ("sqlite normal", lambda: SqliteStore(Path(tmp) / "normal.db", durability="normal")),
            ("sqlite full", lambda: SqliteStore(Path(tmp) / "full.db", durability="full")),
        ]
        print(f"{pairs} start_step+finish_step pairs per store (files in {tmp})")
        for name, factory in stores:
            store = factory()
            try:
                us = bench(store, pairs)
            finally:
                store.close()
            print(f"  {name:<14} {us:8.1f} µs/pair  ({us / 2:6.1f} µs/call)")


if __name__ == "__main__":
    main()
