"""Checkpointing overhead of a LangGraph graph: no checkpointer vs LangGraph's savers vs AgentspanSaver.

Run with ``uv run python bench/bench_langgraph_saver.py [--steps 100] [--repeats 5]``.

One run is `lg_support.counter_graph`: one node looping ``--steps`` times on a counter with a
small message list (4 messages), so ``steps + 1`` super-steps (``__start__``, then the ticks), each
saving the task's writes and a checkpoint. Variants, each in LangGraph's ``durability="sync"``
(a super-step waits for its checkpoint) and the default ``"async"`` (saved in the background
while the next step runs):

1. no checkpointer (the baseline: LangGraph alone);
2. ``InMemorySaver`` (dicts; nothing durable);
3. ``SqliteSaver`` (langgraph-checkpoint-sqlite, a file in the bench's temp dir; Python's
   ``sqlite3`` defaults: WAL set by the saver, ``synchronous=FULL``, so every commit fsyncs);
4. ``PostgresSaver`` (langgraph-checkpoint-postgres, a throwaway local cluster like
   ``tests/pg_cluster.py``'s, ``fsync=on``; skipped when PostgreSQL binaries are missing);
5. ``AgentspanSaver`` on the embedded SQLite store, ``durability="normal"`` (the default:
   WAL, ``synchronous=NORMAL``, survives process crashes) and ``"full"`` (fsync per commit, the
   like-for-like of SqliteSaver);
6. ``AgentspanSaver`` through an Agentspan server (a subprocess on a SQLite file), when
   `RemoteStore` implements the checkpoint calls (``--no-server`` skips it).

The variants run interleaved round-robin after one untimed, checked warm-up run each; every run
is a new thread on a saver (and store file) shared by all runs of its variant, as in a long-lived
app. The table shows medians; "+ms/step" is the added wall time per super-step over no checkpointer.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # lg_support, pg_cluster, server_support

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

from agentspan.stores.base import Store
from agentspan.stores.sqlite import SqliteStore
from agentspan_langgraph import AgentspanSaver

from lg_support import counter_graph, counter_input

MODES = ("sync", "async")
TARGET_RATIO = 0.7  # AgentspanSaver-added / SqliteSaver-added, per super-step


class Clock:
    """Wall and process-CPU time (all threads) of the block it times, in ms."""

    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self) -> Clock:
        gc.collect()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = (time.perf_counter() - self._wall) * 1e3
        self.cpu = (time.process_time() - self._cpu) * 1e3


class Bench:
    """The savers under test (one per variant, shared by its runs) and what they hold open."""

    def __init__(self, steps: int, tmp: Path) -> None:
        self.steps = steps
        self.tmp = tmp
        self.stack = contextlib.ExitStack()
        self.savers: dict[str, BaseCheckpointSaver[Any] | None] = {"no checkpointer": None}
        self.graphs: dict[str, Any] = {}
        self.skipped: list[str] = []

    # -- savers ------------------------------------------------------------------------------
    def add_reference_savers(self) -> None:
        self.savers["InMemorySaver"] = InMemorySaver()
        conn = sqlite3.connect(self.tmp / "sqlite-saver.db", check_same_thread=False)
        self.stack.callback(conn.close)
        sqlite_saver = SqliteSaver(conn)
        sqlite_saver.setup()
        self.savers["SqliteSaver"] = sqlite_saver

    def add_postgres_saver(self) -> None:
        try:
            from langgraph.checkpoint.postgres import PostgresSaver

            from pg_cluster import PgCluster

            cluster = PgCluster()
        except Exception as exc:  # binaries or the postgres user missing
            self.skipped.append(f"PostgresSaver skipped: {exc}")
            return
        cluster.start()
        self.stack.callback(cluster.stop)
        saver = self.stack.enter_context(PostgresSaver.from_conn_string(cluster.create_database("bench")))
        saver.setup()
        self.savers["PostgresSaver"] = saver

    def add_agentspan_savers(self) -> None:
        for durability in ("normal", "full"):
            store = SqliteStore(self.tmp / f"agentspan-{durability}.db", durability=durability)  # type: ignore[arg-type]
            self.stack.callback(store.close)
            self.savers[f"AgentspanSaver {durability}"] = AgentspanSaver(store)

    def add_server_saver(self) -> None:
        """Hook: AgentspanSaver through a real Agentspan server, once `RemoteStore` keeps checkpoints."""
        from agentspan.stores.remote import RemoteStore

        if RemoteStore.put_checkpoint is Store.put_checkpoint:
            self.skipped.append("AgentspanSaver via server skipped: RemoteStore does not keep checkpoints yet")
            return
        from server_support import ServerProcess

        server = ServerProcess(str(self.tmp / "server.db")).start()
        self.stack.callback(server.stop)
        store = RemoteStore(server.url)
        self.stack.callback(store.close)
        self.savers["AgentspanSaver via server"] = AgentspanSaver(store)

    # -- runs --------------------------------------------------------------------------------
    def graph(self, name: str) -> Any:
        if name not in self.graphs:
            self.graphs[name] = counter_graph(self.steps, checkpointer=self.savers[name])
        return self.graphs[name]

    def run(self, name: str, mode: str, *, check: bool = False) -> Clock:
        graph, saver = self.graph(name), self.savers[name]
        config: dict[str, Any] = {"configurable": {"thread_id": str(uuid.uuid4())}, "recursion_limit": self.steps + 10}
        # LangGraph 1.2 fails with AttributeError ('_put_checkpoint_fut') when durability is given
        # without a checkpointer, so the baseline runs with LangGraph's defaults.
        options = {"durability": mode} if saver is not None else {}
        with Clock() as clock:
            result = graph.invoke(counter_input(), config, **options)
        assert result["count"] == self.steps, result["count"]
        if check and saver is not None:
            saved = list(saver.list(config))
            assert len(saved) == self.steps + 2, len(saved)  # input + __start__ + one per tick
            assert saved[0].checkpoint["channel_values"]["count"] == self.steps
        return clock


def variants(bench: Bench) -> dict[str, Callable[[], Clock]]:
    found: dict[str, Callable[[], Clock]] = {"no checkpointer": lambda: bench.run("no checkpointer", "sync")}
    for mode in MODES:
        for name in bench.savers:
            if name != "no checkpointer":
                found[f"{name} [{mode}]"] = lambda name=name, mode=mode: bench.run(name, mode)
    return found


def ok(value: float, target: float) -> str:
    return "✅" if value <= target else "❌"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="node runs (super-steps - 1) per run (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (default 5)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgresSaver")
    parser.add_argument("--no-server", action="store_true", help="skip AgentspanSaver via server")
    parser.add_argument("--tmp", default=None, help="parent folder of the temp dir (default: system tmp)")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="agentspan-bench-lg-", dir=args.tmp))
    bench = Bench(args.steps, tmp)
    try:
        bench.add_reference_savers()
        if not args.no_postgres:
            bench.add_postgres_saver()
        bench.add_agentspan_savers()
        if not args.no_server:
            bench.add_server_saver()
        runs = variants(bench)
        for name in bench.savers:  # untimed warm-up, checking what each saver stored
            for mode in MODES:
                bench.run(name, mode, check=True)
        clocks: dict[str, list[Clock]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                clocks[name].append(fn())
    finally:
        bench.stack.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report(clocks, args, bench.skipped, time.perf_counter() - started)


def report(clocks: dict[str, list[Clock]], args: argparse.Namespace, skipped: list[str], elapsed: float) -> None:
    supersteps = args.steps + 1
    base = "no checkpointer"
    wall = {name: [c.wall for c in cs] for name, cs in clocks.items()}
    cpu = {name: [c.cpu for c in cs] for name, cs in clocks.items()}
    median = {name: statistics.median(v) for name, v in wall.items()}
    added = {name: (m - median[base]) / supersteps for name, m in median.items()}
    cpu_added = {name: (statistics.median(v) - statistics.median(cpu[base])) / supersteps for name, v in cpu.items()}
    # Noise cross-check: the median over rounds of (run - the same round's no-checkpointer run).
    paired = {name: statistics.median(v - b for v, b in zip(values, wall[base], strict=True)) / supersteps
              for name, values in wall.items()}

    print(f"\n{args.steps}-tick counter graph ({supersteps} super-steps, {args.steps + 2} checkpoints per run), "
          f"{args.repeats} interleaved repeats, median per variant")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"temp dir under {args.tmp or tempfile.gettempdir()}")
    for line in skipped:
        print(line)
    header = f"{'variant':<36} {'ms/run':>8} {'min':>7} {'max':>7} {'+ms/step':>9} {'paired':>7} {'+cpu/step':>10}"
    print(header)
    print("-" * len(header))
    for name, values in wall.items():
        extra = "" if name == base else f"{added[name]:>9.3f} {paired[name]:>7.3f} {cpu_added[name]:>10.3f}"
        print(f"{name:<36} {median[name]:>8.1f} {min(values):>7.1f} {max(values):>7.1f} {extra}")
    print("+ms/step = (median - no-checkpointer median) / super-steps; paired = median over rounds of (run - same\n"
          "round's no-checkpointer run) / super-steps; +cpu/step: as +ms/step on process CPU time (all threads; it\n"
          "excludes fsync waits and the PostgreSQL or Agentspan server's work).")
    print(f"total bench wall time: {elapsed:.1f} s")

    rows = []
    for mode in MODES:
        sqlite = added.get(f"SqliteSaver [{mode}]")
        for durability in ("normal", "full"):
            mine = added.get(f"AgentspanSaver {durability} [{mode}]")
            if sqlite is None or mine is None:
                continue
            ratio = mine / sqlite if sqlite > 0 else float("inf")
            paired_sqlite = paired[f"SqliteSaver [{mode}]"]
            paired_ratio = paired[f"AgentspanSaver {durability} [{mode}]"] / paired_sqlite if paired_sqlite else 0.0
            target = f"≤ {TARGET_RATIO}" if durability == "normal" else ""
            mark = ok(ratio, TARGET_RATIO) if durability == "normal" else ""
            rows.append((f"AgentspanSaver ({durability}) / SqliteSaver added, durability={mode}",
                         f"{mine:.3f} / {sqlite:.3f} ms = {ratio:.2f} (paired {paired_ratio:.2f})", target, mark))
        for other in ("InMemorySaver", "PostgresSaver", "AgentspanSaver via server"):
            if f"{other} [{mode}]" in added:
                rows.append((f"{other} added per super-step, durability={mode}",
                             f"{added[f'{other} [{mode}]']:.3f} ms", "", ""))
    print(f"\n<!-- bench/bench_langgraph_saver.py --steps {args.steps} --repeats {args.repeats}; "
          f"no checkpointer: {median[base] / supersteps:.3f} ms/super-step -->")
    print("| Metric | Measured | Target | |")
    print("|---|---:|---:|:-:|")
    for metric, value, target, mark in rows:
        print(f"| {metric} | {value} | {target} | {mark} |")


if __name__ == "__main__":
    main()
