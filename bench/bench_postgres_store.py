"""Microbenchmark of `PostgresStore`'s hot path against a throwaway PostgreSQL cluster.

Run with ``uv run python bench/bench_postgres_store.py [--calls 2000] [--threads 1 4]``. Needs
PostgreSQL's binaries (Debian package ``postgresql``); the cluster (``fsync=on`` as in the tests; with
``--async-commit`` no commit waits for the disk, to time round trips and CPU alone) lives in a
temporary directory and is removed at the end.

For each operation it prints the mean µs per call seen by one caller and the calls/s of all callers
together (the best of ``--repeats`` measurements: other load on the machine only ever slows a run),
first from one thread, then from ``N`` threads at once, each thread on a run of its own (so they
contend for the server and the pool, not for one run's row lock):

- ``record_step``: a model call journaled at once (insert a completed step, fence, add totals);
- ``start_step+finish_step``: a tool call, ``durable=True`` and ``durable=False`` (one pair is
  two calls: µs and calls/s are per call);
- ``renew_lease``, ``get_run``, and ``list_steps`` of a run holding 20 steps.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # pg_cluster

import psycopg

from agentspan.records import Run, Step, StepKind, StepResult, StepStatus
from agentspan_server.stores.postgres import PostgresStore

from pg_cluster import PgCluster

INPUT = {"messages": [{"role": "user", "content": "What is the weather in Paris?"}], "temperature": 0.2}
OUTPUT = {"role": "assistant", "content": "It is sunny, 21 °C.", "finish_reason": "stop"}
RESULT = StepResult(
    status=StepStatus.COMPLETED, output=OUTPUT, provider="openai", model="gpt-x",
    input_tokens=120, output_tokens=30, cost_usd=0.0004,
)  # fmt: skip
TOOL_RESULT = StepResult(status=StepStatus.COMPLETED, output={"temperature": 21})

# an operation: (name, calls per iteration, setup(store, run_id, epoch, n) -> iteration(i))
Operation = tuple[str, int, Callable[[PostgresStore, str, int, int], Callable[[int], None]]]


def _record(store: PostgresStore, run_id: str, epoch: int, n: int) -> Callable[[int], None]:
    steps = [Step(run_id=run_id, key=f"llm:{i}", seq=i, kind=StepKind.LLM, input=INPUT, input_hash="h")
             for i in range(n)]  # fmt: skip
    return lambda i: store.record_step(steps[i], RESULT, epoch=epoch)


def _pair(durable: bool) -> Callable[[PostgresStore, str, int, int], Callable[[int], None]]:
    def setup(store: PostgresStore, run_id: str, epoch: int, n: int) -> Callable[[int], None]:
        steps = [Step(run_id=run_id, key=f"tool:{i}", seq=i, kind=StepKind.TOOL, name="weather",
                      input={"city": "Paris"}, input_hash="h") for i in range(n)]  # fmt: skip

        def iteration(i: int) -> None:
            store.start_step(steps[i], epoch=epoch, durable=durable)
            store.finish_step(run_id, steps[i].key, TOOL_RESULT, epoch=epoch)

        return iteration

    return setup


def _renew(store: PostgresStore, run_id: str, epoch: int, n: int) -> Callable[[int], None]:
    def iteration(i: int) -> None:
        assert store.renew_lease(run_id, epoch=epoch, lease_expires_at=time.time() + 3600)

    return iteration


def _get_run(store: PostgresStore, run_id: str, epoch: int, n: int) -> Callable[[int], None]:
    return lambda i: store.get_run(run_id)  # type: ignore[func-returns-value]


def _list_steps(store: PostgresStore, run_id: str, epoch: int, n: int) -> Callable[[int], None]:
    for i in range(20):
        step = Step(run_id=run_id, key=f"llm:{i}", seq=i, kind=StepKind.LLM, input=INPUT, input_hash="h")
        store.record_step(step, RESULT, epoch=epoch)

    def iteration(i: int) -> None:
        assert len(store.list_steps(run_id)) == 20

    return iteration


OPERATIONS: list[Operation] = [
    ("record_step", 1, _record),
    ("start+finish durable", 2, _pair(True)),
    ("start+finish non-durable", 2, _pair(False)),
    ("renew_lease", 1, _renew),
    ("get_run", 1, _get_run),
    ("list_steps (20 steps)", 1, _list_steps),
]


def claimed_run(store: PostgresStore) -> tuple[str, int]:
    """Creates and claims a run; returns its id and lease epoch."""
    run, _ = store.create_run(Run(framework="bench", agent="bench", input=INPUT))
    claimed = store.claim_run(run.id, owner="bench", expected_epoch=0, lease_expires_at=time.time() + 3600)
    return run.id, claimed.lease_epoch


def measure(store: PostgresStore, operation: Operation, threads: int, calls: int) -> tuple[float, float]:
    """Returns (mean µs per call seen by one thread, calls/s of all threads together)."""
    _, per_iteration, setup = operation
    iterations = max(1, calls // per_iteration)
    warmup = min(50, iterations)
    runs = [claimed_run(store) for _ in range(threads)]
    bodies = [setup(store, run_id, epoch, warmup + iterations) for run_id, epoch in runs]
    barrier = threading.Barrier(threads + 1)
    elapsed = [0.0] * threads

    def work(t: int) -> None:
        body = bodies[t]
        for i in range(warmup):  # prepares the statements on this thread's connection
            body(i)
        barrier.wait()
        started = time.perf_counter()
        for i in range(warmup, warmup + iterations):
            body(i)
        elapsed[t] = time.perf_counter() - started

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    done = iterations * per_iteration
    return sum(elapsed) / threads / done * 1e6, done * threads / wall


def main() -> None:
    """Starts a cluster and prints µs/call and calls/s per operation and thread count."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per thread and operation")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4], help="thread counts to run")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row; the best is printed")
    parser.add_argument("--only", nargs="*", default=None, help="operation names to run (prefixes)")
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="the database's synchronous_commit=off: no commit waits for the disk (round trips and CPU only)",
    )
    args = parser.parse_args()
    cluster = PgCluster()
    cluster.start()
    try:
        url = cluster.create_database("bench")
        if args.async_commit:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER DATABASE bench SET synchronous_commit = off")
        store = PostgresStore(url, max_size=max(args.threads) + 1)
        try:
            commit = "synchronous_commit=off" if args.async_commit else "fsync=on"
            print(f"PostgresStore on a throwaway cluster ({commit}); {args.calls} timed calls per thread, "
                  f"best of {args.repeats}")
            print(f"{'operation':<26} {'threads':>7} {'µs/call':>9} {'calls/s':>9}")
            for operation in OPERATIONS:
                if args.only and not any(operation[0].startswith(prefix) for prefix in args.only):
                    continue
                for threads in args.threads:
                    samples = [measure(store, operation, threads, args.calls) for _ in range(args.repeats)]
                    us, rate = min(s[0] for s in samples), max(s[1] for s in samples)
                    print(f"{operation[0]:<26} {threads:>7} {us:>9.1f} {rate:>9.0f}", flush=True)
        finally:
            store.close()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
